//! An advisory lock on the target (BSD flock, the convention udev and util-linux follow for block
//! devices), taken before anything is written. A second writer fails at once and is told the pid
//! of the holder, read from /proc/locks.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{path} is being written by another process{}; wait for it to finish or stop it",
        holder.map(|p| format!(" (pid {p}{})", command(p))).unwrap_or_default()
    )]
    Held { path: String, holder: Option<u32> },
    #[error("cannot lock {path}: {source}")]
    Io { path: String, source: io::Error },
}

fn command(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| format!(", {}", c.trim()))
        .unwrap_or_default()
}

/// Locks `file` (opened on `path`) exclusively, without waiting (`File::try_lock`: flock on Linux,
/// which is what /proc/locks lists as FLOCK). The lock belongs to the open file description: it lasts
/// until `file` (and every descriptor duplicated from it) is closed.
pub fn acquire(file: &File, path: &Path) -> Result<(), LockError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Held {
            path: path.display().to_string(),
            holder: file.metadata().ok().and_then(|m| holder_pid(&m)),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(LockError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// The pid holding a FLOCK on the inode of `meta`, from /proc/locks
/// (`1: FLOCK  ADVISORY  WRITE 1234 00:05:678 0 EOF`; device numbers in hex).
fn holder_pid(meta: &std::fs::Metadata) -> Option<u32> {
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    let dev = meta.dev();
    let want = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev),
        meta.ino()
    );
    let me = std::process::id();
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Lines for waiters start with "->"; skip them.
        if f.len() < 6 || f[1] != "FLOCK" || f[5] != want {
            return None;
        }
        f[4].parse::<u32>().ok().filter(|&p| p != me)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_holder() {
        let (_dir, path) = crate::testutil::scratch("t");
        std::fs::write(&path, b"x").unwrap();
        let first = File::open(&path).unwrap();
        acquire(&first, &path).unwrap();
        // A lock from another open file description conflicts even within one process; the pid
        // found is our own, which is filtered out, so holder may be None here. The message is
        // what a second process sees.
        match acquire(&File::open(&path).unwrap(), &path) {
            Err(LockError::Held { path: p, .. }) => assert!(p.ends_with("/t")),
            other => panic!("{:?}", other.err()),
        }
        drop(first);
        assert!(acquire(&File::open(&path).unwrap(), &path).is_ok());
    }
}
