//! `cache list` and `cache prune`.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use super::lock::try_lock_key;
use super::store::{check_entry, is_key, now_secs, remove_entry, remove_temporaries};
use super::{BaseCache, CacheError, DEL_PREFIX, TMP_PREFIX};

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
            suite: m.map(|m| m.inputs.apt.suite.clone()),
            packages: m.map(|m| m.inputs.apt.packages.len()),
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
    use super::super::Acquired;
    use super::super::test_support::store;
    use super::*;

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
