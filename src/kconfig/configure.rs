//! Configuring a kernel tree for a board: `make <defconfig>` in the board's build directory, the merged
//! fragment put on top of the expanded defconfig, `make olddefconfig`, then the check of every
//! requested value against the resulting `.config`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::KconfigError;
use super::check::{CheckReport, check};
use super::dotconfig::{DotConfig, apply};
use super::kbuild::{self, Kbuild};
use super::kconfig_db::KconfigDb;
use super::merge::Merged;
use crate::profile::Profile;

/// Progress of a configure or build run.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    Phase(&'a str),
    /// Another boardsmith holds the build directory.
    Waiting(&'a Path),
    /// Compile progress: how many kbuild steps so far and the latest one (`CC drivers/...`).
    Step {
        count: usize,
        line: &'a str,
    },
}

pub struct ConfigureRequest<'a> {
    pub profile: &'a Profile,
    pub kernel_src: &'a Path,
    pub work_dir: &'a Path,
    /// Log file; default `<build dir>/<log_name>`.
    pub log: Option<&'a Path>,
    pub log_name: &'a str,
}

/// A configured build directory and the check of its `.config`.
#[derive(Debug, Serialize)]
pub struct Configured {
    pub board: String,
    pub kernel_version: String,
    pub arch: String,
    pub defconfig: String,
    pub build_dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub report: CheckReport,
    /// Lines of the kernel's Kconfig files this reader did not understand (normally none).
    pub kconfig_reader_warnings: Vec<String>,
}

/// Configures the board's kernel in its build directory and checks the result. The returned
/// [`Kbuild`] keeps the build directory locked for a following build.
pub fn configure(
    req: &ConfigureRequest<'_>,
    merged: &Merged,
    events: &dyn Fn(Event<'_>),
) -> Result<(Configured, Kbuild), KconfigError> {
    let profile = req.profile;
    let arch = profile.arch;
    let defconfig = profile.kernel.defconfig.as_str();
    let src = kbuild::validate_tree(req.kernel_src, arch, defconfig)?;
    kbuild::require_tools(&[
        "make",
        "gcc",
        "flex",
        "bison",
        &format!("{}gcc", arch.cross_compile()),
    ])?;
    let kb = kbuild::open(
        &src,
        arch,
        req.work_dir,
        &profile.name,
        req.log_name,
        req.log,
        &|p| events(Event::Waiting(p)),
    )?;
    let version = kbuild::kernel_version(&src).unwrap_or_else(|| "unknown".into());

    events(Event::Phase(&format!(
        "make {defconfig} (linux {version}, ARCH={})",
        arch.kernel_arch()
    )));
    let config_path = kb.config_path();
    // A stale .config from an earlier run must not leak into this one.
    let _ = std::fs::remove_file(&config_path);
    kb.make(&[defconfig.to_string()], &mut |_| {})?;
    let base = DotConfig::read(&config_path)?;
    let keep = |name: &str, data: &str| -> Result<(), KconfigError> {
        let p = kb.objtree.join(name);
        std::fs::write(&p, data).map_err(|source| KconfigError::Write { path: p, source })
    };
    keep("boardsmith-defconfig.config", &base.text)?;
    keep(
        "boardsmith-fragment.config",
        &merged.render(&format!("kernel config fragment for {}", profile.name)),
    )?;

    events(Event::Phase("make olddefconfig (defconfig + fragments)"));
    let combined = apply(&base.text, merged);
    std::fs::write(&config_path, combined).map_err(|source| KconfigError::Write {
        path: config_path.clone(),
        source,
    })?;
    kb.make(&["olddefconfig".to_string()], &mut |_| {})?;
    let result = DotConfig::read(&config_path)?;

    events(Event::Phase(
        "reading the Kconfig files to check every requested symbol",
    ));
    let db = KconfigDb::read(&src, arch.kernel_arch())?;
    let report = check(&db, merged, &result, defconfig, &base);
    for w in &db.warnings {
        kb.log_line(&format!("boardsmith Kconfig reader: {w}"));
    }
    for s in &report.symbols {
        kb.log_line(&format!("boardsmith check: {s}"));
    }
    Ok((
        Configured {
            board: profile.name.clone(),
            kernel_version: version,
            arch: arch.kernel_arch().to_string(),
            defconfig: defconfig.to_string(),
            build_dir: kb.objtree.clone(),
            config: config_path,
            log: kb.log_path.clone(),
            report,
            kconfig_reader_warnings: db.warnings.clone(),
        },
        kb,
    ))
}
