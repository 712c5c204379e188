//! Helpers for the writer's integration tests: real images made with sfdisk/sgdisk and mke2fs,
//! compressed with the real xz/gzip/zstd/bzip2/7z tools, loop devices that are always detached,
//! mounts that are always unmounted, a local HTTP server, and checks with independent tools.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

// The launcher and the sha256 helper are the ones every integration test uses (tests/support/).
#[allow(unused_imports)]
pub use crate::support::{bin_path, boardsmith, sha256_file as sha256sum, under};

/// `boardsmith` with the clean environment of every test, as an `assert_cmd` command.
pub fn bin() -> assert_cmd::Command {
    crate::support::boardsmith_cmd()
}

/// `boardsmith write SRC TARGET EXTRA...`, run to its end.
pub fn write(src: impl AsRef<OsStr>, target: impl AsRef<OsStr>, extra: &[&str]) -> Output {
    bin()
        .arg("write")
        .arg(src)
        .arg(target)
        .args(extra)
        .output()
        .unwrap()
}

/// Asserts that the run succeeded (showing its standard error otherwise); returns that.
pub fn ok_stderr(o: &Output) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    stderr
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Fails the test (never skips it) when not root: its real check needs `why`.
pub fn require_root(why: &str) {
    assert!(
        is_root(),
        "this test needs root ({why}); run the tests as root, as scripts/test.sh and CI do"
    );
}

/// Runs a tool, panicking with its output if it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sh(script: &str) -> String {
    run("bash", &["-euo", "pipefail", "-c", script])
}

/// sha256 of the first `len` bytes of a file or device.
pub fn sha256_prefix(path: &Path, len: u64) -> String {
    sh(&format!("head -c {len} {} | sha256sum", path.display()))
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A file of `size` (as `truncate -s` takes it) at `path`, with an empty ext4 filesystem when `ext4`.
pub fn blank_disk(path: &Path, size: &str, ext4: bool) {
    let p = path.display().to_string();
    run("truncate", &["-s", size, &p]);
    if ext4 {
        run("mkfs.ext4", &["-q", "-F", &p]);
    }
}

/// Copies `from` to `to` keeping its holes (`cp --sparse=always`).
pub fn sparse_copy(from: &Path, to: &Path) {
    run(
        "cp",
        &[
            "--sparse=always",
            &from.display().to_string(),
            &to.display().to_string(),
        ],
    );
}

/// `bmaptool copy --bmap BMAP IMAGE TARGET`: bmaptool's own writer, to compare with ours.
pub fn bmaptool_copy(bmap: &Path, image: &Path, target: &Path) {
    run(
        "bmaptool",
        &[
            "-q",
            "copy",
            "--bmap",
            &bmap.display().to_string(),
            &image.display().to_string(),
            &target.display().to_string(),
        ],
    );
}

pub fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// A loop device over a file; detached when dropped (also when the test fails).
pub struct Loop {
    pub dev: String,
}

impl Loop {
    pub fn attach(file: &Path, partscan: bool) -> Loop {
        let mut args = vec!["-f", "--show"];
        if partscan {
            args.push("-P");
        }
        let f = file.display().to_string();
        args.push(&f);
        let dev = run("losetup", &args).trim().to_string();
        assert!(dev.starts_with("/dev/loop"), "losetup gave {dev:?}");
        Loop { dev }
    }
    /// A read-only loop device over `[offset, offset + size)` of a file or device.
    pub fn attach_range(file: &Path, offset: u64, size: u64) -> Loop {
        let dev = run(
            "losetup",
            &[
                "-f",
                "--show",
                "-r",
                "--offset",
                &offset.to_string(),
                "--sizelimit",
                &size.to_string(),
                &file.display().to_string(),
            ],
        )
        .trim()
        .to_string();
        assert!(dev.starts_with("/dev/loop"), "losetup gave {dev:?}");
        Loop { dev }
    }
    pub fn path(&self) -> &Path {
        Path::new(&self.dev)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// A mounted filesystem; unmounted when dropped.
pub struct Mount {
    pub dir: PathBuf,
}

impl Mount {
    pub fn new(dev: &str, dir: &Path) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        run("mount", &[dev, &dir.display().to_string()]);
        Mount {
            dir: dir.to_path_buf(),
        }
    }
}

impl Mount {
    /// A tmpfs of `size` (as mount's `size=` takes it) on `dir`.
    pub fn tmpfs(dir: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                &dir.display().to_string(),
            ],
        );
        Mount {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// A child process killed when dropped (servers, FUSE filesystems, stuck writers).
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// python3's http.server on 127.0.0.1, serving `dir`.
pub struct HttpServer {
    pub base: String,
    _child: Killed,
}

impl HttpServer {
    pub fn serve(dir: &Path) -> HttpServer {
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "0",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "Serving HTTP on 127.0.0.1 port 43210 (http://127.0.0.1:43210/) ..."
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .unwrap_or_else(|| panic!("unexpected http.server banner {line:?}"))
            .to_string();
        HttpServer {
            base: format!("http://127.0.0.1:{port}"),
            _child: Killed(child),
        }
    }
}

/// A deterministic pseudo-random byte stream (xorshift), so test images are reproducible.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn write_at(path: &Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, offset).unwrap();
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Table {
    Mbr,
    Gpt,
}

/// A sparse disk image of `mib` MiB: a partition table, 16 KiB of "boot loader", a 4 MiB
/// data partition at 1 MiB with some content, and an ext4 root partition to the end populated
/// with files (random, text, zeros) by mke2fs -d. Returns the image path.
pub fn make_image(dir: &Path, name: &str, mib: u64, table: Table) -> PathBuf {
    let img = dir.join(name);
    let tree = dir.join(format!("{name}.tree"));
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::create_dir_all(tree.join("data")).unwrap();
    std::fs::write(tree.join("etc/hostname"), "boardsmith-test\n").unwrap();
    std::fs::write(tree.join("data/random.bin"), pseudo_random(7, 3 << 20)).unwrap();
    std::fs::write(
        tree.join("data/text.txt"),
        "the quick brown fox jumps over the lazy dog\n".repeat(40_000),
    )
    .unwrap();
    std::fs::write(tree.join("data/zeros.bin"), vec![0u8; 1 << 20]).unwrap();
    let img_s = img.display().to_string();
    sh(&format!("rm -f {img_s}; truncate -s {mib}M {img_s}"));
    let label = match table {
        Table::Mbr => "label: dos\nlabel-id: 0x12345678\n",
        Table::Gpt => "label: gpt\nlabel-id: 6E0F5D0C-1B0A-4D5E-9A55-0B7E3C1F2A10\n",
    };
    let (t1, t2) = match table {
        Table::Mbr => ("c", "83"),
        Table::Gpt => (
            "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
        ),
    };
    sh(&format!(
        "sfdisk -q --no-reread --no-tell-kernel {img_s} <<'EOF'\n{label}unit: sectors\n\nstart=2048, size=8192, type={t1}\nstart=10240, type={t2}\nEOF"
    ));
    // A boot loader blob in the first 64 KiB (A10 SoCs read theirs at 8 KiB; with GPT it goes after
    // the entry array).
    let blob_at = match table {
        Table::Mbr => 8192,
        Table::Gpt => 20480,
    };
    write_at(&img, blob_at, &pseudo_random(11, 16 << 10));
    write_at(&img, 1 << 20, &pseudo_random(13, 512 << 10));
    let root_off = 10240 * 512;
    let root_end: u64 = match table {
        Table::Mbr => mib << 20,
        // sfdisk ends the last GPT partition on a 1 MiB boundary before the backup table.
        Table::Gpt => ((mib << 20) - 34 * 512) / (1 << 20) * (1 << 20),
    };
    let root_kib = (root_end - root_off) / 1024;
    sh(&format!(
        "E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -F -t ext4 -b 4096 -L root -U 1b4e28ba-2fa1-11d2-883f-0016d3cca427 \
         -E offset={root_off},root_owner=0:0 -d {} {img_s} {}k",
        tree.display(),
        root_kib / 4 * 4
    ));
    std::fs::remove_dir_all(&tree).unwrap();
    img
}

/// The shared round-trip fixture: one image, its bmap (bmaptool create), sums and every compressed
/// form, made once per test binary.
pub struct Fixture {
    pub dir: PathBuf,
    pub raw: PathBuf,
    pub size: u64,
    pub sha256: String,
}

impl Fixture {
    /// `sdcard.img` compressed in `format` (".xz", ".gz", ".zst", ".bz2", ".7z") or raw ("").
    pub fn path(&self, ext: &str) -> PathBuf {
        self.dir.join(format!("sdcard.img{ext}"))
    }

    /// The bmap bmaptool made of `sdcard.img`.
    pub fn bmap_path(&self) -> PathBuf {
        self.dir.join("sdcard.img.bmap")
    }

    pub fn bmap(&self) -> boardsmith::image::bmap::Bmap {
        boardsmith::image::bmap::Bmap::parse(&std::fs::read_to_string(self.bmap_path()).unwrap())
            .unwrap()
    }
}

pub const FORMATS: [&str; 6] = ["", ".xz", ".gz", ".zst", ".bz2", ".7z"];

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // Under target/ (CARGO_TARGET_TMPDIR), one per test process; earlier runs' are removed.
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        if let Ok(rd) = std::fs::read_dir(&base) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("write-fixture-")
                    && !Path::new("/proc").join(pid).exists()
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = base.join(format!("write-fixture-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let raw = make_image(&dir, "sdcard.img", 40, Table::Mbr);
        let r = raw.display().to_string();
        let d = dir.display().to_string();
        // Several xz blocks and a 7z whose LZMA2 stream has dictionary resets (7-Zip's multi-threaded
        // mode), so both threaded decoders are used; and the other formats.
        sh(&format!(
            "cd {d} && bmaptool -q create -o sdcard.img.bmap sdcard.img && \
             xz -T2 --block-size=4MiB -3 -k sdcard.img && gzip -k sdcard.img && \
             zstd -q -k sdcard.img && bzip2 -k sdcard.img && 7z a -bso0 -bsp0 -mx=1 -mmt=2 sdcard.img.7z sdcard.img"
        ));
        let size = std::fs::metadata(&raw).unwrap().len();
        let sha256 = sha256sum(&raw);
        let _ = r;
        Fixture {
            dir,
            raw,
            size,
            sha256,
        }
    })
}

/// The shared fixture and a new directory for what one test writes.
pub fn fixture_and_dir() -> (&'static Fixture, tempfile::TempDir) {
    (fixture(), tempfile::tempdir().unwrap())
}

/// A file of `len` bytes of one byte value (stale card content).
pub fn filled(path: &Path, len: u64, byte: u8) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![byte; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
}

/// What a failed write says of a target file it created (and removed again: no partial image is left).
pub const REMOVED: &str = "was created by this write and has been removed again";

/// Asserts a failed write: exit status, the message parts, and that nothing was reported as good.
pub fn assert_failed(out: &Output, code: i32, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status; stderr:\n{stderr}\nstdout:\n{stdout}"
    );
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}:\n{stderr}");
    }
    for good in ["wrote ", "matched", "\"summary\"", "panicked"] {
        assert!(
            !stderr.contains(good) && !stdout.contains(good),
            "a failed run reported {good:?}:\nstderr:\n{stderr}\nstdout:\n{stdout}"
        );
    }
}

/// The first `n` bytes of a file or device are all zero.
pub fn zero_prefix(path: &Path, n: usize) -> bool {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open(path)
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    buf.iter().all(|&b| b == 0)
}
