//! The root filesystem as the image builder reads it: a directory or an uncompressed tarball. Paths are
//! relative to the root; symlinks are followed inside the tree (an absolute target means the tree's root),
//! never out of it.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::tartree::{self, Data, Kind, TarTreeError, normalize, wildcard};

/// Contents of one file read from the tree (or made for the image): bytes, or a host path read later.
#[derive(Debug, Clone)]
pub enum FileData {
    Bytes(Vec<u8>),
    /// A file on the host, read while writing; its size must not change meanwhile.
    Path(PathBuf, u64),
}

impl FileData {
    pub fn len(&self) -> u64 {
        match self {
            FileData::Bytes(b) => b.len() as u64,
            FileData::Path(_, n) => *n,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error(
        "root filesystem {path} does not exist; pass a directory or an uncompressed .tar with --rootfs"
    )]
    Missing { path: PathBuf },
    #[error("reading the root filesystem at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not an uncompressed tar archive ({reason}); pass a directory or a plain .tar (decompress it first)"
    )]
    NotTar { path: PathBuf, reason: String },
    #[error("symlink loop or chain too long at `{path}` in the root filesystem")]
    Loop { path: String },
    /// Data past the end of the archive, and the like: the tar reader's own words.
    #[error(transparent)]
    Tar(TarTreeError),
    #[error(
        "{path}: entry `{entry}` should hold {size} bytes from byte {offset}, but the archive ends after {got}; did it change during the build?"
    )]
    ShortRead {
        path: PathBuf,
        entry: String,
        offset: u64,
        size: u64,
        got: u64,
    },
}

#[derive(Debug, Clone)]
pub enum TarKind {
    File { offset: u64, size: u64 },
    Dir,
    Symlink(String),
    Hardlink(String),
    Other,
}

#[derive(Debug)]
pub enum RootTree {
    Dir(PathBuf),
    Tar {
        path: PathBuf,
        entries: BTreeMap<String, TarKind>,
    },
}

/// What the root filesystem holds, for sizing its partition.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ContentStats {
    /// Bytes of regular-file data rounded up to 4 KiB blocks (hard links counted once).
    pub data_blocks_bytes: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub other: u64,
}

impl ContentStats {
    pub fn inodes(&self) -> u64 {
        self.files + self.dirs + self.symlinks + self.other
    }
}

const BLOCK: u64 = 4096;

/// The components of `path`, normalized (one rule for the whole crate: [`tartree::normalize`]).
fn components(path: &str) -> Vec<String> {
    let n = normalize(path);
    n.split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

/// Paths matching `pattern`, whose components may contain `*`, highest version last (one walk for
/// every tree): `list(dir)` names a directory's entries (None when it does not exist), `exists(path)`
/// says whether a path does.
pub fn glob_with<E>(
    pattern: &str,
    mut list: impl FnMut(&str) -> Result<Option<Vec<String>>, E>,
    mut exists: impl FnMut(&str) -> Result<bool, E>,
) -> Result<Vec<String>, E> {
    let join = |base: &str, name: &str| {
        if base.is_empty() {
            name.to_string()
        } else {
            format!("{base}/{name}")
        }
    };
    let mut found = vec![String::new()];
    for comp in components(pattern) {
        let mut next = Vec::new();
        for base in &found {
            if comp.contains('*') {
                for name in list(base)?.unwrap_or_default() {
                    if wildcard(&comp, &name) {
                        next.push(join(base, &name));
                    }
                }
            } else {
                let p = join(base, &comp);
                if exists(&p)? {
                    next.push(p);
                }
            }
        }
        found = next;
    }
    found.retain(|p| !p.is_empty());
    found.sort_by(|a, b| version_cmp(a, b));
    found.dedup();
    Ok(found)
}

/// Orders `vmlinuz-6.1.0-9` before `vmlinuz-6.1.0-28`: digit runs compare as numbers.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let chunks = |s: &str| {
        let mut v: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let d = c.is_ascii_digit();
            match v.last_mut() {
                Some((ld, cur)) if *ld == d => cur.push(c),
                _ => v.push((d, c.to_string())),
            }
        }
        v
    };
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let ord = match (x.0, y.0) {
            (true, true) => {
                let (xs, ys) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                xs.len().cmp(&ys.len()).then_with(|| xs.cmp(ys))
            }
            _ => x.1.cmp(&y.1),
        };
        if ord != std::cmp::Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

/// Indexes an uncompressed tar archive of `len` bytes read from `reader` (`path` names it in errors).
/// Every entry's data must lie inside the archive: a header's size is checked against the archive's
/// real length before anything relies on it, so a crafted size never reaches an allocation.
pub fn index_tar<R: Read + Seek>(
    reader: R,
    len: u64,
    path: &Path,
) -> Result<BTreeMap<String, TarKind>, TreeError> {
    // One tar reader for the crate: the configuration steps' index, of which the image builder needs
    // only each entry's kind and where its data is.
    let nodes = tartree::index(reader, len, path).map_err(|e| match e {
        TarTreeError::Read { source, .. } => TreeError::NotTar {
            path: path.to_path_buf(),
            reason: source.to_string(),
        },
        TarTreeError::Format { reason, .. } => TreeError::NotTar {
            path: path.to_path_buf(),
            reason,
        },
        other => TreeError::Tar(other),
    })?;
    Ok(nodes
        .into_iter()
        .filter(|(key, _)| !key.is_empty())
        .map(|(key, node)| {
            let kind = match node.kind {
                Kind::File(Data::Input { offset, size }) => TarKind::File { offset, size },
                Kind::Dir => TarKind::Dir,
                Kind::Symlink(target) => TarKind::Symlink(target),
                Kind::Hardlink(target) => TarKind::Hardlink(target),
                Kind::File(Data::Bytes(_)) | Kind::Char(..) | Kind::Block(..) | Kind::Fifo => {
                    TarKind::Other
                }
            };
            (key, kind)
        })
        .collect())
}

impl RootTree {
    pub fn open(path: &Path) -> Result<RootTree, TreeError> {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => TreeError::Missing {
                path: path.to_path_buf(),
            },
            _ => TreeError::Io {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
        if meta.is_dir() {
            return Ok(RootTree::Dir(path.to_path_buf()));
        }
        let io = |source| TreeError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let entries = index_tar(file, len, path)?;
        if entries.is_empty() {
            return Err(TreeError::NotTar {
                path: path.to_path_buf(),
                reason: "no entries".into(),
            });
        }
        Ok(RootTree::Tar {
            path: path.to_path_buf(),
            entries,
        })
    }

    pub fn path(&self) -> &Path {
        match self {
            RootTree::Dir(p) | RootTree::Tar { path: p, .. } => p,
        }
    }

    /// Follows symlinks in every component; returns the canonical relative path, if it exists.
    pub fn resolve(&self, rel: &str) -> Result<Option<String>, TreeError> {
        let mut pending: Vec<String> = components(rel);
        pending.reverse();
        let mut done: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            let mut candidate = done.clone();
            candidate.push(part);
            let key = candidate.join("/");
            match self.link_target(&key)? {
                None => {
                    if !self.exists(&key)? {
                        return Ok(None);
                    }
                    done = candidate;
                }
                Some(target) => {
                    hops += 1;
                    if hops > 40 {
                        return Err(TreeError::Loop {
                            path: rel.to_string(),
                        });
                    }
                    if target.starts_with('/') {
                        done.clear();
                    }
                    let mut t = components(&target);
                    if !target.starts_with('/') {
                        let mut base = done.clone();
                        base.extend(t);
                        t = components(&base.join("/"));
                        done.clear();
                    }
                    for p in t.into_iter().rev() {
                        pending.push(p);
                    }
                }
            }
        }
        Ok(Some(done.join("/")))
    }

    fn link_target(&self, key: &str) -> Result<Option<String>, TreeError> {
        match self {
            RootTree::Dir(root) => {
                let p = root.join(key);
                match std::fs::symlink_metadata(&p) {
                    Ok(m) if m.file_type().is_symlink() => {
                        let t = std::fs::read_link(&p).map_err(|source| TreeError::Io {
                            path: p.clone(),
                            source,
                        })?;
                        Ok(Some(t.to_string_lossy().into_owned()))
                    }
                    _ => Ok(None),
                }
            }
            RootTree::Tar { entries, .. } => Ok(match entries.get(key) {
                Some(TarKind::Symlink(t)) => Some(t.clone()),
                Some(TarKind::Hardlink(t)) => Some(format!("/{t}")),
                _ => None,
            }),
        }
    }

    fn exists(&self, key: &str) -> Result<bool, TreeError> {
        Ok(match self {
            RootTree::Dir(root) => std::fs::symlink_metadata(root.join(key)).is_ok(),
            RootTree::Tar { entries, .. } => {
                key.is_empty() || entries.contains_key(key) || {
                    // Tarballs may omit directory entries that are implied by deeper paths.
                    let prefix = format!("{key}/");
                    entries
                        .range(prefix.clone()..)
                        .next()
                        .is_some_and(|(k, _)| k.starts_with(&prefix))
                }
            }
        })
    }

    fn list_dir(&self, dir: &str) -> Result<Vec<String>, TreeError> {
        match self {
            RootTree::Dir(root) => {
                let p = root.join(dir);
                let rd = match std::fs::read_dir(&p) {
                    Ok(rd) => rd,
                    Err(_) => return Ok(Vec::new()),
                };
                let mut names = Vec::new();
                for e in rd {
                    let e = e.map_err(|source| TreeError::Io {
                        path: p.clone(),
                        source,
                    })?;
                    names.push(e.file_name().to_string_lossy().into_owned());
                }
                Ok(names)
            }
            RootTree::Tar { entries, .. } => {
                let prefix = if dir.is_empty() {
                    String::new()
                } else {
                    format!("{dir}/")
                };
                let mut names: Vec<String> = entries
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .filter_map(|(k, _)| k[prefix.len()..].split('/').next().map(str::to_string))
                    .collect();
                names.dedup();
                Ok(names)
            }
        }
    }

    /// Paths matching a pattern whose components may contain `*`, highest version last.
    pub fn glob(&self, pattern: &str) -> Result<Vec<String>, TreeError> {
        glob_with(
            pattern,
            |base| match self.resolve(base)? {
                Some(dir) => self.list_dir(&dir).map(Some),
                None => Ok(None),
            },
            |path| Ok(self.resolve(path)?.is_some()),
        )
    }

    /// Whether a path (after following links) is a regular file.
    pub fn is_file(&self, rel: &str) -> Result<bool, TreeError> {
        let Some(r) = self.resolve(rel)? else {
            return Ok(false);
        };
        Ok(match self {
            RootTree::Dir(root) => std::fs::metadata(root.join(&r))
                .map(|m| m.is_file())
                .unwrap_or(false),
            RootTree::Tar { entries, .. } => matches!(entries.get(&r), Some(TarKind::File { .. })),
        })
    }

    /// The file's contents as FAT input: a host path for a directory tree, bytes for a tarball.
    pub fn file_data(&self, rel: &str) -> Result<Option<FileData>, TreeError> {
        let Some(r) = self.resolve(rel)? else {
            return Ok(None);
        };
        match self {
            RootTree::Dir(root) => {
                let p = root.join(&r);
                match std::fs::metadata(&p) {
                    Ok(m) if m.is_file() => Ok(Some(FileData::Path(p, m.len()))),
                    _ => Ok(None),
                }
            }
            RootTree::Tar { path, entries } => match entries.get(&r) {
                Some(TarKind::File { offset, size }) => {
                    let io = |source| TreeError::Io {
                        path: path.clone(),
                        source,
                    };
                    let buf = super::tartree::read_member(path, *offset, *size).map_err(io)?;
                    if buf.len() as u64 != *size {
                        return Err(TreeError::ShortRead {
                            path: path.clone(),
                            entry: r,
                            offset: *offset,
                            size: *size,
                            got: buf.len() as u64,
                        });
                    }
                    Ok(Some(FileData::Bytes(buf)))
                }
                _ => Ok(None),
            },
        }
    }

    pub fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, TreeError> {
        Ok(match self.file_data(rel)? {
            None => None,
            Some(FileData::Bytes(b)) => Some(b),
            Some(FileData::Path(p, _)) => {
                Some(std::fs::read(&p).map_err(|source| TreeError::Io { path: p, source })?)
            }
        })
    }

    /// Counts what the tree holds, without following symlinks.
    pub fn stats(&self) -> Result<ContentStats, TreeError> {
        let mut s = ContentStats::default();
        match self {
            RootTree::Dir(root) => {
                let mut seen: HashSet<(u64, u64)> = HashSet::new();
                let mut stack = vec![root.clone()];
                while let Some(dir) = stack.pop() {
                    s.dirs += 1;
                    let rd = std::fs::read_dir(&dir).map_err(|source| TreeError::Io {
                        path: dir.clone(),
                        source,
                    })?;
                    let mut entries = 0u64;
                    for e in rd {
                        let e = e.map_err(|source| TreeError::Io {
                            path: dir.clone(),
                            source,
                        })?;
                        entries += 1;
                        let m = e.metadata().map_err(|source| TreeError::Io {
                            path: e.path(),
                            source,
                        })?;
                        let ft = m.file_type();
                        if ft.is_dir() {
                            stack.push(e.path());
                        } else if ft.is_file() {
                            if m.nlink() > 1 && !seen.insert((m.dev(), m.ino())) {
                                continue;
                            }
                            s.files += 1;
                            s.data_blocks_bytes += m.len().div_ceil(BLOCK) * BLOCK;
                        } else if ft.is_symlink() {
                            s.symlinks += 1;
                            if m.len() > 59 {
                                s.data_blocks_bytes += BLOCK;
                            }
                        } else {
                            s.other += 1;
                        }
                    }
                    // Directory blocks: roughly 40 bytes per entry.
                    s.data_blocks_bytes += (entries * 40).div_ceil(BLOCK).max(1) * BLOCK;
                }
            }
            RootTree::Tar { entries, .. } => {
                s.dirs += 1;
                for kind in entries.values() {
                    match kind {
                        TarKind::File { size, .. } => {
                            s.files += 1;
                            s.data_blocks_bytes += size.div_ceil(BLOCK) * BLOCK;
                        }
                        TarKind::Dir => {
                            s.dirs += 1;
                            s.data_blocks_bytes += BLOCK;
                        }
                        TarKind::Symlink(t) => {
                            s.symlinks += 1;
                            if t.len() > 59 {
                                s.data_blocks_bytes += BLOCK;
                            }
                        }
                        TarKind::Hardlink(_) => {}
                        TarKind::Other => s.other += 1,
                    }
                }
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_order() {
        let mut v = vec![
            "vmlinuz-6.1.0-28-armmp",
            "vmlinuz-6.1.0-9-armmp",
            "vmlinuz-5.10.0-1",
        ];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(
            v,
            [
                "vmlinuz-5.10.0-1",
                "vmlinuz-6.1.0-9-armmp",
                "vmlinuz-6.1.0-28-armmp"
            ]
        );
    }

    fn fixture() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("boot")).unwrap();
        std::fs::create_dir_all(r.join("usr/lib/linux-image-6.1.0-9-armmp")).unwrap();
        std::fs::write(r.join("boot/vmlinuz-6.1.0-9-armmp"), b"kernel").unwrap();
        std::fs::write(
            r.join("usr/lib/linux-image-6.1.0-9-armmp/board.dtb"),
            b"dtb",
        )
        .unwrap();
        std::os::unix::fs::symlink("boot/vmlinuz-6.1.0-9-armmp", r.join("vmlinuz")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", r.join("boot/lib")).unwrap();
        std::os::unix::fs::symlink("/../../../etc/passwd", r.join("escape")).unwrap();
        d
    }

    /// The fixture's kernel (through its glob and the relative `vmlinuz` link) and its device tree
    /// (through a linked directory), as any kind of tree reads them.
    fn assert_fixture_files(t: &RootTree) {
        assert_eq!(
            t.glob("boot/vmlinuz-*").unwrap(),
            ["boot/vmlinuz-6.1.0-9-armmp"]
        );
        assert_eq!(t.read("vmlinuz").unwrap().unwrap(), b"kernel");
        assert_eq!(
            t.read("boot/lib/linux-image-6.1.0-9-armmp/board.dtb")
                .unwrap()
                .unwrap(),
            b"dtb"
        );
    }

    #[test]
    fn directory_tree_resolves_inside_root() {
        let d = fixture();
        let t = RootTree::open(d.path()).unwrap();
        assert_fixture_files(&t);
        assert_eq!(
            t.glob("usr/lib/linux-image-*").unwrap(),
            ["usr/lib/linux-image-6.1.0-9-armmp"]
        );
        // An absolute link is resolved against the tree's root, never the host's.
        assert!(t.read("escape").unwrap().is_none());
    }

    #[test]
    fn tarball_tree_matches_directory() {
        let d = fixture();
        let tar_path = d.path().join("../root.tar");
        let f = File::create(&tar_path).unwrap();
        let mut b = tar::Builder::new(f);
        b.follow_symlinks(false);
        b.append_dir_all(".", d.path()).unwrap();
        b.finish().unwrap();
        let t = RootTree::open(&tar_path).unwrap();
        assert_fixture_files(&t);
        std::fs::remove_file(tar_path).unwrap();
    }
}
