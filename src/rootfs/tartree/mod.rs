//! A root filesystem held as an uncompressed tarball plus in-memory edits: the configuration steps read
//! and change it like a directory, then [`TarTree::write`] emits a new tarball in a canonical order
//! (parents before children, siblings by name), with numeric owners and mtimes clamped to
//! SOURCE_DATE_EPOCH. Owners, modes, device nodes and extended attributes survive without root.
//!
//! Reading an archive into the index is `index`, writing the canonical tarball `writer`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

mod index;
mod writer;

pub use index::index;
pub use writer::TarStats;

#[derive(Debug, thiserror::Error)]
pub enum TarTreeError {
    #[error("reading the tarball {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a usable tarball: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("writing the tarball {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{path}` in the root filesystem: {reason}")]
    Node { path: String, reason: String },
    #[error("symlink loop or chain too long at `{path}` in the root filesystem")]
    Loop { path: String },
    #[error(
        "{path}: entry `{entry}` (header at byte {header}) claims {size} bytes of data from byte {offset}, past the end of the archive at byte {len}; the tarball is truncated or corrupt, make it again"
    )]
    PastEnd {
        path: PathBuf,
        entry: String,
        header: u64,
        offset: u64,
        size: u64,
        len: u64,
    },
}

/// Where a regular file's bytes are.
#[derive(Debug, Clone)]
pub enum Data {
    /// In the input tarball at this offset.
    Input {
        offset: u64,
        size: u64,
    },
    Bytes(Vec<u8>),
}

/// Up to `size` bytes of the archive at `path` from byte `offset` (fewer if it ends first): a member's
/// data, in a buffer that grows with the data read, never from the header's size alone.
pub fn read_member(path: &Path, offset: u64, size: u64) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.take(size).read_to_end(&mut buf)?;
    Ok(buf)
}

impl Data {
    pub fn len(&self) -> u64 {
        match self {
            Data::Input { size, .. } => *size,
            Data::Bytes(b) => b.len() as u64,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone)]
pub enum Kind {
    File(Data),
    Dir,
    Symlink(String),
    /// A hard link to another path of the tree (the path as stored, normalized).
    Hardlink(String),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// `SCHILY.xattr.NAME` records, in input order.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Node {
    pub fn dir(mode: u32) -> Node {
        Node::new(Kind::Dir, mode)
    }
    pub fn file(data: Vec<u8>, mode: u32) -> Node {
        Node::new(Kind::File(Data::Bytes(data)), mode)
    }
    pub fn symlink(target: &str) -> Node {
        Node::new(Kind::Symlink(target.to_string()), 0o777)
    }
    fn new(kind: Kind, mode: u32) -> Node {
        Node {
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
        }
    }
    pub fn owned(mut self, uid: u64, gid: u64) -> Node {
        self.uid = uid;
        self.gid = gid;
        self
    }
}

/// Paths are relative, without `./`, `.` or `..` components; the root directory is `""`.
pub fn normalize(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    out.join("/")
}

fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        None
    } else {
        Some(path.rsplit_once('/').map_or("", |(p, _)| p))
    }
}

/// The canonical order: component by component, so that a directory precedes everything in it.
fn canonical_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let mut ai = a.split('/').filter(|s| !s.is_empty());
    let mut bi = b.split('/').filter(|s| !s.is_empty());
    loop {
        match (ai.next(), bi.next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => match x.as_bytes().cmp(y.as_bytes()) {
                std::cmp::Ordering::Equal => continue,
                o => return o,
            },
        }
    }
}

pub struct TarTree {
    source: Option<PathBuf>,
    nodes: HashMap<String, Node>,
}

impl TarTree {
    /// An empty tree holding only the root directory.
    pub fn empty() -> TarTree {
        let mut nodes = HashMap::new();
        nodes.insert(String::new(), Node::dir(0o755));
        TarTree {
            source: None,
            nodes,
        }
    }

    /// Indexes an uncompressed tarball (file data stays on disk until written).
    pub fn open(path: &Path) -> Result<TarTree, TarTreeError> {
        Self::open_as(path, path)
    }

    /// [`TarTree::open`], naming the archive `shown` in errors (what the user gave, when `path` is a
    /// working copy of it).
    pub fn open_as(path: &Path, shown: &Path) -> Result<TarTree, TarTreeError> {
        let read_err = |source| TarTreeError::Read {
            path: shown.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(read_err)?;
        let len = file.metadata().map_err(read_err)?.len();
        let mut nodes = index(BufReader::with_capacity(1 << 20, file), len, shown)?;
        nodes
            .entry(String::new())
            .or_insert_with(|| Node::dir(0o755));
        Ok(TarTree {
            source: Some(path.to_path_buf()),
            nodes,
        })
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(&normalize(path))
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    /// Every path, in canonical order.
    pub fn paths(&self) -> Vec<String> {
        let mut v: Vec<String> = self.nodes.keys().cloned().collect();
        v.sort_by(|a, b| canonical_cmp(a, b));
        v
    }

    /// Follows symlinks in every component (absolute targets mean the tree's root). Returns the
    /// normalized path of what `path` names, which may not exist.
    pub fn resolve(&self, path: &str) -> Result<String, TarTreeError> {
        let mut todo: Vec<String> = normalize(path)
            .split('/')
            .filter(|s| !s.is_empty())
            .rev()
            .map(str::to_string)
            .collect();
        let mut done: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(part) = todo.pop() {
            let candidate = if done.is_empty() {
                part.clone()
            } else {
                format!("{}/{part}", done.join("/"))
            };
            match self.nodes.get(&candidate).map(|n| &n.kind) {
                Some(Kind::Symlink(target)) => {
                    hops += 1;
                    if hops > 40 {
                        return Err(TarTreeError::Loop { path: candidate });
                    }
                    if target.starts_with('/') {
                        done.clear();
                    }
                    for p in target.split('/').filter(|s| !s.is_empty()).rev() {
                        todo.push(p.to_string());
                    }
                }
                _ => {
                    if part == ".." {
                        done.pop();
                    } else if part != "." {
                        done.push(part);
                    }
                }
            }
        }
        Ok(done.join("/"))
    }

    /// The node `path` names after following symlinks (and hard links to their data).
    pub fn lookup(&self, path: &str) -> Result<Option<(String, &Node)>, TarTreeError> {
        let real = self.resolve(path)?;
        let Some(node) = self.nodes.get(&real) else {
            return Ok(None);
        };
        if let Kind::Hardlink(target) = &node.kind
            && let Some(t) = self.nodes.get(target)
        {
            return Ok(Some((real, t)));
        }
        Ok(Some((real, node)))
    }

    pub fn exists(&self, path: &str) -> Result<bool, TarTreeError> {
        Ok(self.lookup(path)?.is_some())
    }

    /// Contents of the regular file `path` names (symlinks followed), if it is one.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TarTreeError> {
        let Some((_, node)) = self.lookup(path)? else {
            return Ok(None);
        };
        match &node.kind {
            Kind::File(data) => self.data_bytes(data).map(Some),
            _ => Ok(None),
        }
    }

    pub fn read_string(&self, path: &str) -> Result<Option<String>, TarTreeError> {
        Ok(self
            .read(path)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    fn data_bytes(&self, data: &Data) -> Result<Vec<u8>, TarTreeError> {
        match data {
            Data::Bytes(b) => Ok(b.clone()),
            Data::Input { offset, size } => {
                let src = self.source.as_deref().unwrap_or(Path::new(""));
                let read_err = |source| TarTreeError::Read {
                    path: src.to_path_buf(),
                    source,
                };
                let buf = read_member(src, *offset, *size).map_err(read_err)?;
                if buf.len() as u64 != *size {
                    return Err(read_err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the archive ends {} bytes into the {size} bytes of data at byte {offset}; did it change meanwhile?",
                            buf.len()
                        ),
                    )));
                }
                Ok(buf)
            }
        }
    }

    /// Paths directly inside directory `dir` (not following symlinks of the entries themselves).
    pub fn children(&self, dir: &str) -> Result<Vec<String>, TarTreeError> {
        let real = self.resolve(dir)?;
        let mut out: Vec<String> = self
            .nodes
            .keys()
            .filter(|k| !k.is_empty() && parent(k) == Some(real.as_str()))
            .cloned()
            .collect();
        out.sort();
        Ok(out)
    }

    /// Creates missing parent directories of `path` (0755 root) and returns `path` with its parent
    /// resolved through symlinks (so `lib/x` lands in `usr/lib/x` on a merged-/usr tree).
    fn place(&mut self, path: &str) -> Result<String, TarTreeError> {
        let path = normalize(path);
        let Some(par) = parent(&path) else {
            return Err(TarTreeError::Node {
                path,
                reason: "cannot replace the root directory".into(),
            });
        };
        let real_parent = self.resolve(par)?;
        let mut cur = String::new();
        for part in real_parent.split('/').filter(|s| !s.is_empty()) {
            cur = if cur.is_empty() {
                part.to_string()
            } else {
                format!("{cur}/{part}")
            };
            match self.nodes.get(&cur).map(|n| &n.kind) {
                None => {
                    self.nodes.insert(cur.clone(), Node::dir(0o755));
                }
                Some(Kind::Dir) => {}
                Some(_) => {
                    return Err(TarTreeError::Node {
                        path: cur,
                        reason: format!("is not a directory, so `{path}` cannot be created in it"),
                    });
                }
            }
        }
        let name = path.rsplit('/').next().unwrap_or(&path);
        Ok(if real_parent.is_empty() {
            name.to_string()
        } else {
            format!("{real_parent}/{name}")
        })
    }

    /// Before `path` is replaced or removed: hard links to it keep its old content.
    fn detach_links(&mut self, path: &str) {
        let Some(old) = self.nodes.get(path).cloned() else {
            return;
        };
        if !matches!(old.kind, Kind::File(_)) {
            return;
        }
        let mut links: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| matches!(&n.kind, Kind::Hardlink(t) if t == path))
            .map(|(k, _)| k.clone())
            .collect();
        links.sort_by(|a, b| canonical_cmp(a, b));
        let Some(first) = links.first().cloned() else {
            return;
        };
        if let Some(n) = self.nodes.get_mut(&first) {
            n.kind = old.kind.clone();
        }
        for l in &links[1..] {
            if let Some(n) = self.nodes.get_mut(l) {
                n.kind = Kind::Hardlink(first.clone());
            }
        }
    }

    /// Puts `node` at `path` (parents created, replacing what was there). Returns the stored path.
    pub fn insert(&mut self, path: &str, mut node: Node) -> Result<String, TarTreeError> {
        let at = self.place(path)?;
        if let Some(existing) = self.nodes.get(&at) {
            if matches!(existing.kind, Kind::Dir) && matches!(node.kind, Kind::Dir) {
                // Keep what is inside; update metadata only.
            } else if matches!(existing.kind, Kind::Dir) {
                let prefix = format!("{at}/");
                if self.nodes.keys().any(|k| k.starts_with(&prefix)) {
                    return Err(TarTreeError::Node {
                        path: at,
                        reason: "is a non-empty directory and cannot be replaced by a file".into(),
                    });
                }
            }
            self.detach_links(&at);
        }
        if node.mtime == 0 {
            node.mtime = u64::MAX;
        }
        self.nodes.insert(at.clone(), node);
        Ok(at)
    }

    /// Writes a regular file, keeping owner and mode of one that already exists there.
    pub fn write_file(
        &mut self,
        path: &str,
        data: Vec<u8>,
        default_mode: u32,
    ) -> Result<String, TarTreeError> {
        let existing = self.lookup(path)?.map(|(p, n)| (p, n.clone()));
        match existing {
            Some((real, n)) if matches!(n.kind, Kind::File(_)) => {
                let node = Node {
                    kind: Kind::File(Data::Bytes(data)),
                    mtime: u64::MAX,
                    ..n
                };
                self.detach_links(&real);
                self.nodes.insert(real.clone(), node);
                Ok(real)
            }
            _ => self.insert(path, Node::file(data, default_mode)),
        }
    }

    /// Removes `path` and, for a directory, everything inside it. Missing paths are fine.
    pub fn remove(&mut self, path: &str) -> Result<(), TarTreeError> {
        let p = normalize(path);
        if p.is_empty() {
            return Err(TarTreeError::Node {
                path: p,
                reason: "cannot remove the root directory".into(),
            });
        }
        let prefix = format!("{p}/");
        let doomed: Vec<String> = self
            .nodes
            .keys()
            .filter(|k| **k == p || k.starts_with(&prefix))
            .cloned()
            .collect();
        for d in &doomed {
            self.detach_links(d);
        }
        for d in doomed {
            self.nodes.remove(&d);
        }
        Ok(())
    }

    /// Paths matching a glob whose components may contain `*` (no symlinks followed in the pattern).
    pub fn glob(&self, pattern: &str) -> Vec<String> {
        let norm = normalize(pattern);
        let pat: Vec<&str> = norm.split('/').filter(|s| !s.is_empty()).collect();
        let mut out: Vec<String> = self
            .nodes
            .keys()
            .filter(|k| {
                let parts: Vec<&str> = k.split('/').filter(|s| !s.is_empty()).collect();
                parts.len() == pat.len() && parts.iter().zip(&pat).all(|(n, p)| wildcard(p, n))
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| canonical_cmp(a, b));
        out
    }
}

/// `*` matches any run of characters within one component.
pub fn wildcard(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if name.len() < first.len() + last.len() || !name.starts_with(first) || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use tar::{EntryType, Header};

    use super::*;

    pub(super) fn sample() -> (tempfile::TempDir, PathBuf) {
        let (dir, p) = crate::testutil::scratch("in.tar");
        let mut b = tar::Builder::new(File::create(&p).unwrap());
        let mut add = |name: &str, ty: EntryType, data: &[u8], link: Option<&str>, mtime: u64| {
            let mut h = Header::new_gnu();
            h.set_entry_type(ty);
            h.set_mode(if ty == EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_size(data.len() as u64);
            h.set_mtime(mtime);
            h.set_uid(0);
            h.set_gid(0);
            match link {
                Some(l) => b.append_link(&mut h, name, l).unwrap(),
                None => b.append_data(&mut h, name, data).unwrap(),
            }
        };
        add("./", EntryType::Directory, b"", None, 5);
        add("./usr/", EntryType::Directory, b"", None, 5);
        add("./usr/lib/", EntryType::Directory, b"", None, 5);
        add("./lib", EntryType::Symlink, b"", Some("usr/lib"), 5);
        add(
            "./usr/lib/z",
            EntryType::Regular,
            b"zdata",
            None,
            9_999_999_999,
        );
        // The link comes first by name in the input but its target holds the data.
        add("./usr/lib/a", EntryType::Link, b"", Some("./usr/lib/z"), 5);
        add("./etc/", EntryType::Directory, b"", None, 5);
        add(
            "./etc/passwd",
            EntryType::Regular,
            b"root:x:0:0::/root:/bin/sh\n",
            None,
            5,
        );
        b.finish().unwrap();
        drop(b);
        (dir, p)
    }

    #[test]
    fn resolves_symlinked_directories() {
        let (_d, p) = sample();
        let t = TarTree::open(&p).unwrap();
        assert_eq!(t.resolve("lib/z").unwrap(), "usr/lib/z");
        assert_eq!(t.read("/lib/a").unwrap().unwrap(), b"zdata");
    }

    #[test]
    fn replacing_a_link_target_keeps_the_link_content() {
        let (d, p) = sample();
        let mut t = TarTree::open(&p).unwrap();
        t.write_file("usr/lib/z", b"new".to_vec(), 0o644).unwrap();
        assert_eq!(t.read("usr/lib/a").unwrap().unwrap(), b"zdata");
        assert_eq!(t.read("usr/lib/z").unwrap().unwrap(), b"new");
        let out = d.path().join("o.tar");
        t.write(&out, 1).unwrap();
        let t2 = TarTree::open(&out).unwrap();
        assert_eq!(t2.read("usr/lib/a").unwrap().unwrap(), b"zdata");
    }

    #[test]
    fn glob_matches_components() {
        let (_d, p) = sample();
        let t = TarTree::open(&p).unwrap();
        assert_eq!(t.glob("usr/lib/*"), ["usr/lib/a", "usr/lib/z"]);
        assert!(wildcard("ssh_host_*_key", "ssh_host_rsa_key"));
        assert!(!wildcard("ssh_host_*_key", "ssh_host_rsa_key.pub"));
        assert!(wildcard("vmlinuz-*", "vmlinuz-6.1.0-28-armmp"));
        assert!(!wildcard("vmlinuz-*", "initrd.img-6.1"));
        assert!(wildcard("*", "x"));
        assert!(wildcard("a*b*c", "aXXbYYc"));
        assert!(!wildcard("a*b*c", "ac"));
    }
}
