//! The real kernel tree the kernel tests use: Debian's linux-source package, fetched and extracted once
//! by scripts/linux-source.sh into a cache reused across runs.
//!
//! Opt-in: set BOARDSMITH_KERNEL_TESTS=1 (scripts/test.sh, and so CI, does) to fetch it, or
//! BOARDSMITH_LINUX_SRC=DIR to use an extracted tree. Without either, these tests report that they
//! were skipped and pass.

use std::path::PathBuf;
use std::sync::OnceLock;

pub fn linux_src(test: &str) -> Option<PathBuf> {
    static SRC: OnceLock<Option<PathBuf>> = OnceLock::new();
    let src = SRC
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("BOARDSMITH_LINUX_SRC") {
                return Some(PathBuf::from(p));
            }
            if std::env::var("BOARDSMITH_KERNEL_TESTS").as_deref() != Ok("1") {
                return None;
            }
            let out = std::process::Command::new("scripts/linux-source.sh")
                .output()
                .expect("run scripts/linux-source.sh");
            assert!(
                out.status.success(),
                "scripts/linux-source.sh failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
        .clone();
    if src.is_none() {
        eprintln!(
            "{test}: skipped (set BOARDSMITH_KERNEL_TESTS=1 to fetch Debian's linux-source, or \
             BOARDSMITH_LINUX_SRC=DIR)"
        );
    }
    src
}

/// Work directory shared by the kernel tests (build directories are reused between runs).
pub fn work_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kconfig-work")
}
