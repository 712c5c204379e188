//! Opening a target: the path resolved once, the file or device checked (type, source, media, size),
//! a new file created, the descriptors reopened from the first, the lock taken.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use super::super::blockdev::{self, DiskInfo, Extent};
use super::super::lock;
use super::{
    Checks, Identity, SourceId, Target, TargetError, TargetKind, confirmation, describe_device,
    file_type_name, open_path, reopen, reopen_error,
};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_is_removed_when_nothing_was_written() {
        let (_d, p) = crate::testutil::scratch("new.img");
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
}
