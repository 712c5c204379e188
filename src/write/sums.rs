//! Expected checksums: of the whole image, from `--sha256`/`--md5` or a sums file beside the source
//! (`IMAGE.sha256` or `IMAGE.md5`, GNU or BSD layout, as `boardsmith build` writes them); and, for an
//! image from a URL without one, of the downloaded file (`SRC.sha256`, `SRC.md5`, `SHA256SUMS`,
//! `MD5SUMS`). For local files lists such as SHA256SUMS are not searched: hashing a whole image
//! (holes included) costs more than writing it, so it happens only when the image's own sums file or
//! an option asks for it.

use serde::Serialize;

use super::decompress::Format;
use super::source::{SideError, SideRef, SourceSpec, image_name};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SumKind {
    Sha256,
    Md5,
}

impl SumKind {
    pub fn name(self) -> &'static str {
        match self {
            SumKind::Sha256 => "sha256",
            SumKind::Md5 => "md5",
        }
    }
    pub fn hex_len(self) -> usize {
        match self {
            SumKind::Sha256 => 64,
            SumKind::Md5 => 32,
        }
    }
}

/// A checksum the image must have, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedSum {
    pub kind: SumKind,
    /// Lower-case hex.
    pub hex: String,
    /// `--sha256`, or the sums file.
    pub origin: String,
}

/// Checks a hex digest given on the command line.
pub fn parse_hex(kind: SumKind, s: &str) -> Result<String, String> {
    crate::checksum::parse_hex_digest(s, kind.hex_len()).ok_or_else(|| {
        format!(
            "{:?} is not a {} digest ({} hex digits)",
            s.trim(),
            kind.name(),
            kind.hex_len()
        )
    })
}

/// The digest a sums file gives for `name`: lines `HEX  NAME`, `HEX *NAME`, `HEX` alone (a file
/// with a single entry), or BSD `SHA256 (NAME) = HEX`.
pub fn lookup(text: &str, kind: SumKind, name: &str) -> Option<String> {
    let valid = |h: &str| parse_hex(kind, h).ok();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for line in &lines {
        let bsd_tag = match kind {
            SumKind::Sha256 => "SHA256 (",
            SumKind::Md5 => "MD5 (",
        };
        if let Some(rest) = line.strip_prefix(bsd_tag)
            && let Some((n, h)) = rest.rsplit_once(") = ")
        {
            if base(n) == name {
                return valid(h);
            }
            continue;
        }
        let (h, n) = match line.split_once(char::is_whitespace) {
            Some((h, n)) => (h, n.trim_start().trim_start_matches('*')),
            None => (*line, ""),
        };
        if (n.is_empty() && lines.len() == 1) || base(n) == name {
            return valid(h);
        }
    }
    None
}

fn base(n: &str) -> &str {
    n.rsplit('/').next().unwrap_or(n)
}

/// Looks beside the source for a sums file naming the image (SHA-256 preferred: MD5 is slow), and
/// says where it was found. Errors are unreadable files; absent files are simply not used.
pub fn discover(
    spec: &SourceSpec,
    format: Format,
    client: &crate::net::Client,
) -> Result<Option<(ExpectedSum, SideRef)>, SideError> {
    let Some(name) = image_name(spec, format) else {
        return Ok(None);
    };
    let candidates = [
        (SumKind::Sha256, format!("{name}.sha256")),
        (SumKind::Md5, format!("{name}.md5")),
    ];
    first_sum(spec, &name, candidates, client)
}

/// For a compressed image from a URL, a sum of the downloaded file itself, as publishers of `.img.xz`
/// files and `boardsmith release` give them: `SRC.sha256`, `SRC.md5`, or SRC's entry in `SHA256SUMS`
/// or `MD5SUMS` beside it. (Not for local files: hashing a file the writer reads block-parallel would
/// cost a pass of its own.)
pub fn discover_download(
    spec: &SourceSpec,
    format: Format,
    client: &crate::net::Client,
) -> Result<Option<(ExpectedSum, SideRef)>, SideError> {
    if !matches!(spec, SourceSpec::Url(_)) || format == Format::Raw {
        return Ok(None);
    }
    let Some(name) = spec.file_name() else {
        return Ok(None);
    };
    let candidates = [
        (SumKind::Sha256, format!("{name}.sha256")),
        (SumKind::Md5, format!("{name}.md5")),
        (SumKind::Sha256, "SHA256SUMS".to_string()),
        (SumKind::Md5, "MD5SUMS".to_string()),
    ];
    first_sum(spec, &name, candidates, client)
}

/// The first of the side files `candidates` (kind, file name beside `spec`) that exists and holds a
/// sum of the kind for `name`, with the side file it came from.
fn first_sum(
    spec: &SourceSpec,
    name: &str,
    candidates: impl IntoIterator<Item = (SumKind, String)>,
    client: &crate::net::Client,
) -> Result<Option<(ExpectedSum, SideRef)>, SideError> {
    for (kind, f) in candidates {
        let Some(side) = spec.sibling(&f) else {
            continue;
        };
        let Some(bytes) = side.fetch(
            client,
            super::source::SUMS_LIMIT,
            "checksum file",
            "give the image's checksum with --sha256 HEX or --md5 HEX instead",
        )?
        else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        if let Some(hex) = lookup(&text, kind, name) {
            return Ok(Some((
                ExpectedSum {
                    kind,
                    hex,
                    origin: side_name(&side),
                },
                side,
            )));
        }
    }
    Ok(None)
}

fn side_name(s: &SideRef) -> String {
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_gnu_bsd_and_bare_lines() {
        let h = "ab".repeat(32);
        assert_eq!(
            lookup(&format!("{h}  board.img\n"), SumKind::Sha256, "board.img"),
            Some(h.clone())
        );
        assert_eq!(
            lookup(
                &format!("{h} *dir/board.img\n"),
                SumKind::Sha256,
                "board.img"
            ),
            Some(h.clone())
        );
        assert_eq!(
            lookup(
                &format!("SHA256 (board.img) = {h}\n"),
                SumKind::Sha256,
                "board.img"
            ),
            Some(h.clone())
        );
        assert_eq!(
            lookup(&format!("{h}\n"), SumKind::Sha256, "x"),
            Some(h.clone())
        );
        assert_eq!(
            lookup(&format!("{h}  other.img\n"), SumKind::Sha256, "board.img"),
            None
        );
        // A wrong-length digest is not a sha256.
        assert_eq!(
            lookup("abcd  board.img", SumKind::Sha256, "board.img"),
            None
        );
        assert!(parse_hex(SumKind::Md5, "zz").is_err());
        assert_eq!(
            parse_hex(SumKind::Md5, &"AB".repeat(16)).unwrap(),
            "ab".repeat(16)
        );
    }
}
