//! One real cross build: `boardsmith kernel cubieboard` on Debian's linux-source-6.1 (sunxi_defconfig +
//! the board's fragments, arm-linux-gnueabihf-gcc), checked with independent tools: the zImage magic,
//! `dtc` on the installed device tree, `modinfo` on the modules, the installed config, and a boot of the
//! result on QEMU's cubieboard inside an image `boardsmith build` made from it.
//!
//! Opt-in, `#[ignore]`d (it compiles a kernel: most of an hour on two shared cores):
//! `cargo test --release --test kernel_build -- --ignored` (BOARDSMITH_LINUX_SRC=DIR for another tree).
//! Runs under `nice -n 19`.

mod linux_source;
mod support;

use std::path::Path;
use std::process::Command;

use boardsmith::rootfs::tree::RootTree;
use linux_source::{linux_src, work_dir};

fn tool(cmd: &str, args: &[&str]) -> String {
    let out = support::run_ok(Command::new(cmd).args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "slow (a kernel cross build, most of an hour): cargo test --release --test kernel_build -- --ignored"]
fn cubieboard_kernel_cross_build() {
    let src = linux_src();
    let out_dir = tempfile::tempdir().expect("tempdir");
    let staging = out_dir.path().join("cubieboard-kernel");
    let log = out_dir.path().join("build.log");
    let bin = support::bin_path();
    let out = support::under("nice", &["-n", "19"])
        .args([
            "kernel",
            "cubieboard",
            "--progress",
            "plain",
            "--json",
            "--kernel-src",
        ])
        .arg(&src)
        .arg("-o")
        .arg(&staging)
        .arg("--log")
        .arg(&log)
        .arg("--work-dir")
        .arg(work_dir().join("build"))
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("boardsmith: make zImage modules dtbs"),
        "progress: {err}"
    );
    assert!(
        err.contains("installed linux 6.1.176 for cubieboard"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let release = v["build"]["release"].as_str().expect("release").to_string();
    assert!(release.starts_with("6.1."), "{release}");

    // The full log has every make command and its output.
    let log_text = std::fs::read_to_string(&log).expect("log");
    assert!(
        log_text.contains("$ make -C") && log_text.contains("modules_install"),
        "log"
    );

    // Kernel: a zImage (magic 0x016f2818 at 0x24), where the profile's kernel.path finds it.
    let kernel = staging.join(format!("boot/vmlinuz-{release}"));
    let data = std::fs::read(&kernel).expect("kernel");
    assert_eq!(
        &data[0x24..0x28],
        &0x016f_2818u32.to_le_bytes(),
        "zImage magic"
    );
    let tree = RootTree::open(&staging).expect("staging tree");
    assert_eq!(
        tree.glob("boot/vmlinuz-*").expect("glob"),
        vec![format!("boot/vmlinuz-{release}")]
    );
    assert_eq!(
        tree.glob("usr/lib/linux-image-*").expect("glob"),
        vec![format!("usr/lib/linux-image-{release}")]
    );

    // The installed config (= the checked .config) carries the fragments' symbols.
    let config =
        std::fs::read_to_string(staging.join(format!("boot/config-{release}"))).expect("config");
    let lines: Vec<&str> = config.lines().collect();
    support::assert_has_all(
        &lines,
        &[
            "CONFIG_INPUT_UINPUT=m",
            "CONFIG_USB_NET_AX8817X=m",
            "CONFIG_SND_USB_AUDIO=m",
            "CONFIG_BT_HCIBTUSB=m",
        ],
    );
    assert!(staging.join(format!("boot/System.map-{release}")).is_file());

    // Device tree: dtc decompiles it, and it is the Cubieboard's.
    let dtb = staging.join(format!(
        "usr/lib/linux-image-{release}/sun4i-a10-cubieboard.dtb"
    ));
    let dts = tool(
        "dtc",
        &["-I", "dtb", "-O", "dts", "-q", &dtb.display().to_string()],
    );
    assert!(
        dts.contains("compatible = \"cubietech,a10-cubieboard"),
        "compatible"
    );

    // Modules: installed, indexed by depmod, built for this release.
    let mods = staging.join(format!("lib/modules/{release}"));
    let dep = std::fs::read_to_string(mods.join("modules.dep")).expect("modules.dep");
    for m in [
        "uinput.ko",
        "asix.ko",
        "snd-usb-audio.ko",
        "btusb.ko",
        "usbnet.ko",
    ] {
        let path = dep
            .lines()
            .filter_map(|l| l.split(':').next())
            .find(|p| Path::new(p).file_name().is_some_and(|n| n == m))
            .unwrap_or_else(|| panic!("{m} not in modules.dep"));
        let vermagic = tool(
            "modinfo",
            &["-F", "vermagic", &mods.join(path).display().to_string()],
        );
        assert!(
            vermagic.starts_with(&format!("{release} ")),
            "{m}: {vermagic}"
        );
    }
    assert!(
        !mods.join("build").exists() && !mods.join("source").exists(),
        "host symlinks removed"
    );
    assert!(staging.join(".boardsmith-kernel.json").is_file());

    // The source tree stayed clean.
    for artefact in [
        ".config",
        "include/config",
        "include/generated",
        "vmlinux",
        "arch/arm/boot/zImage",
    ] {
        assert!(
            !src.join(artefact).exists(),
            "{artefact} appeared in the tree"
        );
    }

    boot_in_qemu(&bin, &staging, &release, out_dir.path());
}

/// The staging tree in use: a minimal Debian root filesystem (scripts/minimal-rootfs.sh) with Debian's
/// kernel replaced by it, built into an image by `boardsmith build`, booted on QEMU's cubieboard until
/// the root filesystem's init reports the running kernel.
fn boot_in_qemu(bin: &Path, staging: &Path, release: &str, dir: &Path) {
    use std::io::BufRead;
    let rootfs = dir.join("rootfs");
    support::run_ok(
        Command::new("scripts/minimal-rootfs.sh")
            .arg("cubieboard")
            .arg(&rootfs)
            .env("BOARDSMITH", bin),
    );
    // Take Debian's kernel out; keep its initramfs (its module loads fail harmlessly: this kernel has
    // MMC and ext4 built in) under this kernel's release so the image builder pairs them.
    for sub in ["boot", "usr/lib", "lib/modules"] {
        for e in std::fs::read_dir(rootfs.join(sub))
            .expect("rootfs dir")
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("initrd.img-") {
                std::fs::rename(e.path(), rootfs.join(format!("boot/initrd.img-{release}")))
                    .expect("rename");
            } else if name.ends_with("-armmp") && e.path().is_dir() {
                std::fs::remove_dir_all(e.path()).expect("rm");
            } else if name.ends_with("-armmp") {
                std::fs::remove_file(e.path()).expect("rm");
            }
        }
    }
    let cp = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", staging.display()))
        .arg(&rootfs)
        .status()
        .expect("cp");
    assert!(cp.success());
    let img_dir = dir.join("img");
    support::build_ok("cubieboard", &rootfs, &img_dir, &["--size", "256MiB"]);

    let mut qemu = Command::new("qemu-system-arm")
        .args([
            "-M",
            "cubieboard",
            "-m",
            "1G",
            "-nographic",
            "-no-reboot",
            "-drive",
        ])
        .arg(format!(
            "if=sd,format=raw,file={},snapshot=on",
            img_dir.join("cubieboard.img").display()
        ))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("qemu-system-arm");
    let stdout = qemu.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(stdout);
        let mut buf = Vec::new();
        while r
            .read_until(b'\n', &mut buf)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                break;
            }
            buf.clear();
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let mut console = String::new();
    let mut marker = None;
    while marker.is_none() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if line.contains("BOARDSMITH-ROOT-OK") {
                    marker = Some(line.clone());
                }
                console.push_str(&line);
            }
            Err(_) => break,
        }
    }
    // Our own child, by its handle.
    let _ = qemu.kill();
    let _ = qemu.wait();
    let marker =
        marker.unwrap_or_else(|| panic!("no BOARDSMITH-ROOT-OK on the console:\n{console}"));
    assert!(marker.contains(&format!("kernel {release}")), "{marker}");
    assert!(
        console.contains(&format!("Linux version {release}")),
        "{console}"
    );
}
