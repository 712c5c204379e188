//! Running the kernel's own build system on a source tree without writing into it: every `make` runs
//! with `-C SRC O=BUILD_DIR`, where BUILD_DIR lives under boardsmith's work directory; the tree is
//! checked for being a clean kernel tree first, and the work directory may not lie inside it. Output
//! of every command goes to a log file; the last lines are kept for error messages.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::profile::Arch;

#[derive(Debug, thiserror::Error)]
pub enum KbuildError {
    #[error("--kernel-src {}: not a directory", path.display())]
    NotADir { path: PathBuf },
    #[error("--kernel-src {}: not a kernel source tree ({missing} is missing)", path.display())]
    NotAKernelTree { path: PathBuf, missing: String },
    #[error(
        "--kernel-src {}: the tree is not clean ({what} exists); kbuild refuses out-of-tree builds of it. \
         Run `make mrproper` there or use a clean copy; boardsmith never writes into the tree",
        path.display()
    )]
    NotClean { path: PathBuf, what: String },
    #[error(
        "work directory {} is inside the kernel source tree {}; boardsmith never writes into the tree. \
         Pick another --work-dir",
        work.display(),
        src.display()
    )]
    WorkDirInsideSource { work: PathBuf, src: PathBuf },
    #[error(
        "defconfig `{name}` does not exist for ARCH={arch} (no arch/{arch}/configs/{name}); available: {available}"
    )]
    UnknownDefconfig {
        name: String,
        arch: String,
        available: String,
    },
    #[error("`{tool}` not found in PATH; install {package} (scripts/install-deps.sh does)")]
    ToolMissing { tool: String, package: String },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}); last lines:\n{tail}\nfull log: {}", log.display())]
    MakeFailed {
        command: String,
        status: String,
        tail: String,
        log: PathBuf,
    },
}

impl KbuildError {
    /// Whether the user gave bad input (exit 2) rather than the operation failing (exit 1).
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            KbuildError::NotADir { .. }
                | KbuildError::NotAKernelTree { .. }
                | KbuildError::NotClean { .. }
                | KbuildError::WorkDirInsideSource { .. }
                | KbuildError::UnknownDefconfig { .. }
        )
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> KbuildError + 'a {
    move |source| KbuildError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// boardsmith's default work directory: the cache directory ([`crate::output::user_cache_dir`]).
pub fn default_work_dir() -> PathBuf {
    crate::output::user_cache_dir()
}

/// The Debian package that provides a tool.
fn package_for(tool: &str) -> String {
    match tool {
        "arm-linux-gnueabihf-gcc" => "gcc-arm-linux-gnueabihf".into(),
        "aarch64-linux-gnu-gcc" => "gcc-aarch64-linux-gnu".into(),
        "gcc" | "make" => "build-essential".into(),
        "depmod" => "kmod".into(),
        other => other.into(),
    }
}

/// Checks that every tool is in PATH.
pub fn require_tools(tools: &[&str]) -> Result<(), KbuildError> {
    for t in tools {
        if crate::tools::which(t).is_none() {
            return Err(KbuildError::ToolMissing {
                tool: t.to_string(),
                package: package_for(t),
            });
        }
    }
    Ok(())
}

/// Checks that `src` is a clean kernel tree with `defconfig` for `arch`; returns its canonical path.
pub fn validate_tree(src: &Path, arch: Arch, defconfig: &str) -> Result<PathBuf, KbuildError> {
    if !src.is_dir() {
        return Err(KbuildError::NotADir {
            path: src.to_path_buf(),
        });
    }
    let src = src
        .canonicalize()
        .map_err(io("cannot resolve --kernel-src", src))?;
    let karch = arch.kernel_arch();
    for needed in [
        "Makefile",
        "Kconfig",
        "scripts/kconfig",
        &format!("arch/{karch}/Kconfig"),
    ] {
        if !src.join(needed).exists() {
            return Err(KbuildError::NotAKernelTree {
                path: src,
                missing: needed.to_string(),
            });
        }
    }
    let arch_generated = format!("arch/{karch}/include/generated");
    for dirty in [
        ".config",
        "include/config",
        "include/generated",
        &arch_generated,
    ] {
        if src.join(dirty).exists() {
            return Err(KbuildError::NotClean {
                path: src,
                what: dirty.to_string(),
            });
        }
    }
    let configs = src.join("arch").join(karch).join("configs");
    if defconfig != "defconfig" && !configs.join(defconfig).is_file() {
        let mut available: Vec<String> = std::fs::read_dir(&configs)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        available.sort();
        return Err(KbuildError::UnknownDefconfig {
            name: defconfig.to_string(),
            arch: karch.to_string(),
            available: available.join(", "),
        });
    }
    Ok(src)
}

/// `VERSION.PATCHLEVEL.SUBLEVEL[EXTRAVERSION]` from the tree's top Makefile.
pub fn kernel_version(src: &Path) -> Option<String> {
    let text = std::fs::read_to_string(src.join("Makefile")).ok()?;
    let var = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    Some(format!(
        "{}.{}.{}{}",
        var("VERSION")?,
        var("PATCHLEVEL")?,
        var("SUBLEVEL")?,
        var("EXTRAVERSION").unwrap_or_default()
    ))
}

/// The canonical form of a path that may not exist yet: its deepest existing ancestor resolved, the
/// rest appended.
fn resolve_nonexistent(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut rest = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if let Ok(c) = cur.canonicalize() {
            let mut out = c;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                cur = parent;
            }
            _ => return abs,
        }
    }
}

/// A build directory for one (board, tree, architecture), with its log and lock.
pub struct Kbuild {
    pub srctree: PathBuf,
    pub objtree: PathBuf,
    pub arch: Arch,
    log: Arc<Mutex<File>>,
    pub log_path: PathBuf,
    _lock: File,
}

/// Creates (or reuses) the build directory under `work_dir` and locks it; `on_wait` is called if
/// another boardsmith holds the lock.
pub fn open(
    srctree: &Path,
    arch: Arch,
    work_dir: &Path,
    board: &str,
    log_name: &str,
    log_path: Option<&Path>,
    on_wait: &dyn Fn(&Path),
) -> Result<Kbuild, KbuildError> {
    // Checked before anything is created, so that a refused work directory leaves no trace.
    let resolved = resolve_nonexistent(work_dir);
    if resolved.starts_with(srctree) {
        return Err(KbuildError::WorkDirInsideSource {
            work: resolved,
            src: srctree.to_path_buf(),
        });
    }
    std::fs::create_dir_all(work_dir).map_err(io("cannot create work directory", work_dir))?;
    let work = work_dir
        .canonicalize()
        .map_err(io("cannot resolve work directory", work_dir))?;
    if work.starts_with(srctree) {
        return Err(KbuildError::WorkDirInsideSource {
            work,
            src: srctree.to_path_buf(),
        });
    }
    let mut h = Sha256::new();
    h.update(srctree.as_os_str().as_encoded_bytes());
    let tag = hex::encode(&h.finalize()[..4]);
    let objtree = work
        .join("kbuild")
        .join(format!("{board}-{}-{tag}", arch.kernel_arch()));
    std::fs::create_dir_all(&objtree).map_err(io("cannot create build directory", &objtree))?;
    let lock_path = objtree.join(".boardsmith.lock");
    let lock = crate::output::lock_waiting(&lock_path, || on_wait(&objtree))
        .map_err(io("cannot lock build directory", &lock_path))?;
    let log_path = log_path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| objtree.join(log_name));
    let log = File::create(&log_path).map_err(io("cannot create log", &log_path))?;
    Ok(Kbuild {
        srctree: srctree.to_path_buf(),
        objtree,
        arch,
        log: Arc::new(Mutex::new(log)),
        log_path,
        _lock: lock,
    })
}

impl Kbuild {
    pub fn config_path(&self) -> PathBuf {
        self.objtree.join(".config")
    }

    /// Appends a line to the log.
    pub fn log_line(&self, line: &str) {
        if let Ok(mut f) = self.log.lock() {
            let _ = writeln!(f, "{line}");
        }
    }

    fn command(&self, args: &[String]) -> (Command, String) {
        let mut cmd = Command::new("make");
        let mut all: Vec<String> = vec![
            "-C".into(),
            self.srctree.display().to_string(),
            format!("O={}", self.objtree.display()),
            format!("ARCH={}", self.arch.kernel_arch()),
            format!("CROSS_COMPILE={}", self.arch.cross_compile()),
        ];
        all.extend(args.iter().cloned());
        cmd.args(&all);
        // Nothing from the caller's environment may redirect output into the tree or change the
        // configuration file kbuild reads; cargo's or an outer make's jobserver must not leak in.
        for v in [
            "KBUILD_OUTPUT",
            "KCONFIG_CONFIG",
            "KBUILD_DEFCONFIG",
            "KCONFIG_ALLCONFIG",
            "ARCH",
            "CROSS_COMPILE",
            "MAKEFLAGS",
            "MFLAGS",
            "MAKELEVEL",
            "MAKEOVERRIDES",
            "CARGO_MAKEFLAGS",
            "KBUILD_EXTMOD",
            "O",
        ] {
            cmd.env_remove(v);
        }
        cmd.env("LC_ALL", "C");
        let shown = format!("make {}", all.join(" "));
        (cmd, shown)
    }

    /// Runs `make` with `args` (targets and variables); each output line goes to the log and `on_line`.
    pub fn make(&self, args: &[String], on_line: &mut dyn FnMut(&str)) -> Result<(), KbuildError> {
        let (mut cmd, shown) = self.command(args);
        self.log_line(&format!("$ {shown}"));
        let (reader, writer) =
            std::io::pipe().map_err(io("cannot create pipe for", &self.objtree))?;
        let writer2 = writer
            .try_clone()
            .map_err(io("cannot create pipe for", &self.objtree))?;
        cmd.stdin(Stdio::null()).stdout(writer).stderr(writer2);
        let mut child = cmd
            .spawn()
            .map_err(io("cannot run make in", &self.srctree))?;
        // The parent's copies of the write ends are in `cmd`; drop it so EOF arrives when make exits.
        drop(cmd);
        let mut tail: VecDeque<String> = VecDeque::with_capacity(40);
        for line in BufReader::new(reader).split(b'\n') {
            let Ok(bytes) = line else { break };
            let line = String::from_utf8_lossy(&bytes);
            self.log_line(&line);
            if tail.len() == 40 {
                tail.pop_front();
            }
            tail.push_back(line.to_string());
            on_line(&line);
        }
        let status = child
            .wait()
            .map_err(io("cannot wait for make in", &self.srctree))?;
        self.log_line(&format!("# exit: {status}"));
        if !status.success() {
            return Err(KbuildError::MakeFailed {
                command: shown,
                status: status.to_string(),
                tail: tail
                    .iter()
                    .map(|l| format!("  {l}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                log: self.log_path.clone(),
            });
        }
        Ok(())
    }

    /// Runs `make -s TARGET` and returns its trimmed output (e.g. `kernelrelease`).
    pub fn make_query(&self, target: &str) -> Result<String, KbuildError> {
        let mut out = String::new();
        self.make(&["-s".into(), target.into()], &mut |l| {
            if !l.trim().is_empty() {
                out = l.trim().to_string();
            }
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_tree(extra: &[&str]) -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        for f in [
            "Makefile",
            "Kconfig",
            "arch/arm/Kconfig",
            "arch/arm/configs/sunxi_defconfig",
        ]
        .iter()
        .chain(extra)
        {
            let p = t.path().join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(
                p,
                "VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 99\nEXTRAVERSION =\n",
            )
            .expect("write");
        }
        std::fs::create_dir_all(t.path().join("scripts/kconfig")).expect("mkdir");
        t
    }

    #[test]
    fn validation_rules() {
        let t = fake_tree(&[]);
        assert!(validate_tree(t.path(), Arch::Armhf, "sunxi_defconfig").is_ok());
        assert_eq!(kernel_version(t.path()).as_deref(), Some("6.1.99"));
        let e = validate_tree(t.path(), Arch::Armhf, "nope_defconfig").expect_err("unknown");
        assert!(e.to_string().contains("available: sunxi_defconfig"), "{e}");
        assert!(e.is_input_error());
        let e = validate_tree(t.path(), Arch::Arm64, "defconfig").expect_err("no arm64");
        assert!(
            e.to_string().contains("arch/arm64/Kconfig is missing"),
            "{e}"
        );
        let e =
            validate_tree(&t.path().join("Makefile"), Arch::Armhf, "defconfig").expect_err("file");
        assert!(matches!(e, KbuildError::NotADir { .. }));
        let dirty = fake_tree(&[".config"]);
        let e = validate_tree(dirty.path(), Arch::Armhf, "sunxi_defconfig").expect_err("dirty");
        assert!(e.to_string().contains("not clean (.config exists)"), "{e}");
    }

    #[test]
    fn work_dir_inside_the_tree_is_refused() {
        let t = fake_tree(&[]);
        let src = validate_tree(t.path(), Arch::Armhf, "sunxi_defconfig").expect("valid");
        let e = open(
            &src,
            Arch::Armhf,
            &src.join("out"),
            "b",
            "x.log",
            None,
            &|_| {},
        )
        .err()
        .expect("refused");
        assert!(matches!(e, KbuildError::WorkDirInsideSource { .. }), "{e}");
        assert!(!src.join("out").join("kbuild").exists());
    }

    #[test]
    fn missing_tools_name_their_package() {
        let e = require_tools(&["arm-linux-gnueabihf-gcc-does-not-exist"]).expect_err("missing");
        assert!(e.to_string().contains("not found in PATH"));
    }
}
