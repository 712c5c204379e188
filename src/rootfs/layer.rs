//! Board layers: the cached base shared by every board of an architecture, and a cached layer per board
//! on top of it, the way mkosi builds incremental images.
//!
//! A board's mmdebstrap output used to be one base keyed by everything mmdebstrap got, so two boards of
//! one architecture shared it only if their package sets and initramfs configuration were equal (the
//! Chromebook has no `u-boot-sunxi`, and every board derives its own initramfs modules). It is now made
//! in two cached levels:
//!
//! - the **base**: the recipe's and the features' packages and the kernel, with the initramfs
//!   configuration every board shares (`MODULES=list`, an empty module list); no board package, no
//!   board hook. Its key ([`super::cache::KeyInputs`]) covers suite, architecture, mirrors or snapshot,
//!   that package set, the common hook files, mmdebstrap's version, the keyring and the archive's state.
//!   Boards of one architecture with the same kernel package and features share it.
//! - the **board layer**: made by mmdebstrap itself as its manual documents for refining a chroot
//!   tarball (EXAMPLES: "You can re-use a chroot tarball"): `--variant=custom`, the base unpacked by a
//!   `tar-in` setup hook, the board's packages (bootloader, the profile's own `rootfs.packages`) given
//!   with `--include`, the board's initramfs files uploaded, and the initramfs regenerated for them by
//!   the same `__initramfs-hook` a base used to run (or `update-initramfs -u -k all` for a board
//!   without one). Its key covers the base's key, the board packages, the board's hook files (the
//!   module list with the profile's extras, the hook's input without the device tree, as before) and
//!   the layer's command line, with the same facts (mmdebstrap, keyring, archive state) and the same
//!   SOURCE_DATE_EPOCH (the archive's date) as the base.
//!
//! A build needs its layer: a layer hit reads nothing else; a layer miss takes the base from the
//! cache (or builds and stores it), then builds and stores the layer. `--no-cache` builds both into the
//! work directory by the same two mmdebstrap runs, so a hit, a miss and `--no-cache` give the same
//! tarball. Layers live in `CACHE/layers/` with the discipline of bases (temporary name and rename,
//! manifest, per-key lock; `cache list|prune` show and prune both). A layer's key lock is taken before
//! its base's, always in that order.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::base::{Base, BaseReport, run_mmdebstrap};
use super::cache::{self, CacheError, Facts, KeyInputs};
use super::mmdebstrap::{BasePlan, Downloads};
use super::{RootfsError, RootfsEvent, RootfsRequest, features, initramfs};
use crate::profile::Profile;

/// mmdebstrap's variant for a layer: nothing but what `--include` names is installed on the base.
pub const LAYER_VARIANT: &str = "custom";
/// The base's cache state when its board layer was in the cache (the base was not read).
pub const BASE_UNUSED: &str = "not needed (layer hit)";
/// For a board without the initramfs hook: its module list and configuration apply to the initramfs.
pub const REGENERATE: &str =
    "if [ -x \"$1\"/usr/sbin/update-initramfs ]; then chroot \"$1\" update-initramfs -u -k all; fi";

/// A board's mmdebstrap input, split in its two levels. Both are [`BasePlan`]s: the layer's has the
/// board's packages, its initramfs files and hook, the base's sources and options, and `layer_on` (a
/// placeholder until the base's tarball is there; its command line names it `/BASE.tar` anyway).
#[derive(Debug, Clone)]
pub struct Split {
    pub base: BasePlan,
    pub layer: BasePlan,
}

/// Splits a board's whole plan: `board_packages` go to the layer; the initramfs module list of the base
/// is the empty one every board shares (each board's is the layer's), and the base has no hook.
pub fn split(full: &BasePlan, board_packages: &[String]) -> Split {
    let mut base = full.clone();
    base.apt.packages.retain(|p| !board_packages.contains(p));
    for (path, text) in &mut base.uploads {
        if path == initramfs::MODULES_FILE {
            *text = initramfs::modules_file(&[], false);
        }
    }
    base.initramfs_hook = None;
    let mut layer = full.clone();
    layer.apt.variant = LAYER_VARIANT.into();
    layer.apt.packages.retain(|p| board_packages.contains(p));
    // Answered in the base, which installed the packages that asked.
    layer.debconf = None;
    layer.layer_on = Some(PathBuf::from("/BASE.tar"));
    Split { base, layer }
}

/// The packages only this board brings (its bootloader's, its profile's own `rootfs.packages`): those
/// the recipe and features do not name, found by resolving the recipe without them.
pub fn board_packages(profile: &Profile, req: &RootfsRequest) -> Result<Vec<String>, RootfsError> {
    let all = features::resolve(profile, &req.selection)?.apt.packages;
    let mut common = profile.clone();
    if let Some(b) = &mut common.bootloader {
        b.package = None;
    }
    common.rootfs.packages = None;
    let shared = features::resolve(&common, &req.selection)?.apt.packages;
    Ok(all.into_iter().filter(|p| !shared.contains(p)).collect())
}

/// Both levels' key inputs.
#[derive(Debug, Clone)]
pub struct Keys {
    pub split: Split,
    pub base: KeyInputs,
    pub layer: KeyInputs,
}

/// The keys of a split plan with `facts`: the layer's covers the base's key.
pub fn keys_of(split: Split, facts: &Facts) -> Result<Keys, CacheError> {
    let base = KeyInputs::new(&split.base, facts);
    let mut layer = KeyInputs::new(&split.layer, facts);
    layer.base = Some(base.key()?);
    Ok(Keys { split, base, layer })
}

/// The facts a board's whole key inputs were computed with.
fn facts_of(inputs: &KeyInputs) -> Facts {
    Facts {
        mmdebstrap: inputs.mmdebstrap.clone(),
        keyring: inputs.keyring.clone(),
        archive: inputs.archive.clone(),
        epoch: inputs.epoch,
    }
}

fn keys(
    profile: &Profile,
    req: &RootfsRequest,
    full: &BasePlan,
    facts: &Facts,
) -> Result<Keys, RootfsError> {
    Ok(keys_of(split(full, &board_packages(profile, req)?), facts)?)
}

/// One level's key and what it covers.
#[derive(Debug, Clone, Serialize)]
pub struct Level {
    pub key: String,
    pub about: &'static str,
    pub inputs: KeyInputs,
}

/// `rootfs BOARD --cache-key`: `key` is the board layer's (what a build of this board needs; a CI cache
/// restores `CACHE/layers/KEY`); `base.key` the base it is built on (`CACHE/bases/KEY`).
#[derive(Debug, Clone, Serialize)]
pub struct CacheKeys {
    pub board: String,
    pub key: String,
    pub about: &'static str,
    pub base: Level,
    pub layer: Level,
}

const ABOUT_KEY: &str = "the board layer's key (= layer.key): the entry CACHE/layers/KEY a build of this board reads; with it in the cache mmdebstrap does not run";
const ABOUT_BASE: &str = "the base shared by the boards of an architecture (recipe, features, kernel, common initramfs configuration), CACHE/bases/KEY: needed only to build a missing layer";
const ABOUT_LAYER: &str = "the board layer on that base (board packages, the board's initramfs files; covers base.key), CACHE/layers/KEY";

pub fn cache_keys(
    profile: &Profile,
    req: &RootfsRequest,
    full: &BasePlan,
    facts: &Facts,
) -> Result<CacheKeys, RootfsError> {
    let k = keys(profile, req, full, facts)?;
    let layer_key = k.layer.key()?;
    Ok(CacheKeys {
        board: profile.name.clone(),
        key: layer_key.clone(),
        about: ABOUT_KEY,
        base: Level {
            key: k.base.key()?,
            about: ABOUT_BASE,
            inputs: k.base,
        },
        layer: Level {
            key: layer_key,
            about: ABOUT_LAYER,
            inputs: k.layer,
        },
    })
}

/// Whether the board's layer seems to be in the cache (then neither mmdebstrap nor qemu-user is needed).
pub(super) fn looks_present(
    profile: &Profile,
    req: &RootfsRequest,
    full: &BasePlan,
    inputs: &KeyInputs,
) -> bool {
    keys(profile, req, full, &facts_of(inputs))
        .ok()
        .and_then(|k| k.layer.key().ok())
        .is_some_and(|k| cache::BaseCache::layers(&req.cache).looks_present(&k))
}

/// How the build got its board layer.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    pub key: String,
    /// `hit`, `built` (and stored), `built, not stored`, `bypassed` (--no-cache).
    pub cache: String,
    pub entry: Option<PathBuf>,
}

/// "base KEY12: state, layer KEY12: state", for the report's source.
pub fn describe(r: &BaseReport) -> String {
    match &r.layer {
        Some(l) => format!(
            "base {}: {}, board layer {}: {}",
            &r.key[..12],
            r.cache,
            &l.key[..12],
            l.cache
        ),
        None => format!("base {}: {}", &r.key[..12], r.cache),
    }
}

/// Whether the build's mmdebstrap output came from the cache as it was (a layer hit).
pub fn is_hit(r: &BaseReport) -> bool {
    r.layer.as_ref().is_some_and(|l| l.cache == "hit")
}

pub fn layer_key(r: &BaseReport) -> &str {
    r.layer.as_ref().map_or(&r.key[..12], |l| &l.key[..12])
}

/// Takes `key`'s lock in `entries` and looks for its entry (bases and layers alike): waits are progress,
/// damaged entries (rebuilt) warnings.
pub(super) fn acquire(
    entries: &cache::BaseCache,
    key: &str,
    on: &dyn Fn(RootfsEvent<'_>),
    warnings: &mut Vec<String>,
) -> Result<cache::Acquired, RootfsError> {
    let damaged = std::cell::RefCell::new(Vec::new());
    let acquired = entries.acquire(key, &|w| on(RootfsEvent::Phase(w)), &|w| {
        on(RootfsEvent::Warning(w));
        damaged.borrow_mut().push(w.to_string());
    })?;
    warnings.extend(damaged.into_inner());
    Ok(acquired)
}

/// The layer's plan, run on the base tarball `base`.
fn on_base(layer: &BasePlan, base: &Path) -> BasePlan {
    BasePlan {
        layer_on: Some(base.to_path_buf()),
        ..layer.clone()
    }
}

/// The mmdebstrap output of a board, `full` split in its base and board layer (`inputs` are `full`'s,
/// for their facts): the layer from the cache, or built on the base (from the cache, or built) and
/// stored; or both built into `work` (`--no-cache`). The report is the base's, with the layer's in it.
pub(super) fn stage(
    profile: &Profile,
    full: &BasePlan,
    inputs: &KeyInputs,
    req: &RootfsRequest,
    work: &Path,
    on: &dyn Fn(RootfsEvent<'_>),
    warnings: &mut Vec<String>,
) -> Result<Base, RootfsError> {
    let k = keys(profile, req, full, &facts_of(inputs))?;
    let (base_key, key) = (k.base.key()?, k.layer.key()?);
    let epoch = inputs.epoch;
    let with_layer = |base: BaseReport, cache: &str, entry: Option<PathBuf>| BaseReport {
        layer: Some(LayerReport {
            key: key.clone(),
            cache: cache.into(),
            entry,
        }),
        ..base
    };
    if req.no_cache {
        let b = super::base::base_stage(profile, &k.split.base, &k.base, req, work, on, warnings)?;
        let tar = work.join("layer.tar");
        let plan = on_base(&k.split.layer, &b.tar);
        let (more, log) = run_mmdebstrap(profile, &plan, req, epoch, work, &tar, on)?;
        let mut downloads = b.downloads.clone();
        downloads.add(&more);
        return Ok(Base {
            tar,
            _held: None,
            _pending: None,
            report: with_layer(b.report.clone(), "bypassed", None),
            downloads,
            log: Some(log),
        });
    }
    let acquired = acquire(&cache::BaseCache::layers(&req.cache), &key, on, warnings)?;
    let held = match acquired {
        cache::Acquired::Hit(held, manifest) => {
            on(RootfsEvent::Phase(&format!(
                "board layer {} from the cache (built for {}; mmdebstrap skipped)",
                &key[..12],
                manifest.board
            )));
            let entry = Some(held.entry());
            return Ok(Base {
                tar: held.base_tar(),
                _held: Some(held),
                _pending: None,
                report: with_layer(
                    BaseReport {
                        key: base_key,
                        cache: BASE_UNUSED.into(),
                        entry: None,
                        epoch,
                        layer: None,
                    },
                    "hit",
                    entry,
                ),
                downloads: Downloads::default(),
                log: None,
            });
        }
        cache::Acquired::Miss(held) => held,
    };
    // The base, held (shared, or as a pending entry) until the layer is built on it.
    let b = super::base::base_stage(profile, &k.split.base, &k.base, req, work, on, warnings)?;
    let pending = held.begin()?;
    let started = Instant::now();
    let plan = on_base(&k.split.layer, &b.tar);
    let (more, log) = run_mmdebstrap(profile, &plan, req, epoch, work, &pending.base_tar(), on)?;
    let seconds = started.elapsed().as_secs_f64();
    let mut downloads = b.downloads.clone();
    downloads.add(&more);
    let moved = if b.report.cache == "built, not stored" {
        Some("its base was not stored".to_string())
    } else {
        on(RootfsEvent::Phase(
            "checking that the archive did not change during the layer's build",
        ));
        cache::archive_moved(&k.layer, &k.split.layer)
    };
    let base_report = b.report.clone();
    drop(b);
    if let Some(why) = moved {
        super::base::warn_not_stored("board layer", &why, on, warnings);
        return Ok(Base {
            tar: pending.base_tar(),
            _held: Some(held),
            _pending: Some(pending),
            report: with_layer(base_report, "built, not stored", None),
            downloads,
            log: Some(log),
        });
    }
    on(RootfsEvent::Phase("storing the board layer in the cache"));
    pending.commit(&held, &k.layer, &profile.name, seconds)?;
    let entry = Some(held.entry());
    Ok(Base {
        tar: held.base_tar(),
        _held: Some(held),
        _pending: None,
        report: with_layer(base_report, "built", entry),
        downloads,
        log: Some(log),
    })
}

/// `cache list`: bases and board layers.
#[derive(Debug, Clone, Serialize)]
pub struct Listings {
    pub bases: cache::Listing,
    pub layers: cache::Listing,
}

pub fn list(root: &Path) -> Listings {
    Listings {
        bases: cache::BaseCache::new(root).list(),
        layers: cache::BaseCache::layers(root).list(),
    }
}

/// `cache prune`: board layers and bases alike (a layer is read without its base).
#[derive(Debug, Clone, Serialize)]
pub struct Prunes {
    pub bases: cache::Pruned,
    pub layers: cache::Pruned,
}

pub fn prune(root: &Path, older_than: Option<std::time::Duration>) -> Prunes {
    let layers = cache::BaseCache::layers(root).prune(older_than);
    Prunes {
        bases: cache::BaseCache::new(root).prune(older_than),
        layers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Catalog;

    fn facts() -> Facts {
        Facts {
            mmdebstrap: "mmdebstrap 1.3.5".into(),
            keyring: vec![cache::KeyringFile {
                name: "trusted.gpg.d/debian-archive-bookworm-stable.asc".into(),
                sha256: "1".repeat(64),
            }],
            archive: vec![cache::ArchiveState {
                url: "http://deb.debian.org/debian/dists/bookworm/InRelease".into(),
                sha256: "2".repeat(64),
                date: "Sat, 11 Jul 2026 10:16:37 UTC".into(),
                valid_until: None,
            }],
            epoch: 1_783_764_997,
        }
    }

    /// A real board's request and whole plan, as `rootfs BOARD` makes them (the hook program at `exe`).
    fn board(name: &str, exe: &str) -> (Profile, RootfsRequest, BasePlan) {
        let profile = Catalog::default().load(name).unwrap();
        let mut req = RootfsRequest::new(PathBuf::from("/o/out.tar"), 1);
        req.initramfs_hook = Some(PathBuf::from(exe));
        let plan = full_plan(&profile, &req);
        (profile, req, plan)
    }

    fn full_plan(profile: &Profile, req: &RootfsRequest) -> BasePlan {
        let (recipe, _, _) = super::super::inputs::resolve_recipe(profile, req).unwrap();
        super::super::base::base_plan(
            profile,
            &recipe,
            req,
            &super::super::base::initramfs_files(profile),
            false,
        )
        .unwrap()
    }

    fn keys_for(profile: &Profile, req: &RootfsRequest) -> (String, String) {
        let k = keys(profile, req, &full_plan(profile, req), &facts()).unwrap();
        (k.base.key().unwrap(), k.layer.key().unwrap())
    }

    /// The acceptance's sharing: the three armhf boards have one base; cubieboard and mk802 (same U-Boot
    /// package, same derived-module inputs but the device tree) one layer, the Chromebook its own; the
    /// arm64 FVP another base.
    #[test]
    fn boards_share_bases_and_layers() {
        let (cubie, r, _) = board("cubieboard", "/usr/bin/boardsmith");
        let (mk802, _, _) = board("mk802", "/usr/bin/boardsmith");
        let (snow, _, _) = board("chromebook-snow", "/usr/bin/boardsmith");
        let (fvp, _, _) = board("armv8-foundation", "/usr/bin/boardsmith");
        assert_eq!(board_packages(&cubie, &r).unwrap(), ["u-boot-sunxi"]);
        assert_eq!(board_packages(&snow, &r).unwrap(), Vec::<String>::new());
        let (cb, cl) = keys_for(&cubie, &r);
        let (mb, ml) = keys_for(&mk802, &r);
        let (sb, sl) = keys_for(&snow, &r);
        let (fb, fl) = keys_for(&fvp, &r);
        assert_eq!((&cb, &cl), (&mb, &ml));
        assert_eq!(cb, sb);
        assert_ne!(cl, sl);
        assert_ne!(fb, cb);
        let bases: std::collections::BTreeSet<_> = [&cb, &mb, &sb, &fb].into_iter().collect();
        let layers: std::collections::BTreeSet<_> = [&cl, &ml, &sl, &fl].into_iter().collect();
        assert_eq!((bases.len(), layers.len()), (2, 3));
        // Where this program is installed changes neither.
        let (cubie2, r2, _) = board("cubieboard", "/opt/x y/boardsmith");
        assert_eq!(keys_for(&cubie2, &r2), (cb, cl));
    }

    /// A board package or a board hook file changes the layer's key, not the base's; a common package
    /// changes both (the layer covers the base's key).
    #[test]
    fn board_inputs_change_only_the_layer() {
        let (cubie, req, _) = board("cubieboard", "/usr/bin/boardsmith");
        let (base, layer) = keys_for(&cubie, &req);

        let mut other_uboot = cubie.clone();
        if let Some(b) = &mut other_uboot.bootloader {
            b.package = Some("u-boot-omap".into());
        }
        let (b2, l2) = keys_for(&other_uboot, &req);
        assert_eq!(b2, base, "the bootloader package changed the base");
        assert_ne!(l2, layer, "the bootloader package did not change the layer");

        let mut extras = cubie.clone();
        extras.kernel.initramfs_modules.push("usb_storage".into());
        let (b3, l3) = keys_for(&extras, &req);
        assert_eq!(b3, base, "the board's module list changed the base");
        assert_ne!(
            l3, layer,
            "the board's module list did not change the layer"
        );
        assert_ne!(l3, l2);

        let mut ext2 = cubie.clone();
        ext2.medium = Some(crate::rootmods::Medium::Usb);
        let (b4, l4) = keys_for(&ext2, &req);
        assert_eq!(b4, base, "the initramfs hook's input changed the base");
        assert_ne!(
            l4, layer,
            "the initramfs hook's input did not change the layer"
        );

        // The profile's own rootfs.packages are board packages too.
        let mut own = cubie.clone();
        own.rootfs.packages = Some(crate::profile::Loc::builtin(vec!["i2c-tools".into()]));
        assert_eq!(
            board_packages(&own, &req).unwrap(),
            ["u-boot-sunxi", "i2c-tools"]
        );
        let (b5, l5) = keys_for(&own, &req);
        assert_eq!(b5, base);
        assert_ne!(l5, layer);

        // A feature's packages are common: both keys change.
        let mut ssh = req.clone();
        ssh.selection.add.push("ssh".into());
        let (b6, l6) = keys_for(&cubie, &ssh);
        assert_ne!(b6, base);
        assert_ne!(l6, layer);
        // So does a common package pushed into the plan, and a fact of the archive.
        let mut plan = full_plan(&cubie, &req);
        plan.apt.packages.push("openssh-server".into());
        let k = keys(&cubie, &req, &plan, &facts()).unwrap();
        assert_ne!(k.base.key().unwrap(), base);
        assert_ne!(k.layer.key().unwrap(), layer);
        let mut f = facts();
        f.archive[0].sha256 = "4".repeat(64);
        let k = keys(&cubie, &req, &full_plan(&cubie, &req), &f).unwrap();
        assert_ne!(k.base.key().unwrap(), base);
        assert_ne!(k.layer.key().unwrap(), layer);
        assert_eq!(
            k.layer.base.as_deref(),
            Some(k.base.key().unwrap().as_str())
        );
    }

    /// What each level gives mmdebstrap: the base has no board package, no hook, the shared module list
    /// and no /dev; the layer unpacks it (`--variant=custom`, `tar-in`), installs the board packages and
    /// runs the hook; no path of this machine is in either key.
    #[test]
    fn levels_command_lines() {
        let (cubie, req, full) = board("cubieboard", "/usr/bin/boardsmith");
        let k = keys(&cubie, &req, &full, &facts()).unwrap();
        let base = &k.base.command;
        assert!(base.contains(&"--variant=apt".to_string()), "{base:?}");
        assert!(base.contains(&"--skip=output/dev".to_string()));
        assert!(!base.iter().any(|a| a.contains("u-boot-sunxi")));
        assert!(base.iter().any(|a| a.contains("linux-image-armmp")));
        assert!(!base.iter().any(|a| a.contains("__initramfs-hook")));
        assert!(!base.iter().any(|a| a.contains("tar-in")));
        let modules = k
            .split
            .base
            .uploads
            .iter()
            .find(|(p, _)| p == initramfs::MODULES_FILE)
            .unwrap();
        assert_eq!(modules.1, initramfs::modules_file(&[], false));
        let layer = &k.layer.command;
        assert!(layer.contains(&"--variant=custom".to_string()), "{layer:?}");
        assert!(layer.contains(&"--include=u-boot-sunxi".to_string()));
        assert!(layer.contains(&"--setup-hook=tar-in '/BASE.tar' /".to_string()));
        assert!(!layer.contains(&"--skip=output/dev".to_string()));
        let tar_in = layer.iter().position(|a| a.contains("tar-in")).unwrap();
        let sync_in = layer.iter().position(|a| a.contains("sync-in")).unwrap();
        assert!(tar_in < sync_in, "the base is unpacked first");
        assert_eq!(layer[tar_in + 1], "--setup-hook=mkdir -p \"$1\"/dev");
        assert!(layer.iter().any(|a| a.contains("__initramfs-hook")));
        assert!(
            !layer
                .iter()
                .any(|a| a == &format!("--customize-hook={REGENERATE}"))
        );
        let json = serde_json::to_string(&k.layer).unwrap();
        for machine in ["/usr/bin", "/o/out", "/root", "/home"] {
            assert!(!json.contains(machine), "{machine} in {json}");
        }
        // A real run names its base tarball (quoted).
        let mut plan = k.split.layer.clone();
        plan.layer_on = Some(PathBuf::from("/cache/it's/base.tar"));
        let run = plan.run(
            &super::super::mmdebstrap::RunPaths {
                cache: "/c".into(),
                work: "/w/layer".into(),
                output: "/w/o.tar".into(),
                log: "/l".into(),
            },
            1,
        );
        assert!(
            run.args()
                .iter()
                .any(|a| a.to_string_lossy() == "--setup-hook=tar-in '/cache/it'\\''s/base.tar' /")
        );
        // ...whose path is not in the key.
        assert_eq!(plan.canonical_args(1), k.layer.command);

        // Without the hook (no medium): the layer regenerates the initramfs itself.
        let mut plain = k.split.layer.clone();
        plain.initramfs_hook = None;
        assert!(
            plain
                .canonical_args(1)
                .contains(&format!("--customize-hook={REGENERATE}"))
        );
        assert!(
            !k.split
                .base
                .canonical_args(1)
                .iter()
                .any(|a| a.contains("update-initramfs"))
        );
    }
}
