//! Block maps in bmaptool's format: which blocks of the image hold data, each range with its checksum,
//! and the bmap file's own checksum. Version 2.0 is written; versions 1.0–1.4 and 2.x are parsed
//! ([`Bmap::parse`]), with the file checksum and every structural rule checked.

use std::fmt::Write as _;

use sha1::Sha1;
use sha2::{Digest, Sha256};

mod parse;

/// One mapped run of blocks, inclusive like bmaptool's `first-last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmapRange {
    pub first: u64,
    pub last: u64,
    /// Lower-case hex digest of the range's bytes (absent in old bmap files).
    pub checksum: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
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

/// Largest bmap file read. Real ones are kilobytes to a few MiB (bmaptool's for a 64 GiB image with
/// thousands of ranges is well under 1 MiB); the file is held whole while it is parsed.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Most block ranges a bmap may list: each one is kept (and its checksum checked) while the image
/// is written, some 300 bytes apiece, which this bounds to about 10 MiB and keeps the writer under
/// its 64 MiB (`write_faults::bmap_with_the_most_ranges_writes_within_64_mib`). bmaptool's ranges
/// are runs of mapped blocks: a few thousand for a multi-gigabyte card image.
pub const MAX_RANGES: usize = 1 << 15;

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
        let digest = hash_hex(self.checksum_type, text.as_bytes());
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

/// Why a bmap file was rejected. Positions are 1-based lines and columns plus the byte offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BmapError {
    #[error("line {line}, column {column} (byte {offset}): {message}")]
    Syntax {
        line: usize,
        column: usize,
        offset: usize,
        message: String,
    },
    #[error("line {line} (byte {offset}): <{element}>: {message}")]
    Field {
        line: usize,
        offset: usize,
        element: String,
        message: String,
    },
    #[error(
        "line {line} (byte {offset}): <Range>: more than {limit} block ranges, more than boardsmith accepts in a bmap (each is kept in memory while the image is written); write without it (--no-bmap)"
    )]
    TooManyRanges {
        line: usize,
        offset: usize,
        limit: usize,
    },
    #[error("the file ends before {what} (truncated? byte {offset} is the end)")]
    Truncated { what: String, offset: usize },
    #[error("<{0}> is missing; bmaptool writes it in every bmap of this version")]
    Missing(&'static str),
    #[error("bmap format version {0:?} is not supported (1.0 to 2.x are)")]
    Version(String),
    #[error(
        "the bmap file's own {kind} checksum does not match: <{element}> says {stored}, the file hashes to {computed}; the bmap is corrupt or was edited, fetch it again"
    )]
    FileChecksum {
        kind: &'static str,
        element: &'static str,
        stored: String,
        computed: String,
    },
}

fn hash_hex(kind: ChecksumType, data: &[u8]) -> String {
    hash_hex_blanked(kind, data, (0, 0))
}

/// The digest of `data` with the bytes of `blank` (start, end) read as ASCII '0': the file
/// checksum, hashed in place rather than over a copy of the file.
fn hash_hex_blanked(kind: ChecksumType, data: &[u8], blank: (usize, usize)) -> String {
    fn digest<D: Digest>(data: &[u8], (start, end): (usize, usize)) -> String {
        let mut d = D::new();
        d.update(&data[..start]);
        let zeros = [b'0'; 64];
        let mut left = end - start;
        while left > 0 {
            let n = left.min(zeros.len());
            d.update(&zeros[..n]);
            left -= n;
        }
        d.update(&data[end..]);
        hex::encode(d.finalize())
    }
    match kind {
        ChecksumType::Sha256 => digest::<Sha256>(data, blank),
        ChecksumType::Sha1 => digest::<Sha1>(data, blank),
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

    /// More ranges than allowed is an error naming the first range over the limit (its line and
    /// byte), whatever else the file holds; [`MAX_RANGES`] ranges parse, one more does not.
    #[test]
    fn range_count_is_capped() {
        let xml = sample().to_xml();
        let third = xml.match_indices("<Range").nth(2).unwrap().0;
        let line = xml[..third].matches('\n').count() + 1;
        assert_eq!(
            Bmap::parse_limited(&xml, 2),
            Err(BmapError::TooManyRanges {
                line,
                offset: third,
                limit: 2
            })
        );
        assert_eq!(Bmap::parse_limited(&xml, 3), Ok(sample()));
        // The real limit, in the compact 1.2 form (no checksums).
        let v1_2 = |n: usize| {
            let mut s = format!(
                "<bmap version=\"1.2\"><ImageSize>{}</ImageSize><BlockSize>1</BlockSize><BlocksCount>{}</BlocksCount><BlockMap>",
                2 * n,
                2 * n
            );
            for i in 0..n {
                let _ = write!(s, "<Range>{}</Range>", 2 * i);
            }
            s + "</BlockMap></bmap>"
        };
        assert_eq!(
            Bmap::parse(&v1_2(MAX_RANGES)).unwrap().ranges.len(),
            MAX_RANGES
        );
        let err = Bmap::parse(&v1_2(MAX_RANGES + 1)).unwrap_err();
        assert!(
            matches!(
                err,
                BmapError::TooManyRanges {
                    limit: MAX_RANGES,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("write without it (--no-bmap)"),
            "{err}"
        );
    }

    fn sample() -> Bmap {
        Bmap {
            image_size: 10 * 4096 + 512,
            block_size: 4096,
            checksum_type: ChecksumType::Sha256,
            ranges: vec![
                BmapRange {
                    first: 0,
                    last: 1,
                    checksum: Some("0a".repeat(32)),
                },
                BmapRange {
                    first: 5,
                    last: 5,
                    checksum: Some("1b".repeat(32)),
                },
                BmapRange {
                    first: 9,
                    last: 10,
                    checksum: Some("2c".repeat(32)),
                },
            ],
        }
    }

    /// A bmap in an old layout, checksummed as bmaptool 1.x did.
    fn v1_3(b: &Bmap) -> String {
        let mut s = String::from("<?xml version=\"1.0\" ?>\n<bmap version=\"1.3\">\n");
        let _ = writeln!(s, "    <ImageSize> {} </ImageSize>", b.image_size);
        let _ = writeln!(s, "    <BlockSize> {} </BlockSize>", b.block_size);
        let _ = writeln!(s, "    <BlocksCount> {} </BlocksCount>", b.blocks_count());
        let _ = writeln!(
            s,
            "    <MappedBlocksCount> {}    </MappedBlocksCount>",
            b.mapped_blocks()
        );
        let _ = writeln!(s, "    <BmapFileSHA1> {} </BmapFileSHA1>", "0".repeat(40));
        s.push_str("    <BlockMap>\n");
        for r in &b.ranges {
            let attr = r
                .checksum
                .as_ref()
                .map(|c| format!(" sha1=\"{c}\""))
                .unwrap_or_default();
            let _ = writeln!(s, "        <Range{attr}> {}-{} </Range>", r.first, r.last);
        }
        s.push_str("    </BlockMap>\n</bmap>\n");
        let digest = hex::encode(Sha1::digest(s.as_bytes()));
        s.replacen(&"0".repeat(40), &digest, 1)
    }

    #[test]
    fn parses_what_it_writes() {
        let b = sample();
        assert_eq!(Bmap::parse(&b.to_xml()), Ok(b));
    }

    #[test]
    fn parses_version_1_3_with_sha1() {
        let mut b = sample();
        b.checksum_type = ChecksumType::Sha1;
        for r in &mut b.ranges {
            r.checksum = Some("ab".repeat(20));
        }
        assert_eq!(Bmap::parse(&v1_3(&b)), Ok(b));
    }

    #[test]
    fn parses_version_1_2_without_checksums() {
        let text = "<bmap version=\"1.2\"><ImageSize>8192</ImageSize><BlockSize>4096</BlockSize>\
                    <BlocksCount>2</BlocksCount><BlockMap><Range> 1 </Range></BlockMap></bmap>";
        let b = Bmap::parse(text).unwrap();
        assert_eq!(
            b.ranges,
            vec![BmapRange {
                first: 1,
                last: 1,
                checksum: None
            }]
        );
    }

    #[test]
    fn rejects_a_wrong_file_checksum() {
        let xml = sample().to_xml().replace("> 5 </Range>", "> 6 </Range>");
        assert!(matches!(
            Bmap::parse(&xml),
            Err(BmapError::FileChecksum { .. })
        ));
        let mut b = sample();
        b.checksum_type = ChecksumType::Sha1;
        for r in &mut b.ranges {
            r.checksum = None;
        }
        let old = v1_3(&b).replace("<BlockSize> 4096", "<BlockSize>  4096");
        assert!(matches!(
            Bmap::parse(&old),
            Err(BmapError::FileChecksum { kind: "sha1", .. })
        ));
    }

    #[test]
    fn truncation_is_an_error_naming_the_end() {
        let xml = sample().to_xml();
        let cut = &xml[..xml.find("</BlockMap>").unwrap()];
        match Bmap::parse(cut) {
            Err(BmapError::Truncated { what, offset }) => {
                assert!(what.contains("<BlockMap>"), "{what}");
                assert_eq!(offset, cut.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn structural_rules() {
        let ok = sample().to_xml();
        // Overlapping ranges, out-of-image ranges, wrong counts: each is an error, never a panic.
        for (from, to) in [
            ("> 5 </Range>", "> 1 </Range>"),
            ("> 9-10 </Range>", "> 9-11 </Range>"),
            ("<BlocksCount> 11 ", "<BlocksCount> 12 "),
            ("<MappedBlocksCount> 5 ", "<MappedBlocksCount> 6 "),
            ("<BlockSize> 4096 ", "<BlockSize> 0 "),
            ("<ImageSize> 41472 ", "<ImageSize> -1 "),
            ("version=\"2.0\"", "version=\"3.0\""),
            ("<ChecksumType> sha256 ", "<ChecksumType> md5 "),
            ("> 9-10 </Range>", "> 10-9 </Range>"),
            ("</bmap>", "</bmap><bmap>"),
            ("<BlockMap>", "<BlockMap x>"),
        ] {
            assert!(ok.contains(from), "{from}");
            let bad = ok.replacen(from, to, 1);
            assert!(Bmap::parse(&bad).is_err(), "accepted {to}");
        }
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let err =
            Bmap::parse("<bmap version=\"2.0\">\n  <ImageSize 5</ImageSize>\n</bmap>").unwrap_err();
        assert!(err.to_string().starts_with("line 2, column 14"), "{err}");
        let err = Bmap::parse_bytes(b"<bmap version=\"2.0\">\xff</bmap>").unwrap_err();
        assert!(err.to_string().contains("byte 20"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_an_error_or_a_consistent_bmap(s in "\\PC{0,400}") {
            if let Ok(b) = Bmap::parse(&s) {
                proptest::prop_assert_eq!(b.blocks_count(), b.image_size.div_ceil(b.block_size));
            }
        }

        #[test]
        fn any_bytes_never_panic(v in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = Bmap::parse_bytes(&v);
        }

        #[test]
        fn every_truncation_and_byte_flip_is_rejected(cut in 0usize..2000, pos in 0usize..2000, byte in proptest::prelude::any::<u8>()) {
            let xml = sample().to_xml();
            let end = xml.trim_end().len();
            let cut = cut % end;
            proptest::prop_assert!(Bmap::parse_bytes(&xml.as_bytes()[..cut]).is_err());
            let mut flipped = xml.clone().into_bytes();
            let pos = pos % flipped.len();
            // The stored file checksum's hex digits compare without regard to case: a case flip
            // there is the same checksum.
            let digits = xml.find("<BmapFileChecksum> ").map(|i| i + 19).unwrap_or(0);
            let same_digest = (digits..digits + 64).contains(&pos)
                && flipped[pos].eq_ignore_ascii_case(&byte);
            if flipped[pos] != byte && !same_digest {
                flipped[pos] = byte;
                // Inside comments or whitespace a change may leave valid XML, but the file checksum
                // covers every byte.
                proptest::prop_assert!(Bmap::parse_bytes(&flipped).is_err());
            }
        }

        #[test]
        fn roundtrips(image_size in 1u64..1u64 << 40, shift in 9u32..22, sha1 in proptest::prelude::any::<bool>(), picks in proptest::collection::vec((0u64..1000, 0u64..50), 0..30)) {
            let block_size = 1u64 << shift;
            let blocks = image_size.div_ceil(block_size);
            let mut ranges = Vec::new();
            let mut next = 0u64;
            for (gap, len) in picks {
                let first = next + gap;
                let last = first + len;
                if last >= blocks { break; }
                let kind = if sha1 { ChecksumType::Sha1 } else { ChecksumType::Sha256 };
                ranges.push(BmapRange { first, last, checksum: Some(hash_hex(kind, &first.to_le_bytes())) });
                next = last + 1;
            }
            let checksum_type = if sha1 { ChecksumType::Sha1 } else { ChecksumType::Sha256 };
            let b = Bmap { image_size, block_size, checksum_type, ranges };
            proptest::prop_assert_eq!(Bmap::parse(&b.to_xml()), Ok(b));
        }
    }
}
