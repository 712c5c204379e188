//! A small HTTP/1.1 file server on 127.0.0.1 for the network tests (and, as `examples/netserver.rs`,
//! for benches/network.sh): Range and If-Range with a strong ETag and Last-Modified, and faults on
//! demand: connections dropped at chosen file offsets, a stall, no Range support, bodies shorter or
//! longer than announced, 403 for chosen paths, the file changing between connections, redirects,
//! a rate limit, and TLS with a certificate from the test's own CA.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the server behaves. The default is a well-behaved server with Range support.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Ignore Range headers: always answer 200 with the whole file.
    pub no_range: bool,
    /// Send neither ETag nor Last-Modified.
    pub no_validators: bool,
    /// File offsets at which the connection is cut, each once (the body ends early, as when a
    /// connection drops).
    pub drops: Vec<u64>,
    /// For repeated downloads (benchmarks): every request without a Range header sets `drops`
    /// to these offsets again.
    pub repeat_drops: Vec<u64>,
    /// Stop sending at this offset for this long, once (the connection stays open).
    pub stall: Option<(u64, Duration)>,
    /// Answer range requests with this many bytes beyond the file's end (Content-Length included).
    pub long_by: u64,
    /// After the first cut connection, serve this file for this path instead (another ETag,
    /// another date).
    pub change: Option<(String, PathBuf)>,
    /// Paths answered 403 (an object store's "no such object").
    pub forbidden: Vec<String>,
    /// Paths answered 302 with this Location.
    pub redirects: HashMap<String, String>,
    /// Bytes per second per connection (0: unlimited).
    pub rate: u64,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub path: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub status: u16,
}

struct State {
    dir: PathBuf,
    behaviour: Mutex<Behaviour>,
    changed: AtomicBool,
    log: Mutex<Vec<Logged>>,
}

pub struct TestServer {
    pub base: String,
    pub port: u16,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
}

impl TestServer {
    /// Serves the files of `dir` over plain http.
    pub fn start(dir: &Path, b: Behaviour) -> TestServer {
        Self::spawn(dir, b, None, 0)
    }

    /// Serves over https with the certificate chain and key in PEM files.
    pub fn start_tls(dir: &Path, b: Behaviour, cert: &Path, key: &Path) -> TestServer {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(cert)
            .expect("read certificate")
            .collect::<Result<Vec<_>, _>>()
            .expect("parse certificate");
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).expect("read key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server certificate");
        Self::spawn(dir, b, Some(Arc::new(config)), 0)
    }

    /// Plain http on a given port (0: any).
    pub fn start_on(dir: &Path, b: Behaviour, port: u16) -> TestServer {
        Self::spawn(dir, b, None, port)
    }

    fn spawn(
        dir: &Path,
        b: Behaviour,
        tls: Option<Arc<rustls::ServerConfig>>,
        port: u16,
    ) -> TestServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local address").port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let state = Arc::new(State {
            dir: dir.to_path_buf(),
            behaviour: Mutex::new(b),
            changed: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        {
            let state = state.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = state.clone();
                    let tls = tls.clone();
                    std::thread::spawn(move || {
                        let _ = conn.set_nodelay(true);
                        match tls {
                            None => {
                                let c2 = conn.try_clone().ok();
                                let _ = serve(conn, &state);
                                if let Some(c) = c2 {
                                    let _ = c.shutdown(Shutdown::Both);
                                }
                            }
                            Some(cfg) => {
                                let c2 = conn.try_clone().ok();
                                if let Ok(sc) = rustls::ServerConnection::new(cfg) {
                                    let mut s = rustls::StreamOwned::new(sc, conn);
                                    let _ = serve(&mut s, &state);
                                    s.conn.send_close_notify();
                                    let _ = s.flush();
                                }
                                if let Some(c) = c2 {
                                    let _ = c.shutdown(Shutdown::Both);
                                }
                            }
                        }
                    });
                }
            });
        }
        TestServer {
            base: format!("{scheme}://127.0.0.1:{port}"),
            port,
            state,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Requests for `path`.
    pub fn requests(&self, path: &str) -> Vec<Logged> {
        let p = format!("/{}", path.trim_start_matches('/'));
        self.log().into_iter().filter(|l| l.path == p).collect()
    }

    /// Drops not yet used.
    pub fn drops_left(&self) -> usize {
        self.state
            .behaviour
            .lock()
            .map(|b| b.drops.len())
            .unwrap_or(0)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The validators of a file version.
fn validators(meta: &std::fs::Metadata, version: u32) -> (String, String) {
    use std::os::unix::fs::MetadataExt;
    let etag = format!("\"v{version}-{:x}-{:x}\"", meta.len(), meta.ino());
    // An HTTP date; the version moves it so that a changed file has another one.
    let days = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let secs = 1_700_000_000u64 + u64::from(version) * 86_400;
    let day = secs / 86_400;
    let date = format!(
        "{}, {:02} Nov 2023 {:02}:{:02}:{:02} GMT",
        days[(day % 7) as usize],
        14 + version,
        (secs % 86_400) / 3600,
        (secs % 3600) / 60,
        secs % 60
    );
    (etag, date)
}

fn serve<S: Read + Write>(mut s: S, st: &State) -> std::io::Result<()> {
    // The request head (bounded).
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 << 10 || s.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = BufReader::new(text.as_bytes()).lines();
    let request_line = lines.next().and_then(|l| l.ok()).unwrap_or_default();
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let mut range = None;
    let mut if_range = None;
    for l in lines.map_while(Result::ok) {
        if let Some((k, v)) = l.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(v.trim().to_string()),
                "if-range" => if_range = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    if range.is_none()
        && let Ok(mut bh) = st.behaviour.lock()
        && !bh.repeat_drops.is_empty()
    {
        bh.drops = bh.repeat_drops.clone();
    }
    let b = st.behaviour.lock().map(|b| b.clone()).unwrap_or_default();
    let log = |status: u16| {
        if let Ok(mut l) = st.log.lock() {
            l.push(Logged {
                path: path.clone(),
                range: range.clone(),
                if_range: if_range.clone(),
                status,
            });
        }
    };
    if b.forbidden.contains(&path) {
        log(403);
        return s.write_all(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\nConnection: close\r\n\r\nForbidden",
        );
    }
    if let Some(to) = b.redirects.get(&path) {
        log(302);
        return s.write_all(
            format!(
                "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
    }
    let changed = st.changed.load(Ordering::SeqCst);
    let (file_path, changed) = match &b.change {
        Some((p, new)) if changed && *p == path => (new.clone(), true),
        _ => (st.dir.join(path.trim_start_matches('/')), false),
    };
    let rel = path.trim_start_matches('/');
    let Ok(mut file) = std::fs::File::open(&file_path) else {
        log(404);
        return s.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nNot Found",
        );
    };
    if rel.is_empty() || rel.contains("..") || !file_path.is_file() {
        log(404);
        return s.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let meta = file.metadata()?;
    let len = meta.len();
    let (etag, date) = validators(&meta, u32::from(changed));
    let mut start = 0u64;
    let mut partial = false;
    if let Some(r) = range.as_deref().and_then(|r| r.strip_prefix("bytes="))
        && !b.no_range
    {
        let valid = if_range.as_deref().is_none_or(|v| v == etag || v == date);
        if valid {
            let from = r.split('-').next().unwrap_or("0").trim();
            start = from.parse().unwrap_or(0);
            partial = true;
        }
    }
    let mut hdr = String::new();
    if partial && start >= len {
        log(416);
        return s.write_all(
            format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
    }
    let extra = if partial { b.long_by } else { 0 };
    let body_len = len - start + extra;
    if partial {
        log(206);
        hdr.push_str("HTTP/1.1 206 Partial Content\r\n");
        hdr.push_str(&format!(
            "Content-Range: bytes {start}-{}/{len}\r\n",
            len - 1
        ));
    } else {
        log(200);
        hdr.push_str("HTTP/1.1 200 OK\r\n");
    }
    if !b.no_range {
        hdr.push_str("Accept-Ranges: bytes\r\n");
    }
    if !b.no_validators {
        hdr.push_str(&format!("ETag: {etag}\r\nLast-Modified: {date}\r\n"));
    }
    hdr.push_str(&format!(
        "Content-Length: {body_len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
    ));
    s.write_all(hdr.as_bytes())?;
    file.seek(SeekFrom::Start(start))?;
    let mut reader = BufReader::with_capacity(256 << 10, file);
    let mut pos = start;
    let mut buf = vec![0u8; 64 << 10];
    let started = Instant::now();
    let mut sent = 0u64;
    loop {
        // Faults at this position.
        let mut cut_at = None;
        let mut stall = None;
        if let Ok(mut bh) = st.behaviour.lock() {
            if let Some(i) = bh.drops.iter().position(|&d| d >= pos) {
                cut_at = Some(bh.drops[i]);
            }
            if let Some((at, d)) = bh.stall
                && at <= pos
            {
                stall = Some(d);
                bh.stall = None;
            }
        }
        if let Some(d) = stall {
            s.flush()?;
            std::thread::sleep(d);
        }
        let mut want = buf.len() as u64;
        if let Some(c) = cut_at {
            if c == pos {
                if let Ok(mut bh) = st.behaviour.lock() {
                    bh.drops.retain(|&d| d != c);
                }
                if b.change.as_ref().is_some_and(|c| c.0 == path) {
                    st.changed.store(true, Ordering::SeqCst);
                }
                s.flush()?;
                return Ok(());
            }
            want = want.min(c - pos);
        }
        let n = reader.read(&mut buf[..want as usize])?;
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n])?;
        pos += n as u64;
        sent += n as u64;
        if b.rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / b.rate as f64);
            let el = started.elapsed();
            if due > el {
                std::thread::sleep(due - el);
            }
        }
    }
    if extra > 0 {
        s.write_all(&vec![0x5a; extra as usize])?;
    }
    s.flush()
}

/// A test CA and a server certificate for 127.0.0.1 made with the openssl CLI: (ca.pem, cert, key).
pub fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let d = dir.display().to_string();
    let script = format!(
        "set -e; cd {d}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem \
  -days 2 -subj /CN=boardsmith-test-CA -addext basicConstraints=critical,CA:TRUE \
  -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr \
  -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 \
  -extfile ext.cnf 2>/dev/null"
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash/openssl (apt-get install openssl): {e}"));
    assert!(
        out.status.success(),
        "openssl failed (apt-get install openssl): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}
