//! One write, in stages: what checks the image (`checks`), its size, the target prepared (identified,
//! checked, sized), the plan, the write pass with the read-back behind it, the head last, then grow and
//! the report. The target's state for the failure report changes only here, in [`write_inner`].

use std::io;
use std::time::Instant;

use super::checks::{self, DownloadCheck, Vouchers};
use super::decompress::Format;
use super::digest::RangeCheck;
use super::source::{self, DecodeOptions, Input, Source, SourceSpec};
use super::sums::{ExpectedSum, SumKind};
use super::{
    BUF_SIZE, BUFS, HEAD_LEN, TargetState, WriteError, WriteFailure, WriteReport, WriteRequest,
    pipeline, verify,
};
use crate::device::buffers::Pool;
use crate::device::progress::{Event, Observer, Phase};
use crate::device::target::{Checks, Discarded, Sink, SourceId, Target, TargetError};
use crate::net::{self, DownloadHandle, NetError};
use crate::signals;
use crate::size::Human;

/// A size and who says so (`the bmap X`, `--size 4 GiB`, ...), for the messages that cite it.
type Said = (u64, String);

pub(super) fn decode_options(req: &WriteRequest) -> DecodeOptions {
    DecodeOptions {
        threads: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        max_window: req.max_window,
    }
}

/// `ranges` minus `[0, head)`, clipped to `len`.
pub(super) fn body_ranges(ranges: &[(u64, u64)], head: u64, len: u64) -> Vec<(u64, u64)> {
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
    if req.no_checksum && !req.source.is_url() {
        return Err(WriteError::SideFile(
            "--no-checksum only applies to an image from a URL (a local file or standard input is written without one)".into(),
        ));
    }
    let probe = source::probe(&req.source, client)?;
    let source_name = req.source.display();
    let vouchers = checks::gather(req, &probe, client)?;
    if req.source.is_url() {
        vouchers.require_trust(req, &probe, &source_name)?;
    }
    let src = probe
        .open(decode_options(req), &|m| obs(Event::Note(m)))
        .map_err(WriteError::Source)?;
    let exact = image_size(&vouchers, &src, &source_name)?;
    let (mut target, file_len, file_cap) = prepare_target(req, &exact, &src)?;
    let plan = make_plan(
        req,
        &vouchers,
        &src,
        &target,
        &exact,
        &file_cap,
        &source_name,
    );
    let ranges_checked = vouchers.bmap.as_ref().map_or(0, |(b, _)| {
        b.ranges.iter().filter(|r| r.checksum.is_some()).count()
    });
    let parallel_blocks = match &src.input {
        Input::XzBlocks { index, .. } => Some(index.blocks.len() as u64),
        Input::SevenZBlocks { blocks, .. } => Some(blocks.index.blocks.len() as u64),
        _ => None,
    };

    // A file's new length is tried first: if it cannot have it, the file is left as it was.
    target.reserve(file_len)?;
    // From here on the target changes (a file this write created is removed again on failure).
    *state = TargetState::Incomplete;
    let written = (|| {
        let sink = target.open_sink(file_len)?;
        let job = Job {
            req,
            target: &target,
            sink: &sink,
            exact,
            file_len,
            file_cap,
            vouchers: &vouchers,
            obs,
        };
        let body = write_body(&job, src.input, plan, src.download.as_ref())?;
        check_interrupt()?;
        let head_written = finish_head(&job, &body.out)?;
        Ok::<_, WriteError>((sink, body, head_written))
    })();
    let (sink, body, head_written) = match written {
        Ok(w) => w,
        Err(e) => {
            match target.discard() {
                Discarded::NotCreated => {}
                Discarded::Removed => *state = TargetState::Removed,
                Discarded::Moved => *state = TargetState::Moved,
                Discarded::Failed(why) => *state = TargetState::NotRemoved(why.to_string()),
            }
            return Err(e);
        }
    };
    target.keep();
    *state = TargetState::Written {
        verified: req.verify,
    };
    let notes = reread_partitions(&sink);
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
    let image_len = body.out.image_len;
    let written = body.out.counters.written + head_written;
    let Vouchers {
        bmap,
        expected,
        download_check,
        ..
    } = vouchers;
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
        write_seconds: body.write_seconds,
        verify_seconds: body.verify_seconds,
        verified: req.verify,
        sha256: body.out.sha256,
        md5: body.out.md5,
        expected,
        grow,
        parallel_blocks,
        reconnects: src.download.as_ref().map(|d| d.reconnects()),
        download_sum: download_check.map(|c| c.expected),
    })
}

/// The image's size and who says so: the bmap (which must agree with the source), else the source.
fn image_size(
    vouchers: &Vouchers,
    src: &Source,
    source_name: &str,
) -> Result<Option<Said>, WriteError> {
    Ok(match (&vouchers.bmap, src.size.exact) {
        (Some((b, origin)), Some(n)) if b.image_size != n => {
            return Err(WriteError::BmapSize {
                origin: origin.clone(),
                bmap: b.image_size,
                source_name: source_name.to_string(),
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
    })
}

/// The target, identified, checked and locked before anything is written; a file target's length
/// and the most it may hold.
fn prepare_target(
    req: &WriteRequest,
    exact: &Option<Said>,
    src: &Source,
) -> Result<(Target, u64, Option<Said>), WriteError> {
    let lower_bound = exact.as_ref().map(|e| e.0).or(src.size.at_least);
    let source_id = source_identity(&req.source);
    let target = Target::open_checked(
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
    let file_cap = file_cap(req, &target)?;
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
    Ok((target, file_len, file_cap))
}

/// The most a file target may hold, and who says so: --size, or the free space of its filesystem.
fn file_cap(req: &WriteRequest, target: &Target) -> Result<Option<Said>, WriteError> {
    if target.is_device() {
        return Ok(None);
    }
    if let Some(s) = req.target_size {
        return Ok(Some((s, format!("--size {}", Human(s)))));
    }
    let free = target.free_space().map_err(|source| WriteError::Io {
        context: format!(
            "reading the free space of the filesystem holding {}",
            target_name(target)
        ),
        source,
    })?;
    Ok(free.map(|free| {
        (
            free,
            "the free space of its filesystem; give --size to write a sparse file larger than that"
                .to_string(),
        )
    }))
}

/// What the pipeline reads, writes, checks and hashes.
fn make_plan(
    req: &WriteRequest,
    vouchers: &Vouchers,
    src: &Source,
    target: &Target,
    exact: &Option<Said>,
    file_cap: &Option<Said>,
    source_name: &str,
) -> pipeline::Plan {
    let bmap = vouchers.bmap.as_ref();
    let whole = if req.sums {
        vec![SumKind::Sha256, SumKind::Md5]
    } else {
        vouchers.expected.iter().map(|e| e.kind).collect()
    };
    let write_ranges: Option<Vec<(u64, u64)>> = bmap.map(|(b, _)| {
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
    pipeline::Plan {
        read_ranges,
        write_ranges,
        skip_zero_blocks: !target.is_device(),
        head_len: HEAD_LEN,
        range_check: bmap.and_then(|(b, _)| RangeCheck::new(b)),
        whole,
        expected_len: exact.clone(),
        capacity: target.capacity.or(file_cap.as_ref().map(|c| c.0)),
        source_name: source_name.to_string(),
        bmap_origin: bmap.map(|b| b.1.clone()).unwrap_or_default(),
        format: src.format,
        target_name: target.describe(),
    }
}

/// What the write pass and its checks need besides the stream, fixed before the target changes.
struct Job<'a> {
    req: &'a WriteRequest,
    target: &'a Target,
    sink: &'a Sink,
    /// The image's size and who says so.
    exact: Option<Said>,
    /// A file target's length.
    file_len: u64,
    /// The most a file target may hold, and who says so.
    file_cap: Option<Said>,
    vouchers: &'a Vouchers,
    obs: Observer<'a>,
}

/// The write pass's outcome.
struct Body {
    out: pipeline::Output,
    write_seconds: f64,
    verify_seconds: Option<f64>,
}

fn io_err(context: String) -> impl FnOnce(io::Error) -> WriteError {
    move |source| WriteError::Io { context, source }
}

/// Everything but the head: written (a device's head cleared first, so that a half-written card
/// holds no table), flushed and, with verify, read back behind the writer.
fn write_body(
    job: &Job<'_>,
    input: Input,
    plan: pipeline::Plan,
    download: Option<&DownloadHandle>,
) -> Result<Body, WriteError> {
    let (sink, target, obs) = (job.sink, job.target, job.obs);
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
                target_name(target)
            )))?;
    }
    // The pool is the whole data memory of the writer and of the verifier that follows it.
    let pool = Pool::new(BUFS, BUF_SIZE).map_err(io_err("allocating the write buffers".into()))?;
    let trail = verify::Trail::default();
    // Everything written but the head is read back; the image's end comes with the trail.
    let verify_ranges = body_ranges(
        plan.write_ranges.as_deref().unwrap_or(&[(0, u64::MAX)]),
        HEAD_LEN,
        u64::MAX,
    );
    let write_started = Instant::now();
    let mut write_seconds = 0.0;
    let mut verify_seconds = None;
    let (written, verified) = std::thread::scope(|s| {
        let verifier = job
            .req
            .verify
            .then(|| s.spawn(|| verify::read_back(sink, &verify_ranges, &trail, &pool)));
        obs(Event::Phase {
            phase: Phase::Write,
            total: job.exact.as_ref().map(|e| e.0),
        });
        let written = write_and_flush(job, input, plan, &pool, &trail)
            .map_err(|e| network_cause(e, download))
            .map_err(|e| match (e, &job.file_cap) {
                (WriteError::Overflow { .. }, Some((cap, from))) => WriteError::OverCap {
                    path: target_name(target),
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
            return Err(verify_failure(job, e, &body, image_len, &pool));
        }
        _ => written?,
    };
    Ok(Body {
        out,
        write_seconds,
        verify_seconds,
    })
}

/// The head, last: written, flushed and (with verify) read back. Returns the bytes written.
fn finish_head(job: &Job<'_>, out: &pipeline::Output) -> Result<u64, WriteError> {
    let sink = job.sink;
    (job.obs)(Event::Phase {
        phase: Phase::Finish,
        total: Some(HEAD_LEN.min(out.image_len)),
    });
    let head_written = write_head(sink, &out.head, !sink.is_device)
        .and_then(|n| sink.flush().map(|()| n))
        .map_err(io_err(format!(
            "writing the first 64 KiB of {}",
            target_name(job.target)
        )))?;
    if job.req.verify {
        check_head(sink, &out.head, &target_name(job.target))?;
    }
    Ok(head_written)
}

/// Asks the kernel to read a card's new partition table; what to tell the user when it did not.
fn reread_partitions(sink: &Sink) -> Vec<String> {
    let mut notes = Vec::new();
    if sink.is_device
        && let Err(e) = sink.reread_partitions()
        && e.raw_os_error() != Some(libc::EINVAL)
    {
        notes.push(format!(
            "the kernel did not re-read the partition table ({e}); replug the card to see its partitions"
        ));
    }
    notes
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
fn write_and_flush(
    job: &Job<'_>,
    input: Input,
    plan: pipeline::Plan,
    pool: &Pool,
    trail: &verify::Trail,
) -> Result<pipeline::Output, WriteError> {
    let (sink, target) = (job.sink, job.target);
    let source_name = plan.source_name.clone();
    let out = pipeline::run(
        input,
        plan,
        pool,
        sink,
        job.req.verify.then_some(trail),
        job.obs,
    )?;
    let image_len = out.image_len;
    if let Some((n, from)) = &job.exact
        && *n != image_len
    {
        return Err(WriteError::ShortImage {
            what: source_name,
            len: image_len,
            expected: *n,
            expected_from: from.clone(),
        });
    }
    if let Some(e) = &job.vouchers.expected {
        check_sum(e, &out)?;
    }
    if let Some(c) = &job.vouchers.download_check {
        check_download(c)?;
    }
    trail.finish(image_len);
    if !sink.is_device {
        sink.set_file_len(image_len.max(job.file_len))
            .map_err(io_err(format!("sizing {}", target_name(target))))?;
    }
    (job.obs)(Event::Phase {
        phase: Phase::Flush,
        total: None,
    });
    sink.flush()
        .map_err(io_err(format!("flushing {}", target_name(target))))?;
    Ok(out)
}

/// The image's sum against the expected one.
fn check_sum(e: &ExpectedSum, out: &pipeline::Output) -> Result<(), WriteError> {
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
    Ok(())
}

/// The downloaded file's sum against the one beside it: the whole download must have been read.
fn check_download(c: &DownloadCheck) -> Result<(), WriteError> {
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
    Ok(())
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
fn verify_failure(
    job: &Job<'_>,
    e: verify::VerifyError,
    ranges: &[(u64, u64)],
    image_len: u64,
    pool: &Pool,
) -> WriteError {
    let (req, sink, obs) = (job.req, job.sink, job.obs);
    let name = target_name(job.target);
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
