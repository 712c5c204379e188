//! The target: a regular file (created, sized, holes kept) or a block device (checked before any
//! write: not mounted, not the system disk, large enough, removable or confirmed; opened
//! exclusively; written with O_DIRECT where aligned). Locked against a second writer.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::blockdev::{self, DiskInfo};
use super::buffers::{ALIGN, ZEROS, ZEROS_LEN};
use super::lock::{LockError, TargetLock};
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
    #[error("{path} is {what}; the target must be a block device or a regular file")]
    Unsupported { path: String, what: &'static str },
    #[error("{path} is the source image itself; write to another file or a device")]
    SameAsSource { path: String },
    #[error("{path} ({desc}) is in use: {users}; unmount it (and swapoff) first")]
    InUse {
        path: String,
        desc: String,
        users: String,
    },
    #[error(
        "{path} ({desc}) is not a removable disk; pass --yes if you are sure it may be overwritten"
    )]
    NotRemovable { path: String, desc: String },
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
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot open {path}: {source}{}", busy_hint(source))]
    Open { path: String, source: io::Error },
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
                | TargetError::Unsupported { .. }
                | TargetError::SameAsSource { .. }
                | TargetError::NotRemovable { .. }
                | TargetError::Partition { .. }
                | TargetError::SizeOnDevice { .. }
                | TargetError::SizeTooSmall { .. }
        )
    }
}

/// A checked and locked target, not yet opened for writing.
pub struct Target {
    pub path: PathBuf,
    pub kind: TargetKind,
    /// Device size in bytes.
    pub capacity: Option<u64>,
    /// Logical sector size (O_DIRECT unit).
    pub sector: u64,
    /// (st_dev, st_ino) of an existing file, or st_rdev of a device, to recognise the source.
    pub identity: Option<(u64, u64)>,
    _lock: TargetLock,
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

impl Target {
    /// Checks the target and locks it; nothing is written. `yes` confirms a non-removable disk or a
    /// partition.
    pub fn open(path: &Path, yes: bool) -> Result<Target, TargetError> {
        let shown = path.display().to_string();
        let open_err = |e: io::Error| TargetError::Open {
            path: shown.clone(),
            source: e,
        };
        let meta = match std::fs::metadata(path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(open_err(e)),
        };
        match meta {
            None => {
                // A mistyped device name must not become a file in /dev (/dev/shm is a tmpfs
                // for files).
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
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o644)
                    .open(path)
                    .map_err(open_err)?;
                let m = f.metadata().map_err(open_err)?;
                let identity = Some((m.dev(), m.ino()));
                let lock = TargetLock::acquire(f, path)?;
                Ok(Target {
                    path: path.to_path_buf(),
                    kind: TargetKind::File,
                    capacity: None,
                    sector: 512,
                    identity,
                    _lock: lock,
                })
            }
            Some(m) if m.is_file() => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(open_err)?;
                let lock = TargetLock::acquire(f, path)?;
                Ok(Target {
                    path: path.to_path_buf(),
                    kind: TargetKind::File,
                    capacity: None,
                    sector: 512,
                    identity: Some((m.dev(), m.ino())),
                    _lock: lock,
                })
            }
            Some(m) if m.file_type().is_block_device() => {
                let info = blockdev::info(m.rdev()).map_err(open_err)?;
                let users = blockdev::disks_in_use();
                let mut using: Vec<String> = Vec::new();
                for d in [info.dev, info.disk_dev] {
                    for u in users.get(&d).into_iter().flatten() {
                        if !using.contains(u) {
                            using.push(u.clone());
                        }
                    }
                }
                let f = File::open(path).map_err(open_err)?;
                let capacity = blockdev::size(&f).map_err(open_err)?;
                let sector = u64::from(blockdev::logical_sector_size(&f).unwrap_or(512));
                let desc = describe_device(&info, capacity);
                if !using.is_empty() {
                    return Err(TargetError::InUse {
                        path: shown,
                        desc,
                        users: format!("mounted or used at {}", using.join(", ")),
                    });
                }
                if info.is_partition && !yes {
                    return Err(TargetError::Partition {
                        path: shown,
                        disk: info.disk_name.clone(),
                    });
                }
                if !info.removable && !yes {
                    return Err(TargetError::NotRemovable { path: shown, desc });
                }
                let lock = TargetLock::acquire(f, path)?;
                Ok(Target {
                    path: path.to_path_buf(),
                    kind: TargetKind::Device(info),
                    capacity: Some(capacity),
                    sector,
                    identity: Some((m.rdev(), 0)),
                    _lock: lock,
                })
            }
            Some(m) => Err(TargetError::Unsupported {
                path: shown,
                what: file_type_name(&m),
            }),
        }
    }

    pub fn is_device(&self) -> bool {
        matches!(self.kind, TargetKind::Device(_))
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

    /// Opens the target for writing. A file is emptied and sized to `file_len` (its old content is
    /// gone, so skipped zero blocks stay holes); a device is opened exclusively.
    pub fn open_sink(&self, file_len: u64) -> Result<Sink, TargetError> {
        let shown = self.path.display().to_string();
        let open_err = |e: io::Error| TargetError::Open {
            path: shown.clone(),
            source: e,
        };
        match &self.kind {
            TargetKind::File => {
                let plain = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&self.path)
                    .map_err(open_err)?;
                plain.set_len(0).map_err(open_err)?;
                plain.set_len(file_len).map_err(open_err)?;
                // O_DIRECT writes skip the page-cache copy and the kernel's writeback work, which
                // would otherwise compete with decoding for the CPU; reads back bypass the cache
                // the same way. Some filesystems (tmpfs) refuse it: then writes are buffered and
                // the cache is dropped with fadvise before reading back.
                let direct = open_direct(&self.path);
                Ok(Sink {
                    plain,
                    direct_writes: direct.is_some(),
                    direct,
                    sector: self.sector,
                    is_device: false,
                })
            }
            TargetKind::Device(_) => {
                let plain = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_EXCL)
                    .open(&self.path)
                    .map_err(open_err)?;
                let direct = open_direct(&self.path);
                Ok(Sink {
                    direct_writes: direct.is_some(),
                    plain,
                    direct,
                    sector: self.sector,
                    is_device: true,
                })
            }
        }
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
    s.push_str(&Human(capacity).to_string());
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

/// A second descriptor on `path` with O_DIRECT, or None where the filesystem refuses it (tmpfs).
fn open_direct(path: &Path) -> Option<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}
