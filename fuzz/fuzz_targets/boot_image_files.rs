//! Fuzzes what `boot` reads from an image or from QEMU: the extlinux.conf of the boot partition
//! (`direct_boot`: the entry U-Boot would boot, the paths it names on the partition, the console
//! replaced) and the head of a screenshot QEMU wrote (`png_size`). Any bytes give a value or an error,
//! never a panic; the first byte chooses the parser.
#![no_main]

use boardsmith::boot::direct::{parse_extlinux, partition_path, replace_console};
use boardsmith::boot::screen::png_size;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which & 1 == 0 {
        let text = String::from_utf8_lossy(rest);
        match parse_extlinux(&text) {
            Ok(e) => {
                assert!(!e.kernel.is_empty());
                for p in std::iter::once(&e.kernel).chain(&e.initrd) {
                    if let Ok(path) = partition_path(p, "extlinux/") {
                        let inside = path.strip_prefix("::/").expect("partition path");
                        assert!(inside
                            .split('/')
                            .all(|c| !c.is_empty() && c != "." && c != ".."));
                    }
                }
                let cmdline = replace_console(&e.append, Some("ttyAMA0"));
                assert!(cmdline.ends_with("console=ttyAMA0"));
            }
            Err((line, _)) => assert!(line <= text.lines().count()),
        }
    } else if let Ok((w, h)) = png_size(rest) {
        assert!((1..=16384).contains(&w) && (1..=16384).contains(&h));
    }
});
