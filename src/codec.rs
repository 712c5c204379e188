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

/// A decoding reader for a streamable format (everything but raw and 7z).
pub fn decoder(format: Format, input: Box<dyn Read + Send>) -> io::Result<Box<dyn Read + Send>> {
    let buffered = BufReader::with_capacity(IN_BUF, input);
    Ok(match format {
        Format::Xz => Box::new(XzReader::new(buffered)?),
        Format::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Format::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(buffered)?;
            // Frames made with --long need a window beyond the default 128 MiB limit.
            d.window_log_max(31)?;
            Box::new(d)
        }
        Format::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(buffered)),
        Format::Raw => Box::new(buffered),
        Format::SevenZ => {
            return Err(io::Error::other(
                "7z archives need random access and are not streamed",
            ));
        }
    })
}

/// liblzma's decoder for one .xz stream (also used for the blocks of seekable files).
pub fn xz_stream_decoder() -> io::Result<Stream> {
    Stream::new_stream_decoder(u64::MAX, 0)
        .map_err(|e| io::Error::other(format!("cannot start the xz decoder: {e}")))
}

/// Single-threaded xz decoding of a stream.
pub struct XzReader<R> {
    input: R,
    stream: Option<Stream>,
    /// Bytes of input consumed by finished streams.
    done_in: u64,
    finished: bool,
}

impl<R: BufRead> XzReader<R> {
    pub fn new(input: R) -> io::Result<XzReader<R>> {
        Ok(XzReader {
            input,
            stream: Some(xz_stream_decoder()?),
            done_in: 0,
            finished: false,
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
        self.stream = Some(xz_stream_decoder()?);
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

    fn encode(data: &[u8], block: u64) -> Vec<u8> {
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
        XzReader::new(&input[..])
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "hello world");
        let cut = &input[..input.len() - 7];
        let e = XzReader::new(cut)
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("compressed byte"), "{e}");
    }
}
