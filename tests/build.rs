//! `boardsmith build` end to end: every board from a generated rootfs, each artefact checked with a tool
//! nobody here wrote (sfdisk, sgdisk, cgpt, fsck.fat, mtools, e2fsck, debugfs, mkimage, bmaptool, sha256sum,
//! md5sum), golden partition-table dumps, reproducibility, and a must-fail case per validation rule.

mod common;
mod support;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

struct Built {
    _dir: tempfile::TempDir,
    rootfs: PathBuf,
    out: PathBuf,
    image: PathBuf,
    report: Value,
}

fn build_board(board: &str, tarball: bool) -> Built {
    let dir = tempfile::tempdir().unwrap();
    let tree = make_rootfs(dir.path(), board);
    let rootfs = if tarball {
        make_tarball(&tree)
    } else {
        tree.clone()
    };
    let out = dir.path().join("out");
    let o = build_ok(board, &rootfs, &out, &["--json"]);
    let report: Value = serde_json::from_slice(&o.stdout).expect("--json prints a JSON report");
    Built {
        image: out.join(format!("{board}.img")),
        _dir: dir,
        rootfs: tree,
        out,
        report,
    }
}

fn partition<'a>(b: &'a Built, role: &str) -> &'a Value {
    b.report["layout"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == role)
        .unwrap_or_else(|| panic!("no {role} partition in the report"))
}

fn offset_of(p: &Value) -> u64 {
    p["start"].as_u64().unwrap()
}

fn golden_dump(board: &str, image: &Path) {
    let dump = tool("sfdisk", &["--dump", image.to_str().unwrap()]);
    let dump = dump.replace(image.to_str().unwrap(), "IMAGE");
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{board}.sfdisk"));
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&golden, &dump).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_else(|_| {
        panic!(
            "missing {}; run with BLESS=1 to create it",
            golden.display()
        )
    });
    assert_eq!(
        dump,
        expected,
        "sfdisk --dump of {board} differs from {}",
        golden.display()
    );
}

fn check_table(board: &str, b: &Built) {
    let img = b.image.to_str().unwrap();
    if b.report["layout"]["table"]["type"] == "mbr" {
        let v = tool("sfdisk", &["--verify", img]);
        assert!(v.contains("No errors detected"), "{v}");
    } else {
        let v = tool("sgdisk", &["-v", img]);
        assert!(v.contains("No problems found"), "{v}");
    }
    golden_dump(board, &b.image);
}

fn check_boot_partition(board: &str, b: &Built) {
    let f = board_files(board);
    let boot = partition(b, "boot");
    let (start, size) = (offset_of(boot), boot["size"].as_u64().unwrap());
    let fat = b.out.join("boot.fat");
    extract(&b.image, start, size, &fat);
    let fsck = tool("fsck.fat", &["-n", fat.to_str().unwrap()]);
    assert!(
        !fsck.contains("differ") && !fsck.contains("Free cluster"),
        "{fsck}"
    );

    let img_at = format!("{}@@{start}", b.image.display());
    let listing = tool("mdir", &["-/", "-i", &img_at, "::"]);
    for name in ["zImage", "Image", "initrd.img", "extlinux.conf"] {
        if name == "zImage" && board == "armv8-foundation"
            || name == "Image" && board != "armv8-foundation"
        {
            continue;
        }
        assert!(
            listing.contains(name),
            "{name} missing from the FAT listing:\n{listing}"
        );
    }
    let get = |path: &str| -> Vec<u8> {
        let dest = b.out.join("fat-file");
        let _ = std::fs::remove_file(&dest);
        tool(
            "mcopy",
            &[
                "-n",
                "-i",
                &img_at,
                &format!("::{path}"),
                dest.to_str().unwrap(),
            ],
        );
        std::fs::read(&dest).unwrap()
    };
    let kernel_name = if board == "armv8-foundation" {
        "Image"
    } else {
        "zImage"
    };
    assert_eq!(
        get(kernel_name),
        std::fs::read(b.rootfs.join(format!("boot/vmlinuz-{KVER}"))).unwrap()
    );
    assert_eq!(
        get("initrd.img"),
        std::fs::read(b.rootfs.join(format!("boot/initrd.img-{KVER}"))).unwrap()
    );
    let dtb = f.dtb.unwrap();
    assert_eq!(
        get(&format!("dtbs/{dtb}")),
        std::fs::read(b.rootfs.join(format!("usr/lib/linux-image-{KVER}/{dtb}"))).unwrap()
    );
    let root_partuuid = partition(b, "root")["partuuid"]
        .as_str()
        .unwrap()
        .to_string();
    let extlinux = String::from_utf8(get("extlinux/extlinux.conf")).unwrap();
    assert!(
        extlinux.contains(&format!("root=PARTUUID={root_partuuid}")),
        "{extlinux}"
    );
    assert!(
        extlinux.contains(&format!("linux /{kernel_name}")),
        "{extlinux}"
    );
    if board == "armv8-foundation" {
        assert!(
            !extlinux.contains("fdt "),
            "QEMU virt supplies its own device tree:\n{extlinux}"
        );
    } else {
        let scr = b.out.join("boot.scr");
        std::fs::write(&scr, get("boot.scr")).unwrap();
        let l = tool("mkimage", &["-l", scr.to_str().unwrap()]);
        assert!(l.contains("Script"), "{l}");
        let cmd = String::from_utf8(get("boot.cmd")).unwrap();
        assert!(
            cmd.contains(&format!("root=PARTUUID={root_partuuid}")),
            "{cmd}"
        );
    }
}

fn check_root_partition(b: &Built) {
    let root = partition(b, "root");
    let dev = format!("{}?offset={}", b.image.display(), offset_of(root));
    let fsck = tool("e2fsck", &["-fn", &dev]);
    assert!(fsck.contains("Pass 5"), "{fsck}");
    let debugfs = |req: &str| tool("debugfs", &["-R", req, &dev]);
    let shadow = debugfs("stat /etc/shadow");
    assert!(shadow.contains("Mode:  0600"), "{shadow}");
    let owned = debugfs("stat /home/user/owned");
    assert!(
        owned.contains("User:  1000") && owned.contains("Group:  1000"),
        "{owned}"
    );
    let nested = debugfs("cat \"/home/user/dir with spaces/nested/deeper/file name.txt\"");
    assert!(nested.contains("hello from a nested file"), "{nested}");
    let link = debugfs("stat /vmlinuz");
    assert!(
        link.contains(&format!("Fast link dest: \"boot/vmlinuz-{KVER}\"")),
        "{link}"
    );
    let stats = debugfs("stats");
    assert!(
        stats.contains("Filesystem volume name:   rootfs"),
        "{stats}"
    );
}

fn check_sums_and_bmap(b: &Built) {
    let out = b.out.to_str().unwrap();
    let name = b.image.file_name().unwrap().to_str().unwrap();
    let check = |prog: &str, file: &str| {
        let o = run(std::process::Command::new(prog)
            .current_dir(out)
            .args(["-c", file]));
        assert!(
            o.status.success(),
            "{prog} -c {file}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    };
    check("sha256sum", &format!("{name}.sha256"));
    check("md5sum", &format!("{name}.md5"));
    let copy = b.out.join("bmaptool-copy.img");
    tool(
        "bmaptool",
        &[
            "copy",
            "--bmap",
            &format!("{out}/{name}.bmap"),
            b.image.to_str().unwrap(),
            copy.to_str().unwrap(),
        ],
    );
    assert_eq!(sha256_file(&copy), b.report["sha256"].as_str().unwrap());
    // The image stays sparse: allocated space is close to what the bmap maps. mke2fs allocates the journal
    // as unwritten (zero-reading) extents, which SEEK_DATA reports as holes: they count in du, not in the map.
    let du: u64 = tool("du", &["-B1", b.image.to_str().unwrap()])
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mapped = b.report["mapped_bytes"].as_u64().unwrap();
    assert!(
        du <= mapped + (8 << 20),
        "allocated {du} bytes, mapped {mapped}"
    );
    assert!(du < b.report["image_size"].as_u64().unwrap());
}

fn check_everything(board: &str, tarball: bool) {
    let b = build_board(board, tarball);
    check_table(board, &b);
    if let Some(u) = board_files(board).uboot {
        // The SPL blob at 8 KiB is byte-identical and did not disturb the table (checked above).
        let blob = std::fs::read(b.rootfs.join(u)).unwrap();
        let img = std::fs::read(&b.image).unwrap();
        assert_eq!(&img[8192..8192 + blob.len()], &blob[..]);
    }
    if board != "chromebook-snow" {
        check_boot_partition(board, &b);
    }
    check_root_partition(&b);
    check_sums_and_bmap(&b);
    if board == "chromebook-snow" {
        let cgpt = tool("cgpt", &["show", b.image.to_str().unwrap()]);
        assert!(cgpt.contains("ChromeOS kernel"), "{cgpt}");
        assert!(
            cgpt.contains("priority=10")
                && cgpt.contains("tries=5")
                && cgpt.contains("successful=1"),
            "{cgpt}"
        );
        // KERN-A holds a vboot kernel blob that verifies (tests/chromebook.rs checks it in depth).
        let kern = partition(&b, "kernel");
        let kpart = b.out.join("kern-a.bin");
        extract(
            &b.image,
            offset_of(kern),
            kern["size"].as_u64().unwrap(),
            &kpart,
        );
        tool(
            "vbutil_kernel",
            &[
                "--verify",
                kpart.to_str().unwrap(),
                "--signpubkey",
                "/usr/share/vboot/devkeys/kernel_subkey.vbpubk",
            ],
        );
    }
}

#[test]
fn cubieboard_image_checks_out() {
    check_everything("cubieboard", false);
}

#[test]
fn mk802_image_checks_out() {
    check_everything("mk802", false);
}

#[test]
fn chromebook_snow_image_checks_out() {
    check_everything("chromebook-snow", false);
}

#[test]
fn armv8_foundation_image_checks_out() {
    check_everything("armv8-foundation", false);
}

#[test]
fn tarball_rootfs_keeps_owners_and_modes() {
    check_everything("cubieboard", true);
}

/// vboot keys for a board without a signed kernel partition would be ignored: refused before any work.
#[test]
fn vboot_keys_for_a_board_without_vboot_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = make_rootfs(dir.path(), "cubieboard");
    let out = dir.path().join("out");
    for option in ["--vboot-keyblock", "--vboot-signprivate"] {
        let no_effect = format!("{option} has no effect here");
        build_err("cubieboard", &rootfs, &out, &[option, "k"]).expect(2, &[&no_effect, "[vboot]"]);
        assert!(!out.exists());
    }
}

/// The image is owner-only by default (it holds the password hashes); --world-readable leaves the
/// mode to the umask.
#[test]
fn image_mode_follows_world_readable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let rootfs = make_rootfs(dir.path(), "armv8-foundation");
    // The umask the child inherits, from /proc (reading it with umask(2) would change it).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let umask = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
        .unwrap();
    for (flag, want) in [(None, 0o600), (Some("--world-readable"), 0o666 & !umask)] {
        let out = dir.path().join("out");
        build_ok("armv8-foundation", &rootfs, &out, flag.as_slice());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&out.join("armv8-foundation.img")), want, "{flag:?}");
        assert_eq!(mode(&out.join("armv8-foundation.img.bmap")), 0o666 & !umask);
        std::fs::remove_dir_all(&out).unwrap();
    }
}

#[test]
fn two_builds_are_byte_identical() {
    let a = build_board("armv8-foundation", false);
    let b = build_board("armv8-foundation", false);
    assert_eq!(sha256_file(&a.image), sha256_file(&b.image));
    let bmap = |x: &Built| sha256_file(&x.out.join("armv8-foundation.img.bmap"));
    assert_eq!(bmap(&a), bmap(&b));
    assert_eq!(a.report["sha256"], b.report["sha256"]);
}

#[test]
fn another_epoch_gives_other_identifiers() {
    let dir = tempfile::tempdir().unwrap();
    let show = |epoch: &str| -> Value {
        let o = support::run_ok(boardsmith().env("SOURCE_DATE_EPOCH", epoch).args([
            "show",
            "cubieboard",
            "--json",
        ]));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let (a, b) = (show("1700000000"), show("1700000001"));
    assert_ne!(
        a["layout"]["table"]["disk_signature"],
        b["layout"]["table"]["disk_signature"]
    );
    drop(dir);
}

// ---------- must-fail cases: one per validation rule, each with a clear message and no final outputs ----------

fn profile_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const A10_HEAD: &str = "extends = \"allwinner-a10\"\nname = \"testboard\"\n[kernel]\ndtb = \"sun4i-a10-cubieboard.dtb\"\n[bootloader]\npath = \"usr/lib/u-boot/Cubieboard/u-boot-sunxi-with-spl.bin\"\n";

/// Two partitions, `boot` (with the fields `boot` after its name and role) and `root` filling the rest.
fn boot_and_root(boot: &str) -> String {
    format!(
        "[[partition]]\nname = \"boot\"\nrole = \"boot\"\n{boot}[[partition]]\nname = \"root\"\nrole = \"root\"\nsize = \"fill\"\n"
    )
}

/// A temporary directory with the fixture root filesystem of `board`, the board to build (its name,
/// or the profile `(file name, text)` written there) and an output directory.
struct Fixture {
    dir: tempfile::TempDir,
    rootfs: PathBuf,
    board: String,
    out: PathBuf,
}

fn fixture(board: &str, profile: Option<(&str, &str)>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = make_rootfs(dir.path(), board);
    let board = match profile {
        Some((name, text)) => profile_file(dir.path(), name, text).display().to_string(),
        None => board.to_string(),
    };
    let out = dir.path().join("out");
    Fixture {
        dir,
        rootfs,
        board,
        out,
    }
}

/// The embedded profile of `board` with each `(from, to)` replaced (each must be found).
fn embedded_profile(board: &str, edits: &[(&str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("boards/{board}.toml"));
    let mut text = std::fs::read_to_string(path).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{from} not in {board}.toml");
        text = text.replace(from, to);
    }
    text
}

/// `build BOARD` (a name, or `A10_HEAD` + `profile` written to a file named `board`) with the
/// Cubieboard fixture as changed by `setup` and `extra` options: it fails with exit 2 and each of
/// `wanted` in its standard error, leaving nothing behind.
fn cubieboard_fails(
    board: &str,
    profile: Option<&str>,
    setup: impl FnOnce(&Path),
    extra: &[&str],
    wanted: &[&str],
) {
    let text = profile.map(|p| format!("{A10_HEAD}{p}"));
    let f = fixture("cubieboard", text.as_deref().map(|t| (board, t)));
    setup(&f.rootfs);
    build_err(&f.board, &f.rootfs, &f.out, extra).expect(2, wanted);
}

/// A profile with `A10_HEAD` + `text` as `name` fails: see [`cubieboard_fails`].
fn profile_fails(name: &str, text: &str, wanted: &[&str]) {
    cubieboard_fails(name, Some(text), |_| {}, &[], wanted);
}

#[test]
fn overlapping_partitions_fail() {
    profile_fails(
        "overlap.toml",
        &boot_and_root("size = \"64MiB\"\nmbr_type = 0x0c\n")
            .replace("size = \"fill\"", "offset = \"32MiB\"\nsize = \"fill\""),
        &[
            "partition 1 `boot` (bytes 1048576..68157440) overlaps partition 2 `root` (bytes 33554432..",
        ],
    );
}

/// A label the filesystem would cut (ext4 keeps 16 bytes) would leave fstab's LABEL= naming nothing.
#[test]
fn label_the_filesystem_cannot_hold_fails() {
    profile_fails(
        "label.toml",
        &boot_and_root("size = \"64MiB\"\nmbr_type = 0x0c\n").replace(
            "size = \"fill\"",
            "size = \"fill\"\nlabel = \"a very long root fs label\"",
        ),
        &[
            "label.toml:",
            "`partition[1].label`",
            "an ext4 label has 1 to 16 bytes",
        ],
    );
}

/// A magic offset that no blob can reach (here one that overflowed the build's sum): `show` refuses the
/// profile as `build` does, naming file, line and field, before any root filesystem is read.
#[test]
fn bootloader_magic_outside_the_blob_fails() {
    let text = "magic = { offset = 18446744073709551615, text = \"eGON.BT0\" }\n";
    let wanted = [
        "magic.toml:7:9: `bootloader.magic.offset`: byte 18446744073709551615 plus the 8-byte text is past the end of any image",
    ];
    profile_fails("magic.toml", text, &wanted);
    let dir = tempfile::tempdir().unwrap();
    let profile = profile_file(dir.path(), "magic.toml", &format!("{A10_HEAD}{text}"));
    support::run_err(boardsmith().arg("show").arg(&profile)).expect(2, &wanted);
}

#[test]
fn spl_over_gpt_entry_array_fails() {
    profile_fails(
        "gpt-a10.toml",
        &format!(
            "[table]\ntype = \"gpt\"\n{}",
            boot_and_root("size = \"64MiB\"\n")
        ),
        &[
            "GPT entry array (128 entries) (bytes 1024..17408) overlaps bootloader blob",
            "(bytes 8192..548204)",
        ],
    );
}

#[test]
fn moved_gpt_entry_array_makes_room_for_the_spl() {
    let text = format!(
        "{A10_HEAD}[table]\ntype = \"gpt\"\ngpt_entries_offset = \"1008KiB\"\n{}",
        boot_and_root("size = \"64MiB\"\n")
    );
    let Fixture {
        rootfs, board, out, ..
    } = &fixture("cubieboard", Some(("gpt-a10-moved.toml", &text)));
    build_ok(board, rootfs, out, &[]);
    let v = tool(
        "sgdisk",
        &["-v", out.join("testboard.img").to_str().unwrap()],
    );
    assert!(v.contains("No problems found"), "{v}");
}

#[test]
fn partition_past_the_end_fails() {
    let wanted = "partition `boot` (bytes 1048576..135266304) extends past the end of the usable image (104857600 bytes";
    cubieboard_fails("cubieboard", None, |_| {}, &["--size", "100MiB"], &[wanted]);
}

#[test]
fn rootfs_larger_than_its_partition_fails_saying_by_how_much() {
    let big = |r: &Path| std::fs::write(r.join("big.bin"), pseudo_random(9, 60 << 20)).unwrap();
    let wanted = "partition `root` holds 31 MiB: it is short by about";
    cubieboard_fails("cubieboard", None, big, &["--size", "160MiB"], &[wanted]);
}

#[test]
fn unknown_profile_key_fails_with_position() {
    let text = "[display]\nvideo = \"x\"\nresolution = \"720p\"\n";
    profile_fails(
        "typo.toml",
        text,
        &["typo.toml:9:1: unknown field `resolution`"],
    );
}

#[test]
fn bad_size_string_fails_with_position() {
    profile_fails(
        "size.toml",
        "[[partition]]\nname = \"boot\"\nrole = \"boot\"\nsize = \"64 megs\"\n",
        &["size.toml:10:8: `partition[0].size`: invalid size \"64 megs\": unknown unit"],
    );
    let wanted = "--size: invalid size \"lots\"";
    cubieboard_fails("cubieboard", None, |_| {}, &["--size", "lots"], &[wanted]);
}

#[test]
fn missing_rootfs_path_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (rootfs, out) = (dir.path().join("nope"), dir.path().join("out"));
    build_err("cubieboard", &rootfs, &out, &[]).expect(2, &["nope does not exist"]);
}

#[test]
fn kernel_missing_from_rootfs_fails() {
    let rm = |r: &Path| std::fs::remove_file(r.join(format!("boot/vmlinuz-{KVER}"))).unwrap();
    let wanted = ["no kernel matching `boot/vmlinuz-*`", "linux-image-armmp"];
    cubieboard_fails("cubieboard", None, rm, &[], &wanted);
}

#[test]
fn bootloader_missing_from_rootfs_fails() {
    let rm =
        |r: &Path| std::fs::remove_file(r.join(board_files("cubieboard").uboot.unwrap())).unwrap();
    let wanted = [
        "no bootloader blob matching `usr/lib/u-boot/Cubieboard/u-boot-sunxi-with-spl.bin`",
        "u-boot-sunxi",
    ];
    cubieboard_fails("cubieboard", None, rm, &[], &wanted);
}

#[test]
fn bootloader_without_egon_magic_fails() {
    let spl = board_files("cubieboard").uboot.unwrap();
    let junk = |r: &Path| std::fs::write(r.join(spl), pseudo_random(7, 4096)).unwrap();
    cubieboard_fails("cubieboard", None, junk, &[], &["\"eGON.BT0\" at byte 4"]);
}

#[test]
fn boot_files_larger_than_the_boot_partition_fail() {
    profile_fails(
        "smallboot.toml",
        &boot_and_root("size = \"4MiB\"\nmbr_type = 0x0e\n"),
        &[
            "boot partition `boot`: the boot files need",
            "enlarge the boot partition by at least",
        ],
    );
}

#[test]
fn unknown_board_fails_listing_known_ones() {
    let f = support::run_err(boardsmith().args(["show", "raspberry"]));
    f.expect(
        2,
        &["no board profile named `raspberry`", "cubieboard", "mk802"],
    );
}

// ---------- show and boards ----------

#[test]
fn boards_lists_the_embedded_profiles() {
    let o = support::run_ok(boardsmith().args(["boards", "--json"]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["armv8-foundation", "chromebook-snow", "cubieboard", "mk802"]
    );
    // The emulator each board boots in (what the CI matrix boots), none for the Chromebook.
    let emulators: Vec<Option<&str>> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["emulator"].as_str())
        .collect();
    assert_eq!(
        emulators,
        [
            Some("qemu-system-aarch64"),
            None,
            Some("qemu-system-arm"),
            Some("qemu-system-arm")
        ]
    );
}

#[test]
fn user_boards_dir_adds_and_shadows_profiles() {
    let dir = tempfile::tempdir().unwrap();
    profile_file(
        dir.path(),
        "myboard.toml",
        &format!("description = \"mine\"\n{A10_HEAD}").replace("name = \"testboard\"\n", ""),
    );
    let o = run(boardsmith()
        .env("BOARDSMITH_BOARDS", dir.path())
        .args(["boards"]));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("myboard") && text.contains("cubieboard"),
        "{text}"
    );
}

#[test]
fn show_accounts_for_every_byte() {
    let o = support::run_ok(boardsmith().args(["show", "cubieboard", "--json", "--size", "1GiB"]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut pos = 0;
    for r in v["layout"]["regions"].as_array().unwrap() {
        assert_eq!(r["start"].as_u64().unwrap(), pos);
        pos = r["end"].as_u64().unwrap();
    }
    assert_eq!(pos, 1 << 30);
    let text = String::from_utf8_lossy(&run(boardsmith().args(["show", "cubieboard"])).stdout)
        .into_owned();
    assert!(
        text.contains("bootloader blob usr/lib/u-boot/Cubieboard/u-boot-sunxi-with-spl.bin")
            && text.contains("(may grow to byte 1048576)"),
        "{text}"
    );
}

#[test]
fn help_man_and_completions_come_from_one_definition() {
    let help = String::from_utf8(run(boardsmith().arg("--help")).stdout).unwrap();
    assert!(help.contains("build") && help.contains("show"));
    let man = String::from_utf8(run(boardsmith().arg("man")).stdout).unwrap();
    assert!(man.contains(".TH boardsmith"));
    let bash = String::from_utf8(run(boardsmith().args(["completions", "bash"])).stdout).unwrap();
    assert!(bash.contains("_boardsmith"));
}

#[test]
fn fat32_boot_partition_is_fsck_clean() {
    let boot = "fs = \"fat32\"\nsize = \"300MiB\"\nlabel = \"FIRMWARE\"\n";
    let text = format!("{A10_HEAD}{}", boot_and_root(boot));
    let Fixture {
        rootfs, board, out, ..
    } = &fixture("cubieboard", Some(("fat32.toml", &text)));
    let o = build_ok(board, rootfs, out, &["--json"]);
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["fat"]["geometry"]["kind"], "Fat32");
    let image = out.join("testboard.img");
    let fat = out.join("boot.fat");
    extract(&image, 1 << 20, 300 << 20, &fat);
    let fsck = tool("fsck.fat", &["-n", "-v", fat.to_str().unwrap()]);
    assert!(fsck.contains("32 bit entries"), "{fsck}");
    assert!(
        !fsck.contains("differ") && !fsck.contains("Free cluster"),
        "{fsck}"
    );
    let img_at = format!("{}@@{}", image.display(), 1 << 20);
    let label = tool("mlabel", &["-s", "-i", &img_at, "::"]);
    assert!(label.contains("FIRMWARE"), "{label}");
    let dest = out.join("z");
    tool(
        "mcopy",
        &["-n", "-i", &img_at, "::zImage", dest.to_str().unwrap()],
    );
    assert_eq!(
        std::fs::read(dest).unwrap(),
        std::fs::read(rootfs.join(format!("boot/vmlinuz-{KVER}"))).unwrap()
    );
}

/// Output into a pipe whose reader has gone (`boardsmith completions bash | head -c0`) ends quietly, never
/// with a panic message.
#[test]
fn closed_stdout_ends_quietly() {
    for args in [
        &["show", "cubieboard", "--json"][..],
        &["completions", "bash"],
    ] {
        let mut child = boardsmith()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Closed before the child has loaded anything, so its first write fails.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // 141 from println!'s broken pipe, 0 where the output is written with its error ignored.
        assert!(
            matches!(out.status.code(), Some(141 | 0)),
            "{args:?}: {:?} {stderr}",
            out.status
        );
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

/// A 3 KB tarball whose `boot/vmlinuz-1` header claims 8 TiB: refused while the archive is read (the
/// size against the archive's real length), naming archive, entry and byte offsets; the process used
/// to abort allocating 8 TiB (status 134). Nothing is left in the output directory.
#[test]
fn tar_entry_claiming_more_than_the_archive_fails() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("boot")).unwrap();
    std::fs::write(tree.join("boot/vmlinuz-1"), b"kernel").unwrap();
    let tar = dir.path().join("lying.tar");
    tar_tree(&tree, &tar, &["-b", "1"]);
    support::claim_size(&tar, "./boot/vmlinuz-1", 8 << 40);
    assert_eq!(std::fs::metadata(&tar).unwrap().len(), 3072);
    // GNU tar reads the same claim.
    let listing = run(std::process::Command::new("tar").arg("-tvf").arg(&tar));
    assert!(
        String::from_utf8_lossy(&listing.stdout).contains("8796093022208"),
        "{listing:?}"
    );
    let out = dir.path().join("out");
    let wanted = format!(
        "{}: entry `./boot/vmlinuz-1` (header at byte 1024) claims 8796093022208 bytes of data from byte 1536, past the end of the archive at byte 3072; the tarball is truncated or corrupt, make it again",
        tar.display()
    );
    build_err("cubieboard", &tar, &out, &[]).expect(2, &[&wanted]);
}

// ---- Strings that reach generated files (issue 14): one failing profile per field ----

/// `text` as a profile fails to load with exit 2, naming file:line:col of the value that starts with
/// `value_start`, the field, and the control character at `at` (1-based) of the value.
fn control_char_fails(text: &str, value_start: &str, field: &str, ch: &str, at: usize) {
    let dir = tempfile::tempdir().unwrap();
    let p = profile_file(dir.path(), "hostile.toml", text);
    let offset = text.find(value_start).expect("value in the text");
    let line = text[..offset].matches('\n').count() + 1;
    let col = text[..offset].rsplit('\n').next().unwrap().chars().count() + 1;
    // The profile is refused before the root filesystem (which does not exist) is looked at.
    let (rootfs, out) = (dir.path().join("rootfs"), dir.path().join("out"));
    let expected = format!(
        "{}:{line}:{col}: `{field}`: contains a control character, {ch}, at character {at}; profile values go into generated files (extlinux.conf, boot.scr, uboot.env, fstab, the FVP launch script, release notes) and must be one line of printable text",
        p.display()
    );
    build_err(p.to_str().unwrap(), &rootfs, &out, &[]).expect(2, &[&expected]);
}

const A10_BOOTLOADER: &str =
    "[bootloader]\npath = \"usr/lib/u-boot/Cubieboard/u-boot-sunxi-with-spl.bin\"\n";

macro_rules! control_char_rule {
    ($test:ident, $text:expr, $value_start:expr, $field:expr, $ch:expr, $at:expr) => {
        #[test]
        fn $test() {
            let text: String = $text.into();
            control_char_fails(&text, $value_start, $field, $ch, $at);
        }
    };
}

control_char_rule!(
    kernel_cmdline_with_a_line_break_fails,
    format!(
        "extends = \"allwinner-a10\"\n[kernel]\ndtb = \"a.dtb\"\ncmdline = \"console={{console}} root={{root}}\\n# x\\nreboot\"\n{A10_BOOTLOADER}"
    ),
    "\"console=",
    "kernel.cmdline",
    "U+000A (line feed)",
    30
);
control_char_rule!(
    description_with_a_line_break_fails,
    format!("description = \"Board\\nmenu label x\"\n{A10_HEAD}"),
    "\"Board",
    "description",
    "U+000A (line feed)",
    6
);
control_char_rule!(
    console_with_a_carriage_return_fails,
    format!("console = \"ttyS0\\r\"\n{A10_HEAD}"),
    "\"ttyS0",
    "console",
    "U+000D (carriage return)",
    6
);
control_char_rule!(
    name_with_an_escape_fails,
    "extends = \"allwinner-a10\"\nname = \"t\\u001b[2J\"\n[kernel]\ndtb = \"x.dtb\"\n[bootloader]\npath = \"x\"\n",
    "\"t\\u001b",
    "name",
    "U+001B (escape)",
    2
);
control_char_rule!(
    kernel_dtb_with_a_line_break_fails,
    format!(
        "extends = \"allwinner-a10\"\n[kernel]\ndtb = \"a.dtb\\nfdt /evil.dtb\"\n{A10_BOOTLOADER}"
    ),
    "\"a.dtb",
    "kernel.dtb",
    "U+000A (line feed)",
    6
);
control_char_rule!(
    display_video_with_a_tab_fails,
    format!("{A10_HEAD}[display]\nvideo = \"HDMI-A-1:1280x720@60\\tquiet\"\n"),
    "\"HDMI",
    "display.video",
    "U+0009 (tab)",
    21
);
control_char_rule!(
    partition_label_with_a_line_break_fails,
    format!(
        "{A10_HEAD}[[partition]]\nname = \"boot\"\nrole = \"boot\"\nsize = \"64MiB\"\nlabel = \"BOOT\\n/ x\"\n[[partition]]\nname = \"root\"\nrole = \"root\"\nsize = \"fill\"\n"
    ),
    "\"BOOT\\n",
    "partition[0].label",
    "U+000A (line feed)",
    5
);
control_char_rule!(
    partition_name_with_a_line_break_fails,
    format!(
        "{A10_HEAD}[[partition]]\nname = \"boot\"\nrole = \"boot\"\nsize = \"64MiB\"\n[[partition]]\nname = \"ro\\not\"\nrole = \"root\"\nsize = \"fill\"\n"
    ),
    "\"ro\\n",
    "partition[1].name",
    "U+000A (line feed)",
    3
);
control_char_rule!(
    gpt_name_with_a_nul_fails,
    format!(
        "{A10_HEAD}[table]\ntype = \"gpt\"\n[[partition]]\nname = \"boot\"\nrole = \"boot\"\nsize = \"64MiB\"\ngpt_name = \"EFI\\u0000x\"\n[[partition]]\nname = \"root\"\nrole = \"root\"\nsize = \"fill\"\n"
    ),
    "\"EFI",
    "partition[0].gpt_name",
    "U+0000 (NUL)",
    4
);
control_char_rule!(
    uboot_env_file_with_a_line_break_fails,
    format!("{A10_HEAD}[bootloader.env]\nfile = \"uboot.env\\nx\"\nsize = \"64KiB\"\n"),
    "\"uboot.env",
    "bootloader.env.file",
    "U+000A (line feed)",
    10
);
control_char_rule!(
    uboot_env_value_with_a_line_feed_fails,
    format!(
        "{A10_HEAD}[bootloader.env]\nsize = \"64KiB\"\nset = {{ bootcmd = \"run distro_bootcmd\\rreset\" }}\n"
    ),
    "\"run distro",
    "bootloader.env.set.bootcmd",
    "U+000D (carriage return)",
    19
);
control_char_rule!(
    uboot_env_name_with_a_line_break_fails,
    format!("{A10_HEAD}[bootloader.env]\nsize = \"64KiB\"\nset = {{ \"boot\\ncmd\" = \"x\" }}\n"),
    "\"boot\\ncmd",
    "\"bootloader.env.set.boot\\ncmd\" (a key)",
    "U+000A (line feed)",
    5
);
control_char_rule!(
    fvp_model_with_a_line_break_fails,
    format!("{A10_HEAD}[fvp]\nmodel = \"FVP\\ntouch /tmp/pwned\"\n"),
    "\"FVP",
    "fvp.model",
    "U+000A (line feed)",
    4
);
control_char_rule!(
    fvp_arg_with_a_line_break_fails,
    format!("{A10_HEAD}[fvp]\nmodel = \"FVP\"\nargs = [\"--cores=4\", \"--x\\nreboot\"]\n"),
    "\"--x",
    "fvp.args[1]",
    "U+000A (line feed)",
    4
);
control_char_rule!(
    release_changelog_with_a_line_break_fails,
    format!("{A10_HEAD}[release]\nchangelog = [\"fixed\\n# Heading\"]\n"),
    "\"fixed",
    "release.changelog[0]",
    "U+000A (line feed)",
    6
);
control_char_rule!(
    release_known_issue_with_a_line_break_fails,
    format!("{A10_HEAD}[release]\nknown_issues = [\"ok\", \"slow\\u0085x\"]\n"),
    "\"slow",
    "release.known_issues[1]",
    "U+0085",
    5
);
control_char_rule!(
    release_console_notes_with_a_line_break_fails,
    format!("{A10_HEAD}[release]\nconsole_notes = \"\"\"\nlog in\nas root\"\"\"\n"),
    "\"\"\"\nlog",
    "release.console_notes",
    "U+000A (line feed)",
    7
);
control_char_rule!(
    rootfs_hostname_with_a_line_break_fails,
    format!("{A10_HEAD}[rootfs]\nhostname = \"board\\n127.0.0.1 evil\"\n"),
    "\"board",
    "rootfs.hostname",
    "U+000A (line feed)",
    6
);
control_char_rule!(
    base_profile_field_with_a_line_break_fails,
    format!("{A10_HEAD}[emulator]\nsystem = \"qemu-system-arm\"\nmachine = \"cubieboard\\n\"\n"),
    "\"cubieboard",
    "emulator.machine",
    "U+000A (line feed)",
    11
);

/// `--cmdline-append` with a line break (which used to reach extlinux.conf, boot.scr and the FVP
/// script, where a line after a `#` comment runs as a command) is refused before anything is read.
#[test]
fn cmdline_append_with_a_line_break_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (rootfs, out) = (dir.path().join("rootfs"), dir.path().join("out"));
    let append = ["--cmdline-append", "quiet\n# x\ntouch /tmp/pwned"];
    let wanted = "--cmdline-append: contains a control character, U+000A (line feed), at character 6; the kernel command line goes into extlinux.conf, boot.scr and the FVP launch script and must be one line of printable text";
    build_err("armv8-foundation", &rootfs, &out, &append).expect(2, &[wanted]);
}

/// A command line boot.scr cannot quote for U-Boot's shell (a single quote) is refused for boards
/// that write boot.scr, naming it and the way out.
#[test]
fn cmdline_with_a_single_quote_fails_for_boot_scr() {
    let wanted = "x='1'` contains a single quote, which boot.scr cannot pass to U-Boot's shell (it has no way to quote one); remove it, or leave \"boot.scr\" out of boot.methods";
    cubieboard_fails(
        "cubieboard",
        None,
        |_| {},
        &["--cmdline-append", "x='1'"],
        &[wanted],
    );
}

/// The FVP launch script with hostile but printable values in every place it holds one (model,
/// model arguments, kernel command line): valid sh (`sh -n`, `bash -n`), and running it, with and
/// without a model, runs nothing of them; the model receives the arguments exactly as written.
#[test]
fn fvp_script_quotes_hostile_values() {
    let args = [
        "--a=$(touch pwned-a)",
        "--b=`touch pwned-b`",
        "--c=x'y\"z\\w ; touch pwned-c #",
        "--d=${HOME} '$(touch pwned-d)'",
    ];
    let toml_list: Vec<String> = args.iter().map(|a| format!("'''{a}'''")).collect();
    let toml_args = format!("args = [{}]", toml_list.join(", "));
    let text = embedded_profile(
        "armv8-foundation",
        &[
            (
                "model = \"Foundation_Platform\"",
                "model = '''Foundation'$(touch pwned-m)'; touch pwned-n #'''",
            ),
            (
                "args = [\"--cores=4\", \"--gicv3\", \"--network=nat\"]",
                &toml_args,
            ),
        ],
    );
    let Fixture {
        dir,
        rootfs,
        board,
        out,
    } = &fixture("armv8-foundation", Some(("armv8-foundation.toml", &text)));
    let append = "x='$(touch pwned-e)' \"`touch pwned-f`\" ; touch pwned-g # \\";
    build_ok(board, rootfs, out, &["--cmdline-append", append]);
    let script = out.join("armv8-foundation.fvp.sh");
    for shell in ["sh", "bash"] {
        let st = run(std::process::Command::new(shell).arg("-n").arg(&script));
        assert!(st.status.success(), "{shell} -n: {st:?}");
    }
    let work = dir.path().join("cwd");
    std::fs::create_dir(&work).unwrap();
    let pwned = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("pwned"))
            .collect()
    };
    // Without an .axf: the instructions, with the values as written, and exit 2.
    let help = run(std::process::Command::new("sh")
        .arg(&script)
        .current_dir(&work));
    assert_eq!(help.status.code(), Some(2));
    let help_text = String::from_utf8_lossy(&help.stderr);
    assert!(
        help_text.contains("--with-cmdline='console=ttyAMA0 root=PARTUUID=")
            && help_text.contains("touch pwned-g # \\'"),
        "{help_text}"
    );
    // The model named by the profile (hostile, not installed): "not found", exit 1.
    let missing = run(std::process::Command::new("sh")
        .arg(&script)
        .arg("linux.axf")
        .env_remove("FVP")
        .current_dir(&work));
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("Foundation'$(touch pwned-m)'; touch pwned-n # not found"),
        "{missing:?}"
    );
    // A model that records its arguments, one per line.
    let record = dir.path().join("argv");
    let model = dir.path().join("model.sh");
    std::fs::write(
        &model,
        "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > \"$RECORD\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&model, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let ran = run(std::process::Command::new("sh")
        .arg(&script)
        .args(["linux.axf", "--extra"])
        .env("FVP", &model)
        .env("RECORD", &record)
        .current_dir(&work));
    assert!(ran.status.success(), "{ran:?}");
    let mut expected: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    expected.push("--image=linux.axf".into());
    expected.push(format!(
        "--block-device={}/armv8-foundation.img",
        out.display()
    ));
    expected.push("--extra".into());
    assert_eq!(
        std::fs::read_to_string(&record)
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        expected
    );
    assert_eq!(pwned(&work), Vec::<String>::new());
    assert_eq!(pwned(out), Vec::<String>::new());
}

/// QEMU running Debian's U-Boot for `virt` (qemu_arm64), its console on stdin/stdout; killed when dropped.
struct UBoot {
    child: std::process::Child,
    out: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl UBoot {
    fn start(disk: &Path) -> UBoot {
        use std::io::Read;
        let firmware = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";
        assert!(
            Path::new(firmware).exists(),
            "{firmware} is missing: apt-get install u-boot-qemu"
        );
        let mut child = std::process::Command::new("qemu-system-aarch64")
            .args([
                "-M",
                "virt",
                "-cpu",
                "cortex-a57",
                "-m",
                "512M",
                "-nographic",
            ])
            .args(["-monitor", "none", "-bios", firmware, "-drive"])
            .arg(format!(
                "if=none,file={},format=raw,id=d,snapshot=on",
                disk.display()
            ))
            .args(["-device", "virtio-blk-device,drive=d"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("qemu-system-aarch64 (apt-get install qemu-system-arm)");
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().unwrap();
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        UBoot { child, out }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// Waits until the console has printed `pattern` `count` times (a watchdog, not a time limit).
    fn wait_for(&self, pattern: &str, count: usize) {
        for _ in 0..1200 {
            if self.text().matches(pattern).count() >= count {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("U-Boot never printed {pattern:?}:\n{}", self.text());
    }

    fn send(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for UBoot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// boot.scr hands a hostile but printable kernel command line (quotes, `$`, `${...}`, backquotes,
/// `$(...)`, `;`, `#`, a backslash) to U-Boot literally: Debian's U-Boot (the hush parser of the
/// boards' U-Boot 2023.01) sources the script from the built image, and `bootargs` then holds the
/// command line byte for byte, and nothing of it ran.
#[test]
fn boot_scr_hands_a_hostile_command_line_to_u_boot_literally() {
    let text = embedded_profile(
        "armv8-foundation",
        &[("methods = [\"extlinux\"]", "methods = [\"boot.scr\"]")],
    );
    let Fixture {
        rootfs, board, out, ..
    } = &fixture("armv8-foundation", Some(("armv8-foundation.toml", &text)));
    let append = "a\"b $c ${bootcmd} `echo INJECTED1` $(echo INJECTED2); echo INJECTED3 # \\d";
    let o = build_ok(board, rootfs, out, &["--json", "--cmdline-append", append]);
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let cmdline = report["cmdline"].as_str().unwrap().to_string();
    assert!(cmdline.ends_with(append), "{cmdline}");
    let mut u = UBoot::start(&out.join("armv8-foundation.img"));
    u.wait_for("Hit any key to stop autoboot", 1);
    u.send("");
    u.wait_for("=> ", 1);
    u.send(
        "virtio scan; setenv devtype virtio; setenv devnum 0; setenv distro_bootpart 1; \
         load virtio 0:1 ${scriptaddr} boot.scr && source ${scriptaddr}; echo MARK-BEGIN; printenv bootargs; echo MARK-END",
    );
    u.wait_for("MARK-END", 2);
    let console = u.text();
    let after = console.rsplit("MARK-BEGIN").next().unwrap();
    let got = after
        .lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix("bootargs="))
        .unwrap_or_else(|| panic!("no bootargs:\n{console}"));
    assert_eq!(got, cmdline, "{console}");
    // The script ran up to booting the (fake) kernel, and none of the command line ran.
    assert!(console.contains("## Executing script at"), "{console}");
    for marker in ["INJECTED1", "INJECTED2", "INJECTED3"] {
        assert!(
            !console.lines().any(|l| l.trim_end_matches('\r') == marker),
            "{marker} ran:\n{console}"
        );
    }
}

/// `--progress json`: one JSON object per line on stderr (the build's steps), and `--json` the
/// report on stdout, apart: the vocabulary `write` and `release` use too.
#[test]
fn json_progress_on_stderr_and_the_report_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let tree = make_rootfs(dir.path(), "cubieboard");
    let out = dir.path().join("out");
    let o = support::run_ok(
        boardsmith()
            .args(["build", "cubieboard", "--progress", "json", "--json"])
            .arg("--rootfs")
            .arg(&tree)
            .arg("-o")
            .arg(&out),
    );
    let events = support::json_lines(&o.stderr);
    let steps = support::event_texts(&events, "step", "message");
    assert_eq!(steps.len(), events.len(), "{events:?}");
    for step in ["writing the partition table", "hashing (bmap, sha256, md5)"] {
        assert!(steps.contains(&step), "{step:?} not in {steps:?}");
    }
    let report: Value = serde_json::from_slice(&o.stdout).expect("the report, one JSON document");
    assert_eq!(
        report["image"].as_str(),
        Some(out.join("cubieboard.img").to_str().unwrap())
    );
}
