//! Checksums of a finished image in one read pass: whole-image SHA-256 and MD5 (holes hashed as the zeros
//! they read as, without reading them) and the SHA-256 of every block-map range. Hashers run on their own
//! threads; MD5 is the slowest stage on most CPUs.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread;

use md5::Md5;
use sha2::{Digest, Sha256};

const CHUNK: usize = 1 << 20;

/// Whether `s` is exactly `digits` hex digits (either case): the one check of a digest given by a
/// user, a sums file or a bmap.
pub fn is_hex_digest(s: &str, digits: usize) -> bool {
    s.len() == digits && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `s` without surrounding white space, in lower case, if it is a digest of `digits` hex digits.
pub fn parse_hex_digest(s: &str, digits: usize) -> Option<String> {
    let t = s.trim();
    is_hex_digest(t, digits).then(|| t.to_ascii_lowercase())
}

/// A whole file's size and digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub size: u64,
    pub sha256: String,
    /// Only when asked for: MD5 costs as much again as SHA-256.
    pub md5: Option<String>,
}

/// Size, SHA-256 and (with `md5`) MD5 of the file at `path`, read once from start to end: the one
/// digest of a file that is not an image (a compressed release, a cache tarball).
pub fn digest_file(path: &std::path::Path, md5: bool) -> io::Result<FileDigest> {
    use std::io::Read;
    let mut f = File::open(path)?;
    let mut sha = Sha256::new();
    let mut md5 = md5.then(Md5::new);
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sha.update(&buf[..n]);
        if let Some(m) = md5.as_mut() {
            m.update(&buf[..n]);
        }
        size += n as u64;
    }
    Ok(FileDigest {
        size,
        sha256: hex::encode(sha.finalize()),
        md5: md5.map(|m| hex::encode(m.finalize())),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDigest {
    pub sha256: String,
    pub md5: String,
    /// SHA-256 of each requested range, in the order given.
    pub range_sha256: Vec<String>,
}

struct Chunk {
    offset: u64,
    data: Arc<Vec<u8>>,
    len: usize,
}

/// Hashes `file` (of `size` bytes). `ranges` must be sorted and disjoint; `data` are the extents holding
/// data (everything else reads as zeros and is not read).
pub fn digest_image(
    file: &File,
    size: u64,
    data: &[(u64, u64)],
    ranges: &[(u64, u64)],
) -> io::Result<ImageDigest> {
    let zeros = Arc::new(vec![0u8; CHUNK]);
    let (tx_sha, rx_sha) = sync_channel::<Chunk>(8);
    let (tx_md5, rx_md5) = sync_channel::<Chunk>(8);
    let (tx_rng, rx_rng) = sync_channel::<Chunk>(8);

    thread::scope(|s| {
        let sha = s.spawn(move || {
            let mut h = Sha256::new();
            for c in rx_sha {
                h.update(&c.data[..c.len]);
            }
            hex::encode(h.finalize())
        });
        let md5 = s.spawn(move || {
            let mut h = Md5::new();
            for c in rx_md5 {
                h.update(&c.data[..c.len]);
            }
            hex::encode(h.finalize())
        });
        let rng = s.spawn(move || range_hashes(rx_rng, ranges));

        let send = |c: Chunk, to_ranges: bool| -> bool {
            let ok = tx_sha
                .send(Chunk {
                    offset: c.offset,
                    data: c.data.clone(),
                    len: c.len,
                })
                .is_ok()
                && tx_md5
                    .send(Chunk {
                        offset: c.offset,
                        data: c.data.clone(),
                        len: c.len,
                    })
                    .is_ok();
            ok && (!to_ranges || tx_rng.send(c).is_ok())
        };
        let mut pos = 0u64;
        let mut extents = data.iter().copied().peekable();
        let result: io::Result<()> = (|| {
            while pos < size {
                // Skip extents that end before pos.
                while extents.peek().is_some_and(|&(_, e)| e <= pos) {
                    extents.next();
                }
                let (in_data, until) = match extents.peek() {
                    Some(&(s, e)) if s <= pos => (true, e.min(size)),
                    Some(&(s, _)) => (false, s.min(size)),
                    None => (false, size),
                };
                let len = (until - pos).min(CHUNK as u64) as usize;
                if in_data {
                    let mut buf = vec![0u8; len];
                    file.read_exact_at(&mut buf, pos)?;
                    if !send(
                        Chunk {
                            offset: pos,
                            data: Arc::new(buf),
                            len,
                        },
                        true,
                    ) {
                        break;
                    }
                } else if !send(
                    Chunk {
                        offset: pos,
                        data: zeros.clone(),
                        len,
                    },
                    true,
                ) {
                    break;
                }
                pos += len as u64;
            }
            Ok(())
        })();
        drop((tx_sha, tx_md5, tx_rng));
        let sha256 = sha
            .join()
            .map_err(|_| io::Error::other("sha256 thread panicked"))?;
        let md5 = md5
            .join()
            .map_err(|_| io::Error::other("md5 thread panicked"))?;
        let range_sha256 = rng
            .join()
            .map_err(|_| io::Error::other("range hash thread panicked"))?;
        result?;
        Ok(ImageDigest {
            sha256,
            md5,
            range_sha256,
        })
    })
}

fn range_hashes(rx: Receiver<Chunk>, ranges: &[(u64, u64)]) -> Vec<String> {
    let mut out = Vec::with_capacity(ranges.len());
    let mut idx = 0;
    let mut h = Sha256::new();
    for c in rx {
        let (cs, ce) = (c.offset, c.offset + c.len as u64);
        while idx < ranges.len() {
            let (rs, re) = ranges[idx];
            if rs >= ce {
                break;
            }
            let s = rs.max(cs);
            let e = re.min(ce);
            if s < e {
                h.update(&c.data[(s - cs) as usize..(e - cs) as usize]);
            }
            if re <= ce {
                out.push(hex::encode(h.finalize_reset()));
                idx += 1;
            } else {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn hex_digests() {
        assert!(is_hex_digest("0aF9", 4));
        assert!(!is_hex_digest("0aF9", 3));
        assert!(!is_hex_digest(" 0aF9", 4));
        assert!(!is_hex_digest("0aG9", 4));
        assert_eq!(parse_hex_digest(" 0aF9\n", 4).as_deref(), Some("0af9"));
        assert_eq!(parse_hex_digest("0aF9", 5), None);
    }

    #[test]
    fn matches_plain_hashes_with_holes() {
        let mut f = tempfile::tempfile().unwrap();
        let size = 3 * CHUNK as u64 + 100;
        f.set_len(size).unwrap();
        f.write_all_at(b"hello", 10).unwrap();
        f.write_all_at(&vec![7u8; 5000], 2 * CHUNK as u64 - 10)
            .unwrap();
        f.flush().unwrap();
        let mut all = vec![0u8; size as usize];
        f.read_exact_at(&mut all, 0).unwrap();
        let data = crate::disk::sparse::data_extents(&f, 0, size).unwrap();
        let ranges = [
            (0u64, 4096u64),
            (2 * CHUNK as u64 - 4096, 2 * CHUNK as u64 + 8192),
        ];
        let d = digest_image(&f, size, &data, &ranges).unwrap();
        assert_eq!(d.sha256, hex::encode(Sha256::digest(&all)));
        assert_eq!(d.md5, hex::encode(Md5::digest(&all)));
        for (i, (s, e)) in ranges.iter().enumerate() {
            assert_eq!(
                d.range_sha256[i],
                hex::encode(Sha256::digest(&all[*s as usize..*e as usize]))
            );
        }
    }

    #[test]
    fn file_digests_match_the_known_vectors() {
        let (_d, p) = crate::testutil::scratch("abc");
        std::fs::write(&p, b"abc").unwrap();
        let d = digest_file(&p, true).unwrap();
        assert_eq!(d.size, 3);
        assert_eq!(
            d.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.md5.as_deref(), Some("900150983cd24fb0d6963f7d28e17f72"));
        assert_eq!(digest_file(&p, false).unwrap().md5, None);
        // Larger than one read buffer.
        std::fs::write(&p, vec![7u8; CHUNK * 2 + 5]).unwrap();
        let d = digest_file(&p, false).unwrap();
        assert_eq!(d.size, (CHUNK * 2 + 5) as u64);
        assert_eq!(
            d.sha256,
            hex::encode(Sha256::digest(vec![7u8; CHUNK * 2 + 5]))
        );
    }
}
