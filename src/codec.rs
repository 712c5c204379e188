//! Stream decoders for compressed data (xz, gzip, zstd, bzip2), recognised by magic bytes: shared by
//! the writer (`write`) and the root filesystem builder (`rootfs`), so both decode alike. xz streams
//! are decoded by one thread, concatenated streams one after another, as `xz -d` does; gzip, zstd and
//! bzip2 streams may be concatenated too. 7z needs random access and lives with the writer.

use std::io::{self, BufRead, BufReader, Read};

use liblzma::stream::{Action, Status, Stream};
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

/// Input buffer for decoders: large enough that syscalls are rare.
pub const IN_BUF: usize = 1 << 20;

/// The largest window (zstd) or dictionary (xz, 7z) a decoder may use unless the user allows more.
/// A decoder holds its whole window in memory, and a few KB of crafted input can declare gigabytes.
/// 16 MiB keeps the writer (a 32 MiB buffer pool and the program) under 64 MiB whatever the input,
/// and admits `xz -0`…`-7`, `zstd -1`…`-19` and `7z -mx5` (boardsmith's own release formats);
/// larger ones (`xz -9`, `zstd --long`, `7z -mx9`) need `--max-window`, which says how much more
/// memory the writer may take. (zstd's own default limit, 128 MiB, would allow 170 MiB.)
pub const DEFAULT_MAX_WINDOW: u64 = 1 << 24;
/// Range of `--max-window`: powers of two (a zstd window limit is a power of two).
pub const MIN_MAX_WINDOW: u64 = 1 << 20;
pub const MAX_MAX_WINDOW: u64 = 1 << 31;

/// The window limit for a root filesystem tarball (`rootfs --rootfs-tarball`): zstd's own default
/// limit, which admits `xz -9` and `7z -mx9` (64 MiB), as distributions compress their tarballs.
/// The tarball is decoded on its own (not beside the writer's pool), so the writer's 64 MiB budget
/// does not apply; crafted input still cannot claim more.
pub const TARBALL_MAX_WINDOW: u64 = 1 << 27;

/// The largest window or dictionary a decoder may use, and whether the user chose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimit {
    pub bytes: u64,
    /// Set with `--max-window` (otherwise [`DEFAULT_MAX_WINDOW`]).
    pub chosen: bool,
    /// A fixed limit that no option raises (root filesystem tarballs).
    pub fixed: bool,
}

impl Default for WindowLimit {
    fn default() -> Self {
        WindowLimit {
            bytes: DEFAULT_MAX_WINDOW,
            chosen: false,
            fixed: false,
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
            fixed: false,
        })
    }

    /// The limit for a root filesystem tarball ([`TARBALL_MAX_WINDOW`]).
    pub fn tarball() -> WindowLimit {
        WindowLimit {
            bytes: TARBALL_MAX_WINDOW,
            chosen: false,
            fixed: true,
        }
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
        let limit = if self.limit.fixed {
            format!("the {} allowed (zstd's own limit)", Human(self.limit.bytes))
        } else if self.limit.chosen {
            format!("the {} that --max-window allows", Human(self.limit.bytes))
        } else {
            format!(
                "the {} allowed by default (it keeps the writer under 64 MiB)",
                Human(self.limit.bytes)
            )
        };
        let advice = match self.needed.map(|n| n.next_power_of_two()) {
            _ if self.limit.fixed => {
                "decompress it with a tool you trust first and give the uncompressed .tar"
                    .to_string()
            }
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
        Format::Xz => (Box::new(XzReader::new(buffered, max_window)?), true),
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

/// Decoder memory beyond the dictionary (liblzma's own state): `xz -9` (a 64 MiB dictionary) needs
/// 65 MiB.
pub const STATE_SLACK: u64 = 2 << 20;

/// An .xz stream decoder that refuses blocks needing more than `max_dict` of dictionary.
pub fn xz_stream_decoder(max_dict: WindowLimit) -> io::Result<Stream> {
    Stream::new_stream_decoder(max_dict.bytes.saturating_add(STATE_SLACK), 0)
        .map_err(|e| io::Error::other(format!("cannot start the xz decoder: {e}")))
}

/// What a decoder stopped by its memory limit needed. liblzma refuses a new limit below its need
/// (`lzma_memlimit_set`) and the crate has no `lzma_memusage`, so the smallest limit it accepts is
/// found by bisection (some 40 cheap calls, once, on the way to an error).
fn needed_memory(stream: &mut Stream, limit: u64) -> Option<u64> {
    let (mut lo, mut hi) = (limit, 1u64 << 42);
    stream.set_memlimit(hi).ok()?;
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        if stream.set_memlimit(mid).is_ok() {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// The error for an xz block whose dictionary is over the limit. The need liblzma reports is the
/// dictionary plus some KiB of state: the dictionary is the largest LZMA2 size within it (sizes are
/// 2^n or 3·2^(n-1), whose steps are far larger than the state beyond 4 MiB).
pub fn dict_error(stream: &mut Stream, max_dict: WindowLimit) -> io::Error {
    let needed = needed_memory(stream, max_dict.bytes.saturating_add(STATE_SLACK))
        .and_then(|m| (0..=40u8).filter_map(lzma2_dict).filter(|&d| d <= m).max());
    io::Error::other(WindowTooLarge {
        format: "xz",
        needed: needed.filter(|&d| d > max_dict.bytes),
        limit: max_dict,
    })
}

/// The dictionary size an LZMA2 properties byte stands for.
pub fn lzma2_dict(props: u8) -> Option<u64> {
    match props {
        40 => Some(u64::from(u32::MAX)),
        0..40 => Some((2 | u64::from(props & 1)) << (props / 2 + 11)),
        _ => None,
    }
}

/// Single-threaded xz decoding of a stream.
pub struct XzReader<R> {
    input: R,
    stream: Option<Stream>,
    /// Bytes of input consumed by finished streams.
    done_in: u64,
    finished: bool,
    /// Largest dictionary allowed.
    max_dict: WindowLimit,
}

impl<R: BufRead> XzReader<R> {
    pub fn new(input: R, max_dict: WindowLimit) -> io::Result<XzReader<R>> {
        Ok(XzReader {
            input,
            stream: Some(xz_stream_decoder(max_dict)?),
            done_in: 0,
            finished: false,
            max_dict,
        })
    }

    fn compressed_offset(&self) -> u64 {
        self.done_in + self.stream.as_ref().map_or(0, |s| s.total_in())
    }

    /// After a stream ends: skips stream padding; starts the next stream if more input follows.
    fn next_stream(&mut self) -> io::Result<bool> {
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                return Ok(false);
            }
            let zeros = buf.iter().take_while(|&&b| b == 0).count();
            if zeros == 0 {
                break;
            }
            self.done_in += zeros as u64;
            self.input.consume(zeros);
        }
        self.stream = Some(xz_stream_decoder(self.max_dict)?);
        Ok(true)
    }
}

impl<R: BufRead> Read for XzReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || self.finished {
            return Ok(0);
        }
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Ok(0);
            };
            let input = self.input.fill_buf()?;
            let eof = input.is_empty();
            let (in_before, out_before) = (stream.total_in(), stream.total_out());
            let ret = stream.process(input, out, if eof { Action::Finish } else { Action::Run });
            let consumed = (stream.total_in() - in_before) as usize;
            let produced = (stream.total_out() - out_before) as usize;
            self.input.consume(consumed);
            if let Err(liblzma::stream::Error::MemLimit) = ret {
                let max_dict = self.max_dict;
                return Err(self
                    .stream
                    .as_mut()
                    .map_or_else(|| io::Error::other("xz"), |s| dict_error(s, max_dict)));
            }
            let status = ret.map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{e} (near compressed byte {})", self.compressed_offset()),
                )
            })?;
            if status == Status::StreamEnd {
                self.done_in += self.stream.as_ref().map_or(0, |s| s.total_in());
                self.stream = None;
                if !self.next_stream()? {
                    self.finished = true;
                }
                if produced > 0 {
                    return Ok(produced);
                }
                if self.finished {
                    return Ok(0);
                }
                continue;
            }
            if produced > 0 {
                return Ok(produced);
            }
            if eof {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the xz data ends at compressed byte {} in the middle of a stream (truncated file?)",
                        self.compressed_offset()
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
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

    /// `data` as an xz stream with blocks of `block` bytes (also for write::xz's tests).
    pub(crate) fn encode(data: &[u8], block: u64) -> Vec<u8> {
        let mut out = Vec::new();
        liblzma::read::XzEncoder::new_stream(
            data,
            liblzma::stream::MtStreamBuilder::new()
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
    fn concatenated_streams_with_padding() {
        let mut input = encode(b"hello ", 1 << 20);
        input.extend_from_slice(&[0; 8]);
        input.extend(encode(b"world", 1 << 20));
        let mut s = String::new();
        XzReader::new(&input[..], WindowLimit::default())
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "hello world");
        let cut = &input[..input.len() - 7];
        let e = XzReader::new(cut, WindowLimit::default())
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("compressed byte"), "{e}");
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
            "the zstd data needs a 2 GiB window (2147483648 bytes) to decode, more than the 16 MiB allowed by default (it keeps the writer under 64 MiB): a few bytes of crafted input can claim gigabytes of memory this way; if you trust this image, allow it with --max-window 2GiB (the writer then uses up to that much more memory)"
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
}
