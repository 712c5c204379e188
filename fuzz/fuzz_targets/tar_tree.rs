//! Fuzzes both tar readers: the image builder's root filesystem index (`build --rootfs X.tar`) and the
//! rootfs editor's (`rootfs --rootfs-tarball`). Any bytes give an index or an error, never a panic, an
//! overflow or an allocation from a header's size; every entry's data lies inside the archive.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use boardsmith::image::tree::{TarKind, index_tar};
use boardsmith::rootfs::tartree::{self, Data, Kind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    if let Ok(entries) = index_tar(Cursor::new(data), len, Path::new("fuzz.tar")) {
        for kind in entries.values() {
            if let TarKind::File { offset, size } = kind {
                assert!(offset.checked_add(*size).is_some_and(|e| e <= len));
            }
        }
    }
    if let Ok(nodes) = tartree::index(Cursor::new(data), len, Path::new("fuzz.tar")) {
        for node in nodes.values() {
            if let Kind::File(Data::Input { offset, size }) = &node.kind {
                assert!(offset.checked_add(*size).is_some_and(|e| e <= len));
            }
        }
    }
});
