//! Every fault `boardsmith write` must catch, one test each: the exit status, a message that says
//! what and where, and nothing reported as good. Faults come from real components: files damaged
//! after the real compressors made them, real loop devices, a real mount, a second real writer, a
//! FUSE filesystem that drops writes like a fake card, and a real SIGINT.

mod support;
mod writer_common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use writer_common::*;

/// A loop device over a new ext4 filesystem of `size` in `file`, mounted on `mnt`. Bound as
/// `let (lo, m)`, the mount goes first.
fn mounted_ext4(file: &Path, size: &str, mnt: &Path) -> (Loop, Mount) {
    blank_disk(file, size, true);
    let lo = Loop::attach(file, false);
    let m = Mount::new(&lo.dev, mnt);
    (lo, m)
}

/// A gzip bomb in `dir`: 8 KiB expanding to 8 MiB of zeros, no size in its header.
fn gzip_bomb(dir: &Path) -> PathBuf {
    let bomb = dir.join("bomb.img.gz");
    sh(&format!(
        "head -c 8M /dev/zero | gzip -9 > {}",
        bomb.display()
    ));
    bomb
}

fn damaged(ext: &str, how: &str) -> (tempfile::TempDir, PathBuf) {
    let (f, dir) = fixture_and_dir();
    let src = dir.path().join(format!("damaged.img{ext}"));
    let mut bytes = std::fs::read(f.path(ext)).unwrap();
    match how {
        "truncated" => bytes.truncate(bytes.len() * 6 / 10),
        "corrupt" => {
            let mid = bytes.len() / 2;
            for b in &mut bytes[mid..mid + 64] {
                *b ^= 0xa5;
            }
        }
        _ => unreachable!(),
    }
    std::fs::write(&src, bytes).unwrap();
    (dir, src)
}

/// A damaged compressed source: the write fails (1, or 2 when found before writing), names the
/// source, and leaves the target without its first 64 KiB.
fn damaged_source(ext: &str, how: &str, code: i32, needles: &[&str]) {
    let (_dir, src) = damaged(ext, how);
    refused_source(&src, code, needles);
}

/// Writing `src` (onto `out.img` beside it, a file that was there before) fails with `code`, names
/// the source and says `needles`; when the write had begun (1), the target is left without its
/// first 64 KiB (a file the write created would have been removed: see `wrong_sha256`).
fn refused_source(src: &Path, code: i32, needles: &[&str]) {
    let out = src.with_file_name("out.img");
    filled(&out, 256 << 10, 0xaa);
    let o = write(src, &out, &["--no-bmap"]);
    let mut all = vec![src.file_name().unwrap().to_str().unwrap()];
    all.extend_from_slice(needles);
    assert_failed(&o, code, &all);
    if code == 1 {
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("first 64 KiB are zeroed"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(zero_prefix(&out, 65536), "the target looks bootable");
    }
}

/// One test per damaged compressed source, `name: extension, damage, exit code, [what stderr says]`
/// (see [`damaged_source`]).
macro_rules! damaged_sources {
    ($($name:ident: $ext:literal, $how:literal, $code:literal, [$($needle:literal),+];)+) => {
        $(
            #[test]
            fn $name() {
                damaged_source($ext, $how, $code, &[$($needle),+]);
            }
        )+
    };
}

damaged_sources! {
    corrupt_xz: ".xz", "corrupt", 1, ["corrupt or truncated xz data", "xz block"];
    truncated_xz: ".xz", "truncated", 1, ["xz", "truncated"];
    corrupt_gz: ".gz", "corrupt", 1, ["corrupt or truncated gzip data"];
    truncated_gz: ".gz", "truncated", 1, ["corrupt or truncated gzip data"];
    corrupt_zst: ".zst", "corrupt", 1, ["corrupt or truncated zstd data"];
    truncated_zst: ".zst", "truncated", 1, ["corrupt or truncated zstd data"];
    corrupt_bz2: ".bz2", "corrupt", 1, ["corrupt or truncated bzip2 data"];
    truncated_bz2: ".bz2", "truncated", 1, ["corrupt or truncated bzip2 data"];
    corrupt_7z: ".7z", "corrupt", 1, ["corrupt or truncated 7z data"];
    // The archive's header sits at its end: a truncated 7z is refused before anything is written.
    truncated_7z: ".7z", "truncated", 2, ["cannot read the 7z archive", "nothing was written"];
}

/// A 7z archive whose LZMA2 data decodes cleanly but whose recorded CRC-32 of the image differs
/// (header edited, its own CRCs fixed up): the block-parallel decoder's whole-entry check catches it.
#[test]
fn sevenz_crc_mismatch() {
    let (f, dir) = fixture_and_dir();
    let arc = dir.path().join("bad-crc.img.7z");
    // -mmt=2 writes dictionary resets (the block-parallel path); -mhc=off keeps the header plain.
    let st = Command::new("7z")
        .args(["a", "-bso0", "-bsp0", "-mx=1", "-mmt=2", "-mhc=off"])
        .arg(&arc)
        .arg(&f.raw)
        .status()
        .unwrap();
    assert!(st.success());
    let mut b = std::fs::read(&arc).unwrap();
    let le64 = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize;
    let (start, len) = (32 + le64(12), le64(20));
    let want = crc32fast::hash(&std::fs::read(&f.raw).unwrap()).to_le_bytes();
    let header = &b[start..start + len];
    let at: Vec<usize> = (0..len - 3).filter(|&i| header[i..i + 4] == want).collect();
    assert_eq!(at.len(), 1, "the image's CRC-32 once in the archive header");
    b[start + at[0]] ^= 0x5a;
    let next_crc = crc32fast::hash(&b[start..start + len]).to_le_bytes();
    b[28..32].copy_from_slice(&next_crc);
    let start_crc = crc32fast::hash(&b[12..32]).to_le_bytes();
    b[8..12].copy_from_slice(&start_crc);
    std::fs::write(&arc, &b).unwrap();
    let st = Command::new("7z").arg("t").arg(&arc).output().unwrap();
    assert!(
        !st.status.success(),
        "7-Zip itself rejects the edited archive"
    );

    refused_source(&arc, 1, &["corrupt 7z data: the image's CRC-32 is not"]);
}

/// A bmap file over the 16 MiB cap (a sparse file, named with --bmap or found beside the image) is
/// refused naming it and the limit; nothing is written. A 290 MB bmap used to be cut at 256 MiB
/// and reported as truncated XML "at byte 268435395". One of exactly 16 MiB is parsed (and fails
/// as XML: it is all zeros).
#[test]
fn oversized_bmap_is_refused_naming_the_limit() {
    let (f, dir) = fixture_and_dir();
    let out = dir.path().join("out.img");
    let big = dir.path().join("big.bmap");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(boardsmith::image::bmap::MAX_FILE_BYTES + 1)
        .unwrap();
    let too_large = |name: &Path| {
        format!(
            "error: {} is larger than 16 MiB: not a bmap boardsmith accepts; a bmap lists at most a few MiB of block ranges. Check that it is the image's bmap, or write without one (--no-bmap)\nnothing was written to {}\n",
            name.display(),
            out.display()
        )
    };
    let o = write(f.path(""), &out, &["--bmap", big.to_str().unwrap()]);
    assert_failed(&o, 2, &[&too_large(&big)]);
    assert!(!out.exists(), "the target was created");
    // Found beside the image.
    let src = dir.path().join("beside.img");
    std::fs::copy(f.path(""), &src).unwrap();
    let beside = dir.path().join("beside.img.bmap");
    std::fs::rename(&big, &beside).unwrap();
    let o = write(&src, &out, &[]);
    assert_failed(&o, 2, &[&too_large(&beside)]);
    assert!(!out.exists(), "the target was created");
    // At the limit: read whole, refused as XML.
    std::fs::File::create(&beside)
        .unwrap()
        .set_len(boardsmith::image::bmap::MAX_FILE_BYTES)
        .unwrap();
    let o = write(&src, &out, &[]);
    assert_failed(
        &o,
        2,
        &[&format!(
            "error: bmap {}: line 1, column 1 (byte 0): text outside the <bmap> element",
            beside.display()
        )],
    );
}

/// A bmap with the most ranges boardsmith accepts (MAX_RANGES one-block ranges of 512 bytes, each
/// with its checksum) writes and checks within the 64 MiB the writer promises; one more range is
/// refused naming the range's line and byte. A 252 MB bmap used to take 484 MB.
#[test]
fn bmap_with_the_most_ranges_writes_within_64_mib() {
    use boardsmith::image::bmap::{Bmap, BmapRange, ChecksumType, MAX_RANGES};
    let dir = tempfile::tempdir().unwrap();
    let zeros = sh("head -c 512 /dev/zero | sha256sum");
    let zeros = zeros.split_whitespace().next().unwrap();
    let bmap = |n: usize| Bmap {
        image_size: 2 * n as u64 * 512,
        block_size: 512,
        checksum_type: ChecksumType::Sha256,
        ranges: (0..n as u64)
            .map(|i| BmapRange {
                first: 2 * i,
                last: 2 * i,
                checksum: Some(zeros.to_string()),
            })
            .collect(),
    };
    let img = dir.path().join("sparse.img");
    let out = dir.path().join("out.img");
    let map = dir.path().join("most.bmap");
    let most = bmap(MAX_RANGES);
    std::fs::File::create(&img)
        .unwrap()
        .set_len(most.image_size)
        .unwrap();
    std::fs::write(&map, most.to_xml()).unwrap();
    let (o, rss) = measured(&img, &out, &["--bmap", map.to_str().unwrap()], None);
    let stderr = ok_stderr(&o);
    assert!(
        stderr.contains(&format!("{MAX_RANGES} range checksums matched")),
        "{stderr}"
    );
    eprintln!(
        "{MAX_RANGES} ranges: peak RSS {:.1} MiB",
        rss as f64 / MIB as f64
    );
    assert_under_64_mib(rss);
    std::fs::remove_file(&out).unwrap();

    let over = bmap(MAX_RANGES + 1);
    std::fs::File::create(&img)
        .unwrap()
        .set_len(over.image_size)
        .unwrap();
    let xml = over.to_xml();
    std::fs::write(&map, &xml).unwrap();
    let at = xml.match_indices("<Range").nth(MAX_RANGES).unwrap().0;
    let line = xml[..at].matches('\n').count() + 1;
    let o = write(&img, &out, &["--bmap", map.to_str().unwrap()]);
    assert_failed(
        &o,
        2,
        &[
            &format!(
                "error: bmap {}: line {line} (byte {at}): <Range>: more than {MAX_RANGES} block ranges, more than boardsmith accepts in a bmap",
                map.display()
            ),
            "write without it (--no-bmap)",
            "nothing was written",
        ],
    );
    assert!(!out.exists(), "the target was created");
}

/// A mapped range whose data does not match the bmap: the range is named, the source blamed.
#[test]
fn bmap_range_checksum_mismatch() {
    let (f, dir) = fixture_and_dir();
    let img = dir.path().join("sdcard.img");
    sparse_copy(&f.raw, &img);
    std::fs::copy(f.bmap_path(), dir.path().join("sdcard.img.bmap")).unwrap();
    let bmap = f.bmap();
    // Damage one byte in the last mapped range.
    let (index, r) = bmap.ranges.iter().enumerate().next_back().unwrap();
    let (start, end) = bmap.byte_range(r);
    let at = (start + end) / 2;
    let old = std::fs::read(&img).unwrap()[at as usize];
    write_at(&img, at, &[old ^ 0xff]);
    let out = dir.path().join("out.img");
    filled(&out, f.size, 0xaa);
    let o = write(&img, &out, &[]);
    let range = format!(
        "bmap range {} (blocks {}-{}, bytes {start}..{end})",
        index + 1,
        r.first,
        r.last
    );
    assert_failed(
        &o,
        1,
        &["the source is at fault", &range, "sdcard.img.bmap"],
    );
    assert!(zero_prefix(&out, 65536));
}

#[test]
fn wrong_sha256() {
    let (f, dir) = fixture_and_dir();
    let out = dir.path().join("out.img");
    let wrong = "0123456789abcdef".repeat(4);
    let o = write(f.path(".zst"), &out, &["--sha256", &wrong]);
    assert_failed(
        &o,
        1,
        &[
            "the source is at fault",
            &format!("the image's sha256 is {}", f.sha256),
            &format!("--sha256 says {wrong}"),
            REMOVED,
        ],
    );
    assert!(!out.exists(), "a failed write left the file it created");
    // A malformed digest is a usage error.
    let o = write(f.path(".zst"), &out, &["--sha256", "abc"]);
    assert_failed(&o, 2, &["--sha256", "not a sha256 digest"]);
}

#[test]
fn target_too_small() {
    require_root("loop devices");
    let (f, dir) = fixture_and_dir();
    let backing = dir.path().join("small");
    filled(&backing, 16 << 20, 0x5c);
    let before = sha256sum(&backing);
    let lo = Loop::attach(&backing, false);
    let o = write(f.path(".xz"), &lo.dev, &["--yes"]);
    assert_failed(
        &o,
        1,
        &[
            "holds 16 MiB",
            &format!("needs 40 MiB ({} bytes)", f.size),
            "nothing was written",
        ],
    );
    drop(lo);
    assert_eq!(sha256sum(&backing), before, "the device was changed");
}

#[test]
fn mounted_target_refused() {
    require_root("loop devices and mounts");
    let (f, dir) = fixture_and_dir();
    let mnt = dir.path().join("mnt");
    let (lo, m) = mounted_ext4(&dir.path().join("disk"), "64M", &mnt);
    std::fs::write(mnt.join("keep.txt"), "still here").unwrap();
    let o = write(f.path(""), &lo.dev, &["--yes"]);
    assert_failed(
        &o,
        1,
        &[
            "is in use",
            &mnt.display().to_string(),
            "unmount it",
            "nothing was written",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("keep.txt")).unwrap(),
        "still here"
    );
    drop(m);
    drop(lo);
}

/// Writes the raw image, without --yes, to a loop device over a blank 64 MiB file `disk` in the
/// returned directory.
fn write_to_a_fixed_disk(why: &str) -> (tempfile::TempDir, Loop, Output) {
    require_root(why);
    let (f, dir) = fixture_and_dir();
    let backing = dir.path().join("disk");
    blank_disk(&backing, "64M", false);
    let lo = Loop::attach(&backing, false);
    let o = write(f.path(""), &lo.dev, &[]);
    (dir, lo, o)
}

#[test]
fn non_removable_disk_needs_yes() {
    let (_dir, _lo, o) = write_to_a_fixed_disk("loop devices");
    assert_failed(
        &o,
        2,
        &["is not a removable disk", "--yes", "nothing was written"],
    );
}

/// The loop device's kernel-assigned size and sysfs view are real; its message names what it is
/// and why it needs --yes (a loop device is fixed media).
#[test]
fn non_removable_disk_message_says_why() {
    let (dir, lo, o) = write_to_a_fixed_disk("loop devices, mounts");
    let backing = dir.path().join("disk");
    assert_failed(
        &o,
        2,
        &[&format!(
            "error: {dev} (loop device backed by {b}, 64 MiB, 67108864 bytes) is not a removable disk: the kernel reports fixed media (sysfs removable = 0), as for internal disks and USB hard disks; pass --yes if you are sure it may be overwritten\nnothing was written to {dev}\n",
            dev = lo.dev,
            b = backing.display()
        )],
    );
}

/// `write loop.bin /dev/loopN` where loopN is backed by loop.bin: refused before anything is
/// written (it used to zero the source's head and then report "verified").
#[test]
fn loop_device_backed_by_the_source_is_refused() {
    require_root("loop devices, mounts");
    let (f, dir) = fixture_and_dir();
    let src = dir.path().join("loop.bin");
    run(
        "cp",
        &[&f.raw.display().to_string(), &src.display().to_string()],
    );
    let lo = Loop::attach(&src, false);
    let o = write(&src, &lo.dev, &["--yes"]);
    assert_failed(
        &o,
        2,
        &[&format!(
            "error: {dev} is a loop device backed by {s}, which is the source image {s}: writing it would overwrite the image while reading it; detach it (losetup -d {dev}) or write to another target\nnothing was written to {dev}\n",
            dev = lo.dev,
            s = src.display()
        )],
    );
    // The device itself as the source.
    let o = bin()
        .args(["write", &lo.dev, &lo.dev, "--yes"])
        .output()
        .unwrap();
    assert_failed(
        &o,
        2,
        &[&format!(
            "error: {dev} and the source {dev} are the same device or overlap (one is a partition of the other, or lies on it): writing would overwrite the image while reading it\nnothing was written to {dev}\n",
            dev = lo.dev
        )],
    );
    drop(lo);
    assert_eq!(sha256sum(&src), f.sha256, "the source was changed");
}

/// The source lives on a filesystem on the target: refused as such (not only as "in use"), and
/// also when the filesystem is one level down (an image file on the target, loop-mounted).
#[test]
fn target_holding_the_source_is_refused() {
    require_root("loop devices, mounts");
    let (f, dir) = fixture_and_dir();
    let disk = dir.path().join("disk");
    let mnt = dir.path().join("mnt");
    let (lo, m) = mounted_ext4(&disk, "128M", &mnt);
    let src = mnt.join("sdcard.img.xz");
    std::fs::copy(f.path(".xz"), &src).unwrap();
    let before = sha256sum(&src);
    let o = write(&src, &lo.dev, &["--yes"]);
    assert_failed(
        &o,
        2,
        &[&format!(
            "error: {dev} (loop device backed by {d}, 128 MiB, 134217728 bytes) holds the source image {s}: its filesystem (mounted at {m}) lies on {dev}; writing would destroy the image while reading it; copy the image to another disk first\nnothing was written to {dev}\n",
            dev = lo.dev,
            d = disk.display(),
            s = src.display(),
            m = mnt.display()
        )],
    );
    // One level down: inner.img on the target's filesystem holds another filesystem, loop-mounted,
    // that holds the source.
    let inner_mnt = dir.path().join("inner");
    let (inner_lo, inner_m) = mounted_ext4(&mnt.join("inner.img"), "64M", &inner_mnt);
    let deep = inner_mnt.join("sdcard.img.xz");
    std::fs::copy(f.path(".xz"), &deep).unwrap();
    let o = write(&deep, &lo.dev, &["--yes"]);
    assert_failed(
        &o,
        2,
        &[
            &format!("holds the source image {}", deep.display()),
            &format!("(mounted at {}) lies on {}", inner_mnt.display(), lo.dev),
            &format!("nothing was written to {}", lo.dev),
        ],
    );
    drop(inner_m);
    drop(inner_lo);
    assert_eq!(sha256sum(&src), before, "the source was changed");
    drop(m);
    drop(lo);
    // The target's filesystem is intact (e2fsck is independent of us).
    run("e2fsck", &["-fn", &disk.display().to_string()]);
}

/// `boardsmith write - TARGET` with `input` on standard input.
fn write_stdin(input: &Path, target: &Path) -> Command {
    let mut c = boardsmith();
    c.args(["write", "-"])
        .arg(target)
        .stdin(std::fs::File::open(input).unwrap());
    c
}

/// The target is the source file: by the same name, through a symlink, or as standard input
/// redirected from it. Refused by identity (device and inode), the file unchanged.
#[test]
fn the_source_itself_is_refused() {
    let (f, dir) = fixture_and_dir();
    let img = dir.path().join("image.img");
    std::fs::copy(&f.raw, &img).unwrap();
    let link = dir.path().join("link.img");
    std::os::unix::fs::symlink(&img, &link).unwrap();
    for target in [&img, &link] {
        let o = write(&img, target, &[]);
        let t = target.display();
        assert_failed(
            &o,
            2,
            &[&format!(
                "error: {t} is the source image itself; write to another file or a device\nnothing was written to {t}\n"
            )],
        );
    }
    let o = write_stdin(&img, &img).output().unwrap();
    let t = img.display();
    assert_failed(&o, 2, &[&format!("error: {t} is the source image itself")]);
    assert_eq!(sha256sum(&img), f.sha256);
}

/// The target path is resolved once: strace (on the main thread, where the target is opened)
/// shows a single open of it by name, with O_PATH; every descriptor used for checks, writing,
/// reading back and growing is reopened through /proc/self/fd from that one.
#[test]
fn the_target_is_opened_once() {
    require_root("loop devices, mounts");
    let (f, dir) = fixture_and_dir();
    let backing = dir.path().join("card");
    filled(&backing, f.size + (4 << 20), 0xaa);
    let lo = Loop::attach(&backing, false);
    let file_target = dir.path().join("out.img");
    filled(&file_target, 1 << 20, 0x55);
    for target in [lo.dev.clone(), file_target.display().to_string()] {
        let trace = dir.path().join("trace");
        let o = crate::support::clean_env(&mut std::process::Command::new("strace"))
            .args(["-qq", "-e", "trace=open,openat,openat2", "-o"])
            .arg(&trace)
            .arg(bin_path())
            .arg("write")
            .arg(f.path(".xz"))
            .args([&target, "--yes", "--grow"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = std::fs::read_to_string(&trace).unwrap();
        let by_name: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(&format!("\"{target}\"")))
            .collect();
        assert_eq!(
            by_name.len(),
            1,
            "{target} opened by name:\n{}",
            by_name.join("\n")
        );
        assert!(by_name[0].contains("O_PATH"), "{}", by_name[0]);
        let reopened: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("\"/proc/self/fd/"))
            .collect();
        // Checks (devices), writing (files: the O_PATH descriptor reopened read-write), the
        // exclusive descriptor (devices) and O_DIRECT.
        assert!(reopened.len() >= 2, "{text}");
    }
    // The card was written and grown; the file (as large as the image) had nothing to grow.
    run("sfdisk", &["--verify", &lo.dev]);
    assert_eq!(sha256sum(&file_target), f.sha256);
}

/// `--size` the file cannot have: refused before the existing file is touched (it used to be
/// emptied first, and the message then said nothing was written).
#[test]
fn impossible_size_leaves_the_existing_file_unchanged() {
    let (f, dir) = fixture_and_dir();
    let existing = dir.path().join("existing.img");
    std::fs::write(&existing, pseudo_random(5, 3 << 20)).unwrap();
    let before = sha256sum(&existing);
    let o = write(f.path(""), &existing, &["--size", "100000T"]);
    let e = existing.display();
    assert_failed(
        &o,
        2,
        &[&format!(
            "error: cannot size {e} to 100000 TiB (109951162777600000 bytes): File too large (os error 27); the file was not changed\nnothing was written to {e}\n"
        )],
    );
    assert_eq!(sha256sum(&existing), before);
    assert_eq!(std::fs::metadata(&existing).unwrap().len(), 3 << 20);
}

/// A gzip bomb (8 KiB expanding to 8 MiB of zeros, no size in its header) with `--size 1M`:
/// stops at the cap, naming it; the file never grows past it.
#[test]
fn size_is_a_hard_cap_for_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = gzip_bomb(dir.path());
    assert!(std::fs::metadata(&bomb).unwrap().len() < 16 << 10);
    let out = dir.path().join("out.img");
    // A file that was there: it stays, at the cap (one the write created would be removed).
    filled(&out, 4096, 0xaa);
    let o = write(&bomb, &out, &["--size", "1M"]);
    let t = out.display();
    assert_failed(
        &o,
        1,
        &[&format!(
            "error: the image goes on past 1 MiB (1048576 bytes), the limit for {t} (--size 1 MiB); stopped there\n{t} is incomplete: its first 64 KiB are zeroed"
        )],
    );
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 1 << 20);
    assert!(allocated_bytes(&out) <= 1 << 20);
}

/// Without --size the free space of the target's filesystem is the cap: a stream is stopped at
/// it, and an image known to be larger is refused before a file is even created.
#[test]
fn free_space_is_the_cap_without_size() {
    require_root("loop devices, mounts");
    let (f, dir) = fixture_and_dir();
    let small = dir.path().join("small");
    let _m = Mount::tmpfs(&small, "4m");
    let bomb = gzip_bomb(dir.path());
    let out = small.join("out.img");
    let o = write(&bomb, &out, &[]);
    let t = out.display();
    assert_failed(
        &o,
        1,
        &[&format!(
            "error: the image goes on past 4 MiB (4194304 bytes), the limit for {t} (the free space of its filesystem; give --size to write a sparse file larger than that); stopped there\n{t} {REMOVED}"
        )],
    );
    assert!(!out.exists(), "a failed write left the file it created");
    // Known to be 40 MiB: refused up front, and no file is left behind.
    let o = write(f.path(".xz"), &out, &[]);
    assert_failed(
        &o,
        2,
        &[&format!(
            "error: the image needs 40 MiB ({} bytes), more than the limit for {t}: 4 MiB (4194304 bytes, the free space of its filesystem; give --size to write a sparse file larger than that)\nnothing was written to {t}\n",
            f.size
        )],
    );
    assert!(!out.exists(), "a new file was left behind");
}

/// SIGTERM mid-write: exit 143 (128 + 15), the signal named, the target's state told.
#[test]
fn sigterm_mid_write_exits_143() {
    let (f, dir) = fixture_and_dir();
    let target = dir.path().join("card.img");
    filled(&target, f.size, 0xaa);
    let t = target.display().to_string();
    let stderr = signalled_mid_write(&t, &[], libc::SIGTERM);
    assert!(
        stderr.contains(&format!(
            "error: interrupted by SIGTERM\n{t} is incomplete: its first 64 KiB are zeroed and were not written, so it holds no partition table and will not boot; write the image again\n"
        )),
        "{stderr}"
    );
    assert!(zero_prefix(&target, 65536));
}

/// Starts `boardsmith write - TARGET --progress json` reading from a pipe, feeds it `feed` bytes
/// of the raw image and waits until it reports (JSON lines on stderr) at least `done` bytes of the
/// image processed.
fn start_stdin_writer(
    target: &str,
    extra: &[&str],
    feed: usize,
    done: u64,
) -> (
    Killed,
    std::process::ChildStdin,
    BufReader<std::process::ChildStderr>,
) {
    let f = fixture();
    let mut child = boardsmith()
        .args(["write", "-", target, "--progress", "json", "--no-bmap"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let image = std::fs::read(&f.raw).unwrap();
    stdin.write_all(&image[..feed]).unwrap();
    stdin.flush().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            lines.read_line(&mut line).unwrap() > 0,
            "writer ended early"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["event"] == "progress" && v["done"].as_u64().unwrap_or(0) >= done {
            break;
        }
    }
    (Killed(child), stdin, lines)
}

/// Sends `sig` to a [`start_stdin_writer`] to `target` once 8 of the 16 MiB fed are written; asserts
/// the exit status 128 + `sig` and returns the rest of its standard error.
fn signalled_mid_write(target: &str, extra: &[&str], sig: i32) -> String {
    let (mut w, _stdin, mut rest) = start_stdin_writer(target, extra, 16 << 20, 8 << 20);
    // SAFETY: kill sends a signal to our own child.
    unsafe { libc::kill(w.0.id() as i32, sig) };
    let status = w.0.wait().unwrap();
    let mut stderr = String::new();
    // The rest of stderr, after the progress lines read so far.
    std::io::Read::read_to_string(&mut rest, &mut stderr).unwrap();
    assert_eq!(status.code(), Some(128 + sig), "{stderr}");
    stderr
}

#[test]
fn two_writers_second_refused() {
    let (f, dir) = fixture_and_dir();
    let target = dir.path().join("card.img");
    let t = target.display().to_string();
    let (mut first, stdin, _out) = start_stdin_writer(&t, &[], 8 << 20, 1 << 20);
    let pid = first.0.id();
    let o = write(f.path(""), &target, &[]);
    assert_failed(
        &o,
        1,
        &[
            &format!("{t} is being written by another process (pid {pid}"),
            "nothing was written",
        ],
    );
    // The first writer is undisturbed: let it finish.
    let image = std::fs::read(&f.raw).unwrap();
    let mut stdin = stdin;
    stdin.write_all(&image[8 << 20..]).unwrap();
    drop(stdin);
    let status = first.0.wait().unwrap();
    assert!(status.success());
    assert_eq!(sha256sum(&target), f.sha256);
}

/// Ctrl-C mid-write: exit 130, the state is told, and the first 64 KiB of the card are not the
/// image's (zeroed, never written) while later data is.
#[test]
fn interrupted_mid_write() {
    let (f, dir) = fixture_and_dir();
    let backing = dir.path().join("card");
    filled(&backing, f.size, 0xaa);
    let lo = is_root().then(|| Loop::attach(&backing, false));
    let target = lo
        .as_ref()
        .map_or(backing.display().to_string(), |l| l.dev.clone());
    let stderr = signalled_mid_write(&target, &["--yes"], libc::SIGINT);
    support::assert_mentions(
        &stderr,
        "stderr",
        &[
            "interrupted by SIGINT",
            "first 64 KiB are zeroed and were not written",
            "will not boot",
        ],
    );
    assert!(!stderr.contains("wrote "));
    drop(lo);
    assert!(
        zero_prefix(&backing, 65536),
        "the first 64 KiB were written"
    );
    // Data after the head did land (the write was really under way).
    let image = std::fs::read(&f.raw).unwrap();
    let card = std::fs::read(&backing).unwrap();
    assert_eq!(card[1 << 20..2 << 20], image[1 << 20..2 << 20]);
}

/// A fake card (tests/fixtures/lying_disk.py in `mode`) mounted under `dir`; unmounted and
/// stopped when dropped. Fails the test when FUSE is unavailable (not root, no /dev/fuse).
fn lying_disk(dir: &Path, mode: &[String]) -> (Killed, Mount, PathBuf) {
    require_root("a FUSE mount");
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: load the fuse module (modprobe fuse)"
    );
    let mnt = dir.join("fake-card");
    std::fs::create_dir_all(&mnt).unwrap();
    let fs = Killed(
        Command::new("/usr/bin/python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lying_disk.py"))
            .arg(&mnt)
            .args(mode)
            .spawn()
            .unwrap(),
    );
    let unmount = Mount { dir: mnt.clone() };
    let mut tries = 0;
    while !run("mount", &[]).contains(&mnt.display().to_string()) {
        tries += 1;
        assert!(tries < 100, "the FUSE filesystem did not mount");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Bindings drop in reverse: the mount goes before its server.
    (fs, unmount, mnt.join("disk.img"))
}

/// A target that acknowledges writes but drops some (a fake card, here a FUSE filesystem): the
/// read-back, with the page cache bypassed, names the first bad byte and blames the target.
#[test]
fn read_back_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    // Drops writes to bytes [3 MiB, 3 MiB + 4 KiB) of its file.
    let drop_at: u64 = 3 << 20;
    let mode = [
        "drop".to_string(),
        drop_at.to_string(),
        (drop_at + 4096).to_string(),
    ];
    let (_fs, _unmount, target) = lying_disk(dir.path(), &mode);
    // An image whose byte at 3 MiB is not zero.
    let img = dir.path().join("data.img");
    let mut data = pseudo_random(99, 8 << 20);
    data[drop_at as usize] = 0x5a;
    std::fs::write(&img, &data).unwrap();
    let o = write(&img, &target, &[]);
    assert_failed(
        &o,
        1,
        &[
            "the target is at fault",
            "read-back mismatch at byte 3145728 (0x300000)",
            "holds 0x00 where the image has 0x5a",
            "first 64 KiB are zeroed",
        ],
    );
}

/// A fake-capacity card: 6 MiB of cells sold as more, so writing bytes from 6 MiB on overwrites
/// the first ones. The read-back that follows the writer may see each window before it is
/// overwritten; the probes re-read after the flush must catch it, naming the first byte that
/// changed (a window of the first MiB, behind the 64 KiB head).
#[test]
fn fake_capacity_card_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let cells: usize = 6 << 20;
    let (_fs, _unmount, target) = lying_disk(dir.path(), &["wrap".into(), cells.to_string()]);
    let img = dir.path().join("data.img");
    let data = pseudo_random(7, 8 << 20);
    std::fs::write(&img, &data).unwrap();
    let first_bad = (65536..2 << 20)
        .find(|&i| data[i] != data[i + cells])
        .unwrap();
    let o = write(&img, &target, &[]);
    assert_failed(
        &o,
        1,
        &[
            "the target is at fault",
            &format!("read-back mismatch at byte {first_bad} "),
            &format!(
                "holds 0x{:02x} where the image has 0x{:02x}",
                data[first_bad + cells],
                data[first_bad]
            ),
        ],
    );
}

#[test]
fn malformed_bmap_xml() {
    let (f, dir) = fixture_and_dir();
    let good = std::fs::read_to_string(f.bmap_path()).unwrap();
    let out = dir.path().join("out.img");
    for (name, text, needle) in [
        (
            "truncated.bmap",
            good[..good.len() / 2].to_string(),
            "truncated?",
        ),
        (
            "cut-in-a-tag.bmap",
            good[..good.find("<BlockMap>").unwrap() + 4].to_string(),
            "truncated?",
        ),
        (
            "garbage.bmap",
            good.replacen("<BlockMap>", "<BlockMap <<", 1),
            "line ",
        ),
        (
            "edited.bmap",
            good.replacen("</ImageSize>", " </ImageSize>", 1),
            "checksum does not match",
        ),
        ("empty.bmap", String::new(), "truncated?"),
    ] {
        let bmap = dir.path().join(name);
        std::fs::write(&bmap, text).unwrap();
        let o = bin()
            .arg("write")
            .arg(f.path(""))
            .arg(&out)
            .arg("--bmap")
            .arg(&bmap)
            .output()
            .unwrap();
        assert_failed(&o, 2, &[name, needle, "nothing was written"]);
    }
    assert!(!out.exists() || std::fs::metadata(&out).unwrap().len() == 0);
}

// ---- Bounded memory whatever the source declares (issue 14) ----

/// Runs `boardsmith write SRC OUT EXTRA...` (stdin from `stdin`, if given) and returns its output
/// and peak resident memory in bytes: the `ru_maxrss` of wait4's rusage (`/usr/bin/time` is not installed), taken by a
/// small python3 parent. Spawned straight from this test process, the child would report this
/// process's peak instead: Linux keeps the peak of the address space an exec replaces.
fn measured(
    src: impl AsRef<OsStr>,
    out: &Path,
    extra: &[&str],
    stdin: Option<&Path>,
) -> (Output, u64) {
    const PARENT: &str = "import os, sys\n\
pid = os.fork()\n\
if pid == 0:\n    os.execv(sys.argv[2], sys.argv[2:])\n\
_, status, usage = os.wait4(pid, 0)\n\
open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n\
sys.exit(os.waitstatus_to_exitcode(status) % 256)\n";
    let rss_file = tempfile::NamedTempFile::new().unwrap();
    let output = crate::support::clean_env(&mut Command::new("python3"))
        .arg("-c")
        .arg(PARENT)
        .arg(rss_file.path())
        .arg(bin_path())
        .arg("write")
        .arg(src)
        .arg(out)
        .args(extra)
        .stdin(match stdin {
            Some(p) => Stdio::from(std::fs::File::open(p).unwrap()),
            None => Stdio::null(),
        })
        .output()
        .unwrap();
    let kib: u64 = std::fs::read_to_string(rss_file.path())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (output, kib * 1024)
}

const MIB: u64 = 1 << 20;

fn assert_under_64_mib(rss: u64) {
    assert!(rss < 64 * MIB, "peak RSS {} MiB", rss / MIB);
}

/// `src` (`ext` names it) writes to `out` without a bmap, with a peak RSS under 64 MiB, and `out`
/// then has the sha256 `want`.
fn writes_within_64_mib(ext: &str, src: &Path, out: &Path, want: &str) {
    let (o, rss) = measured(src, out, &["--no-bmap"], None);
    assert!(
        o.status.success(),
        "{ext}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("{ext}: peak RSS {:.1} MiB", rss as f64 / MIB as f64);
    assert!(rss < 64 * MIB, "{ext}: peak RSS {} MiB", rss / MIB);
    assert_eq!(sha256sum(out), want, "{ext}");
}

/// A `zstd --long=31` frame (made by the real zstd from 64 MiB of zeros, about 2 KB): its header
/// asks for a 2 GiB window, which the writer used to grant (2.1 GB of RAM for a 91 KB file).
fn long31(dir: &Path) -> PathBuf {
    let src = dir.join("long31.img.zst");
    sh(&format!(
        "head -c 64M /dev/zero | zstd -q --long=31 -c > {}",
        src.display()
    ));
    // zstd itself reads the same window from the header.
    let listing = sh(&format!("zstd -lv {} 2>&1", src.display()));
    assert!(listing.contains("2147483648"), "{listing}");
    src
}

/// The window is refused from the frame header, before anything is written, naming the window
/// and the opt-in; the process stays far under 64 MiB.
#[test]
fn zstd_long_window_is_refused_within_64_mib() {
    let dir = tempfile::tempdir().unwrap();
    let src = long31(dir.path());
    let out = dir.path().join("out.img");
    let (o, rss) = measured(&src, &out, &["--no-bmap"], None);
    assert_failed(
        &o,
        2,
        &[
            &format!(
                "{}: the zstd data needs a 2 GiB window (2147483648 bytes) to decode, more than the 16 MiB allowed by default (it keeps the writer under 64 MiB)",
                src.display()
            ),
            "if you trust this image, allow it with --max-window 2GiB",
            "nothing was written",
        ],
    );
    assert_under_64_mib(rss);
    assert!(!out.exists() || std::fs::metadata(&out).unwrap().len() == 0);
}

/// With `--max-window 2GiB` the same file decodes, within the stated bound: 48 MiB (the pool and the
/// program) plus the window the decoder fills, at most the 64 MiB of image. A smaller opt-in is
/// still refused, naming it.
#[test]
fn max_window_opt_in_decodes_within_the_stated_bound() {
    let dir = tempfile::tempdir().unwrap();
    let src = long31(dir.path());
    let out = dir.path().join("out.img");
    let (o, rss) = measured(&src, &out, &["--no-bmap", "--max-window", "2GiB"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 64 * MIB);
    assert_eq!(
        sha256sum(&out),
        sh("head -c 64M /dev/zero | sha256sum")
            .split_whitespace()
            .next()
            .unwrap()
    );
    assert!(rss < 48 * MIB + 64 * MIB, "peak RSS {} MiB", rss / MIB);
    let (o, _) = measured(
        &src,
        &dir.path().join("out2.img"),
        &["--max-window", "1GiB"],
        None,
    );
    assert_failed(
        &o,
        2,
        &[
            "more than the 1 GiB that --max-window allows",
            "--max-window 2GiB",
        ],
    );
}

/// `format`'s data in `src` declares a 256 MiB dictionary. Writing it to `out` is refused naming the
/// source (then `file_at`), the dictionary and the opt-in, before anything is written and within
/// 64 MiB; from standard input (`--size 1M`) naming it (then `stdin_at`) and `stdin_also`. Returns
/// the peak RSS of the latter.
fn dictionary_refused(
    src: &Path,
    out: &Path,
    format: &str,
    file_at: &str,
    stdin_at: &str,
    stdin_also: &str,
) -> u64 {
    let need = format!(
        "the {format} data needs a 256 MiB dictionary (268435456 bytes) to decode, more than the 16 MiB allowed by default"
    );
    let (o, rss) = measured(src, out, &[], None);
    assert_failed(
        &o,
        2,
        &[
            &format!("{}{file_at}: {need}", src.display()),
            "--max-window 256MiB",
            "nothing was written",
        ],
    );
    assert_under_64_mib(rss);
    let (o, rss) = measured("-", out, &["--size", "1M"], Some(src));
    assert_failed(
        &o,
        2,
        &[&format!("standard input{stdin_at}: {need}"), stdin_also],
    );
    rss
}

/// An xz file whose block declares a 256 MiB dictionary (made by the real xz): from a file, refused
/// before anything is written (the block headers are read through the index); from a pipe, refused
/// by liblzma's memory limit when the block starts. Both name the dictionary and the opt-in, and
/// stay under 64 MiB.
#[test]
fn xz_dictionary_over_the_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("dict.img.xz");
    let data = pseudo_random(3, 1 << 20);
    std::fs::write(dir.path().join("dict.img"), &data).unwrap();
    sh(&format!(
        "xz --lzma2=preset=1,dict=256MiB -c {} > {}",
        dir.path().join("dict.img").display(),
        src.display()
    ));
    assert!(sh(&format!("xz -lvv {}", src.display())).contains("Memory needed:     257 MiB"));
    let out = dir.path().join("out.img");
    let rss = dictionary_refused(
        &src,
        &out,
        "xz",
        " (xz block 1)",
        " (after 0 bytes of the image)",
        "--max-window 256MiB",
    );
    assert_under_64_mib(rss);
    // Allowed, it decodes to the same bytes.
    ok_stderr(&write(&src, &out, &["--max-window", "256MiB"]));
    assert_eq!(std::fs::read(&out).unwrap(), data);
}

/// A 7z archive whose LZMA2 coder declares a 256 MiB dictionary (made by the real 7z): refused from
/// its headers, before decoding, from a file and from standard input (after spooling).
#[test]
fn sevenz_dictionary_over_the_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("dict.7z");
    sh(&format!(
        "head -c 1M /dev/zero | 7z a -bso0 -bsp0 -si -mx=1 -m0=lzma2:d=256m {}",
        src.display()
    ));
    assert!(sh(&format!("7z l -slt {}", src.display())).contains("Method = LZMA2:28"));
    let out = dir.path().join("out.img");
    dictionary_refused(&src, &out, "7z", "", "", "nothing was written");
}

/// `--max-window` where no decoder has a window (raw, gzip, bzip2) is an error, not ignored.
#[test]
fn max_window_without_a_window_is_an_error() {
    let (f, dir) = fixture_and_dir();
    for ext in ["", ".gz", ".bz2"] {
        let o = bin()
            .arg("write")
            .arg(f.path(ext))
            .arg(dir.path().join("out.img"))
            .args(["--max-window", "256MiB"])
            .output()
            .unwrap();
        let format = match ext {
            "" => "raw",
            ".gz" => "gzip",
            _ => "bzip2",
        };
        assert_failed(
            &o,
            2,
            &[
                &format!(
                    "--max-window has no effect here: {} holds {format} data, whose decoder has no window",
                    f.path(ext).display()
                ),
                "nothing was written",
            ],
        );
    }
    let o = bin()
        .arg("write")
        .arg(f.path(".zst"))
        .arg(dir.path().join("out.img"))
        .args(["--max-window", "300MiB"])
        .output()
        .unwrap();
    assert_failed(
        &o,
        2,
        &["--max-window: 314572800 bytes is not a power of two from 1 MiB to 2 GiB"],
    );
}

/// The largest window or dictionary accepted by default (16 MiB: `xz -7`, `7z -mx5`, a zstd window
/// of 2^24) keeps the writer under 64 MiB: the image repeats 16 MiB of random bytes, so each
/// decoder fills its whole window. A 32 MiB dictionary (`xz -8`) is refused by default.
#[test]
fn largest_default_window_writes_within_64_mib() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    let i = img.display();
    sh(&format!(
        "head -c 16M /dev/urandom > {i}.part && cat {i}.part {i}.part {i}.part {i}.part > {i}"
    ));
    let want = sha256sum(&img);
    for (ext, cmd) in [
        ("xz", format!("xz -7 -T1 -c {i} > {i}.xz")),
        (
            "zst",
            format!("zstd -q -19 --zstd=wlog=24 -c {i} > {i}.zst"),
        ),
        ("7z", format!("7z a -bd -mx5 -md=16m {i}.7z {i} >/dev/null")),
    ] {
        sh(&cmd);
        let src = dir.path().join(format!("img.{ext}"));
        let out = dir.path().join(format!("out-{ext}.img"));
        writes_within_64_mib(ext, &src, &out, &want);
    }
    sh(&format!("xz -8 -T1 -c {i} > {i}.8.xz"));
    let (o, rss) = measured(
        dir.path().join("img.8.xz"),
        &dir.path().join("out-8.img"),
        &["--no-bmap"],
        None,
    );
    assert_failed(
        &o,
        2,
        &[
            "the xz data needs a 32 MiB dictionary (33554432 bytes) to decode, more than the 16 MiB allowed by default",
            "--max-window 32MiB",
        ],
    );
    assert_under_64_mib(rss);
}

/// Every format of the round-trip fixture (xz in several blocks decoded in parallel, 7z with
/// dictionary resets, and the streams) writes with a peak RSS under 64 MiB, and the target holds the
/// image.
#[test]
fn every_format_writes_within_64_mib() {
    let (f, dir) = fixture_and_dir();
    for ext in FORMATS {
        let out = dir.path().join(format!("out{ext}.img"));
        writes_within_64_mib(ext, &f.path(ext), &out, &f.sha256);
        std::fs::remove_file(&out).unwrap();
    }
}

/// A 7z on standard input is copied to a temporary file first (7z needs random access). Ctrl-C and
/// SIGTERM stop the copy at once, even while a read waits on a quiet pipe: exit 130 and 143,
/// nothing written, nothing left. The copy used to ignore them until the input ended.
#[test]
fn interrupted_while_spooling_a_7z() {
    for (sig, code, name) in [
        (libc::SIGINT, 130, "SIGINT (Ctrl-C)"),
        (libc::SIGTERM, 143, "SIGTERM"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.img");
        let mut child = Killed(
            boardsmith()
                .args(["write", "-"])
                .arg(&out)
                .args(["--size", "10M"])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        // The 7z signature and a MiB of data, then the pipe stays open and quiet.
        let mut stdin = child.0.stdin.take().unwrap();
        stdin.write_all(b"7z\xbc\xaf\x27\x1c").unwrap();
        stdin.write_all(&pseudo_random(5, 1 << 20)).unwrap();
        stdin.flush().unwrap();
        let mut err = BufReader::new(child.0.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        assert!(
            line.contains("7z needs random access: copying standard input to a temporary file"),
            "{line}"
        );
        // SAFETY: kill sends a signal to our own child.
        unsafe { libc::kill(child.0.id() as i32, sig) };
        // It ends without more input (a watchdog, not a time limit: stuck means failed).
        let mut status = None;
        for _ in 0..400 {
            status = child.0.try_wait().unwrap();
            if status.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let status = status.unwrap_or_else(|| panic!("{name} did not stop the spooling writer"));
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
        assert_eq!(status.code(), Some(code), "{rest}");
        for n in [
            &format!(
                "error: interrupted by {name} while copying standard input to a temporary file"
            ),
            &format!("nothing was written to {}", out.display()),
        ] {
            assert!(rest.contains(n.as_str()), "lacks {n:?}: {rest}");
        }
        assert!(!out.exists());
        drop(stdin);
    }
}

/// The copy of a 7z from standard input or a URL is capped at what the temporary directory can
/// spare (here an 8 MiB tmpfs as TMPDIR): a larger archive fails saying so and what to do, exit 1,
/// and leaves nothing in the directory. A server that announces a larger Content-Length is refused
/// before the download.
#[test]
fn sevenz_spool_is_capped_by_the_temporary_directory() {
    assert!(is_root(), "needs root (mount -t tmpfs)");
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    let _unmount = Mount::tmpfs(&tmp, "8m");
    let web = dir.path().join("web");
    std::fs::create_dir(&web).unwrap();
    std::fs::write(web.join("big.img"), pseudo_random(9, 12 << 20)).unwrap();
    let src = web.join("big.7z");
    sh(&format!(
        "cd {} && 7z a -bso0 -bsp0 -mx=1 big.7z big.img",
        web.display()
    ));
    let out = dir.path().join("out.img");
    let expect = |o: &std::process::Output, what: &str| {
        assert_failed(
            o,
            1,
            &[
                &format!("{what}: the 7z archive is larger than the "),
                &format!(
                    "the temporary directory {} can take (its free space, less 5% of its filesystem kept free)",
                    tmp.display()
                ),
                "set TMPDIR to a directory with more room, or save the archive to a file and write that",
                "nothing was written",
            ],
        );
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
        assert!(!out.exists());
    };
    let o = write_stdin(&src, &out)
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    expect(&o, "standard input");
    let server = HttpServer::serve(&web);
    let url = format!("{}/big.7z", server.base);
    let o = boardsmith()
        .args(["write", &url])
        .arg(&out)
        .arg("--no-checksum")
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    expect(&o, &url);
    // With room, the same archive from standard input writes.
    ok_stderr(&write_stdin(&src, &out).output().unwrap());
    assert_eq!(sha256sum(&out), sha256sum(&web.join("big.img")));
}

/// A stream of zstd frames whose second frame asks for a window over the limit (the first frame's
/// header is checked before writing; later ones by the decoder as they come): the write stops there,
/// says where and how to allow it, and removes the target file it created.
#[test]
fn later_zstd_frame_over_the_window_limit() {
    let dir = tempfile::tempdir().unwrap();
    let long = long31(dir.path());
    let first = dir.path().join("first.img");
    std::fs::write(&first, pseudo_random(8, 3 << 20)).unwrap();
    let src = dir.path().join("frames.img.zst");
    sh(&format!(
        "zstd -q -c {} > {src}; cat {} >> {src}",
        first.display(),
        long.display(),
        src = src.display()
    ));
    let out = dir.path().join("out.img");
    let (o, rss) = measured(&src, &out, &[], None);
    assert_failed(
        &o,
        2,
        &[
            &format!(
                "{} (after 3145728 bytes of the image): the zstd data needs a window to decode larger than the 16 MiB allowed by default (it keeps the writer under 64 MiB)",
                src.display()
            ),
            "allow more with --max-window (a power of two up to 2GiB)",
            REMOVED,
        ],
    );
    assert!(!out.exists(), "a failed write left the file it created");
    assert_under_64_mib(rss);
}
