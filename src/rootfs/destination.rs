//! Where the root filesystem goes: a tarball or a directory, the private work directory beside it,
//! and the unpacking of a directory output.

use std::path::{Path, PathBuf};

use super::tartree::{TarStats, TarTree};
use super::{RootfsError, SecretFile, io};
use crate::output::PendingFile;

/// The output checked before any work: a `.tar` file, or an empty (or new) directory, which needs root
/// for owners and device nodes.
#[derive(Debug)]
pub(super) struct Destination {
    pub(super) out: PathBuf,
    pub(super) as_tar: bool,
    /// The output's file name (names the work directory and the partial directory beside it).
    pub(super) name: String,
    /// The directory the output goes in (`.` for a bare name).
    pub(super) parent: PathBuf,
}

impl Destination {
    pub(super) fn check(out: &Path) -> Result<Destination, RootfsError> {
        let refuse = |message: &str| RootfsError::Output {
            path: out.to_path_buf(),
            message: message.into(),
        };
        let as_tar = output_is_tar(out);
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| refuse("has no file name"))?;
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        if !as_tar {
            if !rustix::process::geteuid().is_root() {
                return Err(refuse(
                    "a directory root filesystem needs root (owners and device nodes); write a .tar instead (-o NAME.tar), which needs no root",
                ));
            }
            if out.exists()
                && std::fs::read_dir(out)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true)
            {
                return Err(refuse(
                    "exists and is not an empty directory; remove it or choose another",
                ));
            }
        } else if out.is_dir() {
            return Err(refuse("is a directory; give a file name ending in .tar"));
        }
        Ok(Destination {
            out: out.to_path_buf(),
            as_tar,
            name,
            parent,
        })
    }

    /// Writes the configured tree: a tarball under a temporary name, synced, then renamed; or a tarball in
    /// the work directory unpacked into a partial directory, then renamed. Returns what was written and
    /// the tarball's size.
    pub(super) fn write(
        &self,
        tree: TarTree,
        work: &WorkDir,
        epoch: u64,
        world_readable: bool,
    ) -> Result<(TarStats, u64), RootfsError> {
        let out = &self.out;
        if self.as_tar {
            let (pending, file) =
                PendingFile::create_with_mode(out, crate::output::artefact_mode(world_readable))
                    .map_err(io(format!("creating {}", out.display())))?;
            drop(file);
            let stats = tree.write(pending.temp_path(), epoch)?;
            let f =
                std::fs::File::open(pending.temp_path()).map_err(io("reopening the tarball"))?;
            f.sync_all().map_err(io("syncing the tarball"))?;
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            pending
                .commit()
                .map_err(io(format!("renaming to {}", out.display())))?;
            return Ok((stats, size));
        }
        let final_tar = work.path().join("final.tar");
        let stats = tree.write(&final_tar, epoch)?;
        drop(tree);
        let size = std::fs::metadata(&final_tar).map(|m| m.len()).unwrap_or(0);
        let pending = self
            .parent
            .join(format!(".{}.partial-{}", self.name, std::process::id()));
        crate::signals::remove_tree(&pending);
        let tracked = crate::signals::track_tree(&pending);
        let unpacked = unpack(&final_tar, &pending).and_then(|()| {
            if out.exists() {
                std::fs::remove_dir(out)
                    .map_err(io(format!("replacing the empty {}", out.display())))?;
            }
            crate::signals::commit_rename(&pending, out, tracked)
                .map_err(io(format!("renaming to {}", out.display())))
        });
        if let Err(e) = unpacked {
            crate::signals::remove_tree(&pending);
            return Err(e);
        }
        Ok((stats, size))
    }
}

/// A generated secret: its name in the report, the file beside the output, the value.
pub(super) struct Secret {
    pub(super) name: String,
    pub(super) path: PathBuf,
    pub(super) value: String,
}

/// The secret files, owner-only from their creation, under temporary names until the output is done.
pub(super) fn write_secrets(secrets: &[Secret]) -> Result<Vec<PendingFile>, RootfsError> {
    secrets
        .iter()
        .map(|s| {
            crate::output::write_atomic_with_mode(
                &s.path,
                format!("{}\n", s.value).as_bytes(),
                crate::output::PRIVATE,
            )
            .map_err(io(format!(
                "writing the generated {} to {}",
                s.name,
                s.path.display()
            )))
        })
        .collect()
}

/// Renames the secret files into place, once the output is.
pub(super) fn commit_secrets(
    pending: Vec<PendingFile>,
    secrets: &[Secret],
) -> Result<Vec<SecretFile>, RootfsError> {
    pending
        .into_iter()
        .zip(secrets)
        .map(|(p, s)| {
            let path = p
                .commit()
                .map_err(io(format!("writing the generated {}", s.name)))?;
            Ok(SecretFile {
                secret: s.name.clone(),
                path,
            })
        })
        .collect()
}

/// A private (0700) work directory next to the output; removed when dropped or on a stop signal,
/// unless something is still mounted in it.
pub(super) struct WorkDir {
    path: PathBuf,
    _tracked: crate::signals::Tracked,
}

impl WorkDir {
    pub(super) fn create(near: &Path, name: &str) -> std::io::Result<WorkDir> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = near.join(format!(".{name}.work-{}", std::process::id()));
        if dir.exists() {
            crate::signals::remove_tree(&dir);
        }
        let tracked = crate::signals::track_tree(&dir);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(WorkDir {
            path: dir,
            _tracked: tracked,
        })
    }
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        crate::signals::remove_tree(&self.path);
    }
}

/// Unpacks the finished tarball into `dir` (created 0700; tar gives it the tree's own mode) with owners,
/// modes and extended attributes.
fn unpack(tar: &Path, dir: &Path) -> Result<(), RootfsError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(io(format!("creating {}", dir.display())))?;
    let st = std::process::Command::new("tar")
        .args([
            "--extract",
            "--numeric-owner",
            "--same-permissions",
            "--xattrs",
            "--xattrs-include=*",
            "--file",
        ])
        .arg(tar)
        .arg("--directory")
        .arg(dir)
        .status()
        .map_err(io("running tar to unpack the root filesystem"))?;
    if !st.success() {
        return Err(RootfsError::Io {
            context: format!("unpacking into {}", dir.display()),
            source: std::io::Error::other(format!("tar exited with {st}")),
        });
    }
    Ok(())
}

fn output_is_tar(out: &Path) -> bool {
    out.extension().is_some_and(|e| e == "tar")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    use super::*;
    use crate::rootfs::test_trees::packed;

    /// A root tree made by GNU tar from a directory holding `etc/hostname`.
    fn sample_tree(dir: &Path) -> TarTree {
        let src = dir.join("src");
        std::fs::create_dir_all(src.join("etc")).unwrap();
        std::fs::write(src.join("etc/hostname"), "board\n").unwrap();
        packed(&src, &dir.join("in.tar"))
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_tar_output_is_a_file_name_not_a_directory() {
        let d = Destination::check(Path::new("out.tar")).unwrap();
        assert!(d.as_tar);
        assert_eq!(
            (d.name.as_str(), d.parent.as_path()),
            ("out.tar", Path::new("."))
        );
        let (_dir, taken) = crate::testutil::scratch("x.tar");
        std::fs::create_dir(&taken).unwrap();
        let e = Destination::check(&taken).unwrap_err();
        assert!(
            matches!(&e, RootfsError::Output { path, .. } if path == &taken)
                && e.to_string().contains("is a directory"),
            "{e}"
        );
        let e = Destination::check(Path::new("/")).unwrap_err().to_string();
        assert!(e.contains("has no file name"), "{e}");
    }

    #[test]
    fn a_directory_output_must_be_new_or_empty() {
        assert!(
            rustix::process::geteuid().is_root(),
            "needs root: a directory output is refused without it"
        );
        let (_dir, out) = crate::testutil::scratch("root");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("f"), "x").unwrap();
        let e = Destination::check(&out).unwrap_err().to_string();
        assert!(e.contains("not an empty directory"), "{e}");
        std::fs::remove_file(out.join("f")).unwrap();
        assert!(!Destination::check(&out).unwrap().as_tar);
    }

    #[test]
    fn a_tar_output_appears_complete_and_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let tree = sample_tree(dir.path());
        let out = dir.path().join("out").join("board.tar");
        std::fs::create_dir(out.parent().unwrap()).unwrap();
        let dest = Destination::check(&out).unwrap();
        let work = WorkDir::create(&dest.parent, &dest.name).unwrap();
        let (_, size) = dest.write(tree, &work, 1_700_000_000, false).unwrap();
        drop(work);
        assert_eq!(size, std::fs::metadata(&out).unwrap().len());
        assert_eq!(mode(&out) & 0o077, 0, "password hashes inside: owner-only");
        // Nothing else is left beside it: no temporary name, no work directory.
        let names: Vec<_> = std::fs::read_dir(out.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["board.tar"]);
        let listed = Command::new("tar").arg("-tvf").arg(&out).output().unwrap();
        let listed = String::from_utf8_lossy(&listed.stdout);
        assert!(listed.contains(" etc/hostname\n"), "{listed}");
    }

    #[test]
    fn a_directory_output_is_unpacked_then_renamed() {
        assert!(rustix::process::geteuid().is_root(), "needs root");
        let dir = tempfile::tempdir().unwrap();
        let tree = sample_tree(dir.path());
        let out = dir.path().join("rootdir");
        let dest = Destination::check(&out).unwrap();
        let work = WorkDir::create(&dest.parent, &dest.name).unwrap();
        dest.write(tree, &work, 1_700_000_000, false).unwrap();
        drop(work);
        assert_eq!(
            std::fs::read_to_string(out.join("etc/hostname")).unwrap(),
            "board\n"
        );
        let partial = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".partial-") || n.contains(".work-"))
            .count();
        assert_eq!(partial, 0);
    }

    #[test]
    fn secrets_are_owner_only_and_appear_with_the_output() {
        let (_dir, path) = crate::testutil::scratch("board.tar.password");
        let secrets = [Secret {
            name: "password".into(),
            path: path.clone(),
            value: "s3cret".into(),
        }];
        let pending = write_secrets(&secrets).unwrap();
        assert!(
            !path.exists(),
            "not under its name before the output is done"
        );
        let files = commit_secrets(pending, &secrets).unwrap();
        assert_eq!(
            (files[0].secret.as_str(), &files[0].path),
            ("password", &path)
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "s3cret\n");
        assert_eq!(mode(&path), 0o600);
    }
}
