//! The Linux platform seam for block devices: size and sector size ioctls, partition table re-read,
//! and what sysfs and /proc say about a disk (whole disk or partition, removable, what is mounted on
//! it). Everything else in the writer goes through these functions.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::ioctl::{Getter, NoArg, Opcode, ioctl, opcode};

use crate::signals::unescape_mountinfo;

// <linux/fs.h>, encoded for the host by rustix: `BLKGETSIZE64` is `_IOR(0x12, 114, size_t)`, so its
// number depends on the width of size_t (0x80041272 on 32-bit ARM, 0x80081272 on 64-bit hosts) while
// the kernel always writes a u64.
const BLKGETSIZE64: Opcode = opcode::read::<usize>(0x12, 114);
const BLKRRPART: Opcode = opcode::none(0x12, 95);

/// Size of the device in bytes.
pub fn size(file: &File) -> io::Result<u64> {
    // SAFETY: BLKGETSIZE64 is a getter that writes one u64.
    Ok(unsafe { ioctl(file, Getter::<BLKGETSIZE64, u64>::new()) }?)
}

/// Logical sector size (the O_DIRECT alignment unit).
pub fn logical_sector_size(file: &File) -> io::Result<u32> {
    Ok(rustix::fs::ioctl_blksszget(file)?.max(512))
}

/// Asks the kernel to re-read the partition table (the caller holds the disk exclusively). udev
/// may have a partition open for a moment to probe it (EBUSY): retried for up to two seconds.
pub fn reread_partitions(file: &File) -> io::Result<()> {
    let mut tries = 0;
    loop {
        // SAFETY: BLKRRPART takes no argument.
        let e = match unsafe { ioctl(file, NoArg::<BLKRRPART>::new()) } {
            Ok(()) => return Ok(()),
            Err(e) => io::Error::from(e),
        };
        if e.raw_os_error() != Some(libc::EBUSY) || tries >= 20 {
            return Err(e);
        }
        tries += 1;
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Where sysfs is mounted; the functions below take the root as a parameter so that tests can
/// describe disks with a directory tree of their own.
pub const SYSFS: &str = "/sys";

/// Cards and sticks larger than this need `--yes` even when removable (balenaEtcher's
/// `LARGE_DRIVE_SIZE`): at that size a "removable" disk is more often a backup drive.
pub const LARGE_REMOVABLE: u64 = 128_000_000_000;

/// What kind of medium a disk is, as far as the kernel tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// sysfs `removable` is 1 (USB sticks, card readers).
    Removable,
    /// An SD card in an MMC host (`device/type` is `SD`; such hosts often say `removable` 0).
    SdCard,
    /// Built-in flash on an MMC bus (`device/type` is `MMC`).
    Emmc,
    /// Anything else: `removable` is 0 (internal disks, and USB hard disks, which are not
    /// removable media).
    Fixed,
}

impl Media {
    pub fn is_removable(self) -> bool {
        matches!(self, Media::Removable | Media::SdCard)
    }

    /// Why the disk is taken for what it is, for messages.
    pub fn reason(self) -> &'static str {
        match self {
            Media::Removable => "removable media (sysfs removable = 1)",
            Media::SdCard => "an SD card (sysfs device/type = SD)",
            Media::Emmc => {
                "built-in eMMC flash (sysfs device/type = MMC), not an SD card: it may hold the system"
            }
            Media::Fixed => {
                "the kernel reports fixed media (sysfs removable = 0), as for internal disks and USB hard disks"
            }
        }
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
    pub media: Media,
    /// Vendor and model (SCSI/USB), or the card's name (MMC/SD).
    pub model: Option<String>,
    /// Size in bytes from sysfs (`size` counts 512-byte units whatever the sector size).
    pub size: Option<u64>,
    /// Loop devices: the file behind it.
    pub backing_file: Option<String>,
}

impl DiskInfo {
    pub fn removable(&self) -> bool {
        self.media.is_removable()
    }
}

fn sys_dev(sys: &Path, dev: u64) -> PathBuf {
    sys.join(format!(
        "dev/block/{}:{}",
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

/// The sysfs directories of `dev` and of its whole disk.
fn sys_dirs(sys: &Path, dev: u64) -> io::Result<(PathBuf, PathBuf)> {
    let dir = std::fs::canonicalize(sys_dev(sys, dev))?;
    let disk = if dir.join("partition").exists() {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir.clone())
    } else {
        dir.clone()
    };
    Ok((dir, disk))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// sysfs facts about the block device `dev` (an st_rdev), read under `sys` (normally [`SYSFS`]).
pub fn info(sys: &Path, dev: u64) -> io::Result<DiskInfo> {
    let (dir, disk_sys) = sys_dirs(sys, dev)?;
    let is_partition = dir != disk_sys;
    let disk_name = file_name(&disk_sys);
    let disk_dev = read_trim(&disk_sys.join("dev"))
        .and_then(|s| parse_dev(&s))
        .unwrap_or(dev);
    let device = disk_sys.join("device");
    // Only an SD card is removable among MMC devices: eMMC is soldered on and SDIO is no disk.
    let media = match read_trim(&device.join("type")).as_deref() {
        Some("SD" | "SDcombo") => Media::SdCard,
        Some("MMC") => Media::Emmc,
        _ if read_trim(&disk_sys.join("removable")).as_deref() == Some("1") => Media::Removable,
        _ => Media::Fixed,
    };
    let model = match (
        read_trim(&device.join("vendor")),
        read_trim(&device.join("model")),
    ) {
        (Some(v), Some(m)) if !m.starts_with(&v) => Some(format!("{v} {m}")),
        (_, Some(m)) => Some(m),
        (v, None) => read_trim(&device.join("name")).or(v),
    };
    let size = read_trim(&dir.join("size"))
        .and_then(|s| s.parse::<u64>().ok())
        .and_then(|n| n.checked_mul(512));
    let backing_file = read_trim(&disk_sys.join("loop/backing_file"));
    Ok(DiskInfo {
        name: file_name(&dir),
        dev,
        disk_name,
        disk_dev,
        is_partition,
        media,
        model,
        size,
        backing_file,
    })
}

/// A block device and the whole disk it belongs to (the same for a whole disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub dev: u64,
    pub disk: u64,
}

impl Extent {
    /// Whether writing to one can change the other: the same device, or one is the whole disk
    /// the other is part of. Two partitions of one disk are apart.
    pub fn overlaps(&self, other: &Extent) -> bool {
        self.dev == other.dev
            || (self.disk == other.disk && (self.dev == self.disk || other.dev == other.disk))
    }
}

/// Every block device the data of `dev` lies on: itself and, below it, the slaves of
/// device-mapper/md devices and the device holding the file behind a loop device, recursively.
pub fn stack(sys: &Path, dev: u64) -> Vec<Extent> {
    let mut out = Vec::new();
    stack_into(sys, dev, &mut out, 0);
    out
}

fn stack_into(sys: &Path, dev: u64, out: &mut Vec<Extent>, depth: u32) {
    if depth > 8 || out.iter().any(|e| e.dev == dev) {
        return;
    }
    let Ok((dir, disk)) = sys_dirs(sys, dev) else {
        out.push(Extent { dev, disk: dev });
        return;
    };
    let disk_dev = read_trim(&disk.join("dev"))
        .and_then(|s| parse_dev(&s))
        .unwrap_or(dev);
    out.push(Extent {
        dev,
        disk: disk_dev,
    });
    for slaves in [dir.join("slaves"), disk.join("slaves")] {
        if let Ok(rd) = std::fs::read_dir(&slaves) {
            for e in rd.flatten() {
                if let Some(d) = read_trim(&e.path().join("dev")).and_then(|s| parse_dev(&s)) {
                    stack_into(sys, d, out, depth + 1);
                }
            }
        }
    }
    if let Some(file) = read_trim(&disk.join("loop/backing_file"))
        && let Ok(m) = std::fs::metadata(file.trim_end_matches(" (deleted)"))
    {
        let below = if m.file_type().is_block_device() {
            m.rdev()
        } else {
            m.dev()
        };
        if libc::major(below) != 0 {
            stack_into(sys, below, out, depth + 1);
        } else if let Some(d) = mount_source(below) {
            stack_into(sys, d, out, depth + 1);
        }
    }
}

/// The file behind the loop device `dev` (an st_rdev), from sysfs: (st_dev, st_ino) of the
/// file it names. None if `dev` is not a bound loop device.
pub fn loop_backing_of(sys: &Path, dev: u64) -> Option<(u64, u64)> {
    let (_, disk) = sys_dirs(sys, dev).ok()?;
    let file = read_trim(&disk.join("loop/backing_file"))?;
    let m = std::fs::metadata(file.trim_end_matches(" (deleted)")).ok()?;
    Some((m.dev(), m.ino()))
}

/// The block device named as the source of the mount whose filesystem reports `dev` (btrfs and
/// others report an anonymous device, major 0, in st_dev).
pub fn mount_source(dev: u64) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = format!("{}:{}", libc::major(dev), libc::minor(dev));
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(' ').collect();
        if f.get(2) != Some(&want.as_str()) {
            return None;
        }
        let sep = f.iter().position(|x| *x == "-")?;
        let src = f.get(sep + 2)?;
        let m = std::fs::metadata(unescape_mountinfo(src)).ok()?;
        m.file_type().is_block_device().then(|| m.rdev())
    })
}

/// The mount points of the filesystem whose st_dev is `dev`, for messages.
pub fn mount_points(dev: u64) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let want = format!("{}:{}", libc::major(dev), libc::minor(dev));
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            (f.len() > 4 && f[2] == want).then(|| unescape_mountinfo(f[4]))
        })
        .collect()
}

/// The file behind a loop device, from the loop driver itself (LOOP_GET_STATUS64 on the open
/// descriptor): (st_dev, st_ino) of the backing file. None if `file` is not a bound loop device.
pub fn loop_backing(file: &File) -> Option<(u64, u64)> {
    // struct loop_info64 from <linux/loop.h>; only the first two fields are used.
    #[repr(C)]
    struct LoopInfo64 {
        device: u64,
        inode: u64,
        rdevice: u64,
        offset: u64,
        sizelimit: u64,
        number: u32,
        encrypt_type: u32,
        encrypt_key_size: u32,
        flags: u32,
        file_name: [u8; 64],
        crypt_name: [u8; 64],
        encrypt_key: [u8; 32],
        init: [u64; 2],
    }
    // An old-style number without direction or size bits.
    const LOOP_GET_STATUS64: Opcode = 0x4c05;
    // SAFETY: LOOP_GET_STATUS64 is a getter that writes one whole struct loop_info64.
    let li = unsafe { ioctl(file, Getter::<LOOP_GET_STATUS64, LoopInfo64>::new()) }.ok()?;
    Some((li.device, li.inode))
}

/// Every whole disk that holds a mounted filesystem or active swap, with what uses it
/// ("/ (the running system)", "/mnt/x", "swap"); devices are looked up under `sys`.
pub fn disks_in_use(sys: &Path) -> BTreeMap<u64, Vec<String>> {
    let mut used: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut note = |dev: u64, what: String| {
        let mut disks: Vec<u64> = Vec::new();
        for e in stack(sys, dev) {
            disks.extend([e.dev, e.disk]);
        }
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
            let mount_point = unescape_mountinfo(f[4]);
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
                && let Ok(m) = std::fs::metadata(unescape_mountinfo(src))
                && m.file_type().is_block_device()
            {
                note(m.rdev(), what);
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/swaps") {
        for line in text.lines().skip(1) {
            if let Some(p) = line.split_whitespace().next()
                && let Ok(m) = std::fs::metadata(unescape_mountinfo(p))
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

/// A partition of a whole disk, from sysfs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Partition {
    pub number: u32,
    /// In 512-byte units.
    pub start: u64,
    pub sectors: u64,
    pub dev: u64,
    /// `/dev/NAME`.
    pub node: PathBuf,
}

/// The partitions of the whole disk `disk_dev`, read under `sys`.
pub fn partitions(sys: &Path, disk_dev: u64) -> Vec<Partition> {
    let mut out = Vec::new();
    let Ok((_, dir)) = sys_dirs(sys, disk_dev) else {
        return out;
    };
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let p = e.path();
            let num = |f: &str| read_trim(&p.join(f)).and_then(|s| s.parse::<u64>().ok());
            let (Some(n), Some(start), Some(sectors), Some(dev)) = (
                num("partition").and_then(|n| u32::try_from(n).ok()),
                num("start"),
                num("size"),
                read_trim(&p.join("dev")).and_then(|s| parse_dev(&s)),
            ) else {
                continue;
            };
            out.push(Partition {
                number: n,
                start,
                sectors,
                dev,
                node: PathBuf::from("/dev").join(e.file_name()),
            });
        }
    }
    out.sort();
    out
}

/// Fake sysfs trees for tests: devices under `ROOT/devices/...`, linked from `ROOT/dev/block`.
#[cfg(test)]
pub(crate) mod fake {
    use std::path::Path;

    /// Adds the block device `devpath` (relative to the root, e.g.
    /// `devices/pci0000:00/usb1/1-1/host6/target6:0:0/6:0:0:0/block/sdb`) as `major:minor`
    /// with `attrs` (paths relative to its directory: `removable`, `size`, `device/model`...).
    /// Returns its dev_t.
    pub fn add(root: &Path, devpath: &str, major: u32, minor: u32, attrs: &[(&str, &str)]) -> u64 {
        let dir = root.join(devpath);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("dev"), format!("{major}:{minor}\n")).unwrap();
        for (name, value) in attrs {
            let p = dir.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, format!("{value}\n")).unwrap();
        }
        let links = root.join("dev/block");
        std::fs::create_dir_all(&links).unwrap();
        std::os::unix::fs::symlink(
            Path::new("../..").join(devpath),
            links.join(format!("{major}:{minor}")),
        )
        .unwrap();
        libc::makedev(major, minor)
    }

    pub const USB_DISK: &str =
        "devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb";
    pub const EMMC: &str =
        "devices/platform/soc/11230000.mmc/mmc_host/mmc0/mmc0:0001/block/mmcblk0";
    pub const SD: &str = "devices/platform/soc/11240000.mmc/mmc_host/mmc1/mmc1:aaaa/block/mmcblk1";
    pub const STICK: &str =
        "devices/pci0000:00/0000:00:14.0/usb2/2-2/2-2:1.0/host7/target7:0:0/7:0:0:0/block/sdc";

    /// A USB hard disk (2 TB): on the USB bus, but fixed media.
    pub fn usb_disk(root: &Path) -> u64 {
        add(
            root,
            USB_DISK,
            8,
            16,
            &[
                ("removable", "0"),
                ("size", "3907029168"),
                ("device/vendor", "Seagate"),
                ("device/model", "Expansion Desk"),
                ("device/type", "0"),
            ],
        )
    }

    /// Built-in eMMC (16 GB): an mmcblk name, removable 0, type MMC.
    pub fn emmc(root: &Path) -> u64 {
        add(
            root,
            EMMC,
            179,
            0,
            &[
                ("removable", "0"),
                ("size", "30535680"),
                ("device/type", "MMC"),
                ("device/name", "DG4016"),
            ],
        )
    }

    /// A 32 GB SD card whose host says removable 0 (many do).
    pub fn sd_card(root: &Path) -> u64 {
        add(
            root,
            SD,
            179,
            256,
            &[
                ("removable", "0"),
                ("size", "62333952"),
                ("device/type", "SD"),
                ("device/name", "SD32G"),
            ],
        )
    }

    /// A 16 GB USB stick.
    pub fn usb_stick(root: &Path) -> u64 {
        add(
            root,
            STICK,
            8,
            32,
            &[
                ("removable", "1"),
                ("size", "30031872"),
                ("device/vendor", "SanDisk"),
                ("device/model", "Cruzer Blade"),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{SD, USB_DISK};
    use super::*;

    #[test]
    fn ioctl_numbers_follow_the_host() {
        // The values <linux/fs.h> gives on 64-bit and on 32-bit hosts.
        let getsize64 = if cfg!(target_pointer_width = "64") {
            0x8008_1272
        } else {
            0x8004_1272
        };
        assert_eq!(BLKGETSIZE64 as u64, getsize64);
        assert_eq!(BLKRRPART as u64, 0x125f);
    }

    #[test]
    fn a_regular_file_is_no_block_device() {
        let f = tempfile::tempfile().unwrap();
        assert_eq!(size(&f).unwrap_err().raw_os_error(), Some(libc::ENOTTY));
        assert!(logical_sector_size(&f).is_err());
    }

    #[test]
    fn removable_comes_from_sysfs_not_from_the_bus_or_the_name() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path();
        // A USB hard disk: on the USB bus, but fixed media.
        let usb = fake::usb_disk(sys);
        let i = info(sys, usb).unwrap();
        assert_eq!(i.media, Media::Fixed);
        assert!(!i.removable());
        assert_eq!(i.model.as_deref(), Some("Seagate Expansion Desk"));
        assert_eq!(i.size, Some(3907029168 * 512));
        // Built-in eMMC: an mmcblk name, removable 0, type MMC.
        let emmc = fake::emmc(sys);
        let i = info(sys, emmc).unwrap();
        assert_eq!(i.media, Media::Emmc);
        assert!(!i.removable());
        assert_eq!(i.model.as_deref(), Some("DG4016"));
        // An SD card whose host says removable 0 (many do).
        let sd = fake::sd_card(sys);
        let i = info(sys, sd).unwrap();
        assert_eq!(i.media, Media::SdCard);
        assert!(i.removable());
        // A USB stick.
        let stick = fake::usb_stick(sys);
        let i = info(sys, stick).unwrap();
        assert_eq!(i.media, Media::Removable);
        assert!(!i.is_partition);
    }

    #[test]
    fn partitions_map_to_their_disk() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path();
        let sd = fake::sd_card(sys);
        let p1 = fake::add(
            sys,
            &format!("{SD}/mmcblk1p1"),
            179,
            257,
            &[("partition", "1"), ("start", "8192"), ("size", "524288")],
        );
        let p2 = fake::add(
            sys,
            &format!("{SD}/mmcblk1p2"),
            179,
            258,
            &[
                ("partition", "2"),
                ("start", "532480"),
                ("size", "61801472"),
            ],
        );
        let i = info(sys, p2).unwrap();
        assert!(i.is_partition);
        assert_eq!(
            (i.name.as_str(), i.disk_name.as_str(), i.disk_dev),
            ("mmcblk1p2", "mmcblk1", sd)
        );
        // The card's media type is the disk's.
        assert_eq!(i.media, Media::SdCard);
        assert_eq!(i.size, Some(61801472 * 512));
        let parts = partitions(sys, sd);
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (
                parts[0].number,
                parts[0].start,
                parts[0].sectors,
                parts[0].dev
            ),
            (1, 8192, 524288, p1)
        );
        assert_eq!(parts[1].node, Path::new("/dev/mmcblk1p2"));
        // A filesystem on p2 lies on p2 and on the card; writing p1 does not touch it, writing the
        // card or p2 does.
        let fs = stack(sys, p2);
        assert_eq!(fs, vec![Extent { dev: p2, disk: sd }]);
        let on = |t: u64| {
            stack(sys, t)
                .iter()
                .any(|t| fs.iter().any(|s| t.overlaps(s)))
        };
        assert!(on(sd));
        assert!(on(p2));
        assert!(!on(p1));
    }

    #[test]
    fn device_mapper_stacks_reach_the_disk() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path();
        let disk = fake::add(
            sys,
            USB_DISK,
            8,
            16,
            &[("removable", "0"), ("size", "1000")],
        );
        let part = fake::add(
            sys,
            &format!("{USB_DISK}/sdb2"),
            8,
            18,
            &[("partition", "2"), ("start", "2048"), ("size", "900")],
        );
        // dm-0 (a LUKS mapping) over sdb2.
        let dm = fake::add(
            sys,
            "devices/virtual/block/dm-0",
            253,
            0,
            &[("size", "800")],
        );
        std::fs::create_dir_all(sys.join("devices/virtual/block/dm-0/slaves")).unwrap();
        std::os::unix::fs::symlink(
            sys.join(USB_DISK).join("sdb2"),
            sys.join("devices/virtual/block/dm-0/slaves/sdb2"),
        )
        .unwrap();
        let s = stack(sys, dm);
        assert_eq!(
            s,
            vec![Extent { dev: dm, disk: dm }, Extent { dev: part, disk }]
        );
        let used = {
            let mut v: Vec<u64> = s.iter().flat_map(|e| [e.dev, e.disk]).collect();
            v.sort();
            v
        };
        assert!(used.contains(&disk));
    }

    #[test]
    fn the_root_filesystem_is_in_use() {
        let used = disks_in_use(Path::new(SYSFS));
        let root = std::fs::metadata("/").unwrap().dev();
        if libc::major(root) != 0 {
            assert!(used.values().flatten().any(|w| w.starts_with("/ ")));
        }
    }
}
