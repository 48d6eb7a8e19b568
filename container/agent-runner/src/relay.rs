//! The loopback relay to the host's model-API proxy.
//!
//! The container has no network. The host mounts a Unix socket into it (one per container,
//! so the host knows which session calls); this relay listens on `127.0.0.1:<ephemeral>` and
//! copies each TCP connection byte for byte to a fresh connection on that socket. Providers
//! (and the Claude CLI) are pointed at `http://127.0.0.1:<port>` with a placeholder key: the
//! host adds the real credential, so it never enters the container.
//!
//! The relay parses nothing; what may pass is decided by the host. A new connection to the
//! socket per TCP connection means a restarted host is reached without restarting the relay.

use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Connections relayed at once. Everything in the container is the agent's own, so this only
/// keeps a runaway tool from exhausting the runner's threads.
const MAX_CONNECTIONS: usize = 64;

/// The key providers hand their clients. Any value works: the host drops it.
pub const PLACEHOLDER_KEY: &str = "nanoclaw-proxy-placeholder";

pub struct Relay {
    port: u16,
}

impl Relay {
    /// Binds the loopback port and starts relaying to `socket`.
    pub fn start(socket: &Path) -> io::Result<Relay> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let socket = socket.to_path_buf();
        let active = Arc::new(AtomicUsize::new(0));
        std::thread::Builder::new()
            .name("model-relay".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let tcp = match conn {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "model relay accept");
                            continue;
                        }
                    };
                    if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                        tracing::warn!("model relay: too many connections; refusing one");
                        continue;
                    }
                    active.fetch_add(1, Ordering::Relaxed);
                    let (socket, active) = (socket.clone(), Arc::clone(&active));
                    let spawned = std::thread::Builder::new()
                        .name("model-relay-conn".into())
                        .spawn(move || {
                            relay_one(tcp, &socket);
                            active.fetch_sub(1, Ordering::Relaxed);
                        });
                    if let Err(e) = spawned {
                        tracing::warn!(error = %e, "model relay: cannot start a thread");
                    }
                }
            })?;
        tracing::info!(port, "model relay listening");
        Ok(Relay { port })
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn relay_one(tcp: TcpStream, socket: &PathBuf) {
    let unix = match UnixStream::connect(socket) {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, socket = %socket.display(), "model proxy not reachable");
            answer_unreachable(tcp, &e);
            return;
        }
    };
    let (Ok(tcp_in), Ok(unix_in)) = (tcp.try_clone(), unix.try_clone()) else {
        return;
    };
    // Request bytes go up on another thread; the answer streams back on this one.
    let up = std::thread::Builder::new()
        .name("model-relay-up".into())
        .spawn(move || {
            let (mut from, mut to) = (tcp_in, unix_in);
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    let (mut from, mut to) = (unix, tcp);
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
    if let Ok(up) = up {
        let _ = up.join();
    }
}

/// Answers a connection the host's socket did not take with a 502 in the API's error shape,
/// so the provider reports "cannot reach the model API" instead of a bare reset.
fn answer_unreachable(mut tcp: TcpStream, err: &io::Error) {
    // Read the request head first (briefly), so closing does not reset the answer away.
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(500)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while head.len() < 64 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let body = serde_json::json!({
        "type": "error",
        "error": {
            "type": super::provider::api_error::UNREACHABLE_ERROR_TYPE,
            "message": format!("NanoClaw's model proxy is not reachable: {err}"),
        }
    })
    .to_string();
    let _ = write!(
        tcp,
        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead as _;
    use std::os::unix::net::UnixListener;

    #[test]
    fn relays_both_ways_and_reports_a_missing_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.sock");
        let relay = Relay::start(&path).unwrap();
        let addr = relay.base_url().trim_start_matches("http://").to_string();

        // No socket yet: a 502 in the API's error shape.
        let mut c = TcpStream::connect(&addr).unwrap();
        c.write_all(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
        assert!(answer.contains("upstream_unreachable"), "{answer}");

        // With the socket: bytes go up, the answer streams back, EOF travels both ways.
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = io::BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let mut s = s;
            s.write_all(format!("echo {line}").as_bytes()).unwrap();
            let mut rest = String::new();
            r.read_to_string(&mut rest).unwrap();
            rest
        });
        let mut c = TcpStream::connect(&addr).unwrap();
        c.write_all(b"hello\nmore").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "echo hello\n");
        assert_eq!(server.join().unwrap(), "more");
    }
}
