//! HTTP(S) downloads, shared by the writer (`write`) and the root filesystem builder (`rootfs`): one
//! ureq agent (certificates from the system store through rustls-platform-verifier, or the bundle
//! `SSL_CERT_FILE` names), connect and stall timeouts, no redirect from https to plain http, and a
//! body reader ([`Download`]) that resumes where a dropped or stalled connection left off.
//!
//! Resuming: after a read error, a stall (no byte for the stall timeout) or a body that ends before
//! the length the server announced, the reader asks again for `Range: bytes=OFFSET-` with `If-Range`
//! set to the first response's strong ETag (or its Last-Modified): at once after a connection that
//! brought bytes (a drop is most often a one-off: a proxy or load balancer cutting a long transfer),
//! then after a backoff (0.2 s doubling, at most 30 s) for each further attempt in a row. Whoever reads the body sees one continuous stream. It gives up after
//! [`NetOptions::retries`] attempts in a row that bring no new byte, or when no new byte arrived for
//! [`NetOptions::retry_time`]. A server that answers the range request with the whole file again
//! (no Range support), a file that changed (another validator, another length, an If-Range
//! mismatch) and a body longer than announced end the download with an error naming why.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Retry and timeout settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetOptions {
    /// Attempts in a row that bring no new byte before giving up (connecting counts as one).
    pub retries: u32,
    /// Longest time without a new byte, across attempts, before giving up.
    pub retry_time: Duration,
    /// Time to establish a connection (DNS, TCP, TLS).
    pub connect_timeout: Duration,
    /// Time without a byte from the server before the connection counts as dropped.
    pub stall_timeout: Duration,
}

pub const DEFAULT_RETRIES: u32 = 8;
pub const DEFAULT_RETRY_TIME: Duration = Duration::from_secs(300);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            retries: DEFAULT_RETRIES,
            retry_time: DEFAULT_RETRY_TIME,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        }
    }
}

/// First backoff; it doubles with each attempt in a row, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The pause before attempt `failures` of a row (1 = the first since a byte arrived): none for the
/// first, then [`FIRST_BACKOFF`] doubling up to [`MAX_BACKOFF`], never past what is `left` of the retry
/// time.
fn backoff(failures: u32, left: Duration) -> Duration {
    match failures {
        0 | 1 => Duration::ZERO,
        n => FIRST_BACKOFF
            .saturating_mul(1 << (n - 2).min(16))
            .min(MAX_BACKOFF)
            .min(left),
    }
}

/// A reconnect, as progress displays show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reconnect {
    pub url: String,
    /// Bytes of the file received so far: the next request asks for the rest from here.
    pub offset: u64,
    /// 1 for the first attempt after a failure; counts attempts in a row without a new byte.
    pub attempt: u32,
    pub retries: u32,
    /// Wait before the attempt.
    pub delay_ms: u64,
    /// What went wrong with the previous connection.
    pub reason: String,
}

impl Reconnect {
    /// One line for a person.
    pub fn message(&self) -> String {
        let what = if self.offset == 0 {
            format!("{}: {}", self.url, self.reason)
        } else {
            format!(
                "{}: connection lost at byte {} ({})",
                self.url, self.offset, self.reason
            )
        };
        format!(
            "{what}; trying again in {:.1} s (attempt {} of {})",
            self.delay_ms as f64 / 1000.0,
            self.attempt,
            self.retries
        )
    }
}

/// Receives reconnects from whichever thread reads the download.
pub type NetObserver = Arc<dyn Fn(&Reconnect) + Send + Sync>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum NetError {
    #[error("{url}: not a usable http(s) URL: {message}")]
    BadUrl { url: String, message: String },
    #[error("{url}: the server answered HTTP {status}{}", status_hint(*status))]
    Status { url: String, status: u16 },
    #[error(
        "{url}: gave up after {attempts} attempts in a row without progress ({seconds} s without a new byte) at byte {offset}: {last}; the network or the server is failing: try again later"
    )]
    GaveUp {
        url: String,
        offset: u64,
        attempts: u32,
        seconds: u64,
        last: String,
    },
    #[error(
        "{url}: the connection dropped at byte {offset} ({reason}) and the server cannot resume: it answered the request for the rest with the whole file again (no HTTP Range support); start again, or download the file first"
    )]
    NoRange {
        url: String,
        offset: u64,
        reason: String,
    },
    #[error(
        "{url}: the file changed on the server during the download ({detail}); the bytes after {offset} would come from another file: start again"
    )]
    Changed {
        url: String,
        offset: u64,
        detail: String,
    },
    #[error(
        "{url}: the server sent more than the {expected} bytes it announced ({detail}); it is misbehaving, nothing it sent is used"
    )]
    TooLong {
        url: String,
        expected: u64,
        detail: String,
    },
    #[error("{url}: {detail}")]
    Protocol { url: String, detail: String },
    #[error(
        "{url}: refusing the redirect to {to}: a download that starts over https never continues over plain http"
    )]
    Downgrade { url: String, to: String },
    #[error(
        "{url}: TLS: {message} (certificates come from the system store, /etc/ssl/certs on Debian; SSL_CERT_FILE names another bundle)"
    )]
    Tls { url: String, message: String },
    #[error(
        "{url}: the connection dropped at byte {offset} ({reason}), and the server gives no ETag or Last-Modified that would show whether the file changed meanwhile; without a checksum such a download is not resumed: start again"
    )]
    Unvalidated {
        url: String,
        offset: u64,
        reason: String,
    },
    #[error("{url}: interrupted")]
    Cancelled { url: String },
}

fn status_hint(status: u16) -> &'static str {
    match status {
        401 | 403 => " (access denied: check the URL)",
        404 | 410 => " (not found: check the URL)",
        _ => "",
    }
}

/// How a failure should be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The URL or what it names is wrong (exit status 2).
    Input,
    /// The network or the server failed and trying again later may work (exit status 3).
    Transient,
    /// The server misbehaved or cannot be trusted (exit status 1).
    Failed,
}

impl NetError {
    pub fn kind(&self) -> FailureKind {
        match self {
            NetError::BadUrl { .. } | NetError::Status { .. } => FailureKind::Input,
            NetError::GaveUp { .. } | NetError::NoRange { .. } | NetError::Unvalidated { .. } => {
                FailureKind::Transient
            }
            _ => FailureKind::Failed,
        }
    }

    /// The error wrapped in an `io::Error` (for the readers that decode a download), recoverable
    /// with [`NetError::from_io`].
    pub fn into_io(self) -> io::Error {
        io::Error::other(self)
    }

    /// The download error inside an `io::Error`, if it is one.
    pub fn from_io(e: &io::Error) -> Option<&NetError> {
        e.get_ref().and_then(|i| i.downcast_ref::<NetError>())
    }
}

/// Whether `s` is an http(s) URL.
pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

pub fn is_https(s: &str) -> bool {
    s.starts_with("https://")
}

/// The HTTP client: an agent with the settings above, cheap to clone.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    opts: NetOptions,
    observer: Option<NetObserver>,
    cancel: Option<fn() -> bool>,
}

impl Client {
    pub fn new(opts: NetOptions) -> Client {
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        let agent = ureq::Agent::config_builder()
            .timeout_resolve(Some(opts.connect_timeout))
            .timeout_connect(Some(opts.connect_timeout))
            .timeout_per_read(Some(opts.stall_timeout))
            .timeout_per_write(Some(opts.stall_timeout))
            .http_status_as_error(false)
            .max_redirects(10)
            .tls_config(tls)
            .user_agent(concat!("boardsmith/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Client {
            agent,
            opts,
            observer: None,
            cancel: None,
        }
    }

    /// Tells `f` about every reconnect.
    pub fn observe(mut self, f: NetObserver) -> Client {
        self.observer = Some(f);
        self
    }

    /// Stops waiting between attempts as soon as `f` returns true (Ctrl-C).
    pub fn cancel_when(mut self, f: fn() -> bool) -> Client {
        self.cancel = Some(f);
        self
    }

    pub fn options(&self) -> NetOptions {
        self.opts
    }

    /// Starts downloading `url`: the first response has arrived when this returns (after retries).
    pub fn download(&self, url: &str) -> Result<Download, NetError> {
        check_url(url)?;
        let mut d = Download {
            client: self.clone(),
            url: url.to_string(),
            body: None,
            offset: 0,
            end: None,
            total: None,
            validator: None,
            responded: false,
            done: false,
            fatal: None,
            failures: 0,
            last_progress: Instant::now(),
            last_reason: String::new(),
            shared: Arc::new(Shared::default()),
        };
        match d.request() {
            Ok(()) => {}
            Err(Attempt::Retry(reason)) => {
                d.last_reason = reason;
                d.reconnect()?;
            }
            Err(Attempt::Fatal(e)) => return Err(e),
        }
        Ok(d)
    }

    /// A small optional file beside a download (a block map, a sums file): None when the server says
    /// it is not there (404 or 410, and 401 or 403, which object stores answer for missing objects).
    /// At most `limit` bytes.
    pub fn fetch_optional(&self, url: &str, limit: u64) -> Result<Option<Vec<u8>>, NetError> {
        let mut d = match self.download(url) {
            Ok(d) => d,
            Err(NetError::Status {
                status: 401 | 403 | 404 | 410,
                ..
            }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if d.total.is_some_and(|t| t > limit) {
            return Err(NetError::Protocol {
                url: url.into(),
                detail: format!("larger than {limit} bytes; this is not a side file"),
            });
        }
        let mut v = Vec::new();
        if let Err(e) = (&mut d).take(limit + 1).read_to_end(&mut v) {
            return Err(NetError::from_io(&e)
                .cloned()
                .unwrap_or_else(|| NetError::Protocol {
                    url: url.into(),
                    detail: e.to_string(),
                }));
        }
        if v.len() as u64 > limit {
            return Err(NetError::Protocol {
                url: url.into(),
                detail: format!("larger than {limit} bytes; this is not a side file"),
            });
        }
        Ok(Some(v))
    }
}

fn check_url(url: &str) -> Result<(), NetError> {
    let bad = |message: &str| NetError::BadUrl {
        url: url.into(),
        message: message.into(),
    };
    if !is_url(url) {
        return Err(bad("it must start with http:// or https://"));
    }
    if url.chars().any(|c| c.is_control() || c == ' ') {
        return Err(bad("it holds spaces or control characters"));
    }
    url.parse::<ureq::http::Uri>()
        .map_err(|e| bad(&e.to_string()))?;
    Ok(())
}

/// State a download shares with whoever started it after handing the reader on (to a decoder).
#[derive(Default)]
struct Shared {
    unvalidated_ok: AtomicBool,
    reconnects: AtomicU32,
    failure: Mutex<Option<NetError>>,
    finished: AtomicBool,
    tap: Mutex<Tap>,
}

/// Sees every byte delivered, in order (to hash the downloaded file).
pub type TapFn = Box<dyn FnMut(&[u8]) + Send>;

/// The bytes delivered before a tap was set are kept up to this many, so it can start late.
const TAP_PREFIX: usize = 64 << 10;

#[derive(Default)]
struct Tap {
    prefix: Vec<u8>,
    delivered: u64,
    f: Option<TapFn>,
}

impl Shared {
    fn deliver(&self, b: &[u8]) {
        let mut t = self.tap.lock().unwrap_or_else(|e| e.into_inner());
        t.delivered += b.len() as u64;
        if let Some(f) = t.f.as_mut() {
            f(b);
        } else if t.prefix.len() + b.len() <= TAP_PREFIX {
            t.prefix.extend_from_slice(b);
        }
    }
}

/// A handle on a download whose reader went elsewhere.
#[derive(Clone)]
pub struct DownloadHandle(Arc<Shared>);

impl DownloadHandle {
    /// Resume even without ETag or Last-Modified: something else (a checksum) checks the bytes.
    pub fn allow_unvalidated_resume(&self) {
        self.0.unvalidated_ok.store(true, Ordering::SeqCst);
    }
    /// Connections made after the first.
    pub fn reconnects(&self) -> u32 {
        self.0.reconnects.load(Ordering::SeqCst)
    }
    /// The error that ended the download, if one did.
    pub fn failure(&self) -> Option<NetError> {
        self.0
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    /// The whole body was read.
    pub fn finished(&self) -> bool {
        self.0.finished.load(Ordering::SeqCst)
    }
    /// Hands every byte of the file to `f`, from the first: false when too much was delivered
    /// already (more than the 64 KiB kept for a late tap).
    pub fn tap(&self, mut f: TapFn) -> bool {
        let mut t = self.0.tap.lock().unwrap_or_else(|e| e.into_inner());
        if t.delivered != t.prefix.len() as u64 || t.f.is_some() {
            return false;
        }
        f(&t.prefix);
        t.prefix = Vec::new();
        t.f = Some(f);
        true
    }
}

/// What tells two versions of the file apart.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Validator {
    ETag(String),
    LastModified(String),
}

impl Validator {
    fn value(&self) -> &str {
        match self {
            Validator::ETag(v) | Validator::LastModified(v) => v,
        }
    }
}

/// The outcome of one failed request.
enum Attempt {
    /// Worth another try after a pause.
    Retry(String),
    Fatal(NetError),
}

/// A download being read: a `Read` that reconnects as needed.
pub struct Download {
    client: Client,
    url: String,
    body: Option<ureq::BodyReader<'static>>,
    /// Bytes of the file delivered so far.
    offset: u64,
    /// Where the current response's bytes end (exclusive), when known.
    end: Option<u64>,
    /// The file's length, as first announced.
    total: Option<u64>,
    validator: Option<Validator>,
    /// A response with the file's data has arrived.
    responded: bool,
    done: bool,
    fatal: Option<NetError>,
    /// Attempts in a row without a new byte.
    failures: u32,
    last_progress: Instant,
    last_reason: String,
    shared: Arc<Shared>,
}

impl Download {
    pub fn handle(&self) -> DownloadHandle {
        DownloadHandle(self.shared.clone())
    }

    /// The file's length as the server announced it (a hint: the body decides).
    pub fn announced_len(&self) -> Option<u64> {
        self.total
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn fail(&mut self, e: NetError) -> io::Error {
        *self
            .shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
        self.fatal = Some(e.clone());
        e.into_io()
    }

    /// Connects again after a failure, with backoff, until a response continues the file.
    fn reconnect(&mut self) -> Result<(), NetError> {
        let opts = self.client.opts;
        loop {
            self.failures += 1;
            let waited = self.last_progress.elapsed();
            if self.failures > opts.retries || waited >= opts.retry_time {
                return Err(NetError::GaveUp {
                    url: self.url.clone(),
                    offset: self.offset,
                    attempts: self.failures,
                    seconds: waited.as_secs(),
                    last: self.last_reason.clone(),
                });
            }
            let backoff = backoff(self.failures, opts.retry_time.saturating_sub(waited));
            if let Some(obs) = &self.client.observer {
                obs(&Reconnect {
                    url: self.url.clone(),
                    offset: self.offset,
                    attempt: self.failures,
                    retries: opts.retries,
                    delay_ms: backoff.as_millis() as u64,
                    reason: self.last_reason.clone(),
                });
            }
            self.pause(backoff)?;
            if self.responded {
                self.shared.reconnects.fetch_add(1, Ordering::SeqCst);
            }
            match self.request() {
                Ok(()) => return Ok(()),
                Err(Attempt::Retry(reason)) => self.last_reason = reason,
                Err(Attempt::Fatal(e)) => return Err(e),
            }
        }
    }

    fn pause(&self, d: Duration) -> Result<(), NetError> {
        let until = Instant::now() + d;
        loop {
            if self.client.cancel.is_some_and(|f| f()) {
                return Err(NetError::Cancelled {
                    url: self.url.clone(),
                });
            }
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            std::thread::sleep((until - now).min(Duration::from_millis(100)));
        }
    }

    /// One request: for the whole file first, then for the rest from `offset`.
    fn request(&mut self) -> Result<(), Attempt> {
        let resuming = self.responded;
        if resuming
            && self.validator.is_none()
            && !self.shared.unvalidated_ok.load(Ordering::SeqCst)
        {
            return Err(Attempt::Fatal(NetError::Unvalidated {
                url: self.url.clone(),
                offset: self.offset,
                reason: self.last_reason.clone(),
            }));
        }
        let mut req = self.client.agent.get(&self.url);
        if resuming {
            req = req.header("Range", format!("bytes={}-", self.offset));
            if let Some(v) = &self.validator {
                req = req.header("If-Range", v.value());
            }
        }
        let resp = if is_https(&self.url) {
            req.config().https_only(true).build().call()
        } else {
            req.call()
        };
        let resp = resp.map_err(|e| self.classify(e))?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string())
        };
        let validator = header("etag")
            .filter(|e| !e.starts_with("W/"))
            .map(Validator::ETag)
            .or_else(|| header("last-modified").map(Validator::LastModified));
        let content_length = header("content-length").and_then(|v| v.parse::<u64>().ok());
        let fatal = |e: NetError| Err(Attempt::Fatal(e));
        match status {
            // Nothing was received yet: a whole file is as good as its rest.
            200 if !resuming || self.offset == 0 => {
                self.validator = validator;
                self.total = content_length;
                self.end = content_length;
            }
            200 => {
                return fatal(match (&self.validator, &validator) {
                    (Some(old), Some(new)) if old != new => self.changed(format!(
                        "it was {}, it is now {}",
                        describe(old),
                        describe(new)
                    )),
                    _ => NetError::NoRange {
                        url: self.url.clone(),
                        offset: self.offset,
                        reason: self.last_reason.clone(),
                    },
                });
            }
            206 if resuming => {
                let range = header("content-range").unwrap_or_default();
                let Some((start, last, total)) = parse_content_range(&range) else {
                    return fatal(self.protocol(format!(
                        "the answer to a request for the bytes from {} has an unusable Content-Range {range:?}",
                        self.offset
                    )));
                };
                if start != self.offset {
                    return fatal(self.protocol(format!(
                        "asked for the bytes from {}, the server sent bytes from {start}",
                        self.offset
                    )));
                }
                if let (Some(old), Some(new)) = (&self.validator, &validator)
                    && old != new
                {
                    return fatal(self.changed(format!(
                        "it was {}, it is now {}",
                        describe(old),
                        describe(new)
                    )));
                }
                match (self.total, total) {
                    (Some(old), Some(new)) if new > old => {
                        return fatal(NetError::TooLong {
                            url: self.url.clone(),
                            expected: old,
                            detail: format!("the file is now {new} bytes long"),
                        });
                    }
                    (Some(old), Some(new)) if new != old => {
                        return fatal(
                            self.changed(format!("it was {old} bytes long, it is now {new}")),
                        );
                    }
                    (None, t) => self.total = t,
                    _ => {}
                }
                self.end = Some(last + 1);
            }
            416 if resuming && self.total.is_some_and(|t| t <= self.offset) => {
                // Everything had arrived; the connection dropped after the last byte.
                self.done = true;
                return Ok(());
            }
            416 => {
                return fatal(self.changed(format!(
                    "the server has no bytes from {} any more (HTTP 416)",
                    self.offset
                )));
            }
            408 | 429 | 500..=599 => return Err(Attempt::Retry(format!("HTTP {status}"))),
            _ if resuming => {
                return fatal(self.changed(format!("the server now answers HTTP {status}")));
            }
            _ => {
                return fatal(NetError::Status {
                    url: self.url.clone(),
                    status,
                });
            }
        }
        self.responded = true;
        self.body = Some(resp.into_body().into_reader());
        Ok(())
    }

    fn changed(&self, detail: String) -> NetError {
        NetError::Changed {
            url: self.url.clone(),
            offset: self.offset,
            detail,
        }
    }

    fn protocol(&self, detail: String) -> NetError {
        NetError::Protocol {
            url: self.url.clone(),
            detail,
        }
    }

    fn classify(&self, e: ureq::Error) -> Attempt {
        let url = self.url.clone();
        match e {
            ureq::Error::RequireHttpsOnly(to) => Attempt::Fatal(NetError::Downgrade { url, to }),
            ureq::Error::BadUri(m) => Attempt::Fatal(NetError::BadUrl { url, message: m }),
            ureq::Error::Tls(m) => Attempt::Fatal(NetError::Tls {
                url,
                message: m.into(),
            }),
            ureq::Error::Rustls(r) => Attempt::Fatal(NetError::Tls {
                url,
                message: r.to_string(),
            }),
            ureq::Error::Io(io) if io.kind() == io::ErrorKind::InvalidData => {
                // rustls reports certificate problems through the transport as InvalidData.
                Attempt::Fatal(NetError::Tls {
                    url,
                    message: io.to_string(),
                })
            }
            ureq::Error::TooManyRedirects => Attempt::Fatal(NetError::Protocol {
                url,
                detail: "more than 10 redirects".into(),
            }),
            ureq::Error::LargeResponseHeader(..) | ureq::Error::Http(_) => {
                Attempt::Fatal(NetError::Protocol {
                    url,
                    detail: e.to_string(),
                })
            }
            ureq::Error::HostNotFound => Attempt::Retry("cannot resolve the host name".into()),
            ureq::Error::Timeout(t) => Attempt::Retry(format!("timed out ({t})")),
            other => Attempt::Retry(other.to_string()),
        }
    }
}

fn describe(v: &Validator) -> String {
    match v {
        Validator::ETag(e) => format!("ETag {e}"),
        Validator::LastModified(d) => format!("Last-Modified {d}"),
    }
}

/// `bytes FIRST-LAST/TOTAL` or `bytes FIRST-LAST/*` → (first, last, total), with first <= last < total.
pub fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let (first, last) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().ok()?),
    };
    if last < first || total.is_some_and(|t| last >= t) {
        return None;
    }
    Some((first, last, total))
}

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(e) = &self.fatal {
                return Err(e.clone().into_io());
            }
            let Some(body) = self.body.as_mut() else {
                if self.done {
                    self.shared.finished.store(true, Ordering::SeqCst);
                    return Ok(0);
                }
                if let Err(e) = self.reconnect() {
                    return Err(self.fail(e));
                }
                continue;
            };
            match body.read(buf) {
                Ok(0) => {
                    self.body = None;
                    match self.end {
                        Some(end) if self.offset < end => {
                            self.last_reason = format!(
                                "the body ended after byte {} of the {end} announced",
                                self.offset
                            );
                        }
                        _ => self.done = true,
                    }
                }
                Ok(n) => {
                    let new = self.offset + n as u64;
                    if let Some(end) = self.end
                        && new > end
                    {
                        let e = NetError::TooLong {
                            url: self.url.clone(),
                            expected: self.total.unwrap_or(end),
                            detail: format!("the response goes on past byte {end}"),
                        };
                        return Err(self.fail(e));
                    }
                    self.offset = new;
                    self.failures = 0;
                    self.last_progress = Instant::now();
                    self.shared.deliver(&buf[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.body = None;
                    let timed_out = e.kind() == io::ErrorKind::TimedOut
                        || e.get_ref()
                            .and_then(|i| i.downcast_ref::<ureq::Error>())
                            .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)));
                    let what = if timed_out {
                        format!(
                            "no data for {} s",
                            self.client.opts.stall_timeout.as_secs_f64()
                        )
                    } else {
                        e.to_string()
                    };
                    self.last_reason = match self.end {
                        Some(end) => {
                            format!("{what}, at byte {} of the {end} announced", self.offset)
                        }
                        None => what,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reconnect_is_immediate_then_backoff_doubles_within_the_retry_time() {
        let ample = Duration::from_secs(600);
        let ms = |n| backoff(n, ample).as_millis();
        assert_eq!([ms(1), ms(2), ms(3), ms(4)], [0, 200, 400, 800]);
        assert_eq!(backoff(40, ample), MAX_BACKOFF);
        assert_eq!(backoff(5, Duration::from_millis(50)).as_millis(), 50);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 10-19/100"),
            Some((10, 19, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, 0, None)));
        assert_eq!(parse_content_range("bytes 10-9/100"), None);
        assert_eq!(parse_content_range("bytes 10-100/100"), None);
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range("bytes 1-x/3"), None);
    }

    proptest::proptest! {
        #[test]
        fn content_range_is_consistent_or_none(s in ".{0,40}", a in 0u64..u64::MAX, b in 0u64..u64::MAX, t in 0u64..u64::MAX) {
            if let Some((first, last, total)) = parse_content_range(&s) {
                proptest::prop_assert!(first <= last && total.is_none_or(|t| last < t));
            }
            let v = format!("bytes {a}-{b}/{t}");
            match parse_content_range(&v) {
                Some(r) => proptest::prop_assert_eq!(r, (a, b, Some(t))),
                None => proptest::prop_assert!(b < a || b >= t),
            }
        }
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("https://example.org/a.img.xz").is_ok());
        assert!(check_url("ftp://example.org/a").is_err());
        assert!(check_url("http://exa mple.org/a").is_err());
        assert!(check_url("http://example.org/a\nb").is_err());
    }

    #[test]
    fn failure_kinds() {
        let gave_up = NetError::GaveUp {
            url: "u".into(),
            offset: 1,
            attempts: 2,
            seconds: 3,
            last: "x".into(),
        };
        assert_eq!(gave_up.kind(), FailureKind::Transient);
        let io = gave_up.clone().into_io();
        assert!(matches!(
            NetError::from_io(&io),
            Some(NetError::GaveUp { .. })
        ));
        assert_eq!(
            NetError::Status {
                url: "u".into(),
                status: 404
            }
            .kind(),
            FailureKind::Input
        );
        assert_eq!(
            NetError::Downgrade {
                url: "u".into(),
                to: "v".into()
            }
            .kind(),
            FailureKind::Failed
        );
    }
}
