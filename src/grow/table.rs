//! The partition table's new layout: the last MBR or GPT entry extended to the new end, the GPT's backup
//! header and entry array moved there; every field read from the target checked first.

use super::*;

/// A partition as the overlap check sees it: (number, first sector, end sector exclusive).
type Extent = (usize, u64, u64);

/// The first two of `used` that overlap, in the order of their first sectors.
fn first_overlap(mut used: Vec<Extent>) -> Option<(Extent, Extent)> {
    used.sort_by_key(|u| u.1);
    used.windows(2)
        .find(|w| w[0].2 > w[1].1)
        .map(|w| (w[0], w[1]))
}

pub(super) fn table_err(path: &str, message: impl Into<String>) -> GrowError {
    GrowError::Table {
        path: path.to_string(),
        message: message.into(),
    }
}

/// What growing does to the partition table: the last partition before and after (sectors), and
/// the sectors to write (byte offset, bytes), all inside the new size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlan {
    pub table: &'static str,
    pub number: u32,
    pub start: u64,
    pub old_end: u64,
    pub new_end: u64,
    pub writes: Vec<(u64, Vec<u8>)>,
}

/// Reads and checks the partition table of a disk of `sectors` sectors (`read(offset, len)`
/// reads it) and plans growing its last partition to a disk of `new_sectors`. Nothing is
/// written; a table that is inconsistent in any field is an error naming the field and its byte
/// offset.
pub fn plan_table(
    read: &mut dyn FnMut(u64, usize) -> Result<Vec<u8>, GrowError>,
    sectors: u64,
    new_sectors: u64,
    path: &str,
) -> Result<TablePlan, GrowError> {
    if new_sectors < sectors {
        return Err(table_err(
            path,
            format!("the new size ({new_sectors} sectors) is below the current one ({sectors})"),
        ));
    }
    if sectors < 1 {
        return Err(table_err(path, "the target is smaller than one sector"));
    }
    let mut sector0 = [0u8; 512];
    sector0.copy_from_slice(&read(0, 512)?);
    let mbr = Mbr::parse(&sector0).map_err(|e| table_err(path, e.to_string()))?;
    if mbr.is_protective() {
        plan_gpt(read, path, &sector0, &mbr, sectors, new_sectors)
    } else {
        plan_mbr(path, &sector0, mbr, sectors, new_sectors)
    }
}

pub(super) fn plan_mbr(
    path: &str,
    sector0: &[u8; 512],
    mbr: Mbr,
    sectors: u64,
    new_sectors: u64,
) -> Result<TablePlan, GrowError> {
    let mut used: Vec<Extent> = Vec::new();
    for (i, e) in mbr.entries.iter().enumerate() {
        let Some(e) = e else { continue };
        let at = 446 + 16 * i;
        if e.start_lba == 0 {
            return Err(table_err(
                path,
                format!(
                    "MBR partition {} (entry at byte {at}): starts at sector 0, over the partition table",
                    i + 1
                ),
            ));
        }
        if e.end_lba() > sectors {
            return Err(table_err(
                path,
                format!(
                    "MBR partition {} (entry at byte {at}): sectors {}..{} end beyond the target ({sectors} sectors); the image is truncated or its table is corrupt",
                    i + 1,
                    e.start_lba,
                    e.end_lba()
                ),
            ));
        }
        used.push((i + 1, u64::from(e.start_lba), e.end_lba()));
    }
    if let Some((a, b)) = first_overlap(used) {
        return Err(table_err(
            path,
            format!(
                "MBR partitions {} (sectors {}..{}) and {} (sectors {}..{}) overlap",
                a.0, a.1, a.2, b.0, b.1, b.2
            ),
        ));
    }
    let (idx, last) = mbr
        .entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.map(|e| (i, e)))
        .max_by_key(|(_, e)| e.end_lba())
        .ok_or_else(|| table_err(path, "the MBR has no partitions"))?;
    if matches!(last.type_byte, 0x05 | 0x0f | 0x85) {
        return Err(table_err(
            path,
            format!(
                "the last partition ({}) is an extended partition; growing logical partitions is not supported",
                idx + 1
            ),
        ));
    }
    let start = u64::from(last.start_lba);
    let old_end = last.end_lba();
    // An MBR entry counts at most 2^32-1 sectors.
    let limit = start.saturating_add(u64::from(u32::MAX));
    let new_end = align_down(new_sectors, ALIGN_SECTORS).min(limit);
    let mut plan = TablePlan {
        table: "mbr",
        number: idx as u32 + 1,
        start,
        old_end,
        new_end: old_end,
        writes: Vec::new(),
    };
    if new_end > old_end {
        let mut m = mbr;
        if let Some(e) = m.entries[idx].as_mut() {
            e.sectors = u32::try_from(new_end - start).unwrap_or(u32::MAX);
        }
        let mut s0 = *sector0;
        m.encode_into(&mut s0);
        plan.writes.push((0, s0.to_vec()));
        plan.new_end = new_end;
    }
    Ok(plan)
}

/// Byte offsets of the primary GPT header's fields, for messages.
pub(super) const GPT_MY_LBA: u64 = SECTOR + 24;
pub(super) const GPT_ALTERNATE_LBA: u64 = SECTOR + 32;
pub(super) const GPT_FIRST_USABLE: u64 = SECTOR + 40;
pub(super) const GPT_LAST_USABLE: u64 = SECTOR + 48;
pub(super) const GPT_ENTRIES_LBA: u64 = SECTOR + 72;

/// The primary GPT header's fields, each against the target's size and the others; returns the
/// entry array's length in sectors.
fn check_header(header: &GptHeader, sectors: u64, path: &str) -> Result<u64, GrowError> {
    let field = |name: &str, at: u64, value: u64, why: String| {
        table_err(
            path,
            format!("primary GPT header: {name} (byte {at}) is {value}: {why}"),
        )
    };
    let array = array_sectors(header.num_entries);
    if header.my_lba != 1 {
        return Err(field(
            "its own LBA",
            GPT_MY_LBA,
            header.my_lba,
            "the primary header is at LBA 1".into(),
        ));
    }
    if header.alternate_lba >= sectors || header.alternate_lba < 2 {
        return Err(field(
            "the backup header's LBA",
            GPT_ALTERNATE_LBA,
            header.alternate_lba,
            format!(
                "the backup header must lie after the primary table and inside the target ({sectors} sectors); the image is truncated or the table belongs to another disk"
            ),
        ));
    }
    if header.entries_lba < 2
        || header
            .entries_lba
            .checked_add(array)
            .is_none_or(|end| end > header.first_usable_lba)
    {
        return Err(field(
            "the entry array's LBA",
            GPT_ENTRIES_LBA,
            header.entries_lba,
            format!(
                "the array ({} entries, {array} sectors) must lie after the header and end by the first usable LBA ({})",
                header.num_entries, header.first_usable_lba
            ),
        ));
    }
    if header
        .last_usable_lba
        .checked_add(array)
        .is_none_or(|end| end >= header.alternate_lba)
    {
        return Err(field(
            "the last usable LBA",
            GPT_LAST_USABLE,
            header.last_usable_lba,
            format!(
                "the backup array ({array} sectors) and header (LBA {}) must follow it inside the target",
                header.alternate_lba
            ),
        ));
    }
    if header.first_usable_lba > header.last_usable_lba {
        return Err(field(
            "the first usable LBA",
            GPT_FIRST_USABLE,
            header.first_usable_lba,
            format!("after the last usable LBA ({})", header.last_usable_lba),
        ));
    }
    Ok(array)
}

pub(super) fn plan_gpt(
    read: &mut dyn FnMut(u64, usize) -> Result<Vec<u8>, GrowError>,
    path: &str,
    sector0: &[u8; 512],
    mbr: &Mbr,
    sectors: u64,
    new_sectors: u64,
) -> Result<TablePlan, GrowError> {
    if sectors < 3 {
        return Err(table_err(
            path,
            format!("the target ({sectors} sectors) is too small for the GPT its MBR announces"),
        ));
    }
    let header = GptHeader::parse(&read(SECTOR, SECTOR as usize)?, SECTOR)
        .map_err(|e| table_err(path, format!("primary GPT: {e}")))?;
    let array = check_header(&header, sectors, path)?;
    // Inside the target now: entries_lba + array <= first_usable <= last_usable < alternate < sectors.
    let array_offset = header.entries_lba * SECTOR;
    let bytes = read(array_offset, (array * SECTOR) as usize)?;
    let mut gpt = Gpt::from_parts(&header, sectors, &bytes, array_offset)
        .map_err(|e| table_err(path, format!("primary GPT: {e}")))?;
    let mut used: Vec<Extent> = Vec::new();
    for (i, e) in gpt.entries.iter().enumerate() {
        let Some(e) = e else { continue };
        if e.first_lba < header.first_usable_lba || e.last_lba > header.last_usable_lba {
            return Err(table_err(
                path,
                format!(
                    "GPT entry {} (byte {}): LBAs {}..={} lie outside the usable area {}..={}",
                    i + 1,
                    array_offset + i as u64 * ENTRY_SIZE,
                    e.first_lba,
                    e.last_lba,
                    header.first_usable_lba,
                    header.last_usable_lba
                ),
            ));
        }
        used.push((i + 1, e.first_lba, e.last_lba.saturating_add(1)));
    }
    if let Some((a, b)) = first_overlap(used) {
        return Err(table_err(
            path,
            format!(
                "GPT entries {} (LBAs {}..={}) and {} (LBAs {}..={}) overlap",
                a.0,
                a.1,
                a.2 - 1,
                b.0,
                b.1,
                b.2 - 1
            ),
        ));
    }
    let (idx, last) = gpt
        .entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.as_ref().map(|e| (i, e.clone())))
        .max_by_key(|(_, e)| e.last_lba)
        .ok_or_else(|| table_err(path, "the GPT has no partitions"))?;
    // new_sectors >= sectors > alternate > last_usable + array, so this does not underflow.
    let last_usable = new_sectors
        .checked_sub(2 + array)
        .filter(|&l| l >= header.last_usable_lba)
        .ok_or_else(|| table_err(path, "the new size leaves no room for the backup GPT"))?;
    let old_end = last.last_lba + 1;
    let new_end = align_down(last_usable + 1, ALIGN_SECTORS);
    let mut plan = TablePlan {
        table: "gpt",
        number: idx as u32 + 1,
        start: last.first_lba,
        old_end,
        new_end: old_end,
        writes: Vec::new(),
    };
    if new_end > old_end
        && let Some(Some(e)) = gpt.entries.get_mut(idx)
    {
        e.last_lba = new_end - 1;
        plan.new_end = new_end;
    }
    if plan.new_end == old_end && header.alternate_lba == new_sectors - 1 {
        return Ok(plan);
    }
    // Growing rewrites sector 0 as a protective MBR: a hybrid MBR's entries would be lost.
    if let Some(found) = mbr.hybrid() {
        return Err(table_err(
            path,
            format!(
                "sector 0 holds {found}; growing would replace it with a protective MBR and lose those entries. Grow it with gdisk or sgdisk instead (sgdisk -e moves the backup GPT to the end; then recreate the last partition larger and resize its filesystem), or, if nothing needs the MBR's entries, make it protective first (gdisk: r, n, w) and grow again"
            ),
        ));
    }
    gpt.last_usable_lba = last_usable;
    gpt.disk_sectors = new_sectors;
    // The old backup header lies beyond the old end, now free space: clear it so nothing finds a
    // stale table there.
    let old_backup = header.alternate_lba;
    if old_backup < gpt.backup_entries_lba() && old_backup >= old_end {
        plan.writes
            .push((old_backup * SECTOR, vec![0u8; SECTOR as usize]));
    }
    for (offset, bytes) in gpt.encode() {
        if offset == 0 {
            // The protective MBR: keep the boot code, the disk signature and the 0xEE entry's
            // boot flag (parted's pmbr_boot) and slot.
            let mut s0 = *sector0;
            let mut m = mbr.clone();
            if let Some(grown) = Mbr::protective(new_sectors).entries[0] {
                // not_protective() passed: the 0xEE entry is the only one.
                for e in m.entries.iter_mut().flatten() {
                    *e = MbrEntry {
                        bootable: e.bootable,
                        ..grown
                    };
                }
            }
            m.encode_into(&mut s0);
            plan.writes.push((0, s0.to_vec()));
        } else {
            plan.writes.push((offset, bytes));
        }
    }
    Ok(plan)
}
