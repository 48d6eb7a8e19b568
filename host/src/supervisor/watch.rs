//! File events from the workspaces of running sessions (inotify).
//!
//! A workspace is its agent's, which can make events as fast as it likes, so the cost of
//! watching is bounded on the host's side and kept to that session:
//! - each session has its own inotify queue, read by its own task: a flood of one agent's
//!   events never delays another session's, and a lost-events overflow means looking again
//!   at that session only;
//! - only the kinds of event a reply makes are asked for (modify, attribute change,
//!   close-after-write, create), never moves, deletes or reads;
//! - after a read that brought many events the task pauses [`BUSY_PAUSE`], so whatever comes
//!   meanwhile is taken in one read, or merged or dropped by the kernel;
//! - a session already notified is not notified again until the daemon looked at it
//!   ([`Watch::take`]), however many events come.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inotify::{EventMask, Inotify, WatchMask};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use nanoclaw_schema::session::layout::{HEARTBEAT_FILE, OUTBOUND_DB};

use super::Notice;
use crate::ids::SessionId;

/// A read that brings more events than this is followed by a pause of [`BUSY_PAUSE`].
const BUSY_READ: usize = 16;
const BUSY_PAUSE: Duration = Duration::from_millis(20);

/// The events a commit to `outbound.db` or a heartbeat touch makes.
const MASK: WatchMask = WatchMask::MODIFY
    .union(WatchMask::ATTRIB)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::CREATE)
    .union(WatchMask::DONT_FOLLOW)
    .union(WatchMask::ONLYDIR);

/// The watch over running sessions' workspaces.
pub struct Watch {
    tasks: Mutex<HashMap<SessionId, tokio::task::JoinHandle<()>>>,
    /// Sessions notified and not yet looked at.
    noticed: Arc<Mutex<HashSet<SessionId>>>,
    notices: mpsc::UnboundedSender<Notice>,
}

impl Watch {
    pub fn new(notices: mpsc::UnboundedSender<Notice>) -> Watch {
        Watch {
            tasks: Mutex::new(HashMap::new()),
            noticed: Arc::default(),
            notices,
        }
    }

    /// Watches `workspace` for `session`'s replies (call within the runtime). A session whose
    /// workspace cannot be watched is still delivered by the sweep.
    pub fn add(&self, session: &SessionId, workspace: &Path) {
        let watched = Inotify::init().and_then(|inotify| {
            inotify.watches().add(workspace, MASK)?;
            // SAFETY: `Inotify` owns its descriptor, keeps it open until it is dropped, and
            // always returns the same one; the AsyncFd owns the `Inotify`.
            unsafe { AsyncFd::register(inotify) }.map_err(|e| e.into_parts().1)
        });
        let fd = match watched {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(session = %session, dir = %workspace.display(), error = %e,
                    "session workspace not watched; its replies wait for the sweep");
                return;
            }
        };
        let task = tokio::spawn(read_loop(
            fd,
            session.clone(),
            self.noticed.clone(),
            self.notices.clone(),
        ));
        if let Some(old) = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(session.clone(), task)
        {
            old.abort();
        }
    }

    /// Stops watching `session` (its queue is closed).
    pub fn remove(&self, session: &SessionId) {
        if let Some(task) = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(session)
        {
            task.abort();
        }
        self.take(session);
    }

    /// Marks a session's events as looked at; later events notify again.
    pub fn take(&self, session: &SessionId) {
        self.noticed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(session);
    }

    /// Stops every watch.
    pub fn clear(&self) {
        for (_, task) in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            task.abort();
        }
    }
}

fn matters(name: &OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| n.starts_with(OUTBOUND_DB) || n == HEARTBEAT_FILE)
}

async fn read_loop(
    mut fd: AsyncFd<Inotify>,
    session: SessionId,
    noticed: Arc<Mutex<HashSet<SessionId>>>,
    notices: mpsc::UnboundedSender<Notice>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(session = %session, error = %e, "session events stopped; replies wait for the sweep");
                return;
            }
        };
        let read = guard.try_io(|inner| {
            let events = inner.get_mut().read_events(&mut buffer)?;
            let (mut count, mut relevant) = (0usize, false);
            for event in events {
                count += 1;
                // Lost events may have been replies: look again.
                relevant |=
                    event.mask.contains(EventMask::Q_OVERFLOW) || event.name.is_some_and(matters);
            }
            Ok((count, relevant))
        });
        let (count, relevant) = match read {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                tracing::warn!(session = %session, error = %e, "session events stopped; replies wait for the sweep");
                return;
            }
            // Not readable after all: wait again.
            Err(_) => continue,
        };
        if relevant
            && noticed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(session.clone())
            && notices.send(Notice::Outbound(session.clone())).is_err()
        {
            return;
        }
        if count > BUSY_READ {
            tokio::time::sleep(BUSY_PAUSE).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanoclaw_schema::session::layout::WORKSPACE_DIR;
    use std::time::Instant;

    async fn next(rx: &mut mpsc::UnboundedReceiver<Notice>) -> Option<Notice> {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn a_commit_and_a_heartbeat_are_noticed_once_until_taken() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().join(WORKSPACE_DIR);
        std::fs::create_dir(&ws).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let watch = Watch::new(tx);
        let id = SessionId::parse("sess-1").unwrap();
        watch.add(&id, &ws);
        // Noise the agent makes in its own workspace is not an event we wait for.
        std::fs::write(ws.join("junk"), b"x").unwrap();
        std::fs::write(ws.join(format!("{OUTBOUND_DB}-wal")), b"commit").unwrap();
        assert_eq!(next(&mut rx).await, Some(Notice::Outbound(id.clone())));
        // More events before the daemon looked: no second notice.
        for _ in 0..100 {
            std::fs::write(ws.join(OUTBOUND_DB), b"more").unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(rx.try_recv().is_err());
        watch.take(&id);
        std::fs::write(ws.join(HEARTBEAT_FILE), b"").unwrap();
        assert_eq!(next(&mut rx).await, Some(Notice::Outbound(id.clone())));
        watch.remove(&id);
        std::fs::write(ws.join(HEARTBEAT_FILE), b"").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            rx.try_recv().is_err(),
            "no events after the watch is removed"
        );
    }

    /// One agent flooding its workspace with events does not delay another session's notice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_in_one_workspace_does_not_delay_another() {
        let tmp = tempfile::tempdir().unwrap();
        let (noisy, quiet) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir(&noisy).unwrap();
        std::fs::create_dir(&quiet).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let watch = Watch::new(tx);
        let (n, q) = (
            SessionId::parse("noisy").unwrap(),
            SessionId::parse("quiet").unwrap(),
        );
        watch.add(&n, &noisy);
        watch.add(&q, &quiet);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flood = {
            let (stop, noisy) = (stop.clone(), noisy.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = std::fs::write(noisy.join("x"), b"a");
                    let _ = std::fs::write(noisy.join("y"), b"b");
                    let _ = std::fs::write(noisy.join(HEARTBEAT_FILE), b"");
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        while rx.try_recv().is_ok() {}
        let started = Instant::now();
        std::fs::write(quiet.join(format!("{OUTBOUND_DB}-wal")), b"reply").unwrap();
        loop {
            match next(&mut rx).await {
                Some(Notice::Outbound(id)) if id == q => break,
                Some(_) => continue,
                None => panic!("the quiet session was never notified"),
            }
        }
        let waited = started.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        flood.join().unwrap();
        assert!(waited < Duration::from_millis(500), "{waited:?}");
    }
}
