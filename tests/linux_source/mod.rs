//! The real kernel tree the kernel tests use: Debian's linux-source package, fetched and extracted once
//! by scripts/linux-source.sh into a cache reused across runs (~140 MB download the first time), or the
//! tree named by BOARDSMITH_LINUX_SRC=DIR. The tests that use it are `#[ignore]`d so that a plain
//! `cargo test` does not download it; scripts/test.sh runs them with `--include-ignored`. They never
//! pass without the tree: a failed download fails them.

use std::path::PathBuf;
use std::sync::OnceLock;

pub fn linux_src() -> PathBuf {
    static SRC: OnceLock<PathBuf> = OnceLock::new();
    SRC.get_or_init(|| {
        if let Some(p) = std::env::var_os("BOARDSMITH_LINUX_SRC") {
            return PathBuf::from(p);
        }
        // It fetches Debian's linux-source-6.1 with apt-get download.
        let out =
            crate::support::run_ok(&mut std::process::Command::new("scripts/linux-source.sh"));
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}
/// Work directory shared by the kernel tests (build directories are reused between runs).
pub fn work_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kconfig-work")
}
