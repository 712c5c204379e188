//! Fuzzes the LZMA2 chunk walker that cuts a 7z archive's LZMA2 stream at its dictionary resets for
//! block-parallel decoding. The first 9 bytes choose the declared unpacked size and the coder's
//! properties; the rest is the packed stream. Any bytes give units or None, never a panic or an
//! overflow; units are in order, inside the stream, and add up to the declared size.
#![no_main]

use boardsmith::write::decompress::lzma2_units;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, stream)) = data.split_first_chunk::<9>() else {
        return;
    };
    let size = u64::from_le_bytes(head[..8].try_into().unwrap_or_default()) >> 16;
    let props = head[8] % 41;
    let Some(units) = lzma2_units(stream, 0, stream.len() as u64, size, props) else {
        return;
    };
    let mut end = 0u64;
    let mut sum = 0u64;
    for u in &units {
        assert!(u.offset >= end, "units overlap or go backwards");
        end = u.offset + u.total;
        assert!(
            end <= stream.len() as u64,
            "unit past the end of the stream"
        );
        sum += u.uncompressed;
    }
    assert_eq!(sum, size);
});
