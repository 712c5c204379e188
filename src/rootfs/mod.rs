//! `boardsmith rootfs`: a root filesystem for a board, from Debian packages (mmdebstrap, through
//! qemu-user for a foreign architecture) or from a prebuilt tarball, configured from the recipes in
//! `rootfs/` (base + features) and the board profile, written as a reproducible tarball or a directory.
//!
//! Order of work: everything the user must supply (feature names, kernel fragments, passwords, settings,
//! artifacts and their checksums, the machine's prerequisites) is checked before the long package
//! installation starts; the output appears under its final name only when complete.
//!
//! The orchestration is `build` ([`build_rootfs`], stage by stage); the request and report are in
//! `request`, what the user supplies in `inputs`, the output path and work directory in `destination`,
//! stage 1 (the base, through the cache) in `base`, stage 2's checks of the configured tree in `board`.

mod base;
mod board;
mod build;
pub mod cache;
pub mod customize;
mod destination;
pub mod features;
pub mod fetch;
pub mod initramfs;
pub(crate) mod inputs;
pub mod layer;
pub mod mmdebstrap;
pub mod prerequisites;
pub mod recipe;
mod request;
pub mod systemd;
pub mod tartree;
pub mod tree;
pub mod users;

pub use base::{BaseKey, BaseReport, cache_key};
pub use build::build_rootfs;
use features::FeatureError;
pub use features::Selection;
use fetch::FetchError;
pub use inputs::{artifact_flags, secret_path};
use mmdebstrap::MmdebstrapError;
use prerequisites::PrerequisiteError;
pub use request::{
    ArtifactSource, BootFiles, Password, RANDOM, RootfsEvent, RootfsReport, RootfsRequest,
    SecretFile,
};
use tartree::TarTreeError;

use std::path::PathBuf;

use crate::plan::PlanError;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(transparent)]
    Feature(#[from] FeatureError),
    #[error(transparent)]
    Prerequisite(#[from] PrerequisiteError),
    #[error(transparent)]
    Mmdebstrap(#[from] MmdebstrapError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
    #[error(transparent)]
    User(#[from] users::UserError),
    #[error(transparent)]
    Customize(#[from] customize::CustomizeError),
    #[error(transparent)]
    Tree(#[from] TarTreeError),
    #[error(transparent)]
    Initramfs(#[from] initramfs::InitramfsError),
    #[error("invalid layout for fstab: {0}")]
    Plan(#[from] PlanError),
    #[error("setting `{name}` (feature {feature}): {message}")]
    Setting {
        name: String,
        feature: String,
        message: String,
    },
    #[error(
        "feature `{feature}` needs {description} (`{name}`), which is not in Debian: give {flag} PATH|URL and its checksum with {sha_flag} HEX"
    )]
    MissingArtifact {
        name: String,
        feature: String,
        description: String,
        flag: String,
        sha_flag: String,
    },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
    #[error("output {path}: {message}")]
    Output { path: PathBuf, message: String },
    #[error(
        "the root filesystem has no {what} at `{pattern}`, where board `{board}`'s profile expects it{hint}"
    )]
    BootFile {
        what: String,
        pattern: String,
        board: String,
        hint: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl RootfsError {
    /// True when the user's input is at fault (exit status 2) rather than the operation (1).
    pub fn is_input_error(&self) -> bool {
        match self {
            RootfsError::Feature(_)
            | RootfsError::User(_)
            | RootfsError::Plan(_)
            | RootfsError::Setting { .. }
            | RootfsError::MissingArtifact { .. }
            | RootfsError::Invalid { .. }
            | RootfsError::Output { .. }
            | RootfsError::Tree(TarTreeError::PastEnd { .. }) => true,
            RootfsError::Fetch(f) => f.is_input_error(),
            RootfsError::Cache(c) => c.is_input_error(),
            RootfsError::Customize(c) => matches!(
                c,
                customize::CustomizeError::Template { .. }
                    | customize::CustomizeError::NoGroup { .. }
                    | customize::CustomizeError::NotASystem { .. }
            ),
            _ => false,
        }
    }
}

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RootfsError {
    let context = context.into();
    move |source| RootfsError::Io { context, source }
}

/// Trees the unit tests make with GNU tar, a writer independent of [`tartree`].
#[cfg(test)]
pub(crate) mod test_trees {
    use std::path::Path;

    use super::tartree::TarTree;

    /// The directory `root` packed by GNU tar into `tar`, opened as a tree.
    pub(crate) fn packed(root: &Path, tar: &Path) -> TarTree {
        let st = std::process::Command::new("tar")
            .arg("--create")
            .arg("--file")
            .arg(tar)
            .arg("--directory")
            .arg(root)
            .arg(".")
            .status()
            .expect("tar (package tar) must be installed");
        assert!(st.success(), "tar --create -C {}", root.display());
        TarTree::open(tar).unwrap()
    }
}
