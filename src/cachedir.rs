//! boardsmith's cache directory, one rule for every command that keeps work between runs (kernel build
//! directories, the root filesystem's package and base caches): `$XDG_CACHE_HOME/boardsmith`, else
//! `~/.cache/boardsmith`, else `/var/cache/boardsmith`.

use std::path::PathBuf;

/// The default cache directory (see the module documentation).
pub fn root() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("boardsmith");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(h).join(".cache").join("boardsmith");
    }
    PathBuf::from("/var/cache/boardsmith")
}
