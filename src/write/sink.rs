//! The target: a regular file or a block device, identified once. The path is resolved to one
//! descriptor (O_PATH, no side effects even on a character device) whose fstat is the target's
//! identity; every descriptor used afterwards is reopened from it (/proc/self/fd/N) and must
//! show the same device and inode. A device is checked before any write (not the source or a
//! disk holding it, not mounted, removable or confirmed, large enough), then opened read-write
//! with O_EXCL; a file is sized before its old content is dropped. Locked against a second
//! writer.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::blockdev::{self, DiskInfo, Extent, LARGE_REMOVABLE};
use super::buffers::{ALIGN, ZEROS, ZEROS_LEN};
use super::lock::{self, LockError};
use crate::size::Human;

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
    /// This run created the file: removed again when dropped before anything was written.
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
        // A file this run created and never wrote is removed, so "nothing was written" stays
        // true; only if the path still names it and it is empty.
        if self.created
            && !self.keep
            && let Ok(m) = std::fs::metadata(&self.path)
            && Identity::of(&m) == self.identity
            && m.len() == 0
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
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
    let name = std::ffi::CString::new(format!("/proc/self/fd/{fd}"))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: open with a NUL-terminated path; the result is checked.
    let r = unsafe { libc::open(name.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOCTTY) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: r is a descriptor we just opened and own.
    let f = unsafe { File::from_raw_fd(r) };
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

/// The media and size checks `--yes` overrides: a partition, a disk that is not removable, or a
/// removable one larger than 128 GB.
pub fn confirmation(
    path: &str,
    info: &DiskInfo,
    capacity: u64,
    yes: bool,
) -> Result<(), TargetError> {
    if yes {
        return Ok(());
    }
    let desc = describe_device(info, capacity);
    if info.is_partition {
        return Err(TargetError::Partition {
            path: path.into(),
            disk: info.disk_name.clone(),
        });
    }
    if !info.removable() {
        return Err(TargetError::NotRemovable {
            path: path.into(),
            desc,
            why: info.media.reason(),
        });
    }
    if capacity > LARGE_REMOVABLE {
        return Err(TargetError::LargeRemovable {
            path: path.into(),
            desc,
            why: info.media.reason(),
        });
    }
    Ok(())
}

/// Refuses a device whose writing would destroy the source: the device is the source, a loop
/// device over the source file, or a disk (or the partition) its filesystem lies on.
fn source_checks(
    path: &str,
    sys: &Path,
    info: &DiskInfo,
    capacity: u64,
    backing: Option<(u64, u64)>,
    src: &SourceId,
) -> Result<(), TargetError> {
    if let Some(r) = src.rdev {
        // A device as the source is read whole: any device the target's writes reach (through
        // device-mapper or a loop device's file) must not overlap any the source lies on.
        let target = blockdev::stack(sys, info.dev);
        let source = blockdev::stack(sys, r);
        if target.iter().any(|t| source.iter().any(|s| t.overlaps(s))) {
            return Err(TargetError::OverlapsSource {
                path: path.into(),
                source_name: src.name.clone(),
            });
        }
        return Ok(());
    }
    if backing == Some((src.dev, src.ino)) {
        return Err(TargetError::LoopOverSource {
            path: path.into(),
            backing: info
                .backing_file
                .clone()
                .unwrap_or_else(|| src.name.clone()),
            source_name: src.name.clone(),
        });
    }
    // A file as the source: only the target itself (or the disk it is part of) counts; a loop
    // device writes its own file, not the rest of the filesystem holding it.
    let target = [Extent {
        dev: info.dev,
        disk: info.disk_dev,
    }];
    // The source's filesystem: the block device it reports, or the one mounted for it, and
    // everything below it.
    let fs_dev = if libc::major(src.dev) == 0 {
        blockdev::mount_source(src.dev)
    } else {
        Some(src.dev)
    };
    if let Some(fs_dev) = fs_dev {
        let below = blockdev::stack(sys, fs_dev);
        if let Some(hit) = below.iter().find(|s| target.iter().any(|t| t.overlaps(s))) {
            return Err(TargetError::HoldsSource {
                path: path.into(),
                desc: describe_device(info, capacity),
                source_name: src.name.clone(),
                on: device_name(sys, hit),
                mounted_at: blockdev::mount_points(src.dev).join(", "),
            });
        }
    }
    Ok(())
}

fn device_name(sys: &Path, e: &Extent) -> String {
    blockdev::info(sys, e.dev).map_or_else(
        |_| format!("device {}:{}", libc::major(e.dev), libc::minor(e.dev)),
        |i| format!("/dev/{}", i.name),
    )
}

impl Target {
    /// Checks the target and locks it; nothing is written. `yes` confirms a non-removable disk,
    /// a large one or a partition.
    pub fn open(path: &Path, yes: bool) -> Result<Target, TargetError> {
        Target::open_checked(
            path,
            &Checks {
                yes,
                ..Checks::default()
            },
        )
    }

    /// Resolves, identifies, checks and locks the target; nothing is written.
    pub fn open_checked(path: &Path, checks: &Checks<'_>) -> Result<Target, TargetError> {
        let shown = path.display().to_string();
        let open_err = |e: io::Error| TargetError::Open {
            path: shown.clone(),
            source: e,
        };
        let reopen_err = |e: io::Error| reopen_error(&shown, e);
        let handle = match open_path(path) {
            Ok(h) => h,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Target::create(path, checks);
            }
            Err(e) => return Err(open_err(e)),
        };
        let meta = handle.metadata().map_err(open_err)?;
        let identity = Identity::of(&meta);
        let ft = meta.file_type();
        let base = |kind, anchor, io| Target {
            path: path.to_path_buf(),
            kind,
            capacity: None,
            sector: 512,
            identity,
            initial_len: 0,
            created: false,
            keep: false,
            sysfs: checks.sysfs.to_path_buf(),
            anchor,
            io,
        };
        if meta.is_file() {
            if let Some(src) = checks.source {
                if (src.dev, src.ino) == (identity.dev, identity.ino) {
                    return Err(TargetError::SameAsSource {
                        path: shown.clone(),
                    });
                }
                if let Some(r) = src.rdev
                    && blockdev::loop_backing_of(checks.sysfs, r)
                        == Some((identity.dev, identity.ino))
                {
                    return Err(TargetError::SourceLoopOverTarget {
                        path: shown.clone(),
                        source_name: src.name.clone(),
                    });
                }
            }
            let f = reopen(handle.as_raw_fd(), libc::O_RDWR, identity).map_err(reopen_err)?;
            lock::acquire(&f, path)?;
            let mut t = base(TargetKind::File, f, None);
            t.initial_len = meta.len();
            return Ok(t);
        }
        if !ft.is_block_device() {
            return Err(TargetError::Unsupported {
                path: shown.clone(),
                what: file_type_name(&meta),
            });
        }
        // A read-only descriptor for the checks (ioctls, loop status) and the lock.
        let anchor = reopen(handle.as_raw_fd(), libc::O_RDONLY, identity).map_err(reopen_err)?;
        drop(handle);
        let sys = checks.sysfs;
        let info = blockdev::info(sys, identity.rdev).map_err(open_err)?;
        let capacity = blockdev::size(&anchor).map_err(open_err)?;
        let sector = u64::from(blockdev::logical_sector_size(&anchor).unwrap_or(512));
        if let Some(src) = checks.source {
            // LOOP_GET_STATUS64 only goes to loop devices.
            let backing = info
                .disk_name
                .starts_with("loop")
                .then(|| blockdev::loop_backing(&anchor))
                .flatten();
            source_checks(&shown, sys, &info, capacity, backing, src)?;
        }
        let users = blockdev::disks_in_use(sys);
        let mut using: Vec<String> = Vec::new();
        for d in [info.dev, info.disk_dev] {
            for u in users.get(&d).into_iter().flatten() {
                if !using.contains(u) {
                    using.push(u.clone());
                }
            }
        }
        if !using.is_empty() {
            return Err(TargetError::InUse {
                path: shown.clone(),
                desc: describe_device(&info, capacity),
                users: format!("mounted or used at {}", using.join(", ")),
            });
        }
        confirmation(&shown, &info, capacity, checks.yes)?;
        lock::acquire(&anchor, path)?;
        // Exclusive: the kernel refuses mounts (and other exclusive openers) while it is open.
        let io = reopen(anchor.as_raw_fd(), libc::O_RDWR | libc::O_EXCL, identity)
            .map_err(reopen_err)?;
        let mut t = base(TargetKind::Device(info), anchor, Some(io));
        t.capacity = Some(capacity);
        t.sector = sector;
        Ok(t)
    }

    /// A path that does not exist: a new file, unless it is under /dev (a mistyped device name)
    /// or the caller only works on existing targets.
    fn create(path: &Path, checks: &Checks<'_>) -> Result<Target, TargetError> {
        let shown = path.display().to_string();
        // A mistyped device name must not become a file in /dev (/dev/shm is a tmpfs for files).
        let parent = path
            .parent()
            .and_then(|p| {
                std::fs::canonicalize(if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                })
                .ok()
            })
            .unwrap_or_default();
        if parent.starts_with("/dev") && !parent.starts_with("/dev/shm") {
            return Err(TargetError::NoSuchDevice { path: shown });
        }
        if !checks.create {
            return Err(TargetError::NoSuchFile { path: shown });
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
            .map_err(|e| TargetError::Open {
                path: shown.clone(),
                source: e,
            })?;
        let identity = Identity::of(&f.metadata().map_err(|e| TargetError::Open {
            path: shown.clone(),
            source: e,
        })?);
        let t = Target {
            path: path.to_path_buf(),
            kind: TargetKind::File,
            capacity: None,
            sector: 512,
            identity,
            initial_len: 0,
            created: true,
            keep: false,
            sysfs: checks.sysfs.to_path_buf(),
            anchor: f,
            io: None,
        };
        // Dropped on a lock failure: the new, empty file is removed again.
        lock::acquire(&t.anchor, path)?;
        Ok(t)
    }

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

    /// Writing started: a file this run created is kept whatever happens next.
    pub fn keep(&mut self) {
        self.keep = true;
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
        // SAFETY: an all-zero statvfs is valid; fstatvfs fills it for a valid descriptor.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstatvfs(self.anchor.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
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

/// The target opened for writing and reading back.
pub struct Sink {
    plain: File,
    direct: Option<File>,
    direct_writes: bool,
    sector: u64,
    pub is_device: bool,
}

/// Bytes between writeback kicks (files) or waits (buffered device writes), so dirty data never
/// piles up and Ctrl-C never waits minutes for a flush.
pub const FLUSH_WINDOW: u64 = 64 << 20;

impl Sink {
    fn aligned(&self, offset: u64, data: &[u8]) -> bool {
        offset.is_multiple_of(self.sector)
            && (data.len() as u64).is_multiple_of(self.sector)
            && (data.as_ptr() as u64).is_multiple_of(self.sector)
    }

    /// Writes `data` at `offset`: O_DIRECT on a device when aligned, buffered otherwise.
    pub fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        match &self.direct {
            Some(d) if self.direct_writes && self.aligned(offset, data) => {
                d.write_all_at(data, offset)
            }
            _ => self.plain.write_all_at(data, offset),
        }
    }

    /// Writes `len` zero bytes at `offset` (devices, where skipping would leave stale data).
    pub fn write_zeros(&self, mut offset: u64, len: u64) -> io::Result<()> {
        let end = offset + len;
        while offset < end {
            // Stay on ZEROS_LEN boundaries so pieces remain aligned.
            let n = (end - offset).min(ZEROS_LEN as u64 - offset % ZEROS_LEN as u64);
            self.write_at(&ZEROS.0[..n as usize], offset)?;
            offset += n;
        }
        Ok(())
    }

    /// Starts (files) or completes (buffered device writes) writeback of `[start, end)`.
    pub fn kick_writeback(&self, start: u64, end: u64) {
        let flags = if self.is_device {
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER
        } else {
            libc::SYNC_FILE_RANGE_WRITE
        };
        // SAFETY: sync_file_range on a valid descriptor; a failure only loses the hint.
        unsafe {
            libc::sync_file_range(
                self.plain.as_raw_fd(),
                start as libc::off64_t,
                (end - start) as libc::off64_t,
                flags,
            );
        }
    }

    /// Everything written so far reaches the medium (device caches included).
    pub fn flush(&self) -> io::Result<()> {
        self.plain.sync_data()?;
        if let Some(d) = &self.direct {
            d.sync_data()?;
        }
        Ok(())
    }

    /// Sets a file target's final length (streams of unknown size; never below what was written).
    pub fn set_file_len(&self, len: u64) -> io::Result<()> {
        if !self.is_device {
            self.plain.set_len(len)?;
        }
        Ok(())
    }

    /// Drops cached pages of `[start, end)` so the next read comes from the medium.
    pub fn drop_cache(&self, start: u64, end: u64) {
        // SAFETY: posix_fadvise only affects caching of a valid descriptor.
        unsafe {
            libc::posix_fadvise(
                self.plain.as_raw_fd(),
                start as libc::off_t,
                (end - start) as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            );
        }
    }

    /// Reads back with the page cache bypassed: O_DIRECT when aligned, otherwise a read after the
    /// range's cached pages were dropped (the caller flushed first).
    pub fn read_back(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match &self.direct {
            Some(d) if self.aligned(offset, buf) => d.read_exact_at(buf, offset),
            _ => {
                self.drop_cache(offset, offset + buf.len() as u64);
                self.plain.read_exact_at(buf, offset)
            }
        }
    }

    /// Whether reads bypass the cache with O_DIRECT (else fdatasync + POSIX_FADV_DONTNEED).
    pub fn direct_reads(&self) -> bool {
        self.direct.is_some()
    }

    /// Whether reading `len` bytes at `offset` into an aligned buffer goes through O_DIRECT.
    pub fn reads_direct(&self, offset: u64, len: usize) -> bool {
        self.direct.is_some()
            && offset.is_multiple_of(self.sector)
            && (len as u64).is_multiple_of(self.sector)
    }

    /// Data extents of a file target within `[start, end)` (holes read as zeros and are not read);
    /// a device is all data.
    pub fn data_extents(&self, start: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
        if self.is_device {
            Ok(vec![(start, end)])
        } else {
            crate::sparse::data_extents(&self.plain, start, end)
        }
    }

    /// The exclusively opened device, for the partition table re-read.
    pub fn reread_partitions(&self) -> io::Result<()> {
        blockdev::reread_partitions(&self.plain)
    }

    pub fn alignment(&self) -> u64 {
        self.sector.max(ALIGN as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::blockdev::fake;

    /// Disks as sysfs shows them: (name, devpath, major, minor, attributes).
    fn disks(sys: &Path) -> Vec<(&'static str, u64)> {
        vec![
            (
                "usb-hdd",
                fake::add(
                    sys,
                    "devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb",
                    8,
                    16,
                    &[
                        ("removable", "0"),
                        ("size", "3907029168"),
                        ("device/vendor", "Seagate"),
                        ("device/model", "Expansion Desk"),
                    ],
                ),
            ),
            (
                "emmc",
                fake::add(
                    sys,
                    "devices/platform/soc/11230000.mmc/mmc_host/mmc0/mmc0:0001/block/mmcblk0",
                    179,
                    0,
                    &[
                        ("removable", "0"),
                        ("size", "30535680"),
                        ("device/type", "MMC"),
                        ("device/name", "DG4016"),
                    ],
                ),
            ),
            (
                "sd",
                fake::add(
                    sys,
                    "devices/platform/soc/11240000.mmc/mmc_host/mmc1/mmc1:aaaa/block/mmcblk1",
                    179,
                    256,
                    &[
                        ("removable", "0"),
                        ("size", "62333952"),
                        ("device/type", "SD"),
                        ("device/name", "SD32G"),
                    ],
                ),
            ),
            (
                "stick",
                fake::add(
                    sys,
                    "devices/pci0000:00/0000:00:14.0/usb2/2-2/2-2:1.0/host7/target7:0:0/7:0:0:0/block/sdc",
                    8,
                    32,
                    &[
                        ("removable", "1"),
                        ("size", "30031872"),
                        ("device/vendor", "SanDisk"),
                        ("device/model", "Cruzer Blade"),
                    ],
                ),
            ),
            (
                "big-stick",
                fake::add(
                    sys,
                    "devices/pci0000:00/0000:00:14.0/usb2/2-3/2-3:1.0/host8/target8:0:0/8:0:0:0/block/sdd",
                    8,
                    48,
                    &[
                        ("removable", "1"),
                        ("size", "500118192"),
                        ("device/vendor", "SanDisk"),
                        ("device/model", "Extreme Pro"),
                    ],
                ),
            ),
        ]
    }

    fn check(sys: &Path, dev: u64, yes: bool) -> Result<(), TargetError> {
        let info = blockdev::info(sys, dev).unwrap();
        let size = info.size.unwrap();
        confirmation("/dev/x", &info, size, yes)
    }

    #[test]
    fn only_removable_media_up_to_128_gb_go_without_yes() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path();
        for (name, dev) in disks(sys) {
            let r = check(sys, dev, false);
            let msg = r
                .as_ref()
                .err()
                .map(ToString::to_string)
                .unwrap_or_default();
            match name {
                "usb-hdd" => {
                    assert!(
                        matches!(r, Err(TargetError::NotRemovable { .. })),
                        "{name}: {r:?}"
                    );
                    assert_eq!(
                        msg,
                        "/dev/x (Seagate Expansion Desk, 1.8 TiB, 2000398934016 bytes) is not a removable disk: the kernel reports fixed media (sysfs removable = 0), as for internal disks and USB hard disks; pass --yes if you are sure it may be overwritten"
                    );
                }
                "emmc" => {
                    assert!(
                        matches!(r, Err(TargetError::NotRemovable { .. })),
                        "{name}: {r:?}"
                    );
                    assert_eq!(
                        msg,
                        "/dev/x (DG4016, 14.6 GiB, 15634268160 bytes) is not a removable disk: built-in eMMC flash (sysfs device/type = MMC), not an SD card: it may hold the system; pass --yes if you are sure it may be overwritten"
                    );
                }
                "sd" | "stick" => assert!(r.is_ok(), "{name}: {msg}"),
                "big-stick" => {
                    assert!(
                        matches!(r, Err(TargetError::LargeRemovable { .. })),
                        "{name}: {r:?}"
                    );
                    assert_eq!(
                        msg,
                        "/dev/x (SanDisk Extreme Pro, 238.5 GiB, 256060514304 bytes) is larger than 128 GB: it is removable media (sysfs removable = 1), but at this size it is more likely a backup disk than a card or stick; pass --yes if you are sure it may be overwritten"
                    );
                }
                _ => unreachable!(),
            }
            assert!(check(sys, dev, true).is_ok(), "{name} with --yes");
        }
    }

    #[test]
    fn a_partition_needs_yes_even_on_a_card() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path();
        disks(sys);
        let p = fake::add(
            sys,
            "devices/platform/soc/11240000.mmc/mmc_host/mmc1/mmc1:aaaa/block/mmcblk1/mmcblk1p1",
            179,
            257,
            &[("partition", "1"), ("start", "8192"), ("size", "524288")],
        );
        let r = check(sys, p, false);
        assert_eq!(
            r.err().map(|e| e.to_string()).unwrap_or_default(),
            "/dev/x is a partition of /dev/mmcblk1; an image with a partition table belongs on the whole disk (/dev/mmcblk1); pass --yes to write into the partition anyway"
        );
        assert!(check(sys, p, true).is_ok());
    }

    #[test]
    fn the_128_gb_line_is_decimal_and_inclusive() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path();
        let dev = fake::add(
            sys,
            "devices/virtual/block/sdz",
            8,
            240,
            &[("removable", "1"), ("size", "250000000")],
        );
        let info = blockdev::info(sys, dev).unwrap();
        assert!(confirmation("/dev/sdz", &info, 128_000_000_000, false).is_ok());
        assert!(matches!(
            confirmation("/dev/sdz", &info, 128_000_000_512, false),
            Err(TargetError::LargeRemovable { .. })
        ));
    }

    #[test]
    fn a_new_file_is_removed_when_nothing_was_written() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("new.img");
        drop(Target::open(&p, false).unwrap());
        assert!(!p.exists());
        let mut t = Target::open(&p, false).unwrap();
        t.keep();
        drop(t);
        assert!(p.exists());
        // An existing file is never removed.
        drop(Target::open(&p, false).unwrap());
        assert!(p.exists());
    }

    #[test]
    fn grow_does_not_create_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("missing.img");
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
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("existing.img");
        std::fs::write(&p, b"precious").unwrap();
        let t = Target::open(&p, false).unwrap();
        let r = t.reserve(100_000 << 40);
        assert!(matches!(r, Err(TargetError::Size { .. })), "{r:?}");
        drop(t);
        assert_eq!(std::fs::read(&p).unwrap(), b"precious");
    }
}
