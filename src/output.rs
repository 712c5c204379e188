//! Outputs that appear under their final name only when complete: each is written to a hidden temporary
//! name in the destination directory and renamed at commit; dropped uncommitted, or when a stop signal
//! arrives ([`crate::signals`]), it is removed.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::signals::{Tracked, commit_rename, track_file};

/// Mode of files anyone may read (before the umask): bmaps, checksums, notes.
pub const PUBLIC: u32 = 0o666;
/// Mode of files holding secrets or password hashes: the owner only.
pub const PRIVATE: u32 = 0o600;

/// Mode for an artefact that holds password hashes (a root filesystem, an image): the owner only
/// unless the user asked for a world-readable one.
pub fn artefact_mode(world_readable: bool) -> u32 {
    if world_readable { PUBLIC } else { PRIVATE }
}

pub struct PendingFile {
    temp: PathBuf,
    dest: PathBuf,
    committed: bool,
    tracked: Option<Tracked>,
}

impl PendingFile {
    /// Creates `.NAME.partial-PID` next to `dest`, readable by all (less the umask).
    pub fn create(dest: &Path) -> io::Result<(PendingFile, File)> {
        PendingFile::create_with_mode(dest, PUBLIC)
    }

    /// Creates `.NAME.partial-PID` next to `dest` with `mode` (less the umask) from the start: a file
    /// for secrets is never readable by others, not even briefly.
    pub fn create_with_mode(dest: &Path, mode: u32) -> io::Result<(PendingFile, File)> {
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = dest
            .file_name()
            .ok_or_else(|| io::Error::other(format!("{} has no file name", dest.display())))?;
        let temp = dir.join(format!(
            ".{}.partial-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&temp);
        let tracked = track_file(&temp);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        Ok((
            PendingFile {
                temp,
                dest: dest.to_path_buf(),
                committed: false,
                tracked: Some(tracked),
            },
            file,
        ))
    }

    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Renames the finished file to its final name (the caller has synced it).
    pub fn commit(mut self) -> io::Result<PathBuf> {
        match self.tracked.take() {
            Some(t) => commit_rename(&self.temp, &self.dest, t)?,
            None => std::fs::rename(&self.temp, &self.dest)?,
        }
        self.committed = true;
        Ok(self.dest.clone())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Writes `data` to `dest` atomically (temporary name, fsync, rename).
pub fn write_atomic(dest: &Path, data: &[u8]) -> io::Result<PendingFile> {
    write_atomic_with_mode(dest, data, PUBLIC)
}

/// [`write_atomic`] with the file's mode, set at creation.
pub fn write_atomic_with_mode(dest: &Path, data: &[u8], mode: u32) -> io::Result<PendingFile> {
    use std::io::Write;
    let (pending, mut f) = PendingFile::create_with_mode(dest, mode)?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(pending)
}

/// Makes renames durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// boardsmith's cache directory, the one rule for every cache (kernel work directories, the root
/// filesystem's package and base caches): `$XDG_CACHE_HOME/boardsmith`, else `$HOME/.cache/boardsmith`
/// (empty variables count as unset), else `/var/cache/boardsmith`.
pub fn user_cache_dir() -> PathBuf {
    cache_dir_from(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
        .unwrap_or_else(|| PathBuf::from("/var/cache/boardsmith"))
}

fn cache_dir_from(
    xdg: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let set = |v: Option<std::ffi::OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    set(xdg)
        .or_else(|| set(home).map(|h| h.join(".cache")))
        .map(|c| c.join("boardsmith"))
}

/// Opens (creating it) the lock file `path` and locks it exclusively (flock, through `File::lock`),
/// calling `on_wait` first when another process holds it. The lock lasts while the file is open.
pub fn lock_waiting(path: &Path, on_wait: impl FnOnce()) -> io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            on_wait();
            f.lock()?;
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e),
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_files_are_created_private() {
        let (_d, dest) = crate::testutil::scratch("secret");
        let (p, _f) = PendingFile::create_with_mode(&dest, PRIVATE).unwrap();
        let mode = std::fs::metadata(p.temp_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        p.commit().unwrap();
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn the_cache_dir_rule() {
        let s = |v: &str| Some(std::ffi::OsString::from(v));
        assert_eq!(
            cache_dir_from(s("/x"), s("/h")),
            Some(PathBuf::from("/x/boardsmith"))
        );
        assert_eq!(
            cache_dir_from(s(""), s("/h")),
            Some(PathBuf::from("/h/.cache/boardsmith"))
        );
        assert_eq!(
            cache_dir_from(None, s("/h")),
            Some(PathBuf::from("/h/.cache/boardsmith"))
        );
        assert_eq!(cache_dir_from(None, s("")), None);
    }

    #[test]
    fn a_held_lock_is_waited_for() {
        let (_d, path) = crate::testutil::scratch(".lock");
        let first = lock_waiting(&path, || panic!("nobody holds it yet")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p2 = path.clone();
        let second =
            std::thread::spawn(move || lock_waiting(&p2, || tx.send(()).unwrap()).map(|_| ()));
        // The second open file description waits for the first to close.
        rx.recv().unwrap();
        drop(first);
        second.join().unwrap().unwrap();
    }

    #[test]
    fn uncommitted_is_removed() {
        let (_d, dest) = crate::testutil::scratch("x");
        let p = write_atomic(&dest, b"data").unwrap();
        let temp = p.temp_path().to_path_buf();
        assert!(temp.exists());
        drop(p);
        assert!(!temp.exists() && !dest.exists());
    }
}
