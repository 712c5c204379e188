//! The entries: `CACHE/bases/KEY/` looked up and checked, written under a temporary name and renamed
//! into place complete.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::lock::{open_lock, same_file, try_lock_key};
use super::{
    BASE_TAR, CacheError, DEL_PREFIX, Held, KeyInputs, MANIFEST, MAX_MANIFEST, SCHEME, TMP_PREFIX,
    io_err,
};

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

pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(super) fn is_key(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

fn sha256_file(path: &Path) -> io::Result<(u64, String)> {
    crate::checksum::digest_file(path, false).map(|d| (d.size, d.sha256))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads an entry's manifest and checks it against the key and its tarball (size; with `full`, the
/// sha256 too). The reason it cannot be used otherwise.
pub(super) fn check_entry(entry: &Path, key: &str, full: bool) -> Result<Manifest, String> {
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
    if m.key != key || m.inputs.key().ok().as_deref() != Some(key) {
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
    pub(super) dir: PathBuf,
}

/// How a build got its base from the cache.
#[derive(Debug)]
pub enum Acquired {
    /// A valid entry; the lock is held (shared or exclusive) while it is read.
    Hit(Held, Box<Manifest>),
    /// No valid entry: the exclusive lock is held; build it, then [`Pending::commit`].
    Miss(Held),
}

/// An entry being written.
#[derive(Debug)]
pub struct Pending {
    pub(super) tmp: PathBuf,
    pub(super) tracked: Option<crate::signals::Tracked>,
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
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| CacheError::Io {
            context: format!("serializing {}", mpath.display()),
            source: e.into(),
        })?;
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
pub(super) fn remove_entry(dir: &Path, key: &str) -> io::Result<()> {
    let aside = dir.join(format!("{DEL_PREFIX}{key}-{}", std::process::id()));
    std::fs::rename(dir.join(key), &aside)?;
    std::fs::remove_dir_all(&aside)
}

/// Removes `.tmp-KEY-PID` directories (of one key, or all whose key lock is free) and `.del-*` ones.
pub(super) fn remove_temporaries(dir: &Path, only: Option<&str>) -> Vec<String> {
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

impl BaseCache {
    /// The base cache of the root filesystem cache `root` (`root/bases`).
    pub fn new(root: &Path) -> BaseCache {
        BaseCache {
            dir: root.join("bases"),
        }
    }

    /// The board layer cache of `root` (`root/layers`, see [`super::super::layer`]): entries like the bases'.
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

    pub(super) fn lock_path(&self, key: &str) -> PathBuf {
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
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{facts, plan, store};
    use super::*;

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
        let k = inputs.key().unwrap();
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
        let k = KeyInputs::new(&plan(), &facts()).key().unwrap();
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
}
