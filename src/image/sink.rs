//! The image file being assembled: positioned writes into a sparse file, with a record of every byte range
//! written, from which the block map is generated (untouched space stays a hole and stays unmapped).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Sorted, non-overlapping, coalesced half-open byte ranges.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RangeSet {
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        // Merge with a range that starts before and reaches `s`.
        if let Some((&ps, &pe)) = self.map.range(..=s).next_back()
            && pe >= s
        {
            s = ps;
            e = e.max(pe);
            self.map.remove(&ps);
        }
        // Absorb ranges starting inside [s, e].
        let inside: Vec<(u64, u64)> = self.map.range(s..=e).map(|(&a, &b)| (a, b)).collect();
        for (a, b) in inside {
            e = e.max(b);
            self.map.remove(&a);
        }
        self.map.insert(s, e);
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&s, &e)| (s, e))
    }

    pub fn total(&self) -> u64 {
        self.iter().map(|(s, e)| e - s).sum()
    }

    /// The same ranges widened to whole blocks of `block` bytes, clipped to `limit`.
    pub fn to_blocks(&self, block: u64, limit: u64) -> RangeSet {
        let mut out = RangeSet::default();
        for (s, e) in self.iter() {
            out.insert(
                s / block * block,
                e.div_ceil(block).saturating_mul(block).min(limit),
            );
        }
        out
    }
}

pub struct ImageSink {
    file: File,
    size: u64,
    written: RangeSet,
}

impl ImageSink {
    /// Takes a freshly created, empty file and makes it a sparse file of `size` bytes.
    pub fn new(file: File, size: u64) -> io::Result<ImageSink> {
        file.set_len(size)?;
        Ok(ImageSink {
            file,
            size,
            written: RangeSet::default(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= self.size)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "write of {} bytes at {offset} runs past the image end ({})",
                        data.len(),
                        self.size
                    ),
                )
            })?;
        self.file.write_all_at(data, offset)?;
        self.written.insert(offset, end);
        Ok(())
    }

    /// Records ranges another program (mke2fs) wrote into [start, end): the data extents the file
    /// system reports there, found with SEEK_DATA/SEEK_HOLE.
    pub fn record_external(&mut self, start: u64, end: u64) -> io::Result<()> {
        for (s, e) in crate::disk::sparse::data_extents(&self.file, start, end)? {
            self.written.insert(s, e);
        }
        Ok(())
    }

    pub fn written(&self) -> &RangeSet {
        &self.written
    }

    pub fn into_parts(self) -> (File, RangeSet) {
        (self.file, self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn merges_adjacent_and_overlapping() {
        let mut r = RangeSet::default();
        r.insert(10, 20);
        r.insert(30, 40);
        r.insert(20, 30);
        assert_eq!(r.iter().collect::<Vec<_>>(), [(10, 40)]);
        r.insert(0, 5);
        r.insert(3, 12);
        assert_eq!(r.iter().collect::<Vec<_>>(), [(0, 40)]);
        r.insert(50, 60);
        assert_eq!(r.total(), 50);
        assert_eq!(r.to_blocks(16, 100).iter().collect::<Vec<_>>(), [(0, 64)]);
    }

    proptest! {
        #[test]
        fn matches_a_bitmap(ops in proptest::collection::vec((0u64..200, 0u64..30), 0..40)) {
            let mut r = RangeSet::default();
            let mut bits = [false; 256];
            for (s, l) in ops {
                r.insert(s, s + l);
                for b in &mut bits[s as usize..(s + l) as usize] { *b = true; }
            }
            let mut from_ranges = [false; 256];
            let mut last_end = None;
            for (s, e) in r.iter() {
                prop_assert!(s < e);
                if let Some(le) = last_end { prop_assert!(s > le, "ranges must be coalesced"); }
                last_end = Some(e);
                for b in &mut from_ranges[s as usize..e as usize] { *b = true; }
            }
            prop_assert_eq!(bits, from_ranges);
        }
    }
}
