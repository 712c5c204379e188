//! Growing an image to fill a larger card: the last partition is extended to the (1 MiB aligned)
//! end of the target — MBR entry, or GPT entry with the backup header and entry array moved to the
//! new end and both CRCs recomputed — then its ext2/3/4 filesystem is checked and grown in place
//! with e2fsprogs (`e2fsck -fp`, `resize2fs`). Never shrinks anything.
//!
//! The table read from the target is untrusted input: every header field, the entry array and
//! every entry are checked against the target's size (checked arithmetic) and the filesystem's
//! size against its partition before anything changes, `--size` included. All table I/O goes
//! through the target's own descriptor (see [`Target`]).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::image::gpt::{ENTRY_SIZE, Gpt, GptHeader, array_sectors};
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
    #[error("{path} no longer names the target that was checked (replaced while growing)")]
    Changed { path: String },
    #[error("interrupted by {0}")]
    Interrupted(&'static str),
}

impl GrowError {
    /// Errors in the command or its input (a bad table is bad input): exit status 2.
    pub fn is_usage(&self) -> bool {
        match self {
            GrowError::Target(t) => t.is_usage(),
            GrowError::Shrink { .. } | GrowError::Table { .. } => true,
            _ => false,
        }
    }

    /// 128 + N after signal N, 2 for usage, else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            GrowError::Interrupted(_) => interrupt::exit_status(),
            e if e.is_usage() => 2,
            _ => 1,
        }
    }
}

/// What growing had changed when it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrowState {
    /// `--size` extended the file to this length.
    pub extended_to: Option<u64>,
    /// e2fsck ran (it may have repaired the filesystem).
    pub checked: bool,
    /// resize2fs grew the filesystem.
    pub fs_grown: bool,
    /// The new partition table was written: (partition, its new end in bytes).
    pub table: Option<(u32, u64)>,
}

/// A failed grow: why, and what the target holds now.
#[derive(Debug)]
pub struct GrowFailure {
    pub error: GrowError,
    pub path: String,
    pub state: GrowState,
}

impl std::fmt::Display for GrowFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)?;
        let p = &self.path;
        let s = &self.state;
        match (s.table, s.fs_grown) {
            (None, false) => {
                match s.extended_to {
                    Some(n) => write!(
                        f,
                        "\n{p} was extended to {} ({n} bytes); its partition table and filesystem keep their old size",
                        Human(n)
                    )?,
                    None => write!(
                        f,
                        "\nthe partition table and filesystem of {p} keep their old size{}",
                        if s.checked {
                            ""
                        } else {
                            "; nothing was changed"
                        }
                    )?,
                }
                if s.checked {
                    write!(f, " (e2fsck checked the filesystem)")?;
                }
            }
            (Some((n, end)), false) => write!(
                f,
                "\nthe partition table of {p} was grown (partition {n} now ends at byte {end}); its filesystem keeps its old size: run `boardsmith grow {p}` again to grow it"
            )?,
            (None, true) => write!(
                f,
                "\nthe filesystem was grown but the partition table of {p} was not rewritten: run `boardsmith grow {p}` again to finish"
            )?,
            (Some((n, end)), true) => write!(
                f,
                "\npartition {n} of {p} and its filesystem were grown (the partition ends at byte {end})"
            )?,
        }
        Ok(())
    }
}

/// The message includes the error's, so it is not repeated as a source.
impl std::error::Error for GrowFailure {}

impl GrowFailure {
    pub fn exit_code(&self) -> i32 {
        self.error.exit_code()
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
                    Human(fs.new_blocks.saturating_mul(fs.block_size))
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

/// Reads of the target, never past `len` (its size before any `--size` extension).
struct Disk<'a> {
    file: &'a File,
    path: &'a str,
    len: u64,
}

impl Disk<'_> {
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, GrowError> {
        if offset
            .checked_add(len as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(table_err(
                self.path,
                format!(
                    "{len} bytes at byte {offset} lie beyond the end of the target ({} bytes)",
                    self.len
                ),
            ));
        }
        let mut b = vec![0u8; len];
        self.file
            .read_exact_at(&mut b, offset)
            .map_err(|e| GrowError::Io {
                what: format!("read {len} bytes at byte {offset} of"),
                path: self.path.to_string(),
                source: e,
            })?;
        Ok(b)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), GrowError> {
        self.file
            .write_all_at(data, offset)
            .map_err(|e| GrowError::Io {
                what: format!("write {} bytes at byte {offset} of", data.len()),
                path: self.path.to_string(),
                source: e,
            })
    }
}

fn table_err(path: &str, message: impl Into<String>) -> GrowError {
    GrowError::Table {
        path: path.to_string(),
        message: message.into(),
    }
}

/// What growing does to the partition table: the last partition before and after (sectors), and
/// the sectors to write (byte offset, bytes), all inside the new size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlan {
    pub table: &'static str,
    pub number: u32,
    pub start: u64,
    pub old_end: u64,
    pub new_end: u64,
    pub writes: Vec<(u64, Vec<u8>)>,
}

/// Reads and checks the partition table of a disk of `sectors` sectors (`read(offset, len)`
/// reads it) and plans growing its last partition to a disk of `new_sectors`. Nothing is
/// written; a table that is inconsistent in any field is an error naming the field and its byte
/// offset.
pub fn plan_table(
    read: &mut dyn FnMut(u64, usize) -> Result<Vec<u8>, GrowError>,
    sectors: u64,
    new_sectors: u64,
    path: &str,
) -> Result<TablePlan, GrowError> {
    if new_sectors < sectors {
        return Err(table_err(
            path,
            format!("the new size ({new_sectors} sectors) is below the current one ({sectors})"),
        ));
    }
    if sectors < 1 {
        return Err(table_err(path, "the target is smaller than one sector"));
    }
    let mut sector0 = [0u8; 512];
    sector0.copy_from_slice(&read(0, 512)?);
    let mbr = Mbr::parse(&sector0).map_err(|e| table_err(path, e.to_string()))?;
    if mbr.is_protective() {
        plan_gpt(read, path, &sector0, sectors, new_sectors)
    } else {
        plan_mbr(path, &sector0, mbr, sectors, new_sectors)
    }
}

fn plan_mbr(
    path: &str,
    sector0: &[u8; 512],
    mbr: Mbr,
    sectors: u64,
    new_sectors: u64,
) -> Result<TablePlan, GrowError> {
    let mut used: Vec<(usize, u64, u64)> = Vec::new();
    for (i, e) in mbr.entries.iter().enumerate() {
        let Some(e) = e else { continue };
        let at = 446 + 16 * i;
        if e.start_lba == 0 {
            return Err(table_err(
                path,
                format!(
                    "MBR partition {} (entry at byte {at}): starts at sector 0, over the partition table",
                    i + 1
                ),
            ));
        }
        if e.end_lba() > sectors {
            return Err(table_err(
                path,
                format!(
                    "MBR partition {} (entry at byte {at}): sectors {}..{} end beyond the target ({sectors} sectors); the image is truncated or its table is corrupt",
                    i + 1,
                    e.start_lba,
                    e.end_lba()
                ),
            ));
        }
        used.push((i + 1, u64::from(e.start_lba), e.end_lba()));
    }
    used.sort_by_key(|u| u.1);
    for w in used.windows(2) {
        if w[0].2 > w[1].1 {
            return Err(table_err(
                path,
                format!(
                    "MBR partitions {} (sectors {}..{}) and {} (sectors {}..{}) overlap",
                    w[0].0, w[0].1, w[0].2, w[1].0, w[1].1, w[1].2
                ),
            ));
        }
    }
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
    let limit = start.saturating_add(u64::from(u32::MAX));
    let new_end = align_down(new_sectors, ALIGN_SECTORS).min(limit);
    let mut plan = TablePlan {
        table: "mbr",
        number: idx as u32 + 1,
        start,
        old_end,
        new_end: old_end,
        writes: Vec::new(),
    };
    if new_end > old_end {
        let mut m = mbr;
        if let Some(e) = m.entries[idx].as_mut() {
            e.sectors = u32::try_from(new_end - start).unwrap_or(u32::MAX);
        }
        let mut s0 = *sector0;
        m.encode_into(&mut s0);
        plan.writes.push((0, s0.to_vec()));
        plan.new_end = new_end;
    }
    Ok(plan)
}

/// Byte offsets of the primary GPT header's fields, for messages.
const GPT_MY_LBA: u64 = SECTOR + 24;
const GPT_ALTERNATE_LBA: u64 = SECTOR + 32;
const GPT_FIRST_USABLE: u64 = SECTOR + 40;
const GPT_LAST_USABLE: u64 = SECTOR + 48;
const GPT_ENTRIES_LBA: u64 = SECTOR + 72;

fn plan_gpt(
    read: &mut dyn FnMut(u64, usize) -> Result<Vec<u8>, GrowError>,
    path: &str,
    sector0: &[u8; 512],
    sectors: u64,
    new_sectors: u64,
) -> Result<TablePlan, GrowError> {
    let field = |name: &str, at: u64, value: u64, why: String| {
        table_err(
            path,
            format!("primary GPT header: {name} (byte {at}) is {value}: {why}"),
        )
    };
    if sectors < 3 {
        return Err(table_err(
            path,
            format!("the target ({sectors} sectors) is too small for the GPT its MBR announces"),
        ));
    }
    let header = GptHeader::parse(&read(SECTOR, SECTOR as usize)?, SECTOR)
        .map_err(|e| table_err(path, format!("primary GPT: {e}")))?;
    if header.my_lba != 1 {
        return Err(field(
            "its own LBA",
            GPT_MY_LBA,
            header.my_lba,
            "the primary header is at LBA 1".into(),
        ));
    }
    let array = array_sectors(header.num_entries);
    if header.alternate_lba >= sectors || header.alternate_lba < 2 {
        return Err(field(
            "the backup header's LBA",
            GPT_ALTERNATE_LBA,
            header.alternate_lba,
            format!(
                "the backup header must lie after the primary table and inside the target ({sectors} sectors); the image is truncated or the table belongs to another disk"
            ),
        ));
    }
    if header.entries_lba < 2
        || header
            .entries_lba
            .checked_add(array)
            .is_none_or(|end| end > header.first_usable_lba)
    {
        return Err(field(
            "the entry array's LBA",
            GPT_ENTRIES_LBA,
            header.entries_lba,
            format!(
                "the array ({} entries, {array} sectors) must lie after the header and end by the first usable LBA ({})",
                header.num_entries, header.first_usable_lba
            ),
        ));
    }
    if header
        .last_usable_lba
        .checked_add(array)
        .is_none_or(|end| end >= header.alternate_lba)
    {
        return Err(field(
            "the last usable LBA",
            GPT_LAST_USABLE,
            header.last_usable_lba,
            format!(
                "the backup array ({array} sectors) and header (LBA {}) must follow it inside the target",
                header.alternate_lba
            ),
        ));
    }
    if header.first_usable_lba > header.last_usable_lba {
        return Err(field(
            "the first usable LBA",
            GPT_FIRST_USABLE,
            header.first_usable_lba,
            format!("after the last usable LBA ({})", header.last_usable_lba),
        ));
    }
    // Inside the target now: entries_lba + array <= first_usable <= last_usable < alternate < sectors.
    let array_offset = header.entries_lba * SECTOR;
    let bytes = read(array_offset, (array * SECTOR) as usize)?;
    let mut gpt = Gpt::from_parts(&header, sectors, &bytes, array_offset)
        .map_err(|e| table_err(path, format!("primary GPT: {e}")))?;
    let mut used: Vec<(usize, u64, u64)> = Vec::new();
    for (i, e) in gpt.entries.iter().enumerate() {
        let Some(e) = e else { continue };
        if e.first_lba < header.first_usable_lba || e.last_lba > header.last_usable_lba {
            return Err(table_err(
                path,
                format!(
                    "GPT entry {} (byte {}): LBAs {}..={} lie outside the usable area {}..={}",
                    i + 1,
                    array_offset + i as u64 * ENTRY_SIZE,
                    e.first_lba,
                    e.last_lba,
                    header.first_usable_lba,
                    header.last_usable_lba
                ),
            ));
        }
        used.push((i + 1, e.first_lba, e.last_lba));
    }
    used.sort_by_key(|u| u.1);
    for w in used.windows(2) {
        if w[0].2 >= w[1].1 {
            return Err(table_err(
                path,
                format!(
                    "GPT entries {} (LBAs {}..={}) and {} (LBAs {}..={}) overlap",
                    w[0].0, w[0].1, w[0].2, w[1].0, w[1].1, w[1].2
                ),
            ));
        }
    }
    let (idx, last) = gpt
        .entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.as_ref().map(|e| (i, e.clone())))
        .max_by_key(|(_, e)| e.last_lba)
        .ok_or_else(|| table_err(path, "the GPT has no partitions"))?;
    // new_sectors >= sectors > alternate > last_usable + array, so this does not underflow.
    let last_usable = new_sectors
        .checked_sub(2 + array)
        .filter(|&l| l >= header.last_usable_lba)
        .ok_or_else(|| table_err(path, "the new size leaves no room for the backup GPT"))?;
    let old_end = last.last_lba + 1;
    let new_end = align_down(last_usable + 1, ALIGN_SECTORS);
    let mut plan = TablePlan {
        table: "gpt",
        number: idx as u32 + 1,
        start: last.first_lba,
        old_end,
        new_end: old_end,
        writes: Vec::new(),
    };
    if new_end > old_end
        && let Some(Some(e)) = gpt.entries.get_mut(idx)
    {
        e.last_lba = new_end - 1;
        plan.new_end = new_end;
    }
    if plan.new_end == old_end && header.alternate_lba == new_sectors - 1 {
        return Ok(plan);
    }
    gpt.last_usable_lba = last_usable;
    gpt.disk_sectors = new_sectors;
    // The old backup header lies beyond the old end, now free space: clear it so nothing finds a
    // stale table there.
    let old_backup = header.alternate_lba;
    if old_backup < gpt.backup_entries_lba() && old_backup >= old_end {
        plan.writes
            .push((old_backup * SECTOR, vec![0u8; SECTOR as usize]));
    }
    for (offset, bytes) in gpt.encode() {
        if offset == 0 {
            // The protective MBR: keep the boot code.
            let mut s0 = *sector0;
            Mbr::protective(new_sectors).encode_into(&mut s0);
            plan.writes.push((0, s0.to_vec()));
        } else {
            plan.writes.push((offset, bytes));
        }
    }
    Ok(plan)
}

/// The ext2/3/4 filesystem at the start of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ExtFs {
    kind: &'static str,
    block: u64,
    blocks: u64,
}

/// What the ext2/3/4 superblock of the partition at byte `offset` (`part_bytes` long) says, or
/// None if it holds no ext filesystem. A filesystem larger than its partition is an error.
fn ext_superblock(
    disk: &Disk<'_>,
    offset: u64,
    part_bytes: u64,
    number: u32,
) -> Result<Option<ExtFs>, GrowError> {
    if part_bytes < 2048 {
        return Ok(None);
    }
    let at = offset
        .checked_add(1024)
        .ok_or_else(|| table_err(disk.path, "partition offset overflows"))?;
    let sb = disk.read(at, 1024)?;
    if sb[56..58] != [0x53, 0xef] {
        return Ok(None);
    }
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    let log = u32_at(24);
    if log > 6 {
        return Ok(None);
    }
    let block = 1024u64 << log;
    let compat = u32_at(0x5c);
    let incompat = u32_at(0x60);
    let mut blocks = u64::from(u32_at(4));
    if incompat & 0x80 != 0 {
        blocks |= u64::from(u32_at(0x150)) << 32;
    }
    if blocks.checked_mul(block).is_none_or(|n| n > part_bytes) {
        return Err(table_err(
            disk.path,
            format!(
                "the ext filesystem of partition {number} (superblock at byte {at}) counts {blocks} blocks of {block} bytes, more than its partition holds ({part_bytes} bytes); check the image with e2fsck"
            ),
        ));
    }
    let kind = if incompat & 0x40 != 0 {
        "ext4"
    } else if compat & 0x4 != 0 {
        "ext3"
    } else {
        "ext2"
    };
    Ok(Some(ExtFs {
        kind,
        block,
        blocks,
    }))
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

/// The partition's device node after the kernel re-read the table, if it appears: found in sysfs
/// under the disk, with the expected start and size, and a node that is that partition.
fn partition_node(
    target: &Target,
    disk_dev: u64,
    start: u64,
    size_sectors: u64,
) -> Option<PathBuf> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for p in blockdev::partitions(target.sysfs(), disk_dev) {
            if p.start == start
                && p.sectors == size_sectors
                && std::fs::metadata(&p.node)
                    .is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == p.dev)
            {
                return Some(p.node);
            }
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Grows the last partition of `target` and its filesystem, through the target's own
/// descriptors. A file target is first extended to `size` if given, after the table was checked.
pub fn grow(
    target: &mut Target,
    size: Option<u64>,
    obs: Observer<'_>,
) -> Result<GrowReport, Box<GrowFailure>> {
    let path = target.path.display().to_string();
    let mut state = GrowState::default();
    grow_inner(target, size, obs, &path, &mut state)
        .map_err(|error| Box::new(GrowFailure { error, path, state }))
}

fn grow_inner(
    target: &mut Target,
    size: Option<u64>,
    obs: Observer<'_>,
    path: &str,
    state: &mut GrowState,
) -> Result<GrowReport, GrowError> {
    let io_err = |what: &str| {
        let path = path.to_string();
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
    check_interrupt()?;
    let file = target.rw().map_err(io_err("open"))?;
    let current = match target.capacity {
        Some(c) => {
            if size.is_some() {
                return Err(TargetError::SizeOnDevice {
                    path: path.into(),
                    size: c,
                }
                .into());
            }
            c
        }
        None => file.metadata().map_err(io_err("stat"))?.len(),
    };
    let new_len = match size {
        Some(s) if s < current => {
            return Err(GrowError::Shrink {
                path: path.into(),
                size: s,
                current,
            });
        }
        Some(s) => s,
        None => current,
    };
    let disk = Disk {
        file,
        path,
        len: current,
    };
    // Everything is read and checked before anything changes.
    let plan = plan_table(
        &mut |o, n| disk.read(o, n),
        current / SECTOR,
        new_len / SECTOR,
        path,
    )?;
    let part_offset = plan.start * SECTOR;
    let old_bytes = (plan.old_end - plan.start) * SECTOR;
    let part_bytes = (plan.new_end - plan.start) * SECTOR;
    let fs = ext_superblock(&disk, part_offset, old_bytes, plan.number)?;
    check_interrupt()?;
    if new_len > current {
        file.set_len(new_len).map_err(io_err("extend"))?;
        state.extended_to = Some(new_len);
    }
    let mut report = GrowReport {
        table: plan.table,
        partition: plan.number,
        start: part_offset,
        old_end: plan.old_end * SECTOR,
        new_end: plan.new_end * SECTOR,
        filesystem: None,
        warnings: Vec::new(),
    };
    let table_done = (plan.number, plan.new_end * SECTOR);
    let write_table = |disk: &Disk<'_>, state: &mut GrowState| -> Result<(), GrowError> {
        for (offset, bytes) in &plan.writes {
            disk.write(*offset, bytes)?;
        }
        disk.file.sync_all().map_err(io_err("sync"))?;
        if !plan.writes.is_empty() {
            state.table = Some(table_done);
        }
        Ok(())
    };
    let Some(ext) = fs else {
        write_table(&disk, state)?;
        if target.is_device() {
            reread(disk.file, path, &mut report.warnings);
        }
        report.warnings.push(format!(
            "partition {} holds no ext2/3/4 filesystem; only the partition was grown, grow its filesystem with its own tools",
            plan.number
        ));
        return Ok(report);
    };
    let new_blocks = part_bytes / ext.block;
    let mut fsr = FsGrow {
        kind: ext.kind,
        block_size: ext.block,
        old_blocks: ext.blocks,
        new_blocks: ext.blocks,
    };
    let grow_fs = new_blocks > ext.blocks;
    let device_disk = match &target.kind {
        TargetKind::Device(info) => Some(info.disk_dev),
        TargetKind::File => None,
    };
    match device_disk {
        Some(disk_dev) => {
            // The kernel must know the new partition before its filesystem can grow through it.
            write_table(&disk, state)?;
            let partscan = reread(disk.file, path, &mut report.warnings);
            // e2fsck and resize2fs open the disk or the partition exclusively.
            target.release_exclusive();
            if grow_fs {
                check_interrupt()?;
                let node = if partscan {
                    partition_node(target, disk_dev, plan.start, plan.new_end - plan.start)
                } else {
                    None
                };
                match node {
                    Some(n) => {
                        let n = n.display().to_string();
                        run_tool("e2fsck", &["-f", "-p", &n], &[0, 1])?;
                        state.checked = true;
                        check_interrupt()?;
                        run_tool("resize2fs", &[&n], &[0])?;
                        state.fs_grown = true;
                    }
                    None => {
                        // A block device is not truncated by resize2fs: the offset form is safe.
                        let at = format!("{path}?offset={part_offset}");
                        same_target(target)?;
                        run_tool("e2fsck", &["-f", "-p", &at], &[0, 1])?;
                        state.checked = true;
                        check_interrupt()?;
                        same_target(target)?;
                        let size = format!("{}K", part_bytes / 1024);
                        run_tool("resize2fs", &[&at, &size], &[0])?;
                        state.fs_grown = true;
                    }
                }
            }
        }
        None => {
            // Filesystem first, table last: a failure before the table leaves the old layout.
            if grow_fs {
                resize_in_file(
                    target,
                    &disk,
                    part_offset,
                    ext.blocks * ext.block,
                    new_blocks * ext.block,
                    state,
                )?;
            }
            write_table(&disk, state)?;
        }
    }
    if grow_fs {
        let reader = Disk {
            file: target.reader(),
            path,
            len: plan.new_end * SECTOR,
        };
        if let Some(e) = ext_superblock(&reader, part_offset, part_bytes, plan.number)? {
            fsr.new_blocks = e.blocks;
        }
    }
    report.filesystem = Some(fsr);
    Ok(report)
}

/// The path still names the checked target (external tools open it by name).
fn same_target(target: &Target) -> Result<(), GrowError> {
    if target.still_at(&target.path) {
        Ok(())
    } else {
        Err(GrowError::Changed {
            path: target.path.display().to_string(),
        })
    }
}

fn check_interrupt() -> Result<(), GrowError> {
    if interrupt::interrupted() {
        Err(GrowError::Interrupted(interrupt::signal_name()))
    } else {
        Ok(())
    }
}

/// Re-reads the partition table of a device; false if the kernel does not scan its partitions.
fn reread(file: &File, path: &str, warnings: &mut Vec<String>) -> bool {
    match blockdev::reread_partitions(file) {
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
    target: &Target,
    disk: &Disk<'_>,
    offset: u64,
    old_bytes: u64,
    new_bytes: u64,
    state: &mut GrowState,
) -> Result<(), GrowError> {
    let path = disk.path;
    let at = format!("{path}?offset={offset}");
    same_target(target)?;
    run_tool("e2fsck", &["-f", "-p", &at], &[0, 1])?;
    state.checked = true;
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
    if offset
        .checked_add(old_bytes)
        .is_some_and(|old_end| new_bytes >= old_end)
    {
        set_len(new_bytes)?;
        same_target(target)?;
        let size = format!("{}K", new_bytes / 1024);
        let r = run_tool("resize2fs", &[&at, &size], &[0]);
        set_len(len)?;
        r?;
        state.fs_grown = true;
        return Ok(());
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
    same_target(target)?;
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
    r?;
    state.fs_grown = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::gpt::{GptEntry, Guid, LINUX_FS};
    use proptest::prelude::*;

    const MIB_SECTORS: u64 = 2048;

    /// A disk of `sectors` with a GPT (two partitions, the last ending at `last_end`).
    fn gpt_disk(sectors: u64, last_end: u64) -> Vec<u8> {
        let gpt = Gpt {
            disk_guid: Guid::from_seed([3; 16]),
            disk_sectors: sectors,
            entries_lba: 2,
            num_entries: 128,
            first_usable_lba: 34,
            last_usable_lba: sectors - 34,
            entries: vec![
                Some(GptEntry {
                    type_guid: LINUX_FS,
                    unique_guid: Guid::from_seed([1; 16]),
                    first_lba: 2048,
                    last_lba: 4095,
                    attributes: 0,
                    name: "boot".into(),
                }),
                Some(GptEntry {
                    type_guid: LINUX_FS,
                    unique_guid: Guid::from_seed([2; 16]),
                    first_lba: 4096,
                    last_lba: last_end - 1,
                    attributes: 0,
                    name: "root".into(),
                }),
            ],
        };
        let mut disk = vec![0u8; (sectors * SECTOR) as usize];
        for (o, b) in gpt.encode() {
            disk[o as usize..o as usize + b.len()].copy_from_slice(&b);
        }
        disk
    }

    /// Recomputes the entry array's and the primary header's CRC32 after a field was changed.
    fn fix_crcs(disk: &mut [u8]) {
        let h = &disk[512..1024];
        let lba = u64::from_le_bytes(h[72..80].try_into().unwrap());
        let n = u64::from(u32::from_le_bytes(h[80..84].try_into().unwrap()));
        let start = lba.saturating_mul(512) as usize;
        let end = start.saturating_add((n * 128) as usize);
        if end <= disk.len() {
            let crc = crc32fast::hash(&disk[start..end]);
            disk[512 + 88..512 + 92].copy_from_slice(&crc.to_le_bytes());
        }
        disk[512 + 16..512 + 20].fill(0);
        let crc = crc32fast::hash(&disk[512..512 + 92]);
        disk[512 + 16..512 + 20].copy_from_slice(&crc.to_le_bytes());
    }

    fn plan(disk: &[u8], new_sectors: u64) -> Result<TablePlan, GrowError> {
        let len = disk.len() as u64;
        plan_table(
            &mut |o, n| {
                let end = o
                    .checked_add(n as u64)
                    .filter(|&e| e <= len)
                    .ok_or_else(|| table_err("t", format!("read past the end at {o}")))?;
                Ok(disk[o as usize..end as usize].to_vec())
            },
            len / SECTOR,
            new_sectors,
            "t",
        )
    }

    fn message(r: Result<TablePlan, GrowError>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(p) => panic!("planned {p:?}"),
        }
    }

    #[test]
    fn a_gpt_grows_to_the_aligned_end() {
        let disk = gpt_disk(16 * MIB_SECTORS, 8 * MIB_SECTORS);
        let p = plan(&disk, 64 * MIB_SECTORS).unwrap();
        assert_eq!((p.table, p.number, p.start), ("gpt", 2, 4096));
        assert_eq!(p.old_end, 8 * MIB_SECTORS);
        // The last usable LBA is 64 MiB - 34 sectors; the end is aligned down to 1 MiB.
        assert_eq!(p.new_end, 63 * MIB_SECTORS);
        for (o, b) in &p.writes {
            assert!(o + b.len() as u64 <= 64 * MIB_SECTORS * SECTOR);
        }
        // Planning on the result changes nothing more.
        let mut grown = disk.clone();
        grown.resize((64 * MIB_SECTORS * SECTOR) as usize, 0);
        for (o, b) in &p.writes {
            grown[*o as usize..*o as usize + b.len()].copy_from_slice(b);
        }
        let again = plan(&grown, 64 * MIB_SECTORS).unwrap();
        assert_eq!((again.old_end, again.new_end), (p.new_end, p.new_end));
        assert!(again.writes.is_empty());
    }

    #[test]
    fn gpt_fields_are_checked_with_their_offsets() {
        let sectors = 24 * MIB_SECTORS;
        let cases: [(usize, u64, &str); 6] = [
            // The finding: an entry ending far beyond the disk.
            (
                1024 + 128 + 40,
                u64::MAX - 7,
                "GPT entry 2 (byte 1152): LBAs 4096..=18446744073709551608 lie outside the usable area 34..=49118",
            ),
            (
                512 + 24,
                5,
                "primary GPT header: its own LBA (byte 536) is 5: the primary header is at LBA 1",
            ),
            (
                512 + 32,
                1 << 40,
                "primary GPT header: the backup header's LBA (byte 544) is 1099511627776: the backup header must lie after the primary table and inside the target (49152 sectors)",
            ),
            (
                512 + 72,
                u64::MAX / 256,
                "primary GPT header: the entry array's LBA (byte 584) is 72057594037927935: the array (128 entries, 32 sectors) must lie after the header and end by the first usable LBA (34)",
            ),
            (
                512 + 48,
                sectors - 2,
                "primary GPT header: the last usable LBA (byte 560) is 49150: the backup array (32 sectors) and header (LBA 49151) must follow it inside the target",
            ),
            (
                1024 + 128 + 32,
                3000,
                "GPT entries 1 (LBAs 2048..=4095) and 2 (LBAs 3000..=16383) overlap",
            ),
        ];
        for (at, value, want) in cases {
            let mut disk = gpt_disk(sectors, 8 * MIB_SECTORS);
            disk[at..at + 8].copy_from_slice(&value.to_le_bytes());
            fix_crcs(&mut disk);
            let m = message(plan(&disk, 64 * MIB_SECTORS));
            assert!(m.contains(want), "byte {at} = {value}:\n{m}\nwanted {want}");
        }
    }

    #[test]
    fn a_gpt_for_a_larger_disk_is_refused() {
        // The image was cut short: the backup header it names is beyond the end.
        let disk = gpt_disk(32 * MIB_SECTORS, 8 * MIB_SECTORS);
        let short = &disk[..(16 * MIB_SECTORS * SECTOR) as usize];
        let m = message(plan(short, 64 * MIB_SECTORS));
        assert!(m.contains("backup header's LBA (byte 544) is 65535"), "{m}");
    }

    #[test]
    fn mbr_entries_are_checked() {
        let mut s0 = [0u8; 512];
        let mbr = |entries: [Option<(u32, u32)>; 4]| Mbr {
            disk_signature: 1,
            entries: entries.map(|e| {
                e.map(|(start_lba, sectors)| crate::image::mbr::MbrEntry {
                    bootable: false,
                    type_byte: 0x83,
                    start_lba,
                    sectors,
                })
            }),
        };
        let disk_of = |m: Mbr, s0: &mut [u8; 512]| {
            m.encode_into(s0);
            let mut d = vec![0u8; (8 * MIB_SECTORS * SECTOR) as usize];
            d[..512].copy_from_slice(s0);
            d
        };
        let ok = disk_of(
            mbr([Some((2048, 2048)), Some((4096, 4096)), None, None]),
            &mut s0,
        );
        let p = plan(&ok, 32 * MIB_SECTORS).unwrap();
        assert_eq!(
            (p.number, p.old_end, p.new_end),
            (2, 8192, 32 * MIB_SECTORS)
        );
        let beyond = disk_of(
            mbr([
                Some((2048, 2048)),
                Some((4096, u32::MAX - 4096)),
                None,
                None,
            ]),
            &mut s0,
        );
        assert_eq!(
            message(plan(&beyond, 32 * MIB_SECTORS)),
            "t: MBR partition 2 (entry at byte 462): sectors 4096..4294967295 end beyond the target (16384 sectors); the image is truncated or its table is corrupt"
        );
        let overlap = disk_of(
            mbr([Some((2048, 4096)), Some((4096, 4096)), None, None]),
            &mut s0,
        );
        assert_eq!(
            message(plan(&overlap, 32 * MIB_SECTORS)),
            "t: MBR partitions 1 (sectors 2048..6144) and 2 (sectors 4096..8192) overlap"
        );
        let at_zero = disk_of(mbr([Some((0, 4096)), None, None, None]), &mut s0);
        assert!(message(plan(&at_zero, 32 * MIB_SECTORS)).contains("starts at sector 0"));
    }

    proptest! {
        /// Any header field or entry word, set to any value (CRCs fixed so that the checks behind
        /// them run): an error, or a plan that stays inside the new disk and grows or keeps the
        /// last partition.
        #[test]
        fn crafted_gpts_never_escape(
            at in prop_oneof![512usize + 24..512 + 92, 1024usize..1024 + 3 * 128],
            value in prop_oneof![any::<u64>(), 0u64..70_000],
            new_mib in 16u64..80,
        ) {
            let mut disk = gpt_disk(16 * MIB_SECTORS, 8 * MIB_SECTORS);
            let at = at & !7;
            disk[at..at + 8].copy_from_slice(&value.to_le_bytes());
            fix_crcs(&mut disk);
            let new_sectors = new_mib * MIB_SECTORS;
            if let Ok(p) = plan(&disk, new_sectors) {
                prop_assert!(p.start < p.old_end);
                prop_assert!(p.old_end <= p.new_end);
                prop_assert!(p.new_end <= new_sectors);
                for (o, b) in &p.writes {
                    prop_assert!(o.checked_add(b.len() as u64).is_some_and(|e| e <= new_sectors * SECTOR));
                }
            }
        }
    }
}
