//! The write pass: one reader thread (file reads or decoding) fills buffers from the fixed pool;
//! the writer and each hasher consume the same buffers on their own threads; a buffer returns to
//! the pool when the last of them is done with it. Every stage stops at the next buffer when
//! another fails or Ctrl-C arrives.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::WriteError;
use super::buffers::{Pool, PoolBuf};
use super::decompress::{self, Format};
use super::digest::{RangeCheck, WholeHash};
use super::interrupt;
use super::progress::{Counters, Event, Observer, Throttle};
use super::sink::{FLUSH_WINDOW, Sink};
use super::source::Input;
use super::sums::SumKind;
use super::verify::{Fingerprints, Trail};

/// A piece of the image: data in a pool buffer, or a run of zeros (a hole) without a buffer.
pub struct Chunk {
    pub offset: u64,
    pub len: u64,
    pub data: Option<PoolBuf>,
}

impl Chunk {
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
    /// The bytes of `[s, e)` (inside the chunk), or None for zeros.
    fn bytes(&self, s: u64, e: u64) -> Option<&[u8]> {
        self.data
            .as_ref()
            .map(|d| &d[(s - self.offset) as usize..(e - self.offset) as usize])
    }
}

/// First failure wins; everyone stops.
#[derive(Default)]
pub struct Control {
    abort: AtomicBool,
    error: Mutex<Option<WriteError>>,
}

impl Control {
    pub fn fail(&self, e: WriteError) {
        let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
        self.abort.store(true, Ordering::SeqCst);
    }
    pub fn stopped(&self) -> bool {
        self.abort.load(Ordering::SeqCst) || interrupt::interrupted()
    }
    /// Stops everyone without recording an error (the caller reports its own).
    pub fn abort(&self) {
        self.abort.store(true, Ordering::SeqCst);
    }
    fn take_error(&self) -> Option<WriteError> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Receives the next chunk; None when the stream ended or the pass stopped.
fn recv(rx: &Receiver<Arc<Chunk>>, ctl: &Control) -> Option<Arc<Chunk>> {
    loop {
        if ctl.stopped() {
            return None;
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(c) => return Some(c),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// What to read, write and hash.
pub struct Plan {
    /// Raw file sources: the byte ranges to read (None: all). Everything else reads all.
    pub read_ranges: Option<Vec<(u64, u64)>>,
    /// Byte ranges to write, sorted (None: the whole image). The same ranges are read back.
    pub write_ranges: Option<Vec<(u64, u64)>>,
    /// Fresh file target: all-zero blocks are not written and stay holes.
    pub skip_zero_blocks: bool,
    /// Bytes at the start held back and written last.
    pub head_len: u64,
    pub range_check: Option<RangeCheck>,
    pub whole: Vec<SumKind>,
    /// Exact image size, when known, and who says so.
    pub expected_len: Option<(u64, String)>,
    /// Device size: data beyond it cannot be written.
    pub capacity: Option<u64>,
    /// For messages.
    pub source_name: String,
    pub bmap_origin: String,
    pub format: Format,
    pub target_name: String,
}

/// The first bytes of the image, written after everything else.
#[derive(Default)]
pub struct Head {
    pub bytes: Vec<u8>,
    /// The parts of `bytes` to write, as image byte ranges.
    pub segments: Vec<(u64, u64)>,
}

pub struct Output {
    pub image_len: u64,
    pub counters: Counters,
    pub head: Head,
    pub sha256: Option<String>,
    pub md5: Option<String>,
}

const ZERO_BLOCK: u64 = 4096;

fn is_zero(b: &[u8]) -> bool {
    // Whole 16-byte words OR-ed together vectorise well (~10× a byte loop).
    let mut words = b.chunks_exact(16);
    let acc = words.by_ref().fold(0u128, |a, w| {
        a | u128::from_ne_bytes(w.try_into().unwrap_or([0xff; 16]))
    });
    acc == 0 && words.remainder().iter().all(|&x| x == 0)
}

/// Runs of non-zero 4 KiB blocks (aligned to image offsets) in `data`, which starts at `offset`.
pub fn nonzero_runs(data: &[u8], offset: u64, out: &mut Vec<(u64, u64)>) {
    out.clear();
    let end = offset + data.len() as u64;
    let mut pos = offset;
    let mut run: Option<u64> = None;
    while pos < end {
        let next = ((pos / ZERO_BLOCK + 1) * ZERO_BLOCK).min(end);
        let block = &data[(pos - offset) as usize..(next - offset) as usize];
        if is_zero(block) {
            if let Some(s) = run.take() {
                out.push((s, pos));
            }
        } else if run.is_none() {
            run = Some(pos);
        }
        pos = next;
    }
    if let Some(s) = run {
        out.push((s, end));
    }
}

/// Runs the write pass with the buffers of `pool`. With a `trail`, publishes what is written and
/// its fingerprints for the verifier that follows, and stops early if that verifier failed.
pub fn run(
    input: Input,
    mut plan: Plan,
    pool: &Pool,
    sink: &Sink,
    trail: Option<&Trail>,
    obs: Observer<'_>,
) -> Result<Output, WriteError> {
    let ctl = Arc::new(Control::default());
    let mut senders: Vec<SyncSender<Arc<Chunk>>> = Vec::new();
    let channel = |senders: &mut Vec<SyncSender<Arc<Chunk>>>| {
        let (tx, rx) = sync_channel::<Arc<Chunk>>(pool.count() + 1);
        senders.push(tx);
        rx
    };
    let rx_write = channel(&mut senders);
    let rx_range = plan.range_check.is_some().then(|| channel(&mut senders));
    let rx_sha = plan
        .whole
        .contains(&SumKind::Sha256)
        .then(|| channel(&mut senders));
    let rx_md5 = plan
        .whole
        .contains(&SumKind::Md5)
        .then(|| channel(&mut senders));

    // The reader is not scoped: if it is blocked reading a pipe when Ctrl-C arrives, the pass
    // ends without it.
    let reader = {
        let ctl = ctl.clone();
        let pool = pool.clone();
        let read_ranges = plan.read_ranges.take();
        let limit = plan.expected_len.clone();
        let names = (plan.source_name.clone(), plan.format);
        thread::Builder::new()
            .name("boardsmith-read".into())
            .spawn(move || {
                let r = produce(input, read_ranges, limit, &names, &pool, &senders, &ctl);
                drop(senders);
                if r.is_err() {
                    ctl.abort();
                }
                r
            })
            .map_err(|e| WriteError::Io {
                context: "cannot start the reader thread".into(),
                source: e,
            })?
    };

    let range_check = plan.range_check.take();
    let result = thread::scope(|s| {
        let range = rx_range.zip(range_check).map(|(rx, mut rc)| {
            let ctl = &ctl;
            let origin = &plan.bmap_origin;
            s.spawn(move || {
                while let Some(c) = recv(&rx, ctl) {
                    if let Err(m) = rc.feed(c.offset, c.bytes(c.offset, c.end()), c.len) {
                        ctl.fail(WriteError::RangeMismatch {
                            origin: origin.clone(),
                            mismatch: Box::new(m),
                        });
                        return None;
                    }
                }
                Some(rc)
            })
        });
        let whole = |rx: Option<Receiver<Arc<Chunk>>>, kind: SumKind| {
            let ctl = &ctl;
            rx.map(|rx| {
                s.spawn(move || {
                    let mut h = WholeHash::new(kind);
                    while let Some(c) = recv(&rx, ctl) {
                        if !h.feed(c.offset, c.bytes(c.offset, c.end()), c.len) {
                            ctl.fail(WriteError::Io {
                                context: "hashing the image".into(),
                                source: io::Error::other("chunks out of order (internal error)"),
                            });
                            return None;
                        }
                    }
                    Some(h.finish())
                })
            })
        };
        let sha = whole(rx_sha, SumKind::Sha256);
        let md5 = whole(rx_md5, SumKind::Md5);

        let written = write_stage(&rx_write, &plan, sink, trail, &ctl, obs);
        drop(rx_write);
        let join = |h: Option<thread::ScopedJoinHandle<'_, Option<(u64, String)>>>| {
            h.and_then(|h| h.join().ok().flatten())
        };
        let range = range.and_then(|h| h.join().ok().flatten());
        (written, range, join(sha), join(md5))
    });
    let (written, range, sha, md5) = result;

    if interrupt::interrupted() {
        // Leave the reader (possibly blocked on input) behind.
        return Err(WriteError::Interrupted {
            signal: interrupt::signal_name(),
        });
    }
    let image_len = match reader.join() {
        Ok(Ok(n)) => n,
        // The reader stops with "interrupted" when another stage failed: report that failure
        // (the writer's own error too: an overflow, a failed write).
        Ok(Err(e @ WriteError::Interrupted { .. })) => {
            return Err(ctl.take_error().or_else(|| written.err()).unwrap_or(e));
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(WriteError::Io {
                context: "reading the source".into(),
                source: io::Error::other("the reader thread panicked"),
            });
        }
    };
    if let Some(e) = ctl.take_error() {
        return Err(e);
    }
    let (counters, head) = written?;
    if let Some(rc) = range
        && let Some((index, start, end)) = rc.unfinished()
    {
        return Err(WriteError::ShortImage {
            what: plan.source_name.clone(),
            len: image_len,
            expected: end,
            expected_from: format!("bmap range {index} (bytes {start}..{end})"),
        });
    }
    let take = |h: Option<(u64, String)>| -> Result<Option<String>, WriteError> {
        match h {
            Some((n, hex)) if n == image_len => Ok(Some(hex)),
            Some(_) => Err(WriteError::Io {
                context: "hashing the image".into(),
                source: io::Error::other("the hash did not see the whole image (internal error)"),
            }),
            None => Ok(None),
        }
    };
    Ok(Output {
        image_len,
        counters,
        head,
        sha256: take(sha)?,
        md5: take(md5)?,
    })
}

/// Reads the source into pool buffers and hands them to every consumer. Returns the image length.
fn produce(
    input: Input,
    read_ranges: Option<Vec<(u64, u64)>>,
    limit: Option<(u64, String)>,
    names: &(String, Format),
    pool: &Pool,
    senders: &[SyncSender<Arc<Chunk>>],
    ctl: &Control,
) -> Result<u64, WriteError> {
    let stop = || ctl.stopped();
    let interrupted = || WriteError::Interrupted {
        signal: interrupt::signal_name(),
    };
    let send = |c: Chunk| -> bool {
        let c = Arc::new(c);
        senders.iter().all(|tx| tx.send(c.clone()).is_ok())
    };
    let decode_err = |offset: u64, e: io::Error| match e
        .get_ref()
        .and_then(|i| i.downcast_ref::<decompress::WindowTooLarge>())
    {
        // Not damage: the data asks for more decoder memory than allowed.
        Some(w) => WriteError::Source(super::source::SourceError::Window {
            what: format!("{} (after {offset} bytes of the image)", names.0),
            detail: w.clone(),
        }),
        None => WriteError::Decode {
            what: names.0.clone(),
            format: names.1.name(),
            offset,
            message: e.to_string(),
        },
    };
    // Independent blocks (xz blocks, 7z LZMA2 segments) decoded on several threads and sent in
    // order; `crc` sums what was decoded. Returns the result and how far decoding got.
    let decode_blocks = |file: &std::fs::File,
                         index: &super::xz::XzIndex,
                         max_dict: decompress::WindowLimit,
                         threads: usize,
                         mut crc: Option<&mut crc32fast::Hasher>| {
        let mut pos = 0u64;
        let r = super::xz::decode_parallel(
            file,
            index,
            max_dict,
            threads,
            pool,
            &stop,
            &mut |buf, len| {
                if let Some(c) = crc.as_deref_mut() {
                    c.update(&buf[..len]);
                }
                let ok = send(Chunk {
                    offset: pos,
                    len: len as u64,
                    data: Some(buf),
                });
                pos += len as u64;
                ok
            },
        );
        (r, pos)
    };
    let blocks_err = |pos: u64, e: io::Error| {
        if e.kind() == io::ErrorKind::Interrupted {
            interrupted()
        } else {
            decode_err(pos, e)
        }
    };
    match input {
        Input::RawFile(file) => {
            use std::os::unix::fs::FileExt;
            let len = file
                .metadata()
                .map_err(|e| WriteError::Io {
                    context: format!("reading {}", names.0),
                    source: e,
                })?
                .len();
            let ranges = read_ranges.unwrap_or_else(|| vec![(0, len)]);
            for (rs, re) in ranges {
                let re = re.min(len);
                if rs >= re {
                    continue;
                }
                let extents =
                    crate::sparse::data_extents(&file, rs, re).map_err(|e| WriteError::Io {
                        context: format!("finding the data in {}", names.0),
                        source: e,
                    })?;
                let mut pos = rs;
                for (ds, de) in extents.into_iter().chain(std::iter::once((re, re))) {
                    if ds > pos
                        && (stop()
                            || !send(Chunk {
                                offset: pos,
                                len: ds - pos,
                                data: None,
                            }))
                    {
                        return Err(interrupted());
                    }
                    pos = pos.max(ds);
                    while pos < de {
                        let Some(mut buf) = pool.take(&stop) else {
                            return Err(interrupted());
                        };
                        let n = (de - pos).min(buf.len() as u64);
                        file.read_exact_at(&mut buf[..n as usize], pos)
                            .map_err(|e| WriteError::Io {
                                context: format!("reading {} at byte {pos}", names.0),
                                source: e,
                            })?;
                        if !send(Chunk {
                            offset: pos,
                            len: n,
                            data: Some(buf),
                        }) {
                            return Err(interrupted());
                        }
                        pos += n;
                    }
                }
            }
            Ok(len)
        }
        Input::XzBlocks {
            file,
            index,
            threads,
            max_dict,
        } => {
            let (r, pos) = decode_blocks(&file, &index, max_dict, threads, None);
            r.map_err(|e| blocks_err(pos, e))
        }
        Input::SevenZBlocks {
            file,
            blocks,
            threads,
            ..
        } => {
            let mut crc = crc32fast::Hasher::new();
            // Raw LZMA2 decoders: their dictionaries were checked against the limit and the
            // parallel budget when the archive was opened.
            let (r, pos) = decode_blocks(
                &file,
                &blocks.index,
                decompress::WindowLimit::default(),
                threads,
                Some(&mut crc),
            );
            let n = r.map_err(|e| blocks_err(pos, e))?;
            match blocks.crc32 {
                Some(want) if crc.finalize() != want => Err(decode_err(
                    pos,
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "corrupt 7z data: the image's CRC-32 is not {want:08x}, the archive's"
                        ),
                    ),
                )),
                _ => Ok(n),
            }
        }
        Input::Stream(mut r) => {
            stream_chunks(&mut *r, &names.0, &limit, pool, &send, ctl, &decode_err)
        }
        Input::SevenZ {
            file,
            entry,
            max_window,
        } => {
            let mut total = 0u64;
            let mut inner: Option<WriteError> = None;
            let r = decompress::sevenz_decode(
                file,
                &entry,
                max_window,
                &mut |r| match stream_chunks(r, &names.0, &limit, pool, &send, ctl, &decode_err) {
                    Ok(n) => {
                        total = n;
                        Ok(())
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        inner = Some(e);
                        Err(io::Error::other(msg))
                    }
                },
            );
            if let Some(e) = inner {
                return Err(e);
            }
            r.map_err(|e| decode_err(total, e))?;
            Ok(total)
        }
    }
}

/// Fills buffers from a stream until it ends.
fn stream_chunks(
    r: &mut dyn Read,
    what: &str,
    limit: &Option<(u64, String)>,
    pool: &Pool,
    send: &dyn Fn(Chunk) -> bool,
    ctl: &Control,
    decode_err: &dyn Fn(u64, io::Error) -> WriteError,
) -> Result<u64, WriteError> {
    let stop = || ctl.stopped();
    let mut pos = 0u64;
    loop {
        let Some(mut buf) = pool.take(&stop) else {
            return Err(WriteError::Interrupted {
                signal: interrupt::signal_name(),
            });
        };
        let mut n = 0;
        while n < buf.len() {
            match r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(decode_err(pos + n as u64, e)),
            }
            if ctl.stopped() {
                return Err(WriteError::Interrupted {
                    signal: interrupt::signal_name(),
                });
            }
        }
        if n == 0 {
            return Ok(pos);
        }
        if let Some((max, from)) = limit
            && pos + n as u64 > *max
        {
            return Err(WriteError::LongImage {
                what: what.to_string(),
                expected: *max,
                expected_from: from.clone(),
            });
        }
        let full = n == buf.len();
        if !send(Chunk {
            offset: pos,
            len: n as u64,
            data: Some(buf),
        }) {
            return Err(WriteError::Interrupted {
                signal: interrupt::signal_name(),
            });
        }
        pos += n as u64;
        if !full {
            // A short fill means the stream ended (read returned 0).
            return Ok(pos);
        }
    }
}

/// What the writer leaves: counters and the held-back head.
type Written = (Counters, Head);

/// Writes what the plan says, collects the head, hands fingerprints to the verifier's trail.
fn write_stage(
    rx: &Receiver<Arc<Chunk>>,
    plan: &Plan,
    sink: &Sink,
    trail: Option<&Trail>,
    ctl: &Control,
    obs: Observer<'_>,
) -> Result<Written, WriteError> {
    let mut counters = Counters::default();
    let mut head = Head {
        bytes: vec![0; plan.head_len as usize],
        segments: Vec::new(),
    };
    let mut prints = Fingerprints::default();
    let mut throttle = Throttle::new(Duration::from_millis(200));
    let mut runs = Vec::new();
    let mut range_idx = 0usize;
    let mut kicked = 0u64;
    let mut reported = counters;
    let io_err = |what: &str, at: u64, e: io::Error| WriteError::Io {
        context: format!("{what} {} at byte {at}", plan.target_name),
        source: e,
    };
    loop {
        let c = loop {
            if ctl.stopped() {
                break None;
            }
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(c) => break Some(c),
                Err(RecvTimeoutError::Timeout) => {
                    // Idle (a slow or stalled source): still tell where we are.
                    if counters != reported {
                        obs(Event::Progress(counters));
                        reported = counters;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break None,
            }
        };
        let Some(c) = c else { break };
        // The pieces of this chunk to write.
        let (cs, ce) = (c.offset, c.end());
        let mut pieces: Vec<(u64, u64)> = Vec::new();
        match &plan.write_ranges {
            None => pieces.push((cs, ce)),
            Some(ranges) => {
                while range_idx < ranges.len() && ranges[range_idx].1 <= cs {
                    range_idx += 1;
                }
                let mut i = range_idx;
                while i < ranges.len() && ranges[i].0 < ce {
                    let (s, e) = (ranges[i].0.max(cs), ranges[i].1.min(ce));
                    if s < e {
                        pieces.push((s, e));
                    }
                    i += 1;
                }
            }
        }
        for (s, e) in pieces {
            if let Some(cap) = plan.capacity
                && e > cap
            {
                return Err(WriteError::Overflow {
                    path: plan.target_name.clone(),
                    capacity: cap,
                });
            }
            // Held back: the head.
            if s < plan.head_len {
                let he = e.min(plan.head_len);
                if let Some(d) = c.bytes(s, he) {
                    head.bytes[s as usize..he as usize].copy_from_slice(d);
                }
                head.segments.push((s, he));
            }
            let bs = s.max(plan.head_len);
            if bs >= e {
                continue;
            }
            let data = c.bytes(bs, e);
            if trail.is_some() {
                match data {
                    Some(d) => prints.update(bs, d),
                    None => prints.update_zeros(bs, e - bs),
                }
            }
            match data {
                Some(d) if plan.skip_zero_blocks => {
                    nonzero_runs(d, bs, &mut runs);
                    for &(rs, re) in &runs {
                        sink.write_at(&d[(rs - bs) as usize..(re - bs) as usize], rs)
                            .map_err(|err| io_err("writing", rs, err))?;
                        counters.written += re - rs;
                    }
                }
                Some(d) => {
                    sink.write_at(d, bs)
                        .map_err(|err| io_err("writing", bs, err))?;
                    counters.written += e - bs;
                }
                None if plan.skip_zero_blocks => {}
                None => {
                    sink.write_zeros(bs, e - bs)
                        .map_err(|err| io_err("writing zeros to", bs, err))?;
                    counters.written += e - bs;
                }
            }
        }
        counters.done = ce;
        counters.skipped = counters.done.saturating_sub(counters.written);
        if let Some(t) = trail {
            t.advance(ce, &mut prints);
            if t.failed() {
                // The read-back already found a bad window: writing on is wasted.
                ctl.abort();
                break;
            }
        }
        if counters.done >= kicked + FLUSH_WINDOW {
            sink.kick_writeback(kicked, counters.done);
            kicked = counters.done;
        }
        if throttle.due() {
            obs(Event::Progress(counters));
            reported = counters;
        }
    }
    obs(Event::Progress(counters));
    if let Some(t) = trail {
        t.last_windows(prints);
    }
    Ok((counters, head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_runs_are_block_aligned() {
        let mut d = vec![0u8; 5 * 4096 + 100];
        d[10] = 1; // block 0 (starts at 100 in the image: offset 100)
        d[3 * 4096] = 1;
        let mut runs = Vec::new();
        nonzero_runs(&d, 100, &mut runs);
        // Image blocks: [100,4096) has the byte at 110; 12388 is in [12288,16384).
        assert_eq!(runs, vec![(100, 4096), (12288, 16384)]);
        nonzero_runs(&[0u8; 10], 0, &mut runs);
        assert!(runs.is_empty());
    }
}
