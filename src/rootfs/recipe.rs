//! Rootfs recipes as written: `rootfs/base.toml` and `rootfs/features/NAME.toml` (embedded in the
//! binary), every value tagged with file, line and column. Unknown keys are rejected.

use std::sync::Arc;

use serde::Deserialize;

use crate::profile::source::{Loc, LocError, SourceFile, parse_with_origin};

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error(transparent)]
    At(#[from] LocError),
    #[error("the embedded recipe {path} is missing from this build of boardsmith")]
    Missing { path: String },
}

impl RecipeError {
    pub fn invalid<T>(loc: &Loc<T>, field: &str, message: impl Into<String>) -> RecipeError {
        LocError::invalid(loc, field, message).into()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecipe {
    pub description: Option<Loc<String>>,
    // Base only (a board profile's [rootfs] overrides these).
    pub suite: Option<Loc<String>>,
    pub mirror: Option<Loc<String>>,
    pub security_mirror: Option<Loc<String>>,
    pub hostname: Option<Loc<String>>,
    pub user: Option<Loc<String>>,
    pub locale: Option<Loc<String>>,
    pub timezone: Option<Loc<String>>,
    pub fstab: Option<Loc<String>>,
    pub variant: Option<Loc<String>>,
    pub apt_options: Option<Loc<Vec<String>>>,
    pub dpkg_options: Option<Loc<Vec<String>>>,
    // Base and features.
    pub components: Option<Loc<Vec<String>>>,
    /// In the base: the default. In a feature: true when the feature needs an X session logged in.
    pub autologin: Option<Loc<bool>>,
    pub packages: Option<Loc<Vec<String>>>,
    pub groups: Option<Loc<Vec<String>>>,
    pub services: Option<Loc<Vec<String>>>,
    pub remove: Option<Loc<Vec<String>>>,
    pub default_target: Option<Loc<String>>,
    // Features only.
    pub requires: Option<Loc<Vec<String>>>,
    pub kernel_fragments: Option<Loc<Vec<String>>>,
    #[serde(default, rename = "file")]
    pub files: Vec<RawFile>,
    #[serde(default, rename = "setting")]
    pub settings: Vec<RawSetting>,
    #[serde(default, rename = "artifact")]
    pub artifacts: Vec<RawArtifact>,
    #[serde(default, rename = "check")]
    pub checks: Vec<RawCheck>,
}

/// A file the recipe puts into the tree: text content or a symlink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub path: Loc<String>,
    pub content: Option<Loc<String>>,
    pub symlink: Option<Loc<String>>,
    /// Octal, e.g. "0755" (default 0644).
    pub mode: Option<Loc<String>>,
    /// "root" (default) or "user" (the default user).
    pub owner: Option<Loc<String>>,
    /// "root" (default), "user" (the default user's group) or a group name of the tree.
    pub group: Option<Loc<String>>,
    /// Substitute `{{variables}}` in content, symlink target and path.
    #[serde(default)]
    pub template: bool,
    /// Only when this flag holds: "autologin".
    pub when: Option<Loc<String>>,
}

/// A value the user may set (`--set NAME=VALUE`, an environment variable, a prompt) with a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSetting {
    pub name: Loc<String>,
    pub description: Option<Loc<String>>,
    /// "text" (default), "port" or "secret" (never printed; prompted for on a terminal).
    pub kind: Option<Loc<String>>,
    pub default: Option<Loc<String>>,
    pub env: Option<Loc<String>>,
    pub prompt: Option<Loc<String>>,
}

/// A file the package manager cannot provide: given by path or URL with its sha256.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArtifact {
    pub name: Loc<String>,
    pub description: Option<Loc<String>>,
    pub dest: Loc<String>,
    pub mode: Option<Loc<String>>,
}

/// Verified after the build: a path exists (optionally executable or containing a text), a service is
/// enabled, or a package is installed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub path: Option<Loc<String>>,
    #[serde(default)]
    pub executable: bool,
    pub contains: Option<Loc<String>>,
    pub enabled: Option<Loc<String>>,
    pub package: Option<Loc<String>>,
}

/// A parsed recipe file with the file it came from.
#[derive(Debug)]
pub struct RecipeFile {
    pub name: String,
    pub source: Arc<SourceFile>,
    pub raw: RawRecipe,
}

pub const BASE: &str = "rootfs/base.toml";
pub const FEATURES_DIR: &str = "rootfs/features";

fn parse(path: &str, text: &str) -> Result<RecipeFile, RecipeError> {
    let file = Arc::new(SourceFile {
        name: format!("embedded:{path}"),
        path: None,
        text: text.to_string(),
    });
    let raw: RawRecipe = parse_with_origin(&file)?;
    let name = path
        .rsplit('/')
        .next()
        .unwrap_or(path)
        .trim_end_matches(".toml")
        .to_string();
    Ok(RecipeFile {
        name,
        source: file,
        raw,
    })
}

fn embedded_text(path: &str) -> Result<String, RecipeError> {
    let data = crate::embedded::get(path).ok_or_else(|| RecipeError::Missing {
        path: path.to_string(),
    })?;
    Ok(String::from_utf8_lossy(data).into_owned())
}

/// The base recipe.
pub fn base() -> Result<RecipeFile, RecipeError> {
    let r = parse(BASE, &embedded_text(BASE)?)?;
    for (field, present) in [
        ("requires", r.raw.requires.as_ref().map(|l| l.at())),
        (
            "kernel_fragments",
            r.raw.kernel_fragments.as_ref().map(|l| l.at()),
        ),
    ] {
        if let Some(at) = present {
            return Err(RecipeError::At(LocError::Invalid {
                at,
                field: field.into(),
                message: "only features use this key".into(),
            }));
        }
    }
    Ok(r)
}

/// Names of the embedded features, sorted.
pub fn feature_names() -> Vec<String> {
    crate::embedded::list(FEATURES_DIR)
        .filter_map(|(p, _)| p.strip_suffix(".toml"))
        .filter_map(|p| p.rsplit('/').next())
        .map(str::to_string)
        .collect()
}

/// One feature by name (None when there is no such feature).
pub fn feature(name: &str) -> Result<Option<RecipeFile>, RecipeError> {
    let path = format!("{FEATURES_DIR}/{name}.toml");
    let Some(data) = crate::embedded::get(&path) else {
        return Ok(None);
    };
    let r = parse(&path, &String::from_utf8_lossy(data))?;
    let base_only = [
        ("suite", r.raw.suite.as_ref().map(|l| l.at())),
        ("mirror", r.raw.mirror.as_ref().map(|l| l.at())),
        (
            "security_mirror",
            r.raw.security_mirror.as_ref().map(|l| l.at()),
        ),
        ("hostname", r.raw.hostname.as_ref().map(|l| l.at())),
        ("user", r.raw.user.as_ref().map(|l| l.at())),
        ("locale", r.raw.locale.as_ref().map(|l| l.at())),
        ("timezone", r.raw.timezone.as_ref().map(|l| l.at())),
        ("fstab", r.raw.fstab.as_ref().map(|l| l.at())),
        ("variant", r.raw.variant.as_ref().map(|l| l.at())),
        ("apt_options", r.raw.apt_options.as_ref().map(|l| l.at())),
        ("dpkg_options", r.raw.dpkg_options.as_ref().map(|l| l.at())),
    ];
    for (field, present) in base_only {
        if let Some(at) = present {
            return Err(RecipeError::At(LocError::Invalid {
                at,
                field: field.into(),
                message: "is a base setting (rootfs/base.toml or the board's [rootfs]); a feature cannot set it".into(),
            }));
        }
    }
    Ok(Some(r))
}

/// Parses an octal mode like "0755".
pub fn parse_mode(v: &Loc<String>, field: &str) -> Result<u32, RecipeError> {
    u32::from_str_radix(v.value.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| RecipeError::invalid(v, field, "must be an octal mode such as \"0644\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_recipes_parse() {
        let b = base().unwrap();
        assert!(b.raw.packages.unwrap().value.contains(&"systemd".into()));
        let names = feature_names();
        for n in [
            "bluetooth",
            "droidmote",
            "ssh",
            "usb-audio",
            "usb-net",
            "wifi",
            "xfce",
        ] {
            assert!(names.contains(&n.to_string()), "{names:?}");
            assert!(feature(n).unwrap().is_some(), "{n}");
        }
        let d = feature("droidmote").unwrap().unwrap();
        assert_eq!(d.raw.kernel_fragments.unwrap().value, ["uinput"]);
        assert!(feature("no-such").unwrap().is_none());
    }

    #[test]
    fn unknown_key_is_located() {
        let e = parse("rootfs/features/x.toml", "packages = []\ncolour = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.toml:2:1"), "{e}");
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(
            parse_mode(&Loc::builtin("0755".into()), "m").unwrap(),
            0o755
        );
        assert!(parse_mode(&Loc::builtin("rwx".into()), "m").is_err());
        assert!(parse_mode(&Loc::builtin("99999".into()), "m").is_err());
    }
}
