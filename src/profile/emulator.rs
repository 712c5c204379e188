//! `[emulator]` and the named `[emulators.NAME]` setups: how QEMU runs the board's images.

use super::raw::RawEmulator;
use super::validate::{one_of, required};
use super::*;

/// `[emulator]` and the named `[emulators.NAME]` setups; the initramfs gets what every emulator's disk
/// needs, so that the same root filesystem boots on the board and in each of them.
pub(super) fn validate_emulators(
    default: Option<RawEmulator>,
    named: Option<std::collections::BTreeMap<String, Loc<RawEmulator>>>,
    ctx: &EmulatorContext<'_>,
    kernel: &mut Kernel,
) -> Result<(Option<Emulator>, Vec<Emulator>), ProfileError> {
    let emulator = default
        .map(|e| validate_emulator(e, None, ctx))
        .transpose()?;
    let mut emulators = Vec::new();
    for (name, e) in named.unwrap_or_default() {
        if !valid_emulator_name(&name) {
            return Err(ProfileError::invalid(
                &e,
                format!("emulators.{name}"),
                "an emulator's name is lowercase letters, digits and '-' (it is given to `boot --emulator NAME`)",
            ));
        }
        emulators.push(validate_emulator(e.value, Some(name), ctx)?);
    }
    for e in emulator.iter().chain(&emulators) {
        for m in &e.initramfs_modules {
            if !kernel.initramfs_modules.contains(m) {
                kernel.initramfs_modules.push(m.clone());
            }
        }
    }
    Ok((emulator, emulators))
}

/// What an emulator section is checked against.
pub(super) struct EmulatorContext<'a> {
    pub(super) file: &'a SourceFile,
    pub(super) medium: Option<Medium>,
    pub(super) medium_loc: Option<&'a Loc<String>>,
    pub(super) has_initrd: bool,
}

fn valid_emulator_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A QEMU `-device` value: non-empty and not an option.
fn device_value(v: &Loc<String>, field: &str) -> Result<String, ProfileError> {
    if v.value.trim().is_empty() || v.value.starts_with('-') || v.value != v.value.trim() {
        return Err(ProfileError::invalid(
            v,
            field,
            "must be a QEMU device, e.g. \"virtio-gpu-pci\" (with its properties after commas)",
        ));
    }
    Ok(v.value.clone())
}

fn validate_emulator(
    e: RawEmulator,
    name: Option<String>,
    ctx: &EmulatorContext<'_>,
) -> Result<Emulator, ProfileError> {
    let prefix = match &name {
        None => "emulator".to_string(),
        Some(n) => format!("emulators.{n}"),
    };
    let f = |field: &str| format!("{prefix}.{field}");
    let drive = {
        let d = e
            .drive
            .clone()
            .unwrap_or_else(|| Loc::builtin("virtio".into()));
        one_of(&d, &f("drive"), &[("sd", "sd"), ("virtio", "virtio")])?.to_string()
    };
    let (display, input) = screen_devices(&e, &prefix)?;
    let network = network_model(&e, &prefix)?;
    let direct_boot = direct_boot(&e, &prefix)?;
    let initramfs_modules = emulator_modules(&e, &prefix, ctx, &drive)?;
    Ok(Emulator {
        name,
        description: e.description.map(|v| v.value),
        system: required(e.system, ctx.file, &f("system"))?.value,
        machine: required(e.machine, ctx.file, &f("machine"))?.value,
        cpu: e.cpu.map(|v| v.value),
        memory: e.memory.map(|v| v.value).unwrap_or_else(|| "1G".into()),
        drive,
        firmware: e.firmware.map(|v| v.value),
        size_power_of_two: e.size_power_of_two.map(|v| v.value).unwrap_or(false),
        extra_args: e.extra_args.map(|v| v.value).unwrap_or_default(),
        display,
        input,
        network,
        direct_boot,
        initramfs_modules,
    })
}

/// `display` and `input`: QEMU devices; input devices only with a display to drive.
fn screen_devices(
    e: &RawEmulator,
    prefix: &str,
) -> Result<(Option<String>, Vec<String>), ProfileError> {
    let f = |field: &str| format!("{prefix}.{field}");
    let display = e
        .display
        .as_ref()
        .map(|d| device_value(d, &f("display")))
        .transpose()?;
    let mut input = Vec::new();
    if let Some(i) = &e.input {
        if display.is_none() {
            return Err(ProfileError::invalid(
                i,
                f("input"),
                format!(
                    "has no effect without {}: input devices drive a screen; add a display device or remove them",
                    f("display")
                ),
            ));
        }
        for (n, d) in i.value.iter().enumerate() {
            input.push(device_value(
                &Loc {
                    value: d.clone(),
                    origin: i.origin.clone(),
                },
                &format!("{}[{n}]", f("input")),
            )?);
        }
    }
    Ok((display, input))
}

/// `network`: a NIC model name, nothing QEMU would read as more options.
fn network_model(e: &RawEmulator, prefix: &str) -> Result<Option<String>, ProfileError> {
    let Some(n) = &e.network else {
        return Ok(None);
    };
    if n.value.is_empty()
        || !n
            .value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ProfileError::invalid(
            n,
            format!("{prefix}.network"),
            "must be a QEMU NIC model name (letters, digits, '-', '_', '.'), e.g. \"virtio-net-pci\" or \"allwinner-emac\"",
        ));
    }
    Ok(Some(n.value.clone()))
}

/// `direct_boot` and the `console` it replaces; firmware would never run with it.
fn direct_boot(e: &RawEmulator, prefix: &str) -> Result<Option<DirectBoot>, ProfileError> {
    let f = |field: &str| format!("{prefix}.{field}");
    let Some(d) = &e.direct_boot else {
        if let Some(c) = &e.console {
            return Err(ProfileError::invalid(
                c,
                f("console"),
                format!(
                    "has no effect without {}: the image's own boot configuration sets the console",
                    f("direct_boot")
                ),
            ));
        }
        return Ok(None);
    };
    // Whether the image has an extlinux.conf is checked when this emulator is chosen: a board
    // may inherit the setup from its base and still leave extlinux out of boot.methods.
    one_of(d, &f("direct_boot"), &[("extlinux", ())])?;
    if let Some(fw) = &e.firmware {
        return Err(ProfileError::invalid(
            fw,
            f("firmware"),
            format!(
                "has no effect with {}: QEMU starts the kernel itself; remove one of them",
                f("direct_boot")
            ),
        ));
    }
    let console = match &e.console {
        None => None,
        Some(c) => {
            if c.value.is_empty() || c.value.contains(char::is_whitespace) {
                return Err(ProfileError::invalid(
                    c,
                    f("console"),
                    "must be one console device with its options, e.g. \"ttyAMA0\" or \"ttyS0,115200\"",
                ));
            }
            Some(c.value.clone())
        }
    };
    Ok(Some(DirectBoot { console }))
}

/// `initramfs_modules`: module names, only with an initramfs; and the emulated disk (`drive`) where
/// the initramfs looks for the root filesystem, or the modules that reach it listed.
fn emulator_modules(
    e: &RawEmulator,
    prefix: &str,
    ctx: &EmulatorContext<'_>,
    drive: &str,
) -> Result<Vec<String>, ProfileError> {
    let f = |field: &str| format!("{prefix}.{field}");
    let initramfs_modules = match &e.initramfs_modules {
        None => Vec::new(),
        Some(m) => {
            if let Some(bad) = m
                .value
                .iter()
                .find(|n| !crate::rootmods::kmod::valid_module_name(n))
            {
                return Err(ProfileError::invalid(
                    m,
                    f("initramfs_modules"),
                    format!(
                        "{bad:?} is not a module name (letters, digits, '_' and '-', as in `virtio_blk`)"
                    ),
                ));
            }
            if !m.value.is_empty() && !ctx.has_initrd {
                return Err(ProfileError::invalid(
                    m,
                    f("initramfs_modules"),
                    "has no effect without kernel.initrd (there is no initramfs to put modules in)",
                ));
            }
            m.value.clone()
        }
    };
    if let (Some(m), Some(loc)) = (ctx.medium, ctx.medium_loc) {
        let fits = match drive {
            "sd" => matches!(m, Medium::Sd | Medium::Emmc),
            _ => m == Medium::Virtio,
        };
        if !fits && initramfs_modules.is_empty() {
            return Err(ProfileError::invalid(
                loc,
                "medium",
                format!(
                    "is \"{}\" but {} is \"{}\": the emulated disk would not be where the initramfs looks for the root filesystem; list the modules that disk needs in {}",
                    m.name(),
                    f("drive"),
                    drive,
                    f("initramfs_modules")
                ),
            ));
        }
    }
    Ok(initramfs_modules)
}

#[cfg(test)]
mod tests {
    use super::super::test_profiles::{WITH_INITRD, load_text};
    use super::*;

    /// A board with a boot partition read by extlinux, an SD card and the `[emulators.desktop]` EMU.
    fn with_desktop(emu: &str) -> Result<Profile, ProfileError> {
        let text = WITH_INITRD
            .replace("MEDIUM", "medium = \"sd\"\n")
            .replace("EXTRA", "")
            .replace(
                "[[partition]]\nname = \"root\"",
                "[[partition]]\nname = \"boot\"\nrole = \"boot\"\nsize = \"64MiB\"\nfs = \"vfat\"\n[[partition]]\nname = \"root\"",
            )
            .replace(
                "EMU",
                &format!("[boot]\nmethods = [\"extlinux\"]\n[emulators.desktop]\n{emu}"),
            );
        load_text(&text)
    }

    const DESKTOP: &str = "system = \"qemu-system-arm\"\nmachine = \"virt\"\ndrive = \"virtio\"\ndirect_boot = \"extlinux\"\nconsole = \"ttyAMA0\"\ndisplay = \"virtio-gpu-pci\"\ninput = [\"virtio-keyboard-pci\"]\nnetwork = \"virtio-net-pci\"\ninitramfs_modules = [\"virtio_pci\", \"virtio_blk\"]\n";

    #[test]
    fn named_emulators_are_read_and_their_modules_join_the_initramfs() {
        let p = with_desktop(DESKTOP).unwrap();
        assert!(p.emulator.is_none());
        let e = &p.emulators[0];
        assert_eq!(e.label(), "desktop");
        assert_eq!(e.display.as_deref(), Some("virtio-gpu-pci"));
        assert_eq!(e.input, ["virtio-keyboard-pci"]);
        assert_eq!(e.network.as_deref(), Some("virtio-net-pci"));
        assert_eq!(
            e.direct_boot.as_ref().and_then(|d| d.console.as_deref()),
            Some("ttyAMA0")
        );
        assert_eq!(p.kernel.initramfs_modules, ["virtio_pci", "virtio_blk"]);
        // The seed boards: the A10 boards and the Foundation model have a desktop; snow has none.
        let c = Catalog::default();
        for board in ["cubieboard", "mk802", "armv8-foundation"] {
            let p = c.load(board).unwrap();
            let d = p.emulators.iter().find(|e| e.label() == "desktop");
            assert!(
                d.is_some_and(|d| d.display.is_some() && d.network.is_some()),
                "{board}"
            );
        }
        assert!(c.load("chromebook-snow").unwrap().emulators.is_empty());
    }

    #[test]
    fn named_emulator_rules() {
        // One must-fail setup per rule: (what DESKTOP's text becomes, what the error names).
        let replaced = |from: &str, to: &str| DESKTOP.replace(from, to);
        let cases: Vec<(String, &[&str])> = vec![
            // Input devices without a screen have nothing to drive.
            (
                replaced("display = \"virtio-gpu-pci\"\n", ""),
                &[
                    "emulators.desktop.input",
                    "no effect without emulators.desktop.display",
                ],
            ),
            // A device value is not an option smuggled into QEMU's command line.
            (
                replaced("\"virtio-gpu-pci\"", "\"-drive\""),
                &["emulators.desktop.display", "QEMU device"],
            ),
            (
                replaced("\"virtio-keyboard-pci\"", "\" usb-kbd\""),
                &["emulators.desktop.input[0]"],
            ),
            (
                replaced("\"virtio-net-pci\"", "\"e1000,hostfwd=tcp::1-:2\""),
                &["emulators.desktop.network", "NIC model"],
            ),
            // The console only means something when boardsmith starts the kernel.
            (
                replaced("direct_boot = \"extlinux\"\n", ""),
                &[
                    "emulators.desktop.console",
                    "no effect without emulators.desktop.direct_boot",
                ],
            ),
            (
                replaced("\"ttyAMA0\"", "\"ttyAMA0 init=/bin/sh\""),
                &["emulators.desktop.console", "one console device"],
            ),
            (
                replaced("\"extlinux\"\nconsole", "\"grub\"\nconsole"),
                &["emulators.desktop.direct_boot", "\"extlinux\""],
            ),
            // Firmware would never run when QEMU starts the kernel.
            (
                format!("{DESKTOP}firmware = \"/usr/lib/u-boot/u-boot.bin\"\n"),
                &[
                    "emulators.desktop.firmware",
                    "no effect with emulators.desktop.direct_boot",
                ],
            ),
            (
                replaced("\"virtio_blk\"", "\"virtio blk\""),
                &["emulators.desktop.initramfs_modules", "not a module name"],
            ),
            // The disk must be where the initramfs looks, or the modules to reach it listed.
            (
                replaced("initramfs_modules = [\"virtio_pci\", \"virtio_blk\"]\n", ""),
                &[
                    "emulators.desktop.drive is \"virtio\"",
                    "emulators.desktop.initramfs_modules",
                ],
            ),
        ];
        for (emu, expect) in cases {
            assert_ne!(emu, DESKTOP, "the case changes nothing: {expect:?}");
            let e = with_desktop(&emu).unwrap_err().to_string();
            for x in expect {
                assert!(e.contains(x), "{x:?} not in: {e}");
            }
        }
    }

    #[test]
    fn named_emulator_needs_a_plain_name() {
        // A board without extlinux.conf may carry (inherit) a direct_boot setup: `boot` refuses to use it.
        let text = WITH_INITRD
            .replace("MEDIUM", "medium = \"sd\"\n")
            .replace("EXTRA", "")
            .replace("EMU", &format!("[emulators.desktop]\n{DESKTOP}"));
        assert!(load_text(&text).is_ok());
        let text = WITH_INITRD
            .replace("MEDIUM", "medium = \"sd\"\n")
            .replace("EXTRA", "")
            .replace(
                "EMU",
                "[emulators.Desk_top]\nsystem = \"qemu-system-arm\"\nmachine = \"virt\"\ndrive = \"sd\"\n",
            );
        let e = load_text(&text).unwrap_err().to_string();
        assert!(
            e.contains("emulators.Desk_top") && e.contains("lowercase"),
            "{e}"
        );
    }
}
