//! `direct_boot = "extlinux"`: boardsmith does what U-Boot's distro boot would, without U-Boot. It reads
//! `extlinux/extlinux.conf` from the image's boot partition (with mtools, as U-Boot would read the FAT),
//! takes the entry's kernel and initrd into unnamed temporary files that QEMU inherits, and starts them
//! with QEMU's own device tree — the entry's `fdt` names the real board's, which describes hardware the
//! emulated machine does not have. The command line is the entry's `append`, with its serial `console=`
//! replaced by the emulator's.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::profile::{DirectBoot, Profile, Role};

/// Largest extlinux.conf read.
const MAX_CONF: u64 = 64 * 1024;
/// Largest kernel or initrd taken from the image.
const MAX_FILE: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum DirectBootError {
    #[error("{image}: {message}")]
    Image { image: PathBuf, message: String },
    #[error("{image}: {path} on the boot partition: {message}")]
    File {
        image: PathBuf,
        path: String,
        message: String,
    },
    #[error("{image}: extlinux.conf line {line}: {message}")]
    Conf {
        image: PathBuf,
        line: usize,
        message: String,
    },
    #[error("running mcopy (mtools): {0}; install mtools (scripts/install-deps.sh)")]
    Mtools(#[source] io::Error),
    #[error("temporary file for the kernel: {0}")]
    Temp(#[source] io::Error),
}

/// The entry of an extlinux.conf that U-Boot would boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kernel: String,
    pub initrd: Option<String>,
    pub append: String,
}

/// Parses an extlinux.conf as U-Boot's PXE/extlinux code reads it: `default LABEL` picks the entry
/// (else the first), `kernel`/`linux`, `initrd` and `append` inside it; `fdt`, `fdtdir`, `menu`,
/// `timeout` and the like are accepted and ignored. Errors name the line.
pub fn parse_extlinux(text: &str) -> Result<Entry, (usize, String)> {
    let mut default: Option<String> = None;
    struct Label {
        name: String,
        line: usize,
        kernel: Option<String>,
        initrd: Option<String>,
        append: String,
    }
    let mut entries: Vec<Label> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, rest) = match line.split_once(char::is_whitespace) {
            Some((k, r)) => (k.to_ascii_lowercase(), r.trim().to_string()),
            None => (line.to_ascii_lowercase(), String::new()),
        };
        match key.as_str() {
            "default" => default = Some(rest),
            "label" => entries.push(Label {
                name: rest,
                line: n,
                kernel: None,
                initrd: None,
                append: String::new(),
            }),
            "kernel" | "linux" | "initrd" | "append" => {
                let Some(e) = entries.last_mut() else {
                    return Err((n, format!("`{key}` before any `label`")));
                };
                if rest.is_empty() {
                    return Err((n, format!("`{key}` without a value")));
                }
                match key.as_str() {
                    "append" => e.append = rest,
                    "initrd" => {
                        if rest.contains(',') {
                            return Err((n, "several initrds are not supported".into()));
                        }
                        e.initrd = Some(rest)
                    }
                    _ => e.kernel = Some(rest),
                }
            }
            _ => {}
        }
    }
    let chosen = match &default {
        Some(d) => entries
            .iter()
            .find(|e| &e.name == d)
            .ok_or_else(|| (0, format!("`default {d}` names no label")))?,
        None => entries
            .first()
            .ok_or_else(|| (0, "no `label` entry".to_string()))?,
    };
    let kernel = chosen.kernel.clone().ok_or_else(|| {
        (
            chosen.line,
            format!("entry `{}` has no kernel", chosen.name),
        )
    })?;
    Ok(Entry {
        kernel,
        initrd: chosen.initrd.clone(),
        append: chosen.append.clone(),
    })
}

/// The command line with every serial `console=` replaced by `console` (last, so that it is
/// /dev/console); `console=ttyN` (virtual terminals) stay.
pub fn replace_console(append: &str, console: Option<&str>) -> String {
    let Some(console) = console else {
        return append.to_string();
    };
    let is_vt = |dev: &str| {
        dev.strip_prefix("tty")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut words: Vec<String> = append
        .split_whitespace()
        .filter(|w| match w.strip_prefix("console=") {
            Some(dev) => is_vt(dev.split(',').next().unwrap_or("")),
            None => true,
        })
        .map(String::from)
        .collect();
    words.push(format!("console={console}"));
    words.join(" ")
}

/// A path in extlinux.conf, as a path on the partition for mtools (`::/zImage`): an absolute path is
/// from the partition's root, a relative one from extlinux.conf's directory (`dir`), as U-Boot reads them.
pub fn partition_path(p: &str, dir: &str) -> Result<String, String> {
    let full = match p.strip_prefix('/') {
        Some(abs) => abs.to_string(),
        None => format!("{dir}{p}"),
    };
    if full.is_empty()
        || full
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        || full.chars().any(|c| c.is_control())
    {
        return Err(format!("`{p}` is not a plain path on the boot partition"));
    }
    Ok(format!("::/{full}"))
}

/// The kernel, initrd and command line to start.
pub struct Kernel {
    pub kernel: File,
    pub initrd: Option<File>,
    pub cmdline: String,
}

impl Kernel {
    /// Descriptors QEMU must inherit.
    pub fn fds(&self) -> Vec<i32> {
        std::iter::once(self.kernel.as_raw_fd())
            .chain(self.initrd.as_ref().map(AsRawFd::as_raw_fd))
            .collect()
    }

    /// QEMU's options for a direct kernel boot (the files as inherited descriptors).
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "-kernel".to_string(),
            format!("/proc/self/fd/{}", self.kernel.as_raw_fd()),
        ];
        if let Some(i) = &self.initrd {
            a.extend(["-initrd".into(), format!("/proc/self/fd/{}", i.as_raw_fd())]);
        }
        a.extend(["-append".into(), self.cmdline.clone()]);
        a
    }
}

/// Copies `path` from the FAT at `offset` of `image` into `into`, at most `limit` bytes.
fn mcopy(
    image: &Path,
    offset: u64,
    path: &str,
    into: &mut File,
    limit: u64,
) -> Result<u64, String> {
    let mut child = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("MTOOLSRC", "/dev/null")
        .arg("-n")
        .arg("-i")
        .arg({
            // The path as bytes (not as displayed text): mtools takes IMAGE@@OFFSET.
            let mut a = image.as_os_str().to_os_string();
            a.push(format!("@@{offset}"));
            a
        })
        .arg(path)
        .arg("-")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run mcopy (mtools): {e}"))?;
    let mut out = child.stdout.take().ok_or("mcopy has no stdout")?;
    let copied = io::copy(&mut (&mut out).take(limit + 1), into);
    drop(out);
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = (&mut e).take(4096).read_to_string(&mut err);
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let n = copied.map_err(|e| e.to_string())?;
    if n > limit {
        let _ = child.kill();
        return Err(format!("larger than {limit} bytes"));
    }
    if !status.success() {
        return Err(err.trim().to_string());
    }
    Ok(n)
}

/// Reads the boot partition of `image` and prepares the kernel QEMU starts.
pub fn prepare(
    image: &Path,
    profile: &Profile,
    direct: &DirectBoot,
) -> Result<Kernel, DirectBootError> {
    let img_err = |message: String| DirectBootError::Image {
        image: image.to_path_buf(),
        message,
    };
    if image
        .as_os_str()
        .as_encoded_bytes()
        .windows(2)
        .any(|w| w == b"@@")
    {
        return Err(img_err(
            "the image's path contains `@@`, which mtools reads as an offset; rename it".into(),
        ));
    }
    let number = profile
        .partition(Role::Boot)
        .map(|(i, _)| i as u32 + 1)
        .ok_or_else(|| {
            img_err("the profile has no boot partition to read extlinux.conf from".into())
        })?;
    let parts = crate::disk::table::partition_offsets(image).map_err(|e| img_err(e.to_string()))?;
    let (_, offset, _) = parts.into_iter().find(|p| p.0 == number).ok_or_else(|| {
        img_err(format!(
            "no partition {number} (the profile's boot partition)"
        ))
    })?;
    // U-Boot looks in / and then /boot/ of the partition.
    let mut conf = Vec::new();
    let mut found = None;
    for (candidate, prefix) in [
        ("::/extlinux/extlinux.conf", "extlinux/"),
        ("::/boot/extlinux/extlinux.conf", "boot/extlinux/"),
    ] {
        let mut tmp = tempfile::tempfile().map_err(DirectBootError::Temp)?;
        if mcopy(image, offset, candidate, &mut tmp, MAX_CONF).is_ok() {
            use std::io::Seek;
            tmp.rewind().map_err(DirectBootError::Temp)?;
            (&mut tmp)
                .take(MAX_CONF)
                .read_to_end(&mut conf)
                .map_err(DirectBootError::Temp)?;
            found = Some(prefix);
            break;
        }
    }
    let Some(dir) = found else {
        return Err(img_err(format!(
            "partition {number} has no extlinux/extlinux.conf (nor boot/extlinux/extlinux.conf)"
        )));
    };
    let text = String::from_utf8_lossy(&conf);
    let entry = parse_extlinux(&text).map_err(|(line, message)| DirectBootError::Conf {
        image: image.to_path_buf(),
        line,
        message,
    })?;
    let take = |p: &str| -> Result<File, DirectBootError> {
        let file_err = |message: String| DirectBootError::File {
            image: image.to_path_buf(),
            path: p.to_string(),
            message,
        };
        let path = partition_path(p, dir).map_err(file_err)?;
        let mut f = tempfile::tempfile().map_err(DirectBootError::Temp)?;
        let n = mcopy(image, offset, &path, &mut f, MAX_FILE).map_err(file_err)?;
        if n == 0 {
            return Err(file_err("is empty".into()));
        }
        Ok(f)
    };
    let kernel = take(&entry.kernel)?;
    let initrd = entry.initrd.as_deref().map(take).transpose()?;
    Ok(Kernel {
        kernel,
        initrd,
        cmdline: replace_console(&entry.append, direct.console.as_deref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boardsmiths_extlinux_conf_is_read() {
        let conf = "# Generated by boardsmith.\ndefault boardsmith\n\nlabel boardsmith\n    menu label Cubieboard\n    linux /zImage\n    initrd /initrd.img\n    fdt /dtbs/sun4i-a10-cubieboard.dtb\n    append console=ttyS0,115200 root=PARTUUID=ed857263-02 rootwait\n";
        assert_eq!(
            parse_extlinux(conf).unwrap(),
            Entry {
                kernel: "/zImage".into(),
                initrd: Some("/initrd.img".into()),
                append: "console=ttyS0,115200 root=PARTUUID=ed857263-02 rootwait".into()
            }
        );
    }

    #[test]
    fn default_picks_the_entry_and_errors_name_lines() {
        let conf = "LABEL a\nKERNEL /a\nlabel b\nlinux /b\nappend x\ndefault b\n";
        assert_eq!(parse_extlinux(conf).unwrap().kernel, "/b");
        assert_eq!(parse_extlinux("label a\nkernel /a\n").unwrap().kernel, "/a");
        assert_eq!(parse_extlinux("kernel /a\n").unwrap_err().0, 1);
        assert!(parse_extlinux("default c\nlabel a\nkernel /a\n").is_err());
        assert_eq!(parse_extlinux("label a\nappend x\n").unwrap_err().0, 1);
        assert!(parse_extlinux("").is_err());
        assert_eq!(
            parse_extlinux("label a\nkernel /k\ninitrd /a,/b\n")
                .unwrap_err()
                .0,
            3
        );
    }

    #[test]
    fn serial_consoles_are_replaced_and_terminals_kept() {
        assert_eq!(
            replace_console(
                "console=tty1 console=ttyS0,115200 root=X rootwait",
                Some("ttyAMA0")
            ),
            "console=tty1 root=X rootwait console=ttyAMA0"
        );
        assert_eq!(replace_console("root=X", None), "root=X");
        assert_eq!(
            replace_console("console=ttyS0 console=hvc0", Some("ttyAMA0")),
            "console=ttyAMA0"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5_000))]
        /// Whatever an image's extlinux.conf says: an entry with a kernel or a line-numbered error, and
        /// the files it names either stay on the partition or are refused.
        #[test]
        fn any_extlinux_conf_gives_an_entry_on_the_partition_or_an_error(
            conf in "((default|label|kernel|linux|initrd|append|fdt|menu|#)[ \t]{0,2}[ -~]{0,20}\n){0,8}"
        ) {
            match parse_extlinux(&conf) {
                Ok(e) => {
                    proptest::prop_assert!(!e.kernel.is_empty());
                    for p in std::iter::once(&e.kernel).chain(&e.initrd) {
                        if let Ok(path) = partition_path(p, "extlinux/") {
                            let rest = path.strip_prefix("::/").unwrap();
                            proptest::prop_assert!(
                                rest.split('/').all(|c| !c.is_empty() && c != "." && c != ".."),
                                "{path}"
                            );
                        }
                    }
                }
                Err((line, _)) => proptest::prop_assert!(line <= conf.lines().count()),
            }
        }

        /// The emulator's console replaces every serial console and is the last one (/dev/console).
        #[test]
        fn the_emulators_console_is_the_last(append in "(console=(ttyS0|ttyAMA0,115200|tty1|hvc0) |root=X |quiet ){0,6}") {
            let out = replace_console(&append, Some("ttyAMA0"));
            let consoles: Vec<&str> = out.split_whitespace().filter(|w| w.starts_with("console=")).collect();
            proptest::prop_assert_eq!(consoles.last().copied(), Some("console=ttyAMA0"));
            proptest::prop_assert!(consoles[..consoles.len() - 1].iter().all(|c| *c == "console=tty1"));
        }
    }

    #[test]
    fn partition_paths_stay_on_the_partition() {
        assert_eq!(partition_path("/zImage", "extlinux/").unwrap(), "::/zImage");
        assert_eq!(
            partition_path("../dtbs/x.dtb", "extlinux/").unwrap_err(),
            "`../dtbs/x.dtb` is not a plain path on the boot partition"
        );
        assert_eq!(
            partition_path("Image", "boot/extlinux/").unwrap(),
            "::/boot/extlinux/Image"
        );
        for bad in ["/../etc/passwd", "/a//b", "/", "/a/./b", "/a\nb"] {
            assert!(partition_path(bad, "extlinux/").is_err(), "{bad:?}");
        }
    }
}
