//! Everything the user supplies, checked before the long part: the recipe, host name, password,
//! settings (secrets generated for `random`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::destination::Secret;
use super::features::{self, ArtifactSpec, Recipe, SettingKind};
use super::{Password, RANDOM, RootfsError, RootfsRequest, customize, fetch, users};
use crate::profile::Profile;

/// A host name (one DNS label): letters, digits and '-', not at either end, at most 63.
pub(crate) fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !h.starts_with('-')
        && !h.ends_with('-')
}

/// A Debian suite or codename (`bookworm`, `stable`, `bookworm-backports`): letters, digits and '-'.
pub(crate) fn valid_suite(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn valid_locale(l: &str) -> bool {
    !l.is_empty()
        && l.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-'))
}

/// Option names for an artifact / setting on the command line.
pub fn artifact_flags(name: &str) -> (String, String) {
    (format!("--{name}-binary"), format!("--{name}-sha256"))
}

/// Settings resolved, and the secrets generated for `random` (name, value) to write beside the output.
type Settings = (BTreeMap<String, String>, Vec<(String, String)>);

/// Resolves every setting of the selected features: given value, environment, prompt, default. A
/// secret has no default: without a value and without a terminal it is an error.
fn resolve_settings(recipe: &Recipe, req: &RootfsRequest) -> Result<Settings, RootfsError> {
    let known: Vec<&str> = recipe.settings.iter().map(|s| s.name.as_str()).collect();
    for given in req.settings.keys() {
        if !known.contains(&given.as_str()) {
            let owner = features::feature_with_setting(given);
            return Err(RootfsError::Invalid {
                what: req.setting_option(given),
                message: match (owner, known.is_empty()) {
                    (Some(f), _) => format!(
                        "belongs to feature `{f}`, which is not selected: add --feature {f} or leave the option out"
                    ),
                    (None, true) => "no selected feature has settings".into(),
                    (None, false) => format!(
                        "no selected feature has this setting; settings: {}",
                        known.join(", ")
                    ),
                },
            });
        }
    }
    let mut out = BTreeMap::new();
    let mut generated = Vec::new();
    for s in &recipe.settings {
        let err = |message: String| RootfsError::Setting {
            name: s.name.clone(),
            feature: s.feature.clone(),
            message,
        };
        let from_env = s
            .env
            .as_ref()
            .and_then(|e| std::env::var(e).ok())
            .filter(|v| !v.is_empty());
        let value = match (req.settings.get(&s.name), from_env) {
            (Some(v), _) => v.clone(),
            (None, Some(v)) => v,
            (None, None) if s.kind == SettingKind::Secret && req.interactive => {
                let label = s.prompt.clone().unwrap_or_else(|| s.description.clone());
                users::prompt_password(&label)?
            }
            (None, None) => match &s.default {
                // Recipes cannot give a secret a default (features::resolve refuses it).
                Some(d) if s.kind != SettingKind::Secret => d.clone(),
                _ => {
                    return Err(err(format!(
                        "no value{}: give {}{}{}",
                        if s.kind == SettingKind::Secret {
                            " and no terminal to ask on (a secret has no default)"
                        } else {
                            ""
                        },
                        req.setting_option(&s.name),
                        s.env
                            .as_ref()
                            .map(|e| format!(" or set the environment variable {e}"))
                            .unwrap_or_default(),
                        if s.kind == SettingKind::Secret {
                            format!(
                                ", or `{RANDOM}` to generate one (written beside the output, mode 0600)"
                            )
                        } else {
                            String::new()
                        }
                    )));
                }
            },
        };
        let value = if s.kind == SettingKind::Secret && value == RANDOM {
            let v = users::random_password()?;
            generated.push((s.name.clone(), v.clone()));
            v
        } else {
            value
        };
        match s.kind {
            SettingKind::Port => {
                if !value.parse::<u16>().is_ok_and(|p| p > 0) {
                    return Err(err(format!("`{value}` is not a TCP port (1-65535)")));
                }
            }
            SettingKind::Secret => {
                users::check_password(&value, &s.name).map_err(|e| err(e.to_string()))?;
            }
            SettingKind::Text => {
                if value.chars().any(|c| c.is_control()) {
                    return Err(err("contains control characters".into()));
                }
            }
        }
        out.insert(s.name.clone(), value);
    }
    Ok((out, generated))
}

/// The default user's hash, and the password when it was generated here (to write beside the output).
fn resolve_password(
    recipe: &Recipe,
    req: &RootfsRequest,
) -> Result<(String, Option<String>), RootfsError> {
    let what = format!("the password hash for user `{}`", recipe.user);
    match &req.password {
        Some(Password::Hash(h)) => {
            users::validate_hash(h, &what)?;
            Ok((h.clone(), None))
        }
        Some(Password::Plain(p)) => {
            users::check_password(p, &format!("the password for `{}`", recipe.user))?;
            Ok((users::hash_password(p)?, None))
        }
        Some(Password::Random) => {
            let p = users::random_password()?;
            Ok((users::hash_password(&p)?, Some(p)))
        }
        None => {
            if let Some(h) = &recipe.password_hash {
                users::validate_hash(&h.value, &format!("{} (rootfs.password_hash)", h.at()))?;
                return Ok((h.value.clone(), None));
            }
            if req.interactive {
                let p = users::prompt_password(&format!("Password for user {}", recipe.user))?;
                return Ok((users::hash_password(&p)?, None));
            }
            Err(users::UserError::NoPassword {
                user: recipe.user.clone(),
            }
            .into())
        }
    }
}

/// Where a generated secret goes: beside the output, `OUT.password` or `OUT.droidmote-password`.
pub fn secret_path(out: &Path, secret: &str) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!("{name}.{}", secret.replace('_', "-")))
}

/// The recipe for this board and request (profile, features, overrides), checked, with the template
/// variables known before any setting is resolved, and the host name.
pub(super) fn resolve_recipe(
    profile: &Profile,
    req: &RootfsRequest,
) -> Result<(Recipe, customize::Vars, String), RootfsError> {
    let mut recipe = features::resolve(profile, &req.selection)?;
    if let Some(m) = &req.mirror {
        recipe.mirror = m.clone();
    }
    if let Some(m) = &req.security_mirror {
        recipe.security_mirror = Some(m.clone()).filter(|s| !s.is_empty());
    }
    if let Some(s) = &req.suite {
        recipe.apt.suite = s.clone();
    }
    if let Some(h) = &req.hostname {
        recipe.hostname = h.clone();
    }
    if let Some(u) = &req.user {
        if !features::valid_user_name(u) {
            return Err(RootfsError::Invalid {
                what: format!("--user {u}"),
                message: "must be a lowercase login name other than root: a letter or '_', then letters, digits, '_' or '-'".into(),
            });
        }
        recipe.user = u.clone();
    }
    let autologin_files = recipe.files.iter().any(|f| f.when_autologin);
    if let Some(a) = req.autologin {
        if !a && recipe.features.contains(&"droidmote".to_string()) {
            return Err(RootfsError::Invalid {
                what: "--autologin false".into(),
                message: "the droidmote feature runs in the default user's X session, which needs autologin".into(),
            });
        }
        if a && !autologin_files {
            return Err(RootfsError::Invalid {
                what: "--autologin".into(),
                message: format!(
                    "no selected feature logs anyone in (autologin applies to a desktop session): add one of --feature {}, or leave --autologin out",
                    features::features_using_autologin().join(", --feature ")
                ),
            });
        }
        recipe.autologin = a || recipe.autologin;
    }
    if let Some(e) = req.expire_password {
        recipe.expire_password = e;
    }
    if recipe.expire_password && recipe.autologin && autologin_files {
        return Err(RootfsError::Invalid {
            what: "an expired password (--expire-password or the profile's rootfs.expire_password) with autologin".into(),
            message: "LightDM's automatic login stops at a password that must be changed, so the desktop (and DroidMote) would never start; choose one of them".into(),
        });
    }
    for (what, url) in [
        ("mirror", Some(&recipe.mirror)),
        ("security mirror", recipe.security_mirror.as_ref()),
    ] {
        if let Some(u) = url
            && (!u.contains("://") || u.chars().any(char::is_whitespace))
        {
            return Err(RootfsError::Invalid {
                what: format!("the {what} {u:?}"),
                message: "must be a URL such as http://deb.debian.org/debian".into(),
            });
        }
    }
    if !valid_suite(&recipe.apt.suite) {
        return Err(RootfsError::Invalid {
            what: format!("suite {:?}", recipe.apt.suite),
            message: "must be a Debian suite name such as bookworm".into(),
        });
    }
    // Spaces and quotes are fine (mmdebstrap's hooks get every path quoted or through the
    // environment); control characters would break its line-based special hooks and log.
    for (what, p) in [("--cache", &req.cache), ("the output", &req.out)] {
        if p.to_string_lossy().chars().any(char::is_control) {
            return Err(RootfsError::Invalid {
                what: format!("{what} {:?}", p.display().to_string()),
                message: "contains control characters (newline, tab, ...); choose another path"
                    .into(),
            });
        }
    }
    let (console_tty, console_baud) = match profile.console.split_once(',') {
        Some((t, b)) => (t.to_string(), b.to_string()),
        None => (profile.console.clone(), "115200".to_string()),
    };
    let mut vars = customize::Vars::new();
    vars.insert("board".into(), profile.name.clone());
    vars.insert("console".into(), profile.console.clone());
    vars.insert("console_tty".into(), console_tty);
    vars.insert("console_baud".into(), console_baud);
    let hostname = customize::render(&recipe.hostname, &vars, "rootfs.hostname")?;
    if !valid_hostname(&hostname) {
        return Err(RootfsError::Invalid {
            what: format!("hostname {hostname:?}"),
            message: "must be 1-63 letters, digits or '-', not starting or ending with '-'".into(),
        });
    }
    if !valid_locale(&recipe.locale) {
        return Err(RootfsError::Invalid {
            what: format!("locale {:?}", recipe.locale),
            message: "must look like C.UTF-8 or en_US.UTF-8".into(),
        });
    }
    vars.insert("hostname".into(), hostname.clone());
    vars.insert("user".into(), recipe.user.clone());
    vars.insert("locale".into(), recipe.locale.clone());
    vars.insert("timezone".into(), recipe.timezone.clone());
    Ok((recipe, vars, hostname))
}

/// What the user supplies for this recipe, all checked before the long part.
pub(super) struct Supplied {
    pub(super) password_hash: String,
    /// Generated secrets, written beside the output.
    pub(super) secrets: Vec<Secret>,
    /// Each artifact of the selected features: where from, and its checksum (checked syntax).
    pub(super) artifacts: Vec<(ArtifactSpec, String, String)>,
    /// `--rootfs-tarball`: where from, and its checksum.
    pub(super) tarball: Option<(String, String)>,
}

impl Supplied {
    /// The password, the settings (added to `vars`), the artifacts and the prebuilt tarball, with their
    /// checksums; an artifact no selected feature uses is an error.
    pub(super) fn gather(
        recipe: &Recipe,
        req: &RootfsRequest,
        vars: &mut customize::Vars,
    ) -> Result<Supplied, RootfsError> {
        let (password_hash, generated_password) = resolve_password(recipe, req)?;
        let (settings, generated) = resolve_settings(recipe, req)?;
        vars.extend(settings);
        let secrets = generated_password
            .map(|p| ("password".to_string(), p))
            .into_iter()
            .chain(generated)
            .map(|(name, value)| Secret {
                path: secret_path(&req.out, &name),
                name,
                value,
            })
            .collect();
        Ok(Supplied {
            password_hash,
            secrets,
            artifacts: artifact_plan(recipe, req)?,
            tarball: tarball_source(req)?,
        })
    }
}

/// Every artifact the selected features need, given with its checksum; none given that no feature uses.
fn artifact_plan(
    recipe: &Recipe,
    req: &RootfsRequest,
) -> Result<Vec<(ArtifactSpec, String, String)>, RootfsError> {
    for name in req.artifacts.keys() {
        if !recipe.artifacts.iter().any(|a| &a.name == name) {
            return Err(RootfsError::Invalid {
                what: format!("{} {name}", artifact_flags(name).0),
                message: "no selected feature uses it (select the feature that does, e.g. --feature droidmote)".into(),
            });
        }
    }
    let mut plan = Vec::new();
    for a in &recipe.artifacts {
        let (flag, sha_flag) = artifact_flags(&a.name);
        let given = req.artifacts.get(&a.name).cloned().unwrap_or_default();
        let (Some(source), Some(sha)) = (given.source, given.sha256) else {
            return Err(RootfsError::MissingArtifact {
                name: a.name.clone(),
                feature: a.feature.clone(),
                description: a.description.clone(),
                flag,
                sha_flag,
            });
        };
        fetch::parse_sha256(&sha_flag, &sha)?;
        plan.push((a.clone(), source, sha));
    }
    Ok(plan)
}

/// `--rootfs-tarball` and its required `--sha256`.
fn tarball_source(req: &RootfsRequest) -> Result<Option<(String, String)>, RootfsError> {
    let Some(t) = &req.tarball else {
        return Ok(None);
    };
    let (Some(source), Some(sha)) = (t.source.clone(), t.sha256.clone()) else {
        return Err(RootfsError::Invalid {
            what: "--rootfs-tarball".into(),
            message: "needs its checksum: --sha256 HEX".into(),
        });
    };
    fetch::parse_sha256("--sha256", &sha)?;
    Ok(Some((source, sha)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Catalog;
    use crate::rootfs::ArtifactSource;

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn gather(req: &RootfsRequest) -> Result<Supplied, RootfsError> {
        let profile = Catalog::default().load("cubieboard").unwrap();
        let (recipe, mut vars, _) = resolve_recipe(&profile, req)?;
        Supplied::gather(&recipe, req, &mut vars)
    }

    fn request() -> RootfsRequest {
        let mut req = RootfsRequest::new(PathBuf::from("/srv/out/board.tar"), 1_700_000_000);
        req.password = Some(Password::Plain("a long enough password".into()));
        req
    }

    #[test]
    fn a_generated_password_is_a_secret_beside_the_output() {
        let mut req = request();
        req.password = Some(Password::Random);
        let s = gather(&req).unwrap();
        assert_eq!(s.secrets.len(), 1);
        assert_eq!(s.secrets[0].name, "password");
        assert_eq!(s.secrets[0].path, Path::new("/srv/out/board.tar.password"));
        users::validate_hash(&s.password_hash, "hash").unwrap();
        assert!(!s.password_hash.contains(&s.secrets[0].value));
        assert!(s.artifacts.is_empty() && s.tarball.is_none());
    }

    #[test]
    fn no_password_without_a_terminal_is_refused() {
        let mut req = request();
        req.password = None;
        let e = gather(&req).err().unwrap();
        assert!(
            matches!(e, RootfsError::User(users::UserError::NoPassword { .. })),
            "{e}"
        );
    }

    #[test]
    fn a_prebuilt_tarball_needs_a_valid_checksum() {
        let mut req = request();
        req.tarball = Some(ArtifactSource {
            source: Some("rootfs.tar.xz".into()),
            sha256: None,
        });
        let e = gather(&req).err().unwrap().to_string();
        assert!(
            e.contains("--rootfs-tarball") && e.contains("--sha256"),
            "{e}"
        );
        req.tarball.as_mut().unwrap().sha256 = Some("not-hex".into());
        assert!(matches!(gather(&req).err().unwrap(), RootfsError::Fetch(_)));
        req.tarball.as_mut().unwrap().sha256 = Some(SHA.into());
        let s = gather(&req).unwrap();
        assert_eq!(s.tarball, Some(("rootfs.tar.xz".into(), SHA.into())));
    }

    #[test]
    fn artifacts_are_wanted_by_a_feature_and_given_with_their_checksum() {
        let mut req = request();
        let given = ArtifactSource {
            source: Some("droidmote".into()),
            sha256: Some(SHA.into()),
        };
        req.artifacts.insert("droidmote".into(), given);
        let e = gather(&req).err().unwrap().to_string();
        assert!(
            e.contains("--droidmote-binary") && e.contains("no selected feature uses it"),
            "{e}"
        );
        req.selection.add = vec!["droidmote".into()];
        req.settings
            .insert("droidmote_password".into(), "another long password".into());
        let s = gather(&req).unwrap();
        assert_eq!(s.artifacts.len(), 1);
        assert_eq!(
            (s.artifacts[0].1.as_str(), s.artifacts[0].2.as_str()),
            ("droidmote", SHA)
        );
        req.artifacts.clear();
        let e = gather(&req).err().unwrap();
        assert!(matches!(e, RootfsError::MissingArtifact { .. }), "{e}");
    }

    #[test]
    fn secret_files_are_named_after_the_output() {
        assert_eq!(
            secret_path(Path::new("o/b.tar"), "droidmote_password"),
            Path::new("o/b.tar.droidmote-password")
        );
    }
}
