//! Fuzzes the bmap parser: any bytes must give a consistent bmap or an error — never a panic, a
//! hang or an allocation out of proportion to the input.
#![no_main]

use boardsmith::image::bmap::Bmap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = Bmap::parse_bytes(data) {
        assert!(b.block_size > 0);
        assert_eq!(b.blocks_count(), b.image_size.div_ceil(b.block_size));
        let mut next = 0;
        for r in &b.ranges {
            assert!(r.first >= next && r.first <= r.last && r.last < b.blocks_count());
            next = r.last + 1;
        }
        // What we write back parses to the same map.
        assert_eq!(Bmap::parse(&b.to_xml()).as_ref(), Ok(&b));
    }
});
