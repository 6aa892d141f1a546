//! The admin HTTP listener: `/healthz`, `/readyz`, `/metrics`, plus routes a
//! component adds (the relay's `/v1/tunnels`). Plain HTTP/1.1; bind it to a
//! private address.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::limits::{Admission, Limits};

/// What a component exposes on its admin listener.
pub trait AdminHandler: Send + Sync + 'static {
    /// `Ok` when ready to serve; `Err(why)` otherwise.
    fn ready(&self) -> Result<(), String>;
    /// The Prometheus text exposition.
    fn metrics(&self) -> String;
    /// Extra `GET` routes: `Some((content type, body))` if `path` is one.
    fn route(&self, _path: &str) -> Option<(&'static str, Vec<u8>)> {
        None
    }
}

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn handle(handler: &dyn AdminHandler, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET is supported\n");
    }
    match req.uri().path() {
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => match handler.ready() {
            Ok(()) => respond(StatusCode::OK, "text/plain", "ready\n"),
            Err(why) => respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("not ready: {why}\n")),
        },
        "/metrics" => respond(StatusCode::OK, crate::metrics::CONTENT_TYPE, handler.metrics()),
        path => match handler.route(path) {
            Some((ct, body)) => respond(StatusCode::OK, ct, body),
            None => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        },
    }
}

/// Serves the admin endpoints on `listener` until `shutdown` is cancelled,
/// within the default [`Limits`].
pub async fn serve(listener: TcpListener, handler: Arc<dyn AdminHandler>, shutdown: CancellationToken) {
    serve_within(listener, handler, shutdown, Limits::default()).await;
}

/// Like [`serve`], within `limits`: connections over the caps are closed at
/// once, and headers must arrive within the header timeout.
pub async fn serve_within(
    listener: TcpListener,
    handler: Arc<dyn AdminHandler>,
    shutdown: CancellationToken,
    limits: Limits,
) {
    let tracker = TaskTracker::new();
    let admission = Admission::new(limits);
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "admin accept failed");
                    continue;
                }
            },
        };
        let Ok(permit) = admission.admit(peer.ip()) else {
            tracing::debug!(%peer, "admin connection refused: over the connection limits");
            continue;
        };
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = handle(handler.as_ref(), &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r { tracing::debug!(error = %e, "admin connection ended") },
                () = shutdown.cancelled() => {
                    // Let the request in flight finish, within the header timeout's bound.
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(limits.header_timeout, conn.as_mut()).await;
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}
