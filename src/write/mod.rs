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

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use self::decompress::Format;
use self::digest::{RangeCheck, RangeMismatch};
use self::source::{DecodeOptions, Input, SideRef, SourceError, SourceSpec};
use self::sums::{ExpectedSum, SumKind};
use crate::device::buffers::Pool;
use crate::device::progress::{Event, Observer, Phase};
use crate::device::target::{Checks, Sink, SourceId, Target, TargetError};
use crate::grow::{GrowFailure, GrowReport};
use crate::image::bmap::{Bmap, BmapError};
use crate::net::{self, DownloadHandle, FailureKind, NetError, NetOptions};
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
        match self.state {
            TargetState::Untouched => write!(f, "\nnothing was written to {}", self.target),
            TargetState::Incomplete => write!(
                f,
                "\n{} is incomplete: its first 64 KiB are zeroed and were not written, so it holds no partition table and will not boot; write the image again",
                self.target
            ),
            TargetState::Written { verified } => write!(
                f,
                "\n{} holds the complete image{}; only growing failed (run `boardsmith grow {}` to retry)",
                self.target,
                if verified { ", verified" } else { "" },
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

fn decode_options(req: &WriteRequest) -> DecodeOptions {
    DecodeOptions {
        threads: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        max_window: req.max_window,
    }
}

fn load_bmap(
    side: &SideRef,
    required: bool,
    client: &net::Client,
) -> Result<Option<(Bmap, String)>, WriteError> {
    let origin = side.to_string();
    let bytes = match side.fetch(client).map_err(side_error)? {
        Some(b) => b,
        None if required => {
            return Err(WriteError::SideFile(format!(
                "bmap {origin} does not exist"
            )));
        }
        None => return Ok(None),
    };
    let bmap = Bmap::parse_bytes(&bytes).map_err(|source| WriteError::Bmap {
        origin: origin.clone(),
        source,
    })?;
    Ok(Some((bmap, origin)))
}

/// `ranges` minus `[0, head)`, clipped to `len`.
fn body_ranges(ranges: &[(u64, u64)], head: u64, len: u64) -> Vec<(u64, u64)> {
    ranges
        .iter()
        .map(|&(s, e)| (s.max(head), e.min(len)))
        .filter(|(s, e)| s < e)
        .collect()
}

/// Writes the image as `req` says. `obs` receives progress from the writer's threads.
pub fn write(req: &WriteRequest, obs: Observer<'_>) -> Result<WriteReport, Box<WriteFailure>> {
    let target_name = req.target.display().to_string();
    let mut state = TargetState::Untouched;
    crate::device::buffers::map_large_allocations();
    // Reconnects happen on the reader thread, which cannot borrow `obs`: they come through a channel.
    // `None` says the write is over; it is sent on every way out (also unwinding), so the forwarding
    // thread ends at once instead of at its next poll (a fixed wait that every write used to pay).
    let (tx, rx) = std::sync::mpsc::channel::<Option<net::Reconnect>>();
    struct Finished(std::sync::mpsc::Sender<Option<net::Reconnect>>);
    impl Drop for Finished {
        fn drop(&mut self) {
            let _ = self.0.send(None);
        }
    }
    let finished = Finished(tx.clone());
    let tx = std::sync::Mutex::new(tx);
    let client = net::Client::new(req.net)
        .cancel_when(signals::interrupted)
        .observe(std::sync::Arc::new(move |r: &net::Reconnect| {
            if let Ok(tx) = tx.lock() {
                let _ = tx.send(Some(r.clone()));
            }
        }));
    let result = std::thread::scope(|s| {
        s.spawn(move || {
            while let Ok(Some(r)) = rx.recv() {
                obs(Event::Reconnect(&r));
            }
        });
        let _finished = finished;
        write_inner(req, obs, &mut state, &client)
    });
    result.map_err(|error| {
        Box::new(WriteFailure {
            error,
            target: target_name,
            state,
        })
    })
}

fn write_inner(
    req: &WriteRequest,
    obs: Observer<'_>,
    state: &mut TargetState,
    client: &net::Client,
) -> Result<WriteReport, WriteError> {
    let started = Instant::now();
    let opts = decode_options(req);
    if req.no_checksum && !req.source.is_url() {
        return Err(WriteError::SideFile(
            "--no-checksum only applies to an image from a URL (a local file or standard input is written without one)".into(),
        ));
    }
    let probe = source::probe(&req.source, client)?;
    let source_name = req.source.display();

    // The block map, and whether it came over plain http.
    let mut bmap_plain_http = false;
    let bmap = match &req.bmap {
        BmapChoice::None => None,
        BmapChoice::File(p) => load_bmap(&SideRef::Path(p.clone()), true, client)?,
        BmapChoice::Auto => {
            let mut found = None;
            for c in source::bmap_candidates(&req.source) {
                if let Some(b) = load_bmap(&c, false, client)? {
                    bmap_plain_http = c.is_plain_http();
                    found = Some(b);
                    break;
                }
            }
            found
        }
    };
    // Expected whole-image sum, and whether it came over plain http.
    let (expected, sum_plain_http) = match &req.expected {
        Some(e) => (Some(e.clone()), false),
        None => match sums::discover(&req.source, probe.format, client).map_err(side_error)? {
            Some((e, side)) => (Some(e), side.is_plain_http()),
            None => (None, false),
        },
    };
    // Without an image sum: a sum of the downloaded (compressed) file, hashed as it arrives.
    let mut download_check = None;
    let mut download_plain_http = false;
    if expected.is_none()
        && let Some(handle) = &probe.download
        && let Some((sum, side)) =
            sums::discover_download(&req.source, probe.format, client).map_err(side_error)?
    {
        let hash = std::sync::Arc::new(std::sync::Mutex::new(Some(digest::WholeHash::new(
            sum.kind,
        ))));
        let h = hash.clone();
        let mut pos = 0u64;
        let tapped = handle.tap(Box::new(move |b: &[u8]| {
            if let Ok(mut g) = h.lock()
                && let Some(w) = g.as_mut()
            {
                w.feed(pos, Some(b), b.len() as u64);
            }
            pos += b.len() as u64;
        }));
        if tapped {
            download_plain_http = side.is_plain_http();
            download_check = Some(DownloadCheck {
                expected: sum,
                hash,
                handle: handle.clone(),
            });
        }
    }
    // An image from a URL is written only when something trustworthy checks it.
    if req.source.is_url() {
        let bmap_checks = bmap.as_ref().is_some_and(|(b, _)| {
            !b.ranges.is_empty() && b.ranges.iter().all(|r| r.checksum.is_some())
        });
        let checked = (expected.is_some() && !sum_plain_http)
            || (bmap_checks && !bmap_plain_http)
            || (download_check.is_some() && !download_plain_http);
        if !checked && !req.no_checksum {
            let mut why = Vec::new();
            if let Some(e) = expected.as_ref().filter(|_| sum_plain_http) {
                why.push(format!("the {} from {}", e.kind.name(), e.origin));
            }
            if let Some((_, origin)) = bmap.as_ref().filter(|_| bmap_plain_http && bmap_checks) {
                why.push(format!("the bmap {origin}"));
            }
            if let Some(c) = download_check.as_ref().filter(|_| download_plain_http) {
                why.push(format!(
                    "the {} from {}",
                    c.expected.kind.name(),
                    c.expected.origin
                ));
            }
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} came over plain http from the same server as the image, so it cannot vouch for it)",
                    why.join(" and ")
                )
            };
            return Err(WriteError::Unchecked { source_name, why });
        }
        // Something checks every byte: a resumed download need not prove it is the same file.
        if let Some(d) = &probe.download
            && (expected.is_some() || bmap_checks || download_check.is_some())
        {
            d.allow_unvalidated_resume();
        }
    }
    let src = probe
        .open(opts, &|m| obs(Event::Note(m)))
        .map_err(WriteError::Source)?;
    // The image size, and who says so.
    let exact: Option<(u64, String)> = match (&bmap, src.size.exact) {
        (Some((b, origin)), Some(n)) if b.image_size != n => {
            return Err(WriteError::BmapSize {
                origin: origin.clone(),
                bmap: b.image_size,
                source_name,
                actual: n,
            });
        }
        (Some((b, origin)), _) => Some((b.image_size, format!("the bmap {origin}"))),
        (None, Some(n)) => Some((
            n,
            match src.format {
                Format::Raw => format!("the size of {source_name}"),
                Format::Xz => "the xz index".into(),
                Format::SevenZ => "the 7z archive".into(),
                _ => "the source".into(),
            },
        )),
        (None, None) => None,
    };
    let lower_bound = exact.as_ref().map(|e| e.0).or(src.size.at_least);

    let mut whole: Vec<SumKind> = Vec::new();
    if req.sums {
        whole = vec![SumKind::Sha256, SumKind::Md5];
    } else if let Some(e) = &expected {
        whole.push(e.kind);
    }

    // The target: identified, checked and locked before anything is written.
    let source_id = source_identity(&req.source);
    let mut target = Target::open_checked(
        &req.target,
        &Checks {
            yes: req.yes,
            source: source_id.as_ref(),
            ..Checks::default()
        },
    )?;
    if let Some(size) = req.target_size {
        if let Some(c) = target.capacity {
            return Err(TargetError::SizeOnDevice {
                path: target_name(&target),
                size: c,
            }
            .into());
        }
        if let Some(n) = lower_bound
            && size < n
        {
            return Err(TargetError::SizeTooSmall { size, image: n }.into());
        }
    }
    if let Some(n) = lower_bound {
        target.check_capacity(n)?;
    }
    // A file target's length: --size; with --grow an existing larger file keeps its size (it is
    // a card image to grow into); otherwise the image's (bmaptool's behaviour).
    let image_len = exact.as_ref().map_or(0, |e| e.0);
    let file_len = match req.target_size {
        Some(s) => s,
        None if req.grow => image_len.max(target.initial_len),
        None => image_len,
    };
    // ... and the most it may hold: --size, or the free space of its filesystem.
    let file_cap = if target.is_device() {
        None
    } else if let Some(s) = req.target_size {
        Some((s, format!("--size {}", Human(s))))
    } else {
        let free = target.free_space().map_err(|source| WriteError::Io {
            context: format!(
                "reading the free space of the filesystem holding {}",
                target_name(&target)
            ),
            source,
        })?;
        free.map(|free| {
            (
                free,
                "the free space of its filesystem; give --size to write a sparse file larger than that"
                    .to_string(),
            )
        })
    };
    if let (Some((cap, from)), Some(n)) = (&file_cap, lower_bound)
        && n > *cap
    {
        return Err(TargetError::OverCap {
            path: target_name(&target),
            needed: n,
            cap: *cap,
            cap_from: from.clone(),
        }
        .into());
    }

    // The plan.
    let write_ranges: Option<Vec<(u64, u64)>> = bmap.as_ref().map(|(b, _)| {
        b.ranges
            .iter()
            .map(|r| b.byte_range(r))
            .filter(|(s, e)| s < e)
            .collect()
    });
    let is_raw_file = matches!(src.input, Input::RawFile(_));
    let read_ranges = if is_raw_file && whole.is_empty() {
        write_ranges.clone()
    } else {
        None
    };
    let range_check = bmap.as_ref().and_then(|(b, _)| RangeCheck::new(b));
    let ranges_checked = bmap.as_ref().map_or(0, |(b, _)| {
        b.ranges.iter().filter(|r| r.checksum.is_some()).count()
    });
    let plan = pipeline::Plan {
        read_ranges,
        write_ranges: write_ranges.clone(),
        skip_zero_blocks: !target.is_device(),
        head_len: HEAD_LEN,
        range_check,
        whole,
        expected_len: exact.clone(),
        capacity: target.capacity.or(file_cap.as_ref().map(|c| c.0)),
        source_name: source_name.clone(),
        bmap_origin: bmap.as_ref().map(|b| b.1.clone()).unwrap_or_default(),
        format: src.format,
        target_name: target.describe(),
    };

    // A file's new length is tried first: if it cannot have it, the file is left as it was.
    target.reserve(file_len)?;
    // From here on the target changes.
    *state = TargetState::Incomplete;
    target.keep();
    let sink = target.open_sink(file_len)?;
    let io_err = |context: String| move |source: io::Error| WriteError::Io { context, source };
    if sink.is_device {
        obs(Event::Phase {
            phase: Phase::Prepare,
            total: Some(HEAD_LEN),
        });
        let head = HEAD_LEN.min(target.capacity.unwrap_or(HEAD_LEN));
        sink.write_zeros(0, head)
            .and_then(|()| sink.flush())
            .map_err(io_err(format!(
                "clearing the first 64 KiB of {}",
                target_name(&target)
            )))?;
    }
    let parallel_blocks = match &src.input {
        Input::XzBlocks { index, .. } => Some(index.blocks.len() as u64),
        Input::SevenZBlocks { blocks, .. } => Some(blocks.index.blocks.len() as u64),
        _ => None,
    };
    // The pool is the whole data memory of the writer and of the verifier that follows it.
    let pool = Pool::new(BUFS, BUF_SIZE).map_err(io_err("allocating the write buffers".into()))?;
    let trail = verify::Trail::default();
    // Everything written but the head is read back; the image's end comes with the trail.
    let verify_ranges = body_ranges(
        write_ranges.as_deref().unwrap_or(&[(0, u64::MAX)]),
        HEAD_LEN,
        u64::MAX,
    );
    let write_started = Instant::now();
    let mut write_seconds = 0.0;
    let mut verify_seconds = None;
    let (written, verified) = std::thread::scope(|s| {
        let verifier = req
            .verify
            .then(|| s.spawn(|| verify::read_back(&sink, &verify_ranges, &trail, &pool)));
        obs(Event::Phase {
            phase: Phase::Write,
            total: exact.as_ref().map(|e| e.0),
        });
        let written = write_and_flush(
            src.input,
            plan,
            &pool,
            &sink,
            &trail,
            req,
            &target,
            &exact,
            &expected,
            file_len,
            download_check.as_ref(),
            obs,
        )
        .map_err(|e| network_cause(e, src.download.as_ref()))
        .map_err(|e| match (e, &file_cap) {
            (WriteError::Overflow { .. }, Some((cap, from))) => WriteError::OverCap {
                path: target_name(&target),
                cap: *cap,
                cap_from: from.clone(),
            },
            (e, _) => e,
        });
        write_seconds = write_started.elapsed().as_secs_f64();
        match &written {
            Ok(_) => trail.flushed(),
            Err(_) => trail.abandon(),
        }
        let verified = verifier.map(|v| {
            if let Ok(out) = &written {
                // Reports the read-back's progress until it has caught up and checked the probes.
                let total = body_ranges(&verify_ranges, HEAD_LEN, out.image_len)
                    .iter()
                    .map(|(s, e)| e - s)
                    .sum();
                obs(Event::Phase {
                    phase: Phase::Verify,
                    total: Some(total),
                });
                let t = Instant::now();
                while !v.is_finished() {
                    obs(Event::Progress(crate::device::progress::Counters {
                        done: trail.verified(),
                        written: 0,
                        skipped: 0,
                    }));
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                verify_seconds = Some(t.elapsed().as_secs_f64());
            }
            v.join().unwrap_or(Err(verify::VerifyError::Interrupted))
        });
        (written, verified)
    });
    // A read-back failure is the error to report, also when it stopped the writer early.
    let out = match verified {
        Some(Err(e)) if written.is_ok() || trail.failed() => {
            let image_len = written.as_ref().map_or(u64::MAX, |o| o.image_len);
            let body = body_ranges(&verify_ranges, HEAD_LEN, image_len);
            return Err(verify_failure(
                e, req, &target, &sink, &body, image_len, &pool, obs,
            ));
        }
        _ => written?,
    };
    let image_len = out.image_len;
    check_interrupt()?;

    // The head, last.
    obs(Event::Phase {
        phase: Phase::Finish,
        total: Some(HEAD_LEN.min(image_len)),
    });
    let head_written = write_head(&sink, &out.head, !sink.is_device)
        .and_then(|n| sink.flush().map(|()| n))
        .map_err(io_err(format!(
            "writing the first 64 KiB of {}",
            target_name(&target)
        )))?;
    if req.verify {
        check_head(&sink, &out.head, &target_name(&target))?;
    }
    *state = TargetState::Written {
        verified: req.verify,
    };
    let mut notes = Vec::new();
    if sink.is_device
        && let Err(e) = sink.reread_partitions()
        && e.raw_os_error() != Some(libc::EINVAL)
    {
        notes.push(format!(
            "the kernel did not re-read the partition table ({e}); replug the card to see its partitions"
        ));
    }
    drop(sink);
    for n in &notes {
        obs(Event::Note(n));
    }

    let grow = if req.grow {
        // The file already has its length: grow fills it.
        Some(
            crate::grow::grow(&mut target, None, obs).map_err(|source| WriteError::Grow {
                target: target_name(&target),
                source,
            })?,
        )
    } else {
        None
    };
    let written = out.counters.written + head_written;
    Ok(WriteReport {
        source: source_name,
        format: src.format,
        target: target.describe(),
        image_size: image_len,
        written,
        skipped: image_len.saturating_sub(written),
        bmap: bmap.map(|b| b.1),
        ranges_checked,
        seconds: started.elapsed().as_secs_f64(),
        write_seconds,
        verify_seconds,
        verified: req.verify,
        sha256: out.sha256,
        md5: out.md5,
        expected,
        grow,
        parallel_blocks,
        reconnects: src.download.as_ref().map(|d| d.reconnects()),
        download_sum: download_check.map(|c| c.expected),
    })
}

/// The source's identity for the target checks: a file's, or standard input's when it is
/// redirected from a file or device (`write - /dev/sdb < image`).
fn source_identity(spec: &SourceSpec) -> Option<SourceId> {
    match spec {
        SourceSpec::Path(p) => std::fs::metadata(p)
            .ok()
            .map(|m| SourceId::of(p.display().to_string(), &m)),
        SourceSpec::Stdin => {
            use rustix::fs::FileType;
            let st = rustix::fs::fstat(std::io::stdin()).ok()?;
            let kind = FileType::from_raw_mode(st.st_mode);
            (kind == FileType::RegularFile || kind == FileType::BlockDevice).then(|| SourceId {
                name: "standard input".into(),
                dev: st.st_dev,
                ino: st.st_ino,
                rdev: (kind == FileType::BlockDevice).then_some(st.st_rdev),
            })
        }
        SourceSpec::Url(_) => None,
    }
}

fn side_error(e: source::SideError) -> WriteError {
    match e {
        source::SideError::Local(m) => WriteError::SideFile(m),
        source::SideError::Net(n) => WriteError::Net(n),
    }
}

/// A sum of the downloaded file, and its hash as the bytes arrive.
struct DownloadCheck {
    expected: ExpectedSum,
    hash: std::sync::Arc<std::sync::Mutex<Option<digest::WholeHash>>>,
    handle: DownloadHandle,
}

/// A download that failed for good is the error to report, whatever the decoder made of the
/// stream's end.
fn network_cause(e: WriteError, download: Option<&DownloadHandle>) -> WriteError {
    match download.and_then(|d| d.failure()) {
        Some(NetError::Cancelled { .. }) | None => e,
        Some(_) if matches!(e, WriteError::Interrupted { .. }) => e,
        Some(n) => WriteError::Net(n),
    }
}

fn target_name(t: &Target) -> String {
    t.path.display().to_string()
}

/// The write pass, its checks (length, expected sum) and the final flush; tells the trail where
/// the image ends.
#[allow(clippy::too_many_arguments)]
fn write_and_flush(
    input: Input,
    plan: pipeline::Plan,
    pool: &Pool,
    sink: &Sink,
    trail: &verify::Trail,
    req: &WriteRequest,
    target: &Target,
    exact: &Option<(u64, String)>,
    expected: &Option<ExpectedSum>,
    file_len: u64,
    download_check: Option<&DownloadCheck>,
    obs: Observer<'_>,
) -> Result<pipeline::Output, WriteError> {
    let source_name = plan.source_name.clone();
    let out = pipeline::run(input, plan, pool, sink, req.verify.then_some(trail), obs)?;
    let image_len = out.image_len;
    if let Some((n, from)) = exact
        && *n != image_len
    {
        return Err(WriteError::ShortImage {
            what: source_name,
            len: image_len,
            expected: *n,
            expected_from: from.clone(),
        });
    }
    if let Some(e) = expected {
        let actual = match e.kind {
            SumKind::Sha256 => &out.sha256,
            SumKind::Md5 => &out.md5,
        };
        if actual.as_deref() != Some(e.hex.as_str()) {
            return Err(WriteError::SumMismatch {
                kind: e.kind,
                actual: actual.clone().unwrap_or_default(),
                expected: e.hex.clone(),
                origin: e.origin.clone(),
            });
        }
    }
    if let Some(c) = download_check {
        let actual = c
            .handle
            .finished()
            .then(|| c.hash.lock().ok().and_then(|mut h| h.take()))
            .flatten()
            .map(|h| h.finish().1);
        if actual.as_deref() != Some(c.expected.hex.as_str()) {
            return Err(WriteError::DownloadSumMismatch {
                kind: c.expected.kind,
                actual: actual
                    .unwrap_or_else(|| "unknown (the image ended before the download did)".into()),
                expected: c.expected.hex.clone(),
                origin: c.expected.origin.clone(),
            });
        }
    }
    trail.finish(image_len);
    let io_err = |context: String| move |source: io::Error| WriteError::Io { context, source };
    if !sink.is_device {
        sink.set_file_len(image_len.max(file_len))
            .map_err(io_err(format!("sizing {}", target_name(target))))?;
    }
    obs(Event::Phase {
        phase: Phase::Flush,
        total: None,
    });
    sink.flush()
        .map_err(io_err(format!("flushing {}", target_name(target))))?;
    Ok(out)
}

fn check_interrupt() -> Result<(), WriteError> {
    if signals::interrupted() {
        Err(WriteError::Interrupted {
            signal: signals::pending_name(),
        })
    } else {
        Ok(())
    }
}

/// Writes the held-back head: its segments, skipping zero blocks on a fresh file. Returns the
/// bytes written.
fn write_head(sink: &Sink, head: &pipeline::Head, skip_zero: bool) -> io::Result<u64> {
    let mut written = 0;
    let mut runs = Vec::new();
    for &(s, e) in &head.segments {
        let data = &head.bytes[s as usize..e as usize];
        if skip_zero {
            pipeline::nonzero_runs(data, s, &mut runs);
        } else {
            runs.clear();
            runs.push((s, e));
        }
        for &(rs, re) in &runs {
            sink.write_at(&head.bytes[rs as usize..re as usize], rs)?;
            written += re - rs;
        }
    }
    Ok(written)
}

/// Reads the head back and compares it byte by byte.
fn check_head(sink: &Sink, head: &pipeline::Head, target: &str) -> Result<(), WriteError> {
    let mut buf = crate::device::buffers::AlignedBuf::new(HEAD_LEN as usize).map_err(|source| {
        WriteError::Io {
            context: format!("reading back the first 64 KiB of {target}"),
            source,
        }
    })?;
    for &(s, e) in &head.segments {
        let n = (e - s) as usize;
        sink.read_back(&mut buf[..n], s)
            .map_err(|source| WriteError::Io {
                context: format!("reading back the first 64 KiB of {target}"),
                source,
            })?;
        if let Some(i) = (0..n).find(|&i| buf[i] != head.bytes[s as usize + i]) {
            return Err(WriteError::ReadBack {
                target: target.to_string(),
                offset: s + i as u64,
                found: buf[i],
                wanted: head.bytes[s as usize + i],
            });
        }
    }
    Ok(())
}

/// Turns a failed verify into the error to report, locating the first bad byte if the source can
/// be read again.
#[allow(clippy::too_many_arguments)]
fn verify_failure(
    e: verify::VerifyError,
    req: &WriteRequest,
    target: &Target,
    sink: &Sink,
    ranges: &[(u64, u64)],
    image_len: u64,
    pool: &Pool,
    obs: Observer<'_>,
) -> WriteError {
    let name = target_name(target);
    match e {
        verify::VerifyError::Interrupted => WriteError::Interrupted {
            signal: signals::pending_name(),
        },
        verify::VerifyError::Io { offset, source } => WriteError::Io {
            context: format!("reading back {name} at byte {offset}"),
            source,
        },
        verify::VerifyError::Mismatch { start, end } => {
            let end = end.min(image_len);
            obs(Event::Phase {
                phase: Phase::Locate,
                total: Some(end),
            });
            let range_err = |detail: String| WriteError::ReadBackRange {
                target: name.clone(),
                start,
                end,
                detail,
            };
            match verify::source_bytes(&req.source, decode_options(req), start, end) {
                Ok(Some(src)) => match verify::first_difference(sink, ranges, (start, end), &src, pool) {
                    Ok(Some((offset, found, wanted))) => WriteError::ReadBack {
                        target: name,
                        offset,
                        found,
                        wanted,
                    },
                    Ok(None) => range_err(
                        "the bytes read a second time match: the target returns unstable data".into(),
                    ),
                    Err(e) => range_err(format!("reading it again failed: {e}")),
                },
                Ok(None) => range_err(
                    "the first bad byte cannot be named: the source (standard input) cannot be read again".into(),
                ),
                Err(e) => range_err(format!("the source could not be read again: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_ranges_exclude_the_head() {
        assert_eq!(
            body_ranges(
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
