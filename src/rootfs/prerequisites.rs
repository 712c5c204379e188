//! What the build machine needs before mmdebstrap runs: mmdebstrap itself, and for a foreign
//! architecture qemu-user-static registered with a mounted binfmt_misc. Each failure says exactly what
//! to install or run.

use std::path::{Path, PathBuf};

use crate::profile::Arch;

/// Where binfmt_misc is normally mounted. Tests point the check elsewhere (BOARDSMITH_BINFMT_DIR).
pub const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

#[derive(Debug, thiserror::Error)]
pub enum PrerequisiteError {
    #[error(
        "`{tool}` is not installed (not found in PATH); install it with: apt-get install {package}"
    )]
    MissingTool { tool: String, package: String },
    #[error(
        "binfmt_misc is not mounted at {dir}, so {arch} programs cannot run on this {host} machine; mount it and register the QEMU handlers:\n  mount -t binfmt_misc binfmt_misc {dir}\n  update-binfmts --enable\n(packages: apt-get install qemu-user-static binfmt-support)"
    )]
    BinfmtNotMounted {
        dir: PathBuf,
        arch: String,
        host: String,
    },
    #[error("binfmt_misc at {dir} is disabled; enable it with: echo 1 > {dir}/status")]
    BinfmtDisabled { dir: PathBuf },
    #[error(
        "no QEMU handler for {arch} ({entry}) is registered in {dir}; install and register it with:\n  apt-get install qemu-user-static binfmt-support\n  update-binfmts --enable {entry}"
    )]
    NoHandler {
        dir: PathBuf,
        arch: String,
        entry: String,
    },
    #[error(
        "the {arch} handler {dir}/{entry} is disabled; enable it with: update-binfmts --enable {entry}"
    )]
    HandlerDisabled {
        dir: PathBuf,
        arch: String,
        entry: String,
    },
    #[error(
        "the {arch} handler {dir}/{entry} names the interpreter {interpreter}, which does not exist; reinstall it with: apt-get install --reinstall qemu-user-static && update-binfmts --enable {entry}"
    )]
    NoInterpreter {
        dir: PathBuf,
        arch: String,
        entry: String,
        interpreter: String,
    },
}

pub fn require_tool(tool: &str, package: &str) -> Result<PathBuf, PrerequisiteError> {
    crate::tools::which(tool).ok_or_else(|| PrerequisiteError::MissingTool {
        tool: tool.into(),
        package: package.into(),
    })
}

/// The machine's own architecture in Debian's naming.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "armhf",
        "x86" => "i386",
        other => other,
    }
}

/// The binfmt_misc entry QEMU registers for an architecture.
fn binfmt_entry(arch: Arch) -> &'static str {
    match arch {
        Arch::Armhf => "qemu-arm",
        Arch::Arm64 => "qemu-aarch64",
    }
}

/// Can this machine run `arch` binaries without QEMU?
fn runs_natively(arch: Arch) -> bool {
    host_arch() == arch.debian()
}

/// Checks that `arch` programs can run here: natively, or through a registered QEMU handler.
pub fn check_foreign_arch(arch: Arch, binfmt_dir: &Path) -> Result<(), PrerequisiteError> {
    if runs_natively(arch) {
        return Ok(());
    }
    let dir = binfmt_dir.to_path_buf();
    let entry = binfmt_entry(arch).to_string();
    let arch_name = arch.debian().to_string();
    let status = std::fs::read_to_string(dir.join("status")).map_err(|_| {
        PrerequisiteError::BinfmtNotMounted {
            dir: dir.clone(),
            arch: arch_name.clone(),
            host: host_arch().into(),
        }
    })?;
    if status.trim() != "enabled" {
        return Err(PrerequisiteError::BinfmtDisabled { dir });
    }
    let text =
        std::fs::read_to_string(dir.join(&entry)).map_err(|_| PrerequisiteError::NoHandler {
            dir: dir.clone(),
            arch: arch_name.clone(),
            entry: entry.clone(),
        })?;
    if text.lines().next().map(str::trim) != Some("enabled") {
        return Err(PrerequisiteError::HandlerDisabled {
            dir,
            arch: arch_name,
            entry,
        });
    }
    let interpreter = text
        .lines()
        .find_map(|l| l.strip_prefix("interpreter "))
        .map(str::trim)
        .unwrap_or("")
        .to_string();
    // With the F flag the kernel holds the interpreter open, but a missing file still means a broken
    // installation that the next registration will not survive.
    if interpreter.is_empty() || !Path::new(&interpreter).exists() {
        return Err(PrerequisiteError::NoInterpreter {
            dir,
            arch: arch_name,
            entry,
            interpreter,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An architecture this host cannot run natively (the checks below are about foreign ones).
    fn foreign() -> Arch {
        if host_arch() == Arch::Arm64.debian() {
            Arch::Armhf
        } else {
            Arch::Arm64
        }
    }

    #[test]
    fn missing_dir_says_how_to_mount() {
        let e = check_foreign_arch(foreign(), Path::new("/nonexistent/binfmt")).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("mount -t binfmt_misc binfmt_misc /nonexistent/binfmt"),
            "{m}"
        );
        assert!(m.contains("qemu-user-static"), "{m}");
    }

    #[test]
    fn handler_states() {
        let arch = foreign();
        let entry = binfmt_entry(arch);
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("status"), "enabled\n").unwrap();
        let e = check_foreign_arch(arch, d.path()).unwrap_err().to_string();
        assert!(
            e.contains(&format!("update-binfmts --enable {entry}")),
            "{e}"
        );
        std::fs::write(d.path().join(entry), "disabled\ninterpreter /x\n").unwrap();
        let e = check_foreign_arch(arch, d.path()).unwrap_err().to_string();
        assert!(e.contains("is disabled"), "{e}");
        std::fs::write(
            d.path().join(entry),
            "enabled\ninterpreter /nonexistent/qemu\n",
        )
        .unwrap();
        let e = check_foreign_arch(arch, d.path()).unwrap_err().to_string();
        assert!(e.contains("--reinstall qemu-user-static"), "{e}");
        let sh = crate::tools::which("sh").unwrap();
        std::fs::write(
            d.path().join(entry),
            format!("enabled\ninterpreter {}\nflags: F\n", sh.display()),
        )
        .unwrap();
        check_foreign_arch(arch, d.path()).unwrap();
    }
}
