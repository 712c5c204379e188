//! The kernel as the image needs it: decompressed for `booti`, its command line, and the signed
//! ChromeOS kernel blob.

use std::io::Read;
use std::path::Path;

use super::rootfiles::{Found, find_boot_files};
use super::{BuildError, io, tempdir_in};
use crate::image::vboot::{self, KernelBlob, Keys};
use crate::plan::{Layout, PlanInput, plan};
use crate::profile::{KernelImage, Profile, Role};
use crate::rootfs::tree::{FileData, RootTree};

pub(super) const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The kernel as the boot partition needs it. U-Boot's `booti` takes only an uncompressed arm64 `Image`,
/// while distributions may ship `vmlinuz` gzip-compressed (Ubuntu's is; Debian's is an uncompressed
/// EFI-stub Image): a gzip `Image` is decompressed. A `zImage` decompresses itself and is copied as is.
pub(super) fn kernel_for_boot(image: KernelImage, data: FileData) -> std::io::Result<FileData> {
    if image != KernelImage::Image {
        return Ok(data);
    }
    let head: Vec<u8> = match &data {
        FileData::Bytes(b) => b.iter().take(2).copied().collect(),
        FileData::Path(p, _) => {
            let mut h = Vec::with_capacity(2);
            std::io::Read::take(std::fs::File::open(p)?, 2).read_to_end(&mut h)?;
            h
        }
    };
    if head != GZIP_MAGIC {
        return Ok(data);
    }
    let compressed = match data {
        FileData::Bytes(b) => b,
        FileData::Path(p, _) => std::fs::read(p)?,
    };
    let mut out = Vec::with_capacity(compressed.len() * 3);
    flate2::read::MultiGzDecoder::new(compressed.as_slice()).read_to_end(&mut out)?;
    Ok(FileData::Bytes(out))
}

/// The kernel command line for this layout.
pub fn kernel_cmdline(profile: &Profile, layout: &Layout, append: Option<&str>) -> String {
    let root = layout
        .partition(Role::Root)
        .map(|p| format!("PARTUUID={}", p.partuuid))
        .unwrap_or_else(|| "/dev/root".into());
    let mut cmd = profile
        .kernel
        .cmdline
        .value
        .replace("{console}", &profile.console)
        .replace("{root}", &root);
    if let Some(v) = &profile.display.video {
        cmd.push_str(&format!(" video={v}"));
    }
    if let Some(a) = append
        && !a.trim().is_empty()
    {
        cmd.push(' ');
        cmd.push_str(a.trim());
    }
    cmd
}

pub(super) fn make_kernel_blob(
    profile: &Profile,
    found: &Found,
    cmdline: &str,
    keys: &Keys,
    epoch: u64,
    work: &Path,
) -> Result<Vec<u8>, BuildError> {
    let dtb = found
        .dtb
        .as_ref()
        .map(|(_, d)| (profile.kernel.dtb.as_deref().unwrap_or("board.dtb"), d));
    let blob = KernelBlob {
        kernel: &found.kernel.1,
        dtb,
        initrd: found.initrd.as_ref().map(|(_, d)| d),
        cmdline,
        description: &profile.description,
        arch: profile.arch.kernel_arch(),
        epoch,
    };
    Ok(vboot::build_blob(&blob, keys, work)?)
}

/// For `show --rootfs`: the signed kernel blob's size and the partition that holds it, if the board has one.
pub fn kernel_blob_size(
    profile: &Profile,
    rootfs: &Path,
    input: &PlanInput,
) -> Result<Option<(String, u64, u64)>, BuildError> {
    let Some(v) = &profile.vboot else {
        return Ok(None);
    };
    let Some(part) = profile
        .partitions
        .iter()
        .find(|p| p.role == Role::Kernel && p.source.is_none())
    else {
        return Ok(None);
    };
    let tree = RootTree::open(rootfs)?;
    let found = find_boot_files(profile, &tree)?;
    let layout = plan(profile, input)?;
    let cmdline = kernel_cmdline(profile, &layout, None);
    let keys = Keys::from_profile(v, None, None);
    let work = tempdir_in(&std::env::temp_dir(), &profile.name)
        .map_err(io("creating a work directory"))?;
    let blob = make_kernel_blob(profile, &found, &cmdline, &keys, input.epoch, work.path())?;
    let capacity = layout
        .partitions
        .iter()
        .find(|p| p.name == part.name.value)
        .map_or(0, |p| p.size);
    Ok(Some((part.name.value.clone(), blob.len() as u64, capacity)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn bytes(d: FileData) -> Vec<u8> {
        match d {
            FileData::Bytes(b) => b,
            FileData::Path(p, _) => std::fs::read(p).unwrap(),
        }
    }

    #[test]
    fn gzip_arm64_image_is_decompressed() {
        // An arm64 Image header carries "ARM\x64" at byte 56.
        let mut image = vec![0u8; 4096];
        image[56..60].copy_from_slice(b"ARM\x64");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&image).unwrap();
        let packed = gz.finish().unwrap();
        assert_eq!(packed[..2], GZIP_MAGIC);

        let (_dir, path) = crate::testutil::scratch("vmlinuz");
        std::fs::write(&path, &packed).unwrap();
        let from_file = kernel_for_boot(
            KernelImage::Image,
            FileData::Path(path, packed.len() as u64),
        )
        .unwrap();
        assert_eq!(bytes(from_file), image);
        let from_bytes = kernel_for_boot(KernelImage::Image, FileData::Bytes(packed)).unwrap();
        assert_eq!(bytes(from_bytes), image);
    }

    #[test]
    fn uncompressed_image_and_zimage_are_kept() {
        let raw = b"MZ\x40\xfa not compressed".to_vec();
        assert_eq!(
            bytes(kernel_for_boot(KernelImage::Image, FileData::Bytes(raw.clone())).unwrap()),
            raw
        );
        // A zImage decompresses itself: never touched, even if it starts like gzip.
        let gz_like = vec![0x1f, 0x8b, 0, 0];
        assert_eq!(
            bytes(kernel_for_boot(KernelImage::ZImage, FileData::Bytes(gz_like.clone())).unwrap()),
            gz_like
        );
    }

    #[test]
    fn corrupt_gzip_image_is_an_error() {
        let bad = vec![0x1f, 0x8b, 8, 0, 1, 2, 3];
        assert!(kernel_for_boot(KernelImage::Image, FileData::Bytes(bad)).is_err());
    }
}
