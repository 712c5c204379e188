//! Files from outside the package manager (a prebuilt rootfs tarball, the DroidMote binary): a local path
//! or an http(s) URL, always checked against the sha256 the user gave before anything uses them.
//! Downloads go through the writer's HTTP client (`crate::net`: system certificates, timeouts, resume
//! after a dropped connection) and tarballs are decoded by its decoders (`crate::codec`).

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::codec::{self, Format};
use crate::net::{self, FailureKind, NetError};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{what}: {source_name} does not exist")]
    Missing { what: String, source_name: String },
    #[error("{what}: downloading failed: {source}")]
    Download {
        what: String,
        #[source]
        source: NetError,
    },
    #[error(
        "{what}: sha256 mismatch for {source_name}: expected {expected}, got {actual}; the file is not the one you named (check the URL or path, or the checksum)"
    )]
    Mismatch {
        what: String,
        source_name: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: `{given}` is not a sha256 (64 hexadecimal digits)")]
    BadChecksum { what: String, given: String },
    #[error("{what}: {context}: {source}")]
    Io {
        what: String,
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{what}: decompressing {path} ({format}) failed: {detail}")]
    Decompress {
        what: String,
        path: PathBuf,
        format: String,
        detail: String,
    },
}

impl FetchError {
    /// The user's input (path, URL, checksum) is wrong, rather than the network or the machine.
    pub fn is_input_error(&self) -> bool {
        match self {
            FetchError::Missing { .. } | FetchError::BadChecksum { .. } => true,
            FetchError::Download { source, .. } => source.kind() == FailureKind::Input,
            _ => false,
        }
    }

    /// A download that failed after every retry: trying again later may work.
    pub fn is_transient(&self) -> bool {
        matches!(self, FetchError::Download { source, .. } if source.kind() == FailureKind::Transient)
    }
}

/// Normalizes a sha256 given by the user.
pub fn parse_sha256(what: &str, given: &str) -> Result<String, FetchError> {
    let h = given.trim().to_ascii_lowercase();
    let h = h.strip_prefix("sha256:").unwrap_or(&h);
    if crate::checksum::is_hex_digest(h, 64) {
        Ok(h.to_string())
    } else {
        Err(FetchError::BadChecksum {
            what: what.into(),
            given: given.into(),
        })
    }
}

pub fn is_url(s: &str) -> bool {
    net::is_url(s)
}

/// An I/O error of `what` while `context` (`opening PATH`, `writing PATH`).
fn io_error(what: &str, context: String) -> impl FnOnce(io::Error) -> FetchError {
    let what = what.to_string();
    move |source| FetchError::Io {
        what,
        context,
        source,
    }
}

/// Which side of a copy failed.
enum CopyFailure {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `r` to `out` in 1 MiB chunks, showing each to `seen`, and flushes `out`.
fn copy_chunks(
    r: &mut dyn Read,
    out: &mut dyn Write,
    seen: &mut dyn FnMut(&[u8]),
) -> Result<(), CopyFailure> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyFailure::Read(e)),
        };
        seen(&buf[..n]);
        out.write_all(&buf[..n]).map_err(CopyFailure::Write)?;
    }
    out.flush().map_err(CopyFailure::Write)
}

/// Copies `r` to `out`, hashing it. Returns the hex sha256.
fn copy_hashing(r: &mut dyn Read, out: &mut dyn Write) -> io::Result<String> {
    let mut h = Sha256::new();
    copy_chunks(r, out, &mut |b| h.update(b)).map_err(|e| match e {
        CopyFailure::Read(e) | CopyFailure::Write(e) => e,
    })?;
    Ok(hex::encode(h.finalize()))
}

/// Copies or downloads `source` to `dest` and checks its sha256. `dest` is removed on any failure.
pub fn fetch_verified(
    what: &str,
    source: &str,
    sha256: &str,
    dest: &Path,
) -> Result<(), FetchError> {
    fetch_verified_noting(what, source, sha256, dest, &|_| {})
}

/// [`fetch_verified`], telling `note` about each reconnect of a download.
pub fn fetch_verified_noting(
    what: &str,
    source: &str,
    sha256: &str,
    dest: &Path,
    note: &dyn Fn(&str),
) -> Result<(), FetchError> {
    let expected = parse_sha256(what, sha256)?;
    let ioe = |context: String| io_error(what, context);
    let result = (|| {
        let mut out = File::create(dest).map_err(ioe(format!("creating {}", dest.display())))?;
        let actual = if is_url(source) {
            // Reconnects are reported from inside the reader: collect them, show them between reads.
            let (tx, rx) = std::sync::mpsc::channel::<net::Reconnect>();
            let tx = std::sync::Mutex::new(tx);
            let client = net::Client::new(net::NetOptions::default()).observe(std::sync::Arc::new(
                move |r: &net::Reconnect| {
                    if let Ok(tx) = tx.lock() {
                        let _ = tx.send(r.clone());
                    }
                },
            ));
            let download_err = |source: NetError| FetchError::Download {
                what: what.into(),
                source,
            };
            let mut d = client.download(source).map_err(download_err)?;
            // The sha256 checks every byte, so a resume needs no ETag to be safe.
            d.handle().allow_unvalidated_resume();
            let mut noting = Noting {
                inner: &mut d,
                rx,
                note,
            };
            copy_hashing(&mut noting, &mut out).map_err(|e| match NetError::from_io(&e) {
                Some(n) => download_err(n.clone()),
                None => FetchError::Io {
                    what: what.into(),
                    context: format!("downloading {source} to {}", dest.display()),
                    source: e,
                },
            })?
        } else {
            let src = Path::new(source.strip_prefix("file://").unwrap_or(source));
            if !src.is_file() {
                return Err(FetchError::Missing {
                    what: what.into(),
                    source_name: source.into(),
                });
            }
            let mut f = File::open(src).map_err(ioe(format!("opening {source}")))?;
            copy_hashing(&mut f, &mut out).map_err(ioe(format!("copying {source}")))?
        };
        if actual != expected {
            return Err(FetchError::Mismatch {
                what: what.into(),
                source_name: source.into(),
                expected: expected.clone(),
                actual,
            });
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    result
}

/// A download whose reconnects are shown as they happen.
struct Noting<'a> {
    inner: &'a mut net::Download,
    rx: std::sync::mpsc::Receiver<net::Reconnect>,
    note: &'a dyn Fn(&str),
}

impl Read for Noting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.inner.read(buf);
        while let Ok(rc) = self.rx.try_recv() {
            (self.note)(&rc.message());
        }
        r
    }
}

/// Turns a (possibly compressed) tarball into a plain one at `dest` (renamed when already plain),
/// with the writer's decoders: gzip, xz, zstd, bzip2, recognised by their magic bytes.
pub fn decompress_tarball(what: &str, src: &Path, dest: &Path) -> Result<(), FetchError> {
    let ioe = |context: String| io_error(what, context);
    let mut input = File::open(src).map_err(ioe(format!("opening {}", src.display())))?;
    let mut magic = [0u8; 6];
    let mut n = 0;
    while n < magic.len() {
        match input.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ioe(format!("reading {}", src.display()))(e)),
        }
    }
    let format = Format::detect(&magic[..n]);
    match format {
        Format::Raw => {
            std::fs::rename(src, dest).map_err(ioe(format!("moving {}", src.display())))?;
            return Ok(());
        }
        Format::SevenZ => {
            return Err(FetchError::Decompress {
                what: what.into(),
                path: src.into(),
                format: format.name().into(),
                detail: "a 7z archive is not a tarball; give a .tar, .tar.gz, .tar.xz, .tar.zst or .tar.bz2".into(),
            });
        }
        _ => {}
    }
    let input = File::open(src).map_err(ioe(format!("opening {}", src.display())))?;
    let decompress_err = |e: io::Error| FetchError::Decompress {
        what: what.into(),
        path: src.into(),
        format: format.name().into(),
        detail: e.to_string(),
    };
    let mut decoded = codec::decoder(
        format,
        Box::new(BufReader::new(input)),
        codec::WindowLimit::tarball(),
    )
    .map_err(decompress_err)?
    .0;
    let result = (|| {
        let mut output = File::create(dest).map_err(ioe(format!("creating {}", dest.display())))?;
        copy_chunks(&mut decoded, &mut output, &mut |_| {}).map_err(|e| match e {
            CopyFailure::Read(e) => decompress_err(e),
            CopyFailure::Write(e) => ioe(format!("writing {}", dest.display()))(e),
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
        return result;
    }
    let _ = std::fs::remove_file(src);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_local_files() {
        let (d, src) = crate::testutil::scratch("f");
        std::fs::write(&src, b"abc").unwrap();
        let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let dest = d.path().join("out");
        fetch_verified("t", src.to_str().unwrap(), good, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
        let bad = "0".repeat(64);
        let e = fetch_verified("t", src.to_str().unwrap(), &bad, &dest).unwrap_err();
        assert!(matches!(e, FetchError::Mismatch { .. }), "{e}");
        assert!(!dest.exists());
        assert!(parse_sha256("t", "xyz").is_err());
        assert_eq!(
            parse_sha256("t", &format!("sha256:{}", good.to_uppercase())).unwrap(),
            good
        );
    }

    #[test]
    fn decompresses_by_magic() {
        use std::process::Command;
        let (d, plain) = crate::testutil::scratch("p");
        std::fs::write(&plain, b"hello").unwrap();
        let st = Command::new("gzip").arg("-k").arg(&plain).status().unwrap();
        assert!(st.success());
        let out = d.path().join("o");
        decompress_tarball("t", &d.path().join("p.gz"), &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"hello");
    }
}
