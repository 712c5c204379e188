//! Which features a build gets (the profile's defaults, `--feature`, `--no-feature`, and what features
//! require), checked against the board (kernel config fragments), and merged with the base recipe and
//! the profile's `[rootfs]` into one [`Recipe`].

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::recipe::{
    self, RawCheck, RawFile, RawRecipe, RawSetting, RecipeError, RecipeFile, parse_mode,
};
use crate::profile::Profile;
use crate::profile::source::{Loc, LocError};

#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("{at}: unknown feature `{name}`; known features: {known}")]
    Unknown {
        name: String,
        at: String,
        known: String,
    },
    #[error(
        "feature `{feature}` needs feature `{required}`, which {why}; drop --no-feature {required} or the feature that needs it"
    )]
    Conflict {
        feature: String,
        required: String,
        why: String,
    },
    #[error(
        "feature `{feature}` needs the kernel config fragment `{fragment}`, but board `{board}` does not build its kernel with it ({at}: kernel.fragments = [{have}]); add \"{fragment}\" to kernel.fragments in the board profile, or build without --feature {feature}"
    )]
    KernelFragment {
        feature: String,
        fragment: String,
        board: String,
        at: String,
        have: String,
    },
    #[error(
        "--no-feature {feature} has no effect here: board `{board}` does not turn it on by default (its rootfs.features: {defaults}); leave it out"
    )]
    NotDefault {
        feature: String,
        board: String,
        defaults: String,
    },
    #[error(transparent)]
    Recipe(#[from] RecipeError),
}

pub use crate::plan::fstab::FstabNaming;

#[derive(Debug, Clone)]
pub enum FileBody {
    Text(String),
    Symlink(String),
}

#[derive(Debug, Clone)]
pub struct FileSpec {
    pub path: String,
    pub body: FileBody,
    pub mode: u32,
    pub owner_user: bool,
    pub group: Option<String>,
    pub template: bool,
    pub when_autologin: bool,
    pub at: String,
    pub feature: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingKind {
    Text,
    Port,
    Secret,
}

#[derive(Debug, Clone)]
pub struct SettingSpec {
    pub name: String,
    pub description: String,
    pub kind: SettingKind,
    pub default: Option<String>,
    pub env: Option<String>,
    pub prompt: Option<String>,
    pub feature: String,
}

#[derive(Debug, Clone)]
pub struct ArtifactSpec {
    pub name: String,
    pub description: String,
    pub dest: String,
    pub mode: u32,
    pub feature: String,
}

#[derive(Debug, Clone)]
pub enum CheckSpec {
    Path {
        path: String,
        executable: bool,
        contains: Option<String>,
    },
    Enabled(String),
    Package(String),
}

#[derive(Debug, Clone)]
pub struct Check {
    pub spec: CheckSpec,
    pub at: String,
    pub feature: String,
}

/// What apt installs, as mmdebstrap takes it: resolved from the recipe, carried unchanged by the base
/// plan into mmdebstrap's command line, and covered as it is by the base cache's key (one type for all
/// three, so that a field added here reaches each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AptSelection {
    pub suite: String,
    /// mmdebstrap's `--variant`.
    pub variant: String,
    pub components: Vec<String>,
    /// In order, without repeats.
    pub packages: Vec<String>,
    pub apt_options: Vec<String>,
    pub dpkg_options: Vec<String>,
}

/// Base + profile + features, ready to build.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub features: Vec<String>,
    pub apt: AptSelection,
    pub mirror: String,
    pub security_mirror: Option<String>,
    pub hostname: String,
    pub user: String,
    pub password_hash: Option<Loc<String>>,
    /// The default user must change the password at the first login (profile `expire_password`).
    pub expire_password: bool,
    pub locale: String,
    pub timezone: String,
    pub fstab: FstabNaming,
    pub autologin: bool,
    pub groups: Vec<String>,
    pub services: Vec<String>,
    pub remove: Vec<String>,
    pub default_target: Option<String>,
    pub files: Vec<FileSpec>,
    pub settings: Vec<SettingSpec>,
    pub artifacts: Vec<ArtifactSpec>,
    pub checks: Vec<Check>,
    /// Kernel config fragments the features need (all present in the profile).
    pub kernel_fragments: Vec<String>,
}

/// `--feature` / `--no-feature` from the command line.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

fn push_unique(v: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for i in items {
        if !v.contains(&i) {
            v.push(i);
        }
    }
}

/// Picks the features: profile defaults and `--feature`, less `--no-feature`, plus what they require.
pub fn select(profile: &Profile, sel: &Selection) -> Result<Vec<RecipeFile>, FeatureError> {
    let known = recipe::feature_names();
    let unknown = |name: &str, at: String| FeatureError::Unknown {
        name: name.to_string(),
        at,
        known: known.join(", "),
    };
    let defaults: Vec<String> = profile
        .rootfs
        .features
        .as_ref()
        .map(|l| l.value.clone())
        .unwrap_or_default();
    for n in &sel.remove {
        if !known.contains(n) {
            return Err(unknown(n, "--no-feature".into()));
        }
    }
    let mut wanted: Vec<(String, String)> = Vec::new();
    if let Some(defaults) = &profile.rootfs.features {
        for n in &defaults.value {
            if !known.contains(n) {
                return Err(unknown(
                    n,
                    format!(
                        "{} (rootfs.features of board `{}`)",
                        defaults.at(),
                        profile.name
                    ),
                ));
            }
            if !sel.remove.contains(n) {
                wanted.push((n.clone(), "the board's default".into()));
            }
        }
    }
    for n in &sel.add {
        if !known.contains(n) {
            return Err(unknown(n, "--feature".into()));
        }
        if sel.remove.contains(n) {
            return Err(FeatureError::Conflict {
                feature: n.clone(),
                required: n.clone(),
                why: "is also given to --no-feature".into(),
            });
        }
        wanted.push((n.clone(), "--feature".into()));
    }
    let mut chosen: BTreeSet<String> = BTreeSet::new();
    let mut files: Vec<RecipeFile> = Vec::new();
    let mut todo: Vec<(String, Option<String>)> =
        wanted.into_iter().map(|(n, _)| (n, None)).collect();
    while let Some((name, needed_by)) = todo.pop() {
        if chosen.contains(&name) {
            continue;
        }
        if let Some(by) = &needed_by
            && sel.remove.contains(&name)
        {
            return Err(FeatureError::Conflict {
                feature: by.clone(),
                required: name,
                why: "was turned off with --no-feature".into(),
            });
        }
        let Some(f) = recipe::feature(&name)? else {
            return Err(unknown(
                &name,
                needed_by
                    .map(|b| format!("`requires` of feature `{b}`"))
                    .unwrap_or_default(),
            ));
        };
        if let Some(req) = &f.raw.requires {
            for r in &req.value {
                if !known.contains(r) {
                    return Err(unknown(r, req.at()));
                }
                todo.push((r.clone(), Some(name.clone())));
            }
        }
        chosen.insert(name);
        files.push(f);
    }
    // Removing what would not be there does nothing: refused rather than ignored. (A feature another
    // one needs was refused above.)
    if let Some(n) = sel.remove.iter().find(|n| !defaults.contains(n)) {
        return Err(FeatureError::NotDefault {
            feature: n.clone(),
            board: profile.name.clone(),
            defaults: if defaults.is_empty() {
                "none".into()
            } else {
                defaults.join(", ")
            },
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// Every feature's kernel fragments must be in the board's kernel.fragments.
pub fn check_kernel_fragments(
    profile: &Profile,
    features: &[RecipeFile],
) -> Result<Vec<String>, FeatureError> {
    let mut needed = Vec::new();
    for f in features {
        for frag in f.raw.kernel_fragments.iter().flat_map(|l| &l.value) {
            if !profile.kernel.fragments.contains(frag) {
                let at = profile
                    .sources
                    .first()
                    .map(|s| s.name.clone())
                    .unwrap_or_else(|| profile.name.clone());
                return Err(FeatureError::KernelFragment {
                    feature: f.name.clone(),
                    fragment: frag.clone(),
                    board: profile.name.clone(),
                    at,
                    have: profile
                        .kernel
                        .fragments
                        .iter()
                        .map(|s| format!("\"{s}\""))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            push_unique(&mut needed, [frag.clone()]);
        }
    }
    Ok(needed)
}

fn file_spec(f: &RawFile, feature: &str) -> Result<FileSpec, RecipeError> {
    let body = match (&f.content, &f.symlink) {
        (Some(c), None) => FileBody::Text(c.value.clone()),
        (None, Some(s)) => FileBody::Symlink(s.value.clone()),
        _ => {
            return Err(RecipeError::invalid(
                &f.path,
                "file",
                "give exactly one of `content` and `symlink`",
            ));
        }
    };
    let mode = match &f.mode {
        Some(m) => parse_mode(m, "file.mode")?,
        None => 0o644,
    };
    let owner_user = match &f.owner {
        None => false,
        Some(o) if o.value == "root" => false,
        Some(o) if o.value == "user" => true,
        Some(o) => {
            return Err(RecipeError::invalid(
                o,
                "file.owner",
                "must be \"root\" or \"user\" (the default user)",
            ));
        }
    };
    let when_autologin = match &f.when {
        None => false,
        Some(w) if w.value == "autologin" => true,
        Some(w) => {
            return Err(RecipeError::invalid(
                w,
                "file.when",
                "the only condition is \"autologin\"",
            ));
        }
    };
    let path = f.path.value.trim_start_matches('/').to_string();
    if path.is_empty() || path.split('/').any(|c| c == "..") {
        return Err(RecipeError::invalid(
            &f.path,
            "file.path",
            "must be a path inside the root filesystem, without `..`",
        ));
    }
    Ok(FileSpec {
        path,
        body,
        mode,
        owner_user,
        group: f.group.as_ref().map(|g| g.value.clone()),
        template: f.template,
        when_autologin,
        at: f.path.at(),
        feature: feature.to_string(),
    })
}

fn check_spec(c: &RawCheck, feature: &str) -> Result<Check, RecipeError> {
    let (spec, at) = match (&c.path, &c.enabled, &c.package) {
        (Some(p), None, None) => (
            CheckSpec::Path {
                path: p.value.trim_start_matches('/').to_string(),
                executable: c.executable,
                contains: c.contains.as_ref().map(|l| l.value.clone()),
            },
            p.at(),
        ),
        (None, Some(e), None) => (CheckSpec::Enabled(e.value.clone()), e.at()),
        (None, None, Some(p)) => (CheckSpec::Package(p.value.clone()), p.at()),
        _ => {
            let at = c
                .path
                .as_ref()
                .or(c.enabled.as_ref())
                .or(c.package.as_ref())
                .map(|l| l.at())
                .unwrap_or_else(|| format!("a [[check]] of {feature}"));
            return Err(RecipeError::At(LocError::Invalid {
                at,
                field: "check".into(),
                message: "give exactly one of `path`, `enabled` and `package`".into(),
            }));
        }
    };
    Ok(Check {
        spec,
        at,
        feature: feature.to_string(),
    })
}

fn one_of_str(v: &Loc<String>, field: &str, options: &[&str]) -> Result<String, RecipeError> {
    if options.contains(&v.value.as_str()) {
        Ok(v.value.clone())
    } else {
        Err(RecipeError::invalid(
            v,
            field,
            format!(
                "unknown value \"{}\"; expected one of {}",
                v.value,
                options
                    .iter()
                    .map(|o| format!("\"{o}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    }
}

/// Merges base, profile and the selected features.
pub fn resolve(profile: &Profile, sel: &Selection) -> Result<Recipe, FeatureError> {
    let base = recipe::base()?;
    let features = select(profile, sel)?;
    let kernel_fragments = check_kernel_fragments(profile, &features)?;
    let mut r = from_base(profile, &base.raw)?;
    for f in &features {
        add_feature(&mut r, &f.raw, &f.name)?;
    }
    check_secret_files(&r.files, &r.settings)?;
    r.features = features.iter().map(|f| f.name.clone()).collect();
    r.kernel_fragments = kernel_fragments;
    Ok(r)
}

/// The recipe of rootfs/base.toml with the profile's `[rootfs]` over it: no feature yet.
fn from_base(profile: &Profile, b: &RawRecipe) -> Result<Recipe, FeatureError> {
    let p = &profile.rootfs;
    let pick = |prof: &Option<Loc<String>>, base: &Option<Loc<String>>, field: &str| {
        prof.clone().or_else(|| base.clone()).ok_or_else(|| {
            RecipeError::At(LocError::Invalid {
                at: format!("embedded:{}", recipe::BASE),
                field: field.into(),
                message: "is required in rootfs/base.toml".into(),
            })
        })
    };
    let user = pick(&p.user, &b.user, "user")?;
    if !valid_user_name(&user.value) {
        return Err(RecipeError::invalid(
            &user,
            "rootfs.user",
            "must be a lowercase login name: a letter or '_' then letters, digits, '_' or '-' (at most 32)",
        )
        .into());
    }
    let timezone = pick(&p.timezone, &b.timezone, "timezone")?;
    if timezone.value.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err(RecipeError::invalid(
            &timezone,
            "rootfs.timezone",
            "must be a zone name like Europe/Berlin or Etc/UTC",
        )
        .into());
    }
    let fstab_loc = pick(&p.fstab, &b.fstab, "fstab")?;
    let fstab = match one_of_str(&fstab_loc, "rootfs.fstab", &["partuuid", "label"])?.as_str() {
        "label" => FstabNaming::Label,
        _ => FstabNaming::Partuuid,
    };
    let variant_loc = b
        .variant
        .clone()
        .unwrap_or_else(|| Loc::builtin("apt".into()));
    let variant = one_of_str(
        &variant_loc,
        "variant",
        &[
            "apt",
            "essential",
            "required",
            "minbase",
            "important",
            "standard",
        ],
    )?;
    let mut components = Vec::new();
    push_unique(
        &mut components,
        p.components
            .as_ref()
            .or(b.components.as_ref())
            .map(|l| l.value.clone())
            .unwrap_or_else(|| vec!["main".into()]),
    );
    // The distribution's packages, then the board's kernel and boot loader, then the profile's.
    let mut packages = Vec::new();
    push_unique(&mut packages, values(&b.packages));
    push_unique(
        &mut packages,
        [profile.kernel.package.clone()]
            .into_iter()
            .filter(|k| !k.is_empty()),
    );
    push_unique(
        &mut packages,
        profile.bootloader.as_ref().and_then(|b| b.package.clone()),
    );
    push_unique(&mut packages, values(&p.packages));
    let mut r = Recipe {
        features: Vec::new(),
        apt: AptSelection {
            suite: pick(&p.suite, &b.suite, "suite")?.value,
            variant,
            components,
            packages,
            apt_options: values(&b.apt_options),
            dpkg_options: values(&b.dpkg_options),
        },
        mirror: pick(&p.mirror, &b.mirror, "mirror")?.value,
        security_mirror: p
            .security_mirror
            .clone()
            .or_else(|| b.security_mirror.clone())
            .map(|l| l.value)
            .filter(|s| !s.is_empty()),
        hostname: pick(&p.hostname, &b.hostname, "hostname")?.value,
        user: user.value,
        password_hash: p.password_hash.clone(),
        expire_password: p.expire_password.as_ref().is_some_and(|l| l.value),
        locale: pick(&p.locale, &b.locale, "locale")?.value,
        timezone: timezone.value,
        fstab,
        autologin: p
            .autologin
            .as_ref()
            .or(b.autologin.as_ref())
            .is_some_and(|l| l.value),
        groups: Vec::new(),
        services: Vec::new(),
        remove: Vec::new(),
        default_target: b.default_target.as_ref().map(|l| l.value.clone()),
        files: Vec::new(),
        settings: Vec::new(),
        artifacts: Vec::new(),
        checks: Vec::new(),
        kernel_fragments: Vec::new(),
    };
    push_unique(&mut r.groups, values(&b.groups));
    push_unique(&mut r.services, values(&b.services));
    push_unique(&mut r.remove, values(&b.remove));
    for f in &b.files {
        r.files.push(file_spec(f, "base")?);
    }
    for c in &b.checks {
        r.checks.push(check_spec(c, "base")?);
    }
    Ok(r)
}

/// A list a recipe may leave out, as given or empty.
fn values(l: &Option<Loc<Vec<String>>>) -> Vec<String> {
    l.as_ref().map(|l| l.value.clone()).unwrap_or_default()
}

/// Adds feature `name` (its recipe `f`) to `r`: lists extended, a default target or autologin it asks
/// for, its files, checks, settings and artefacts.
fn add_feature(r: &mut Recipe, f: &RawRecipe, name: &str) -> Result<(), FeatureError> {
    push_unique(&mut r.apt.components, values(&f.components));
    push_unique(&mut r.apt.packages, values(&f.packages));
    push_unique(&mut r.groups, values(&f.groups));
    push_unique(&mut r.services, values(&f.services));
    push_unique(&mut r.remove, values(&f.remove));
    if let Some(t) = &f.default_target {
        r.default_target = Some(t.value.clone());
    }
    if f.autologin.as_ref().is_some_and(|l| l.value) {
        r.autologin = true;
    }
    for file in &f.files {
        r.files.push(file_spec(file, name)?);
    }
    for c in &f.checks {
        r.checks.push(check_spec(c, name)?);
    }
    for s in &f.settings {
        r.settings.push(setting_spec(s, name)?);
    }
    for a in &f.artifacts {
        r.artifacts.push(ArtifactSpec {
            name: a.name.value.clone(),
            description: a
                .description
                .as_ref()
                .map(|l| l.value.clone())
                .unwrap_or_default(),
            dest: a.dest.value.trim_start_matches('/').to_string(),
            mode: match &a.mode {
                Some(m) => parse_mode(m, "artifact.mode")?,
                None => 0o644,
            },
            feature: name.to_string(),
        });
    }
    Ok(())
}

/// A feature's `[[setting]]`, checked: its name, its kind, and no default for a secret.
fn setting_spec(s: &RawSetting, feature: &str) -> Result<SettingSpec, RecipeError> {
    let kind = match &s.kind {
        None => SettingKind::Text,
        Some(k) => match one_of_str(k, "setting.kind", &["text", "port", "secret"])?.as_str() {
            "port" => SettingKind::Port,
            "secret" => SettingKind::Secret,
            _ => SettingKind::Text,
        },
    };
    if !s
        .name
        .value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(RecipeError::invalid(
            &s.name,
            "setting.name",
            "use lowercase letters, digits and '_'",
        ));
    }
    // A secret known to everyone who read the recipe is no secret.
    if kind == SettingKind::Secret
        && let Some(d) = &s.default
    {
        return Err(RecipeError::invalid(
            d,
            "setting.default",
            "a secret setting has no default: the user gives it, is asked for it, or asks for a random one",
        ));
    }
    Ok(SettingSpec {
        name: s.name.value.clone(),
        description: s
            .description
            .as_ref()
            .map(|l| l.value.clone())
            .unwrap_or_default(),
        kind,
        default: s.default.as_ref().map(|l| l.value.clone()),
        env: s.env.as_ref().map(|l| l.value.clone()),
        prompt: s.prompt.as_ref().map(|l| l.value.clone()),
        feature: feature.to_string(),
    })
}

/// Files that carry a secret setting are readable by their owner and group only.
fn check_secret_files(files: &[FileSpec], settings: &[SettingSpec]) -> Result<(), FeatureError> {
    for f in files {
        let FileBody::Text(text) = &f.body else {
            continue;
        };
        for secret in settings.iter().filter(|s| s.kind == SettingKind::Secret) {
            if f.template && mentions(text, &secret.name) && f.mode & 0o007 != 0 {
                return Err(FeatureError::Recipe(RecipeError::At(LocError::Invalid {
                    at: f.at.clone(),
                    field: "file.mode".into(),
                    message: format!(
                        "{:04o} lets every user read the secret setting `{}`; use 0640 or narrower",
                        f.mode, secret.name
                    ),
                })));
            }
        }
    }
    Ok(())
}

/// Does a template use `{{name}}` (spaces inside the braces allowed)?
fn mentions(text: &str, name: &str) -> bool {
    text.split("{{")
        .skip(1)
        .any(|rest| rest.split("}}").next().is_some_and(|v| v.trim() == name))
}

/// The kernel config fragments a rootfs feature declares (`kernel_fragments` in
/// rootfs/features/NAME.toml); None when NAME is no feature.
pub fn declared_kernel_fragments(name: &str) -> Option<Vec<String>> {
    let f = recipe::feature(name).ok().flatten()?;
    Some(f.raw.kernel_fragments.map(|l| l.value).unwrap_or_default())
}

/// The kernel config fragments rootfs features ask for: those a feature declares in
/// rootfs/features/NAME.toml (`kernel_fragments`: droidmote needs uinput, bluetooth usb-bluetooth), else
/// the fragment of the feature's own name (the rule the release notes use too). kconfig keeps those it
/// has (`kconfig::locate::extra_fragments`).
pub fn kernel_fragments_wanted(features: &[String]) -> Vec<String> {
    features
        .iter()
        .flat_map(|f| declared_kernel_fragments(f).unwrap_or_else(|| vec![f.clone()]))
        .collect()
}

/// The feature that declares setting `name`, if any (to say which feature an option belongs to).
pub fn feature_with_setting(name: &str) -> Option<String> {
    recipe::feature_names().into_iter().find(|f| {
        recipe::feature(f)
            .ok()
            .flatten()
            .is_some_and(|r| r.raw.settings.iter().any(|s| s.name.value == name))
    })
}

/// Features with a file that only exists with autologin (`when = "autologin"`): what `autologin`
/// changes.
pub fn features_using_autologin() -> Vec<String> {
    recipe::feature_names()
        .into_iter()
        .filter(|f| {
            recipe::feature(f).ok().flatten().is_some_and(|r| {
                r.raw
                    .files
                    .iter()
                    .any(|file| file.when.as_ref().is_some_and(|w| w.value == "autologin"))
            })
        })
        .collect()
}

/// A login name useradd would accept (Debian's default NAME_REGEX, lowercase).
pub fn valid_user_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && name.len() <= 32
        && name != "root"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Catalog;

    fn sel(add: &[&str], remove: &[&str]) -> Selection {
        Selection {
            add: add.iter().map(|s| s.to_string()).collect(),
            remove: remove.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn droidmote_pulls_in_xfce_and_needs_uinput() {
        let p = Catalog::default().load("cubieboard").unwrap();
        let r = resolve(&p, &sel(&["droidmote"], &[])).unwrap();
        assert_eq!(r.features, ["droidmote", "xfce"]);
        assert!(r.autologin);
        assert_eq!(r.kernel_fragments, ["uinput"]);
        assert!(r.apt.packages.contains(&"xfce4".to_string()));
        assert!(r.apt.packages.contains(&"linux-image-armmp".to_string()));
        assert!(r.apt.packages.contains(&"u-boot-sunxi".to_string()));
        assert_eq!(r.default_target.as_deref(), Some("graphical.target"));
    }

    /// The message `resolve` refuses the selection `add`, `remove` on `p` with.
    fn resolve_err(p: &Profile, add: &[&str], remove: &[&str]) -> String {
        resolve(p, &sel(add, remove)).unwrap_err().to_string()
    }

    #[test]
    fn unknown_feature_lists_known_ones() {
        let p = Catalog::default().load("cubieboard").unwrap();
        let e = resolve_err(&p, &["quantum"], &[]);
        assert!(
            e.contains("unknown feature `quantum`") && e.contains("droidmote"),
            "{e}"
        );
    }

    #[test]
    fn removing_a_feature_the_board_does_not_have_is_refused() {
        let p = Catalog::default().load("cubieboard").unwrap();
        let e = resolve_err(&p, &[], &["ssh"]);
        assert!(
            e.contains("--no-feature ssh has no effect here") && e.contains("cubieboard"),
            "{e}"
        );
    }

    #[test]
    fn required_feature_cannot_be_removed() {
        let p = Catalog::default().load("cubieboard").unwrap();
        let e = resolve_err(&p, &["droidmote"], &["xfce"]);
        assert!(e.contains("needs feature `xfce`"), "{e}");
    }

    #[test]
    fn missing_fragment_is_named() {
        let (_dir, f) = crate::testutil::scratch("nouinput.toml");
        std::fs::write(
            &f,
            "extends = \"allwinner-a10\"\n[kernel]\nfragments = [\"usb-net\"]\n[bootloader]\npath = \"usr/lib/u-boot/Cubieboard/u-boot-sunxi-with-spl.bin\"\n",
        )
        .unwrap();
        let p = Catalog::default().load(f.to_str().unwrap()).unwrap();
        let e = resolve_err(&p, &["droidmote"], &[]);
        assert!(
            e.contains("`uinput`") && e.contains("kernel.fragments"),
            "{e}"
        );
    }

    #[test]
    fn declared_fragments() {
        assert_eq!(declared_kernel_fragments("droidmote").unwrap(), ["uinput"]);
        assert_eq!(
            declared_kernel_fragments("bluetooth").unwrap(),
            ["usb-bluetooth"]
        );
        assert!(declared_kernel_fragments("wifi").unwrap().is_empty());
        assert!(declared_kernel_fragments("uinput").is_none());
    }

    #[test]
    fn secrets_have_no_default_and_stay_private() {
        let p = Catalog::default().load("cubieboard").unwrap();
        let r = resolve(&p, &sel(&["droidmote"], &[])).unwrap();
        let secret = r
            .settings
            .iter()
            .find(|s| s.name == "droidmote_password")
            .unwrap();
        assert_eq!(secret.kind, SettingKind::Secret);
        assert!(secret.default.is_none());
        let conf = r
            .files
            .iter()
            .find(|f| f.path == "etc/droidmote/droidmote.conf")
            .unwrap();
        assert_eq!(conf.mode & 0o007, 0);
        // The same file readable by all is refused, naming the file and the setting.
        let mut open = conf.clone();
        open.mode = 0o644;
        let e = check_secret_files(&[open], &r.settings)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("droidmote.toml") && e.contains("0644") && e.contains("droidmote_password"),
            "{e}"
        );
        assert!(mentions(
            "a {{ droidmote_password }} b",
            "droidmote_password"
        ));
        assert!(!mentions("a {{droidmote_port}} b", "droidmote_password"));
    }

    /// No embedded board carries a password hash: it would be a built-in default password.
    #[test]
    fn embedded_boards_have_no_password() {
        let c = Catalog::default();
        for b in c.list().unwrap() {
            let p = c.load(&b.name).unwrap();
            assert!(p.rootfs.password_hash.is_none(), "{}", b.name);
        }
    }

    #[test]
    fn user_names() {
        assert!(valid_user_name("debian"));
        assert!(valid_user_name("_svc-1"));
        assert!(!valid_user_name("Root"));
        assert!(!valid_user_name("root"));
        assert!(!valid_user_name("1abc"));
        assert!(!valid_user_name("a b"));
    }
}
