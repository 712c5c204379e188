//! Kernel configuration: fragments (`kernel-configs/*.config` or files) merged with merge_config.sh's
//! semantics, applied on top of the board's defconfig by the kernel's own Kconfig in a build directory
//! outside the source tree, checked symbol by symbol against the result with reasons read from the
//! Kconfig files, and cross-built into a staging tree that `boardsmith build` can use.
//!
//! fragment → merge → (configure: kbuild + dotconfig) → check (kconfig_db + expr) → kernel_build

pub mod check;
pub mod configure;
pub mod dotconfig;
pub mod expr;
pub mod fragment;
pub mod kbuild;
pub mod kconfig_db;
pub mod kernel_build;
pub mod locate;
pub mod merge;
pub mod value;

use std::path::PathBuf;

/// Why a kconfig or kernel operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KconfigError {
    #[error(transparent)]
    Locate(#[from] locate::LocateError),
    #[error(transparent)]
    Kbuild(#[from] kbuild::KbuildError),
    #[error(transparent)]
    Db(#[from] kconfig_db::DbError),
    #[error(transparent)]
    DotConfig(#[from] dotconfig::DotConfigError),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{failed} requested kernel config symbol(s) did not survive Kconfig (see the report); not building. \
         Fix the fragments, or mark a symbol optional with `# boardsmith: optional` on the line before it"
    )]
    CheckFailed { failed: usize },
    #[error(
        "staging directory {} exists, is not empty and was not made by `boardsmith kernel` (no {}); \
         remove it or choose another -o",
        path.display(),
        kernel_build::STAGING_MARKER
    )]
    StagingNotOurs { path: PathBuf },
    #[error("the build produced no {what} at {}: {hint}", path.display())]
    Missing {
        what: String,
        path: PathBuf,
        hint: String,
    },
}

impl KconfigError {
    /// Whether the user gave bad input (exit 2) rather than the operation failing (exit 1).
    pub fn is_input_error(&self) -> bool {
        match self {
            KconfigError::Locate(_) | KconfigError::StagingNotOurs { .. } => true,
            KconfigError::Kbuild(e) => e.is_input_error(),
            KconfigError::Db(kconfig_db::DbError::NotAKernelTree { .. }) => true,
            _ => false,
        }
    }
}
