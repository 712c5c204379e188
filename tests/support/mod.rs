//! The one way the integration tests start the boardsmith binary, and the one sha256 helper.
//!
//! Every launch gets the same clean environment ([`clean_env`]): none of the `BOARDSMITH_*` settings a
//! developer's shell may hold (a board directory, a work or package cache, password hashes, a binfmt
//! directory), and a fixed `SOURCE_DATE_EPOCH` so outputs are reproducible. A test that needs one of
//! them sets it on the command afterwards. Used by every integration test except tests/rootfs_debian.rs
//! (which keeps its own launcher in tests/rootfs_support/).
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `SOURCE_DATE_EPOCH` every launch gets (2023-11-14 22:13:20 UTC).
pub const EPOCH: &str = "1700000000";

/// Every variable boardsmith reads that a user may set: removed for each launch.
const USER_SETTINGS: &[&str] = &[
    "BOARDSMITH_BOARDS",
    "BOARDSMITH_WORK_DIR",
    "BOARDSMITH_CACHE",
    "BOARDSMITH_PASSWORD_HASH",
    "BOARDSMITH_DROIDMOTE_PASSWORD",
    "BOARDSMITH_BINFMT_DIR",
];

/// The binary cargo built for these tests.
pub fn bin_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_boardsmith"))
}

/// Gives `cmd` the clean environment of every launch (also for a command that runs the binary
/// under another program: strace, setpriv, nice...).
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    for v in USER_SETTINGS {
        cmd.env_remove(v);
    }
    cmd.env("SOURCE_DATE_EPOCH", EPOCH)
}

/// `boardsmith` with the clean environment.
pub fn boardsmith() -> Command {
    let mut c = Command::new(bin_path());
    clean_env(&mut c);
    c
}

/// `boardsmith` with the clean environment, as an `assert_cmd` command.
pub fn boardsmith_cmd() -> assert_cmd::Command {
    assert_cmd::Command::from_std(boardsmith())
}

/// The binary under another program (`program ARGS... boardsmith`), with the clean environment.
pub fn under(program: impl AsRef<OsStr>, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args).arg(bin_path());
    clean_env(&mut c);
    c
}

/// Runs `cmd` (boardsmith or a tool) and asserts that it succeeded, showing its command line and
/// standard error otherwise.
pub fn run_ok(cmd: &mut Command) -> Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// The sha256 of a file or device, by sha256sum (an implementation independent of boardsmith's).
pub fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run sha256sum (coreutils): {e}"));
    assert!(
        out.status.success(),
        "sha256sum {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}
