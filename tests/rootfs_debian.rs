//! Real Debian root filesystems through mmdebstrap and qemu-user (needs root, binfmt_misc with the QEMU
//! handlers, and a Debian mirror). CI runs the two minimal builds; the full xfce + droidmote build is
//! opt-in (`BOARDSMITH_SLOW_TESTS=1 cargo test --test rootfs_debian -- --ignored`).
//!
//! Packages are cached in target/test-cache/apt across runs. The security archive is left out: the
//! mirror these machines reach serves an armhf bookworm-security index whose size does not match its
//! Release file, which apt (rightly) refuses.

mod rootfs_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rootfs_support::*;

const EPOCH: &str = "1700000000";
const PASSWORD: &str = "debian-test-pw";

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_boardsmith"))
}

/// The package cache: target/test-cache/apt, or BOARDSMITH_TEST_CACHE (a build holds its architecture's
/// cache for its whole run, so concurrent runs of the same architecture want separate caches).
fn cache() -> PathBuf {
    let p = std::env::var_os("BOARDSMITH_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../test-cache/apt"));
    std::fs::create_dir_all(&p).expect("cache dir");
    p.canonicalize().expect("canonical cache")
}

/// `boardsmith SUBCOMMAND BOARD` with the options every build here uses; `cache` is the package cache
/// for a Debian build (None for a prebuilt tarball, which refuses the Debian options).
fn boardsmith(sub: &str, board: &str, cache: Option<&Path>) -> Command {
    let mut c = Command::new(bin());
    c.env("SOURCE_DATE_EPOCH", EPOCH)
        .env(
            "BOARDSMITH_PASSWORD_HASH",
            sha512_hash(PASSWORD, "debiantest"),
        )
        .env_remove("BOARDSMITH_BINFMT_DIR")
        .env_remove("BOARDSMITH_CACHE")
        .args([sub, board, "--progress", "plain"]);
    if let Some(cache) = cache {
        c.args(["--security-mirror", ""]).arg("--cache").arg(cache);
    }
    c
}

/// `boardsmith rootfs BOARD -o OUT --json` with extra arguments; returns the report. A Debian build
/// uses `cache` (None: the test cache); with --rootfs-tarball there is none.
fn rootfs(board: &str, out: &Path, extra: &[&str], envs: &[(&str, &str)]) -> serde_json::Value {
    rootfs_with_cache(board, out, extra, envs, None)
}

fn rootfs_with_cache(
    board: &str,
    out: &Path,
    extra: &[&str],
    envs: &[(&str, &str)],
    cache_dir: Option<&Path>,
) -> serde_json::Value {
    let started = Instant::now();
    let debian_cache = cache_dir.map(Path::to_path_buf).unwrap_or_else(cache);
    let prebuilt = extra.contains(&"--rootfs-tarball");
    let mut c = boardsmith(
        "rootfs",
        board,
        (!prebuilt).then_some(debian_cache.as_path()),
    );
    c.arg("-o").arg(out).arg("--json").args(extra);
    for (k, v) in envs {
        c.env(k, v);
    }
    let o = c.output().expect("run boardsmith rootfs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "boardsmith rootfs {board} failed:\n{err}"
    );
    eprintln!(
        "boardsmith rootfs {board}: {:.0} s, {} bytes",
        started.elapsed().as_secs_f64(),
        std::fs::metadata(out).map(|m| m.len()).unwrap_or(0)
    );
    serde_json::from_slice(&o.stdout).expect("json report")
}

/// What every Debian build must have: boot files where the profile expects them, fstab from the plan,
/// the serial getty, the hashed password, root locked, the grow unit.
fn check_common(
    tar: &Path,
    board: &str,
    tty: &str,
) -> std::collections::BTreeMap<String, (char, String, String, Option<String>)> {
    let list = tar_list(tar);
    assert!(
        list.keys().any(|k| k.starts_with("boot/vmlinuz-")),
        "kernel"
    );
    assert!(
        list.keys().any(|k| k.starts_with("boot/initrd.img-")),
        "initrd"
    );
    assert!(list.contains_key("usr/bin/apt"), "apt");

    let fstab = tar_string(tar, "etc/fstab");
    let entries: Vec<(String, String)> = fstab
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].to_string())
        })
        .collect();
    for (role, partuuid, _) in planned_partitions(&bin(), board, EPOCH) {
        let mount = match role.as_str() {
            "root" => "/",
            "boot" => "/boot/firmware",
            _ => continue,
        };
        assert!(
            entries.contains(&(format!("PARTUUID={partuuid}"), mount.to_string())),
            "fstab lacks PARTUUID={partuuid} {mount}:\n{fstab}"
        );
    }

    let getty = format!("etc/systemd/system/getty.target.wants/serial-getty@{tty}.service");
    assert_eq!(
        list.get(&getty).and_then(|e| e.3.clone()).as_deref(),
        Some("/lib/systemd/system/serial-getty@.service"),
        "serial getty on {tty}"
    );
    assert!(list.contains_key("usr/lib/systemd/system/serial-getty@.service"));
    assert!(
        list.contains_key("etc/systemd/system/local-fs.target.wants/boardsmith-grow-root.service"),
        "grow unit enabled"
    );
    assert!(
        list["usr/lib/boardsmith/grow-root"]
            .1
            .starts_with("-rwxr-xr-x")
    );
    assert!(
        list.contains_key("etc/systemd/system/multi-user.target.wants/systemd-networkd.service")
    );

    let shadow = tar_string(tar, "etc/shadow");
    assert!(
        shadow.lines().any(|l| l.starts_with("root:*:")),
        "root locked"
    );
    let user = shadow
        .lines()
        .find(|l| l.starts_with("debian:"))
        .expect("default user");
    assert!(
        hash_matches(user.split(':').nth(1).unwrap_or(""), PASSWORD),
        "{user}"
    );
    let group = tar_string(tar, "etc/group");
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("sudo:") && l.ends_with("debian")),
        "{group}"
    );
    assert!(list.contains_key("usr/bin/sudo"));
    assert_eq!(tar_string(tar, "etc/hostname"), format!("{board}\n"));
    assert_eq!(
        list["etc/resolv.conf"].3.as_deref(),
        Some("../run/systemd/resolve/stub-resolv.conf")
    );
    assert!(!list.keys().any(|k| k.starts_with("etc/ssh/ssh_host_")));
    list
}

/// Modules in the initrd (zstd or gzip cpio), through the system's tools.
fn initrd_modules(tar: &Path, dir: &Path) -> String {
    let list = tar_list(tar);
    let name = list
        .keys()
        .find(|k| k.starts_with("boot/initrd.img-"))
        .expect("initrd")
        .clone();
    let img = dir.join("initrd.img");
    std::fs::write(&img, tar_read(tar, &name).expect("initrd data")).expect("write");
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "(zstd -dc {0} 2>/dev/null || gzip -dc {0}) | cpio -t 2>/dev/null",
            img.display()
        ))
        .output()
        .expect("cpio");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn debian_armhf_rootfs_then_image_without_downloads() {
    let d = tempfile::tempdir().expect("tmp");
    let tar = d.path().join("cubieboard.tar");
    let report = rootfs("cubieboard", &tar, &[], &[]);
    assert_eq!(report["arch"], "armhf");
    let list = check_common(&tar, "cubieboard", "ttyS0");
    assert!(
        list.contains_key("usr/lib/linux-image-6.1.0-50-armmp/sun4i-a10-cubieboard.dtb")
            || list.keys().any(|k| k.starts_with("usr/lib/linux-image-")
                && k.ends_with("/sun4i-a10-cubieboard.dtb")),
        "device tree"
    );
    let spl =
        tar_read(&tar, "usr/lib/u-boot/Cubieboard/u-boot-sunxi-with-spl.bin").expect("U-Boot");
    assert_eq!(&spl[4..12], b"eGON.BT0");
    // The initramfs modules were derived from the board's device tree inside the build (the profile lists
    // none): the list and the report say so.
    let modules = tar_string(&tar, "etc/initramfs-tools/modules");
    assert!(
        modules.contains("sunxi-mmc\n")
            && modules.contains("ext4\n")
            && modules.contains("derived"),
        "{modules}"
    );
    let derived = &report["initramfs"]["modules"];
    assert_eq!(derived[0]["module"], "sunxi-mmc", "{derived}");
    assert_eq!(derived[0]["chain"][0], "mmc@1c0f000 (SD card controller)");
    let initrd = initrd_modules(&tar, d.path());
    assert!(
        initrd.contains("sunxi-mmc.ko") && initrd.contains("ext4.ko"),
        "initrd modules:\n{initrd}"
    );

    // The same board again, now as `boardsmith build` without --rootfs, with the mirror behind a
    // counting proxy: every request apt makes is seen, and none of them is for a package.
    let proxy = CountingProxy::start("deb.debian.org");
    let out = d.path().join("out");
    let started = Instant::now();
    let o = boardsmith("build", "cubieboard", Some(&cache()))
        .args(["--mirror", &format!("{}/debian", proxy.url())])
        .args(["--cmdline-append", QEMU_A10_CMDLINE])
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run boardsmith build");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    eprintln!(
        "boardsmith build cubieboard (cached): {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let fetched = proxy.fetched();
    assert!(
        fetched.iter().any(|f| f.url.contains("InRelease")),
        "apt went through the proxy: {fetched:?}"
    );
    assert_eq!(
        proxy.debs().len(),
        0,
        "the second build downloaded packages: {:?}",
        proxy.debs()
    );
    eprintln!(
        "second build: {} requests through the proxy, {} bytes, 0 packages",
        fetched.len(),
        fetched.iter().map(|f| f.bytes).sum::<u64>()
    );

    // The image's root partition holds this root filesystem.
    let img = out.join("cubieboard.img");
    let root = extract_root_partition(&img, d.path());
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&root)
        .output()
        .expect("e2fsck");
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let ls = Command::new("debugfs")
        .args(["-R", "ls -l /boot"])
        .arg(&root)
        .output()
        .expect("debugfs");
    assert!(String::from_utf8_lossy(&ls.stdout).contains("vmlinuz-"));
    let fstab = Command::new("debugfs")
        .args(["-R", "cat /etc/fstab"])
        .arg(&root)
        .output()
        .expect("debugfs");
    let root_uuid = planned_partitions(&bin(), "cubieboard", EPOCH)
        .into_iter()
        .find(|p| p.0 == "root")
        .expect("root")
        .1;
    assert!(String::from_utf8_lossy(&fstab.stdout).contains(&format!("PARTUUID={root_uuid}\t/\t")));

    // It boots in QEMU to systemd's login prompt on the serial console.
    boot_to_login(&img, "cubieboard", d.path());

    // mk802 (same SoC, kernel and U-Boot package) from this tarball as a prebuilt rootfs: hostname, fstab
    // and users are redone for mk802 without a package manager, and that image boots too.
    let sha = sha256_of(&tar);
    let mk802_tar = d.path().join("mk802.tar");
    rootfs(
        "mk802",
        &mk802_tar,
        &["--rootfs-tarball", tar.to_str().unwrap(), "--sha256", &sha],
        &[],
    );
    let img = build_image(
        "mk802",
        &mk802_tar,
        &["--cmdline-append", QEMU_A10_CMDLINE],
        d.path(),
    );
    boot_to_login(&img, "mk802", d.path());
}

/// QEMU's cubieboard machine emulates neither the A10 display engine nor its crypto engine; once udev loads
/// their drivers the boot stalls, so images booted there leave them out (real boards do not need this).
const QEMU_A10_CMDLINE: &str = "modprobe.blacklist=sun4i_drm,sun4i_ss";

/// `boardsmith build BOARD --rootfs TAR -o DIR/out-BOARD`; returns the image.
fn build_image(board: &str, tar: &Path, extra: &[&str], dir: &Path) -> PathBuf {
    let out = dir.join(format!("out-{board}"));
    let o = Command::new(bin())
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["build", board, "--progress", "none", "--rootfs"])
        .arg(tar)
        .arg("-o")
        .arg(&out)
        .args(extra)
        .output()
        .expect("run boardsmith build");
    assert!(
        o.status.success(),
        "boardsmith build {board}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out.join(format!("{board}.img"))
}

/// `boardsmith boot` until `HOSTNAME login:` appears on the serial console; the image is unchanged.
fn boot_to_login(img: &Path, board: &str, dir: &Path) {
    let before = sha256_of(img);
    let log = dir.join(format!("boot-{board}.log"));
    let started = Instant::now();
    let o = Command::new(bin())
        .args(["boot", "--board", board, "--timeout", "900", "--expect"])
        .arg(format!(r"^{board} login:\s*$"))
        .arg("--log")
        .arg(&log)
        .arg(img)
        .output()
        .expect("run boardsmith boot");
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        o.status.success(),
        "boardsmith boot {board}: {}\n--- console (last 4 KiB) ---\n{}",
        String::from_utf8_lossy(&o.stderr),
        &console[console.len().saturating_sub(4096)..]
    );
    assert!(console.contains("systemd"), "{console}");
    eprintln!(
        "boardsmith boot {board}: login prompt after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(sha256_of(img), before);
}

/// Also: paths with spaces and a quote. The output (so the work directory beside it) and the package
/// cache (a link to the shared one, so nothing is downloaded again) are in directories whose names
/// mmdebstrap's hooks must get whole.
#[test]
fn debian_arm64_rootfs() {
    let d = tempfile::tempdir().expect("tmp");
    let out_dir = d.path().join("work dir's space");
    std::fs::create_dir(&out_dir).expect("mkdir");
    let spaced_cache = d.path().join("apt cache");
    std::os::unix::fs::symlink(cache(), &spaced_cache).expect("symlink");
    let tar = out_dir.join("armv8 rootfs.tar");
    let report = rootfs_with_cache("armv8-foundation", &tar, &[], &[], Some(&spaced_cache));
    assert_eq!(report["arch"], "arm64");
    assert_eq!(
        report["cache"].as_str(),
        Some(spaced_cache.to_str().expect("utf-8"))
    );
    // Nothing but the tarball stays beside it: the work directory is gone.
    let left: Vec<String> = std::fs::read_dir(&out_dir)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["armv8 rootfs.tar"]);
    let list = check_common(&tar, "armv8-foundation", "ttyAMA0");
    assert!(
        list.keys().any(|k| k.starts_with("usr/lib/linux-image-")
            && k.ends_with("/arm/foundation-v8-gicv3-psci.dtb")),
        "device tree"
    );
    let initrd = initrd_modules(&tar, d.path());
    // Derived from the FVP's device tree (virtio-mmio, the block driver, ext4), plus the profile's extra
    // transport for QEMU's virt machine.
    for m in [
        "virtio_mmio.ko",
        "virtio_blk.ko",
        "ext4.ko",
        "virtio_pci.ko",
    ] {
        assert!(initrd.contains(m), "{m} in initrd modules:\n{initrd}");
    }
    let modules = tar_string(&tar, "etc/initramfs-tools/modules");
    assert!(
        modules.contains("virtio_mmio\n") && modules.contains("virtio_pci\n"),
        "{modules}"
    );
    let img = build_image("armv8-foundation", &tar, &[], d.path());
    boot_to_login(&img, "armv8-foundation", d.path());
}

/// Slow: the full desktop with DroidMote (about an hour under qemu-user on two cores).
#[test]
#[ignore = "slow (xfce under qemu-user): BOARDSMITH_SLOW_TESTS=1 cargo test --test rootfs_debian -- --ignored"]
fn debian_armhf_xfce_droidmote() {
    if std::env::var("BOARDSMITH_SLOW_TESTS").as_deref() != Ok("1") {
        panic!("set BOARDSMITH_SLOW_TESTS=1 to run this slow test");
    }
    let d = tempfile::tempdir().expect("tmp");
    let (dm, sha) = fake_droidmote(d.path());
    let tar = d.path().join("cubieboard-xfce.tar");
    let started = Instant::now();
    let dm_arg = dm.display().to_string();
    let report = rootfs(
        "cubieboard",
        &tar,
        &[
            "--feature",
            "xfce",
            "--feature",
            "droidmote",
            "--droidmote-binary",
            &dm_arg,
            "--droidmote-sha256",
            &sha,
        ],
        &[("BOARDSMITH_DROIDMOTE_PASSWORD", "remote-pw")],
    );
    let secs = started.elapsed().as_secs_f64();
    let size = std::fs::metadata(&tar).map(|m| m.len()).unwrap_or(0);
    eprintln!("SLOW xfce+droidmote armhf: {secs:.0} s, tarball {size} bytes, report {report}");
    let list = check_common(&tar, "cubieboard", "ttyS0");
    let status = tar_string(&tar, "var/lib/dpkg/status");
    for p in ["xfce4", "lightdm", "xserver-xorg-core"] {
        assert!(status.contains(&format!("Package: {p}\n")), "{p} installed");
    }
    let installed = d.path().join("dm");
    std::fs::write(
        &installed,
        tar_read(&tar, "usr/local/bin/droidmote").expect("droidmote"),
    )
    .expect("write");
    assert_eq!(sha256_of(&installed), sha);
    assert!(
        list.contains_key("etc/systemd/system/display-manager.service"),
        "lightdm enabled"
    );
    assert_eq!(
        list["etc/systemd/system/default.target"].3.as_deref(),
        Some("/lib/systemd/system/graphical.target")
    );
    let conf = tar_string(&tar, "etc/droidmote/droidmote.conf");
    assert!(
        conf.contains("DROIDMOTE_PORT=2303") && conf.contains("DROIDMOTE_PASSWORD=remote-pw"),
        "{conf}"
    );
    // Secret-bearing files: root-owned, readable by their group only (shadow, the user's group).
    for (path, perms, owner) in [
        ("etc/shadow", "-rw-r-----", "0/42"),
        ("etc/gshadow", "-rw-r-----", "0/42"),
        ("etc/droidmote/droidmote.conf", "-rw-r-----", "0/1000"),
    ] {
        assert_eq!(
            (list[path].1.as_str(), list[path].2.as_str()),
            (perms, owner),
            "{path}"
        );
    }
    assert!(tar_string(&tar, "etc/xdg/autostart/droidmote.desktop").contains("droidmote-session"));
    assert!(
        tar_string(
            &tar,
            "etc/lightdm/lightdm.conf.d/50-boardsmith-autologin.conf"
        )
        .contains("autologin-user=debian")
    );
    assert!(tar_string(&tar, "etc/udev/rules.d/60-boardsmith-uinput.rules").contains("uinput"));
    assert!(
        tar_string(&tar, "etc/group")
            .lines()
            .any(|l| l.starts_with("input:") && l.contains("debian"))
    );
}
