//! Waiting without busy loops: file-system events on `inbound.db*`, signals, and a shutdown
//! flag that long provider calls can wait on.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nanoclaw_schema::session::INBOUND_DB;
use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};

/// Why the main loop woke up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Something touched `inbound.db`, `-wal` or `-shm`.
    Inbound,
    /// SIGTERM or SIGINT arrived.
    Signal(i32),
}

/// Set once on SIGTERM/SIGINT; anything that waits for a long time waits on this too.
#[derive(Clone, Default)]
pub struct Shutdown(Arc<(Mutex<bool>, Condvar)>);

impl Shutdown {
    pub fn request(&self) {
        let (flag, cv) = &*self.0;
        *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cv.notify_all();
    }

    pub fn requested(&self) -> bool {
        *self.0.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps for `dur` or until shutdown is requested. Returns true on shutdown.
    pub fn sleep(&self, dur: Duration) -> bool {
        let (flag, cv) = &*self.0;
        let deadline = Instant::now() + dur;
        let mut stop = flag.lock().unwrap_or_else(PoisonError::into_inner);
        while !*stop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            stop = cv
                .wait_timeout(stop, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

/// The main loop's single source of wake-ups.
pub struct Wakeups {
    tx: Sender<Wake>,
    rx: Receiver<Wake>,
    _watcher: Option<RecommendedWatcher>,
}

impl Wakeups {
    /// Watches `inbound_dir` (not recursively) for changes to `inbound.db*`. If the watch
    /// cannot be set up, the fallback poll alone drives the loop (logged).
    pub fn watch(inbound_dir: &Path) -> Wakeups {
        let (tx, rx) = mpsc::channel();
        let events = tx.clone();
        let watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                Ok(ev) if is_inbound_change(&ev) => {
                    // The receiver only goes away at exit.
                    let _ = events.send(Wake::Inbound);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "file watcher error"),
            })
            .and_then(|mut w| {
                w.watch(inbound_dir, RecursiveMode::NonRecursive)
                    .map(|()| w)
            });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, dir = %inbound_dir.display(),
                    "cannot watch the inbound directory; relying on the fallback poll");
                None
            }
        };
        Wakeups {
            tx,
            rx,
            _watcher: watcher,
        }
    }

    pub fn sender(&self) -> Sender<Wake> {
        self.tx.clone()
    }

    /// Blocks until a wake-up or `timeout`. `None` means the timeout passed.
    pub fn wait(&self, timeout: Duration) -> Option<Wake> {
        match self.rx.recv_timeout(timeout) {
            Ok(w) => Some(w),
            Err(RecvTimeoutError::Timeout) => None,
            // Unreachable: self holds a sender.
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Takes queued wake-ups without blocking; a signal among them wins.
    pub fn drain(&self) -> Option<Wake> {
        let mut seen = None;
        while let Ok(w) = self.rx.try_recv() {
            if matches!(w, Wake::Signal(_)) || seen.is_none() {
                seen = Some(w);
            }
        }
        seen
    }
}

/// True for events that can mean a commit to inbound.db: writes, creations, removals and
/// renames of `inbound.db`, `inbound.db-wal` or `inbound.db-shm`. Plain opens and reads (our
/// own included) are not.
fn is_inbound_change(ev: &notify::Event) -> bool {
    let relevant_kind = match ev.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    };
    relevant_kind
        && ev.paths.iter().any(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(INBOUND_DB))
        })
}

/// Blocks SIGTERM and SIGINT in the calling thread. Call it first thing in `main`, before any
/// thread exists, so every thread inherits the mask and the signals queue up for
/// [`spawn_signal_thread`]. (Children get a clean mask: std resets it before exec.)
pub fn block_signals() -> std::io::Result<()> {
    // SAFETY: plain libc calls on a sigset_t we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
    }
    Ok(())
}

/// Turns SIGTERM/SIGINT into a shutdown request plus a wake-up. A second signal during a
/// shutdown that is taking too long exits at once (nothing is half-written: every database
/// change is a transaction).
pub fn spawn_signal_thread(shutdown: Shutdown, wake: Sender<Wake>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: as in block_signals; sigwait writes the signal number into `sig`.
                let rc = unsafe {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, libc::SIGTERM);
                    libc::sigaddset(&mut set, libc::SIGINT);
                    libc::sigwait(&set, &mut sig)
                };
                if rc != 0 {
                    tracing::error!(rc, "sigwait failed; signals will not be handled");
                    return;
                }
                if shutdown.requested() {
                    tracing::warn!(signal = sig, "second signal: exiting now");
                    std::process::exit(0);
                }
                tracing::info!(signal = sig, "shutdown requested");
                shutdown.request();
                let _ = wake.send(Wake::Signal(sig));
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, ModifyKind};
    use std::path::PathBuf;

    fn ev(kind: EventKind, name: &str) -> notify::Event {
        notify::Event::new(kind).add_path(PathBuf::from("/workspace").join(name))
    }

    #[test]
    fn only_inbound_changes_count() {
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert!(is_inbound_change(&ev(write, "inbound.db-wal")));
        assert!(is_inbound_change(&ev(
            EventKind::Create(CreateKind::File),
            "inbound.db-shm"
        )));
        assert!(is_inbound_change(&ev(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            "inbound.db"
        )));
        assert!(!is_inbound_change(&ev(write, "outbound.db-wal")));
        assert!(!is_inbound_change(&ev(write, ".heartbeat")));
        assert!(!is_inbound_change(&ev(
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            "inbound.db"
        )));
    }

    #[test]
    fn shutdown_interrupts_sleep() {
        let s = Shutdown::default();
        assert!(!s.sleep(Duration::from_millis(5)));
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.sleep(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        s.request();
        assert!(t.join().unwrap());
        assert!(s.requested());
    }
}
