//! From the device tree and the kernel's module metadata to the modules the initramfs needs to reach the
//! root device, each with the chain of device-tree references that requires it.
//!
//! 1. The storage controllers of the medium (enabled `mmc`/`usb`/`sata`/virtio nodes, or nodes whose
//!    driver lives in that subsystem) are the roots.
//! 2. Every phandle a visited node depends on is followed to its provider (`*-supply`, `clocks`,
//!    `resets`, `phys`, `power-domains`, `pinctrl-N`, GPIOs, DMA, interrupt parents, ...); a provider that
//!    is a subnode without `compatible` (a PMIC's `regulators/dcdc1`) is provided by its nearest ancestor
//!    device, and each device's bus parent (the I2C or RSB controller of a PMIC) is visited too.
//! 3. Each device's modalias (`of:N<name>T<type>C<compatible>...`, as the kernel builds it) is matched
//!    against modules.alias; a device claimed by no module but whose compatible is in the kernel image is
//!    built in; anything else is reported unresolved, never guessed.
//! 4. A reference into an MFD (multi-function device) needs the MFD's cell driver for that subsystem (the
//!    regulator driver of a PMIC): found among the platform-device names the MFD's module names, or for a
//!    built-in MFD among those in the kernel image that match the PMIC's model by name (said so).
//! 5. The medium's block driver (`mmc_block`, `usb-storage`, `sd_mod`, `virtio_blk`) and the root
//!    filesystem's module are added by name; built-in ones are dropped; modules.dep and modules.softdep
//!    give the load order.
//!
//! Steps 1 to 3 are `controllers`, `walk` and `by_name` here; the driver matching is in `resolver`, the
//! references in `refs`, the walk's record and device claims in `claim`, controller classes in `class`.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::fdt::DeviceTree;
use super::kmod::{normalize, stem};

mod claim;
mod class;
mod refs;
mod resolver;

use claim::{State, Why, claim_device, mfd_cells};
use class::{Class, class_by_name, class_by_path, is_sdio};
use refs::references;
use resolver::Claim;
pub use resolver::Resolver;

/// Where the root filesystem lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Medium {
    Sd,
    Emmc,
    Usb,
    Sata,
    Virtio,
}

impl Medium {
    pub const ALL: [(&'static str, Medium); 5] = [
        ("sd", Medium::Sd),
        ("emmc", Medium::Emmc),
        ("usb", Medium::Usb),
        ("sata", Medium::Sata),
        ("virtio", Medium::Virtio),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Medium::Sd => "sd",
            Medium::Emmc => "emmc",
            Medium::Usb => "usb",
            Medium::Sata => "sata",
            Medium::Virtio => "virtio",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Medium::Sd => "SD card",
            Medium::Emmc => "eMMC",
            Medium::Usb => "USB storage",
            Medium::Sata => "SATA disk",
            Medium::Virtio => "virtio disk",
        }
    }

    /// The block drivers between the controller and the filesystem.
    fn block_modules(self) -> &'static [&'static str] {
        match self {
            Medium::Sd | Medium::Emmc => &["mmc_block"],
            Medium::Usb => &["usb-storage", "uas", "sd_mod"],
            Medium::Sata => &["sd_mod"],
            Medium::Virtio => &["virtio_blk"],
        }
    }
}

/// A module the initramfs needs, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Need {
    /// As the file is named (`sunxi-mmc`).
    pub module: String,
    /// Relative to lib/modules/VERSION.
    pub path: String,
    /// From the device that needs it up to the storage controller (or the medium).
    pub chain: Vec<String>,
}

/// Something the chain needs that the kernel provides itself.
#[derive(Debug, Clone, Serialize)]
pub struct Builtin {
    /// A device-tree node (`/soc/pinctrl@1c20800`) or a module name.
    pub what: String,
    /// How it is known to be built in.
    pub by: String,
    pub chain: Vec<String>,
}

/// Something the chain needs that nothing known provides.
#[derive(Debug, Clone, Serialize)]
pub struct Unresolved {
    pub what: String,
    pub compatible: Vec<String>,
    pub reason: String,
    pub chain: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Derivation {
    pub medium: Medium,
    /// The storage controllers started from (node paths).
    pub controllers: Vec<String>,
    pub modules: Vec<Need>,
    pub builtin: Vec<Builtin>,
    pub unresolved: Vec<Unresolved>,
    /// Every module to load, dependencies first (relative to lib/modules/VERSION).
    pub load_order: Vec<String>,
}

impl Derivation {
    /// `sunxi-mmc ← mmc@1c0f000 (SD card controller)`
    pub fn need_line(n: &Need) -> String {
        format!("{} ← {}", n.module, n.chain.join(" ← "))
    }

    /// `3 providers in the root device's chain are unresolved: a, b, c`, or None when all are.
    pub fn unresolved_summary(&self) -> Option<String> {
        (!self.unresolved.is_empty()).then(|| {
            let names: Vec<&str> = self.unresolved.iter().map(|u| u.what.as_str()).collect();
            format!(
                "{} providers in the root device's chain are unresolved: {}",
                self.unresolved.len(),
                names.join(", ")
            )
        })
    }
}

/// Derives what the initramfs needs for `medium` on this device tree; `root_fs` is the root
/// filesystem's module (`ext4`).
pub fn derive(
    r: &mut Resolver<'_>,
    tree: &DeviceTree,
    medium: Medium,
    root_fs: Option<&str>,
) -> Derivation {
    let mut st = State {
        tree,
        medium,
        why: HashMap::new(),
        needs: Vec::new(),
        builtin: Vec::new(),
        unresolved: Vec::new(),
        cells_done: HashSet::new(),
    };
    let (controllers, has_pci) = controllers(r, tree, medium);
    if controllers.is_empty() {
        st.unresolved.push(Unresolved {
            what: format!("{} controller", medium.describe()),
            compatible: Vec::new(),
            reason: "no enabled controller for this medium in the device tree".into(),
            chain: Vec::new(),
        });
    }
    walk(r, &mut st, &controllers);
    by_name(r, &mut st, has_pci, root_fs);

    let roots: Vec<usize> = st.needs.iter().map(|(i, _)| *i).collect();
    let load_order = r
        .index
        .load_order(&roots)
        .into_iter()
        .map(|i| r.index.modules[i].path.clone())
        .collect();
    Derivation {
        medium,
        controllers: controllers.iter().map(|&c| tree.path(c)).collect(),
        modules: st.needs.into_iter().map(|(_, n)| n).collect(),
        builtin: st.builtin,
        unresolved: st.unresolved,
        load_order,
    }
}

/// Step 1: the enabled storage controllers of `medium`, and whether one is a PCI host (then virtio
/// needs its PCI transport).
fn controllers(r: &mut Resolver<'_>, tree: &DeviceTree, medium: Medium) -> (Vec<usize>, bool) {
    let mut controllers = Vec::new();
    let mut has_pci = false;
    for i in 1..tree.nodes.len() {
        if tree.node(i).prop("compatible").is_none() || !tree.enabled(i) {
            continue;
        }
        let class = match class_by_name(tree, i) {
            Some(c) => Some(c),
            None => match r.claim(tree, i) {
                Claim::Modules(m, _) => m
                    .iter()
                    .find_map(|&m| class_by_path(&format!("/{}", r.index.modules[m].path))),
                _ => None,
            },
        };
        let n = tree.node(i);
        let wanted = match (medium, class) {
            (Medium::Sd, Some(Class::Mmc)) => {
                n.prop("non-removable").is_none() && !is_sdio(tree, i)
            }
            (Medium::Emmc, Some(Class::Mmc)) => {
                n.prop("non-removable").is_some() && !is_sdio(tree, i)
            }
            (Medium::Usb, Some(Class::Usb)) | (Medium::Sata, Some(Class::Sata)) => true,
            (Medium::Virtio, Some(Class::Virtio)) => true,
            (Medium::Virtio, Some(Class::Pci)) => {
                has_pci = true;
                true
            }
            _ => false,
        };
        if wanted {
            controllers.push(i);
        }
    }
    (controllers, has_pci)
}

/// Step 2: breadth-first from the controllers over references, providers and bus parents, claiming
/// each device on the way.
fn walk(r: &mut Resolver<'_>, st: &mut State<'_>, controllers: &[usize]) {
    let tree = st.tree;
    let mut queue: VecDeque<(usize, Why)> =
        controllers.iter().map(|&c| (c, Why::Controller)).collect();
    let mut visited = HashSet::new();
    while let Some((node, why)) = queue.pop_front() {
        if !visited.insert(node) {
            continue;
        }
        st.why.insert(node, why);
        let is_device = node != 0 && tree.node(node).prop("compatible").is_some();
        if is_device {
            claim_device(r, st, node);
        }
        let (refs, problems) = references(tree, node);
        for p in problems {
            st.unresolved.push(Unresolved {
                what: tree.path(node),
                compatible: tree.node(node).strings("compatible"),
                reason: p,
                chain: st.chain(node),
            });
        }
        for (prop, target) in refs {
            let Some(device) = st.device_of(target) else {
                st.unresolved.push(Unresolved {
                    what: tree.path(target),
                    compatible: Vec::new(),
                    reason: format!(
                        "`{prop}` of {} points at a node under no device",
                        st.name(node)
                    ),
                    chain: st.chain(node),
                });
                continue;
            };
            let why = Why::Ref {
                prop: prop.clone(),
                from: node,
                target,
                device,
            };
            if target != device {
                queue.push_back((target, why.clone()));
            }
            mfd_cells(r, st, &prop, node, target, device, &why);
            queue.push_back((device, why));
        }
        if is_device && let Some(parent) = tree.node(node).parent.and_then(|p| st.device_of(p)) {
            queue.push_back((parent, Why::Bus { child: node }));
        }
    }
}

/// Step 3: the medium's block drivers, virtio's PCI transport and the root filesystem, by name.
fn by_name(r: &mut Resolver<'_>, st: &mut State<'_>, has_pci: bool, root_fs: Option<&str>) {
    let medium = st.medium;
    let mut by_name: Vec<(String, String)> = medium
        .block_modules()
        .iter()
        .map(|m| {
            (
                m.to_string(),
                format!("block driver for the {}", medium.describe()),
            )
        })
        .collect();
    if medium == Medium::Virtio && has_pci {
        by_name.push((
            "virtio_pci".into(),
            "virtio transport for the PCI host controller".into(),
        ));
    }
    if let Some(fs) = root_fs {
        by_name.push((fs.to_string(), format!("root filesystem ({fs})")));
    }
    for (name, why) in by_name {
        if let Some(m) = r.index.module(&name) {
            st.need(r.index, m, vec![why]);
        } else if let Some(p) = r.index.builtin_path(&name) {
            st.builtin.push(Builtin {
                what: name.clone(),
                by: format!("built in ({p})"),
                chain: vec![why],
            });
        } else {
            st.unresolved.push(Unresolved {
                what: name.clone(),
                compatible: Vec::new(),
                reason: "neither a module in modules.dep nor built in (modules.builtin)".into(),
                chain: vec![why],
            });
        }
    }
}

/// Modules in `names` (as found in an initramfs) compared with what is needed: the needed module files
/// (from `load_order`) that are missing.
pub fn missing_from(load_order: &[String], present: &[String]) -> Vec<String> {
    let have: HashSet<String> = present.iter().map(|n| normalize(n)).collect();
    load_order
        .iter()
        .map(|p| stem(p).to_string())
        .filter(|n| !have.contains(&normalize(n)))
        .collect()
}
