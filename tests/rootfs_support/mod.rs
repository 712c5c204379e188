//! Helpers shared by the root filesystem tests: a counting HTTP proxy (to observe what apt downloads), a
//! stand-in prebuilt root filesystem, password hashes from openssl, and tar readers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::support::sha256_file;

/// One request the proxy forwarded.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub url: String,
    pub status: u16,
    pub bytes: u64,
}

/// An HTTP proxy on 127.0.0.1 that records every request. It forwards absolute-form requests (a
/// forward proxy, `http_proxy=`) and origin-form ones to `upstream` (a mirror URL pointing at it), so a
/// build whose mirror is `http://127.0.0.1:PORT/debian` cannot fetch anything it does not see.
pub struct CountingProxy {
    pub port: u16,
    pub log: Arc<Mutex<Vec<Fetched>>>,
}

impl CountingProxy {
    pub fn start(upstream: &str) -> CountingProxy {
        let upstream = upstream.to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let log: Arc<Mutex<Vec<Fetched>>> = Arc::default();
        let l2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let log = Arc::clone(&l2);
                let upstream = upstream.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &log, &upstream);
                });
            }
        });
        CountingProxy { port, log }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn fetched(&self) -> Vec<Fetched> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Package files (.deb) served with content (status 200).
    pub fn debs(&self) -> Vec<Fetched> {
        self.fetched()
            .into_iter()
            .filter(|f| f.url.ends_with(".deb") && f.status == 200)
            .collect()
    }
}

fn serve(client: TcpStream, log: &Mutex<Vec<Fetched>>, upstream: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    loop {
        // Request head.
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            head.push(line.trim_end().to_string());
        }
        let Some(request) = head.first() else {
            return Ok(());
        };
        let mut parts = request.split_whitespace();
        let method = parts.next().unwrap_or("GET").to_string();
        let mut url = parts.next().unwrap_or("").to_string();
        if url.starts_with('/') {
            url = format!("http://{upstream}{url}");
        }
        let Some(rest) = url.strip_prefix("http://") else {
            client.write_all(b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\n\r\n")?;
            continue;
        };
        let host_only = rest.split('/').next().unwrap_or("").to_string();
        let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let hostport = if hostport.contains(':') {
            hostport.to_string()
        } else {
            format!("{hostport}:80")
        };
        let mut upstream = TcpStream::connect(&hostport)?;
        let mut req = format!(
            "{method} {} HTTP/1.1\r\n",
            if path.is_empty() { "/" } else { path }
        );
        for h in &head[1..] {
            let lower = h.to_ascii_lowercase();
            if lower.starts_with("proxy-")
                || lower.starts_with("connection:")
                || lower.starts_with("keep-alive")
                || lower.starts_with("host:")
            {
                continue;
            }
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str(&format!("Host: {host_only}\r\nConnection: close\r\n\r\n"));
        upstream.write_all(req.as_bytes())?;
        let mut response = Vec::new();
        upstream.read_to_end(&mut response)?;
        let head_end = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| i + 4)
            .unwrap_or(response.len());
        let head_text = String::from_utf8_lossy(&response[..head_end]).to_string();
        let status: u16 = head_text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let framed = head_text.to_ascii_lowercase().contains("content-length:")
            || head_text
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked")
            || status == 304
            || status == 204;
        if let Ok(mut l) = log.lock() {
            l.push(Fetched {
                url: url.clone(),
                status,
                bytes: (response.len() - head_end) as u64,
            });
        }
        // Pass the response on, telling the client whether the connection stays open.
        let mut out_head = String::new();
        for line in head_text.split("\r\n").filter(|l| !l.is_empty()) {
            if line.to_ascii_lowercase().starts_with("connection:") {
                continue;
            }
            out_head.push_str(line);
            out_head.push_str("\r\n");
        }
        out_head.push_str(if framed {
            "Connection: keep-alive\r\n\r\n"
        } else {
            "Connection: close\r\n\r\n"
        });
        client.write_all(out_head.as_bytes())?;
        client.write_all(&response[head_end..])?;
        client.flush()?;
        if !framed {
            return Ok(());
        }
    }
}

/// `openssl passwd -6` with a fixed salt: the reference hash for a password.
pub fn sha512_hash(password: &str, salt: &str) -> String {
    let out = crate::support::run_ok(
        Command::new("openssl").args(["passwd", "-6", "-salt", salt, password]),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Does `hash` (from /etc/shadow) verify `password`? Checked with the system's crypt(3) (libxcrypt,
/// the library PAM uses on the board) through Perl, not with boardsmith's code: yescrypt, SHA-512-crypt
/// and the rest.
pub fn hash_matches(hash: &str, password: &str) -> bool {
    let out = crate::support::run_ok(Command::new("perl").args([
        "-e",
        "print crypt($ARGV[0], $ARGV[1])",
        password,
        hash,
    ]));
    String::from_utf8_lossy(&out.stdout) == hash
}

/// Contents of `member` in a tarball, through GNU tar.
pub fn tar_read(tarball: &Path, member: &str) -> Option<Vec<u8>> {
    for name in [member.to_string(), format!("./{member}")] {
        let out = Command::new("tar")
            .arg("-xOf")
            .arg(tarball)
            .arg(&name)
            .output()
            .ok()?;
        if out.status.success() {
            return Some(out.stdout);
        }
    }
    None
}

pub fn tar_string(tarball: &Path, member: &str) -> String {
    String::from_utf8_lossy(&tar_read(tarball, member).unwrap_or_default()).into_owned()
}

/// `tar -tvf` listing: name → (type char, mode string, owner/group, link target).
pub fn tar_list(tarball: &Path) -> BTreeMap<String, (char, String, String, Option<String>)> {
    let out = crate::support::run_ok(
        Command::new("tar")
            .args(["--numeric-owner", "-tvf"])
            .arg(tarball),
    );
    let mut m = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 {
            continue;
        }
        let perms = f[0].to_string();
        let owner = f[1].to_string();
        let rest = f[5..].join(" ");
        let (name, link) = if let Some((n, l)) = rest.split_once(" -> ") {
            (n.to_string(), Some(l.to_string()))
        } else if let Some((n, l)) = rest.split_once(" link to ") {
            (n.to_string(), Some(l.to_string()))
        } else {
            (rest, None)
        };
        let name = name
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        m.insert(
            name,
            (perms.chars().next().unwrap_or('?'), perms, owner, link),
        );
    }
    m
}

/// PARTUUID and label of a board's partitions from `boardsmith show --json` (the image plan).
pub fn planned_partitions(board: &str, epoch: &str) -> Vec<(String, String, Option<String>)> {
    let out = crate::support::run_ok(
        crate::support::boardsmith()
            .args(["show", board, "--json"])
            .env("SOURCE_DATE_EPOCH", epoch),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v["layout"]["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            (
                p["role"].as_str().unwrap_or("").to_string(),
                p["partuuid"].as_str().unwrap_or("").to_string(),
                p["label"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// The DroidMote server installed in the root filesystem tarball `tar` is the binary whose sha256
/// (by sha256sum) is `sha`.
pub fn assert_installed_droidmote(tar: &Path, sha: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let installed = dir.path().join("droidmote");
    std::fs::write(
        &installed,
        tar_read(tar, "usr/local/bin/droidmote").expect("droidmote in the tarball"),
    )
    .expect("write");
    assert_eq!(sha256_file(&installed), sha);
}

/// A stand-in DroidMote server: a shell script that reports its arguments.
pub fn fake_droidmote(dir: &Path) -> (PathBuf, String) {
    let p = dir.join("droidmote");
    std::fs::write(
        &p,
        "#!/bin/sh\n# stand-in for the proprietary DroidMote server (tests)\necho \"droidmote stand-in: port $1\"\nexec sleep infinity\n",
    )
    .expect("write");
    let sha = sha256_file(&p);
    (p, sha)
}

/// A small "prebuilt" root filesystem tarball (gzip), shaped like a Debian armhf system with the
/// board files the cubieboard profile expects: what a user might download from another distribution.
pub fn prebuilt_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("prebuilt");
    let w = |p: &str, data: &[u8]| {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, data).expect("write");
    };
    // The accounts, a login shell, the units the configuration enables, and the kernel files.
    let files: &[(&str, &[u8])] = &[
        ("etc/passwd", b"root:x:0:0:root:/root:/bin/bash\nmessagebus:x:100:107::/nonexistent:/usr/sbin/nologin\n"),
        ("etc/shadow", b"root:$6$old$oldhash:19000:0:99999:7:::\nmessagebus:!:19000::::::\n"),
        ("etc/group", b"root:x:0:\nadm:x:4:\nshadow:x:42:\nsudo:x:27:\naudio:x:29:\nvideo:x:44:\ninput:x:105:\nmessagebus:x:107:\n"),
        ("etc/gshadow", b"root:*::\nadm:*::\nshadow:*::\nsudo:*::\naudio:*::\nvideo:*::\ninput:*::\nmessagebus:!::\n"),
        ("etc/skel/.bashrc", b"# bashrc\n"),
        ("etc/hostname", b"buildhost\n"),
        ("bin/bash", b"#!fake\n"),
        ("usr/lib/systemd/system/serial-getty@.service", b"[Unit]\nDescription=Serial Getty on %I\n[Service]\nExecStart=-/sbin/agetty %I\n[Install]\nWantedBy=getty.target\n"),
        ("usr/lib/systemd/system/systemd-networkd.service", b"[Service]\nExecStart=/lib/systemd/systemd-networkd\n[Install]\nWantedBy=multi-user.target\nAlias=dbus-org.freedesktop.network1.service\n"),
        ("usr/lib/systemd/system/lightdm.service", b"[Service]\nExecStart=/usr/sbin/lightdm\n[Install]\nAlias=display-manager.service\n"),
        ("usr/lib/systemd/system/graphical.target", b"[Unit]\nDescription=Graphical Interface\n"),
        ("boot/vmlinuz-6.1.0-test-armmp", b"zImage stand-in"),
        ("boot/initrd.img-6.1.0-test-armmp", b"initrd stand-in"),
        ("usr/lib/linux-image-6.1.0-test-armmp/sun4i-a10-cubieboard.dtb", b"\xd0\x0d\xfe\xed dtb stand-in"),
    ];
    for (path, data) in files {
        w(path, data);
    }
    let mut blob = vec![0u8; 32768];
    blob[4..12].copy_from_slice(b"eGON.BT0");
    w("usr/lib/u-boot/Cubieboard/u-boot-sunxi-with-spl.bin", &blob);
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).expect("symlink");
    let tarball = dir.join("prebuilt.tar.gz");
    let st = Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@1600000000",
            "-czf",
        ])
        .arg(&tarball)
        .arg("-C")
        .arg(&root)
        .arg(".")
        .status()
        .expect("tar");
    assert!(st.success());
    tarball
}

/// Copies the root partition (the last one) out of an image, by the offsets sfdisk reads.
pub fn extract_root_partition(img: &Path, dir: &Path) -> PathBuf {
    let o = Command::new("sfdisk")
        .arg("--json")
        .arg(img)
        .output()
        .expect("sfdisk");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("sfdisk json");
    let parts = v["partitiontable"]["partitions"]
        .as_array()
        .expect("partitions");
    let last = parts.last().expect("a partition");
    let start = last["start"].as_u64().expect("start");
    let size = last["size"].as_u64().expect("size");
    let out = dir.join("root.ext4");
    let st = Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", out.display()))
        .args([
            "bs=1M",
            "iflag=skip_bytes,count_bytes",
            &format!("skip={}", start * 512),
            &format!("count={}", size * 512),
            "conv=sparse",
            "status=none",
        ])
        .status()
        .expect("dd");
    assert!(st.success());
    out
}

/// An HTTP server on 127.0.0.1 that serves one file but sends only its first `head` bytes, then holds
/// the connection open: a download that is under way for as long as the test needs. `reached` turns
/// true once the head is sent; `closed` once the client went away (it was stopped).
pub struct StallingServer {
    pub url: String,
    pub reached: Arc<std::sync::atomic::AtomicBool>,
    pub closed: Arc<std::sync::atomic::AtomicBool>,
}

impl StallingServer {
    pub fn start(data: Vec<u8>, head: usize, name: &str) -> StallingServer {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let reached = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicBool::new(false));
        let (r, c) = (Arc::clone(&reached), Arc::clone(&closed));
        std::thread::spawn(move || {
            // One client is enough; the thread ends with the test process.
            let Some(Ok(mut conn)) = listener.incoming().next() else {
                return;
            };
            let mut reader = BufReader::new(conn.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if line == "\r\n" {
                    break;
                }
                line.clear();
            }
            let head_text = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
                data.len()
            );
            if conn.write_all(head_text.as_bytes()).is_err()
                || conn.write_all(&data[..head.min(data.len())]).is_err()
            {
                return;
            }
            let _ = conn.flush();
            r.store(true, Ordering::SeqCst);
            // Wait (bounded: two minutes) until the client closes its end.
            let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(120)));
            let mut buf = [0u8; 1];
            if matches!(reader.get_mut().read(&mut buf), Ok(0)) {
                c.store(true, Ordering::SeqCst);
            }
        });
        StallingServer {
            url: format!("http://127.0.0.1:{port}/{name}"),
            reached,
            closed,
        }
    }
}

/// Polls `cond` every 10 ms for at most `secs` seconds.
pub fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    cond()
}

/// Names in a directory (hidden ones included), sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Permission bits of a path.
pub fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
}

/// An HTTP server on 127.0.0.1 serving the files under a directory (a stand-in archive: its
/// `dists/SUITE/InRelease` files), one request per connection; every requested path is recorded.
/// Paths under `/private/` are answered 403 Forbidden (a mirror that wants credentials).
pub struct FileServer {
    pub url: String,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl FileServer {
    pub fn start(root: &Path) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (log, root) = (Arc::clone(&requests), root.to_path_buf());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut first = String::new();
                let _ = reader.read_line(&mut first);
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                    line.clear();
                }
                let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
                if let Ok(mut l) = log.lock() {
                    l.push(path.clone());
                }
                let file = root.join(path.trim_start_matches('/'));
                let mut conn = conn;
                if path.starts_with("/private/") {
                    let _ = conn.write_all(
                        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    continue;
                }
                let _ = match std::fs::read(&file) {
                    Ok(data) if !path.contains("..") => conn
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                data.len()
                            )
                            .as_bytes(),
                        )
                        .and_then(|()| conn.write_all(&data)),
                    _ => conn.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                };
            }
        });
        FileServer {
            url: format!("http://127.0.0.1:{port}"),
            requests,
        }
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|l| l.clone()).unwrap_or_default()
    }
}
