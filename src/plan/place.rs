//! The stages of [`super::plan`], in the order it runs them. Each stage makes its checks in the order
//! the planner always has, so a profile with several faults still fails with the same first error.

use super::{PlanError, PlanInput, PlannedBlob, PlannedPartition, Region, RegionKind, TableLayout};
use crate::disk::gpt;
use crate::disk::ids::Ids;
use crate::disk::mbr::SECTOR;
use crate::profile::{ImageSize, PartSize, Partition, PartitionType, Profile, TableKind};
use crate::size::align_up;

/// The smallest fill partition an automatically sized image gets, whatever its content.
const MIN_FILL: u64 = crate::size::MIB;

/// The partition-table areas: those at the head of the image, and how much the backup GPT takes at
/// its end (0 for MBR), which every partition must stay clear of.
pub(super) struct TableArea {
    pub head: Vec<Region>,
    pub backup_len: u64,
    /// The first byte after the head areas.
    pub end: u64,
}

/// The bootloader blob as requested, before the regions around it are known.
pub(super) struct BlobRequest {
    pub path: String,
    pub offset: u64,
    /// The blob's size when known, else one sector.
    pub size: u64,
    pub max_size: Option<u64>,
}

/// A partition placed in profile order: its start, and its size (None for the fill partition, which
/// is sized once the image size is known).
pub(super) struct Placed {
    pub start: u64,
    pub size: Option<u64>,
}

/// A partition's final extent.
pub(super) struct Extent {
    pub start: u64,
    pub size: u64,
    pub fill: bool,
}

/// The image size given on the command line or in the profile (None when it is derived), and whether
/// the profile asked for it to be derived. A given size must be whole sectors.
pub(super) fn requested_size(
    profile: &Profile,
    input: &PlanInput,
) -> Result<(Option<u64>, bool), PlanError> {
    let (fixed_size, size_auto) = match (input.image_size, profile.table.size.value) {
        (Some(n), _) => (Some(n), false),
        (None, ImageSize::Bytes(n)) => (Some(n), false),
        (None, ImageSize::Auto) => (None, true),
    };
    if let Some(n) = fixed_size
        && n % SECTOR != 0
    {
        return Err(PlanError::Unaligned { size: n });
    }
    Ok((fixed_size, size_auto))
}

/// Where the partition table lives: the MBR sector, or the protective MBR, GPT header and entry array
/// (which `gpt_entries_offset` may move away from the header to make room for a bootloader).
pub(super) fn table_area(profile: &Profile) -> TableArea {
    let table = |name: String, start, end| Region {
        name,
        kind: RegionKind::Table,
        start,
        end,
    };
    match profile.table.kind {
        TableKind::Mbr => TableArea {
            head: vec![table("MBR".to_string(), 0, SECTOR)],
            backup_len: 0,
            end: SECTOR,
        },
        TableKind::Gpt => {
            let entries = profile.table.gpt_entries.value;
            let array_len = gpt::array_sectors(entries) * SECTOR;
            let eo = profile.table.gpt_entries_offset.value;
            TableArea {
                head: vec![
                    table("protective MBR".to_string(), 0, SECTOR),
                    table("GPT header".to_string(), SECTOR, 2 * SECTOR),
                    table(
                        format!("GPT entry array ({entries} entries)"),
                        eo,
                        eo + array_len,
                    ),
                ],
                backup_len: array_len + SECTOR,
                end: eo + array_len,
            }
        }
    }
}

/// The profile's bootloader blob, sized from the real file when the caller has read it.
pub(super) fn blob_request(profile: &Profile, input: &PlanInput) -> Option<BlobRequest> {
    profile.bootloader.as_ref().map(|b| BlobRequest {
        path: b.path.value.clone(),
        offset: b.offset.value,
        size: input.blob_size.unwrap_or(SECTOR).max(1),
        max_size: b.max_size,
    })
}

/// Places the partitions in profile order, each at its `offset` or after the previous one at its
/// alignment. Returns them and the cursor: the end of the last fixed-size partition, or the start of
/// the fill partition.
pub(super) fn place_partitions(
    profile: &Profile,
    table_end: u64,
    blob: Option<&BlobRequest>,
) -> Result<(Vec<Placed>, u64), PlanError> {
    if profile.table.kind == TableKind::Mbr && profile.partitions.len() > 4 {
        return Err(PlanError::TooManyPrimaries {
            count: profile.partitions.len(),
        });
    }
    let mut cursor = first_cursor(profile, table_end, blob);
    let mut placed = Vec::new();
    for (i, p) in profile.partitions.iter().enumerate() {
        let start = partition_start(profile, p, cursor, table_end)?;
        match p.size.value {
            PartSize::Bytes(n) => {
                placed.push(Placed {
                    start,
                    size: Some(n),
                });
                cursor = start.saturating_add(n);
            }
            PartSize::Fill => {
                if i + 1 != profile.partitions.len() {
                    return Err(PlanError::FillNotLast {
                        at: p.size.at(),
                        name: p.name.value.clone(),
                    });
                }
                placed.push(Placed { start, size: None });
                cursor = start;
            }
        }
    }
    Ok((placed, cursor))
}

/// Where the first partition may start: after the table, and after a blob right behind it. That is a
/// convenience only when the blob sits before the first partition's aligned start anyway; overlaps
/// are still reported.
fn first_cursor(profile: &Profile, table_end: u64, blob: Option<&BlobRequest>) -> u64 {
    let align = profile.table.alignment.value;
    let mut cursor = table_end;
    if let Some(b) = blob
        && b.offset >= cursor
        && b.offset < align_up(cursor, align).unwrap_or(u64::MAX)
    {
        cursor = cursor.max(b.offset + b.size);
    }
    cursor
}

/// A partition's start: its `offset` (which must be aligned), else the cursor aligned up. On GPT it
/// must not start inside the table area.
fn partition_start(
    profile: &Profile,
    p: &Partition,
    cursor: u64,
    table_end: u64,
) -> Result<u64, PlanError> {
    let align = p.align.value;
    let start = match &p.offset {
        Some(o) => {
            if o.value % align != 0 {
                return Err(PlanError::Misaligned {
                    at: o.at(),
                    name: p.name.value.clone(),
                    offset: o.value,
                    align,
                });
            }
            o.value
        }
        None => align_up(cursor, align).unwrap_or(u64::MAX),
    };
    if start < table_end && profile.table.kind == TableKind::Gpt {
        return Err(PlanError::InTableArea {
            at: p
                .offset
                .as_ref()
                .map(|o| o.at())
                .unwrap_or_else(|| p.name.at()),
            name: p.name.value.clone(),
            offset: start,
            table_end,
        });
    }
    Ok(start)
}

/// The image size: the one given, else what the partitions need (the fill partition at least its
/// content, at least [`MIN_FILL`]) plus the backup table, aligned. An MBR cannot address past 2 TiB.
pub(super) fn image_size(
    profile: &Profile,
    input: &PlanInput,
    fixed_size: Option<u64>,
    placed: &[Placed],
    cursor: u64,
    backup_len: u64,
) -> Result<u64, PlanError> {
    let align = profile.table.alignment.value;
    let image_size = match fixed_size {
        Some(n) => n,
        None => {
            let mut end = cursor;
            if placed.iter().any(|p| p.size.is_none()) {
                let want = input.fill_content.unwrap_or(0).max(MIN_FILL);
                end = cursor.saturating_add(align_up(want, align).unwrap_or(u64::MAX));
            }
            align_up(end.saturating_add(backup_len), align).unwrap_or(u64::MAX)
        }
    };
    if profile.table.kind == TableKind::Mbr && image_size / SECTOR > u64::from(u32::MAX) {
        return Err(PlanError::MbrTooLarge { size: image_size });
    }
    Ok(image_size)
}

/// Each partition's final extent, in profile order: the fill partition takes the whole sectors left
/// up to `usable_end`, and every partition must end by then (before the backup GPT, if any).
pub(super) fn extents(
    profile: &Profile,
    placed: &[Placed],
    usable_end: u64,
    backup_len: u64,
) -> Result<Vec<Extent>, PlanError> {
    // `placed` holds one entry per partition, in the same order.
    let mut out = Vec::new();
    for (p, pl) in profile.partitions.iter().zip(placed) {
        let start = pl.start;
        let (size, fill) = match pl.size {
            Some(n) => (n, false),
            None => (fill_size(&p.name.value, start, usable_end)?, true),
        };
        let end = start.saturating_add(size);
        if end > usable_end {
            return Err(PlanError::PastEnd {
                what: format!("partition `{}`", p.name.value),
                start,
                end,
                limit: usable_end,
                why: if backup_len > 0 {
                    ", before the backup GPT"
                } else {
                    ""
                },
            });
        }
        out.push(Extent { start, size, fill });
    }
    Ok(out)
}

/// The fill partition's size: whole sectors from `start` to `usable_end`, at least one.
fn fill_size(name: &str, start: u64, usable_end: u64) -> Result<u64, PlanError> {
    let n = usable_end.saturating_sub(start) / SECTOR * SECTOR;
    if n < SECTOR {
        return Err(PlanError::PastEnd {
            what: format!("fill partition `{name}`"),
            start,
            end: start + SECTOR,
            limit: usable_end,
            why: "; nothing is left for it",
        });
    }
    Ok(n)
}

/// The planned partitions with their identities, each derived from the board, SOURCE_DATE_EPOCH,
/// the partition's number and name, so rebuilds get the same ones. An MBR partition's PARTUUID
/// needs the disk signature and is left empty here ([`table_layout`] sets it).
pub(super) fn identities(
    profile: &Profile,
    ids: &Ids,
    extents: Vec<Extent>,
) -> Vec<PlannedPartition> {
    let mut partitions = Vec::new();
    for (number, (p, e)) in profile.partitions.iter().zip(extents).enumerate() {
        let number = number as u32 + 1;
        let (unique_guid, partuuid) = match &p.kind {
            PartitionType::Gpt { .. } => {
                let g = ids.guid(&format!("partition {number} {}", p.name.value));
                (Some(g), g.to_string().to_lowercase())
            }
            _ => (None, String::new()),
        };
        partitions.push(PlannedPartition {
            number,
            name: p.name.value.clone(),
            role: p.role,
            fs: p.fs,
            start: e.start,
            size: e.size,
            fill: e.fill,
            label: p.label.clone(),
            kind: p.kind.clone(),
            unique_guid,
            partuuid,
            fs_uuid: ids.guid(&format!("filesystem {number} {}", p.name.value)),
            fat_volume_id: ids.u32(&format!("fat volume {number} {}", p.name.value)),
        });
    }
    partitions
}

/// The table's own fields: the MBR disk signature (and the PARTUUIDs made from it), or the GPT disk
/// GUID and usable range.
pub(super) fn table_layout(
    profile: &Profile,
    ids: &Ids,
    table_end: u64,
    blob: Option<&BlobRequest>,
    partitions: &mut [PlannedPartition],
    image_size: u64,
) -> TableLayout {
    match profile.table.kind {
        TableKind::Mbr => {
            let sig = profile
                .table
                .disk_signature
                .unwrap_or_else(|| ids.u32("mbr disk signature"));
            for p in partitions.iter_mut() {
                p.partuuid = format!("{sig:08x}-{:02x}", p.number);
            }
            TableLayout::Mbr {
                disk_signature: sig,
            }
        }
        TableKind::Gpt => {
            let entries = profile.table.gpt_entries.value;
            let array_len = gpt::array_sectors(entries) * SECTOR;
            // Nothing may be allocated below a blob that sits between the table and the first partition.
            let mut first_usable = table_end;
            if let Some(b) = blob {
                let first_start = partitions.first().map_or(u64::MAX, |p| p.start);
                if b.offset >= table_end && b.offset < first_start {
                    first_usable = first_usable.max(b.offset + b.size);
                }
            }
            TableLayout::Gpt {
                disk_guid: ids.guid("gpt disk"),
                entries_offset: profile.table.gpt_entries_offset.value,
                entries,
                first_usable_lba: first_usable.div_ceil(SECTOR),
                last_usable_lba: (image_size - array_len - SECTOR) / SECTOR - 1,
            }
        }
    }
}

/// Every region the table areas and partitions occupy, not yet in order.
pub(super) fn occupied_regions(
    area: TableArea,
    image_size: u64,
    partitions: &[PlannedPartition],
) -> Vec<Region> {
    let mut regions = area.head;
    if area.backup_len > 0 {
        regions.push(Region {
            name: "backup GPT entry array".into(),
            kind: RegionKind::Table,
            start: image_size - area.backup_len,
            end: image_size - SECTOR,
        });
        regions.push(Region {
            name: "backup GPT header".into(),
            kind: RegionKind::Table,
            start: image_size - SECTOR,
            end: image_size,
        });
    }
    for p in partitions {
        regions.push(Region {
            name: format!("partition {} `{}`", p.number, p.name),
            kind: RegionKind::Partition,
            start: p.start,
            end: p.end(),
        });
    }
    regions
}

/// Adds the bootloader blob to `regions` and finds how far it may grow: up to the next region, or
/// `max_size`. The blob must end inside the image.
pub(super) fn place_blob(
    blob: Option<BlobRequest>,
    regions: &mut Vec<Region>,
    image_size: u64,
) -> Result<Option<PlannedBlob>, PlanError> {
    let Some(BlobRequest {
        path,
        offset: off,
        size,
        max_size,
    }) = blob
    else {
        return Ok(None);
    };
    let end = off.saturating_add(size);
    regions.push(Region {
        name: format!("bootloader blob {path}"),
        kind: RegionKind::Bootloader,
        start: off,
        end,
    });
    if end > image_size {
        return Err(PlanError::PastEnd {
            what: format!("bootloader blob {path}"),
            start: off,
            end,
            limit: image_size,
            why: "",
        });
    }
    let next = regions
        .iter()
        .filter(|r| r.kind != RegionKind::Bootloader && r.start >= off)
        .map(|r| r.start)
        .min()
        .unwrap_or(image_size);
    let limit = max_size.map_or(next, |m| next.min(off.saturating_add(m)));
    Ok(Some(PlannedBlob {
        path,
        offset: off,
        size,
        limit,
    }))
}

/// Sorts `regions` by position and rejects the first two that overlap, naming both.
pub(super) fn check_overlaps(regions: &mut [Region]) -> Result<(), PlanError> {
    regions.sort_by_key(|r| (r.start, r.end));
    for (i, a) in regions.iter().enumerate() {
        for b in &regions[i + 1..] {
            if b.start < a.end && a.start < b.end {
                return Err(PlanError::Overlap {
                    a: a.name.clone(),
                    a_start: a.start,
                    a_end: a.end,
                    b: b.name.clone(),
                    b_start: b.start,
                    b_end: b.end,
                });
            }
        }
    }
    Ok(())
}

/// The blob must fit below its limit (the next region, or `max_size`).
pub(super) fn check_blob_limit(bootloader: Option<&PlannedBlob>) -> Result<(), PlanError> {
    if let Some(b) = bootloader.filter(|b| b.offset + b.size > b.limit) {
        return Err(PlanError::PastEnd {
            what: format!("bootloader blob {}", b.path),
            start: b.offset,
            end: b.offset + b.size,
            limit: b.limit,
            why: "; it must end before the next region or bootloader.max_size",
        });
    }
    Ok(())
}

/// The sorted regions with the free gaps between them, so the listing accounts for every byte.
pub(super) fn with_free_gaps(regions: Vec<Region>, image_size: u64) -> Vec<Region> {
    let unused = |start, end| Region {
        name: "unused".into(),
        kind: RegionKind::Free,
        start,
        end,
    };
    let mut with_gaps = Vec::new();
    let mut pos = 0;
    for r in regions {
        if r.start > pos {
            with_gaps.push(unused(pos, r.start));
        }
        pos = pos.max(r.end);
        with_gaps.push(r);
    }
    if pos < image_size {
        with_gaps.push(unused(pos, image_size));
    }
    with_gaps
}
