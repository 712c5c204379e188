//! A device tree blob from a root filesystem: `DeviceTree::parse` (the bounds check in front of
//! fdt-parser), then the whole derivation against a small excerpt of Debian's armmp module metadata.
#![no_main]

use boardsmith::rootmods;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rootmods::kmod::{MetaFiles, ModuleIndex};

fn index() -> &'static ModuleIndex {
    static I: OnceLock<ModuleIndex> = OnceLock::new();
    I.get_or_init(|| {
        ModuleIndex::parse(MetaFiles {
            alias: include_bytes!("../data/rootmods/modules.alias"),
            dep: include_bytes!("../data/rootmods/modules.dep"),
            builtin: include_bytes!("../data/rootmods/modules.builtin"),
            builtin_modinfo: Some(include_bytes!("../data/rootmods/modules.builtin.modinfo")),
            softdep: Some(include_bytes!("../data/rootmods/modules.softdep")),
        })
        .expect("the excerpt parses")
    })
}

fn kernel() -> &'static rootmods::kernel::KernelStrings {
    static K: OnceLock<rootmods::kernel::KernelStrings> = OnceLock::new();
    K.get_or_init(|| {
        // A plain arm64 Image with a few built-in compatibles.
        let mut img = vec![0u8; 1 << 20];
        img[56..60].copy_from_slice(b"ARMd");
        img.extend_from_slice(b"\0simple-bus\0regulator-fixed\0x-powers,axp221\0axp20x-regulator\0");
        rootmods::kernel::KernelStrings::from_kernel_file(&img).expect("image")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(tree) = rootmods::fdt::DeviceTree::parse(data) else {
        return;
    };
    // Every node's parent comes before it and lists it as a child.
    for (i, n) in tree.nodes.iter().enumerate() {
        if let Some(p) = n.parent {
            assert!(p < i && tree.nodes[p].children.contains(&i));
        }
        let _ = tree.path(i);
    }
    let read_module = |_: &str| -> Option<Vec<u8>> { None };
    let mut r = rootmods::Resolver::new(index(), Some(kernel()), &read_module);
    // One medium per input (chosen by its last byte), so that each run stays cheap.
    let medium = rootmods::Medium::ALL[usize::from(data[data.len() - 1]) % 5].1;
    let d = rootmods::derive::derive(&mut r, &tree, medium, Some("ext4"));
    for n in &d.modules {
        assert!(!n.chain.is_empty());
        assert!(d.load_order.contains(&n.path));
    }
});
