//! The one progress renderer of every command (`--progress auto|bar|plain|json|none`). The library only
//! reports events (steps, byte counts, warnings, notes); this shows them on stderr: a bar (indicatif) on a
//! terminal, one line per step and per tenth of the bytes (plain), one JSON object per line (json), or
//! nothing but warnings and notes (none). `auto` is a bar on a terminal, else plain. Reports (`--json`)
//! go to stdout and are not this module's.

use std::io::{IsTerminal, Write as _};
use std::sync::Mutex;
use std::time::Instant;

use boardsmith::device::progress::{Counters, Event};
use boardsmith::size::Human;

use super::args::ProgressMode;

/// The resolved display (`auto` decided).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Plain,
    Json,
    None,
}

/// Plain mode without a known total: a line every this many bytes.
const PLAIN_EVERY: u64 = 256 << 20;

struct State {
    /// The current step or phase (`write`, `writing cubieboard.img.xz`, `partitioning`...).
    phase: String,
    total: Option<u64>,
    started: Instant,
    /// Whether the bar shows bytes (else a spinner with the step).
    bytes_style: bool,
    /// Plain mode: the next percentage (or byte count, without a total) worth a line.
    next_mark: u64,
}

pub struct Progress {
    mode: Mode,
    bar: Option<indicatif::ProgressBar>,
    state: Mutex<State>,
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Progress {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => Mode::Bar,
            ProgressMode::Auto | ProgressMode::Plain => Mode::Plain,
            ProgressMode::Bar => Mode::Bar,
            ProgressMode::Json => Mode::Json,
            ProgressMode::None => Mode::None,
        };
        let bar = (mode == Mode::Bar).then(|| {
            let b = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr_with_hz(8),
            );
            b.set_style(spinner_style());
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        });
        Progress {
            mode,
            bar,
            state: Mutex::new(State {
                phase: String::new(),
                total: None,
                started: Instant::now(),
                bytes_style: false,
                next_mark: 0,
            }),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new step of the work, without a byte count.
    pub fn step(&self, msg: &str) {
        self.start(msg, None, false);
        match self.mode {
            Mode::Bar => {
                if let Some(b) = &self.bar {
                    b.set_message(msg.to_string());
                }
            }
            Mode::Plain => eprintln!("boardsmith: {msg}"),
            Mode::Json => json_line(&serde_json::json!({"event": "step", "message": msg})),
            Mode::None => {}
        }
    }

    /// A frequent, minor update (the latest compile step): shown on the bar only.
    pub fn detail(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(msg.to_string());
        }
    }

    /// A phase that counts bytes, up to `total` when known.
    pub fn begin(&self, phase: &str, total: Option<u64>) {
        self.start(phase, total, true);
        match self.mode {
            Mode::Bar => {
                if let Some(b) = &self.bar {
                    b.set_style(bytes_style());
                    b.set_prefix(phase.to_string());
                    b.set_length(total.unwrap_or(0));
                    b.reset();
                    b.set_message("");
                }
            }
            Mode::Plain => eprintln!("boardsmith: {phase}"),
            Mode::Json => json_line(&serde_json::json!({
                "event": "phase", "phase": phase, "total": total,
            })),
            Mode::None => {}
        }
    }

    fn start(&self, phase: &str, total: Option<u64>, bytes: bool) {
        let mut st = self.state();
        st.phase = phase.to_string();
        st.total = total;
        st.started = Instant::now();
        st.bytes_style = bytes;
        st.next_mark = if total.is_some() { 10 } else { PLAIN_EVERY };
    }

    /// Bytes done in the current phase; `total` when it is learnt (or changes) on the way.
    pub fn advance(&self, c: Counters, total: Option<u64>) {
        let mut st = self.state();
        if total.is_some() {
            st.total = total;
        }
        match self.mode {
            Mode::Bar => {
                let Some(b) = &self.bar else { return };
                if !st.bytes_style {
                    st.bytes_style = true;
                    b.set_style(bytes_style());
                    b.set_prefix(st.phase.clone());
                }
                b.set_length(st.total.unwrap_or(c.done));
                b.set_position(c.done);
                if c.skipped > 0 {
                    b.set_message(format!("({} skipped)", Human(c.skipped)));
                }
            }
            Mode::Plain => plain_bytes(&mut st, c.done),
            Mode::Json => {
                let secs = st.started.elapsed().as_secs_f64();
                let rate = if secs > 0.0 {
                    c.done as f64 / secs
                } else {
                    0.0
                };
                let eta = st
                    .total
                    .and_then(|t| (rate > 0.0).then(|| t.saturating_sub(c.done) as f64 / rate));
                json_line(&serde_json::json!({
                    "event": "progress", "phase": st.phase, "done": c.done, "total": st.total,
                    "written": c.written, "skipped": c.skipped,
                    "rate": rate.round(), "elapsed": (secs * 10.0).round() / 10.0,
                    "eta": eta.map(|e| (e * 10.0).round() / 10.0),
                }));
            }
            Mode::None => {}
        }
    }

    /// Something the user should know, in every mode (`warning: ...`, a JSON `warning` event).
    pub fn warn(&self, msg: &str) {
        match self.mode {
            Mode::Json => json_line(&serde_json::json!({"event": "warning", "message": msg})),
            _ => self.line(&format!("warning: {msg}")),
        }
    }

    /// Information in every mode (`boardsmith: ...`, a JSON `note` event).
    pub fn note(&self, msg: &str) {
        match self.mode {
            Mode::Json => json_line(&serde_json::json!({"event": "note", "message": msg})),
            _ => self.line(&format!("boardsmith: {msg}")),
        }
    }

    /// A line of text on stderr that the bar does not overwrite.
    pub fn line(&self, text: &str) {
        self.suspend(|| eprintln!("{text}"));
    }

    /// Runs `f` (which writes to stderr) with the bar out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    /// An event as one JSON line `{"event": EVENT, ...value's fields}`; a value that does not
    /// serialise is said so in a `note` (a display never fails the work).
    pub fn json_event(&self, event: &str, value: &impl serde::Serialize) {
        match serde_json::to_value(value) {
            Ok(serde_json::Value::Object(mut o)) => {
                o.insert("event".into(), event.into());
                json_line(&serde_json::Value::Object(o));
            }
            Ok(v) => json_line(&serde_json::json!({"event": event, "value": v})),
            Err(e) => json_line(&serde_json::json!({
                "event": "note",
                "message": format!("a {event} event is not serialisable as JSON: {e}"),
            })),
        }
    }

    /// The events of a write or a grow (the library's device progress).
    pub fn device(&self, e: Event<'_>) {
        match e {
            Event::Phase { phase, total } => self.begin(phase.label(), total),
            Event::Progress(c) => self.advance(c, None),
            Event::Note(msg) => self.note(msg),
            Event::Reconnect(r) => match self.mode {
                Mode::Json => self.json_event("reconnect", r),
                _ => self.note(&r.message()),
            },
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Plain mode: a line at each tenth of the total, or every [`PLAIN_EVERY`] bytes without one.
fn plain_bytes(st: &mut State, done: u64) {
    match st.total {
        Some(t) if t > 0 => {
            let pct = done.saturating_mul(100) / t;
            if pct >= st.next_mark {
                eprintln!(
                    "boardsmith: {} {pct}% ({} of {})",
                    st.phase,
                    Human(done),
                    Human(t)
                );
                st.next_mark = (pct / 10 + 1) * 10;
            }
        }
        _ => {
            if done >= st.next_mark {
                eprintln!("boardsmith: {} {}", st.phase, Human(done));
                st.next_mark = (done / PLAIN_EVERY + 1) * PLAIN_EVERY;
            }
        }
    }
}

fn spinner_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template("{spinner} {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner())
}

fn bytes_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(
        "{prefix:>7} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ")
}

/// One JSON object on one line of stderr, flushed (a reader follows it as it comes).
fn json_line(v: &serde_json::Value) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{v}");
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(total: Option<u64>) -> State {
        State {
            phase: "write".into(),
            total,
            started: Instant::now(),
            bytes_style: true,
            next_mark: if total.is_some() { 10 } else { PLAIN_EVERY },
        }
    }

    #[test]
    fn plain_lines_come_at_each_tenth() {
        let mut st = state(Some(1000));
        plain_bytes(&mut st, 50);
        assert_eq!(st.next_mark, 10);
        plain_bytes(&mut st, 350);
        assert_eq!(st.next_mark, 40);
        plain_bytes(&mut st, 1000);
        assert_eq!(st.next_mark, 110);
    }

    #[test]
    fn plain_lines_without_a_total_come_every_256_mib() {
        let mut st = state(None);
        plain_bytes(&mut st, 1 << 20);
        assert_eq!(st.next_mark, PLAIN_EVERY);
        plain_bytes(&mut st, PLAIN_EVERY + 1);
        assert_eq!(st.next_mark, 2 * PLAIN_EVERY);
    }
}
