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

/// A decoding reader for a streamable format (everything but raw and 7z).
pub fn decoder(format: Format, input: Box<dyn Read + Send>) -> io::Result<Box<dyn Read + Send>> {
    let buffered = BufReader::with_capacity(IN_BUF, input);
    Ok(match format {
        Format::Xz => Box::new(super::xz::XzReader::new(buffered)?),
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
}
