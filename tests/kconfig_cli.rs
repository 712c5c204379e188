//! `boardsmith kconfig` / `boardsmith kernel` through the real binary, without a kernel tree: merging
//! (golden outputs), and every input rule that must fail before any kernel work starts.

mod support;

use support::{boardsmith, run_ok};

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

fn bs() -> Command {
    support::boardsmith_cmd()
}

fn fixture(p: &str) -> String {
    format!("tests/fixtures/kconfig/{p}")
}

fn golden(p: &str) -> String {
    std::fs::read_to_string(fixture(p)).expect("golden file")
}

/// Runs `cmd` and asserts that it exits with `code` and that its standard error says `needle`.
#[track_caller]
fn fails_with(cmd: &mut Command, code: i32, needle: &str) -> assert_cmd::assert::Assert {
    cmd.assert()
        .code(code)
        .stderr(predicate::str::contains(needle))
}

#[test]
fn merge_output_and_notes_match_the_goldens() {
    // Profile-relative fragment paths, override warning naming both fragments and values, redundant
    // entries with -v, `=n` equal to `is not set`, 17 equal to 0x11.
    let out = run_ok(boardsmith().args(["kconfig", &fixture("board.toml"), "-v"]));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        golden("board.merged.golden")
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        golden("board.stderr.golden")
    );
}

#[test]
fn redundancies_only_with_verbose() {
    let out = run_ok(boardsmith().args(["kconfig", &fixture("board.toml")]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: CONFIG_USB_USBNET is redefined"),
        "{err}"
    );
    assert!(!err.contains("redundant"), "{err}");
}

#[test]
fn embedded_board_fragments_merge_in_profile_order() {
    let out = run_ok(boardsmith().args(["kconfig", "cubieboard"]));
    let text = String::from_utf8_lossy(&out.stdout);
    let order: Vec<usize> = [
        "# from uinput",
        "# from usb-net",
        "# from usb-audio",
        "# from usb-bluetooth",
    ]
    .iter()
    .map(|h| {
        text.find(h)
            .unwrap_or_else(|| panic!("{h} missing:\n{text}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    for sym in [
        "CONFIG_INPUT_UINPUT=m",
        "CONFIG_USB_NET_AX8817X=m",
        "CONFIG_USB_NET_CDCETHER=m",
        "CONFIG_USB_NET_DM9601=m",
        "CONFIG_USB_NET_SMSC95XX=m",
        "CONFIG_USB_NET_NET1080=m",
        "CONFIG_USB_NET_ZAURUS=m",
        "# boardsmith: optional vendor driver of the linux-sunxi 3.0 tree, not in mainline\nCONFIG_USB_NET_QF9700=m",
        "CONFIG_SND_USB_AUDIO=m",
        "CONFIG_BT=m",
        "CONFIG_BT_HCIBTUSB=m",
    ] {
        assert!(text.contains(sym), "{sym} missing:\n{text}");
    }
    // No board's fragments conflict with each other.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn out_file_equals_stdout_and_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("merged.config");
    bs().args(["kconfig", &fixture("board.toml"), "-o"])
        .arg(&file)
        .assert()
        .success()
        .stdout("");
    let written = std::fs::read_to_string(&file).expect("written");
    assert_eq!(written, golden("board.merged.golden"));
    // The merged file is itself a valid fragment: merging it again changes nothing and warns of nothing.
    let out = run_ok(
        boardsmith()
            .args(["kconfig", "cubieboard", "--fragment"])
            .arg(&file)
            .arg("--json"),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let entries = v["entries"].as_array().expect("entries");
    let qf = entries
        .iter()
        .find(|e| e["symbol"] == "USB_NET_QF9700")
        .expect("QF9700");
    assert_eq!(qf["optional"], "not in mainline");
    assert!(
        qf["at"].as_str().expect("at").ends_with("merged.config:12"),
        "{qf}"
    );
    // No leftovers from the atomic write.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["merged.config"]);
}

#[test]
fn features_add_their_fragments_once() {
    // The fixture board has uinput but not usb-audio; `wifi` has no fragment.
    let out = run_ok(
        boardsmith()
            .args(["kconfig", &fixture("board.toml"), "--json"])
            .args([
                "--feature",
                "usb-audio",
                "--feature",
                "uinput",
                "--feature",
                "wifi",
            ])
            .args(["--feature", "usb-audio"]),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let names: Vec<&str> = v["fragments"]
        .as_array()
        .expect("fragments")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(
        names,
        vec!["frag/base.config", "frag/net.config", "uinput", "usb-audio"]
    );
}

fn fragment_file(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("test.config");
    std::fs::write(&p, text).expect("write fragment");
    p
}

/// Each malformed fragment is rejected (exit 2) naming file:line:col.
#[test]
fn malformed_fragments_fail_with_file_line_col() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: &[(&str, &str, &str)] = &[
        ("CONFIG_A=y\nCONFIG_B=yes\n", ":2:10:", "did you mean y?"),
        ("CONFIG_A = y\n", ":1:9:", "expected `=`"),
        ("USB_NET=y\n", ":1:1:", "expected `CONFIG_NAME=value`"),
        (
            "CONFIG_A=y # note\n",
            ":1:10:",
            "comments go on their own line",
        ),
        (
            "#CONFIG_A is not set\n",
            ":1:1:",
            "write exactly `# CONFIG_A is not set`",
        ),
        ("CONFIG_S=\"open\n", ":1:10:", "unterminated string"),
        (
            "# boardsmith: optinal\nCONFIG_A=m\n",
            ":1:3:",
            "unknown boardsmith directive",
        ),
        (
            "# boardsmith: optional\n\nCONFIG_A=m\n",
            ":1:1:",
            "must be followed directly",
        ),
    ];
    for (text, loc, msg) in cases {
        let f = fragment_file(dir.path(), text);
        let expect = format!("{}{loc}", f.display());
        bs().args(["kconfig", "cubieboard", "--fragment"])
            .arg(&f)
            .assert()
            .code(2)
            .stdout("")
            .stderr(predicate::str::contains(expect).and(predicate::str::contains(*msg)));
    }
}

#[test]
fn unknown_fragment_names_fail_at_the_profile_location() {
    fails_with(
        bs().args(["kconfig", &fixture("bad-board.toml")]),
        2,
        "bad-board.toml:5:13: kernel.fragments: unknown kernel config fragment `usb-nett`",
    )
    .stderr(predicate::str::contains(
        "embedded fragments: uinput, usb-audio, usb-bluetooth, usb-net",
    ));
    fails_with(
        bs().args(["kconfig", "cubieboard", "--fragment", "nope"]),
        2,
        "--fragment: unknown kernel config fragment `nope`",
    );
    fails_with(
        bs().args(["kconfig", "cubieboard", "--fragment", "./missing.config"]),
        2,
        "cannot read kernel config fragment ./missing.config",
    );
}

/// The files the up-front checks look for in a kernel tree (they run before any make).
const TREE_FILES: &[&str] = &[
    "Makefile",
    "Kconfig",
    "arch/arm/Kconfig",
    "arch/arm/configs/sunxi_defconfig",
    "scripts/kconfig/Makefile",
];

/// A directory that looks like a kernel tree to the up-front checks: [`TREE_FILES`] and `extra`,
/// all empty.
fn fake_tree(extra: &[&str]) -> tempfile::TempDir {
    let t = tempfile::tempdir().expect("tempdir");
    for f in TREE_FILES.iter().chain(extra) {
        let p = t.path().join(f);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, "").expect("write");
    }
    t
}

#[test]
fn kernel_src_rules() {
    let work = tempfile::tempdir().expect("work");
    let run = |src: &Path| {
        let mut c = bs();
        c.args(["kconfig", "cubieboard", "--kernel-src"])
            .arg(src)
            .arg("--work-dir")
            .arg(work.path());
        c
    };
    fails_with(
        &mut run(Path::new("/nonexistent/linux")),
        2,
        "--kernel-src /nonexistent/linux: not a directory",
    );
    let empty = tempfile::tempdir().expect("tempdir");
    fails_with(
        &mut run(empty.path()),
        2,
        "not a kernel source tree (Makefile is missing)",
    );
    let dirty = fake_tree(&[".config"]);
    fails_with(
        &mut run(dirty.path()),
        2,
        "the tree is not clean (.config exists)",
    );
    let no_defconfig = fake_tree(&[]);
    std::fs::remove_file(no_defconfig.path().join("arch/arm/configs/sunxi_defconfig")).expect("rm");
    std::fs::write(
        no_defconfig
            .path()
            .join("arch/arm/configs/multi_v7_defconfig"),
        "",
    )
    .expect("w");
    fails_with(
        &mut run(no_defconfig.path()),
        2,
        "defconfig `sunxi_defconfig` does not exist for ARCH=arm (no arch/arm/configs/sunxi_defconfig); \
         available: multi_v7_defconfig",
    );
    // Nothing was created in the work directory by the refused runs.
    assert_eq!(std::fs::read_dir(work.path()).expect("work").count(), 0);
}

#[test]
fn work_dir_inside_the_source_tree_is_refused_without_a_trace() {
    let tree = fake_tree(&[]);
    let before = list(tree.path());
    fails_with(
        bs().args(["kconfig", "cubieboard", "--kernel-src"])
            .arg(tree.path())
            .arg("--work-dir")
            .arg(tree.path().join("build/work")),
        2,
        "is inside the kernel source tree",
    );
    assert_eq!(list(tree.path()), before);
}

#[test]
fn missing_cross_compiler_names_the_package() {
    let tree = fake_tree(&[]);
    let bin = tempfile::tempdir().expect("bin");
    for tool in ["make", "gcc", "flex", "bison"] {
        let p = which(tool)
            .unwrap_or_else(|| panic!("`{tool}` is not installed (scripts/install-deps.sh)"));
        std::os::unix::fs::symlink(p, bin.path().join(tool)).expect("symlink");
    }
    let work = tempfile::tempdir().expect("work");
    let run = |board: &str| {
        let mut c = bs();
        c.env("PATH", bin.path())
            .args(["kconfig", board, "--kernel-src"])
            .arg(tree.path())
            .arg("--work-dir")
            .arg(work.path());
        c
    };
    fails_with(
        &mut run("cubieboard"),
        1,
        "`arm-linux-gnueabihf-gcc` not found in PATH; install gcc-arm-linux-gnueabihf",
    );
    fails_with(
        &mut run("armv8-foundation"),
        2,
        "arch/arm64/Kconfig is missing",
    );
}

#[test]
fn kernel_refuses_a_foreign_staging_directory_before_building() {
    let tree = fake_tree(&[]);
    let staging = tempfile::tempdir().expect("staging");
    std::fs::write(staging.path().join("precious.txt"), "keep me").expect("write");
    let work = tempfile::tempdir().expect("work");
    fails_with(
        bs().args(["kernel", "cubieboard", "--kernel-src"])
            .arg(tree.path())
            .arg("-o")
            .arg(staging.path())
            .arg("--work-dir")
            .arg(work.path()),
        2,
        "was not made by `boardsmith kernel`",
    );
    assert_eq!(
        std::fs::read_to_string(staging.path().join("precious.txt")).expect("kept"),
        "keep me"
    );
    assert_eq!(std::fs::read_dir(work.path()).expect("work").count(), 0);
    fails_with(
        bs().args(["kernel", "cubieboard", "--kernel-src"])
            .arg(tree.path())
            .args(["--jobs", "0", "-o"])
            .arg(work.path().join("s")),
        2,
        "--jobs must be at least 1",
    );
    fails_with(bs().args(["kernel", "cubieboard"]), 2, "--kernel-src");
}

#[test]
fn a_failing_make_reports_its_output_and_log() {
    // A tree that passes the up-front checks but whose Makefile fails: the error carries make's last
    // lines and the log's path, and the exit status is 1.
    let tree = fake_tree(&[]);
    std::fs::write(
        tree.path().join("Makefile"),
        "%:\n\t@echo kaboom from $@ >&2; exit 3\n",
    )
    .expect("write");
    let work = tempfile::tempdir().expect("work");
    let out = bs()
        .args(["kconfig", "cubieboard", "--kernel-src"])
        .arg(tree.path())
        .arg("--work-dir")
        .arg(work.path())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sunxi_defconfig` failed (exit status: 2)"),
        "{err}"
    );
    assert!(err.contains("  kaboom from sunxi_defconfig"), "{err}");
    let log = err
        .lines()
        .find_map(|l| l.strip_prefix("full log: "))
        .expect("log path");
    let text = std::fs::read_to_string(log).expect("log");
    assert!(
        text.contains("$ make -C ") && text.contains("kaboom"),
        "{text}"
    );
    assert!(Path::new(log).starts_with(work.path().canonicalize().expect("work")));
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn list(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}
