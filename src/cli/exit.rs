//! Exit statuses, and the one place where library errors become them: 0 success, 1 the operation
//! failed, 2 invalid usage or input, 3 a download failed after every retry, 128+N after signal N.
//! Each library error type says what kind of error it is (`is_input_error`, `is_transient`, ...);
//! the `From` impls below turn that into a status, and every command converts with `?`.

use std::error::Error;

/// Exit status for a failed operation.
pub const EXIT_FAILURE: i32 = 1;
/// Exit status for invalid input or usage.
pub const EXIT_USAGE: i32 = 2;
/// Exit status for a download that failed after every retry (trying again later may work).
pub const EXIT_NETWORK: i32 = boardsmith::write::EXIT_NETWORK;

/// An error reported at the edge, with the exit status it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_FAILURE,
            message: message.into(),
        }
    }

    /// Usage (2) for bad input, else a failure (1), with the error's whole chain as the message.
    fn of(input: bool, e: &dyn Error) -> Self {
        Failure {
            code: if input { EXIT_USAGE } else { EXIT_FAILURE },
            message: report_chain(e),
        }
    }

    /// The same status, with `what` said first (`what: message`).
    pub fn context(mut self, what: impl std::fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

/// The message of `e` and of each of its sources that does not repeat it.
pub fn report_chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let m = inner.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = inner.source();
    }
    s
}

/// `value` as pretty JSON: a value serde cannot represent is a failure, never an empty line.
pub fn pretty_json(value: &impl serde::Serialize) -> Result<String, Failure> {
    serde_json::to_string_pretty(value)
        .map_err(|e| Failure::failed(format!("writing the report as JSON: {e}")))
}

/// A profile that cannot be found, read or validated is bad input.
impl From<boardsmith::profile::ProfileError> for Failure {
    fn from(e: boardsmith::profile::ProfileError) -> Self {
        Failure::of(true, &e)
    }
}

/// A root filesystem given as input that cannot be read is bad input.
impl From<boardsmith::rootfs::tree::TreeError> for Failure {
    fn from(e: boardsmith::rootfs::tree::TreeError) -> Self {
        Failure::of(true, &e)
    }
}

/// A download that failed after every retry is 3 (try again later).
impl From<boardsmith::rootfs::RootfsError> for Failure {
    fn from(e: boardsmith::rootfs::RootfsError) -> Self {
        let transient = matches!(&e, boardsmith::rootfs::RootfsError::Fetch(f) if f.is_transient());
        let mut f = Failure::of(e.is_input_error(), &e);
        if transient && !e.is_input_error() {
            f.code = EXIT_NETWORK;
        }
        f
    }
}

impl From<boardsmith::kconfig::KconfigError> for Failure {
    fn from(e: boardsmith::kconfig::KconfigError) -> Self {
        Failure::of(e.is_input_error(), &e)
    }
}

impl From<boardsmith::image::build::BuildError> for Failure {
    fn from(e: boardsmith::image::build::BuildError) -> Self {
        Failure::of(e.is_input_error(), &e)
    }
}

impl From<boardsmith::release::ReleaseError> for Failure {
    fn from(e: boardsmith::release::ReleaseError) -> Self {
        Failure::of(e.is_input_error(), &e)
    }
}

/// A boot stopped by signal N is 128+N (QEMU was stopped first).
impl From<boardsmith::boot::BootError> for Failure {
    fn from(e: boardsmith::boot::BootError) -> Self {
        let mut f = Failure::of(e.is_input_error(), &e);
        if let boardsmith::boot::BootError::Interrupted { signal, .. } = &e {
            f.code = 128 + signal;
        }
        f
    }
}

/// The module derivation could not read the root filesystem (1); anything else is missing or bad
/// input (2).
impl From<boardsmith::rootmods::RootmodsError> for Failure {
    fn from(e: boardsmith::rootmods::RootmodsError) -> Self {
        let read = matches!(e, boardsmith::rootmods::RootmodsError::Read { .. });
        Failure::of(!read, &e)
    }
}

/// The hidden initramfs hook runs inside mmdebstrap: whatever stops it fails the build (1).
impl From<boardsmith::rootfs::initramfs::InitramfsError> for Failure {
    fn from(e: boardsmith::rootfs::initramfs::InitramfsError) -> Self {
        Failure::of(false, &e)
    }
}

/// The writer classifies its own failures (which side is at fault, a network that gave up, a
/// signal); its message says what state the target is in.
impl From<Box<boardsmith::write::WriteFailure>> for Failure {
    fn from(f: Box<boardsmith::write::WriteFailure>) -> Self {
        Failure {
            code: f.error.exit_code(),
            message: f.to_string(),
        }
    }
}

impl From<Box<boardsmith::grow::GrowFailure>> for Failure {
    fn from(f: Box<boardsmith::grow::GrowFailure>) -> Self {
        Failure {
            code: f.exit_code(),
            message: f.to_string(),
        }
    }
}

/// The target's own message says everything (no chain).
impl From<boardsmith::device::target::TargetError> for Failure {
    fn from(e: boardsmith::device::target::TargetError) -> Self {
        Failure {
            code: if e.is_usage() {
                EXIT_USAGE
            } else {
                EXIT_FAILURE
            },
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Outer(#[source] Inner);
    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    #[test]
    fn the_chain_does_not_repeat_a_message_already_said() {
        assert_eq!(report_chain(&Outer(Inner)), "outer: inner");
    }

    #[test]
    fn input_errors_are_usage_and_others_failures() {
        assert_eq!(Failure::of(true, &Inner).code, EXIT_USAGE);
        assert_eq!(Failure::of(false, &Inner).code, EXIT_FAILURE);
    }
}
