//! `boardsmith boot`: an image booted in the board's emulator (QEMU), its serial console watched.

use std::io::Write as _;

use clap::ArgMatches;

use boardsmith::boot::{BootError, BootEvent, BootRequest, Screen, boot};
use boardsmith::profile::{Catalog, Emulator, Profile};
use boardsmith::size::Human;

use super::args::{BootArgs, NetOptions, ScreenOptions, ScreenshotOptions, arguments_of};
use super::exit::Failure;
use super::refuse::refuse_given;
use super::{install_signals, load};

/// The board for `boot`: --board, or the image's file name when it names a profile.
fn boot_board(catalog: &Catalog, args: &BootArgs) -> Result<Profile, Failure> {
    if let Some(b) = &args.board {
        return load(catalog, b);
    }
    let stem = args
        .image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match catalog.load(&stem) {
        Ok(p) if !stem.is_empty() => Ok(p),
        _ => Err(Failure::usage(format!(
            "{} does not name a board profile; pass --board BOARD",
            args.image.display()
        ))),
    }
}

/// The screenshots, each with the --screenshot-after and --screenshot-delay that follow it on the
/// command line (clap keeps each option's values apart; their positions pair them).
fn screenshot_specs(
    m: Option<&ArgMatches>,
    o: &ScreenshotOptions,
) -> Result<Vec<boardsmith::boot::ScreenshotSpec>, Failure> {
    let index = |id: &str| -> Vec<usize> {
        m.and_then(|m| m.indices_of(id))
            .map(|i| i.collect())
            .unwrap_or_default()
    };
    let shots = index("screenshot");
    let mut specs: Vec<boardsmith::boot::ScreenshotSpec> = o
        .screenshot
        .iter()
        .map(|f| boardsmith::boot::ScreenshotSpec {
            file: f.clone(),
            after: None,
            delay: std::time::Duration::ZERO,
        })
        .collect();
    for (i, re) in per_screenshot(
        index("screenshot_after"),
        &o.screenshot_after,
        &shots,
        &o.screenshot,
        "--screenshot-after",
    )? {
        specs[i].after = Some(
            regex::Regex::new(re)
                .map_err(|e| Failure::usage(format!("--screenshot-after: {e}")))?,
        );
    }
    for (i, d) in per_screenshot(
        index("screenshot_delay"),
        &o.screenshot_delay,
        &shots,
        &o.screenshot,
        "--screenshot-delay",
    )? {
        if !(d.is_finite() && *d >= 0.0 && *d < 1e6) {
            return Err(Failure::usage(format!(
                "--screenshot-delay: {d} is not a number of seconds (0 or more)"
            )));
        }
        specs[i].delay = std::time::Duration::from_secs_f64(*d);
    }
    for s in &specs {
        if s.file.file_name().is_none() {
            return Err(Failure::usage(format!(
                "--screenshot: {} names no file",
                s.file.display()
            )));
        }
        // QEMU gets the path in QMP's JSON, which carries text only.
        if s.file.to_str().is_none() {
            return Err(Failure::usage(format!(
                "--screenshot: {} is not UTF-8; choose a UTF-8 file name",
                s.file.display()
            )));
        }
        // Known now, not after a boot of minutes.
        let dir = match s.file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => std::path::Path::new("."),
        };
        if !dir.is_dir() {
            return Err(Failure::usage(format!(
                "--screenshot: {}: the directory {} does not exist",
                s.file.display(),
                dir.display()
            )));
        }
    }
    Ok(specs)
}

/// Each value of an option that belongs to a --screenshot (the last one before it on the command
/// line, by clap's `positions`), with that screenshot's index; at most one per screenshot.
fn per_screenshot<'v, T>(
    positions: Vec<usize>,
    values: &'v [T],
    shots: &[usize],
    files: &[std::path::PathBuf],
    option: &str,
) -> Result<Vec<(usize, &'v T)>, Failure> {
    let mut seen = vec![false; files.len()];
    let mut out = Vec::new();
    for (at, v) in positions.into_iter().zip(values) {
        let i = shots.iter().rposition(|&s| s < at).ok_or_else(|| {
            Failure::usage(format!(
                "{option} has no effect here: it applies to the --screenshot given before it, and there is none; put it after its --screenshot FILE.png"
            ))
        })?;
        if std::mem::replace(&mut seen[i], true) {
            return Err(Failure::usage(format!(
                "{option} is given twice for --screenshot {}",
                files[i].display()
            )));
        }
        out.push((i, v));
    }
    Ok(out)
}

pub fn run(catalog: &Catalog, args: BootArgs, m: Option<&ArgMatches>) -> Result<(), Failure> {
    let profile = boot_board(catalog, &args)?;
    let emu = boardsmith::boot::select_emulator(&profile, args.emulator.as_deref())?;
    if let Some(m) = m {
        refuse_missing_devices(m, &profile, emu)?;
    }
    let req = request(&args, m)?;
    let (json, quiet) = (args.watch.json, args.watch.quiet);
    let mut on = |e: BootEvent<'_>| show_event(e, &req, quiet, json);
    install_signals(boardsmith::signals::OnStop::Poll)?;
    match boot(&profile, &req, &mut on) {
        Ok(report) => {
            if json {
                let v = serde_json::json!({ "result": "booted", "report": report });
                println!("{v:#}");
            } else if let Some(m) = &report.matched {
                eprintln!(
                    "boardsmith: {} booted to /{}/ in {:.1} s: {m}",
                    report.image.display(),
                    args.watch.expect,
                    report.seconds
                );
            }
            Ok(())
        }
        Err(e) => {
            if json && let BootError::Failed(f) = &e {
                let v = serde_json::json!({ "result": "failed", "failure": f });
                println!("{v:#}");
            }
            Err(e.into())
        }
    }
}

/// What the chosen emulator cannot do is refused as a whole options struct (clap's own list).
fn refuse_missing_devices(
    m: &ArgMatches,
    profile: &Profile,
    emu: &Emulator,
) -> Result<(), Failure> {
    if emu.display.is_none() {
        let why = format!(
            "emulator `{}` of board `{}` has no display device (QEMU's {} machine shows no screen){}",
            emu.label(),
            profile.name,
            emu.machine,
            match profile.emulators.iter().find(|e| e.display.is_some()) {
                Some(e) => format!("; --emulator {} has one", e.label()),
                None => String::new(),
            }
        );
        refuse_given(m, &arguments_of::<ScreenshotOptions>(), &why)?;
        refuse_given(m, &arguments_of::<ScreenOptions>(), &why)?;
    }
    if emu.network.is_none() {
        refuse_given(
            m,
            &arguments_of::<NetOptions>(),
            &format!(
                "emulator `{}` of board `{}` has no network device (emulator.network)",
                emu.label(),
                profile.name
            ),
        )?;
    }
    Ok(())
}

/// The boot request from the command line: pattern, timeout, screen, forwards and screenshots checked.
fn request(args: &BootArgs, m: Option<&ArgMatches>) -> Result<BootRequest, Failure> {
    let w = &args.watch;
    let expect =
        regex::Regex::new(&w.expect).map_err(|e| Failure::usage(format!("--expect: {e}")))?;
    if !(w.timeout.is_finite() && w.timeout > 0.0 && w.timeout < 1e7) {
        return Err(Failure::usage(format!(
            "--timeout: {} is not a positive number of seconds",
            w.timeout
        )));
    }
    let forwards = args
        .net
        .forwards
        .iter()
        .map(|f| {
            f.parse()
                .map_err(|e| Failure::usage(format!("--forward: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(BootRequest {
        log: args.log.clone(),
        interactive: args.interactive,
        emulator: args.emulator.clone(),
        screenshots: screenshot_specs(m, &w.screenshots)?,
        forwards,
        screen: screen(&args.screen)?,
        ..BootRequest::new(
            args.image.clone(),
            expect,
            std::time::Duration::from_secs_f64(w.timeout),
        )
    })
}

/// Where the emulated screen goes: a window (in a graphical session), VNC, or nowhere.
fn screen(o: &ScreenOptions) -> Result<Screen, Failure> {
    Ok(match (&o.display, &o.vnc) {
        (Some(ui), _) => {
            if std::env::var_os("DISPLAY").is_none()
                && std::env::var_os("WAYLAND_DISPLAY").is_none()
            {
                return Err(Failure::usage(
                    "--display needs a graphical session (neither DISPLAY nor WAYLAND_DISPLAY is set); use --vnc :N and a VNC viewer instead",
                ));
            }
            Screen::Window(ui.clone())
        }
        (None, Some(v)) => Screen::Vnc(
            v.parse()
                .map_err(|e| Failure::usage(format!("--vnc: {e}")))?,
        ),
        (None, None) => Screen::Hidden,
    })
}

/// The boot's events on the terminal: the console on stdout (stderr with --json, nowhere with
/// --quiet), what boardsmith does on stderr.
fn show_event(e: BootEvent<'_>, req: &BootRequest, quiet: bool, json: bool) {
    match e {
        BootEvent::Starting { command } => {
            if !quiet {
                eprintln!("boardsmith: {}", command.join(" "));
            }
            if req.interactive {
                eprintln!(
                    "boardsmith: console handed over; Ctrl-A x quits QEMU, Ctrl-A c switches to its monitor"
                );
            }
            for f in &req.forwards {
                eprintln!(
                    "boardsmith: forwarding {}:{} on this machine to port {} of the board",
                    f.addr, f.host_port, f.guest_port
                );
            }
            if let Screen::Vnc(v) = &req.screen {
                eprintln!(
                    "boardsmith: the screen is served over VNC on {}:{} (display {v})",
                    v.addr,
                    v.port()
                );
            }
        }
        BootEvent::Padding { to } => {
            if !quiet {
                eprintln!(
                    "boardsmith: the emulated SD card must be a power of two: booting a temporary copy padded to {}",
                    Human(to)
                );
            }
        }
        BootEvent::DirectBoot { cmdline } => {
            if !quiet {
                eprintln!(
                    "boardsmith: starting the kernel and initrd of the image's extlinux.conf with QEMU's device tree: {cmdline}"
                );
            }
        }
        BootEvent::Screenshot(s) => {
            eprintln!(
                "boardsmith: screenshot {} ({}x{}) after {:.1} s",
                s.file.display(),
                s.width,
                s.height,
                s.seconds
            );
        }
        BootEvent::KeepRunning { .. } => {
            eprintln!(
                "boardsmith: the board keeps running for you; end it by closing QEMU's window, powering the board off, or Ctrl-C"
            );
        }
        BootEvent::Console(line) => {
            if !quiet {
                // A closed stdout (`| head`) must not stop the boot, so write errors are ignored.
                if json {
                    let _ = writeln!(std::io::stderr().lock(), "{line}");
                } else {
                    let _ = writeln!(std::io::stdout().lock(), "{line}");
                }
            }
        }
        BootEvent::Emulator(line) => {
            let _ = writeln!(std::io::stderr().lock(), "qemu: {line}");
        }
    }
}
