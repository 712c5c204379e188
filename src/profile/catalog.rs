//! Where profiles come from: the embedded set, a directory of the user's, or a path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::resolve::resolve;
use super::{Profile, ProfileError, SourceFile};

/// Where profiles come from: the embedded set, optionally preceded by a directory of the user's.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub boards_dir: Option<PathBuf>,
}

/// One entry of `boardsmith boards`.
#[derive(Debug, Clone, Serialize)]
pub struct BoardEntry {
    pub name: String,
    pub description: String,
    pub arch: String,
    pub source: String,
    /// The QEMU system emulator `boot` runs the board's images in, if it has one (a CI matrix boots
    /// those boards).
    pub emulator: Option<String>,
}

impl Catalog {
    pub fn new(boards_dir: Option<PathBuf>) -> Self {
        Catalog { boards_dir }
    }

    /// Loads a board by name or by path to a `.toml` file.
    pub fn load(&self, board: &str) -> Result<Profile, ProfileError> {
        let file = self.find_board(board)?;
        resolve(file, self)
    }

    /// Loads a profile from text that did not come from a file (errors name it `name`); its `extends`
    /// bases come from the user's directory or the embedded ones. Used by fuzzing and by tools that
    /// generate profiles.
    pub fn load_text(&self, name: &str, text: &str) -> Result<Profile, ProfileError> {
        let file = Arc::new(SourceFile {
            name: name.to_string(),
            path: None,
            text: text.to_string(),
        });
        resolve(file, self)
    }

    fn find_board(&self, board: &str) -> Result<Arc<SourceFile>, ProfileError> {
        if board.contains('/') || board.ends_with(".toml") {
            return read_disk(Path::new(board));
        }
        if let Some(dir) = &self.boards_dir {
            let p = dir.join(format!("{board}.toml"));
            if p.is_file() {
                return read_disk(&p);
            }
        }
        let embedded = format!("boards/{board}.toml");
        if let Some(data) = crate::embedded::get(&embedded) {
            return Ok(embedded_file(&embedded, data));
        }
        let known = self
            .list()
            .map(|l| l.into_iter().map(|b| b.name).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        Err(ProfileError::UnknownBoard {
            name: board.to_string(),
            known,
        })
    }

    pub(super) fn find_base(
        &self,
        name: &str,
        from: &SourceFile,
    ) -> Result<Arc<SourceFile>, ProfileError> {
        if name.contains('/') || name.ends_with(".toml") {
            let base_dir = from
                .path
                .as_deref()
                .and_then(Path::parent)
                .unwrap_or(Path::new("."));
            return read_disk(&base_dir.join(name));
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(dir) = from.path.as_deref().and_then(Path::parent) {
            dirs.push(dir.join("base"));
            dirs.push(dir.to_path_buf());
        }
        if let Some(dir) = &self.boards_dir {
            dirs.push(dir.join("base"));
        }
        for dir in dirs {
            let p = dir.join(format!("{name}.toml"));
            if p.is_file() {
                return read_disk(&p);
            }
        }
        let embedded = format!("boards/base/{name}.toml");
        match crate::embedded::get(&embedded) {
            Some(data) => Ok(embedded_file(&embedded, data)),
            None => Err(ProfileError::UnknownBoard {
                name: format!("base/{name}"),
                known: crate::embedded::list("boards/base")
                    .map(|(p, _)| stem(p))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Every board's name and file, unresolved: the user's directory first, then embedded ones it does not
    /// shadow. Loading each may still fail (see [`Catalog::load`]).
    pub fn names(&self) -> Result<Vec<(String, String)>, ProfileError> {
        let mut names: Vec<(String, String)> = Vec::new();
        if let Some(dir) = &self.boards_dir {
            let entries = std::fs::read_dir(dir).map_err(|source| ProfileError::Read {
                path: dir.clone(),
                source,
            })?;
            let mut paths: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
                .collect();
            paths.sort();
            for p in paths {
                names.push((stem(&p.to_string_lossy()), p.display().to_string()));
            }
        }
        for (path, _) in crate::embedded::list("boards") {
            let name = stem(path);
            if !names.iter().any(|(n, _)| *n == name) {
                names.push((name, format!("embedded:{path}")));
            }
        }
        names.sort();
        Ok(names)
    }

    /// Every board, resolved. The first profile that fails to resolve is the error.
    pub fn list(&self) -> Result<Vec<BoardEntry>, ProfileError> {
        self.names()?
            .into_iter()
            .map(|(name, source)| {
                let p = self.load(&name)?;
                Ok(BoardEntry {
                    name,
                    description: p.description,
                    arch: p.arch.debian().to_string(),
                    source,
                    emulator: p.emulator.as_ref().map(|e| e.system.clone()),
                })
            })
            .collect()
    }
}

pub(super) fn stem(path: &str) -> String {
    Path::new(path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_disk(path: &Path) -> Result<Arc<SourceFile>, ProfileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Arc::new(SourceFile {
        name: path.display().to_string(),
        path: Some(path.to_path_buf()),
        text,
    }))
}

fn embedded_file(path: &str, data: &[u8]) -> Arc<SourceFile> {
    Arc::new(SourceFile {
        name: format!("embedded:{path}"),
        path: None,
        text: String::from_utf8_lossy(data).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_board_resolves() {
        let boards = Catalog::default().list().unwrap();
        let names: Vec<&str> = boards.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(
            names,
            ["armv8-foundation", "chromebook-snow", "cubieboard", "mk802"]
        );
    }

    #[test]
    fn a10_boards_share_the_soc_base() {
        let c = Catalog::default();
        let cb = c.load("cubieboard").unwrap();
        let mk = c.load("mk802").unwrap();
        assert_eq!(cb.bootloader.as_ref().unwrap().offset.value, 8192);
        assert_eq!(mk.bootloader.as_ref().unwrap().offset.value, 8192);
        assert_eq!(cb.sources.len(), 2);
        assert!(cb.sources[1].name.ends_with("base/allwinner-a10.toml"));
        assert_eq!(cb.kernel.dtb.as_deref(), Some("sun4i-a10-cubieboard.dtb"));
        assert_eq!(mk.kernel.dtb.as_deref(), Some("sun4i-a10-mk802.dtb"));
    }
}
