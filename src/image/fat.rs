//! A FAT16/FAT32 filesystem written in one pass, straight into the partition's bytes of the image.
//!
//! Why native: the released `fatfs` writes subdirectories that `fsck.fat -n` rejects, and mkfs.fat + mcopy
//! stamp wall-clock times. A write-once tree needs no allocator: every directory and file gets contiguous
//! clusters in sorted order, so the result is deterministic and fsck-clean by construction (and checked by
//! `fsck.fat -n` in the tests).

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::PathBuf;

use super::sink::ImageSink;
use crate::rootfs::tree::FileData;

const SECTOR: u64 = 512;
const DIR_ENTRY: usize = 32;
const ATTR_DIR: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_VOLUME: u8 = 0x08;
const ATTR_LFN: u8 = 0x0f;
const MEDIA: u8 = 0xf8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum FatKind {
    Fat16,
    Fat32,
}

#[derive(Debug, Clone)]
pub struct FatFile {
    /// Slash-separated path inside the filesystem, e.g. `extlinux/extlinux.conf`.
    pub path: String,
    pub data: FileData,
}

#[derive(Debug, Clone)]
pub struct FatOptions {
    pub size: u64,
    /// None: FAT16 below 512 MiB when the cluster count allows it, FAT32 otherwise.
    pub kind: Option<FatKind>,
    pub label: String,
    pub volume_id: u32,
    /// Seconds since the epoch for every timestamp.
    pub timestamp: u64,
    /// Sectors before the partition on the disk (the BPB's hidden-sectors field).
    pub hidden_sectors: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error(
        "a {size}-byte partition is too small for FAT{bits} (it needs at least {min} clusters); enlarge the boot partition"
    )]
    TooSmall { size: u64, bits: u8, min: u32 },
    #[error(
        "the boot files need {need} bytes but the FAT filesystem holds {have}; enlarge the boot partition by at least {short} bytes"
    )]
    Full { need: u64, have: u64, short: u64 },
    #[error(
        "FAT16's root directory holds at most 512 entries; {count} are needed (use fewer files at the top level, or FAT32)"
    )]
    RootFull { count: usize },
    #[error(
        "`{a}` and `{b}` differ only in case or in characters FAT cannot store; FAT cannot hold both"
    )]
    NameClash { a: String, b: String },
    #[error("invalid path `{path}` for the FAT filesystem: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("`{path}` is both a file and a directory")]
    FileDirClash { path: String },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} changed size while it was copied ({expected} bytes expected)")]
    Changed { path: PathBuf, expected: u64 },
    #[error("writing the FAT filesystem: {0}")]
    Write(#[source] std::io::Error),
}

/// Geometry of the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Geometry {
    pub kind: FatKind,
    pub total_sectors: u64,
    pub sectors_per_cluster: u64,
    pub reserved_sectors: u64,
    pub fat_sectors: u64,
    pub root_dir_sectors: u64,
    pub clusters: u64,
}

impl Geometry {
    pub fn cluster_bytes(&self) -> u64 {
        self.sectors_per_cluster * SECTOR
    }
    fn data_start(&self) -> u64 {
        (self.reserved_sectors + 2 * self.fat_sectors + self.root_dir_sectors) * SECTOR
    }
    fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_start() + u64::from(cluster - 2) * self.cluster_bytes()
    }
    #[cfg(test)]
    fn entry_bytes(&self) -> u64 {
        match self.kind {
            FatKind::Fat16 => 2,
            FatKind::Fat32 => 4,
        }
    }

    /// Computes a valid geometry with the given cluster size, or None when the cluster count does not fit.
    fn with_cluster(kind: FatKind, total_sectors: u64, spc: u64) -> Option<Geometry> {
        let (mut reserved, root_dir_sectors, bpe) = match kind {
            FatKind::Fat16 => (1u64, 32u64, 2u64),
            FatKind::Fat32 => (32u64, 0u64, 4u64),
        };
        let mut fat_sectors = 1u64;
        for _ in 0..64 {
            let meta = reserved + 2 * fat_sectors + root_dir_sectors;
            // Align the data area to the cluster size for aligned cluster I/O.
            let pad = (spc - meta % spc) % spc;
            let data_sectors = total_sectors.checked_sub(meta + pad)?;
            let clusters = data_sectors / spc;
            let need = ((clusters + 2) * bpe).div_ceil(SECTOR);
            if need > fat_sectors {
                fat_sectors = need;
                continue;
            }
            reserved += pad;
            let ok = match kind {
                FatKind::Fat16 => (4085..=65524).contains(&clusters),
                FatKind::Fat32 => (65525..=0x0fff_fff5).contains(&clusters),
            };
            return ok.then_some(Geometry {
                kind,
                total_sectors,
                sectors_per_cluster: spc,
                reserved_sectors: reserved,
                fat_sectors,
                root_dir_sectors,
                clusters,
            });
        }
        None
    }

    pub fn choose(size: u64, kind: Option<FatKind>) -> Result<Geometry, FatError> {
        let total_sectors = size / SECTOR;
        let fat16 = || {
            [1u64, 2, 4, 8, 16, 32, 64]
                .into_iter()
                .find_map(|spc| Geometry::with_cluster(FatKind::Fat16, total_sectors, spc))
        };
        let fat32 = || {
            // Microsoft's cluster-size table, falling back to smaller clusters to reach 65525.
            let preferred: u64 = match size {
                s if s <= 260 * 1024 * 1024 => 1,
                s if s <= 8 << 30 => 8,
                s if s <= 16 << 30 => 16,
                s if s <= 32 << 30 => 32,
                _ => 64,
            };
            [64u64, 32, 16, 8, 4, 2, 1]
                .into_iter()
                .filter(|&spc| spc <= preferred)
                .find_map(|spc| Geometry::with_cluster(FatKind::Fat32, total_sectors, spc))
        };
        let too_small = |bits, min| FatError::TooSmall { size, bits, min };
        match kind {
            Some(FatKind::Fat16) => fat16().ok_or(too_small(16, 4085)),
            Some(FatKind::Fat32) => fat32().ok_or(too_small(32, 65525)),
            None if size < 512 * 1024 * 1024 => fat16().or_else(fat32).ok_or(too_small(16, 4085)),
            None => fat32().or_else(fat16).ok_or(too_small(32, 65525)),
        }
    }
}

/// Result of writing a filesystem.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FatSummary {
    pub geometry: Geometry,
    pub files: usize,
    pub directories: usize,
    pub used_clusters: u64,
}

#[derive(Default)]
struct Dir {
    dirs: BTreeMap<String, Dir>,
    files: BTreeMap<String, usize>,
    first_cluster: u32,
    clusters: u32,
}

enum Child<'a> {
    Dir(&'a str, &'a Dir),
    File(&'a str, usize),
}

impl Dir {
    fn children(&self) -> Vec<Child<'_>> {
        let mut v: Vec<Child<'_>> = self
            .dirs
            .iter()
            .map(|(n, d)| Child::Dir(n, d))
            .chain(self.files.iter().map(|(n, &i)| Child::File(n, i)))
            .collect();
        v.sort_by(|a, b| child_name(a).cmp(child_name(b)));
        v
    }
    fn count(&self) -> (usize, usize) {
        self.dirs
            .values()
            .fold((self.dirs.len(), self.files.len()), |(d, f), c| {
                let (cd, cf) = c.count();
                (d + cd, f + cf)
            })
    }
}

fn child_name<'a>(c: &Child<'a>) -> &'a str {
    match c {
        Child::Dir(n, _) | Child::File(n, _) => n,
    }
}

fn build_tree(files: &[FatFile]) -> Result<Dir, FatError> {
    let mut root = Dir::default();
    for (i, f) in files.iter().enumerate() {
        let parts: Vec<&str> = f.path.split('/').filter(|p| !p.is_empty()).collect();
        let Some((name, dirs)) = parts.split_last() else {
            return Err(FatError::BadPath {
                path: f.path.clone(),
                reason: "empty path",
            });
        };
        let mut d = &mut root;
        for (depth, part) in dirs.iter().enumerate() {
            check_component(part, &f.path)?;
            if d.files.contains_key(*part) {
                return Err(FatError::FileDirClash {
                    path: dirs[..=depth].join("/"),
                });
            }
            d = d.dirs.entry((*part).to_string()).or_default();
        }
        check_component(name, &f.path)?;
        if d.dirs.contains_key(*name) {
            return Err(FatError::FileDirClash {
                path: f.path.clone(),
            });
        }
        if d.files.insert((*name).to_string(), i).is_some() {
            return Err(FatError::BadPath {
                path: f.path.clone(),
                reason: "listed twice",
            });
        }
    }
    Ok(root)
}

fn check_component(name: &str, path: &str) -> Result<(), FatError> {
    let bad = |reason| {
        Err(FatError::BadPath {
            path: path.to_string(),
            reason,
        })
    };
    if name == "." || name == ".." {
        return bad("`.` and `..` are not allowed");
    }
    if name.chars().count() > 255 {
        return bad("a name is longer than 255 characters");
    }
    if name.chars().any(|c| c < ' ' || "\"*:<>?\\|".contains(c)) {
        return bad("FAT names cannot contain control characters or any of \" * : < > ? \\ |");
    }
    if name.ends_with(' ') || name.ends_with('.') {
        return bad("FAT names cannot end with a space or a dot");
    }
    Ok(())
}

/// Short (8.3) name and whether a long-name entry is needed to keep the real name.
fn short_name(long: &str, used: &mut HashSet<[u8; 11]>) -> ([u8; 11], bool) {
    const SPECIAL: &str = "!#$%&'()-@^_`{}~";
    let valid = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || SPECIAL.contains(c);
    let (base, ext) = match long.rfind('.') {
        Some(i) if i > 0 => (&long[..i], &long[i + 1..]),
        _ => (long, ""),
    };
    let exact = !base.is_empty()
        && base.len() <= 8
        && ext.len() <= 3
        && base.chars().all(valid)
        && ext.chars().all(valid)
        && !(long.contains('.') && ext.is_empty());
    let pack = |b: &str, e: &str| {
        let mut n = [b' '; 11];
        n[..b.len()].copy_from_slice(b.as_bytes());
        n[8..8 + e.len()].copy_from_slice(e.as_bytes());
        n
    };
    if exact {
        let n = pack(base, ext);
        if used.insert(n) {
            return (n, false);
        }
    }
    let clean = |s: &str| -> String {
        s.chars()
            .filter(|&c| c != ' ' && c != '.')
            .map(|c| {
                let u = c.to_ascii_uppercase();
                if valid(u) { u } else { '_' }
            })
            .collect()
    };
    let mut b = clean(base.trim_start_matches('.'));
    if b.is_empty() {
        b.push('_');
    }
    let e: String = clean(ext).chars().take(3).collect();
    for n in 1u32.. {
        let tail = format!("~{n}");
        let keep = 8 - tail.len();
        let stem: String = b.chars().take(keep).collect();
        let name = pack(&format!("{stem}{tail}"), &e);
        if used.insert(name) {
            return (name, true);
        }
    }
    unreachable!("some numeric tail is always free")
}

fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &c| (sum >> 1 | (sum & 1) << 7).wrapping_add(c))
}

/// DOS date and time words for a Unix timestamp (UTC), clamped to the FAT range 1980..2107.
fn dos_datetime(ts: u64) -> (u16, u16) {
    let (y, m, d, hh, mm, ss) = crate::time::civil(ts);
    if y < 1980 {
        return (0x21, 0); // 1980-01-01 00:00:00
    }
    let y = (y - 1980).min(127) as u16;
    let date = (y << 9) | ((m as u16) << 5) | d as u16;
    let time = ((hh as u16) << 11) | ((mm as u16) << 5) | (ss / 2) as u16;
    (date, time)
}

struct Encoder {
    date: u16,
    time: u16,
}

impl Encoder {
    fn short_entry(&self, name: &[u8; 11], attr: u8, cluster: u32, size: u32) -> [u8; 32] {
        let mut e = [0u8; 32];
        e[0..11].copy_from_slice(name);
        e[11] = attr;
        e[14..16].copy_from_slice(&self.time.to_le_bytes());
        e[16..18].copy_from_slice(&self.date.to_le_bytes());
        e[18..20].copy_from_slice(&self.date.to_le_bytes());
        e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
        e[22..24].copy_from_slice(&self.time.to_le_bytes());
        e[24..26].copy_from_slice(&self.date.to_le_bytes());
        e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
        e[28..32].copy_from_slice(&size.to_le_bytes());
        e
    }

    fn lfn_entries(long: &str, short: &[u8; 11]) -> Vec<[u8; 32]> {
        let mut units: Vec<u16> = long.encode_utf16().collect();
        let n = units.len().div_ceil(13);
        if !units.len().is_multiple_of(13) {
            units.push(0);
            while !units.len().is_multiple_of(13) {
                units.push(0xffff);
            }
        }
        let sum = lfn_checksum(short);
        // Stored last part first.
        (0..n)
            .rev()
            .map(|i| {
                let mut e = [0u8; 32];
                e[0] = (i as u8 + 1) | if i + 1 == n { 0x40 } else { 0 };
                e[11] = ATTR_LFN;
                e[13] = sum;
                let chunk = &units[i * 13..i * 13 + 13];
                for (j, &u) in chunk.iter().enumerate() {
                    let off = match j {
                        0..=4 => 1 + 2 * j,
                        5..=10 => 14 + 2 * (j - 5),
                        _ => 28 + 2 * (j - 11),
                    };
                    e[off..off + 2].copy_from_slice(&u.to_le_bytes());
                }
                e
            })
            .collect()
    }
}

/// Everything needed to lay out and encode directories once the tree is known.
struct Volume<'a> {
    g: Geometry,
    files: &'a [FatFile],
    enc: Encoder,
    label: [u8; 11],
    /// First cluster of each file (0 for empty files, and before allocation).
    file_first: Vec<u32>,
    next_free: u32,
}

impl Volume<'_> {
    /// Name entries for every child of a directory, in order, with short names resolved.
    fn name_entries(&self, dir: &Dir) -> Result<Vec<[u8; 32]>, FatError> {
        let mut used = HashSet::new();
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        let mut out = Vec::new();
        for child in dir.children() {
            let name = child_name(&child);
            if let Some(prev) = seen.insert(name.to_lowercase(), name) {
                return Err(FatError::NameClash {
                    a: prev.to_string(),
                    b: name.to_string(),
                });
            }
            let (short, lfn) = short_name(name, &mut used);
            if lfn {
                out.extend(Encoder::lfn_entries(name, &short));
            }
            out.push(match child {
                Child::Dir(_, d) => self.enc.short_entry(&short, ATTR_DIR, d.first_cluster, 0),
                Child::File(_, i) => self.enc.short_entry(
                    &short,
                    ATTR_ARCHIVE,
                    self.file_first[i],
                    self.files[i].data.len() as u32,
                ),
            });
        }
        Ok(out)
    }

    /// Full directory contents: volume label (root) or `.` and `..`, then the names.
    fn dir_entries(&self, d: &Dir, parent: u32, is_root: bool) -> Result<Vec<[u8; 32]>, FatError> {
        let mut entries = Vec::new();
        if is_root {
            entries.push(self.enc.short_entry(&self.label, ATTR_VOLUME, 0, 0));
        } else {
            entries.push(
                self.enc
                    .short_entry(b".          ", ATTR_DIR, d.first_cluster, 0),
            );
            entries.push(self.enc.short_entry(b"..         ", ATTR_DIR, parent, 0));
        }
        entries.extend(self.name_entries(d)?);
        Ok(entries)
    }

    /// Allocates contiguous clusters: the directory itself (except FAT16's fixed root), its files, then
    /// its subdirectories depth-first.
    fn allocate(&mut self, d: &mut Dir, is_root: bool) -> Result<(), FatError> {
        let cb = self.g.cluster_bytes();
        if !is_root || self.g.kind == FatKind::Fat32 {
            let bytes = (self.dir_entries(d, 0, is_root)?.len() * DIR_ENTRY) as u64;
            let n = bytes.div_ceil(cb).max(1) as u32;
            d.first_cluster = self.next_free;
            d.clusters = n;
            self.next_free += n;
        }
        for &i in d.files.values() {
            let n = self.files[i].data.len().div_ceil(cb) as u32;
            if n > 0 {
                self.file_first[i] = self.next_free;
                self.next_free += n;
            }
        }
        for child in d.dirs.values_mut() {
            self.allocate(child, false)?;
        }
        Ok(())
    }

    fn fat_table(&self, root: &Dir) -> Vec<u8> {
        let g = &self.g;
        let mut fat = vec![0u8; (g.fat_sectors * SECTOR) as usize];
        let mut set = |cluster: u32, value: u32| match g.kind {
            FatKind::Fat16 => {
                let o = cluster as usize * 2;
                fat[o..o + 2].copy_from_slice(&(value as u16).to_le_bytes());
            }
            FatKind::Fat32 => {
                let o = cluster as usize * 4;
                fat[o..o + 4].copy_from_slice(&(value & 0x0fff_ffff).to_le_bytes());
            }
        };
        let (media, eoc) = match g.kind {
            FatKind::Fat16 => (0xff00 | u32::from(MEDIA), 0xffff),
            FatKind::Fat32 => (0x0fff_ff00 | u32::from(MEDIA), 0x0fff_ffff),
        };
        set(0, media);
        set(1, eoc);
        let mut chains: Vec<(u32, u32)> = Vec::new();
        let mut stack = vec![root];
        while let Some(d) = stack.pop() {
            if d.clusters > 0 {
                chains.push((d.first_cluster, d.clusters));
            }
            stack.extend(d.dirs.values());
        }
        for (i, f) in self.files.iter().enumerate() {
            let n = f.data.len().div_ceil(g.cluster_bytes()) as u32;
            if n > 0 {
                chains.push((self.file_first[i], n));
            }
        }
        for (first, n) in chains {
            for c in first..first + n {
                set(c, if c + 1 == first + n { eoc } else { c + 1 });
            }
        }
        fat
    }

    /// Encodes every directory: (byte offset in the filesystem, contents padded to its whole area).
    fn directories(&self, root: &Dir) -> Result<Vec<(u64, Vec<u8>)>, FatError> {
        let g = &self.g;
        let mut out = Vec::new();
        let mut stack: Vec<(&Dir, u32, bool)> = vec![(root, 0, true)];
        while let Some((d, parent, is_root)) = stack.pop() {
            let entries = self.dir_entries(d, parent, is_root)?;
            let (offset, capacity) = if is_root && g.kind == FatKind::Fat16 {
                if entries.len() > 512 {
                    return Err(FatError::RootFull {
                        count: entries.len(),
                    });
                }
                (
                    (g.reserved_sectors + 2 * g.fat_sectors) * SECTOR,
                    g.root_dir_sectors * SECTOR,
                )
            } else {
                (
                    g.cluster_offset(d.first_cluster),
                    u64::from(d.clusters) * g.cluster_bytes(),
                )
            };
            let mut buf = vec![0u8; capacity as usize];
            for (i, e) in entries.iter().enumerate() {
                buf[i * DIR_ENTRY..(i + 1) * DIR_ENTRY].copy_from_slice(e);
            }
            out.push((offset, buf));
            // `..` of a directory in the root is cluster 0, on FAT32 too.
            let me = if is_root { 0 } else { d.first_cluster };
            stack.extend(d.dirs.values().map(|c| (c, me, false)));
        }
        Ok(out)
    }
}

/// Writes a FAT filesystem with `files` at byte `base` of the sink.
pub fn write(
    sink: &mut ImageSink,
    base: u64,
    opts: &FatOptions,
    files: &[FatFile],
) -> Result<FatSummary, FatError> {
    let g = Geometry::choose(opts.size, opts.kind)?;
    for f in files {
        if f.data.len() > u64::from(u32::MAX) {
            return Err(FatError::BadPath {
                path: f.path.clone(),
                reason: "FAT files are limited to 4 GiB",
            });
        }
    }
    let mut root = build_tree(files)?;
    let (date, time) = dos_datetime(opts.timestamp);
    let mut vol = Volume {
        g,
        files,
        enc: Encoder { date, time },
        label: label_bytes(&opts.label),
        file_first: vec![0; files.len()],
        next_free: 2,
    };
    vol.allocate(&mut root, true)?;
    let used = u64::from(vol.next_free - 2);
    if used > g.clusters {
        let (have, need) = (g.clusters * g.cluster_bytes(), used * g.cluster_bytes());
        return Err(FatError::Full {
            need,
            have,
            short: need - have,
        });
    }
    let w = |sink: &mut ImageSink, off: u64, data: &[u8]| {
        sink.write_at(base + off, data).map_err(FatError::Write)
    };

    // Reserved area: boot sector (and FAT32's FSInfo and backups), written whole, then both FATs.
    let mut reserved = vec![0u8; (g.reserved_sectors * SECTOR) as usize];
    let bs = boot_sector(&g, opts);
    reserved[..512].copy_from_slice(&bs);
    if g.kind == FatKind::Fat32 {
        let fsinfo = fsinfo_sector((g.clusters - used) as u32, vol.next_free);
        reserved[512..1024].copy_from_slice(&fsinfo);
        reserved[6 * 512..7 * 512].copy_from_slice(&bs);
        reserved[7 * 512..8 * 512].copy_from_slice(&fsinfo);
    }
    w(sink, 0, &reserved)?;
    let fat = vol.fat_table(&root);
    for copy in 0..2 {
        w(
            sink,
            (g.reserved_sectors + copy * g.fat_sectors) * SECTOR,
            &fat,
        )?;
    }
    for (off, bytes) in vol.directories(&root)? {
        w(sink, off, &bytes)?;
    }
    let file_first = vol.file_first;

    // File contents.
    let mut buf = Vec::new();
    for (i, f) in files.iter().enumerate() {
        if f.data.is_empty() {
            continue;
        }
        let off = g.cluster_offset(file_first[i]);
        match &f.data {
            FileData::Bytes(b) => w(sink, off, b)?,
            FileData::Path(p, len) => {
                let mut file = std::fs::File::open(p).map_err(|source| FatError::Read {
                    path: p.clone(),
                    source,
                })?;
                let mut done = 0u64;
                buf.resize(1 << 20, 0);
                loop {
                    let n = file.read(&mut buf).map_err(|source| FatError::Read {
                        path: p.clone(),
                        source,
                    })?;
                    if n == 0 {
                        break;
                    }
                    if done + n as u64 > *len {
                        return Err(FatError::Changed {
                            path: p.clone(),
                            expected: *len,
                        });
                    }
                    w(sink, off + done, &buf[..n])?;
                    done += n as u64;
                }
                if done != *len {
                    return Err(FatError::Changed {
                        path: p.clone(),
                        expected: *len,
                    });
                }
            }
        }
    }
    let (directories, nfiles) = root.count();
    Ok(FatSummary {
        geometry: g,
        files: nfiles,
        directories,
        used_clusters: used,
    })
}

fn label_bytes(label: &str) -> [u8; 11] {
    let mut l = [b' '; 11];
    let up: Vec<u8> = label
        .chars()
        .map(|c| c.to_ascii_uppercase())
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .filter(|c| !"\"*+,./:;<=>?[\\]|".contains(*c))
        .map(|c| c as u8)
        .take(11)
        .collect();
    l[..up.len()].copy_from_slice(&up);
    if up.is_empty() {
        l.copy_from_slice(b"NO NAME    ");
    }
    l
}

fn boot_sector(g: &Geometry, opts: &FatOptions) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[0..3].copy_from_slice(match g.kind {
        FatKind::Fat16 => &[0xeb, 0x3c, 0x90],
        FatKind::Fat32 => &[0xeb, 0x58, 0x90],
    });
    b[3..11].copy_from_slice(b"BRDSMITH");
    b[11..13].copy_from_slice(&512u16.to_le_bytes());
    b[13] = g.sectors_per_cluster as u8;
    b[14..16].copy_from_slice(&(g.reserved_sectors as u16).to_le_bytes());
    b[16] = 2;
    let root_entries: u16 = if g.kind == FatKind::Fat16 { 512 } else { 0 };
    b[17..19].copy_from_slice(&root_entries.to_le_bytes());
    if g.total_sectors < 65536 && g.kind == FatKind::Fat16 {
        b[19..21].copy_from_slice(&(g.total_sectors as u16).to_le_bytes());
    } else {
        b[32..36].copy_from_slice(&(g.total_sectors as u32).to_le_bytes());
    }
    b[21] = MEDIA;
    b[24..26].copy_from_slice(&63u16.to_le_bytes());
    b[26..28].copy_from_slice(&255u16.to_le_bytes());
    b[28..32].copy_from_slice(&opts.hidden_sectors.to_le_bytes());
    let ext = match g.kind {
        FatKind::Fat16 => {
            b[22..24].copy_from_slice(&(g.fat_sectors as u16).to_le_bytes());
            36
        }
        FatKind::Fat32 => {
            b[36..40].copy_from_slice(&(g.fat_sectors as u32).to_le_bytes());
            // 40..42 flags (mirrored FATs), 42..44 version 0
            b[44..48].copy_from_slice(&2u32.to_le_bytes()); // root cluster
            b[48..50].copy_from_slice(&1u16.to_le_bytes()); // FSInfo sector
            b[50..52].copy_from_slice(&6u16.to_le_bytes()); // backup boot sector
            64
        }
    };
    b[ext] = 0x80; // drive number
    b[ext + 2] = 0x29; // extended boot signature
    b[ext + 3..ext + 7].copy_from_slice(&opts.volume_id.to_le_bytes());
    b[ext + 7..ext + 18].copy_from_slice(&label_bytes(&opts.label));
    b[ext + 18..ext + 26].copy_from_slice(match g.kind {
        FatKind::Fat16 => b"FAT16   ",
        FatKind::Fat32 => b"FAT32   ",
    });
    // Boot code: print nothing, just hang, as a data partition should if a BIOS ever jumps here.
    let code = ext + 26;
    b[code] = 0xf4; // hlt
    b[code + 1] = 0xeb; // jmp $-1 (back to hlt)
    b[code + 2] = 0xfd;
    b[510] = 0x55;
    b[511] = 0xaa;
    b
}

fn fsinfo_sector(free: u32, next_free: u32) -> [u8; 512] {
    let mut s = [0u8; 512];
    s[0..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
    s[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
    s[488..492].copy_from_slice(&free.to_le_bytes());
    s[492..496].copy_from_slice(&next_free.to_le_bytes());
    s[508..512].copy_from_slice(&0xaa55_0000u32.to_le_bytes());
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_partitions_get_fat16_large_fat32() {
        assert_eq!(
            Geometry::choose(128 << 20, None).unwrap().kind,
            FatKind::Fat16
        );
        assert_eq!(
            Geometry::choose(1 << 30, None).unwrap().kind,
            FatKind::Fat32
        );
        // A "FAT32" of 64 MiB must still have >= 65525 clusters: small clusters are chosen.
        let g = Geometry::choose(64 << 20, Some(FatKind::Fat32)).unwrap();
        assert!(g.clusters >= 65525, "{g:?}");
        assert!(Geometry::choose(1 << 20, None).is_err());
    }

    #[test]
    fn short_names() {
        let mut used = HashSet::new();
        assert_eq!(
            short_name("README.TXT", &mut used),
            (*b"README  TXT", false)
        );
        assert_eq!(short_name("zImage", &mut used), (*b"ZIMAGE~1   ", true));
        assert_eq!(
            short_name("with space.conf", &mut used),
            (*b"WITHSP~1CON", true)
        );
        assert_eq!(
            short_name("with spaces.conf", &mut used),
            (*b"WITHSP~2CON", true)
        );
        assert_eq!(short_name(".hidden", &mut used), (*b"HIDDEN~1   ", true));
    }

    #[test]
    fn dos_epoch() {
        // 2023-11-14 22:13:20 UTC
        let (d, t) = dos_datetime(1_700_000_000);
        assert_eq!(d, (43 << 9) | (11 << 5) | 14);
        assert_eq!(t, (22 << 11) | (13 << 5) | 10);
        assert_eq!(dos_datetime(0), (0x21, 0));
    }

    proptest! {
        #[test]
        fn geometry_is_valid_when_chosen(mib in 2u64..4096) {
            if let Ok(g) = Geometry::choose(mib << 20, None) {
                let meta = g.reserved_sectors + 2 * g.fat_sectors + g.root_dir_sectors;
                prop_assert!(meta + g.clusters * g.sectors_per_cluster <= g.total_sectors);
                prop_assert!(g.fat_sectors * 512 >= (g.clusters + 2) * g.entry_bytes());
                prop_assert_eq!(meta % g.sectors_per_cluster, 0);
            }
        }

        #[test]
        fn short_names_are_unique(names in proptest::collection::hash_set("[a-zA-Z0-9 ._~-]{1,20}", 1..40)) {
            let mut used = HashSet::new();
            let mut seen = HashSet::new();
            for n in &names {
                let (s, _) = short_name(n, &mut used);
                prop_assert!(seen.insert(s));
            }
        }
    }
}
