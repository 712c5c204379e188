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

/// Reads a file from an ext4 filesystem at `offset` of `image` with debugfs; None if it does not exist.
fn debugfs_cat(image: &Path, offset: u64, file: &str) -> Result<Option<Vec<u8>>, InspectError> {
    let out = debugfs(image, offset, format!("cat \"{file}\""))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || err.contains("not found") || err.contains("Bad magic") {
        return Ok(None);
    }
    Ok(Some(out.stdout))
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

/// Version of an installed package from a dpkg status file.
pub fn dpkg_version(status: &str, package: &str) -> Option<String> {
    let mut installed = None;
    for para in status.split("\n\n") {
        let field = |name: &str| {
            para.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(|v| v.trim().to_string())
            })
        };
        if field("Package").as_deref() == Some(package)
            && field("Status").is_some_and(|s| s.ends_with("installed"))
        {
            installed = field("Version");
        }
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
    if releases.is_empty() {
        releases = debugfs_ls(image, offset, "/lib/modules")?;
        releases.sort_by(|a, b| crate::rootfs::tree::version_cmp(a, b));
    }
    facts.kernel_release = releases.last().cloned();
    if let Some(r) = &facts.kernel_release {
        facts.kernel_config = debugfs_cat(image, offset, &format!("/boot/config-{r}"))?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
    }
    if let Some(status) = debugfs_cat(image, offset, "/var/lib/dpkg/status")? {
        let status = String::from_utf8_lossy(&status);
        if !kernel_package.is_empty() {
            // The metapackage, or failing that the versioned image package it pulled in.
            facts.kernel_package = dpkg_version(&status, kernel_package).or_else(|| {
                facts
                    .kernel_release
                    .as_ref()
                    .and_then(|r| dpkg_version(&status, &format!("linux-image-{r}")))
            });
        }
        if let Some((pkg, _, _)) = bootloader {
            facts.bootloader_package = dpkg_version(&status, pkg);
        }
    }
    if let Some(m) = debugfs_cat(image, offset, "/etc/boardsmith/manifest.json")? {
        facts.manifest = serde_json::from_slice(&m).ok();
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
            dpkg_version(status, "u-boot-sunxi").as_deref(),
            Some("2023.01+dfsg-2")
        );
        assert_eq!(dpkg_version(status, "other"), None);
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
