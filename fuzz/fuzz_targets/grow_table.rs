//! Fuzzes what `boardsmith grow` and `write --grow` do with the partition table a card or image
//! holds (`boardsmith::grow::plan_table`): any table gives an error or a plan that stays inside
//! the new disk, never shrinks, and leaves a table that, read again, needs nothing more.
//!
//! Input: byte 0 flags (bit 0: recompute the GPT CRCs, so that mutated fields reach the checks
//! behind the CRCs), bytes 1..5 the disk's size in sectors and 5..9 the growth in sectors
//! (u32 LE each), then the disk's first bytes; the rest of the disk reads as zeros.
#![no_main]

use std::collections::HashMap;

use boardsmith::grow::{GrowError, plan_table};
use libfuzzer_sys::fuzz_target;

const SECTOR: u64 = 512;

fn u32_at(d: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([d[o], d[o + 1], d[o + 2], d[o + 3]])
}

/// Recomputes the entry array's CRC (where the header says it is) and the header's CRC.
fn fix_crcs(disk: &mut Vec<u8>) {
    if disk.len() < 1024 {
        disk.resize(1024, 0);
    }
    let lba = u64::from_le_bytes(disk[512 + 72..512 + 80].try_into().unwrap_or([0; 8]));
    let n = u64::from(u32_at(disk, 512 + 80)).min(4096);
    if let Some(start) = lba
        .checked_mul(SECTOR)
        .and_then(|s| usize::try_from(s).ok())
        && start < 1 << 20
    {
        let end = start + (n * 128) as usize;
        let mut array = vec![0u8; end - start];
        if start < disk.len() {
            let avail = &disk[start..disk.len().min(end)];
            array[..avail.len()].copy_from_slice(avail);
        }
        let crc = crc32fast::hash(&array);
        disk[512 + 88..512 + 92].copy_from_slice(&crc.to_le_bytes());
    }
    let size = (u32_at(disk, 512 + 12) as usize).clamp(92, 512);
    disk[512 + 16..512 + 20].fill(0);
    let crc = crc32fast::hash(&disk[512..512 + size]);
    disk[512 + 16..512 + 20].copy_from_slice(&crc.to_le_bytes());
}

/// A disk of `sectors`: `overlay` sectors, else `data`, else zeros.
fn read_disk(
    data: &[u8],
    overlay: &HashMap<u64, Vec<u8>>,
    sectors: u64,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, GrowError> {
    let end = offset.checked_add(len as u64);
    if end.is_none_or(|e| e > sectors * SECTOR) {
        return Err(GrowError::Table {
            path: "fuzz".into(),
            message: format!("read of {len} bytes at {offset} beyond the disk"),
        });
    }
    let mut out = vec![0u8; len];
    // Sector by sector (grow reads whole sectors; any other piece is copied the same way).
    let mut done = 0usize;
    while done < len {
        let at = offset + done as u64;
        let in_sector = (at % SECTOR) as usize;
        let n = (SECTOR as usize - in_sector).min(len - done);
        let dst = &mut out[done..done + n];
        if let Some(s) = overlay.get(&(at / SECTOR)) {
            dst.copy_from_slice(&s[in_sector..in_sector + n]);
        } else if let Ok(a) = usize::try_from(at)
            && a < data.len()
        {
            let m = n.min(data.len() - a);
            dst[..m].copy_from_slice(&data[a..a + m]);
        }
        done += n;
    }
    Ok(out)
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 9 {
        return;
    }
    let sectors = u64::from(u32_at(input, 1)).max(1);
    let new_sectors = sectors + u64::from(u32_at(input, 5));
    let mut data = input[9..].to_vec();
    if input[0] & 1 != 0 {
        fix_crcs(&mut data);
    }
    let none = HashMap::new();
    let Ok(plan) = plan_table(
        &mut |o, n| read_disk(&data, &none, sectors, o, n),
        sectors,
        new_sectors,
        "fuzz",
    ) else {
        return;
    };
    assert!(plan.start < plan.old_end, "{plan:?}");
    assert!(plan.old_end <= plan.new_end, "{plan:?}");
    assert!(plan.new_end <= new_sectors, "{plan:?}");
    let mut overlay: HashMap<u64, Vec<u8>> = HashMap::new();
    for (offset, bytes) in &plan.writes {
        assert_eq!(offset % SECTOR, 0);
        assert_eq!(bytes.len() as u64 % SECTOR, 0);
        let end = offset
            .checked_add(bytes.len() as u64)
            .expect("write end overflows");
        assert!(
            end <= new_sectors * SECTOR,
            "write at {offset} past the new end"
        );
        for (i, s) in bytes.chunks(SECTOR as usize).enumerate() {
            overlay.insert(offset / SECTOR + i as u64, s.to_vec());
        }
    }
    // The grown table is sound and complete: planning again changes nothing.
    let again = plan_table(
        &mut |o, n| read_disk(&data, &overlay, new_sectors, o, n),
        new_sectors,
        new_sectors,
        "fuzz",
    )
    .unwrap_or_else(|e| panic!("the grown table does not read back: {e}"));
    assert_eq!((again.number, again.start), (plan.number, plan.start));
    assert_eq!((again.old_end, again.new_end), (plan.new_end, plan.new_end));
    assert!(again.writes.is_empty(), "{again:?}");
});
