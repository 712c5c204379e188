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
//! after a miss, so both give the same
//! tarball. The base holds no secret: passwords and secret settings only exist in that second stage.
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

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::mmdebstrap::BasePlan;

/// Version of the base recipe's layout: bumped whenever boardsmith builds bases differently in a way
/// the command line does not show, so that older entries are never used.
pub const SCHEME: u32 = 2;
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
    pub suite: String,
    pub variant: String,
    pub mode: String,
    pub components: Vec<String>,
    pub sources: Vec<String>,
    pub snapshot: Option<String>,
    /// The resolved package list: recipe, profile (kernel, bootloader), features.
    pub packages: Vec<String>,
    pub apt_options: Vec<String>,
    pub dpkg_options: Vec<String>,
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
    /// A board layer's: the key of the base it is built on (see [`super::layer`]); absent for a base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
}

fn sha256_hex(data: &[u8]) -> String {
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
                path: super::initramfs::HOOK_INPUT_IN_CHROOT.into(),
                sha256: sha256_hex(h.keyed.as_bytes()),
            });
        }
        KeyInputs {
            scheme: SCHEME,
            arch: plan.arch.debian().into(),
            suite: plan.suite.clone(),
            variant: plan.variant.clone(),
            mode: plan.mode.as_str().into(),
            components: plan.components.clone(),
            sources: plan.sources(),
            snapshot: plan.snapshot.clone(),
            packages: plan.packages.clone(),
            apt_options: plan.apt_options.clone(),
            dpkg_options: plan.dpkg_options.clone(),
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

    /// The key: sha256 of the inputs' canonical JSON.
    pub fn key(&self) -> String {
        sha256_hex(&serde_json::to_vec(self).unwrap_or_default())
    }
}

// ---- facts -----------------------------------------------------------------------------------

/// `mmdebstrap --version`, e.g. "mmdebstrap 1.3.5".
pub fn mmdebstrap_version() -> Result<String, CacheError> {
    let o = std::process::Command::new("mmdebstrap")
        .arg("--version")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .map_err(|e| CacheError::Mmdebstrap {
            detail: e.to_string(),
        })?;
    let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if !o.status.success() || v.is_empty() || v.len() > 200 {
        return Err(CacheError::Mmdebstrap {
            detail: format!("{} {}", o.status, String::from_utf8_lossy(&o.stderr).trim()),
        });
    }
    Ok(v)
}

/// apt's trusted keyring as mmdebstrap uses it: `Dir::Etc::Trusted` and every file of
/// `Dir::Etc::TrustedParts` (read through `apt-config`), and Debian's archive keyring, which mmdebstrap
/// names in the sources it writes when apt does not trust the suite's key. Names relative to their
/// directory, so only the content matters.
pub fn keyring() -> Result<Vec<KeyringFile>, CacheError> {
    let (trusted, parts) = apt_trusted_paths();
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    files.push(("trusted.gpg".into(), trusted));
    if let Ok(rd) = std::fs::read_dir(&parts) {
        let mut names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".gpg") || n.ends_with(".asc"))
            .collect();
        names.sort();
        names.truncate(1000);
        for n in names {
            files.push((format!("trusted.gpg.d/{n}"), parts.join(&n)));
        }
    }
    files.push((
        "debian-archive-keyring.gpg".into(),
        PathBuf::from("/usr/share/keyrings/debian-archive-keyring.gpg"),
    ));
    let mut out = Vec::new();
    for (name, path) in files {
        let Ok(f) = File::open(&path) else { continue };
        let mut data = Vec::new();
        f.take(MAX_KEYRING)
            .read_to_end(&mut data)
            .map_err(io_err(format!("reading the keyring {}", path.display())))?;
        out.push(KeyringFile {
            name,
            sha256: sha256_hex(&data),
        });
    }
    Ok(out)
}

/// (Dir::Etc::Trusted, Dir::Etc::TrustedParts) from apt's configuration, or apt's defaults.
fn apt_trusted_paths() -> (PathBuf, PathBuf) {
    let defaults = (
        PathBuf::from("/etc/apt/trusted.gpg"),
        PathBuf::from("/etc/apt/trusted.gpg.d"),
    );
    let Ok(o) = std::process::Command::new("apt-config")
        .args([
            "shell",
            "T",
            "Dir::Etc::Trusted/f",
            "P",
            "Dir::Etc::TrustedParts/d",
        ])
        .output()
    else {
        return defaults;
    };
    let text = String::from_utf8_lossy(&o.stdout);
    let value = |var: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{var}=")))
            .map(|v| v.trim().trim_matches('\'').to_string())
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    (
        value("T").unwrap_or(defaults.0),
        value("P").unwrap_or(defaults.1),
    )
}

/// Release files fetched in this process: every board of a batch sees the archive as the first did.
static ARCHIVE_SEEN: Mutex<BTreeMap<String, ArchiveState>> = Mutex::new(BTreeMap::new());

fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_global(Some(Duration::from_secs(120)))
        .user_agent(concat!("boardsmith/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

enum Got {
    Data(Vec<u8>),
    NotFound,
}

fn get(url: &str) -> Result<Got, CacheError> {
    let fail = |detail: String| CacheError::Archive {
        url: url.to_string(),
        detail,
    };
    match http_agent().get(url).call() {
        Ok(mut resp) => {
            let data = resp
                .body_mut()
                .with_config()
                .limit(MAX_RELEASE)
                .read_to_vec()
                .map_err(|e| fail(e.to_string()))?;
            Ok(Got::Data(data))
        }
        Err(ureq::Error::StatusCode(404 | 410)) => Ok(Got::NotFound),
        Err(ureq::Error::StatusCode(c)) => Err(fail(format!("the server answered HTTP {c}"))),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// A field of a Release file (in the signed part of an InRelease).
fn release_field(text: &str, field: &str) -> Option<String> {
    let prefix = format!("{field}:");
    text.lines()
        .take_while(|l| !l.starts_with("-----BEGIN PGP SIGNATURE"))
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().to_string())
}

/// Fetches the Release file of `suite` at `archive` (InRelease, else Release), as it is now.
pub fn fetch_release(archive: &str, suite: &str) -> Result<ArchiveState, CacheError> {
    let mut url = format!("{archive}/dists/{suite}/InRelease");
    let data = match get(&url)? {
        Got::Data(d) => d,
        Got::NotFound => {
            url = format!("{archive}/dists/{suite}/Release");
            match get(&url)? {
                Got::Data(d) => d,
                Got::NotFound => {
                    return Err(CacheError::Archive {
                        url,
                        detail: format!(
                            "neither InRelease nor Release exists (HTTP 404): is `{suite}` a suite of this archive?"
                        ),
                    });
                }
            }
        }
    };
    let text = String::from_utf8_lossy(&data);
    let date = release_field(&text, "Date").ok_or_else(|| CacheError::Release {
        url: url.clone(),
        message: "has no Date field: not a Debian archive's Release file (check the mirror URL)"
            .into(),
    })?;
    release_date(&date).ok_or_else(|| CacheError::Release {
        url: url.clone(),
        message: format!(
            "its Date `{date}` is not a UTC date like `Sat, 11 Jul 2026 10:16:37 UTC`"
        ),
    })?;
    Ok(ArchiveState {
        url,
        sha256: sha256_hex(&data),
        date,
        valid_until: release_field(&text, "Valid-Until"),
    })
}

/// A Release file's Date (RFC 2822 in UTC, as Debian's archive tools write it) as a Unix timestamp.
/// Hand-written: the crates that parse RFC 2822 reject the `UTC` zone name dak writes.
pub fn release_date(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s.split_once(',').map_or(s, |(_, rest)| rest).trim();
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [day, month, year, time, zone] = parts.as_slice() else {
        return None;
    };
    if !matches!(*zone, "UTC" | "GMT" | "UT" | "Z" | "+0000") {
        return None;
    }
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as u32
        + 1;
    let t: Vec<u32> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [hh, mm, ss] = t.as_slice() else {
        return None;
    };
    crate::time::from_civil(year.parse().ok()?, month, day.parse().ok()?, *hh, *mm, *ss)
}

/// A snapshot.debian.org timestamp (`20250101T000000Z`) as a Unix timestamp.
pub fn snapshot_time(ts: &str) -> Result<u64, CacheError> {
    let bad = || CacheError::Snapshot { given: ts.into() };
    let b = ts.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return Err(bad());
    }
    let digits = |r: std::ops::Range<usize>| -> Result<u32, CacheError> {
        let s = &ts[r];
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    crate::time::from_civil(
        i64::from(digits(0..4)?),
        digits(4..6)?,
        digits(6..8)?,
        digits(9..11)?,
        digits(11..13)?,
        digits(13..15)?,
    )
    .ok_or_else(bad)
}

/// The archive's state for `plan`: its Release files (fetched once per process), or the snapshot.
fn archive_state(plan: &BasePlan) -> Result<(Vec<ArchiveState>, u64), CacheError> {
    if let Some(ts) = &plan.snapshot {
        return Ok((Vec::new(), snapshot_time(ts)?));
    }
    let mut states = Vec::new();
    for (archive, suite) in plan.archives() {
        let id = format!("{archive} {suite}");
        let known = ARCHIVE_SEEN.lock().ok().and_then(|m| m.get(&id).cloned());
        let state = match known {
            Some(s) => s,
            None => {
                let s = fetch_release(&archive, &suite)?;
                if let Ok(mut m) = ARCHIVE_SEEN.lock() {
                    m.insert(id, s.clone());
                }
                s
            }
        };
        states.push(state);
    }
    let epoch = states
        .iter()
        .filter_map(|s| release_date(&s.date))
        .max()
        .unwrap_or(0);
    Ok((states, epoch))
}

/// Gathers the facts for `plan` (runs `mmdebstrap --version`, reads the keyring, fetches the Release
/// files unless the plan has a snapshot).
pub fn facts(plan: &BasePlan) -> Result<Facts, CacheError> {
    let (archive, epoch) = archive_state(plan)?;
    Ok(Facts {
        mmdebstrap: mmdebstrap_version()?,
        keyring: keyring()?,
        archive,
        epoch,
    })
}

/// After a build: the Release files the key names, fetched again. `None` when the archive is still in
/// the state the key describes; otherwise which file changed.
pub fn archive_moved(inputs: &KeyInputs, plan: &BasePlan) -> Result<Option<String>, CacheError> {
    if plan.snapshot.is_some() {
        return Ok(None);
    }
    for ((archive, suite), seen) in plan.archives().iter().zip(&inputs.archive) {
        let now = fetch_release(archive, suite)?;
        if now != *seen {
            return Ok(Some(format!(
                "{} changed while the base was built (Date {} then {})",
                now.url, seen.date, now.date
            )));
        }
    }
    Ok(None)
}

// ---- the cache directory ---------------------------------------------------------------------

/// Written beside each base.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub scheme: u32,
    pub key: String,
    pub size: u64,
    pub sha256: String,
    /// When it was stored (Unix time; not part of the key).
    pub created: u64,
    /// The board whose build made it (any board with the same key uses it).
    pub board: String,
    pub boardsmith: String,
    /// Seconds mmdebstrap took.
    pub build_seconds: f64,
    pub inputs: KeyInputs,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn is_key(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

fn sha256_file(path: &Path) -> io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n_total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        n_total += n as u64;
        h.update(&buf[..n]);
    }
    Ok((n_total, hex::encode(h.finalize())))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads an entry's manifest and checks it against the key and its tarball (size; with `full`, the
/// sha256 too). The reason it cannot be used otherwise.
fn check_entry(entry: &Path, key: &str, full: bool) -> Result<Manifest, String> {
    let mpath = entry.join(MANIFEST);
    let f = File::open(&mpath).map_err(|e| format!("no manifest ({e})"))?;
    let mut text = Vec::new();
    f.take(MAX_MANIFEST)
        .read_to_end(&mut text)
        .map_err(|e| format!("manifest unreadable ({e})"))?;
    let m: Manifest =
        serde_json::from_slice(&text).map_err(|e| format!("manifest unreadable ({e})"))?;
    if m.scheme != SCHEME {
        return Err(format!(
            "made by another version of boardsmith (scheme {})",
            m.scheme
        ));
    }
    if m.key != key || m.inputs.key() != key {
        return Err("its manifest is for another key".into());
    }
    let tar = entry.join(BASE_TAR);
    let meta = std::fs::metadata(&tar).map_err(|e| format!("no {BASE_TAR} ({e})"))?;
    if meta.len() != m.size {
        return Err(format!(
            "{BASE_TAR} has {} bytes, its manifest says {}",
            meta.len(),
            m.size
        ));
    }
    if full {
        let (_, sha) = sha256_file(&tar).map_err(|e| format!("{BASE_TAR} unreadable ({e})"))?;
        if sha != m.sha256 {
            return Err(format!(
                "{BASE_TAR}'s sha256 is {sha}, its manifest says {}",
                m.sha256
            ));
        }
    }
    Ok(m)
}

/// `CACHE/bases`.
#[derive(Debug, Clone)]
pub struct BaseCache {
    dir: PathBuf,
}

/// How a build got its base from the cache.
#[derive(Debug)]
pub enum Acquired {
    /// A valid entry; the lock is held (shared or exclusive) while it is read.
    Hit(Held, Box<Manifest>),
    /// No valid entry: the exclusive lock is held; build it, then [`Pending::commit`].
    Miss(Held),
}

/// A held lock on one key.
#[derive(Debug)]
pub struct Held {
    file: File,
    key: String,
    dir: PathBuf,
}

impl Held {
    pub fn key(&self) -> &str {
        &self.key
    }
    /// The entry's tarball.
    pub fn base_tar(&self) -> PathBuf {
        self.dir.join(&self.key).join(BASE_TAR)
    }
    pub fn entry(&self) -> PathBuf {
        self.dir.join(&self.key)
    }
    /// Records a use of the entry (the lock file's mtime).
    fn touch(&self) {
        let _ = self.file.set_modified(SystemTime::now());
    }

    /// Starts writing the entry (after a miss): `.tmp-KEY-PID/`, removed on drop or stop signal.
    pub fn begin(&self) -> Result<Pending, CacheError> {
        use std::os::unix::fs::DirBuilderExt;
        // A dead build's leftovers of this key (we hold its exclusive lock, so nobody writes them).
        remove_temporaries(&self.dir, Some(&self.key));
        let tmp = self
            .dir
            .join(format!("{TMP_PREFIX}{}-{}", self.key, std::process::id()));
        let tracked = crate::signals::track_tree(&tmp);
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&tmp)
            .map_err(io_err(format!("creating {}", tmp.display())))?;
        Ok(Pending {
            tmp,
            tracked: Some(tracked),
        })
    }
}

/// An entry being written.
#[derive(Debug)]
pub struct Pending {
    tmp: PathBuf,
    tracked: Option<crate::signals::Tracked>,
}

impl Pending {
    /// Where mmdebstrap writes the base.
    pub fn base_tar(&self) -> PathBuf {
        self.tmp.join(BASE_TAR)
    }

    /// Syncs the tarball, writes the manifest and renames the entry into place (its key held
    /// exclusively by `held`).
    pub fn commit(
        mut self,
        held: &Held,
        inputs: &KeyInputs,
        board: &str,
        build_seconds: f64,
    ) -> Result<Manifest, CacheError> {
        let tar = self.base_tar();
        File::open(&tar)
            .and_then(|f| f.sync_all())
            .map_err(io_err(format!("syncing {}", tar.display())))?;
        let (size, sha256) =
            sha256_file(&tar).map_err(io_err(format!("reading {}", tar.display())))?;
        let manifest = Manifest {
            scheme: SCHEME,
            key: held.key.clone(),
            size,
            sha256,
            created: now_secs(),
            board: board.to_string(),
            boardsmith: env!("CARGO_PKG_VERSION").to_string(),
            build_seconds,
            inputs: inputs.clone(),
        };
        let mpath = self.tmp.join(MANIFEST);
        let json = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
        let mut f = File::create(&mpath).map_err(io_err(format!("writing {}", mpath.display())))?;
        f.write_all(&json)
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.sync_all())
            .map_err(io_err(format!("writing {}", mpath.display())))?;
        sync_dir(&self.tmp).map_err(io_err(format!("syncing {}", self.tmp.display())))?;
        let dest = held.entry();
        if dest.exists() {
            // A damaged entry found under this lock: replaced.
            remove_entry(&held.dir, &held.key)
                .map_err(io_err(format!("removing {}", dest.display())))?;
        }
        let tracked = self.tracked.take().ok_or_else(|| CacheError::Io {
            context: "storing the base".into(),
            source: io::Error::other("already committed"),
        })?;
        if let Err(e) = crate::signals::commit_rename(&self.tmp, &dest, tracked) {
            crate::signals::remove_tree(&self.tmp);
            return Err(io_err(format!(
                "renaming {} to {}",
                self.tmp.display(),
                dest.display()
            ))(e));
        }
        sync_dir(&held.dir).map_err(io_err(format!("syncing {}", held.dir.display())))?;
        held.touch();
        Ok(manifest)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.tracked.is_some() {
            crate::signals::remove_tree(&self.tmp);
        }
    }
}

/// Renames an entry aside, then removes it: a half-removed entry never looks whole.
fn remove_entry(dir: &Path, key: &str) -> io::Result<()> {
    let aside = dir.join(format!("{DEL_PREFIX}{key}-{}", std::process::id()));
    std::fs::rename(dir.join(key), &aside)?;
    std::fs::remove_dir_all(&aside)
}

/// Removes `.tmp-KEY-PID` directories (of one key, or all whose key lock is free) and `.del-*` ones.
fn remove_temporaries(dir: &Path, only: Option<&str>) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return removed;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let key = if let Some(rest) = name.strip_prefix(TMP_PREFIX) {
            rest.split('-').next().unwrap_or("").to_string()
        } else if let Some(rest) = name.strip_prefix(DEL_PREFIX) {
            rest.split('-').next().unwrap_or("").to_string()
        } else {
            continue;
        };
        if only.is_some_and(|k| k != key) {
            continue;
        }
        // Without the key held by the caller: only if nobody holds it.
        let lock = if only.is_none() {
            match try_lock_key(dir, &key) {
                Some(l) => Some(l),
                None => continue,
            }
        } else {
            None
        };
        if std::fs::remove_dir_all(e.path()).is_ok() {
            removed.push(name);
        }
        drop(lock);
    }
    removed
}

fn open_lock(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(path)
}

/// True when `file` is still the lock file at `path` (a prune may have replaced it).
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The key's lock, exclusively, if nobody holds it.
fn try_lock_key(dir: &Path, key: &str) -> Option<File> {
    let path = dir.join(format!("{key}.lock"));
    let f = open_lock(&path).ok()?;
    f.try_lock().ok()?;
    same_file(&f, &path).then_some(f)
}

/// One entry as `cache list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ListedEntry {
    pub key: String,
    pub path: PathBuf,
    /// "ok", or why it cannot be used.
    pub state: String,
    pub arch: Option<String>,
    pub suite: Option<String>,
    pub packages: Option<usize>,
    pub board: Option<String>,
    pub size: u64,
    pub created: Option<u64>,
    pub last_used: Option<u64>,
}

/// What `cache list` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub dir: PathBuf,
    pub entries: Vec<ListedEntry>,
    /// Temporary directories of builds that were interrupted or are running (never used as entries).
    pub temporaries: Vec<String>,
    pub total_bytes: u64,
}

/// What `cache prune` did.
#[derive(Debug, Clone, Serialize)]
pub struct Pruned {
    pub dir: PathBuf,
    pub removed: Vec<ListedEntry>,
    pub removed_bytes: u64,
    /// Entries kept because a build is using them.
    pub in_use: Vec<String>,
    pub kept: usize,
    pub temporaries_removed: Vec<String>,
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn mtime_secs(p: &Path) -> Option<u64> {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

/// Parses `--older-than`: a number and a unit, `s`, `m`, `h`, `d` or `w` (`30d`, `12h`).
pub fn parse_age(given: &str) -> Result<Duration, CacheError> {
    let bad = |message: &str| CacheError::Duration {
        given: given.into(),
        message: message.into(),
    };
    let g = given.trim();
    let split = g
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| bad("needs a unit: s, m, h, d or w (e.g. 30d)"))?;
    let (n, unit) = g.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| bad("must start with a number (e.g. 30d)"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad("unknown unit; use s, m, h, d or w (e.g. 30d)")),
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| bad("too large"))
}

impl BaseCache {
    /// The base cache of the root filesystem cache `root` (`root/bases`).
    pub fn new(root: &Path) -> BaseCache {
        BaseCache {
            dir: root.join("bases"),
        }
    }

    /// The board layer cache of `root` (`root/layers`, see [`super::layer`]): entries like the bases'.
    pub fn layers(root: &Path) -> BaseCache {
        BaseCache {
            dir: root.join("layers"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What its entries are, for messages.
    fn what(&self) -> &'static str {
        if self.dir.ends_with("layers") {
            "board layer"
        } else {
            "base"
        }
    }

    fn lock_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.lock"))
    }

    /// Whether a whole entry seems to be there (its manifest and tarball size; no lock, no hash): used
    /// to decide early whether a build will need mmdebstrap's prerequisites.
    pub fn looks_present(&self, key: &str) -> bool {
        check_entry(&self.dir.join(key), key, false).is_ok()
    }

    /// Takes the key's lock and looks for its entry: a hit holds the lock shared (exclusive if it had
    /// to wait for a build); a miss holds it exclusive. `on_wait` is told when another build holds it;
    /// `on_damaged` when an entry exists but cannot be used (it is rebuilt).
    pub fn acquire(
        &self,
        key: &str,
        on_wait: &dyn Fn(&str),
        on_damaged: &dyn Fn(&str),
    ) -> Result<Acquired, CacheError> {
        use std::os::unix::fs::DirBuilderExt;
        if !is_key(key) {
            return Err(CacheError::Io {
                context: format!("cache key {key:?}"),
                source: io::Error::other("not a sha256"),
            });
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.dir)
            .map_err(io_err(format!("creating {}", self.dir.display())))?;
        let path = self.lock_path(key);
        let entry = self.dir.join(key);
        let waiting = format!(
            "waiting for another build of {} {} (lock {})",
            self.what(),
            &key[..12],
            path.display()
        );
        loop {
            let f = open_lock(&path).map_err(io_err(format!("opening {}", path.display())))?;
            let lock_err = io_err(format!("locking {}", path.display()));
            match f.try_lock_shared() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    on_wait(&waiting);
                    f.lock_shared().map_err(lock_err)?;
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(e)),
            }
            if !same_file(&f, &path) {
                continue;
            }
            let held = Held {
                file: f,
                key: key.to_string(),
                dir: self.dir.clone(),
            };
            if let Ok(m) = check_entry(&entry, key, true) {
                held.touch();
                return Ok(Acquired::Hit(held, Box::new(m)));
            }
            // Upgrade: released, then taken exclusively; another build may have stored it meanwhile.
            held.file
                .unlock()
                .map_err(io_err(format!("unlocking {}", path.display())))?;
            match held.file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    on_wait(&waiting);
                    held.file
                        .lock()
                        .map_err(io_err(format!("locking {}", path.display())))?;
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(io_err(format!("locking {}", path.display()))(e));
                }
            }
            if !same_file(&held.file, &path) {
                continue;
            }
            match check_entry(&entry, key, true) {
                Ok(m) => {
                    held.touch();
                    return Ok(Acquired::Hit(held, Box::new(m)));
                }
                Err(reason) if entry.exists() => {
                    on_damaged(&format!(
                        "the cached {} {} cannot be used ({reason}); building it again",
                        self.what(),
                        entry.display()
                    ));
                    remove_entry(&self.dir, key)
                        .map_err(io_err(format!("removing {}", entry.display())))?;
                }
                Err(_) => {}
            }
            return Ok(Acquired::Miss(held));
        }
    }

    /// Every entry, with its state (size and manifest checked, not the sha256).
    pub fn list(&self) -> Listing {
        let mut entries = Vec::new();
        let mut temporaries = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(TMP_PREFIX) || name.starts_with(DEL_PREFIX) {
                    temporaries.push(name);
                    continue;
                }
                if !is_key(&name) || !e.path().is_dir() {
                    continue;
                }
                entries.push(self.describe(&name));
            }
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        temporaries.sort();
        let total_bytes = entries.iter().map(|e| e.size).sum();
        Listing {
            dir: self.dir.clone(),
            entries,
            temporaries,
            total_bytes,
        }
    }

    fn describe(&self, key: &str) -> ListedEntry {
        let path = self.dir.join(key);
        let checked = check_entry(&path, key, false);
        let m = checked.as_ref().ok();
        ListedEntry {
            key: key.to_string(),
            state: match &checked {
                Ok(_) => "ok".into(),
                Err(r) => format!("unusable: {r}"),
            },
            arch: m.map(|m| m.inputs.arch.clone()),
            suite: m.map(|m| m.inputs.suite.clone()),
            packages: m.map(|m| m.inputs.packages.len()),
            board: m.map(|m| m.board.clone()),
            size: dir_size(&path),
            created: m.map(|m| m.created),
            last_used: mtime_secs(&self.lock_path(key)).or(m.map(|m| m.created)),
            path,
        }
    }

    /// Removes the entries not used for `older_than` (all, without it) that no build is using, unusable
    /// entries, and what interrupted builds left.
    pub fn prune(&self, older_than: Option<Duration>) -> Pruned {
        let now = now_secs();
        let listing = self.list();
        let mut removed = Vec::new();
        let mut in_use = Vec::new();
        let mut kept = 0;
        for e in listing.entries {
            let unusable = e.state != "ok";
            let old = match older_than {
                None => true,
                Some(d) => e
                    .last_used
                    .is_none_or(|t| now.saturating_sub(t) >= d.as_secs()),
            };
            if !(old || unusable) {
                kept += 1;
                continue;
            }
            let Some(lock) = try_lock_key(&self.dir, &e.key) else {
                in_use.push(e.key.clone());
                continue;
            };
            if remove_entry(&self.dir, &e.key).is_ok() {
                // The lock file goes too, still locked: a build that opened it sees it replaced.
                let _ = std::fs::remove_file(self.lock_path(&e.key));
                removed.push(e);
            } else {
                kept += 1;
            }
            drop(lock);
        }
        let temporaries_removed = remove_temporaries(&self.dir, None);
        // Lock files of keys without an entry.
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(key) = name.strip_suffix(".lock")
                    && is_key(key)
                    && !self.dir.join(key).exists()
                    && let Some(lock) = try_lock_key(&self.dir, key)
                {
                    let _ = std::fs::remove_file(e.path());
                    drop(lock);
                }
            }
        }
        let removed_bytes = removed.iter().map(|e| e.size).sum();
        Pruned {
            dir: self.dir.clone(),
            removed,
            removed_bytes,
            in_use,
            kept,
            temporaries_removed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Arch;
    use crate::rootfs::mmdebstrap::Mode;

    fn plan() -> BasePlan {
        BasePlan {
            mode: Mode::Unshare,
            arch: Arch::Armhf,
            suite: "bookworm".into(),
            variant: "apt".into(),
            mirror: "http://deb.debian.org/debian".into(),
            security: Some("http://deb.debian.org/debian-security".into()),
            snapshot: None,
            components: vec!["main".into(), "non-free-firmware".into()],
            packages: vec![
                "systemd".into(),
                "linux-image-armmp".into(),
                "u-boot-sunxi".into(),
            ],
            apt_options: vec!["Acquire::Languages \"none\"".into()],
            dpkg_options: vec!["path-exclude=/usr/share/man/*".into()],
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

    fn facts() -> Facts {
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

    fn key(p: &BasePlan, f: &Facts) -> String {
        KeyInputs::new(p, f).key()
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
            "bf1c3288dce3ae02eaab74a91a7a9aea115e2764b409564995a905c1bdc21438"
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
        p.suite = "trixie".into();
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
        p.packages.push("openssh-server".into());
        check("package list (a feature)", p, facts());
        let mut p = plan();
        p.packages.retain(|x| x != "u-boot-sunxi");
        check("package list (the board's U-Boot)", p, facts());
        let mut p = plan();
        p.components.push("contrib".into());
        check("components", p, facts());
        let mut p = plan();
        p.variant = "minbase".into();
        check("variant", p, facts());
        let mut p = plan();
        p.mode = Mode::Root;
        check("mode", p, facts());
        let mut p = plan();
        p.apt_options
            .push("APT::Install-Recommends \"true\"".into());
        check("apt options", p, facts());
        let mut p = plan();
        p.dpkg_options
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

    #[test]
    fn release_dates_and_snapshots() {
        assert_eq!(
            release_date("Sat, 11 Jul 2026 10:16:37 UTC"),
            crate::time::from_civil(2026, 7, 11, 10, 16, 37)
        );
        assert_eq!(
            release_date("11 Jul 2026 10:16:37 GMT"),
            release_date("Sat, 11 Jul 2026 10:16:37 UTC")
        );
        for bad in [
            "",
            "Sat, 11 Jul 2026 10:16:37 CEST",
            "Sat, 31 Feb 2026 10:16:37 UTC",
            "yesterday",
        ] {
            assert_eq!(release_date(bad), None, "{bad}");
        }
        assert_eq!(snapshot_time("20250101T000000Z").unwrap(), 1_735_689_600);
        for bad in [
            "2025-01-01",
            "20250101T000000",
            "20251301T000000Z",
            "2025010xT000000Z",
            "latest",
        ] {
            assert!(snapshot_time(bad).is_err(), "{bad}");
        }
        let text = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Debian\nDate: Sat, 11 Jul 2026 10:16:37 UTC\nValid-Until: Sat, 18 Jul 2026 10:16:37 UTC\n-----BEGIN PGP SIGNATURE-----\nDate: x\n";
        assert_eq!(
            release_field(text, "Date").as_deref(),
            Some("Sat, 11 Jul 2026 10:16:37 UTC")
        );
        assert_eq!(
            release_field(text, "Valid-Until").as_deref(),
            Some("Sat, 18 Jul 2026 10:16:37 UTC")
        );
        assert_eq!(release_field(text, "Suite"), None);
    }

    #[test]
    fn ages() {
        assert_eq!(parse_age("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse_age("12h").unwrap(), Duration::from_secs(12 * 3600));
        assert_eq!(parse_age("2w").unwrap(), Duration::from_secs(14 * 86_400));
        assert_eq!(parse_age("0s").unwrap(), Duration::ZERO);
        for bad in ["", "30", "d", "30 days", "-1d", "99999999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }

    /// Writes a whole entry the way a build does (temporary directory, manifest, rename).
    fn store(cache: &BaseCache, content: &[u8]) -> (String, Manifest) {
        let inputs = KeyInputs::new(&plan(), &facts());
        let k = inputs.key();
        let Acquired::Miss(held) = cache.acquire(&k, &|_| {}, &|_| {}).unwrap() else {
            panic!("hit in an empty cache");
        };
        let pending = held.begin().unwrap();
        std::fs::write(pending.base_tar(), content).unwrap();
        let m = pending.commit(&held, &inputs, "cubieboard", 1.0).unwrap();
        (k, m)
    }

    #[test]
    fn stored_entry_is_a_hit_and_damage_is_a_miss() {
        let d = tempfile::tempdir().unwrap();
        let cache = BaseCache::new(d.path());
        let (k, m) = store(&cache, b"base tarball");
        assert_eq!(m.size, 12);
        match cache.acquire(&k, &|_| {}, &|_| {}).unwrap() {
            Acquired::Hit(h, m2) => {
                assert_eq!(std::fs::read(h.base_tar()).unwrap(), b"base tarball");
                assert_eq!(m2.sha256, m.sha256);
            }
            Acquired::Miss(_) => panic!("stored entry missed"),
        }
        let listing = cache.list();
        assert_eq!(listing.entries.len(), 1);
        assert_eq!(listing.entries[0].state, "ok");
        assert_eq!(listing.entries[0].arch.as_deref(), Some("armhf"));
        assert!(listing.temporaries.is_empty());

        // Same size, other bytes: the sha256 check makes it a miss, and it is reported and rebuilt.
        std::fs::write(cache.dir().join(&k).join(BASE_TAR), b"base tarbalL").unwrap();
        let damaged = std::cell::RefCell::new(Vec::new());
        match cache
            .acquire(&k, &|_| {}, &|w| damaged.borrow_mut().push(w.to_string()))
            .unwrap()
        {
            Acquired::Miss(_) => {}
            Acquired::Hit(..) => panic!("a damaged entry was used"),
        }
        assert!(
            damaged.borrow()[0].contains("sha256"),
            "{:?}",
            damaged.borrow()
        );
        assert!(!cache.dir().join(&k).exists());
    }

    /// Builders of one key at the same time (threads here; each opens the lock file itself, so flock sees
    /// them as it sees processes): exactly one gets the miss and builds, the others wait on the lock and
    /// then hit the entry it stored.
    #[test]
    fn concurrent_builders_of_one_key_build_it_once() {
        let d = tempfile::tempdir().unwrap();
        let inputs = KeyInputs::new(&plan(), &facts());
        let k = inputs.key();
        let built = std::sync::atomic::AtomicUsize::new(0);
        let waited = std::sync::atomic::AtomicUsize::new(0);
        let outcomes: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let cache = BaseCache::new(d.path());
                        let on_wait = |_: &str| {
                            waited.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        };
                        match cache.acquire(&k, &on_wait, &|_| {}).unwrap() {
                            Acquired::Miss(held) => {
                                built.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                let pending = held.begin().unwrap();
                                // A slow build: the others must be waiting meanwhile.
                                std::thread::sleep(std::time::Duration::from_millis(300));
                                std::fs::write(pending.base_tar(), b"the one base").unwrap();
                                pending.commit(&held, &inputs, "cubieboard", 0.3).unwrap();
                                std::fs::read(held.base_tar()).unwrap()
                            }
                            Acquired::Hit(held, _) => std::fs::read(held.base_tar()).unwrap(),
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(built.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(waited.load(std::sync::atomic::Ordering::SeqCst) >= 1);
        assert!(outcomes.iter().all(|o| o == b"the one base"));
        let listing = BaseCache::new(d.path()).list();
        assert_eq!(listing.entries.len(), 1);
        assert!(listing.temporaries.is_empty());
    }

    /// What a build killed while writing leaves (a temporary directory with a partial tarball, or an
    /// entry directory without its manifest) is never used; prune removes it.
    #[test]
    fn interrupted_write_is_never_used() {
        let d = tempfile::tempdir().unwrap();
        let cache = BaseCache::new(d.path());
        let k = KeyInputs::new(&plan(), &facts()).key();
        std::fs::create_dir_all(cache.dir()).unwrap();
        // A killed build: its temporary directory, with the tarball and even a manifest.
        let tmp = cache.dir().join(format!("{TMP_PREFIX}{k}-999999"));
        std::fs::create_dir(&tmp).unwrap();
        std::fs::write(tmp.join(BASE_TAR), b"partial").unwrap();
        // A rename target without manifest (cannot happen through commit, but a copy could leave it).
        let entry = cache.dir().join(&k);
        std::fs::create_dir(&entry).unwrap();
        std::fs::write(entry.join(BASE_TAR), b"partial").unwrap();
        assert!(!cache.looks_present(&k));
        let listing = cache.list();
        assert_eq!(listing.temporaries.len(), 1);
        assert!(
            listing.entries[0]
                .state
                .starts_with("unusable: no manifest"),
            "{:?}",
            listing.entries
        );
        match cache.acquire(&k, &|_| {}, &|_| {}).unwrap() {
            Acquired::Miss(held) => {
                // The new build clears the dead one's temporary directory of this key.
                let p = held.begin().unwrap();
                assert!(!tmp.exists());
                drop(p);
            }
            Acquired::Hit(..) => panic!("an incomplete entry was used"),
        }
        assert_eq!(cache.list().entries.len(), 0);
        std::fs::create_dir(&tmp).unwrap();
        let pruned = cache.prune(None);
        assert_eq!(pruned.temporaries_removed.len(), 1);
        assert_eq!(
            std::fs::read_dir(cache.dir()).unwrap().count(),
            0,
            "prune leaves nothing"
        );
    }

    #[test]
    fn prune_keeps_recent_and_busy_entries() {
        let d = tempfile::tempdir().unwrap();
        let cache = BaseCache::new(d.path());
        let (k, _) = store(&cache, b"base");
        assert_eq!(cache.prune(Some(Duration::from_secs(3600))).kept, 1);
        // In use (a build reading it holds the lock shared): kept even when everything goes.
        let Acquired::Hit(held, _) = cache.acquire(&k, &|_| {}, &|_| {}).unwrap() else {
            panic!("miss");
        };
        let p = cache.prune(None);
        assert_eq!(p.in_use, std::slice::from_ref(&k));
        assert!(cache.dir().join(&k).exists());
        drop(held);
        let p = cache.prune(None);
        assert_eq!(p.removed.len(), 1);
        assert!(p.removed_bytes > 0);
        assert_eq!(std::fs::read_dir(cache.dir()).unwrap().count(), 0);
    }
}
