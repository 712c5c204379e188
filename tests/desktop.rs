//! The desktop, seen and driven (issue 18): the xfce + droidmote root filesystem built with mmdebstrap for
//! armv8-foundation and for cubieboard, built into images, booted on each board's graphical emulator
//! (`boot --emulator desktop`: QEMU virt with a virtio GPU, keyboard, tablet and NIC) until the autologin
//! session starts, screenshot through QEMU's QMP, and driven from the host through `--forward`: a
//! DroidMote stand-in (tests/fixtures/droidmote-standin.c, cross-compiled statically here) authenticates
//! with the configured password, opens a terminal with Xfce's Ctrl+Alt+T and types a command into it
//! that reaches a listener of this test on the host; a wrong password is refused and types nothing.
//! ssh is reached through a second forward (ssh-keyscan), the screen is served over `--vnc` (its RFB
//! greeting is read). The PNG is decoded by Python's zlib (tests/fixtures/png_stats.py) and must show the
//! Xfce panel.
//!
//! Slow and opt-in: `cargo test --release --test desktop -- --ignored --nocapture` (about an hour per
//! root filesystem under qemu-user on two cores, then some minutes per boot). A root filesystem is
//! kept in target/tmp/desktop-e2e/ with the list of its inputs (recipe and profile files, the stand-in,
//! the options); a later run whose inputs are identical boots that tarball again instead of rebuilding
//! it (it says so). Remove the directory to force the builds. With BOARDSMITH_SCREENSHOT_DIR=docs the
//! checked screenshots are copied to docs/desktop-BOARD.png (the README shows them).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const EPOCH: &str = "1700000000";
const USER_PASSWORD: &str = "desktop-test-pw";
const DROIDMOTE_PASSWORD: &str = "remote-control-42";
/// The autologin session has started: the DroidMote stand-in, which the session's autostart entry runs as
/// the desktop user, has created its uinput keyboard and the kernel says so on the serial console
/// (systemd's own "Started session-N.scope" is not printed there once booting is over).
const SESSION: &str = r"input: DroidMote stand-in keyboard";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn work_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("desktop-e2e");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn elapsed(since: Instant) -> String {
    format!("{:.0} s", since.elapsed().as_secs_f64())
}

/// The DroidMote stand-in for `arch`, compiled statically with Debian's cross compiler.
fn standin(arch: &str) -> PathBuf {
    let (cc, pkg) = match arch {
        "armhf" => (
            "arm-linux-gnueabihf-gcc",
            "gcc-arm-linux-gnueabihf libc6-dev-armhf-cross",
        ),
        _ => (
            "aarch64-linux-gnu-gcc",
            "gcc-aarch64-linux-gnu libc6-dev-arm64-cross",
        ),
    };
    let out = work_dir().join(format!("droidmote-standin-{arch}"));
    support::run_tool(
        Command::new(cc)
            .args(["-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&out)
            .arg(repo().join("tests/fixtures/droidmote-standin.c")),
        &format!("is {pkg} installed?"),
    );
    out
}

fn password_hash() -> String {
    let o = Command::new("openssl")
        .args(["passwd", "-6", "-salt", "desktoptest", USER_PASSWORD])
        .output()
        .expect("openssl (package openssl)");
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The xfce + droidmote + ssh root filesystem for `board`, built by `boardsmith rootfs` (mmdebstrap), or
/// the one a previous run built from identical inputs.
fn desktop_rootfs(board: &str, arch: &str, standin: &Path) -> PathBuf {
    let tar = work_dir().join(format!("{board}-desktop.tar"));
    let stamp = work_dir().join(format!("{board}-desktop.inputs"));
    let standin_sha = sha256(standin);
    let args: Vec<String> = [
        "--feature",
        "xfce",
        "--feature",
        "droidmote",
        "--feature",
        "ssh",
        "--droidmote-sha256",
        &standin_sha,
        "--security-mirror",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Everything the tarball is made of that this test can name: options, recipe and profile files.
    let mut inputs = format!(
        "boardsmith desktop test rootfs v1\nboard={board}\nepoch={EPOCH}\nargs={args:?}\nstandin={standin_sha}\n"
    );
    let profile = board_sources(board);
    for f in [
        "rootfs/base.toml",
        "rootfs/features/xfce.toml",
        "rootfs/features/droidmote.toml",
        "rootfs/features/ssh.toml",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(profile)
    {
        inputs.push_str(&format!("file {f} {}\n", sha256(&repo().join(&f))));
    }
    if tar.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(inputs.as_str()) {
        eprintln!(
            "desktop {board}: reusing {} (built by an earlier run from the same inputs: {})",
            tar.display(),
            stamp.display()
        );
        return tar;
    }
    let _ = std::fs::remove_file(&stamp);
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../test-cache/apt");
    std::fs::create_dir_all(&cache).unwrap();
    let started = Instant::now();
    let o = support::boardsmith()
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env("BOARDSMITH_PASSWORD_HASH", password_hash())
        .env("BOARDSMITH_DROIDMOTE_PASSWORD", DROIDMOTE_PASSWORD)
        .env_remove("BOARDSMITH_CACHE")
        .args(["rootfs", board, "--progress", "plain", "-o"])
        .arg(&tar)
        .arg("--droidmote-binary")
        .arg(standin)
        .args(&args)
        .arg("--cache")
        .arg(&cache)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "boardsmith rootfs {board} ({arch}) failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!(
        "TIME desktop {board}: boardsmith rootfs (xfce, droidmote, ssh; {arch}) {}, {} bytes",
        elapsed(started),
        std::fs::metadata(&tar).unwrap().len()
    );
    std::fs::write(&stamp, inputs).unwrap();
    tar
}

/// The profile files of an embedded board, as repository paths.
fn board_sources(board: &str) -> Vec<String> {
    let mut v = vec![format!("boards/{board}.toml")];
    let text = std::fs::read_to_string(repo().join(&v[0])).unwrap();
    if let Some(base) = text.lines().find_map(|l| {
        l.strip_prefix("extends = \"")
            .and_then(|r| r.strip_suffix('"'))
    }) {
        v.push(format!("boards/base/{base}.toml"));
    }
    v
}

fn build_image(board: &str, tar: &Path) -> PathBuf {
    let out = work_dir().join(format!("out-{board}"));
    let _ = std::fs::remove_dir_all(&out);
    let started = Instant::now();
    let o = support::boardsmith()
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["build", board, "--progress", "none", "--rootfs"])
        .arg(tar)
        .arg("-o")
        .arg(&out)
        // Emulated without KVM on a loaded host, udev's first pass over the devices can outlast systemd's
        // 90 s wait for the fstab devices (seen: /boot's partition timed out while udevd was still
        // starting, cubieboard on virt at load 12): the board is slow, not broken.
        .args(["--cmdline-append", "systemd.default_device_timeout_sec=600"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "boardsmith build {board}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!(
        "TIME desktop {board}: boardsmith build {}",
        elapsed(started)
    );
    out.join(format!("{board}.img"))
}

/// A free TCP port on 127.0.0.1 (bound, then released for QEMU to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A VNC display number N whose port 5900+N is free on 127.0.0.1.
fn free_vnc_display() -> u16 {
    (40..100)
        .find(|n| TcpListener::bind(("127.0.0.1", 5900 + n)).is_ok())
        .expect("no free VNC port between 5940 and 5999")
}

/// Lines received by a TCP listener on 127.0.0.1, which the guest reaches as 10.0.2.2.
struct Listener {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Listener {
    fn start() -> Listener {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let keep = lines.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let keep = keep.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                    let mut text = String::new();
                    let _ = conn.take(4096).read_to_string(&mut text);
                    keep.lock().unwrap().extend(text.lines().map(String::from));
                });
            }
        });
        Listener { port, lines }
    }

    fn received(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn wait_for(&self, text: &str, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if self.received().iter().any(|l| l.contains(text)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    }
}

/// A connection to the stand-in through the forwarded port, once its banner arrives.
struct Remote {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Remote {
    fn connect(port: u16, limit: Duration) -> Remote {
        let until = Instant::now() + limit;
        loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut reader = BufReader::new(s.try_clone().unwrap());
                let mut banner = String::new();
                // QEMU accepts on the host side even before the guest listens, then closes.
                if reader.read_line(&mut banner).is_ok() && banner.starts_with("DROIDMOTE-STANDIN")
                {
                    return Remote { reader, writer: s };
                }
            }
            assert!(
                Instant::now() < until,
                "DroidMote never answered on the forwarded port {port}"
            );
            std::thread::sleep(Duration::from_secs(3));
        }
    }

    fn send(&mut self, line: &str) -> String {
        let _ = self.writer.write_all(format!("{line}\n").as_bytes());
        let mut answer = String::new();
        let _ = self.reader.read_line(&mut answer);
        answer.trim().to_string()
    }

    /// True when the server closed the connection (end of file or reset).
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => rest.is_empty(),
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// The Xfce panel: a band across the top of the screen, one colour over most of each of its rows (the
/// panel's background, with launchers, the window list and the clock on it), that is neither the colour
/// of the desktop below it nor black, and that the rest of the screen does not share.
fn assert_xfce_panel(png: &Path) {
    let s = support::png_stats(png, &["--band", "60", "--region", "0,0,1280,28"]);
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(1280), Some(720)),
        "{s}"
    );
    assert!(
        s["distinct"].as_u64().unwrap() > 200,
        "screen too plain: {s}"
    );
    let rows = s["top_band"].as_array().unwrap();
    // The panel's colour: the first rows' main colour. Its rows need not be contiguous (a label or an
    // icon may take a row's majority), but most of the first 40 rows have it and the screen below not.
    let panel = &rows[2]["colour"];
    let panel_rows = rows
        .iter()
        .take(40)
        .filter(|r| &r["colour"] == panel && r["share"].as_f64().unwrap() > 0.5)
        .count();
    assert!(
        (18..=40).contains(&panel_rows),
        "no panel-like band at the top ({panel_rows} of the first 40 rows are mostly {panel}): {s}"
    );
    assert!(
        rows[40..].iter().all(|r| &r["colour"] != panel),
        "the panel's colour is also the desktop's: {s}"
    );
    assert_ne!(
        panel,
        &serde_json::json!([0, 0, 0]),
        "the top band is black: {s}"
    );
    // Something is drawn on the panel: launchers, the clock.
    assert!(
        s["region_colours"]["0,0,1280,28"].as_u64().unwrap() > 10,
        "nothing on the panel: {s}"
    );
}

/// The running `boardsmith boot`: stopped (SIGTERM, as a user would) if the test panics, so that a
/// failed run leaves no QEMU behind.
struct Boot(Option<std::process::Child>);

impl Boot {
    fn child(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("boot already stopped")
    }

    /// Panics, with boardsmith's error output, if boot has ended before `what`.
    fn check(&mut self, what: &str) {
        if let Ok(Some(st)) = self.child().try_wait() {
            let mut err = String::new();
            let _ = self.child().stderr.take().unwrap().read_to_string(&mut err);
            panic!("boot ended ({st}) before {what}: {err}");
        }
    }

    /// SIGTERM, then its exit status and output.
    fn stop(&mut self) -> std::process::Output {
        let child = self.0.take().expect("boot already stopped");
        let st = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        child.wait_with_output().unwrap()
    }
}

impl Drop for Boot {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

/// Builds, boots and drives one board's desktop.
fn desktop(board: &str, arch: &str) {
    let total = Instant::now();
    let standin = standin(arch);
    let tar = desktop_rootfs(board, arch, &standin);
    let image = build_image(board, &tar);
    let before = sha256(&image);

    let listener = Listener::start();
    let (dm_port, ssh_port) = (free_port(), free_port());
    let shot = work_dir().join(format!("{board}-desktop.png"));
    let _ = std::fs::remove_file(&shot);
    let log = work_dir().join(format!("{board}-boot.log"));
    // An earlier run's log would show the session at once.
    let _ = std::fs::remove_file(&log);
    // The screenshot is taken well after the session started: Xfce draws its panel slowly under TCG.
    // The screen is also served over VNC, so the board keeps running after the screenshot until this
    // test has driven it and stops boardsmith (SIGTERM).
    let vnc = free_vnc_display();
    let started = Instant::now();
    let mut boot = Boot(Some(
        support::boardsmith()
            .arg("boot")
            .arg(&image)
            .args(["--board", board, "--emulator", "desktop", "--quiet"])
            .args(["--forward", &format!("{dm_port}:2303")])
            .args(["--forward", &format!("{ssh_port}:22")])
            .args(["--expect", SESSION, "--timeout", "2700"])
            .arg("--screenshot")
            .arg(&shot)
            .args(["--screenshot-delay", "420"])
            .args(["--vnc", &format!("127.0.0.1:{vnc}")])
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));

    // The session: its DroidMote stand-in registers its keyboard (the kernel says so on the console).
    let until = Instant::now() + Duration::from_secs(2700);
    let session_re = regex::Regex::new(SESSION).unwrap();
    while !std::fs::read_to_string(&log).is_ok_and(|t| session_re.is_match(&t)) {
        boot.check("the session started");
        assert!(Instant::now() < until, "no autologin session");
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!(
        "TIME desktop {board}: autologin session after {}",
        elapsed(started)
    );

    // The screenshot (session + 420 s: Xfce draws its panel slowly under TCG), of the desktop as the
    // session left it, before this test opens terminals on it.
    let until = Instant::now() + Duration::from_secs(1200);
    while !shot.is_file() {
        boot.check("the screenshot");
        assert!(Instant::now() < until, "no screenshot");
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!(
        "TIME desktop {board}: screenshot after {}",
        elapsed(started)
    );
    assert_xfce_panel(&shot);

    // DroidMote, started by the session's autostart, answers on the forwarded port.
    let mut wrong = Remote::connect(dm_port, Duration::from_secs(600));
    eprintln!(
        "TIME desktop {board}: DroidMote answered after {}",
        elapsed(started)
    );
    assert_eq!(wrong.send("AUTH not the password"), "DENIED");
    // Whatever follows a refused login types nothing: the server has closed the connection.
    let _ = wrong.writer.write_all(
        format!(
            "CHORD ctrl+alt+t\nKEYS echo WRONG-PASSWORD-TYPED >/dev/tcp/10.0.2.2/{}\nCHORD enter\n",
            listener.port
        )
        .as_bytes(),
    );
    assert!(wrong.closed(), "a refused client was not disconnected");

    let mut remote = Remote::connect(dm_port, Duration::from_secs(60));
    assert_eq!(remote.send(&format!("AUTH {DROIDMOTE_PASSWORD}")), "OK");
    let mut arrived = false;
    for attempt in 1..=3 {
        // Xfce's shortcut opens a terminal; wait for it to appear and take the focus, then type.
        assert_eq!(remote.send("CHORD ctrl+alt+t"), "OK", "chord");
        std::thread::sleep(Duration::from_secs(45));
        let marker = format!("KEYS-ARRIVED-{attempt}");
        assert_eq!(
            remote.send(&format!(
                "KEYS echo {marker} >/dev/tcp/10.0.2.2/{}",
                listener.port
            )),
            "OK"
        );
        assert_eq!(remote.send("CHORD enter"), "OK");
        if listener.wait_for(&marker, Duration::from_secs(60)) {
            eprintln!(
                "TIME desktop {board}: keys arrived after {} (attempt {attempt})",
                elapsed(started)
            );
            arrived = true;
            break;
        }
    }
    assert_eq!(remote.send("QUIT"), "OK");
    let _ = remote.writer.shutdown(Shutdown::Both);
    assert!(
        arrived,
        "the typed command never reached the host: {:?}",
        listener.received()
    );

    // ssh on the board, through the second forward: its host key (made on first boot) is served.
    let keyscan = Command::new("ssh-keyscan")
        .args(["-T", "30", "-p", &ssh_port.to_string(), "127.0.0.1"])
        .output()
        .expect("ssh-keyscan (package openssh-client)");
    let keys = String::from_utf8_lossy(&keyscan.stdout);
    // Any host key type (the first run served RSA and ECDSA keys; the scan's ed25519 answer may come later).
    let prefix = format!("[127.0.0.1]:{ssh_port} ");
    assert!(
        keys.lines().any(|l| l.starts_with(&prefix)
            && ["ssh-ed25519 ", "ssh-rsa ", "ecdsa-sha2-"]
                .iter()
                .any(|t| l[prefix.len()..].starts_with(t))),
        "no ssh host key: {keys}"
    );

    // The screen is served over VNC: a VNC server's greeting (RFB protocol version) on 5900+N.
    let mut rfb = TcpStream::connect(("127.0.0.1", 5900 + vnc)).expect("VNC port");
    rfb.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut greeting = [0u8; 12];
    rfb.read_exact(&mut greeting).unwrap();
    assert!(greeting.starts_with(b"RFB 003."), "{greeting:?}");
    drop(rfb);

    // boardsmith is stopped: QEMU goes with it.
    let out = boot.stop();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + 15), "boot: {err}");
    assert!(err.contains("keeps running"), "{err}");
    assert!(err.contains("screenshot"), "{err}");
    eprintln!("TIME desktop {board}: boot run {} in all", elapsed(started));
    assert_eq!(sha256(&image), before, "booting changed the image");
    assert!(
        !listener
            .received()
            .iter()
            .any(|l| l.contains("WRONG-PASSWORD-TYPED")),
        "a refused client typed: {:?}",
        listener.received()
    );
    // For the README: BOARDSMITH_SCREENSHOT_DIR=docs keeps the checked screenshot in the repository.
    if let Some(dir) = std::env::var_os("BOARDSMITH_SCREENSHOT_DIR") {
        let to = Path::new(&dir).join(format!("desktop-{board}.png"));
        std::fs::copy(&shot, &to).unwrap_or_else(|e| panic!("copying to {}: {e}", to.display()));
    }
    eprintln!(
        "TIME desktop {board}: whole test {} (screenshot {})",
        elapsed(total),
        shot.display()
    );
}

/// The panel check itself (fast, not ignored): it accepts the README's screenshot (taken by this file's
/// slow test) and refuses the same screen with its top 40 rows painted in the desktop's colour.
#[test]
fn panel_check_accepts_a_real_xfce_screen_and_refuses_one_without_panel() {
    let real = repo().join("docs/desktop-armv8-foundation.png");
    assert_xfce_panel(&real);
    let painted = work_dir().join("no-panel.png");
    let o = Command::new("python3")
        .arg(repo().join("tests/fixtures/png_paint.py"))
        .arg(&real)
        .arg(&painted)
        .args(["0", "40", "21,34,51"])
        .output()
        .expect("python3");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let refused = std::panic::catch_unwind(|| assert_xfce_panel(&painted));
    assert!(
        refused.is_err(),
        "a screen without a panel passed the check"
    );
}

/// The stand-in's own protocol, on the host (fast, not ignored): compiled with the host's gcc, started as
/// the feature starts it (`droidmote PORT PASSWORD`); a wrong password is refused and the connection
/// closed, the right one accepted, an overlong line ends the connection. (No key is sent: on the host
/// that would create a virtual keyboard.)
#[test]
fn droidmote_standin_authenticates_with_the_configured_password() {
    let bin = work_dir().join("droidmote-standin-host");
    let o = Command::new("gcc")
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&bin)
        .arg(repo().join("tests/fixtures/droidmote-standin.c"))
        .output()
        .expect("gcc (package gcc)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let port = free_port();
    let mut server = Command::new(&bin)
        .args([&port.to_string(), DROIDMOTE_PASSWORD])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let result = std::panic::catch_unwind(|| {
        let mut wrong = Remote::connect(port, Duration::from_secs(20));
        assert_eq!(wrong.send("AUTH remote-control-4"), "DENIED");
        assert!(wrong.closed());
        let mut right = Remote::connect(port, Duration::from_secs(20));
        assert_eq!(right.send(&format!("AUTH {DROIDMOTE_PASSWORD}")), "OK");
        assert_eq!(right.send("QUIT"), "OK");
        assert!(right.closed());
        let mut long = Remote::connect(port, Duration::from_secs(20));
        let _ = long.writer.write_all(&[b'A'; 4096]);
        assert!(long.closed(), "an overlong line was accepted");
    });
    let _ = server.kill();
    let _ = server.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
#[ignore = "slow: builds the xfce root filesystem under qemu-user (about an hour): cargo test --release --test desktop -- --ignored"]
fn armv8_foundation_desktop_is_seen_and_driven() {
    desktop("armv8-foundation", "arm64");
}

#[test]
#[ignore = "slow: builds the xfce root filesystem under qemu-user (about an hour): cargo test --release --test desktop -- --ignored"]
fn cubieboard_desktop_is_seen_and_driven() {
    desktop("cubieboard", "armhf");
}
