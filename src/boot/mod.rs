//! `boardsmith boot`: start the board's emulator (the profile's `[emulator]` section) on a built image,
//! watch the serial console for a pattern, and name the stage that failed when it does not appear.
//!
//! The image is never modified (see [`disk`]); QEMU never outlives the boot (see [`qemu`]); the console
//! is streamed to the caller and to an optional log file as it arrives.

pub mod console;
pub mod disk;
pub mod qemu;

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use regex::Regex;
use serde::Serialize;

use crate::profile::Profile;
use crate::signals;
use console::{Sanitizer, Stage, Verdict, Watcher};
use disk::Disk;
use qemu::{ConsoleMode, Qemu};

/// The default `--expect`: a getty login prompt such as `debian login: `.
pub const DEFAULT_EXPECT: &str = r"\S+ login:\s*$";

/// Console lines kept for a failure report.
const LAST_LINES: usize = 25;

/// What to boot and what to wait for.
#[derive(Debug, Clone)]
pub struct BootRequest {
    pub image: PathBuf,
    /// Matched against each console line (and the unfinished line, for prompts).
    pub expect: Regex,
    pub timeout: Duration,
    /// Receives the console as text.
    pub log: Option<PathBuf>,
    /// Hand the console to the user instead of watching it.
    pub interactive: bool,
}

/// Progress for the front end.
#[derive(Debug)]
pub enum BootEvent<'a> {
    /// QEMU is being started with this command.
    Starting { command: &'a [String] },
    /// The image is being copied, padded to this size, because the machine needs that disk size.
    Padding { to: u64 },
    /// One console line.
    Console(&'a str),
    /// One line QEMU printed on its stderr.
    Emulator(&'a str),
}

#[derive(Debug, Clone, Serialize)]
pub struct BootReport {
    pub board: String,
    pub image: PathBuf,
    /// The console line that matched (None for interactive sessions).
    pub matched: Option<String>,
    /// Seconds from starting QEMU to the match (or to the end of the interactive session).
    pub seconds: f64,
    pub command: Vec<String>,
}

/// A boot that did not reach the expected output.
#[derive(Debug, Clone, Serialize)]
pub struct BootFailure {
    pub image: PathBuf,
    #[serde(serialize_with = "ser_stage")]
    pub stage: Stage,
    pub reason: String,
    /// Why the run ended: the console showed the failure, the timeout passed, or QEMU exited.
    pub ended_by: Ended,
    pub seconds: f64,
    pub last_lines: Vec<String>,
    pub emulator_stderr: Vec<String>,
    pub command: Vec<String>,
}

fn ser_stage<S: serde::Serializer>(s: &Stage, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.id())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ended {
    Console,
    Timeout,
    EmulatorExit,
}

impl fmt::Display for BootFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.ended_by {
            Ended::Console => "",
            Ended::Timeout => " (timeout)",
            Ended::EmulatorExit => " (QEMU exited)",
        };
        write!(
            f,
            "boot of {} failed after {:.1} s{how}: {}: {}",
            self.image.display(),
            self.seconds,
            self.stage,
            self.reason
        )?;
        if !self.emulator_stderr.is_empty() {
            write!(f, "\nQEMU said:")?;
            for l in &self.emulator_stderr {
                write!(f, "\n  {l}")?;
            }
        }
        if self.last_lines.iter().all(|l| l.trim().is_empty()) {
            write!(f, "\nthe serial console printed nothing")?;
        } else {
            write!(f, "\nlast console lines:")?;
            for l in &self.last_lines {
                write!(f, "\n  | {l}")?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(
        "board `{board}` has no [emulator] section: boardsmith does not know how to boot it (add one: system, machine, memory, drive)"
    )]
    NoEmulator { board: String },
    #[error("image {path}: {source}")]
    Image {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error(
        "emulator firmware {path} (emulator.firmware) is missing; install the package that ships it (u-boot-qemu) with scripts/install-deps.sh"
    )]
    Firmware { path: PathBuf },
    #[error("preparing a padded copy of the image in {dir}: {source}")]
    Pad {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("log file {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start {program}: {source}; install QEMU (scripts/install-deps.sh)")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Failed(Box<BootFailure>),
    #[error("interrupted by {} after {seconds:.1} s; QEMU was stopped", signals::name(*signal))]
    Interrupted { signal: i32, seconds: f64 },
}

impl BootError {
    /// True when the user's input (profile, image path, options) is at fault.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            BootError::NoEmulator { .. } | BootError::Image { .. } | BootError::NotAFile { .. }
        )
    }
}

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

/// Boots `req.image` with the board's emulator. Returns when the expected pattern appears (Ok), the
/// console shows a failure or the timeout passes ([`BootError::Failed`]), or a stop signal arrives
/// ([`BootError::Interrupted`]: seen when the caller installed `signals::OnStop::Poll`); QEMU has been
/// ended by then in every case.
///
/// Call from the thread that lives as long as the boot (the main thread): QEMU's parent-death signal
/// fires when the thread that started it exits.
pub fn boot(
    profile: &Profile,
    req: &BootRequest,
    on: &mut dyn FnMut(BootEvent<'_>),
) -> Result<BootReport, BootError> {
    let emu = profile
        .emulator
        .as_ref()
        .ok_or_else(|| BootError::NoEmulator {
            board: profile.name.clone(),
        })?;
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
    if req.interactive {
        return interactive(profile, req, emu, &disk, on);
    }

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
    let argv = qemu::command_line(emu, &disk, &ConsoleMode::Watched);
    (sinks.on)(BootEvent::Starting { command: &argv });
    sinks.log_line(&format!("boardsmith: {}", argv.join(" ")))?;

    let started = Instant::now();
    let mut vm = Qemu::spawn(&argv, &disk, false).map_err(|source| BootError::Spawn {
        program: argv[0].clone(),
        source,
    })?;
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

    let has_spl = profile.bootloader.is_some();
    let mut watcher = Watcher::new(req.expect.clone(), has_spl, LAST_LINES);
    let mut text = Sanitizer::default();
    let mut err_text = Sanitizer::default();
    let mut emulator_stderr: Vec<String> = Vec::new();
    let deadline = started + req.timeout;
    let mut lines = Vec::new();

    let outcome: Result<String, (Ended, Stage, String)> = 'watch: loop {
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
        let now = Instant::now();
        if now >= deadline {
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
        let wait = (deadline - now).min(Duration::from_millis(100));
        match rx.recv_timeout(wait) {
            Ok(Chunk::Out(bytes)) => {
                text.feed(&bytes, &mut lines);
                for l in lines.drain(..) {
                    (sinks.on)(BootEvent::Console(&l));
                    sinks.log_line(&l)?;
                    match watcher.line(&l) {
                        Verdict::Continue => {}
                        Verdict::Matched(m) => break 'watch Ok(m),
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
                let status = status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "still running".into());
                let (stage, why) = if watcher.any_output() {
                    watcher.stalled()
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
                // The console is idle: an unfinished line is a prompt (`login: `, U-Boot's `=> `), not a
                // line still arriving, so it is checked now.
                match watcher.partial(&text.partial()) {
                    Verdict::Continue => {}
                    Verdict::Matched(m) => break 'watch Ok(m),
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
    match outcome {
        Ok(matched) => {
            sinks.log_line(&format!(
                "boardsmith: matched /{}/ after {seconds:.1} s",
                req.expect
            ))?;
            Ok(BootReport {
                board: profile.name.clone(),
                image: req.image.clone(),
                matched: Some(matched),
                seconds,
                command: argv,
            })
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
fn interactive(
    profile: &Profile,
    req: &BootRequest,
    emu: &crate::profile::Emulator,
    disk: &Disk,
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
    let argv = qemu::command_line(emu, disk, &ConsoleMode::Interactive { log });
    on(BootEvent::Starting { command: &argv });
    let started = Instant::now();
    let mut vm = Qemu::spawn(&argv, disk, true).map_err(|source| BootError::Spawn {
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
