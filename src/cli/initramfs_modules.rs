//! `boardsmith initramfs-modules`: the modules the initramfs needs to mount the root filesystem, and
//! the hidden `__initramfs-hook` that `rootfs` runs inside mmdebstrap.

use std::io::Write as _;
use std::path::Path;

use boardsmith::profile::Catalog;

use super::args::InitramfsModulesArgs;
use super::exit::{Failure, pretty_json};
use super::load;

pub fn run(catalog: &Catalog, args: InitramfsModulesArgs) -> Result<(), Failure> {
    let profile = load(catalog, &args.board)?;
    let req = boardsmith::rootfs::initramfs::request(&profile).ok_or_else(|| {
        Failure::usage(if profile.medium.is_none() {
            format!(
                "board `{}` has no `medium` in its profile: nothing to derive (set medium = \"sd\", \"emmc\", \"usb\", \"sata\" or \"virtio\")",
                profile.name
            )
        } else {
            format!(
                "board `{}` has no kernel.dtb in its profile: the controllers cannot be read from a device tree",
                profile.name
            )
        })
    })?;
    let tree = boardsmith::rootfs::tree::RootTree::open(&args.rootfs)?;
    let files = boardsmith::rootfs::initramfs::TreeFiles(&tree);
    let report = boardsmith::rootmods::analyze(&files, &req)
        .map_err(|e| Failure::from(e).context(args.rootfs.display()))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let _ = writeln!(out, "{}", pretty_json(&report)?);
    } else {
        let _ = write!(out, "{}", report.text());
    }
    Ok(())
}

/// mmdebstrap's customize hook of `rootfs`: derives the modules inside the build.
pub fn hook(input: &Path, root: &Path) -> Result<(), Failure> {
    let report = boardsmith::rootfs::initramfs::run_hook(input, root)?;
    eprintln!(
        "I: boardsmith: initramfs modules for {} on {}: {}",
        report.dtb,
        report.derivation.medium.name(),
        report.initramfs_modules.join(" ")
    );
    Ok(())
}
