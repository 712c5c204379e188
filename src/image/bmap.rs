//! Block maps in bmaptool's format (version 2.0 written; parsing lives with the writer): which blocks of
//! the image hold data, each range with its SHA-256, and the bmap file's own checksum.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// One mapped run of blocks, inclusive like bmaptool's `first-last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmapRange {
    pub first: u64,
    pub last: u64,
    /// Lower-case hex digest of the range's bytes (absent in old bmap files).
    pub checksum: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumType {
    Sha256,
    Sha1,
}

impl ChecksumType {
    pub fn name(self) -> &'static str {
        match self {
            ChecksumType::Sha256 => "sha256",
            ChecksumType::Sha1 => "sha1",
        }
    }
    pub fn hex_len(self) -> usize {
        match self {
            ChecksumType::Sha256 => 64,
            ChecksumType::Sha1 => 40,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    pub image_size: u64,
    pub block_size: u64,
    pub checksum_type: ChecksumType,
    pub ranges: Vec<BmapRange>,
}

fn human(bytes: u64) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

impl Bmap {
    pub fn blocks_count(&self) -> u64 {
        self.image_size.div_ceil(self.block_size)
    }

    pub fn mapped_blocks(&self) -> u64 {
        self.ranges.iter().map(|r| r.last - r.first + 1).sum()
    }

    /// Byte range [start, end) of a block range, clipped to the image size.
    pub fn byte_range(&self, r: &BmapRange) -> (u64, u64) {
        (
            r.first * self.block_size,
            ((r.last + 1) * self.block_size).min(self.image_size),
        )
    }

    /// The bmap 2.0 XML text, laid out as bmaptool writes it, with its own checksum filled in.
    pub fn to_xml(&self) -> String {
        let zero = "0".repeat(self.checksum_type.hex_len());
        let text = self.render(&zero);
        let digest = hex::encode(Sha256::digest(text.as_bytes()));
        text.replacen(&zero, &digest, 1)
    }

    fn render(&self, file_checksum: &str) -> String {
        let mapped = self.mapped_blocks();
        let pct = if self.blocks_count() == 0 {
            0.0
        } else {
            mapped as f64 * 100.0 / self.blocks_count() as f64
        };
        let mut s = String::new();
        s.push_str("<?xml version=\"1.0\" ?>\n");
        s.push_str("<!-- Block map (bmaptool format 2.0) written by boardsmith: the blocks of the image that hold\n");
        s.push_str("     data. Only these need to be copied to the target; each range carries the SHA-256 of its\n");
        s.push_str("     bytes, and BmapFileChecksum is the SHA-256 of this file with that field set to zeros. -->\n\n");
        s.push_str("<bmap version=\"2.0\">\n");
        let _ = writeln!(
            s,
            "    <!-- Image size in bytes: {} -->",
            human(self.image_size)
        );
        let _ = writeln!(s, "    <ImageSize> {} </ImageSize>\n", self.image_size);
        s.push_str("    <!-- Size of a block in bytes -->\n");
        let _ = writeln!(s, "    <BlockSize> {} </BlockSize>\n", self.block_size);
        s.push_str("    <!-- Count of blocks in the image file -->\n");
        let _ = writeln!(
            s,
            "    <BlocksCount> {} </BlocksCount>\n",
            self.blocks_count()
        );
        let _ = writeln!(
            s,
            "    <!-- Count of mapped blocks: {} or {pct:.1}% -->",
            human(mapped * self.block_size)
        );
        let _ = writeln!(s, "    <MappedBlocksCount> {mapped} </MappedBlocksCount>\n");
        s.push_str("    <!-- Type of checksum used in this file -->\n");
        let _ = writeln!(
            s,
            "    <ChecksumType> {} </ChecksumType>\n",
            self.checksum_type.name()
        );
        s.push_str(
            "    <!-- The checksum of this bmap file. When it is calculated, the value of\n",
        );
        s.push_str("         the checksum has be zero (all ASCII \"0\" symbols).  -->\n");
        let _ = writeln!(
            s,
            "    <BmapFileChecksum> {file_checksum} </BmapFileChecksum>\n"
        );
        s.push_str("    <!-- The block map: ranges of blocks (first-last, inclusive) or single blocks, each with\n");
        s.push_str("         the checksum of its bytes. -->\n");
        s.push_str("    <BlockMap>\n");
        for r in &self.ranges {
            let blocks = if r.first == r.last {
                r.first.to_string()
            } else {
                format!("{}-{}", r.first, r.last)
            };
            match &r.checksum {
                Some(c) => {
                    let _ = writeln!(s, "        <Range chksum=\"{c}\"> {blocks} </Range>");
                }
                None => {
                    let _ = writeln!(s, "        <Range> {blocks} </Range>");
                }
            }
        }
        s.push_str("    </BlockMap>\n</bmap>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_checksum_verifies() {
        let b = Bmap {
            image_size: 1 << 20,
            block_size: 4096,
            checksum_type: ChecksumType::Sha256,
            ranges: vec![BmapRange {
                first: 2,
                last: 2,
                checksum: Some("ab".repeat(32)),
            }],
        };
        let xml = b.to_xml();
        let start = xml.find("<BmapFileChecksum> ").unwrap() + 19;
        let stored = &xml[start..start + 64];
        let zeroed = xml.replacen(stored, &"0".repeat(64), 1);
        assert_eq!(hex::encode(Sha256::digest(zeroed.as_bytes())), stored);
        assert!(xml.contains("<Range chksum=\"abab"));
        assert!(xml.contains("> 2 </Range>"));
    }
}
