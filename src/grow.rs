//! Growing an image to fill a larger card: the last partition is extended to the (1 MiB aligned)
//! end of the target — MBR entry, or GPT entry with the backup header and entry array moved to the
//! new end and both CRCs recomputed — then its ext2/3/4 filesystem is checked and grown in place
//! with e2fsprogs (`e2fsck -fp`, `resize2fs`). Never shrinks anything.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::image::gpt::Gpt;
use crate::image::mbr::{Mbr, SECTOR};
use crate::size::{Human, align_down};
use crate::write::blockdev;
use crate::write::interrupt;
use crate::write::progress::{Event, Observer, Phase};
use crate::write::sink::{Target, TargetError, TargetKind};

/// Partitions end on this boundary (1 MiB in sectors).
const ALIGN_SECTORS: u64 = 2048;

#[derive(Debug, thiserror::Error)]
pub enum GrowError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{path}: {message}")]
    Table { path: String, message: String },
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: String,
        path: String,
        source: io::Error,
    },
    #[error("{tool} failed on {location} ({status}): {output}")]
    Tool {
        tool: &'static str,
        location: String,
        status: String,
        output: String,
    },
    #[error("--size {} is smaller than {path} ({}); a target is never shrunk", Human(*size), Human(*current))]
    Shrink {
        path: String,
        size: u64,
        current: u64,
    },
    #[error("interrupted by {0}")]
    Interrupted(&'static str),
}

impl GrowError {
    pub fn is_usage(&self) -> bool {
        match self {
            GrowError::Target(t) => t.is_usage(),
            GrowError::Shrink { .. } => true,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FsGrow {
    pub kind: &'static str,
    pub block_size: u64,
    pub old_blocks: u64,
    pub new_blocks: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GrowReport {
    pub table: &'static str,
    pub partition: u32,
    /// Byte offsets.
    pub start: u64,
    pub old_end: u64,
    pub new_end: u64,
    pub filesystem: Option<FsGrow>,
    pub warnings: Vec<String>,
}

impl std::fmt::Display for GrowReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.new_end > self.old_end {
            write!(
                f,
                "partition {} ({}) grown from {} to {}",
                self.partition,
                self.table,
                Human(self.old_end - self.start),
                Human(self.new_end - self.start)
            )?;
        } else {
            write!(
                f,
                "partition {} ({}) already reaches the end ({})",
                self.partition,
                self.table,
                Human(self.new_end - self.start)
            )?;
        }
        if let Some(fs) = &self.filesystem {
            if fs.new_blocks > fs.old_blocks {
                write!(
                    f,
                    "; {} grown from {} to {} blocks of {} ({})",
                    fs.kind,
                    fs.old_blocks,
                    fs.new_blocks,
                    fs.block_size,
                    Human(fs.new_blocks * fs.block_size)
                )?;
            } else {
                write!(f, "; {} already fills it", fs.kind)?;
            }
        }
        for w in &self.warnings {
            write!(f, "\nwarning: {w}")?;
        }
        Ok(())
    }
}

struct Disk {
    file: File,
    path: String,
}

impl Disk {
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, GrowError> {
        let mut b = vec![0u8; len];
        self.file
            .read_exact_at(&mut b, offset)
            .map_err(|e| GrowError::Io {
                what: format!("read {len} bytes at byte {offset} of"),
                path: self.path.clone(),
                source: e,
            })?;
        Ok(b)
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), GrowError> {
        self.file
            .write_all_at(data, offset)
            .map_err(|e| GrowError::Io {
                what: format!("write {} bytes at byte {offset} of", data.len()),
                path: self.path.clone(),
                source: e,
            })
    }
}

/// Where the last partition was and now ends (sectors).
struct Grown {
    table: &'static str,
    number: u32,
    start: u64,
    old_end: u64,
    new_end: u64,
}

fn table_err(path: &str, message: impl Into<String>) -> GrowError {
    GrowError::Table {
        path: path.to_string(),
        message: message.into(),
    }
}

/// Table sectors to write: (byte offset, bytes).
type Writes = Vec<(u64, Vec<u8>)>;

fn grow_mbr(
    path: &str,
    sector0: &[u8; 512],
    mbr: Mbr,
    sectors: u64,
) -> Result<(Grown, Writes), GrowError> {
    let (idx, last) = mbr
        .entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.map(|e| (i, e)))
        .max_by_key(|(_, e)| e.end_lba())
        .ok_or_else(|| table_err(path, "the MBR has no partitions"))?;
    if matches!(last.type_byte, 0x05 | 0x0f | 0x85) {
        return Err(table_err(
            path,
            format!(
                "the last partition ({}) is an extended partition; growing logical partitions is not supported",
                idx + 1
            ),
        ));
    }
    let start = u64::from(last.start_lba);
    let old_end = last.end_lba();
    // An MBR entry counts at most 2^32-1 sectors.
    let limit = start + u64::from(u32::MAX);
    let new_end = align_down(sectors, ALIGN_SECTORS).min(limit);
    let mut grown = Grown {
        table: "mbr",
        number: idx as u32 + 1,
        start,
        old_end,
        new_end: old_end,
    };
    let mut writes = Vec::new();
    if new_end > old_end {
        let mut m = mbr;
        if let Some(e) = m.entries[idx].as_mut() {
            e.sectors = (new_end - start) as u32;
        }
        let mut s0 = *sector0;
        m.encode_into(&mut s0);
        writes.push((0, s0.to_vec()));
        grown.new_end = new_end;
    }
    Ok((grown, writes))
}

fn grow_gpt(disk: &Disk, sector0: &[u8; 512], sectors: u64) -> Result<(Grown, Writes), GrowError> {
    let header = crate::image::gpt::GptHeader::parse(&disk.read(SECTOR, SECTOR as usize)?, SECTOR)
        .map_err(|e| table_err(&disk.path, format!("primary GPT: {e}")))?;
    let mut gpt = Gpt::read(sectors, |o, n| disk.read(o, n))?
        .map_err(|e| table_err(&disk.path, format!("primary GPT: {e}")))?;
    let array = gpt.array_sectors();
    let last_usable = sectors
        .checked_sub(2 + array)
        .filter(|&l| l >= gpt.first_usable_lba && l >= header.last_usable_lba)
        .ok_or_else(|| {
            table_err(
                &disk.path,
                format!(
                    "the target ({sectors} sectors) is smaller than the GPT says the disk is (last usable LBA {})",
                    header.last_usable_lba
                ),
            )
        })?;
    let (idx, last) = gpt
        .entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.as_ref().map(|e| (i, e.clone())))
        .max_by_key(|(_, e)| e.last_lba)
        .ok_or_else(|| table_err(&disk.path, "the GPT has no partitions"))?;
    let old_end = last.last_lba + 1;
    let new_end = align_down(last_usable + 1, ALIGN_SECTORS);
    let mut grown = Grown {
        table: "gpt",
        number: idx as u32 + 1,
        start: last.first_lba,
        old_end,
        new_end: old_end,
    };
    if new_end > old_end
        && let Some(Some(e)) = gpt.entries.get_mut(idx)
    {
        e.last_lba = new_end - 1;
        grown.new_end = new_end;
    }
    let mut writes = Vec::new();
    if grown.new_end == old_end && header.alternate_lba == sectors - 1 {
        return Ok((grown, writes));
    }
    gpt.last_usable_lba = last_usable;
    gpt.disk_sectors = sectors;
    // The old backup header lies beyond the old end, now free space: clear it so nothing finds a
    // stale table there.
    let old_backup = header.alternate_lba;
    if old_backup > 1 && old_backup < gpt.backup_entries_lba() && old_backup >= old_end {
        writes.push((old_backup * SECTOR, vec![0u8; SECTOR as usize]));
    }
    for (offset, bytes) in gpt.encode() {
        if offset == 0 {
            // The protective MBR: keep the boot code.
            let mut s0 = *sector0;
            Mbr::protective(sectors).encode_into(&mut s0);
            writes.push((0, s0.to_vec()));
        } else {
            writes.push((offset, bytes));
        }
    }
    Ok((grown, writes))
}

/// ext4 (extents), ext3 (journal) or ext2, from the superblock's feature flags.
fn fs_kind(disk: &Disk, offset: u64) -> Result<&'static str, GrowError> {
    let sb = disk.read(offset + 1024, 1024)?;
    let compat = u32::from_le_bytes([sb[0x5c], sb[0x5d], sb[0x5e], sb[0x5f]]);
    let incompat = u32::from_le_bytes([sb[0x60], sb[0x61], sb[0x62], sb[0x63]]);
    Ok(if incompat & 0x40 != 0 {
        "ext4"
    } else if compat & 0x4 != 0 {
        "ext3"
    } else {
        "ext2"
    })
}

/// What the ext2/3/4 superblock at `offset` says: (block size, blocks), or None if it is not ext.
fn ext_superblock(disk: &Disk, offset: u64) -> Result<Option<(u64, u64)>, GrowError> {
    let sb = disk.read(offset + 1024, 1024)?;
    if sb[56..58] != [0x53, 0xef] {
        return Ok(None);
    }
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    let log = u32_at(24);
    if log > 6 {
        return Ok(None);
    }
    let block = 1024u64 << log;
    let mut blocks = u64::from(u32_at(4));
    if u32_at(0x60) & 0x80 != 0 {
        blocks |= u64::from(u32_at(0x150)) << 32;
    }
    Ok(Some((block, blocks)))
}

fn find_tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
    {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from(name)
}

/// Runs a tool (e2fsck, resize2fs, losetup) in its own process group, so Ctrl-C on the terminal
/// cannot kill it half-way; `ok` are the exit statuses that mean success. Returns its stdout.
fn run_tool(tool: &'static str, args: &[&str], ok: &[i32]) -> Result<String, GrowError> {
    let location = args
        .iter()
        .rev()
        .find(|a| !a.ends_with('K'))
        .copied()
        .unwrap_or("");
    let out = Command::new(find_tool(tool))
        .args(args)
        .env("LC_ALL", "C")
        .process_group(0)
        .output()
        .map_err(|e| GrowError::Io {
            what: format!("run {tool} on"),
            path: location.to_string(),
            source: e,
        })?;
    match out.status.code() {
        Some(c) if ok.contains(&c) => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        code => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let lines: Vec<&str> = text.trim().lines().collect();
            Err(GrowError::Tool {
                tool,
                location: location.to_string(),
                status: code.map_or("killed by a signal".into(), |c| format!("exit status {c}")),
                output: lines[lines.len().saturating_sub(12)..].join("\n"),
            })
        }
    }
}

/// The partition's device node after the kernel re-read the table, if it appears.
fn partition_node(disk_name: &str, start: u64, size_sectors: u64) -> Option<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for (_, s, node) in blockdev::partitions(disk_name) {
            if s == start && node.exists() {
                let sys = Path::new("/sys/class/block")
                    .join(node.file_name().unwrap_or_default())
                    .join("size");
                let size = std::fs::read_to_string(sys)
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok());
                if size == Some(size_sectors) {
                    return Some(node);
                }
            }
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Grows the last partition of `target` and its filesystem. A file target is first extended to
/// `size` if given.
pub fn grow(
    target: &Target,
    size: Option<u64>,
    obs: Observer<'_>,
) -> Result<GrowReport, GrowError> {
    let path = target.path.display().to_string();
    let io_err = |what: &str| {
        let path = path.clone();
        let what = what.to_string();
        move |e: io::Error| GrowError::Io {
            what,
            path,
            source: e,
        }
    };
    obs(Event::Phase {
        phase: Phase::Grow,
        total: None,
    });
    let mut opts = OpenOptions::new();
    opts.read(true).write(true);
    if target.is_device() {
        opts.custom_flags(libc::O_EXCL);
    }
    let file = opts.open(&target.path).map_err(io_err("open"))?;
    let bytes = match target.capacity {
        Some(c) => {
            if let Some(s) = size {
                let _ = s;
                return Err(TargetError::SizeOnDevice { path, size: c }.into());
            }
            c
        }
        None => {
            let cur = file.metadata().map_err(io_err("stat"))?.len();
            match size {
                Some(s) if s < cur => {
                    return Err(GrowError::Shrink {
                        path,
                        size: s,
                        current: cur,
                    });
                }
                Some(s) => {
                    file.set_len(s).map_err(io_err("extend"))?;
                    s
                }
                None => cur,
            }
        }
    };
    let sectors = bytes / SECTOR;
    let disk = Disk {
        file,
        path: path.clone(),
    };
    let mut sector0 = [0u8; 512];
    sector0.copy_from_slice(&disk.read(0, 512)?);
    let mbr = Mbr::parse(&sector0).map_err(|e| table_err(&path, e.to_string()))?;
    let (grown, writes) = if mbr.is_protective() {
        grow_gpt(&disk, &sector0, sectors)?
    } else {
        grow_mbr(&path, &sector0, mbr, sectors)?
    };
    let part_offset = grown.start * SECTOR;
    let part_bytes = (grown.new_end - grown.start) * SECTOR;
    let fs = ext_superblock(&disk, part_offset)?;
    let mut report = GrowReport {
        table: grown.table,
        partition: grown.number,
        start: part_offset,
        old_end: grown.old_end * SECTOR,
        new_end: grown.new_end * SECTOR,
        filesystem: None,
        warnings: Vec::new(),
    };
    let write_table = |disk: &Disk| -> Result<(), GrowError> {
        for (offset, bytes) in &writes {
            disk.write(*offset, bytes)?;
        }
        disk.file.sync_all().map_err(io_err("sync"))
    };
    let Some((block, blocks)) = fs else {
        write_table(&disk)?;
        if let TargetKind::Device(_) = &target.kind {
            reread(&disk, &path, &mut report.warnings);
        }
        report.warnings.push(format!(
            "partition {} holds no ext2/3/4 filesystem; only the partition was grown, grow its filesystem with its own tools",
            grown.number
        ));
        return Ok(report);
    };
    let kind = fs_kind(&disk, part_offset)?;
    let new_blocks = part_bytes / block;
    let mut fsr = FsGrow {
        kind,
        block_size: block,
        old_blocks: blocks,
        new_blocks: blocks,
    };
    let grow_fs = new_blocks > blocks;
    match &target.kind {
        TargetKind::Device(info) => {
            // The kernel must know the new partition before its filesystem can grow through it.
            write_table(&disk)?;
            let partscan = reread(&disk, &path, &mut report.warnings);
            drop(disk);
            if grow_fs {
                check_interrupt()?;
                let node = if partscan {
                    partition_node(&info.disk_name, grown.start, grown.new_end - grown.start)
                } else {
                    None
                };
                match node {
                    Some(n) => {
                        let n = n.display().to_string();
                        run_tool("e2fsck", &["-f", "-p", &n], &[0, 1])?;
                        check_interrupt()?;
                        run_tool("resize2fs", &[&n], &[0])?;
                    }
                    None => {
                        // A block device is not truncated by resize2fs: the offset form is safe.
                        let at = format!("{path}?offset={part_offset}");
                        run_tool("e2fsck", &["-f", "-p", &at], &[0, 1])?;
                        check_interrupt()?;
                        let size = format!("{}K", part_bytes / 1024);
                        run_tool("resize2fs", &[&at, &size], &[0])?;
                    }
                }
            }
        }
        TargetKind::File => {
            // Filesystem first, table last: a failure leaves the old, consistent layout.
            if grow_fs {
                resize_in_file(
                    &disk,
                    &path,
                    part_offset,
                    blocks * block,
                    new_blocks * block,
                )?;
            }
            write_table(&disk)?;
            drop(disk);
        }
    }
    if grow_fs {
        let f = File::open(&target.path).map_err(io_err("open"))?;
        let disk = Disk { file: f, path };
        if let Some((_, b)) = ext_superblock(&disk, part_offset)? {
            fsr.new_blocks = b;
        }
    }
    report.filesystem = Some(fsr);
    Ok(report)
}

fn check_interrupt() -> Result<(), GrowError> {
    if interrupt::interrupted() {
        Err(GrowError::Interrupted(interrupt::signal_name()))
    } else {
        Ok(())
    }
}

/// Re-reads the partition table of a device; false if the kernel does not scan its partitions.
fn reread(disk: &Disk, path: &str, warnings: &mut Vec<String>) -> bool {
    match blockdev::reread_partitions(&disk.file) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => false,
        Err(e) => {
            warnings.push(format!(
                "the kernel did not re-read the partition table of {path} ({e}); replug the card"
            ));
            false
        }
    }
}

/// Checks and grows the ext filesystem at byte `offset` of an image file, from `old_bytes` to
/// `new_bytes`. resize2fs truncates a regular file to the new filesystem size, ignoring the
/// offset, which would cut the filesystem's tail: the file is given exactly that length while
/// resize2fs runs (so it neither extends nor truncates it), then its length is restored. When
/// the growth is smaller than the offset that length would cut the old filesystem, so a loop
/// device over the partition is used instead (root only).
fn resize_in_file(
    disk: &Disk,
    path: &str,
    offset: u64,
    old_bytes: u64,
    new_bytes: u64,
) -> Result<(), GrowError> {
    let at = format!("{path}?offset={offset}");
    run_tool("e2fsck", &["-f", "-p", &at], &[0, 1])?;
    check_interrupt()?;
    let len = disk
        .file
        .metadata()
        .map_err(|e| GrowError::Io {
            what: "stat".into(),
            path: path.into(),
            source: e,
        })?
        .len();
    let set_len = |n: u64| {
        disk.file.set_len(n).map_err(|e| GrowError::Io {
            what: format!("set the length ({n} bytes) of"),
            path: path.into(),
            source: e,
        })
    };
    if new_bytes >= offset + old_bytes {
        set_len(new_bytes)?;
        let size = format!("{}K", new_bytes / 1024);
        let r = run_tool("resize2fs", &[&at, &size], &[0]);
        set_len(len)?;
        return r.map(|_| ());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(GrowError::Table {
            path: path.into(),
            message: format!(
                "growing the filesystem by less than its partition offset ({}) inside a file needs a loop device; run as root, or grow by more",
                Human(offset)
            ),
        });
    }
    let dev = run_tool(
        "losetup",
        &[
            "--find",
            "--show",
            "--offset",
            &offset.to_string(),
            "--sizelimit",
            &new_bytes.to_string(),
            path,
        ],
        &[0],
    )?;
    let dev = dev.trim().to_string();
    let r = run_tool("resize2fs", &[&dev], &[0]);
    let _ = Command::new(find_tool("losetup"))
        .args(["-d", &dev])
        .status();
    r.map(|_| ())
}
