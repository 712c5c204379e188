//! End-to-end boots with the real binary: Debian's kernel, device trees and U-Boot (fetched as Debian
//! packages by scripts/minimal-rootfs.sh) → `boardsmith build` → `boardsmith boot` in QEMU, to the marker
//! the root filesystem's own init prints. Also the failures `boot` must name, stop signals, and the
//! interactive console. These are the slow tests (a boot takes 5–30 s under TCG).
//!
//! Every boardsmith started here carries a unique BOARDSMITH_TEST_TAG in its environment, which QEMU
//! inherits; after each run no process may carry it any more (other QEMUs on the machine are ignored).

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const MARKER: &str = "BOARDSMITH-ROOT-OK";
const TAG_VAR: &str = "BOARDSMITH_TEST_TAG";
/// Generous: a boot that works takes 5–30 s here, but the machine is shared.
const BOOT_TIMEOUT: &str = "240";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn work_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("boot-e2e");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(work_dir()).unwrap()
}

/// The board's minimal root filesystem tarball, assembled once per test run (downloads are cached in
/// .cache/debs). Built one at a time: the script shares its download cache.
fn rootfs(board: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    support::once_per_run(&BUILT, board, || minimal_rootfs(board))
}

fn minimal_rootfs(board: &str) -> PathBuf {
    let out = work_dir().join(format!("rootfs-{board}"));
    let status = Command::new(repo().join("scripts/minimal-rootfs.sh"))
        .arg(board)
        .arg(&out)
        .env("BOARDSMITH", support::bin_path())
        .status()
        .unwrap();
    assert!(status.success(), "minimal-rootfs.sh {board} failed");
    PathBuf::from(format!("{}.tar", out.display()))
}

/// The board's image built from its minimal root filesystem, once per test run and shared by the tests
/// that boot it unchanged (booting never modifies it; each such test checks that).
fn shared_image(board: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    support::once_per_run(&BUILT, board, || {
        let dir = work_dir().join(format!("image-{board}"));
        let _ = std::fs::remove_dir_all(&dir);
        build(board, board, &dir, &[])
    })
}

/// `boardsmith build BOARD` from `rootfs_board`'s root filesystem into `dir`; returns the image.
fn build(board: &str, rootfs_board: &str, dir: &Path, extra: &[&str]) -> PathBuf {
    support::build_ok(board, &rootfs(rootfs_board), dir, extra);
    let name = Path::new(board)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    dir.join(format!("{name}.img"))
}

fn new_tag() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Processes whose environment carries the tag (QEMU inherits boardsmith's environment).
fn tagged(tag: &str) -> Vec<String> {
    let needle = format!("{TAG_VAR}={tag}\0");
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            found.push(format!("{name} {}", comm.trim()));
        }
    }
    found
}

/// Waits (bounded) for every tagged process to be gone; returns those still there.
fn wait_untagged(tag: &str, limit: Duration) -> Vec<String> {
    let until = Instant::now() + limit;
    loop {
        let left = tagged(tag);
        if left.is_empty() || Instant::now() >= until {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `boardsmith boot IMAGE ARGS --log LOG`, tagged with `tag`.
fn boot_cmd(image: &Path, args: &[&str], log: &Path, tag: &str) -> Command {
    let mut c = support::boardsmith();
    c.arg("boot")
        .arg(image)
        .args(args)
        .arg("--log")
        .arg(log)
        .env(TAG_VAR, tag);
    c
}

/// Asserts what a finished boot leaves: no QEMU of `tag` (boardsmith reaps QEMU before it exits, so
/// without waiting) and the image's sha256 still `before`.
fn assert_cleaned_up(tag: &str, image: &Path, before: &str) {
    assert_eq!(tagged(tag), Vec::<String>::new(), "QEMU left behind");
    assert_eq!(
        support::sha256_file(image),
        before,
        "booting changed the image"
    );
}

struct Booted {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    log: String,
}

impl Booted {
    fn new(out: Output, log: String) -> Booted {
        Booted {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            log,
        }
    }

    /// Asserts that the boot failed (exit 1) naming each of `wanted` on stderr.
    fn assert_failed(&self, wanted: &[&str]) {
        assert_eq!(self.status.code(), Some(1), "{}", self.stderr);
        for w in wanted {
            assert!(self.stderr.contains(w), "{w:?} not in: {}", self.stderr);
        }
    }

    /// Asserts that the failure was found before the boot timed out (`when`).
    fn assert_before_the_timeout(&self, when: &str) {
        assert!(
            !self.stderr.contains("(timeout)"),
            "{when}: {}",
            self.stderr
        );
    }
}

/// Runs `boardsmith boot IMAGE ARGS --log` and checks that no QEMU it started is left behind and that
/// the image's sha256 did not change.
fn boot(image: &Path, args: &[&str]) -> Booted {
    let tag = new_tag();
    let log = work_dir().join(format!("boot-{tag}.log"));
    let before = support::sha256_file(image);
    let out = boot_cmd(image, args, &log, &tag)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_cleaned_up(&tag, image, &before);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    Booted::new(out, text)
}

fn boots_to_marker(board: &str) -> (PathBuf, Booted) {
    let image = shared_image(board);
    let dir = image.parent().unwrap().to_path_buf();
    let b = boot(&image, &["--expect", MARKER, "--timeout", BOOT_TIMEOUT]);
    assert!(
        b.status.success(),
        "{board} did not boot: {}\n{}",
        b.stderr,
        b.log
    );
    assert!(b.stdout.contains(MARKER), "console not on stdout");
    assert!(b.log.contains(MARKER), "console not in the log");
    assert!(b.stderr.contains(&format!("booted to /{MARKER}/")));
    // The published checksum still describes the image.
    support::run_ok(
        Command::new("sha256sum")
            .arg("-c")
            .arg(format!("{board}.img.sha256"))
            .current_dir(&dir),
    );
    (dir, b)
}

/// U-Boot accepted boardsmith's uboot.env (no "bad CRC") and booted without delay or USB scan.
fn assert_uboot_env_used(b: &Booted) {
    assert!(
        b.log.contains("Loading Environment from FAT... OK"),
        "U-Boot did not load uboot.env:\n{}",
        b.log
    );
    assert!(b.log.contains("Hit any key to stop autoboot:  0"));
    assert!(
        !b.log.contains("starting USB..."),
        "preboot still starts USB"
    );
}

#[test]
fn cubieboard_boots_to_the_root_marker() {
    let (_dir, b) = boots_to_marker("cubieboard");
    assert_uboot_env_used(&b);
    assert!(b.log.contains("Model: Cubietech Cubieboard"));
}

#[test]
fn mk802_boots_to_the_root_marker() {
    let (_dir, b) = boots_to_marker("mk802");
    assert_uboot_env_used(&b);
    // Debian's Mini-X U-Boot build, on QEMU's cubieboard machine (same SoC).
    assert!(b.log.contains("Model: PineRiver Mini X-Plus"));
}

#[test]
fn armv8_foundation_boots_to_the_root_marker() {
    let (dir, b) = boots_to_marker("armv8-foundation");
    assert!(b.log.contains("(/dev/vda2)"), "root is not the virtio disk");
    // The FVP launch script next to the image: valid sh, the image as the model's block device.
    let script = dir.join("armv8-foundation.fvp.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("--block-device=\"$here\"/'armv8-foundation.img'"));
    let meta = std::fs::metadata(&script).unwrap();
    assert_ne!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111,
        0
    );
    assert!(
        Command::new("sh")
            .arg("-n")
            .arg(&script)
            .status()
            .unwrap()
            .success()
    );
    // Without an .axf it prints its instructions and exits 2.
    let out = Command::new(&script).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("boot-wrapper"));
}

#[test]
fn image_without_bootloader_blob_reports_no_spl_output() {
    let dir = tempdir();
    let image = dir.path().join("cubieboard.img");
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(shared_image("cubieboard"))
        .arg(&image)
        .status()
        .unwrap();
    assert!(st.success());
    // The SPL lives from byte 8192 up to the first partition (1 MiB).
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap();
    f.write_all_at(&vec![0u8; 1024 * 1024 - 8192], 8192)
        .unwrap();
    drop(f);
    let b = boot(&image, &["--expect", MARKER, "--timeout", "20"]);
    b.assert_failed(&[
        "no SPL output",
        "(timeout)",
        "the serial console printed nothing",
    ]);
}

#[test]
fn boot_partition_without_boot_config_reports_the_uboot_stage() {
    let dir = tempdir();
    let profile = dir.path().join("cubieboard-noconfig.toml");
    std::fs::write(
        &profile,
        "# Cubieboard whose boot partition carries no extlinux.conf or boot.scr.\n\
         extends = \"allwinner-a10\"\n\
         [kernel]\ndtb = \"sun4i-a10-cubieboard.dtb\"\n\
         [bootloader]\npath = \"usr/lib/u-boot/Cubieboard/u-boot-sunxi-with-spl.bin\"\n\
         [boot]\nmethods = []\n",
    )
    .unwrap();
    let profile = profile.to_string_lossy().into_owned();
    let image = build(&profile, "cubieboard", dir.path(), &[]);
    let b = boot(
        &image,
        &[
            "--board",
            &profile,
            "--expect",
            MARKER,
            "--timeout",
            BOOT_TIMEOUT,
        ],
    );
    // The last lines show the prompt.
    b.assert_failed(&["U-Boot found no boot config", "| =>"]);
    b.assert_before_the_timeout("should fail at U-Boot's prompt");
}

#[test]
fn wrong_root_on_the_command_line_reports_root_not_mounted() {
    let dir = tempdir();
    let image = build(
        "armv8-foundation",
        "armv8-foundation",
        dir.path(),
        &[
            "--cmdline-append",
            "root=PARTUUID=00000000-0000-0000-0000-000000000000 rootdelay=3",
        ],
    );
    let b = boot(&image, &["--expect", MARKER, "--timeout", BOOT_TIMEOUT]);
    b.assert_failed(&[
        "root not mounted",
        "PARTUUID=00000000-0000-0000-0000-000000000000 not found",
    ]);
    b.assert_before_the_timeout("should fail when the initramfs gives up");
}

/// Polls (bounded) until `path` contains `text`.
fn wait_for_text(path: &Path, text: &str, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(text)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn stop_signals_end_qemu() {
    let dir = tempdir();
    let image = shared_image("armv8-foundation");
    for (sig, name) in [
        (libc::SIGINT, "SIGINT"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGKILL, "SIGKILL"),
    ] {
        let tag = new_tag();
        let log = dir.path().join(format!("{name}.log"));
        let child = boot_cmd(
            &image,
            &["--expect", "NEVER-PRINTED", "--timeout", "600", "-q"],
            &log,
            &tag,
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        assert!(
            wait_for_text(&log, "U-Boot", Duration::from_secs(120)),
            "{name}: QEMU never printed"
        );
        assert!(tagged(&tag).iter().any(|p| p.contains("qemu-system")));
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let out = child.wait_with_output().unwrap();
        if sig == libc::SIGKILL {
            // boardsmith had no chance to clean up: QEMU's parent-death signal ends it.
            assert_eq!(out.status.signal(), Some(libc::SIGKILL));
            assert_eq!(
                wait_untagged(&tag, Duration::from_secs(30)),
                Vec::<String>::new()
            );
        } else {
            assert_eq!(out.status.code(), Some(128 + sig), "{name}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(&format!("interrupted by {name}")), "{err}");
            assert_eq!(
                tagged(&tag),
                Vec::<String>::new(),
                "{name}: QEMU left behind"
            );
        }
    }
}

#[test]
fn interactive_hands_over_the_console() {
    let dir = tempdir();
    let image = shared_image("armv8-foundation");
    let tag = new_tag();
    let log = dir.path().join("interactive.log");
    let mut child = boot_cmd(&image, &["--interactive"], &log, &tag)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for_text(&log, MARKER, Duration::from_secs(240)),
        "the interactive session's log never showed the marker"
    );
    // Type a command into the guest's shell, then quit QEMU with its escape (Ctrl-A x).
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"echo typed-$((6*7))\n").unwrap();
    assert!(wait_for_text(&log, "typed-42", Duration::from_secs(60)));
    stdin.write_all(b"\x01x").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("typed-42"));
    assert_eq!(tagged(&tag), Vec::<String>::new());
}

#[test]
fn uboot_env_is_what_mkenvimage_makes() {
    // U-Boot's own tool, given the same variables, must produce the same bytes (CRC, layout, padding).
    let dir = tempdir();
    let image = shared_image("cubieboard");
    let env = dir.path().join("uboot.env");
    let st = Command::new("mcopy")
        .arg("-n")
        .arg("-i")
        .arg(format!("{}@@1048576", image.display()))
        .arg("::/uboot.env")
        .arg(&env)
        .status()
        .unwrap();
    assert!(st.success());
    let bytes = std::fs::read(&env).unwrap();
    assert_eq!(bytes.len(), 64 * 1024);
    let end = bytes[4..].windows(2).position(|w| w == [0, 0]).unwrap() + 4;
    let text: Vec<&str> = std::str::from_utf8(&bytes[4..end])
        .unwrap()
        .split('\0')
        .collect();
    assert!(text.contains(&"bootdelay=0"));
    assert!(text.contains(&"bootcmd=run distro_bootcmd"));
    assert!(!text.iter().any(|l| l.starts_with("preboot=")));
    let txt = dir.path().join("env.txt");
    std::fs::write(&txt, text.join("\n") + "\n").unwrap();
    let made = dir.path().join("made.env");
    let st = Command::new("mkenvimage")
        .args(["-s", "0x10000", "-p", "0", "-o"])
        .arg(&made)
        .arg(&txt)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(std::fs::read(&made).unwrap(), bytes);
}

// ---- input errors: exit 2 before QEMU starts (fast) ----

fn boardsmith(args: &[&str]) -> Output {
    support::boardsmith().args(args).output().unwrap()
}

#[test]
fn boot_rejects_bad_input_with_exit_2() {
    let dir = tempdir();
    let img = dir.path().join("some.img");
    std::fs::write(&img, vec![0u8; 4096]).unwrap();
    let img_s = img.to_string_lossy().into_owned();
    let missing = dir.path().join("cubieboard.img");
    let missing_s = missing.to_string_lossy().into_owned();
    let cases: [(&[&str], &[&str]); 5] = [
        (
            &[&img_s, "--board", "chromebook-snow"],
            &["no [emulator] section"],
        ),
        (&[&img_s], &["pass --board"]),
        (
            &[&img_s, "--board", "cubieboard", "--expect", "("],
            &["--expect"],
        ),
        (&[&img_s, "--board", "cubieboard", "--timeout", "0"], &[]),
        (&[&missing_s], &["cubieboard.img"]),
    ];
    for (args, wanted) in cases {
        support::run_err(support::boardsmith().arg("boot").args(args)).expect(2, wanted);
    }
}

// ---- a screen and the network: `--emulator desktop`, `--screenshot`, `--forward` (issue 18) ----

/// A free TCP port on 127.0.0.1 (bound, then released for QEMU to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Boots the board's minimal image on its desktop emulator with a screenshot taken once init reports
/// on the serial console (it has written to the framebuffer console, tty1, by then) and the board's
/// HTTP server forwarded to the host; the boot ends when the server's CGI reports, on the board's
/// console, that the host asked it. The PNG is checked with `file` and decoded with Python's zlib.
fn screen_and_forward(board: &str, uname_m: &str) -> Booted {
    let image = shared_image(board);
    let dir = tempdir();
    let shot = dir.path().join("screen.png");
    let port = free_port();
    let tag = new_tag();
    let log = dir.path().join("boot.log");
    let before = support::sha256_file(&image);
    let child = boot_cmd(
        &image,
        &[
            "--board",
            board,
            "--emulator",
            "desktop",
            "--expect",
            "BOARDSMITH-HTTP-SERVED",
            "--timeout",
            BOOT_TIMEOUT,
            "--forward",
            &format!("{port}:80"),
            "--json",
        ],
        &log,
        &tag,
    )
    .arg("--screenshot")
    .arg(&shot)
    .args(["--screenshot-after", MARKER, "--screenshot-delay", "2"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let up = wait_for_text(&log, "BOARDSMITH-HTTP-UP", Duration::from_secs(240));
    // curl, from the host, through QEMU's host forward to busybox httpd on the board.
    let answer = if up {
        let o = Command::new("curl")
            .args(["-sS", "--max-time", "60"])
            .arg(format!("http://127.0.0.1:{port}/cgi-bin/hello"))
            .output()
            .expect("curl (package curl)");
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    } else {
        String::new()
    };
    let out = child.wait_with_output().unwrap();
    assert_cleaned_up(&tag, &image, &before);
    let b = Booted::new(out, std::fs::read_to_string(&log).unwrap_or_default());
    assert!(
        up,
        "the board's HTTP server never came up:\n{}\n{}",
        b.stderr, b.log
    );
    assert!(
        answer.contains(&format!("BOARDSMITH-HTTP-OK from {uname_m}")),
        "curl through --forward: {answer}"
    );
    assert!(b.status.success(), "{}\n{}", b.stderr, b.log);
    assert!(b.log.contains("BOARDSMITH-HTTP-SERVED to"), "{}", b.log);
    assert!(
        b.stderr.contains(&format!(
            "forwarding 127.0.0.1:{port} on this machine to port 80"
        )),
        "{}",
        b.stderr
    );
    assert!(b.stderr.contains("screenshot"), "{}", b.stderr);
    // The JSON result names the emulator, the screenshot and the forward.
    let r: serde_json::Value = serde_json::from_str(&b.stdout).unwrap();
    assert_eq!(r["result"], "booted", "{r}");
    let r = &r["report"];
    assert_eq!(r["emulator"], "desktop", "{r}");
    assert_eq!(
        r["screenshots"][0]["file"],
        shot.to_string_lossy().as_ref(),
        "{r}"
    );
    assert_eq!(r["screenshots"][0]["width"], 1280, "{r}");
    assert!(
        r["screenshots"][0]["trigger"]
            .as_str()
            .unwrap()
            .contains(MARKER),
        "{r}"
    );
    assert_eq!(r["forwards"][0]["host_port"], port, "{r}");
    assert_eq!(r["forwards"][0]["guest_port"], 80, "{r}");

    // `file` (libmagic) reads the header: a PNG of the virtio GPU's 1280x720 screen.
    let file = Command::new("file")
        .arg("-b")
        .arg(&shot)
        .output()
        .expect("file (package file)");
    let what = String::from_utf8_lossy(&file.stdout);
    assert!(what.starts_with("PNG image data, 1280 x 720"), "{what}");
    // Decoded: not uniform; the text init wrote is at the top left, the bottom of the screen is empty.
    let s = support::png_stats(
        &shot,
        &["--region", "0,0,480,60", "--region", "0,400,1280,720"],
    );
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(1280), Some(720))
    );
    assert!(
        s["distinct"].as_u64().unwrap() >= 2,
        "the screen is uniform: {s}"
    );
    assert!(
        s["region_colours"]["0,0,480,60"].as_u64().unwrap() >= 2,
        "no text at the top: {s}"
    );
    assert_eq!(
        s["region_colours"]["0,400,1280,720"].as_u64(),
        Some(1),
        "{s}"
    );
    // Nothing of boardsmith's temporary screenshot name is left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    b
}

#[test]
fn armv8_foundation_desktop_emulator_shows_the_screen_and_forwards_a_port() {
    let b = screen_and_forward("armv8-foundation", "aarch64");
    assert!(
        b.stdout.contains("virtio_gpu") || b.log.contains("virtio_gpu"),
        "{}",
        b.log
    );
}

#[test]
fn cubieboard_desktop_emulator_boots_the_images_kernel_on_virt() {
    let b = screen_and_forward("cubieboard", "armv7l");
    // No U-Boot: boardsmith started the kernel of the image's extlinux.conf with the serial console
    // moved to virt's PL011; the root filesystem is the image's, over virtio.
    assert!(
        b.stderr.contains("extlinux.conf with QEMU's device tree"),
        "{}",
        b.stderr
    );
    assert!(b.stderr.contains("console=ttyAMA0"), "{}", b.stderr);
    assert!(!b.log.contains("U-Boot SPL"), "{}", b.log);
    assert!(
        b.log.contains("(/dev/vda2)"),
        "root is not the virtio disk:\n{}",
        b.log
    );
}

/// `--vnc`: QEMU serves the screen (its RFB greeting is read on 5900+N) and the board keeps running after
/// the pattern appeared, until boardsmith is stopped (SIGTERM: 143, QEMU gone with it).
#[test]
fn vnc_serves_the_screen_until_boardsmith_is_stopped() {
    let image = shared_image("armv8-foundation");
    let dir = tempdir();
    let log = dir.path().join("boot.log");
    let display = (40..100)
        .find(|n| std::net::TcpListener::bind(("127.0.0.1", 5900 + n)).is_ok())
        .expect("no free VNC port between 5940 and 5999");
    let tag = new_tag();
    let mut child = boot_cmd(
        &image,
        &[
            "--emulator",
            "desktop",
            "--quiet",
            "--expect",
            MARKER,
            "--timeout",
            BOOT_TIMEOUT,
            "--vnc",
            &format!(":{display}"),
        ],
        &log,
        &tag,
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let booted = wait_for_text(&log, "BOARDSMITH-HTTP-UP", Duration::from_secs(240));
    // Still running some seconds after the marker.
    std::thread::sleep(Duration::from_secs(3));
    let running = child.try_wait().unwrap().is_none();
    let greeting = std::net::TcpStream::connect(("127.0.0.1", 5900 + display)).map(|mut s| {
        use std::io::Read;
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut g = [0u8; 12];
        s.read_exact(&mut g).map(|_| g)
    });
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(st.success());
    assert_eq!(
        wait_untagged(&tag, Duration::from_secs(10)),
        Vec::<String>::new(),
        "QEMU left behind"
    );
    assert!(booted, "{err}");
    assert!(running, "boot ended after the pattern: {err}");
    let g = greeting.expect("VNC port").expect("VNC greeting");
    assert!(g.starts_with(b"RFB 003."), "{g:?}");
    assert!(
        err.contains(&format!("VNC on 127.0.0.1:{}", 5900 + display)),
        "{err}"
    );
    assert!(err.contains("keeps running"), "{err}");
    assert_eq!(out.status.code(), Some(128 + 15), "{err}");
}

#[test]
fn forward_to_a_busy_host_port_fails_naming_it() {
    let image = shared_image("armv8-foundation");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let b = boot(
        &image,
        &[
            "--emulator",
            "desktop",
            "--forward",
            &format!("{port}:80"),
            "--timeout",
            "60",
        ],
    );
    b.assert_failed(&[
        &port.to_string(),
        "could not listen on a --forward host port",
    ]);
}

#[test]
fn screen_and_network_options_are_checked_before_qemu_starts() {
    let dir = tempdir();
    let img = dir.path().join("some.img");
    std::fs::write(&img, vec![0u8; 4096]).unwrap();
    let img = img.to_string_lossy().into_owned();
    let fails = |args: &[&str], expect: &[&str]| {
        let mut all = vec!["boot", &img];
        all.extend(args);
        let out = boardsmith(&all);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for x in expect {
            assert!(err.contains(x), "{args:?}: {x:?} not in {err}");
        }
    };
    // The same with ARGS as one string, split at spaces.
    let fails_for =
        |args: &str, expect: &[&str]| fails(&args.split(' ').collect::<Vec<_>>(), expect);
    let a10 = "--board cubieboard";
    let v8 = "--board armv8-foundation";
    let desktop = "--board armv8-foundation --emulator desktop";
    // Options that belong to a --screenshot need one (clap), and one given before them.
    fails_for(&format!("{v8} --screenshot-after x"), &["--screenshot"]);
    fails_for(&format!("{v8} --screenshot-delay 3"), &["--screenshot"]);
    for (args, expect) in [
        (
            "--screenshot-delay 3 --screenshot a.png",
            &["--screenshot-delay has no effect here", "before it"][..],
        ),
        (
            "--screenshot a.png --screenshot-after x --screenshot-after y",
            &["--screenshot-after is given twice"],
        ),
        (
            "--screenshot a.png --screenshot-after (",
            &["--screenshot-after"],
        ),
        (
            "--screenshot a.png --screenshot-delay=-1",
            &["--screenshot-delay"],
        ),
        (
            "--screenshot a.png --screenshot a.png",
            &["a.png is given twice"],
        ),
        ("--screenshot /", &["names no file"]),
        (
            "--screenshot /nonexistent-dir/a.png",
            &["/nonexistent-dir/a.png", "does not exist"],
        ),
    ] {
        fails_for(&format!("{desktop} {args}"), expect);
    }
    // A screen needs a display device: QEMU's cubieboard machine has none; the desktop emulator has.
    fails_for(
        &format!("{a10} --screenshot a.png"),
        &["no display device", "--emulator desktop"],
    );
    for args in ["--vnc :1", "--display"] {
        fails_for(&format!("{a10} {args}"), &["no display device"]);
    }
    fails_for(&format!("{desktop} --display --vnc :1"), &["--vnc"]);
    fails_for(&format!("{desktop} --display curses"), &["curses"]);
    for bad in [":x", "1", ":60000", "host:1"] {
        fails_for(&format!("{desktop} --vnc {bad}"), &["--vnc"]);
    }
    // Watching options mean nothing when the console is handed over.
    fails_for(
        &format!("{desktop} --interactive --screenshot a.png"),
        &["--interactive"],
    );
    // Ports: each value checked, each host port once.
    for bad in [
        "22",
        "0:22",
        "2222:0",
        "70000:22",
        "2222:65536",
        "a:b",
        "host:2222:22",
        "1:2:3:4",
    ] {
        fails_for(&format!("{v8} --forward {bad}"), &["--forward"]);
    }
    fails_for(
        &format!("{v8} --forward 2222:22 --forward 2222:80"),
        &["2222", "twice"],
    );
    // An emulator that names no network device gets none, and --forward is refused.
    let text = std::fs::read_to_string(repo().join("boards/armv8-foundation.toml")).unwrap();
    let text = text
        .split("[emulators.desktop]")
        .next()
        .unwrap()
        .replace("network = \"virtio-net-pci\"\n", "");
    let profile = dir.path().join("offline.toml");
    std::fs::write(&profile, text).unwrap();
    let profile = profile.to_string_lossy().into_owned();
    fails(
        &["--board", &profile, "--forward", "2222:22"],
        &["no network device"],
    );
    // The A10 desktop emulator starts the kernel of the image's extlinux.conf: a board without one
    // (boot.methods = []) inherits the setup but cannot use it.
    let noconfig = dir.path().join("a10-noconfig.toml");
    std::fs::write(
        &noconfig,
        "extends = \"allwinner-a10\"\n[kernel]\ndtb = \"sun4i-a10-cubieboard.dtb\"\n\
         [bootloader]\npath = \"usr/lib/u-boot/Cubieboard/u-boot-sunxi-with-spl.bin\"\n\
         [boot]\nmethods = []\n",
    )
    .unwrap();
    let noconfig = noconfig.to_string_lossy().into_owned();
    fails(
        &["--board", &noconfig, "--emulator", "desktop"],
        &["does not include \"extlinux\"", "choose another --emulator"],
    );
    // `show` lists what each emulator gives the board.
    let show = String::from_utf8_lossy(&boardsmith(&["show", "cubieboard"]).stdout).into_owned();
    assert!(
        show.contains("emulator default: QEMU cubieboard (qemu-system-arm), sd disk, no screen"),
        "{show}"
    );
    assert!(
        show.contains("emulator desktop: QEMU virt,highmem=off (qemu-system-arm), virtio disk, kernel of the image's extlinux.conf, screen virtio-gpu-pci"),
        "{show}"
    );
    // Unknown emulators are named with the known ones.
    fails_for(
        &format!("{a10} --emulator gpu"),
        &["no emulator named `gpu`", "default", "desktop"],
    );
}
