//! The file names in an initramfs, read the way the kernel unpacks it: a sequence of cpio "newc" archives
//! (magic `070701`/`070702`), each ended by `TRAILER!!!`, separated by NUL padding, where a section may be
//! compressed (gzip, zstd, xz, lzma, bzip2) and then runs to the end of the file. Debian's initramfs-tools
//! writes an uncompressed early cpio (microcode, firmware) followed by one compressed cpio.
//!
//! The image is untrusted: it is streamed (file data is skipped, never held), and the decompressed size,
//! the number of entries and the name lengths are bounded.

use std::io::{BufRead, BufReader, Read};

/// Decompressed bytes read at most (Debian's initramfs unpacks to 30–80 MB).
pub const MAX_UNPACKED: u64 = 1 << 30;
pub const MAX_ENTRIES: usize = 500_000;
const MAX_NAME: usize = 4096;
/// NUL padding between archives (the kernel accepts any multiple of 4; tools pad to 512).
const MAX_PADDING: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("at byte {offset}: {message}")]
    Format { offset: u64, message: String },
    #[error(
        "compressed with {0}, which boardsmith cannot read (gzip, zstd, xz, lzma and bzip2 can be)"
    )]
    Unsupported(&'static str),
    #[error("unpacks to more than {MAX_UNPACKED} bytes")]
    TooLarge,
    #[error("reading it: {0}")]
    Io(#[from] std::io::Error),
}

/// A reader that counts what it yields and stops at a limit.
struct Counted<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read >= self.limit {
            return Err(std::io::Error::other("initramfs size limit reached"));
        }
        let max = ((self.limit - self.read) as usize).min(buf.len());
        let n = self.inner.read(&mut buf[..max])?;
        self.read += n as u64;
        Ok(n)
    }
}

fn fmt(offset: u64, message: impl Into<String>) -> InitramfsError {
    InitramfsError::Format {
        offset,
        message: message.into(),
    }
}

/// Every path in the initramfs, in archive order (without a leading `./` or `/`).
pub fn list(data: impl Read) -> Result<Vec<String>, InitramfsError> {
    let mut names = Vec::new();
    let mut r = BufReader::new(Counted {
        inner: data,
        read: 0,
        limit: MAX_UNPACKED,
    });
    let res = sections(&mut r, &mut names, true);
    if r.get_ref().read >= MAX_UNPACKED {
        return Err(InitramfsError::TooLarge);
    }
    res.map(|_| names)
}

/// Archives and compressed sections until the end of `r`; `outer` allows compressed sections (the kernel
/// also allows them only at the top level in practice: a compressed section's content is plain cpio).
fn sections(
    r: &mut dyn BufRead,
    names: &mut Vec<String>,
    outer: bool,
) -> Result<(), InitramfsError> {
    let mut pos = 0u64;
    loop {
        // Skip NUL padding.
        let mut pad = 0u64;
        loop {
            let buf = r.fill_buf()?;
            if buf.is_empty() {
                return Ok(());
            }
            let zeros = buf.iter().take_while(|b| **b == 0).count();
            let whole = zeros == buf.len();
            r.consume(zeros);
            pad += zeros as u64;
            pos += zeros as u64;
            if pad > MAX_PADDING {
                return Err(fmt(pos, "more than 1 MiB of padding between archives"));
            }
            if !whole {
                break;
            }
        }
        let head = r.fill_buf()?;
        let magic: Vec<u8> = head.iter().take(6).copied().collect();
        if magic.len() >= 6 && (magic == b"070701" || magic == b"070702") {
            pos = archive(r, names, pos)?;
            continue;
        }
        if !outer {
            return Err(fmt(
                pos,
                "neither a cpio archive nor padding inside a compressed section",
            ));
        }
        let starts = |m: &[u8]| magic.starts_with(m);
        if starts(&[0x1f, 0x8b]) {
            let mut d = BufReader::new(flate2::read::MultiGzDecoder::new(r));
            return sections(&mut d, names, false);
        }
        if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
            let mut d = BufReader::new(zstd::stream::read::Decoder::with_buffer(r)?);
            return sections(&mut d, names, false);
        }
        if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            let stream = liblzma::stream::Stream::new_stream_decoder(
                super::MAX_DECODER_MEMORY,
                liblzma::stream::CONCATENATED,
            )
            .map_err(std::io::Error::other)?;
            let mut d = BufReader::new(liblzma::bufread::XzDecoder::new_stream(r, stream));
            return sections(&mut d, names, false);
        }
        if starts(&[0x5d, 0x00, 0x00]) {
            let stream = liblzma::stream::Stream::new_lzma_decoder(super::MAX_DECODER_MEMORY)
                .map_err(std::io::Error::other)?;
            let mut d = BufReader::new(liblzma::bufread::XzDecoder::new_stream(r, stream));
            return sections(&mut d, names, false);
        }
        if starts(b"BZh") {
            let mut d = BufReader::new(bzip2::bufread::MultiBzDecoder::new(r));
            return sections(&mut d, names, false);
        }
        if starts(&[0x02, 0x21, 0x4c, 0x18]) || starts(&[0x04, 0x22, 0x4d, 0x18]) {
            return Err(InitramfsError::Unsupported("lz4"));
        }
        if starts(&[0x89, b'L', b'Z', b'O']) {
            return Err(InitramfsError::Unsupported("lzo"));
        }
        return Err(fmt(
            pos,
            format!("neither a cpio archive nor a known compression (starts with {magic:02x?})"),
        ));
    }
}

fn hex8(field: &[u8], offset: u64) -> Result<u64, InitramfsError> {
    std::str::from_utf8(field)
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or_else(|| fmt(offset, "cpio header field is not hexadecimal"))
}

fn skip(r: &mut dyn BufRead, n: u64) -> Result<(), InitramfsError> {
    let copied = std::io::copy(&mut r.take(n), &mut std::io::sink())?;
    if copied != n {
        return Err(InitramfsError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

/// One newc archive from its first header to `TRAILER!!!`; returns the position after it.
fn archive(
    r: &mut dyn BufRead,
    names: &mut Vec<String>,
    mut pos: u64,
) -> Result<u64, InitramfsError> {
    loop {
        let mut h = [0u8; 110];
        r.read_exact(&mut h)
            .map_err(|_| fmt(pos, "truncated cpio header"))?;
        if &h[..5] != b"07070" || !(h[5] == b'1' || h[5] == b'2') {
            return Err(fmt(pos, "bad cpio header magic"));
        }
        let field = |i: usize| hex8(&h[6 + i * 8..14 + i * 8], pos);
        let filesize = field(6)?;
        let namesize = field(11)? as usize;
        if namesize == 0 || namesize > MAX_NAME {
            return Err(fmt(pos, format!("cpio name size {namesize}")));
        }
        let mut name = vec![0u8; namesize];
        r.read_exact(&mut name)
            .map_err(|_| fmt(pos, "truncated cpio name"))?;
        if name.last() != Some(&0) {
            return Err(fmt(pos, "cpio name without its terminating NUL"));
        }
        name.pop();
        let head = 110 + namesize as u64;
        let head_pad = (4 - head % 4) % 4;
        skip(r, head_pad).map_err(|_| fmt(pos, "truncated after a cpio name"))?;
        pos += head + head_pad;
        if name == b"TRAILER!!!" {
            return Ok(pos);
        }
        if names.len() >= MAX_ENTRIES {
            return Err(fmt(pos, format!("more than {MAX_ENTRIES} entries")));
        }
        let text = String::from_utf8_lossy(&name);
        names.push(
            text.trim_start_matches("./")
                .trim_start_matches('/')
                .to_string(),
        );
        let data_pad = (4 - filesize % 4) % 4;
        let total = filesize
            .checked_add(data_pad)
            .ok_or_else(|| fmt(pos, "file size overflows"))?;
        skip(r, total).map_err(|_| fmt(pos, format!("truncated data of `{text}`")))?;
        pos = pos.saturating_add(total);
    }
}

/// Module names (file stems, `-` and `_` kept as written) of the `.ko` files among `paths`.
pub fn module_names(paths: &[String]) -> Vec<String> {
    let mut out: Vec<String> = paths
        .iter()
        .filter(|p| p.contains(".ko"))
        .map(|p| super::kmod::stem(p).to_string())
        .filter(|s| !s.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A newc archive with the given (name, data) entries, as `cpio -o -H newc` writes it.
    pub(crate) fn newc(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut all: Vec<(&str, &[u8])> = entries.to_vec();
        all.push(("TRAILER!!!", b""));
        for (i, (name, data)) in all.iter().enumerate() {
            let fields = [
                i as u64 + 1,
                0o100644,
                0,
                0,
                1,
                0,
                data.len() as u64,
                0,
                0,
                0,
                0,
                name.len() as u64 + 1,
                0,
            ];
            out.extend_from_slice(b"070701");
            for f in fields {
                out.extend_from_slice(format!("{f:08X}").as_bytes());
            }
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            while out.len() % 4 != 0 {
                out.push(0);
            }
            out.extend_from_slice(data);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        }
        out
    }

    #[test]
    fn early_cpio_then_compressed_main() {
        let early = newc(&[("kernel/x86/microcode/GenuineIntel.bin", b"ucode")]);
        let main = newc(&[
            (
                "usr/lib/modules/6.1.0/kernel/drivers/mmc/host/sunxi-mmc.ko",
                b"elf",
            ),
            ("./init", b"#!/bin/sh\n"),
        ]);
        for compress in ["gzip", "zstd", "xz", "none"] {
            let packed = match compress {
                "gzip" => {
                    let mut e = flate2::write::GzEncoder::new(Vec::new(), Default::default());
                    e.write_all(&main).unwrap();
                    e.finish().unwrap()
                }
                "zstd" => zstd::encode_all(main.as_slice(), 3).unwrap(),
                "xz" => {
                    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                    e.write_all(&main).unwrap();
                    e.finish().unwrap()
                }
                _ => main.clone(),
            };
            let mut img = early.clone();
            img.extend_from_slice(&[0; 512]);
            img.extend_from_slice(&packed);
            let names = list(img.as_slice()).unwrap();
            assert_eq!(names.len(), 3, "{compress}: {names:?}");
            assert_eq!(names[2], "init");
            assert_eq!(module_names(&names), ["sunxi-mmc"]);
        }
    }

    #[test]
    fn damaged_images_are_errors() {
        let good = newc(&[("a.ko", b"1234567")]);
        for cut in 1..good.len() {
            assert!(
                list(&good[..cut]).is_err() || cut >= good.len() - 4,
                "cut {cut}"
            );
        }
        let mut bad = good.clone();
        bad[6 + 6 * 8] = b'x';
        assert!(
            list(bad.as_slice())
                .unwrap_err()
                .to_string()
                .contains("hexadecimal")
        );
        let e = list(&b"\x89LZO\0\0"[..]).unwrap_err().to_string();
        assert!(e.contains("lzo"), "{e}");
        let e = list(&b"hello"[..]).unwrap_err().to_string();
        assert!(e.contains("neither a cpio archive"), "{e}");
        // A legacy lzma header asking for a 2.9 GB dictionary (found by fuzzing): refused, not allocated.
        let mut lzma = vec![0x5d, 0, 0, 0x01, 0xad];
        lzma.extend_from_slice(&[0xff; 8]);
        lzma.extend_from_slice(&[0; 32]);
        assert!(list(lzma.as_slice()).is_err());
        // A header claiming a 4 GiB file in a short image.
        let mut huge = newc(&[("a", b"")]);
        huge[6 + 6 * 8..6 + 7 * 8].copy_from_slice(b"FFFFFFFF");
        assert!(list(huge.as_slice()).is_err());
    }
}
