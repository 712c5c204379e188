//! The key: everything a base depends on, hashed in a fixed order.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{CacheError, SCHEME};
use crate::rootfs::features::AptSelection;
use crate::rootfs::mmdebstrap::BasePlan;

/// A Release file as the key saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveState {
    pub url: String,
    pub sha256: String,
    /// Its `Date:` field.
    pub date: String,
    /// Its `Valid-Until:` field, if any.
    pub valid_until: Option<String>,
}

/// A file of the keyring apt trusts: its name (relative to its directory) and content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyringFile {
    pub name: String,
    pub sha256: String,
}

/// A file a hook puts into the chroot: where, and its content's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookFile {
    pub path: String,
    pub sha256: String,
}

/// What the base depends on besides the plan: facts about this machine's tools and the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// `mmdebstrap --version`.
    pub mmdebstrap: String,
    pub keyring: Vec<KeyringFile>,
    /// Release files of every source (empty with a snapshot).
    pub archive: Vec<ArchiveState>,
    /// The base's SOURCE_DATE_EPOCH: the newest Release file's Date, or the snapshot's time.
    pub epoch: u64,
}

/// Everything the key covers (printed by `rootfs --cache-key --json`). Field order is the hash's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInputs {
    pub scheme: u32,
    pub arch: String,
    pub mode: String,
    /// Suite, variant, components, the resolved package list (recipe, profile's kernel and bootloader,
    /// features), apt's and dpkg's options: the plan's, whole, so that nothing apt is given escapes the key.
    #[serde(flatten)]
    pub apt: AptSelection,
    pub sources: Vec<String>,
    pub snapshot: Option<String>,
    /// Files the hooks upload (initramfs configuration, debconf answers), by content.
    pub hook_files: Vec<HookFile>,
    /// mmdebstrap's whole command line, with this machine's paths replaced by fixed names.
    pub command: Vec<String>,
    /// SOURCE_DATE_EPOCH mmdebstrap runs with.
    pub epoch: u64,
    pub mmdebstrap: String,
    /// The program the initramfs hook runs inside the build (this boardsmith, by version): its module
    /// derivation decides the initramfs. Code changes without a version change bump [`SCHEME`].
    pub initramfs_hook: Option<String>,
    pub keyring: Vec<KeyringFile>,
    pub archive: Vec<ArchiveState>,
    /// A board layer's: the key of the base it is built on (see [`super::super::layer`]); absent for a base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
}

pub(super) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

impl KeyInputs {
    pub fn new(plan: &BasePlan, facts: &Facts) -> KeyInputs {
        let mut hook_files: Vec<HookFile> = plan
            .uploads
            .iter()
            .map(|(path, text)| HookFile {
                path: format!("/{path}"),
                sha256: sha256_hex(text.as_bytes()),
            })
            .collect();
        if let Some(d) = &plan.debconf {
            hook_files.push(HookFile {
                path: "debconf-set-selections".into(),
                sha256: sha256_hex(d.as_bytes()),
            });
        }
        if let Some(h) = &plan.initramfs_hook {
            hook_files.push(HookFile {
                path: crate::rootfs::initramfs::HOOK_INPUT_IN_CHROOT.into(),
                sha256: sha256_hex(h.keyed.as_bytes()),
            });
        }
        KeyInputs {
            scheme: SCHEME,
            arch: plan.arch.debian().into(),
            mode: plan.mode.as_str().into(),
            apt: plan.apt.clone(),
            sources: plan.sources(),
            snapshot: plan.snapshot.clone(),
            hook_files,
            command: plan.canonical_args(facts.epoch),
            epoch: facts.epoch,
            mmdebstrap: facts.mmdebstrap.clone(),
            initramfs_hook: plan
                .initramfs_hook
                .as_ref()
                .map(|_| format!("boardsmith {}", env!("CARGO_PKG_VERSION"))),
            keyring: facts.keyring.clone(),
            archive: facts.archive.clone(),
            base: None,
        }
    }

    /// The key: sha256 of the inputs' canonical JSON. Serializing these fields cannot fail today, but a
    /// failure must never become the key of an empty input (every entry would share it): it is an error.
    pub fn key(&self) -> Result<String, CacheError> {
        serde_json::to_vec(self)
            .map(|json| sha256_hex(&json))
            .map_err(|e| CacheError::Io {
                context: "serializing the base cache key's inputs".into(),
                source: e.into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::is_key;
    use super::super::test_support::{facts, plan};
    use super::*;
    use crate::profile::Arch;
    use crate::rootfs::mmdebstrap::Mode;

    fn key(p: &BasePlan, f: &Facts) -> String {
        KeyInputs::new(p, f).key().unwrap()
    }

    /// The same inputs give the same key, whatever this machine's paths: the key is computed from
    /// the command line with the paths replaced, so a run at other paths has the same key.
    #[test]
    fn key_is_stable_and_path_free() {
        let (p, f) = (plan(), facts());
        let k = key(&p, &f);
        assert_eq!(k, key(&plan(), &facts()));
        assert!(is_key(&k));
        let inputs = KeyInputs::new(&p, &f);
        // The hook input's place inside the chroot is fixed; anything else under /tmp would be this machine's.
        let json = serde_json::to_string(&inputs)
            .unwrap()
            .replace(crate::rootfs::initramfs::HOOK_INPUT_IN_CHROOT, "");
        for machine in ["/home", "/tmp", "/root", ".cache", "work-", "boardsmith/"] {
            assert!(!json.contains(machine), "{machine} in {json}");
        }
        // Two real runs at different paths have different command lines but the same canonical one.
        let a = p.run(
            &crate::rootfs::mmdebstrap::RunPaths {
                cache: "/a/cache".into(),
                work: "/a/w".into(),
                output: "/a/o.tar".into(),
                log: "/a/log".into(),
            },
            f.epoch,
        );
        assert!(
            a.args()
                .iter()
                .any(|x| x.to_string_lossy().contains("/a/cache"))
        );
        assert_eq!(p.canonical_args(f.epoch), plan().canonical_args(f.epoch));
        // Nor where this program is installed (the hook runs it by path).
        let mut moved = plan();
        if let Some(h) = &mut moved.initramfs_hook {
            h.program = "/usr/local/bin/boardsmith".into();
        }
        assert_eq!(key(&moved, &f), k);
        // Nor the device tree, unless the base is one device tree's (see `rootfs::build_rootfs`).
        let mut other = plan();
        if let Some(h) = &mut other.initramfs_hook {
            h.input = h.input.replace("cubieboard", "mk802");
        }
        assert_eq!(key(&other, &f), k);
        // A fixed value, so that a change in how the key is computed is a decision (bump SCHEME), not an
        // accident of a refactoring.
        assert_eq!(
            k,
            "3171e7583161f88eda11941c7ec7c9d0979eec3c188fd8dccfaefae149ce57a3"
        );
    }

    /// Each input, changed alone, changes the key.
    #[test]
    fn each_input_changes_the_key() {
        let base = key(&plan(), &facts());
        let mut seen = std::collections::BTreeSet::new();
        seen.insert(base.clone());
        let mut check = |what: &str, p: BasePlan, f: Facts| {
            let k = key(&p, &f);
            assert_ne!(k, base, "{what} did not change the key");
            assert!(seen.insert(k), "{what} gave the key of another change");
        };
        let mut p = plan();
        p.apt.suite = "trixie".into();
        check("suite", p, facts());
        let mut p = plan();
        p.arch = Arch::Arm64;
        check("architecture", p, facts());
        let mut p = plan();
        p.mirror = "http://ftp.de.debian.org/debian".into();
        check("mirror", p, facts());
        let mut p = plan();
        p.security = None;
        check("security mirror", p, facts());
        let mut p = plan();
        p.snapshot = Some("20250101T000000Z".into());
        check("snapshot", p, facts());
        let mut p = plan();
        p.apt.packages.push("openssh-server".into());
        check("package list (a feature)", p, facts());
        let mut p = plan();
        p.apt.packages.retain(|x| x != "u-boot-sunxi");
        check("package list (the board's U-Boot)", p, facts());
        let mut p = plan();
        p.apt.components.push("contrib".into());
        check("components", p, facts());
        let mut p = plan();
        p.apt.variant = "minbase".into();
        check("variant", p, facts());
        let mut p = plan();
        p.mode = Mode::Root;
        check("mode", p, facts());
        let mut p = plan();
        p.apt
            .apt_options
            .push("APT::Install-Recommends \"true\"".into());
        check("apt options", p, facts());
        let mut p = plan();
        p.apt
            .dpkg_options
            .push("path-exclude=/usr/share/locale/*".into());
        check("dpkg options", p, facts());
        let mut p = plan();
        p.uploads[0].1 = "dw_mmc-exynos\nmmc_block\next4\n".into();
        check("hook content (initramfs modules)", p, facts());
        let mut p = plan();
        p.debconf = Some("locales locales/default_environment_locale select de_DE.UTF-8\n".into());
        check("hook content (debconf answers)", p, facts());
        let mut p = plan();
        if let Some(h) = &mut p.initramfs_hook {
            h.keyed = h.input.clone();
        }
        check(
            "initramfs hook input (a base of one device tree)",
            p,
            facts(),
        );
        let mut p = plan();
        if let Some(h) = &mut p.initramfs_hook {
            h.keyed = h.keyed.replace("sd", "usb");
        }
        check("initramfs hook input (medium)", p, facts());
        let mut p = plan();
        p.initramfs_hook = None;
        check("initramfs hook (none)", p, facts());
        let mut f = facts();
        f.mmdebstrap = "mmdebstrap 1.5.7".into();
        check("mmdebstrap version", plan(), f);
        let mut f = facts();
        f.keyring[0].sha256 = "3".repeat(64);
        check("keyring content", plan(), f);
        let mut f = facts();
        f.archive[0].sha256 = "4".repeat(64);
        check("the archive's Release file", plan(), f);
        let mut f = facts();
        f.epoch += 1;
        check("the base's SOURCE_DATE_EPOCH", plan(), f);
    }
}
