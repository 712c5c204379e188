//! Fuzzes the kernel config fragment parser (`kernel.fragments` of a profile, `kconfig` commands): any
//! text gives a fragment or an error naming file:line:col, never a panic; a fragment renders back to
//! text that parses to the same assignments.
#![no_main]

use boardsmith::kconfig::fragment::{parse, render_entry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse("fuzz", "fuzz.config", text) {
        Ok(f) => {
            let mut again = String::new();
            for e in &f.entries {
                render_entry(e, &mut again);
            }
            let g = parse("fuzz", "fuzz.config", &again).expect("rendered text parses");
            let key = |f: &boardsmith::kconfig::fragment::Fragment| {
                f.entries
                    .iter()
                    .map(|e| (e.symbol.clone(), e.value.clone(), e.optional.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(key(&f), key(&g));
        }
        Err(e) => {
            assert!(e.line >= 1 && e.col >= 1);
        }
    }
});
