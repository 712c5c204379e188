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
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::device::blockdev;
use crate::device::progress::{Event, Observer, Phase};
use crate::device::target::{Target, TargetError, TargetKind};
use crate::disk::gpt::{ENTRY_SIZE, Gpt, GptHeader, array_sectors};
use crate::disk::mbr::{Mbr, MbrEntry, SECTOR};
use crate::signals;
use crate::size::{Human, align_down};

mod fs;
mod table;

use fs::*;
use table::*;
pub use table::{TablePlan, plan_table};

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
            GrowError::Interrupted(_) => signals::exit_status(),
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

/// The target's current length and the one it grows to (`size`, only for a file; never smaller).
fn lengths(
    target: &Target,
    file: &std::fs::File,
    size: Option<u64>,
    path: &str,
) -> Result<(u64, u64), GrowError> {
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
        None => file
            .metadata()
            .map_err(|source| GrowError::Io {
                what: "stat".into(),
                path: path.into(),
                source,
            })?
            .len(),
    };
    match size {
        Some(s) if s < current => Err(GrowError::Shrink {
            path: path.into(),
            size: s,
            current,
        }),
        Some(s) => Ok((current, s)),
        None => Ok((current, current)),
    }
}

/// e2fsck then resize2fs on a card whose table the kernel has re-read: through the partition's node
/// when there is one, else through the disk at the partition's offset (a block device is not
/// truncated by resize2fs, so the offset form is safe), checking before each that the path is still
/// the target.
fn resize_on_device(
    target: &Target,
    node: Option<std::path::PathBuf>,
    part_offset: u64,
    part_bytes: u64,
    state: &mut GrowState,
) -> Result<(), GrowError> {
    match node {
        Some(n) => {
            let n = n.display().to_string();
            run_tool("e2fsck", &["-f", "-p", &n], &[0, 1])?;
            state.checked = true;
            check_interrupt()?;
            run_tool("resize2fs", &[&n], &[0])?;
        }
        None => {
            let at = format!("{}?offset={part_offset}", target.path.display());
            same_target(target)?;
            run_tool("e2fsck", &["-f", "-p", &at], &[0, 1])?;
            state.checked = true;
            check_interrupt()?;
            same_target(target)?;
            let size = format!("{}K", part_bytes / 1024);
            run_tool("resize2fs", &[&at, &size], &[0])?;
        }
    }
    state.fs_grown = true;
    Ok(())
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
    let (current, new_len) = lengths(target, file, size, path)?;
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
                resize_on_device(target, node, part_offset, part_bytes, state)?;
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
    if signals::interrupted() {
        Err(GrowError::Interrupted(signals::pending_name()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::gpt::{GptEntry, Guid, LINUX_FS};
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

    /// A hybrid MBR (a 0xEE entry and a DOS entry for partition 1, as `sgdisk -h 1` makes) is
    /// refused before anything is planned; a protective MBR's disk signature and boot flag
    /// (parted's pmbr_boot) survive growing.
    #[test]
    fn a_hybrid_mbr_is_refused_and_a_protective_one_kept() {
        let sectors = 16 * MIB_SECTORS;
        let mut disk = gpt_disk(sectors, 8 * MIB_SECTORS);
        let mut s0 = [0u8; 512];
        s0.copy_from_slice(&disk[..512]);
        let mut mbr = Mbr::parse(&s0).unwrap();
        mbr.disk_signature = 0x1234_5678;
        if let Some(e) = mbr.entries[0].as_mut() {
            e.bootable = true;
        }
        mbr.encode_into(&mut s0);
        disk[..512].copy_from_slice(&s0);
        // Sector 0 as growing to 64 MiB writes it.
        let sector0_after = |disk: &[u8]| {
            let p = plan(disk, 64 * MIB_SECTORS).unwrap();
            let (_, grown) = p.writes.iter().find(|(o, _)| *o == 0).unwrap();
            let mut g0 = [0u8; 512];
            g0.copy_from_slice(grown);
            Mbr::parse(&g0).unwrap()
        };
        let mut want = Mbr::protective(64 * MIB_SECTORS);
        want.disk_signature = 0x1234_5678;
        if let Some(e) = want.entries[0].as_mut() {
            e.bootable = true;
        }
        assert_eq!(sector0_after(&disk), want);

        mbr.entries[0] = Some(MbrEntry {
            bootable: false,
            type_byte: 0xee,
            start_lba: 1,
            sectors: 2047,
        });
        // What `sgdisk -h 1` adds: partition 1 as a DOS entry.
        let dos = Some(MbrEntry {
            bootable: true,
            type_byte: 0x07,
            start_lba: 2048,
            sectors: 2048,
        });
        mbr.entries[1] = dos;
        mbr.encode_into(&mut s0);
        disk[..512].copy_from_slice(&s0);
        let m = message(plan(&disk, 64 * MIB_SECTORS));
        assert!(
            m.starts_with("t: sector 0 holds a hybrid MBR: besides the GPT's 0xEE entry, entry 2 (byte 462) of type 0x07 covers sectors 2048..4096; growing would replace it"),
            "{m}"
        );
        assert!(m.contains("gdisk"), "{m}");
        // Only the 0xEE entry, but over part of the disk: nothing to lose, rewritten protective.
        mbr.entries[1] = None;
        mbr.encode_into(&mut s0);
        disk[..512].copy_from_slice(&s0);
        let mut want = Mbr::protective(64 * MIB_SECTORS);
        want.disk_signature = 0x1234_5678;
        assert_eq!(sector0_after(&disk), want);
        // A hybrid disk already at its full size: nothing to do, so nothing refused.
        mbr.entries[1] = dos;
        mbr.encode_into(&mut s0);
        let mut full = gpt_disk(sectors, sectors - 33);
        full[..512].copy_from_slice(&s0);
        let p = plan(&full, sectors).unwrap();
        assert!(p.writes.is_empty(), "{:?}", p.writes.len());
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
                e.map(|(start_lba, sectors)| crate::disk::mbr::MbrEntry {
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
