//! Read-back verification. While writing, the writer records a CRC-32 of every 1 MiB window of what
//! it meant the target to hold (a fixed 4 bytes per MiB, whatever the image size). Verify reads the
//! same ranges back with the page cache bypassed and compares window by window; for the first
//! window that differs it re-reads the source to name the first bad byte.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread;

use super::buffers::{Pool, PoolBuf, ZEROS, ZEROS_LEN};
use super::decompress;
use super::interrupt;
use super::progress::{Event, Observer, Phase, Throttle};
use super::sink::Sink;
use super::source::{self, DecodeOptions, Input, SourceSpec};

/// Bytes per fingerprint window.
pub const WINDOW: u64 = 1 << 20;

/// CRC-32 per window of the bytes fed, in offset order.
#[derive(Default)]
pub struct Fingerprints {
    done: Vec<(u64, u32)>,
    cur: Option<(u64, crc32fast::Hasher)>,
}

impl Fingerprints {
    /// Feeds `data` found at `offset` (calls come in increasing offset order).
    pub fn update(&mut self, mut offset: u64, mut data: &[u8]) {
        while !data.is_empty() {
            let w = offset / WINDOW;
            if self.cur.as_ref().is_none_or(|(cw, _)| *cw != w) {
                if let Some((cw, h)) = self.cur.take() {
                    self.done.push((cw, h.finalize()));
                }
                self.cur = Some((w, crc32fast::Hasher::new()));
            }
            let n = ((w + 1) * WINDOW - offset).min(data.len() as u64) as usize;
            if let Some((_, h)) = self.cur.as_mut() {
                h.update(&data[..n]);
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
    fn take_done(&mut self) -> std::vec::Drain<'_, (u64, u32)> {
        self.done.drain(..)
    }

    pub fn finish(mut self) -> Vec<(u64, u32)> {
        if let Some((w, h)) = self.cur.take() {
            self.done.push((w, h.finalize()));
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
    Interrupted,
}

/// One step of the read-back, in offset order: bytes read from the target, or a hole that reads as zeros.
enum Piece {
    Data(u64, PoolBuf, usize),
    Zeros(u64, u64),
}

/// Reads `ranges` back from the target (flushed before) and compares them with `expected`.
///
/// A reader thread keeps the next reads in flight (one per free buffer of `pool`) while this thread
/// fingerprints what arrived, so the disk never waits for the CRC.
pub fn verify(
    sink: &Sink,
    ranges: &[(u64, u64)],
    expected: &[(u64, u32)],
    pool: &Pool,
    obs: Observer<'_>,
) -> Result<u64, VerifyError> {
    let total: u64 = ranges.iter().map(|(s, e)| e - s).sum();
    obs(Event::Phase {
        phase: Phase::Verify,
        total: Some(total),
    });
    let mut prints = Fingerprints::default();
    let mut want = expected.iter();
    let mut check = |prints: &mut Fingerprints| -> Result<(), VerifyError> {
        for (w, crc) in prints.take_done() {
            match want.next() {
                Some(&(ew, ecrc)) if ew == w && ecrc == crc => {}
                _ => {
                    return Err(VerifyError::Mismatch {
                        start: w * WINDOW,
                        end: (w + 1) * WINDOW,
                    });
                }
            }
        }
        Ok(())
    };
    let stop = AtomicBool::new(false);
    let stopped = || stop.load(Ordering::Relaxed) || interrupt::interrupted();
    let (tx, rx) = sync_channel::<Result<Piece, VerifyError>>(pool.count());
    let mut done = 0u64;
    let result = thread::scope(|s| {
        s.spawn(|| {
            let read_all = || -> Result<(), VerifyError> {
                for &(rs, re) in ranges {
                    let extents = sink.data_extents(rs, re).map_err(|e| VerifyError::Io {
                        offset: rs,
                        source: e,
                    })?;
                    let mut pos = rs;
                    for (ds, de) in extents.into_iter().chain(std::iter::once((re, re))) {
                        if ds > pos {
                            send(&tx, Piece::Zeros(pos, ds - pos))?;
                        }
                        pos = pos.max(ds);
                        while pos < de {
                            let mut buf = pool.take(&stopped).ok_or(VerifyError::Interrupted)?;
                            let n = (de - pos).min(buf.len() as u64) as usize;
                            sink.read_back(&mut buf[..n], pos)
                                .map_err(|e| VerifyError::Io {
                                    offset: pos,
                                    source: e,
                                })?;
                            send(&tx, Piece::Data(pos, buf, n))?;
                            pos += n as u64;
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
        let mut throttle = Throttle::new(std::time::Duration::from_millis(200));
        let mut consume = || -> Result<(), VerifyError> {
            for piece in rx.iter() {
                if interrupt::interrupted() {
                    return Err(VerifyError::Interrupted);
                }
                match piece? {
                    Piece::Zeros(pos, len) => {
                        prints.update_zeros(pos, len);
                        done += len;
                    }
                    Piece::Data(pos, buf, n) => {
                        prints.update(pos, &buf[..n]);
                        done += n as u64;
                    }
                }
                check(&mut prints)?;
                if throttle.due() {
                    obs(Event::Progress(super::progress::Counters {
                        done,
                        written: 0,
                        skipped: 0,
                    }));
                }
            }
            Ok(())
        };
        let r = consume();
        // Ends the reader early on a mismatch or interruption (it is waiting for a buffer or the channel).
        stop.store(true, Ordering::Relaxed);
        drop(rx);
        r
    });
    result?;
    let last = prints.finish();
    let mut tail = Fingerprints {
        done: last,
        cur: None,
    };
    check(&mut tail)?;
    if let Some(&(w, _)) = want.next() {
        return Err(VerifyError::Mismatch {
            start: w * WINDOW,
            end: (w + 1) * WINDOW,
        });
    }
    obs(Event::Progress(super::progress::Counters {
        done,
        written: 0,
        skipped: 0,
    }));
    Ok(done)
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
            let mut r = decompress::decoder(decompress::Format::Xz, Box::new(file))
                .map_err(|e| e.to_string())?;
            read_from(&mut *r, &mut out).map_err(|e| e.to_string())?;
        }
        Input::SevenZ { file, entry } | Input::SevenZBlocks { file, entry, .. } => {
            decompress::sevenz_decode(file, &entry, &mut |r| read_from(r, &mut out))
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
    use super::*;

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
        let mut z = Fingerprints::default();
        z.update_zeros(0, 2 * WINDOW);
        let mut zz = Fingerprints::default();
        zz.update(0, &vec![0u8; 2 * WINDOW as usize]);
        assert_eq!(z.finish(), zz.finish());
    }
}
