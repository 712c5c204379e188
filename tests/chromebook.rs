//! Samsung ARM Chromebook (snow): the kernel partition holds a FIT (zImage, snow DTB, initramfs) packed and
//! signed by vbutil_kernel; the firmware's own tools (cgpt, vbutil_kernel, futility, dumpimage) are the judge.

mod common;
mod support;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

const DEVKEYS: &str = "/usr/share/vboot/devkeys";

struct Built {
    dir: tempfile::TempDir,
    rootfs: PathBuf,
    image: PathBuf,
    report: Value,
}

fn build(extra: &[&str]) -> Built {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = make_rootfs(dir.path(), "chromebook-snow");
    let out = dir.path().join("out");
    let o = build_ok(
        "chromebook-snow",
        &rootfs,
        &out,
        &[&["--json"], extra].concat(),
    );
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    Built {
        image: out.join("chromebook-snow.img"),
        dir,
        rootfs,
        report,
    }
}

fn kern_a(b: &Built) -> PathBuf {
    let p = &b.report["layout"]["partitions"][0];
    assert_eq!(p["name"], "KERN-A");
    let dest = b.dir.path().join("kern-a.bin");
    extract(
        &b.image,
        p["start"].as_u64().unwrap(),
        p["size"].as_u64().unwrap(),
        &dest,
    );
    dest
}

/// `vbutil_kernel --verify KPART --signpubkey kernel_subkey.vbpubk EXTRA...` succeeds and says the body
/// verified; its output.
fn verified(kpart: &Path, extra: &[&str]) -> String {
    let o = vbutil_verify(kpart, "kernel_subkey.vbpubk", extra);
    let verify = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success() && verify.contains("Body verification succeeded"),
        "{verify}"
    );
    verify
}

/// `vbutil_kernel --verify KPART --signpubkey PUBKEY EXTRA...` (PUBKEY among the devkeys).
fn vbutil_verify(kpart: &Path, pubkey: &str, extra: &[&str]) -> std::process::Output {
    run(std::process::Command::new("vbutil_kernel")
        .arg("--verify")
        .arg(kpart)
        .arg("--signpubkey")
        .arg(key(pubkey))
        .args(extra))
}

fn key(name: &str) -> String {
    format!("{DEVKEYS}/{name}")
}

#[test]
fn kernel_partition_is_signed_and_verifies_with_the_developer_subkey() {
    let b = build(&[]);
    let img = b.image.to_str().unwrap();
    let cgpt = tool("cgpt", &["show", img]);
    assert!(
        cgpt.contains("Label: \"KERN-A\"") && cgpt.contains("Type: ChromeOS kernel"),
        "{cgpt}"
    );
    assert!(
        cgpt.contains("Attr: priority=10 tries=5 successful=1"),
        "{cgpt}"
    );
    let sgdisk = tool("sgdisk", &["-v", img]);
    assert!(sgdisk.contains("No problems found"), "{sgdisk}");

    let kpart = kern_a(&b);
    let cmdline = b.report["cmdline"].as_str().unwrap();
    let root = b.report["layout"]["partitions"][1]["partuuid"]
        .as_str()
        .unwrap();
    assert!(
        cmdline.contains(&format!("root=PARTUUID={root}"))
            && cmdline.contains("console=ttySAC3,115200")
    );
    let verify = verified(&kpart, &["--verbose"]);
    assert!(
        verify.contains(cmdline),
        "the signed command line is the profile's:\n{verify}"
    );
    let show = tool("futility", &["show", kpart.to_str().unwrap()]);
    assert!(
        show.contains("Body verification succeeded") && show.contains(cmdline),
        "{show}"
    );

    // The FIT inside lists the kernel and the snow DTB, byte-identical to the rootfs's files.
    let fit = b.dir.path().join("kernel.fit");
    tool(
        "vbutil_kernel",
        &[
            "--get-vmlinuz",
            kpart.to_str().unwrap(),
            "--vmlinuz-out",
            fit.to_str().unwrap(),
        ],
    );
    let listing = tool("dumpimage", &["-l", fit.to_str().unwrap()]);
    assert!(listing.contains("Type:         Kernel Image"), "{listing}");
    assert!(
        listing.contains("Description:  exynos5250-snow.dtb")
            && listing.contains("Flat Device Tree"),
        "{listing}"
    );
    assert!(listing.contains("RAMDisk Image"), "{listing}");
    let part = |n: &str, dest: &str| -> Vec<u8> {
        let d = b.dir.path().join(dest);
        tool(
            "dumpimage",
            &[
                "-T",
                "flat_dt",
                "-p",
                n,
                "-o",
                d.to_str().unwrap(),
                fit.to_str().unwrap(),
            ],
        );
        std::fs::read(d).unwrap()
    };
    let from_rootfs = |rel: &str| std::fs::read(b.rootfs.join(rel)).unwrap();
    assert_eq!(
        part("0", "k.out"),
        from_rootfs(&format!("boot/vmlinuz-{KVER}"))
    );
    assert_eq!(
        part("1", "d.out"),
        from_rootfs(&format!("usr/lib/linux-image-{KVER}/exynos5250-snow.dtb"))
    );
    assert_eq!(
        part("2", "i.out"),
        from_rootfs(&format!("boot/initrd.img-{KVER}"))
    );
}

#[test]
fn signing_is_deterministic_and_builds_are_reproducible() {
    let a = build(&[]);
    let b = build(&[]);
    assert_eq!(sha256_file(&a.image), sha256_file(&b.image));
    assert_eq!(sha256_file(&kern_a(&a)), sha256_file(&kern_a(&b)));
}

#[test]
fn own_keys_override_the_profile() {
    let b = build(&[
        "--vboot-keyblock",
        &key("recovery_kernel.keyblock"),
        "--vboot-signprivate",
        &key("recovery_kernel_data_key.vbprivk"),
    ]);
    let kpart = kern_a(&b);
    assert!(
        vbutil_verify(&kpart, "recovery_key.vbpubk", &[])
            .status
            .success(),
        "signed with the recovery kernel key, verifies with the recovery key"
    );
    assert!(
        !vbutil_verify(&kpart, "kernel_subkey.vbpubk", &[])
            .status
            .success(),
        "a blob signed with other keys must not verify with the developer subkey"
    );
}

fn build_failure(profile: Option<&str>, extra: &[&str]) -> (i32, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = make_rootfs(dir.path(), "chromebook-snow");
    let board = match profile {
        Some(text) => {
            let p = dir.path().join("snow.toml");
            std::fs::write(&p, text).unwrap();
            p.to_str().unwrap().to_string()
        }
        None => "chromebook-snow".to_string(),
    };
    let f = build_err(&board, &rootfs, &dir.path().join("out"), extra);
    (f.code, f.stderr, dir)
}

fn snow_profile_with(kern: &str) -> String {
    let embedded = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("boards/chromebook-snow.toml"),
    )
    .unwrap();
    let start = embedded.find("[[partition]]\nname = \"KERN-A\"").unwrap();
    let end = embedded[start + 10..].find("[[partition]]").unwrap() + start + 10;
    format!("{}{kern}\n{}", &embedded[..start], &embedded[end..])
}

#[test]
fn kernel_blob_larger_than_kern_a_fails_saying_by_how_much() {
    let p = snow_profile_with(
        "[[partition]]\nname = \"KERN-A\"\nrole = \"kernel\"\nfs = \"raw\"\nsize = \"2MiB\"\ngpt_type = \"chromeos-kernel\"\nattributes = { priority = 10, tries = 5, successful = true }\n",
    );
    let (code, err, _d) = build_failure(Some(&p), &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("the signed kernel blob is")
            && err.contains("but partition `KERN-A` holds 2097152")
            && err.contains("too large"),
        "{err}"
    );
}

#[test]
fn missing_keys_fail_before_any_work() {
    let (code, err, _d) =
        build_failure(None, &["--vboot-keyblock", "/nonexistent/kernel.keyblock"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("keyblock /nonexistent/kernel.keyblock cannot be read"),
        "{err}"
    );
}

#[test]
fn unusable_signing_key_fails() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("garbage.vbprivk");
    std::fs::write(&bad, b"this is not a key").unwrap();
    let (code, err, _d) = build_failure(None, &["--vboot-signprivate", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("vbutil_kernel failed"), "{err}");
}

#[test]
fn attributes_outside_their_bit_ranges_fail() {
    for (attr, msg) in [
        (
            "{ priority = 16, tries = 5, successful = true }",
            "priority 16 does not fit its 4 bits (48–51)",
        ),
        (
            "{ priority = 10, tries = 99, successful = true }",
            "tries 99 does not fit its 4 bits (52–55)",
        ),
        ("{ bits = [64] }", "attribute bit 64 is outside 0–63"),
    ] {
        let p = snow_profile_with(&format!(
            "[[partition]]\nname = \"KERN-A\"\nrole = \"kernel\"\nfs = \"raw\"\nsize = \"16MiB\"\ngpt_type = \"chromeos-kernel\"\nattributes = {attr}\n"
        ));
        let (code, err, _d) = build_failure(Some(&p), &[]);
        assert_eq!(code, 2);
        assert!(err.contains(msg) && err.contains("snow.toml:"), "{err}");
    }
}

#[test]
fn show_reports_the_kernel_blob_against_its_partition() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = make_rootfs(dir.path(), "chromebook-snow");
    let o = run(boardsmith()
        .args(["show", "chromebook-snow", "--rootfs"])
        .arg(&rootfs));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains("kernel blob:") && text.contains("of partition `KERN-A` (16 MiB)"),
        "{text}"
    );
}

/// `boardsmith write --grow` onto a larger card: KERN-A (position, attributes, signed content) is untouched,
/// the root partition fills the card and the backup GPT moves to the new end.
#[test]
fn write_grow_keeps_kern_a_and_moves_the_backup_gpt() {
    let b = build(&[]);
    let before = tool("cgpt", &["show", "-i", "1", b.image.to_str().unwrap()]);
    let kern_before = std::fs::read(kern_a(&b)).unwrap();
    let card = b.dir.path().join("card.img");
    let o = run(boardsmith()
        .args(["write", "--progress", "none", "--grow", "--size", "1G"])
        .arg(&b.image)
        .arg(&card));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let c = card.to_str().unwrap();
    assert_eq!(std::fs::metadata(&card).unwrap().len(), 1 << 30);

    let sgdisk = tool("sgdisk", &["-v", c]);
    assert!(sgdisk.contains("No problems found"), "{sgdisk}");
    assert_eq!(tool("cgpt", &["show", "-i", "1", c]), before);
    let show = tool("cgpt", &["show", c]);
    assert!(
        show.contains("Attr: priority=10 tries=5 successful=1"),
        "{show}"
    );
    // The backup header sits in the card's last sector, its entry array just before it.
    let last_lba = (1u64 << 30) / 512 - 1;
    assert!(
        show.lines()
            .any(|l| l.trim_start().starts_with(&last_lba.to_string())
                && l.contains("Sec GPT header")),
        "{show}"
    );
    let p = &b.report["layout"]["partitions"][0];
    let kern_after = b.dir.path().join("kern-a-after.bin");
    extract(
        &card,
        p["start"].as_u64().unwrap(),
        p["size"].as_u64().unwrap(),
        &kern_after,
    );
    assert!(
        std::fs::read(&kern_after).unwrap() == kern_before,
        "KERN-A changed"
    );
    verified(&kern_after, &[]);

    // The root partition now ends at the last usable, 1 MiB-aligned sector; its ext4 fills it.
    let root = tool("cgpt", &["show", "-i", "2", "-b", c]);
    let start: u64 = root.trim().parse().unwrap();
    let size: u64 = tool("cgpt", &["show", "-i", "2", "-s", c])
        .trim()
        .parse()
        .unwrap();
    let end = start + size;
    let usable_end = last_lba - 32; // backup entry array (128 × 128 B) before the header
    assert!(
        end <= usable_end + 1 && usable_end + 1 - end < 2048,
        "root ends at {end}"
    );
    let fs = format!("{c}?offset={}", start * 512);
    tool("e2fsck", &["-fn", &fs]);
    // dumpe2fs does not take e2fsprogs' FILE?offset=N form; debugfs prints the same superblock.
    let dump = tool("debugfs", &["-R", "stats", &fs]);
    let field = |name: &str| -> u64 {
        dump.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(
        field("Block count:") * field("Block size:"),
        size * 512,
        "{dump}"
    );
}
