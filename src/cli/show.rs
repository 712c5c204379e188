//! `boardsmith show`: a resolved profile and its byte layout.

use std::io::Write;

use boardsmith::plan::Layout;
use boardsmith::plan::{PlanInput, plan};
use boardsmith::profile::{Catalog, Profile};
use boardsmith::size::Human;

use super::args::ShowArgs;
use super::exit::Failure;
use super::{epoch, load, parse_size_arg};

pub fn run(catalog: &Catalog, args: ShowArgs) -> Result<(), Failure> {
    let profile = load(catalog, &args.board)?;
    let input = plan_input(&profile, &args)?;
    let layout =
        plan(&profile, &input).map_err(|e| Failure::usage(format!("invalid layout: {e}")))?;
    let blob = match &args.rootfs {
        Some(r) => boardsmith::image::build::kernel_blob_size(&profile, r, &input)?,
        None => None,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = serde_json::json!({ "profile": profile, "layout": layout });
        let _ = writeln!(out, "{v:#}");
        return Ok(());
    }
    print_profile(&mut out, &profile, &layout);
    print_emulators(&mut out, &profile);
    print_kernel_blob(&mut out, &profile, blob);
    let _ = writeln!(out);
    let _ = write!(out, "{layout}");
    Ok(())
}

/// What the layout is planned from: --size, and the content of --rootfs when given.
fn plan_input(profile: &Profile, args: &ShowArgs) -> Result<PlanInput, Failure> {
    let mut input = PlanInput {
        image_size: parse_size_arg(args.size.as_deref())?,
        epoch: epoch()?,
        ..Default::default()
    };
    if let Some(r) = &args.rootfs {
        let tree = boardsmith::rootfs::tree::RootTree::open(r)?;
        let stats = tree.stats()?;
        input.fill_content = Some(boardsmith::image::ext4::auto_size(&stats));
        if let Some(b) = &profile.bootloader
            && let Ok(Some(data)) = tree.read(&b.path.value)
        {
            input.blob_size = Some(data.len() as u64);
        }
    }
    Ok(input)
}

/// The profile's files, architecture, kernel, command line, bootloader and boot configuration.
fn print_profile(out: &mut dyn Write, profile: &Profile, layout: &Layout) {
    let _ = writeln!(out, "{} — {}", profile.name, profile.description);
    let files: Vec<&str> = profile.sources.iter().map(|s| s.name.as_str()).collect();
    let _ = writeln!(out, "profile: {}", files.join(" <- "));
    let _ = writeln!(
        out,
        "arch: {}, console: {}",
        profile.arch.debian(),
        profile.console
    );
    let k = &profile.kernel;
    let _ = writeln!(
        out,
        "kernel: {} ({}) from {}{}",
        k.image.file_name(),
        if k.package.is_empty() {
            "-"
        } else {
            &k.package
        },
        k.path,
        k.dtb
            .as_ref()
            .map(|d| format!(", device tree {d}"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "command line: {}",
        boardsmith::image::build::kernel_cmdline(profile, layout, None)
    );
    if let Some(b) = &profile.bootloader {
        let _ = writeln!(
            out,
            "bootloader: {} at byte {} ({})",
            b.path.value,
            b.offset.value,
            Human(b.offset.value)
        );
    }
    let methods: Vec<String> = profile
        .boot
        .methods
        .iter()
        .map(|m| format!("{m:?}").to_lowercase())
        .collect();
    if !methods.is_empty() {
        let _ = writeln!(out, "boot configuration: {}", methods.join(", "));
    }
}

/// `boot --emulator NAME`: what each setup gives the board.
fn print_emulators(out: &mut dyn Write, profile: &Profile) {
    for e in profile.emulator.iter().chain(&profile.emulators) {
        let mut what = vec![format!("QEMU {} ({})", e.machine, e.system)];
        what.push(format!("{} disk", e.drive));
        if e.direct_boot.is_some() {
            what.push("kernel of the image's extlinux.conf".into());
        }
        match &e.display {
            Some(d) => what.push(format!("screen {d}")),
            None => what.push("no screen".into()),
        }
        match &e.network {
            Some(n) => what.push(format!("network {n} (--forward)")),
            None => what.push("no network".into()),
        }
        let _ = writeln!(out, "emulator {}: {}", e.label(), what.join(", "));
    }
}

/// The signed kernel blob against its partition (known with --rootfs only).
fn print_kernel_blob(out: &mut dyn Write, profile: &Profile, blob: Option<(String, u64, u64)>) {
    if let Some((part, size, capacity)) = blob {
        let _ = writeln!(
            out,
            "kernel blob: {size} bytes ({}) of partition `{part}` ({}), {:.0}% used",
            Human(size),
            Human(capacity),
            size as f64 * 100.0 / capacity.max(1) as f64
        );
    } else if profile.vboot.is_some() {
        let _ = writeln!(
            out,
            "kernel blob: signed at build time (pass --rootfs to see its size against its partition)"
        );
    }
}
