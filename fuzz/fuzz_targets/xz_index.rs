//! Fuzzes the .xz index reader (`boardsmith write` reads it from the end of a seekable .xz file to
//! plan block-parallel decoding) and the block-header reader that checks each block's dictionary:
//! any bytes give an index or None, never a panic, an overflow or an allocation out of proportion;
//! blocks lie inside the file, in order, and add up to the size the index declares.
#![no_main]

use boardsmith::write::xz::{self, BlockCodec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(index) = xz::index(data) else {
        return;
    };
    let mut end = 0u64;
    let mut sum = 0u64;
    for b in &index.blocks {
        assert!(b.offset >= end, "blocks overlap or go backwards");
        end = b.offset.checked_add(b.total).expect("block end overflows");
        assert!(end <= data.len() as u64, "block past the end of the file");
        assert!(matches!(b.codec, BlockCodec::Xz { .. }));
        sum = sum.checked_add(b.uncompressed).expect("sizes overflow");
        if let Some(dict) = xz::block_dict(data, b.offset) {
            assert!(dict >= 4096);
        }
    }
    if !index.blocks.is_empty() {
        assert_eq!(sum, index.uncompressed);
    }
    let _ = xz::parallel_threads(data, &index, 2, 20 << 20, 16 << 20);
});
