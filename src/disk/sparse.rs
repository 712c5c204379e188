//! Sparse files: where the data is (SEEK_DATA/SEEK_HOLE), so holes are neither read nor written.

use std::fs::File;
use std::io;

use rustix::fs::SeekFrom;

/// `SEEK_DATA` or `SEEK_HOLE` from `offset`; None (ENXIO) when there is no such place before the end.
fn seek(file: &File, offset: u64, whence: fn(u64) -> SeekFrom) -> io::Result<Option<u64>> {
    if i64::try_from(offset).is_err() {
        return Err(io::Error::other("offset too large"));
    }
    match rustix::fs::seek(file, whence(offset)) {
        Ok(pos) => Ok(Some(pos)),
        Err(rustix::io::Errno::NXIO) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Data extents of `file` within [start, end), in order. A filesystem without SEEK_DATA support reports
/// the whole range as data, which is correct, only slower.
pub fn data_extents(file: &File, start: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        let Some(data) = seek(file, pos, SeekFrom::Data)? else {
            break;
        };
        if data >= end {
            break;
        }
        let hole = seek(file, data, SeekFrom::Hole)?.unwrap_or(end).min(end);
        out.push((data, hole));
        pos = hole;
    }
    Ok(out)
}
