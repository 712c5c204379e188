//! Fuzzes the MBR and GPT readers `boardsmith write --grow` and `grow` use on whatever a card holds: any
//! bytes (taken as the start of a disk) give a table or an error, never a panic or an overflow; a table
//! that parses encodes back to bytes that parse to the same table.
#![no_main]

use boardsmith::disk::gpt::Gpt;
use boardsmith::disk::mbr::Mbr;
use libfuzzer_sys::fuzz_target;

const SECTOR: usize = 512;

fuzz_target!(|data: &[u8]| {
    let mut sector0 = [0u8; SECTOR];
    let n = data.len().min(SECTOR);
    sector0[..n].copy_from_slice(&data[..n]);
    if let Ok(mbr) = Mbr::parse(&sector0) {
        let mut again = sector0;
        mbr.encode_into(&mut again);
        assert_eq!(Mbr::parse(&again).as_ref(), Ok(&mbr));
    }

    // The disk is the input padded to a whole number of sectors (at least 3: MBR, header, one array sector).
    let sectors = (data.len().div_ceil(SECTOR) as u64).max(3);
    let read = |offset: u64, len: usize| -> Result<Vec<u8>, ()> {
        let start = usize::try_from(offset).map_err(|_| ())?;
        let end = start.checked_add(len).ok_or(())?;
        if end > sectors as usize * SECTOR {
            return Err(());
        }
        let mut out = vec![0u8; len];
        if start < data.len() {
            let avail = &data[start..data.len().min(end)];
            out[..avail.len()].copy_from_slice(avail);
        }
        Ok(out)
    };
    if let Ok(Ok(gpt)) = Gpt::read(sectors, read) {
        // Re-encode on a disk big enough for both copies and read the primary back.
        let disk_sectors = gpt
            .entries_lba
            .saturating_add(2 * gpt.array_sectors() + 3)
            .max(gpt.last_usable_lba.saturating_add(gpt.array_sectors() + 2));
        if disk_sectors > 1 << 16 {
            return; // a sparse re-encode would need a large buffer; the parse itself was the target
        }
        let mut g = gpt.clone();
        g.disk_sectors = disk_sectors;
        let mut disk = vec![0u8; disk_sectors as usize * SECTOR];
        for (offset, bytes) in g.encode() {
            let o = offset as usize;
            disk[o..o + bytes.len()].copy_from_slice(&bytes);
        }
        let back = Gpt::read(disk_sectors, |o, n| {
            let o = o as usize;
            Ok::<_, ()>(disk[o..o + n].to_vec())
        });
        assert_eq!(back, Ok(Ok(g)));
    }
});
