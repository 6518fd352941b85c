//! The `/metrics` endpoint: a deliberately tiny HTTP/1.1 server (one GET per
//! connection, bounded request size, `Connection: close`), enough for
//! Prometheus scrapes and curl.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::broker::{Broker, JobCost};

/// Largest request head accepted.
const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// A scraper that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `/metrics`; with a broker, its partition gauges are refreshed
/// at every scrape (a cluster node without one yet serves the rest).
/// Renders `GET /status` (a cluster node's view, see cluster/status.rs).
pub type StatusFn = Arc<dyn Fn() -> String + Send + Sync>;

pub async fn serve(
    listener: TcpListener,
    broker: Option<Arc<Broker>>,
    groups: Option<Arc<crate::group::GroupCoordinator>>,
    status: Option<StatusFn>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let (broker, groups, status) = (broker.clone(), groups.clone(), status.clone());
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, broker, groups, status).await {
                        tracing::debug!(event = "metrics_request_failed", error = %e);
                    }
                });
            }
            Err(e) => {
                tracing::warn!(event = "metrics_accept_failed", error = %e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(
    mut stream: TcpStream,
    broker: Option<Arc<Broker>>,
    groups: Option<Arc<crate::group::GroupCoordinator>>,
    status: Option<StatusFn>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head"))??;
        if n == 0 || head.len() + n > REQUEST_BYTES_MAX {
            return respond(
                &mut stream,
                "400 Bad Request",
                "text/plain",
                "bad request\n",
            )
            .await;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    match (parts.next(), parts.next()) {
        (Some(b"GET"), Some(b"/metrics")) => {
            // Reading every partition's offsets takes its log lock, which a
            // large append may hold for a while: not on an async worker.
            let body = match broker {
                Some(broker) => {
                    let reader = broker.clone();
                    broker
                        .io()
                        .run("metrics scrape", JobCost::Long, move || {
                            super::refresh(&reader, groups.as_deref());
                            super::refresh_quic();
                            super::metrics().encode()
                        })
                        .await
                        .map_err(std::io::Error::other)?
                }
                None => {
                    super::refresh_quic();
                    super::metrics().encode()
                }
            };
            respond(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            )
            .await
        }
        (Some(b"GET"), Some(b"/status")) => match status {
            Some(render) => {
                let body = render();
                respond(&mut stream, "200 OK", "text/plain; charset=utf-8", &body).await
            }
            None => {
                let body = "a single node has no cluster status; see /metrics\n";
                respond(&mut stream, "404 Not Found", "text/plain", body).await
            }
        },
        (Some(b"GET"), Some(b"/")) => {
            respond(
                &mut stream,
                "200 OK",
                "text/plain",
                "sluiced: see /metrics\n",
            )
            .await
        }
        _ => respond(&mut stream, "404 Not Found", "text/plain", "not found\n").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
