//! SIGINT, SIGTERM and SIGHUP caught while a boot runs, so that QEMU is ended (and temporary files
//! removed) before boardsmith exits. The handler only records the signal; the boot loop polls it.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn record(sig: libc::c_int) {
    // Async-signal-safe: one atomic store.
    PENDING.store(sig, Ordering::SeqCst);
}

/// The signals a user or a CI runner sends to stop a program.
pub const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Handlers installed for [`STOP_SIGNALS`]; the previous dispositions come back when dropped.
pub struct Caught {
    old: Vec<(libc::c_int, libc::sigaction)>,
}

impl Caught {
    pub fn install() -> io::Result<Caught> {
        PENDING.store(0, Ordering::SeqCst);
        let mut caught = Caught { old: Vec::new() };
        for sig in STOP_SIGNALS {
            // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; `record` is an
            // extern "C" fn(c_int) as sa_sigaction requires without SA_SIGINFO.
            unsafe {
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = record as extern "C" fn(libc::c_int) as libc::sighandler_t;
                libc::sigemptyset(&mut new.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &new, &mut old) != 0 {
                    return Err(io::Error::last_os_error());
                }
                caught.old.push((sig, old));
            }
        }
        Ok(caught)
    }

    /// The signal received since installation, if any.
    pub fn pending(&self) -> Option<libc::c_int> {
        match PENDING.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }
}

impl Drop for Caught {
    fn drop(&mut self) {
        for (sig, old) in self.old.drain(..).rev() {
            // SAFETY: restoring a disposition sigaction returned earlier.
            unsafe {
                libc::sigaction(sig, &old, std::ptr::null_mut());
            }
        }
    }
}

/// The signal's name, e.g. "SIGINT".
pub fn name(sig: libc::c_int) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        s => format!("signal {s}"),
    }
}
