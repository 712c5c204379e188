//! Stage 2's checks of the configured tree: the initramfs modules and the files the image builder
//! takes from it.

use super::tartree::{self, TarTree};
use super::{BootFiles, RootfsError, RootfsEvent, initramfs};
use crate::profile::Profile;

/// Finds the files the image builder takes from the tree, where the profile says they are.
pub(super) fn check_boot_files(
    tree: &TarTree,
    profile: &Profile,
) -> Result<BootFiles, RootfsError> {
    let missing = |what: &str, pattern: &str, hint: String| RootfsError::BootFile {
        what: what.into(),
        pattern: pattern.into(),
        board: profile.name.clone(),
        hint,
    };
    let k = &profile.kernel;
    let files_matching = |pattern: &str| -> Result<Vec<String>, RootfsError> {
        let mut v = Vec::new();
        for p in tree.glob(pattern) {
            if let Some((_, n)) = tree.lookup(&p)?
                && matches!(n.kind, tartree::Kind::File(_))
            {
                v.push(p);
            }
        }
        v.sort_by(|a, b| crate::rootfs::tree::version_cmp(a, b));
        Ok(v)
    };
    let pkg_hint = |p: &str| {
        if p.is_empty() {
            String::new()
        } else {
            format!(" (package {p})")
        }
    };
    let kernel = files_matching(&k.path)?
        .pop()
        .ok_or_else(|| missing("kernel", &k.path, pkg_hint(&k.package)))?;
    let initrd = match &k.initrd {
        Some(pat) => Some(files_matching(pat)?.pop().ok_or_else(|| {
            missing(
                "initrd",
                pat,
                " (initramfs-tools generates it when the kernel is installed)".into(),
            )
        })?),
        None => None,
    };
    let dtb = match &k.dtb {
        Some(name) => {
            let mut dirs = tree.glob(&k.dtb_dir);
            dirs.sort_by(|a, b| crate::rootfs::tree::version_cmp(a, b));
            let found = dirs
                .iter()
                .rev()
                .map(|d| format!("{d}/{name}"))
                .find(|p| tree.lookup(p).ok().flatten().is_some());
            Some(found.ok_or_else(|| {
                missing(
                    "device tree",
                    &format!("{}/{name}", k.dtb_dir),
                    pkg_hint(&k.package),
                )
            })?)
        }
        None => None,
    };
    let bootloader = match &profile.bootloader {
        Some(b) => {
            let data = tree.read(&b.path.value)?.ok_or_else(|| {
                missing(
                    "bootloader",
                    &b.path.value,
                    pkg_hint(b.package.as_deref().unwrap_or("")),
                )
            })?;
            if let Some(m) = &b.magic
                && !m.found_in(&data)
            {
                return Err(missing(
                    "bootloader with the expected signature",
                    &b.path.value,
                    format!(" ({:?} at byte {})", m.text, m.offset),
                ));
            }
            Some(b.path.value.clone())
        }
        None => None,
    };
    Ok(BootFiles {
        kernel,
        initrd,
        dtb,
        bootloader,
    })
}

/// Derives the board's initramfs modules from the built tree, puts the list into `initramfs` (written by
/// the customization) and checks the tree's initramfs. With the customize hook (`hooked`) the initramfs
/// must already hold every derived module; a prebuilt tarball only gets warnings.
pub(super) fn initramfs_modules(
    profile: &Profile,
    tree: &TarTree,
    initramfs: &mut [(String, String)],
    hooked: bool,
    on: &dyn Fn(RootfsEvent<'_>),
    warnings: &mut Vec<String>,
) -> Result<Option<crate::rootmods::Report>, RootfsError> {
    let mut warn = |w: String| {
        on(RootfsEvent::Warning(&w));
        warnings.push(w);
    };
    let Some(req) = initramfs::request(profile) else {
        if profile.medium.is_some() {
            warn(format!(
                "board `{}` has a medium but no kernel.dtb: the initramfs modules cannot be derived, so it carries only kernel.initramfs_modules",
                profile.name
            ));
        }
        return Ok(None);
    };
    let files = initramfs::TarFiles(tree);
    let report = match crate::rootmods::analyze(&files, &req) {
        Ok(r) => r,
        Err(e) if !hooked => {
            warn(format!(
                "cannot derive the initramfs modules from this root filesystem: {e}; the initramfs configuration lists only kernel.initramfs_modules"
            ));
            return Ok(None);
        }
        Err(e) => return Err(initramfs::InitramfsError::from(e).into()),
    };
    for w in &report.warnings {
        warn(w.clone());
    }
    if let Some(summary) = report.derivation.unresolved_summary() {
        warn(format!(
            "{summary} (no module or built-in driver known); see `boardsmith initramfs-modules {} --rootfs ROOT`",
            profile.name
        ));
    }
    if let Some(entry) = initramfs
        .iter_mut()
        .find(|(p, _)| p == initramfs::MODULES_FILE)
    {
        entry.1 = initramfs::modules_file(&report.initramfs_modules, true);
    }
    if let Some(pattern) = &profile.kernel.initrd {
        match initramfs::initrd_modules(&files, pattern, &report.kernel_version) {
            Ok(Some((path, present))) => {
                let lacking = initramfs::missing(&report, &present);
                if !lacking.is_empty() {
                    let msg = format!(
                        "the initramfs {path} lacks modules the root device needs: {}",
                        lacking.join(", ")
                    );
                    if hooked {
                        return Err(initramfs::InitramfsError::Hook {
                            context: "after the initramfs hook".into(),
                            message: msg,
                        }
                        .into());
                    }
                    warn(format!(
                        "{msg}; regenerate it in the root filesystem (update-initramfs -u) with the list written to /{}",
                        initramfs::MODULES_FILE
                    ));
                }
            }
            Ok(None) => {}
            Err(e) if !hooked => warn(format!("cannot check the initramfs: {e}")),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Catalog;
    use crate::rootfs::test_trees::packed;

    /// The Cubieboard's profile and what `check_boot_files` finds in a tree holding its boot files as
    /// Debian installs them (kernel, initrd, device tree; U-Boot with its signature if `bootloader`),
    /// packed by GNU tar.
    fn cubieboard(bootloader: bool) -> (Profile, Result<BootFiles, RootfsError>) {
        let profile = Catalog::default().load("cubieboard").unwrap();
        let (dir, root) = crate::testutil::scratch("root");
        let put = |path: &str, data: &[u8]| {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        };
        for v in ["6.1.0-9-armmp", "6.1.0-10-armmp"] {
            put(&format!("boot/vmlinuz-{v}"), b"kernel");
            put(&format!("boot/initrd.img-{v}"), b"initrd");
            put(
                &format!("usr/lib/linux-image-{v}/sun4i-a10-cubieboard.dtb"),
                b"dtb",
            );
        }
        if bootloader {
            let b = profile.bootloader.as_ref().unwrap();
            let mut data = vec![0u8; 64];
            if let Some(m) = &b.magic {
                let at = m.offset as usize;
                data.resize(at + m.text.len() + 16, 0);
                data[at..at + m.text.len()].copy_from_slice(m.text.as_bytes());
            }
            put(&b.path.value, &data);
        }
        let tree = packed(&root, &dir.path().join("root.tar"));
        let found = check_boot_files(&tree, &profile);
        (profile, found)
    }

    #[test]
    fn boot_files_are_the_newest_kernel_and_its_device_tree() {
        let (profile, found) = cubieboard(true);
        let b = found.unwrap();
        // Version order, not byte order: 10 is newer than 9.
        assert!(b.kernel.ends_with("boot/vmlinuz-6.1.0-10-armmp"), "{b:?}");
        assert!(
            b.initrd
                .as_deref()
                .is_some_and(|i| i.ends_with("initrd.img-6.1.0-10-armmp")),
            "{b:?}"
        );
        assert!(
            b.dtb.as_deref().is_some_and(|d| d
                .ends_with("linux-image-6.1.0-10-armmp/sun4i-a10-cubieboard.dtb")),
            "{b:?}"
        );
        assert_eq!(
            b.bootloader.as_deref(),
            Some(profile.bootloader.as_ref().unwrap().path.value.as_str())
        );
    }

    #[test]
    fn a_missing_bootloader_names_its_path_and_package() {
        let (profile, found) = cubieboard(false);
        let e = found.unwrap_err();
        let RootfsError::BootFile { what, pattern, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(what, "bootloader");
        assert_eq!(pattern, &profile.bootloader.as_ref().unwrap().path.value);
    }
}
