//! What a person needs to see and reach the board: screenshots of the emulated screen (through QMP, when
//! the console shows a pattern), an interactive screen (a window or VNC), and host ports forwarded to the
//! guest over QEMU's user-mode network.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use regex::Regex;
use serde::Serialize;

use crate::output::PendingFile;

use super::qmp::{Qmp, QmpError};

/// One screenshot to take: once `after` appears on the console (default: the boot's expected pattern),
/// `delay` later.
#[derive(Debug, Clone)]
pub struct ScreenshotSpec {
    pub file: PathBuf,
    pub after: Option<Regex>,
    pub delay: Duration,
}

/// A screenshot that was written.
#[derive(Debug, Clone, Serialize)]
pub struct Screenshot {
    pub file: PathBuf,
    pub width: u32,
    pub height: u32,
    /// Seconds from starting QEMU.
    pub seconds: f64,
    /// The console line that triggered it.
    pub trigger: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ScreenshotError {
    #[error("screenshot {file}: {source}")]
    Io {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("screenshot {file}: {source}")]
    Qmp {
        file: PathBuf,
        #[source]
        source: QmpError,
    },
    #[error("screenshot {file}: QEMU wrote {why}")]
    NotPng { file: PathBuf, why: String },
}

/// Width and height from a PNG's signature and IHDR chunk (the first 33 bytes): what QEMU wrote must
/// at least be a PNG with a plausible size before it takes the final name.
pub fn png_size(head: &[u8]) -> Result<(u32, u32), String> {
    const SIG: &[u8] = b"\x89PNG\r\n\x1a\n";
    if head.len() < 33 {
        return Err(format!("{} bytes, too short for a PNG", head.len()));
    }
    if &head[..8] != SIG {
        return Err("no PNG signature".into());
    }
    if &head[8..16] != b"\x00\x00\x00\x0dIHDR" {
        return Err("no IHDR chunk first".into());
    }
    let w = u32::from_be_bytes([head[16], head[17], head[18], head[19]]);
    let h = u32::from_be_bytes([head[20], head[21], head[22], head[23]]);
    if w == 0 || h == 0 || w > 16384 || h > 16384 {
        return Err(format!("an implausible size {w}x{h}"));
    }
    if crc32fast::hash(&head[12..29]).to_be_bytes() != head[29..33] {
        return Err("a bad IHDR checksum".into());
    }
    Ok((w, h))
}

/// Takes one screenshot: QEMU writes the PNG under a temporary name next to `file`, which is checked,
/// synced and renamed only when complete. On any failure nothing is left under either name.
pub fn take(qmp: &mut Qmp, file: &Path) -> Result<(u32, u32), ScreenshotError> {
    let io_err = |source| ScreenshotError::Io {
        file: file.to_path_buf(),
        source,
    };
    let (pending, _) = PendingFile::create(file).map_err(io_err)?;
    // QEMU opens the path itself: give it an absolute one (its working directory is ours, but be exact).
    let temp = std::path::absolute(pending.temp_path()).map_err(io_err)?;
    qmp.screendump(&temp)
        .map_err(|source| ScreenshotError::Qmp {
            file: file.to_path_buf(),
            source,
        })?;
    let mut f = File::open(&temp).map_err(io_err)?;
    let mut head = Vec::with_capacity(33);
    (&mut f).take(33).read_to_end(&mut head).map_err(io_err)?;
    let size = png_size(&head).map_err(|why| ScreenshotError::NotPng {
        file: file.to_path_buf(),
        why,
    })?;
    f.sync_all().map_err(io_err)?;
    pending.commit().map_err(io_err)?;
    Ok(size)
}

/// How the screen is shown to a person while the board runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screen {
    /// Not shown (screenshots still work).
    Hidden,
    /// A window of QEMU's user interface (`gtk` or `sdl`).
    Window(String),
    /// A VNC server.
    Vnc(VncAddr),
}

/// `[ADDR]:N`: VNC display N (TCP port 5900+N) on ADDR, 127.0.0.1 unless given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VncAddr {
    pub addr: Ipv4Addr,
    pub display: u16,
}

impl VncAddr {
    pub fn port(&self) -> u16 {
        5900 + self.display
    }
}

impl FromStr for VncAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, n) = s.rsplit_once(':').ok_or_else(|| {
            format!("`{s}` is not [ADDRESS]:DISPLAY (e.g. :1 for 127.0.0.1 port 5901)")
        })?;
        let addr = if addr.is_empty() {
            Ipv4Addr::LOCALHOST
        } else {
            addr.parse()
                .map_err(|_| format!("`{addr}` is not an IPv4 address"))?
        };
        let display: u16 = n
            .parse()
            .ok()
            .filter(|d| *d <= 65535 - 5900)
            .ok_or_else(|| format!("`{n}` is not a VNC display number (0 to {})", 65535 - 5900))?;
        Ok(VncAddr { addr, display })
    }
}

impl fmt::Display for VncAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.addr, self.display)
    }
}

/// `[ADDR:]HOST_PORT:GUEST_PORT`: connections to ADDR:HOST_PORT on the host (127.0.0.1 unless given)
/// reach GUEST_PORT on the board, over QEMU's user-mode network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Forward {
    pub addr: Ipv4Addr,
    pub host_port: u16,
    pub guest_port: u16,
}

impl FromStr for Forward {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let (addr, host, guest) = match parts[..] {
            [h, g] => (Ipv4Addr::LOCALHOST, h, g),
            [a, h, g] => (
                a.parse()
                    .map_err(|_| format!("`{a}` is not an IPv4 address"))?,
                h,
                g,
            ),
            _ => {
                return Err(format!(
                    "`{s}` is not [ADDRESS:]HOST_PORT:GUEST_PORT (e.g. 2222:22)"
                ));
            }
        };
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{p}` is not a TCP port (1 to 65535)"))
        };
        Ok(Forward {
            addr,
            host_port: port(host)?,
            guest_port: port(guest)?,
        })
    }
}

impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}->{}", self.addr, self.host_port, self.guest_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_parse_and_default_to_loopback() {
        assert_eq!(
            "2222:22".parse::<Forward>().unwrap(),
            Forward {
                addr: Ipv4Addr::LOCALHOST,
                host_port: 2222,
                guest_port: 22
            }
        );
        let f: Forward = "0.0.0.0:2303:2303".parse().unwrap();
        assert_eq!(f.addr, Ipv4Addr::UNSPECIFIED);
        for bad in [
            "22",
            "a:22",
            "2222:0",
            "2222:65536",
            "::1:22:22",
            "host:1:2",
            "1:2:3:4",
            "",
        ] {
            assert!(bad.parse::<Forward>().is_err(), "{bad}");
        }
    }

    #[test]
    fn vnc_addresses() {
        let v: VncAddr = ":1".parse().unwrap();
        assert_eq!((v.addr, v.port()), (Ipv4Addr::LOCALHOST, 5901));
        let v: VncAddr = "0.0.0.0:0".parse().unwrap();
        assert_eq!(v.to_string(), "0.0.0.0:0");
        for bad in ["1", ":x", ":59636", "host:1", ":-1"] {
            assert!(bad.parse::<VncAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn png_headers_are_checked() {
        // A real 2x1 PNG header (signature, IHDR with its CRC).
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(2u32.to_be_bytes());
        ihdr.extend(1u32.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0d".to_vec();
        png.extend(&ihdr);
        png.extend(crc32fast::hash(&ihdr).to_be_bytes());
        assert_eq!(png_size(&png), Ok((2, 1)));
        let mut bad = png.clone();
        // The bit depth: inside the checksummed bytes, the size stays plausible.
        bad[24] ^= 1;
        assert!(png_size(&bad).unwrap_err().contains("checksum"));
        assert!(png_size(&png[..20]).is_err());
        assert!(png_size(b"GIF89a..........................................").is_err());
    }
}
