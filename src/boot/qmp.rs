//! QEMU's machine protocol (QMP) on a socket pair: one end is inherited by QEMU as an already connected
//! chardev socket (`-chardev socket,id=qmp,fd=N -mon chardev=qmp,mode=control`), the other stays here.
//! Nothing is bound on the filesystem or the network, so no other process can reach the monitor, and
//! nothing is left behind however boardsmith ends.
//!
//! Used for screenshots: `screendump` writes a PNG of the guest's screen (QEMU ≥ 7.1).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// Longest QMP message accepted (QEMU's replies here are a few hundred bytes; events are small too).
const MAX_MESSAGE: usize = 1 << 20;
/// How long QEMU may take to answer one command (a screendump of a large screen under a loaded host).
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QEMU's monitor: {0}")]
    Io(#[from] io::Error),
    #[error("QEMU's monitor closed the connection")]
    Closed,
    #[error("QEMU's monitor sent a message longer than {MAX_MESSAGE} bytes")]
    TooLong,
    #[error("QEMU's monitor sent something that is not JSON: {0}")]
    NotJson(String),
    #[error("QEMU's monitor did not greet with QMP")]
    NoGreeting,
    #[error("QEMU refused {command}: {message}")]
    Refused { command: String, message: String },
}

/// boardsmith's end of the monitor.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    ready: bool,
}

/// QEMU's end: keep it open until QEMU has started, then drop it.
pub struct QemuEnd(OwnedFd);

impl QemuEnd {
    pub fn fd(&self) -> i32 {
        self.0.as_raw_fd()
    }

    /// QEMU's options for this end (the descriptor must be inherited).
    pub fn args(&self) -> [String; 4] {
        [
            "-chardev".into(),
            format!("socket,id=boardsmith-qmp,fd={}", self.fd()),
            "-mon".into(),
            "chardev=boardsmith-qmp,mode=control".into(),
        ]
    }
}

/// QEMU gone (its end closed, with or without our unread data) is `Closed`, whichever call noticed.
fn closed_or_io(e: io::Error) -> QmpError {
    match e.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => QmpError::Closed,
        _ => QmpError::Io(e),
    }
}

impl Qmp {
    /// A connected pair. Both ends are close-on-exec; the spawn clears that flag on QEMU's end only.
    pub fn pair() -> io::Result<(Qmp, QemuEnd)> {
        let (ours, theirs) = UnixStream::pair()?;
        ours.set_read_timeout(Some(REPLY_TIMEOUT))?;
        Ok((
            Qmp {
                reader: BufReader::new(ours.try_clone()?),
                writer: ours,
                ready: false,
            },
            QemuEnd(theirs.into()),
        ))
    }

    fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_MESSAGE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(closed_or_io)?;
        if n == 0 {
            return Err(QmpError::Closed);
        }
        if line.len() > MAX_MESSAGE {
            return Err(QmpError::TooLong);
        }
        serde_json::from_slice(&line)
            .map_err(|_| QmpError::NotJson(String::from_utf8_lossy(&line).trim().to_string()))
    }

    /// Sends one command and returns its `return` value; events that arrive meanwhile are skipped.
    fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        if !self.ready {
            // The greeting, then capabilities negotiation: QEMU accepts no other command before it.
            let greeting = self.read_message()?;
            if greeting.get("QMP").is_none() {
                return Err(QmpError::NoGreeting);
            }
            self.ready = true;
            self.execute("qmp_capabilities", None)?;
        }
        let mut msg = serde_json::json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .map_err(closed_or_io)?;
        loop {
            let reply = self.read_message()?;
            if let Some(r) = reply.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = reply.get("error") {
                return Err(QmpError::Refused {
                    command: command.to_string(),
                    message: e
                        .get("desc")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given")
                        .to_string(),
                });
            }
            // An asynchronous event: not the answer.
        }
    }

    /// Writes a PNG of the guest's screen to `path` (QEMU opens the path itself).
    pub fn screendump(&mut self, path: &Path) -> Result<(), QmpError> {
        self.execute(
            "screendump",
            Some(serde_json::json!({
                "filename": path.to_string_lossy(),
                "format": "png",
            })),
        )
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    /// A fake QEMU on the other end, speaking QMP as QEMU 10 does (greeting, an event among replies).
    fn fake(script: &'static [(&'static str, &'static str)]) -> Qmp {
        let (qmp, end) = Qmp::pair().unwrap();
        let theirs = UnixStream::from(end.0);
        thread::spawn(move || {
            let mut w = theirs.try_clone().unwrap();
            let mut r = BufReader::new(theirs);
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": [\"oob\"]}}\r\n")
                .unwrap();
            for (expect, answer) in script {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 {
                    return;
                }
                assert!(line.contains(expect), "{line}");
                w.write_all(answer.as_bytes()).unwrap();
            }
        });
        qmp
    }

    #[test]
    fn negotiates_then_dumps_skipping_events() {
        let mut q = fake(&[
            ("qmp_capabilities", "{\"return\": {}}\r\n"),
            (
                "\"filename\":\"/tmp/x.png\"",
                "{\"event\": \"RESET\", \"data\": {}}\r\n{\"return\": {}}\r\n",
            ),
        ]);
        q.screendump(Path::new("/tmp/x.png")).unwrap();
    }

    #[test]
    fn errors_are_reported_with_qemus_reason() {
        let mut q = fake(&[
            ("qmp_capabilities", "{\"return\": {}}\r\n"),
            (
                "screendump",
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no surface\"}}\r\n",
            ),
        ]);
        let e = q.screendump(Path::new("/x.png")).unwrap_err().to_string();
        assert!(e.contains("refused screendump: no surface"), "{e}");
    }

    #[test]
    fn garbage_and_closed_ends_are_errors() {
        let mut q = fake(&[("qmp_capabilities", "not json\n")]);
        assert!(matches!(
            q.screendump(Path::new("/x.png")),
            Err(QmpError::NotJson(_))
        ));
        let mut q = fake(&[]);
        assert!(matches!(
            q.screendump(Path::new("/x.png")),
            Err(QmpError::Closed)
        ));
    }
}
