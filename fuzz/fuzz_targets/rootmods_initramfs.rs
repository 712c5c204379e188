//! An initramfs image from a root filesystem: concatenated cpio newc archives, possibly compressed
//! (gzip, zstd, xz, lzma, bzip2), listed without holding file data; and a kernel image's strings.
//! Compiled from the library's source directly (no command-line crates).
#![no_main]

use boardsmith::rootmods;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(names) = rootmods::initramfs::list(data) {
        assert!(names.len() <= rootmods::initramfs::MAX_ENTRIES);
        let _ = rootmods::initramfs::module_names(&names);
    }
    let _ = rootmods::kernel::KernelStrings::from_kernel_file(data);
});
