//! The parsers of what an HTTP server or a sums file beside an image says: `Content-Range` (resuming a
//! download) and sums-file lines (GNU, BSD, bare). Either None or a consistent value.
#![no_main]

use boardsmith::net::parse_content_range;
use boardsmith::write::sums::{SumKind, lookup};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some((first, last, total)) = parse_content_range(&text) {
        assert!(first <= last);
        assert!(total.is_none_or(|t| last < t));
    }
    for kind in [SumKind::Sha256, SumKind::Md5] {
        if let Some(hex) = lookup(&text, kind, "sdcard.img.xz") {
            assert_eq!(hex.len(), kind.hex_len());
            assert!(hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
    }
});
