//! The initramfs's module list for a board: the modules derived from the board's device tree for its
//! root medium ([`crate::rootmods`]) plus the profile's `kernel.initramfs_modules`, read from a root
//! filesystem (a [`TarTree`] while `boardsmith rootfs` builds one, a directory or tarball otherwise).
//!
//! mmdebstrap installs the kernel (and initramfs-tools generates the initramfs) before boardsmith can read
//! the kernel's device trees and module metadata, so a customize hook runs boardsmith itself inside the
//! build ([`HOOK_ARG`]): it derives the modules from the new tree, writes `/etc/initramfs-tools/modules`,
//! and regenerates the initramfs if it lacks any of them or the list changed (a board layer's, on a base
//! made with another list: see [`super::layer`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::tartree::{Kind, TarTree};
use crate::profile::{Fs, Profile, Role};
use crate::rootfs::tree::{RootTree, TarKind, glob_with};
use crate::rootmods::{self, Files, Medium, Report, Request};

/// The hidden subcommand the customize hook runs: `boardsmith __initramfs-hook INPUT.json ROOT`.
pub const HOOK_ARG: &str = "__initramfs-hook";
/// Where initramfs-tools reads the module list.
pub const MODULES_FILE: &str = "etc/initramfs-tools/modules";

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error(transparent)]
    Derive(#[from] rootmods::RootmodsError),
    #[error("initramfs {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: rootmods::initramfs::InitramfsError,
    },
    #[error("{context}: {message}")]
    Hook { context: String, message: String },
}

fn hook_err(context: impl Into<String>, message: impl ToString) -> InitramfsError {
    InitramfsError::Hook {
        context: context.into(),
        message: message.to_string(),
    }
}

/// The root filesystem's module, by the root partition's filesystem.
fn root_fs_module(profile: &Profile) -> Option<&'static str> {
    match profile.partition(Role::Root).map(|(_, p)| p.fs) {
        Some(Fs::Ext4) => Some("ext4"),
        Some(Fs::Vfat | Fs::Fat16 | Fs::Fat32) => Some("vfat"),
        _ => None,
    }
}

/// What to derive for this board, if its profile names a medium (validation guarantees a DTB then).
pub fn request(profile: &Profile) -> Option<Request<'_>> {
    let medium = profile.medium?;
    let dtb = profile.kernel.dtb.as_deref()?;
    Some(Request {
        kernel: &profile.kernel.path,
        dtb_dir: &profile.kernel.dtb_dir,
        dtb,
        medium,
        root_fs: root_fs_module(profile),
        extras: &profile.kernel.initramfs_modules,
    })
}

/// The text of /etc/initramfs-tools/modules. It names no board: the initramfs carries it (conf/modules),
/// and boards whose lists are equal share a cached base (see [`super::cache`]).
pub fn modules_file(names: &[String], derived: bool) -> String {
    let mut s = if derived {
        "# boardsmith: modules the initramfs carries so that the board can mount its root filesystem:\n# derived from its device tree (`boardsmith initramfs-modules BOARD --rootfs ROOT` shows why),\n# then kernel.initramfs_modules of its profile.\n"
    } else {
        "# boardsmith: kernel.initramfs_modules of the board's profile; the modules derived from its device\n# tree are added once the kernel is installed.\n"
    }
    .to_string();
    for n in names {
        s.push_str(n);
        s.push('\n');
    }
    s
}

/// A [`TarTree`] as [`Files`]: symlinks followed inside the tree.
pub struct TarFiles<'a>(pub &'a TarTree);

impl Files for TarFiles<'_> {
    fn glob(&self, pattern: &str) -> Result<Vec<String>, String> {
        glob_with(
            pattern,
            |base| {
                let children = self.0.children(base).map_err(|e| e.to_string())?;
                let names = children
                    .iter()
                    .map(|c| c.rsplit('/').next().unwrap_or(c).to_string());
                Ok(Some(names.collect()))
            },
            |path| self.0.exists(path).map_err(|e| e.to_string()),
        )
    }

    fn read(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, String> {
        match self.0.lookup(path).map_err(|e| e.to_string())? {
            Some((_, node)) => match &node.kind {
                Kind::File(d) if d.len() > limit => {
                    Err(format!("{} bytes, more than the {limit} accepted", d.len()))
                }
                Kind::File(_) => self.0.read(path).map_err(|e| e.to_string()),
                _ => Ok(None),
            },
            None => Ok(None),
        }
    }
}

/// A root filesystem directory or tarball as [`Files`] (`build --rootfs`, `initramfs-modules --rootfs`).
pub struct TreeFiles<'a>(pub &'a RootTree);

impl Files for TreeFiles<'_> {
    fn glob(&self, pattern: &str) -> Result<Vec<String>, String> {
        self.0.glob(pattern).map_err(|e| e.to_string())
    }

    fn read(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, String> {
        let Some(real) = self.0.resolve(path).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let size = match self.0 {
            RootTree::Dir(root) => match std::fs::symlink_metadata(root.join(&real)) {
                Ok(m) if m.is_file() => m.len(),
                _ => return Ok(None),
            },
            RootTree::Tar { entries, .. } => match entries.get(&real) {
                Some(TarKind::File { size, .. }) => *size,
                _ => return Ok(None),
            },
        };
        if size > limit {
            return Err(format!("{size} bytes, more than the {limit} accepted"));
        }
        self.0.read(&real).map_err(|e| e.to_string())
    }
}

/// The initramfs of `kernel_version` in the tree (by the profile's `kernel.initrd` pattern) and the
/// module names in it.
pub fn initrd_modules(
    files: &dyn Files,
    pattern: &str,
    kernel_version: &str,
) -> Result<Option<(String, Vec<String>)>, InitramfsError> {
    let all = files
        .glob(pattern)
        .map_err(|m| hook_err(format!("looking for {pattern}"), m))?;
    let Some(path) = all
        .iter()
        .find(|p| rootmods::version_suffix(p, pattern) == kernel_version)
        .or(all.last())
        .cloned()
    else {
        return Ok(None);
    };
    let data = files
        .read(&path, rootmods::MAX_INITRD)
        .map_err(|m| hook_err(format!("reading {path}"), m))?;
    let Some(data) = data else {
        return Ok(None);
    };
    let names =
        rootmods::initramfs::list(data.as_slice()).map_err(|source| InitramfsError::Read {
            path: path.clone(),
            source,
        })?;
    Ok(Some((path, rootmods::initramfs::module_names(&names))))
}

/// Derived modules (with their dependencies) that the initramfs lacks.
pub fn missing(report: &Report, present: &[String]) -> Vec<String> {
    rootmods::derive::missing_from(&report.derivation.load_order, present)
}

/// What the customize hook needs, written by `rootfs` as JSON next to the build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookInput {
    pub kernel: String,
    pub initrd: String,
    pub dtb_dir: String,
    pub dtb: String,
    pub medium: Medium,
    pub root_fs: Option<String>,
    pub extras: Vec<String>,
}

impl HookInput {
    pub fn new(profile: &Profile) -> Option<HookInput> {
        let r = request(profile)?;
        Some(HookInput {
            kernel: r.kernel.to_string(),
            initrd: profile.kernel.initrd.clone()?,
            dtb_dir: r.dtb_dir.to_string(),
            dtb: r.dtb.to_string(),
            medium: r.medium,
            root_fs: r.root_fs.map(str::to_string),
            extras: r.extras.to_vec(),
        })
    }
}

/// Where the hook's input is uploaded inside the chroot (mmdebstrap's `upload` reads the host file from
/// outside any namespace, so the work directory's permissions do not matter).
pub const HOOK_INPUT_IN_CHROOT: &str = "/tmp/boardsmith-initramfs.json";

/// mmdebstrap's customize hooks (shell text): upload the input, then run this program with the hook
/// argument, the uploaded input and the chroot directory. The program must be readable and executable by
/// the user mmdebstrap's hooks run as (root, or the unshared user of a non-root build). Both paths are
/// quoted (mmdebstrap splits special hooks such as `upload` like a shell).
pub fn hook_commands(exe: &Path, input: &Path) -> Vec<String> {
    let q = |p: &Path| super::mmdebstrap::sh_quote(&p.to_string_lossy());
    vec![
        format!("upload {} {HOOK_INPUT_IN_CHROOT}", q(input)),
        format!("{} {HOOK_ARG} \"$1\"{HOOK_INPUT_IN_CHROOT} \"$1\"", q(exe)),
    ]
}

/// Runs inside mmdebstrap's customize phase: derive from the chroot `root`, write the module list, and
/// regenerate the initramfs (`update-initramfs -u`) if it lacks a derived module. Returns the report.
pub fn run_hook(input: &Path, root: &Path) -> Result<Report, InitramfsError> {
    let text =
        std::fs::read(input).map_err(|e| hook_err(format!("reading {}", input.display()), e))?;
    if text.len() > 1 << 20 {
        return Err(hook_err(
            format!("{}", input.display()),
            "larger than 1 MiB",
        ));
    }
    let inp: HookInput =
        serde_json::from_slice(&text).map_err(|e| hook_err(format!("{}", input.display()), e))?;
    // Uploaded into the chroot: leave nothing behind there.
    if input.starts_with(root) {
        let _ = std::fs::remove_file(input);
    }
    let tree = RootTree::open(root).map_err(|e| hook_err("the chroot", e))?;
    let files = TreeFiles(&tree);
    let req = Request {
        kernel: &inp.kernel,
        dtb_dir: &inp.dtb_dir,
        dtb: &inp.dtb,
        medium: inp.medium,
        root_fs: inp.root_fs.as_deref(),
        extras: &inp.extras,
    };
    let report = rootmods::analyze(&files, &req)?;
    // The module list, in place of the extras-only one uploaded before the kernel was installed.
    let dir = root.join("etc/initramfs-tools");
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        _ => {
            return Err(hook_err(
                "the chroot",
                format!("{} is not a directory", dir.display()),
            ));
        }
    }
    let list = root.join(MODULES_FILE);
    let tmp = dir.join(".modules.boardsmith");
    let text = modules_file(&report.initramfs_modules, true);
    // A board layer changes the list its base's initramfs was made with: regenerate it then too.
    let changed = std::fs::read(&list).ok().as_deref() != Some(text.as_bytes());
    std::fs::write(&tmp, &text).map_err(|e| hook_err(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, &list).map_err(|e| hook_err(format!("writing {}", list.display()), e))?;

    let version = &report.kernel_version;
    if !version
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
    {
        return Err(hook_err(
            "the chroot",
            format!("kernel version {version:?} has unexpected characters"),
        ));
    }
    let lacking = match initrd_modules(&files, &inp.initrd, version)? {
        Some((_, present)) => missing(&report, &present),
        None => report.derivation.load_order.clone(),
    };
    if !lacking.is_empty() || changed {
        eprintln!(
            "I: boardsmith: regenerating the initramfs of {version} for {} (lacking {}; module list {})",
            inp.dtb,
            if lacking.is_empty() {
                "nothing".to_string()
            } else {
                lacking.join(" ")
            },
            if changed { "changed" } else { "unchanged" }
        );
        let st = std::process::Command::new("chroot")
            .arg(root)
            .args(["update-initramfs", "-u", "-k", version])
            .status()
            .map_err(|e| hook_err("running chroot update-initramfs", e))?;
        if !st.success() {
            return Err(hook_err(
                "chroot update-initramfs",
                format!("exited with {st}"),
            ));
        }
    }
    Ok(report)
}

/// Where `rootfs` writes the hook's input.
pub fn hook_input_path(work: &Path) -> PathBuf {
    work.join("initramfs-hook.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_commands_quote_both_paths() {
        let h = hook_commands(
            Path::new("/opt/it's/boardsmith"),
            Path::new("/w/initramfs-hook.json"),
        );
        assert_eq!(
            h,
            [
                "upload '/w/initramfs-hook.json' /tmp/boardsmith-initramfs.json",
                "'/opt/it'\\''s/boardsmith' __initramfs-hook \"$1\"/tmp/boardsmith-initramfs.json \"$1\""
            ]
        );
        assert_eq!(
            hook_commands(Path::new("/a b/boardsmith"), Path::new("/w d/x.json")),
            [
                "upload '/w d/x.json' /tmp/boardsmith-initramfs.json",
                "'/a b/boardsmith' __initramfs-hook \"$1\"/tmp/boardsmith-initramfs.json \"$1\""
            ]
        );
    }

    #[test]
    fn module_list_file() {
        let t = modules_file(&["sunxi-mmc".into(), "ext4".into()], true);
        assert!(t.ends_with("\nsunxi-mmc\next4\n"), "{t}");
        assert!(t.lines().take_while(|l| l.starts_with('#')).count() >= 2);
    }
}
