//! A boot running: QEMU started, its console and stderr pumped into the watcher, screenshots taken
//! when due, until the pattern, a failure, the timeout or a stop signal; or the terminal handed over
//! (`--interactive`).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ChildStdin;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::console::{Sanitizer, Stage, Verdict, Watcher};
use super::direct::Kernel;
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

/// Why a watch failed: what ended it, the stage the boot had reached, and the reason.
type Failed = (Ended, Stage, String);

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
    let meta = check_files(req, emu)?;
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
    // Declared after `disk` and `kernel`, the watch (and QEMU with it) ends before their files close.
    let mut watch = start(profile, req, emu, &disk, kernel.as_ref(), keep_fds, on)?;
    let outcome = watch.run()?;
    watch.finish(outcome, profile, emu)
}

/// The image is a regular file and the emulator's firmware exists: checked before anything is prepared.
fn check_files(req: &BootRequest, emu: &Emulator) -> Result<std::fs::Metadata, BootError> {
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
    Ok(meta)
}

/// Starts QEMU with its console watched: the QMP socket when screenshots are wanted, the log opened,
/// the command announced, stdout and stderr pumped into one channel.
fn start<'a>(
    profile: &Profile,
    req: &'a BootRequest,
    emu: &Emulator,
    disk: &Disk,
    kernel: Option<&Kernel>,
    mut keep_fds: Vec<i32>,
    on: &'a mut dyn FnMut(BootEvent<'_>),
) -> Result<Watch<'a>, BootError> {
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
        kernel,
        forwards: &req.forwards,
        screen: Some(&req.screen),
        qmp: qemu_end.as_ref(),
    };

    let mut sinks = Sinks {
        on,
        log: open_log(req)?,
    };
    let argv = qemu::command_line(emu, disk, &ConsoleMode::Watched, &att);
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
    let stdin = child.stdin.take();
    let out = child.stdout.take();
    let err = child.stderr.take();
    if let (Some(out), Some(err)) = (out, err) {
        pump(out, tx.clone(), true);
        pump(err, tx, false);
    }

    let shots = req
        .screenshots
        .iter()
        .map(|spec| PendingShot {
            spec: spec.clone(),
            due: None,
            taken: false,
        })
        .collect();
    Ok(Watch {
        req,
        argv,
        rx,
        _stdin: stdin,
        vm,
        sinks,
        qmp,
        started,
        deadline: started + req.timeout,
        watcher: watcher(profile, req, kernel.is_some()),
        text: Sanitizer::default(),
        err_text: Sanitizer::default(),
        emulator_stderr: Vec::new(),
        shots,
        taken: Vec::new(),
        matched: None,
        keep_running: req.screen != Screen::Hidden,
        announced: false,
    })
}

/// The log file, created before QEMU starts so that a bad path fails the boot at once.
fn open_log(req: &BootRequest) -> Result<Option<(PathBuf, io::BufWriter<File>)>, BootError> {
    let Some(p) = &req.log else { return Ok(None) };
    let file = File::create(p).map_err(|source| BootError::Log {
        path: p.clone(),
        source,
    })?;
    Ok(Some((p.clone(), io::BufWriter::new(file))))
}

/// The console watcher: U-Boot's SPL is expected only when the bootloader loads the kernel; a direct
/// kernel boot starts at the kernel.
fn watcher(profile: &Profile, req: &BootRequest, direct_boot: bool) -> Watcher {
    let has_spl = profile.bootloader.is_some() && !direct_boot;
    let watcher = Watcher::new(req.expect.clone(), has_spl, LAST_LINES);
    if direct_boot {
        watcher.kernel_first()
    } else {
        watcher
    }
}

/// A watched boot's state, which every arm of the watch loop reads and changes.
struct Watch<'a> {
    req: &'a BootRequest,
    argv: Vec<String>,
    rx: mpsc::Receiver<Chunk>,
    /// Kept open (never written) so QEMU's stdio backend does not see end-of-file.
    _stdin: Option<ChildStdin>,
    vm: Qemu,
    sinks: Sinks<'a>,
    qmp: Option<Qmp>,
    started: Instant,
    deadline: Instant,
    watcher: Watcher,
    /// The console's text, and QEMU's stderr.
    text: Sanitizer,
    err_text: Sanitizer,
    emulator_stderr: Vec<String>,
    shots: Vec<PendingShot>,
    taken: Vec<Screenshot>,
    /// The matching line, and when it appeared.
    matched: Option<(String, f64)>,
    /// A shown screen keeps the board running for a person after the match.
    keep_running: bool,
    announced: bool,
}

impl Watch<'_> {
    /// The watch loop: due screenshots taken, then the next console chunk, stderr chunk, QEMU's exit
    /// or an idle tick handled, until the match (with every screenshot), a failure or the deadline.
    /// A stop signal or a log/screenshot error returns as `Err`.
    fn run(&mut self) -> Result<Result<(), Failed>, BootError> {
        loop {
            self.stop_if_signalled()?;
            self.take_due_screenshots()?;
            let done = self.matched.is_some() && self.shots.iter().all(|s| s.taken);
            if done {
                if !self.keep_running {
                    return Ok(Ok(()));
                }
                if !self.announced {
                    self.announced = true;
                    (self.sinks.on)(BootEvent::KeepRunning {
                        screen: &self.req.screen,
                    });
                }
            }
            let now = Instant::now();
            let waiting_for_person = done && self.keep_running;
            if now >= self.deadline && !waiting_for_person {
                return Ok(Err(self.timed_out()));
            }
            let failed = match self.rx.recv_timeout(self.wait(now, waiting_for_person)) {
                Ok(Chunk::Out(bytes)) => self.on_console(&bytes)?,
                Ok(Chunk::Err(bytes)) => {
                    let mut lines = Vec::new();
                    self.err_text.feed(&bytes, &mut lines);
                    self.on_stderr_lines(lines)?;
                    None
                }
                Ok(Chunk::OutClosed) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return self.on_exit(waiting_for_person);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => self.on_idle(),
            };
            if let Some(f) = failed {
                return Ok(Err(f));
            }
        }
    }

    /// Ends QEMU and returns [`BootError::Interrupted`] if a stop signal is pending.
    fn stop_if_signalled(&mut self) -> Result<(), BootError> {
        let Some(sig) = signals::pending() else {
            return Ok(());
        };
        self.vm.end();
        flush_partial(&mut self.text, &mut self.sinks)?;
        let seconds = self.started.elapsed().as_secs_f64();
        self.sinks.log_line(&format!(
            "boardsmith: interrupted by {} after {seconds:.1} s",
            signals::name(sig)
        ))?;
        Err(BootError::Interrupted {
            signal: sig,
            seconds,
        })
    }

    /// Takes the screenshots whose time has come.
    fn take_due_screenshots(&mut self) -> Result<(), BootError> {
        let now = Instant::now();
        for s in self.shots.iter_mut().filter(|s| !s.taken) {
            let Some((due, line)) = &s.due else { continue };
            if *due > now {
                continue;
            }
            let Some(q) = self.qmp.as_mut() else { continue };
            let (width, height) = screen::take(q, &s.spec.file)?;
            s.taken = true;
            let shot = Screenshot {
                file: s.spec.file.clone(),
                width,
                height,
                seconds: self.started.elapsed().as_secs_f64(),
                trigger: line.clone(),
            };
            self.sinks.log_line(&format!(
                "boardsmith: screenshot {} ({width}x{height}) after {:.1} s",
                shot.file.display(),
                shot.seconds
            ))?;
            (self.sinks.on)(BootEvent::Screenshot(&shot));
            self.taken.push(shot);
        }
        Ok(())
    }

    /// How long to wait for output: a tick (so signals are seen), no later than the deadline (unless
    /// the board now runs for a person) nor the next screenshot.
    fn wait(&self, now: Instant, waiting_for_person: bool) -> Duration {
        let mut wait = Duration::from_millis(100);
        if !waiting_for_person {
            wait = wait.min(self.deadline - now);
        }
        for s in self.shots.iter().filter(|s| !s.taken) {
            if let Some((due, _)) = &s.due {
                wait = wait.min(due.saturating_duration_since(now));
            }
        }
        wait
    }

    /// The deadline passed: the pattern did not appear, or a screenshot was still missing.
    fn timed_out(&self) -> Failed {
        let expect = &self.req.expect;
        let limit = self.req.timeout.as_secs_f64();
        if self.matched.is_none() {
            let (stage, why) = self.watcher.stalled();
            return (
                Ended::Timeout,
                stage,
                format!("/{expect}/ did not appear within {limit} s; {why}"),
            );
        }
        let reason = self
            .shots
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
            .join("; ");
        (
            Ended::Timeout,
            Stage::Userspace,
            format!("/{expect}/ appeared, but the timeout of {limit} s passed first: {reason}"),
        )
    }

    /// Console output: each whole line shown, logged, and judged by the watcher until the match
    /// (afterwards only recorded); every line may trigger a screenshot.
    fn on_console(&mut self, bytes: &[u8]) -> Result<Option<Failed>, BootError> {
        let mut lines = Vec::new();
        self.text.feed(bytes, &mut lines);
        for l in lines {
            (self.sinks.on)(BootEvent::Console(&l));
            self.sinks.log_line(&l)?;
            if self.matched.is_some() {
                self.watcher.record(&l);
                self.trigger(&l, false);
                continue;
            }
            match self.watcher.line(&l) {
                Verdict::Continue => self.trigger(&l, false),
                Verdict::Matched(m) => self.record_match(m),
                Verdict::Failed(stage, why) => return Ok(Some((Ended::Console, stage, why))),
            }
        }
        Ok(None)
    }

    /// The console is idle: an unfinished line is a prompt (`login: `, U-Boot's `=> `), not a line
    /// still arriving, so it is checked now.
    fn on_idle(&mut self) -> Option<Failed> {
        if self.matched.is_some() {
            return None;
        }
        let partial = self.text.partial().into_owned();
        match self.watcher.partial(&partial) {
            Verdict::Continue => None,
            Verdict::Matched(m) => {
                self.record_match(m);
                None
            }
            Verdict::Failed(stage, why) => Some((Ended::Console, stage, why)),
        }
    }

    /// QEMU's stderr lines: shown, logged, and kept for the failure report.
    fn on_stderr_lines(&mut self, lines: Vec<String>) -> Result<(), BootError> {
        for l in lines {
            (self.sinks.on)(BootEvent::Emulator(&l));
            self.sinks.log_line(&format!("qemu: {l}"))?;
            self.emulator_stderr.push(l);
        }
        Ok(())
    }

    /// QEMU closed its stdout: it is exiting. Collects what it said on stderr; a clean exit while the
    /// board ran for a person (window closed, guest powered off) is success, anything else a failure.
    fn on_exit(&mut self, waiting_for_person: bool) -> Result<Result<(), Failed>, BootError> {
        let status = self.vm.wait_for(Duration::from_secs(5)).ok().flatten();
        let mut lines = Vec::new();
        while let Ok(c) = self.rx.recv_timeout(Duration::from_millis(200)) {
            if let Chunk::Err(bytes) = c {
                self.err_text.feed(&bytes, &mut lines);
            }
        }
        lines.extend(self.err_text.take_partial());
        self.on_stderr_lines(lines)?;
        if waiting_for_person && status.is_some_and(|s| s.success()) {
            return Ok(Ok(()));
        }
        let status = status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "still running".into());
        let (stage, why) = self.exit_cause();
        Ok(Err((
            Ended::EmulatorExit,
            stage,
            format!("{why} (QEMU: {status})"),
        )))
    }

    /// Why QEMU exited early, from the match, the console and its stderr.
    fn exit_cause(&self) -> (Stage, String) {
        if self.matched.is_some() {
            (
                Stage::Emulator,
                "QEMU exited after the pattern appeared".into(),
            )
        } else if self.watcher.any_output() {
            self.watcher.stalled()
        } else if self
            .emulator_stderr
            .iter()
            .any(|l| l.contains("Could not set up host forwarding rule"))
        {
            (
                Stage::Emulator,
                "QEMU could not listen on a --forward host port (is it in use? pick another HOST_PORT)"
                    .into(),
            )
        } else if !self.emulator_stderr.is_empty() {
            (
                Stage::Emulator,
                "QEMU exited before the guest printed anything".into(),
            )
        } else {
            self.watcher.stalled()
        }
    }

    /// The pattern appeared on `line`: screenshots waiting for the match become due.
    fn record_match(&mut self, line: String) {
        self.trigger(&line, true);
        self.matched = Some((line, self.started.elapsed().as_secs_f64()));
    }

    /// Makes due the screenshots `line` triggers: by their own pattern, or (without one) the match.
    fn trigger(&mut self, line: &str, is_match: bool) {
        let now = Instant::now();
        for s in self.shots.iter_mut().filter(|s| s.due.is_none()) {
            let fires = match &s.spec.after {
                Some(re) => re.is_match(line),
                None => is_match,
            };
            if fires {
                s.due = Some((now + s.spec.delay, line.to_string()));
            }
        }
    }

    /// Ends QEMU, emits the unfinished line, and turns the outcome into the report or the failure.
    fn finish(
        mut self,
        outcome: Result<(), Failed>,
        profile: &Profile,
        emu: &Emulator,
    ) -> Result<BootReport, BootError> {
        let seconds = self.started.elapsed().as_secs_f64();
        self.vm.end();
        if let Some(p) = flush_partial(&mut self.text, &mut self.sinks)? {
            self.watcher.record(&p);
        }
        match outcome {
            Ok(()) => {
                let (m, at) = self.matched.take().unwrap_or_default();
                self.sinks.log_line(&format!(
                    "boardsmith: matched /{}/ after {at:.1} s",
                    self.req.expect
                ))?;
                Ok(BootReport {
                    board: profile.name.clone(),
                    image: self.req.image.clone(),
                    matched: Some(m),
                    seconds: at,
                    command: self.argv,
                    emulator: emu.label().to_string(),
                    screenshots: self.taken,
                    forwards: self.req.forwards.clone(),
                })
            }
            Err((ended_by, stage, reason)) => {
                self.sinks.log_line(&format!(
                    "boardsmith: failed after {seconds:.1} s: {stage}: {reason}"
                ))?;
                Err(BootError::Failed(Box::new(BootFailure {
                    image: self.req.image.clone(),
                    stage,
                    reason,
                    ended_by,
                    seconds,
                    last_lines: self.watcher.last_lines(),
                    emulator_stderr: self.emulator_stderr,
                    command: self.argv,
                })))
            }
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
