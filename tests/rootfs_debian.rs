//! Real Debian root filesystems through mmdebstrap and qemu-user (needs root, binfmt_misc with the QEMU
//! handlers, and a Debian mirror). CI runs the two minimal builds; the full xfce + droidmote build is
//! opt-in (`BOARDSMITH_SLOW_TESTS=1 cargo test --test rootfs_debian -- --ignored`).
//!
//! Packages are cached in target/test-cache/apt across runs (each test's cache directory links its
//! `apt` there); base caches are each test's own. The security archive is left out: the mirror these
//! machines reach serves an armhf bookworm-security index whose size does not match its Release file,
//! which apt (rightly) refuses.
//!
//! The base cache: a hit gives the same tarball as a cold build (`--no-cache`), byte for byte; mk802
//! uses the Cubieboard's base without mmdebstrap; the cached base holds no secret; a build interrupted
//! (SIGTERM, SIGKILL) while writing a base leaves no usable entry; two processes building one key at the
//! same time run mmdebstrap once.

mod rootfs_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rootfs_support::*;
use support::{EPOCH, sha256_file};

const PASSWORD: &str = "debian-test-pw";

/// The package cache: target/test-cache/apt, or BOARDSMITH_TEST_CACHE (a build holds its architecture's
/// cache for its whole run, so concurrent runs of the same architecture want separate caches).
fn package_cache() -> PathBuf {
    let p = std::env::var_os("BOARDSMITH_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../test-cache/apt"));
    std::fs::create_dir_all(&p).expect("cache dir");
    p.canonicalize().expect("canonical cache")
}

/// A fresh boardsmith cache directory (`--cache`) in `dir` named `name`: its `apt` is the shared package
/// cache (nothing is downloaded twice), its base cache is empty.
fn cache_dir(dir: &Path, name: &str) -> PathBuf {
    let root = dir.join(name);
    std::fs::create_dir_all(&root).expect("mkdir");
    std::os::unix::fs::symlink(package_cache(), root.join("apt")).expect("symlink");
    root
}

/// `boardsmith SUBCOMMAND BOARD` with the options every build here uses; `cache` is the cache directory
/// for a Debian build (None for a prebuilt tarball, which refuses the Debian options).
fn boardsmith(sub: &str, board: &str, cache: Option<&Path>) -> Command {
    let mut c = support::boardsmith();
    c.env(
        "BOARDSMITH_PASSWORD_HASH",
        sha512_hash(PASSWORD, "debiantest"),
    )
    .args([sub, board, "--progress", "plain"]);
    if let Some(cache) = cache {
        c.args(["--security-mirror", ""]).arg("--cache").arg(cache);
    }
    c
}

/// `boardsmith rootfs BOARD -o OUT --json` with extra arguments and the cache directory `cache` (None
/// with --rootfs-tarball); returns the report.
fn rootfs(
    board: &str,
    out: &Path,
    extra: &[&str],
    envs: &[(&str, &str)],
    cache: Option<&Path>,
) -> serde_json::Value {
    let started = Instant::now();
    let mut c = rootfs_command(board, out, extra, envs, cache);
    let o = c.output().expect("run boardsmith rootfs");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "boardsmith rootfs {board} failed:\n{err}"
    );
    eprintln!(
        "boardsmith rootfs {board}: {:.0} s, {} bytes",
        started.elapsed().as_secs_f64(),
        std::fs::metadata(out).map(|m| m.len()).unwrap_or(0)
    );
    serde_json::from_slice(&o.stdout).expect("json report")
}

fn rootfs_command(
    board: &str,
    out: &Path,
    extra: &[&str],
    envs: &[(&str, &str)],
    cache: Option<&Path>,
) -> Command {
    let mut c = boardsmith("rootfs", board, cache);
    c.arg("-o").arg(out).arg("--json").args(extra);
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

/// `boardsmith cache list --json` of a cache directory.
fn cache_list(cache: &Path) -> serde_json::Value {
    let o = support::run_ok(
        support::boardsmith()
            .args(["cache", "list", "--json", "--cache"])
            .arg(cache),
    );
    serde_json::from_slice(&o.stdout).expect("json")
}

/// Two tarballs have the same content: byte for byte (both are canonical, mtimes clamped), and so the
/// same `tar -tv` listing and file hashes; on a difference, the entries whose listing or content differ
/// are named.
fn assert_same_tarball(a: &Path, b: &Path) {
    if sha256_file(a) == sha256_file(b) {
        return;
    }
    // The lines `program ARGS TARBALL` prints, as a set.
    let lines = |program: &str, args: &[&str], t: &Path| {
        let o = Command::new(program)
            .args(args)
            .arg(t)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect::<std::collections::BTreeSet<_>>()
    };
    let listing = |t: &Path| lines("tar", &["--numeric-owner", "--full-time", "-tvf"], t);
    // Each regular file's sha256, by Python's tarfile (another tar reader than boardsmith's and GNU tar).
    let hashes = |t: &Path| {
        lines(
            "python3",
            &[
                "-c",
                "import hashlib,sys,tarfile\nt=tarfile.open(sys.argv[1])\nfor m in t:\n if m.isfile(): print(hashlib.sha256(t.extractfile(m).read()).hexdigest(), m.name)",
            ],
            t,
        )
    };
    let (la, lb) = (listing(a), listing(b));
    let only_a: Vec<_> = la.difference(&lb).take(20).collect();
    let only_b: Vec<_> = lb.difference(&la).take(20).collect();
    let (ha, hb) = (hashes(a), hashes(b));
    let content_a: Vec<_> = ha.difference(&hb).take(20).collect();
    let content_b: Vec<_> = hb.difference(&ha).take(20).collect();
    panic!(
        "{} and {} differ\nonly in the first: {only_a:#?}\nonly in the second: {only_b:#?}\ncontents only in the first: {content_a:#?}\ncontents only in the second: {content_b:#?}",
        a.display(),
        b.display()
    );
}

/// What every Debian build must have: boot files where the profile expects them, fstab from the plan,
/// the serial getty, the hashed password, root locked, the grow unit.
fn check_common(
    tar: &Path,
    board: &str,
    tty: &str,
) -> std::collections::BTreeMap<String, (char, String, String, Option<String>)> {
    let list = tar_list(tar);
    assert!(
        list.keys().any(|k| k.starts_with("boot/vmlinuz-")),
        "kernel"
    );
    assert!(
        list.keys().any(|k| k.starts_with("boot/initrd.img-")),
        "initrd"
    );
    assert!(list.contains_key("usr/bin/apt"), "apt");

    let fstab = tar_string(tar, "etc/fstab");
    let entries: Vec<(String, String)> = fstab
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].to_string())
        })
        .collect();
    for (role, partuuid, _) in planned_partitions(board, EPOCH) {
        let mount = match role.as_str() {
            "root" => "/",
            "boot" => "/boot/firmware",
            _ => continue,
        };
        assert!(
            entries.contains(&(format!("PARTUUID={partuuid}"), mount.to_string())),
            "fstab lacks PARTUUID={partuuid} {mount}:\n{fstab}"
        );
    }

    let getty = format!("etc/systemd/system/getty.target.wants/serial-getty@{tty}.service");
    assert_eq!(
        list.get(&getty).and_then(|e| e.3.clone()).as_deref(),
        Some("/lib/systemd/system/serial-getty@.service"),
        "serial getty on {tty}"
    );
    assert!(list.contains_key("usr/lib/systemd/system/serial-getty@.service"));
    assert!(
        list.contains_key("etc/systemd/system/local-fs.target.wants/boardsmith-grow-root.service"),
        "grow unit enabled"
    );
    assert!(
        list["usr/lib/boardsmith/grow-root"]
            .1
            .starts_with("-rwxr-xr-x")
    );
    assert!(
        list.contains_key("etc/systemd/system/multi-user.target.wants/systemd-networkd.service")
    );

    let shadow = tar_string(tar, "etc/shadow");
    assert!(
        shadow.lines().any(|l| l.starts_with("root:*:")),
        "root locked"
    );
    let user = shadow
        .lines()
        .find(|l| l.starts_with("debian:"))
        .expect("default user");
    assert!(
        hash_matches(user.split(':').nth(1).unwrap_or(""), PASSWORD),
        "{user}"
    );
    let group = tar_string(tar, "etc/group");
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("sudo:") && l.ends_with("debian")),
        "{group}"
    );
    assert!(list.contains_key("usr/bin/sudo"));
    assert_eq!(tar_string(tar, "etc/hostname"), format!("{board}\n"));
    assert_eq!(
        list["etc/resolv.conf"].3.as_deref(),
        Some("../run/systemd/resolve/stub-resolv.conf")
    );
    assert!(!list.keys().any(|k| k.starts_with("etc/ssh/ssh_host_")));
    list
}

/// Modules in the initrd (zstd or gzip cpio), through the system's tools.
fn initrd_modules(tar: &Path, dir: &Path) -> String {
    let list = tar_list(tar);
    let name = list
        .keys()
        .find(|k| k.starts_with("boot/initrd.img-"))
        .expect("initrd")
        .clone();
    let img = dir.join("initrd.img");
    std::fs::write(&img, tar_read(tar, &name).expect("initrd data")).expect("write");
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "(zstd -dc {0} 2>/dev/null || gzip -dc {0}) | cpio -t 2>/dev/null",
            img.display()
        ))
        .output()
        .expect("cpio");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The Cubieboard three ways, all through a counting proxy in front of the mirror: cold without the cache
/// (`--no-cache`), then `build` (a miss: mmdebstrap builds and stores the base, downloading no package),
/// then a hit, which must give the cold build's tarball byte for byte. mk802 (same packages and
/// initramfs configuration) then gets its root filesystem from the Cubieboard's base without mmdebstrap,
/// with a generated password that the cached base does not hold. Both images boot.
#[test]
fn debian_armhf_rootfs_cache_and_images() {
    let d = tempfile::tempdir().expect("tmp");
    let proxy = CountingProxy::start("deb.debian.org");
    let mirror = format!("{}/debian", proxy.url());
    let cache = cache_dir(d.path(), "cache");

    // Cold, without the cache.
    let cold = d.path().join("cubieboard-cold.tar");
    let report = rootfs(
        "cubieboard",
        &cold,
        &["--mirror", &mirror, "--no-cache"],
        &[],
        Some(&cache),
    );
    assert_eq!(report["arch"], "armhf");
    // --no-cache: both levels built by mmdebstrap in the work directory, nothing stored.
    assert_eq!(report["base"]["cache"], "bypassed", "{report}");
    assert_eq!(report["base"]["layer"]["cache"], "bypassed", "{report}");
    let key = report["base"]["layer"]["key"]
        .as_str()
        .expect("key")
        .to_string();
    let base_key = report["base"]["key"].as_str().expect("key").to_string();
    for level in ["bases", "layers"] {
        assert_eq!(cache_list(&cache)[level]["entries"], serde_json::json!([]));
    }
    let list = check_common(&cold, "cubieboard", "ttyS0");
    assert!(
        list.keys()
            .any(|k| k.starts_with("usr/lib/linux-image-")
                && k.ends_with("/sun4i-a10-cubieboard.dtb")),
        "device tree"
    );
    let spl =
        tar_read(&cold, "usr/lib/u-boot/Cubieboard/u-boot-sunxi-with-spl.bin").expect("U-Boot");
    assert_eq!(&spl[4..12], b"eGON.BT0");
    // The initramfs modules were derived from the board's device tree inside the build (the profile lists
    // none): the list and the report say so.
    let modules = tar_string(&cold, "etc/initramfs-tools/modules");
    assert!(
        modules.contains("sunxi-mmc\n")
            && modules.contains("ext4\n")
            && modules.contains("derived"),
        "{modules}"
    );
    let derived = &report["initramfs"]["modules"];
    assert_eq!(derived[0]["module"], "sunxi-mmc", "{derived}");
    assert_eq!(derived[0]["chain"][0], "mmc@1c0f000 (SD card controller)");
    let initrd = initrd_modules(&cold, d.path());
    assert!(
        initrd.contains("sunxi-mmc.ko") && initrd.contains("ext4.ko"),
        "initrd modules:\n{initrd}"
    );

    // `build` without --rootfs: the base and the layer are missing, mmdebstrap builds and stores them; every package
    // comes from the package cache (the proxy sees every request apt makes: none is for a package).
    let seen = proxy.fetched().len();
    let out = d.path().join("out");
    let started = Instant::now();
    support::run_ok(
        boardsmith("build", "cubieboard", Some(&cache))
            .args(["--mirror", &mirror])
            .args(["--cmdline-append", QEMU_A10_CMDLINE])
            .arg("-o")
            .arg(&out),
    );
    eprintln!(
        "boardsmith build cubieboard (base built and stored): {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let fetched: Vec<_> = proxy.fetched().into_iter().skip(seen).collect();
    assert!(
        fetched.iter().any(|f| f.url.contains("InRelease")),
        "apt went through the proxy: {fetched:?}"
    );
    assert!(
        !fetched.iter().any(|f| f.url.ends_with(".deb")),
        "the build downloaded packages: {fetched:?}"
    );
    let listed = cache_list(&cache);
    for (level, k) in [("bases", &base_key), ("layers", &key)] {
        let l = &listed[level];
        assert_eq!(l["entries"][0]["key"], k.as_str(), "{listed}");
        assert_eq!(l["entries"][0]["state"], "ok");
        assert_eq!(l["entries"][0]["board"], "cubieboard");
        assert_eq!(l["temporaries"], serde_json::json!([]));
    }

    // The image's root partition holds this root filesystem.
    let img = out.join("cubieboard.img");
    let root = extract_root_partition(&img, d.path());
    support::run_ok(Command::new("e2fsck").arg("-fn").arg(&root));
    let ls = Command::new("debugfs")
        .args(["-R", "ls -l /boot"])
        .arg(&root)
        .output()
        .expect("debugfs");
    assert!(String::from_utf8_lossy(&ls.stdout).contains("vmlinuz-"));
    let fstab = Command::new("debugfs")
        .args(["-R", "cat /etc/fstab"])
        .arg(&root)
        .output()
        .expect("debugfs");
    let root_uuid = planned_partitions("cubieboard", EPOCH)
        .into_iter()
        .find(|p| p.0 == "root")
        .expect("root")
        .1;
    assert!(String::from_utf8_lossy(&fstab.stdout).contains(&format!("PARTUUID={root_uuid}\t/\t")));
    // (Disk space on a shared machine: what is no longer needed goes.)
    std::fs::remove_file(&root).expect("rm");
    // The root filesystem `build` made from the stored base is the cold one.
    assert_same_tarball(&out.join("cubieboard.rootfs.tar"), &cold);

    // It boots in QEMU to systemd's login prompt on the serial console.
    boot_to_login(&img, "cubieboard", d.path());
    std::fs::remove_dir_all(&out).expect("rm");

    // A hit: no mmdebstrap, nothing from the mirror but its Release files (the key), and the cold
    // build's tarball byte for byte.
    let seen = proxy.fetched().len();
    let hit = d.path().join("cubieboard-hit.tar");
    let report = rootfs(
        "cubieboard",
        &hit,
        &["--mirror", &mirror],
        &[],
        Some(&cache),
    );
    assert_layer_hit(&report, &key, &base_key);
    assert_eq!(report["downloads"]["packages"], 0);
    let fetched: Vec<_> = proxy.fetched().into_iter().skip(seen).collect();
    assert!(
        fetched.iter().all(|f| f.url.ends_with("/InRelease")),
        "a hit fetched more than Release files: {fetched:?}"
    );
    assert_same_tarball(&hit, &cold);
    std::fs::remove_file(&hit).expect("rm");

    // mk802 from the Cubieboard's base, with a generated password.
    let mk802_tar = d.path().join("mk802.tar");
    let mut c = rootfs_command(
        "mk802",
        &mk802_tar,
        &["--mirror", &mirror, "--random-password"],
        &[],
        Some(&cache),
    );
    let o = support::run_ok(c.env_remove("BOARDSMITH_PASSWORD_HASH"));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json report");
    assert_layer_hit(&report, &key, &base_key);
    check_mk802(&mk802_tar, d.path());
    let password = std::fs::read_to_string(d.path().join("mk802.tar.password")).expect("password");
    assert_eq!(mode_of(&d.path().join("mk802.tar.password")), 0o600);
    let shadow = tar_string(&mk802_tar, "etc/shadow");
    let hash = shadow
        .lines()
        .find_map(|l| l.strip_prefix("debian:"))
        .and_then(|r| r.split(':').next())
        .expect("default user's hash")
        .to_string();
    assert!(hash_matches(&hash, password.trim()), "{hash}");
    // The cached base and layer hold no secret: no default user, no password hash, no generated password.
    for base in [
        cache.join("bases").join(&base_key).join("base.tar"),
        cache.join("layers").join(&key).join("base.tar"),
    ] {
        for (member, text) in [("etc/shadow", "debian:"), ("etc/passwd", "debian:")] {
            let content = tar_string(&base, member);
            assert!(!content.is_empty(), "the base has {member}");
            assert!(
                !content.lines().any(|l| l.starts_with(text)),
                "{member} of the base: {content}"
            );
        }
        for secret in [
            hash.as_str(),
            password.trim(),
            &sha512_hash(PASSWORD, "debiantest"),
        ] {
            let found = Command::new("grep")
                .args(["-qaF", secret])
                .arg(&base)
                .status()
                .expect("grep");
            assert_eq!(found.code(), Some(1), "a secret is in the cached base");
        }
    }
    let img = build_image(
        "mk802",
        &mk802_tar,
        &["--cmdline-append", QEMU_A10_CMDLINE],
        d.path(),
    );
    boot_to_login(&img, "mk802", d.path());
    std::fs::remove_file(&img).expect("rm");

    // mk802 (same SoC, kernel and U-Boot package) from the Cubieboard's tarball as a prebuilt rootfs:
    // hostname, fstab and users are redone for mk802 without a package manager.
    let sha = sha256_file(&cold);
    let prebuilt = d.path().join("mk802-prebuilt.tar");
    rootfs(
        "mk802",
        &prebuilt,
        &["--rootfs-tarball", cold.to_str().unwrap(), "--sha256", &sha],
        &[],
        None,
    );
    check_mk802(&prebuilt, d.path());

    // Pruning: kept while recent, removed when asked for everything.
    support::run_ok(
        support::boardsmith()
            .args(["cache", "prune", "--older-than", "1d", "--json", "--cache"])
            .arg(&cache),
    );
    for level in ["bases", "layers"] {
        assert_eq!(
            cache_list(&cache)[level]["entries"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
    }
    let o = support::boardsmith()
        .args(["cache", "prune", "--json", "--cache"])
        .arg(&cache)
        .output()
        .expect("prune");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["layers"]["removed"][0]["key"], key.as_str(), "{v}");
    assert_eq!(v["bases"]["removed"][0]["key"], base_key.as_str(), "{v}");
    assert_eq!(names_in(&cache.join("bases")), Vec::<String>::new());
    assert_eq!(names_in(&cache.join("layers")), Vec::<String>::new());
}

/// The report of a build whose board layer `key` (on base `base_key`) came from the cache: the base was
/// not read.
fn assert_layer_hit(report: &serde_json::Value, key: &str, base_key: &str) {
    assert_eq!(report["base"]["layer"]["cache"], "hit", "{report}");
    assert_eq!(report["base"]["layer"]["key"], key, "{report}");
    assert_eq!(
        report["base"]["cache"], "not needed (layer hit)",
        "{report}"
    );
    assert_eq!(report["base"]["key"], base_key, "{report}");
}

/// What makes an mk802 root filesystem: its host name, and the U-Boot build its profile names.
fn check_mk802(tar: &Path, dir: &Path) {
    let _ = dir;
    assert_eq!(tar_string(tar, "etc/hostname"), "mk802\n");
    let spl = tar_read(tar, "usr/lib/u-boot/Mini-X/u-boot-sunxi-with-spl.bin").expect("U-Boot");
    assert_eq!(&spl[4..12], b"eGON.BT0");
    let fstab = tar_string(tar, "etc/fstab");
    let root_uuid = planned_partitions("mk802", EPOCH)
        .into_iter()
        .find(|p| p.0 == "root")
        .expect("root")
        .1;
    assert!(fstab.contains(&format!("PARTUUID={root_uuid}")), "{fstab}");
}

/// QEMU's cubieboard machine emulates neither the A10 display engine nor its crypto engine; once udev loads
/// their drivers the boot stalls, so images booted there leave them out (real boards do not need this).
const QEMU_A10_CMDLINE: &str = "modprobe.blacklist=sun4i_drm,sun4i_ss";

/// `boardsmith build BOARD --rootfs TAR -o DIR/out-BOARD`; returns the image.
fn build_image(board: &str, tar: &Path, extra: &[&str], dir: &Path) -> PathBuf {
    let out = dir.join(format!("out-{board}"));
    support::build_ok(board, tar, &out, extra);
    out.join(format!("{board}.img"))
}

/// `boardsmith boot` until `HOSTNAME login:` appears on the serial console; the image is unchanged.
fn boot_to_login(img: &Path, board: &str, dir: &Path) {
    let before = sha256_file(img);
    let log = dir.join(format!("boot-{board}.log"));
    let started = Instant::now();
    let o = support::boardsmith()
        .args(["boot", "--board", board, "--timeout", "900", "--expect"])
        .arg(format!(r"^{board} login:\s*$"))
        .arg("--log")
        .arg(&log)
        .arg(img)
        .output()
        .expect("run boardsmith boot");
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        o.status.success(),
        "boardsmith boot {board}: {}\n--- console (last 4 KiB) ---\n{}",
        String::from_utf8_lossy(&o.stderr),
        &console[console.len().saturating_sub(4096)..]
    );
    assert!(console.contains("systemd"), "{console}");
    eprintln!(
        "boardsmith boot {board}: login prompt after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(sha256_file(img), before);
}

/// Processes whose process group is `pgid`, from /proc.
fn processes_in_group(pgid: i32) -> Vec<i32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its closing parenthesis.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        if fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) {
            v.push(pid);
        }
    }
    v
}

/// Starts `c` and waits until mmdebstrap writes a base into the cache's temporary entry.
fn start_base_build(mut c: Command, cache: &Path, log: &Path) -> std::process::Child {
    let _ = std::fs::remove_file(log);
    let child = c
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn boardsmith rootfs");
    assert!(
        wait_for(900, || !cache_list(cache)["bases"]["temporaries"]
            .as_array()
            .is_none_or(Vec::is_empty)
            && log.exists()),
        "mmdebstrap did not start"
    );
    // Let it get going (downloads, unpacking).
    std::thread::sleep(std::time::Duration::from_secs(5));
    child
}

/// arm64, from paths with spaces and quotes (the output's directory, so the work directory beside it,
/// and the cache directory; mmdebstrap's hooks must get them whole): a build stopped by SIGTERM, and one
/// killed with SIGKILL, while mmdebstrap writes the base, leave no usable entry; then two processes
/// building the same base at once run mmdebstrap once (the other waits on the key's lock and uses it),
/// with the same tarball; that root filesystem boots.
#[test]
fn debian_arm64_rootfs_interrupted_and_shared() {
    let d = tempfile::tempdir().expect("tmp");
    let cache = cache_dir(d.path(), "boardsmith's cache");
    let log = cache.join("logs/armv8-foundation-arm64.log");
    let out_dir = d.path().join("work dir's space");
    std::fs::create_dir(&out_dir).expect("mkdir");

    // SIGTERM: boardsmith stops mmdebstrap and removes its temporary entry and work directory.
    let child = start_base_build(
        rootfs_command(
            "armv8-foundation",
            &out_dir.join("t.tar"),
            &[],
            &[],
            Some(&cache),
        ),
        &cache,
        &log,
    );
    support::stop_with(child, libc::SIGTERM);
    let listed = &cache_list(&cache)["bases"];
    assert_eq!(listed["entries"], serde_json::json!([]), "{listed}");
    assert_eq!(listed["temporaries"], serde_json::json!([]), "{listed}");
    assert_eq!(names_in(&out_dir), Vec::<String>::new());

    // SIGKILL of boardsmith and everything it started: nothing cleans up, the temporary entry stays,
    // and is never used.
    let killed_dir = d.path().join("killed");
    std::fs::create_dir(&killed_dir).expect("mkdir");
    let mut c = rootfs_command(
        "armv8-foundation",
        &killed_dir.join("k.tar"),
        &[],
        &[],
        Some(&cache),
    );
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    let child = start_base_build(c, &cache, &log);
    let pgid = child.id() as i32;
    // SAFETY: kill has no memory effects; the group is our child's own.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait_with_output();
    let gone = wait_for(60, || processes_in_group(pgid).is_empty());
    let left = processes_in_group(pgid);
    for p in &left {
        // SAFETY: as above; these are descendants of our child that outlived it.
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    assert!(gone, "processes of the killed build outlived it: {left:?}");
    let listed = &cache_list(&cache)["bases"];
    assert_eq!(listed["entries"], serde_json::json!([]), "{listed}");
    assert_eq!(
        listed["temporaries"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );

    // Two processes, one key, at the same time.
    let tars = [
        out_dir.join("armv8 rootfs.tar"),
        d.path().join("second.tar"),
    ];
    let children: Vec<_> = tars
        .iter()
        .map(|t| {
            rootfs_command("armv8-foundation", t, &[], &[], Some(&cache))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut outcomes = Vec::new();
    for c in children {
        let o = c.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        outcomes.push((report, err));
    }
    let mut how: Vec<&str> = outcomes
        .iter()
        .map(|(r, _)| r["base"]["layer"]["cache"].as_str().unwrap_or(""))
        .collect();
    how.sort();
    assert_eq!(how, ["built", "hit"], "mmdebstrap ran once for the layer");
    assert_eq!(outcomes[0].0["base"]["key"], outcomes[1].0["base"]["key"]);
    assert_eq!(
        outcomes[0].0["base"]["layer"]["key"],
        outcomes[1].0["base"]["layer"]["key"]
    );
    let waited = outcomes
        .iter()
        .find(|(r, _)| r["base"]["layer"]["cache"] == "hit")
        .map(|(_, e)| e.clone())
        .unwrap_or_default();
    assert!(
        waited.contains("waiting for another build of board layer"),
        "the second build did not wait on the lock:\n{waited}"
    );
    assert_same_tarball(&tars[0], &tars[1]);
    let listed = cache_list(&cache);
    for level in ["bases", "layers"] {
        let l = &listed[level];
        assert_eq!(l["entries"].as_array().map(Vec::len), Some(1), "{listed}");
        assert_eq!(l["entries"][0]["state"], "ok");
        // The build that ran mmdebstrap cleared what the killed one left.
        assert_eq!(l["temporaries"], serde_json::json!([]), "{listed}");
    }
    assert_eq!(
        outcomes[0].0["cache"].as_str(),
        Some(cache.to_str().expect("utf-8"))
    );
    // Nothing but the tarball stays beside it: the work directory is gone.
    assert_eq!(names_in(&out_dir), ["armv8 rootfs.tar"]);

    let tar = &tars[0];
    let list = check_common(tar, "armv8-foundation", "ttyAMA0");
    assert!(
        list.keys().any(|k| k.starts_with("usr/lib/linux-image-")
            && k.ends_with("/arm/foundation-v8-gicv3-psci.dtb")),
        "device tree"
    );
    let initrd = initrd_modules(tar, d.path());
    // Derived from the FVP's device tree (virtio-mmio, the block driver, ext4), plus the profile's extra
    // transport for QEMU's virt machine.
    support::assert_mentions(
        &initrd,
        "the initrd's modules",
        &[
            "virtio_mmio.ko",
            "virtio_blk.ko",
            "ext4.ko",
            "virtio_pci.ko",
        ],
    );
    let modules = tar_string(tar, "etc/initramfs-tools/modules");
    assert!(
        modules.contains("virtio_mmio\n") && modules.contains("virtio_pci\n"),
        "{modules}"
    );
    let img = build_image("armv8-foundation", tar, &[], d.path());
    boot_to_login(&img, "armv8-foundation", d.path());
}

/// Slow: the full desktop with DroidMote (about an hour under qemu-user on two cores).
#[test]
#[ignore = "slow (xfce under qemu-user): BOARDSMITH_SLOW_TESTS=1 cargo test --test rootfs_debian -- --ignored"]
fn debian_armhf_xfce_droidmote() {
    if std::env::var("BOARDSMITH_SLOW_TESTS").as_deref() != Ok("1") {
        panic!("set BOARDSMITH_SLOW_TESTS=1 to run this slow test");
    }
    let d = tempfile::tempdir().expect("tmp");
    let cache = cache_dir(d.path(), "cache");
    let (dm, sha) = fake_droidmote(d.path());
    let tar = d.path().join("cubieboard-xfce.tar");
    let started = Instant::now();
    let dm_arg = dm.display().to_string();
    let report = rootfs(
        "cubieboard",
        &tar,
        &[
            "--feature",
            "xfce",
            "--feature",
            "droidmote",
            "--droidmote-binary",
            &dm_arg,
            "--droidmote-sha256",
            &sha,
        ],
        &[("BOARDSMITH_DROIDMOTE_PASSWORD", "remote-pw")],
        Some(&cache),
    );
    let secs = started.elapsed().as_secs_f64();
    // The cached layer (and so its base) holds neither the DroidMote password nor the binary (board
    // configuration).
    let base = PathBuf::from(
        report["base"]["layer"]["entry"]
            .as_str()
            .expect("stored layer"),
    )
    .join("base.tar");
    let found = Command::new("grep")
        .args(["-qaF", "DROIDMOTE_PASSWORD=remote-pw"])
        .arg(&base)
        .status()
        .expect("grep");
    assert_eq!(
        found.code(),
        Some(1),
        "the DroidMote password is in the cached base"
    );
    assert!(tar_read(&base, "usr/local/bin/droidmote").is_none());
    let size = std::fs::metadata(&tar).map(|m| m.len()).unwrap_or(0);
    eprintln!("SLOW xfce+droidmote armhf: {secs:.0} s, tarball {size} bytes, report {report}");
    let list = check_common(&tar, "cubieboard", "ttyS0");
    let status = tar_string(&tar, "var/lib/dpkg/status");
    for p in ["xfce4", "lightdm", "xserver-xorg-core"] {
        assert!(status.contains(&format!("Package: {p}\n")), "{p} installed");
    }
    assert_installed_droidmote(&tar, &sha);
    assert!(
        list.contains_key("etc/systemd/system/display-manager.service"),
        "lightdm enabled"
    );
    assert_eq!(
        list["etc/systemd/system/default.target"].3.as_deref(),
        Some("/lib/systemd/system/graphical.target")
    );
    let conf = tar_string(&tar, "etc/droidmote/droidmote.conf");
    assert!(
        conf.contains("DROIDMOTE_PORT=2303") && conf.contains("DROIDMOTE_PASSWORD=remote-pw"),
        "{conf}"
    );
    // Secret-bearing files: root-owned, readable by their group only (shadow, the user's group).
    for (path, perms, owner) in [
        ("etc/shadow", "-rw-r-----", "0/42"),
        ("etc/gshadow", "-rw-r-----", "0/42"),
        ("etc/droidmote/droidmote.conf", "-rw-r-----", "0/1000"),
    ] {
        assert_eq!(
            (list[path].1.as_str(), list[path].2.as_str()),
            (perms, owner),
            "{path}"
        );
    }
    assert!(tar_string(&tar, "etc/xdg/autostart/droidmote.desktop").contains("droidmote-session"));
    assert!(
        tar_string(
            &tar,
            "etc/lightdm/lightdm.conf.d/50-boardsmith-autologin.conf"
        )
        .contains("autologin-user=debian")
    );
    assert!(tar_string(&tar, "etc/udev/rules.d/60-boardsmith-uinput.rules").contains("uinput"));
    assert!(
        tar_string(&tar, "etc/group")
            .lines()
            .any(|l| l.starts_with("input:") && l.contains("debian"))
    );
}
