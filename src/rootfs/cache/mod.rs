//! The base cache: what mmdebstrap produces, stored once per distinct input and shared by every board
//! (and every process) that needs the same base.
//!
//! A root filesystem is built in two stages. The first is mmdebstrap's output, made and cached in two
//! levels ([`super::layer`]): the *base* (the recipe's, features' and kernel packages, with the initramfs
//! configuration every board shares), and the *board layer* mmdebstrap makes on it (the board's packages,
//! its initramfs files and hook), whose [`KeyInputs`] also name the base's key (`base`). Both levels are
//! entries of this module, bases in `CACHE/bases/`, layers in `CACHE/layers/`, with the same discipline;
//! below, "base" stands for either. Each is a function of what [`KeyInputs`] lists — the mmdebstrap
//! command line with this machine's paths taken out, the content of every file the hooks upload,
//! mmdebstrap's version, the keyring apt trusts, and the archive's state (the Release files of every
//! source, or the snapshot) — and of nothing else: no board configuration (host name, users,
//! passwords, fstab, services, feature files, artifacts), no path, no clock. The *board configuration*
//! ([`super::customize`]) is applied to the base without a package manager, the same way on a hit and
//! after a miss, so both give the same tarball. The base holds no secret: passwords and secret settings only exist in that second stage.
//!
//! Entries live in `CACHE/bases/KEY/` (and `CACHE/layers/KEY/`: `base.tar`, the level's tarball, and
//! `manifest.json`), written under a temporary name (`.tmp-KEY-PID`), synced, and renamed into place
//! complete; anything else in the directory is never used.
//! Each key has a lock file (`KEY.lock`): a build holds it shared while it reads an entry and exclusive
//! while it looks for, builds and stores a missing one, so two builds of one key build it once. The lock
//! file's modification time records the entry's last use (for `cache prune --older-than`).
//!
//! Without `--snapshot` the mirror changes under a fixed command line. The key therefore covers the
//! Release files (InRelease) of every source as fetched when the key is computed (their sha256, and
//! their Date), and a build stores its base only if those files are still the same once mmdebstrap is
//! done: a base is never stored under a key describing an archive state it was not built from.
//! The base's SOURCE_DATE_EPOCH is the archive's own date (the newest Release file's Date, or the
//! snapshot's time), not the build's: the base, and so the cache, does not change with the build's
//! SOURCE_DATE_EPOCH, which the board configuration applies (mtimes clamped to it) when it writes.
//!
//! The key is in `key`, the facts it covers beside the plan in `facts`, the entries in `store`, the
//! per-key locks in `lock`, `cache list` and `cache prune` in `prune`.

mod facts;
mod key;
mod lock;
mod prune;
mod store;

use std::io;

pub use facts::{
    archive_moved, facts, fetch_release, keyring, mmdebstrap_version, release_date, snapshot_time,
};
pub use key::{ArchiveState, Facts, HookFile, KeyInputs, KeyringFile};
pub use lock::Held;
pub use prune::{ListedEntry, Listing, Pruned, parse_age};
pub use store::{Acquired, BaseCache, Manifest, Pending};

/// Version of the base recipe's layout: bumped whenever boardsmith builds bases differently in a way
/// the command line does not show, so that older entries are never used.
pub const SCHEME: u32 = 3;
const MANIFEST: &str = "manifest.json";
const BASE_TAR: &str = "base.tar";
const TMP_PREFIX: &str = ".tmp-";
const DEL_PREFIX: &str = ".del-";
/// Largest Release file accepted from a mirror (Debian's are ~150 KB).
const MAX_RELEASE: u64 = 16 << 20;
/// Largest manifest read from the cache.
const MAX_MANIFEST: u64 = 4 << 20;
/// Largest keyring file hashed.
const MAX_KEYRING: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "could not read the archive's Release file {url} (to compute the base cache key): {detail}; check --mirror/--security-mirror (or the profile's rootfs.mirror), the suite, the network and any proxy settings"
    )]
    Archive { url: String, detail: String },
    #[error("{url}: {message}")]
    Release { url: String, message: String },
    #[error(
        "--snapshot {given}: not a snapshot.debian.org timestamp; use the form 20250101T000000Z"
    )]
    Snapshot { given: String },
    #[error("`mmdebstrap --version` failed: {detail}; install it with: apt-get install mmdebstrap")]
    Mmdebstrap { detail: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("--older-than {given}: {message}")]
    Duration { given: String, message: String },
}

impl CacheError {
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            CacheError::Snapshot { .. } | CacheError::Duration { .. }
        )
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> CacheError {
    let context = context.into();
    move |source| CacheError::Io { context, source }
}

#[cfg(test)]
mod test_support {
    use super::key::{ArchiveState, KeyringFile};
    use super::*;
    use crate::profile::Arch;
    use crate::rootfs::features::AptSelection;
    use crate::rootfs::mmdebstrap::{BasePlan, Mode};

    pub(super) fn plan() -> BasePlan {
        BasePlan {
            mode: Mode::Unshare,
            arch: Arch::Armhf,
            apt: AptSelection {
                suite: "bookworm".into(),
                variant: "apt".into(),
                components: vec!["main".into(), "non-free-firmware".into()],
                packages: vec![
                    "systemd".into(),
                    "linux-image-armmp".into(),
                    "u-boot-sunxi".into(),
                ],
                apt_options: vec!["Acquire::Languages \"none\"".into()],
                dpkg_options: vec!["path-exclude=/usr/share/man/*".into()],
            },
            mirror: "http://deb.debian.org/debian".into(),
            security: Some("http://deb.debian.org/debian-security".into()),
            snapshot: None,
            uploads: vec![
                (
                    "etc/initramfs-tools/modules".into(),
                    "sunxi-mmc\nmmc_block\next4\n".into(),
                ),
                (
                    "etc/initramfs-tools/conf.d/boardsmith.conf".into(),
                    "MODULES=list\n".into(),
                ),
            ],
            debconf: None,
            initramfs_hook: Some(crate::rootfs::mmdebstrap::InitramfsHook {
                program: "/opt/boardsmith/bin/boardsmith".into(),
                input: r#"{"kernel":"vmlinuz-*","dtb":"sun4i-a10-cubieboard.dtb","medium":"sd"}"#
                    .into(),
                keyed: r#"{"kernel":"vmlinuz-*","dtb":"","medium":"sd"}"#.into(),
            }),
            layer_on: None,
        }
    }

    pub(super) fn facts() -> Facts {
        Facts {
            mmdebstrap: "mmdebstrap 1.3.5".into(),
            keyring: vec![KeyringFile {
                name: "trusted.gpg.d/debian-archive-bookworm-stable.asc".into(),
                sha256: "1".repeat(64),
            }],
            archive: vec![ArchiveState {
                url: "http://deb.debian.org/debian/dists/bookworm/InRelease".into(),
                sha256: "2".repeat(64),
                date: "Sat, 11 Jul 2026 10:16:37 UTC".into(),
                valid_until: None,
            }],
            epoch: 1_783_764_997,
        }
    }

    /// Writes a whole entry the way a build does (temporary directory, manifest, rename).
    pub(super) fn store(cache: &BaseCache, content: &[u8]) -> (String, Manifest) {
        let inputs = KeyInputs::new(&plan(), &facts());
        let k = inputs.key().unwrap();
        let Acquired::Miss(held) = cache.acquire(&k, &|_| {}, &|_| {}).unwrap() else {
            panic!("hit in an empty cache");
        };
        let pending = held.begin().unwrap();
        std::fs::write(pending.base_tar(), content).unwrap();
        let m = pending.commit(&held, &inputs, "cubieboard", 1.0).unwrap();
        (k, m)
    }
}
