//! The resuming body reader: one download of one URL across as many connections as it takes (Range from
//! the byte already received, If-Range with the first response's validator), the backoff between
//! attempts, and the checks that a continuation is the same file (see the parent module's doc).

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

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
    pub(super) total: Option<u64>,
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
    /// The first request for `url` (and the retries it needs): see [`Client::download`].
    pub(super) fn start(client: &Client, url: &str) -> Result<Download, NetError> {
        check_url(url)?;
        let mut d = Download {
            client: client.clone(),
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
}
