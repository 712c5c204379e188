//! `boardsmith rootfs` without Debian packages (a prebuilt tarball source), and every must-fail rule.
//! The Debian builds through mmdebstrap and qemu-user are in tests/rootfs_debian.rs.

mod rootfs_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;
use rootfs_support::*;

const EPOCH: &str = "1700000000";
const PASSWORD: &str = "board pass 1";

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_boardsmith"))
}

fn boardsmith() -> Command {
    let mut c = Command::cargo_bin("boardsmith").expect("binary");
    c.env("SOURCE_DATE_EPOCH", EPOCH)
        .env_remove("BOARDSMITH_PASSWORD_HASH")
        .env_remove("BOARDSMITH_DROIDMOTE_PASSWORD")
        .env_remove("BOARDSMITH_BINFMT_DIR");
    c
}

fn hash() -> String {
    sha512_hash(PASSWORD, "testsalt")
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
    let out = boardsmith()
        .args([
            "rootfs",
            "cubieboard",
            "--feature",
            "kde",
            "--password-hash",
            &hash(),
            "-o",
        ])
        .arg(d.path().join("r.tar"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("unknown feature `kde`"), "{e}");
    assert!(e.contains("xfce") && e.contains("droidmote"), "{e}");
    assert!(no_final_outputs(d.path()).is_empty());
}

#[test]
fn droidmote_needs_uinput_in_the_kernel_fragments() {
    let d = tempfile::tempdir().expect("tmp");
    let board = board_without_uinput(d.path());
    let (dm, sha) = fake_droidmote(d.path());
    let out = boardsmith()
        .arg("rootfs")
        .arg(&board)
        .args([
            "--feature",
            "droidmote",
            "--password-hash",
            &hash(),
            "--droidmote-sha256",
            &sha,
        ])
        .arg("--droidmote-binary")
        .arg(&dm)
        .arg("-o")
        .arg(d.path().join("r.tar"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("feature `droidmote` needs the kernel config fragment `uinput`"),
        "{e}"
    );
    assert!(e.contains("kernel.fragments"), "{e}");
    assert!(!d.path().join("r.tar").exists());
}

#[test]
fn tarball_checksum_mismatch_fails_without_output() {
    let d = tempfile::tempdir().expect("tmp");
    let tarball = prebuilt_rootfs(d.path());
    let out_dir = d.path().join("out");
    std::fs::create_dir(&out_dir).expect("mkdir");
    let out = boardsmith()
        .args([
            "rootfs",
            "cubieboard",
            "--password-hash",
            &hash(),
            "--sha256",
            &"ab".repeat(32),
        ])
        .arg("--rootfs-tarball")
        .arg(&tarball)
        .arg("-o")
        .arg(out_dir.join("r.tar"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("sha256 mismatch"), "{e}");
    assert!(e.contains(&sha256_of(&tarball)), "{e}");
    assert_eq!(no_final_outputs(&out_dir), Vec::<String>::new());
}

#[test]
fn missing_binfmt_says_what_to_do() {
    let d = tempfile::tempdir().expect("tmp");
    let out = boardsmith()
        .args(["rootfs", "cubieboard", "--password-hash", &hash(), "-o"])
        .arg(d.path().join("r.tar"))
        .env("BOARDSMITH_BINFMT_DIR", d.path().join("no-binfmt"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("binfmt_misc is not mounted"), "{e}");
    assert!(e.contains("mount -t binfmt_misc binfmt_misc"), "{e}");
    assert!(
        e.contains("apt-get install qemu-user-static binfmt-support"),
        "{e}"
    );

    // Mounted, but no handler for the board's architecture.
    let fake = d.path().join("binfmt");
    std::fs::create_dir(&fake).expect("mkdir");
    std::fs::write(fake.join("status"), "enabled\n").expect("write");
    let out = boardsmith()
        .args([
            "rootfs",
            "armv8-foundation",
            "--password-hash",
            &hash(),
            "-o",
        ])
        .arg(d.path().join("r.tar"))
        .env("BOARDSMITH_BINFMT_DIR", &fake)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("update-binfmts --enable qemu-aarch64"), "{e}");
    assert!(no_final_outputs(d.path()).iter().all(|n| n == "binfmt"));
}

#[test]
fn unreachable_mirror_fails_clearly_without_output() {
    let d = tempfile::tempdir().expect("tmp");
    let out_dir = d.path().join("out");
    std::fs::create_dir(&out_dir).expect("mkdir");
    let out = boardsmith()
        .args([
            "rootfs",
            "cubieboard",
            "--password-hash",
            &hash(),
            "--mirror",
            "http://127.0.0.1:9/debian",
            "--security-mirror",
            "",
            "--progress",
            "none",
        ])
        .arg("--cache")
        .arg(d.path().join("cache"))
        .arg("-o")
        .arg(out_dir.join("r.tar"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("apt could not download from the mirror http://127.0.0.1:9/debian"),
        "{e}"
    );
    assert!(e.contains("127.0.0.1:9"), "{e}");
    assert!(e.contains("check --mirror"), "{e}");
    // Nothing under a final name, and no leftovers.
    assert_eq!(no_final_outputs(&out_dir), Vec::<String>::new());
}

#[test]
fn password_is_required_without_a_terminal() {
    let d = tempfile::tempdir().expect("tmp");
    let out = boardsmith()
        .args(["rootfs", "cubieboard", "-o"])
        .arg(d.path().join("r.tar"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("--password-hash") && e.contains("--password-stdin"),
        "{e}"
    );

    let out = boardsmith()
        .args(["rootfs", "cubieboard", "--password-hash", "hunter2", "-o"])
        .arg(d.path().join("r.tar"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("not a crypt(3) password hash"), "{e}");
    assert!(
        !e.contains("hunter2"),
        "the rejected value is not echoed: {e}"
    );
}

#[test]
fn droidmote_binary_needs_source_and_checksum() {
    let d = tempfile::tempdir().expect("tmp");
    let out = boardsmith()
        .args([
            "rootfs",
            "cubieboard",
            "--feature",
            "droidmote",
            "--password-hash",
            &hash(),
            "-o",
        ])
        .arg(d.path().join("r.tar"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("--droidmote-binary") && e.contains("--droidmote-sha256"),
        "{e}"
    );

    let (dm, _) = fake_droidmote(d.path());
    let tarball = prebuilt_rootfs(d.path());
    let out = boardsmith()
        .args([
            "rootfs",
            "cubieboard",
            "--feature",
            "droidmote",
            "--password-hash",
            &hash(),
        ])
        .args([
            "--droidmote-sha256",
            &"0".repeat(64),
            "--sha256",
            &sha256_of(&tarball),
        ])
        .arg("--droidmote-binary")
        .arg(&dm)
        .arg("--rootfs-tarball")
        .arg(&tarball)
        .arg("-o")
        .arg(d.path().join("r.tar"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("sha256 mismatch") && e.contains("droidmote"),
        "{e}"
    );
    assert!(!d.path().join("r.tar").exists());
}

#[test]
fn build_rejects_rootfs_options_with_a_finished_rootfs() {
    let d = tempfile::tempdir().expect("tmp");
    let out = boardsmith()
        .args(["build", "cubieboard", "--feature", "ssh", "--rootfs"])
        .arg(d.path())
        .arg("-o")
        .arg(d.path().join("out"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--rootfs takes a finished root filesystem")
    );
}

/// A prebuilt tarball configured with the droidmote feature: users, fstab from the plan, services,
/// the droidmote binary, its settings and the uinput rule; twice, byte for byte the same.
#[test]
fn prebuilt_tarball_is_configured_and_reproducible() {
    let d = tempfile::tempdir().expect("tmp");
    let tarball = prebuilt_rootfs(d.path());
    let (dm, dm_sha) = fake_droidmote(d.path());
    let run = |out: &Path| {
        let o = boardsmith()
            .args([
                "rootfs",
                "cubieboard",
                "--feature",
                "droidmote",
                "--password-hash",
                &hash(),
            ])
            .args(["--droidmote-sha256", &dm_sha, "--droidmote-port", "2400"])
            .args([
                "--sha256",
                &sha256_of(&tarball),
                "--json",
                "--progress",
                "none",
            ])
            .env("BOARDSMITH_DROIDMOTE_PASSWORD", "s3cret-remote")
            .arg("--droidmote-binary")
            .arg(&dm)
            .arg("--rootfs-tarball")
            .arg(&tarball)
            .arg("-o")
            .arg(out)
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
    let plan = planned_partitions(&bin(), "cubieboard", EPOCH);
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
    let installed = d.path().join("dm-installed");
    std::fs::write(
        &installed,
        tar_read(&a, "usr/local/bin/droidmote").expect("binary"),
    )
    .expect("write");
    assert_eq!(sha256_of(&installed), dm_sha);
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
    assert_eq!(sha256_of(&a), sha256_of(&b));
}

/// `boardsmith build` without --rootfs, from a prebuilt tarball: the image's root partition holds the
/// configured root filesystem (read back with debugfs, checked with e2fsck).
#[test]
fn build_without_rootfs_puts_the_configured_tree_in_the_image() {
    let d = tempfile::tempdir().expect("tmp");
    let tarball = prebuilt_rootfs(d.path());
    let out_dir = d.path().join("out");
    let o = boardsmith()
        .args([
            "build",
            "cubieboard",
            "--password-hash",
            &hash(),
            "--sha256",
            &sha256_of(&tarball),
            "--progress",
            "none",
        ])
        .arg("--rootfs-tarball")
        .arg(&tarball)
        .arg("-o")
        .arg(&out_dir)
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let img = out_dir.join("cubieboard.img");
    assert!(img.is_file() && out_dir.join("cubieboard.rootfs.tar").is_file());
    let root = extract_root_partition(&img, d.path());
    let fsck = Command::new("e2fsck")
        .args(["-fn"])
        .arg(&root)
        .output()
        .expect("e2fsck");
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let cat = |p: &str| {
        let o = Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat {p}"))
            .arg(&root)
            .output()
            .expect("debugfs");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let plan = planned_partitions(&bin(), "cubieboard", EPOCH);
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
    let o = boardsmith()
        .args([
            "rootfs",
            "cubieboard",
            "--password-hash",
            &hash(),
            "--sha256",
            &sha256_of(&tarball),
        ])
        .arg("--rootfs-tarball")
        .arg(&tarball)
        .arg("-o")
        .arg(&rootfs)
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = boardsmith()
        .env("SOURCE_DATE_EPOCH", "1700000001")
        .args(["build", "cubieboard", "--rootfs"])
        .arg(&rootfs)
        .arg("-o")
        .arg(d.path().join("out"))
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("/etc/fstab") && e.contains("SOURCE_DATE_EPOCH"),
        "{e}"
    );
    assert!(!d.path().join("out/cubieboard.img").exists());
}

/// A directory instead of a tarball (needs root: owners and modes are real).
#[test]
fn directory_output_keeps_owners_and_modes() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("directory output needs root; this test runs as root in CI");
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let d = tempfile::tempdir().expect("tmp");
    let tarball = prebuilt_rootfs(d.path());
    let out = d.path().join("tree");
    let o = boardsmith()
        .args([
            "rootfs",
            "cubieboard",
            "--password-hash",
            &hash(),
            "--sha256",
            &sha256_of(&tarball),
        ])
        .arg("--rootfs-tarball")
        .arg(&tarball)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
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
    let again = boardsmith()
        .args([
            "rootfs",
            "cubieboard",
            "--password-hash",
            &hash(),
            "--sha256",
            &sha256_of(&tarball),
        ])
        .arg("--rootfs-tarball")
        .arg(&tarball)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run");
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not an empty directory"));
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
    let (header, len) = claim_size(&tarball, member, 8 << 40);
    let out_dir = d.path().join("out");
    std::fs::create_dir(&out_dir).expect("mkdir");
    let out = boardsmith()
        .args(["rootfs", "cubieboard", "--password-hash", &hash()])
        .args(["--sha256", &sha256_of(&tarball)])
        .arg("--rootfs-tarball")
        .arg(&tarball)
        .arg("-o")
        .arg(out_dir.join("r.tar"))
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

/// Sets the size field of `member`'s header in the tar archive `tar` to `size` (GNU base-256) and fixes
/// the header checksum. Returns the header's offset and the archive's length.
fn claim_size(tar: &Path, member: &str, size: u64) -> (u64, u64) {
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
