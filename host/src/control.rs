//! The daemon's control socket (`<data>/control.sock`, owner-only): operator commands that
//! changed state on disk tell a running daemon to act on it now, and ask it for live status.
//! One JSON request line, one JSON response line per connection.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::ids::{SessionId, UserId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// A session got work (e.g. a welcome message): start its agent.
    Wake { session: SessionId },
    /// Approvals were decided outside the daemon: replay or drop their held messages.
    Approvals,
    /// An operator changed a session's scheduled tasks: refresh its task list and the timer.
    Tasks { session: SessionId },
    /// Live health of the loaded plugins.
    Health,
    /// The DM chat of a known user, opened through their channel's plugin if the channel
    /// needs that (`open_dm`). Answers `{"platform_id": …}`.
    UserDm { user: UserId },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Response {
    pub fn ok(data: Option<serde_json::Value>) -> Self {
        Response {
            ok: true,
            error: None,
            data,
        }
    }

    pub fn error(e: impl std::fmt::Display) -> Self {
        Response {
            ok: false,
            error: Some(e.to_string()),
            data: None,
        }
    }
}

/// Binds the socket, readable and writable by its owner only.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(std::io::Error::other(format!(
                    "{} exists and is not a socket; move it away",
                    path.display()
                )));
            }
            // A socket someone answers on belongs to a running daemon: two daemons on one
            // data dir would both deliver every reply.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!(
                        "another nanoclaw is already running on this data directory ({})",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // The socket is created under a restrictive umask, so it is never more open than 0600.
    // SAFETY: umask only swaps the process file mode mask.
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    listener
}

/// Serves requests until the listener is dropped.
pub async fn serve<F, Fut>(listener: UnixListener, handle: F)
where
    F: Fn(Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response> + Send,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read).take(64 * 1024);
            let response =
                match tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
                    .await
                {
                    Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim()) {
                        Ok(req) => handle(req).await,
                        Err(e) => Response::error(format!("bad request: {e}")),
                    },
                    _ => Response::error("no request received"),
                };
            let mut out = serde_json::to_vec(&response).unwrap_or_default();
            out.push(b'\n');
            let _ = write.write_all(&out).await;
        });
    }
}

use tokio::io::AsyncReadExt as _;

/// Sends one request to a running daemon. `Ok(None)` when no daemon is listening.
pub async fn request(path: &Path, req: &Request) -> std::io::Result<Option<Response>> {
    let mut stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    let mut answer = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        BufReader::new(stream).read_line(&mut answer),
    )
    .await
    .map_err(|_| std::io::Error::other("the daemon did not answer"))??;
    serde_json::from_str(answer.trim())
        .map(Some)
        .map_err(std::io::Error::other)
}

/// [`request`] for synchronous callers (the operator CLI).
pub fn request_blocking(path: &Path, req: &Request) -> std::io::Result<Option<Response>> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(request(path, req))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = bind(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        tokio::spawn(serve(listener, |req: Request| async move {
            match req {
                Request::Health => Response::ok(Some(serde_json::json!({"plugins": []}))),
                _ => Response::error("unsupported"),
            }
        }));
        let got = request(&path, &Request::Health).await.unwrap().unwrap();
        assert!(got.ok);
        let got = request(&path, &Request::Approvals).await.unwrap().unwrap();
        assert_eq!(got.error.as_deref(), Some("unsupported"));
        assert!(
            request(&dir.path().join("none.sock"), &Request::Health)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_live_daemon_is_not_displaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let _first = bind(&path).unwrap();
        let err = bind(&path).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("already running"), "{err}");
        drop(_first);
        // A stale socket (nobody listening) is replaced.
        assert!(bind(&path).is_ok());
    }

    #[test]
    fn a_regular_file_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        std::fs::write(&path, b"precious").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt.block_on(async { bind(&path).map(|_| ()) }).unwrap_err();
        assert!(err.to_string().contains("not a socket"));
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }
}
