//! The internal gRPC listener relays report tunnel presence and publish
//! events to ([`crate::ingest`]): mutual TLS,
//! client certificates chaining to the relay CA, the relay's id taken from
//! its certificate (`spiffe://kubechat/relay/<id>`) and never from the report.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kubechat_protocol::presence::presence_server::{Presence, PresenceServer};
use kubechat_protocol::presence::{PresenceAck, PresenceReport};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use kubechat_transport::limits::{Admission, Limits};
use tonic::codegen::Service as _;

use crate::app::App;
use crate::directory;
use crate::ingest::{EventsService, RelayPeer};

/// Most tunnels one report may carry (a full snapshot of a busy relay).
const MAX_TUNNELS_PER_REPORT: usize = 200_000;

/// The `Presence` service.
struct PresenceService {
    app: Arc<App>,
}

#[tonic::async_trait]
impl Presence for PresenceService {
    async fn report(
        &self,
        request: tonic::Request<PresenceReport>,
    ) -> Result<tonic::Response<PresenceAck>, tonic::Status> {
        let peer = request
            .extensions()
            .get::<RelayPeer>()
            .cloned()
            .ok_or_else(|| tonic::Status::unauthenticated("no relay certificate"))?;
        let r = request.into_inner();
        if r.relay_id != peer.0 {
            return Err(tonic::Status::permission_denied(format!(
                "the certificate names relay {:?} but the report says {:?}",
                peer.0, r.relay_id
            )));
        }
        if r.internal_address.is_empty() || r.epoch.is_empty() {
            return Err(tonic::Status::invalid_argument("internal_address and epoch are required"));
        }
        if r.up.len() + r.down.len() > MAX_TUNNELS_PER_REPORT {
            return Err(tonic::Status::invalid_argument(format!(
                "at most {MAX_TUNNELS_PER_REPORT} tunnels per report"
            )));
        }
        let storage = |e: crate::store::StoreError| {
            tracing::warn!(error = %e, "presence report not stored");
            tonic::Status::unavailable("storage failure; retry")
        };
        let outcome = directory::apply_report(&self.app.db, &r).await.map_err(storage)?;
        let applied = outcome != directory::Applied::NeedFull;
        if applied {
            // This replica's cached routes follow at once; others within
            // the routes' refresh age.
            let (lapsed, rekeyed) = match outcome {
                directory::Applied::Stored { lapsed, rekeyed } => (lapsed, rekeyed),
                directory::Applied::NeedFull => (false, false),
            };
            if lapsed {
                tracing::warn!(relay = %r.relay_id, "a relay's presence lease had run out before its report came; its tunnels were unroutable meanwhile");
            }
            if lapsed || rekeyed || !r.down.is_empty() {
                self.app.cache.invalidate_all_routes();
            } else if r.full {
                self.app.cache.refresh_all_routes();
            }
            for t in &r.up {
                self.app.cache.saw_tunnel(&t.tenant, &t.cluster, &r.relay_id, &t.cluster_grant_key_id);
            }
        }
        self.app.metrics.presence_reports.inc(if applied { "applied" } else { "resend_full" });
        let list = directory::revocations(&self.app.db).await.map_err(storage)?;
        let changed = list.version != r.revocations_version;
        Ok(tonic::Response::new(PresenceAck {
            resend_full: !applied,
            revocations_version: list.version,
            revocations_changed: changed,
            revoked_clusters: if changed { list.clusters } else { Vec::new() },
            revoked_certificates: if changed { list.certificates } else { Vec::new() },
            grant_gate_key: self.app.signer.gate_key(&r.relay_id).to_vec().into(),
            grant_key_id: self.app.signer.key_id().to_string(),
        }))
    }
}

/// Serves the presence service on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    app: Arc<App>,
    shutdown: CancellationToken,
    limits: Limits,
) {
    let server = PresenceServer::new(PresenceService { app: app.clone() });
    let events = kubechat_protocol::events::events_server::EventsServer::new(EventsService { app })
        .max_decoding_message_size(64 << 20);
    let tasks = TaskTracker::new();
    let admission = Admission::new(limits);
    loop {
        let (tcp, addr) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
        };
        let Ok(permit) = admission.admit(addr.ip()) else {
            tracing::debug!(peer = %addr, "internal connection refused: over the connection limits");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (tls, server, events, shutdown) = (tls.clone(), server.clone(), events.clone(), shutdown.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(limits.handshake_timeout, tls.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::warn!(peer = %addr, error = %e, "relay TLS handshake refused on the internal listener");
                    return;
                }
                Err(_) => return,
            };
            let relay = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(kubechat_transport::tls::relay_identity);
            let peer = match relay {
                Some(Ok(id)) => RelayPeer(id),
                other => {
                    tracing::warn!(peer = %addr, error = ?other.map(|r| r.err()), "relay certificate names no relay; closing");
                    return;
                }
            };
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(peer.clone());
                let (mut server, mut events) = (server.clone(), events.clone());
                async move {
                    let resp = if req.uri().path().starts_with("/kubechat.events.v1.Events/") {
                        events.call(req).await
                    } else {
                        server.call(req).await
                    };
                    Ok::<_, Infallible>(resp.unwrap_or_else(|never| match never {}))
                }
            });
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}
