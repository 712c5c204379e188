//! Where the image comes from: a file, standard input or an http(s) URL; what format it is in (by
//! magic bytes, not by name); how large the image is, as far as the container says; and the side
//! files next to it (block map, checksums), found the way bmaptool finds them.

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::decompress::{self, Format, WindowLimit, WindowTooLarge};
use crate::net::{self, DownloadHandle, NetError};

/// The image source as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Path(PathBuf),
    Stdin,
    Url(String),
}

impl SourceSpec {
    /// `-` is standard input; `http://` and `https://` are URLs; anything else is a path.
    pub fn parse(s: &str) -> SourceSpec {
        if s == "-" {
            SourceSpec::Stdin
        } else if s.starts_with("http://") || s.starts_with("https://") {
            SourceSpec::Url(s.to_string())
        } else {
            SourceSpec::Path(PathBuf::from(s))
        }
    }

    pub fn display(&self) -> String {
        match self {
            SourceSpec::Path(p) => p.display().to_string(),
            SourceSpec::Stdin => "standard input".into(),
            SourceSpec::Url(u) => u.clone(),
        }
    }

    pub fn is_url(&self) -> bool {
        matches!(self, SourceSpec::Url(_))
    }

    /// Whether the source can be read a second time (to locate a bad byte after a failed verify).
    pub fn reopenable(&self) -> bool {
        !matches!(self, SourceSpec::Stdin)
    }

    /// The last component of the path or URL path.
    pub fn file_name(&self) -> Option<String> {
        match self {
            SourceSpec::Path(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()),
            SourceSpec::Stdin => None,
            SourceSpec::Url(u) => {
                let path = u.split(['?', '#']).next().unwrap_or(u);
                let after_scheme = path.split_once("://").map_or(path, |x| x.1);
                let (_, p) = after_scheme.split_once('/')?;
                p.rsplit('/')
                    .next()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            }
        }
    }

    /// A sibling named `name` (same directory or URL directory).
    pub fn sibling(&self, name: &str) -> Option<SideRef> {
        match self {
            SourceSpec::Path(p) => Some(SideRef::Path(
                p.parent().unwrap_or(Path::new("")).join(name),
            )),
            SourceSpec::Stdin => None,
            SourceSpec::Url(u) => {
                let path = u.split(['?', '#']).next().unwrap_or(u);
                let dir = path.rsplit_once('/')?.0;
                Some(SideRef::Url(format!("{dir}/{name}")))
            }
        }
    }
}

/// A side file (bmap, sums) beside the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SideRef {
    Path(PathBuf),
    Url(String),
}

impl std::fmt::Display for SideRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SideRef::Path(p) => write!(f, "{}", p.display()),
            SideRef::Url(u) => f.write_str(u),
        }
    }
}

/// Largest checksum file (SHA256SUMS and the like) read: held whole while its line is looked up,
/// so it stays inside the writer's memory budget (a sums file of 16 MiB lists some 150 000 files).
pub const SUMS_LIMIT: u64 = 16 << 20;

impl SideRef {
    /// Whether its bytes come over plain http, where anyone on the way can change them.
    pub fn is_plain_http(&self) -> bool {
        matches!(self, SideRef::Url(u) if !net::is_https(u))
    }

    /// The file's bytes, or None if it does not exist (for URLs: 404 or 410, and 401 or 403, which
    /// object stores answer for missing objects). A file of more than `limit` bytes is an error
    /// naming it as no `kind` ("bmap") boardsmith accepts, followed by `remedy`; it is never cut
    /// to the limit.
    pub fn fetch(
        &self,
        client: &net::Client,
        limit: u64,
        kind: &str,
        remedy: &str,
    ) -> Result<Option<Vec<u8>>, SideError> {
        match self {
            SideRef::Path(p) => match File::open(p) {
                Ok(f) => {
                    let mut v = Vec::new();
                    f.take(limit.saturating_add(1))
                        .read_to_end(&mut v)
                        .map_err(|e| {
                            SideError::Local(format!("cannot read {}: {e}", p.display()))
                        })?;
                    if v.len() as u64 > limit {
                        return Err(SideError::Local(format!(
                            "{} is larger than {}: not a {kind} boardsmith accepts; {remedy}",
                            p.display(),
                            crate::size::Human(limit)
                        )));
                    }
                    Ok(Some(v))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(SideError::Local(format!(
                    "cannot open {}: {e}",
                    p.display()
                ))),
            },
            SideRef::Url(u) => client.fetch_optional(u, limit).map_err(SideError::Net),
        }
    }
}

/// Why a side file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SideError {
    #[error("{0}")]
    Local(String),
    #[error("cannot download {0}")]
    Net(NetError),
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open {what}: {source}")]
    Open { what: String, source: io::Error },
    #[error("cannot download {0}")]
    Net(NetError),
    #[error("{what} is empty; there is no image to write")]
    Empty { what: String },
    #[error("{what}: {message}")]
    SevenZ { what: String, message: String },
    #[error("{what} is a directory; name an image file")]
    Directory { what: String },
    #[error("{what}: {detail}")]
    Window {
        what: String,
        detail: decompress::WindowTooLarge,
    },
    #[error(
        "{what}: the 7z archive is larger than the {} ({limit} bytes) the temporary directory {} can take (its free space, less {SPOOL_RESERVE_PERCENT}% of its filesystem kept free). A 7z archive needs random access, so one from standard input or a URL is copied there first: set TMPDIR to a directory with more room, or save the archive to a file and write that",
        crate::size::Human(*limit),
        dir.display()
    )]
    SpoolFull {
        what: String,
        dir: PathBuf,
        limit: u64,
    },
    #[error("interrupted by {signal} while copying {what} to a temporary file")]
    Interrupted { what: String, signal: &'static str },
    #[error(
        "--max-window has no effect here: {what} holds {format} data, whose decoder has no window; only zstd, xz and 7z sources have one (leave the option out)"
    )]
    NoWindow { what: String, format: &'static str },
}

impl SourceError {
    /// 128 + the signal's number when interrupted; 1 when the spool found no room (the machine's
    /// limit, not the input's fault); otherwise 2: the source or its name is bad.
    pub fn exit_code(&self) -> i32 {
        match self {
            SourceError::Interrupted { .. } => crate::signals::exit_status(),
            SourceError::SpoolFull { .. } => 1,
            _ => 2,
        }
    }
}

/// How large the image is, as far as the source tells before decoding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SizeInfo {
    /// The exact image size (raw files, the xz index, the 7z entry, Content-Length of a raw URL).
    pub exact: Option<u64>,
    /// A lower bound (the first zstd frame's declared size).
    pub at_least: Option<u64>,
}

impl SizeInfo {
    pub fn lower_bound(&self) -> Option<u64> {
        self.exact.or(self.at_least)
    }
}

/// The opened source, ready to be read.
pub enum Input {
    /// A raw image in a regular file: read at offsets, its holes skipped.
    RawFile(File),
    /// A decoded byte stream.
    Stream(Box<dyn Read + Send>),
    /// A seekable .xz file with several blocks, decoded block-parallel.
    XzBlocks {
        file: File,
        index: super::xz::XzIndex,
        threads: usize,
        max_dict: WindowLimit,
    },
    /// A 7z archive (a file, or standard input/HTTP spooled to an unlinked temporary file).
    SevenZ {
        file: File,
        entry: String,
        max_window: WindowLimit,
    },
    /// A 7z archive whose LZMA2 stream has dictionary resets, decoded block-parallel between them.
    SevenZBlocks {
        file: File,
        entry: String,
        blocks: decompress::SevenZBlocks,
        threads: usize,
    },
}

pub struct Source {
    pub spec: SourceSpec,
    pub format: Format,
    pub size: SizeInfo,
    pub input: Input,
    /// The download behind a URL source: reconnects, and the error that ended it.
    pub download: Option<DownloadHandle>,
}

/// Decoder settings.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// Threads for block-parallel xz decoding.
    pub threads: u32,
    /// The largest window (zstd) or dictionary (xz, 7z) allowed.
    pub max_window: WindowLimit,
}

/// Reads up to `n` bytes from the start of a stream and gives back a stream that still starts there.
fn peek(mut r: Box<dyn Read + Send>, n: usize) -> io::Result<(Vec<u8>, Box<dyn Read + Send>)> {
    let mut head = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match r.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    head.truncate(got);
    Ok((head.clone(), Box::new(Cursor::new(head).chain(r))))
}

/// Share of the temporary directory's filesystem a spool leaves free, so that the system keeps room.
const SPOOL_RESERVE_PERCENT: u64 = 5;

/// How much the spool may take in `dir`: its filesystem's free space less
/// [`SPOOL_RESERVE_PERCENT`] of its size.
fn spool_limit(dir: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    let unit = st.f_frsize;
    let avail = st.f_bavail.saturating_mul(unit);
    let size = st.f_blocks.saturating_mul(unit);
    Ok(avail.saturating_sub(size / 100 * SPOOL_RESERVE_PERCENT))
}

/// Copies a stream into an unlinked temporary file (7z needs random access), at most what the
/// temporary directory can spare ([`spool_limit`]; refused at once when the server's
/// `Content-Length` says more). Ctrl-C and SIGTERM stop it: the copy runs on its own thread and
/// this one polls the signal flag, so a read blocked on a quiet pipe holds nothing up. The file is
/// unlinked from the start: nothing is left behind whatever happens.
fn spool(r: Box<dyn Read + Send>, what: &str, announced: Option<u64>) -> Result<File, SourceError> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = std::env::temp_dir();
    let err = |e: io::Error| SourceError::Open {
        what: format!("a temporary file in {} to hold {what}", dir.display()),
        source: e,
    };
    let limit = spool_limit(&dir).map_err(err)?;
    let full = || SourceError::SpoolFull {
        what: what.to_string(),
        dir: dir.clone(),
        limit,
    };
    if announced.is_some_and(|n| n > limit) {
        return Err(full());
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(&dir)
        .map_err(err)?;
    let mut out = f.try_clone().map_err(err)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel::<Result<(), Option<io::Error>>>();
    let copier = {
        let stop = stop.clone();
        let mut r = r;
        std::thread::Builder::new()
            .name("boardsmith-spool".into())
            .spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                let mut total = 0u64;
                let result = loop {
                    if stop.load(Ordering::SeqCst) {
                        break Ok(());
                    }
                    let n = match r.read(&mut buf) {
                        Ok(0) => break Ok(()),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => break Err(Some(e)),
                    };
                    total += n as u64;
                    if total > limit {
                        break Err(None);
                    }
                    if let Err(e) = out.write_all(&buf[..n]) {
                        break Err(Some(e));
                    }
                };
                let _ = tx.send(result);
            })
            .map_err(err)?
    };
    let result = loop {
        if crate::signals::interrupted() {
            stop.store(true, Ordering::SeqCst);
            // The copier may be blocked in a read; the process is about to end without it.
            return Err(SourceError::Interrupted {
                what: what.to_string(),
                signal: crate::signals::pending_name(),
            });
        }
        match rx.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(r) => break r,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                break Err(Some(io::Error::other("the copying thread stopped")));
            }
        }
    };
    let _ = copier.join();
    match result {
        Ok(()) => {}
        Err(None) => return Err(full()),
        Err(Some(e)) => {
            return Err(SourceError::Open {
                what: what.to_string(),
                source: e,
            });
        }
    }
    f.flush().map_err(err)?;
    f.seek(SeekFrom::Start(0)).map_err(err)?;
    Ok(f)
}

const MAGIC_LEN: usize = 32;

/// A source whose first bytes have been read (its format is known) and nothing else: a URL is
/// connected but not downloaded yet, so checks can refuse it before anything slow happens.
pub struct Probe {
    pub spec: SourceSpec,
    pub format: Format,
    body: ProbeBody,
    pub download: Option<DownloadHandle>,
}

enum ProbeBody {
    Regular(File, u64),
    Stream {
        head: Vec<u8>,
        stream: Box<dyn Read + Send>,
        len: Option<u64>,
    },
}

/// Opens the source and recognises its format (URLs through `client`).
pub fn probe(spec: &SourceSpec, client: &net::Client) -> Result<Probe, SourceError> {
    let what = spec.display();
    let open_err = |e: io::Error| SourceError::Open {
        what: what.clone(),
        source: e,
    };
    let mut download = None;
    let (stream, content_length): (Box<dyn Read + Send>, Option<u64>) = match spec {
        SourceSpec::Path(p) => {
            let file = File::open(p).map_err(open_err)?;
            let meta = file.metadata().map_err(open_err)?;
            if meta.is_dir() {
                return Err(SourceError::Directory { what });
            }
            if meta.is_file() {
                let len = meta.len();
                if len == 0 {
                    return Err(SourceError::Empty { what });
                }
                let mut head = vec![0u8; MAGIC_LEN.min(len as usize)];
                file.read_exact_at(&mut head, 0).map_err(open_err)?;
                return Ok(Probe {
                    spec: spec.clone(),
                    format: Format::detect(&head),
                    body: ProbeBody::Regular(file, len),
                    download: None,
                });
            }
            let len = if meta.file_type().is_block_device() {
                crate::device::blockdev::size(&file).ok()
            } else {
                None
            };
            (Box::new(file), len)
        }
        SourceSpec::Stdin => (Box::new(io::stdin()), None),
        SourceSpec::Url(u) => {
            let d = client.download(u).map_err(SourceError::Net)?;
            let len = d.announced_len();
            download = Some(d.handle());
            (Box::new(d), len)
        }
    };
    let net_err = |e: io::Error| match NetError::from_io(&e) {
        Some(n) => SourceError::Net(n.clone()),
        None => open_err(e),
    };
    let (head, stream) = peek(stream, MAGIC_LEN).map_err(net_err)?;
    if head.is_empty() {
        return Err(SourceError::Empty { what });
    }
    Ok(Probe {
        spec: spec.clone(),
        format: Format::detect(&head),
        body: ProbeBody::Stream {
            head,
            stream,
            len: content_length,
        },
        download,
    })
}

/// Opens the source, recognises its format and learns what it can about the image size.
/// `note` is told about slow preparatory steps (spooling).
pub fn open(
    spec: &SourceSpec,
    opts: DecodeOptions,
    note: &dyn Fn(&str),
) -> Result<Source, SourceError> {
    probe(spec, &net::Client::new(net::NetOptions::default()))?.open(opts, note)
}

impl Probe {
    /// Prepares the decoding (for a 7z archive from a stream: copies it to a temporary file first).
    pub fn open(self, opts: DecodeOptions, note: &dyn Fn(&str)) -> Result<Source, SourceError> {
        let Probe {
            spec,
            format,
            body,
            download,
        } = self;
        let what = spec.display();
        let (head, stream, content_length) = match body {
            ProbeBody::Regular(file, len) => return open_regular(&spec, file, len, opts),
            ProbeBody::Stream { head, stream, len } => (head, stream, len),
        };
        // A download that failed for good is reported as such, whatever the reader made of it.
        let failed = |e: SourceError| match download.as_ref().and_then(|d| d.failure()) {
            Some(n) => SourceError::Net(n),
            None => e,
        };
        let mut size = SizeInfo::default();
        let limit = opts.max_window;
        let (input, windowed) = match format {
            Format::Raw => {
                size.exact = content_length;
                (Input::Stream(stream), false)
            }
            Format::SevenZ => {
                note(&format!(
                    "7z needs random access: copying {what} to a temporary file first"
                ));
                let mut file = spool(stream, &what, content_length).map_err(failed)?;
                let (_, entry, len) = sevenz_checked(&mut file, &what, limit)?;
                size.exact = Some(len);
                (
                    Input::SevenZ {
                        file,
                        entry,
                        max_window: limit,
                    },
                    true,
                )
            }
            f => {
                if f == Format::Zstd {
                    size.at_least = decompress::zstd_first_frame_size(&head);
                    zstd_checked(&head, &what, limit)?;
                }
                let (r, windowed) = decompress::decoder(f, stream, limit).map_err(|e| {
                    failed(SourceError::Open {
                        what: what.clone(),
                        source: e,
                    })
                })?;
                (Input::Stream(r), windowed)
            }
        };
        finish(&spec, format, size, input, windowed, opts, download)
    }
}

/// The opened source, unless `--max-window` was given for a format that has no window.
fn finish(
    spec: &SourceSpec,
    format: Format,
    size: SizeInfo,
    input: Input,
    windowed: bool,
    opts: DecodeOptions,
    download: Option<DownloadHandle>,
) -> Result<Source, SourceError> {
    if opts.max_window.chosen && !windowed {
        return Err(SourceError::NoWindow {
            what: spec.display(),
            format: format.name(),
        });
    }
    Ok(Source {
        spec: spec.clone(),
        format,
        size,
        input,
        download,
    })
}

/// Refuses a zstd stream whose first frame declares a window over the limit, before anything is
/// written (later frames are checked by the decoder as they come).
fn zstd_checked(head: &[u8], what: &str, limit: WindowLimit) -> Result<(), SourceError> {
    match decompress::zstd_window(head) {
        Some(w) if w > limit.bytes => Err(SourceError::Window {
            what: what.to_string(),
            detail: WindowTooLarge {
                format: "zstd",
                needed: Some(w),
                limit,
            },
        }),
        _ => Ok(()),
    }
}

/// Reads a 7z archive's headers and finds the image entry (name, size), refusing dictionaries over
/// the limit before anything is decoded.
fn sevenz_checked(
    file: &mut File,
    what: &str,
    limit: WindowLimit,
) -> Result<(sevenz_rust2::Archive, String, u64), SourceError> {
    let err = |message| SourceError::SevenZ {
        what: what.to_string(),
        message,
    };
    let archive = decompress::sevenz_archive(file).map_err(err)?;
    let (entry, len) = decompress::sevenz_entry(&archive).map_err(err)?;
    let dict = decompress::sevenz_dict(&archive);
    if dict > limit.bytes {
        return Err(SourceError::Window {
            what: what.to_string(),
            detail: WindowTooLarge {
                format: "7z",
                needed: Some(dict),
                limit,
            },
        });
    }
    Ok((archive, entry, len))
}

fn open_regular(
    spec: &SourceSpec,
    mut file: File,
    len: u64,
    opts: DecodeOptions,
) -> Result<Source, SourceError> {
    let what = spec.display();
    if len == 0 {
        return Err(SourceError::Empty { what });
    }
    let mut head = vec![0u8; MAGIC_LEN.min(len as usize)];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| SourceError::Open {
            what: what.clone(),
            source: e,
        })?;
    let format = Format::detect(&head);
    let mut size = SizeInfo::default();
    let limit = opts.max_window;
    let (input, windowed) = match format {
        Format::Raw => {
            size.exact = Some(len);
            // Only a hint: a failure changes nothing.
            let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Sequential);
            (Input::RawFile(file), false)
        }
        Format::SevenZ => {
            let (archive, entry, len) = sevenz_checked(&mut file, &what, limit)?;
            size.exact = Some(len);
            let threads = u64::from(opts.threads);
            let input = match decompress::sevenz_blocks(&archive, &file, &entry, len, threads) {
                Some(blocks) => Input::SevenZBlocks {
                    file,
                    entry,
                    threads: blocks.threads as usize,
                    blocks,
                },
                _ => Input::SevenZ {
                    file,
                    entry,
                    max_window: limit,
                },
            };
            (input, true)
        }
        Format::Xz if let Some(index) = super::xz::index(&file) => {
            size.exact = Some(index.uncompressed);
            let threads = u64::from(opts.threads);
            // Every block's dictionary is checked here, before anything is written.
            match super::xz::parallel_threads(
                &file,
                &index,
                threads,
                decompress::DICT_BUDGET,
                limit.bytes,
            ) {
                Err((i, dict)) => {
                    return Err(SourceError::Window {
                        what: format!("{what} (xz block {})", i + 1),
                        detail: WindowTooLarge {
                            format: "xz",
                            needed: Some(dict),
                            limit,
                        },
                    });
                }
                Ok(n) if n > 1 => (
                    Input::XzBlocks {
                        file,
                        index,
                        threads: n as usize,
                        max_dict: limit,
                    },
                    true,
                ),
                Ok(_) => stream_of(Format::Xz, file, &what, limit)?,
            }
        }
        f => {
            if f == Format::Zstd {
                size.at_least = decompress::zstd_first_frame_size(&head);
                zstd_checked(&head, &what, limit)?;
            }
            stream_of(f, file, &what, limit)?
        }
    };
    finish(spec, format, size, input, windowed, opts, None)
}

fn stream_of(
    format: Format,
    file: File,
    what: &str,
    limit: WindowLimit,
) -> Result<(Input, bool), SourceError> {
    decompress::decoder(format, Box::new(file), limit)
        .map(|(r, windowed)| (Input::Stream(r), windowed))
        .map_err(|e| SourceError::Open {
            what: what.to_string(),
            source: e,
        })
}

/// The image's own file name: the source's name without its compression extension
/// (`sdcard.img.xz` → `sdcard.img`).
pub fn image_name(spec: &SourceSpec, format: Format) -> Option<String> {
    let name = spec.file_name()?;
    for ext in format.extensions() {
        if let Some(stem) = name.strip_suffix(&format!(".{ext}"))
            && !stem.is_empty()
        {
            return Some(stem.to_string());
        }
    }
    Some(name)
}

/// Where a bmap may be, in bmaptool's order: `NAME.bmap`, then with one extension after another
/// removed (`sdcard.img.xz.bmap`, `sdcard.img.bmap`, `sdcard.bmap`).
pub fn bmap_candidates(spec: &SourceSpec) -> Vec<SideRef> {
    let Some(mut name) = spec.file_name() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    loop {
        if let Some(r) = spec.sibling(&format!("{name}.bmap")) {
            out.push(r);
        }
        match name.rsplit_once('.') {
            Some((stem, _)) if !stem.is_empty() => name = stem.to_string(),
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_and_names() {
        assert_eq!(SourceSpec::parse("-"), SourceSpec::Stdin);
        let u = SourceSpec::parse("http://127.0.0.1:8000/dir/sdcard.img.xz?x=1");
        assert_eq!(u.file_name().as_deref(), Some("sdcard.img.xz"));
        assert_eq!(image_name(&u, Format::Xz).as_deref(), Some("sdcard.img"));
        assert_eq!(
            bmap_candidates(&u),
            vec![
                SideRef::Url("http://127.0.0.1:8000/dir/sdcard.img.xz.bmap".into()),
                SideRef::Url("http://127.0.0.1:8000/dir/sdcard.img.bmap".into()),
                SideRef::Url("http://127.0.0.1:8000/dir/sdcard.bmap".into()),
            ]
        );
        let p = SourceSpec::parse("out/board.img");
        assert_eq!(
            bmap_candidates(&p),
            vec![
                SideRef::Path("out/board.img.bmap".into()),
                SideRef::Path("out/board.bmap".into())
            ]
        );
        assert_eq!(image_name(&p, Format::Raw).as_deref(), Some("board.img"));
        assert!(bmap_candidates(&SourceSpec::Stdin).is_empty());
    }
}
