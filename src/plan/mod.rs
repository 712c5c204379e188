//! The byte-layout planner: where every byte of the image goes. Partition offsets from sizes, `fill` and
//! alignment; the partition-table areas themselves; raw blobs at fixed offsets. Rejects overlaps (naming both
//! regions and their byte ranges), anything past the image end, misalignment and too many MBR primaries.

pub mod fstab;
mod place;

use std::fmt;

use serde::Serialize;

use crate::disk::gpt::{self, Guid};
use crate::disk::ids::Ids;
use crate::disk::mbr::SECTOR;
use crate::profile::{Fs, PartitionType, Profile, Role};
use crate::size::Human;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "{a} (bytes {a_start}..{a_end}) overlaps {b} (bytes {b_start}..{b_end}); move one of them (partition `offset`, table.gpt_entries_offset or table.gpt_entries)"
    )]
    Overlap {
        a: String,
        a_start: u64,
        a_end: u64,
        b: String,
        b_start: u64,
        b_end: u64,
    },
    #[error(
        "{what} (bytes {start}..{end}) extends past the end of the usable image ({limit} bytes{why}); enlarge the image (--size or table.size) or shrink the partition"
    )]
    PastEnd {
        what: String,
        start: u64,
        end: u64,
        limit: u64,
        why: &'static str,
    },
    #[error("{at}: partition `{name}` offset {offset} is not aligned to {align} bytes")]
    Misaligned {
        at: String,
        name: String,
        offset: u64,
        align: u64,
    },
    #[error(
        "an MBR holds at most 4 primary partitions, the profile has {count}; use table.type = \"gpt\""
    )]
    TooManyPrimaries { count: usize },
    #[error("an MBR addresses at most 2 TiB; {size} bytes needs table.type = \"gpt\"")]
    MbrTooLarge { size: u64 },
    #[error(
        "{at}: only the last partition can use size = \"fill\" (`{name}` is followed by others)"
    )]
    FillNotLast { at: String, name: String },
    #[error("image size {size} is not a multiple of 512-byte sectors")]
    Unaligned { size: u64 },
    #[error(
        "{at}: partition `{name}` starts at byte {offset}, before the end of the partition table area (byte {table_end})"
    )]
    InTableArea {
        at: String,
        name: String,
        offset: u64,
        table_end: u64,
    },
}

/// What the planner needs besides the profile.
#[derive(Debug, Clone, Default)]
pub struct PlanInput {
    /// Image size from the command line; overrides the profile's table.size.
    pub image_size: Option<u64>,
    /// Bytes the fill partition needs for its content (root filesystem estimate), used when the size is auto.
    pub fill_content: Option<u64>,
    /// Actual size of the bootloader blob, when known.
    pub blob_size: Option<u64>,
    /// SOURCE_DATE_EPOCH, the seed of every identifier.
    pub epoch: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegionKind {
    Table,
    Bootloader,
    Partition,
    Free,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Region {
    pub name: String,
    pub kind: RegionKind,
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedPartition {
    /// Partition number as the kernel sees it (1-based).
    pub number: u32,
    pub name: String,
    pub role: Role,
    pub fs: Fs,
    pub start: u64,
    pub size: u64,
    pub fill: bool,
    pub label: Option<String>,
    pub kind: PartitionType,
    /// GPT unique partition GUID (None on MBR).
    pub unique_guid: Option<Guid>,
    /// What `root=PARTUUID=` and /dev/disk/by-partuuid use.
    pub partuuid: String,
    /// Filesystem UUID / volume id derived for this partition.
    pub fs_uuid: Guid,
    pub fat_volume_id: u32,
}

impl PlannedPartition {
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedBlob {
    pub path: String,
    pub offset: u64,
    /// Bytes actually known (the blob's size) or, before it is read, the minimum of one sector.
    pub size: u64,
    /// Where the blob may grow to: the start of the next region, or offset + max_size.
    pub limit: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum TableLayout {
    Mbr {
        disk_signature: u32,
    },
    Gpt {
        disk_guid: Guid,
        entries_offset: u64,
        entries: u32,
        first_usable_lba: u64,
        last_usable_lba: u64,
    },
}

/// The complete byte layout of an image.
#[derive(Debug, Clone, Serialize)]
pub struct Layout {
    pub board: String,
    pub image_size: u64,
    /// The image size was derived (from content, or the minimum when no content was given).
    pub size_auto: bool,
    pub table: TableLayout,
    pub partitions: Vec<PlannedPartition>,
    pub bootloader: Option<PlannedBlob>,
    /// Every byte range in order, free gaps included.
    pub regions: Vec<Region>,
}

impl Layout {
    pub fn partition(&self, role: Role) -> Option<&PlannedPartition> {
        self.partitions.iter().find(|p| p.role == role)
    }

    /// The GPT this layout describes (None for MBR).
    pub fn gpt(&self) -> Option<gpt::Gpt> {
        let TableLayout::Gpt {
            disk_guid,
            entries_offset,
            entries,
            first_usable_lba,
            last_usable_lba,
        } = &self.table
        else {
            return None;
        };
        let mut slots = vec![None; *entries as usize];
        for p in &self.partitions {
            if let PartitionType::Gpt {
                type_guid,
                name,
                attributes,
            } = &p.kind
            {
                slots[(p.number - 1) as usize] = Some(gpt::GptEntry {
                    type_guid: *type_guid,
                    unique_guid: p.unique_guid.unwrap_or_default(),
                    first_lba: p.start / SECTOR,
                    last_lba: p.end() / SECTOR - 1,
                    attributes: *attributes,
                    name: name.clone(),
                });
            }
        }
        Some(gpt::Gpt {
            disk_guid: *disk_guid,
            disk_sectors: self.image_size / SECTOR,
            entries_lba: entries_offset / SECTOR,
            num_entries: *entries,
            first_usable_lba: *first_usable_lba,
            last_usable_lba: *last_usable_lba,
            entries: slots,
        })
    }

    /// The MBR this layout describes (None for GPT, which gets a protective MBR).
    pub fn mbr(&self) -> Option<crate::disk::mbr::Mbr> {
        let TableLayout::Mbr { disk_signature } = self.table else {
            return None;
        };
        let mut entries = [None; 4];
        for p in &self.partitions {
            if let PartitionType::Mbr {
                type_byte,
                bootable,
            } = p.kind
            {
                entries[(p.number - 1) as usize] = Some(crate::disk::mbr::MbrEntry {
                    bootable,
                    type_byte,
                    start_lba: (p.start / SECTOR) as u32,
                    sectors: (p.size / SECTOR) as u32,
                });
            }
        }
        Some(crate::disk::mbr::Mbr {
            disk_signature,
            entries,
        })
    }
}

/// Plans the layout of `profile`'s image in stages: the table areas, the partitions placed in order,
/// the image size, the partitions' final extents and identities, the table's fields, then every
/// region checked against the others and the free gaps between them listed.
pub fn plan(profile: &Profile, input: &PlanInput) -> Result<Layout, PlanError> {
    let ids = Ids::new(&profile.name, input.epoch);
    let (fixed_size, size_auto) = place::requested_size(profile, input)?;
    let area = place::table_area(profile);
    let blob = place::blob_request(profile, input);
    let (placed, cursor) = place::place_partitions(profile, area.end, blob.as_ref())?;
    let image_size =
        place::image_size(profile, input, fixed_size, &placed, cursor, area.backup_len)?;
    let usable_end = image_size.saturating_sub(area.backup_len);
    let extents = place::extents(profile, &placed, usable_end, area.backup_len)?;
    let mut partitions = place::identities(profile, &ids, extents);
    let table = place::table_layout(
        profile,
        &ids,
        area.end,
        blob.as_ref(),
        &mut partitions,
        image_size,
    );
    let mut regions = place::occupied_regions(area, image_size, &partitions);
    let bootloader = place::place_blob(blob, &mut regions, image_size)?;
    place::check_overlaps(&mut regions)?;
    place::check_blob_limit(bootloader.as_ref())?;
    Ok(Layout {
        board: profile.name.clone(),
        image_size,
        size_auto: size_auto && input.image_size.is_none(),
        table,
        partitions,
        bootloader,
        regions: place::with_free_gaps(regions, image_size),
    })
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.table {
            TableLayout::Mbr { disk_signature } => {
                writeln!(f, "table: MBR, disk signature 0x{disk_signature:08x}")?;
            }
            TableLayout::Gpt {
                disk_guid,
                entries_offset,
                entries,
                first_usable_lba,
                last_usable_lba,
            } => {
                writeln!(
                    f,
                    "table: GPT, disk GUID {disk_guid}, {entries} entries at byte {entries_offset}, usable LBA {first_usable_lba}..={last_usable_lba}"
                )?;
            }
        }
        let auto = if self.size_auto {
            " (auto: the last partition is sized from the root filesystem at build time)"
        } else {
            ""
        };
        writeln!(
            f,
            "image: {} bytes ({}){auto}",
            self.image_size,
            Human(self.image_size)
        )?;
        writeln!(f)?;
        writeln!(f, "{:>12}  {:>12}  {:>10}  region", "start", "end", "size")?;
        for r in &self.regions {
            let mut line = format!(
                "{:>12}  {:>12}  {:>10}  {}",
                r.start,
                r.end,
                Human(r.end - r.start).to_string(),
                r.name
            );
            if r.kind == RegionKind::Partition
                && let Some(p) = self.partitions.iter().find(|p| p.start == r.start)
            {
                line.push_str(&format!("  {}", p.fs));
                match &p.kind {
                    PartitionType::Mbr {
                        type_byte,
                        bootable,
                    } => {
                        line.push_str(&format!("  type 0x{type_byte:02x}"));
                        if *bootable {
                            line.push_str(" bootable");
                        }
                    }
                    PartitionType::Gpt {
                        type_guid,
                        name,
                        attributes,
                    } => {
                        line.push_str(&format!("  type {type_guid}  name \"{name}\""));
                        if *attributes != 0 {
                            line.push_str(&format!(
                                    "  attrs 0x{attributes:016x} (priority {}, tries {}, successful {})",
                                    (attributes >> 48) & 0xf,
                                    (attributes >> 52) & 0xf,
                                    (attributes >> 56) & 1
                                ));
                        }
                    }
                }
                line.push_str(&format!("  PARTUUID {}", p.partuuid));
                if p.fill {
                    line.push_str("  (fill)");
                }
            }
            if r.kind == RegionKind::Bootloader
                && let Some(b) = &self.bootloader
            {
                line.push_str(&format!("  (may grow to byte {})", b.limit));
            }
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Catalog;
    use crate::size::MIB;
    use proptest::prelude::*;

    fn profile_from(text: &str) -> Profile {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.toml");
        std::fs::write(&p, text).unwrap();
        Catalog::default().load(p.to_str().unwrap()).unwrap()
    }

    #[test]
    fn cubieboard_layout() {
        let p = Catalog::default().load("cubieboard").unwrap();
        let l = plan(
            &p,
            &PlanInput {
                fill_content: Some(300 * MIB),
                blob_size: Some(540_000),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(l.partitions[0].start, MIB);
        assert_eq!(l.partitions[0].size, 128 * MIB);
        assert_eq!(l.partitions[1].start, 129 * MIB);
        assert_eq!(l.partitions[1].end(), l.image_size);
        assert!(l.partitions[1].size >= 300 * MIB);
        assert_eq!(l.bootloader.as_ref().unwrap().limit, MIB);
        // Every byte is accounted for, in order, without overlap.
        let mut pos = 0;
        for r in &l.regions {
            assert_eq!(r.start, pos);
            pos = r.end;
        }
        assert_eq!(pos, l.image_size);
    }

    #[test]
    fn gpt_with_spl_over_entry_array_is_rejected() {
        let p = profile_from(
            "arch = \"armhf\"\nconsole = \"ttyS0\"\n[kernel]\nimage = \"zImage\"\npath = \"k\"\n[bootloader]\npath = \"spl\"\noffset = \"8KiB\"\n[table]\ntype = \"gpt\"\n[[partition]]\nname = \"root\"\nsize = \"fill\"\nrole = \"root\"\n",
        );
        let e = plan(&p, &PlanInput::default()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("GPT entry array") && msg.contains("bootloader blob spl"),
            "{msg}"
        );
        assert!(
            msg.contains("1024..17408") && msg.contains("8192.."),
            "{msg}"
        );
    }

    #[test]
    fn moved_gpt_array_lets_the_spl_in() {
        let p = profile_from(
            "arch = \"armhf\"\nconsole = \"ttyS0\"\n[kernel]\nimage = \"zImage\"\npath = \"k\"\n[bootloader]\npath = \"spl\"\noffset = \"8KiB\"\n[table]\ntype = \"gpt\"\ngpt_entries_offset = \"1008KiB\"\n[[partition]]\nname = \"root\"\nsize = \"fill\"\nrole = \"root\"\n",
        );
        let l = plan(
            &p,
            &PlanInput {
                blob_size: Some(540_000),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(l.bootloader.unwrap().limit, 1008 * 1024);
        assert_eq!(l.partitions[0].start, MIB);
    }

    #[test]
    fn overlapping_partitions_are_rejected() {
        let p = profile_from(
            "arch = \"armhf\"\nconsole = \"ttyS0\"\n[kernel]\nimage = \"zImage\"\npath = \"k\"\n[table]\ntype = \"mbr\"\nsize = \"64MiB\"\n[[partition]]\nname = \"a\"\nsize = \"16MiB\"\n[[partition]]\nname = \"b\"\noffset = \"8MiB\"\nsize = \"16MiB\"\n",
        );
        let msg = plan(&p, &PlanInput::default()).unwrap_err().to_string();
        assert!(
            msg.contains(
                "`a` (bytes 1048576..17825792) overlaps partition 2 `b` (bytes 8388608..25165824)"
            ),
            "{msg}"
        );
    }

    #[test]
    fn partition_past_end_is_rejected() {
        let p = profile_from(
            "arch = \"armhf\"\nconsole = \"ttyS0\"\n[kernel]\nimage = \"zImage\"\npath = \"k\"\n[table]\ntype = \"gpt\"\nsize = \"32MiB\"\n[[partition]]\nname = \"a\"\nsize = \"31MiB\"\n",
        );
        let e = plan(&p, &PlanInput::default()).unwrap_err();
        assert!(matches!(e, PlanError::PastEnd { .. }), "{e}");
        assert!(e.to_string().contains("before the backup GPT"));
    }

    #[test]
    fn five_mbr_primaries_are_rejected() {
        let mut t = String::from(
            "arch = \"armhf\"\nconsole = \"ttyS0\"\n[kernel]\nimage = \"zImage\"\npath = \"k\"\n[table]\ntype = \"mbr\"\n",
        );
        for i in 0..5 {
            t.push_str(&format!(
                "[[partition]]\nname = \"p{i}\"\nsize = \"1MiB\"\n"
            ));
        }
        assert_eq!(
            plan(&profile_from(&t), &PlanInput::default()).unwrap_err(),
            PlanError::TooManyPrimaries { count: 5 }
        );
    }

    #[test]
    fn misaligned_offset_is_rejected() {
        let p = profile_from(
            "arch = \"armhf\"\nconsole = \"ttyS0\"\n[kernel]\nimage = \"zImage\"\npath = \"k\"\n[table]\ntype = \"mbr\"\n[[partition]]\nname = \"a\"\noffset = \"1536KiB\"\nsize = \"1MiB\"\n",
        );
        assert!(matches!(
            plan(&p, &PlanInput::default()).unwrap_err(),
            PlanError::Misaligned { .. }
        ));
    }

    #[test]
    fn gpt_table_fields() {
        let p = Catalog::default().load("chromebook-snow").unwrap();
        let l = plan(
            &p,
            &PlanInput {
                image_size: Some(64 * MIB),
                ..Default::default()
            },
        )
        .unwrap();
        let g = l.gpt().unwrap();
        assert_eq!(g.first_usable_lba, 34);
        assert_eq!(g.last_usable_lba, 64 * 2048 - 34);
        assert_eq!(l.partitions[1].end() / SECTOR - 1, g.last_usable_lba);
    }

    proptest! {
        #[test]
        fn planned_partitions_never_overlap_and_stay_inside(
            sizes in proptest::collection::vec(1u64..64, 1..4),
            fill in any::<bool>(),
            gpt in any::<bool>(),
            align_kib in prop_oneof![Just(4u64), Just(512), Just(1024), Just(4096)],
            content in 0u64..512,
        ) {
            let mut t = format!(
                "arch = \"armhf\"\nconsole = \"ttyS0\"\n[kernel]\nimage = \"zImage\"\npath = \"k\"\n[table]\ntype = \"{}\"\nalignment = \"{align_kib}KiB\"\n",
                if gpt { "gpt" } else { "mbr" }
            );
            for (i, s) in sizes.iter().enumerate() {
                let size = if fill && i + 1 == sizes.len() { "\"fill\"".to_string() } else { format!("\"{s}MiB\"") };
                t.push_str(&format!("[[partition]]\nname = \"p{i}\"\nsize = {size}\n"));
            }
            let p = profile_from(&t);
            let l = plan(&p, &PlanInput { fill_content: Some(content * MIB), ..Default::default() }).unwrap();
            let mut pos = 0;
            for r in &l.regions {
                prop_assert_eq!(r.start, pos);
                prop_assert!(r.end > r.start);
                pos = r.end;
            }
            prop_assert_eq!(pos, l.image_size);
            for part in &l.partitions {
                prop_assert_eq!(part.start % (align_kib * 1024), 0);
                if part.fill { prop_assert!(part.size >= content * MIB); }
            }
        }
    }
}
