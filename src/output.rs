//! Outputs that appear under their final name only when complete: each is written to a hidden temporary
//! name in the destination directory and renamed at commit; dropped uncommitted, it is removed.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

pub struct PendingFile {
    temp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl PendingFile {
    /// Creates `.NAME.partial-PID` next to `dest`.
    pub fn create(dest: &Path) -> io::Result<(PendingFile, File)> {
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
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp)?;
        Ok((
            PendingFile {
                temp,
                dest: dest.to_path_buf(),
                committed: false,
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
        std::fs::rename(&self.temp, &self.dest)?;
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
    use std::io::Write;
    let (pending, mut f) = PendingFile::create(dest)?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(pending)
}

/// Makes renames durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
