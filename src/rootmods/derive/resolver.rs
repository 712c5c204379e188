//! Matching devices to drivers for one kernel: modaliases against modules.alias, compatibles in the
//! kernel image, with caches shared by every device tree of that kernel.

use std::collections::{HashMap, HashSet};

use super::super::fdt::DeviceTree;
use super::super::kernel::KernelStrings;
use super::super::kmod::ModuleIndex;

/// How the kernel would drive a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Claim {
    /// Loadable modules (indexes) and how they were matched.
    Modules(Vec<usize>, String),
    /// Built in: how it is known.
    Builtin(String),
    None,
}

/// Matches devices to drivers for one kernel, with caches that outlive one device tree (so that many
/// trees of one kernel are cheap).
pub struct Resolver<'a> {
    pub(super) index: &'a ModuleIndex,
    pub(super) kernel: Option<&'a KernelStrings>,
    pub(super) read_module: &'a dyn Fn(&str) -> Option<Vec<u8>>,
    pub(super) claims: HashMap<String, Claim>,
    pub(super) ko_strings: HashMap<usize, HashSet<String>>,
    pub(super) platform: Vec<(String, usize)>,
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

    pub(super) fn claim(&mut self, tree: &DeviceTree, node: usize) -> Claim {
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

    pub(super) fn module_strings(&mut self, m: usize) -> &HashSet<String> {
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
        match liblzma::stream::Stream::new_stream_decoder(super::super::MAX_DECODER_MEMORY, 0) {
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
