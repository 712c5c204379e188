//! Helpers shared by the integration tests: running external tools and generating root filesystem fixtures.
#![allow(dead_code)]

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

// The launcher and the sha256 helper are the ones every integration test uses (tests/support/).
#[allow(unused_imports)]
pub use crate::support::{boardsmith, build_err, build_ok, run_ok, sha256_file};

/// Runs a command, returning its output; panics with the command line if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs an external tool and asserts success, returning stdout (stderr appended for tools that report there).
pub fn tool(program: &str, args: &[&str]) -> String {
    let out = run(Command::new(program).args(args));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{text}",
        out.status
    );
    text
}

/// Deterministic pseudo-random bytes (xorshift), so fixtures and golden layouts are stable.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub const KVER: &str = "6.1.0-99-test";

/// Where each board's boot files live in the fixture (mirrors the embedded profiles).
pub struct BoardFiles {
    pub dtb: Option<&'static str>,
    pub uboot: Option<&'static str>,
}

pub fn board_files(board: &str) -> BoardFiles {
    match board {
        "cubieboard" => BoardFiles {
            dtb: Some("sun4i-a10-cubieboard.dtb"),
            uboot: Some("usr/lib/u-boot/Cubieboard/u-boot-sunxi-with-spl.bin"),
        },
        "mk802" => BoardFiles {
            dtb: Some("sun4i-a10-mk802.dtb"),
            uboot: Some("usr/lib/u-boot/Mini-X/u-boot-sunxi-with-spl.bin"),
        },
        "chromebook-snow" => BoardFiles {
            dtb: Some("exynos5250-snow.dtb"),
            uboot: None,
        },
        "armv8-foundation" => BoardFiles {
            dtb: Some("arm/foundation-v8-gicv3-psci.dtb"),
            uboot: None,
        },
        other => panic!("no fixture layout for {other}"),
    }
}

/// A root filesystem tree with fake boot files at the profile's paths and awkward content: names with
/// spaces, symlinks (relative and absolute), a 0600 file, a file owned by uid/gid 1000, nested directories.
pub fn make_rootfs(dir: &Path, board: &str) -> PathBuf {
    let r = dir.join(format!("rootfs-{board}"));
    let f = board_files(board);
    let w = |rel: &str, data: &[u8]| {
        let p = r.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    };
    w(
        &format!("boot/vmlinuz-{KVER}"),
        &pseudo_random(1, 3_000_000),
    );
    w(
        &format!("boot/initrd.img-{KVER}"),
        &pseudo_random(2, 1_500_000),
    );
    w(&format!("boot/config-{KVER}"), b"CONFIG_TEST=y\n");
    if let Some(d) = f.dtb {
        w(
            &format!("usr/lib/linux-image-{KVER}/{d}"),
            &pseudo_random(3, 40_000),
        );
    }
    if let Some(u) = f.uboot {
        // An eGON SPL header: branch instruction, then the magic the A10 boot ROM looks for at byte 4.
        let mut blob = vec![0xea, 0x00, 0x00, 0x16];
        blob.extend_from_slice(b"eGON.BT0");
        blob.extend(pseudo_random(4, 540_000));
        w(u, &blob);
    }
    w(
        "home/user/dir with spaces/nested/deeper/file name.txt",
        b"hello from a nested file\n",
    );
    w("etc/hostname", b"boardsmith\n");
    w("etc/shadow", b"root:*:19000:0:99999:7:::\n");
    std::fs::set_permissions(r.join("etc/shadow"), std::fs::Permissions::from_mode(0o600)).unwrap();
    w("home/user/owned", b"mine\n");
    std::os::unix::fs::chown(r.join("home/user/owned"), Some(1000), Some(1000)).unwrap();
    std::fs::create_dir_all(r.join("sbin")).unwrap();
    symlink(format!("boot/vmlinuz-{KVER}"), r.join("vmlinuz")).unwrap();
    symlink("/etc/hostname", r.join("sbin/hostname-link")).unwrap();
    r
}

/// Packs a fixture tree into an uncompressed tarball with numeric owners (what `mke2fs -d` reads).
pub fn make_tarball(tree: &Path) -> PathBuf {
    let tar = tree.with_extension("tar");
    tar_tree(tree, &tar, &["--numeric-owner"]);
    tar
}

/// `tar --sort=name OPTIONS -C TREE -cf TAR .` (GNU tar).
pub fn tar_tree(tree: &Path, tar: &Path, options: &[&str]) {
    let mut args = vec!["--sort=name"];
    args.extend_from_slice(options);
    args.extend([
        "-C",
        tree.to_str().unwrap(),
        "-cf",
        tar.to_str().unwrap(),
        ".",
    ]);
    tool("tar", &args);
}

/// Copies `len` bytes at `offset` of `image` into a new file (fsck.fat has no offset option).
pub fn extract(image: &Path, offset: u64, len: u64, dest: &Path) {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(image).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut out = std::fs::File::create(dest).unwrap();
    std::io::copy(&mut (&mut f).take(len), &mut out).unwrap();
}
