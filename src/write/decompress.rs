//! Compressed image formats: recognised by their magic bytes, decoded as streams. xz decodes on
//! several threads when the file has several blocks (liblzma's threaded decoder); gzip, zstd and
//! bzip2 streams may be concatenated; 7z needs random access and is read entry by entry.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Raw,
    Xz,
    Gzip,
    Zstd,
    Bzip2,
    #[serde(rename = "7z")]
    SevenZ,
}

impl Format {
    /// Recognises a format from the first bytes of the source (at least 6 for certainty).
    pub fn detect(magic: &[u8]) -> Format {
        if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Format::Xz
        } else if magic.starts_with(&[0x1f, 0x8b]) {
            Format::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Format::Zstd
        } else if magic.len() >= 4 && magic.starts_with(b"BZh") && (b'1'..=b'9').contains(&magic[3])
        {
            Format::Bzip2
        } else if magic.starts_with(&[b'7', b'z', 0xbc, 0xaf, 0x27, 0x1c]) {
            Format::SevenZ
        } else {
            Format::Raw
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Xz => "xz",
            Format::Gzip => "gzip",
            Format::Zstd => "zstd",
            Format::Bzip2 => "bzip2",
            Format::SevenZ => "7z",
        }
    }

    /// File name extensions of this format (for finding the image's own name and side files).
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            Format::Raw => &[],
            Format::Xz => &["xz"],
            Format::Gzip => &["gz", "gzip"],
            Format::Zstd => &["zst", "zstd"],
            Format::Bzip2 => &["bz2"],
            Format::SevenZ => &["7z"],
        }
    }
}

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

/// Input buffer for decoders: large enough that syscalls are rare.
const IN_BUF: usize = 1 << 20;

/// The largest window (zstd) or dictionary (xz, 7z) a decoder may use unless the user allows more:
/// zstd's own default limit (`zstd -d` refuses larger frames without `--long`/`--memory`), which
/// also admits `xz -9` and `7z -mx9` (64 MiB dictionaries). A decoder holds its whole window in
/// memory; a few KB of crafted input can declare gigabytes.
pub const DEFAULT_MAX_WINDOW: u64 = 1 << 27;
/// Range of `--max-window`: powers of two (a zstd window limit is a power of two).
pub const MIN_MAX_WINDOW: u64 = 1 << 20;
pub const MAX_MAX_WINDOW: u64 = 1 << 31;

/// The largest window or dictionary a decoder may use, and whether the user chose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimit {
    pub bytes: u64,
    /// Set with `--max-window` (otherwise [`DEFAULT_MAX_WINDOW`]).
    pub chosen: bool,
}

impl Default for WindowLimit {
    fn default() -> Self {
        WindowLimit {
            bytes: DEFAULT_MAX_WINDOW,
            chosen: false,
        }
    }
}

impl WindowLimit {
    /// The user's `--max-window`: a power of two from [`MIN_MAX_WINDOW`] to [`MAX_MAX_WINDOW`].
    pub fn chosen(bytes: u64) -> Result<WindowLimit, String> {
        use crate::size::Human;
        if !bytes.is_power_of_two() || !(MIN_MAX_WINDOW..=MAX_MAX_WINDOW).contains(&bytes) {
            return Err(format!(
                "--max-window: {bytes} bytes is not a power of two from {} to {} (e.g. 256MiB, 2GiB)",
                Human(MIN_MAX_WINDOW),
                Human(MAX_MAX_WINDOW)
            ));
        }
        Ok(WindowLimit {
            bytes,
            chosen: true,
        })
    }
}

/// A source whose decoder needs more window or dictionary memory than allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct WindowTooLarge {
    pub format: &'static str,
    /// What the data declares, when known.
    pub needed: Option<u64>,
    pub limit: WindowLimit,
}

impl WindowTooLarge {
    /// zstd calls it a window, LZMA a dictionary: the memory back-references reach into.
    fn what(&self) -> &'static str {
        if self.format == "zstd" {
            "window"
        } else {
            "dictionary"
        }
    }

    fn describe(&self) -> String {
        use crate::size::Human;
        let need = match self.needed {
            Some(n) => format!(
                "a {} {} ({n} bytes) to decode, more than",
                Human(n),
                self.what()
            ),
            None => format!("a {} to decode larger than", self.what()),
        };
        let limit = if self.limit.chosen {
            format!("the {} that --max-window allows", Human(self.limit.bytes))
        } else {
            format!(
                "the {} allowed by default (zstd's own limit)",
                Human(self.limit.bytes)
            )
        };
        let advice = match self.needed.map(|n| n.next_power_of_two()) {
            Some(p) if p > MAX_MAX_WINDOW => format!(
                "that is more than boardsmith allows at all ({}); decompress it with a tool you trust first",
                Human(MAX_MAX_WINDOW)
            ),
            Some(p) => format!(
                "if you trust this image, allow it with --max-window {} (the writer then uses up to that much more memory)",
                Human(p).to_string().replace(' ', "")
            ),
            None => format!(
                "if you trust this image, allow more with --max-window (a power of two up to {})",
                Human(MAX_MAX_WINDOW).to_string().replace(' ', "")
            ),
        };
        format!(
            "the {} data needs {need} {limit}: a few bytes of crafted input can claim gigabytes of memory this way; {advice}",
            self.format
        )
    }
}

/// The window the zstd frame whose header starts `header` declares (RFC 8878, 3.1.1.1): from
/// the window descriptor, or the content size of a single-segment frame. Hand-written: the zstd
/// crate exposes no frame-header parser in its stable API.
pub fn zstd_window(header: &[u8]) -> Option<u64> {
    if !header.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return None;
    }
    let fhd = *header.get(4)?;
    if fhd & 0x20 == 0 {
        let wd = *header.get(5)?;
        let base = 1u64 << (10 + (wd >> 3));
        return Some(base + base / 8 * u64::from(wd & 7));
    }
    // Single segment: the window is the content size, after the optional dictionary id.
    let at = 5 + [0, 1, 2, 4][usize::from(fhd & 3)];
    let size = match fhd >> 6 {
        0 => u64::from(*header.get(at)?),
        1 => u64::from(u16::from_le_bytes(header.get(at..at + 2)?.try_into().ok()?)) + 256,
        2 => u64::from(u32::from_le_bytes(header.get(at..at + 4)?.try_into().ok()?)),
        _ => u64::from_le_bytes(header.get(at..at + 8)?.try_into().ok()?),
    };
    Some(size.max(1 << 10))
}

/// Turns zstd's "window too large" error (a later frame of a stream) into [`WindowTooLarge`].
struct ZstdLimit<R> {
    inner: R,
    limit: WindowLimit,
}

impl<R: Read> Read for ZstdLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            let too_large = zstd::zstd_safe::get_error_name(0usize.wrapping_sub(
                zstd::zstd_safe::zstd_sys::ZSTD_ErrorCode::ZSTD_error_frameParameter_windowTooLarge
                    as usize,
            ));
            if e.to_string() == too_large {
                io::Error::other(WindowTooLarge {
                    format: "zstd",
                    needed: None,
                    limit: self.limit,
                })
            } else {
                e
            }
        })
    }
}

/// A decoding reader for a streamable format (everything but raw and 7z). `max_window` bounds the
/// window (zstd) or dictionary (xz) of the data. Returns the reader and whether the format has a
/// window that `max_window` applied to.
pub fn decoder(
    format: Format,
    input: Box<dyn Read + Send>,
    max_window: WindowLimit,
) -> io::Result<(Box<dyn Read + Send>, bool)> {
    let buffered = BufReader::with_capacity(IN_BUF, input);
    Ok(match format {
        Format::Xz => (
            Box::new(super::xz::XzReader::new(buffered, max_window)?),
            true,
        ),
        Format::Gzip => (
            Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
            false,
        ),
        Format::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(buffered)?;
            // A power of two (MIN_MAX_WINDOW..=MAX_MAX_WINDOW): its log is exact.
            d.window_log_max(max_window.bytes.ilog2())?;
            (
                Box::new(ZstdLimit {
                    inner: d,
                    limit: max_window,
                }),
                true,
            )
        }
        Format::Bzip2 => (
            Box::new(bzip2::bufread::MultiBzDecoder::new(buffered)),
            false,
        ),
        Format::Raw => (Box::new(buffered), false),
        Format::SevenZ => {
            return Err(io::Error::other(
                "7z archives need random access and are not streamed",
            ));
        }
    })
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
/// Dictionary memory the parallel decoders (xz blocks, 7z LZMA2 segments) may touch together;
/// beyond it, one thread decodes. With the pool this keeps the writer under 64 MiB.
pub const DICT_BUDGET: u64 = 24 << 20;

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
    if blocks.len() < 2 || threads.min(blocks.len() as u64) * dict.min(largest) > DICT_BUDGET {
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

    #[test]
    fn detects_by_magic() {
        assert_eq!(Format::detect(b"\xfd7zXZ\0rest"), Format::Xz);
        assert_eq!(Format::detect(b"\x1f\x8b\x08"), Format::Gzip);
        assert_eq!(Format::detect(b"\x28\xb5\x2f\xfd"), Format::Zstd);
        assert_eq!(Format::detect(b"BZh9"), Format::Bzip2);
        assert_eq!(Format::detect(b"BZhx"), Format::Raw);
        assert_eq!(Format::detect(b"7z\xbc\xaf\x27\x1c"), Format::SevenZ);
        assert_eq!(Format::detect(b"\xeb\x3c\x90"), Format::Raw);
        assert_eq!(Format::detect(b""), Format::Raw);
    }

    #[test]
    fn zstd_window_from_the_frame_header() {
        // Streamed (no content size): the window descriptor, here --long=31's 2 GiB.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        enc.long_distance_matching(true).unwrap();
        enc.window_log(31).unwrap();
        io::Write::write_all(&mut enc, &[7u8; 5000]).unwrap();
        let frame = enc.finish().unwrap();
        assert_eq!(zstd_window(&frame), Some(1 << 31));
        // Single segment (content size known and small): the window is the content size, at least 1 KiB.
        let frame = zstd::encode_all(&[1u8; 3000][..], 3).unwrap();
        assert_eq!(zstd_window(&frame), Some(3000));
        let frame = zstd::encode_all(&[1u8; 10][..], 3).unwrap();
        assert_eq!(zstd_window(&frame), Some(1024));
        // Mantissa: 2^20 + 3/8 of it.
        assert_eq!(
            zstd_window(&[0x28, 0xb5, 0x2f, 0xfd, 0x00, (10 << 3) | 3]),
            Some((1 << 20) + 3 * (1 << 17))
        );
        assert_eq!(zstd_window(&[0x28, 0xb5, 0x2f, 0xfd, 0x00]), None);
        assert_eq!(zstd_window(b"not zstd"), None);
    }

    #[test]
    fn max_window_is_a_power_of_two_in_range() {
        assert_eq!(WindowLimit::chosen(1 << 31).unwrap().bytes, 1 << 31);
        for bad in [3 << 20, 1 << 19, 1 << 32] {
            let e = WindowLimit::chosen(bad).unwrap_err();
            assert!(
                e.contains("is not a power of two from 1 MiB to 2 GiB"),
                "{e}"
            );
        }
    }

    #[test]
    fn window_messages_say_how_to_allow_it() {
        let w = WindowTooLarge {
            format: "zstd",
            needed: Some(1 << 31),
            limit: WindowLimit::default(),
        };
        assert_eq!(
            w.to_string(),
            "the zstd data needs a 2 GiB window (2147483648 bytes) to decode, more than the 128 MiB allowed by default (zstd's own limit): a few bytes of crafted input can claim gigabytes of memory this way; if you trust this image, allow it with --max-window 2GiB (the writer then uses up to that much more memory)"
        );
        let w = WindowTooLarge {
            format: "xz",
            needed: Some(3 << 30),
            limit: WindowLimit::chosen(1 << 30).unwrap(),
        };
        assert!(
            w.to_string().contains(
                "needs a 3 GiB dictionary (3221225472 bytes) to decode, more than the 1 GiB that --max-window allows"
            ) && w.to_string().contains("more than boardsmith allows at all (2 GiB)"),
            "{w}"
        );
    }

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
