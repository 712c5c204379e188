//! `boardsmith write` from http(s) URLs, against the test server in tests/http_support (started by each
//! test on 127.0.0.1): resuming after dropped, short and stalled connections mid-write (.xz and
//! .zst, onto a file and a loop device), a file that changes on the server, a server without Range
//! support, a body longer than announced, 403 for a sibling bmap, the checksum rule (refused before
//! the target is touched, checked with cmp), https with a test CA through SSL_CERT_FILE (made with
//! the openssl CLI), a redirect from https to http, and the exit status of a download that gave up.
//! Results are checked with sha256sum and cmp.

mod cli_definition;
mod http_support;
mod support;
mod writer_common;

use std::path::{Path, PathBuf};
use std::process::Output;

use http_support::{Behaviour, TestServer, make_certificates};
use writer_common::*;

/// A directory served by a test: links to the fixture files named (and nothing else).
fn served(names: &[&str]) -> tempfile::TempDir {
    let f = fixture();
    let d = tempfile::tempdir().unwrap();
    for n in names {
        std::fs::copy(f.dir.join(n), d.path().join(n)).unwrap();
    }
    d
}

fn write(args: &[&str]) -> Output {
    bin().arg("write").args(args).output().unwrap()
}

/// A write from a test server: its output, its target, and the server (for its log). `_dirs` holds
/// the served files and the target: bind it too where `target` is read.
struct Served {
    o: Output,
    target: PathBuf,
    server: TestServer,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// Serves the fixture files `names` from a test server behaving as `b`, and writes the first onto
/// `card.img` in a new directory with the image's `--sha256` and `extra`.
fn write_served(names: &[&str], b: Behaviour, extra: &[&str]) -> Served {
    let f = fixture();
    let dir = served(names);
    let server = TestServer::start(dir.path(), b);
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("card.img");
    let url = server.url(names[0]);
    let t = target.display().to_string();
    let o = write(&[&[url.as_str(), &t, "--sha256", &f.sha256][..], extra].concat());
    Served {
        o,
        target,
        server,
        _dirs: (dir, out),
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_ok(o: &Output) -> String {
    let e = stderr(o);
    assert!(o.status.success(), "write failed:\n{e}");
    e
}

/// [`write_served`] of `name` alone from a server that drops the first connection halfway through
/// it and otherwise behaves as `b`. A failed write leaves no file behind (it created the target).
fn write_dropped_halfway(name: &str, b: Behaviour) -> Output {
    let drops = vec![len(&fixture().dir.join(name)) / 2];
    let s = write_served(&[name], Behaviour { drops, ..b }, &[]);
    if !s.o.status.success() {
        assert!(!s.target.exists(), "a failed write left {:?}", s.target);
    }
    s.o
}

/// A server that drops the first connection after byte `at`.
fn dropping_at(at: u64) -> Behaviour {
    Behaviour {
        drops: vec![at],
        ..Default::default()
    }
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

/// Offsets at 1/4, 2/4 and 3/4 of a file.
fn quarters(p: &Path) -> Vec<u64> {
    let n = len(p);
    vec![n / 4, n / 2, 3 * n / 4]
}

/// Byte-compares two files with cmp.
fn same_bytes(a: &Path, b: &Path) -> bool {
    std::process::Command::new("cmp")
        .arg(a)
        .arg(b)
        .status()
        .expect("cmp (diffutils)")
        .success()
}

/// Three drops during a .xz and a .zst write onto a file: the result is the image, the resumed
/// requests asked for the rest with If-Range, and the report counts the reconnects.
#[test]
fn drops_mid_write_are_resumed_onto_a_file() {
    let f = fixture();
    for name in ["sdcard.img.xz", "sdcard.img.zst"] {
        let drops = quarters(&f.dir.join(name));
        let Served {
            o,
            target,
            server,
            _dirs,
        } = write_served(
            &[name],
            Behaviour {
                drops: drops.clone(),
                ..Default::default()
            },
            &[],
        );
        let e = assert_ok(&o);
        assert_eq!(sha256sum(&target), f.sha256, "{name}: {e}");
        assert_eq!(server.drops_left(), 0, "{name}: every drop happened");
        let reqs = server.requests(name);
        assert_eq!(reqs.len(), 4, "{name}: {reqs:?}");
        assert_eq!(reqs[0].status, 200);
        for (r, at) in reqs[1..].iter().zip(&drops) {
            assert_eq!(r.status, 206, "{name}: {reqs:?}");
            assert_eq!(r.range.as_deref(), Some(format!("bytes={at}-").as_str()));
            assert!(
                r.if_range
                    .as_deref()
                    .is_some_and(|v| v.starts_with("\"v0-")),
                "{name}: If-Range carries the first ETag: {r:?}"
            );
        }
        assert!(e.contains("resumed 3 times"), "{name}: {e}");
        assert!(
            e.contains(&format!("connection lost at byte {}", drops[0])),
            "{e}"
        );
    }
}

/// The same onto a loop device (the card path: O_DIRECT, head written last).
#[test]
fn drops_mid_write_are_resumed_onto_a_loop_device() {
    assert!(is_root(), "needs root (loop devices)");
    let f = fixture();
    for name in ["sdcard.img.xz", "sdcard.img.zst"] {
        let dir = served(&[name]);
        let server = TestServer::start(
            dir.path(),
            Behaviour {
                drops: quarters(&dir.path().join(name)),
                ..Default::default()
            },
        );
        let back = tempfile::tempdir().unwrap();
        let file = back.path().join("card");
        filled(&file, f.size + (4 << 20), 0xa5);
        let lo = Loop::attach(&file, false);
        let e = assert_ok(&write(&[
            &server.url(name),
            &lo.dev,
            "--sha256",
            &f.sha256,
            "--yes",
        ]));
        assert_eq!(sha256_prefix(lo.path(), f.size), f.sha256, "{name}: {e}");
        assert_eq!(server.drops_left(), 0);
        assert!(e.contains("resumed 3 times"), "{e}");
    }
}

/// A body shorter than its Content-Length (the server closes early) is resumed for a raw image, and
/// a stall (no byte for --stall-timeout) is replaced by a new connection; JSON progress shows
/// each reconnect.
#[test]
fn short_body_and_stall_are_resumed() {
    let f = fixture();
    let Served {
        o, target, _dirs, ..
    } = write_served(
        &["sdcard.img"],
        Behaviour {
            drops: vec![f.size / 3],
            stall: Some((2 * f.size / 3, std::time::Duration::from_secs(4))),
            ..Default::default()
        },
        &["--stall-timeout", "1s", "--progress", "json", "--json"],
    );
    assert_ok(&o);
    assert_eq!(sha256sum(&target), f.sha256);
    let progress = String::from_utf8_lossy(&o.stderr);
    let reconnects: Vec<serde_json::Value> = progress
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "reconnect")
        .collect();
    assert_eq!(reconnects.len(), 2, "{progress}");
    assert_eq!(reconnects[0]["offset"], f.size / 3);
    assert!(
        reconnects[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("{}", f.size))),
        "the short body names the announced length: {}",
        reconnects[0]
    );
    assert!(
        reconnects[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no data for 1 s")),
        "{}",
        reconnects[1]
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("the JSON report");
    assert_eq!(report["reconnects"], 2, "{report}");
}

/// The file changes on the server after the first connection dropped: If-Range does not match, the
/// server sends the new file whole, and the write fails naming why instead of splicing two files.
#[test]
fn file_changed_on_the_server_fails_naming_why() {
    let other = tempfile::tempdir().unwrap();
    let new = other.path().join("new.img.xz");
    std::fs::copy(fixture().path(".zst"), &new).unwrap();
    let o = write_dropped_halfway(
        "sdcard.img.xz",
        Behaviour {
            change: Some(("/sdcard.img.xz".into(), new)),
            ..Default::default()
        },
    );
    assert_failed(&o, 1, &["the file changed on the server", "ETag", REMOVED]);
}

/// A server that ignores Range: the drop cannot be resumed; exit status 3 (try again later).
#[test]
fn server_without_range_support_fails() {
    let o = write_dropped_halfway(
        "sdcard.img.xz",
        Behaviour {
            no_range: true,
            ..Default::default()
        },
    );
    assert_failed(&o, 3, &["no HTTP Range support", REMOVED]);
}

/// A resumed response that goes on past the end the server announced is an error, not data.
#[test]
fn body_longer_than_announced_fails() {
    let o = write_dropped_halfway(
        "sdcard.img.zst",
        Behaviour {
            long_by: 4096,
            ..Default::default()
        },
    );
    assert_failed(&o, 1, &["sent more than the", "bytes it announced"]);
}

/// 403 on the sibling bmaps means "not there" (object stores answer 403 for missing objects).
#[test]
fn forbidden_sibling_bmap_is_not_there() {
    let f = fixture();
    let Served {
        o,
        target,
        server,
        _dirs,
    } = write_served(
        &["sdcard.img.xz", "sdcard.img.bmap"],
        Behaviour {
            forbidden: vec![
                "/sdcard.img.xz.bmap".into(),
                "/sdcard.img.bmap".into(),
                "/sdcard.bmap".into(),
            ],
            ..Default::default()
        },
        &[],
    );
    let e = assert_ok(&o);
    assert_eq!(sha256sum(&target), f.sha256);
    assert!(!e.contains("bmap "), "no bmap was used: {e}");
    assert_eq!(server.requests("sdcard.img.bmap")[0].status, 403);
}

/// Without anything to check it, an image from a URL is refused before the target is touched;
/// sums or a bmap over plain http from the same server do not count; --no-checksum lets it through.
#[test]
fn unchecked_url_is_refused_and_the_target_untouched() {
    let f = fixture();
    let dir = served(&["sdcard.img.xz", "sdcard.img.bmap"]);
    let server = TestServer::start(dir.path(), Behaviour::default());
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("card.img");
    filled(&target, 8 << 20, 0x3c);
    let before = out.path().join("before.img");
    std::fs::copy(&target, &before).unwrap();
    // Plain http, a bmap beside it and no sum.
    let o = write(&[&server.url("sdcard.img.xz"), &target.display().to_string()]);
    assert_failed(
        &o,
        2,
        &[
            "refusing to write",
            "--sha256",
            "--md5",
            "--bmap FILE",
            "https",
            "--no-checksum",
            "came over plain http from the same server",
            "nothing was written",
        ],
    );
    assert!(same_bytes(&target, &before), "the target changed");
    // A sums file over plain http does not count either.
    std::fs::write(
        dir.path().join("sdcard.img.sha256"),
        format!("{}  sdcard.img\n", f.sha256),
    )
    .unwrap();
    let o = write(&[&server.url("sdcard.img.xz"), &target.display().to_string()]);
    assert_failed(&o, 2, &["the sha256 from", "came over plain http"]);
    assert!(same_bytes(&target, &before), "the target changed");
    // The explicit way out; the sum found is still checked.
    let fresh = out.path().join("fresh.img");
    let e = assert_ok(&write(&[
        &server.url("sdcard.img.xz"),
        &fresh.display().to_string(),
        "--no-checksum",
    ]));
    assert_eq!(sha256sum(&fresh), f.sha256);
    assert!(e.contains("(matches "), "{e}");
    // --no-checksum has no effect on a local file: an error.
    let o = write(&[
        &f.path(".xz").display().to_string(),
        &target.display().to_string(),
        "--no-checksum",
    ]);
    assert_failed(
        &o,
        2,
        &["--no-checksum only applies to an image from an http(s) URL"],
    );
    let o = write(&[
        &f.path(".xz").display().to_string(),
        &target.display().to_string(),
        "--retries",
        "3",
    ]);
    assert_failed(&o, 2, &["--retries only applies"]);
}

struct Tls {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// `write URL TARGET EXTRA...` trusting only the test CA (SSL_CERT_FILE, no SSL_CERT_DIR beside it).
fn https_write(t: &Tls, url: &str, target: &Path, extra: &[&str]) -> Output {
    bin()
        .env("SSL_CERT_FILE", &t.ca)
        .env_remove("SSL_CERT_DIR")
        .args(["write", url])
        .arg(target)
        .args(extra)
        .output()
        .unwrap()
}

impl Tls {
    /// A test server over https with the certificate the test CA signed.
    fn serve(&self, dir: &Path, b: Behaviour) -> TestServer {
        TestServer::start_tls(dir, b, &self.cert, &self.key)
    }
}

fn tls() -> Tls {
    let d = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certificates(d.path());
    Tls {
        _dir: d,
        ca,
        cert,
        key,
    }
}

/// https with a certificate from a test CA given through SSL_CERT_FILE: the sums beside the image
/// come over https and vouch for it (no --sha256 needed). Without the CA, the server is not trusted.
#[test]
fn https_with_a_test_ca_from_ssl_cert_file() {
    let f = fixture();
    let t = tls();
    let dir = served(&["sdcard.img.zst"]);
    std::fs::write(
        dir.path().join("sdcard.img.sha256"),
        format!("{}  sdcard.img\n", f.sha256),
    )
    .unwrap();
    let server = t.serve(dir.path(), dropping_at(len(&f.path(".zst")) / 3));
    assert!(server.base.starts_with("https://127.0.0.1:"));
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("card.img");
    let o = https_write(&t, &server.url("sdcard.img.zst"), &target, &[]);
    let e = assert_ok(&o);
    assert_eq!(sha256sum(&target), f.sha256);
    assert!(
        e.contains(&format!("(matches {})", server.url("sdcard.img.sha256"))),
        "{e}"
    );
    assert!(e.contains("resumed 1 time"), "{e}");
    // The system store does not know the test CA.
    let target2 = out.path().join("card2.img");
    let o = bin()
        .env_remove("SSL_CERT_FILE")
        .args(["write", &server.url("sdcard.img.zst")])
        .arg(&target2)
        .output()
        .unwrap();
    assert_failed(&o, 1, &["TLS", "SSL_CERT_FILE"]);
    assert!(!target2.exists(), "nothing was created");
}

/// A redirect from https to plain http is refused.
#[test]
fn redirect_from_https_to_http_is_refused() {
    let f = fixture();
    let t = tls();
    let dir = served(&["sdcard.img.xz"]);
    let plain = TestServer::start(dir.path(), Behaviour::default());
    let mut b = Behaviour::default();
    b.redirects
        .insert("/moved.img.xz".into(), plain.url("sdcard.img.xz"));
    let server = t.serve(dir.path(), b);
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("card.img");
    let o = https_write(
        &t,
        &server.url("moved.img.xz"),
        &target,
        &["--sha256", &f.sha256],
    );
    assert_failed(
        &o,
        1,
        &["refusing the redirect to", &plain.url("sdcard.img.xz")],
    );
    assert!(plain.log().is_empty(), "the http server was never asked");
    // https → https is followed.
    let mut b = Behaviour::default();
    b.redirects
        .insert("/moved.img.xz".into(), "/sdcard.img.xz".into());
    drop(server);
    let server = t.serve(dir.path(), b);
    let o = https_write(
        &t,
        &server.url("moved.img.xz"),
        &target,
        &["--sha256", &f.sha256],
    );
    assert_ok(&o);
    assert_eq!(sha256sum(&target), f.sha256);
}

/// A server that cannot be reached: the retries are shown, then exit status 3.
#[test]
fn gives_up_after_the_retries_with_exit_status_3() {
    let f = fixture();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("card.img");
    let o = write(&[
        &format!("http://127.0.0.1:{port}/sdcard.img.xz"),
        &target.display().to_string(),
        "--sha256",
        &f.sha256,
        "--retries",
        "2",
        "--retry-time",
        "20s",
        "--progress",
        "json",
    ]);
    assert_failed(&o, 3, &["gave up after 3 attempts", "try again later"]);
    let progress = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        progress.matches("\"event\":\"reconnect\"").count(),
        2,
        "{progress}"
    );
    assert!(!target.exists());
}

/// The network options are checked before anything is fetched.
#[test]
fn network_options_are_checked() {
    for (flag, value, needle) in [
        ("--retry-time", "5x", "expected a duration"),
        ("--stall-timeout", "0s", "between 1ms and 7 days"),
        ("--connect-timeout", "8d", "between 1ms and 7 days"),
        ("--retries", "many", "invalid value"),
    ] {
        let o = write(&[
            "http://127.0.0.1:9/sdcard.img.xz",
            "/nonexistent/card.img",
            flag,
            value,
        ]);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(needle),
            "{flag} {value}: {}",
            stderr(&o)
        );
    }
    let o = write(&[
        "http://127.0.0.1:9/sdcard.img.xz",
        "/nonexistent/card.img",
        "--no-checksum",
        "--sha256",
        &"ab".repeat(32),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
}

/// Every option clap lists for `write`'s URL sources (`NetArgs`, so a new one is covered without a new
/// case) is refused for a local file and for standard input, naming it, before anything is created;
/// with a URL the same option is accepted (the run then stops at a later check, before connecting).
#[test]
fn every_network_option_is_refused_without_a_url() {
    let args = cli_definition::write_net_arguments();
    let longs: Vec<String> = args
        .iter()
        .map(|a| format!("--{}", a.get_long().expect("a long option")))
        .collect();
    support::assert_has_all(
        &longs,
        &[
            "--no-checksum",
            "--retries",
            "--retry-time",
            "--stall-timeout",
            "--connect-timeout",
        ],
    );
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("card.img").display().to_string();
    let local = d.path().join("sdcard.img").display().to_string();
    for (arg, long) in args.iter().zip(&longs) {
        let mut option = vec![long.as_str()];
        if arg.get_action().takes_values() {
            // Valid for every value kind the options have (a count, a duration in seconds).
            option.push("1");
        }
        for src in [local.as_str(), "-"] {
            let o = write(&[&[src, target.as_str()][..], &option].concat());
            let e = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{long} with {src}: {e}");
            assert!(
                e.contains(&format!(
                    "{long} only applies to an image from an http(s) URL; {src} is not one"
                )),
                "{long} with {src}: {e}"
            );
        }
        let url = "http://127.0.0.1:9/sdcard.img.xz";
        let o = write(
            &[
                &[url, target.as_str()][..],
                &option,
                &["--max-window", "3MiB"],
            ]
            .concat(),
        );
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{long} with a URL: {e}");
        assert!(
            e.contains("--max-window: ") && !e.contains("only applies"),
            "{long} with a URL: {e}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The sum of the downloaded file itself (SRC's line in SHA256SUMS, or SRC.md5 as the seed's .7z had),
/// fetched over https beside it, vouches for the image; it is hashed as the bytes arrive (also across
/// a resume), and a wrong one fails the write before the head is written.
#[test]
fn download_sums_over_https_vouch_and_are_checked() {
    let f = fixture();
    let t = tls();
    let dir = served(&["sdcard.img.xz", "sdcard.img.7z"]);
    let xz_sum = sha256sum(&dir.path().join("sdcard.img.xz"));
    std::fs::write(
        dir.path().join("SHA256SUMS"),
        format!(
            "{}  other.img.xz\n{xz_sum}  sdcard.img.xz\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    let md5 = run(
        "md5sum",
        &[&dir.path().join("sdcard.img.7z").display().to_string()],
    );
    std::fs::write(
        dir.path().join("sdcard.img.7z.md5"),
        md5.replace(&dir.path().display().to_string(), ""),
    )
    .unwrap();
    let server = t.serve(dir.path(), dropping_at(len(&f.path(".xz")) / 2));
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("xz.img");
    let e = assert_ok(&https_write(&t, &server.url("sdcard.img.xz"), &target, &[]));
    assert_eq!(sha256sum(&target), f.sha256);
    assert!(
        e.contains(&format!(
            "download sha256 {xz_sum} (matches {})",
            server.url("SHA256SUMS")
        )),
        "{e}"
    );
    assert!(e.contains("resumed 1 time"), "{e}");
    let target = out.path().join("7z.img");
    let e = assert_ok(&https_write(&t, &server.url("sdcard.img.7z"), &target, &[]));
    assert_eq!(sha256sum(&target), f.sha256);
    assert!(e.contains("download md5"), "{e}");
    // A sum that does not match: the write fails, the card is left without its head.
    std::fs::write(
        dir.path().join("SHA256SUMS"),
        format!("{}  sdcard.img.xz\n", "ab".repeat(32)),
    )
    .unwrap();
    let target = out.path().join("bad.img");
    let o = https_write(&t, &server.url("sdcard.img.xz"), &target, &[]);
    assert_failed(
        &o,
        1,
        &["the downloaded file's sha256 is", &xz_sum, REMOVED],
    );
    assert!(!target.exists(), "a failed write left {target:?}");
}
