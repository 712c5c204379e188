//! `boardsmith write`: put an image on a card or into a file in one pipelined pass (read or decode,
//! hash, write), prove it landed (read-back verify), and optionally grow it to fill the card.
//!
//! Order of work, so an unfinished card never looks bootable: check everything (source, bmap,
//! target) → zero the first 64 KiB → write the rest, read back behind the writer (see `verify`) →
//! flush → finish the read-back, re-check a probe per MiB → write the first 64 KiB → verify them →
//! re-read the partition table → grow.

pub mod decompress;
pub mod digest;
pub mod pipeline;
pub mod source;
pub mod sums;
pub mod verify;
pub mod xz;

mod checks;
mod run;

pub use run::write;

use std::fmt;
use std::io;
use std::path::PathBuf;

use serde::Serialize;

use self::decompress::Format;
use self::digest::RangeMismatch;
use self::source::{SourceError, SourceSpec};
use self::sums::{ExpectedSum, SumKind};
use crate::device::target::TargetError;
use crate::grow::{GrowFailure, GrowReport};
use crate::image::bmap::BmapError;
use crate::net::{FailureKind, NetError, NetOptions};
use crate::signals;
use crate::size::Human;

/// The first bytes of the image (partition table, boot loader area), written last.
pub const HEAD_LEN: u64 = 64 * 1024;
/// Pool buffers: size and count (the writer's whole data memory: 16 × 2 MiB). xz decoding needs
/// enough to let one thread decode a block ahead of the one being written.
pub const BUF_SIZE: usize = 2 << 20;
pub const BUFS: usize = 16;

/// Which block map to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BmapChoice {
    /// `SRC.bmap` or the names bmaptool tries, if one exists.
    Auto,
    File(PathBuf),
    None,
}

/// A validated write request (the command line's options, checked).
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub source: SourceSpec,
    pub target: PathBuf,
    pub bmap: BmapChoice,
    /// Read back and compare everything written.
    pub verify: bool,
    pub grow: bool,
    /// `--sha256`/`--md5`; when None, a sums file beside the source is used if there is one.
    pub expected: Option<ExpectedSum>,
    /// Compute (and report) the whole image's SHA-256 and MD5.
    pub sums: bool,
    /// File targets: the file's size (at least the image's).
    pub target_size: Option<u64>,
    /// Confirms writing to a non-removable disk or into a partition.
    pub yes: bool,
    /// Retries and timeouts of a URL source.
    pub net: NetOptions,
    /// A URL source may be written although nothing can check it (sums found are still checked).
    pub no_checksum: bool,
    /// The largest decoder window or dictionary allowed (`--max-window`).
    pub max_window: decompress::WindowLimit,
}

/// Exit status of a network failure that survived every retry: trying again later may work.
pub const EXIT_NETWORK: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("bmap {origin}: {source}")]
    Bmap { origin: String, source: BmapError },
    #[error("{0}")]
    SideFile(String),
    #[error(
        "refusing to write {source_name}: nothing can check that the image arrives as published{why}. \
Give its checksum with --sha256 HEX or --md5 HEX, or a block map with range checksums with --bmap FILE; \
or fetch it over https from a server that publishes beside it IMAGE.sha256, IMAGE.md5, a bmap, or the \
downloaded file's sum (SRC.sha256, SRC.md5, SHA256SUMS, MD5SUMS); \
or accept an unchecked image with --no-checksum. Nothing was written"
    )]
    Unchecked { source_name: String, why: String },
    #[error(transparent)]
    Net(NetError),
    #[error(
        "the bmap {origin} describes an image of {bmap} bytes, but {source_name} holds {actual} bytes; they do not belong together (name the right one with --bmap, or use --no-bmap)"
    )]
    BmapSize {
        origin: String,
        bmap: u64,
        source_name: String,
        actual: u64,
    },
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(
        "{what}: corrupt or truncated {format} data after {offset} bytes of the image: {message}; the source is damaged, fetch it again"
    )]
    Decode {
        what: String,
        format: &'static str,
        offset: u64,
        message: String,
    },
    #[error(
        "the image from {what} ends at byte {len}, but {expected_from} says it is {expected} bytes long (truncated file or download?)"
    )]
    ShortImage {
        what: String,
        len: u64,
        expected: u64,
        expected_from: String,
    },
    #[error("the image from {what} goes on past the {expected} bytes {expected_from} says it has")]
    LongImage {
        what: String,
        expected: u64,
        expected_from: String,
    },
    #[error(
        "the image does not fit: {path} holds {capacity} bytes and the image goes on past that"
    )]
    Overflow { path: String, capacity: u64 },
    #[error(
        "the image goes on past {} ({cap} bytes), the limit for {path} ({cap_from}); stopped there",
        Human(*cap)
    )]
    OverCap {
        path: String,
        cap: u64,
        cap_from: String,
    },
    #[error(
        "the source is at fault: bmap range {} (blocks {}-{}, bytes {}..{}) has {} {}, but the bmap {origin} says {}; the image or its bmap is corrupt, fetch them again",
        mismatch.index, mismatch.first_block, mismatch.last_block, mismatch.start, mismatch.end,
        mismatch.kind, mismatch.actual, mismatch.expected
    )]
    RangeMismatch {
        origin: String,
        mismatch: Box<RangeMismatch>,
    },
    #[error(
        "the source is at fault: the image's {} is {actual}, but {origin} says {expected}; the image is corrupt or not the one the checksum is for",
        kind.name()
    )]
    SumMismatch {
        kind: SumKind,
        actual: String,
        expected: String,
        origin: String,
    },
    #[error(
        "the source is at fault: the downloaded file's {} is {actual}, but {origin} says {expected}; the download is corrupt or not the file the checksum is for",
        kind.name()
    )]
    DownloadSumMismatch {
        kind: SumKind,
        actual: String,
        expected: String,
        origin: String,
    },
    #[error(
        "the target is at fault: read-back mismatch at byte {offset} (0x{offset:x}): {target} holds 0x{found:02x} where the image has 0x{wanted:02x}; the card may be failing or fake"
    )]
    ReadBack {
        target: String,
        offset: u64,
        found: u8,
        wanted: u8,
    },
    #[error(
        "the target is at fault: read-back mismatch in bytes {start}..{end} of {target} ({detail}); the card may be failing or fake"
    )]
    ReadBackRange {
        target: String,
        start: u64,
        end: u64,
        detail: String,
    },
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("interrupted by {signal}")]
    Interrupted { signal: &'static str },
    #[error("growing {target} failed: {source}")]
    Grow {
        target: String,
        source: Box<GrowFailure>,
    },
}

impl WriteError {
    /// 0 is success; 1 the operation failed; 2 the command or its input is invalid; 3 the network
    /// failed after every retry; 128 + N after signal N (130 for Ctrl-C, 143 for SIGTERM).
    pub fn exit_code(&self) -> i32 {
        let net = |n: &NetError| match n.kind() {
            FailureKind::Input => 2,
            FailureKind::Transient => EXIT_NETWORK,
            FailureKind::Failed => 1,
        };
        match self {
            WriteError::Net(n) | WriteError::Source(SourceError::Net(n)) => net(n),
            WriteError::Unchecked { .. } => 2,
            WriteError::Interrupted { .. } => signals::exit_status(),
            WriteError::Grow { source, .. } => source.exit_code(),
            WriteError::Source(s) => s.exit_code(),
            WriteError::Bmap { .. } | WriteError::SideFile(_) | WriteError::BmapSize { .. } => 2,
            WriteError::Target(t) if t.is_usage() => 2,
            _ => 1,
        }
    }
}

/// What the target holds after a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetState {
    Untouched,
    /// Writing started: the first 64 KiB are zero (no partition table, not bootable).
    Incomplete,
    /// Writing started on a file this write created, which was removed again.
    Removed,
    /// Writing started on a file this write created, but its path names another file now.
    Moved,
    /// Writing started on a file this write created, which could not be removed (why).
    NotRemoved(String),
    /// The whole image was written and verified; a later step (grow) failed.
    Written {
        verified: bool,
    },
}

/// A failed write: why, and the state the target was left in.
#[derive(Debug)]
pub struct WriteFailure {
    pub error: WriteError,
    pub target: String,
    pub state: TargetState,
}

impl fmt::Display for WriteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)?;
        match &self.state {
            TargetState::Untouched => write!(f, "\nnothing was written to {}", self.target),
            TargetState::Incomplete => write!(
                f,
                "\n{} is incomplete: its first 64 KiB are zeroed and were not written, so it holds no partition table and will not boot; write the image again",
                self.target
            ),
            TargetState::Removed => write!(
                f,
                "\n{} was created by this write and has been removed again: nothing is left of it",
                self.target
            ),
            TargetState::Moved => write!(
                f,
                "\n{} no longer names the file this write created (it was renamed or replaced meanwhile): nothing there was touched; the incomplete file was not removed",
                self.target
            ),
            TargetState::NotRemoved(why) => write!(
                f,
                "\n{} was created by this write and could not be removed ({why}); it is incomplete: its first 64 KiB are zeroed and were not written, so it holds no partition table and will not boot; delete it or write the image again",
                self.target
            ),
            TargetState::Written { verified } => write!(
                f,
                "\n{} holds the complete image{}; only growing failed: once its reason above is dealt with, `boardsmith grow {}` grows it",
                self.target,
                if *verified { ", verified" } else { "" },
                self.target
            ),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WriteReport {
    pub source: String,
    pub format: Format,
    pub target: String,
    pub image_size: u64,
    pub written: u64,
    pub skipped: u64,
    pub bmap: Option<String>,
    /// Block-map ranges whose checksum was checked.
    pub ranges_checked: usize,
    pub seconds: f64,
    pub write_seconds: f64,
    /// The read-back runs behind the writer: the time it took after the write had finished.
    pub verify_seconds: Option<f64>,
    /// Everything written was read back (page cache bypassed) and matched.
    pub verified: bool,
    /// Whole-image digests of the data written (computed from the source stream).
    pub sha256: Option<String>,
    pub md5: Option<String>,
    /// The expected sum, which matched.
    pub expected: Option<ExpectedSum>,
    pub grow: Option<GrowReport>,
    /// Independently decodable blocks (xz blocks, 7z LZMA2 segments) decoded on several threads.
    pub parallel_blocks: Option<u64>,
    /// URL sources: connections made again after one dropped or stalled.
    pub reconnects: Option<u32>,
    /// The sum of the downloaded (compressed) file, which matched.
    pub download_sum: Option<ExpectedSum>,
}

impl fmt::Display for WriteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = if self.write_seconds > 0.0 {
            self.image_size as f64 / self.write_seconds
        } else {
            0.0
        };
        writeln!(
            f,
            "wrote {} to {} in {:.1} s: {} image, {} written, {} skipped ({}/s)",
            self.source,
            self.target,
            self.seconds,
            Human(self.image_size),
            Human(self.written),
            Human(self.skipped),
            Human(rate as u64)
        )?;
        if let Some(n) = self.parallel_blocks {
            writeln!(f, "  decode   {n} blocks decoded in parallel")?;
        }
        if let Some(n) = self.reconnects.filter(|&n| n > 0) {
            writeln!(
                f,
                "  network  resumed {n} time{} where a dropped connection left off",
                if n == 1 { "" } else { "s" }
            )?;
        }
        if let Some(b) = &self.bmap {
            writeln!(
                f,
                "  bmap     {b}: {} range checksums matched",
                self.ranges_checked
            )?;
        }
        match self.verify_seconds {
            Some(s) if self.verified => writeln!(
                f,
                "  verify   every written byte read back from the target and matched (behind the writer, then {s:.1} s after it)"
            )?,
            _ => writeln!(
                f,
                "  verify   skipped (--no-verify): the target was not read back"
            )?,
        }
        let origin = |kind: SumKind| {
            self.expected
                .as_ref()
                .filter(|e| e.kind == kind)
                .map(|e| format!(" (matches {})", e.origin))
                .unwrap_or_default()
        };
        if let Some(h) = &self.sha256 {
            writeln!(f, "  sha256   {h}{}", origin(SumKind::Sha256))?;
        }
        if let Some(h) = &self.md5 {
            writeln!(f, "  md5      {h}{}", origin(SumKind::Md5))?;
        }
        if let Some(d) = &self.download_sum {
            writeln!(
                f,
                "  download {} {} (matches {})",
                d.kind.name(),
                d.hex,
                d.origin
            )?;
        }
        if let Some(g) = &self.grow {
            writeln!(f, "  grow     {g}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_ranges_exclude_the_head() {
        assert_eq!(
            run::body_ranges(
                &[(0, 8192), (60_000, 70_000), (100_000, 200_000)],
                HEAD_LEN,
                150_000
            ),
            vec![(65_536, 70_000), (100_000, 150_000)]
        );
    }

    #[test]
    fn exit_codes() {
        assert_eq!(WriteError::Interrupted { signal: "x" }.exit_code(), 130);
        assert_eq!(WriteError::SideFile("x".into()).exit_code(), 2);
        assert_eq!(
            WriteError::Overflow {
                path: "x".into(),
                capacity: 1
            }
            .exit_code(),
            1
        );
    }
}
