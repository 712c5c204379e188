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

// Without `net` (the fuzz crate's build) no HTTP client is compiled in: offline.rs keeps the types.
#[cfg(feature = "net")]
mod download;
#[cfg(not(feature = "net"))]
#[path = "offline.rs"]
mod download;
mod range;

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use download::{Download, DownloadHandle};
pub use range::parse_content_range;

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
    #[cfg(feature = "net")]
    agent: ureq::Agent,
    opts: NetOptions,
    observer: Option<NetObserver>,
    cancel: Option<fn() -> bool>,
}

impl Client {
    pub fn new(opts: NetOptions) -> Client {
        Client {
            #[cfg(feature = "net")]
            agent: Self::agent(&opts),
            opts,
            observer: None,
            cancel: None,
        }
    }

    #[cfg(feature = "net")]
    fn agent(opts: &NetOptions) -> ureq::Agent {
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        ureq::Agent::config_builder()
            .timeout_resolve(Some(opts.connect_timeout))
            .timeout_connect(Some(opts.connect_timeout))
            .timeout_per_read(Some(opts.stall_timeout))
            .timeout_per_write(Some(opts.stall_timeout))
            .http_status_as_error(false)
            .max_redirects(10)
            .tls_config(tls)
            .user_agent(concat!("boardsmith/", env!("CARGO_PKG_VERSION")))
            .build()
            .into()
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
        Download::start(self, url)
    }

    /// A small optional file beside a download (a block map, a sums file): None when the server says
    /// it is not there (404 or 410, and 401 or 403, which object stores answer for missing objects).
    /// At most `limit` bytes.
    pub fn fetch_optional(&self, url: &str, limit: u64) -> Result<Option<Vec<u8>>, NetError> {
        self.fetch_small(url, limit, &[401, 403, 404, 410])
    }

    /// A small file of at most `limit` bytes; None when the server answers one of the `absent`
    /// statuses.
    pub fn fetch_small(
        &self,
        url: &str,
        limit: u64,
        absent: &[u16],
    ) -> Result<Option<Vec<u8>>, NetError> {
        let mut d = match self.download(url) {
            Ok(d) => d,
            Err(NetError::Status { status, .. }) if absent.contains(&status) => return Ok(None),
            Err(e) => return Err(e),
        };
        if d.announced_len().is_some_and(|t| t > limit) {
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
    #[cfg(feature = "net")]
    url.parse::<ureq::http::Uri>()
        .map_err(|e| bad(&e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
