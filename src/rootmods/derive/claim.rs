//! The walk's record: why each node was visited (its chain), and how each device is driven (modules,
//! built in, unresolved), an MFD's cell drivers included.

use std::collections::{HashMap, HashSet};

use super::super::fdt::DeviceTree;
use super::super::kmod::ModuleIndex;
use super::refs::cell_dirs;
use super::resolver::{Claim, Resolver};
use super::{Builtin, Medium, Need, Unresolved};

#[derive(Debug, Clone)]
pub(super) enum Why {
    Controller,
    Ref {
        prop: String,
        from: usize,
        target: usize,
        device: usize,
    },
    Bus {
        child: usize,
    },
}

pub(super) struct State<'t> {
    pub(super) tree: &'t DeviceTree,
    pub(super) medium: Medium,
    pub(super) why: HashMap<usize, Why>,
    pub(super) needs: Vec<(usize, Need)>,
    pub(super) builtin: Vec<Builtin>,
    pub(super) unresolved: Vec<Unresolved>,
    pub(super) cells_done: HashSet<(usize, &'static str)>,
}

impl State<'_> {
    pub(super) fn name(&self, i: usize) -> &str {
        &self.tree.node(i).name
    }

    /// The nearest node at or above `i` with a `compatible` (not the root).
    pub(super) fn device_of(&self, i: usize) -> Option<usize> {
        std::iter::once(i)
            .chain(self.tree.ancestors(i))
            .find(|&n| n != 0 && self.tree.node(n).prop("compatible").is_some())
    }

    fn link(&self, why: &Why) -> String {
        match why {
            Why::Controller => String::new(),
            Why::Ref {
                prop,
                from,
                target,
                device,
            } => {
                if target == device {
                    format!("{prop} of {} → {}", self.name(*from), self.name(*device))
                } else {
                    format!(
                        "{prop} of {} → {} → {}",
                        self.name(*from),
                        self.name(*target),
                        self.name(*device)
                    )
                }
            }
            Why::Bus { child } => format!("parent bus of {}", self.name(*child)),
        }
    }

    /// The links from `node` back to its storage controller.
    pub(super) fn chain(&self, node: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = node;
        for _ in 0..64 {
            match self.why.get(&cur) {
                None => break,
                Some(Why::Controller) => {
                    out.push(format!(
                        "{} ({} controller)",
                        self.name(cur),
                        self.medium.describe()
                    ));
                    break;
                }
                Some(w) => {
                    out.push(self.link(w));
                    cur = match w {
                        Why::Ref { from, .. } => *from,
                        Why::Bus { child } => *child,
                        Why::Controller => break,
                    };
                }
            }
        }
        out
    }

    pub(super) fn need(&mut self, index: &ModuleIndex, m: usize, chain: Vec<String>) {
        if self.needs.iter().any(|(i, _)| *i == m) {
            return;
        }
        let f = &index.modules[m];
        self.needs.push((
            m,
            Need {
                module: f.name().to_string(),
                path: f.path.clone(),
                chain,
            },
        ));
    }
}

/// Records how a visited device is driven: modules needed, built in, or unresolved.
pub(super) fn claim_device(r: &mut Resolver<'_>, st: &mut State<'_>, node: usize) {
    let tree = st.tree;
    let chain = st.chain(node);
    let what = tree.path(node);
    let compatible = tree.node(node).strings("compatible");
    if !tree.enabled(node) {
        let reason = "disabled in the device tree (status), so its driver never binds".into();
        st.unresolved.push(Unresolved {
            what,
            compatible,
            reason,
            chain,
        });
        return;
    }
    match r.claim(tree, node) {
        Claim::Modules(mods, _) => {
            for m in mods {
                st.need(r.index, m, chain.clone());
            }
        }
        Claim::Builtin(by) => st.builtin.push(Builtin { what, by, chain }),
        Claim::None => {
            let reason =
                "no module alias matches and no built-in driver is known for its compatible".into();
            st.unresolved.push(Unresolved {
                what,
                compatible,
                reason,
                chain,
            });
        }
    }
}

/// Common prefix length of two names.
fn common_prefix(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count()
}

/// A reference into an MFD needs the MFD's cell driver for the referenced subsystem.
pub(super) fn mfd_cells(
    r: &mut Resolver<'_>,
    st: &mut State<'_>,
    prop: &str,
    from: usize,
    target: usize,
    device: usize,
    why: &Why,
) {
    let Some((class, dirs)) = cell_dirs(prop) else {
        return;
    };
    let tree = st.tree;
    let claim = r.claim(tree, device);
    let mfd_modules: Vec<usize> = match &claim {
        Claim::Modules(m, _) => r
            .index
            .load_order(m)
            .into_iter()
            .filter(|&i| r.index.modules[i].path.contains("/drivers/mfd/"))
            .collect(),
        _ => Vec::new(),
    };
    // An MFD module's device provides through cells. A built-in driver's path is not known: a supply that
    // is a subnode without `compatible` (a PMIC's `regulators/dcdc1`) is taken as an MFD's regulator cell.
    let is_mfd = !mfd_modules.is_empty()
        || (matches!(claim, Claim::Builtin(_)) && class == "regulator" && target != device);
    if !is_mfd || !tree.enabled(device) || !st.cells_done.insert((device, class)) {
        return;
    }
    let in_dirs = |path: &str| {
        let p = format!("/{path}");
        dirs.iter().any(|d| p.contains(d))
    };
    // Cell drivers of this subsystem: (platform device name, loadable module or built-in driver).
    let mut candidates: Vec<(String, Result<usize, String>)> = r
        .platform
        .iter()
        .filter(|(_, m)| in_dirs(&r.index.modules[*m].path))
        .map(|(n, m)| (n.clone(), Ok(*m)))
        .collect();
    for (n, m) in r.index.builtin_platform_aliases() {
        if r.index.builtin_path(m).is_some_and(&in_dirs) {
            candidates.push((n.to_string(), Err(m.to_string())));
        }
    }
    let mut found: Vec<(String, Result<usize, String>)> = Vec::new();
    let evidence;
    if !mfd_modules.is_empty() {
        // The MFD module names the platform devices it creates.
        let mut names: HashSet<String> = HashSet::new();
        for m in &mfd_modules {
            names.extend(r.module_strings(*m).iter().cloned());
        }
        found.extend(candidates.into_iter().filter(|(n, _)| names.contains(n)));
        evidence = format!(
            "named by MFD module {}",
            mfd_modules
                .iter()
                .map(|m| r.index.modules[*m].name())
                .collect::<Vec<_>>()
                .join(", ")
        );
    } else {
        // A built-in MFD: its cells' names are in the kernel image among every other built-in driver's;
        // keep those that best match the device's model by name.
        let models: Vec<String> = tree
            .node(device)
            .strings("compatible")
            .iter()
            .map(|c| {
                c.split_once(',')
                    .map(|(_, m)| m)
                    .unwrap_or(c)
                    .to_lowercase()
            })
            .collect();
        let mut best = 3;
        for (name, by) in candidates {
            if r.kernel.is_some_and(|k| !k.contains(&name)) {
                continue;
            }
            let head = name.split(['-', '_']).next().unwrap_or(&name);
            let score = models
                .iter()
                .map(|m| common_prefix(head, m))
                .max()
                .unwrap_or(0);
            if score > best {
                found.clear();
                best = score;
            }
            if score == best {
                found.push((name, by));
            }
        }
        evidence = format!(
            "matched by name to the built-in MFD {}",
            tree.node(device)
                .strings("compatible")
                .first()
                .cloned()
                .unwrap_or_default()
        );
    }
    let mut chain = vec![st.link(why)];
    chain.extend(st.chain(from));
    found.sort();
    found.dedup();
    if found.is_empty() {
        st.unresolved.push(Unresolved {
            what: tree.path(device),
            compatible: tree.node(device).strings("compatible"),
            reason: format!("no {class} cell driver is known for this MFD"),
            chain,
        });
        return;
    }
    for (name, by) in found {
        let mut c = chain.clone();
        if let Some(first) = c.first_mut() {
            first.push_str(&format!(" ({class} cell `{name}`, {evidence})"));
        }
        match by {
            Ok(m) => st.need(r.index, m, c),
            Err(builtin) => st.builtin.push(Builtin {
                what: format!("{class} cell `{name}` of {}", tree.path(device)),
                by: format!("built-in driver {builtin}"),
                chain: c,
            }),
        }
    }
}
