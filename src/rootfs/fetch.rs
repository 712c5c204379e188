//! Files from outside the package manager (a prebuilt rootfs tarball, the DroidMote binary): a local path
//! or an http(s) URL, always checked against the sha256 the user gave before anything uses them.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{what}: {source_name} does not exist")]
    Missing { what: String, source_name: String },
    #[error("{what}: downloading {url} failed: {detail}")]
    Download {
        what: String,
        url: String,
        detail: String,
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
    #[error("{what}: decompressing {path} with {tool} failed: {detail}")]
    Decompress {
        what: String,
        path: PathBuf,
        tool: String,
        detail: String,
    },
}

impl FetchError {
    /// The user's input (path, checksum) is wrong, rather than the network or the machine.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            FetchError::Missing { .. } | FetchError::BadChecksum { .. }
        )
    }
}

/// Normalizes a sha256 given by the user.
pub fn parse_sha256(what: &str, given: &str) -> Result<String, FetchError> {
    let h = given.trim().to_ascii_lowercase();
    let h = h.strip_prefix("sha256:").unwrap_or(&h).to_string();
    if h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(h)
    } else {
        Err(FetchError::BadChecksum {
            what: what.into(),
            given: given.into(),
        })
    }
}

pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Copies or downloads `source` to `dest` and checks its sha256. `dest` is removed on any failure.
pub fn fetch_verified(
    what: &str,
    source: &str,
    sha256: &str,
    dest: &Path,
) -> Result<(), FetchError> {
    let expected = parse_sha256(what, sha256)?;
    let ioe = |context: String| {
        let what = what.to_string();
        move |source| FetchError::Io {
            what,
            context,
            source,
        }
    };
    let result = (|| {
        if is_url(source) {
            let curl = super::prerequisites::which("curl").ok_or_else(|| FetchError::Download {
                what: what.into(),
                url: source.into(),
                detail: "curl is not installed (apt-get install curl)".into(),
            })?;
            let out = Command::new(curl)
                .args([
                    "--fail",
                    "--silent",
                    "--show-error",
                    "--location",
                    "--retry",
                    "3",
                    "--output",
                ])
                .arg(dest)
                .arg(source)
                .stdin(Stdio::null())
                .output()
                .map_err(ioe("running curl".into()))?;
            if !out.status.success() {
                return Err(FetchError::Download {
                    what: what.into(),
                    url: source.into(),
                    detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
        } else {
            let src = Path::new(source.strip_prefix("file://").unwrap_or(source));
            if !src.is_file() {
                return Err(FetchError::Missing {
                    what: what.into(),
                    source_name: source.into(),
                });
            }
            std::fs::copy(src, dest).map_err(ioe(format!("copying {source}")))?;
        }
        let actual = sha256_file(dest).map_err(ioe(format!("hashing {}", dest.display())))?;
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

/// The decompressor for a tarball, by its magic bytes (None: plain tar).
fn decompressor(path: &Path) -> io::Result<Option<(&'static str, &'static [&'static str])>> {
    let mut magic = [0u8; 6];
    let mut f = File::open(path)?;
    let n = f.read(&mut magic)?;
    let m = &magic[..n];
    Ok(if m.starts_with(&[0x1f, 0x8b]) {
        Some(("gzip", &["-dc"]))
    } else if m.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some(("xz", &["-dc", "-T0"]))
    } else if m.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(("zstd", &["-dc"]))
    } else if m.starts_with(b"BZh") {
        Some(("bzip2", &["-dc"]))
    } else {
        None
    })
}

/// Turns a (possibly compressed) tarball into a plain one at `dest` (renamed when already plain).
pub fn decompress_tarball(what: &str, src: &Path, dest: &Path) -> Result<(), FetchError> {
    let ioe = |context: String| {
        let what = what.to_string();
        move |source| FetchError::Io {
            what,
            context,
            source,
        }
    };
    let Some((tool, args)) =
        decompressor(src).map_err(ioe(format!("reading {}", src.display())))?
    else {
        std::fs::rename(src, dest).map_err(ioe(format!("moving {}", src.display())))?;
        return Ok(());
    };
    let input = File::open(src).map_err(ioe(format!("opening {}", src.display())))?;
    let mut output = File::create(dest).map_err(ioe(format!("creating {}", dest.display())))?;
    let child = Command::new(tool)
        .args(args)
        .stdin(input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| FetchError::Decompress {
            what: what.into(),
            path: src.into(),
            tool: tool.into(),
            detail: format!("{e} (apt-get install {tool})"),
        })?;
    let mut child = child;
    if let Some(mut out) = child.stdout.take() {
        io::copy(&mut out, &mut output).map_err(ioe(format!("writing {}", dest.display())))?;
    }
    let res = child
        .wait_with_output()
        .map_err(ioe(format!("waiting for {tool}")))?;
    output
        .flush()
        .map_err(ioe(format!("writing {}", dest.display())))?;
    if !res.status.success() {
        return Err(FetchError::Decompress {
            what: what.into(),
            path: src.into(),
            tool: tool.into(),
            detail: String::from_utf8_lossy(&res.stderr).trim().to_string(),
        });
    }
    let _ = std::fs::remove_file(src);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_local_files() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("f");
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
        let d = tempfile::tempdir().unwrap();
        let plain = d.path().join("p");
        std::fs::write(&plain, b"hello").unwrap();
        let st = Command::new("gzip").arg("-k").arg(&plain).status().unwrap();
        assert!(st.success());
        let out = d.path().join("o");
        decompress_tarball("t", &d.path().join("p.gz"), &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"hello");
    }
}
