//! One real cross build: `boardsmith kernel cubieboard` on Debian's linux-source-6.1 (sunxi_defconfig +
//! the board's fragments, arm-linux-gnueabihf-gcc), checked with independent tools: the zImage magic,
//! `dtc` on the installed device tree, `modinfo` on the modules, and the installed config.
//!
//! Opt-in (it compiles a kernel: most of an hour on two shared cores): BOARDSMITH_KERNEL_BUILD_TEST=1,
//! plus BOARDSMITH_KERNEL_TESTS=1 or BOARDSMITH_LINUX_SRC=DIR for the tree. Runs under `nice -n 19`.

mod linux_source;

use std::path::Path;
use std::process::Command;

use boardsmith::image::tree::RootTree;
use linux_source::{linux_src, work_dir};

fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn cubieboard_kernel_cross_build() {
    if std::env::var("BOARDSMITH_KERNEL_BUILD_TEST").as_deref() != Ok("1") {
        eprintln!("cubieboard_kernel_cross_build: skipped (set BOARDSMITH_KERNEL_BUILD_TEST=1)");
        return;
    }
    let Some(src) = linux_src("cubieboard_kernel_cross_build") else {
        return;
    };
    let out_dir = tempfile::tempdir().expect("tempdir");
    let staging = out_dir.path().join("cubieboard-kernel");
    let log = out_dir.path().join("build.log");
    let bin = assert_cmd::cargo::cargo_bin("boardsmith");
    let out = Command::new("nice")
        .args(["-n", "19"])
        .arg(&bin)
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
        .env_remove("BOARDSMITH_WORK_DIR")
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
    for line in [
        "CONFIG_INPUT_UINPUT=m",
        "CONFIG_USB_NET_AX8817X=m",
        "CONFIG_SND_USB_AUDIO=m",
        "CONFIG_BT_HCIBTUSB=m",
    ] {
        assert!(
            config.lines().any(|l| l == line),
            "{line} missing from the config"
        );
    }
    assert!(staging.join(format!("boot/System.map-{release}")).is_file());

    // Device tree: dtc decompiles it, and it is the Cubieboard's.
    let dtb = staging.join(format!(
        "usr/lib/linux-image-{release}/sun4i-a10-cubieboard.dtb"
    ));
    let dts = tool(
        "dtc",
        &["-I", "dtb", "-O", "dts", "-q", &dtb.display().to_string()],
    );
    assert!(dts.contains("\"cubietech,a10-cubieboard\""), "compatible");

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
}
