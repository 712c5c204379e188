//! `systemctl enable` without systemd: reads a unit's [Install] section in the tree and creates the
//! symlinks systemctl would (WantedBy=, RequiredBy=, Alias=, Also=, template instances).

use super::tartree::{Kind, Node, TarTree, TarTreeError};

#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error(
        "cannot enable `{unit}`: no such unit in /etc/systemd/system, /lib/systemd/system or /usr/lib/systemd/system of the root filesystem (is the package that ships it installed?)"
    )]
    NotFound { unit: String },
    #[error(
        "cannot enable `{unit}`: it has no [Install] section (a static unit is started by others)"
    )]
    Static { unit: String },
    #[error(transparent)]
    Tree(#[from] TarTreeError),
}

const UNIT_DIRS: &[&str] = &[
    "etc/systemd/system",
    "lib/systemd/system",
    "usr/lib/systemd/system",
];

/// Where a unit file is: (path in the tree, absolute path a symlink should name).
fn find_unit(tree: &TarTree, file: &str) -> Result<Option<(String, String)>, TarTreeError> {
    for dir in UNIT_DIRS {
        let p = format!("{dir}/{file}");
        if let Some((_, node)) = tree.lookup(&p)?
            && matches!(node.kind, Kind::File(_))
        {
            return Ok(Some((p.clone(), format!("/{p}"))));
        }
    }
    Ok(None)
}

/// `[Install]` keys of a unit file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Install {
    pub wanted_by: Vec<String>,
    pub required_by: Vec<String>,
    pub alias: Vec<String>,
    pub also: Vec<String>,
    pub default_instance: Option<String>,
}

pub fn parse_install(text: &str) -> Option<Install> {
    let mut in_install = false;
    let mut seen = false;
    let mut out = Install::default();
    for raw in text.lines() {
        let line = raw.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            in_install = line == "[Install]";
            seen |= in_install;
            continue;
        }
        if !in_install {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let words = || v.split_whitespace().map(str::to_string);
        match k.trim() {
            "WantedBy" => out.wanted_by.extend(words()),
            "RequiredBy" => out.required_by.extend(words()),
            "Alias" => out.alias.extend(words()),
            "Also" => out.also.extend(words()),
            "DefaultInstance" => out.default_instance = Some(v.trim().to_string()),
            _ => {}
        }
    }
    seen.then_some(out)
}

/// Splits `name@inst.service` into (`name@.service`, Some(`inst`)).
fn template_of(unit: &str) -> (String, Option<String>) {
    if let Some((prefix, rest)) = unit.split_once('@')
        && let Some(dot) = rest.rfind('.')
    {
        let inst = &rest[..dot];
        let suffix = &rest[dot..];
        let template = format!("{prefix}@{suffix}");
        return (template, (!inst.is_empty()).then(|| inst.to_string()));
    }
    (unit.to_string(), None)
}

/// Enables `unit` (and what its Also= names). Returns the symlinks created.
pub fn enable(tree: &mut TarTree, unit: &str) -> Result<Vec<String>, UnitError> {
    let mut made = Vec::new();
    let mut todo = vec![unit.to_string()];
    let mut done: Vec<String> = Vec::new();
    while let Some(u) = todo.pop() {
        if done.contains(&u) {
            continue;
        }
        done.push(u.clone());
        let (template, instance) = template_of(&u);
        let (path, target) = match find_unit(tree, &u)? {
            Some(found) => found,
            None => find_unit(tree, &template)?
                .ok_or_else(|| UnitError::NotFound { unit: u.clone() })?,
        };
        let text = tree.read_string(&path)?.unwrap_or_default();
        let install = parse_install(&text).ok_or_else(|| UnitError::Static { unit: u.clone() })?;
        if install.wanted_by.is_empty()
            && install.required_by.is_empty()
            && install.alias.is_empty()
            && install.also.is_empty()
        {
            return Err(UnitError::Static { unit: u });
        }
        let instance_name = match (&instance, &install.default_instance) {
            (Some(_), _) => u.clone(),
            (None, Some(d)) if u.contains('@') => {
                let (prefix, rest) = u.split_once('@').unwrap_or((&u, ""));
                format!("{prefix}@{d}{rest}")
            }
            _ => u.clone(),
        };
        for (dir_suffix, targets) in [
            (".wants", &install.wanted_by),
            (".requires", &install.required_by),
        ] {
            for t in targets {
                let link = format!("etc/systemd/system/{t}{dir_suffix}/{instance_name}");
                tree.insert(&link, Node::symlink(&target))?;
                made.push(link);
            }
        }
        for a in &install.alias {
            let link = format!("etc/systemd/system/{a}");
            if format!("/{link}") != target {
                tree.insert(&link, Node::symlink(&target))?;
                made.push(link);
            }
        }
        for also in &install.also {
            todo.push(also.clone());
        }
    }
    Ok(made)
}

/// Is `unit` enabled: a symlink to it in some `*.wants`/`*.requires` directory of /etc/systemd/system,
/// or an alias (display-manager.service) pointing at it.
pub fn is_enabled(tree: &TarTree, unit: &str) -> Result<bool, TarTreeError> {
    let (template, _) = template_of(unit);
    for dir in tree.children("etc/systemd/system")? {
        let Some(node) = tree.get(&dir) else { continue };
        if !matches!(node.kind, Kind::Dir) {
            continue;
        }
        if !(dir.ends_with(".wants") || dir.ends_with(".requires")) {
            continue;
        }
        if tree.get(&format!("{dir}/{unit}")).is_some() {
            return Ok(true);
        }
    }
    // An alias such as display-manager.service -> lightdm.service also enables it.
    for entry in tree.children("etc/systemd/system")? {
        if let Some(Node {
            kind: Kind::Symlink(t),
            ..
        }) = tree.get(&entry)
        {
            let base = t.rsplit('/').next().unwrap_or(t);
            if (base == unit || base == template) && !entry.ends_with(unit) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with(units: &[(&str, &str)]) -> TarTree {
        let mut t = TarTree::empty();
        t.insert("usr/lib", Node::dir(0o755)).unwrap();
        t.insert("lib", Node::symlink("usr/lib")).unwrap();
        for (p, c) in units {
            t.insert(p, Node::file(c.as_bytes().to_vec(), 0o644))
                .unwrap();
        }
        t
    }

    fn link(t: &TarTree, p: &str) -> String {
        match &t.get(p).unwrap().kind {
            Kind::Symlink(s) => s.clone(),
            k => panic!("{p} is {k:?}"),
        }
    }

    #[test]
    fn template_instance_and_also() {
        let mut t = tree_with(&[
            (
                "usr/lib/systemd/system/serial-getty@.service",
                "[Unit]\n[Install]\nWantedBy=getty.target\n",
            ),
            (
                "usr/lib/systemd/system/systemd-networkd.service",
                "[Install]\nWantedBy=multi-user.target\nAlso=systemd-networkd.socket\nAlias=dbus-org.freedesktop.network1.service\n",
            ),
            (
                "usr/lib/systemd/system/systemd-networkd.socket",
                "[Install]\nWantedBy=sockets.target\n",
            ),
        ]);
        enable(&mut t, "serial-getty@ttyS0.service").unwrap();
        assert_eq!(
            link(
                &t,
                "etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"
            ),
            "/lib/systemd/system/serial-getty@.service"
        );
        enable(&mut t, "systemd-networkd.service").unwrap();
        assert!(
            t.get("etc/systemd/system/sockets.target.wants/systemd-networkd.socket")
                .is_some()
        );
        assert!(
            t.get("etc/systemd/system/dbus-org.freedesktop.network1.service")
                .is_some()
        );
        assert!(is_enabled(&t, "serial-getty@ttyS0.service").unwrap());
        assert!(is_enabled(&t, "systemd-networkd.service").unwrap());
        assert!(!is_enabled(&t, "serial-getty@ttyS1.service").unwrap());
    }

    #[test]
    fn missing_and_static_units_fail() {
        let mut t = tree_with(&[("usr/lib/systemd/system/s.service", "[Unit]\n[Service]\n")]);
        assert!(matches!(
            enable(&mut t, "x.service"),
            Err(UnitError::NotFound { .. })
        ));
        assert!(matches!(
            enable(&mut t, "s.service"),
            Err(UnitError::Static { .. })
        ));
    }
}
