//! xz decoding. A seekable file with several blocks is decoded block-parallel: each thread decodes
//! whole blocks (found through the index at the end of the file) straight into pool buffers, and
//! the blocks are put back in order. Memory is one LZMA2 dictionary per thread plus the pool —
//! liblzma's own threaded decoder instead keeps each block's whole output in memory (about 100 MB
//! for two threads on `xz -6` files). Streams (stdin, HTTP) and single-block files are decoded by
//! one thread, concatenated streams one after another, as `xz -d` does.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use liblzma::stream::{Action, Filters, Stream};

use super::buffers::{Pool, PoolBuf};
use crate::codec::xz_stream_decoder as stream_decoder;

/// A raw LZMA2 decoder (no container) for the coder properties `props`.
fn lzma2_decoder(props: u8) -> io::Result<Stream> {
    let mut filters = Filters::new();
    filters
        .lzma2_properties(&[props])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Stream::new_raw_decoder(&filters).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// One block of a seekable .xz file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XzBlock {
    /// Offset of the block header in the file.
    pub offset: u64,
    /// Bytes on disk: header, data, padding and check.
    pub total: u64,
    pub uncompressed: u64,
    pub codec: BlockCodec,
}

/// How a block's bytes are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockCodec {
    /// An .xz block; the stream header (12 bytes) of the stream it belongs to is fed first.
    Xz { stream_header: [u8; 12] },
    /// A run of raw LZMA2 chunks that starts with a dictionary reset (inside a 7z archive), with the
    /// coder's one-byte LZMA2 properties (the dictionary size).
    Lzma2 { props: u8 },
}

/// What the index(es) at the end of a seekable .xz file say.
#[derive(Debug, Clone, Default)]
pub struct XzIndex {
    pub blocks: Vec<XzBlock>,
    pub uncompressed: u64,
}

fn read_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..9 {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Reads the index of every stream from the end of `file`. None if the file is not a complete,
/// consistent .xz file read this way (the streaming decoder then reports what is wrong).
pub fn index(file: &File) -> Option<XzIndex> {
    let mut end = file.metadata().ok()?.len();
    let read = |off: u64, len: usize| -> Option<Vec<u8>> {
        let mut b = vec![0u8; len];
        file.read_exact_at(&mut b, off).ok()?;
        Some(b)
    };
    let mut streams: Vec<Vec<XzBlock>> = Vec::new();
    let mut total = 0u64;
    while end > 0 {
        if streams.len() > 100_000 {
            return None;
        }
        // Stream padding: zero bytes in multiples of four.
        while read(end.checked_sub(4)?, 4)? == [0, 0, 0, 0] {
            end -= 4;
        }
        let footer = read(end.checked_sub(12)?, 12)?;
        if &footer[10..12] != b"YZ"
            || crc32fast::hash(&footer[4..10]) != u32::from_le_bytes(footer[0..4].try_into().ok()?)
        {
            return None;
        }
        let backward = (u64::from(u32::from_le_bytes(footer[4..8].try_into().ok()?)) + 1) * 4;
        if backward > 1 << 30 {
            return None;
        }
        let index_start = end.checked_sub(12 + backward)?;
        let index = read(index_start, backward as usize)?;
        let (body, crc) = index.split_at(index.len() - 4);
        if index.first() != Some(&0)
            || crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?)
        {
            return None;
        }
        let mut pos = 1;
        let records = read_varint(&index, &mut pos)?;
        if records > 1 << 24 {
            return None;
        }
        let mut sizes = Vec::with_capacity(records as usize);
        let mut blocks_size = 0u64;
        for _ in 0..records {
            let unpadded = read_varint(&index, &mut pos)?;
            let uncompressed = read_varint(&index, &mut pos)?;
            let padded = unpadded.checked_next_multiple_of(4)?;
            blocks_size = blocks_size.checked_add(padded)?;
            total = total.checked_add(uncompressed)?;
            sizes.push((padded, uncompressed));
        }
        let stream_start = index_start.checked_sub(blocks_size)?.checked_sub(12)?;
        let header = read(stream_start, 12)?;
        // Magic, and the same stream flags in header and footer.
        if header[0..6] != [0xfd, b'7', b'z', b'X', b'Z', 0] || header[6..8] != footer[8..10] {
            return None;
        }
        let stream_header: [u8; 12] = header.try_into().ok()?;
        let mut off = stream_start + 12;
        let mut blocks = Vec::with_capacity(sizes.len());
        for (padded, uncompressed) in sizes {
            blocks.push(XzBlock {
                offset: off,
                total: padded,
                uncompressed,
                codec: BlockCodec::Xz { stream_header },
            });
            off += padded;
        }
        streams.push(blocks);
        end = stream_start;
    }
    streams.reverse();
    Some(XzIndex {
        blocks: streams.into_iter().flatten().collect(),
        uncompressed: total,
    })
}

enum Msg {
    Data(usize, PoolBuf, usize),
    Done(usize),
    Fail(String),
}

/// Buffers kept free for the block the consumers wait for.
const RESERVE: usize = 2;
/// Compressed input read per step.
const IN_STEP: usize = 256 << 10;

/// Decodes block `i` into pool buffers sent as `Msg::Data`.
#[allow(clippy::too_many_arguments)]
fn decode_block(
    file: &File,
    blocks: &[XzBlock],
    i: usize,
    image_offset: u64,
    pool: &Pool,
    next: &AtomicUsize,
    quit: &(dyn Fn() -> bool + Sync),
    tx: &mpsc::Sender<Msg>,
) -> Result<bool, String> {
    let b = &blocks[i];
    let mut inbuf = vec![0u8; IN_STEP];
    let (stream, prefix, kind) = match &b.codec {
        BlockCodec::Xz { stream_header } => (stream_decoder(), &stream_header[..], "xz block"),
        BlockCodec::Lzma2 { props } => (lzma2_decoder(*props), &[][..], "7z LZMA2 segment"),
    };
    let mut stream = stream.map_err(|e| e.to_string())?;
    inbuf[..prefix.len()].copy_from_slice(prefix);
    let (mut in_pos, mut in_len) = (0usize, prefix.len());
    let (mut src, src_end) = (b.offset, b.offset + b.total);
    let mut out: Option<(PoolBuf, usize)> = None;
    let mut idle = 0u32;
    let reserve = || {
        if next.load(Ordering::SeqCst) == i {
            0
        } else {
            RESERVE
        }
    };
    let here = |stream: &Stream| {
        format!(
            "{kind} {} (compressed bytes {}..{}, image bytes {}..{}), near image byte {}",
            i + 1,
            b.offset,
            src_end,
            image_offset,
            image_offset + b.uncompressed,
            image_offset + stream.total_out()
        )
    };
    loop {
        if quit() {
            return Ok(false);
        }
        if in_pos == in_len && src < src_end {
            let n = (src_end - src).min(IN_STEP as u64) as usize;
            file.read_exact_at(&mut inbuf[..n], src)
                .map_err(|e| format!("reading {}: {e}", here(&stream)))?;
            src += n as u64;
            in_pos = 0;
            in_len = n;
        }
        if out.is_none() {
            let Some(buf) = pool.take_reserving(quit, &reserve) else {
                return Ok(false);
            };
            out = Some((buf, 0));
        }
        let Some((buf, fill)) = out.as_mut() else {
            return Ok(false);
        };
        let (in_before, out_before) = (stream.total_in(), stream.total_out());
        stream
            .process(&inbuf[in_pos..in_len], &mut buf[*fill..], Action::Run)
            .map_err(|e| format!("corrupt data in {}: {e}", here(&stream)))?;
        let consumed = (stream.total_in() - in_before) as usize;
        let produced = (stream.total_out() - out_before) as usize;
        in_pos += consumed;
        *fill += produced;
        if stream.total_out() > b.uncompressed {
            return Err(format!(
                "{} holds more data than the index says",
                here(&stream)
            ));
        }
        if *fill == buf.len()
            && let Some((buf, fill)) = out.take()
            && tx.send(Msg::Data(i, buf, fill)).is_err()
        {
            return Ok(false);
        }
        if produced == 0 && consumed == 0 {
            if in_pos == in_len && src == src_end {
                break;
            }
            idle += 1;
            if idle > 3 {
                return Err(format!(
                    "the decoder stopped making progress in {}",
                    here(&stream)
                ));
            }
        } else {
            idle = 0;
        }
    }
    if let Some((buf, fill)) = out.take()
        && fill > 0
        && tx.send(Msg::Data(i, buf, fill)).is_err()
    {
        return Ok(false);
    }
    if stream.total_out() != b.uncompressed {
        return Err(format!(
            "{} ends after {} of its {} bytes",
            here(&stream),
            stream.total_out(),
            b.uncompressed
        ));
    }
    Ok(true)
}

/// Decodes all blocks of `file` on `threads` threads, handing the buffers to `deliver` in image
/// order (`deliver` returns false to stop). Returns the image length.
pub fn decode_parallel(
    file: &File,
    index: &XzIndex,
    threads: usize,
    pool: &Pool,
    stop: &(dyn Fn() -> bool + Sync),
    deliver: &mut dyn FnMut(PoolBuf, usize) -> bool,
) -> io::Result<u64> {
    let blocks = &index.blocks;
    let n = blocks.len();
    let starts: Vec<u64> = blocks
        .iter()
        .scan(0u64, |acc, b| {
            let s = *acc;
            *acc += b.uncompressed;
            Some(s)
        })
        .collect();
    let next = AtomicUsize::new(0);
    let claim = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let quit = || failed.load(Ordering::SeqCst) || stop();
    let (tx, rx) = mpsc::channel::<Msg>();
    thread::scope(|s| {
        for t in 0..threads.clamp(1, n.max(1)) {
            let tx = tx.clone();
            let (next, claim, quit, starts) = (&next, &claim, &quit, &starts);
            let _ = thread::Builder::new()
                .name(format!("boardsmith-xz{t}"))
                .spawn_scoped(s, move || {
                    loop {
                        let i = claim.fetch_add(1, Ordering::SeqCst);
                        if i >= n {
                            return;
                        }
                        match decode_block(file, blocks, i, starts[i], pool, next, quit, &tx) {
                            Ok(true) => {
                                if tx.send(Msg::Done(i)).is_err() {
                                    return;
                                }
                            }
                            Ok(false) => return,
                            Err(e) => {
                                let _ = tx.send(Msg::Fail(e));
                                return;
                            }
                        }
                    }
                });
        }
        drop(tx);
        let mut pending: BTreeMap<usize, (VecDeque<(PoolBuf, usize)>, bool)> = BTreeMap::new();
        let mut head = 0usize;
        let mut total = 0u64;
        let result = loop {
            // Hand over everything of the head block that is ready.
            while let Some((queue, done)) = pending.get_mut(&head) {
                while let Some((buf, len)) = queue.pop_front() {
                    total += len as u64;
                    if !deliver(buf, len) {
                        failed.store(true, Ordering::SeqCst);
                        return Err(io::Error::new(io::ErrorKind::Interrupted, "stopped"));
                    }
                }
                if !*done {
                    break;
                }
                pending.remove(&head);
                head += 1;
                next.store(head, Ordering::SeqCst);
            }
            if head == n {
                break Ok(total);
            }
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Msg::Data(i, buf, len)) => pending.entry(i).or_default().0.push_back((buf, len)),
                Ok(Msg::Done(i)) => pending.entry(i).or_default().1 = true,
                Ok(Msg::Fail(e)) => break Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if stop() {
                        break Err(io::Error::new(io::ErrorKind::Interrupted, "stopped"));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Err(io::Error::other("the xz decoder threads stopped early"));
                }
            }
        };
        failed.store(true, Ordering::SeqCst);
        // Buffers held here go back to the pool so waiting workers can finish.
        drop(pending);
        drop(rx);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use liblzma::stream::MtStreamBuilder;
    use std::io::{Read, Write};

    fn encode(data: &[u8], block: u64) -> Vec<u8> {
        let mut out = Vec::new();
        liblzma::read::XzEncoder::new_stream(
            data,
            MtStreamBuilder::new()
                .threads(2)
                .block_size(block)
                .preset(1)
                .encoder()
                .unwrap(),
        )
        .read_to_end(&mut out)
        .unwrap();
        out
    }

    #[test]
    fn parallel_decoding_matches_and_finds_corruption() {
        let data: Vec<u8> = (0..5_000_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
            .collect();
        let mut xz = encode(&data[..3_000_000], 1 << 20);
        xz.extend(encode(&data[3_000_000..], 1 << 20));
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&xz).unwrap();
        let idx = index(&f).unwrap();
        assert_eq!(idx.uncompressed, 5_000_000);
        assert_eq!(idx.blocks.len(), 5);
        let pool = Pool::new(6, 256 << 10);
        let mut got = Vec::new();
        let n = decode_parallel(&f, &idx, 2, &pool, &|| false, &mut |b, len| {
            got.extend_from_slice(&b[..len]);
            true
        })
        .unwrap();
        assert_eq!(n, 5_000_000);
        assert!(got == data);

        // Flip a byte inside the third block's data.
        let at = idx.blocks[2].offset + idx.blocks[2].total / 2;
        let mut bad = xz.clone();
        bad[at as usize] ^= 0x55;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&bad).unwrap();
        let idx = index(&f).unwrap();
        let e = decode_parallel(&f, &idx, 2, &pool, &|| false, &mut |_, _| true).unwrap_err();
        assert!(e.to_string().contains("xz block 3"), "{e}");
        // The index of a truncated file is not trusted.
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&xz[..xz.len() - 3]).unwrap();
        assert!(index(&f).is_none());
    }
}
