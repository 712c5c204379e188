//! Hashing in the write pass: the checksum of every block-map range (compared with the bmap as soon
//! as the range is complete) and the whole-image SHA-256/MD5, holes hashed as the zeros they are.
//! Each runs on its own thread, fed the same chunks the writer writes.

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::sums::SumKind;
use crate::device::buffers::{ZEROS, ZEROS_LEN};
use crate::image::bmap::{Bmap, ChecksumType};

/// Feeds `len` bytes at the chunk: its data, or zeros.
fn feed(update: &mut dyn FnMut(&[u8]), data: Option<&[u8]>, len: u64) {
    match data {
        Some(d) => update(d),
        None => {
            let mut left = len;
            while left > 0 {
                let n = left.min(ZEROS_LEN as u64) as usize;
                update(&ZEROS.0[..n]);
                left -= n as u64;
            }
        }
    }
}

enum Hasher {
    Sha256(Box<Sha256>),
    Sha1(Box<Sha1>),
    Md5(Box<Md5>),
}

impl Hasher {
    fn update(&mut self, d: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(d),
            Hasher::Sha1(h) => h.update(d),
            Hasher::Md5(h) => h.update(d),
        }
    }
    fn finish_reset(&mut self) -> String {
        match self {
            Hasher::Sha256(h) => hex::encode(h.finalize_reset()),
            Hasher::Sha1(h) => hex::encode(h.finalize_reset()),
            Hasher::Md5(h) => hex::encode(h.finalize_reset()),
        }
    }
}

/// A block-map range whose data did not hash to the bmap's checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeMismatch {
    /// 1-based position of the range in the bmap.
    pub index: usize,
    pub first_block: u64,
    pub last_block: u64,
    pub start: u64,
    pub end: u64,
    pub kind: &'static str,
    pub expected: String,
    pub actual: String,
}

struct Checked {
    start: u64,
    end: u64,
    first: u64,
    last: u64,
    index: usize,
    expected: String,
}

/// Checks every bmap range that carries a checksum, in image order.
pub struct RangeCheck {
    kind: ChecksumType,
    ranges: Vec<Checked>,
    next: usize,
    /// Where the current range's data must continue.
    pos: u64,
    hasher: Hasher,
}

impl RangeCheck {
    /// None if no range has a checksum.
    pub fn new(bmap: &Bmap) -> Option<RangeCheck> {
        let ranges: Vec<Checked> = bmap
            .ranges
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let (start, end) = bmap.byte_range(r);
                r.checksum.as_ref().map(|c| Checked {
                    start,
                    end,
                    first: r.first,
                    last: r.last,
                    index: i + 1,
                    expected: c.clone(),
                })
            })
            .collect();
        if ranges.is_empty() {
            return None;
        }
        let pos = ranges[0].start;
        Some(RangeCheck {
            kind: bmap.checksum_type,
            hasher: match bmap.checksum_type {
                ChecksumType::Sha256 => Hasher::Sha256(Box::default()),
                ChecksumType::Sha1 => Hasher::Sha1(Box::default()),
            },
            ranges,
            next: 0,
            pos,
        })
    }

    /// Feeds the chunk at `offset` (`data`, or `len` zeros). Chunks come in order; parts outside
    /// the ranges are ignored.
    pub fn feed(
        &mut self,
        offset: u64,
        data: Option<&[u8]>,
        len: u64,
    ) -> Result<(), RangeMismatch> {
        let end = offset + len;
        while let Some(r) = self.ranges.get(self.next) {
            if r.start >= end {
                break;
            }
            let s = r.start.max(offset).max(self.pos);
            let e = r.end.min(end);
            if s < e {
                if s != self.pos {
                    // Data of this range was skipped: it cannot match.
                    return Err(self.mismatch("(data missing)".into()));
                }
                let piece = data.map(|d| &d[(s - offset) as usize..(e - offset) as usize]);
                let h = &mut self.hasher;
                feed(&mut |b| h.update(b), piece, e - s);
                self.pos = e;
            }
            if r.end > end {
                break;
            }
            let actual = self.hasher.finish_reset();
            if actual != r.expected {
                return Err(self.mismatch(actual));
            }
            self.next += 1;
            if let Some(n) = self.ranges.get(self.next) {
                self.pos = n.start;
            }
        }
        Ok(())
    }

    fn mismatch(&self, actual: String) -> RangeMismatch {
        let r = &self.ranges[self.next];
        RangeMismatch {
            index: r.index,
            first_block: r.first,
            last_block: r.last,
            start: r.start,
            end: r.end,
            kind: self.kind.name(),
            expected: r.expected.clone(),
            actual,
        }
    }

    /// After the last chunk: the first range never completed, if any (the image ended early).
    pub fn unfinished(&self) -> Option<(usize, u64, u64)> {
        self.ranges
            .get(self.next)
            .map(|r| (r.index, r.start, r.end))
    }
}

/// A whole-image digest over chunks that must arrive contiguously from byte 0.
pub struct WholeHash {
    hasher: Hasher,
    pos: u64,
}

impl WholeHash {
    pub fn new(kind: SumKind) -> WholeHash {
        WholeHash {
            hasher: match kind {
                SumKind::Sha256 => Hasher::Sha256(Box::default()),
                SumKind::Md5 => Hasher::Md5(Box::default()),
            },
            pos: 0,
        }
    }

    /// Feeds the chunk at `offset`; false if it does not continue where the last one ended.
    pub fn feed(&mut self, offset: u64, data: Option<&[u8]>, len: u64) -> bool {
        if offset != self.pos {
            return false;
        }
        let h = &mut self.hasher;
        feed(&mut |b| h.update(b), data, len);
        self.pos += len;
        true
    }

    pub fn finish(mut self) -> (u64, String) {
        (self.pos, self.hasher.finish_reset())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::bmap::BmapRange;

    #[test]
    fn ranges_checked_across_chunks_and_holes() {
        let mut img = vec![0u8; 5 * 4096];
        img[4096..4100].copy_from_slice(b"abcd");
        img[4 * 4096] = 9;
        let sum = |s: usize, e: usize| hex::encode(Sha256::digest(&img[s..e]));
        let bmap = Bmap {
            image_size: img.len() as u64,
            block_size: 4096,
            checksum_type: ChecksumType::Sha256,
            ranges: vec![
                BmapRange {
                    first: 1,
                    last: 2,
                    checksum: Some(sum(4096, 3 * 4096)),
                },
                BmapRange {
                    first: 4,
                    last: 4,
                    checksum: Some(sum(4 * 4096, 5 * 4096)),
                },
            ],
        };
        let mut rc = RangeCheck::new(&bmap).unwrap();
        // Chunks of 3000 bytes, with block 2..4 delivered as a hole.
        let mut off = 0u64;
        while off < img.len() as u64 {
            let end = (off + 3000).min(img.len() as u64);
            let slice = &img[off as usize..end as usize];
            let data = if slice.iter().all(|&b| b == 0) {
                None
            } else {
                Some(slice)
            };
            rc.feed(off, data, end - off).unwrap();
            off = end;
        }
        assert_eq!(rc.unfinished(), None);

        let mut bad = bmap.clone();
        bad.ranges[1].checksum = Some(sum(0, 4096));
        let mut rc = RangeCheck::new(&bad).unwrap();
        let e = rc.feed(0, Some(&img), img.len() as u64).unwrap_err();
        assert_eq!((e.index, e.start, e.end), (2, 4 * 4096, 5 * 4096));
    }

    #[test]
    fn whole_hash_of_data_and_zeros() {
        let mut h = WholeHash::new(SumKind::Md5);
        assert!(h.feed(0, Some(b"ab"), 2));
        assert!(h.feed(2, None, 3_000_000));
        assert!(!h.feed(5, None, 1));
        let mut all = b"ab".to_vec();
        all.resize(3_000_002, 0);
        assert_eq!(h.finish(), (3_000_002, hex::encode(Md5::digest(&all))));
    }
}
