//! `boardsmith build --all`: every board, several at a time, continuing past failures, with one summary.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use super::build::{BuildReport, BuildRequest, build};
use crate::profile::Catalog;

/// Where a board's root filesystem comes from in a batch.
#[derive(Debug, Clone)]
pub enum RootfsSource {
    /// `DIR/BOARD.tar` or `DIR/BOARD/`.
    PerBoardIn(PathBuf),
    /// The same tree for every board.
    Shared(PathBuf),
}

impl RootfsSource {
    fn for_board(&self, board: &str) -> Result<PathBuf, String> {
        match self {
            RootfsSource::Shared(p) => Ok(p.clone()),
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
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchSummary {
    pub boards: Vec<BoardResult>,
    pub failed: usize,
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

/// Builds every board the catalog knows into `out/BOARD.img`, `jobs` at a time.
pub fn build_all(
    catalog: &Catalog,
    rootfs: &RootfsSource,
    out: &Path,
    template: &BuildRequest,
    jobs: usize,
    on_done: &(dyn Fn(&BoardResult) + Sync),
) -> Result<BatchSummary, crate::profile::ProfileError> {
    let names = catalog.names()?;
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
                    let outcome: Result<BuildReport, String> = (|| {
                        let profile = catalog.load(&board).map_err(|e| chain(&e))?;
                        let root = rootfs.for_board(&board)?;
                        let req = BuildRequest {
                            rootfs: root,
                            out_dir: out.to_path_buf(),
                            ..template.clone()
                        };
                        build(&profile, &req, &|_| {}).map_err(|e| chain(&e))
                    })();
                    let r = match outcome {
                        Ok(rep) => BoardResult {
                            board,
                            profile: profile_file,
                            ok: true,
                            seconds: started.elapsed().as_secs_f64(),
                            error: None,
                            image: Some(rep.image),
                            sha256: Some(rep.sha256),
                            image_size: Some(rep.image_size),
                        },
                        Err(e) => BoardResult {
                            board,
                            profile: profile_file,
                            ok: false,
                            seconds: started.elapsed().as_secs_f64(),
                            error: Some(e),
                            image: None,
                            sha256: None,
                            image_size: None,
                        },
                    };
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
    Ok(BatchSummary { boards, failed })
}
