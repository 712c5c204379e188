//! Reading an archive: every entry indexed, its data checked to lie inside the archive.

use std::collections::HashMap;
use std::io::{self, Read, Seek};
use std::path::Path;

use tar::EntryType;

use super::{Data, Kind, Node, TarTreeError, normalize};

/// Indexes an uncompressed tar archive of `len` bytes read from `reader` (`path` names it in errors).
/// Every entry's data must lie inside the archive: a header's size is checked against the archive's
/// real length, so a crafted size never reaches an allocation or a read.
pub fn index<R: Read + Seek>(
    reader: R,
    len: u64,
    path: &Path,
) -> Result<HashMap<String, Node>, TarTreeError> {
    let read_err = |source| TarTreeError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut archive = tar::Archive::new(reader);
    let mut nodes = HashMap::new();
    let entries = archive.entries_with_seek().map_err(read_err)?;
    for entry in entries {
        let mut entry = entry.map_err(|e| TarTreeError::Format {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let name = normalize(&String::from_utf8_lossy(&entry.path_bytes()));
        let (offset, size) = (entry.raw_file_position(), entry.size());
        if offset.checked_add(size).is_none_or(|end| end > len) {
            return Err(TarTreeError::PastEnd {
                path: path.to_path_buf(),
                entry: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
                header: entry.raw_header_position(),
                offset,
                size,
                len,
            });
        }
        // A pax global header (git archive writes one) describes the archive, not a file.
        if entry.header().entry_type() == EntryType::XGlobalHeader {
            continue;
        }
        let mut xattrs = Vec::new();
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                if let Ok(key) = ext.key()
                    && let Some(attr) = key.strip_prefix("SCHILY.xattr.")
                {
                    xattrs.push((attr.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        let h = entry.header();
        let num = |r: io::Result<u64>| r.unwrap_or(0);
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let link = entry
            .link_name_bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let kind = match h.entry_type() {
            EntryType::Regular | EntryType::Continuous => Kind::File(Data::Input { offset, size }),
            EntryType::Directory => Kind::Dir,
            EntryType::Symlink => Kind::Symlink(link.unwrap_or_default()),
            EntryType::Link => Kind::Hardlink(normalize(&link.unwrap_or_default())),
            EntryType::Char => Kind::Char(
                h.device_major().ok().flatten().unwrap_or(0),
                h.device_minor().ok().flatten().unwrap_or(0),
            ),
            EntryType::Block => Kind::Block(
                h.device_major().ok().flatten().unwrap_or(0),
                h.device_minor().ok().flatten().unwrap_or(0),
            ),
            EntryType::Fifo => Kind::Fifo,
            other => {
                return Err(TarTreeError::Format {
                    path: path.to_path_buf(),
                    reason: format!("entry `{name}` has unsupported type {other:?}"),
                });
            }
        };
        let node = Node {
            kind,
            mode,
            uid: num(h.uid()),
            gid: num(h.gid()),
            mtime: num(h.mtime()),
            xattrs,
        };
        nodes.insert(name, node);
    }
    Ok(nodes)
}
