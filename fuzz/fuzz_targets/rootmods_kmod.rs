//! modules.alias, modules.dep, modules.builtin, modules.builtin.modinfo and modules.softdep from a root
//! filesystem (the input: the five files separated by the bytes FF FE), then alias matching and the load
//! order. Compiled from the library's source directly (no command-line crates).
#![no_main]

use boardsmith::rootmods;

use libfuzzer_sys::fuzz_target;
use rootmods::kmod::{MetaFiles, ModuleIndex, fnmatch};

fuzz_target!(|data: &[u8]| {
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() < 4 {
        match rest.windows(2).position(|w| w == [0xff, 0xfe]) {
            Some(i) => {
                parts.push(&rest[..i]);
                rest = &rest[i + 2..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts.resize(5, &[]);
    let Ok(idx) = ModuleIndex::parse(MetaFiles {
        alias: parts[0],
        dep: parts[1],
        builtin: parts[2],
        builtin_modinfo: Some(parts[3]),
        softdep: Some(parts[4]),
    }) else {
        return;
    };
    // Matching modaliases made from the input itself, and a fixed one.
    let probe = String::from_utf8_lossy(&data[..data.len().min(200)]).into_owned();
    for s in [
        probe.as_str(),
        "of:NmmcT(null)Callwinner,sun7i-a20-mmcCallwinner,sun5i-a13-mmc",
        "platform:axp20x-regulator",
    ] {
        for m in idx.alias_matches(s) {
            assert!(m < idx.modules.len());
        }
        let _ = idx.builtin_alias_matches(s);
        let _ = fnmatch(s, &probe);
    }
    // Each module loads after its dependencies.
    let all: Vec<usize> = (0..idx.modules.len().min(64)).collect();
    let order = idx.load_order(&all);
    for (pos, m) in order.iter().enumerate() {
        for d in &idx.modules[*m].deps {
            if let Some(dp) = order.iter().position(|x| x == d) {
                assert!(dp < pos || idx.modules[*d].deps.contains(m));
            }
        }
    }
});
