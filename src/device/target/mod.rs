//! The target: a regular file or a block device, identified once. The path is resolved to one
//! descriptor (O_PATH, no side effects even on a character device) whose fstat is the target's
//! identity; every descriptor used afterwards is reopened from it (/proc/self/fd/N) and must
//! show the same device and inode. A device is checked before any write (not the source or a
//! disk holding it, not mounted, removable or confirmed, large enough), then opened read-write
//! with O_EXCL; a file is sized before its old content is dropped. Locked against a second
//! writer.
//!
//! Opening and its checks are in `open`, what `--yes` confirms in `confirm`, the descriptors written
//! through in `sink`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::blockdev::{self, DiskInfo};
use super::lock::LockError;
use crate::size::Human;

mod confirm;
mod open;
mod sink;

pub use confirm::confirmation;
pub use sink::{FLUSH_WINDOW, Sink};

#[derive(Debug, Clone)]
pub enum TargetKind {
    File,
    Device(DiskInfo),
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(
        "{path} does not exist; only existing devices can be written under /dev (list them with lsblk)"
    )]
    NoSuchDevice { path: String },
    #[error("{path} does not exist")]
    NoSuchFile { path: String },
    #[error("{path} is {what}; the target must be a block device or a regular file")]
    Unsupported { path: String, what: &'static str },
    #[error("{path} is the source image itself; write to another file or a device")]
    SameAsSource { path: String },
    #[error(
        "{path} is a loop device backed by {backing}, which is the source image {source_name}: writing it would overwrite the image while reading it; detach it (losetup -d {path}) or write to another target"
    )]
    LoopOverSource {
        path: String,
        backing: String,
        source_name: String,
    },
    #[error(
        "the source {source_name} is a loop device backed by {path}: writing {path} would overwrite the image while reading it"
    )]
    SourceLoopOverTarget { path: String, source_name: String },
    #[error(
        "{path} and the source {source_name} are the same device or overlap (one is a partition of the other, or lies on it): writing would overwrite the image while reading it"
    )]
    OverlapsSource { path: String, source_name: String },
    #[error(
        "{path} ({desc}) holds the source image {source_name}: its filesystem{} lies on {on}; writing would destroy the image while reading it; copy the image to another disk first",
        if mounted_at.is_empty() { String::new() } else { format!(" (mounted at {mounted_at})") }
    )]
    HoldsSource {
        path: String,
        desc: String,
        source_name: String,
        on: String,
        mounted_at: String,
    },
    #[error("{path} ({desc}) is in use: {users}; unmount it (and swapoff) first")]
    InUse {
        path: String,
        desc: String,
        users: String,
    },
    #[error(
        "{path} ({desc}) is not a removable disk: {why}; pass --yes if you are sure it may be overwritten"
    )]
    NotRemovable {
        path: String,
        desc: String,
        why: &'static str,
    },
    #[error(
        "{path} ({desc}) is larger than 128 GB: it is {why}, but at this size it is more likely a backup disk than a card or stick; pass --yes if you are sure it may be overwritten"
    )]
    LargeRemovable {
        path: String,
        desc: String,
        why: &'static str,
    },
    #[error(
        "{path} is a partition of /dev/{disk}; an image with a partition table belongs on the whole disk (/dev/{disk}); pass --yes to write into the partition anyway"
    )]
    Partition { path: String, disk: String },
    #[error(
        "{path} holds {} ({capacity} bytes) but the image needs {} ({needed} bytes); nothing was written",
        Human(*capacity), Human(*needed)
    )]
    TooSmall {
        path: String,
        capacity: u64,
        needed: u64,
    },
    #[error(
        "the image needs {} ({needed} bytes), more than the limit for {path}: {} ({cap} bytes, {cap_from})",
        Human(*needed), Human(*cap)
    )]
    OverCap {
        path: String,
        needed: u64,
        cap: u64,
        cap_from: String,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot open {path}: {source}{}", busy_hint(source))]
    Open { path: String, source: io::Error },
    #[error(
        "{path} changed while it was being opened (another program replaced it); nothing was written"
    )]
    Changed { path: String },
    #[error("cannot size {path} to {} ({size} bytes): {source}; the file was not changed", Human(*size))]
    Size {
        path: String,
        size: u64,
        source: io::Error,
    },
    #[error("--size applies to file targets; {path} is a block device of {}", Human(*size))]
    SizeOnDevice { path: String, size: u64 },
    #[error("--size {} is smaller than the image ({}); a target is never shrunk", Human(*size), Human(*image))]
    SizeTooSmall { size: u64, image: u64 },
}

fn busy_hint(e: &io::Error) -> &'static str {
    if e.raw_os_error() == Some(libc::EBUSY) {
        " (the device is in use: mounted, or held open exclusively by another program)"
    } else {
        ""
    }
}

impl TargetError {
    /// Errors the user fixes by changing the command (exit status 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            TargetError::NoSuchDevice { .. }
                | TargetError::NoSuchFile { .. }
                | TargetError::Unsupported { .. }
                | TargetError::SameAsSource { .. }
                | TargetError::LoopOverSource { .. }
                | TargetError::SourceLoopOverTarget { .. }
                | TargetError::OverlapsSource { .. }
                | TargetError::HoldsSource { .. }
                | TargetError::NotRemovable { .. }
                | TargetError::LargeRemovable { .. }
                | TargetError::Partition { .. }
                | TargetError::OverCap { .. }
                | TargetError::Size { .. }
                | TargetError::SizeOnDevice { .. }
                | TargetError::SizeTooSmall { .. }
        )
    }
}

/// What fstat says about a descriptor: the identity every reopened descriptor must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub rdev: u64,
}

impl Identity {
    pub fn of(m: &std::fs::Metadata) -> Identity {
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            rdev: m.rdev(),
        }
    }
}

/// The image source, as far as the target checks need it.
#[derive(Debug, Clone)]
pub struct SourceId {
    /// For messages.
    pub name: String,
    /// The filesystem holding it (st_dev) and its inode.
    pub dev: u64,
    pub ino: u64,
    /// When the source is a block device: its st_rdev.
    pub rdev: Option<u64>,
}

impl SourceId {
    pub fn of(name: String, m: &std::fs::Metadata) -> SourceId {
        SourceId {
            name,
            dev: m.dev(),
            ino: m.ino(),
            rdev: m.file_type().is_block_device().then(|| m.rdev()),
        }
    }
}

/// What to check when opening a target.
#[derive(Debug, Clone)]
pub struct Checks<'a> {
    /// Confirms a partition, a non-removable disk or a removable one larger than 128 GB.
    pub yes: bool,
    /// The source, so that the target can be refused when writing it would destroy the source.
    pub source: Option<&'a SourceId>,
    /// A missing path becomes a new file (`write`); otherwise it is an error (`grow`).
    pub create: bool,
    /// Where sysfs is (normally [`blockdev::SYSFS`]).
    pub sysfs: &'a Path,
}

impl Default for Checks<'_> {
    fn default() -> Self {
        Checks {
            yes: false,
            source: None,
            create: true,
            sysfs: Path::new(blockdev::SYSFS),
        }
    }
}

/// A checked and locked target: one identity, and the descriptors opened from it.
pub struct Target {
    pub path: PathBuf,
    pub kind: TargetKind,
    /// Device size in bytes.
    pub capacity: Option<u64>,
    /// Logical sector size (O_DIRECT unit).
    pub sector: u64,
    pub identity: Identity,
    /// File targets: the length before this run (0 for a new file).
    pub initial_len: u64,
    /// This run created the file: removed again (when dropped, or by [`Target::discard`]) unless the
    /// write completed ([`Target::keep`]), so a failed write leaves no partial image behind.
    created: bool,
    keep: bool,
    sysfs: PathBuf,
    /// The descriptor the checks ran on; it holds the lock. A device's is read-only and outlives
    /// `io` (grow closes `io` so e2fsck and resize2fs can open the disk exclusively); a file's is
    /// read-write and is the one all I/O goes through.
    anchor: File,
    /// Devices: read-write, O_EXCL, reopened from `anchor`.
    io: Option<File>,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.discard();
    }
}

/// What [`Target::discard`] did with a file target this run created.
#[derive(Debug)]
pub enum Discarded {
    /// The target was there before (a file or a device), or the write completed: left alone.
    NotCreated,
    Removed,
    /// The path names another file now (renamed or replaced meanwhile): nothing was removed.
    Moved,
    /// Removing it failed.
    Failed(io::Error),
}

fn file_type_name(m: &std::fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Opens `fd`'s file again through /proc/self/fd with `flags` (plus O_CLOEXEC) and checks that
/// it is the same file: same device, inode and (for devices) device number.
pub fn reopen(fd: RawFd, flags: libc::c_int, identity: Identity) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::from_bits_retain(flags as _) | OFlags::CLOEXEC | OFlags::NOCTTY;
    let f = File::from(rustix::fs::open(
        format!("/proc/self/fd/{fd}"),
        flags,
        Mode::empty(),
    )?);
    if Identity::of(&f.metadata()?) != identity {
        return Err(io::Error::other("a different file was opened"));
    }
    Ok(f)
}

/// Resolves `path` to an O_PATH descriptor: nothing is opened for I/O, so a character device or
/// FIFO named by mistake sees no open.
fn open_path(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)
}

impl Target {
    pub fn is_device(&self) -> bool {
        matches!(self.kind, TargetKind::Device(_))
    }

    /// Where sysfs is, for partition lookups after a write.
    pub fn sysfs(&self) -> &Path {
        &self.sysfs
    }

    /// The read-write descriptor (a device's exclusive one), for table I/O and partition rescans.
    pub fn rw(&self) -> io::Result<&File> {
        match (&self.kind, &self.io) {
            (TargetKind::File, _) => Ok(&self.anchor),
            (TargetKind::Device(_), Some(f)) => Ok(f),
            (TargetKind::Device(_), None) => Err(io::Error::other(
                "the exclusive descriptor was already closed",
            )),
        }
    }

    /// A descriptor to read from; a device's stays open after [`Target::release_exclusive`].
    pub fn reader(&self) -> &File {
        &self.anchor
    }

    /// Closes a device's exclusive descriptor so that e2fsck and resize2fs can open the disk or a
    /// partition exclusively; the read-only one keeps the lock and the identity.
    pub fn release_exclusive(&mut self) {
        if self.is_device() {
            self.io = None;
        }
    }

    /// Whether `path` still names this target (before an external tool is pointed at it).
    pub fn still_at(&self, path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|m| Identity::of(&m) == self.identity)
    }

    /// The image is complete: a file this run created is kept whatever happens next.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Removes a file this run created (unless kept), if its path still names it: a failed write
    /// leaves nothing behind. What became of it, for the failure's message.
    pub fn discard(&mut self) -> Discarded {
        if !self.created || self.keep {
            return Discarded::NotCreated;
        }
        // Once: a later drop must not touch a file someone else put at the path since.
        self.keep = true;
        if !self.still_at(&self.path) {
            return Discarded::Moved;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => Discarded::Removed,
            Err(e) => Discarded::Failed(e),
        }
    }

    /// The target for messages: path, and what the device is.
    pub fn describe(&self) -> String {
        match (&self.kind, self.capacity) {
            (TargetKind::Device(info), Some(c)) => {
                format!("{} ({})", self.path.display(), describe_device(info, c))
            }
            _ => self.path.display().to_string(),
        }
    }

    /// Refuses (before any write) an image larger than the device.
    pub fn check_capacity(&self, needed: u64) -> Result<(), TargetError> {
        match self.capacity {
            Some(c) if c < needed => Err(TargetError::TooSmall {
                path: self.path.display().to_string(),
                capacity: c,
                needed,
            }),
            _ => Ok(()),
        }
    }

    /// The most a file target may hold without `--size`: the free space of its filesystem plus
    /// what the file occupies now (its old content is dropped before writing). None when the
    /// filesystem keeps no account of space (it reports no blocks at all: some FUSE filesystems).
    pub fn free_space(&self) -> io::Result<Option<u64>> {
        let st = rustix::fs::fstatvfs(&self.anchor)?;
        if st.f_blocks == 0 {
            return Ok(None);
        }
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        let held = self.anchor.metadata()?.blocks().saturating_mul(512);
        Ok(Some(free.saturating_add(held)))
    }

    /// File targets: makes sure the file can have `len` bytes before anything is dropped (a
    /// failure leaves the file as it was). Extends it if needed; its content stays.
    pub fn reserve(&self, len: u64) -> Result<(), TargetError> {
        if self.is_device() || len <= self.initial_len {
            return Ok(());
        }
        self.anchor
            .set_len(len)
            .map_err(|source| TargetError::Size {
                path: self.path.display().to_string(),
                size: len,
                source,
            })
    }

    /// Opens the target for writing. A file's old content is dropped and the file given
    /// `file_len` bytes (so skipped zero blocks stay holes); call [`Target::reserve`] first. A
    /// device is written through its exclusive descriptor. A second descriptor with O_DIRECT is
    /// reopened from the first and checked to be the same file.
    pub fn open_sink(&self, file_len: u64) -> Result<Sink, TargetError> {
        let shown = self.path.display().to_string();
        let open_err = |e: io::Error| TargetError::Open {
            path: shown.clone(),
            source: e,
        };
        let io = self.rw().map_err(open_err)?;
        if !self.is_device() {
            io.set_len(0).map_err(open_err)?;
            io.set_len(file_len).map_err(open_err)?;
        }
        let plain = io.try_clone().map_err(open_err)?;
        // O_DIRECT writes skip the page-cache copy and the kernel's writeback work, which would
        // otherwise compete with decoding for the CPU; reads back bypass the cache the same way.
        // Some filesystems (tmpfs) refuse it: then writes are buffered and the cache is dropped
        // with fadvise before reading back.
        let direct = reopen(io.as_raw_fd(), libc::O_RDWR | libc::O_DIRECT, self.identity).ok();
        Ok(Sink {
            direct_writes: direct.is_some(),
            plain,
            direct,
            sector: self.sector,
            is_device: self.is_device(),
        })
    }
}

/// A reopen that failed: the system's error, or a different file under the path.
fn reopen_error(path: &str, e: io::Error) -> TargetError {
    if e.raw_os_error().is_some() {
        TargetError::Open {
            path: path.into(),
            source: e,
        }
    } else {
        TargetError::Changed { path: path.into() }
    }
}

fn describe_device(info: &DiskInfo, capacity: u64) -> String {
    let mut s = String::new();
    if let Some(b) = &info.backing_file {
        s.push_str(&format!("loop device backed by {b}, "));
    } else if let Some(m) = &info.model {
        s.push_str(&format!("{m}, "));
    }
    if info.is_partition {
        s.push_str(&format!("partition of {}, ", info.disk_name));
    }
    s.push_str(&format!("{}, {capacity} bytes", Human(capacity)));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_does_not_create_files() {
        let (_d, p) = crate::testutil::scratch("missing.img");
        let r = Target::open_checked(
            &p,
            &Checks {
                create: false,
                ..Checks::default()
            },
        );
        assert!(matches!(r, Err(TargetError::NoSuchFile { .. })));
        assert!(!p.exists());
    }

    #[test]
    fn reserve_fails_without_changing_the_file() {
        let (_d, p) = crate::testutil::scratch("existing.img");
        std::fs::write(&p, b"precious").unwrap();
        let t = Target::open(&p, false).unwrap();
        let r = t.reserve(100_000 << 40);
        assert!(matches!(r, Err(TargetError::Size { .. })), "{r:?}");
        drop(t);
        assert_eq!(std::fs::read(&p).unwrap(), b"precious");
    }

    /// A file this run created is removed by `discard` unless kept; one that was there, or one
    /// whose path names another file now, is left alone, and each outcome says which.
    #[test]
    fn discard_removes_only_the_file_this_run_created() {
        let (d, p) = crate::testutil::scratch("new.img");
        let mut t = Target::open(&p, false).unwrap();
        std::fs::write(&p, b"partial").unwrap();
        assert!(matches!(t.discard(), Discarded::Removed));
        assert!(!p.exists());
        assert!(matches!(t.discard(), Discarded::NotCreated), "only once");
        drop(t);

        let mut t = Target::open(&p, false).unwrap();
        let moved = d.path().join("moved.img");
        std::fs::rename(&p, &moved).unwrap();
        std::fs::write(&p, b"someone else's").unwrap();
        assert!(matches!(t.discard(), Discarded::Moved));
        drop(t);
        assert_eq!(std::fs::read(&p).unwrap(), b"someone else's");
        assert!(moved.exists());

        let mut t = Target::open(&p, false).unwrap();
        assert!(matches!(t.discard(), Discarded::NotCreated), "it was there");
        drop(t);
        let mut t = Target::open(&moved, false).unwrap();
        t.keep();
        assert!(matches!(t.discard(), Discarded::NotCreated));
        drop(t);
        assert!(p.exists() && moved.exists());
    }
}
