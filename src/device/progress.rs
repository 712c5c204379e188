//! Progress of a write or a grow: the events they report (phase, bytes done, notes, reconnects) to an
//! [`Observer`]. Events only: showing them (a bar, lines, JSON) is the command line's.

use std::time::{Duration, Instant};

use serde::Serialize;

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
