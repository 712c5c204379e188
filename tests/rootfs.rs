//! `boardsmith rootfs` without Debian packages (a prebuilt tarball source), and every must-fail rule.
//! The Debian builds through mmdebstrap and qemu-user are in tests/rootfs_debian.rs.

mod cli_definition;
mod http_support;
mod rootfs_support;
mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use rootfs_support::*;

const EPOCH: &str = "1700000000";
const PASSWORD: &str = "board pass 1";

use support::sha256_file;

/// The shared launcher, with a cache of its own: never the user's (these builds fail before storing
/// anything, but a base found there would change what they check).
fn boardsmith() -> Command {
    let mut c = support::boardsmith();
    c.env(
        "XDG_CACHE_HOME",
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rootfs-tests-cache"),
    );
    c
}

fn hash() -> String {
    sha512_hash(PASSWORD, "testsalt")
}

/// `boardsmith SUB BOARD -o OUT` (BOARD a name or a profile file).
fn command(sub: &str, board: impl AsRef<OsStr>, out: &Path) -> Command {
    let mut c = boardsmith();
    c.arg(sub).arg(board).arg("-o").arg(out);
    c
}

/// [`command`] for the Cubieboard's root filesystem with the user's password hash (`-o OUT`).
fn cubie_rootfs(out: &Path) -> Command {
    let mut c = command("rootfs", "cubieboard", out);
    c.args(["--password-hash", &hash()]);
    c
}

/// `boardsmith SUB BOARD --sha256 SHA --rootfs-tarball SRC -o OUT`: a root filesystem (with `build`,
/// an image) from a prebuilt tarball, a file or a URL. The caller adds the password and the rest.
fn from_tarball(
    sub: &str,
    board: impl AsRef<OsStr>,
    src: impl AsRef<OsStr>,
    sha: &str,
    out: &Path,
) -> Command {
    let mut c = command(sub, board, out);
    c.args(["--sha256", sha, "--rootfs-tarball"]).arg(src);
    c
}

/// [`from_tarball`] for the Cubieboard from the local `tarball` (its real sha256), with the user's
/// password hash.
fn configured(sub: &str, tarball: &Path, out: &Path) -> Command {
    let mut c = from_tarball(sub, "cubieboard", tarball, &sha256_file(tarball), out);
    c.args(["--password-hash", &hash()]);
    c
}

/// Adds the droidmote feature with the binary `dm` and the sha256 it is checked against.
fn with_droidmote<'a>(c: &'a mut Command, dm: &Path, sha: &str) -> &'a mut Command {
    c.args(["--feature", "droidmote", "--droidmote-sha256", sha])
        .arg("--droidmote-binary")
        .arg(dm)
}

fn no_final_outputs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A profile like the Cubieboard whose kernel is built without the uinput fragment.
fn board_without_uinput(dir: &Path) -> PathBuf {
    let p = dir.join("cubie-nouinput.toml");
    std::fs::write(
        &p,
        "extends = \"allwinner-a10\"\ndescription = \"Cubieboard without uinput\"\n[kernel]\ndtb = \"sun4i-a10-cubieboard.dtb\"\nfragments = [\"usb-net\", \"usb-audio\"]\n[bootloader]\npath = \"usr/lib/u-boot/Cubieboard/u-boot-sunxi-with-spl.bin\"\n",
    )
    .expect("write");
    p
}

#[test]
fn unknown_feature_is_rejected() {
    let d = tempfile::tempdir().expect("tmp");
    let f = support::run_err(cubie_rootfs(&d.path().join("r.tar")).args(["--feature", "kde"]));
    f.expect(2, &["unknown feature `kde`", "xfce", "droidmote"]);
    assert!(no_final_outputs(d.path()).is_empty());
}

#[test]
fn droidmote_needs_uinput_in_the_kernel_fragments() {
    let d = tempfile::tempdir().expect("tmp");
    let board = board_without_uinput(d.path());
    let (dm, sha) = fake_droidmote(d.path());
    let f = support::run_err(
        with_droidmote(
            &mut command("rootfs", &board, &d.path().join("r.tar")),
            &dm,
            &sha,
        )
        .args(["--password-hash", &hash()]),
    );
    f.expect(
        2,
        &[
            "feature `droidmote` needs the kernel config fragment `uinput`",
            "kernel.fragments",
        ],
    );
    assert!(!d.path().join("r.tar").exists());
}

#[test]
fn tarball_checksum_mismatch_fails_without_output() {
    let d = tempfile::tempdir().expect("tmp");
    let tarball = prebuilt_rootfs(d.path());
    let out_dir = d.path().join("out");
    std::fs::create_dir(&out_dir).expect("mkdir");
    let f = support::run_err(
        from_tarball(
            "rootfs",
            "cubieboard",
            &tarball,
            &"ab".repeat(32),
            &out_dir.join("r.tar"),
        )
        .args(["--password-hash", &hash()]),
    );
    f.expect(1, &["sha256 mismatch"]);
    let e = &f.stderr;
    assert!(e.contains(&sha256_file(&tarball)), "{e}");
    assert_eq!(no_final_outputs(&out_dir), Vec::<String>::new());
}

#[test]
fn missing_binfmt_says_what_to_do() {
    let d = tempfile::tempdir().expect("tmp");
    let f = support::run_err(
        cubie_rootfs(&d.path().join("r.tar"))
            .env("BOARDSMITH_BINFMT_DIR", d.path().join("no-binfmt")),
    );
    f.expect(
        1,
        &[
            "binfmt_misc is not mounted",
            "mount -t binfmt_misc binfmt_misc",
            "apt-get install qemu-user-static binfmt-support",
        ],
    );

    // Mounted, but no handler for the board's architecture.
    let fake = d.path().join("binfmt");
    std::fs::create_dir(&fake).expect("mkdir");
    std::fs::write(fake.join("status"), "enabled\n").expect("write");
    let f = support::run_err(
        command("rootfs", "armv8-foundation", &d.path().join("r.tar"))
            .args(["--password-hash", &hash()])
            .env("BOARDSMITH_BINFMT_DIR", &fake),
    );
    f.expect(1, &["update-binfmts --enable qemu-aarch64"]);
    assert!(no_final_outputs(d.path()).iter().all(|n| n == "binfmt"));
}

#[test]
fn unreachable_mirror_fails_clearly_without_output() {
    let d = tempfile::tempdir().expect("tmp");
    let out_dir = d.path().join("out");
    std::fs::create_dir(&out_dir).expect("mkdir");
    let f = support::run_err(
        cubie_rootfs(&out_dir.join("r.tar"))
            .args([
                "--mirror",
                "http://127.0.0.1:9/debian",
                "--security-mirror",
                "",
                "--progress",
                "none",
            ])
            .arg("--cache")
            .arg(d.path().join("cache")),
    );
    // The base's cache key reads the mirror's Release file first: that is where it fails.
    f.expect(
        1,
        &[
            "could not read the archive's Release file http://127.0.0.1:9/debian/dists/bookworm/InRelease",
            "Connection refused",
            "check --mirror",
        ],
    );
    // Nothing under a final name, and no leftovers.
    assert_eq!(no_final_outputs(&out_dir), Vec::<String>::new());
}

#[test]
fn password_is_required_without_a_terminal() {
    let d = tempfile::tempdir().expect("tmp");
    let f = support::run_err(&mut command(
        "rootfs",
        "cubieboard",
        &d.path().join("r.tar"),
    ));
    f.expect(2, &["--password-hash", "--password-stdin"]);

    let f = support::run_err(
        command("rootfs", "cubieboard", &d.path().join("r.tar"))
            .args(["--password-hash", "hunter2"]),
    );
    f.expect(2, &["not a crypt(3) password hash"]);
    let e = &f.stderr;
    assert!(
        !e.contains("hunter2"),
        "the rejected value is not echoed: {e}"
    );
}

#[test]
fn droidmote_binary_needs_source_and_checksum() {
    let d = tempfile::tempdir().expect("tmp");
    let f = support::run_err(cubie_rootfs(&d.path().join("r.tar")).args([
        "--feature",
        "droidmote",
        "--droidmote-password",
        "random",
    ]));
    f.expect(2, &["--droidmote-binary", "--droidmote-sha256"]);

    let (dm, _) = fake_droidmote(d.path());
    let tarball = prebuilt_rootfs(d.path());
    let f = support::run_err(
        with_droidmote(
            &mut configured("rootfs", &tarball, &d.path().join("r.tar")),
            &dm,
            &"0".repeat(64),
        )
        .env("BOARDSMITH_DROIDMOTE_PASSWORD", "remote-pw"),
    );
    f.expect(1, &["sha256 mismatch", "droidmote"]);
    assert!(!d.path().join("r.tar").exists());
}

/// Runs `c` with the option `arg` (and, when it takes one, a value clap accepts) and `-o DIR/OUT`, in
/// `dir`: its exit code and standard error.
fn with_option(mut c: Command, arg: &clap::Arg, dir: &Path, out: &str) -> (Option<i32>, String) {
    let o = c
        .args(cli_definition::option_words(arg))
        .arg("-o")
        .arg(dir.join(out))
        .current_dir(dir)
        .output()
        .expect("run");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Every option that only matters when boardsmith builds the root filesystem, from clap's own list of
/// them, is refused by `build --rootfs` (and by `build --all`), naming the option, before any work.
#[test]
fn build_refuses_every_rootfs_option_with_a_finished_rootfs() {
    let d = tempfile::tempdir().expect("tmp");
    let args = cli_definition::rootfs_only_arguments();
    // The list is clap's: it has the options the issue found ignored, and the Debian ones.
    cli_definition::long_names(
        &args,
        &[
            "feature",
            "autologin",
            "security-mirror",
            "mode",
            "password-hash",
            "cache",
            "droidmote-port",
            "droidmote-password",
            "expire-password",
            "random-password",
        ],
    );
    for arg in &args {
        let long = format!("--{}", arg.get_long().expect("a long option"));
        for context in [&["--rootfs", "r"][..], &["--all", "--rootfs-dir", "r"][..]] {
            let mut c = boardsmith();
            c.arg("build");
            if context[0] != "--all" {
                c.arg("cubieboard");
            }
            c.args(context);
            let (code, e) = with_option(c, arg, d.path(), "out");
            assert_eq!(code, Some(2), "{long} {context:?}: {e}");
            assert!(
                e.contains(&format!("{long} has no effect here")),
                "{long} {context:?}: {e}"
            );
        }
    }
    assert!(names_in(d.path()).is_empty(), "{:?}", names_in(d.path()));

    // An environment variable is ambient configuration, not an option of this run: not refused.
    let o = boardsmith()
        .env("BOARDSMITH_CACHE", d.path().join("cache"))
        .args(["build", "cubieboard", "--rootfs"])
        .arg(d.path().join("missing"))
        .arg("-o")
        .arg(d.path().join("out"))
        .output()
        .expect("run");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!e.contains("has no effect"), "{e}");
}

/// With a prebuilt --rootfs-tarball, every Debian (mmdebstrap) option is refused, from clap's list.
#[test]
fn prebuilt_tarball_refuses_every_debian_option() {
    let d = tempfile::tempdir().expect("tmp");
    let args = cli_definition::debian_only_arguments();
    assert!(args.iter().any(|a| a.get_long() == Some("snapshot")));
    for arg in &args {
        let long = format!("--{}", arg.get_long().expect("a long option"));
        for sub in ["rootfs", "build"] {
            let mut c = boardsmith();
            c.args([
                sub,
                "cubieboard",
                "--rootfs-tarball",
                "t.tar.gz",
                "--sha256",
            ])
            .arg("0".repeat(64));
            let (code, e) = with_option(c, arg, d.path(), "out.tar");
            assert_eq!(code, Some(2), "{sub} {long}: {e}");
            assert!(
                e.contains(&format!("{long} has no effect here")) && e.contains("--rootfs-tarball"),
                "{sub} {long}: {e}"
            );
        }
    }
    assert!(names_in(d.path()).is_empty());
}

/// Options that belong to a feature that is not selected, or to a desktop there is not, are refused.
#[test]
fn feature_options_without_their_feature_are_refused() {
    let d = tempfile::tempdir().expect("tmp");
    let tarball = prebuilt_rootfs(d.path());
    for (extra, needles) in [
        (
            &["--droidmote-port", "2400"][..],
            &["--droidmote-port", "--feature droidmote"][..],
        ),
        (
            &["--droidmote-password", "random"][..],
            &["--droidmote-password", "--feature droidmote"][..],
        ),
        (&["--autologin"][..], &["--autologin", "--feature xfce"][..]),
        (
            &["--feature", "droidmote", "--expire-password"][..],
            &["expired password", "autologin"][..],
        ),
    ] {
        let out_dir = d.path().join("out");
        let o = configured("rootfs", &tarball, &out_dir.join("r.tar"))
            .args(extra)
            .output()
            .expect("run");
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {e}");
        for n in needles {
            assert!(e.contains(n), "{extra:?}: `{n}` not in: {e}");
        }
        assert!(!out_dir.exists(), "{extra:?} left {out_dir:?}");
    }
}

/// The DroidMote password has no default: without a value and without a terminal the command fails
/// before any work, naming the option and the environment variable.
#[test]
fn droidmote_password_is_required_without_a_terminal() {
    let d = tempfile::tempdir().expect("tmp");
    let tarball = prebuilt_rootfs(d.path());
    let (dm, dm_sha) = fake_droidmote(d.path());
    let before = names_in(d.path());
    let f = support::run_err(
        with_droidmote(
            &mut configured("rootfs", &tarball, &d.path().join("r.tar")),
            &dm,
            &dm_sha,
        )
        .args(["--feature", "xfce"])
        .stdin(std::process::Stdio::null()),
    );
    f.expect(
        2,
        &[
            "droidmote_password",
            "--droidmote-password",
            "BOARDSMITH_DROIDMOTE_PASSWORD",
            "no default",
            "`random`",
        ],
    );
    let e = &f.stderr;
    assert!(!e.contains("warning"), "no default is used: {e}");
    // Before any work: no work directory, no output.
    assert_eq!(names_in(d.path()), before);

    // The user's password has no default either.
    let f = support::run_err(
        from_tarball(
            "rootfs",
            "cubieboard",
            &tarball,
            &sha256_file(&tarball),
            &d.path().join("r.tar"),
        )
        .stdin(std::process::Stdio::null()),
    );
    f.expect(
        2,
        &[
            "--password-hash",
            "BOARDSMITH_PASSWORD_HASH",
            "--random-password",
        ],
    );
    assert_eq!(names_in(d.path()), before);
}

/// `random` secrets: generated, written beside the output with mode 0600, never printed; the image's
/// files match them (the user's hash checked with the system's libxcrypt), and every secret-bearing file
/// in the tarball has the narrowest mode (read with `tar -tv`). The tarball itself is owner-only. A
/// directory with a space in its path works.
#[test]
fn random_secrets_are_written_private_and_match_the_image() {
    let d = tempfile::tempdir().expect("tmp");
    let tarball = prebuilt_rootfs(d.path());
    let (dm, dm_sha) = fake_droidmote(d.path());
    let out_dir = d.path().join("with space");
    let tar = out_dir.join("r.tar");
    let o = with_droidmote(
        &mut from_tarball(
            "rootfs",
            "cubieboard",
            &tarball,
            &sha256_file(&tarball),
            &tar,
        ),
        &dm,
        &dm_sha,
    )
    .args([
        "--random-password",
        "--droidmote-password",
        "random",
        "--json",
        "--progress",
        "plain",
    ])
    .output()
    .expect("run");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{err}");
    let dm_file = out_dir.join("r.tar.droidmote-password");
    let pw_file = out_dir.join("r.tar.password");
    for f in [&dm_file, &pw_file] {
        assert_eq!(mode_of(f), 0o600, "{f:?}");
    }
    assert_eq!(mode_of(&tar), 0o600, "the tarball holds password hashes");
    let dm_pw = std::fs::read_to_string(&dm_file).expect("read");
    let dm_pw = dm_pw.trim_end();
    let user_pw = std::fs::read_to_string(&pw_file).expect("read");
    let user_pw = user_pw.trim_end();
    assert!(dm_pw.len() >= 20 && user_pw.len() >= 20, "strong");
    assert_ne!(dm_pw, user_pw);
    for text in [&err, &stdout] {
        assert!(
            !text.contains(dm_pw) && !text.contains(user_pw),
            "a secret was printed: {text}"
        );
    }
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(report["secret_files"].as_array().map(Vec::len), Some(2));

    let conf = tar_string(&tar, "etc/droidmote/droidmote.conf");
    assert!(
        conf.contains(&format!("\nDROIDMOTE_PASSWORD={dm_pw}\n")),
        "{conf}"
    );
    let shadow = tar_string(&tar, "etc/shadow");
    let user = shadow
        .lines()
        .find(|l| l.starts_with("debian:"))
        .expect("user");
    let h = user.split(':').nth(1).expect("hash");
    assert!(h.starts_with("$y$"), "yescrypt: {user}");
    assert!(hash_matches(h, user_pw), "{user}");
    assert!(!hash_matches(h, dm_pw));

    // Every file that holds a secret: never world-readable, owned by root, group as needed.
    let list = tar_list(&tar);
    for (path, perms, owner) in [
        ("etc/shadow", "-rw-r-----", "0/42"),
        ("etc/gshadow", "-rw-r-----", "0/42"),
        ("etc/droidmote/droidmote.conf", "-rw-r-----", "0/1000"),
    ] {
        let e = &list[path];
        assert_eq!((e.1.as_str(), e.2.as_str()), (perms, owner), "{path}");
    }
    // Nothing else in the tree mentions either secret.
    let x = d.path().join("x");
    std::fs::create_dir(&x).expect("mkdir");
    assert!(
        Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&x)
            .status()
            .expect("tar")
            .success()
    );
    let grep = Command::new("grep")
        .args(["-rlF", "-e", dm_pw, "-e", user_pw])
        .arg(&x)
        .output()
        .expect("grep");
    assert_eq!(
        String::from_utf8_lossy(&grep.stdout).trim(),
        x.join("etc/droidmote/droidmote.conf").display().to_string()
    );
    // Nothing left behind in the output directory.
    assert_eq!(
        names_in(&out_dir),
        ["r.tar", "r.tar.droidmote-password", "r.tar.password"]
    );
}

/// `--expire-password` (or the profile's rootfs.expire_password): the first login must change it.
#[test]
fn expired_password_has_last_change_day_zero() {
    let d = tempfile::tempdir().expect("tmp");
    let tarball = prebuilt_rootfs(d.path());
    let profile = d.path().join("expiring.toml");
    std::fs::write(
        &profile,
        "extends = \"allwinner-a10\"\n[kernel]\ndtb = \"sun4i-a10-cubieboard.dtb\"\n[bootloader]\npath = \"usr/lib/u-boot/Cubieboard/u-boot-sunxi-with-spl.bin\"\n[rootfs]\nexpire_password = true\n",
    )
    .expect("write");
    for (board, extra) in [
        ("cubieboard", &["--expire-password"][..]),
        (profile.to_str().expect("utf-8"), &[][..]),
    ] {
        let tar = d.path().join("r.tar");
        support::run_ok(
            from_tarball("rootfs", board, &tarball, &sha256_file(&tarball), &tar)
                .args(["--password-hash", &hash(), "--world-readable"])
                .args(extra),
        );
        let shadow = tar_string(&tar, "etc/shadow");
        let user = shadow
            .lines()
            .find(|l| l.starts_with("debian:"))
            .expect("user");
        assert_eq!(user.split(':').nth(2), Some("0"), "{user}");
        // --world-readable: the umask decides, as for any other file.
        assert_eq!(mode_of(&tar) & 0o004, 0o004);
    }
}

/// A download under way: the server stalls it, `child` waits on it.
struct Stalled {
    tarball: PathBuf,
    server: StallingServer,
    child: std::process::Child,
    /// What `dir` held before the child started.
    before: Vec<String>,
}

/// Starts `boardsmith SUB cubieboard -o out` (piped stderr) from a prebuilt tarball made in `dir`,
/// served by a server that stalls after 100 bytes, and returns once the download has begun.
fn stalled_download(dir: &Path, sub: &str, out: &Path) -> Stalled {
    let tarball = prebuilt_rootfs(dir);
    let data = std::fs::read(&tarball).expect("read");
    let server = StallingServer::start(data, 100, "prebuilt.tar.gz");
    let before = names_in(dir);
    let child = from_tarball(sub, "cubieboard", &server.url, &sha256_file(&tarball), out)
        .args(["--password-hash", &hash(), "--progress", "none"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    assert!(
        wait_for(60, || server
            .reached
            .load(std::sync::atomic::Ordering::SeqCst)),
        "the download did not start"
    );
    Stalled {
        tarball,
        server,
        child,
        before,
    }
}

/// SIGTERM while `rootfs` downloads its tarball: the download is stopped, the work directory (0700
/// while it exists) and the output directory it created are removed, and the status is 128+15.
#[test]
fn sigterm_during_rootfs_leaves_nothing_behind() {
    let d = tempfile::tempdir().expect("tmp");
    let out_dir = d.path().join("out");
    let Stalled {
        server,
        child,
        before,
        ..
    } = stalled_download(d.path(), "rootfs", &out_dir.join("r.tar"));
    let work: Vec<String> = names_in(&out_dir)
        .into_iter()
        .filter(|n| n.starts_with(".r.tar.work-"))
        .collect();
    assert_eq!(work.len(), 1, "{:?}", names_in(&out_dir));
    assert_eq!(mode_of(&out_dir.join(&work[0])), 0o700);
    let o = support::stop_with(child, libc::SIGTERM);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("stopped by SIGTERM"), "{e}");
    assert_eq!(names_in(d.path()), before, "left behind");
    assert!(
        wait_for(10, || server
            .closed
            .load(std::sync::atomic::Ordering::SeqCst)),
        "the download (curl) was not stopped"
    );
}

/// SIGTERM during `build` (making its root filesystem, then writing the image): nothing is left.
#[test]
fn sigterm_during_build_leaves_nothing_behind() {
    let d = tempfile::tempdir().expect("tmp");
    let out_dir = d.path().join("out");
    let Stalled {
        tarball,
        server: _server,
        child,
        before,
    } = stalled_download(d.path(), "build", &out_dir);
    assert!(
        names_in(&out_dir)
            .iter()
            .any(|n| n.starts_with(".cubieboard.rootfs.tar.work-")),
        "{:?}",
        names_in(&out_dir)
    );
    support::stop_with(child, libc::SIGINT);
    assert_eq!(names_in(d.path()), before, "left behind");

    // The image phase: a root filesystem big enough that mke2fs and hashing take a while.
    let rootfs = d.path().join("rootfs.tar");
    support::run_ok(&mut configured("rootfs", &tarball, &rootfs));
    let big = d.path().join("big");
    std::fs::create_dir_all(big.join("srv")).expect("mkdir");
    let st = Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=384", "status=none"])
        .arg(format!("of={}", big.join("srv/blob").display()))
        .status()
        .expect("dd");
    assert!(st.success());
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&rootfs)
        .arg("-C")
        .arg(&big)
        .status()
        .expect("tar");
    assert!(st.success());
    let before = names_in(d.path());
    let child = boardsmith()
        .args(["build", "cubieboard", "--progress", "none", "--rootfs"])
        .arg(&big)
        .arg("-o")
        .arg(&out_dir)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    assert!(
        wait_for(120, || names_in(&out_dir)
            .iter()
            .any(|n| n.starts_with(".cubieboard.work-"))),
        "the image was not started"
    );
    let listed = names_in(&out_dir);
    assert!(
        listed
            .iter()
            .any(|n| n.starts_with(".cubieboard.img.partial-")),
        "{listed:?}"
    );
    support::stop_with(child, libc::SIGTERM);
    assert_eq!(names_in(d.path()), before, "left behind");
}

/// A prebuilt tarball configured with the droidmote feature: users, fstab from the plan, services,
/// the droidmote binary, its settings and the uinput rule; twice, byte for byte the same.
#[test]
fn prebuilt_tarball_is_configured_and_reproducible() {
    let d = tempfile::tempdir().expect("tmp");
    let tarball = prebuilt_rootfs(d.path());
    let (dm, dm_sha) = fake_droidmote(d.path());
    let run = |out: &Path| {
        let o = with_droidmote(&mut configured("rootfs", &tarball, out), &dm, &dm_sha)
            .args(["--droidmote-port", "2400", "--json", "--progress", "none"])
            .env("BOARDSMITH_DROIDMOTE_PASSWORD", "s3cret-remote")
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        assert!(
            !err.contains("s3cret-remote"),
            "the password is never printed: {err}"
        );
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(!stdout.contains("s3cret-remote") && !stdout.contains(&hash()));
        serde_json::from_str::<serde_json::Value>(&stdout).expect("json report")
    };
    let a = d.path().join("a.tar");
    let report = run(&a);
    assert_eq!(report["features"], serde_json::json!(["droidmote", "xfce"]));

    let list = tar_list(&a);
    // Canonical order is checked by re-reading; here the content.
    let shadow = tar_string(&a, "etc/shadow");
    let root = shadow
        .lines()
        .find(|l| l.starts_with("root:"))
        .expect("root");
    assert!(root.starts_with("root:*:"), "root locked: {root}");
    let user = shadow
        .lines()
        .find(|l| l.starts_with("debian:"))
        .expect("user in shadow");
    let h = user.split(':').nth(1).expect("hash");
    assert!(hash_matches(h, PASSWORD), "{user}");
    assert_eq!(list["etc/shadow"].2, "0/42");
    let passwd = tar_string(&a, "etc/passwd");
    assert!(
        passwd.contains("debian:x:1000:1000:,,,:/home/debian:/bin/bash"),
        "{passwd}"
    );
    let group = tar_string(&a, "etc/group");
    assert!(
        group.contains("sudo:x:27:debian") && group.contains("input:x:105:debian"),
        "{group}"
    );
    assert_eq!(list["home/debian"].2, "1000/1000");
    assert_eq!(tar_string(&a, "home/debian/.bashrc"), "# bashrc\n");
    assert_eq!(tar_string(&a, "etc/hostname"), "cubieboard\n");

    // fstab names the partitions the image plan has.
    let fstab = tar_string(&a, "etc/fstab");
    let plan = planned_partitions("cubieboard", EPOCH);
    let root_part = plan.iter().find(|p| p.0 == "root").expect("root partition");
    let boot_part = plan.iter().find(|p| p.0 == "boot").expect("boot partition");
    assert!(
        fstab
            .lines()
            .any(|l| l.split_whitespace().take(2).collect::<Vec<_>>()
                == [format!("PARTUUID={}", root_part.1).as_str(), "/"]),
        "{fstab}"
    );
    assert!(
        fstab.contains(&format!("PARTUUID={}\t/boot/firmware\tvfat", boot_part.1)),
        "{fstab}"
    );

    // Services enabled the way systemctl would.
    assert_eq!(
        list["etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"]
            .3
            .as_deref(),
        Some("/lib/systemd/system/serial-getty@.service")
    );
    assert_eq!(
        list["etc/systemd/system/default.target"].3.as_deref(),
        Some("/lib/systemd/system/graphical.target")
    );
    assert!(list.contains_key("etc/systemd/system/display-manager.service"));

    // droidmote: the verified binary, port and password, started in the X session, uinput open.
    assert_installed_droidmote(&a, &dm_sha);
    assert!(list["usr/local/bin/droidmote"].1.starts_with("-rwxr-xr-x"));
    let conf = tar_string(&a, "etc/droidmote/droidmote.conf");
    assert!(
        conf.contains("DROIDMOTE_PORT=2400\n")
            && conf.contains("DROIDMOTE_PASSWORD=s3cret-remote\n"),
        "{conf}"
    );
    assert!(
        list["etc/droidmote/droidmote.conf"]
            .1
            .starts_with("-rw-r-----")
    );
    assert_eq!(list["etc/droidmote/droidmote.conf"].2, "0/1000");
    let autostart = tar_string(&a, "etc/xdg/autostart/droidmote.desktop");
    assert!(
        autostart.contains("Exec=/usr/lib/boardsmith/droidmote-session"),
        "{autostart}"
    );
    let autologin = tar_string(
        &a,
        "etc/lightdm/lightdm.conf.d/50-boardsmith-autologin.conf",
    );
    assert!(autologin.contains("autologin-user=debian"), "{autologin}");
    let rule = tar_string(&a, "etc/udev/rules.d/60-boardsmith-uinput.rules");
    assert!(
        rule.contains("KERNEL==\"uinput\"") && rule.contains("GROUP=\"input\""),
        "{rule}"
    );

    // The session script hands port and password to the binary (run it with a fake display).
    let x = d.path().join("x");
    std::fs::create_dir(&x).expect("mkdir");
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&a)
        .arg("-C")
        .arg(&x)
        .status()
        .expect("tar");
    assert!(st.success());
    let script =
        std::fs::read_to_string(x.join("usr/lib/boardsmith/droidmote-session")).expect("script");
    let script = script
        .replace(
            "/etc/droidmote/droidmote.conf",
            &x.join("etc/droidmote/droidmote.conf").display().to_string(),
        )
        .replace("exec /usr/local/bin/droidmote", "printf '%s|' ");
    let o = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env("DISPLAY", ":0")
        .output()
        .expect("sh");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "2400|s3cret-remote|");

    // Reproducible: a second run gives the same bytes.
    let b = d.path().join("b.tar");
    run(&b);
    assert_eq!(sha256_file(&a), sha256_file(&b));
}

/// `boardsmith build` without --rootfs, from a prebuilt tarball: the image's root partition holds the
/// configured root filesystem (read back with debugfs, checked with e2fsck).
#[test]
fn build_without_rootfs_puts_the_configured_tree_in_the_image() {
    let d = tempfile::tempdir().expect("tmp");
    let tarball = prebuilt_rootfs(d.path());
    let out_dir = d.path().join("out");
    support::run_ok(configured("build", &tarball, &out_dir).args(["--progress", "none"]));
    let img = out_dir.join("cubieboard.img");
    assert!(img.is_file() && out_dir.join("cubieboard.rootfs.tar").is_file());
    let root = extract_root_partition(&img, d.path());
    support::run_ok(Command::new("e2fsck").args(["-fn"]).arg(&root));
    let cat = |p: &str| {
        let o = Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat {p}"))
            .arg(&root)
            .output()
            .expect("debugfs");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let plan = planned_partitions("cubieboard", EPOCH);
    let root_uuid = &plan.iter().find(|p| p.0 == "root").expect("root").1;
    assert!(cat("/etc/fstab").contains(&format!("PARTUUID={root_uuid}\t/\text4")));
    assert!(cat("/etc/shadow").contains("debian:$6$"));
    let stat = Command::new("debugfs")
        .arg("-R")
        .arg("stat /etc/shadow")
        .arg(&root)
        .output()
        .expect("debugfs");
    let s = String::from_utf8_lossy(&stat.stdout);
    assert!(
        s.contains("Mode:  0640") && s.contains("Group:    42"),
        "{s}"
    );
}

/// An image built with another SOURCE_DATE_EPOCH than its root filesystem would not find its root
/// partition: the builder refuses.
#[test]
fn build_refuses_a_rootfs_made_for_another_plan() {
    let d = tempfile::tempdir().expect("tmp");
    let tarball = prebuilt_rootfs(d.path());
    let rootfs = d.path().join("r.tar");
    support::run_ok(&mut configured("rootfs", &tarball, &rootfs));
    let f = support::run_err(
        boardsmith()
            .env("SOURCE_DATE_EPOCH", "1700000001")
            .args(["build", "cubieboard", "--rootfs"])
            .arg(&rootfs)
            .arg("-o")
            .arg(d.path().join("out")),
    );
    f.expect(2, &["/etc/fstab", "SOURCE_DATE_EPOCH"]);
    assert!(!d.path().join("out/cubieboard.img").exists());
}

/// A directory instead of a tarball (needs root: owners and modes are real).
#[test]
fn directory_output_keeps_owners_and_modes() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "this test needs root (owners and modes in a directory); run the tests as root, as CI does"
    );
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let d = tempfile::tempdir().expect("tmp");
    let tarball = prebuilt_rootfs(d.path());
    let out = d.path().join("tree");
    support::run_ok(&mut configured("rootfs", &tarball, &out));
    let shadow = std::fs::metadata(out.join("etc/shadow")).expect("shadow");
    assert_eq!(
        (
            shadow.uid(),
            shadow.gid(),
            shadow.permissions().mode() & 0o7777
        ),
        (0, 42, 0o640)
    );
    let home = std::fs::metadata(out.join("home/debian")).expect("home");
    assert_eq!((home.uid(), home.gid()), (1000, 1000));
    assert_eq!(
        std::fs::read_link(
            out.join("etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service")
        )
        .expect("link"),
        Path::new("/lib/systemd/system/serial-getty@.service")
    );
    // A non-empty directory is not overwritten.
    let again = configured("rootfs", &tarball, &out).output().expect("run");
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not an empty directory"));
}

/// `--rootfs-tarball URL` goes through the writer's HTTP client and decoders: a .tar.zst and a
/// .tar.xz served with the connection cut twice are resumed, and the result is byte for byte the
/// one made from the local file (cmp). A server without Range support fails with exit status 3.
#[test]
fn tarball_url_is_resumed_through_the_shared_client() {
    use http_support::{Behaviour, TestServer};
    let d = tempfile::tempdir().expect("tmp");
    let gz = prebuilt_rootfs(d.path());
    let served = d.path().join("served");
    std::fs::create_dir(&served).expect("mkdir");
    let tar = served.join("rootfs.tar");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc {} > {t} && zstd -q -19 -k {t} && xz -k -9 {t}",
            gz.display(),
            t = tar.display()
        ))
        .status()
        .expect("gzip, zstd, xz");
    assert!(st.success());
    let run = |src: &str, sha: &str, out: &Path| {
        from_tarball("rootfs", "cubieboard", src, sha, out)
            .args(["--password-hash", &hash(), "--progress", "plain"])
            .output()
            .expect("run")
    };
    let local = d.path().join("local.tar");
    let zst = served.join("rootfs.tar.zst");
    let o = run(&zst.display().to_string(), &sha256_file(&zst), &local);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for name in ["rootfs.tar.zst", "rootfs.tar.xz"] {
        let file = served.join(name);
        let len = std::fs::metadata(&file).expect("size").len();
        let server = TestServer::start(
            &served,
            Behaviour {
                drops: vec![len / 3, 2 * len / 3],
                ..Default::default()
            },
        );
        let out = d.path().join(format!("{name}.out.tar"));
        let o = run(&server.url(name), &sha256_file(&file), &out);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{name}: {e}");
        assert_eq!(server.drops_left(), 0, "{name}");
        assert!(
            e.contains(&format!("connection lost at byte {}", len / 3)),
            "{name}: {e}"
        );
        let reqs = server.requests(name);
        assert_eq!(
            reqs.iter().map(|r| r.status).collect::<Vec<_>>(),
            [200, 206, 206],
            "{reqs:?}"
        );
        let same = Command::new("cmp")
            .arg(&local)
            .arg(&out)
            .status()
            .expect("cmp");
        assert!(same.success(), "{name}: differs from the local build");
        assert_eq!(tar_string(&out, "etc/hostname"), "cubieboard\n");
    }
    // No Range support: the cut connection cannot be resumed.
    let len = std::fs::metadata(&zst).expect("size").len();
    let server = TestServer::start(
        &served,
        Behaviour {
            no_range: true,
            drops: vec![len / 2],
            ..Default::default()
        },
    );
    let out = d.path().join("norange.tar");
    let o = run(&server.url("rootfs.tar.zst"), &sha256_file(&zst), &out);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(e.contains("no HTTP Range support"), "{e}");
    assert!(!out.exists());
}

/// A prebuilt tarball whose kernel's header claims 8 TiB of data (the archive holds a few KB): refused
/// while the archive is indexed, naming archive, entry and byte offsets, exit 2, and nothing left in
/// the output directory. It used to abort the process allocating 8 TiB (status 134), leaving the work
/// directory behind.
#[test]
fn tarball_entry_claiming_more_than_the_archive_fails() {
    let d = tempfile::tempdir().expect("tmp");
    prebuilt_rootfs(d.path());
    let tarball = d.path().join("lying.tar");
    let st = Command::new("tar")
        .args(["--sort=name", "--numeric-owner", "-C"])
        .arg(d.path().join("prebuilt"))
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .expect("tar");
    assert!(st.success());
    let member = "./boot/vmlinuz-6.1.0-test-armmp";
    let (header, len) = support::claim_size(&tarball, member, 8 << 40);
    let out_dir = d.path().join("out");
    std::fs::create_dir(&out_dir).expect("mkdir");
    let out = configured("rootfs", &tarball, &out_dir.join("r.tar"))
        .output()
        .expect("run");
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains(&format!(
            "--rootfs-tarball {}: entry `{member}` (header at byte {header}) claims 8796093022208 bytes of data from byte {}, past the end of the archive at byte {len}; the tarball is truncated or corrupt, make it again",
            tarball.display(),
            header + 512
        )),
        "{e}"
    );
    assert_eq!(no_final_outputs(&out_dir), Vec::<String>::new());
}
