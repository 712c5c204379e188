//! `boardsmith build --all`: every board, several at a time, continuing past failures, with one summary.
//!
//! Root filesystems come from a directory (`--rootfs-dir`), one shared tree (`--rootfs`), or are built
//! here, each board's into `OUT/BOARD.rootfs.tar` through the base cache: boards whose bases have the same
//! key share one mmdebstrap run, and boards whose board layers have the same key share that one too (see
//! `rootfs::layer`). The first board of each distinct base is started first, then the first of each
//! distinct layer, so that `--jobs` builds different bases side by side while the boards that share one
//! wait for it on its lock.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use super::build::{BuildReport, BuildRequest, build};
use crate::profile::Catalog;
use crate::rootfs::{RootfsEvent, RootfsRequest};

/// Where a board's root filesystem comes from in a batch.
#[derive(Debug, Clone)]
pub enum RootfsSource {
    /// `DIR/BOARD.tar` or `DIR/BOARD/`.
    PerBoardIn(PathBuf),
    /// The same tree for every board.
    Shared(PathBuf),
    /// Built for each board into `OUT/BOARD.rootfs.tar` from this request (its output replaced).
    Build(Box<RootfsRequest>),
}

impl RootfsSource {
    fn for_board(&self, board: &str) -> Result<PathBuf, String> {
        match self {
            RootfsSource::Shared(p) => Ok(p.clone()),
            RootfsSource::Build(_) => Err(format!("{board}'s root filesystem is built, not found")),
            RootfsSource::PerBoardIn(dir) => {
                let candidates = [dir.join(format!("{board}.tar")), dir.join(board)];
                candidates
                    .iter()
                    .find(|p| p.exists())
                    .cloned()
                    .ok_or_else(|| {
                        format!(
                            "no root filesystem for {board}: expected {} or {}",
                            candidates[0].display(),
                            candidates[1].display()
                        )
                    })
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BoardResult {
    pub board: String,
    pub profile: String,
    pub ok: bool,
    pub seconds: f64,
    pub error: Option<String>,
    pub image: Option<PathBuf>,
    pub sha256: Option<String>,
    pub image_size: Option<u64>,
    /// The root filesystem built for the board (with `RootfsSource::Build`).
    pub rootfs: Option<PathBuf>,
    /// Its base's cache key, and how it was had (`hit`, `built`, ...; see `rootfs::BaseReport`).
    pub base_key: Option<String>,
    pub base_cache: Option<String>,
    /// Its board layer's key, and how it was had.
    pub layer_key: Option<String>,
    pub layer_cache: Option<String>,
    /// Files of the secrets generated for the board (never their values).
    pub secret_files: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchSummary {
    pub boards: Vec<BoardResult>,
    pub failed: usize,
    /// Bases mmdebstrap built in this run (with `RootfsSource::Build`): one per distinct key missing
    /// from the cache.
    pub bases_built: usize,
    /// Distinct bases the boards used.
    pub bases: usize,
    /// Board layers mmdebstrap built in this run, and distinct layers the boards used.
    pub layers_built: usize,
    pub layers: usize,
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let m = inner.to_string();
        if !s.contains(&m) {
            s = format!("{s}: {m}");
        }
        src = inner.source();
    }
    s
}

/// The order boards are started in: with root filesystems built here, the first board of each distinct
/// base key comes first (in catalog order), then the first of each distinct board layer, then the
/// others; so `jobs` workers build different bases at the same time instead of waiting on one base's
/// lock. Boards whose key cannot be computed go first: they fail at once with the reason.
fn schedule(
    catalog: &Catalog,
    names: Vec<(String, String)>,
    rootfs: &RootfsSource,
) -> Vec<(String, String)> {
    let RootfsSource::Build(req) = rootfs else {
        return names;
    };
    let (mut bases, mut layers) = (
        std::collections::BTreeSet::new(),
        std::collections::BTreeSet::new(),
    );
    let (mut first, mut second, mut rest) = (Vec::new(), Vec::new(), Vec::new());
    for (board, file) in names {
        let keys = catalog
            .load(&board)
            .ok()
            .and_then(|p| crate::rootfs::cache_key(&p, req).ok());
        match keys {
            Some(k) if !bases.insert(k.base.key.clone()) => {
                if layers.insert(k.key) {
                    second.push((board, file));
                } else {
                    rest.push((board, file));
                }
            }
            Some(k) => {
                layers.insert(k.key);
                first.push((board, file));
            }
            None => first.push((board, file)),
        }
    }
    first.extend(second);
    first.extend(rest);
    first
}

/// One board: its root filesystem (when built here), then its image.
fn build_one(
    catalog: &Catalog,
    board: &str,
    rootfs: &RootfsSource,
    out: &Path,
    template: &BuildRequest,
    on_phase: &(dyn Fn(&str, &str) + Sync),
    result: &mut BoardResult,
) -> Result<BuildReport, String> {
    let profile = catalog.load(board).map_err(|e| chain(&e))?;
    let root = match rootfs {
        RootfsSource::Build(req) => {
            let req = RootfsRequest {
                out: out.join(format!("{board}.rootfs.tar")),
                ..(**req).clone()
            };
            let warnings = Mutex::new(Vec::new());
            let report = crate::rootfs::build_rootfs(&profile, &req, &|e| match e {
                RootfsEvent::Phase(p) => on_phase(board, p),
                RootfsEvent::Warning(w) => {
                    if let Ok(mut v) = warnings.lock() {
                        v.push(w.to_string());
                    }
                }
            });
            result.warnings = warnings.into_inner().unwrap_or_default();
            let report = report.map_err(|e| chain(&e))?;
            result.rootfs = Some(report.output.clone());
            result.base_key = report.base.as_ref().map(|b| b.key.clone());
            result.base_cache = report.base.as_ref().map(|b| b.cache.clone());
            let layer = report.base.as_ref().and_then(|b| b.layer.as_ref());
            result.layer_key = layer.map(|l| l.key.clone());
            result.layer_cache = layer.map(|l| l.cache.clone());
            result.secret_files = report.secret_files.iter().map(|f| f.path.clone()).collect();
            report.output
        }
        other => other.for_board(board)?,
    };
    let req = BuildRequest {
        rootfs: root,
        out_dir: out.to_path_buf(),
        ..template.clone()
    };
    on_phase(board, "building the image");
    build(&profile, &req, &|_| {}).map_err(|e| chain(&e))
}

/// Builds every board the catalog knows into `out/BOARD.img`, `jobs` at a time. `on_phase` gets each
/// board's progress, `on_done` each board's result.
pub fn build_all(
    catalog: &Catalog,
    rootfs: &RootfsSource,
    out: &Path,
    template: &BuildRequest,
    jobs: usize,
    on_phase: &(dyn Fn(&str, &str) + Sync),
    on_done: &(dyn Fn(&BoardResult) + Sync),
) -> Result<BatchSummary, crate::profile::ProfileError> {
    let names = schedule(catalog, catalog.names()?, rootfs);
    let queue = Mutex::new(names.into_iter());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                loop {
                    let next = queue.lock().map(|mut q| q.next()).unwrap_or(None);
                    let Some((board, profile_file)) = next else {
                        break;
                    };
                    let started = Instant::now();
                    let mut r = BoardResult {
                        board: board.clone(),
                        profile: profile_file,
                        ok: false,
                        seconds: 0.0,
                        error: None,
                        image: None,
                        sha256: None,
                        image_size: None,
                        rootfs: None,
                        base_key: None,
                        base_cache: None,
                        layer_key: None,
                        layer_cache: None,
                        secret_files: Vec::new(),
                        warnings: Vec::new(),
                    };
                    match build_one(catalog, &board, rootfs, out, template, on_phase, &mut r) {
                        Ok(rep) => {
                            r.ok = true;
                            r.image = Some(rep.image);
                            r.sha256 = Some(rep.sha256);
                            r.image_size = Some(rep.image_size);
                        }
                        Err(e) => r.error = Some(e),
                    }
                    r.seconds = started.elapsed().as_secs_f64();
                    on_done(&r);
                    if let Ok(mut v) = results.lock() {
                        v.push(r);
                    }
                }
            });
        }
    });
    let mut boards = results.into_inner().unwrap_or_default();
    boards.sort_by(|a, b| a.board.cmp(&b.board));
    let failed = boards.iter().filter(|b| !b.ok).count();
    // mmdebstrap ran for a level when the build built it (stored or not, or with --no-cache); a base is
    // not read at all on a layer hit.
    let ran = |c: &Option<String>| {
        c.as_deref()
            .is_some_and(|c| c.starts_with("built") || c == "bypassed")
    };
    // How many distinct entries of a level the boards used, and how many of them mmdebstrap built.
    let level = |key: fn(&BoardResult) -> &Option<String>,
                 cache: fn(&BoardResult) -> &Option<String>| {
        let built = boards.iter().filter(|b| ran(cache(b))).count();
        let distinct = boards
            .iter()
            .filter_map(|b| key(b).as_deref())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        (built, distinct)
    };
    let (bases_built, bases) = level(|b| &b.base_key, |b| &b.base_cache);
    let (layers_built, layers) = level(|b| &b.layer_key, |b| &b.layer_cache);
    Ok(BatchSummary {
        boards,
        failed,
        bases_built,
        bases,
        layers_built,
        layers,
    })
}
