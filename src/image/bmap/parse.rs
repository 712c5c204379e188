//! Parsing a bmap file: the XML walked token by token, every field and bound checked in place, the
//! file's own checksum hashed with its field read as zeros.

use super::*;
use crate::image::xml::{Token, Tokenizer, line_col};

/// Where the bmap's own checksum sits and how it is computed.
struct FileChecksum {
    element: &'static str,
    kind: ChecksumType,
    hex: String,
    span: (usize, usize),
}

/// The bmap version's field names: (checksum attribute, file checksum element, implied type).
fn version_fields(
    major: u32,
    minor: u32,
) -> (&'static str, Option<&'static str>, Option<ChecksumType>) {
    if major >= 2 || (major == 1 && minor >= 4) {
        // 1.4 was a mistakenly released 2.0 and is identical to it.
        ("chksum", Some("BmapFileChecksum"), None)
    } else if minor == 3 {
        ("sha1", Some("BmapFileSHA1"), Some(ChecksumType::Sha1))
    } else {
        // 1.0–1.2: no file checksum; ranges may carry SHA-1 digests.
        ("sha1", None, Some(ChecksumType::Sha1))
    }
}

struct Parser<'a> {
    src: &'a str,
}

impl Parser<'_> {
    fn syntax(&self, offset: usize, message: impl Into<String>) -> BmapError {
        let (line, column) = line_col(self.src, offset);
        BmapError::Syntax {
            line,
            column,
            offset,
            message: message.into(),
        }
    }

    fn field(&self, offset: usize, element: &str, message: impl Into<String>) -> BmapError {
        BmapError::Field {
            line: line_col(self.src, offset).0,
            offset,
            element: element.to_string(),
            message: message.into(),
        }
    }

    fn number(&self, text: &str, offset: usize, element: &str) -> Result<u64, BmapError> {
        let t = text.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.field(
                offset,
                element,
                format!("{t:?} is not a non-negative decimal number"),
            ));
        }
        t.parse()
            .map_err(|_| self.field(offset, element, format!("{t} is too large")))
    }
}

/// A leaf element's collected text and where it started.
#[derive(Default)]
struct Leaf {
    text: String,
    /// Raw byte span of the (single) text token, for the file checksum.
    span: Option<(usize, usize)>,
    offset: usize,
    seen: bool,
}

const LEAVES: [&str; 7] = [
    "ImageSize",
    "BlockSize",
    "BlocksCount",
    "MappedBlocksCount",
    "ChecksumType",
    "BmapFileChecksum",
    "BmapFileSHA1",
];

impl Bmap {
    /// Parses a bmap file's bytes (which must be UTF-8).
    pub fn parse_bytes(bytes: &[u8]) -> Result<Bmap, BmapError> {
        match std::str::from_utf8(bytes) {
            Ok(s) => Bmap::parse(s),
            Err(e) => {
                let offset = e.valid_up_to();
                let text = String::from_utf8_lossy(&bytes[..offset]);
                let (line, column) = line_col(&text, offset);
                Err(BmapError::Syntax {
                    line,
                    column,
                    offset,
                    message: "invalid UTF-8; a bmap file is XML text".into(),
                })
            }
        }
    }

    /// Parses bmaptool's bmap format, versions 1.0–1.4 and 2.x: checks well-formedness, the version,
    /// every field and their consistency (block count, sorted non-overlapping ranges inside the
    /// image, mapped block count, checksum lengths) and the file's own checksum where the version
    /// has one. Never panics; the work is linear in the input, and at most [`MAX_RANGES`] ranges
    /// are accepted.
    pub fn parse(src: &str) -> Result<Bmap, BmapError> {
        Bmap::parse_limited(src, MAX_RANGES)
    }

    /// [`Bmap::parse`] accepting at most `max_ranges` ranges.
    pub(super) fn parse_limited(src: &str, max_ranges: usize) -> Result<Bmap, BmapError> {
        let p = Parser { src };
        let mut tok = Tokenizer::new(src);
        let mut stack: Vec<(&str, usize)> = Vec::new();
        let mut version: Option<(u32, u32, usize)> = None;
        let mut root_done = false;
        let mut leaves: [Leaf; 7] = Default::default();
        let mut leaf_open: Option<usize> = None;
        // (first, last, checksum, offset of <Range>)
        let mut ranges: Vec<(u64, u64, Option<String>, usize)> = Vec::new();
        let mut block_map_seen = false;
        // Inside <Range>: its text and attributes so far.
        let mut range_open: Option<(String, Option<String>, usize)> = None;
        let mut cs_attr = "chksum";

        while let Some(t) = tok
            .next_token()
            .map_err(|e| p.syntax(e.offset, e.message))?
        {
            match t {
                Token::Start {
                    name,
                    attrs,
                    empty,
                    offset,
                } => {
                    if root_done {
                        return Err(p.syntax(offset, format!("<{name}> after the end of <bmap>")));
                    }
                    if stack.len() >= 16 {
                        return Err(p.syntax(offset, "elements nested too deeply"));
                    }
                    let depth = stack.len();
                    if depth == 0 {
                        if name != "bmap" {
                            return Err(p.syntax(
                                offset,
                                format!("the root element is <{name}>, expected <bmap>"),
                            ));
                        }
                        let Some(v) = attrs.iter().find(|a| a.name == "version") else {
                            return Err(p.syntax(offset, "<bmap> has no version attribute"));
                        };
                        let (maj, min) = v.value.trim().split_once('.').unwrap_or((&v.value, ""));
                        let (Ok(maj), Ok(min)) = (maj.parse::<u32>(), min.parse::<u32>()) else {
                            return Err(BmapError::Version(v.value.to_string()));
                        };
                        if !(1..=2).contains(&maj) {
                            return Err(BmapError::Version(v.value.to_string()));
                        }
                        cs_attr = version_fields(maj, min).0;
                        version = Some((maj, min, offset));
                    } else if leaf_open.is_some() || range_open.is_some() {
                        let parent = stack.last().map_or("", |s| s.0);
                        return Err(p.syntax(
                            offset,
                            format!("<{name}> inside <{parent}>, which holds only text"),
                        ));
                    } else if depth == 1 {
                        if let Some(i) = LEAVES.iter().position(|l| *l == name) {
                            if leaves[i].seen {
                                return Err(p.field(offset, name, "appears twice"));
                            }
                            leaves[i].seen = true;
                            leaves[i].offset = offset;
                            if !empty {
                                leaf_open = Some(i);
                            }
                        } else if name == "BlockMap" {
                            if block_map_seen {
                                return Err(p.field(offset, name, "appears twice"));
                            }
                            block_map_seen = true;
                        }
                    } else if depth == 2 && stack[1].0 == "BlockMap" && name == "Range" {
                        let cs = attrs
                            .iter()
                            .find(|a| a.name == cs_attr)
                            .map(|a| a.value.trim().to_string());
                        if empty {
                            return Err(p.field(
                                offset,
                                "Range",
                                "is empty; expected \"first-last\"",
                            ));
                        }
                        range_open = Some((String::new(), cs, offset));
                    }
                    if !empty {
                        stack.push((name, offset));
                    }
                }
                Token::End { name, offset } => {
                    let Some((open, _)) = stack.pop() else {
                        return Err(p.syntax(offset, format!("</{name}> closes nothing")));
                    };
                    if open != name {
                        return Err(p.syntax(
                            offset,
                            format!("</{name}> does not match the open <{open}>"),
                        ));
                    }
                    if stack.len() == 1 {
                        leaf_open = None;
                    }
                    if let Some((text, cs, at)) = range_open.take_if(|_| name == "Range") {
                        if ranges.len() >= max_ranges {
                            return Err(BmapError::TooManyRanges {
                                line: line_col(src, at).0,
                                offset: at,
                                limit: max_ranges,
                            });
                        }
                        let (first, last) = parse_range(&p, &text, at)?;
                        ranges.push((first, last, cs, at));
                    }
                    if stack.is_empty() {
                        root_done = true;
                    }
                }
                Token::Text { text, start, end } => {
                    if let Some(i) = leaf_open {
                        let leaf = &mut leaves[i];
                        leaf.span = if leaf.text.is_empty() && leaf.span.is_none() {
                            Some((start, end))
                        } else {
                            None
                        };
                        leaf.text.push_str(&text);
                    } else if let Some((t, _, _)) = range_open.as_mut() {
                        t.push_str(&text);
                    } else if !text.trim().is_empty() && stack.is_empty() {
                        return Err(p.syntax(start, "text outside the <bmap> element"));
                    }
                }
            }
        }
        if let Some(&(open, at)) = stack.last() {
            let (line, _) = line_col(src, at);
            return Err(BmapError::Truncated {
                what: format!("<{open}> (opened on line {line}) is closed"),
                offset: src.len(),
            });
        }
        let Some((major, minor, _)) = version else {
            return Err(BmapError::Truncated {
                what: "the <bmap> element".into(),
                offset: src.len(),
            });
        };
        let (_, file_cs_element, implied_type) = version_fields(major, minor);

        let leaf = |name: &'static str| -> Result<(&Leaf, usize), BmapError> {
            let i = LEAVES.iter().position(|l| *l == name).unwrap_or(0);
            if leaves[i].seen {
                Ok((&leaves[i], i))
            } else {
                Err(BmapError::Missing(name))
            }
        };
        let num = |name: &'static str| -> Result<u64, BmapError> {
            let (l, _) = leaf(name)?;
            p.number(&l.text, l.offset, name)
        };
        let image_size = num("ImageSize")?;
        let block_size = num("BlockSize")?;
        let blocks_count = num("BlocksCount")?;
        if block_size == 0 || block_size > (1 << 30) {
            let (l, _) = leaf("BlockSize")?;
            return Err(p.field(
                l.offset,
                "BlockSize",
                format!("{block_size} is outside 1..=1 GiB"),
            ));
        }
        if image_size.div_ceil(block_size) != blocks_count {
            let (l, _) = leaf("BlocksCount")?;
            return Err(p.field(
                l.offset,
                "BlocksCount",
                format!(
                    "{blocks_count} does not match the image size: {image_size} bytes in blocks of {block_size} is {} blocks",
                    image_size.div_ceil(block_size)
                ),
            ));
        }
        let checksum_type = match implied_type {
            Some(t) => t,
            None => {
                let (l, _) = leaf("ChecksumType")?;
                match l.text.trim() {
                    "sha256" => ChecksumType::Sha256,
                    "sha1" => ChecksumType::Sha1,
                    other => {
                        return Err(p.field(
                            l.offset,
                            "ChecksumType",
                            format!("{other:?} is not supported (sha256 and sha1 are)"),
                        ));
                    }
                }
            }
        };

        let mut out = Vec::with_capacity(ranges.len());
        let mut next_free = 0u64;
        for (first, last, cs, at) in ranges {
            if first < next_free {
                return Err(p.field(
                    at,
                    "Range",
                    format!(
                        "{first}-{last} overlaps or precedes the range before it; ranges must be sorted and disjoint"
                    ),
                ));
            }
            if last >= blocks_count {
                return Err(p.field(
                    at,
                    "Range",
                    format!("{first}-{last} reaches past the image's {blocks_count} blocks"),
                ));
            }
            let checksum = match cs {
                Some(mut c) => {
                    if !crate::checksum::is_hex_digest(&c, checksum_type.hex_len()) {
                        return Err(p.field(
                            at,
                            "Range",
                            format!(
                                "checksum {c:?} is not {} hex digits of {}",
                                checksum_type.hex_len(),
                                checksum_type.name()
                            ),
                        ));
                    }
                    c.make_ascii_lowercase();
                    Some(c)
                }
                None => None,
            };
            next_free = last + 1;
            out.push(BmapRange {
                first,
                last,
                checksum,
            });
        }
        let bmap = Bmap {
            image_size,
            block_size,
            checksum_type,
            ranges: out,
        };
        if let Ok((l, _)) = leaf("MappedBlocksCount") {
            let n = p.number(&l.text, l.offset, "MappedBlocksCount")?;
            if n != bmap.mapped_blocks() {
                return Err(p.field(
                    l.offset,
                    "MappedBlocksCount",
                    format!(
                        "says {n}, but the ranges map {} blocks",
                        bmap.mapped_blocks()
                    ),
                ));
            }
        } else if major >= 2 || (major, minor) >= (1, 3) {
            return Err(BmapError::Missing("MappedBlocksCount"));
        }

        if let Some(element) = file_cs_element {
            let (l, _) = leaf(element)?;
            let stored = l.text.trim().to_ascii_lowercase();
            let span = l.span.ok_or_else(|| {
                p.field(l.offset, element, "must hold the checksum as plain text")
            })?;
            if !crate::checksum::is_hex_digest(&stored, checksum_type.hex_len()) {
                return Err(p.field(
                    l.offset,
                    element,
                    format!("{stored:?} is not {} hex digits", checksum_type.hex_len()),
                ));
            }
            let raw = &src[span.0..span.1];
            if !raw.trim().eq_ignore_ascii_case(&stored) {
                return Err(p.field(l.offset, element, "must hold the checksum as plain text"));
            }
            let lead = raw.len() - raw.trim_start().len();
            let fc = FileChecksum {
                element,
                kind: checksum_type,
                hex: stored,
                span: (span.0 + lead, span.0 + lead + checksum_type.hex_len()),
            };
            let computed = hash_hex_blanked(fc.kind, src.as_bytes(), fc.span);
            if computed != fc.hex {
                return Err(BmapError::FileChecksum {
                    kind: fc.kind.name(),
                    element: fc.element,
                    stored: fc.hex,
                    computed,
                });
            }
        }
        Ok(bmap)
    }
}

fn parse_range(p: &Parser<'_>, text: &str, at: usize) -> Result<(u64, u64), BmapError> {
    let t = text.trim();
    let (a, b) = t.split_once('-').unwrap_or((t, t));
    let first = p.number(a, at, "Range")?;
    let last = p.number(b, at, "Range")?;
    if last < first {
        return Err(p.field(at, "Range", format!("{t} ends before it starts")));
    }
    Ok((first, last))
}
