//! The internal HTTPS listener the control plane sends kube requests to.
//! HTTP/1.1 (with upgrades) and HTTP/2, mutual TLS with the internal CA.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use crate::forward;
use crate::state::RelayState;

/// How long a client has to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn builder(state: &RelayState) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(state.config.max_header_bytes.max(8192) * 2);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(state.config.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(4096)
        .adaptive_window(true)
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Accepts control-plane connections until shutdown, then lets in-flight
/// requests finish within the grace period.
pub(crate) async fn serve(listener: TcpListener, tls: TlsAcceptor, state: Arc<RelayState>) {
    let graceful = GracefulShutdown::new();
    let builder = builder(&state);
    loop {
        let (tcp, peer) = tokio::select! {
            biased;
            () = state.shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    debug!(error = %e, "internal accept failed");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let state2 = state.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        state.tasks.spawn(async move {
            let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::warn!(peer = %peer, error = %e, "internal tls handshake refused");
                    state2.metrics.handshake_failures.inc("internal_tls");
                    return;
                }
                Err(_) => {
                    debug!(peer = %peer, "internal tls handshake timed out");
                    return;
                }
            };
            let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let state = state2.clone();
                async move { Ok::<_, Infallible>(forward::handle(req, state).await) }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                debug!(peer = %peer, error = %e, "internal connection ended");
            }
        });
    }
    // Stop accepting at once: a listener kept open would let new clients
    // connect and then hang until the grace period ends.
    drop(listener);
    if tokio::time::timeout(state.config.grace_period, graceful.shutdown()).await.is_err() {
        debug!("internal connections still open after the grace period");
    }
}
