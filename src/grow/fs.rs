//! The last partition's filesystem: its ext2/3/4 superblock read and checked, and grown in place with
//! e2fsprogs (e2fsck -fp, resize2fs), on a card's partition node or inside an image file.

use super::*;

/// The ext2/3/4 filesystem at the start of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ExtFs {
    pub(super) kind: &'static str,
    pub(super) block: u64,
    pub(super) blocks: u64,
}

/// What the ext2/3/4 superblock of the partition at byte `offset` (`part_bytes` long) says, or
/// None if it holds no ext filesystem. A filesystem larger than its partition is an error.
pub(super) fn ext_superblock(
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

pub(super) fn find_tool(name: &str) -> PathBuf {
    crate::tools::system_tool(name).unwrap_or_else(|| PathBuf::from(name))
}

/// Runs a tool (e2fsck, resize2fs, losetup) in its own process group, so Ctrl-C on the terminal
/// cannot kill it half-way; `ok` are the exit statuses that mean success. Returns its stdout.
pub(super) fn run_tool(tool: &'static str, args: &[&str], ok: &[i32]) -> Result<String, GrowError> {
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
pub(super) fn partition_node(
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

/// Checks and grows the ext filesystem at byte `offset` of an image file, from `old_bytes` to
/// `new_bytes`. resize2fs truncates a regular file to the new filesystem size, ignoring the
/// offset, which would cut the filesystem's tail: the file is given exactly that length while
/// resize2fs runs (so it neither extends nor truncates it), then its length is restored. When
/// the growth is smaller than the offset that length would cut the old filesystem, so a loop
/// device over the partition is used instead (root only).
pub(super) fn resize_in_file(
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
    if !rustix::process::geteuid().is_root() {
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
