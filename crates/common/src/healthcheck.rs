//! The `healthcheck` subcommand both binaries have: asks the running service's `/ready` on
//! this host and says whether it answered 200.
//!
//! The runtime image is distroless (no shell, no curl), so a container health check can't
//! be a script: it runs the binary itself (`["CMD", "/usr/local/bin/clerk-sync",
//! "healthcheck"]`). One HTTP/1.0 request over a plain TCP connection is all it needs; the
//! whole exchange is bounded by a deadline, and the reply read is bounded in size.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ConfigError;

/// How long the probe may take in all (Compose's and Kubernetes' own timeouts are longer).
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Why the service isn't healthy, in words for the health-check log.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    /// Nothing answered on the port, or the connection broke.
    #[error("cannot reach 127.0.0.1:{port}: {reason}")]
    Unreachable {
        /// The port probed.
        port: u16,
        /// The I/O error.
        reason: String,
    },
    /// No complete status line within [`TIMEOUT`].
    #[error("no answer from 127.0.0.1:{port}{path} within {TIMEOUT:?}")]
    Timeout {
        /// The port probed.
        port: u16,
        /// The path asked for.
        path: String,
    },
    /// An answer other than 200.
    #[error("127.0.0.1:{port}{path} answered `{status_line}`")]
    NotReady {
        /// The port probed.
        port: u16,
        /// The path asked for.
        path: String,
        /// The status line received.
        status_line: String,
    },
}

/// The port in `variable` (the one the service listens on), or `default` when unset.
pub fn port_from_env(variable: &str, default: u16) -> Result<u16, ConfigError> {
    port_from(std::env::var(variable).ok().as_deref(), variable, default)
}

fn port_from(value: Option<&str>, variable: &str, default: u16) -> Result<u16, ConfigError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| ConfigError::new(variable, "is not a port number (1-65535)")),
    }
}

/// `GET path` on `127.0.0.1:port`: `Ok` when the answer is 200.
pub async fn probe(port: u16, path: &str) -> Result<(), ProbeError> {
    match tokio::time::timeout(TIMEOUT, exchange(port, path)).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::Timeout {
            port,
            path: path.to_string(),
        }),
    }
}

async fn exchange(port: u16, path: &str) -> Result<(), ProbeError> {
    let unreachable = |e: std::io::Error| ProbeError::Unreachable {
        port,
        reason: e.to_string(),
    };
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(unreachable)?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(unreachable)?;
    // The status line is all we read: at most 256 bytes, whatever the server sends after.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 256 {
        let n = stream.read(&mut buf).await.map_err(unreachable)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n.min(256 - head.len())]);
    }
    let status_line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => Err(ProbeError::NotReady {
            port,
            path: path.to_string(),
            status_line,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers every connection with `reply` (after reading the request head).
    async fn answering(reply: &'static [u8]) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(reply).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn ready_is_200_and_anything_else_is_named() {
        let port = answering(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        assert_eq!(probe(port, "/ready").await, Ok(()));

        let port = answering(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        let err = probe(port, "/ready").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("127.0.0.1:{port}/ready answered `HTTP/1.1 503 Service Unavailable`")
        );

        // A reply with "200" elsewhere than the status code is not a 200.
        let port = answering(b"HTTP/1.1 500 200\r\n\r\n").await;
        assert!(matches!(
            probe(port, "/ready").await,
            Err(ProbeError::NotReady { .. })
        ));
    }

    #[tokio::test]
    async fn nothing_listening_and_a_silent_server_fail_in_bounded_time() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let closed = listener.local_addr().expect("addr").port();
        drop(listener);
        assert!(matches!(
            probe(closed, "/ready").await,
            Err(ProbeError::Unreachable { .. })
        ));

        // Accepts, reads, never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let silent = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let started = std::time::Instant::now();
        assert!(matches!(
            probe(silent, "/ready").await,
            Err(ProbeError::Timeout { .. })
        ));
        assert!(started.elapsed() < TIMEOUT + Duration::from_secs(1));
    }

    #[test]
    fn the_port_comes_from_the_service_variable() {
        assert_eq!(port_from(None, "PORT", 8788).ok(), Some(8788));
        assert_eq!(port_from(Some(" "), "PORT", 8788).ok(), Some(8788));
        assert_eq!(port_from(Some("9000\n"), "PORT", 8788).ok(), Some(9000));
        let err = port_from(Some("http"), "HEALTH_PORT", 8789).unwrap_err();
        assert_eq!(err.variable, "HEALTH_PORT");
    }
}
