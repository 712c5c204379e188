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
use super::decompress::{self, Format};
use super::digest::{RangeCheck, WholeHash};
use super::source::Input;
use super::sums::SumKind;
use super::verify::{Fingerprints, Trail};
use crate::device::buffers::{Pool, PoolBuf};
use crate::device::progress::{Counters, Event, Observer, Throttle};
use crate::device::target::{FLUSH_WINDOW, Sink};
use crate::signals;

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
        self.abort.load(Ordering::SeqCst) || signals::interrupted()
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
    let reader = spawn_reader(input, &mut plan, pool, senders, &ctl)?;

    let range_check = plan.range_check.take();
    let result: Ends = thread::scope(|s| {
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
    finish(reader, &ctl, &plan, result)
}

/// What the consumers leave: the writer's result, the range check, the SHA-256 and MD5 passes.
type Ends = (
    Result<Written, WriteError>,
    Option<RangeCheck>,
    Option<(u64, String)>,
    Option<(u64, String)>,
);

type Reader = thread::JoinHandle<Result<u64, WriteError>>;

/// Starts the reader thread with the plan's read ranges and length limit.
fn spawn_reader(
    input: Input,
    plan: &mut Plan,
    pool: &Pool,
    senders: Vec<SyncSender<Arc<Chunk>>>,
    ctl: &Arc<Control>,
) -> Result<Reader, WriteError> {
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
        })
}

/// The pass's outcome once every consumer has ended: the first failure of any stage (an interruption
/// before all), else the image's length, the writer's counters and head, and the whole-image sums.
fn finish(
    reader: Reader,
    ctl: &Control,
    plan: &Plan,
    (written, range, sha, md5): Ends,
) -> Result<Output, WriteError> {
    if signals::interrupted() {
        // Leave the reader (possibly blocked on input) behind.
        return Err(WriteError::Interrupted {
            signal: signals::pending_name(),
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
    let p = Producer {
        what: &names.0,
        format: names.1,
        limit,
        pool,
        senders,
        ctl,
    };
    match input {
        Input::RawFile(file) => p.raw_file(&file, read_ranges),
        Input::XzBlocks {
            file,
            index,
            threads,
            max_dict,
        } => {
            let (r, pos) = p.blocks(&file, &index, max_dict, threads, None);
            r.map_err(|e| p.blocks_err(pos, e))
        }
        Input::SevenZBlocks {
            file,
            blocks,
            threads,
            ..
        } => p.sevenz_blocks(&file, &blocks, threads),
        Input::Stream(mut r) => p.stream(&mut *r),
        Input::SevenZ {
            file,
            entry,
            max_window,
        } => p.sevenz(file, &entry, max_window),
    }
}

/// The reader thread: the pool it fills and the consumers every chunk goes to.
struct Producer<'a> {
    /// The source, for messages.
    what: &'a str,
    format: Format,
    /// The most bytes the image may have, and where that figure comes from.
    limit: Option<(u64, String)>,
    pool: &'a Pool,
    senders: &'a [SyncSender<Arc<Chunk>>],
    ctl: &'a Control,
}

fn interrupted() -> WriteError {
    WriteError::Interrupted {
        signal: signals::pending_name(),
    }
}

impl Producer<'_> {
    /// Hands `c` to every consumer; false when one of them has gone (the pass is stopping).
    fn send(&self, c: Chunk) -> bool {
        let c = Arc::new(c);
        self.senders.iter().all(|tx| tx.send(c.clone()).is_ok())
    }

    fn decode_err(&self, offset: u64, e: io::Error) -> WriteError {
        match e
            .get_ref()
            .and_then(|i| i.downcast_ref::<decompress::WindowTooLarge>())
        {
            // Not damage: the data asks for more decoder memory than allowed.
            Some(w) => WriteError::Source(super::source::SourceError::Window {
                what: format!("{} (after {offset} bytes of the image)", self.what),
                detail: w.clone(),
            }),
            None => WriteError::Decode {
                what: self.what.to_string(),
                format: self.format.name(),
                offset,
                message: e.to_string(),
            },
        }
    }

    fn blocks_err(&self, pos: u64, e: io::Error) -> WriteError {
        if e.kind() == io::ErrorKind::Interrupted {
            interrupted()
        } else {
            self.decode_err(pos, e)
        }
    }

    /// A raw image file: its data extents read at their offsets (within the bmap's ranges, when
    /// there are some), its holes sent as zero runs without a buffer.
    fn raw_file(
        &self,
        file: &std::fs::File,
        read_ranges: Option<Vec<(u64, u64)>>,
    ) -> Result<u64, WriteError> {
        use std::os::unix::fs::FileExt;
        let ctl = self.ctl;
        let stop = move || ctl.stopped();
        let len = file
            .metadata()
            .map_err(|e| WriteError::Io {
                context: format!("reading {}", self.what),
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
                crate::disk::sparse::data_extents(file, rs, re).map_err(|e| WriteError::Io {
                    context: format!("finding the data in {}", self.what),
                    source: e,
                })?;
            let mut pos = rs;
            for (ds, de) in extents.into_iter().chain(std::iter::once((re, re))) {
                if ds > pos
                    && (stop()
                        || !self.send(Chunk {
                            offset: pos,
                            len: ds - pos,
                            data: None,
                        }))
                {
                    return Err(interrupted());
                }
                pos = pos.max(ds);
                while pos < de {
                    let Some(mut buf) = self.pool.take(&stop) else {
                        return Err(interrupted());
                    };
                    let n = (de - pos).min(buf.len() as u64);
                    file.read_exact_at(&mut buf[..n as usize], pos)
                        .map_err(|e| WriteError::Io {
                            context: format!("reading {} at byte {pos}", self.what),
                            source: e,
                        })?;
                    if !self.send(Chunk {
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

    /// Independent blocks (xz blocks, 7z LZMA2 segments) decoded on several threads and sent in
    /// order; `crc` sums what was decoded. Returns the result and how far decoding got.
    fn blocks(
        &self,
        file: &std::fs::File,
        index: &super::xz::XzIndex,
        max_dict: decompress::WindowLimit,
        threads: usize,
        mut crc: Option<&mut crc32fast::Hasher>,
    ) -> (io::Result<u64>, u64) {
        let ctl = self.ctl;
        let stop = move || ctl.stopped();
        let mut pos = 0u64;
        let r = super::xz::decode_parallel(
            file,
            index,
            max_dict,
            threads,
            self.pool,
            &stop,
            &mut |buf, len| {
                if let Some(c) = crc.as_deref_mut() {
                    c.update(&buf[..len]);
                }
                let ok = self.send(Chunk {
                    offset: pos,
                    len: len as u64,
                    data: Some(buf),
                });
                pos += len as u64;
                ok
            },
        );
        (r, pos)
    }

    /// A 7z archive decoded block-parallel, its CRC-32 checked at the end.
    fn sevenz_blocks(
        &self,
        file: &std::fs::File,
        blocks: &decompress::SevenZBlocks,
        threads: usize,
    ) -> Result<u64, WriteError> {
        let mut crc = crc32fast::Hasher::new();
        // Raw LZMA2 decoders: their dictionaries were checked against the limit and the
        // parallel budget when the archive was opened.
        let (r, pos) = self.blocks(
            file,
            &blocks.index,
            decompress::WindowLimit::default(),
            threads,
            Some(&mut crc),
        );
        let n = r.map_err(|e| self.blocks_err(pos, e))?;
        match blocks.crc32 {
            Some(want) if crc.finalize() != want => Err(self.decode_err(
                pos,
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("corrupt 7z data: the image's CRC-32 is not {want:08x}, the archive's"),
                ),
            )),
            _ => Ok(n),
        }
    }

    /// A 7z archive's entry decoded as one stream.
    fn sevenz(
        &self,
        file: std::fs::File,
        entry: &str,
        max_window: decompress::WindowLimit,
    ) -> Result<u64, WriteError> {
        let mut total = 0u64;
        let mut inner: Option<WriteError> = None;
        let r = decompress::sevenz_decode(file, entry, max_window, &mut |r| match self.stream(r) {
            Ok(n) => {
                total = n;
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                inner = Some(e);
                Err(io::Error::other(msg))
            }
        });
        if let Some(e) = inner {
            return Err(e);
        }
        r.map_err(|e| self.decode_err(total, e))?;
        Ok(total)
    }

    /// Fills buffers from a stream until it ends.
    fn stream(&self, r: &mut dyn Read) -> Result<u64, WriteError> {
        let ctl = self.ctl;
        let stop = move || ctl.stopped();
        let mut pos = 0u64;
        loop {
            let Some(mut buf) = self.pool.take(&stop) else {
                return Err(interrupted());
            };
            let mut n = 0;
            while n < buf.len() {
                match r.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(self.decode_err(pos + n as u64, e)),
                }
                if ctl.stopped() {
                    return Err(interrupted());
                }
            }
            if n == 0 {
                return Ok(pos);
            }
            if let Some((max, from)) = &self.limit
                && pos + n as u64 > *max
            {
                return Err(WriteError::LongImage {
                    what: self.what.to_string(),
                    expected: *max,
                    expected_from: from.clone(),
                });
            }
            let full = n == buf.len();
            if !self.send(Chunk {
                offset: pos,
                len: n as u64,
                data: Some(buf),
            }) {
                return Err(interrupted());
            }
            pos += n as u64;
            if !full {
                // A short fill means the stream ended (read returned 0).
                return Ok(pos);
            }
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
