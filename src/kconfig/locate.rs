//! Where fragments come from: a bare name (`usb-net`) is `kernel-configs/usb-net.config`, embedded in
//! the binary; anything with a `/` or ending in `.config` is a file, relative to the profile that names it
//! (or to the current directory when given on the command line).

use std::path::{Path, PathBuf};

use super::fragment::{Fragment, ParseError, parse};
use crate::profile::Profile;

#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error(
        "{at}: unknown kernel config fragment `{name}`; embedded fragments: {known}. Give a path (with `/` or ending in .config) for your own"
    )]
    Unknown {
        name: String,
        at: String,
        known: String,
    },
    #[error("{at}: cannot read kernel config fragment {}: {source}", path.display())]
    Read {
        path: PathBuf,
        at: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(#[from] ParseError),
    #[error("{origin}: not UTF-8 text")]
    NotText { origin: String },
}

/// A fragment reference and where it was written (for messages).
#[derive(Debug, Clone)]
pub struct FragmentRef {
    pub name: String,
    /// Directory relative paths are resolved against.
    pub base: PathBuf,
    /// `boards/x.toml:7:13`, `--fragment`, ...
    pub at: String,
}

/// Names of the embedded fragments.
pub fn embedded_names() -> Vec<String> {
    crate::embedded::list("kernel-configs")
        .filter_map(|(p, _)| {
            p.strip_prefix("kernel-configs/")
                .and_then(|n| n.strip_suffix(".config"))
                .map(String::from)
        })
        .collect()
}

fn is_path(name: &str) -> bool {
    name.contains('/') || name.ends_with(".config")
}

/// Reads and parses one fragment.
pub fn load(r: &FragmentRef) -> Result<Fragment, LocateError> {
    if is_path(&r.name) {
        let path = r.base.join(&r.name);
        let data = std::fs::read(&path).map_err(|source| LocateError::Read {
            path: path.clone(),
            at: r.at.clone(),
            source,
        })?;
        let origin = path.display().to_string();
        let text = String::from_utf8(data).map_err(|_| LocateError::NotText {
            origin: origin.clone(),
        })?;
        return Ok(parse(&r.name, &origin, &text)?);
    }
    let embedded = format!("kernel-configs/{}.config", r.name);
    match crate::embedded::get(&embedded) {
        Some(data) => {
            let origin = format!("embedded:{embedded}");
            let text = std::str::from_utf8(data).map_err(|_| LocateError::NotText {
                origin: origin.clone(),
            })?;
            Ok(parse(&r.name, &origin, text)?)
        }
        None => Err(LocateError::Unknown {
            name: r.name.clone(),
            at: r.at.clone(),
            known: embedded_names().join(", "),
        }),
    }
}

/// The profile's fragments (in order) followed by `extra` (given on the command line, relative to
/// the current directory).
pub fn refs_for(profile: &Profile, extra: &[String]) -> Vec<FragmentRef> {
    let origin = profile.kernel.fragments_origin.as_ref();
    let at = origin
        .map(|o| format!("{o}: kernel.fragments"))
        .unwrap_or_else(|| format!("profile {}: kernel.fragments", profile.name));
    let base = origin
        .and_then(|o| o.file.path.as_deref())
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut refs: Vec<FragmentRef> = profile
        .kernel
        .fragments
        .iter()
        .map(|n| FragmentRef {
            name: n.clone(),
            base: base.clone(),
            at: at.clone(),
        })
        .collect();
    refs.extend(extra.iter().map(|n| FragmentRef {
        name: n.clone(),
        base: PathBuf::new(),
        at: "--fragment".into(),
    }));
    refs
}

/// The embedded fragments among `wanted` (what rootfs features ask for: see
/// `rootfs::features::kernel_fragments_wanted`) that the profile's own fragments do not already name, in
/// order, each once. Names without an embedded fragment add nothing.
pub fn extra_fragments(profile: &Profile, wanted: &[String]) -> Vec<String> {
    let known = embedded_names();
    let mut out: Vec<String> = Vec::new();
    for w in wanted {
        if known.contains(w) && !profile.kernel.fragments.contains(w) && !out.contains(w) {
            out.push(w.clone());
        }
    }
    out
}

/// Loads every referenced fragment, in order.
pub fn load_all(refs: &[FragmentRef]) -> Result<Vec<Fragment>, LocateError> {
    refs.iter().map(load).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_fragments_exist_and_parse() {
        let names = embedded_names();
        for n in ["uinput", "usb-net", "usb-audio", "usb-bluetooth"] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
        for n in names {
            let f = load(&FragmentRef {
                name: n.clone(),
                base: PathBuf::from("."),
                at: "test".into(),
            })
            .expect("embedded fragment parses");
            assert!(!f.entries.is_empty(), "{n} is empty");
        }
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let e = load(&FragmentRef {
            name: "usb-nett".into(),
            base: PathBuf::from("."),
            at: "boards/x.toml:3:1".into(),
        })
        .expect_err("unknown");
        let m = e.to_string();
        assert!(
            m.starts_with("boards/x.toml:3:1: unknown kernel config fragment `usb-nett`"),
            "{m}"
        );
        assert!(m.contains("usb-net"), "{m}");
    }
}
