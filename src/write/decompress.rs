//! Compressed image formats: recognised by their magic bytes, decoded as streams (`crate::codec`, shared
//! with `rootfs`). xz decodes on
//! several threads when the file has several blocks (liblzma's threaded decoder); gzip, zstd and
//! bzip2 streams may be concatenated; 7z needs random access and is read entry by entry.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};

pub use crate::codec::{
    DEFAULT_MAX_WINDOW, Format, IN_BUF, MAX_MAX_WINDOW, MIN_MAX_WINDOW, WindowLimit,
    WindowTooLarge, decoder, zstd_window,
};

/// Counts the compressed bytes consumed, so errors can say where in the file they happened.
pub struct Counted<R> {
    inner: R,
    pub count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R> Counted<R> {
    pub fn new(inner: R) -> Counted<R> {
        Counted {
            inner,
            count: Default::default(),
        }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// The content size the first zstd frame header declares (a lower bound for the whole stream,
/// which may hold more frames).
pub fn zstd_first_frame_size(header: &[u8]) -> Option<u64> {
    zstd::zstd_safe::get_frame_content_size(header)
        .ok()
        .flatten()
}

/// Memory for reading a 7z archive's headers (the file list; 7-Zip compresses it with a small
/// LZMA dictionary). An image archive's headers take a few hundred bytes.
const SEVENZ_HEADER_LIMIT: u64 = 16 << 20;

/// Reads a 7z archive's headers, within [`SEVENZ_HEADER_LIMIT`] of memory.
pub fn sevenz_archive(file: &mut File) -> Result<sevenz_rust2::Archive, String> {
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    sevenz_rust2::Archive::read_with_memory_limit(
        file,
        &sevenz_rust2::Password::empty(),
        (SEVENZ_HEADER_LIMIT / 1024) as usize,
    )
    .map_err(|e| format!("cannot read the 7z archive: {e}"))
}

/// The single file entry of a 7z archive that holds the image: (name, size).
pub fn sevenz_entry(archive: &sevenz_rust2::Archive) -> Result<(String, u64), String> {
    let files: Vec<&sevenz_rust2::ArchiveEntry> = archive
        .files
        .iter()
        .filter(|f| f.has_stream && !f.is_directory)
        .collect();
    match files.as_slice() {
        [one] => Ok((one.name.clone(), one.size)),
        [] => Err("the 7z archive holds no file".into()),
        many => {
            let imgs: Vec<&&sevenz_rust2::ArchiveEntry> =
                many.iter().filter(|f| f.name.ends_with(".img")).collect();
            if let [one] = imgs.as_slice() {
                Ok((one.name.clone(), one.size))
            } else {
                Err(format!(
                    "the 7z archive holds {} files ({}); boardsmith writes archives holding one image",
                    many.len(),
                    many.iter()
                        .take(5)
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
    }
}

/// LZMA method id in 7z coder records (its properties: a byte, then the dictionary size).
const SEVENZ_LZMA: &[u8] = &[0x03, 0x01, 0x01];

/// The largest dictionary the archive's LZMA and LZMA2 coders declare (0 when none).
pub fn sevenz_dict(archive: &sevenz_rust2::Archive) -> u64 {
    archive
        .blocks
        .iter()
        .flat_map(|b| b.coders.iter())
        .filter_map(|c| {
            let props = c.properties();
            match c.encoder_method_id() {
                SEVENZ_LZMA2 => super::xz::lzma2_dict(*props.first()?),
                SEVENZ_LZMA => Some(u64::from(u32::from_le_bytes(
                    props.get(1..5)?.try_into().ok()?,
                ))),
                _ => None,
            }
        })
        .max()
        .unwrap_or(0)
}

/// LZMA2 method id in 7z coder records.
const SEVENZ_LZMA2: &[u8] = &[0x21];
/// Unpacked bytes gathered into one unit of parallel work (several dictionary-reset segments).
const LZMA2_UNIT: u64 = 8 << 20;
/// Dictionary memory the parallel decoders (xz blocks, 7z LZMA2 segments) may touch together: as
/// many threads decode as fit (2 × 8 MiB for `xz -6`), else one. With the 32 MiB pool and the
/// program (about 42 MB together) this keeps the writer under 64 MiB.
pub const DICT_BUDGET: u64 = 20 << 20;

/// A 7z archive whose image is one LZMA2 stream with dictionary resets (what 7-Zip and boardsmith
/// write with several threads), cut at those resets into units that decode independently.
pub struct SevenZBlocks {
    pub index: super::xz::XzIndex,
    /// Threads to decode on (those whose dictionaries fit [`DICT_BUDGET`]).
    pub threads: u64,
    /// CRC-32 of the unpacked entry, when the archive records it.
    pub crc32: Option<u32>,
}

/// Plans block-parallel decoding of `entry` (of `size` bytes) in the 7z archive `file`: None when the
/// archive is not the simple case (one block, one LZMA2 coder, one packed stream), has no reset to
/// cut at, or its units would need more dictionary memory than the budget for `threads`.
pub fn sevenz_blocks(
    archive: &sevenz_rust2::Archive,
    file: &(impl super::xz::ReadAt + ?Sized),
    entry: &str,
    size: u64,
    threads: u64,
) -> Option<SevenZBlocks> {
    let [block] = archive.blocks.as_slice() else {
        return None;
    };
    let [coder] = block.coders.as_slice() else {
        return None;
    };
    let [pack_size] = archive.pack_sizes() else {
        return None;
    };
    let &[props] = coder.properties() else {
        return None;
    };
    if coder.encoder_method_id() != SEVENZ_LZMA2 || block.get_unpack_size() != size || props > 40 {
        return None;
    }
    let e = archive
        .files
        .iter()
        .find(|f| f.name == entry && f.has_stream)?;
    let crc32 = if e.has_crc {
        u32::try_from(e.crc).ok()
    } else if block.has_crc {
        u32::try_from(block.crc).ok()
    } else {
        None
    };
    // The packed stream starts after the 32-byte signature header.
    let start = 32u64.checked_add(archive.pack_pos())?;
    let end = start.checked_add(*pack_size)?;
    let dict = super::xz::lzma2_dict(props)?;
    let blocks = lzma2_units(file, start, end, size, props)?;
    let largest = blocks.iter().map(|b| b.uncompressed).max()?;
    let threads = super::xz::threads_within(threads, blocks.len(), dict.min(largest), DICT_BUDGET);
    if threads < 2 {
        return None;
    }
    Some(SevenZBlocks {
        threads,
        index: super::xz::XzIndex {
            blocks,
            uncompressed: size,
        },
        crc32,
    })
}

/// Most LZMA2 chunks walked: a chunk holds up to 64 KiB of packed data or 2 MiB of output, so this
/// covers 256 GiB of incompressible image. A longer stream decodes on one thread.
const MAX_CHUNKS: u64 = 1 << 22;

/// Walks the LZMA2 chunk headers in `[start, end)` (each gives its packed and unpacked size, so no data
/// is decoded) and groups the chunks into units of about [`LZMA2_UNIT`] that begin at a dictionary reset.
/// None when the chunks do not add up to `size`, or there are more than [`MAX_CHUNKS`] chunks or
/// [`super::xz::MAX_BLOCKS`] units: time and memory stay bounded whatever the headers say.
pub fn lzma2_units(
    file: &(impl super::xz::ReadAt + ?Sized),
    start: u64,
    end: u64,
    size: u64,
    props: u8,
) -> Option<Vec<super::xz::XzBlock>> {
    use super::xz::{BlockCodec, XzBlock};
    let mut units: Vec<XzBlock> = Vec::new();
    let (mut pos, mut unpacked) = (start, 0u64);
    let mut head = [0u8; 6];
    let mut chunks = 0u64;
    loop {
        chunks += 1;
        if pos >= end || chunks > MAX_CHUNKS {
            return None; // no end marker, or too many chunks
        }
        let n = (end - pos).min(6) as usize;
        file.pread_exact(&mut head[..n], pos).ok()?;
        let c = head[0];
        let (header, packed, out, reset) = match c {
            0 => break,
            1 | 2 if n >= 3 => {
                let len = (u64::from(head[1]) << 8 | u64::from(head[2])) + 1;
                (3, len, len, c == 1)
            }
            0x80..=0xff if n >= 5 => {
                let out =
                    (u64::from(c & 0x1f) << 16 | u64::from(head[1]) << 8 | u64::from(head[2])) + 1;
                let packed = (u64::from(head[3]) << 8 | u64::from(head[4])) + 1;
                let mode = (c >> 5) & 3;
                (if mode >= 2 { 6 } else { 5 }, packed, out, mode == 3)
            }
            _ => return None,
        };
        let chunk_end = pos.checked_add(header + packed)?;
        if chunk_end > end {
            return None;
        }
        let full = units.len() >= super::xz::MAX_BLOCKS;
        match units.last_mut() {
            // A new unit begins at a reset once the current one is big enough.
            Some(u) if !reset || u.uncompressed < LZMA2_UNIT => {
                u.total += header + packed;
                u.uncompressed += out;
            }
            // The stream must open with a dictionary reset.
            None if !reset => return None,
            _ if full => return None,
            _ => units.push(XzBlock {
                offset: pos,
                total: header + packed,
                uncompressed: out,
                codec: BlockCodec::Lzma2 { props },
            }),
        }
        unpacked = unpacked.checked_add(out)?;
        pos = chunk_end;
    }
    (unpacked == size).then_some(units)
}

/// Decodes entry `name` of the 7z archive in `file`, handing its data to `each` in order.
/// Single-threaded: sevenz-rust2's threaded mode buffers whole blocks in memory.
/// `max_window` bounds the decoders' memory (their dictionaries, checked by [`sevenz_dict`] before).
pub fn sevenz_decode(
    file: File,
    name: &str,
    max_window: WindowLimit,
    each: &mut dyn FnMut(&mut dyn Read) -> io::Result<()>,
) -> io::Result<()> {
    let mut reader = sevenz_rust2::ArchiveReader::new_with_memory_limit(
        BufReader::with_capacity(IN_BUF, file),
        sevenz_rust2::Password::empty(),
        (max_window
            .bytes
            .max(SEVENZ_HEADER_LIMIT)
            .saturating_add(2 << 20)
            / 1024) as usize,
    )
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    reader.set_thread_count(1);
    let mut failure: Option<io::Error> = None;
    let mut found = false;
    let r = reader.for_each_entries(|entry, data| {
        if entry.name == name && !entry.is_directory {
            found = true;
            if let Err(e) = each(data) {
                let msg = e.to_string();
                failure = Some(e);
                return Err(sevenz_rust2::Error::Other(msg.into()));
            }
        }
        Ok(true)
    });
    if let Some(e) = failure {
        return Err(e);
    }
    r.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("corrupt 7z data: {e}")))?;
    if !found {
        return Err(io::Error::other(format!(
            "entry {name} not found in the 7z archive"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunk headers that add up to far more than a stream could hold, or a walk without end: the
    /// walker gives up (None) within its bounds.
    #[test]
    fn lzma2_walk_is_bounded() {
        // An LZMA chunk with a dictionary reset (6-byte header), 2 MiB of output from 1 packed
        // byte, repeated.
        let chunk = [0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x5d];
        let mut data: Vec<u8> = chunk.iter().copied().cycle().take(7 * 300_000).collect();
        // No end marker.
        assert!(lzma2_units(&data[..], 0, data.len() as u64, 300_000 << 21, 22).is_none());
        // Consistent, but 75,000 units of 8 MiB: more than MAX_BLOCKS are not kept.
        data.push(0);
        assert!(lzma2_units(&data[..], 0, data.len() as u64, 300_000 << 21, 22).is_none());
        let fewer = [&data[..7 * 200_000], &[0][..]].concat();
        assert_eq!(
            lzma2_units(&fewer[..], 0, fewer.len() as u64, 200_000 << 21, 22)
                .unwrap()
                .len(),
            50_000
        );
        let mut ended = data[..7 * 10].to_vec();
        ended.push(0);
        let units = lzma2_units(&ended[..], 0, ended.len() as u64, 10 * (2 << 20), 22).unwrap();
        assert_eq!(units.len(), 3);
        assert_eq!(
            units.iter().map(|u| u.uncompressed).sum::<u64>(),
            10 * (2 << 20)
        );
    }
}
