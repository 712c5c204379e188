//! `boardsmith rootfs`: a root filesystem for a board, from Debian packages (mmdebstrap, through
//! qemu-user for a foreign architecture) or from a prebuilt tarball, configured from the recipes in
//! `rootfs/` (base + features) and the board profile, written as a reproducible tarball or a directory.
//!
//! Order of work: everything the user must supply (feature names, kernel fragments, passwords, settings,
//! artifacts and their checksums, the machine's prerequisites) is checked before the long package
//! installation starts; the output appears under its final name only when complete.

pub mod cache;
pub mod customize;
pub mod features;
pub mod fetch;
pub mod initramfs;
pub mod layer;
pub mod mmdebstrap;
pub mod prerequisites;
pub mod recipe;
pub mod systemd;
pub mod tartree;
pub mod tree;
pub mod users;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

pub use features::Selection;
use features::{FeatureError, Recipe, SettingKind};
use fetch::FetchError;
use mmdebstrap::{Downloads, MmdebstrapError, Mode};
use prerequisites::PrerequisiteError;
use tartree::{TarStats, TarTree, TarTreeError};

use crate::output::PendingFile;
use crate::plan::{PlanError, PlanInput, plan};
use crate::profile::Profile;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(transparent)]
    Feature(#[from] FeatureError),
    #[error(transparent)]
    Prerequisite(#[from] PrerequisiteError),
    #[error(transparent)]
    Mmdebstrap(#[from] MmdebstrapError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
    #[error(transparent)]
    User(#[from] users::UserError),
    #[error(transparent)]
    Customize(#[from] customize::CustomizeError),
    #[error(transparent)]
    Tree(#[from] TarTreeError),
    #[error(transparent)]
    Initramfs(#[from] initramfs::InitramfsError),
    #[error("invalid layout for fstab: {0}")]
    Plan(#[from] PlanError),
    #[error("setting `{name}` (feature {feature}): {message}")]
    Setting {
        name: String,
        feature: String,
        message: String,
    },
    #[error(
        "feature `{feature}` needs {description} (`{name}`), which is not in Debian: give {flag} PATH|URL and its checksum with {sha_flag} HEX"
    )]
    MissingArtifact {
        name: String,
        feature: String,
        description: String,
        flag: String,
        sha_flag: String,
    },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
    #[error("output {path}: {message}")]
    Output { path: PathBuf, message: String },
    #[error(
        "the root filesystem has no {what} at `{pattern}`, where board `{board}`'s profile expects it{hint}"
    )]
    BootFile {
        what: String,
        pattern: String,
        board: String,
        hint: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl RootfsError {
    /// True when the user's input is at fault (exit status 2) rather than the operation (1).
    pub fn is_input_error(&self) -> bool {
        match self {
            RootfsError::Feature(_)
            | RootfsError::User(_)
            | RootfsError::Plan(_)
            | RootfsError::Setting { .. }
            | RootfsError::MissingArtifact { .. }
            | RootfsError::Invalid { .. }
            | RootfsError::Output { .. }
            | RootfsError::Tree(TarTreeError::PastEnd { .. }) => true,
            RootfsError::Fetch(f) => f.is_input_error(),
            RootfsError::Cache(c) => c.is_input_error(),
            RootfsError::Customize(c) => matches!(
                c,
                customize::CustomizeError::Template { .. }
                    | customize::CustomizeError::NoGroup { .. }
                    | customize::CustomizeError::NotASystem { .. }
            ),
            _ => false,
        }
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RootfsError {
    let context = context.into();
    move |source| RootfsError::Io { context, source }
}

/// The default user's password as given.
#[derive(Clone)]
pub enum Password {
    /// A crypt(3) hash.
    Hash(String),
    /// A password to hash here (never printed).
    Plain(String),
    /// Generate a strong one and write it beside the output (mode 0600).
    Random,
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Password::Hash(_) => "Password::Hash(..)",
            Password::Plain(_) => "Password::Plain(..)",
            Password::Random => "Password::Random",
        })
    }
}

/// The value of a secret setting that asks for a generated one.
pub const RANDOM: &str = "random";

/// A file from outside the package manager.
#[derive(Debug, Clone, Default)]
pub struct ArtifactSource {
    pub source: Option<String>,
    pub sha256: Option<String>,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct RootfsRequest {
    /// `NAME.tar` for a tarball, anything else for a directory.
    pub out: PathBuf,
    pub selection: Selection,
    /// The root filesystem cache: packages in `apt/ARCH`, mmdebstrap's logs in `logs`, bases in `bases`.
    pub cache: PathBuf,
    /// Build the base with mmdebstrap without looking in or storing to the base cache.
    pub no_cache: bool,
    pub mirror: Option<String>,
    pub security_mirror: Option<String>,
    pub suite: Option<String>,
    /// snapshot.debian.org timestamp (e.g. 20250101T000000Z) for a reproducible package set.
    pub snapshot: Option<String>,
    pub mode: Mode,
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub autologin: Option<bool>,
    pub password: Option<Password>,
    /// Expire the default user's password (overrides the profile's `expire_password`).
    pub expire_password: Option<bool>,
    /// `--set NAME=VALUE` (and the feature-specific options that map to settings).
    pub settings: BTreeMap<String, String>,
    /// How the front end names a setting's own option (`droidmote_port` → `--droidmote-port`), for
    /// messages; settings without one are named `--set NAME=...`.
    pub setting_options: BTreeMap<String, String>,
    pub artifacts: BTreeMap<String, ArtifactSource>,
    /// A prebuilt root filesystem tarball instead of mmdebstrap.
    pub tarball: Option<ArtifactSource>,
    pub binfmt_dir: PathBuf,
    pub epoch: u64,
    /// May ask for passwords on the terminal.
    pub interactive: bool,
    /// The tarball holds password hashes: owner-only unless this is set.
    pub world_readable: bool,
    /// This program, run by mmdebstrap's customize hook as `PROGRAM __initramfs-hook INPUT ROOT` to derive
    /// the initramfs modules once the kernel is installed (see [`initramfs::run_hook`]); without it the
    /// initramfs holds only the profile's `kernel.initramfs_modules`.
    pub initramfs_hook: Option<PathBuf>,
}

impl RootfsRequest {
    pub fn new(out: PathBuf, epoch: u64) -> RootfsRequest {
        RootfsRequest {
            out,
            selection: Selection::default(),
            cache: mmdebstrap::default_cache(),
            no_cache: false,
            mirror: None,
            security_mirror: None,
            suite: None,
            snapshot: None,
            mode: Mode::Unshare,
            hostname: None,
            user: None,
            autologin: None,
            password: None,
            expire_password: None,
            settings: BTreeMap::new(),
            setting_options: BTreeMap::new(),
            artifacts: BTreeMap::new(),
            tarball: None,
            binfmt_dir: PathBuf::from(prerequisites::BINFMT_DIR),
            epoch,
            interactive: false,
            world_readable: false,
            initramfs_hook: None,
        }
    }

    /// How the user names setting `name` on the command line.
    fn setting_option(&self, name: &str) -> String {
        self.setting_options
            .get(name)
            .cloned()
            .unwrap_or_else(|| format!("--set {name}=..."))
    }
}

/// Progress and warnings for the front end.
#[derive(Debug, Clone)]
pub enum RootfsEvent<'a> {
    Phase(&'a str),
    Warning(&'a str),
}

#[derive(Debug, Clone, Serialize)]
pub struct BootFiles {
    pub kernel: String,
    pub initrd: Option<String>,
    pub dtb: Option<String>,
    pub bootloader: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RootfsReport {
    pub board: String,
    pub arch: String,
    pub output: PathBuf,
    pub format: &'static str,
    pub source: String,
    pub suite: String,
    pub features: Vec<String>,
    pub kernel_fragments: Vec<String>,
    pub packages_requested: usize,
    pub downloads: Downloads,
    pub cache: Option<PathBuf>,
    /// The base (mmdebstrap's output): its cache key and whether it came from the cache.
    pub base: Option<BaseReport>,
    pub log: Option<PathBuf>,
    pub hostname: String,
    pub user: users::UserReport,
    pub fstab: Vec<crate::plan::fstab::FstabEntry>,
    pub enabled: Vec<String>,
    pub boot: BootFiles,
    /// The initramfs modules derived from the device tree, with why each is needed.
    pub initramfs: Option<crate::rootmods::Report>,
    pub checks: usize,
    pub contents: TarStats,
    pub size_bytes: u64,
    pub epoch: u64,
    pub seconds: f64,
    pub warnings: Vec<String>,
    /// Generated secrets, each in its own file beside the output (mode 0600); never their values.
    pub secret_files: Vec<SecretFile>,
}

/// A generated secret's file.
#[derive(Debug, Clone, Serialize)]
pub struct SecretFile {
    /// `password` (the default user's) or the setting's name.
    pub secret: String,
    pub path: PathBuf,
}

/// A private (0700) work directory next to the output; removed when dropped or on a stop signal,
/// unless something is still mounted in it.
struct WorkDir {
    path: PathBuf,
    _tracked: crate::signals::Tracked,
}

impl WorkDir {
    fn create(near: &Path, name: &str) -> std::io::Result<WorkDir> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = near.join(format!(".{name}.work-{}", std::process::id()));
        if dir.exists() {
            crate::signals::remove_tree(&dir);
        }
        let tracked = crate::signals::track_tree(&dir);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(WorkDir {
            path: dir,
            _tracked: tracked,
        })
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        crate::signals::remove_tree(&self.path);
    }
}

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

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !h.starts_with('-')
        && !h.ends_with('-')
}

fn valid_locale(l: &str) -> bool {
    !l.is_empty()
        && l.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-'))
}

/// Option names for an artifact / setting on the command line.
pub fn artifact_flags(name: &str) -> (String, String) {
    (format!("--{name}-binary"), format!("--{name}-sha256"))
}

/// Settings resolved, and the secrets generated for `random` (name, value) to write beside the output.
type Settings = (BTreeMap<String, String>, Vec<(String, String)>);

/// Resolves every setting of the selected features: given value, environment, prompt, default. A
/// secret has no default: without a value and without a terminal it is an error.
fn resolve_settings(recipe: &Recipe, req: &RootfsRequest) -> Result<Settings, RootfsError> {
    let known: Vec<&str> = recipe.settings.iter().map(|s| s.name.as_str()).collect();
    for given in req.settings.keys() {
        if !known.contains(&given.as_str()) {
            let owner = features::feature_with_setting(given);
            return Err(RootfsError::Invalid {
                what: req.setting_option(given),
                message: match (owner, known.is_empty()) {
                    (Some(f), _) => format!(
                        "belongs to feature `{f}`, which is not selected: add --feature {f} or leave the option out"
                    ),
                    (None, true) => "no selected feature has settings".into(),
                    (None, false) => format!(
                        "no selected feature has this setting; settings: {}",
                        known.join(", ")
                    ),
                },
            });
        }
    }
    let mut out = BTreeMap::new();
    let mut generated = Vec::new();
    for s in &recipe.settings {
        let err = |message: String| RootfsError::Setting {
            name: s.name.clone(),
            feature: s.feature.clone(),
            message,
        };
        let from_env = s
            .env
            .as_ref()
            .and_then(|e| std::env::var(e).ok())
            .filter(|v| !v.is_empty());
        let value = match (req.settings.get(&s.name), from_env) {
            (Some(v), _) => v.clone(),
            (None, Some(v)) => v,
            (None, None) if s.kind == SettingKind::Secret && req.interactive => {
                let label = s.prompt.clone().unwrap_or_else(|| s.description.clone());
                users::prompt_password(&label)?
            }
            (None, None) => match &s.default {
                // Recipes cannot give a secret a default (features::resolve refuses it).
                Some(d) if s.kind != SettingKind::Secret => d.clone(),
                _ => {
                    return Err(err(format!(
                        "no value{}: give {}{}{}",
                        if s.kind == SettingKind::Secret {
                            " and no terminal to ask on (a secret has no default)"
                        } else {
                            ""
                        },
                        req.setting_option(&s.name),
                        s.env
                            .as_ref()
                            .map(|e| format!(" or set the environment variable {e}"))
                            .unwrap_or_default(),
                        if s.kind == SettingKind::Secret {
                            format!(
                                ", or `{RANDOM}` to generate one (written beside the output, mode 0600)"
                            )
                        } else {
                            String::new()
                        }
                    )));
                }
            },
        };
        let value = if s.kind == SettingKind::Secret && value == RANDOM {
            let v = users::random_password()?;
            generated.push((s.name.clone(), v.clone()));
            v
        } else {
            value
        };
        match s.kind {
            SettingKind::Port => {
                if !value.parse::<u16>().is_ok_and(|p| p > 0) {
                    return Err(err(format!("`{value}` is not a TCP port (1-65535)")));
                }
            }
            SettingKind::Secret => {
                users::check_password(&value, &s.name).map_err(|e| err(e.to_string()))?;
            }
            SettingKind::Text => {
                if value.chars().any(|c| c.is_control()) {
                    return Err(err("contains control characters".into()));
                }
            }
        }
        out.insert(s.name.clone(), value);
    }
    Ok((out, generated))
}

/// The default user's hash, and the password when it was generated here (to write beside the output).
fn resolve_password(
    recipe: &Recipe,
    req: &RootfsRequest,
) -> Result<(String, Option<String>), RootfsError> {
    let what = format!("the password hash for user `{}`", recipe.user);
    match &req.password {
        Some(Password::Hash(h)) => {
            users::validate_hash(h, &what)?;
            Ok((h.clone(), None))
        }
        Some(Password::Plain(p)) => {
            users::check_password(p, &format!("the password for `{}`", recipe.user))?;
            Ok((users::hash_password(p)?, None))
        }
        Some(Password::Random) => {
            let p = users::random_password()?;
            Ok((users::hash_password(&p)?, Some(p)))
        }
        None => {
            if let Some(h) = &recipe.password_hash {
                users::validate_hash(&h.value, &format!("{} (rootfs.password_hash)", h.at()))?;
                return Ok((h.value.clone(), None));
            }
            if req.interactive {
                let p = users::prompt_password(&format!("Password for user {}", recipe.user))?;
                return Ok((users::hash_password(&p)?, None));
            }
            Err(users::UserError::NoPassword {
                user: recipe.user.clone(),
            }
            .into())
        }
    }
}

/// Where a generated secret goes: beside the output, `OUT.password` or `OUT.droidmote-password`.
pub fn secret_path(out: &Path, secret: &str) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!("{name}.{}", secret.replace('_', "-")))
}

/// Finds the files the image builder takes from the tree, where the profile says they are.
fn check_boot_files(tree: &TarTree, profile: &Profile) -> Result<BootFiles, RootfsError> {
    let missing = |what: &str, pattern: &str, hint: String| RootfsError::BootFile {
        what: what.into(),
        pattern: pattern.into(),
        board: profile.name.clone(),
        hint,
    };
    let k = &profile.kernel;
    let files_matching = |pattern: &str| -> Result<Vec<String>, RootfsError> {
        let mut v = Vec::new();
        for p in tree.glob(pattern) {
            if let Some((_, n)) = tree.lookup(&p)?
                && matches!(n.kind, tartree::Kind::File(_))
            {
                v.push(p);
            }
        }
        v.sort_by(|a, b| crate::rootfs::tree::version_cmp(a, b));
        Ok(v)
    };
    let pkg_hint = |p: &str| {
        if p.is_empty() {
            String::new()
        } else {
            format!(" (package {p})")
        }
    };
    let kernel = files_matching(&k.path)?
        .pop()
        .ok_or_else(|| missing("kernel", &k.path, pkg_hint(&k.package)))?;
    let initrd = match &k.initrd {
        Some(pat) => Some(files_matching(pat)?.pop().ok_or_else(|| {
            missing(
                "initrd",
                pat,
                " (initramfs-tools generates it when the kernel is installed)".into(),
            )
        })?),
        None => None,
    };
    let dtb = match &k.dtb {
        Some(name) => {
            let mut dirs = tree.glob(&k.dtb_dir);
            dirs.sort_by(|a, b| crate::rootfs::tree::version_cmp(a, b));
            let found = dirs
                .iter()
                .rev()
                .map(|d| format!("{d}/{name}"))
                .find(|p| tree.lookup(p).ok().flatten().is_some());
            Some(found.ok_or_else(|| {
                missing(
                    "device tree",
                    &format!("{}/{name}", k.dtb_dir),
                    pkg_hint(&k.package),
                )
            })?)
        }
        None => None,
    };
    let bootloader = match &profile.bootloader {
        Some(b) => {
            let data = tree.read(&b.path.value)?.ok_or_else(|| {
                missing(
                    "bootloader",
                    &b.path.value,
                    pkg_hint(b.package.as_deref().unwrap_or("")),
                )
            })?;
            if let Some(m) = &b.magic {
                let at = m.offset as usize;
                if data.get(at..at + m.text.len()) != Some(m.text.as_bytes()) {
                    return Err(missing(
                        "bootloader with the expected signature",
                        &b.path.value,
                        format!(" ({:?} at byte {})", m.text, m.offset),
                    ));
                }
            }
            Some(b.path.value.clone())
        }
        None => None,
    };
    Ok(BootFiles {
        kernel,
        initrd,
        dtb,
        bootloader,
    })
}

/// Unpacks the finished tarball into `dir` (created 0700; tar gives it the tree's own mode) with owners,
/// modes and extended attributes.
fn unpack(tar: &Path, dir: &Path) -> Result<(), RootfsError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(io(format!("creating {}", dir.display())))?;
    let st = std::process::Command::new("tar")
        .args([
            "--extract",
            "--numeric-owner",
            "--same-permissions",
            "--xattrs",
            "--xattrs-include=*",
            "--file",
        ])
        .arg(tar)
        .arg("--directory")
        .arg(dir)
        .status()
        .map_err(io("running tar to unpack the root filesystem"))?;
    if !st.success() {
        return Err(RootfsError::Io {
            context: format!("unpacking into {}", dir.display()),
            source: std::io::Error::other(format!("tar exited with {st}")),
        });
    }
    Ok(())
}

/// Derives the board's initramfs modules from the built tree, puts the list into `initramfs` (written by
/// the customization) and checks the tree's initramfs. With the customize hook (`hooked`) the initramfs
/// must already hold every derived module; a prebuilt tarball only gets warnings.
fn initramfs_modules(
    profile: &Profile,
    tree: &TarTree,
    initramfs: &mut [(String, String)],
    hooked: bool,
    on: &dyn Fn(RootfsEvent<'_>),
    warnings: &mut Vec<String>,
) -> Result<Option<crate::rootmods::Report>, RootfsError> {
    let mut warn = |w: String| {
        on(RootfsEvent::Warning(&w));
        warnings.push(w);
    };
    let Some(req) = initramfs::request(profile) else {
        if profile.medium.is_some() {
            warn(format!(
                "board `{}` has a medium but no kernel.dtb: the initramfs modules cannot be derived, so it carries only kernel.initramfs_modules",
                profile.name
            ));
        }
        return Ok(None);
    };
    let files = initramfs::TarFiles(tree);
    let report = match crate::rootmods::analyze(&files, &req) {
        Ok(r) => r,
        Err(e) if !hooked => {
            warn(format!(
                "cannot derive the initramfs modules from this root filesystem: {e}; the initramfs configuration lists only kernel.initramfs_modules"
            ));
            return Ok(None);
        }
        Err(e) => return Err(initramfs::InitramfsError::from(e).into()),
    };
    for w in &report.warnings {
        warn(w.clone());
    }
    if !report.derivation.unresolved.is_empty() {
        warn(format!(
            "{} providers in the root device's chain are unresolved (no module or built-in driver known): {}; see `boardsmith initramfs-modules {} --rootfs ROOT`",
            report.derivation.unresolved.len(),
            report
                .derivation
                .unresolved
                .iter()
                .map(|u| u.what.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            profile.name
        ));
    }
    if let Some(entry) = initramfs
        .iter_mut()
        .find(|(p, _)| p == initramfs::MODULES_FILE)
    {
        entry.1 = initramfs::modules_file(&report.initramfs_modules, true);
    }
    if let Some(pattern) = &profile.kernel.initrd {
        match initramfs::initrd_modules(&files, pattern, &report.kernel_version) {
            Ok(Some((path, present))) => {
                let lacking = initramfs::missing(&report, &present);
                if !lacking.is_empty() {
                    let msg = format!(
                        "the initramfs {path} lacks modules the root device needs: {}",
                        lacking.join(", ")
                    );
                    if hooked {
                        return Err(initramfs::InitramfsError::Hook {
                            context: "after the initramfs hook".into(),
                            message: msg,
                        }
                        .into());
                    }
                    warn(format!(
                        "{msg}; regenerate it in the root filesystem (update-initramfs -u) with the list written to /{}",
                        initramfs::MODULES_FILE
                    ));
                }
            }
            Ok(None) => {}
            Err(e) if !hooked => warn(format!("cannot check the initramfs: {e}")),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(report))
}

fn output_is_tar(out: &Path) -> bool {
    out.extension().is_some_and(|e| e == "tar")
}

/// The recipe for this board and request (profile, features, overrides), checked, with the template
/// variables known before any setting is resolved, and the host name.
fn resolve_recipe(
    profile: &Profile,
    req: &RootfsRequest,
) -> Result<(Recipe, customize::Vars, String), RootfsError> {
    let mut recipe = features::resolve(profile, &req.selection)?;
    if let Some(m) = &req.mirror {
        recipe.mirror = m.clone();
    }
    if let Some(m) = &req.security_mirror {
        recipe.security_mirror = Some(m.clone()).filter(|s| !s.is_empty());
    }
    if let Some(s) = &req.suite {
        recipe.suite = s.clone();
    }
    if let Some(h) = &req.hostname {
        recipe.hostname = h.clone();
    }
    if let Some(u) = &req.user {
        if !features::valid_user_name(u) {
            return Err(RootfsError::Invalid {
                what: format!("--user {u}"),
                message: "must be a lowercase login name other than root: a letter or '_', then letters, digits, '_' or '-'".into(),
            });
        }
        recipe.user = u.clone();
    }
    let autologin_files = recipe.files.iter().any(|f| f.when_autologin);
    if let Some(a) = req.autologin {
        if !a && recipe.features.contains(&"droidmote".to_string()) {
            return Err(RootfsError::Invalid {
                what: "--autologin false".into(),
                message: "the droidmote feature runs in the default user's X session, which needs autologin".into(),
            });
        }
        if a && !autologin_files {
            return Err(RootfsError::Invalid {
                what: "--autologin".into(),
                message: format!(
                    "no selected feature logs anyone in (autologin applies to a desktop session): add one of --feature {}, or leave --autologin out",
                    features::features_using_autologin().join(", --feature ")
                ),
            });
        }
        recipe.autologin = a || recipe.autologin;
    }
    if let Some(e) = req.expire_password {
        recipe.expire_password = e;
    }
    if recipe.expire_password && recipe.autologin && autologin_files {
        return Err(RootfsError::Invalid {
            what: "an expired password (--expire-password or the profile's rootfs.expire_password) with autologin".into(),
            message: "LightDM's automatic login stops at a password that must be changed, so the desktop (and DroidMote) would never start; choose one of them".into(),
        });
    }
    for (what, url) in [
        ("mirror", Some(&recipe.mirror)),
        ("security mirror", recipe.security_mirror.as_ref()),
    ] {
        if let Some(u) = url
            && (!u.contains("://") || u.chars().any(char::is_whitespace))
        {
            return Err(RootfsError::Invalid {
                what: format!("the {what} {u:?}"),
                message: "must be a URL such as http://deb.debian.org/debian".into(),
            });
        }
    }
    if recipe.suite.is_empty()
        || !recipe
            .suite
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(RootfsError::Invalid {
            what: format!("suite {:?}", recipe.suite),
            message: "must be a Debian suite name such as bookworm".into(),
        });
    }
    // Spaces and quotes are fine (mmdebstrap's hooks get every path quoted or through the
    // environment); control characters would break its line-based special hooks and log.
    for (what, p) in [("--cache", &req.cache), ("the output", &req.out)] {
        if p.to_string_lossy().chars().any(char::is_control) {
            return Err(RootfsError::Invalid {
                what: format!("{what} {:?}", p.display().to_string()),
                message: "contains control characters (newline, tab, ...); choose another path"
                    .into(),
            });
        }
    }
    let (console_tty, console_baud) = match profile.console.split_once(',') {
        Some((t, b)) => (t.to_string(), b.to_string()),
        None => (profile.console.clone(), "115200".to_string()),
    };
    let mut vars = customize::Vars::new();
    vars.insert("board".into(), profile.name.clone());
    vars.insert("console".into(), profile.console.clone());
    vars.insert("console_tty".into(), console_tty);
    vars.insert("console_baud".into(), console_baud);
    let hostname = customize::render(&recipe.hostname, &vars, "rootfs.hostname")?;
    if !valid_hostname(&hostname) {
        return Err(RootfsError::Invalid {
            what: format!("hostname {hostname:?}"),
            message: "must be 1-63 letters, digits or '-', not starting or ending with '-'".into(),
        });
    }
    if !valid_locale(&recipe.locale) {
        return Err(RootfsError::Invalid {
            what: format!("locale {:?}", recipe.locale),
            message: "must look like C.UTF-8 or en_US.UTF-8".into(),
        });
    }
    vars.insert("hostname".into(), hostname.clone());
    vars.insert("user".into(), recipe.user.clone());
    vars.insert("locale".into(), recipe.locale.clone());
    vars.insert("timezone".into(), recipe.timezone.clone());
    Ok((recipe, vars, hostname))
}

/// Why the initramfs modules of a cached base (its module list) are not the ones derived for this
/// board's device tree from the base's own kernel, or None if they are (or cannot be derived: the
/// configuration then reports that as for any base).
fn base_modules_differ(profile: &Profile, tree: &TarTree) -> Option<String> {
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
fn initramfs_files(profile: &Profile) -> Vec<(String, String)> {
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
fn base_plan(
    profile: &Profile,
    recipe: &Recipe,
    req: &RootfsRequest,
    initramfs: &[(String, String)],
    per_dtb: bool,
) -> Result<mmdebstrap::BasePlan, RootfsError> {
    let mut packages = recipe.packages.clone();
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
        suite: recipe.suite.clone(),
        variant: recipe.variant.clone(),
        mirror,
        security,
        snapshot: req.snapshot.clone(),
        components: recipe.components.clone(),
        packages,
        apt_options: recipe.apt_options.clone(),
        dpkg_options: recipe.dpkg_options.clone(),
        uploads: initramfs.to_vec(),
        debconf,
        initramfs_hook,
        layer_on: None,
    })
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
struct Base {
    tar: PathBuf,
    _held: Option<cache::Held>,
    _pending: Option<cache::Pending>,
    report: BaseReport,
    downloads: Downloads,
    log: Option<PathBuf>,
}

/// Runs mmdebstrap for `plan` into `output`, holding the architecture's package cache.
#[allow(clippy::too_many_arguments)]
fn run_mmdebstrap(
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
    let level = if plan.layer_on.is_some() {
        "-layer"
    } else {
        ""
    };
    let log_path = logs.join(format!(
        "{}-{}{level}.log",
        profile.name,
        profile.arch.debian()
    ));
    let run = plan.prepare(
        &mmdebstrap::RunPaths {
            cache: arch_cache,
            work: work.to_path_buf(),
            output: output.to_path_buf(),
            log: log_path.clone(),
        },
        epoch,
    )?;
    on(RootfsEvent::Phase(&format!(
        "mmdebstrap {} {} ({} packages requested; log {})",
        plan.suite,
        profile.arch.debian(),
        run.packages.len(),
        log_path.display()
    )));
    let downloads = run.run(&|line| on(RootfsEvent::Phase(line)))?;
    Ok((downloads, log_path))
}

/// The base stage: the base from the cache (a hit), or built by mmdebstrap and stored (a miss), or
/// built into the work directory (`--no-cache`).
#[allow(clippy::too_many_arguments)]
fn base_stage(
    profile: &Profile,
    plan: &mmdebstrap::BasePlan,
    inputs: &cache::KeyInputs,
    req: &RootfsRequest,
    work: &Path,
    on: &dyn Fn(RootfsEvent<'_>),
    warnings: &mut Vec<String>,
) -> Result<Base, RootfsError> {
    let key = inputs.key();
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
            let moved = match cache::archive_moved(inputs, plan) {
                Ok(m) => m,
                Err(e) => Some(format!("the archive could not be read again ({e})")),
            };
            if let Some(why) = moved {
                let w = format!(
                    "the base was not stored in the cache: {why}; this build is complete, the next one builds its base again"
                );
                on(RootfsEvent::Warning(&w));
                warnings.push(w);
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

/// Builds the root filesystem described by `profile` and `req`, in two stages: the base (mmdebstrap's
/// output, through the cache; or a prebuilt tarball) and the board configuration applied to it.
pub fn build_rootfs(
    profile: &Profile,
    req: &RootfsRequest,
    on: &dyn Fn(RootfsEvent<'_>),
) -> Result<RootfsReport, RootfsError> {
    let started = Instant::now();
    let mut warnings = Vec::new();
    on(RootfsEvent::Phase("resolving the recipe"));
    let (recipe, mut vars, hostname) = resolve_recipe(profile, req)?;

    // Output: where it goes and in which form.
    let out = req.out.clone();
    let as_tar = output_is_tar(&out);
    let out_name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| RootfsError::Output {
            path: out.clone(),
            message: "has no file name".into(),
        })?;
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    if !as_tar {
        if !rustix::process::geteuid().is_root() {
            return Err(RootfsError::Output {
                path: out,
                message: "a directory root filesystem needs root (owners and device nodes); write a .tar instead (-o NAME.tar), which needs no root".into(),
            });
        }
        if out.exists()
            && std::fs::read_dir(&out)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(RootfsError::Output {
                path: out,
                message: "exists and is not an empty directory; remove it or choose another".into(),
            });
        }
    } else if out.is_dir() {
        return Err(RootfsError::Output {
            path: out,
            message: "is a directory; give a file name ending in .tar".into(),
        });
    }

    // Everything the user must supply, before the long part.
    let (password_hash, generated_password) = resolve_password(&recipe, req)?;
    let (settings, generated) = resolve_settings(&recipe, req)?;
    vars.extend(settings);
    // Generated secrets: (name in the report, file, value); written with the output.
    let secrets: Vec<(String, PathBuf, String)> = generated_password
        .map(|p| ("password".to_string(), p))
        .into_iter()
        .chain(generated)
        .map(|(name, value)| {
            let path = secret_path(&out, &name);
            (name, path, value)
        })
        .collect();
    for name in req.artifacts.keys() {
        if !recipe.artifacts.iter().any(|a| &a.name == name) {
            return Err(RootfsError::Invalid {
                what: format!("{} {name}", artifact_flags(name).0),
                message: "no selected feature uses it (select the feature that does, e.g. --feature droidmote)".into(),
            });
        }
    }
    let mut artifact_plan = Vec::new();
    for a in &recipe.artifacts {
        let (flag, sha_flag) = artifact_flags(&a.name);
        let given = req.artifacts.get(&a.name).cloned().unwrap_or_default();
        let (Some(source), Some(sha)) = (given.source, given.sha256) else {
            return Err(RootfsError::MissingArtifact {
                name: a.name.clone(),
                feature: a.feature.clone(),
                description: a.description.clone(),
                flag,
                sha_flag,
            });
        };
        fetch::parse_sha256(&sha_flag, &sha)?;
        artifact_plan.push((a.clone(), source, sha));
    }
    let tarball = match &req.tarball {
        Some(t) => {
            let (Some(source), Some(sha)) = (t.source.clone(), t.sha256.clone()) else {
                return Err(RootfsError::Invalid {
                    what: "--rootfs-tarball".into(),
                    message: "needs its checksum: --sha256 HEX".into(),
                });
            };
            fetch::parse_sha256("--sha256", &sha)?;
            Some((source, sha))
        }
        None => None,
    };
    // The initramfs configuration: given to mmdebstrap, and written by stage 2 with the derived list.
    let mut initramfs = initramfs_files(profile);
    // The base's key (and the archive's state it covers), and whether mmdebstrap will be needed.
    let base_input = match &tarball {
        Some(_) => None,
        None => {
            prerequisites::require_tool("mmdebstrap", "mmdebstrap")?;
            let plan = base_plan(profile, &recipe, req, &initramfs, false)?;
            on(RootfsEvent::Phase(
                "computing the base's cache key (reading the archive's Release files)",
            ));
            let facts = cache::facts(&plan)?;
            let inputs = cache::KeyInputs::new(&plan, &facts);
            if req.no_cache || !layer::looks_present(profile, req, &plan, &inputs) {
                prerequisites::check_foreign_arch(profile.arch, &req.binfmt_dir)?;
            }
            Some((plan, inputs))
        }
    };
    let layout = plan(
        profile,
        &PlanInput {
            epoch: req.epoch,
            ..Default::default()
        },
    )?;

    let created = crate::signals::create_dir_all_tracked(&parent)
        .map_err(io(format!("creating {}", parent.display())))?;
    let work = WorkDir::create(&parent, &out_name).map_err(io("creating a work directory"))?;
    // The secret files, owner-only from their creation; renamed into place with the output.
    let mut pending_secrets = Vec::new();
    for (name, path, value) in &secrets {
        let p = crate::output::write_atomic_with_mode(
            path,
            format!("{value}\n").as_bytes(),
            crate::output::PRIVATE,
        )
        .map_err(io(format!(
            "writing the generated {name} to {}",
            path.display()
        )))?;
        pending_secrets.push(p);
    }

    let mut artifacts = Vec::new();
    for (a, source, sha) in &artifact_plan {
        on(RootfsEvent::Phase(&format!(
            "fetching {} ({})",
            a.name, a.description
        )));
        let dest = work.path().join(format!("artifact-{}", a.name));
        fetch::fetch_verified(
            &format!("{} {source}", artifact_flags(&a.name).0),
            source,
            sha,
            &dest,
        )?;
        let data = std::fs::read(&dest).map_err(io(format!("reading {}", dest.display())))?;
        artifacts.push((a.dest.clone(), data, a.mode));
    }

    // Stage 1, the base: a prebuilt tarball, or mmdebstrap's output through the cache.
    let mut downloads = Downloads::default();
    let mut log = None;
    let mut cache_used = None;
    let mut source_desc;
    let mut hooked = false;
    let mut base_report = None;
    let base = match (&tarball, &base_input) {
        (Some((source, sha)), _) => {
            on(RootfsEvent::Phase("fetching the root filesystem tarball"));
            let source_tar = work.path().join("source.tar");
            let dl = work.path().join("source.download");
            fetch::fetch_verified_noting(
                &format!("--rootfs-tarball {source}"),
                source,
                sha,
                &dl,
                &|m| on(RootfsEvent::Warning(m)),
            )?;
            fetch::decompress_tarball("--rootfs-tarball", &dl, &source_tar)?;
            source_desc = format!("tarball {source}");
            None
        }
        (None, Some((plan, inputs))) => {
            let b = layer::stage(profile, plan, inputs, req, work.path(), on, &mut warnings)?;
            downloads = b.downloads.clone();
            log = b.log.clone();
            hooked = plan.initramfs_hook.is_some();
            cache_used = Some(req.cache.clone());
            source_desc = format!(
                "mmdebstrap {} from {} ({})",
                plan.suite,
                plan.mirror,
                layer::describe(&b.report)
            );
            base_report = Some(b.report.clone());
            Some(b)
        }
        (None, None) => unreachable!("a Debian build has its base plan"),
    };
    let source_tar = base
        .as_ref()
        .map(|b| b.tar.clone())
        .unwrap_or_else(|| work.path().join("source.tar"));

    // Stage 2, the board configuration: without a package manager, the same on a cache hit and a miss.
    on(RootfsEvent::Phase(
        "configuring users, files, fstab and services",
    ));
    // Errors in a prebuilt tarball name it, not its working copy.
    let shown = match &tarball {
        Some((source, _)) => PathBuf::from(format!("--rootfs-tarball {source}")),
        None => source_tar.clone(),
    };
    let mut tree = TarTree::open_as(&source_tar, &shown)?;
    // A shared board layer's key leaves the device tree out: it is this board's only if the modules
    // derived for this board's device tree are those the layer's initramfs was made with. Otherwise this
    // board needs a layer of its own device tree (its own key, built once like any other, on the base).
    let mut base = base;
    if let (Some(b), Some((plan, inputs))) = (&base, &base_input)
        && layer::is_hit(&b.report)
        && plan.initramfs_hook.is_some()
        && let Some(why) = base_modules_differ(profile, &tree)
    {
        let w = format!(
            "board layer {} was built for other initramfs modules ({why}): using a layer of {}'s device tree",
            layer::layer_key(&b.report),
            profile.name
        );
        on(RootfsEvent::Warning(&w));
        warnings.push(w);
        drop(tree);
        // Its shared lock is no longer needed.
        drop(base.take());
        let plan = base_plan(profile, &recipe, req, &initramfs, true)?;
        let facts = cache::Facts {
            mmdebstrap: inputs.mmdebstrap.clone(),
            keyring: inputs.keyring.clone(),
            archive: inputs.archive.clone(),
            epoch: inputs.epoch,
        };
        let inputs = cache::KeyInputs::new(&plan, &facts);
        let b = layer::stage(profile, &plan, &inputs, req, work.path(), on, &mut warnings)?;
        downloads = b.downloads.clone();
        log = b.log.clone();
        source_desc = format!(
            "mmdebstrap {} from {} ({}, of its device tree)",
            plan.suite,
            plan.mirror,
            layer::describe(&b.report)
        );
        base_report = Some(b.report.clone());
        tree = TarTree::open(&b.tar)?;
        base = Some(b);
    }
    let initramfs_report =
        initramfs_modules(profile, &tree, &mut initramfs, hooked, on, &mut warnings)?;
    let customized = customize::apply(
        &mut tree,
        &recipe,
        &customize::Inputs {
            board: &profile.name,
            epoch: req.epoch,
            password_hash: &password_hash,
            expire_password: recipe.expire_password,
            vars: &vars,
            layout: &layout,
            artifacts,
            initramfs,
            strict: tarball.is_none(),
        },
    )?;
    for w in &customized.warnings {
        on(RootfsEvent::Warning(w));
        warnings.push(w.clone());
    }
    on(RootfsEvent::Phase("checking the result"));
    let checks = match customize::run_checks(&tree, &recipe, &vars) {
        Ok(n) => n,
        // A foreign tarball need not have what the Debian recipe checks for: report, do not fail.
        Err(e) if tarball.is_some() => {
            let w = format!("{e} (not fatal for a prebuilt tarball)");
            on(RootfsEvent::Warning(&w));
            warnings.push(w);
            0
        }
        Err(e) => return Err(e.into()),
    };
    let boot = if tarball.is_none() {
        check_boot_files(&tree, profile)?
    } else {
        // A foreign tarball may carry its own boot arrangement; report what is there.
        check_boot_files(&tree, profile).unwrap_or(BootFiles {
            kernel: String::new(),
            initrd: None,
            dtb: None,
            bootloader: None,
        })
    };

    on(RootfsEvent::Phase("writing the root filesystem"));
    let (contents, size_bytes) = if as_tar {
        let (pending, file) =
            PendingFile::create_with_mode(&out, crate::output::artefact_mode(req.world_readable))
                .map_err(io(format!("creating {}", out.display())))?;
        drop(file);
        let stats = tree.write(pending.temp_path(), req.epoch)?;
        let f = std::fs::File::open(pending.temp_path()).map_err(io("reopening the tarball"))?;
        f.sync_all().map_err(io("syncing the tarball"))?;
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        pending
            .commit()
            .map_err(io(format!("renaming to {}", out.display())))?;
        (stats, size)
    } else {
        let final_tar = work.path().join("final.tar");
        let stats = tree.write(&final_tar, req.epoch)?;
        drop(tree);
        let size = std::fs::metadata(&final_tar).map(|m| m.len()).unwrap_or(0);
        let pending = parent.join(format!(".{out_name}.partial-{}", std::process::id()));
        crate::signals::remove_tree(&pending);
        let tracked = crate::signals::track_tree(&pending);
        let unpacked = unpack(&final_tar, &pending).and_then(|()| {
            if out.exists() {
                std::fs::remove_dir(&out)
                    .map_err(io(format!("replacing the empty {}", out.display())))?;
            }
            crate::signals::commit_rename(&pending, &out, tracked)
                .map_err(io(format!("renaming to {}", out.display())))
        });
        if let Err(e) = unpacked {
            crate::signals::remove_tree(&pending);
            return Err(e);
        }
        (stats, size)
    };
    // The base (and its lock) is no longer read.
    drop(base);
    let mut secret_files = Vec::new();
    for (p, (name, _, _)) in pending_secrets.into_iter().zip(&secrets) {
        let path = p
            .commit()
            .map_err(io(format!("writing the generated {name}")))?;
        secret_files.push(SecretFile {
            secret: name.clone(),
            path,
        });
    }
    drop(work);
    created.keep();

    Ok(RootfsReport {
        board: profile.name.clone(),
        arch: profile.arch.debian().into(),
        output: out,
        format: if as_tar { "tar" } else { "directory" },
        source: source_desc,
        suite: recipe.suite.clone(),
        features: recipe.features.clone(),
        kernel_fragments: recipe.kernel_fragments.clone(),
        packages_requested: recipe.packages.len(),
        downloads,
        cache: cache_used,
        base: base_report,
        log,
        hostname,
        user: customized.user,
        fstab: customized.fstab,
        enabled: customized.enabled,
        boot,
        initramfs: initramfs_report,
        checks,
        contents,
        size_bytes,
        epoch: req.epoch,
        seconds: started.elapsed().as_secs_f64(),
        warnings,
        secret_files,
    })
}
