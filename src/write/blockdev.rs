//! The Linux platform seam for block devices: size and sector size ioctls, partition table re-read,
//! and what sysfs and /proc say about a disk (whole disk or partition, removable, what is mounted on
//! it). Everything else in the writer goes through these functions.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

// ioctl numbers from <linux/fs.h>.
const BLKRRPART: libc::c_ulong = 0x125f;
const BLKSSZGET: libc::c_ulong = 0x1268;
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

/// Size of the device in bytes.
pub fn size(file: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// Logical sector size (the O_DIRECT alignment unit).
pub fn logical_sector_size(file: &File) -> io::Result<u32> {
    let mut v: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKSSZGET as _, &mut v as *mut libc::c_int) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v.max(512) as u32)
}

/// Asks the kernel to re-read the partition table (the caller holds the disk exclusively). udev
/// may have a partition open for a moment to probe it (EBUSY): retried for up to two seconds.
pub fn reread_partitions(file: &File) -> io::Result<()> {
    let mut tries = 0;
    loop {
        // SAFETY: BLKRRPART takes no argument.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKRRPART as _, 0) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) || tries >= 20 {
            return Err(e);
        }
        tries += 1;
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// What sysfs says about a block device.
#[derive(Debug, Clone)]
pub struct DiskInfo {
    /// Kernel name, e.g. `sdb`, `mmcblk0p1`, `loop3`.
    pub name: String,
    pub dev: u64,
    /// The whole disk this is (itself if it is not a partition).
    pub disk_name: String,
    pub disk_dev: u64,
    pub is_partition: bool,
    /// Removable media (sysfs `removable`), or an SD/MMC or USB device, which are cards and sticks.
    pub removable: bool,
    pub model: Option<String>,
    /// Loop devices: the file behind it.
    pub backing_file: Option<String>,
}

fn sys_dev(dev: u64) -> PathBuf {
    PathBuf::from(format!(
        "/sys/dev/block/{}:{}",
        libc::major(dev),
        libc::minor(dev)
    ))
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn parse_dev(s: &str) -> Option<u64> {
    let (a, b) = s.trim().split_once(':')?;
    Some(libc::makedev(a.parse().ok()?, b.parse().ok()?))
}

/// sysfs facts about the block device `dev` (an st_rdev).
pub fn info(dev: u64) -> io::Result<DiskInfo> {
    let sys = std::fs::canonicalize(sys_dev(dev))?;
    let name = sys
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let is_partition = sys.join("partition").exists();
    let disk_sys = if is_partition {
        sys.parent().map(Path::to_path_buf).unwrap_or(sys.clone())
    } else {
        sys.clone()
    };
    let disk_name = disk_sys
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let disk_dev = read_trim(&disk_sys.join("dev"))
        .and_then(|s| parse_dev(&s))
        .unwrap_or(dev);
    let path = disk_sys.to_string_lossy().into_owned();
    let removable = read_trim(&disk_sys.join("removable")).as_deref() == Some("1")
        || disk_name.starts_with("mmcblk")
        || path.contains("/usb");
    let model = read_trim(&disk_sys.join("device/model"));
    let backing_file = read_trim(&disk_sys.join("loop/backing_file"));
    Ok(DiskInfo {
        name,
        dev,
        disk_name,
        disk_dev,
        is_partition,
        removable,
        model,
        backing_file,
    })
}

/// The whole disks (st_rdev) under `dev`, following device-mapper/md `slaves` down to real disks.
fn underlying_disks(dev: u64, out: &mut Vec<u64>, depth: u32) {
    if depth > 8 {
        return;
    }
    let Ok(sys) = std::fs::canonicalize(sys_dev(dev)) else {
        return;
    };
    let disk = if sys.join("partition").exists() {
        sys.parent().map(Path::to_path_buf).unwrap_or(sys.clone())
    } else {
        sys.clone()
    };
    let mut found_slave = false;
    for dir in [sys.join("slaves"), disk.join("slaves")] {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if let Some(d) = read_trim(&e.path().join("dev")).and_then(|s| parse_dev(&s)) {
                    found_slave = true;
                    underlying_disks(d, out, depth + 1);
                }
            }
        }
    }
    if let Some(d) = read_trim(&disk.join("dev")).and_then(|s| parse_dev(&s)) {
        out.push(d);
    }
    if !found_slave {
        out.push(dev);
    }
}

/// Every whole disk that holds a mounted filesystem or active swap, with what uses it
/// ("/ (the running system)", "/mnt/x", "swap").
pub fn disks_in_use() -> BTreeMap<u64, Vec<String>> {
    let mut used: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut note = |dev: u64, what: String| {
        let mut disks = Vec::new();
        underlying_disks(dev, &mut disks, 0);
        for d in disks {
            let v = used.entry(d).or_default();
            if !v.contains(&what) {
                v.push(what.clone());
            }
        }
    };
    if let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() < 5 {
                continue;
            }
            let mount_point = unescape(f[4]);
            let what = if mount_point == "/" {
                "/ (the running system)".to_string()
            } else {
                mount_point
            };
            if let Some(dev) = parse_dev(f[2]).filter(|&d| libc::major(d) != 0) {
                note(dev, what.clone());
            }
            // Filesystems such as btrfs report an anonymous device; the source names the disk.
            if let Some(sep) = f.iter().position(|x| *x == "-")
                && let Some(src) = f.get(sep + 2)
                && src.starts_with("/dev/")
                && let Ok(m) = std::fs::metadata(unescape(src))
                && m.file_type().is_block_device()
            {
                note(m.rdev(), what);
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/swaps") {
        for line in text.lines().skip(1) {
            if let Some(p) = line.split_whitespace().next()
                && let Ok(m) = std::fs::metadata(unescape(p))
            {
                if m.file_type().is_block_device() {
                    note(m.rdev(), "swap".into());
                } else {
                    note(m.dev(), "a swap file".into());
                }
            }
        }
    }
    used
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The partition nodes of whole disk `disk_name`: (partition number, start sector, /dev path).
pub fn partitions(disk_name: &str) -> Vec<(u32, u64, PathBuf)> {
    let dir = PathBuf::from("/sys/class/block").join(disk_name);
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let p = e.path();
            let (Some(n), Some(start)) = (
                read_trim(&p.join("partition")).and_then(|s| s.parse().ok()),
                read_trim(&p.join("start")).and_then(|s| s.parse().ok()),
            ) else {
                continue;
            };
            out.push((n, start, PathBuf::from("/dev").join(e.file_name())));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/trail\\04"), "/trail\\04");
    }

    #[test]
    fn the_root_filesystem_is_in_use() {
        let used = disks_in_use();
        let root = std::fs::metadata("/").unwrap().dev();
        if libc::major(root) != 0 {
            assert!(used.values().flatten().any(|w| w.starts_with("/ ")));
        }
    }
}
