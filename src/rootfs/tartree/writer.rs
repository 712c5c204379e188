//! Writing the canonical tarball: parents before children, siblings by name, numeric owners, mtimes
//! clamped to SOURCE_DATE_EPOCH, each hard-link set's data on its first member in that order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use tar::{EntryType, Header};

use super::{Data, Kind, Node, TarTree, TarTreeError};

/// What a written tarball holds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct TarStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub devices: u64,
    pub bytes: u64,
}

impl TarTree {
    /// Writes the canonical tarball. `clamp` is SOURCE_DATE_EPOCH: later mtimes (and those of new
    /// nodes) become it.
    pub fn write(&self, dest: &Path, clamp: u64) -> Result<TarStats, TarTreeError> {
        let werr = |source| TarTreeError::Write {
            path: dest.to_path_buf(),
            source,
        };
        let out = File::create(dest).map_err(werr)?;
        let stats = self.write_to(BufWriter::with_capacity(1 << 20, out), clamp, dest)?;
        Ok(stats)
    }

    fn write_to<W: Write>(&self, w: W, clamp: u64, dest: &Path) -> Result<TarStats, TarTreeError> {
        let src = match &self.source {
            Some(p) => Some(File::open(p).map_err(|source| TarTreeError::Read {
                path: p.clone(),
                source,
            })?),
            None => None,
        };
        let order = self.paths();
        let holders = self.data_holders(&order)?;
        let mut out = Out {
            builder: tar::Builder::new(w),
            src,
            stats: TarStats::default(),
            dest,
            clamp,
        };
        for path in &order {
            out.entry(self, path, &holders)?;
        }
        let werr = out.werr();
        let mut w = out.builder.into_inner().map_err(&werr)?;
        w.flush().map_err(werr)?;
        Ok(out.stats)
    }

    /// Hard links must follow the entry holding the data: the first of each set in canonical order
    /// carries the data, the others link to it. Each set's target → the path that carries its data.
    fn data_holders(&self, order: &[String]) -> Result<HashMap<String, String>, TarTreeError> {
        let position: HashMap<&str, usize> = order
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_str(), i))
            .collect();
        let mut sets: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
        for (p, n) in &self.nodes {
            if let Kind::Hardlink(t) = &n.kind {
                if !self.nodes.contains_key(t) {
                    return Err(TarTreeError::Node {
                        path: p.clone(),
                        reason: format!("hard link to `{t}`, which is not in the tree"),
                    });
                }
                let set = sets.entry(t.clone()).or_default();
                set.insert(position[p.as_str()]);
                set.insert(position[t.as_str()]);
            }
        }
        Ok(sets
            .iter()
            .filter_map(|(target, set)| {
                let first = *set.iter().next()?;
                Some((target.clone(), order[first].clone()))
            })
            .collect())
    }
}

/// The archive being written.
struct Out<'a, W: Write> {
    builder: tar::Builder<W>,
    /// The input tarball the unchanged files' data is copied from.
    src: Option<File>,
    stats: TarStats,
    dest: &'a Path,
    clamp: u64,
}

impl<W: Write> Out<'_, W> {
    fn werr(&self) -> impl Fn(io::Error) -> TarTreeError + use<W> {
        let path = self.dest.to_path_buf();
        move |source| TarTreeError::Write {
            path: path.clone(),
            source,
        }
    }

    /// One node: its header (owners, mode, clamped mtime, extended attributes), then what it really
    /// is once hard-link sets are reordered.
    fn entry(
        &mut self,
        tree: &TarTree,
        path: &String,
        holders: &HashMap<String, String>,
    ) -> Result<(), TarTreeError> {
        let werr = self.werr();
        let node = &tree.nodes[path];
        let name = if path.is_empty() {
            "./".to_string()
        } else {
            format!("./{path}")
        };
        let mut header = self.header(node)?;
        let kind: &Kind = match &node.kind {
            Kind::Hardlink(t) => {
                if holders.get(t).map(String::as_str) == Some(path.as_str()) {
                    &tree.nodes[t].kind
                } else {
                    &node.kind
                }
            }
            k => {
                if let (Kind::File(_), Some(holder)) = (k, holders.get(path))
                    && holder != path
                {
                    // This file's data went out with an earlier link: link back to it.
                    self.stats.hardlinks += 1;
                    header.set_entry_type(EntryType::Link);
                    return self
                        .builder
                        .append_link(&mut header, &name, holder.as_str())
                        .map_err(werr);
                }
                k
            }
        };
        self.append(kind, &mut header, &name, path, holders)
    }

    /// The header every entry starts from; extended attributes go out first, as PAX records.
    fn header(&mut self, node: &Node) -> Result<Header, TarTreeError> {
        let mut header = Header::new_gnu();
        header.set_mode(node.mode);
        header.set_uid(node.uid);
        header.set_gid(node.gid);
        header.set_mtime(node.mtime.min(self.clamp));
        header.set_size(0);
        if !node.xattrs.is_empty() {
            let recs: Vec<(String, &[u8])> = node
                .xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                .collect();
            self.builder
                .append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), *v)))
                .map_err(self.werr())?;
        }
        Ok(header)
    }

    /// The entry of `kind`, with its data or link target.
    fn append(
        &mut self,
        kind: &Kind,
        header: &mut Header,
        name: &str,
        path: &str,
        holders: &HashMap<String, String>,
    ) -> Result<(), TarTreeError> {
        let werr = self.werr();
        let (builder, stats) = (&mut self.builder, &mut self.stats);
        match kind {
            Kind::Dir => {
                stats.dirs += 1;
                header.set_entry_type(EntryType::Directory);
                builder
                    .append_data(header, name, io::empty())
                    .map_err(werr)?;
            }
            Kind::File(data) => {
                stats.files += 1;
                stats.bytes += data.len();
                header.set_entry_type(EntryType::Regular);
                header.set_size(data.len());
                match data {
                    Data::Bytes(b) => builder
                        .append_data(header, name, b.as_slice())
                        .map_err(werr)?,
                    Data::Input { offset, size } => {
                        let f = self.src.as_mut().ok_or_else(|| TarTreeError::Node {
                            path: path.to_string(),
                            reason: "data refers to an input tarball that is not open".into(),
                        })?;
                        f.seek(SeekFrom::Start(*offset)).map_err(&werr)?;
                        builder
                            .append_data(header, name, (&mut *f).take(*size))
                            .map_err(werr)?;
                    }
                }
            }
            Kind::Symlink(t) => {
                stats.symlinks += 1;
                header.set_entry_type(EntryType::Symlink);
                builder.append_link(header, name, t).map_err(werr)?;
            }
            Kind::Hardlink(t) => {
                stats.hardlinks += 1;
                let holder = holders.get(t).cloned().unwrap_or_else(|| t.clone());
                header.set_entry_type(EntryType::Link);
                builder
                    .append_link(header, name, holder.as_str())
                    .map_err(werr)?;
            }
            Kind::Char(ma, mi) | Kind::Block(ma, mi) => {
                stats.devices += 1;
                header.set_entry_type(if matches!(kind, Kind::Char(..)) {
                    EntryType::Char
                } else {
                    EntryType::Block
                });
                header.set_device_major(*ma).map_err(&werr)?;
                header.set_device_minor(*mi).map_err(&werr)?;
                builder
                    .append_data(header, name, io::empty())
                    .map_err(werr)?;
            }
            Kind::Fifo => {
                stats.devices += 1;
                header.set_entry_type(EntryType::Fifo);
                builder
                    .append_data(header, name, io::empty())
                    .map_err(werr)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;

    fn entries(p: &Path) -> Vec<(String, EntryType, u64, Option<String>)> {
        let mut a = tar::Archive::new(File::open(p).unwrap());
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_type(),
                    e.header().mtime().unwrap(),
                    e.link_name()
                        .unwrap()
                        .map(|l| l.to_string_lossy().into_owned()),
                )
            })
            .collect()
    }

    #[test]
    fn canonical_order_clamped_and_links_after_data() {
        let (d, p) = sample();
        let mut t = TarTree::open(&p).unwrap();
        t.write_file("lib/new/file", b"x".to_vec(), 0o600).unwrap();
        let out = d.path().join("out.tar");
        t.write(&out, 1000).unwrap();
        let e = entries(&out);
        let names: Vec<&str> = e.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "./",
                "etc",
                "etc/passwd",
                "lib",
                "usr",
                "usr/lib",
                "usr/lib/a",
                "usr/lib/new",
                "usr/lib/new/file",
                "usr/lib/z"
            ]
        );
        assert!(e.iter().all(|x| x.2 <= 1000));
        let a = e.iter().find(|x| x.0 == "usr/lib/a").unwrap();
        assert_eq!(a.1, EntryType::Regular);
        let z = e.iter().find(|x| x.0 == "usr/lib/z").unwrap();
        assert_eq!(z.1, EntryType::Link);
        assert_eq!(z.3.as_deref(), Some("usr/lib/a"));
        // GNU tar agrees the archive is well formed and extracts the link.
        let x = d.path().join("x");
        std::fs::create_dir(&x).unwrap();
        let st = std::process::Command::new("tar")
            .arg("-xf")
            .arg(&out)
            .arg("-C")
            .arg(&x)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(std::fs::read(x.join("usr/lib/z")).unwrap(), b"zdata");
    }

    #[test]
    fn rewriting_is_deterministic() {
        let (d, p) = sample();
        let t = TarTree::open(&p).unwrap();
        let (a, b) = (d.path().join("a.tar"), d.path().join("b.tar"));
        t.write(&a, 77).unwrap();
        TarTree::open(&a).unwrap().write(&b, 77).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    }
}
