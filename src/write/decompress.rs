//! Compressed image formats: recognised by their magic bytes, decoded as streams (`crate::codec`, shared
//! with `rootfs`). xz decodes on
//! several threads when the file has several blocks (liblzma's threaded decoder); gzip, zstd and
//! bzip2 streams may be concatenated; 7z needs random access and is read entry by entry.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

pub use crate::codec::{Format, IN_BUF, decoder};

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

/// The single file entry of a 7z archive that holds the image: (index, name, size).
pub fn sevenz_entry(file: &mut File) -> Result<(String, u64), String> {
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let archive = sevenz_rust2::Archive::read(file, &sevenz_rust2::Password::empty())
        .map_err(|e| format!("cannot read the 7z archive: {e}"))?;
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

/// LZMA2 method id in 7z coder records.
const SEVENZ_LZMA2: &[u8] = &[0x21];
/// Unpacked bytes gathered into one unit of parallel work (several dictionary-reset segments).
const LZMA2_UNIT: u64 = 8 << 20;
/// Dictionary memory the parallel decoders may touch together; beyond it, one thread decodes.
const LZMA2_DICT_BUDGET: u64 = 24 << 20;

/// A 7z archive whose image is one LZMA2 stream with dictionary resets (what 7-Zip and boardsmith
/// write with several threads), cut at those resets into units that decode independently.
pub struct SevenZBlocks {
    pub index: super::xz::XzIndex,
    /// CRC-32 of the unpacked entry, when the archive records it.
    pub crc32: Option<u32>,
}

/// Plans block-parallel decoding of `entry` (of `size` bytes) in the 7z archive `file`: None when the
/// archive is not the simple case (one block, one LZMA2 coder, one packed stream), has no reset to
/// cut at, or its units would need more dictionary memory than the budget for `threads`.
pub fn sevenz_blocks(
    file: &mut File,
    entry: &str,
    size: u64,
    threads: u64,
) -> Option<SevenZBlocks> {
    file.seek(SeekFrom::Start(0)).ok()?;
    let archive = sevenz_rust2::Archive::read(file, &sevenz_rust2::Password::empty()).ok()?;
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
    let dict = if props == 40 {
        u64::from(u32::MAX)
    } else {
        (2 | u64::from(props & 1)) << (props / 2 + 11)
    };
    let blocks = lzma2_units(file, start, end, size, props)?;
    let largest = blocks.iter().map(|b| b.uncompressed).max()?;
    if blocks.len() < 2 || threads.min(blocks.len() as u64) * dict.min(largest) > LZMA2_DICT_BUDGET
    {
        return None;
    }
    Some(SevenZBlocks {
        index: super::xz::XzIndex {
            blocks,
            uncompressed: size,
        },
        crc32,
    })
}

/// Walks the LZMA2 chunk headers in `[start, end)` (each gives its packed and unpacked size, so no data
/// is decoded) and groups the chunks into units of about [`LZMA2_UNIT`] that begin at a dictionary reset.
fn lzma2_units(
    file: &File,
    start: u64,
    end: u64,
    size: u64,
    props: u8,
) -> Option<Vec<super::xz::XzBlock>> {
    use super::xz::{BlockCodec, XzBlock};
    let mut units: Vec<XzBlock> = Vec::new();
    let (mut pos, mut unpacked) = (start, 0u64);
    let mut head = [0u8; 6];
    loop {
        if pos >= end {
            return None; // no end marker
        }
        let n = (end - pos).min(6) as usize;
        file.read_exact_at(&mut head[..n], pos).ok()?;
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
        match units.last_mut() {
            // A new unit begins at a reset once the current one is big enough.
            Some(u) if !reset || u.uncompressed < LZMA2_UNIT => {
                u.total += header + packed;
                u.uncompressed += out;
            }
            // The stream must open with a dictionary reset.
            None if !reset => return None,
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
pub fn sevenz_decode(
    file: File,
    name: &str,
    each: &mut dyn FnMut(&mut dyn Read) -> io::Result<()>,
) -> io::Result<()> {
    let mut reader = sevenz_rust2::ArchiveReader::new(
        BufReader::with_capacity(IN_BUF, file),
        sevenz_rust2::Password::empty(),
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
