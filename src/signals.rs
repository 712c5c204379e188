//! SIGINT, SIGTERM and SIGHUP: the one place that catches them, for every command. A command chooses how
//! it stops ([`install`] with an [`OnStop`]); nothing is caught unless it did, so the library behaves the
//! same without it. Either way the process ends with 128+N.
//!
//! - [`OnStop::Exit`] (`rootfs`, `build`, `release`): temporary files and work directories are registered
//!   here while they exist; a signal stops the children, removes everything registered and exits at once.
//!   The handler itself (signal-hook's self-pipe) only wakes a thread; the cleanup runs there, in normal
//!   code, while holding the registry lock, so a rename at commit ([`commit_rename`]) either happens
//!   entirely before the cleanup (the final file is complete and stays) or not at all.
//! - [`OnStop::Poll`] (`write`, `grow`, `boot`): the handler only records the signal; the work polls
//!   [`interrupted`] at its next buffer or tick and stops there, so a card or QEMU is left in a known
//!   state, and the command exits with [`exit_status`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The signals a user, a terminal or a CI runner sends to stop a program.
pub const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// How long children (mmdebstrap, mke2fs, curl, ...) get to end after SIGTERM before SIGKILL.
const CHILD_GRACE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    /// A work directory: removed with its content, unless something is mounted inside it.
    Tree,
    /// A directory this run created for its outputs: removed only if empty.
    EmptyDir,
}

struct Entry {
    id: u64,
    path: PathBuf,
    kind: Kind,
}

#[derive(Default)]
struct Registry {
    entries: Vec<Entry>,
    /// Standard input's terminal settings to restore (a password prompt had turned echo off).
    termios: Option<rustix::termios::Termios>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    entries: Vec::new(),
    termios: None,
});
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// 0 until [`install`]; then 1 + the [`OnStop`] chosen.
static MODE: AtomicU8 = AtomicU8::new(0);
static STOPPING: AtomicBool = AtomicBool::new(false);
/// The latest stop signal received (0: none).
static PENDING: AtomicUsize = AtomicUsize::new(0);

/// How a command stops on SIGINT, SIGTERM or SIGHUP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStop {
    /// Stop the children, remove every registered temporary path and exit with 128+N at once.
    Exit,
    /// Record the signal: the work polls [`interrupted`], stops cleanly and then exits with 128+N.
    Poll,
}

fn registry() -> MutexGuard<'static, Registry> {
    // A panic elsewhere while holding the lock leaves the list usable.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A registered path; dropping it unregisters the path (it does not remove it).
#[must_use = "the path is unregistered when this is dropped"]
#[derive(Debug)]
pub struct Tracked {
    id: u64,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        registry().entries.retain(|e| e.id != self.id);
    }
}

fn track(path: &Path, kind: Kind) -> Tracked {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    // Absolute, so that a change of directory cannot redirect the cleanup.
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    registry().entries.push(Entry { id, path, kind });
    Tracked { id }
}

/// Registers a temporary file, removed if a stop signal arrives while the guard lives.
pub fn track_file(path: &Path) -> Tracked {
    track(path, Kind::File)
}

/// Registers a work directory, removed with its content (unless something is mounted inside it).
pub fn track_tree(path: &Path) -> Tracked {
    track(path, Kind::Tree)
}

/// `create_dir_all` that registers every directory level it creates, removed (if still empty) when a
/// stop signal arrives or when the returned guards are dropped without [`CreatedDirs::keep`].
pub fn create_dir_all_tracked(dir: &Path) -> std::io::Result<CreatedDirs> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur.filter(|d| !d.as_os_str().is_empty()) {
        if d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    std::fs::create_dir_all(dir)?;
    // Deepest first, the order they must be removed in.
    Ok(CreatedDirs {
        dirs: missing
            .into_iter()
            .map(|d| (track(&d, Kind::EmptyDir), d))
            .collect(),
    })
}

/// Directories created for outputs; removed again when dropped if the work failed (and they are empty).
#[derive(Debug)]
pub struct CreatedDirs {
    dirs: Vec<(Tracked, PathBuf)>,
}

impl CreatedDirs {
    /// The outputs are there: the directories stay.
    pub fn keep(mut self) {
        self.dirs.clear();
    }
}

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        for (_, d) in self.dirs.drain(..) {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

/// Renames `from` to `to` while no cleanup can run, then unregisters `guard`. A stop signal arriving
/// meanwhile waits, so the final name never holds a file the cleanup is removing.
pub fn commit_rename(from: &Path, to: &Path, guard: Tracked) -> std::io::Result<()> {
    let mut reg = registry();
    std::fs::rename(from, to)?;
    reg.entries.retain(|e| e.id != guard.id);
    drop(reg);
    std::mem::forget(guard);
    Ok(())
}

/// Remembers standard input's terminal settings, to restore if a stop signal arrives (a hidden
/// password prompt).
pub fn remember_terminal(termios: rustix::termios::Termios) -> TerminalGuard {
    registry().termios = Some(termios);
    TerminalGuard
}

/// Forgets the terminal settings when dropped (the prompt restored them itself).
pub struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        registry().termios = None;
    }
}

/// Starts catching SIGINT, SIGTERM and SIGHUP for the rest of the process, answering them as `on_stop`
/// says (with `OnStop::Exit` this process also becomes the subreaper of its descendants). Calling it again with the same choice does nothing; with the other one it is an error.
pub fn install(on_stop: OnStop) -> std::io::Result<()> {
    let want = on_stop as u8 + 1;
    match MODE.compare_exchange(0, want, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => {}
        Err(m) if m == want => return Ok(()),
        Err(_) => {
            return Err(std::io::Error::other(
                "stop signals are already handled another way in this process",
            ));
        }
    }
    match on_stop {
        OnStop::Exit => {
            let mut signals = signal_hook::iterator::Signals::new(STOP_SIGNALS)?;
            // Orphans of our children (what a killed mmdebstrap leaves running) become ours, so that a
            // stop can end them before removing the directories they write into.
            rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
            std::thread::Builder::new()
                .name("boardsmith-signals".into())
                .spawn(move || {
                    if let Some(sig) = signals.forever().next() {
                        stop(sig);
                    }
                })?;
        }
        OnStop::Poll => {
            for sig in STOP_SIGNALS {
                // The handler only stores to an atomic (signal-hook keeps it async-signal-safe).
                signal_hook::flag::register_usize(sig, &PENDING, sig as usize)?;
            }
        }
    }
    Ok(())
}

/// The stop signal received since [`install`], if any (the latest, when several arrived).
pub fn pending() -> Option<libc::c_int> {
    match PENDING.load(Ordering::SeqCst) {
        0 => None,
        s => libc::c_int::try_from(s).ok(),
    }
}

/// Whether a stop signal arrived: work polls this and stops at its next buffer or tick.
pub fn interrupted() -> bool {
    pending().is_some()
}

/// A stop signal's name, for messages.
pub fn name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT (Ctrl-C)",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// The name of the signal received, for messages.
pub fn pending_name() -> &'static str {
    pending().map(name).unwrap_or("a signal")
}

/// The exit status after the signal received: 128 + its number, as a shell reports a process it
/// ended (SIGINT 130, SIGTERM 143, SIGHUP 129); 130 when none was recorded.
pub fn exit_status() -> i32 {
    128 + pending().unwrap_or(libc::SIGINT)
}

/// When a stop signal is being handled, waits for the process to end (with 128+N): an error caused by
/// the stop (a child killed by it) is no failure to report, nor a reason to exit with another status.
pub fn wait_if_stopping() {
    while STOPPING.load(Ordering::SeqCst) {
        std::thread::park();
    }
}

/// Stops the children, removes every registered path and exits with 128+`sig`.
fn stop(sig: libc::c_int) -> ! {
    STOPPING.store(true, Ordering::SeqCst);
    PENDING.store(sig as usize, Ordering::SeqCst);
    // Held until exit: no commit and no new registration happens after this point.
    let reg = registry();
    if let Some(t) = &reg.termios {
        let _ =
            rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, t);
    }
    stop_children();
    let mut kept = Vec::new();
    // Newest first: files inside a work directory go before it, a directory before its parent.
    for e in reg.entries.iter().rev() {
        let removed = match e.kind {
            Kind::File => remove_file(&e.path),
            Kind::Tree => remove_tree(&e.path),
            Kind::EmptyDir => {
                let _ = std::fs::remove_dir(&e.path);
                true
            }
        };
        if !removed {
            kept.push(e.path.display().to_string());
        }
    }
    let name = name(sig);
    if kept.is_empty() {
        eprintln!("boardsmith: stopped by {name}; temporary files removed");
    } else {
        eprintln!(
            "boardsmith: stopped by {name}; could not remove {} (see above)",
            kept.join(", ")
        );
    }
    std::process::exit(128 + sig)
}

fn remove_file(p: &Path) -> bool {
    match std::fs::remove_file(p) {
        Ok(()) => true,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Removes a directory tree unless a filesystem is mounted inside it (a killed chroot build could leave
/// /dev or /proc mounted there; removing through those would damage the host). False when it stays.
pub fn remove_tree(dir: &Path) -> bool {
    let Ok(canon) = dir.canonicalize() else {
        return true;
    };
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines().any(|l| {
                l.split_whitespace()
                    .nth(4)
                    .is_some_and(|mp| Path::new(&unescape_mountinfo(mp)).starts_with(&canon))
            })
        })
        .unwrap_or(true);
    if mounted {
        eprintln!(
            "warning: not removing {}: something is still mounted inside it (umount -R it, then remove it)",
            canon.display()
        );
        return false;
    }
    std::fs::remove_dir_all(&canon).is_ok() || !canon.exists()
}

/// mountinfo escapes space, tab, newline and backslash as \ooo (also read by `device::blockdev`).
/// An escape above \377 (never written by the kernel) keeps its low 8 bits instead of overflowing.
pub(crate) fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Our direct children (any thread's), from /proc/self/task/*/children.
fn children() -> Vec<libc::pid_t> {
    let mut pids = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return pids;
    };
    for t in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<libc::pid_t>().ok()),
            );
        }
    }
    pids
}

/// Still running (not exited: a zombie waiting to be reaped has ended).
fn running(pid: libc::pid_t) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// Signals a child (ours, not yet reaped, so the pid cannot have been reused).
fn kill(pid: libc::pid_t, sig: rustix::process::Signal) -> rustix::io::Result<()> {
    match rustix::process::Pid::from_raw(pid) {
        Some(p) => rustix::process::kill_process(p, sig),
        None => Ok(()),
    }
}

/// SIGTERM to every child (mmdebstrap cleans up its namespace and chroot on it), SIGKILL after the grace
/// period; waits until they have ended so that none writes into a directory being removed. A child
/// killed after the grace period may leave its own children running (mmdebstrap's namespace, still
/// writing into its chroot in our work directory): as the subreaper ([`install`]) we inherit them, and
/// they are killed too, until nothing runs below us.
fn stop_children() {
    let pids = children();
    for &p in &pids {
        let _ = kill(p, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + CHILD_GRACE;
    while pids.iter().any(|&p| running(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<_> = children().into_iter().filter(|&p| running(p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            break;
        }
        for &p in &left {
            // Our child, or an orphan of one reparented to us (the subreaper): not reaped, not reused.
            let _ = kill(p, rustix::process::Signal::KILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo(r"/x\134y"), r"/x\y");
        assert_eq!(unescape_mountinfo(r"/plain\04"), r"/plain\04");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/mnt/a\777b"), "/mnt/a\u{fffd}b");
    }

    #[test]
    fn created_dirs_are_removed_unless_kept() {
        let (d, deep) = crate::testutil::scratch("a/b c/d");
        let made = create_dir_all_tracked(&deep).unwrap();
        assert!(deep.is_dir());
        drop(made);
        assert!(!d.path().join("a").exists());
        let made = create_dir_all_tracked(&deep).unwrap();
        made.keep();
        assert!(deep.is_dir());
        // Nothing stays registered.
        assert!(
            registry()
                .entries
                .iter()
                .all(|e| !e.path.starts_with(d.path()))
        );
    }

    #[test]
    fn commit_rename_unregisters() {
        let (d, tmp) = crate::testutil::scratch(".x.partial");
        std::fs::write(&tmp, b"x").unwrap();
        let g = track_file(&tmp);
        assert!(registry().entries.iter().any(|e| e.path == tmp));
        commit_rename(&tmp, &d.path().join("x"), g).unwrap();
        assert!(!registry().entries.iter().any(|e| e.path == tmp));
        assert!(d.path().join("x").is_file());
    }
}
