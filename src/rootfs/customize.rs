//! The configuration steps that need no package manager, applied to the tree: users (root locked, the
//! default user with its hash, groups and home), recipe files (rendered templates), artifacts, fstab from
//! the image plan, enabled services, the default target. The same code configures a Debian tree from
//! mmdebstrap and a prebuilt tarball.

use std::collections::BTreeMap;

use super::features::{CheckSpec, FileBody, Recipe};
use super::systemd::{self, UnitError};
use super::tartree::{Kind, Node, TarTree, TarTreeError};
use super::users::{Accounts, Db, UserError, UserReport};
use crate::plan::Layout;
use crate::plan::fstab::{self, FstabEntry};

#[derive(Debug, thiserror::Error)]
pub enum CustomizeError {
    #[error(transparent)]
    Tree(#[from] TarTreeError),
    #[error(transparent)]
    Unit(#[from] UnitError),
    #[error(transparent)]
    User(#[from] UserError),
    #[error("{at}: unknown template variable `{{{{{name}}}}}`; known: {known}")]
    Template {
        at: String,
        name: String,
        known: String,
    },
    #[error("{at}: group `{group}` does not exist in the root filesystem")]
    NoGroup { at: String, group: String },
    #[error(
        "the root filesystem has no {path}: is it a Linux system (a Debian or other root filesystem tarball)?"
    )]
    NotASystem { path: String },
    #[error("check failed ({feature}, {at}): {message}")]
    Check {
        feature: String,
        at: String,
        message: String,
    },
}

/// Values for `{{name}}` in templates. Secrets are in it too, so it never goes to a log.
pub type Vars = BTreeMap<String, String>;

pub fn render(text: &str, vars: &Vars, at: &str) -> Result<String, CustomizeError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else {
            out.push_str(&rest[i..]);
            rest = "";
            break;
        };
        let name = after[..j].trim();
        let value = vars.get(name).ok_or_else(|| CustomizeError::Template {
            at: at.to_string(),
            name: name.to_string(),
            known: vars.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
        out.push_str(value);
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// What configuring the tree did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Customized {
    pub user: UserReport,
    pub fstab: Vec<FstabEntry>,
    pub enabled: Vec<String>,
    pub files: Vec<String>,
    pub artifacts: Vec<String>,
    pub warnings: Vec<String>,
}

/// Shadow's "last password change" field: days since 1970 at SOURCE_DATE_EPOCH.
fn days(epoch: u64) -> u64 {
    epoch / 86_400
}

fn db(tree: &TarTree, path: &str) -> Result<Option<Db>, CustomizeError> {
    Ok(tree.read_string(path)?.map(|t| Db::parse(&t)))
}

fn write_keeping_meta(
    tree: &mut TarTree,
    path: &str,
    text: String,
    mode: u32,
    gid: u64,
) -> Result<(), CustomizeError> {
    if tree.get(path).is_some() {
        tree.write_file(path, text.into_bytes(), mode)?;
    } else {
        tree.insert(path, Node::file(text.into_bytes(), mode).owned(0, gid))?;
    }
    Ok(())
}

/// Inputs of the configuration besides the recipe.
pub struct Inputs<'a> {
    pub board: &'a str,
    pub epoch: u64,
    pub password_hash: &'a str,
    /// The default user must change the password at the first login.
    pub expire_password: bool,
    pub vars: &'a Vars,
    pub layout: &'a Layout,
    /// (destination in the tree, bytes, mode) of each artifact.
    pub artifacts: Vec<(String, Vec<u8>, u32)>,
    /// Files that configure the initramfs (also given to mmdebstrap before the kernel installs).
    pub initramfs: Vec<(String, String)>,
    /// Missing units are errors (a Debian build from the recipe) rather than warnings (a prebuilt tarball).
    pub strict: bool,
}

/// The board configuration, in order: identity files removed, accounts (root locked, the default
/// user, its home from /etc/skel), the recipe's files, the initramfs configuration, the artifacts,
/// fstab from the plan, services and the default target.
pub fn apply(
    tree: &mut TarTree,
    recipe: &Recipe,
    inp: &Inputs<'_>,
) -> Result<Customized, CustomizeError> {
    // Identity that must differ per card or per build.
    for pattern in &recipe.remove {
        for p in tree.glob(pattern) {
            tree.remove(&p)?;
        }
    }
    let (acc, user) = accounts(tree, recipe, inp)?;
    let (uid, gid) = (u64::from(user.uid), u64::from(user.gid));
    home_from_skel(tree, &user.home, uid, gid)?;
    let files = recipe_files(tree, recipe, inp, &acc, uid, gid)?;
    for (path, text) in &inp.initramfs {
        tree.insert(path, Node::file(text.clone().into_bytes(), 0o644))?;
    }

    // Artifacts (proprietary binaries), already verified against their sha256.
    let mut artifacts = Vec::new();
    for (dest, data, mode) in &inp.artifacts {
        artifacts.push(tree.insert(dest, Node::file(data.clone(), *mode))?);
    }

    // fstab from the plan.
    let entries = fstab::entries(inp.layout, recipe.fstab);
    tree.insert(
        "etc/fstab",
        Node::file(
            fstab::render(inp.board, inp.epoch, &entries).into_bytes(),
            0o644,
        ),
    )?;
    for e in &entries {
        if e.mount != "/" {
            tree.insert(e.mount.trim_start_matches('/'), Node::dir(0o755))?;
        }
    }

    let (enabled, warnings) = services(tree, recipe, inp)?;
    Ok(Customized {
        user,
        fstab: entries,
        enabled,
        files,
        artifacts,
        warnings,
    })
}

/// The account databases with root locked and the default user in place, written back (password
/// hashes readable by root and the shadow group only; no backup copies left).
fn accounts(
    tree: &mut TarTree,
    recipe: &Recipe,
    inp: &Inputs<'_>,
) -> Result<(Accounts, UserReport), CustomizeError> {
    let passwd = db(tree, "etc/passwd")?.ok_or_else(|| CustomizeError::NotASystem {
        path: "/etc/passwd".into(),
    })?;
    let shadow = db(tree, "etc/shadow")?.unwrap_or(Db { lines: Vec::new() });
    let group = db(tree, "etc/group")?.ok_or_else(|| CustomizeError::NotASystem {
        path: "/etc/group".into(),
    })?;
    let gshadow = db(tree, "etc/gshadow")?;
    let mut acc = Accounts {
        passwd,
        shadow,
        group,
        gshadow,
    };
    acc.lock_root(days(inp.epoch))?;
    let shell = if tree.exists("bin/bash")? {
        "/bin/bash"
    } else {
        "/bin/sh"
    };
    let user = acc.ensure_user(
        &recipe.user,
        inp.password_hash,
        shell,
        &recipe.groups,
        days(inp.epoch),
        inp.expire_password,
    )?;
    let shadow_gid = acc.gid_of("shadow").unwrap_or(0);
    write_keeping_meta(tree, "etc/passwd", acc.passwd.render(), 0o644, 0)?;
    write_keeping_meta(tree, "etc/group", acc.group.render(), 0o644, 0)?;
    // Password hashes: readable by root and the shadow group only, whatever the source tree had.
    tree.insert(
        "etc/shadow",
        Node::file(acc.shadow.render().into_bytes(), 0o640).owned(0, shadow_gid),
    )?;
    if let Some(gs) = &acc.gshadow {
        tree.insert(
            "etc/gshadow",
            Node::file(gs.render().into_bytes(), 0o640).owned(0, shadow_gid),
        )?;
    }
    // Backup copies would still hold the old entries.
    for backup in ["etc/passwd-", "etc/shadow-", "etc/group-", "etc/gshadow-"] {
        tree.remove(backup)?;
    }
    Ok((acc, user))
}

/// A new home directory, owned by the user, with a copy of /etc/skel.
fn home_from_skel(
    tree: &mut TarTree,
    home: &str,
    uid: u64,
    gid: u64,
) -> Result<(), CustomizeError> {
    let home = home.trim_start_matches('/').to_string();
    if tree.get(&home).is_some() {
        return Ok(());
    }
    tree.insert(&home, Node::dir(0o700).owned(uid, gid))?;
    let skel: Vec<String> = tree
        .paths()
        .into_iter()
        .filter(|p| p.starts_with("etc/skel/"))
        .collect();
    for s in skel {
        let Some(node) = tree.get(&s).cloned() else {
            continue;
        };
        let rel = &s["etc/skel/".len()..];
        let node = match node.kind {
            Kind::File(_) => Node {
                kind: Kind::File(super::tartree::Data::Bytes(
                    tree.read(&s)?.unwrap_or_default(),
                )),
                ..node
            },
            Kind::Hardlink(_) => continue,
            _ => node,
        };
        tree.insert(&format!("{home}/{rel}"), node.owned(uid, gid))?;
    }
    Ok(())
}

/// The recipe's files (templates rendered, owners and groups resolved); the paths written.
fn recipe_files(
    tree: &mut TarTree,
    recipe: &Recipe,
    inp: &Inputs<'_>,
    acc: &Accounts,
    uid: u64,
    gid: u64,
) -> Result<Vec<String>, CustomizeError> {
    let mut files = Vec::new();
    for f in &recipe.files {
        if f.when_autologin && !recipe.autologin {
            continue;
        }
        let path = if f.template {
            render(&f.path, inp.vars, &f.at)?
        } else {
            f.path.clone()
        };
        let owner = if f.owner_user { uid } else { 0 };
        let group_id = match f.group.as_deref() {
            None | Some("root") => 0,
            Some("user") => gid,
            Some(g) => acc.gid_of(g).ok_or_else(|| CustomizeError::NoGroup {
                at: f.at.clone(),
                group: g.to_string(),
            })?,
        };
        let node = match &f.body {
            FileBody::Text(t) => {
                let text = if f.template {
                    render(t, inp.vars, &f.at)?
                } else {
                    t.clone()
                };
                // TOML multi-line strings start after the newline; keep files from starting blank.
                let text = text.strip_prefix('\n').unwrap_or(&text).to_string();
                Node::file(text.into_bytes(), f.mode).owned(owner, group_id)
            }
            FileBody::Symlink(target) => {
                let target = if f.template {
                    render(target, inp.vars, &f.at)?
                } else {
                    target.clone()
                };
                Node::symlink(&target)
            }
        };
        // A symlink replacing a file (resolv.conf) must not write through an old symlink.
        if matches!(node.kind, Kind::Symlink(_)) {
            tree.remove(&path)?;
        } else if let Some(existing) = tree.get(&path)
            && matches!(existing.kind, Kind::Symlink(_))
        {
            tree.remove(&path)?;
        }
        files.push(tree.insert(&path, node)?);
    }
    Ok(files)
}

/// The recipe's services enabled and its default target set; a missing unit in a prebuilt tarball
/// is a warning.
fn services(
    tree: &mut TarTree,
    recipe: &Recipe,
    inp: &Inputs<'_>,
) -> Result<(Vec<String>, Vec<String>), CustomizeError> {
    let mut enabled = Vec::new();
    let mut warnings = Vec::new();
    for s in &recipe.services {
        let unit = render(s, inp.vars, "a `services` entry")?;
        match systemd::enable(tree, &unit) {
            Ok(_) => enabled.push(unit),
            Err(e @ (UnitError::NotFound { .. } | UnitError::Static { .. })) if !inp.strict => {
                warnings.push(format!("{e}; skipped"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(t) = &recipe.default_target {
        tree.remove("etc/systemd/system/default.target")?;
        tree.insert(
            "etc/systemd/system/default.target",
            Node::symlink(&format!("/lib/systemd/system/{t}")),
        )?;
    }

    Ok((enabled, warnings))
}

/// Is `package` installed according to dpkg's status database?
pub fn package_installed(tree: &TarTree, package: &str) -> Result<bool, TarTreeError> {
    let Some(status) = tree.read_string("var/lib/dpkg/status")? else {
        return Ok(false);
    };
    Ok(status.split("\n\n").any(|stanza| {
        stanza.lines().any(|l| l == format!("Package: {package}"))
            && stanza.lines().any(|l| l == "Status: install ok installed")
    }))
}

/// Runs the recipe's checks against the configured tree.
pub fn run_checks(tree: &TarTree, recipe: &Recipe, vars: &Vars) -> Result<usize, CustomizeError> {
    for c in &recipe.checks {
        let fail = |message: String| CustomizeError::Check {
            feature: c.feature.clone(),
            at: c.at.clone(),
            message,
        };
        match &c.spec {
            CheckSpec::Path {
                path,
                executable,
                contains,
            } => {
                let path = render(path, vars, &c.at)?;
                let Some((_, node)) = tree.lookup(&path)? else {
                    return Err(fail(format!("/{path} is missing")));
                };
                if *executable && node.mode & 0o111 == 0 {
                    return Err(fail(format!("/{path} is not executable")));
                }
                if let Some(text) = contains {
                    let content = tree.read_string(&path)?.unwrap_or_default();
                    if !content.contains(text.as_str()) {
                        return Err(fail(format!("/{path} does not contain {text:?}")));
                    }
                }
            }
            CheckSpec::Enabled(unit) => {
                let unit = render(unit, vars, &c.at)?;
                if !systemd::is_enabled(tree, &unit)? {
                    return Err(fail(format!("{unit} is not enabled")));
                }
            }
            CheckSpec::Package(p) => {
                if !package_installed(tree, p)? {
                    return Err(fail(format!("package {p} is not installed")));
                }
            }
        }
    }
    Ok(recipe.checks.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let mut v = Vars::new();
        v.insert("user".into(), "debian".into());
        assert_eq!(
            render("a {{user}} b {{ user }}", &v, "x").unwrap(),
            "a debian b debian"
        );
        let e = render("{{nope}}", &v, "f:1:1").unwrap_err().to_string();
        assert!(
            e.contains("f:1:1") && e.contains("{{nope}}") && e.contains("user"),
            "{e}"
        );
        assert_eq!(render("no vars {{", &v, "x").unwrap(), "no vars {{");
    }
}
