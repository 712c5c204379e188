//! The base cache's key and command line, against a stand-in archive served over HTTP by the test (the
//! key reads the archive's Release files): the same inputs give the same key whatever the paths, the
//! clock or the build's SOURCE_DATE_EPOCH; each input changed alone changes it; options that do not
//! change the base are refused with --cache-key; `cache list|prune`. Builds through the cache (hits equal
//! cold builds, interrupted writes, two processes sharing a key) are in tests/rootfs_debian.rs.

mod cli_definition;
mod rootfs_support;
mod support;

use std::path::Path;
use std::process::{Command, Output};

use rootfs_support::*;

/// boardsmith with nothing of the caller's environment that could matter.
fn boardsmith(home: &Path) -> Command {
    let mut c = support::boardsmith();
    c.env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("xdg"))
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .current_dir(home);
    c
}

/// A stand-in archive: Release files for `suites` under `dir/NAME/dists/`.
fn archive(dir: &Path, name: &str, suites: &[&str], date: &str) {
    for s in suites {
        let d = dir.join(name).join("dists").join(s);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(
            d.join("InRelease"),
            format!(
                "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Debian\nSuite: {s}\nDate: {date}\nSHA256:\n 0 0 main/binary-armhf/Packages\n-----BEGIN PGP SIGNATURE-----\n\nnone\n-----END PGP SIGNATURE-----\n"
            ),
        )
        .expect("write");
    }
}

fn run(c: &mut Command) -> Output {
    c.output().expect("run boardsmith")
}

/// `rootfs BOARD --cache-key`, from `home`.
fn cache_key(home: &Path, board: &str) -> Command {
    let mut c = boardsmith(home);
    c.args(["rootfs", board, "--cache-key"]);
    c
}

/// `rootfs BOARD --cache-key` with no security mirror and `mirror` for the archive, from `home`.
fn cache_key_from(home: &Path, board: &str, mirror: &str) -> Command {
    let mut c = cache_key(home, board);
    c.args(["--security-mirror", "", "--mirror", mirror]);
    c
}

/// `rootfs BOARD --cache-key` with `extra`; the key.
fn key(home: &Path, board: &str, mirror: &str, extra: &[&str]) -> String {
    let mut c = cache_key(home, board);
    c.args(["--mirror", mirror]);
    if !extra.contains(&"--security-mirror") {
        c.args(["--security-mirror", ""]);
    }
    let o = run(c.args(extra));
    assert!(
        o.status.success(),
        "--cache-key {board} {extra:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let k = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(k.len(), 64, "{k}");
    assert!(k.bytes().all(|c| c.is_ascii_hexdigit()), "{k}");
    k
}

const DATE: &str = "Sat, 11 Jul 2026 10:16:37 UTC";

#[test]
fn key_is_the_same_across_runs_paths_and_build_epochs() {
    let d = tempfile::tempdir().expect("tmp");
    archive(d.path(), "debian", &["bookworm", "bookworm-updates"], DATE);
    let server = FileServer::start(d.path());
    let mirror = format!("{}/debian", server.url);
    let (a, b) = (d.path().join("one"), d.path().join("two with space"));
    std::fs::create_dir_all(&a).expect("mkdir");
    std::fs::create_dir_all(&b).expect("mkdir");
    let k1 = key(&a, "cubieboard", &mirror, &[]);
    // Another home, cache directory, working directory, temporary directory, SOURCE_DATE_EPOCH: the base
    // depends on none of them (the board configuration applies SOURCE_DATE_EPOCH).
    let o = run(cache_key_from(&b, "cubieboard", &mirror)
        .env("SOURCE_DATE_EPOCH", "1800000000")
        .env("TMPDIR", &b)
        .env("BOARDSMITH_CACHE", b.join("elsewhere")));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), k1);
    // The Release files were read for the key: two per run (the suite and its -updates).
    let reqs = server.requests();
    assert_eq!(
        reqs.iter().filter(|r| r.ends_with("/InRelease")).count(),
        4,
        "{reqs:?}"
    );

    // Every board's `key` is its board layer's (what its build reads); `--json` gives its base's too.
    let keys = |board: &str| -> serde_json::Value {
        let o = run(cache_key_from(&a, board, &mirror).arg("--json"));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).expect("json")
    };
    // mk802 has the same packages and initramfs inputs as the Cubieboard: the same base and layer. The
    // Chromebook shares the armhf base (the board's U-Boot package and initramfs files are its layer's)
    // and has its own layer; the arm64 FVP has its own base.
    assert_eq!(key(&a, "mk802", &mirror, &[]), k1);
    let v = keys("cubieboard");
    let snow = keys("chromebook-snow");
    let fvp = keys("armv8-foundation");
    assert_eq!(v["key"], k1.as_str());
    assert_eq!(v["layer"]["key"], k1.as_str());
    assert_eq!(keys("mk802")["base"]["key"], v["base"]["key"]);
    assert_eq!(snow["base"]["key"], v["base"]["key"]);
    assert_ne!(snow["key"], v["key"]);
    assert_ne!(fvp["base"]["key"], v["base"]["key"]);
    // So `build --all` (each distinct base and each distinct layer once, under its lock) builds two
    // bases (armhf, arm64) and three layers for the four boards.
    let distinct = |level: &str| {
        [&v, &snow, &fvp, &keys("mk802")]
            .iter()
            .map(|k| k[level]["key"].as_str().expect("key").to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    assert_eq!((distinct("base"), distinct("layer")), (2, 3));
    // The layer covers its base's key.
    assert_eq!(v["layer"]["inputs"]["base"], v["base"]["key"]);
    assert!(
        v["about"]
            .as_str()
            .is_some_and(|a| a.contains("layers/KEY"))
    );

    // --json lists what the keys cover, with no path or name of this machine in it.
    let packages = |inputs: &serde_json::Value| -> Vec<String> {
        inputs["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect()
    };
    for level in ["base", "layer"] {
        let inputs = &v[level]["inputs"];
        for field in [
            "suite",
            "arch",
            "sources",
            "snapshot",
            "packages",
            "hook_files",
            "command",
            "epoch",
            "mmdebstrap",
            "keyring",
            "archive",
        ] {
            assert!(
                inputs.get(field).is_some(),
                "{level} {field} missing: {inputs}"
            );
        }
        assert!(
            inputs["mmdebstrap"]
                .as_str()
                .is_some_and(|m| m.starts_with("mmdebstrap ")),
            "{inputs}"
        );
        assert_eq!(inputs["archive"][0]["date"], DATE);
        // Both levels' SOURCE_DATE_EPOCH is the archive's date.
        assert_eq!(inputs["epoch"], 1_783_764_997u64);
    }
    let base = packages(&v["base"]["inputs"]);
    assert!(
        base.contains(&"linux-image-armmp".to_string())
            && !base.contains(&"u-boot-sunxi".to_string()),
        "{base:?}"
    );
    assert_eq!(packages(&v["layer"]["inputs"]), ["u-boot-sunxi"]);
    assert_eq!(packages(&snow["layer"]["inputs"]), Vec::<String>::new());
    assert_eq!(v["layer"]["inputs"]["variant"], "custom");
    let text = v.to_string();
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    for local in [
        d.path().to_string_lossy().as_ref(),
        "/root",
        "/home",
        "xdg",
        host.trim(),
    ] {
        assert!(
            local.is_empty() || !text.contains(local),
            "{local} in {text}"
        );
    }
}

#[test]
fn each_input_changes_the_key() {
    let d = tempfile::tempdir().expect("tmp");
    let suites = ["bookworm", "bookworm-updates", "bookworm-security"];
    archive(d.path(), "debian", &suites, DATE);
    archive(d.path(), "mirror2", &suites, DATE);
    archive(d.path(), "debian", &["trixie", "trixie-updates"], DATE);
    let server = FileServer::start(d.path());
    let mirror = format!("{}/debian", server.url);
    let home = d.path().join("home");
    std::fs::create_dir_all(&home).expect("mkdir");
    let base = key(&home, "cubieboard", &mirror, &[]);
    let mut keys = vec![("base".to_string(), base.clone())];
    let mut differs = |what: &str, k: String| {
        for (other, ok) in &keys {
            assert_ne!(&k, ok, "{what} gave the same key as {other}");
        }
        keys.push((what.to_string(), k));
    };
    differs(
        "suite",
        key(&home, "cubieboard", &mirror, &["--suite", "trixie"]),
    );
    differs(
        "architecture (another board)",
        key(&home, "armv8-foundation", &mirror, &[]),
    );
    differs(
        "mirror",
        key(&home, "cubieboard", &format!("{}/mirror2", server.url), &[]),
    );
    differs(
        "security archive",
        key(
            &home,
            "cubieboard",
            &mirror,
            &["--security-mirror", &mirror],
        ),
    );
    differs(
        "package list (a feature)",
        key(&home, "cubieboard", &mirror, &["--feature", "ssh"]),
    );
    differs(
        "mmdebstrap mode",
        key(&home, "cubieboard", &mirror, &["--mode", "root"]),
    );
    // A snapshot: no Release file is read (the archive cannot change), the timestamp is the state.
    let before = server.requests().len();
    let snap = key(
        &home,
        "cubieboard",
        &mirror,
        &["--snapshot", "20250101T000000Z"],
    );
    assert_eq!(server.requests().len(), before, "{:?}", server.requests());
    assert_eq!(
        key(
            &home,
            "cubieboard",
            &mirror,
            &["--snapshot", "20250101T000000Z"]
        ),
        snap
    );
    differs("snapshot", snap);
    differs(
        "another snapshot",
        key(
            &home,
            "cubieboard",
            &mirror,
            &["--snapshot", "20250102T000000Z"],
        ),
    );
    // The mirror moved on: its Release file (dated the same) lists other indexes.
    let f = d.path().join("debian/dists/bookworm-updates/InRelease");
    let text = std::fs::read_to_string(&f).expect("read");
    std::fs::write(&f, text.replace(" 0 0 ", " 1 1 ")).expect("write");
    differs(
        "the archive's Release file",
        key(&home, "cubieboard", &mirror, &[]),
    );
}

/// Every option that does not change the base, from clap's own list, is refused with --cache-key.
#[test]
fn cache_key_refuses_every_option_that_does_not_change_the_base() {
    let d = tempfile::tempdir().expect("tmp");
    let args = cli_definition::cache_key_refused_arguments();
    let longs = cli_definition::long_names(
        &args,
        &[
            "out",
            "hostname",
            "password-hash",
            "random-password",
            "droidmote-password",
            "set",
            "cache",
            "no-cache",
            "rootfs-tarball",
        ],
    );
    for kept in [
        "mirror",
        "suite",
        "snapshot",
        "security-mirror",
        "mode",
        "feature",
    ] {
        assert!(!longs.contains(&kept), "{kept} changes the base: {longs:?}");
    }
    for arg in &args {
        let long = format!("--{}", arg.get_long().expect("a long option"));
        let o = run(cache_key(d.path(), "cubieboard").args(cli_definition::option_words(arg)));
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{long}: {e}");
        assert!(
            e.contains(&format!("{long} has no effect here")) && e.contains("--cache-key"),
            "{long}: {e}"
        );
    }
    assert_eq!(names_in(d.path()), Vec::<String>::new());
}

#[test]
fn cache_key_errors_name_their_cause() {
    let d = tempfile::tempdir().expect("tmp");
    archive(d.path(), "debian", &["bookworm", "bookworm-updates"], DATE);
    archive(d.path(), "undated", &["bookworm"], "");
    let server = FileServer::start(d.path());
    // Not a snapshot timestamp: invalid input.
    let o = run(cache_key(d.path(), "cubieboard").args(["--snapshot", "2025-01-01"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--snapshot 2025-01-01"));
    // A mirror that answers 403 wants credentials: that is said, not taken for a missing suite.
    let o = run(cache_key(d.path(), "cubieboard")
        .args(["--mirror", &format!("{}/private/debian", server.url)]));
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("/private/debian/dists/bookworm/InRelease")
            && e.contains("HTTP 403")
            && !e.contains("neither InRelease nor Release"),
        "{e}"
    );
    // A suite the archive does not have.
    let o = run(cache_key(d.path(), "cubieboard")
        .args(["--suite", "bogus"])
        .args(["--mirror", &format!("{}/debian", server.url)]));
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("/debian/dists/bogus/Release") && e.contains("neither InRelease nor Release"),
        "{e}"
    );
    // A Release file without a Date is no archive's.
    let o = run(&mut cache_key_from(
        d.path(),
        "cubieboard",
        &format!("{}/undated", server.url),
    ));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a UTC date"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn build_all_refuses_a_prebuilt_tarball() {
    let d = tempfile::tempdir().expect("tmp");
    let o = run(boardsmith(d.path())
        .args(["build", "--all", "--rootfs-tarball", "t.tar", "--sha256"])
        .arg("0".repeat(64)));
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("--rootfs-tarball has no effect here"), "{e}");
}

/// `cache list` and `cache prune` on what an interrupted build leaves, of a base and of a board layer:
/// it is listed as such, never as an entry, and prune removes it.
#[test]
fn cache_list_and_prune() {
    let d = tempfile::tempdir().expect("tmp");
    let cache = d.path().join("cache");
    let list = |c: &Path| -> serde_json::Value {
        let o = run(boardsmith(d.path())
            .args(["cache", "list", "--json", "--cache"])
            .arg(c));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).expect("json")
    };
    let v = list(&cache);
    assert_eq!(v["bases"]["entries"], serde_json::json!([]));
    assert_eq!(v["layers"]["entries"], serde_json::json!([]));
    let tmp = cache
        .join("bases")
        .join(format!(".tmp-{}-4242", "a".repeat(64)));
    let layer_tmp = cache
        .join("layers")
        .join(format!(".tmp-{}-4243", "b".repeat(64)));
    for t in [&tmp, &layer_tmp] {
        std::fs::create_dir_all(t).expect("mkdir");
        std::fs::write(t.join("base.tar"), b"partial").expect("write");
    }
    let v = list(&cache);
    for (level, t) in [("bases", &tmp), ("layers", &layer_tmp)] {
        assert_eq!(v[level]["entries"], serde_json::json!([]));
        assert_eq!(
            v[level]["temporaries"][0],
            t.file_name().unwrap().to_str().unwrap()
        );
    }
    let o = run(boardsmith(d.path())
        .args(["cache", "prune", "--older-than", "30x", "--cache"])
        .arg(&cache));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--older-than 30x"));
    let o = run(boardsmith(d.path())
        .args(["cache", "prune", "--json", "--cache"])
        .arg(&cache));
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    for level in ["bases", "layers"] {
        assert_eq!(
            v[level]["temporaries_removed"].as_array().map(Vec::len),
            Some(1)
        );
        assert_eq!(names_in(&cache.join(level)), Vec::<String>::new());
    }
    assert!(!tmp.exists() && !layer_tmp.exists());
}
