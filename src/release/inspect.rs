//! What is really in a built image, read back from it: the root filesystem's files through `debugfs`
//! (kernel version and config, Debian package versions, boardsmith's rootfs manifest) and the U-Boot
//! version string inside the bootloader blob.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::disk::table::{TableError, partition_offsets};

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Reading the image (its bootloader area or its partition table) failed.
    #[error(transparent)]
    Image(#[from] TableError),
    #[error("{path} has no partition {number} (the profile's root partition)")]
    NoPartition { path: String, number: u32 },
    #[error("running debugfs (e2fsprogs): {0}")]
    Debugfs(#[source] std::io::Error),
    /// A value read from the image that the release notes (published as they are) cannot carry.
    #[error(
        "{image}: {file} in the image's root filesystem: {field} {value} {problem}; the release notes would publish it, so nothing was released. Rebuild the image from a root filesystem you trust (boardsmith rootfs), or correct that file"
    )]
    Untrusted {
        image: String,
        /// The file inside the image, and the line when known (`/var/lib/dpkg/status:12`).
        file: String,
        field: String,
        /// The value, quoted and escaped (shortened when long).
        value: String,
        problem: String,
    },
    #[error(
        "{image}: {file} in the image's root filesystem is larger than {limit} bytes, more than any such file boardsmith writes or reads; rebuild the image from a root filesystem you trust (boardsmith rootfs)"
    )]
    TooLarge {
        image: String,
        file: String,
        limit: u64,
    },
    #[error(
        "{image}: /etc/boardsmith/manifest.json in the image's root filesystem is not a boardsmith rootfs manifest: {source}; rebuild the image from a root filesystem made by boardsmith rootfs, or correct that file"
    )]
    BadManifest {
        image: String,
        #[source]
        source: serde_json::Error,
    },
}

impl InspectError {
    /// The image itself carries something the release cannot publish.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            InspectError::Untrusted { .. }
                | InspectError::BadManifest { .. }
                | InspectError::TooLarge { .. }
        )
    }
}

/// What a value read from the image must look like before the release notes may carry it. Every value
/// is refused with a control character (a line break would start a new Markdown block: a heading, a
/// table, raw HTML); the names and versions are refused outside their characters too; the notes then
/// escape what is left (see `notes::inert`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `6.1.0-18-armmp`: letters, digits, `.` `+` `-` `_` `~`, at most 64 (the kernel's UTS length).
    KernelRelease,
    /// A Debian version (`2023.01+dfsg-2+deb12u3`, `1:2.3-4~bpo12+1`).
    DebianVersion,
    /// A login name (`valid_user_name`).
    User,
    /// A host name (one DNS label).
    Hostname,
    /// A Debian suite (`bookworm`).
    Suite,
    /// A rootfs feature name (`usb-net`).
    Feature,
    /// Free text: any printable characters.
    Text,
}

impl Rule {
    fn allows(self, v: &str) -> bool {
        let chars = |extra: &str, max: usize| {
            !v.is_empty()
                && v.len() <= max
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
        };
        match self {
            Rule::KernelRelease => chars(".+-_~", 64) && !v.starts_with(['-', '.']),
            Rule::DebianVersion => chars(".+-~:", 256),
            Rule::User => crate::rootfs::features::valid_user_name(v),
            Rule::Hostname => crate::rootfs::inputs::valid_hostname(v),
            Rule::Suite => crate::rootfs::inputs::valid_suite(v) && v.len() <= 64,
            Rule::Feature => {
                chars("-_", 64)
                    && v.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && !v.chars().any(|c| c.is_ascii_uppercase())
            }
            Rule::Text => true,
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Rule::KernelRelease => {
                "is not a kernel release (letters, digits, '.', '+', '-', '_' and '~', at most 64)"
            }
            Rule::DebianVersion => {
                "is not a Debian version (letters, digits, '.', '+', '-', '~' and ':')"
            }
            Rule::User => {
                "is not a login name (lowercase letters, digits, '_' and '-', starting with a letter or '_', at most 32, not root)"
            }
            Rule::Hostname => {
                "is not a host name (letters, digits and '-', not at either end, at most 63)"
            }
            Rule::Suite => "is not a Debian suite name such as bookworm",
            Rule::Feature => {
                "is not a feature name (lowercase letters, digits, '-' and '_', as in usb-net)"
            }
            Rule::Text => "",
        }
    }
}

/// Why `value` breaks `rule`, if it does: a control character (named, with its position), or
/// characters outside the rule's.
pub fn check(value: &str, rule: Rule) -> Result<(), String> {
    if let Some((at, c)) = crate::profile::control_char(value) {
        return Err(format!(
            "contains the control character {} at character {at}",
            crate::profile::describe_control(c)
        ));
    }
    if rule.allows(value) {
        Ok(())
    } else {
        Err(rule.expected().to_string())
    }
}

/// `value` quoted and escaped for a message, at most 80 characters of it.
fn quoted(value: &str) -> String {
    let short: String = value.chars().take(80).collect();
    let more = if short.len() < value.len() { "…" } else { "" };
    format!("{short:?}{more}")
}

/// [`check`], as the error naming `image`, the `file` inside it and the `field`.
fn checked(
    image: &Path,
    file: &str,
    field: &str,
    value: &str,
    rule: Rule,
) -> Result<(), InspectError> {
    check(value, rule).map_err(|problem| InspectError::Untrusted {
        image: image.display().to_string(),
        file: file.to_string(),
        field: field.to_string(),
        value: quoted(value),
        problem,
    })
}

/// What rootfs features the image's root filesystem was built with (written by `boardsmith rootfs`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RootfsManifest {
    pub features: Vec<String>,
    pub droidmote_port: Option<u16>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub suite: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ImageFacts {
    /// Kernel release from /boot/vmlinuz-VERSION (or /lib/modules) in the root filesystem.
    pub kernel_release: Option<String>,
    /// Version of the board's kernel package from the Debian package database, if there is one.
    pub kernel_package: Option<String>,
    pub bootloader_package: Option<String>,
    /// Version string found in the bootloader blob ("U-Boot 2023.01+dfsg-2+deb12u3").
    pub uboot: Option<String>,
    /// The kernel configuration shipped in /boot/config-VERSION.
    #[serde(skip)]
    pub kernel_config: Option<String>,
    pub manifest: Option<RootfsManifest>,
}

/// Runs one debugfs `request` on the ext4 filesystem at `offset` of `image` (read-only).
fn debugfs(
    image: &Path,
    offset: u64,
    request: String,
) -> Result<std::process::Output, InspectError> {
    Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(format!("{}?offset={offset}", image.display()))
        .output()
        .map_err(InspectError::Debugfs)
}

/// The most read of one file in the image (a dpkg status of a desktop image is a few MiB): a crafted
/// image must not make `release` hold gigabytes.
const MAX_CAT: u64 = 64 << 20;

/// Reads a file from an ext4 filesystem at `offset` of `image` with debugfs; None if it does not
/// exist. At most [`MAX_CAT`] bytes: a larger file is an error (debugfs is stopped there).
fn debugfs_cat(image: &Path, offset: u64, file: &str) -> Result<Option<Vec<u8>>, InspectError> {
    debugfs_cat_limited(image, offset, file, MAX_CAT)
}

fn debugfs_cat_limited(
    image: &Path,
    offset: u64,
    file: &str,
    limit: u64,
) -> Result<Option<Vec<u8>>, InspectError> {
    use std::io::Read as _;
    use std::process::Stdio;
    let mut child = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat \"{file}\""))
        .arg(format!("{}?offset={offset}", image.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(InspectError::Debugfs)?;
    let mut data = Vec::new();
    if let Some(out) = child.stdout.take() {
        out.take(limit + 1)
            .read_to_end(&mut data)
            .map_err(InspectError::Debugfs)?;
    }
    if data.len() as u64 > limit {
        let _ = child.kill();
        let _ = child.wait();
        return Err(InspectError::TooLarge {
            image: image.display().to_string(),
            file: file.to_string(),
            limit,
        });
    }
    // debugfs writes a banner and at most an error line to stderr: read after stdout, no deadlock.
    let out = child.wait_with_output().map_err(InspectError::Debugfs)?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || err.contains("not found") || err.contains("Bad magic") {
        return Ok(None);
    }
    Ok(Some(data))
}

fn debugfs_ls(image: &Path, offset: u64, dir: &str) -> Result<Vec<String>, InspectError> {
    let out = debugfs(image, offset, format!("ls -p \"{dir}\""))?;
    // `ls -p` prints /inode/mode/uid/gid/name/size/ per entry.
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split('/').nth(5).map(str::to_string))
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .collect())
}

/// Version of an installed package from a dpkg status file, and the (1-based) line it is on.
pub fn dpkg_version(status: &str, package: &str) -> Option<(String, usize)> {
    let mut installed = None;
    let mut first = 1;
    for para in status.split("\n\n") {
        let field = |name: &str| {
            para.split('\n').enumerate().find_map(|(i, l)| {
                l.strip_prefix(name)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(|v| (v.trim().to_string(), first + i))
            })
        };
        if field("Package").is_some_and(|(p, _)| p == package)
            && field("Status").is_some_and(|(s, _)| s.ends_with("installed"))
        {
            installed = field("Version");
        }
        first += para.split('\n').count() + 1;
    }
    installed
}

/// First "U-Boot <version>" in a blob ("U-Boot SPL …" is skipped: its version follows "SPL").
pub fn uboot_version(blob: &[u8]) -> Option<String> {
    let needle = b"U-Boot 20";
    let at = blob.windows(needle.len()).position(|w| w == needle)?;
    let version: String = blob[at + 7..]
        .iter()
        .take_while(|b| b.is_ascii_graphic())
        .map(|&b| b as char)
        .take(64)
        .collect();
    Some(format!("U-Boot {version}"))
}

/// Gathers the facts for release notes.
pub fn inspect(
    image: &Path,
    root_number: Option<u32>,
    kernel_package: &str,
    bootloader: Option<(&str, u64, u64)>,
) -> Result<ImageFacts, InspectError> {
    let mut facts = ImageFacts::default();
    // The blob's area, at most 32 MiB (every U-Boot is far smaller); none when the profile puts the
    // blob past the image's end.
    let area = bootloader.and_then(|(_, offset, limit)| {
        let len = limit.checked_sub(offset)?.min(32 << 20);
        Some((offset, usize::try_from(len).ok()?))
    });
    if let Some((offset, len)) = area {
        let path = image.display().to_string();
        let f = File::open(image).map_err(|source| TableError::Io {
            path: path.clone(),
            source,
        })?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset)
            .map_err(|source| TableError::Io { path, source })?;
        facts.uboot = uboot_version(&buf);
    }
    let Some(number) = root_number else {
        return Ok(facts);
    };
    let parts = partition_offsets(image)?;
    let (_, offset, _) = parts
        .iter()
        .find(|(n, _, _)| *n == number)
        .copied()
        .ok_or_else(|| InspectError::NoPartition {
            path: image.display().to_string(),
            number,
        })?;
    let boot = debugfs_ls(image, offset, "/boot")?;
    let mut releases: Vec<String> = boot
        .iter()
        .filter_map(|n| n.strip_prefix("vmlinuz-").map(str::to_string))
        .collect();
    releases.sort_by(|a, b| crate::rootfs::tree::version_cmp(a, b));
    let from_boot = !releases.is_empty();
    if releases.is_empty() {
        releases = debugfs_ls(image, offset, "/lib/modules")?;
        releases.sort_by(|a, b| crate::rootfs::tree::version_cmp(a, b));
    }
    facts.kernel_release = releases.last().cloned();
    if let Some(r) = &facts.kernel_release {
        // Checked before it goes into a debugfs request or a file name.
        let file = if from_boot {
            format!("/boot/vmlinuz-{}", r.escape_debug())
        } else {
            format!("/lib/modules/{}", r.escape_debug())
        };
        checked(
            image,
            &file,
            "kernel release (the file name)",
            r,
            Rule::KernelRelease,
        )?;
        let config_file = format!("/boot/config-{r}");
        if let Some(b) = debugfs_cat(image, offset, &config_file)? {
            let config = String::from_utf8_lossy(&b).into_owned();
            // Its values reach the kernel option report: one line each.
            for (i, line) in config.split('\n').enumerate() {
                checked(
                    image,
                    &format!("{config_file}:{}", i + 1),
                    "kernel config line",
                    line,
                    Rule::Text,
                )?;
            }
            facts.kernel_config = Some(config);
        }
    }
    if let Some(status) = debugfs_cat(image, offset, "/var/lib/dpkg/status")? {
        let status = String::from_utf8_lossy(&status);
        let version = |package: &str| -> Result<Option<String>, InspectError> {
            let Some((v, line)) = dpkg_version(&status, package) else {
                return Ok(None);
            };
            let file = format!("/var/lib/dpkg/status:{line}");
            let field = format!("`Version` of package {package}");
            checked(image, &file, &field, &v, Rule::DebianVersion)?;
            Ok(Some(v))
        };
        if !kernel_package.is_empty() {
            // The metapackage, or failing that the versioned image package it pulled in.
            facts.kernel_package = match version(kernel_package)? {
                Some(v) => Some(v),
                None => match &facts.kernel_release {
                    Some(r) => version(&format!("linux-image-{r}"))?,
                    None => None,
                },
            };
        }
        if let Some((pkg, _, _)) = bootloader {
            facts.bootloader_package = version(pkg)?;
        }
    }
    const MANIFEST: &str = "/etc/boardsmith/manifest.json";
    if let Some(m) = debugfs_cat(image, offset, MANIFEST)? {
        let m: RootfsManifest =
            serde_json::from_slice(&m).map_err(|source| InspectError::BadManifest {
                image: image.display().to_string(),
                source,
            })?;
        let field = |name: &str, v: &Option<String>, rule| match v {
            Some(v) => checked(image, MANIFEST, &format!("`{name}`"), v, rule),
            None => Ok(()),
        };
        field("user", &m.user, Rule::User)?;
        field("hostname", &m.hostname, Rule::Hostname)?;
        field("suite", &m.suite, Rule::Suite)?;
        for (i, f) in m.features.iter().enumerate() {
            checked(
                image,
                MANIFEST,
                &format!("`features[{i}]`"),
                f,
                Rule::Feature,
            )?;
        }
        facts.manifest = Some(m);
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_installed_versions() {
        let status = "Package: u-boot-sunxi\nStatus: install ok installed\nVersion: 2023.01+dfsg-2\n\nPackage: other\nStatus: deinstall ok config-files\nVersion: 1\n";
        assert_eq!(
            dpkg_version(status, "u-boot-sunxi"),
            Some(("2023.01+dfsg-2".to_string(), 3))
        );
        assert_eq!(dpkg_version(status, "other"), None);
    }

    /// A file is read from a real ext4 image (mke2fs -d) up to the limit; a larger one is an error,
    /// a missing one None.
    #[test]
    fn files_are_read_from_the_image_up_to_a_limit() {
        let (d, img) = crate::testutil::scratch("root.ext4");
        let tree = d.path().join("tree");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        let content = vec![b'x'; 10_000];
        std::fs::write(tree.join("etc/big"), &content).unwrap();
        let st = Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-d"])
            .arg(&tree)
            .arg(&img)
            .arg("4M")
            .status()
            .expect("mke2fs (e2fsprogs) runs");
        assert!(st.success());
        let read = |file: &str, limit| debugfs_cat_limited(&img, 0, file, limit);
        assert_eq!(read("/etc/big", 1 << 20).unwrap(), Some(content));
        assert!(read("/etc/missing", 1 << 20).unwrap().is_none());
        let e = read("/etc/big", 4096).unwrap_err();
        assert!(e.is_input_error());
        assert!(
            e.to_string()
                .contains("/etc/big in the image's root filesystem is larger than 4096 bytes"),
            "{e}"
        );
    }

    #[test]
    fn values_from_the_image_are_checked() {
        // Line numbers count across blank lines between paragraphs.
        let status = "Package: a\nStatus: install ok installed\nVersion: 1\n\n\nPackage: b\nStatus: install ok installed\nVersion: 2:1.0~rc1+dfsg-3\n";
        assert_eq!(
            dpkg_version(status, "b"),
            Some(("2:1.0~rc1+dfsg-3".into(), 8))
        );
        for (value, rule) in [
            ("6.1.0-18-armmp", Rule::KernelRelease),
            ("6.1.0+", Rule::KernelRelease),
            ("2023.01+dfsg-2+deb12u3", Rule::DebianVersion),
            ("1:2.3-4~bpo12+1", Rule::DebianVersion),
            ("debian", Rule::User),
            ("cubie-1", Rule::Hostname),
            ("bookworm-backports", Rule::Suite),
            ("usb-net", Rule::Feature),
            ("CONFIG_CMDLINE=\"a | <b> `c`\"", Rule::Text),
        ] {
            assert_eq!(check(value, rule), Ok(()), "{value}");
        }
        // One must-fail value per rule: line breaks and other control characters in any value,
        // Markdown or HTML where a name or version belongs.
        for (value, rule, wanted) in [
            (
                "desktop\n\n## Downloads",
                Rule::Feature,
                "U+000A (line feed) at character 8",
            ),
            ("bookworm\r", Rule::Suite, "U+000D (carriage return)"),
            ("x\u{1b}[2J", Rule::Text, "U+001B (escape)"),
            ("a\u{2028}b", Rule::Text, "U+2028"),
            (
                "6.1.0 <img src=x onerror=alert(1)>",
                Rule::KernelRelease,
                "not a kernel release",
            ),
            ("-rf", Rule::KernelRelease, "not a kernel release"),
            (&"9".repeat(65), Rule::KernelRelease, "at most 64"),
            (
                "1.0<img/src=x>",
                Rule::DebianVersion,
                "not a Debian version",
            ),
            ("", Rule::DebianVersion, "not a Debian version"),
            ("pi`", Rule::User, "not a login name"),
            ("root", Rule::User, "not root"),
            ("h.evil.example", Rule::Hostname, "not a host name"),
            ("bookworm**", Rule::Suite, "not a Debian suite"),
            ("../xfce", Rule::Feature, "not a feature name"),
            ("Desktop", Rule::Feature, "not a feature name"),
        ] {
            let e = check(value, rule).unwrap_err();
            assert!(e.contains(wanted), "{value:?}: {e}");
        }
        assert_eq!(quoted("a\nb"), "\"a\\nb\"");
        assert_eq!(quoted(&"x".repeat(100)), format!("{:?}…", "x".repeat(80)));
    }

    #[test]
    fn finds_uboot_version_in_blob() {
        let blob = b"\0\0U-Boot SPL 2023.01 (Jun)\0junk U-Boot 2023.01+dfsg-2+deb12u3 (Jun 22 2026 - 08:38:07)\0";
        assert_eq!(
            uboot_version(blob).as_deref(),
            Some("U-Boot 2023.01+dfsg-2+deb12u3")
        );
    }
}
