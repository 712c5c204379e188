//! The ext4 root filesystem, made by e2fsprogs' `mke2fs -d` writing straight into the partition's byte range
//! of the image (`-E offset=`): no loop device, no mount, no root, no temporary full-size copy.
//! e2fsprogs >= 1.47.1 is byte-reproducible given SOURCE_DATE_EPOCH, `-U` and `-E hash_seed=`, and reads
//! a tarball for `-d`, which carries owners, modes and device nodes without root privileges.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::disk::gpt::Guid;
use crate::rootfs::tree::ContentStats;
use crate::size::{Human, MIB};

#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error(
        "mke2fs was not found; install e2fsprogs >= 1.47.1 (Debian bookworm: apt-get install -t bookworm-backports e2fsprogs)"
    )]
    Missing,
    #[error(
        "mke2fs {found} is too old: boardsmith needs e2fsprogs >= 1.47.1 for reproducible images and tarball input (Debian bookworm: apt-get install -t bookworm-backports e2fsprogs)"
    )]
    TooOld { found: String },
    #[error("the root filesystem needs about {} but partition `{partition}` holds {}: it is short by about {}; give a larger --size, a larger partition, or table.size = \"auto\"", Human(*need), Human(*have), Human(need - have))]
    TooLarge {
        partition: String,
        need: u64,
        have: u64,
    },
    #[error("mke2fs failed ({status}) building partition `{partition}`:\n{stderr}")]
    Failed {
        partition: String,
        status: String,
        stderr: String,
    },
    #[error("running mke2fs: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("writing mke2fs configuration {path}: {source}")]
    Config {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A fixed mke2fs configuration, so the host's /etc/mke2fs.conf cannot change the result.
const MKE2FS_CONF: &str = "[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
\treserved_ratio = 1.0
[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
\tdefault = {
\t}
";

/// Checks that mke2fs is recent enough; returns its version.
pub fn check_mke2fs() -> Result<String, Ext4Error> {
    let out = Command::new("mke2fs").arg("-V").output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Ext4Error::Missing
        } else {
            Ext4Error::Spawn(e)
        }
    })?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .nth(1)
        .map(str::to_string)
        .unwrap_or_else(|| text.trim().to_string());
    let nums: Vec<u32> = version
        .split(['.', '-', '+', '~'])
        .map_while(|p| p.parse().ok())
        .collect();
    let ok = nums.as_slice() >= [1u32, 47, 1].as_slice();
    if ok {
        Ok(version)
    } else {
        Err(Ext4Error::TooOld { found: version })
    }
}

fn journal_bytes(fs_bytes: u64) -> u64 {
    // e2fsprogs' default journal size by filesystem size (4 KiB blocks).
    let blocks = fs_bytes / 4096;
    let jblocks = match blocks {
        b if b < 2048 => 0,
        b if b < 32768 => 1024,
        b if b < 256 * 1024 => 4096,
        b if b < 512 * 1024 => 8192,
        b if b < 4096 * 1024 => 16384,
        b if b < 8192 * 1024 => 32768,
        b if b < 16384 * 1024 => 65536,
        b if b < 32768 * 1024 => 131072,
        _ => 262144,
    };
    jblocks * 4096
}

/// Metadata mke2fs puts in a filesystem of `fs_bytes`: inode tables, journal, bitmaps and group
/// descriptors, reserved GDT blocks, and the 1% reserve from the configuration above.
fn overhead(fs_bytes: u64) -> u64 {
    let inode_tables = fs_bytes / 16384 * 256;
    let groups = fs_bytes.div_ceil(128 * MIB);
    inode_tables + journal_bytes(fs_bytes) + groups * 3 * 4096 + 4 * MIB + fs_bytes / 100
}

/// Smallest filesystem size (bytes) that should hold `stats`.
pub fn min_size(stats: &ContentStats) -> u64 {
    let data = stats.data_blocks_bytes + stats.inodes() / 16 * 4096;
    let mut size = data + overhead(data);
    for _ in 0..8 {
        let need = data + overhead(size);
        if need <= size {
            break;
        }
        size = need;
    }
    // Inodes: one per 16 KiB of filesystem; the tree needs one per entry.
    size.max(stats.inodes().saturating_mul(16384))
}

/// Size the auto-sized root partition gets: the minimum plus room to work (a fifth, at least 64 MiB).
pub fn auto_size(stats: &ContentStats) -> u64 {
    let min = min_size(stats);
    min + (min / 5).max(64 * MIB)
}

pub struct Mke2fs<'a> {
    pub image: &'a Path,
    pub offset: u64,
    pub size: u64,
    pub source: &'a Path,
    pub label: Option<&'a str>,
    pub uuid: Guid,
    pub hash_seed: Guid,
    pub epoch: u64,
    pub partition: &'a str,
    pub workdir: &'a Path,
    pub stats: ContentStats,
}

impl Mke2fs<'_> {
    pub fn run(&self) -> Result<(), Ext4Error> {
        let need = min_size(&self.stats);
        if need > self.size {
            return Err(Ext4Error::TooLarge {
                partition: self.partition.into(),
                need,
                have: self.size,
            });
        }
        let conf = self.workdir.join("mke2fs.conf");
        std::fs::write(&conf, MKE2FS_CONF).map_err(|source| Ext4Error::Config {
            path: conf.clone(),
            source,
        })?;
        let blocks = self.size / 4096;
        let mut cmd = Command::new("mke2fs");
        cmd.env("MKE2FS_CONFIG", &conf)
            .env("SOURCE_DATE_EPOCH", self.epoch.to_string())
            .env("E2FSPROGS_FAKE_TIME", self.epoch.to_string())
            .env("TZ", "UTC")
            .env("LC_ALL", "C")
            // `-T default`: without it mke2fs picks a usage type by size ("small", "floppy") and warns
            // that this configuration does not define it.
            .args(["-q", "-F", "-t", "ext4", "-T", "default", "-b", "4096"])
            .arg("-U")
            .arg(self.uuid.to_string().to_lowercase())
            .arg("-E")
            .arg(format!(
                "offset={},hash_seed={},lazy_itable_init=1,nodiscard,root_owner=0:0",
                self.offset,
                self.hash_seed.to_string().to_lowercase()
            ))
            .arg("-d")
            .arg(self.source);
        if let Some(l) = self.label {
            cmd.arg("-L").arg(l);
        }
        cmd.arg(self.image).arg(blocks.to_string());
        let out = cmd.output().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ext4Error::Missing
            } else {
                Ext4Error::Spawn(e)
            }
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if stderr.contains("Could not allocate block")
                || stderr.contains("No space left")
                || stderr.contains("No free space")
                || stderr.contains("Could not allocate inode")
            {
                return Err(Ext4Error::TooLarge {
                    partition: self.partition.into(),
                    need: need.max(self.size + self.size / 20),
                    have: self.size,
                });
            }
            return Err(Ext4Error::Failed {
                partition: self.partition.into(),
                status: out.status.to_string(),
                stderr,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_size_grows_with_content() {
        let small = ContentStats {
            data_blocks_bytes: 10 * MIB,
            files: 100,
            dirs: 10,
            ..Default::default()
        };
        let big = ContentStats {
            data_blocks_bytes: 1000 * MIB,
            files: 30000,
            dirs: 3000,
            ..Default::default()
        };
        assert!(min_size(&small) > 10 * MIB);
        assert!(
            min_size(&big) > 1000 * MIB && min_size(&big) < 1300 * MIB,
            "{}",
            min_size(&big)
        );
        assert!(auto_size(&big) > min_size(&big));
    }
}
