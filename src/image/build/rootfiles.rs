//! What the build takes from the root filesystem: the boot files where the profile says they are,
//! the initramfs modules it lacks, and its fstab checked against the layout.

use super::kernel::kernel_for_boot;
use super::{BuildError, io};
use crate::plan::Layout;
use crate::profile::{Profile, Role};
use crate::rootfs::tree::{FileData, RootTree};
use crate::rootmods::version_suffix;

/// Boot files found in the root filesystem.
pub(super) struct Found {
    pub(super) kernel: (String, FileData),
    pub(super) initrd: Option<(String, FileData)>,
    pub(super) dtb: Option<(String, FileData)>,
    pub(super) blob: Option<(String, Vec<u8>)>,
    pub(super) raw_sources: Vec<(usize, String, FileData)>,
}

/// Among matches, the one carrying the kernel's version if any, else the highest version.
pub(super) fn pick(matches: Vec<String>, pattern: &str, version: &str) -> Option<String> {
    if !version.is_empty()
        && let Some(m) = matches
            .iter()
            .find(|m| version_suffix(m, pattern) == version)
    {
        return Some(m.clone());
    }
    matches.into_iter().last()
}

pub(super) fn find_boot_files(profile: &Profile, tree: &RootTree) -> Result<Found, BuildError> {
    let missing = |what, pattern: &str, hint: &str| BuildError::NotInRootfs {
        what,
        pattern: pattern.to_string(),
        rootfs: tree.path().to_path_buf(),
        hint: hint.to_string(),
    };
    let k = &profile.kernel;
    let kernels: Vec<String> = tree
        .glob(&k.path)?
        .into_iter()
        .filter(|p| tree.is_file(p).unwrap_or(false))
        .collect();
    let kernel_hint = if k.package.is_empty() {
        String::new()
    } else {
        format!("; install the kernel package ({}) into it", k.package)
    };
    let kernel_path = kernels
        .last()
        .cloned()
        .ok_or_else(|| missing("kernel", &k.path, &kernel_hint))?;
    let version = version_suffix(&kernel_path, &k.path).to_string();
    let kernel_data = tree
        .file_data(&kernel_path)?
        .ok_or_else(|| missing("kernel", &k.path, ""))?;
    let kernel = (
        kernel_path.clone(),
        kernel_for_boot(k.image, kernel_data)
            .map_err(io(format!("reading the kernel {kernel_path}")))?,
    );

    let initrd = match &k.initrd {
        None => None,
        Some(pat) => {
            let m: Vec<String> = tree
                .glob(pat)?
                .into_iter()
                .filter(|p| tree.is_file(p).unwrap_or(false))
                .collect();
            let p = pick(m, pat, &version).ok_or_else(|| {
                missing(
                    "initrd",
                    pat,
                    "; generate one (update-initramfs) or remove kernel.initrd from the profile",
                )
            })?;
            let d = tree
                .file_data(&p)?
                .ok_or_else(|| missing("initrd", pat, ""))?;
            Some((p, d))
        }
    };

    let dtb = match &k.dtb {
        None => None,
        Some(name) => {
            let dirs = tree.glob(&k.dtb_dir)?;
            let dir = pick(dirs, &k.dtb_dir, &version);
            let pattern = format!("{}/{name}", k.dtb_dir);
            let path = dir.map(|d| format!("{d}/{name}"));
            match path
                .as_deref()
                .map(|p| tree.file_data(p))
                .transpose()?
                .flatten()
            {
                Some(d) => Some((path.unwrap_or_default(), d)),
                None => {
                    return Err(missing(
                        "device tree",
                        &pattern,
                        "; the kernel package ships DTBs there",
                    ));
                }
            }
        }
    };

    let blob = match &profile.bootloader {
        None => None,
        Some(b) => {
            let hint = match &b.package {
                Some(p) => format!("; install the bootloader package ({p}) into it"),
                None => String::new(),
            };
            let data = tree
                .read(&b.path.value)?
                .ok_or_else(|| missing("bootloader blob", &b.path.value, &hint))?;
            if let Some(m) = &b.magic
                && !m.found_in(&data)
            {
                return Err(BuildError::BadMagic {
                    path: b.path.value.clone(),
                    magic: m.text.clone(),
                    offset: m.offset,
                });
            }
            Some((b.path.value.clone(), data))
        }
    };

    let mut raw_sources = Vec::new();
    for (i, p) in profile.partitions.iter().enumerate() {
        if let Some(src) = &p.source {
            let d = tree.file_data(&src.value)?.ok_or_else(|| {
                missing(
                    "partition source",
                    &src.value,
                    &format!(" (named by partition `{}` at {})", p.name.value, src.at()),
                )
            })?;
            raw_sources.push((i, src.value.clone(), d));
        }
    }
    Ok(Found {
        kernel,
        initrd,
        dtb,
        blob,
        raw_sources,
    })
}

/// What the root filesystem's initramfs lacks of the modules derived for the board's root medium (see
/// `rootmods`), and providers nothing is known to drive.
pub(super) fn initramfs_warnings(profile: &Profile, tree: &RootTree) -> Vec<String> {
    use crate::rootfs::initramfs as irf;
    let (Some(req), Some(pattern)) = (irf::request(profile), profile.kernel.initrd.as_deref())
    else {
        return Vec::new();
    };
    let files = irf::TreeFiles(tree);
    let report = match crate::rootmods::analyze(&files, &req) {
        Ok(r) => r,
        Err(e) => {
            return vec![format!(
                "cannot check the initramfs against the board's device tree: {e}"
            )];
        }
    };
    let mut out = Vec::new();
    let how = format!(
        "`boardsmith initramfs-modules {} --rootfs {}` shows why",
        profile.name,
        tree.path().display()
    );
    match irf::initrd_modules(&files, pattern, &report.kernel_version) {
        Ok(Some((path, present))) => {
            let lacking = irf::missing(&report, &present);
            if !lacking.is_empty() {
                out.push(format!(
                    "the initramfs {path} lacks modules the root device ({}) needs: {}; the board will likely stop at \"root not mounted\" ({how}; `boardsmith rootfs` builds an initramfs with them)",
                    report.derivation.medium.describe(),
                    lacking.join(", ")
                ));
            }
        }
        Ok(None) => {}
        Err(e) => out.push(format!("cannot check the initramfs: {e}")),
    }
    if let Some(summary) = report.derivation.unresolved_summary() {
        out.push(format!("{summary} ({how})"));
    }
    out
}

/// A root filesystem whose fstab names a root partition must name this layout's (see `plan::fstab`).
pub(super) fn check_fstab(text: &str, layout: &Layout) -> Result<(), BuildError> {
    use crate::plan::fstab;
    if fstab::root_matches(text, layout) == Some(false) {
        let found = fstab::parse(text)
            .into_iter()
            .find(|(_, m)| m == "/")
            .map(|(s, _)| s)
            .unwrap_or_default();
        let expected = layout
            .partition(Role::Root)
            .map(|p| {
                let label = p
                    .label
                    .as_ref()
                    .map(|l| format!(" or LABEL={l}"))
                    .unwrap_or_default();
                format!("PARTUUID={}{label}", p.partuuid)
            })
            .unwrap_or_default();
        return Err(BuildError::FstabMismatch { found, expected });
    }
    Ok(())
}
