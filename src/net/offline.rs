//! A build without the `net` feature (the fuzz crate): the HTTP client is not compiled in, so no download
//! can exist. The types stay, uninhabited, so that their users compile unchanged; [`Client::download`]
//! says what is missing.

use std::convert::Infallible;
use std::io::{self, Read};

use super::*;

/// Sees every byte delivered, in order (to hash the downloaded file).
pub type TapFn = Box<dyn FnMut(&[u8]) + Send>;

/// A download; none can exist in this build.
pub struct Download(Infallible);

/// A handle on a download; none can exist in this build.
#[derive(Clone)]
pub struct DownloadHandle(Infallible);

impl Download {
    pub(super) fn start(_client: &Client, url: &str) -> Result<Download, NetError> {
        check_url(url)?;
        Err(NetError::Protocol {
            url: url.into(),
            detail:
                "this build of boardsmith has no HTTP client (built without the `net` feature); \
                     download the file and give its path"
                    .into(),
        })
    }
    pub fn handle(&self) -> DownloadHandle {
        match self.0 {}
    }
    pub fn announced_len(&self) -> Option<u64> {
        match self.0 {}
    }
    pub fn url(&self) -> &str {
        match self.0 {}
    }
}

impl Read for Download {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        match self.0 {}
    }
}

impl DownloadHandle {
    pub fn allow_unvalidated_resume(&self) {
        match self.0 {}
    }
    pub fn reconnects(&self) -> u32 {
        match self.0 {}
    }
    pub fn failure(&self) -> Option<NetError> {
        match self.0 {}
    }
    pub fn finished(&self) -> bool {
        match self.0 {}
    }
    pub fn tap(&self, _f: TapFn) -> bool {
        match self.0 {}
    }
}
