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

use std::collections::{HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::fdt::DeviceTree;
use super::kernel::KernelStrings;
use super::kmod::{ModuleIndex, normalize, stem};

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
}

/// How the kernel would drive a device.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Claim {
    /// Loadable modules (indexes) and how they were matched.
    Modules(Vec<usize>, String),
    /// Built in: how it is known.
    Builtin(String),
    None,
}

/// Matches devices to drivers for one kernel, with caches that outlive one device tree (so that many
/// trees of one kernel are cheap).
pub struct Resolver<'a> {
    index: &'a ModuleIndex,
    kernel: Option<&'a KernelStrings>,
    read_module: &'a dyn Fn(&str) -> Option<Vec<u8>>,
    claims: HashMap<String, Claim>,
    ko_strings: HashMap<usize, HashSet<String>>,
    platform: Vec<(String, usize)>,
}

/// Compatibles the OF core itself handles (drivers/of/platform.c, `of_default_bus_match_table`).
const CORE_BUSES: [&str; 4] = ["simple-bus", "simple-mfd", "isa", "arm,amba-bus"];

impl<'a> Resolver<'a> {
    /// `read_module` returns the bytes of a module file (path relative to lib/modules/VERSION), bounded
    /// by the caller, or `None`.
    pub fn new(
        index: &'a ModuleIndex,
        kernel: Option<&'a KernelStrings>,
        read_module: &'a dyn Fn(&str) -> Option<Vec<u8>>,
    ) -> Resolver<'a> {
        let platform = index
            .platform_aliases()
            .into_iter()
            .map(|(n, i)| (n.to_string(), i))
            .collect();
        Resolver {
            index,
            kernel,
            read_module,
            claims: HashMap::new(),
            ko_strings: HashMap::new(),
            platform,
        }
    }

    fn claim(&mut self, tree: &DeviceTree, node: usize) -> Claim {
        let n = tree.node(node);
        let compat = n.strings("compatible");
        if compat.is_empty() {
            return Claim::None;
        }
        // The kernel's modalias (drivers/of/device.c): N<name>T<device_type, or "(null)">C<each compatible>,
        // spaces turned into underscores.
        let dtype = n
            .strings("device_type")
            .first()
            .cloned()
            .unwrap_or_else(|| "(null)".into());
        let mut modalias = format!("of:N{}T{}", n.base_name(), dtype);
        for c in &compat {
            modalias.push('C');
            modalias.push_str(c);
        }
        let modalias = modalias.replace(' ', "_");
        let parent_bus = n
            .parent
            .map(|p| tree.node(p).base_name().to_string())
            .filter(|b| b == "i2c" || b == "spi")
            .unwrap_or_default();
        let key = format!("{modalias}\n{parent_bus}");
        if let Some(c) = self.claims.get(&key) {
            return c.clone();
        }
        let claim = self.claim_uncached(&modalias, &compat, &parent_bus);
        self.claims.insert(key, claim.clone());
        claim
    }

    fn claim_uncached(&self, modalias: &str, compat: &[String], parent_bus: &str) -> Claim {
        let builtin = self.index.builtin_alias_matches(modalias);
        if !builtin.is_empty() {
            return Claim::Builtin(format!("built-in driver {}", builtin.join(", ")));
        }
        let mods = self.index.alias_matches(modalias);
        if !mods.is_empty() {
            return Claim::Modules(mods, "of alias".into());
        }
        // I2C and SPI devices also bind by the compatible's model against the driver's id table
        // (i2c_of_match_device_sysfs, spi_match_id).
        if !parent_bus.is_empty() {
            for c in compat {
                let model = c.split_once(',').map(|(_, m)| m).unwrap_or(c);
                let alias = format!("{parent_bus}:{model}");
                if !self.index.builtin_alias_matches(&alias).is_empty() {
                    return Claim::Builtin(format!("built-in driver for {alias}"));
                }
                let mods = self.index.alias_matches(&alias);
                if !mods.is_empty() {
                    return Claim::Modules(mods, format!("{alias} alias"));
                }
            }
        }
        if let Some(k) = self.kernel
            && let Some(c) = compat.iter().find(|c| k.contains(c))
        {
            return Claim::Builtin(format!("compatible \"{c}\" is in the kernel image"));
        }
        if let Some(c) = compat.iter().find(|c| CORE_BUSES.contains(&c.as_str())) {
            return Claim::Builtin(format!("\"{c}\" is handled by the OF core"));
        }
        Claim::None
    }

    fn module_strings(&mut self, m: usize) -> &HashSet<String> {
        if !self.ko_strings.contains_key(&m) {
            let path = &self.index.modules[m].path;
            let mut set = HashSet::new();
            if let Some(data) = (self.read_module)(path) {
                let data = decompress_module(path, data);
                for s in data.split(|b| *b == 0) {
                    if (2..=64).contains(&s.len())
                        && s.iter().all(|b| b.is_ascii_graphic())
                        && let Ok(s) = std::str::from_utf8(s)
                    {
                        set.insert(s.to_string());
                    }
                }
            }
            self.ko_strings.insert(m, set);
        }
        &self.ko_strings[&m]
    }
}

/// A compressed module file (`.ko.xz`, `.ko.zst`, `.ko.gz`) decompressed, at most 64 MiB.
fn decompress_module(path: &str, data: Vec<u8>) -> Vec<u8> {
    use std::io::Read;
    let limit = 64 << 20;
    let mut out = Vec::new();
    let ok = if path.ends_with(".xz") {
        match liblzma::stream::Stream::new_stream_decoder(super::MAX_DECODER_MEMORY, 0) {
            Ok(st) => liblzma::read::XzDecoder::new_stream(data.as_slice(), st)
                .take(limit)
                .read_to_end(&mut out)
                .is_ok(),
            Err(_) => false,
        }
    } else if path.ends_with(".zst") {
        match zstd::stream::read::Decoder::new(data.as_slice()) {
            Ok(d) => d.take(limit).read_to_end(&mut out).is_ok(),
            Err(_) => false,
        }
    } else if path.ends_with(".gz") {
        flate2::read::GzDecoder::new(data.as_slice())
            .take(limit)
            .read_to_end(&mut out)
            .is_ok()
    } else {
        return data;
    };
    if ok { out } else { Vec::new() }
}

/// The subsystem a reference needs from an MFD (its cell drivers live there).
fn cell_dirs(prop: &str) -> Option<(&'static str, &'static [&'static str])> {
    let class: (&str, &[&str]) = if prop.ends_with("-supply") {
        ("regulator", &["/drivers/regulator/"])
    } else if prop.starts_with("assigned-clock") || prop == "clocks" {
        ("clock", &["/drivers/clk/"])
    } else if is_gpio_prop(prop) {
        ("GPIO", &["/drivers/gpio/", "/drivers/pinctrl/"])
    } else if prop == "resets" {
        ("reset", &["/drivers/reset/"])
    } else if prop == "phys" {
        ("PHY", &["/drivers/phy/"])
    } else if prop == "pwms" {
        ("PWM", &["/drivers/pwm/"])
    } else if prop == "power-domains" {
        ("power domain", &["/drivers/soc/", "/drivers/pmdomain/"])
    } else {
        return None;
    };
    Some(class)
}

fn is_gpio_prop(name: &str) -> bool {
    (name == "gpios" || name == "gpio" || name.ends_with("-gpios") || name.ends_with("-gpio"))
        && !name.ends_with("nr-gpios")
}

/// The `#...-cells` property giving the argument count after each phandle, for the properties that
/// are phandle-with-arguments lists; `Some("")` for plain phandle lists, `None` for anything else.
fn cells_prop(name: &str) -> Option<&'static str> {
    if name.starts_with('#') {
        return None;
    }
    Some(match name {
        "clocks" | "assigned-clocks" | "assigned-clock-parents" => "#clock-cells",
        "resets" => "#reset-cells",
        "phys" => "#phy-cells",
        "power-domains" => "#power-domain-cells",
        "dmas" => "#dma-cells",
        "iommus" => "#iommu-cells",
        "interconnects" => "#interconnect-cells",
        "mboxes" => "#mbox-cells",
        "pwms" => "#pwm-cells",
        "interrupts-extended" => "#interrupt-cells",
        "interrupt-parent" | "mmc-pwrseq" | "nvmem-cells" => "",
        n if n.ends_with("-supply") => "",
        n if n.starts_with("pinctrl-")
            && n[8..].chars().all(|c| c.is_ascii_digit())
            && n.len() > 8 =>
        {
            ""
        }
        n if is_gpio_prop(n) => "#gpio-cells",
        _ => return None,
    })
}

#[derive(Debug, Clone)]
enum Why {
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

struct State<'t> {
    tree: &'t DeviceTree,
    medium: Medium,
    why: HashMap<usize, Why>,
    needs: Vec<(usize, Need)>,
    builtin: Vec<Builtin>,
    unresolved: Vec<Unresolved>,
    cells_done: HashSet<(usize, &'static str)>,
}

impl State<'_> {
    fn name(&self, i: usize) -> &str {
        &self.tree.node(i).name
    }

    /// The nearest node at or above `i` with a `compatible` (not the root).
    fn device_of(&self, i: usize) -> Option<usize> {
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
    fn chain(&self, node: usize) -> Vec<String> {
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

    fn need(&mut self, index: &ModuleIndex, m: usize, chain: Vec<String>) {
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

/// Phandle references of a node: (property, target node), and problems found reading them.
fn references(tree: &DeviceTree, node: usize) -> (Vec<(String, usize)>, Vec<String>) {
    let mut refs = Vec::new();
    let mut problems = Vec::new();
    for (name, value) in &tree.node(node).props {
        let Some(cells_name) = cells_prop(name) else {
            continue;
        };
        let cells: Vec<u32> = value
            .chunks(4)
            .map(|c| {
                let mut b = [0u8; 4];
                b[..c.len()].copy_from_slice(c);
                u32::from_be_bytes(b)
            })
            .collect();
        if value.len() % 4 != 0 {
            problems.push(format!("`{name}` is not a list of 32-bit cells"));
            continue;
        }
        let single =
            name.ends_with("-supply") || name == "interrupt-parent" || name == "mmc-pwrseq";
        let mut i = 0;
        while i < cells.len() {
            let ph = cells[i];
            i += 1;
            if ph == 0 {
                continue;
            }
            let Some(target) = tree.by_phandle(ph) else {
                problems.push(format!("`{name}` names phandle {ph:#x}, which no node has"));
                break;
            };
            refs.push((name.clone(), target));
            if single {
                break;
            }
            if !cells_name.is_empty() {
                match tree.node(target).u32_prop(cells_name) {
                    Some(n) if n <= 32 => i += n as usize,
                    Some(n) => {
                        problems.push(format!(
                            "`{name}`: {} has {cells_name} = {n}",
                            tree.node(target).name
                        ));
                        break;
                    }
                    None => {
                        problems.push(format!(
                            "`{name}`: {} has no {cells_name}",
                            tree.node(target).name
                        ));
                        break;
                    }
                }
            }
        }
    }
    // An `interrupts` property without its own parent uses the nearest ancestor's `interrupt-parent`.
    let n = tree.node(node);
    if n.prop("interrupts").is_some()
        && n.prop("interrupt-parent").is_none()
        && n.prop("interrupts-extended").is_none()
        && let Some(ph) = tree
            .ancestors(node)
            .find_map(|a| tree.node(a).u32_prop("interrupt-parent"))
    {
        match tree.by_phandle(ph) {
            Some(t) => refs.push(("interrupt-parent (inherited)".into(), t)),
            None => problems.push(format!(
                "inherited interrupt-parent names phandle {ph:#x}, which no node has"
            )),
        }
    }
    (refs, problems)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Mmc,
    Usb,
    Sata,
    Virtio,
    Pci,
}

fn class_by_name(tree: &DeviceTree, i: usize) -> Option<Class> {
    let n = tree.node(i);
    if n.strings("compatible").iter().any(|c| c == "virtio,mmio") {
        return Some(Class::Virtio);
    }
    if n.strings("device_type").iter().any(|t| t == "pci") {
        return Some(Class::Pci);
    }
    match n.base_name() {
        "mmc" | "sdhci" | "dwmmc" | "mshc" | "sdmmc" => Some(Class::Mmc),
        "usb" => Some(Class::Usb),
        "sata" | "ahci" => Some(Class::Sata),
        "virtio" => Some(Class::Virtio),
        "pcie" | "pci" => Some(Class::Pci),
        _ => None,
    }
}

fn class_by_path(path: &str) -> Option<Class> {
    const USB: [&str; 6] = [
        "/drivers/usb/host/",
        "/drivers/usb/musb/",
        "/drivers/usb/dwc2/",
        "/drivers/usb/dwc3/",
        "/drivers/usb/chipidea/",
        "/drivers/usb/cdns3/",
    ];
    if path.contains("/drivers/mmc/host/") {
        Some(Class::Mmc)
    } else if USB.iter().any(|d| path.contains(d)) {
        Some(Class::Usb)
    } else if path.contains("/drivers/ata/") {
        Some(Class::Sata)
    } else if path.contains("/drivers/virtio/") {
        Some(Class::Virtio)
    } else if path.contains("/drivers/pci/controller/") {
        Some(Class::Pci)
    } else {
        None
    }
}

/// Whether an MMC host carries an SDIO function (Wi-Fi) rather than a card.
fn is_sdio(tree: &DeviceTree, i: usize) -> bool {
    let n = tree.node(i);
    n.prop("cap-sdio-irq").is_some()
        || n.children.iter().any(|&c| {
            let cc = tree.node(c).strings("compatible");
            !cc.is_empty() && !cc.iter().any(|x| x == "mmc-card")
        })
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

    // 1. The controllers.
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
    if controllers.is_empty() {
        st.unresolved.push(Unresolved {
            what: format!("{} controller", medium.describe()),
            compatible: Vec::new(),
            reason: "no enabled controller for this medium in the device tree".into(),
            chain: Vec::new(),
        });
    }

    // 2. Breadth-first over references, providers and bus parents.
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
            claim_device(r, &mut st, node);
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
            mfd_cells(r, &mut st, &prop, node, target, device, &why);
            queue.push_back((device, why));
        }
        if is_device && let Some(parent) = tree.node(node).parent.and_then(|p| st.device_of(p)) {
            queue.push_back((parent, Why::Bus { child: node }));
        }
    }

    // 3. Block drivers and the root filesystem, by name.
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

/// Records how a visited device is driven: modules needed, built in, or unresolved.
fn claim_device(r: &mut Resolver<'_>, st: &mut State<'_>, node: usize) {
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
fn mfd_cells(
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
