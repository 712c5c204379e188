//! The merged raw profile checked into a [`Profile`], section by section.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::catalog::stem;
use super::emulator::{EmulatorContext, validate_emulators};
use super::partition::validate_partitions;
use super::raw::{
    self, RawBoot, RawBootloader, RawKernel, RawMagic, RawProfile, RawTable, RawVboot, SizeValue,
};
use super::*;
use crate::size::parse_size;

pub(super) fn size_of(v: &Loc<SizeValue>, field: &str) -> Result<u64, ProfileError> {
    match &v.value {
        SizeValue::Bytes(n) => u64::try_from(*n)
            .map_err(|_| ProfileError::invalid(v, field, "a size cannot be negative")),
        SizeValue::Text(s) => {
            parse_size(s).map_err(|e| ProfileError::invalid(v, field, e.to_string()))
        }
    }
}

pub(super) fn loc_size(v: &Loc<SizeValue>, field: &str) -> Result<Loc<u64>, ProfileError> {
    Ok(Loc {
        value: size_of(v, field)?,
        origin: v.origin.clone(),
    })
}

pub(super) fn required<T>(
    v: Option<Loc<T>>,
    file: &SourceFile,
    field: &str,
) -> Result<Loc<T>, ProfileError> {
    v.ok_or_else(|| ProfileError::Missing {
        file: file.name.clone(),
        field: field.to_string(),
    })
}

pub(super) fn one_of<'a, T: Copy>(
    v: &Loc<String>,
    field: &str,
    options: &'a [(&'a str, T)],
) -> Result<T, ProfileError> {
    options
        .iter()
        .find(|(n, _)| *n == v.value)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<String> = options.iter().map(|(n, _)| format!("\"{n}\"")).collect();
            ProfileError::invalid(
                v,
                field,
                format!(
                    "unknown value \"{}\"; expected one of {}",
                    v.value,
                    names.join(", ")
                ),
            )
        })
}

/// Refuses the first of `fields` (where it is set, its name) the profile sets: a setting that has no
/// effect here, `message` says why.
pub(super) fn refuse_set(
    fields: impl IntoIterator<Item = Option<(String, String)>>,
    message: &str,
) -> Result<(), ProfileError> {
    match fields.into_iter().flatten().next() {
        Some((at, field)) => Err(ProfileError::At(LocError::Invalid {
            at,
            field,
            message: message.into(),
        })),
        None => Ok(()),
    }
}

pub(super) fn validate(
    raw: RawProfile,
    file: &Arc<SourceFile>,
    sources: Vec<Arc<SourceFile>>,
) -> Result<Profile, ProfileError> {
    let name = board_name(raw.name, file)?;
    let arch_loc = required(raw.arch, file, "arch")?;
    let arch = one_of(
        &arch_loc,
        "arch",
        &[("armhf", Arch::Armhf), ("arm64", Arch::Arm64)],
    )?;
    let console = required(raw.console, file, "console")?.value;
    let medium_loc = raw.medium;
    let medium = medium_loc
        .as_ref()
        .map(|m| one_of(m, "medium", &Medium::ALL))
        .transpose()?;

    let kernel = validate_kernel(raw.kernel, file, medium_loc.is_some())?;
    let bootloader = validate_bootloader(raw.bootloader, file)?;
    let table = validate_table(raw.table, file)?;
    let partitions = validate_partitions(raw.partitions, file, &table)?;
    check_magic_region(bootloader.as_ref(), &partitions)?;
    let boot = validate_boot(raw.boot, file, &partitions)?;
    let mut kernel = kernel;
    let emu_ctx = EmulatorContext {
        file,
        medium,
        medium_loc: medium_loc.as_ref(),
        has_initrd: kernel.initrd.is_some(),
    };
    let (emulator, emulators) =
        validate_emulators(raw.emulator, raw.emulators, &emu_ctx, &mut kernel)?;
    let vboot = raw.vboot.map(validate_vboot).transpose()?;
    if let Some(k) = partitions
        .iter()
        .find(|p| p.role == Role::Kernel && p.source.is_none())
        && vboot.is_none()
    {
        return Err(ProfileError::invalid(
            &k.name,
            "source",
            "a kernel partition needs `source` (a prebuilt blob in the root filesystem) or a [vboot] section to build and sign one",
        ));
    }
    let fvp = match raw.fvp {
        None => None,
        Some(f) => Some(Fvp {
            model: required(f.model, file, "fvp.model")?.value,
            args: f.args.map(|v| v.value).unwrap_or_default(),
        }),
    };

    Ok(Profile {
        name,
        description: raw.description.map(|v| v.value).unwrap_or_default(),
        arch,
        console,
        medium,
        kernel,
        bootloader,
        table,
        partitions,
        boot,
        display: Display {
            video: raw.display.video.map(|v| v.value),
        },
        emulator,
        emulators,
        vboot,
        release: ReleaseText {
            changelog: raw.release.changelog.map(|v| v.value).unwrap_or_default(),
            known_issues: raw
                .release
                .known_issues
                .map(|v| v.value)
                .unwrap_or_default(),
            console_notes: raw.release.console_notes.map(|v| v.value),
        },
        fvp,
        rootfs: raw.rootfs.unwrap_or_default(),
        sources,
    })
}

/// The board's name: `name`, else the file's stem; it names output files.
fn board_name(name: Option<Loc<String>>, file: &SourceFile) -> Result<String, ProfileError> {
    let name = match name {
        Some(n) => n.value,
        None => file
            .path
            .as_deref()
            .map(|p| stem(&p.to_string_lossy()))
            .unwrap_or_else(|| stem(file.name.trim_start_matches("embedded:"))),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(ProfileError::At(LocError::Invalid {
            at: file.name.clone(),
            field: "name".into(),
            message: format!(
                "board name {name:?} must be non-empty and use only letters, digits, '-', '_' and '.' (it names output files)"
            ),
        }));
    }
    Ok(name)
}

/// `[kernel]`; `medium_given`: whether `medium` is set (an initrd needs it).
fn validate_kernel(
    k: RawKernel,
    file: &SourceFile,
    medium_given: bool,
) -> Result<Kernel, ProfileError> {
    if let Some(m) = &k.initramfs_modules {
        if let Some(bad) = m
            .value
            .iter()
            .find(|n| !crate::rootmods::kmod::valid_module_name(n))
        {
            return Err(ProfileError::invalid(
                m,
                "kernel.initramfs_modules",
                format!(
                    "{bad:?} is not a module name (letters, digits, '_' and '-', as in `sunxi-mmc`)"
                ),
            ));
        }
        if !m.value.is_empty() && k.initrd.is_none() {
            return Err(ProfileError::invalid(
                m,
                "kernel.initramfs_modules",
                "has no effect without kernel.initrd (there is no initramfs to put modules in); remove it or set kernel.initrd",
            ));
        }
    }
    let image_loc = required(k.image, file, "kernel.image")?;
    let image = one_of(
        &image_loc,
        "kernel.image",
        &[
            ("zImage", KernelImage::ZImage),
            ("Image", KernelImage::Image),
        ],
    )?;
    let kernel = Kernel {
        package: k.package.map(|v| v.value).unwrap_or_default(),
        image,
        path: required(k.path, file, "kernel.path")?.value,
        initrd: k.initrd.map(|v| v.value),
        dtb_dir: k.dtb_dir.map(|v| v.value).unwrap_or_default(),
        dtb: k.dtb.map(|v| v.value),
        cmdline: k
            .cmdline
            .unwrap_or_else(|| Loc::builtin("console={console} root={root} rootwait".into())),
        defconfig: k
            .defconfig
            .map(|v| v.value)
            .unwrap_or_else(|| "defconfig".into()),
        fragments_origin: k.fragments.as_ref().and_then(|v| v.origin.clone()),
        fragments: k.fragments.map(|v| v.value).unwrap_or_default(),
        initramfs_modules: k.initramfs_modules.map(|v| v.value).unwrap_or_default(),
    };
    if kernel.dtb.is_some() && kernel.dtb_dir.is_empty() {
        return Err(ProfileError::Missing {
            file: file.name.clone(),
            field: "kernel.dtb_dir".into(),
        });
    }
    if !medium_given && kernel.initrd.is_some() {
        return Err(ProfileError::Missing {
            file: file.name.clone(),
            field: "medium (where the root filesystem lives: \"sd\", \"emmc\", \"usb\", \"sata\" or \"virtio\"; the initramfs gets the modules its controller needs)".into(),
        });
    }
    Ok(kernel)
}

/// `[bootloader]`, if any.
fn validate_bootloader(
    raw: Option<RawBootloader>,
    file: &SourceFile,
) -> Result<Option<Bootloader>, ProfileError> {
    Ok(match raw {
        None => None,
        Some(b) => {
            let offset = loc_size(
                &required(b.offset, file, "bootloader.offset")?,
                "bootloader.offset",
            )?;
            if offset.value % 512 != 0 {
                return Err(ProfileError::invalid(
                    &offset,
                    "bootloader.offset",
                    format!("{} is not a multiple of the 512-byte sector", offset.value),
                ));
            }
            let path = required(b.path, file, "bootloader.path")?;
            let max_size = b
                .max_size
                .as_ref()
                .map(|v| size_of(v, "bootloader.max_size"))
                .transpose()?;
            let magic = b
                .magic
                .map(|m| validate_magic(m, offset.value, max_size))
                .transpose()?;
            Some(Bootloader {
                package: b.package.map(|v| v.value),
                path,
                offset,
                max_size,
                magic,
                env: b.env.map(|e| validate_uboot_env(&e)).transpose()?,
            })
        }
    })
}

/// `[bootloader] magic`: its bytes lie inside the blob's region, within `max_size` when set, and the
/// sums of offsets fit in 64 bits (checked: the numbers are the profile's).
fn validate_magic(
    m: Loc<RawMagic>,
    blob_offset: u64,
    max_size: Option<u64>,
) -> Result<Magic, ProfileError> {
    let field = "bootloader.magic.offset";
    let (offset, len) = (m.value.offset, m.value.text.len() as u64);
    let end = offset
        .checked_add(len)
        .filter(|e| blob_offset.checked_add(*e).is_some())
        .ok_or_else(|| {
            ProfileError::invalid(
                &m,
                field,
                format!(
                    "byte {offset} plus the {len}-byte text is past the end of any image; the offset counts from the start of the bootloader blob (4 for the eGON.BT0 of an Allwinner SPL)"
                ),
            )
        })?;
    if let Some(max) = max_size.filter(|max| end > *max) {
        return Err(ProfileError::invalid(
            &m,
            field,
            format!(
                "the text would end at byte {end} of the blob, past bootloader.max_size ({max} bytes); the magic must lie inside the blob's region"
            ),
        ));
    }
    Ok(Magic {
        offset,
        text: m.value.text,
        origin: m.origin,
    })
}

/// The bootloader's magic must end before the first partition placed at a fixed `offset` after the
/// blob: the blob's region ends there.
fn check_magic_region(
    bootloader: Option<&Bootloader>,
    partitions: &[Partition],
) -> Result<(), ProfileError> {
    let Some((b, m)) = bootloader.and_then(|b| Some((b, b.magic.as_ref()?))) else {
        return Ok(());
    };
    let start = b.offset.value;
    // validate_magic checked that this sum fits.
    let end = start
        .saturating_add(m.offset)
        .saturating_add(m.text.len() as u64);
    let next = partitions
        .iter()
        .filter_map(|p| Some((p, p.offset.as_ref()?.value)))
        .filter(|(_, o)| *o > start)
        .min_by_key(|(_, o)| *o);
    match next {
        Some((p, o)) if end > o => Err(ProfileError::At(LocError::Invalid {
            at: Loc {
                value: (),
                origin: m.origin.clone(),
            }
            .at(),
            field: "bootloader.magic.offset".into(),
            message: format!(
                "the text would end at image byte {end}, inside partition `{}` (which starts at byte {o}); the magic must lie inside the bootloader blob's region",
                p.name.value
            ),
        })),
        _ => Ok(()),
    }
}

/// `[table]`: its type, alignment, size, and the settings of that type only.
fn validate_table(t: RawTable, file: &SourceFile) -> Result<Table, ProfileError> {
    let kind_loc = required(t.kind, file, "table.type")?;
    let kind = one_of(
        &kind_loc,
        "table.type",
        &[("mbr", TableKind::Mbr), ("gpt", TableKind::Gpt)],
    )?;
    let alignment = match t.alignment {
        Some(a) => loc_size(&a, "table.alignment")?,
        None => Loc::builtin(crate::size::MIB),
    };
    if alignment.value == 0 || alignment.value % 512 != 0 {
        return Err(ProfileError::invalid(
            &alignment,
            "table.alignment",
            "must be a non-zero multiple of 512 bytes (1MiB is the usual choice for SD cards)",
        ));
    }
    let size = match t.size {
        None => Loc::builtin(ImageSize::Auto),
        Some(s) => match &s.value {
            SizeValue::Text(text) if text == "auto" => Loc {
                value: ImageSize::Auto,
                origin: s.origin.clone(),
            },
            _ => Loc {
                value: ImageSize::Bytes(size_of(&s, "table.size")?),
                origin: s.origin.clone(),
            },
        },
    };
    if kind == TableKind::Mbr {
        refuse_set(
            [
                t.gpt_entries
                    .as_ref()
                    .map(|l| (l.at(), "table.gpt_entries".into())),
                t.gpt_entries_offset
                    .as_ref()
                    .map(|l| (l.at(), "table.gpt_entries_offset".into())),
            ],
            "is a GPT setting but table.type is \"mbr\"; remove it or use type = \"gpt\"",
        )?;
    } else if let Some(sig) = &t.disk_signature {
        return Err(ProfileError::invalid(
            sig,
            "table.disk_signature",
            "is an MBR setting but table.type is \"gpt\" (GPT disks have a GUID, derived reproducibly)",
        ));
    }
    let gpt_entries = t.gpt_entries.unwrap_or_else(|| Loc::builtin(128));
    if !(1..=1024).contains(&gpt_entries.value) {
        return Err(ProfileError::invalid(
            &gpt_entries,
            "table.gpt_entries",
            "must be between 1 and 1024 (128 is the UEFI default)",
        ));
    }
    let gpt_entries_offset = match t.gpt_entries_offset {
        Some(o) => loc_size(&o, "table.gpt_entries_offset")?,
        None => Loc::builtin(1024),
    };
    if gpt_entries_offset.value % 512 != 0 || gpt_entries_offset.value < 1024 {
        return Err(ProfileError::invalid(
            &gpt_entries_offset,
            "table.gpt_entries_offset",
            "must be a multiple of 512 at or after byte 1024 (sector 2, right after the GPT header)",
        ));
    }
    Ok(Table {
        kind,
        alignment,
        size,
        disk_signature: t.disk_signature.map(|v| v.value),
        gpt_entries,
        gpt_entries_offset,
    })
}

/// `[boot]`: the boot methods need a boot partition to write to.
fn validate_boot(
    raw: RawBoot,
    file: &SourceFile,
    partitions: &[Partition],
) -> Result<BootConfig, ProfileError> {
    let methods = match raw.methods {
        None => Vec::new(),
        Some(m) => {
            let mut out = Vec::new();
            for name in &m.value {
                let loc = Loc {
                    value: name.clone(),
                    origin: m.origin.clone(),
                };
                out.push(one_of(
                    &loc,
                    "boot.methods",
                    &[
                        ("extlinux", BootMethod::Extlinux),
                        ("boot.scr", BootMethod::BootScr),
                    ],
                )?);
            }
            out
        }
    };
    if !methods.is_empty() && !partitions.iter().any(|p| p.role == Role::Boot) {
        return Err(ProfileError::Missing {
            file: file.name.clone(),
            field:
                "a partition with role = \"boot\" (boot.methods needs somewhere to write its files)"
                    .into(),
        });
    }
    Ok(BootConfig {
        methods,
        extlinux_fdt: raw.extlinux_fdt.map(|v| v.value).unwrap_or(true),
    })
}

const DEVKEYS: &str = "/usr/share/vboot/devkeys";

fn validate_vboot(v: RawVboot) -> Result<Vboot, ProfileError> {
    let path = |l: Option<Loc<String>>, default: &str| {
        l.map(|l| PathBuf::from(l.value))
            .unwrap_or_else(|| Path::new(DEVKEYS).join(default))
    };
    let version = match v.version {
        Some(l) => u32::try_from(l.value).map_err(|_| {
            ProfileError::invalid(&l, "vboot.version", "must be between 0 and 4294967295")
        })?,
        None => 1,
    };
    let load_address = match v.load_address {
        Some(l) => u32::try_from(l.value).map_err(|_| {
            ProfileError::invalid(&l, "vboot.load_address", "must be a 32-bit address")
        })?,
        None => 0,
    };
    Ok(Vboot {
        keyblock: path(v.keyblock, "kernel.keyblock"),
        signprivate: path(v.signprivate, "kernel_data_key.vbprivk"),
        subkey: Some(path(v.subkey, "kernel_subkey.vbpubk")),
        version,
        load_address,
    })
}

fn validate_uboot_env(e: &Loc<raw::RawUbootEnv>) -> Result<UbootEnvSpec, ProfileError> {
    let field = "bootloader.env";
    let file = e.value.file.clone().unwrap_or_else(|| "uboot.env".into());
    if file.is_empty() || file.starts_with('/') || file.split('/').any(|c| c == "..") {
        return Err(ProfileError::invalid(
            e,
            format!("{field}.file"),
            format!("{file:?} must be a relative path on the boot partition"),
        ));
    }
    let size_loc = Loc {
        value: e.value.size.clone(),
        origin: e.origin.clone(),
    };
    let size = size_of(&size_loc, &format!("{field}.size"))?;
    if !(512..=16 * crate::size::MIB).contains(&size) {
        return Err(ProfileError::invalid(
            e,
            format!("{field}.size"),
            format!("{size} bytes is not a plausible U-Boot CONFIG_ENV_SIZE (512 B to 16 MiB)"),
        ));
    }
    let mut set = Vec::new();
    for (k, v) in &e.value.set {
        let name_ok = !k.is_empty() && k.chars().all(|c| c.is_ascii_graphic() && c != '=');
        if !name_ok || v.contains(['\0', '\n']) {
            return Err(ProfileError::invalid(
                e,
                format!("{field}.set.{k}"),
                "variable names are printable ASCII without '='; values are one line",
            ));
        }
        set.push((k.clone(), v.clone()));
    }
    Ok(UbootEnvSpec { file, size, set })
}

#[cfg(test)]
mod tests {
    use super::super::test_profiles::{MINIMAL, WITH_INITRD, load_text};
    use super::*;

    #[test]
    fn bad_size_names_field_and_position() {
        let text = format!("{MINIMAL}[[partition]]\nname = \"root\"\nsize = \"12 parsecs\"\n");
        let e = load_text(&text).unwrap_err().to_string();
        assert!(e.contains("t.toml:10:8"), "{e}");
        assert!(e.contains("partition[0].size"), "{e}");
        assert!(e.contains("unknown unit"), "{e}");
    }

    #[test]
    fn bootloader_magic_must_lie_inside_the_blobs_region() {
        let text = |max: &str, magic_offset: &str| {
            format!(
                "{MINIMAL}[bootloader]\npath = \"u.bin\"\noffset = \"8KiB\"\n{max}magic = {{ offset = {magic_offset}, text = \"eGON.BT0\" }}\n[[partition]]\nname = \"root\"\nrole = \"root\"\noffset = \"1MiB\"\nsize = \"fill\"\n"
            )
        };
        let ok = load_text(&text("max_size = \"512KiB\"\n", "4")).unwrap();
        let magic = ok.bootloader.unwrap().magic.unwrap();
        assert!(magic.found_in(b"\xea\0\0\x16eGON.BT0"));
        assert!(!magic.found_in(b"\xea\0\0\x16eGON"));
        // One must-fail case per rule: the sum overflows, the blob's offset plus it overflows, past
        // max_size, into the partition at a fixed offset.
        for (max, offset, wanted) in [
            ("", "18446744073709551615", "past the end of any image"),
            ("", "18446744073709543420", "past the end of any image"),
            (
                "max_size = \"512KiB\"\n",
                "524284",
                "end at byte 524292 of the blob, past bootloader.max_size (524288 bytes)",
            ),
            (
                "",
                "1040380",
                "end at image byte 1048580, inside partition `root` (which starts at byte 1048576)",
            ),
        ] {
            let e = load_text(&text(max, offset)).unwrap_err().to_string();
            let line = if max.is_empty() { 11 } else { 12 };
            assert!(
                e.contains(&format!("t.toml:{line}:9: `bootloader.magic.offset`: "))
                    && e.contains(wanted),
                "{offset}: {e}"
            );
        }
    }

    #[test]
    fn missing_field_is_named() {
        let e = load_text("arch = \"armhf\"\n").unwrap_err().to_string();
        assert!(e.contains("console"), "{e}");
    }

    #[test]
    fn seed_boards_name_their_medium_and_only_true_extras() {
        let c = Catalog::default();
        for (board, medium, extras) in [
            // The A10 boards' desktop emulator (QEMU virt) attaches the disk over virtio PCI.
            ("cubieboard", Medium::Sd, &["virtio_pci", "virtio_blk"][..]),
            ("mk802", Medium::Sd, &["virtio_pci", "virtio_blk"][..]),
            ("chromebook-snow", Medium::Sd, &[][..]),
            ("armv8-foundation", Medium::Virtio, &["virtio_pci"][..]),
        ] {
            let p = c.load(board).unwrap();
            assert_eq!(p.medium, Some(medium), "{board}");
            assert_eq!(p.kernel.initramfs_modules, extras, "{board}");
        }
    }

    fn with(medium: &str, extra: &str, emu: &str) -> Result<Profile, ProfileError> {
        load_text(
            &WITH_INITRD
                .replace("MEDIUM", medium)
                .replace("EXTRA", extra)
                .replace("EMU", emu),
        )
    }

    #[test]
    fn medium_rules() {
        let ok = with("medium = \"emmc\"\n", "", "").unwrap();
        assert_eq!(ok.medium, Some(Medium::Emmc));
        // An unknown medium names the line and the choices.
        let e = with("medium = \"floppy\"\n", "", "")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.toml:3:10") && e.contains("\"floppy\"") && e.contains("\"virtio\""),
            "{e}"
        );
        // An initramfs without a medium: the modules could not be derived.
        let e = with("", "", "").unwrap_err().to_string();
        assert!(e.contains("`medium") && e.contains("\"sd\""), "{e}");
        // The emulated disk must be the medium the initramfs looks for.
        let emu =
            "[emulator]\nsystem = \"qemu-system-arm\"\nmachine = \"cubieboard\"\ndrive = \"sd\"\n";
        let e = with("medium = \"virtio\"\n", "", emu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("emulator.drive is \"sd\""), "{e}");
        assert!(with("medium = \"sd\"\n", "", emu).is_ok());
        let e = with(
            "medium = \"usb\"\n",
            "",
            &emu.replace("\"sd\"", "\"virtio\""),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("emulator.drive is \"virtio\""), "{e}");
    }

    #[test]
    fn initramfs_modules_rules() {
        let e = with(
            "medium = \"sd\"\n",
            "initramfs_modules = [\"ext4\", \"evil; rm -rf /\"]",
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("kernel.initramfs_modules") && e.contains("not a module name"),
            "{e}"
        );
        let no_initrd = WITH_INITRD
            .replace("MEDIUM", "")
            .replace("initrd = \"boot/initrd.img-*\"\n", "")
            .replace("EXTRA", "initramfs_modules = [\"ext4\"]")
            .replace("EMU", "");
        let e = load_text(&no_initrd).unwrap_err().to_string();
        assert!(e.contains("has no effect without kernel.initrd"), "{e}");
        assert!(
            with(
                "medium = \"sd\"\n",
                "initramfs_modules = [\"dw_mmc-exynos\"]",
                ""
            )
            .is_ok()
        );
    }
}
