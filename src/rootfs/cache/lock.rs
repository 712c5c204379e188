//! One lock file per key: shared while an entry is read, exclusive while it is looked for, built and
//! stored; its modification time is the entry's last use.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::store::remove_temporaries;
use super::{BASE_TAR, CacheError, Pending, TMP_PREFIX, io_err};

/// A held lock on one key.
#[derive(Debug)]
pub struct Held {
    pub(super) file: File,
    pub(super) key: String,
    pub(super) dir: PathBuf,
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
    pub(super) fn touch(&self) {
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

pub(super) fn open_lock(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(path)
}

/// True when `file` is still the lock file at `path` (a prune may have replaced it).
pub(super) fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The key's lock, exclusively, if nobody holds it.
pub(super) fn try_lock_key(dir: &Path, key: &str) -> Option<File> {
    let path = dir.join(format!("{key}.lock"));
    let f = open_lock(&path).ok()?;
    f.try_lock().ok()?;
    same_file(&f, &path).then_some(f)
}
