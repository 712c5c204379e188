//! What `rootfs` is asked to build, the events it reports on the way, and its report.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::mmdebstrap::{self, Downloads, Mode};
use super::tartree::TarStats;
use super::{BaseReport, Selection, prerequisites, users};

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
    /// the initramfs modules once the kernel is installed (see [`super::initramfs::run_hook`]); without it the
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
    pub(super) fn setting_option(&self, name: &str) -> String {
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
