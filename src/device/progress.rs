//! Progress of a write: the events the writer reports (phase, bytes done, notes) and the three ways
//! of showing them: a bar on a terminal (phase, bytes, rate, ETA), JSON lines for CI, or nothing.

use std::time::{Duration, Instant};

use serde::Serialize;

#[cfg(feature = "cli")]
pub use display::{Display, ProgressDisplay};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Zeroing the first 64 KiB so an unfinished card never looks bootable.
    Prepare,
    /// Reading, decoding, hashing and writing the image.
    Write,
    /// Flushing the target's caches.
    Flush,
    /// Reading back what was written.
    Verify,
    /// Re-reading the source to find the first bad byte.
    Locate,
    /// Writing the first 64 KiB.
    Finish,
    /// Growing the last partition and its filesystem.
    Grow,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::Prepare => "prepare",
            Phase::Write => "write",
            Phase::Flush => "flush",
            Phase::Verify => "verify",
            Phase::Locate => "locate",
            Phase::Finish => "finish",
            Phase::Grow => "grow",
        }
    }
}

/// Byte counters of the write phase (other phases use `done` only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Image bytes processed (position in the image).
    pub done: u64,
    /// Bytes written to the target.
    pub written: u64,
    /// Image bytes not written: holes, unmapped blocks, zero blocks of a fresh file.
    pub skipped: u64,
}

#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    Phase {
        phase: Phase,
        total: Option<u64>,
    },
    Progress(Counters),
    Note(&'a str),
    /// A download reconnects after its connection dropped or stalled.
    Reconnect(&'a crate::net::Reconnect),
}

/// Receives events from any of the writer's threads.
pub type Observer<'a> = &'a (dyn Fn(Event<'_>) + Sync);

/// Rate-limits progress events from a hot loop: `due` is true at most every `every`, and always
/// after a pause (so a stalled stream still shows where it stands).
pub struct Throttle {
    last: Instant,
    every: Duration,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            last: Instant::now() - every,
            every,
        }
    }
    pub fn due(&mut self) -> bool {
        if self.last.elapsed() >= self.every {
            self.last = Instant::now();
            true
        } else {
            false
        }
    }
}

/// The bar and JSON lines (the command line's; compiled with the `cli` feature only, so that the
/// fuzz targets build without indicatif).
#[cfg(feature = "cli")]
mod display {
    use std::io::Write as _;
    use std::sync::Mutex;
    use std::time::Instant;

    use super::{Counters, Event, Phase};
    use crate::size::Human;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Display {
        Bar,
        Json,
        None,
    }

    struct State {
        phase: Phase,
        total: Option<u64>,
        started: Instant,
        last: Counters,
    }

    /// Shows events on stderr (bar) or stdout (JSON lines).
    pub struct ProgressDisplay {
        mode: Display,
        bar: Option<indicatif::ProgressBar>,
        state: Mutex<State>,
    }

    impl ProgressDisplay {
        pub fn new(mode: Display) -> ProgressDisplay {
            let bar = (mode == Display::Bar).then(|| {
                let b = indicatif::ProgressBar::with_draw_target(
                    None,
                    indicatif::ProgressDrawTarget::stderr_with_hz(8),
                );
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{prefix:>7} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b
            });
            ProgressDisplay {
                mode,
                bar,
                state: Mutex::new(State {
                    phase: Phase::Prepare,
                    total: None,
                    started: Instant::now(),
                    last: Counters::default(),
                }),
            }
        }

        pub fn event(&self, e: Event<'_>) {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match e {
                Event::Phase { phase, total } => {
                    st.phase = phase;
                    st.total = total;
                    st.started = Instant::now();
                    st.last = Counters::default();
                    if let Some(b) = &self.bar {
                        b.set_prefix(phase.label());
                        b.set_length(total.unwrap_or(0));
                        b.reset();
                        b.set_message("");
                    }
                    if self.mode == Display::Json {
                        json_line(&serde_json::json!({
                            "event": "phase", "phase": phase, "total": total,
                        }));
                    }
                }
                Event::Progress(c) => {
                    st.last = c;
                    if let Some(b) = &self.bar {
                        if st.total.is_none() {
                            b.set_length(c.done);
                        }
                        b.set_position(c.done);
                        if c.skipped > 0 {
                            b.set_message(format!("({} skipped)", Human(c.skipped)));
                        }
                    }
                    if self.mode == Display::Json {
                        let secs = st.started.elapsed().as_secs_f64();
                        let rate = if secs > 0.0 {
                            c.done as f64 / secs
                        } else {
                            0.0
                        };
                        let eta = st.total.and_then(|t| {
                            (rate > 0.0).then(|| t.saturating_sub(c.done) as f64 / rate)
                        });
                        json_line(&serde_json::json!({
                            "event": "progress", "phase": st.phase, "done": c.done, "total": st.total,
                            "written": c.written, "skipped": c.skipped,
                            "rate": rate.round(), "elapsed": (secs * 10.0).round() / 10.0,
                            "eta": eta.map(|e| (e * 10.0).round() / 10.0),
                        }));
                    }
                }
                Event::Reconnect(r) => {
                    let msg = r.message();
                    match self.mode {
                        Display::Json => {
                            // A display cannot fail the write: if the event does not serialise, its
                            // message still gets out, saying so.
                            match serde_json::to_value(r) {
                                Ok(mut v) => {
                                    if let Some(o) = v.as_object_mut() {
                                        o.insert("event".into(), "reconnect".into());
                                    }
                                    json_line(&v);
                                }
                                Err(e) => json_line(&serde_json::json!({
                                    "event": "note",
                                    "message": format!("{msg} (not serialisable as JSON: {e})"),
                                })),
                            }
                        }
                        Display::Bar => {
                            if let Some(b) = &self.bar {
                                b.suspend(|| eprintln!("boardsmith: {msg}"));
                            }
                        }
                        Display::None => eprintln!("boardsmith: {msg}"),
                    }
                }
                Event::Note(msg) => match self.mode {
                    Display::Json => {
                        json_line(&serde_json::json!({"event": "note", "message": msg}))
                    }
                    Display::Bar => {
                        if let Some(b) = &self.bar {
                            b.suspend(|| eprintln!("boardsmith: {msg}"));
                        }
                    }
                    Display::None => eprintln!("boardsmith: {msg}"),
                },
            }
        }

        pub fn finish(&self) {
            if let Some(b) = &self.bar {
                b.finish_and_clear();
            }
        }
    }

    fn json_line(v: &serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{v}");
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lets_the_first_event_through() {
        let mut t = Throttle::new(Duration::from_secs(3600));
        assert!(t.due());
        assert!(!t.due());
    }
}
