//! Strings in the kernel image. Drivers set up before the driver core (clocks, interrupt controllers,
//! timers: `CLK_OF_DECLARE`, `IRQCHIP_DECLARE`, ...) and built-in drivers without a module device table
//! leave no alias in `modules.builtin.modinfo`; their compatible strings are only in the kernel's data, as
//! the `compatible[128]` field of an `of_device_id`, NUL-padded. So a compatible that appears in the image
//! as a whole NUL-delimited string is claimed by built-in code.
//!
//! An ARM `zImage` carries the kernel compressed (Debian's armmp: xz); an arm64 `Image` is plain, or the
//! whole file is gzip-compressed. Output is bounded.

use std::collections::HashSet;
use std::io::Read;

/// Largest kernel file read, and largest decompressed image.
pub const MAX_KERNEL_FILE: u64 = 128 << 20;
pub const MAX_IMAGE: u64 = 512 << 20;
/// A decompressed payload smaller than this is not the kernel (a false magic inside other data).
const MIN_IMAGE: usize = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelError {
    #[error("no kernel image found in it (no xz, gzip or zstd payload, and not a plain Image)")]
    NoImage,
    #[error("the kernel decompresses to more than {MAX_IMAGE} bytes")]
    TooLarge,
}

/// The set of NUL-delimited printable strings of 2 to 128 bytes in the (decompressed) kernel.
#[derive(Debug, Clone, Default)]
pub struct KernelStrings {
    strings: HashSet<Vec<u8>>,
    /// How the image was found: "plain", "xz at 55592", ...
    pub source: String,
}

impl KernelStrings {
    pub fn contains(&self, s: &str) -> bool {
        self.strings.contains(s.as_bytes())
    }

    pub fn len(&self) -> usize {
        self.strings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    /// Reads a kernel file as the bootloader gets it.
    pub fn from_kernel_file(data: &[u8]) -> Result<KernelStrings, KernelError> {
        // An arm64 Image: "ARM\x64" at byte 56; a plain image is scanned as it is.
        if data.get(56..60) == Some(b"ARMd") {
            return Ok(Self::scan(data, "plain Image".into()));
        }
        let magics: [(&str, &[u8]); 3] = [
            ("xz", &[0xfd, b'7', b'z', b'X', b'Z', 0]),
            ("gzip", &[0x1f, 0x8b, 0x08]),
            ("zstd", &[0x28, 0xb5, 0x2f, 0xfd]),
        ];
        // Candidates in file order; a compressed kernel has its payload near the start, so only the first
        // few hits of each magic are tried.
        let mut candidates: Vec<(usize, &str)> = Vec::new();
        for (name, m) in magics {
            let mut from = 0;
            let mut hits = 0;
            while hits < 4 {
                let Some(i) = find(&data[from..], m) else {
                    break;
                };
                candidates.push((from + i, name));
                from += i + 1;
                hits += 1;
            }
        }
        candidates.sort_unstable();
        for (at, kind) in candidates {
            let input = &data[at..];
            let out = match kind {
                "xz" => {
                    match liblzma::stream::Stream::new_stream_decoder(super::MAX_DECODER_MEMORY, 0)
                    {
                        Ok(st) => decode(liblzma::read::XzDecoder::new_stream(input, st)),
                        Err(_) => continue,
                    }
                }
                "gzip" => decode(flate2::read::GzDecoder::new(input)),
                _ => match zstd::stream::read::Decoder::new(input) {
                    Ok(d) => decode(d),
                    Err(_) => continue,
                },
            };
            match out {
                Ok(img) if img.len() >= MIN_IMAGE => {
                    return Ok(Self::scan(&img, format!("{kind} payload at byte {at}")));
                }
                Err(KernelError::TooLarge) => return Err(KernelError::TooLarge),
                _ => continue,
            }
        }
        Err(KernelError::NoImage)
    }

    fn scan(img: &[u8], source: String) -> KernelStrings {
        let mut strings = HashSet::new();
        // Only what could be a compatible or a platform device name: keeps the set small.
        for s in img.split(|b| *b == 0) {
            if (2..=128).contains(&s.len())
                && s.iter().any(u8::is_ascii_alphabetic)
                && s.iter()
                    .all(|b| b.is_ascii_alphanumeric() || b",._+-/".contains(b))
            {
                strings.insert(s.to_vec());
            }
        }
        KernelStrings { strings, source }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decompresses up to [`MAX_IMAGE`] bytes; trailing data after the stream (the zImage's size word) and a
/// truncated stream are fine as long as enough came out.
fn decode(r: impl Read) -> Result<Vec<u8>, KernelError> {
    let mut out = Vec::new();
    let mut limited = r.take(MAX_IMAGE + 1);
    let _ = limited.read_to_end(&mut out);
    if out.len() as u64 > MAX_IMAGE {
        return Err(KernelError::TooLarge);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn image() -> Vec<u8> {
        let mut img = vec![0u8; MIN_IMAGE];
        img.extend_from_slice(b"\0allwinner,sun4i-a10-ccu\0\0\0simple-bus\0x\0a b\0");
        img
    }

    #[test]
    fn plain_arm64_image() {
        let mut img = image();
        img[56..60].copy_from_slice(b"ARMd");
        let k = KernelStrings::from_kernel_file(&img).unwrap();
        assert!(k.contains("allwinner,sun4i-a10-ccu") && k.contains("simple-bus"));
        assert!(!k.contains("x") && !k.contains("allwinner") && !k.contains("a b"));
    }

    #[test]
    fn compressed_payload_inside_a_stub() {
        let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 1);
        enc.write_all(&image()).unwrap();
        let xz = enc.finish().unwrap();
        // A decompressor stub with a false gzip magic before the payload, and the size word after it.
        let mut z = b"stub\x1f\x8b\x08garbage".to_vec();
        z.extend_from_slice(&xz);
        z.extend_from_slice(&[1, 2, 3, 4]);
        let k = KernelStrings::from_kernel_file(&z).unwrap();
        assert!(k.contains("allwinner,sun4i-a10-ccu"));
        assert!(k.source.starts_with("xz"), "{}", k.source);
        assert_eq!(
            KernelStrings::from_kernel_file(b"no kernel here").unwrap_err(),
            KernelError::NoImage
        );
    }
}
