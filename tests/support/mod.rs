//! The one way the integration tests start the boardsmith binary, and the one sha256 helper.
//!
//! Every launch gets the same clean environment ([`clean_env`]): none of the `BOARDSMITH_*` settings a
//! developer's shell may hold (a board directory, a work or package cache, password hashes, a binfmt
//! directory), and a fixed `SOURCE_DATE_EPOCH` so outputs are reproducible. A test that needs one of
//! them sets it on the command afterwards. Used by every integration test except tests/rootfs_debian.rs
//! (which keeps its own launcher in tests/rootfs_support/).
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

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

/// Runs `cmd` (boardsmith or a tool) and asserts that it succeeded, showing its command line,
/// standard error and standard output otherwise.
pub fn run_ok(cmd: &mut Command) -> Output {
    run_tool(cmd, "")
}

/// [`run_ok`] for a tool that may be missing: `install` says what provides it, in the messages.
pub fn run_tool(cmd: &mut Command, install: &str) -> Output {
    let hint = if install.is_empty() {
        String::new()
    } else {
        format!(" ({install})")
    };
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}{hint}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}){hint}:\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    o
}

/// What a run that had to fail left: its exit code (-1 for a signal) and its output.
pub struct Failed {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Failed {
    /// Asserts the exit code and that standard error holds each of `wanted`, showing it otherwise.
    pub fn expect(&self, code: i32, wanted: &[&str]) -> &Self {
        assert_eq!(self.code, code, "exit code; stderr:\n{}", self.stderr);
        for w in wanted {
            assert!(
                self.stderr.contains(w),
                "stderr lacks {w:?}:\n{}",
                self.stderr
            );
        }
        self
    }
}

/// Runs `cmd` and asserts that it failed, showing its command line and output if it succeeded.
pub fn run_err(cmd: &mut Command) -> Failed {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success(),
        "{cmd:?} unexpectedly succeeded:\n{stderr}{stdout}"
    );
    Failed {
        code: o.status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// `boardsmith build BOARD --progress none --rootfs ROOTFS -o OUT EXTRA...` (`BOARD` a name or a
/// profile file; `--json` in `extra` for the report on stdout).
pub fn build_cmd(board: &str, rootfs: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = boardsmith();
    c.args(["build", board, "--progress", "none", "--rootfs"])
        .arg(rootfs)
        .arg("-o")
        .arg(out)
        .args(extra);
    c
}

/// [`build_cmd`], asserting that it succeeded.
pub fn build_ok(board: &str, rootfs: &Path, out: &Path, extra: &[&str]) -> Output {
    run_ok(&mut build_cmd(board, rootfs, out, extra))
}

/// [`build_cmd`], asserting that it failed with nothing on stdout and nothing left in `out`.
pub fn build_err(board: &str, rootfs: &Path, out: &Path, extra: &[&str]) -> Failed {
    let f = run_err(&mut build_cmd(board, rootfs, out, extra));
    assert!(
        f.stdout.trim().is_empty(),
        "nothing is reported on stdout on failure: {}",
        f.stdout
    );
    // Nothing that looks finished is left behind.
    if out.exists() {
        let left: Vec<_> = std::fs::read_dir(out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "files left in {}: {left:?}", out.display());
    }
    f
}

/// Sends `sig` to `child` (boardsmith with piped output) and asserts that it ends with exit status
/// 128 + `sig`, showing its standard error otherwise; returns its output.
pub fn stop_with(child: std::process::Child, sig: i32) -> Output {
    // SAFETY: kill(2) has no memory effects; the pid is our own child, not yet waited for.
    unsafe { libc::kill(child.id() as i32, sig) };
    let o = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for boardsmith: {e}"));
    assert_eq!(
        o.status.code(),
        Some(128 + sig),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Asserts that `text` (`what` names it in the message) contains each of `wanted`.
pub fn assert_mentions(text: &str, what: &str, wanted: &[&str]) {
    for w in wanted {
        assert!(text.contains(w), "{what} lacks {w:?}:\n{text}");
    }
}

/// Asserts that each of `wanted` is one of `items`, naming the missing one (and listing `items` when
/// there are few of them: a kernel .config has thousands of lines).
pub fn assert_has_all<S: AsRef<str> + std::fmt::Debug>(items: &[S], wanted: &[&str]) {
    for w in wanted {
        if !items.iter().any(|i| i.as_ref() == *w) {
            match items.len() {
                0..=40 => panic!("{w} not in {items:?}"),
                n => panic!("{w} not among the {n} items"),
            }
        }
    }
}

/// The value for `key` made once per test run by `make` and kept in `cache`. The first caller makes it
/// holding the lock, so two tests never make it (or anything else kept there) at the same time.
pub fn once_per_run<T: Clone>(
    cache: &OnceLock<Mutex<HashMap<String, T>>>,
    key: &str,
    make: impl FnOnce() -> T,
) -> T {
    let mut made = cache
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    made.entry(key.to_string()).or_insert_with(make).clone()
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

/// Sets the size field of `member`'s header in the tar archive `tar` to `size` (GNU base-256 for sizes
/// beyond octal's 8 GiB) and fixes the header checksum: a header that lies about its data. Returns the header's offset and the archive's length.
pub fn claim_size(tar: &Path, member: &str, size: u64) -> (u64, u64) {
    let mut b = std::fs::read(tar).expect("read");
    let mut at = 0;
    loop {
        assert!(at + 512 <= b.len(), "{member} not in {}", tar.display());
        let h = &b[at..at + 512];
        let name = String::from_utf8_lossy(&h[..100])
            .trim_end_matches('\0')
            .to_string();
        let octal = String::from_utf8_lossy(&h[124..136])
            .trim_matches(['\0', ' '])
            .to_string();
        let len = u64::from_str_radix(&octal, 8).unwrap_or(0);
        if name == member {
            break;
        }
        at += 512 + len.div_ceil(512) as usize * 512;
    }
    let h = &mut b[at..at + 512];
    h[124] = 0x80;
    h[125..128].fill(0);
    h[128..136].copy_from_slice(&size.to_be_bytes());
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&c| u32::from(c)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let len = b.len() as u64;
    std::fs::write(tar, b).expect("write");
    (at as u64, len)
}

/// A PNG decoded by Python's zlib (tests/fixtures/png_stats.py: chunk CRCs, filters, pixels), with
/// its options `args` (`--region X0,Y0,X1,Y1`, `--band ROWS`...): the statistics, as JSON.
pub fn png_stats(png: &Path, args: &[&str]) -> serde_json::Value {
    let o = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/png_stats.py"))
        .arg(png)
        .args(args)
        .output()
        .expect("python3 (package python3)");
    assert!(
        o.status.success(),
        "{} does not decode: {}",
        png.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Standard error of a `--progress json` run: one JSON object per line (a line that is not one fails
/// the test).
pub fn json_lines(stderr: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

/// The string `field` of each of `lines` whose `event` is `event`, in order.
pub fn event_texts<'a>(lines: &'a [serde_json::Value], event: &str, field: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter(|v| v["event"] == event)
        .filter_map(|v| v[field].as_str())
        .collect()
}
