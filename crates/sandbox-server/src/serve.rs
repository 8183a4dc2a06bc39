//! The HTTP server loop: accepts connections and serves the router on each, with the bounds
//! `axum::serve` does not set.
//!
//! - **Header read timeout** (`--header-read-timeout-s`): a connection that has not sent a
//!   whole request head within it is closed. hyper starts the same timer while a keep-alive
//!   connection waits for its next request, so it is the idle timeout too. Without a timer
//!   (as `axum::serve` runs hyper) neither applies: 120 half-sent requests were held open for
//!   good, and so was an idle connection.
//! - **Request heads** are capped: at most [`MAX_HEADERS`] headers in [`MAX_HEAD_BYTES`].
//! - **Connections** are capped (`--max-connections`). Past the cap, [`RESERVED_CONNECTIONS`]
//!   more are served for `/healthz`, `/readyz` and `/metrics` only (anything else answers 503),
//!   so an operator can still see a server under a flood; past those, a connection gets a
//!   plain 503 and is closed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use sandbox_http::ApiError;

pub const MAX_HEADERS: usize = 100;
/// The read buffer of a connection, and so the largest request head.
pub const MAX_HEAD_BYTES: usize = 64 << 10;
/// Connections beyond `--max-connections` kept for health checks and metrics.
pub const RESERVED_CONNECTIONS: usize = 16;
const HEALTH_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Bounds of the server loop.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `stop` turns true, then lets open requests finish.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, stop: watch::Receiver<bool>) {
    let general = Arc::new(Semaphore::new(limits.max_connections));
    let reserved = Arc::new(Semaphore::new(RESERVED_CONNECTIONS));
    let connections = tokio_util::task::TaskTracker::new();
    let mut stopping = stop.clone();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, usually: wait for some to close rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stopping) => break,
        };
        let (permit, health_only) = match Arc::clone(&general).try_acquire_owned() {
            Ok(p) => (p, false),
            Err(_) => match Arc::clone(&reserved).try_acquire_owned() {
                Ok(p) => (p, true),
                Err(_) => {
                    connections.spawn(refuse(stream));
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (router, stop) = (router.clone(), stop.clone());
        connections.spawn(async move {
            serve_connection(stream, router, limits, health_only, stop).await;
            drop(permit);
        });
    }
    connections.close();
    connections.wait().await;
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: Limits,
    health_only: bool,
    mut stop: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let router = router.clone();
        async move {
            if health_only && !HEALTH_PATHS.contains(&req.uri().path()) {
                return Ok::<_, Infallible>(too_many_connections().into_response());
            }
            router.oneshot(req.map(Body::new)).await
        }
    });
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(MAX_HEAD_BYTES as u32);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = stopped(&mut stop) => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn too_many_connections() -> ApiError {
    ApiError::Overloaded("too many connections; only /healthz, /readyz and /metrics are served now".into())
}

/// Answers a connection over every cap with a 503 and closes it, without reading it.
async fn refuse(mut stream: TcpStream) {
    let body = serde_json::to_string(&too_many_connections().body()).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}
