//! Stage 1, the base: the plan mmdebstrap gets, its cache key, and the base from the cache or built.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::features::{AptSelection, Recipe};
use super::inputs::resolve_recipe;
use super::mmdebstrap::{self, Downloads};
use super::tartree::TarTree;
use super::{RootfsError, RootfsEvent, RootfsRequest, cache, initramfs, io, layer, prerequisites};
use crate::profile::Profile;

/// An exclusive lock on the package cache for the duration of a build.
struct CacheLock {
    _file: std::fs::File,
}

impl CacheLock {
    fn take(cache: &Path, on: &dyn Fn(RootfsEvent<'_>)) -> Result<CacheLock, RootfsError> {
        std::fs::create_dir_all(cache).map_err(io(format!(
            "creating the package cache {}",
            cache.display()
        )))?;
        let f = crate::output::lock_waiting(&cache.join(".lock"), || {
            on(RootfsEvent::Phase(
                "waiting for another build using the package cache",
            ))
        })
        .map_err(io(format!("locking the package cache {}", cache.display())))?;
        Ok(CacheLock { _file: f })
    }
}

/// Why the initramfs modules of a cached base (its module list) are not the ones derived for this
/// board's device tree from the base's own kernel, or None if they are (or cannot be derived: the
/// configuration then reports that as for any base).
pub(super) fn base_modules_differ(profile: &Profile, tree: &TarTree) -> Option<String> {
    let req = initramfs::request(profile)?;
    let report = crate::rootmods::analyze(&initramfs::TarFiles(tree), &req).ok()?;
    let text = tree.read_string(initramfs::MODULES_FILE).ok().flatten()?;
    let listed: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    (listed != report.initramfs_modules).then(|| {
        format!(
            "it lists {}, {} needs {}",
            listed.join(" "),
            profile.name,
            report.initramfs_modules.join(" ")
        )
    })
}

/// The files that configure the initramfs: given to mmdebstrap before the kernel installs (the profile's
/// extras; the customize hook adds the derived modules), and written again by the configuration.
pub(super) fn initramfs_files(profile: &Profile) -> Vec<(String, String)> {
    vec![
        (
            initramfs::MODULES_FILE.to_string(),
            initramfs::modules_file(&profile.kernel.initramfs_modules, false),
        ),
        (
            "etc/initramfs-tools/conf.d/boardsmith.conf".to_string(),
            "# boardsmith: the image is built in a chroot, where MODULES=dep cannot see the board's\n# hardware; the initramfs carries the modules listed in /etc/initramfs-tools/modules.\nMODULES=list\n".to_string(),
        ),
    ]
}

/// What mmdebstrap gets for this recipe: the base stage's whole input (see [`cache`]).
pub(super) fn base_plan(
    profile: &Profile,
    recipe: &Recipe,
    req: &RootfsRequest,
    initramfs: &[(String, String)],
    per_dtb: bool,
) -> Result<mmdebstrap::BasePlan, RootfsError> {
    let mut packages = recipe.apt.packages.clone();
    let mut debconf = None;
    if !matches!(recipe.locale.as_str(), "C.UTF-8" | "C" | "POSIX") {
        packages.push("locales".into());
        let charset = recipe
            .locale
            .split_once('.')
            .map(|(_, c)| c.split('@').next().unwrap_or(c).to_string())
            .unwrap_or_else(|| "ISO-8859-1".into());
        debconf = Some(format!(
            "locales locales/locales_to_be_generated multiselect {l} {charset}\nlocales locales/default_environment_locale select {l}\n",
            l = recipe.locale
        ));
    }
    // The hook's input names no board, and the key leaves its device tree out unless `per_dtb`: boards
    // with the same kernel, medium and extras share a base, which a hit checks (`base_modules_differ`).
    let initramfs_hook = match (&req.initramfs_hook, initramfs::HookInput::new(profile)) {
        (Some(program), Some(input)) => {
            let json = |i: &initramfs::HookInput| {
                serde_json::to_string(i).map_err(|e| RootfsError::Io {
                    context: "writing the initramfs hook's input".into(),
                    source: e.into(),
                })
            };
            let mut shared = input.clone();
            if !per_dtb {
                shared.dtb = String::new();
            }
            Some(mmdebstrap::InitramfsHook {
                program: program.clone(),
                input: json(&input)?,
                keyed: json(&shared)?,
            })
        }
        _ => None,
    };
    let (mirror, security) = match &req.snapshot {
        Some(ts) => {
            if cache::snapshot_time(ts).is_err() {
                return Err(RootfsError::Invalid {
                    what: format!("--snapshot {ts}"),
                    message: "must be a snapshot.debian.org timestamp such as 20250101T000000Z"
                        .into(),
                });
            }
            (
                format!("http://snapshot.debian.org/archive/debian/{ts}"),
                Some(format!(
                    "http://snapshot.debian.org/archive/debian-security/{ts}"
                )),
            )
        }
        None => (recipe.mirror.clone(), recipe.security_mirror.clone()),
    };
    Ok(mmdebstrap::BasePlan {
        mode: req.mode,
        arch: profile.arch,
        apt: AptSelection {
            packages,
            ..recipe.apt.clone()
        },
        mirror,
        security,
        snapshot: req.snapshot.clone(),
        uploads: initramfs.to_vec(),
        debconf,
        initramfs_hook,
        layer_on: None,
    })
}

/// A Debian build's base: its plan and key inputs (reading the archive's Release files), with the
/// machine's prerequisites checked when mmdebstrap will run (a miss, or `--no-cache`).
pub(super) fn debian_base_input(
    profile: &Profile,
    recipe: &Recipe,
    req: &RootfsRequest,
    initramfs: &[(String, String)],
    on: &dyn Fn(RootfsEvent<'_>),
) -> Result<(mmdebstrap::BasePlan, cache::KeyInputs), RootfsError> {
    prerequisites::require_tool("mmdebstrap", "mmdebstrap")?;
    let plan = base_plan(profile, recipe, req, initramfs, false)?;
    on(RootfsEvent::Phase(
        "computing the base's cache key (reading the archive's Release files)",
    ));
    let facts = cache::facts(&plan)?;
    let inputs = cache::KeyInputs::new(&plan, &facts);
    if req.no_cache || !layer::looks_present(profile, req, &plan, &inputs) {
        prerequisites::check_foreign_arch(profile.arch, &req.binfmt_dir)?;
    }
    Ok((plan, inputs))
}

/// A board's cache keys (its base's and its board layer's) and everything they cover.
pub type BaseKey = layer::CacheKeys;

/// The base cache key of `profile` with `req` (`rootfs BOARD --cache-key`): needs no password, setting
/// or artifact (none of them is in the base), reads the archive's Release files unless `--snapshot`.
pub fn cache_key(profile: &Profile, req: &RootfsRequest) -> Result<BaseKey, RootfsError> {
    let (recipe, _, _) = resolve_recipe(profile, req)?;
    let plan = base_plan(profile, &recipe, req, &initramfs_files(profile), false)?;
    let facts = cache::facts(&plan)?;
    layer::cache_keys(profile, req, &plan, &facts)
}

/// How the build got its base (mmdebstrap's output).
#[derive(Debug, Clone, Serialize)]
pub struct BaseReport {
    pub key: String,
    /// `hit` (from the cache), `built` (and stored), `built, not stored` (the archive changed during
    /// the build), `bypassed` (--no-cache).
    pub cache: String,
    /// The cache entry used or stored.
    pub entry: Option<PathBuf>,
    /// The base's SOURCE_DATE_EPOCH (the archive's date).
    pub epoch: u64,
    /// The board layer built on it (Debian builds; see [`layer`]).
    pub layer: Option<layer::LayerReport>,
}

/// The base stage's result: where the base tarball is, and what keeps it there while it is read.
pub(super) struct Base {
    pub(super) tar: PathBuf,
    pub(super) _held: Option<cache::Held>,
    pub(super) _pending: Option<cache::Pending>,
    pub(super) report: BaseReport,
    pub(super) downloads: Downloads,
    pub(super) log: Option<PathBuf>,
}

/// Runs mmdebstrap for `plan` into `output`, holding the architecture's package cache. A layer's hook
/// files go to their own directory under `work`, apart from its base's.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_mmdebstrap(
    profile: &Profile,
    plan: &mmdebstrap::BasePlan,
    req: &RootfsRequest,
    epoch: u64,
    work: &Path,
    output: &Path,
    on: &dyn Fn(RootfsEvent<'_>),
) -> Result<(Downloads, PathBuf), RootfsError> {
    prerequisites::check_foreign_arch(profile.arch, &req.binfmt_dir)?;
    // One package cache per architecture: builds for different architectures run side by side.
    let arch_cache = req.cache.join("apt").join(profile.arch.debian());
    let _lock = CacheLock::take(&arch_cache, on)?;
    let logs = req.cache.join("logs");
    std::fs::create_dir_all(&logs).map_err(io(format!("creating {}", logs.display())))?;
    let (work, level) = if plan.layer_on.is_some() {
        let dir = work.join("layer");
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        (dir, "-layer")
    } else {
        (work.to_path_buf(), "")
    };
    let log_path = logs.join(format!(
        "{}-{}{level}.log",
        profile.name,
        profile.arch.debian()
    ));
    let run = plan.prepare(
        &mmdebstrap::RunPaths {
            cache: arch_cache,
            work,
            output: output.to_path_buf(),
            log: log_path.clone(),
        },
        epoch,
    )?;
    on(RootfsEvent::Phase(&format!(
        "mmdebstrap {} {} ({} packages requested; log {})",
        plan.apt.suite,
        profile.arch.debian(),
        run.apt.packages.len(),
        log_path.display()
    )));
    let downloads = run.run(&|line| on(RootfsEvent::Phase(line)))?;
    Ok((downloads, log_path))
}

/// The base stage: the base from the cache (a hit), or built by mmdebstrap and stored (a miss), or
/// built into the work directory (`--no-cache`).
#[allow(clippy::too_many_arguments)]
pub(super) fn base_stage(
    profile: &Profile,
    plan: &mmdebstrap::BasePlan,
    inputs: &cache::KeyInputs,
    req: &RootfsRequest,
    work: &Path,
    on: &dyn Fn(RootfsEvent<'_>),
    warnings: &mut Vec<String>,
) -> Result<Base, RootfsError> {
    let key = inputs.key()?;
    let epoch = inputs.epoch;
    if req.no_cache {
        let tar = work.join("source.tar");
        let (downloads, log) = run_mmdebstrap(profile, plan, req, epoch, work, &tar, on)?;
        return Ok(Base {
            tar,
            _held: None,
            _pending: None,
            report: BaseReport {
                key,
                cache: "bypassed".into(),
                entry: None,
                epoch,
                layer: None,
            },
            downloads,
            log: Some(log),
        });
    }
    let acquired = layer::acquire(&cache::BaseCache::new(&req.cache), &key, on, warnings)?;
    match acquired {
        cache::Acquired::Hit(held, manifest) => {
            on(RootfsEvent::Phase(&format!(
                "base {} from the cache (built for {}; mmdebstrap skipped)",
                &key[..12],
                manifest.board
            )));
            Ok(Base {
                tar: held.base_tar(),
                report: BaseReport {
                    key,
                    cache: "hit".into(),
                    entry: Some(held.entry()),
                    epoch,
                    layer: None,
                },
                _held: Some(held),
                _pending: None,
                downloads: Downloads::default(),
                log: None,
            })
        }
        cache::Acquired::Miss(held) => {
            let pending = held.begin()?;
            let started = Instant::now();
            let (downloads, log) =
                run_mmdebstrap(profile, plan, req, epoch, work, &pending.base_tar(), on)?;
            let seconds = started.elapsed().as_secs_f64();
            on(RootfsEvent::Phase(
                "checking that the archive did not change during the build",
            ));
            if let Some(why) = cache::archive_moved(inputs, plan) {
                warn_not_stored("base", &why, on, warnings);
                return Ok(Base {
                    tar: pending.base_tar(),
                    report: BaseReport {
                        key,
                        cache: "built, not stored".into(),
                        entry: None,
                        epoch,
                        layer: None,
                    },
                    _held: Some(held),
                    _pending: Some(pending),
                    downloads,
                    log: Some(log),
                });
            }
            on(RootfsEvent::Phase("storing the base in the cache"));
            pending.commit(&held, inputs, &profile.name, seconds)?;
            Ok(Base {
                tar: held.base_tar(),
                report: BaseReport {
                    key,
                    cache: "built".into(),
                    entry: Some(held.entry()),
                    epoch,
                    layer: None,
                },
                _held: Some(held),
                _pending: None,
                downloads,
                log: Some(log),
            })
        }
    }
}

/// Says (as an event and in the report's warnings) that what was built is used but not stored.
pub(super) fn warn_not_stored(
    what: &str,
    why: &str,
    on: &dyn Fn(RootfsEvent<'_>),
    warnings: &mut Vec<String>,
) {
    let w = format!(
        "the {what} was not stored in the cache: {why}; this build is complete, the next one builds it again"
    );
    on(RootfsEvent::Warning(&w));
    warnings.push(w);
}
