//! Helpers the unit tests share.

use std::path::PathBuf;

/// A fresh scratch directory and the path `name` inside it (not created). The directory and all in it
/// are removed when the returned guard drops, so keep it alive as long as the path is used.
pub(crate) fn scratch(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("creating a scratch directory");
    let path = dir.path().join(name);
    (dir, path)
}
