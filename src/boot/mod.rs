//! `boardsmith boot`: start the board's emulator (the profile's `[emulator]` section) on a built image,
//! watch the serial console for a pattern, and name the stage that failed when it does not appear.
//!
//! The image is never modified (see [`disk`]); QEMU never outlives the boot (see [`qemu`]); the console
//! is streamed to the caller and to an optional log file as it arrives.
//!
//! Here: the request, report and errors, the emulator chosen and what the request attaches checked;
//! the boot itself runs in `run`.

pub mod console;
pub mod direct;
pub mod disk;
pub mod qemu;
pub mod qmp;
mod run;
pub mod screen;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;
use serde::Serialize;

use crate::profile::{Emulator, Profile};
use crate::signals;
use console::Stage;
use direct::DirectBootError;
pub use run::boot;
pub use screen::{Forward, Screen, Screenshot, ScreenshotError, ScreenshotSpec, VncAddr};

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
    /// The emulator setup: None for the profile's `[emulator]`, else an `[emulators.NAME]`.
    pub emulator: Option<String>,
    /// Screenshots to take (the emulator needs a display).
    pub screenshots: Vec<ScreenshotSpec>,
    /// Host ports forwarded to the guest (the emulator needs a network device).
    pub forwards: Vec<Forward>,
    /// How the screen is shown. A shown screen is for a person: the board keeps running after the
    /// pattern appeared, until QEMU exits or boardsmith is stopped.
    pub screen: Screen,
}

impl BootRequest {
    /// A request to boot `image` and wait for `expect`, nothing else attached.
    pub fn new(image: PathBuf, expect: Regex, timeout: Duration) -> BootRequest {
        BootRequest {
            image,
            expect,
            timeout,
            log: None,
            interactive: false,
            emulator: None,
            screenshots: Vec::new(),
            forwards: Vec::new(),
            screen: Screen::Hidden,
        }
    }
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
    /// The kernel was read from the image's boot partition (`direct_boot`), with this command line.
    DirectBoot { cmdline: &'a str },
    /// A screenshot was written.
    Screenshot(&'a Screenshot),
    /// The pattern appeared and the screen is shown: the board keeps running until QEMU exits.
    KeepRunning { screen: &'a Screen },
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
    /// The emulator setup used (`default` or its name).
    pub emulator: String,
    pub screenshots: Vec<Screenshot>,
    pub forwards: Vec<Forward>,
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
    #[error(
        "board `{board}` has no emulator named `{name}`; its emulators: {known} (`default` is its [emulator] section)"
    )]
    NoSuchEmulator {
        board: String,
        name: String,
        known: String,
    },
    #[error(
        "{what} needs a screen, but emulator `{emulator}` of board `{board}` has none (no emulator display device){hint}"
    )]
    NoDisplay {
        what: &'static str,
        board: String,
        emulator: String,
        hint: String,
    },
    #[error(
        "--forward needs a network device, but emulator `{emulator}` of board `{board}` has none (no emulator network)"
    )]
    NoNetwork { board: String, emulator: String },
    #[error(
        "emulator `{emulator}` of board `{board}` starts the kernel of the image's extlinux.conf, but the board's boot.methods does not include \"extlinux\": its images have none; choose another --emulator"
    )]
    NoExtlinux { board: String, emulator: String },
    #[error("--forward: host port {port} is forwarded twice")]
    DuplicateForward { port: u16 },
    #[error("--screenshot: {file} is given twice")]
    DuplicateScreenshot { file: PathBuf },
    #[error(transparent)]
    DirectBoot(#[from] DirectBootError),
    #[error(transparent)]
    Screenshot(#[from] ScreenshotError),
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
            BootError::NoEmulator { .. }
                | BootError::NoSuchEmulator { .. }
                | BootError::NoDisplay { .. }
                | BootError::NoNetwork { .. }
                | BootError::NoExtlinux { .. }
                | BootError::DuplicateForward { .. }
                | BootError::DuplicateScreenshot { .. }
                | BootError::Image { .. }
                | BootError::NotAFile { .. }
        ) || matches!(
            self,
            BootError::DirectBoot(
                DirectBootError::Image { .. }
                    | DirectBootError::File { .. }
                    | DirectBootError::Conf { .. }
            )
        )
    }
}

/// The emulator `name` of `profile` (None or `default`: its `[emulator]` section).
pub fn select_emulator<'p>(
    profile: &'p Profile,
    name: Option<&str>,
) -> Result<&'p Emulator, BootError> {
    match name {
        None | Some("default") => profile.emulator.as_ref().ok_or_else(|| {
            if profile.emulators.is_empty() {
                BootError::NoEmulator {
                    board: profile.name.clone(),
                }
            } else {
                no_such(profile, "default")
            }
        }),
        Some(n) => profile
            .emulators
            .iter()
            .find(|e| e.name.as_deref() == Some(n))
            .ok_or_else(|| no_such(profile, n)),
    }
}

fn no_such(profile: &Profile, name: &str) -> BootError {
    let mut known: Vec<String> = profile
        .emulator
        .iter()
        .chain(&profile.emulators)
        .map(|e| match &e.description {
            Some(d) => format!("{} ({d})", e.label()),
            None => e.label().to_string(),
        })
        .collect();
    if known.is_empty() {
        known.push("none".into());
    }
    BootError::NoSuchEmulator {
        board: profile.name.clone(),
        name: name.to_string(),
        known: known.join(", "),
    }
}

/// Checks what the request attaches against the emulator: a screen needs a display device, a forward
/// a network device; host ports and screenshot files are unique.
pub fn check_attachments(
    profile: &Profile,
    emu: &Emulator,
    req: &BootRequest,
) -> Result<(), BootError> {
    let what = if !req.screenshots.is_empty() {
        Some("--screenshot")
    } else {
        match req.screen {
            Screen::Hidden => None,
            Screen::Window(_) => Some("--display"),
            Screen::Vnc(_) => Some("--vnc"),
        }
    };
    if let Some(what) = what
        && emu.display.is_none()
    {
        let others: Vec<&str> = profile
            .emulator
            .iter()
            .chain(&profile.emulators)
            .filter(|e| e.display.is_some())
            .map(Emulator::label)
            .collect();
        return Err(BootError::NoDisplay {
            what,
            board: profile.name.clone(),
            emulator: emu.label().to_string(),
            hint: match others.first() {
                Some(o) => format!("; --emulator {o} has one"),
                None => String::new(),
            },
        });
    }
    if emu.direct_boot.is_some()
        && !profile
            .boot
            .methods
            .contains(&crate::profile::BootMethod::Extlinux)
    {
        return Err(BootError::NoExtlinux {
            board: profile.name.clone(),
            emulator: emu.label().to_string(),
        });
    }
    if !req.forwards.is_empty() && emu.network.is_none() {
        return Err(BootError::NoNetwork {
            board: profile.name.clone(),
            emulator: emu.label().to_string(),
        });
    }
    for (i, f) in req.forwards.iter().enumerate() {
        if req.forwards[..i].iter().any(|g| g.host_port == f.host_port) {
            return Err(BootError::DuplicateForward { port: f.host_port });
        }
    }
    for (i, s) in req.screenshots.iter().enumerate() {
        if req.screenshots[..i].iter().any(|t| t.file == s.file) {
            return Err(BootError::DuplicateScreenshot {
                file: s.file.clone(),
            });
        }
    }
    Ok(())
}
