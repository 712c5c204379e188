//! Read-back verification, running behind the writer.
//!
//! While writing, the writer records a CRC-32 of every 1 MiB window of what it meant the target to
//! hold, and of a probe: the window's first 4 KiB. It publishes them with its progress on a
//! [`Trail`]. The verifier follows on its own threads: it reads back, with the page cache bypassed,
//! what the writer has finished (O_DIRECT reads see the medium as soon as an O_DIRECT write
//! returns; anything else waits for the final flush), and compares window by window. Reading while
//! the writer still writes uses the disk while the writer hashes and decodes, instead of after it.
//!
//! A window read back right after it was written cannot reveal a card that maps two addresses to
//! the same cell (a fake-capacity card, whose later writes overwrite earlier data). So once all is
//! written and flushed, every window's probe is read again: 4 KiB per MiB, a fraction of a second.
//!
//! Memory: the buffers come from the writer's pool; the expected CRCs queue only between writer and
//! verifier; the probes cost 16 bytes per MiB of image.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use super::buffers::{Pool, PoolBuf, ZEROS, ZEROS_LEN};
use super::decompress;
use super::interrupt;
use super::sink::Sink;
use super::source::{self, DecodeOptions, Input, SourceSpec};

/// Bytes per fingerprint window.
pub const WINDOW: u64 = 1 << 20;
/// Bytes per probe: the first contiguous bytes of a window's data, up to this many.
pub const PROBE: u64 = 4096;

/// A window's first bytes, re-read after everything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub offset: u64,
    pub len: u32,
    pub crc: u32,
}

/// The CRC-32 of one window's bytes (those fed: holes between ranges are not part of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub index: u64,
    pub crc: u32,
    pub probe: Probe,
}

struct Open {
    index: u64,
    all: crc32fast::Hasher,
    probe_at: u64,
    probe_len: u64,
    probe: crc32fast::Hasher,
}

impl Open {
    fn close(self) -> Window {
        Window {
            index: self.index,
            crc: self.all.finalize(),
            probe: Probe {
                offset: self.probe_at,
                len: self.probe_len as u32,
                crc: self.probe.finalize(),
            },
        }
    }
}

/// Window fingerprints of the bytes fed, in offset order.
#[derive(Default)]
pub struct Fingerprints {
    done: Vec<Window>,
    cur: Option<Open>,
}

impl Fingerprints {
    /// Feeds `data` found at `offset` (calls come in increasing offset order).
    pub fn update(&mut self, mut offset: u64, mut data: &[u8]) {
        while !data.is_empty() {
            let w = offset / WINDOW;
            if self.cur.as_ref().is_none_or(|c| c.index != w) {
                if let Some(c) = self.cur.take() {
                    self.done.push(c.close());
                }
                self.cur = Some(Open {
                    index: w,
                    all: crc32fast::Hasher::new(),
                    probe_at: offset,
                    probe_len: 0,
                    probe: crc32fast::Hasher::new(),
                });
            }
            let n = ((w + 1) * WINDOW - offset).min(data.len() as u64) as usize;
            if let Some(c) = self.cur.as_mut() {
                c.all.update(&data[..n]);
                // The probe is contiguous: it stops growing at the first gap.
                if c.probe_at + c.probe_len == offset && c.probe_len < PROBE {
                    let k = (PROBE - c.probe_len).min(n as u64);
                    c.probe.update(&data[..k as usize]);
                    c.probe_len += k;
                }
            }
            data = &data[n..];
            offset += n as u64;
        }
    }

    pub fn update_zeros(&mut self, mut offset: u64, len: u64) {
        let end = offset + len;
        while offset < end {
            let n = (end - offset).min(ZEROS_LEN as u64);
            self.update(offset, &ZEROS.0[..n as usize]);
            offset += n;
        }
    }

    /// Windows completed so far (drained).
    pub fn take_done(&mut self) -> std::vec::Drain<'_, Window> {
        self.done.drain(..)
    }

    pub fn finish(mut self) -> Vec<Window> {
        if let Some(c) = self.cur.take() {
            self.done.push(c.close());
        }
        self.done
    }
}

/// How a read-back failed.
#[derive(Debug)]
pub enum VerifyError {
    /// The target's bytes in window `[start, end)` differ from what was written.
    Mismatch {
        start: u64,
        end: u64,
    },
    Io {
        offset: u64,
        source: io::Error,
    },
    /// Ctrl-C, or the write failed or stopped (then the writer's error is the one to report).
    Interrupted,
}

impl VerifyError {
    fn mismatch(window: u64) -> VerifyError {
        VerifyError::Mismatch {
            start: window * WINDOW,
            end: (window + 1) * WINDOW,
        }
    }
}

#[derive(Default)]
struct TrailState {
    /// Every byte below this is written (for O_DIRECT writes: on the medium).
    written: u64,
    /// The writer is done: `written` is the image's length.
    finished: bool,
    /// Everything written was flushed.
    flushed: bool,
    /// The write failed or stopped: the verifier gives up.
    abandoned: bool,
    /// The writer's windows not yet compared, in offset order.
    expected: VecDeque<Window>,
}

/// The writer's progress, shared with the verifier that follows it.
#[derive(Default)]
pub struct Trail {
    state: Mutex<TrailState>,
    changed: Condvar,
    /// Bytes read back and matched so far (for progress).
    verified: AtomicU64,
    /// The verifier found a mismatch: the writer may stop.
    failed: AtomicBool,
}

/// What a piece of the read-back may wait for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// Written: an O_DIRECT read sees it.
    Written,
    /// Written and flushed: a cached read after dropping the cache sees it.
    Flushed,
}

impl Trail {
    fn lock(&self) -> MutexGuard<'_, TrailState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The writer finished everything below `written`; `prints` hands over its completed windows.
    pub fn advance(&self, written: u64, prints: &mut Fingerprints) {
        let mut st = self.lock();
        st.expected.extend(prints.take_done());
        st.written = st.written.max(written);
        drop(st);
        self.changed.notify_all();
    }

    /// The writer's last windows (its pass is over).
    pub fn last_windows(&self, prints: Fingerprints) {
        self.lock().expected.extend(prints.finish());
        self.changed.notify_all();
    }

    /// The image is complete and `len` bytes long.
    pub fn finish(&self, len: u64) {
        let mut st = self.lock();
        st.written = len;
        st.finished = true;
        drop(st);
        self.changed.notify_all();
    }

    /// Everything written is flushed to the medium.
    pub fn flushed(&self) {
        self.lock().flushed = true;
        self.changed.notify_all();
    }

    /// The write failed or stopped: the verifier stops too.
    pub fn abandon(&self) {
        self.lock().abandoned = true;
        self.changed.notify_all();
    }

    /// Whether the verifier has found a mismatch already.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Bytes read back and matched so far.
    pub fn verified(&self) -> u64 {
        self.verified.load(Ordering::Relaxed)
    }

    /// Waits until `cond` holds (Some) or the write is abandoned or Ctrl-C arrives (Err).
    fn wait_for<T>(
        &self,
        mut cond: impl FnMut(&mut TrailState) -> Option<T>,
    ) -> Result<T, VerifyError> {
        let mut st = self.lock();
        loop {
            if st.abandoned || self.failed() || interrupt::interrupted() {
                return Err(VerifyError::Interrupted);
            }
            if let Some(t) = cond(&mut st) {
                return Ok(t);
            }
            st = self
                .changed
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until `[pos, want)` can be read back as `needs` says; returns where the readable part
    /// ends (≤ `want`), or None when the image ends at or before `pos`.
    fn readable(&self, pos: u64, want: u64, needs: Needs) -> Result<Option<u64>, VerifyError> {
        self.wait_for(|st| {
            if st.finished && pos >= st.written {
                return Some(None);
            }
            let ready = match needs {
                Needs::Written => st.finished || st.written >= want,
                Needs::Flushed => st.flushed,
            };
            ready.then(|| Some(want.min(st.written)))
        })
    }

    /// The writer's next window (waiting for the writer if it has not published it yet); None when
    /// the writer finished without one.
    fn next_expected(&self) -> Result<Option<Window>, VerifyError> {
        self.wait_for(|st| match st.expected.pop_front() {
            Some(w) => Some(Some(w)),
            None if st.finished => Some(None),
            None => None,
        })
    }
}

/// One step of the read-back, in offset order: bytes read from the target, or a hole that reads as zeros.
enum Piece {
    Data(u64, PoolBuf, usize),
    Zeros(u64, u64),
}

/// Reads `ranges` back from the target behind the writer and compares them with the writer's
/// fingerprints, then re-reads every window's probe once the write is flushed. `ranges` may end
/// at `u64::MAX`: the image's end comes from the trail. Returns the bytes compared.
///
/// A reader thread keeps the next read in flight while this thread fingerprints what arrived.
/// Runs on its own thread beside the writer; reports progress through the trail.
pub fn read_back(
    sink: &Sink,
    ranges: &[(u64, u64)],
    trail: &Trail,
    pool: &Pool,
) -> Result<u64, VerifyError> {
    let probes = follow(sink, ranges, trail, pool)?;
    trail.wait_for(|st| st.flushed.then_some(()))?;
    check_probes(sink, &probes, pool)?;
    Ok(trail.verified())
}

/// The read-back that follows the writer; returns the probes to check at the end.
fn follow(
    sink: &Sink,
    ranges: &[(u64, u64)],
    trail: &Trail,
    pool: &Pool,
) -> Result<Vec<Probe>, VerifyError> {
    let stop = AtomicBool::new(false);
    let stopped = || stop.load(Ordering::Relaxed) || interrupt::interrupted();
    let step = pool.buf_size() as u64;
    // Two reads queued: enough to keep the disk busy, few enough to leave the writer its buffers.
    let (tx, rx) = sync_channel::<Result<Piece, VerifyError>>(2);
    let mut prints = Fingerprints::default();
    let mut probes = Vec::new();
    let mut compare = |got: Window| -> Result<(), VerifyError> {
        match trail.next_expected()? {
            Some(want) if want == got => {
                probes.push(want.probe);
                Ok(())
            }
            Some(want) => Err(VerifyError::mismatch(want.index.min(got.index))),
            None => Err(VerifyError::mismatch(got.index)),
        }
    };
    thread::scope(|s| {
        s.spawn(|| {
            let read_all = || -> Result<(), VerifyError> {
                let io = |offset: u64| move |source: io::Error| VerifyError::Io { offset, source };
                for &(rs, re) in ranges {
                    let mut pos = rs;
                    while pos < re {
                        let needs = if sink.direct_reads() {
                            Needs::Written
                        } else {
                            Needs::Flushed
                        };
                        let Some(end) = trail.readable(pos, re.min(pos + step), needs)? else {
                            return Ok(());
                        };
                        // The target's holes (file targets) are stable below the writer: not read.
                        let extents = sink.data_extents(pos, end).map_err(io(pos))?;
                        for (ds, de) in extents.into_iter().chain(std::iter::once((end, end))) {
                            if ds > pos {
                                send(&tx, Piece::Zeros(pos, ds - pos))?;
                            }
                            pos = pos.max(ds);
                            if pos >= de {
                                continue;
                            }
                            let n = (de - pos) as usize;
                            if !sink.reads_direct(pos, n) {
                                trail.readable(pos, de, Needs::Flushed)?;
                            }
                            let mut buf = pool.take(&stopped).ok_or(VerifyError::Interrupted)?;
                            sink.read_back(&mut buf[..n], pos).map_err(io(pos))?;
                            send(&tx, Piece::Data(pos, buf, n))?;
                            pos = de;
                        }
                    }
                }
                Ok(())
            };
            if let Err(e) = read_all() {
                // The receiver may be gone already (it stopped first); then nobody needs the error.
                let _ = tx.send(Err(e));
            }
            drop(tx);
        });
        let mut consume = || -> Result<(), VerifyError> {
            for piece in rx.iter() {
                if interrupt::interrupted() {
                    return Err(VerifyError::Interrupted);
                }
                let n = match piece? {
                    Piece::Zeros(pos, len) => {
                        prints.update_zeros(pos, len);
                        len
                    }
                    Piece::Data(pos, buf, n) => {
                        prints.update(pos, &buf[..n]);
                        n as u64
                    }
                };
                for w in prints.take_done() {
                    compare(w)?;
                }
                trail.verified.fetch_add(n, Ordering::Relaxed);
            }
            Ok(())
        };
        let r = consume();
        if matches!(
            r,
            Err(VerifyError::Mismatch { .. } | VerifyError::Io { .. })
        ) {
            // Stops the writer (it need not finish a card that already failed) and the reader.
            trail.failed.store(true, Ordering::Relaxed);
            trail.changed.notify_all();
        }
        // Ends the reader early on a mismatch or interruption (it is waiting for a buffer, the
        // writer or the channel).
        stop.store(true, Ordering::Relaxed);
        drop(rx);
        r
    })?;
    for w in std::mem::take(&mut prints).finish() {
        compare(w)?;
    }
    // The writer fingerprinted more than was read back.
    if let Some(w) = trail.next_expected()? {
        return Err(VerifyError::mismatch(w.index));
    }
    Ok(probes)
}

/// Probes read at once: each is a small read whose cost is its latency, so several run in parallel.
const PROBE_READERS: usize = 4;

/// Re-reads each window's probe (after everything was written and flushed); reports the first
/// window (by offset) whose probe differs.
fn check_probes(sink: &Sink, probes: &[Probe], pool: &Pool) -> Result<(), VerifyError> {
    let check = |k: usize| -> Result<(), VerifyError> {
        let Some(mut buf) = pool.take(&interrupt::interrupted) else {
            return Err(VerifyError::Interrupted);
        };
        for p in probes.iter().skip(k).step_by(PROBE_READERS) {
            if interrupt::interrupted() {
                return Err(VerifyError::Interrupted);
            }
            let n = p.len as usize;
            sink.read_back(&mut buf[..n], p.offset)
                .map_err(|source| VerifyError::Io {
                    offset: p.offset,
                    source,
                })?;
            if crc32fast::hash(&buf[..n]) != p.crc {
                return Err(VerifyError::mismatch(p.offset / WINDOW));
            }
        }
        Ok(())
    };
    let results: Vec<Result<(), VerifyError>> = thread::scope(|s| {
        let handles: Vec<_> = (0..PROBE_READERS)
            .map(|k| s.spawn(move || check(k)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(VerifyError::Interrupted)))
            .collect()
    });
    // Each reader stops at its first bad probe: the lowest of those is the first bad window.
    let offset = |e: &VerifyError| match e {
        VerifyError::Mismatch { start, .. } => *start,
        VerifyError::Io { offset, .. } => *offset,
        VerifyError::Interrupted => u64::MAX,
    };
    match results
        .into_iter()
        .filter_map(Result::err)
        .min_by_key(|e| offset(e))
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Hands a piece to the verifying thread; fails when that thread has stopped.
fn send(tx: &SyncSender<Result<Piece, VerifyError>>, piece: Piece) -> Result<(), VerifyError> {
    tx.send(Ok(piece)).map_err(|_| VerifyError::Interrupted)
}

/// The image's bytes `[start, end)`, read again from the source (decoding from the start for
/// compressed sources). None if the source cannot be read twice (standard input).
pub fn source_bytes(
    spec: &SourceSpec,
    opts: DecodeOptions,
    start: u64,
    end: u64,
) -> Result<Option<Vec<u8>>, String> {
    if !spec.reopenable() {
        return Ok(None);
    }
    let src = source::open(spec, opts, &|_| {}).map_err(|e| e.to_string())?;
    let len = (end - start) as usize;
    let mut out = vec![0u8; len];
    let read_from = |r: &mut dyn Read, out: &mut Vec<u8>| -> io::Result<()> {
        io::copy(&mut r.take(start), &mut io::sink())?;
        let mut got = 0;
        while got < len {
            match r.read(&mut out[got..])? {
                0 => break,
                k => got += k,
            }
        }
        out.truncate(got);
        Ok(())
    };
    match src.input {
        Input::RawFile(f) => {
            use std::os::unix::fs::FileExt;
            let mut got = 0;
            while got < len {
                match f.read_at(&mut out[got..], start + got as u64) {
                    Ok(0) => break,
                    Ok(k) => got += k,
                    Err(e) => return Err(e.to_string()),
                }
            }
            out.truncate(got);
        }
        Input::Stream(mut r) => read_from(&mut *r, &mut out).map_err(|e| e.to_string())?,
        Input::XzBlocks { file, .. } => {
            let (mut r, _) =
                decompress::decoder(decompress::Format::Xz, Box::new(file), opts.max_window)
                    .map_err(|e| e.to_string())?;
            read_from(&mut *r, &mut out).map_err(|e| e.to_string())?;
        }
        Input::SevenZ { file, entry, .. } | Input::SevenZBlocks { file, entry, .. } => {
            decompress::sevenz_decode(file, &entry, opts.max_window, &mut |r| {
                read_from(r, &mut out)
            })
            .map_err(|e| e.to_string())?;
        }
    }
    Ok(Some(out))
}

/// Within a mismatching window: the first offset (inside `ranges`) where target and source differ,
/// with both bytes.
pub fn first_difference(
    sink: &Sink,
    ranges: &[(u64, u64)],
    window: (u64, u64),
    source: &[u8],
    pool: &Pool,
) -> Result<Option<(u64, u8, u8)>, io::Error> {
    let Some(mut buf) = pool.take(&|| false) else {
        return Ok(None);
    };
    let (ws, we) = window;
    sink.flush()?;
    for &(rs, re) in ranges {
        let (s, e) = (rs.max(ws), re.min(we));
        if s >= e {
            continue;
        }
        let n = (e - s) as usize;
        sink.read_back(&mut buf[..n], s)?;
        let got = &buf[..n];
        for (i, (&t, &w)) in got.iter().zip(&source[(s - ws) as usize..]).enumerate() {
            if t != w {
                return Ok(Some((s + i as u64, t, w)));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::super::buffers::AlignedBuf;
    use super::super::sink::Target;
    use super::*;
    use std::path::Path;

    #[test]
    fn fingerprints_do_not_depend_on_how_data_is_cut() {
        let data: Vec<u8> = (0..3 * WINDOW + 5000)
            .map(|i| (i * 7 % 256) as u8)
            .collect();
        let mut a = Fingerprints::default();
        a.update(100, &data);
        let mut b = Fingerprints::default();
        for (i, c) in data.chunks(777_777).enumerate() {
            b.update(100 + i as u64 * 777_777, c);
        }
        let (a, b) = (a.finish(), b.finish());
        assert_eq!(a, b);
        assert_eq!(a.len(), 4);
        // Each window's probe is its first 4 KiB.
        assert_eq!(a[0].probe.offset, 100);
        assert_eq!(a[1].probe.offset, WINDOW);
        assert_eq!(a[1].probe.len as u64, PROBE);
        let w1 = (WINDOW - 100) as usize;
        assert_eq!(
            a[1].probe.crc,
            crc32fast::hash(&data[w1..w1 + PROBE as usize])
        );
        let mut z = Fingerprints::default();
        z.update_zeros(0, 2 * WINDOW);
        let mut zz = Fingerprints::default();
        zz.update(0, &vec![0u8; 2 * WINDOW as usize]);
        assert_eq!(z.finish(), zz.finish());
    }

    #[test]
    fn a_probe_stops_at_the_first_gap() {
        let mut f = Fingerprints::default();
        f.update(1000, &[1u8; 10]);
        f.update(5000, &[2u8; 10]);
        let w = f.finish();
        assert_eq!(w.len(), 1);
        assert_eq!(
            w[0].probe,
            Probe {
                offset: 1000,
                len: 10,
                crc: crc32fast::hash(&[1u8; 10])
            }
        );
    }

    /// What a test writer does to the target besides writing the image.
    enum Fault {
        None,
        /// Writes wrong bytes at this offset (fingerprinting the right ones).
        Lie(u64),
        /// After the read-back has passed window 1, overwrites its first bytes, as a card that maps
        /// two addresses to one cell does when a later write lands on it.
        Alias,
    }

    /// Writes a 4 MiB + 12345 byte image behind `HEAD` into a file in `dir` the way the writer
    /// does, with the verifier following, and returns the verifier's verdict.
    fn write_and_read_back(dir: &Path, fault: Fault) -> Result<u64, VerifyError> {
        const HEAD: u64 = 65536;
        let path = dir.join("target.img");
        let target = Target::open(&path, false).unwrap();
        let len = 4 * WINDOW + 12345;
        let image: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let sink = target.open_sink(len).unwrap();
        let pool = Pool::new(4, WINDOW as usize);
        let trail = Trail::default();
        let ranges = [(HEAD, u64::MAX)];
        let mut buf = AlignedBuf::new(WINDOW as usize);
        let result = thread::scope(|s| {
            let verifier = s.spawn(|| read_back(&sink, &ranges, &trail, &pool));
            let mut prints = Fingerprints::default();
            let mut pos = HEAD;
            while pos < len {
                let end = ((pos / WINDOW + 1) * WINDOW).min(len);
                let n = (end - pos) as usize;
                buf[..n].copy_from_slice(&image[pos as usize..end as usize]);
                prints.update(pos, &buf[..n]);
                if let Fault::Lie(at) = fault
                    && (pos..end).contains(&at)
                {
                    buf[(at - pos) as usize] ^= 0xff;
                }
                sink.write_at(&buf[..n], pos).unwrap();
                pos = end;
                trail.advance(pos, &mut prints);
                if matches!(fault, Fault::Alias) && pos == 3 * WINDOW && sink.direct_reads() {
                    while trail.verified() < 2 * WINDOW - HEAD {
                        thread::sleep(Duration::from_millis(5));
                    }
                    let at = WINDOW;
                    buf[..4096].copy_from_slice(&image[(3 * WINDOW) as usize..][..4096]);
                    sink.write_at(&buf[..4096], at).unwrap();
                }
            }
            trail.last_windows(prints);
            trail.finish(len);
            sink.flush().unwrap();
            trail.flushed();
            verifier.join().unwrap()
        });
        std::fs::remove_file(&path).unwrap();
        result
    }

    /// Directories to test in: one whose filesystem takes O_DIRECT (the crate's) and a tmpfs one,
    /// which does not (then everything is read back after the flush).
    fn dirs() -> Vec<tempfile::TempDir> {
        let mut v = vec![tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap()];
        if Path::new("/dev/shm").is_dir() {
            v.push(tempfile::tempdir_in("/dev/shm").unwrap());
        }
        v
    }

    #[test]
    fn the_read_back_follows_the_writer_and_matches() {
        for d in dirs() {
            let n = write_and_read_back(d.path(), Fault::None).unwrap();
            assert_eq!(n, 4 * WINDOW + 12345 - 65536, "in {}", d.path().display());
        }
    }

    #[test]
    fn a_lying_target_is_caught_in_its_window() {
        for d in dirs() {
            let at = 3 * WINDOW + 777;
            match write_and_read_back(d.path(), Fault::Lie(at)) {
                Err(VerifyError::Mismatch { start, end }) => {
                    assert_eq!((start, end), (3 * WINDOW, 4 * WINDOW));
                }
                other => panic!("{other:?} in {}", d.path().display()),
            }
        }
    }

    #[test]
    fn an_aliasing_card_is_caught_by_the_probes() {
        let d = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        match write_and_read_back(d.path(), Fault::Alias) {
            Err(VerifyError::Mismatch { start, .. }) => assert_eq!(start, WINDOW),
            other => panic!("{other:?}"),
        }
    }
}
