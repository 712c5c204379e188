//! Growing a 256 MiB image onto a 1 GiB file and a 1 GiB loop device, MBR and GPT, through
//! `write --grow` and `boardsmith grow`. Checked with sfdisk --verify, sgdisk -v, e2fsck -fn,
//! dumpe2fs and debugfs.

mod writer_common;

use std::path::Path;

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

fn image(table: Table) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path(), "small.img", 256, table);
    run("xz", &["-T2", "-1", "-k", &img.display().to_string()]);
    (dir, img)
}

fn to_file(table: Table) {
    let (dir, img) = image(table);
    let out = dir.path().join("card.img");
    let o = bin()
        .arg("write")
        .arg(img.with_extension("img.xz"))
        .arg(&out)
        .args(["--grow", "--size", "1GiB"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("grown from"), "{stderr}");
    assert_eq!(std::fs::metadata(&out).unwrap().len(), GIB);
    check_grown(&out.display().to_string(), table, GIB);
}

#[test]
fn mbr_image_onto_a_larger_file() {
    to_file(Table::Mbr);
}

#[test]
fn gpt_image_onto_a_larger_file() {
    to_file(Table::Gpt);
}

fn to_loop(table: Table) {
    require_root("loop devices");
    let (dir, img) = image(table);
    let backing = dir.path().join("card");
    run("truncate", &["-s", "1G", &backing.display().to_string()]);
    let lo = Loop::attach(&backing, true);
    let o = bin()
        .arg("write")
        .arg(img.with_extension("img.xz"))
        .args([&lo.dev, "--grow", "--yes"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
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
    let (dir, img) = image(Table::Gpt);
    let card = dir.path().join("card.img");
    run(
        "cp",
        &[
            "--sparse=always",
            &img.display().to_string(),
            &card.display().to_string(),
        ],
    );
    let c = card.display().to_string();
    let o = bin().args(["grow", &c, "--size", "1G"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("partition 2 (gpt) grown from"), "{stderr}");
    check_grown(&c, Table::Gpt, GIB);
    let o = bin().args(["grow", &c]).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("already reaches the end"), "{stderr}");
    assert!(stderr.contains("already fills it"), "{stderr}");
    let o = bin().args(["grow", &c, "--size", "512M"]).output().unwrap();
    assert_failed(&o, 2, &["never shrunk"]);
    assert_eq!(std::fs::metadata(&card).unwrap().len(), GIB);
}

/// A last partition without ext2/3/4: the partition is grown, the filesystem left, with a warning.
#[test]
fn other_filesystems_get_the_partition_only() {
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("card.img");
    let c = card.display().to_string();
    run("truncate", &["-s", "64M", &c]);
    sh(&format!(
        "sfdisk -q --no-reread --no-tell-kernel {c} <<'EOF'\nlabel: dos\nstart=2048, size=16384, type=83\nEOF"
    ));
    let o = bin().args(["grow", &c, "--size", "128M"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("holds no ext2/3/4 filesystem"), "{stderr}");
    run("sfdisk", &["--verify", &c]);
    assert_eq!(last_partition(&c), (2048, (128 << 11) - 2048));
}

/// Growing by less than the partition's offset inside a file (resize2fs would cut the old
/// filesystem's tail): done through a loop device over the partition.
#[test]
fn small_growth_inside_a_file() {
    require_root("a loop device");
    let (dir, img) = image(Table::Mbr);
    let card = dir.path().join("card.img");
    run(
        "cp",
        &[
            "--sparse=always",
            &img.display().to_string(),
            &card.display().to_string(),
        ],
    );
    let c = card.display().to_string();
    let o = bin().args(["grow", &c, "--size", "258M"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    check_grown(&c, Table::Mbr, 258 << 20);
}

/// An ordinary user grows an image file (no loop devices, e2fsprogs on FILE?offset=N).
#[test]
fn grow_as_an_ordinary_user() {
    require_root("switching to user nobody");
    let (dir, img) = image(Table::Gpt);
    let card = dir.path().join("card.img");
    run(
        "cp",
        &[
            "--sparse=always",
            &img.display().to_string(),
            &card.display().to_string(),
        ],
    );
    let c = card.display().to_string();
    run("chown", &["65534:65534", &c]);
    run("chmod", &["0777", &dir.path().display().to_string()]);
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin_path())
        .args(["grow", &c, "--size", "1G"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    check_grown(&c, Table::Gpt, GIB);
}
