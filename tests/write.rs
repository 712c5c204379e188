//! `boardsmith write` round trips: every source format onto a file and onto a loop device, from a
//! file, standard input and a local HTTP server; bmaptool interop both ways. Results are checked
//! with sha256sum, bmaptool and the file's allocation (holes kept).

mod support;
mod writer_common;

use std::path::Path;

use writer_common::*;

fn write_ok(args: &[&str]) -> String {
    let out = bin().arg("write").args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "write {args:?} failed:\n{stderr}");
    assert!(stderr.contains("wrote "), "{stderr}");
    stderr
}

fn file_roundtrip(ext: &str) {
    let (f, dir) = fixture_and_dir();
    let out = dir.path().join("card.img");
    let stderr = write_ok(&[
        &f.path(ext).display().to_string(),
        &out.display().to_string(),
        "--sums",
    ]);
    assert_eq!(sha256sum(&out), f.sha256, "{ext}");
    assert!(stderr.contains(&f.sha256), "{stderr}");
    assert!(stderr.contains("every written byte read back"), "{stderr}");
    // The bmap beside the image was found (bmaptool's names: sdcard.img.xz.bmap, sdcard.img.bmap).
    assert!(stderr.contains("sdcard.img.bmap"), "{stderr}");
    // Holes kept: the copy allocates no more than the source does (plus the ext4 journal's zeros,
    // which the source allocates and the copy need not).
    assert!(
        allocated_bytes(&out) <= allocated_bytes(&f.raw),
        "{ext}: copy allocates {} bytes, source {}",
        allocated_bytes(&out),
        allocated_bytes(&f.raw)
    );
}

#[test]
fn raw_to_file() {
    file_roundtrip("");
}
#[test]
fn xz_to_file() {
    file_roundtrip(".xz");
}
#[test]
fn gz_to_file() {
    file_roundtrip(".gz");
}
#[test]
fn zst_to_file() {
    file_roundtrip(".zst");
}
#[test]
fn bz2_to_file() {
    file_roundtrip(".bz2");
}
#[test]
fn sevenz_to_file() {
    file_roundtrip(".7z");
}

/// A 7z from one compression thread has no dictionary reset to cut at: decoded as one stream, and the
/// multi-threaded fixture's archive (resets every MiB) gives the same image.
#[test]
fn sevenz_single_stream_and_threaded_archive_agree() {
    let (f, dir) = fixture_and_dir();
    let single = dir.path().join("single.img.7z");
    sh(&format!(
        "cd {} && 7z a -bso0 -bsp0 -mx=1 -mmt=1 {} sdcard.img",
        f.dir.display(),
        single.display()
    ));
    for (src, parallel) in [(single, false), (f.path(".7z"), true)] {
        let out = dir.path().join("card.img");
        let _ = std::fs::remove_file(&out);
        let stderr = write_ok(&[
            &src.display().to_string(),
            &out.display().to_string(),
            "--no-bmap",
        ]);
        assert_eq!(sha256sum(&out), f.sha256, "{}", src.display());
        // 40 MiB with a reset every MiB: cut into 8 MiB units.
        assert_eq!(
            stderr.contains("  decode   5 blocks decoded in parallel"),
            parallel,
            "{stderr}"
        );
    }
}

/// Every format onto a loop device whose backing file holds stale bytes (0xAA): without a bmap,
/// every byte of the image is written.
#[test]
fn every_format_to_a_loop_device() {
    require_root("loop devices");
    let (f, dir) = fixture_and_dir();
    let backing = dir.path().join("card");
    for ext in FORMATS {
        filled(&backing, f.size + (8 << 20), 0xaa);
        let lo = Loop::attach(&backing, false);
        let stderr = write_ok(&[
            &f.path(ext).display().to_string(),
            &lo.dev,
            "--no-bmap",
            "--yes",
        ]);
        assert!(stderr.contains("every written byte read back"), "{stderr}");
        assert_eq!(
            sha256_prefix(lo.path(), f.size),
            f.sha256,
            "{ext} on {}",
            lo.dev
        );
        drop(lo);
    }
}

/// With a bmap, a device gets only the mapped blocks: stale data elsewhere stays, mapped data is the
/// image's (bmaptool copy semantics).
#[test]
fn bmap_writes_only_mapped_blocks_to_a_device() {
    require_root("loop devices");
    let (f, dir) = fixture_and_dir();
    let backing = dir.path().join("card");
    filled(&backing, f.size, 0xaa);
    let lo = Loop::attach(&backing, false);
    let stderr = write_ok(&[&f.path(".zst").display().to_string(), &lo.dev, "--yes"]);
    assert!(stderr.contains("range checksums matched"), "{stderr}");
    drop(lo);
    // bmaptool's own copy onto a fresh zeroed file, then compare the mapped blocks: our target
    // must hold the image in every mapped block.
    let reference = dir.path().join("ref");
    bmaptool_copy(&f.bmap_path(), &f.raw, &reference);
    let bmap = f.bmap();
    let ours = std::fs::read(&backing).unwrap();
    let image = std::fs::read(&f.raw).unwrap();
    let mut stale = 0;
    let mut next = 0u64;
    for r in &bmap.ranges {
        let (s, e) = bmap.byte_range(r);
        assert!(
            ours[s as usize..e as usize] == image[s as usize..e as usize],
            "range {s}..{e}"
        );
        stale += ours[next as usize..s as usize]
            .iter()
            .filter(|&&b| b == 0xaa)
            .count();
        next = e;
    }
    assert!(stale > 0, "unmapped blocks were overwritten");
}

#[test]
fn from_standard_input() {
    let (f, dir) = fixture_and_dir();
    for ext in [".xz", ".zst", ".7z"] {
        let out = dir.path().join(format!("stdin{ext}.img"));
        let o = bin()
            .args([
                "write",
                "-",
                &out.display().to_string(),
                "--sha256",
                &f.sha256,
            ])
            .pipe_stdin(f.path(ext))
            .unwrap()
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{ext}: {stderr}");
        assert!(stderr.contains("(matches --sha256)"), "{stderr}");
        assert_eq!(sha256sum(&out), f.sha256);
    }
}

#[test]
fn from_a_local_http_server() {
    let f = fixture();
    let server = HttpServer::serve(&f.dir);
    let dir = tempfile::tempdir().unwrap();
    for ext in [".xz", ".gz", ".7z", ""] {
        let out = dir.path().join(format!("http{ext}.img"));
        let url = format!("{}/sdcard.img{ext}", server.base);
        // A bmap over plain http from the image's server cannot vouch for it: the sum is given.
        let stderr = write_ok(&[&url, &out.display().to_string(), "--sha256", &f.sha256]);
        assert_eq!(sha256sum(&out), f.sha256, "{url}");
        // The bmap is found next to the URL, as bmaptool does.
        assert!(
            stderr.contains(&format!("{}/sdcard.img.bmap", server.base)),
            "{stderr}"
        );
    }
    // A missing URL is an input error naming the status.
    let out = bin()
        .args(["write", &format!("{}/nope.img", server.base), "/dev/null"])
        .output()
        .unwrap();
    assert_failed(&out, 2, &["HTTP 404"]);
}

/// Format is recognised by content: an xz file named .img is decoded.
#[test]
fn format_by_magic_bytes() {
    let (f, dir) = fixture_and_dir();
    let disguised = dir.path().join("disguised.img");
    std::fs::copy(f.path(".xz"), &disguised).unwrap();
    let out = dir.path().join("out.img");
    write_ok(&[
        &disguised.display().to_string(),
        &out.display().to_string(),
        "--no-bmap",
    ]);
    assert_eq!(sha256sum(&out), f.sha256);
}

/// A sums file beside the source is used (IMAGE.sha256 naming the image, as build writes it).
#[test]
fn sums_file_beside_the_source() {
    let (f, dir) = fixture_and_dir();
    let src = dir.path().join("sdcard.img.gz");
    std::fs::copy(f.path(".gz"), &src).unwrap();
    std::fs::write(
        dir.path().join("sdcard.img.sha256"),
        format!("{}  sdcard.img\n", f.sha256),
    )
    .unwrap();
    let out = dir.path().join("out.img");
    let stderr = write_ok(&[&src.display().to_string(), &out.display().to_string()]);
    assert!(stderr.contains("(matches "), "{stderr}");
    assert!(stderr.contains("sdcard.img.sha256"), "{stderr}");
}

/// We consume `bmaptool create` output (2.0), and the 1.3 layout with SHA-1 checksums.
#[test]
fn consumes_bmaptool_create_output() {
    let (f, dir) = fixture_and_dir();
    let bmap = dir.path().join("made-by-bmaptool.bmap");
    run(
        "bmaptool",
        &[
            "create",
            "-o",
            &bmap.display().to_string(),
            &f.raw.display().to_string(),
        ],
    );
    let out = dir.path().join("out.img");
    let stderr = write_ok(&[
        &f.path(".xz").display().to_string(),
        &out.display().to_string(),
        "--bmap",
        &bmap.display().to_string(),
    ]);
    assert!(stderr.contains("made-by-bmaptool.bmap"), "{stderr}");
    assert_eq!(sha256sum(&out), f.sha256);
    // The same map in version 1.3 (SHA-1 ranges and BmapFileSHA1), as bmaptool 3.x still reads it.
    let v2 =
        boardsmith::image::bmap::Bmap::parse(&std::fs::read_to_string(&bmap).unwrap()).unwrap();
    let old = dir.path().join("v13.bmap");
    std::fs::write(&old, v1_3(&v2, &f.raw)).unwrap();
    let out2 = dir.path().join("out2.img");
    write_ok(&[
        &f.raw.display().to_string(),
        &out2.display().to_string(),
        "--bmap",
        &old.display().to_string(),
    ]);
    assert_eq!(sha256sum(&out2), f.sha256);
    // bmaptool itself accepts our 1.3 rendering: the format is right.
    let out3 = dir.path().join("out3.img");
    bmaptool_copy(&old, &f.raw, &out3);
    assert_eq!(sha256sum(&out3), f.sha256);
}

/// A bmap in the 1.3 layout with SHA-1 digests computed by sha1sum.
fn v1_3(b: &boardsmith::image::bmap::Bmap, img: &Path) -> String {
    use std::fmt::Write;
    let mut s = String::from("<?xml version=\"1.0\" ?>\n<bmap version=\"1.3\">\n");
    for (tag, value) in [
        ("ImageSize", b.image_size.to_string()),
        ("BlockSize", b.block_size.to_string()),
        ("BlocksCount", b.blocks_count().to_string()),
        ("MappedBlocksCount", b.mapped_blocks().to_string()),
        // Zeros while the file's own SHA-1 is computed, as bmaptool does.
        ("BmapFileSHA1", "0".repeat(40)),
    ] {
        let _ = writeln!(s, "    <{tag}> {value} </{tag}>");
    }
    s.push_str("    <BlockMap>\n");
    for r in &b.ranges {
        let (start, end) = b.byte_range(r);
        let sha1 = sh(&format!(
            "dd if={} iflag=skip_bytes,count_bytes skip={start} count={} bs=1M status=none | sha1sum",
            img.display(),
            end - start
        ));
        let _ = writeln!(
            s,
            "        <Range sha1=\"{}\"> {}-{} </Range>",
            sha1.split_whitespace().next().unwrap(),
            r.first,
            r.last
        );
    }
    s.push_str("    </BlockMap>\n</bmap>\n");
    let tmp = img.with_extension("v13.tmp");
    std::fs::write(&tmp, &s).unwrap();
    let digest = sh(&format!("sha1sum {}", tmp.display()));
    let _ = std::fs::remove_file(&tmp);
    s.replacen(
        &"0".repeat(40),
        digest.split_whitespace().next().unwrap(),
        1,
    )
}

/// `bmaptool copy` consumes the bmap `boardsmith build` writes, and our writer consumes the build's
/// bmap and sums files.
#[test]
fn bmaptool_copy_consumes_our_bmap() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    let k = "6.1.0-9-arm64";
    std::fs::create_dir_all(root.join("boot")).unwrap();
    std::fs::create_dir_all(root.join(format!("usr/lib/linux-image-{k}/arm"))).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join(format!("boot/vmlinuz-{k}")),
        pseudo_random(1, 3 << 20),
    )
    .unwrap();
    std::fs::write(
        root.join(format!("boot/initrd.img-{k}")),
        pseudo_random(2, 1 << 20),
    )
    .unwrap();
    std::fs::write(
        root.join(format!(
            "usr/lib/linux-image-{k}/arm/foundation-v8-gicv3-psci.dtb"
        )),
        pseudo_random(3, 20_000),
    )
    .unwrap();
    std::fs::write(root.join("etc/hostname"), "interop\n").unwrap();
    let out = dir.path().join("out");
    bin()
        .args([
            "build",
            "armv8-foundation",
            "--progress",
            "none",
            "--rootfs",
        ])
        .arg(&root)
        .arg("-o")
        .arg(&out)
        .assert()
        .success();
    let img = out.join("armv8-foundation.img");
    let expected = std::fs::read_to_string(out.join("armv8-foundation.img.sha256")).unwrap();
    let expected = expected.split_whitespace().next().unwrap().to_string();
    let copy = dir.path().join("bmaptool-copy.img");
    bmaptool_copy(&out.join("armv8-foundation.img.bmap"), &img, &copy);
    assert_eq!(sha256sum(&copy), expected);
    let ours = dir.path().join("ours.img");
    let stderr = write_ok(&[&img.display().to_string(), &ours.display().to_string()]);
    assert!(stderr.contains("armv8-foundation.img.bmap"), "{stderr}");
    assert!(stderr.contains("(matches "), "{stderr}");
    assert_eq!(sha256sum(&ours), expected);
}

/// `boardsmith write SRC DIR/out.img EXTRA...` into a temporary directory, asserting success.
fn write_to_a_file(src: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let o = write(src, dir.path().join("out.img"), extra);
    ok_stderr(&o);
    o
}

/// `--progress json`: one object per line on stderr, phases in order; `--json`: the report on stdout,
/// and nothing else there.
#[test]
fn json_progress_lines() {
    let f = fixture();
    let o = write_to_a_file(&f.path(".gz"), &["--progress", "json", "--json"]);
    let lines = support::json_lines(&o.stderr);
    let phases = support::event_texts(&lines, "phase", "phase");
    assert_eq!(phases, ["write", "flush", "verify", "finish"]);
    assert!(
        lines
            .iter()
            .any(|v| v["event"] == "progress" && v["done"] == f.size)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("the report, one JSON document");
    assert_eq!(report["image_size"], f.size);
    assert_eq!(report["verified"], true);
}

/// `--progress plain` (what `auto` is without a terminal): a line per phase and per tenth of the
/// bytes on stderr; the report in text.
#[test]
fn plain_progress_lines() {
    let f = fixture();
    let o = write_to_a_file(&f.path(""), &["--progress", "plain", "--no-bmap"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    for phase in ["write", "flush", "verify", "finish"] {
        assert!(
            stderr.lines().any(|l| l == format!("boardsmith: {phase}")),
            "{phase}: {stderr}"
        );
    }
    assert!(stderr.contains("boardsmith: write 100% ("), "{stderr}");
    assert!(o.stdout.is_empty());
}
