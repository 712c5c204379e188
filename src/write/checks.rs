//! What vouches for an image's bytes before any is written: a block map with range checksums, an
//! image sum (`--sha256`/`--md5` or a sums file beside the source), a sum of the downloaded file; and
//! the rule that an image from a URL is written only when one of them came from somewhere other than
//! plain http on the image's own server.

use std::sync::{Arc, Mutex};

use super::source::{self, Probe, SideRef};
use super::sums::{self, ExpectedSum};
use super::{BmapChoice, WriteError, WriteRequest, digest};
use crate::image::bmap::Bmap;
use crate::net::{self, DownloadHandle};

/// A sum of the downloaded file, and its hash as the bytes arrive.
pub(super) struct DownloadCheck {
    pub(super) expected: ExpectedSum,
    pub(super) hash: Arc<Mutex<Option<digest::WholeHash>>>,
    pub(super) handle: DownloadHandle,
}

/// Everything found that checks the image, and whether each came over plain http.
pub(super) struct Vouchers {
    /// The block map and where it came from.
    pub(super) bmap: Option<(Bmap, String)>,
    bmap_plain_http: bool,
    /// The whole image's expected sum.
    pub(super) expected: Option<ExpectedSum>,
    sum_plain_http: bool,
    /// Without an image sum: the downloaded (compressed) file's.
    pub(super) download_check: Option<DownloadCheck>,
    download_plain_http: bool,
}

pub(super) fn side_error(e: source::SideError) -> WriteError {
    match e {
        source::SideError::Local(m) => WriteError::SideFile(m),
        source::SideError::Net(n) => WriteError::Net(n),
    }
}

fn load_bmap(
    side: &SideRef,
    required: bool,
    client: &net::Client,
) -> Result<Option<(Bmap, String)>, WriteError> {
    let origin = side.to_string();
    let bytes = match side
        .fetch(
            client,
            crate::image::bmap::MAX_FILE_BYTES,
            "bmap",
            "a bmap lists at most a few MiB of block ranges. Check that it is the image's bmap, or write without one (--no-bmap)",
        )
        .map_err(side_error)? {
        Some(b) => b,
        None if required => {
            return Err(WriteError::SideFile(format!(
                "bmap {origin} does not exist"
            )));
        }
        None => return Ok(None),
    };
    let bmap = Bmap::parse_bytes(&bytes).map_err(|source| WriteError::Bmap {
        origin: origin.clone(),
        source,
    })?;
    Ok(Some((bmap, origin)))
}

/// The block map the request names, or the first beside the source; and whether it came over plain
/// http.
fn find_bmap(
    req: &WriteRequest,
    client: &net::Client,
) -> Result<(Option<(Bmap, String)>, bool), WriteError> {
    match &req.bmap {
        BmapChoice::None => Ok((None, false)),
        BmapChoice::File(p) => Ok((load_bmap(&SideRef::Path(p.clone()), true, client)?, false)),
        BmapChoice::Auto => {
            for c in source::bmap_candidates(&req.source) {
                if let Some(b) = load_bmap(&c, false, client)? {
                    return Ok((Some(b), c.is_plain_http()));
                }
            }
            Ok((None, false))
        }
    }
}

/// Hashes the download as it arrives when a sums file beside it names the downloaded file.
fn tap_download(
    req: &WriteRequest,
    probe: &Probe,
    client: &net::Client,
) -> Result<Option<(DownloadCheck, bool)>, WriteError> {
    let Some(handle) = &probe.download else {
        return Ok(None);
    };
    let Some((sum, side)) =
        sums::discover_download(&req.source, probe.format, client).map_err(side_error)?
    else {
        return Ok(None);
    };
    let hash = Arc::new(Mutex::new(Some(digest::WholeHash::new(sum.kind))));
    let h = hash.clone();
    let mut pos = 0u64;
    let tapped = handle.tap(Box::new(move |b: &[u8]| {
        if let Ok(mut g) = h.lock()
            && let Some(w) = g.as_mut()
        {
            w.feed(pos, Some(b), b.len() as u64);
        }
        pos += b.len() as u64;
    }));
    Ok(tapped.then(|| {
        let check = DownloadCheck {
            expected: sum,
            hash,
            handle: handle.clone(),
        };
        (check, side.is_plain_http())
    }))
}

/// Looks for everything that can check the image.
pub(super) fn gather(
    req: &WriteRequest,
    probe: &Probe,
    client: &net::Client,
) -> Result<Vouchers, WriteError> {
    let (bmap, bmap_plain_http) = find_bmap(req, client)?;
    let (expected, sum_plain_http) = match &req.expected {
        Some(e) => (Some(e.clone()), false),
        None => match sums::discover(&req.source, probe.format, client).map_err(side_error)? {
            Some((e, side)) => (Some(e), side.is_plain_http()),
            None => (None, false),
        },
    };
    let (download_check, download_plain_http) = match expected {
        Some(_) => (None, false),
        None => match tap_download(req, probe, client)? {
            Some((c, plain)) => (Some(c), plain),
            None => (None, false),
        },
    };
    Ok(Vouchers {
        bmap,
        bmap_plain_http,
        expected,
        sum_plain_http,
        download_check,
        download_plain_http,
    })
}

impl Vouchers {
    /// Every mapped range of the block map has a checksum.
    fn bmap_checks(&self) -> bool {
        self.bmap.as_ref().is_some_and(|(b, _)| {
            !b.ranges.is_empty() && b.ranges.iter().all(|r| r.checksum.is_some())
        })
    }

    /// An image from a URL is written only when something trustworthy checks it (or with
    /// `--no-checksum`); then a resumed download need not prove it is the same file.
    pub(super) fn require_trust(
        &self,
        req: &WriteRequest,
        probe: &Probe,
        source_name: &str,
    ) -> Result<(), WriteError> {
        let bmap_checks = self.bmap_checks();
        let checked = (self.expected.is_some() && !self.sum_plain_http)
            || (bmap_checks && !self.bmap_plain_http)
            || (self.download_check.is_some() && !self.download_plain_http);
        if !checked && !req.no_checksum {
            return Err(WriteError::Unchecked {
                source_name: source_name.to_string(),
                why: self.plain_http_why(bmap_checks),
            });
        }
        // Something checks every byte: a resumed download need not prove it is the same file.
        if let Some(d) = &probe.download
            && (self.expected.is_some() || bmap_checks || self.download_check.is_some())
        {
            d.allow_unvalidated_resume();
        }
        Ok(())
    }

    /// Why the checks found do not count: they came over plain http from the image's server.
    fn plain_http_why(&self, bmap_checks: bool) -> String {
        let mut why = Vec::new();
        if let Some(e) = self.expected.as_ref().filter(|_| self.sum_plain_http) {
            why.push(format!("the {} from {}", e.kind.name(), e.origin));
        }
        if let Some((_, origin)) = self
            .bmap
            .as_ref()
            .filter(|_| self.bmap_plain_http && bmap_checks)
        {
            why.push(format!("the bmap {origin}"));
        }
        if let Some(c) = self
            .download_check
            .as_ref()
            .filter(|_| self.download_plain_http)
        {
            why.push(format!(
                "the {} from {}",
                c.expected.kind.name(),
                c.expected.origin
            ));
        }
        if why.is_empty() {
            String::new()
        } else {
            format!(
                " ({} came over plain http from the same server as the image, so it cannot vouch for it)",
                why.join(" and ")
            )
        }
    }
}
