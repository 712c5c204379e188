//! Ctrl-C and SIGTERM: the handler only records the signal; every stage of the writer polls
//! [`interrupted`] and stops at the next buffer, so the target is left in a known state. The
//! process then exits with 128 + the signal's number ([`exit_status`]).

use std::sync::atomic::{AtomicI32, Ordering};

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn record(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// Installs the handlers for SIGINT and SIGTERM (idempotent).
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a handler that only stores to an atomic is
        // async-signal-safe; sigemptyset initialises the mask.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = record as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut act.sa_mask);
            act.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
}

/// Whether SIGINT or SIGTERM arrived since [`install`].
pub fn interrupted() -> bool {
    SIGNAL.load(Ordering::SeqCst) != 0
}

/// The signal's name, for messages.
pub fn signal_name() -> &'static str {
    match SIGNAL.load(Ordering::SeqCst) {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT (Ctrl-C)",
        _ => "a signal",
    }
}

/// The exit status for the recorded signal: 128 + its number, as a shell reports a process it
/// ended (SIGINT 130, SIGTERM 143); 130 when none was recorded.
pub fn exit_status() -> i32 {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => 128 + libc::SIGINT,
        s => 128 + s,
    }
}
