//! A boot running: QEMU started, its console and stderr pumped into the watcher, screenshots taken
//! when due, until the pattern, a failure, the timeout or a stop signal; or the terminal handed over
//! (`--interactive`).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::console::{Sanitizer, Stage, Verdict, Watcher};
use super::disk::Disk;
use super::qemu::{self, Attachments, ConsoleMode, Qemu};
use super::qmp::Qmp;
use super::{
    BootError, BootEvent, BootFailure, BootReport, BootRequest, Ended, LAST_LINES, Screen,
    Screenshot, ScreenshotSpec, check_attachments, direct, screen, select_emulator,
};
use crate::profile::{Emulator, Profile};
use crate::signals;

enum Chunk {
    Out(Vec<u8>),
    Err(Vec<u8>),
    OutClosed,
}

fn pump(mut r: impl Read + Send + 'static, tx: mpsc::Sender<Chunk>, stdout: bool) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let c = buf[..n].to_vec();
                    let c = if stdout { Chunk::Out(c) } else { Chunk::Err(c) };
                    if tx.send(c).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        if stdout {
            let _ = tx.send(Chunk::OutClosed);
        }
    });
}

/// The console's sinks: the caller and the log file. Log write errors end the boot (a CI log that
/// silently stops is worse than a failed run); the caller's sink may go away (a closed pipe) harmlessly.
struct Sinks<'a> {
    on: &'a mut dyn FnMut(BootEvent<'_>),
    log: Option<(PathBuf, io::BufWriter<File>)>,
}

impl Sinks<'_> {
    fn log_line(&mut self, line: &str) -> Result<(), BootError> {
        if let Some((path, w)) = &mut self.log {
            writeln!(w, "{line}")
                .and_then(|_| w.flush())
                .map_err(|source| BootError::Log {
                    path: path.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

/// A screenshot waiting for its trigger or its time.
struct PendingShot {
    spec: ScreenshotSpec,
    /// When it is due, and the console line that triggered it.
    due: Option<(Instant, String)>,
    taken: bool,
}

/// Boots `req.image` with the board's emulator. Returns when the expected pattern appears and every
/// screenshot is taken (Ok; with a shown screen, only once QEMU exits), the console shows a failure or
/// the timeout passes ([`BootError::Failed`]), or a stop signal arrives ([`BootError::Interrupted`]);
/// QEMU has been ended by then in every case.
///
/// Call from the thread that lives as long as the boot (the main thread): QEMU's parent-death signal
/// fires when the thread that started it exits.
pub fn boot(
    profile: &Profile,
    req: &BootRequest,
    on: &mut dyn FnMut(BootEvent<'_>),
) -> Result<BootReport, BootError> {
    let emu = select_emulator(profile, req.emulator.as_deref())?;
    check_attachments(profile, emu, req)?;
    let meta = std::fs::metadata(&req.image).map_err(|source| BootError::Image {
        path: req.image.clone(),
        source,
    })?;
    if !meta.is_file() {
        return Err(BootError::NotAFile {
            path: req.image.clone(),
        });
    }
    if let Some(fw) = &emu.firmware
        && !Path::new(fw).is_file()
    {
        return Err(BootError::Firmware {
            path: PathBuf::from(fw),
        });
    }
    let kernel = match &emu.direct_boot {
        None => None,
        Some(d) => {
            let k = direct::prepare(&req.image, profile, d)?;
            on(BootEvent::DirectBoot {
                cmdline: &k.cmdline,
            });
            Some(k)
        }
    };
    if emu.size_power_of_two && !meta.len().is_power_of_two() {
        on(BootEvent::Padding {
            to: meta.len().checked_next_power_of_two().unwrap_or(0),
        });
    }
    let disk = Disk::prepare(&req.image, meta.len(), emu.size_power_of_two).map_err(|source| {
        BootError::Pad {
            dir: std::env::temp_dir(),
            source,
        }
    })?;
    if let Some(sig) = signals::pending() {
        return Err(BootError::Interrupted {
            signal: sig,
            seconds: 0.0,
        });
    }
    let mut keep_fds: Vec<i32> = disk.inherited_fd().into_iter().collect();
    if let Some(k) = &kernel {
        keep_fds.extend(k.fds());
    }
    if req.interactive {
        let att = Attachments {
            kernel: kernel.as_ref(),
            forwards: &req.forwards,
            screen: Some(&req.screen),
            qmp: None,
        };
        return interactive(profile, req, emu, &disk, &att, &keep_fds, on);
    }
    let mut qmp = None;
    let qemu_end = if req.screenshots.is_empty() {
        None
    } else {
        let (ours, theirs) = Qmp::pair().map_err(|source| BootError::Io {
            context: "creating the QMP socket pair",
            source,
        })?;
        qmp = Some(ours);
        keep_fds.push(theirs.fd());
        Some(theirs)
    };
    let att = Attachments {
        kernel: kernel.as_ref(),
        forwards: &req.forwards,
        screen: Some(&req.screen),
        qmp: qemu_end.as_ref(),
    };

    let log = match &req.log {
        None => None,
        Some(p) => Some((
            p.clone(),
            io::BufWriter::new(File::create(p).map_err(|source| BootError::Log {
                path: p.clone(),
                source,
            })?),
        )),
    };
    let mut sinks = Sinks { on, log };
    let argv = qemu::command_line(emu, &disk, &ConsoleMode::Watched, &att);
    (sinks.on)(BootEvent::Starting { command: &argv });
    sinks.log_line(&format!("boardsmith: {}", argv.join(" ")))?;

    let started = Instant::now();
    let mut vm = Qemu::spawn(&argv, &keep_fds, false).map_err(|source| BootError::Spawn {
        program: argv[0].clone(),
        source,
    })?;
    // QEMU has its copy of its QMP end; ours would keep the socket open if QEMU died.
    drop(qemu_end);
    let (tx, rx) = mpsc::channel();
    let child = vm.child();
    // Kept open (never written) so QEMU's stdio backend does not see end-of-file.
    let _stdin = child.stdin.take();
    let out = child.stdout.take();
    let err = child.stderr.take();
    if let (Some(out), Some(err)) = (out, err) {
        pump(out, tx.clone(), true);
        pump(err, tx, false);
    }

    let has_spl = profile.bootloader.is_some() && kernel.is_none();
    let mut watcher = Watcher::new(req.expect.clone(), has_spl, LAST_LINES);
    if kernel.is_some() {
        watcher = watcher.kernel_first();
    }
    let mut text = Sanitizer::default();
    let mut err_text = Sanitizer::default();
    let mut emulator_stderr: Vec<String> = Vec::new();
    let deadline = started + req.timeout;
    let mut lines = Vec::new();
    let mut shots: Vec<PendingShot> = req
        .screenshots
        .iter()
        .map(|spec| PendingShot {
            spec: spec.clone(),
            due: None,
            taken: false,
        })
        .collect();
    let mut taken: Vec<Screenshot> = Vec::new();
    let mut matched: Option<(String, f64)> = None;
    let keep_running = req.screen != Screen::Hidden;
    let mut announced = false;

    // Console lines that trigger screenshots, and the match.
    let trigger = |line: &str, shots: &mut Vec<PendingShot>, is_match: bool| {
        let now = Instant::now();
        for s in shots.iter_mut().filter(|s| s.due.is_none()) {
            let fires = match &s.spec.after {
                Some(re) => re.is_match(line),
                None => is_match,
            };
            if fires {
                s.due = Some((now + s.spec.delay, line.to_string()));
            }
        }
    };

    let outcome: Result<(), (Ended, Stage, String)> = 'watch: loop {
        if let Some(sig) = signals::pending() {
            vm.end();
            flush_partial(&mut text, &mut sinks)?;
            let seconds = started.elapsed().as_secs_f64();
            sinks.log_line(&format!(
                "boardsmith: interrupted by {} after {seconds:.1} s",
                signals::name(sig)
            ))?;
            return Err(BootError::Interrupted {
                signal: sig,
                seconds,
            });
        }
        // Screenshots whose time has come.
        let now = Instant::now();
        for s in shots.iter_mut().filter(|s| !s.taken) {
            let Some((due, line)) = &s.due else { continue };
            if *due > now {
                continue;
            }
            let Some(q) = qmp.as_mut() else { continue };
            let (width, height) = screen::take(q, &s.spec.file)?;
            s.taken = true;
            let shot = Screenshot {
                file: s.spec.file.clone(),
                width,
                height,
                seconds: started.elapsed().as_secs_f64(),
                trigger: line.clone(),
            };
            sinks.log_line(&format!(
                "boardsmith: screenshot {} ({width}x{height}) after {:.1} s",
                shot.file.display(),
                shot.seconds
            ))?;
            (sinks.on)(BootEvent::Screenshot(&shot));
            taken.push(shot);
        }
        let all_taken = shots.iter().all(|s| s.taken);
        if matched.is_some() && all_taken {
            if !keep_running {
                break 'watch Ok(());
            }
            if !announced {
                announced = true;
                (sinks.on)(BootEvent::KeepRunning {
                    screen: &req.screen,
                });
            }
        }
        let now = Instant::now();
        let waiting_for_person = matched.is_some() && all_taken && keep_running;
        if now >= deadline && !waiting_for_person {
            let reason = match &matched {
                None => {
                    let (stage, why) = watcher.stalled();
                    break 'watch Err((
                        Ended::Timeout,
                        stage,
                        format!(
                            "/{}/ did not appear within {} s; {why}",
                            req.expect,
                            req.timeout.as_secs_f64()
                        ),
                    ));
                }
                Some(_) => shots
                    .iter()
                    .filter(|s| !s.taken)
                    .map(|s| match (&s.spec.after, &s.due) {
                        (Some(re), None) => format!(
                            "screenshot {}: /{re}/ did not appear",
                            s.spec.file.display()
                        ),
                        _ => format!("screenshot {}: not due yet", s.spec.file.display()),
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            };
            break 'watch Err((
                Ended::Timeout,
                Stage::Userspace,
                format!(
                    "/{}/ appeared, but the timeout of {} s passed first: {reason}",
                    req.expect,
                    req.timeout.as_secs_f64()
                ),
            ));
        }
        let mut wait = Duration::from_millis(100);
        if !waiting_for_person {
            wait = wait.min(deadline - now);
        }
        for s in shots.iter().filter(|s| !s.taken) {
            if let Some((due, _)) = &s.due {
                wait = wait.min(due.saturating_duration_since(now));
            }
        }
        match rx.recv_timeout(wait) {
            Ok(Chunk::Out(bytes)) => {
                text.feed(&bytes, &mut lines);
                for l in lines.drain(..) {
                    (sinks.on)(BootEvent::Console(&l));
                    sinks.log_line(&l)?;
                    if matched.is_some() {
                        watcher.record(&l);
                        trigger(&l, &mut shots, false);
                        continue;
                    }
                    match watcher.line(&l) {
                        Verdict::Continue => trigger(&l, &mut shots, false),
                        Verdict::Matched(m) => {
                            trigger(&m, &mut shots, true);
                            matched = Some((m, started.elapsed().as_secs_f64()));
                        }
                        Verdict::Failed(stage, why) => {
                            break 'watch Err((Ended::Console, stage, why));
                        }
                    }
                }
            }
            Ok(Chunk::Err(bytes)) => {
                err_text.feed(&bytes, &mut lines);
                for l in lines.drain(..) {
                    (sinks.on)(BootEvent::Emulator(&l));
                    sinks.log_line(&format!("qemu: {l}"))?;
                    emulator_stderr.push(l);
                }
            }
            Ok(Chunk::OutClosed) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                // QEMU closed its stdout: it is exiting. Collect what it said on stderr.
                let status = vm.wait_for(Duration::from_secs(5)).ok().flatten();
                while let Ok(c) = rx.recv_timeout(Duration::from_millis(200)) {
                    if let Chunk::Err(bytes) = c {
                        err_text.feed(&bytes, &mut lines);
                    }
                }
                lines.extend(err_text.take_partial());
                for l in lines.drain(..) {
                    (sinks.on)(BootEvent::Emulator(&l));
                    sinks.log_line(&format!("qemu: {l}"))?;
                    emulator_stderr.push(l);
                }
                if waiting_for_person && status.is_some_and(|s| s.success()) {
                    // The person closed the window, or the guest powered off.
                    break 'watch Ok(());
                }
                let status = status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "still running".into());
                let (stage, why) = if matched.is_some() {
                    (
                        Stage::Emulator,
                        "QEMU exited after the pattern appeared".into(),
                    )
                } else if watcher.any_output() {
                    watcher.stalled()
                } else if emulator_stderr
                    .iter()
                    .any(|l| l.contains("Could not set up host forwarding rule"))
                {
                    (
                        Stage::Emulator,
                        "QEMU could not listen on a --forward host port (is it in use? pick another HOST_PORT)".into(),
                    )
                } else if !emulator_stderr.is_empty() {
                    (
                        Stage::Emulator,
                        "QEMU exited before the guest printed anything".into(),
                    )
                } else {
                    watcher.stalled()
                };
                break 'watch Err((
                    Ended::EmulatorExit,
                    stage,
                    format!("{why} (QEMU: {status})"),
                ));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if matched.is_some() {
                    continue;
                }
                // The console is idle: an unfinished line is a prompt (`login: `, U-Boot's `=> `), not a
                // line still arriving, so it is checked now.
                let partial = text.partial().into_owned();
                match watcher.partial(&partial) {
                    Verdict::Continue => {}
                    Verdict::Matched(m) => {
                        trigger(&m, &mut shots, true);
                        matched = Some((m, started.elapsed().as_secs_f64()));
                    }
                    Verdict::Failed(stage, why) => break 'watch Err((Ended::Console, stage, why)),
                }
            }
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    vm.end();
    if let Some(p) = flush_partial(&mut text, &mut sinks)? {
        watcher.record(&p);
    }
    let report = |matched: Option<String>, seconds: f64, argv: Vec<String>, taken| BootReport {
        board: profile.name.clone(),
        image: req.image.clone(),
        matched,
        seconds,
        command: argv,
        emulator: emu.label().to_string(),
        screenshots: taken,
        forwards: req.forwards.clone(),
    };
    match outcome {
        Ok(()) => {
            let (m, at) = matched.unwrap_or_default();
            sinks.log_line(&format!(
                "boardsmith: matched /{}/ after {at:.1} s",
                req.expect
            ))?;
            Ok(report(Some(m), at, argv, taken))
        }
        Err((ended_by, stage, reason)) => {
            sinks.log_line(&format!(
                "boardsmith: failed after {seconds:.1} s: {stage}: {reason}"
            ))?;
            Err(BootError::Failed(Box::new(BootFailure {
                image: req.image.clone(),
                stage,
                reason,
                ended_by,
                seconds,
                last_lines: watcher.last_lines(),
                emulator_stderr,
                command: argv,
            })))
        }
    }
}

/// Emits the unfinished line (a prompt) as a line of its own.
fn flush_partial(text: &mut Sanitizer, sinks: &mut Sinks<'_>) -> Result<Option<String>, BootError> {
    let p = text.take_partial();
    if let Some(p) = &p {
        (sinks.on)(BootEvent::Console(p));
        sinks.log_line(p)?;
    }
    Ok(p)
}

/// The terminal handed to QEMU until it exits (Ctrl-A x) or a stop signal arrives.
#[allow(clippy::too_many_arguments)]
fn interactive(
    profile: &Profile,
    req: &BootRequest,
    emu: &Emulator,
    disk: &Disk,
    att: &Attachments<'_>,
    keep_fds: &[i32],
    on: &mut dyn FnMut(BootEvent<'_>),
) -> Result<BootReport, BootError> {
    let log = match &req.log {
        None => None,
        Some(p) => {
            // QEMU writes the log; make sure it can be created before handing over the terminal.
            File::create(p).map_err(|source| BootError::Log {
                path: p.clone(),
                source,
            })?;
            Some(p.to_string_lossy().into_owned())
        }
    };
    let argv = qemu::command_line(emu, disk, &ConsoleMode::Interactive { log }, att);
    on(BootEvent::Starting { command: &argv });
    let started = Instant::now();
    let mut vm = Qemu::spawn(&argv, keep_fds, true).map_err(|source| BootError::Spawn {
        program: argv[0].clone(),
        source,
    })?;
    let status = loop {
        if let Some(sig) = signals::pending() {
            vm.end();
            return Err(BootError::Interrupted {
                signal: sig,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        match vm.wait_for(Duration::from_millis(100)) {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(source) => {
                return Err(BootError::Io {
                    context: "waiting for QEMU",
                    source,
                });
            }
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    if status.success() {
        Ok(BootReport {
            board: profile.name.clone(),
            image: req.image.clone(),
            matched: None,
            seconds,
            command: argv,
            emulator: emu.label().to_string(),
            screenshots: Vec::new(),
            forwards: req.forwards.clone(),
        })
    } else {
        Err(BootError::Failed(Box::new(BootFailure {
            image: req.image.clone(),
            stage: Stage::Emulator,
            reason: format!("QEMU exited with {status}"),
            ended_by: Ended::EmulatorExit,
            seconds,
            last_lines: Vec::new(),
            emulator_stderr: Vec::new(),
            command: argv,
        })))
    }
}
