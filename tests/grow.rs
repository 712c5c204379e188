//! Growing a 256 MiB image onto a 1 GiB file and a 1 GiB loop device, MBR and GPT, through
//! `write --grow` and `boardsmith grow`. Checked with sfdisk --verify, sgdisk -v, e2fsck -fn,
//! dumpe2fs and debugfs.

mod support;
mod writer_common;

use std::path::{Path, PathBuf};
use std::process::Output;

use writer_common::*;

const GIB: u64 = 1 << 30;

/// (start, size) in sectors of the last partition, from sfdisk's JSON dump.
fn last_partition(disk: &str) -> (u64, u64) {
    let v: serde_json::Value = serde_json::from_str(&run("sfdisk", &["--json", disk])).unwrap();
    let parts = v["partitiontable"]["partitions"].as_array().unwrap();
    let p = parts
        .iter()
        .max_by_key(|p| p["start"].as_u64().unwrap())
        .unwrap();
    (p["start"].as_u64().unwrap(), p["size"].as_u64().unwrap())
}

/// Checks the grown table and filesystem: the table with sfdisk/sgdisk, the filesystem with
/// e2fsck, dumpe2fs and debugfs through a read-only loop device over the partition (as root), or
/// e2fsprogs' FILE?offset=N form otherwise (dumpe2fs does not take it: debugfs stats instead).
fn check_grown(disk: &str, table: Table, disk_bytes: u64) {
    match table {
        Table::Mbr => {
            run("sfdisk", &["--verify", disk]);
        }
        Table::Gpt => {
            let out = run("sgdisk", &["-v", disk]);
            assert!(out.contains("No problems found"), "{out}");
            run("sfdisk", &["--verify", disk]);
        }
    }
    let (start, size) = last_partition(disk);
    let end = start + size;
    // The end is the last 1 MiB boundary that fits (GPT: before the backup table).
    let usable = match table {
        Table::Mbr => disk_bytes / 512,
        Table::Gpt => disk_bytes / 512 - 33,
    };
    assert_eq!(
        end,
        usable / 2048 * 2048,
        "partition end (sectors) on {disk}"
    );
    assert!(
        end > 200 << 11,
        "the partition did not grow: ends at sector {end}"
    );
    let part_loop = is_root().then(|| Loop::attach_range(Path::new(disk), start * 512, size * 512));
    let fs = part_loop
        .as_ref()
        .map_or(format!("{disk}?offset={}", start * 512), |l| l.dev.clone());
    let fs = fs.as_str();
    let fsck = std::process::Command::new("e2fsck")
        .args(["-fn", fs])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck -fn {fs}: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let dump = if part_loop.is_some() {
        run("dumpe2fs", &["-h", fs])
    } else {
        run("debugfs", &["-R", "stats", fs])
    };
    let field = |name: &str| -> u64 {
        dump.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or_else(|| panic!("{name} missing in dumpe2fs output"))
    };
    let blocks = field("Block count:");
    let bsize = field("Block size:");
    assert_eq!(
        blocks,
        size * 512 / bsize,
        "filesystem blocks vs partition size"
    );
    // Files intact.
    let hostname = run("debugfs", &["-R", "cat /etc/hostname", fs]);
    assert_eq!(hostname, "boardsmith-test\n");
    let random = run("debugfs", &["-R", "stat /data/random.bin", fs]);
    assert!(random.contains("Size: 3145728"), "{random}");
    let dir = tempfile::tempdir().unwrap();
    let dumped = dir.path().join("random.bin");
    run(
        "debugfs",
        &[
            "-R",
            &format!("dump /data/random.bin {}", dumped.display()),
            fs,
        ],
    );
    assert!(std::fs::read(&dumped).unwrap() == pseudo_random(7, 3 << 20));
}

fn image(table: Table) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), "small.img", 256, table);
    run("xz", &["-T2", "-1", "-k", &img.display().to_string()]);
    (dir, img)
}

/// A sparse copy of [`image`]'s image as `card.img` in its directory (what `grow` works on), and
/// its name.
fn card(table: Table) -> (tempfile::TempDir, PathBuf, String) {
    let (dir, img) = image(table);
    let card = dir.path().join("card.img");
    sparse_copy(&img, &card);
    let c = card.display().to_string();
    (dir, card, c)
}

/// `boardsmith grow ARGS`, run to its end.
fn grow(args: &[&str]) -> Output {
    bin().arg("grow").args(args).output().unwrap()
}

fn to_file(table: Table) {
    let (dir, img) = image(table);
    let out = dir.path().join("card.img");
    let stderr = ok_stderr(&write(
        img.with_extension("img.xz"),
        &out,
        &["--grow", "--size", "1GiB"],
    ));
    assert!(stderr.contains("grown from"), "{stderr}");
    assert_eq!(std::fs::metadata(&out).unwrap().len(), GIB);
    check_grown(&out.display().to_string(), table, GIB);
}

#[test]
fn mbr_image_onto_a_larger_file() {
    to_file(Table::Mbr);
}

/// A hybrid MBR (what `sgdisk -h 1` makes: a 0xEE entry plus a DOS entry for partition 1, for
/// firmware that reads only MBRs) is refused before anything is written, the file byte-identical.
/// Growing used to replace it with a protective MBR, silently dropping partition 1's entry.
#[test]
fn a_hybrid_mbr_is_refused_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("hybrid.img");
    let c = card.display().to_string();
    blank_disk(&card, "12M", false);
    run(
        "sgdisk",
        &["-n1:2048:+1M", "-t1:0700", "-n2:0:+2M", "-t2:8300", &c],
    );
    run("sgdisk", &["-h", "1", &c]);
    let hybrid = run("sfdisk", &["-d", "--label-nested", "dos", &c]);
    assert!(
        hybrid.contains("type=7"),
        "sgdisk -h made no MBR entry: {hybrid}"
    );
    let before = sha256sum(&card);
    let o = grow(&[&c, "--size", "64M"]);
    assert_failed(
        &o,
        2,
        &[
            &format!(
                "error: growing {c} failed: {c}: sector 0 holds a hybrid MBR: besides the GPT's 0xEE entry, entry 2 (byte 462) of type 0x07 covers sectors 2048..4096; growing would replace it with a protective MBR and lose those entries. Grow it with gdisk or sgdisk instead"
            ),
            &format!(
                "\nthe partition table and filesystem of {c} keep their old size; nothing was changed\n"
            ),
        ],
    );
    assert_eq!(sha256sum(&card), before, "the hybrid image changed");
    assert_eq!(std::fs::metadata(&card).unwrap().len(), 12 << 20);
    assert!(run("sgdisk", &["-v", &c]).contains("No problems found"));
    assert_eq!(run("sfdisk", &["-d", "--label-nested", "dos", &c]), hybrid);
}

#[test]
fn gpt_image_onto_a_larger_file() {
    to_file(Table::Gpt);
}

fn to_loop(table: Table) {
    require_root("loop devices");
    let (dir, img) = image(table);
    let backing = dir.path().join("card");
    blank_disk(&backing, "1G", false);
    let lo = Loop::attach(&backing, true);
    let stderr = ok_stderr(&write(
        img.with_extension("img.xz"),
        &lo.dev,
        &["--grow", "--yes"],
    ));
    // The filesystem is grown through the partition node if the kernel made one (this test
    // machine's kernel has no MSDOS/EFI partition support, so there it goes through
    // DEVICE?offset=N).
    if Path::new(&format!("{}p2", lo.dev)).exists() {
        assert!(!stderr.contains("?offset="), "{stderr}");
    }
    check_grown(&lo.dev, table, GIB);
    drop(lo);
}

#[test]
fn mbr_image_onto_a_larger_loop_device() {
    to_loop(Table::Mbr);
}

#[test]
fn gpt_image_onto_a_larger_loop_device() {
    to_loop(Table::Gpt);
}

/// `boardsmith grow` on its own: a file extended with --size, then a second run changes nothing;
/// shrinking is refused.
#[test]
fn grow_command_on_a_file() {
    let (_dir, card, c) = card(Table::Gpt);
    let stderr = ok_stderr(&grow(&[&c, "--size", "1G"]));
    assert!(stderr.contains("partition 2 (gpt) grown from"), "{stderr}");
    check_grown(&c, Table::Gpt, GIB);
    let stderr = ok_stderr(&grow(&[&c]));
    assert!(stderr.contains("already reaches the end"), "{stderr}");
    assert!(stderr.contains("already fills it"), "{stderr}");
    let o = grow(&[&c, "--size", "512M"]);
    assert_failed(&o, 2, &["never shrunk"]);
    assert_eq!(std::fs::metadata(&card).unwrap().len(), GIB);
}

/// A file `name` in `dir` of `size` (as `truncate -s` takes it) holding the partition table sfdisk
/// makes of `label` and the partition lines `parts`; and its name.
fn partitioned(dir: &Path, name: &str, size: &str, label: &str, parts: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let p = path.display().to_string();
    blank_disk(&path, size, false);
    sh(&format!(
        "sfdisk -q --no-reread --no-tell-kernel {p} <<'EOF'\nlabel: {label}\nunit: sectors\n\n{parts}EOF"
    ));
    (path, p)
}

/// A last partition without ext2/3/4: the partition is grown, the filesystem left, with a warning.
#[test]
fn other_filesystems_get_the_partition_only() {
    let dir = tempfile::tempdir().unwrap();
    let (_, c) = partitioned(
        dir.path(),
        "card.img",
        "64M",
        "dos",
        "start=2048, size=16384, type=83\n",
    );
    let stderr = ok_stderr(&grow(&[&c, "--size", "128M"]));
    assert!(stderr.contains("holds no ext2/3/4 filesystem"), "{stderr}");
    run("sfdisk", &["--verify", &c]);
    assert_eq!(last_partition(&c), (2048, (128 << 11) - 2048));
}

/// Growing by less than the partition's offset inside a file (resize2fs would cut the old
/// filesystem's tail): done through a loop device over the partition.
#[test]
fn small_growth_inside_a_file() {
    require_root("a loop device");
    let (_dir, _card, c) = card(Table::Mbr);
    ok_stderr(&grow(&[&c, "--size", "258M"]));
    check_grown(&c, Table::Mbr, 258 << 20);
}

/// An ordinary user grows an image file (no loop devices, e2fsprogs on FILE?offset=N).
#[test]
fn grow_as_an_ordinary_user() {
    require_root("switching to user nobody");
    let (dir, _card, c) = card(Table::Gpt);
    run("chown", &["65534:65534", &c]);
    run("chmod", &["0777", &dir.path().display().to_string()]);
    let o = under(
        "setpriv",
        &["--reuid=65534", "--regid=65534", "--clear-groups"],
    )
    .args(["grow", &c, "--size", "1G"])
    .output()
    .unwrap();
    ok_stderr(&o);
    check_grown(&c, Table::Gpt, GIB);
}

/// `write img existing-larger.img --grow`: the existing file is a card image the user prepared;
/// it keeps its size and the image grows into it. Without --grow the file takes the image's size,
/// as bmaptool does.
#[test]
fn grow_into_an_existing_larger_file() {
    let (dir, img) = image(Table::Mbr);
    let xz = img.with_extension("img.xz");
    let card = dir.path().join("card.img");
    blank_disk(&card, "1G", false);
    let stderr = ok_stderr(&write(&xz, &card, &["--grow"]));
    assert!(
        stderr
            .contains("grow     partition 2 (mbr) grown from 251 MiB to 1019 MiB; ext4 grown from"),
        "{stderr}"
    );
    assert_eq!(std::fs::metadata(&card).unwrap().len(), GIB);
    check_grown(&card.display().to_string(), Table::Mbr, GIB);
    let plain = dir.path().join("plain.img");
    blank_disk(&plain, "1G", false);
    ok_stderr(&write(&xz, &plain, &[]));
    assert_eq!(std::fs::metadata(&plain).unwrap().len(), 256 << 20);
    assert_eq!(sha256sum(&plain), sha256sum(&img));
}

/// Sets the 8 bytes at `at` of a GPT disk image and recomputes the entry array's and the primary
/// header's CRC32, so that the grow's checks behind the CRCs are what refuses it.
fn craft_gpt(path: &Path, at: u64, value: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    f.write_all_at(&value.to_le_bytes(), at).unwrap();
    let mut h = [0u8; 92];
    f.read_exact_at(&mut h, 512).unwrap();
    let lba = u64::from_le_bytes(h[72..80].try_into().unwrap());
    let n = u64::from(u32::from_le_bytes(h[80..84].try_into().unwrap()));
    if let Some(start) = lba.checked_mul(512)
        && start
            .checked_add(n * 128)
            .is_some_and(|end| end <= f.metadata().unwrap().len())
    {
        let mut array = vec![0u8; (n * 128) as usize];
        f.read_exact_at(&mut array, start).unwrap();
        h[88..92].copy_from_slice(&crc32fast::hash(&array).to_le_bytes());
    }
    h[16..20].fill(0);
    let crc = crc32fast::hash(&h);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    f.write_all_at(&h, 512).unwrap();
}

/// `grow FILE --size 64M` on a 12 MiB file fails (exit 2) saying just `message(FILE)`, and the file
/// stays byte-identical (`case` names it on failure).
fn refused_unchanged(file: &Path, message: impl Fn(&str) -> String, case: &str) {
    let before = sha256sum(file);
    let f = file.display().to_string();
    let o = grow(&[&f, "--size", "64M"]);
    assert_failed(&o, 2, &[&message(&f)]);
    assert_eq!(sha256sum(file), before, "{case}: the file changed");
    assert_eq!(std::fs::metadata(file).unwrap().len(), 12 << 20);
}

/// A crafted partition table (GPT fields, an MBR entry) is refused with the field and its byte
/// offset, before anything changes: the file stays byte-identical, --size does not extend it.
/// (A GPT entry ending at LBA 2^45 used to "grow from 16777216.0 TiB to 12 MiB" and rewrite
/// the table.)
#[test]
fn crafted_tables_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (gpt, g) = partitioned(
        dir.path(),
        "gpt.img",
        "12M",
        "gpt",
        "start=2048, size=4096, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\nstart=6144, size=16384, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n",
    );
    // sgdisk (independent of us) finds the pristine table sound.
    assert!(run("sgdisk", &["-v", &g]).contains("No problems found"));
    let cases: [(u64, u64, &str); 4] = [
        (
            1024 + 128 + 40,
            1 << 45,
            "GPT entry 2 (byte 1152): LBAs 6144..=35184372088832 lie outside the usable area 2048..=24542",
        ),
        (
            512 + 32,
            1 << 40,
            "primary GPT header: the backup header's LBA (byte 544) is 1099511627776: the backup header must lie after the primary table and inside the target (24576 sectors); the image is truncated or the table belongs to another disk",
        ),
        (
            512 + 72,
            u64::MAX / 512,
            "primary GPT header: the entry array's LBA (byte 584) is 36028797018963967: the array (128 entries, 32 sectors) must lie after the header and end by the first usable LBA (2048)",
        ),
        (
            512 + 48,
            1 << 33,
            "primary GPT header: the last usable LBA (byte 560) is 8589934592: the backup array (32 sectors) and header (LBA 24575) must follow it inside the target",
        ),
    ];
    for (at, value, want) in cases {
        let card = dir.path().join("card.img");
        std::fs::copy(&gpt, &card).unwrap();
        craft_gpt(&card, at, value);
        refused_unchanged(
            &card,
            |c| {
                format!(
                    "error: growing {c} failed: {c}: {want}\nthe partition table and filesystem of {c} keep their old size; nothing was changed\n"
                )
            },
            &format!("byte {at} = {value}"),
        );
    }
    // An MBR partition running past the end of the image.
    let (mbr, _) = partitioned(
        dir.path(),
        "mbr.img",
        "12M",
        "dos",
        "start=2048, size=4096, type=83\nstart=6144, size=16384, type=83\n",
    );
    write_at(&mbr, 446 + 16 + 12, &0xffff_0000u32.to_le_bytes());
    refused_unchanged(
        &mbr,
        |m| {
            format!(
                "error: growing {m} failed: {m}: MBR partition 2 (entry at byte 462): sectors 6144..4294907904 end beyond the target (24576 sectors); the image is truncated or its table is corrupt\n"
            )
        },
        "MBR",
    );
    // An ext4 filesystem (made by mke2fs) larger than its partition.
    let (big_fs, b) = partitioned(
        dir.path(),
        "big-fs.img",
        "12M",
        "dos",
        "start=2048, size=8192, type=83\n",
    );
    sh(&format!(
        "mke2fs -q -F -t ext4 -b 1024 -E offset=1048576 {b} 6144k"
    ));
    refused_unchanged(
        &big_fs,
        |b| {
            format!(
                "error: growing {b} failed: {b}: the ext filesystem of partition 1 (superblock at byte 1049600) counts 6144 blocks of 1024 bytes, more than its partition holds (4194304 bytes); check the image with e2fsck\n"
            )
        },
        "ext4 larger than its partition",
    );
}

/// `grow` works on what exists: a missing file is an error, and none is created.
#[test]
fn grow_refuses_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.img");
    let m = missing.display().to_string();
    let o = grow(&[&m, "--size", "1G"]);
    assert_failed(
        &o,
        2,
        &[&format!("error: {m} does not exist\nnothing was changed\n")],
    );
    assert!(!missing.exists());
}

/// A directory whose `e2fsck` touches `marker`, waits, then runs the real e2fsck: a window in
/// which a signal reliably arrives while grow waits for the tool.
fn slow_e2fsck(dir: &Path, marker: &Path) -> String {
    let real = sh("command -v e2fsck || echo /sbin/e2fsck")
        .trim()
        .to_string();
    let bin_dir = dir.join("slow-bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let wrapper = bin_dir.join("e2fsck");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ntouch '{}'\nsleep 2\nexec '{real}' \"$@\"\n",
            marker.display()
        ),
    )
    .unwrap();
    run("chmod", &["755", &wrapper.display().to_string()]);
    format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Runs `boardsmith grow --progress none ARGS` with the slow e2fsck, sends SIGTERM once e2fsck has
/// started and returns (exit status, stderr: the error message alone).
fn grow_terminated(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let marker = dir.join("e2fsck-started");
    let _ = std::fs::remove_file(&marker);
    let path = slow_e2fsck(dir, &marker);
    let child = boardsmith()
        .args(["grow", "--progress", "none"])
        .args(args)
        .env("PATH", path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !marker.exists() {
        assert!(std::time::Instant::now() < deadline, "e2fsck never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: kill sends a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// SIGTERM while grow checks the filesystem of a file: exit 143, and the message says what the
/// file holds (extended by --size, table and filesystem as before), which independent tools
/// confirm; a second run finishes the job.
#[test]
fn sigterm_during_grow_exits_143() {
    let (dir, card, c) = card(Table::Gpt);
    let table_before = run("sfdisk", &["--dump", &c]);
    let (code, stderr) = grow_terminated(dir.path(), &[&c, "--size", "1G"]);
    assert_eq!(code, Some(143), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "error: growing {c} failed: interrupted by SIGTERM\n{c} was extended to 1 GiB (1073741824 bytes); its partition table and filesystem keep their old size (e2fsck checked the filesystem)\n"
        )
    );
    assert_eq!(std::fs::metadata(&card).unwrap().len(), GIB);
    // The table is the old one (sfdisk reads the primary GPT; the backup is where it was).
    assert_eq!(run("sfdisk", &["--dump", &c]), table_before);
    let (start, size) = last_partition(&c);
    run("e2fsck", &["-fn", &format!("{c}?offset={}", start * 512)]);
    assert!(size < 256 << 11);
    ok_stderr(&grow(&[&c]));
    check_grown(&c, Table::Gpt, GIB);
}

/// The same on a card (a loop device): the table is written first there, so the message says
/// the partition was grown but not its filesystem; running grow again finishes.
#[test]
fn sigterm_during_grow_of_a_card_says_what_is_done() {
    require_root("loop devices");
    let (dir, img) = image(Table::Mbr);
    let backing = dir.path().join("card");
    blank_disk(&backing, "1G", false);
    let lo = Loop::attach(&backing, false);
    ok_stderr(&write(img.with_extension("img.xz"), &lo.dev, &["--yes"]));
    let (code, stderr) = grow_terminated(dir.path(), &[&lo.dev, "--yes"]);
    assert_eq!(code, Some(143), "{stderr}");
    let d = &lo.dev;
    assert_eq!(
        stderr,
        format!(
            "error: growing {d} failed: interrupted by SIGTERM\nthe partition table of {d} was grown (partition 2 now ends at byte {}); its filesystem keeps its old size: run `boardsmith grow {d}` again to grow it\n",
            GIB
        )
    );
    let (start, size) = last_partition(d);
    assert_eq!((start + size) * 512, GIB);
    let stderr = ok_stderr(&grow(&[d, "--yes"]));
    assert!(stderr.contains("already reaches the end"), "{stderr}");
    assert!(stderr.contains("ext4 grown from"), "{stderr}");
    check_grown(d, Table::Mbr, GIB);
    drop(lo);
}
