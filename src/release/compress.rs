//! Compressed release artefacts of an image, each hashed (SHA-256, MD5) as it is written, on all cores:
//! xz in independent blocks (so writers decode on several threads), zstd, 7z (LZMA2).

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::output::PendingFile;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Xz,
    Zst,
    #[serde(rename = "7z")]
    SevenZ,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "xz" => Some(Format::Xz),
            "zst" | "zstd" => Some(Format::Zst),
            "7z" => Some(Format::SevenZ),
            _ => None,
        }
    }
    pub fn extension(self) -> &'static str {
        match self {
            Format::Xz => "xz",
            Format::Zst => "zst",
            Format::SevenZ => "7z",
        }
    }
}

/// Compression settings; levels follow each tool's CLI scale.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub threads: u32,
    pub xz_level: u32,
    /// xz block size: each block decodes independently.
    pub xz_block: u64,
    pub zstd_level: i32,
    pub sevenz_level: u32,
    /// Modification time recorded in the 7z archive (SOURCE_DATE_EPOCH).
    pub epoch: u64,
    /// The images hold the root filesystem's password hashes: owner-only unless this is set.
    pub world_readable: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("{format} compression: {source}")]
    Io {
        format: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("xz encoder: {0}")]
    Xz(String),
    #[error("7z archive: {0}")]
    SevenZ(String),
}

/// Size and digests of a written file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Digested {
    pub size: u64,
    pub sha256: String,
    pub md5: String,
}

/// A writer that hashes everything passing through it.
struct HashingWriter<W: Write> {
    inner: W,
    sha: Sha256,
    md5: Md5,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            sha: Sha256::new(),
            md5: Md5::new(),
            size: 0,
        }
    }
    fn finish(self) -> (W, Digested) {
        let d = Digested {
            size: self.size,
            sha256: hex::encode(self.sha.finalize()),
            md5: hex::encode(self.md5.finalize()),
        };
        (self.inner, d)
    }
}

/// Flushes and syncs the compressed file behind `out`; its digests.
fn finish_file(out: HashingWriter<BufWriter<File>>) -> io::Result<Digested> {
    let (mut buf, d) = out.finish();
    buf.flush()?;
    buf.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(d)
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.md5.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A writer that hashes and is seekable (7z rewrites its start header at the end): hashes are computed
/// afterwards by re-reading, since seeking breaks a streaming hash.
fn digest_file(path: &Path) -> io::Result<Digested> {
    let d = crate::checksum::digest_file(path, true)?;
    Ok(Digested {
        size: d.size,
        sha256: d.sha256,
        md5: d.md5.unwrap_or_default(),
    })
}

/// Compresses `image` into `dest` (written under a temporary name; the caller commits it).
pub fn compress(
    image: &Path,
    entry_name: &str,
    dest: &Path,
    format: Format,
    s: &Settings,
    progress: &dyn Fn(u64),
) -> Result<(PendingFile, Digested), CompressError> {
    let name = format.extension();
    let ioerr = |source| CompressError::Io {
        format: name,
        source,
    };
    let (pending, file) =
        PendingFile::create_with_mode(dest, crate::output::artefact_mode(s.world_readable))
            .map_err(ioerr)?;
    let mut input = File::open(image).map_err(ioerr)?;
    let digest = match format {
        Format::Xz => {
            let stream = liblzma::stream::MtStreamBuilder::new()
                .threads(s.threads.max(1))
                .block_size(s.xz_block)
                .preset(s.xz_level)
                .check(liblzma::stream::Check::Crc64)
                .encoder()
                .map_err(|e| CompressError::Xz(e.to_string()))?;
            let out = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
            let mut enc = liblzma::write::XzEncoder::new_stream(out, stream);
            copy(&mut input, &mut enc, progress).map_err(ioerr)?;
            finish_file(enc.finish().map_err(ioerr)?).map_err(ioerr)?
        }
        Format::Zst => {
            let out = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
            let mut enc = zstd::stream::Encoder::new(out, s.zstd_level).map_err(ioerr)?;
            if s.threads > 1 {
                enc.multithread(s.threads).map_err(ioerr)?;
            }
            enc.include_checksum(true).map_err(ioerr)?;
            copy(&mut input, &mut enc, progress).map_err(ioerr)?;
            finish_file(enc.finish().map_err(ioerr)?).map_err(ioerr)?
        }
        Format::SevenZ => {
            let mut w = sevenz_rust2::ArchiveWriter::new(file)
                .map_err(|e| CompressError::SevenZ(e.to_string()))?;
            let opts = sevenz_rust2::encoder_options::Lzma2Options::from_level_mt(
                s.sevenz_level,
                s.threads.max(1),
                16 << 20,
            );
            w.set_content_methods(vec![opts.into()]);
            let mut entry = sevenz_rust2::ArchiveEntry::new_file(entry_name);
            entry.has_last_modified_date = true;
            // NT file time: 100 ns intervals since 1601-01-01.
            entry.last_modified_date =
                sevenz_rust2::NtTime::from((s.epoch + 11_644_473_600) * 10_000_000);
            let reader = ProgressReader {
                inner: input,
                done: 0,
                progress,
            };
            w.push_archive_entry(entry, Some(reader))
                .map_err(|e| CompressError::SevenZ(e.to_string()))?;
            let f = w.finish().map_err(ioerr)?;
            f.sync_all().map_err(ioerr)?;
            digest_file(pending.temp_path()).map_err(ioerr)?
        }
    };
    Ok((pending, digest))
}

struct ProgressReader<'a, R> {
    inner: R,
    done: u64,
    progress: &'a dyn Fn(u64),
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.progress)(self.done);
        Ok(n)
    }
}

fn copy(input: &mut File, out: &mut dyn Write, progress: &dyn Fn(u64)) -> io::Result<()> {
    let mut buf = vec![0u8; 4 << 20];
    let mut done = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&buf[..n])?;
        done += n as u64;
        progress(done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse() {
        assert_eq!(Format::parse("zstd"), Some(Format::Zst));
        assert_eq!(Format::parse("7z").map(Format::extension), Some("7z"));
        assert_eq!(Format::parse("rar"), None);
    }
}
