//! The last stage of the kube path: the request's body, its decision
//! record, and the trip to a relay holding the cluster's tunnel (pooled
//! HTTP/2; a fresh HTTP/1.1 connection for upgrades, piped both ways after
//! the 101). Responses stream back as they come.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kubechat_protocol::trace::{self, TraceParent};
use kubechat_protocol::{grant, headers, status};

use super::{LogPlace, Refusal, RequestMeta};
use crate::app::App;
use crate::directory::Route;
use crate::model::{Cluster, Tenant};
use crate::relays::RelayClients;
use crate::writer::{Write, WriteError};

/// Largest request body forwarded on the kube path.
pub const MAX_REQUEST_BODY: usize = 16 << 20;

/// How long a request body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// What leaves for the relay.
pub(super) struct Outgoing<'a> {
    pub(super) tenant: &'a Tenant,
    pub(super) cluster: &'a Cluster,
    pub(super) groups: &'a [String],
    pub(super) meta: &'a RequestMeta,
    /// The signed grant.
    pub(super) signed: Vec<u8>,
    /// The signed grant, as the `kubechat-grant` header carries it.
    pub(super) grant: String,
    /// The canonical target.
    pub(super) path_and_query: String,
    pub(super) upgrade: bool,
    /// Whether the decision must be durable before the request leaves.
    pub(super) must_audit: bool,
}

/// How long a must-audit request waits for its decision record to commit.
const RECORD_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the body, records the decision, and sends the request to the
/// first relay of `candidates` that can be reached.
pub(super) async fn send(
    app: &App,
    relays: &RelayClients,
    candidates: &[Route],
    out: Outgoing<'_>,
    mut req: Request,
    log: &LogPlace,
) -> Result<Response, Refusal> {
    // A caller's connection to splice with the relay's once both upgrade.
    // A request the control plane makes itself (chat's exec) has none: the
    // relay's upgrade is then left on the response for it to take.
    let client_upgrade = if out.upgrade { req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() } else { None };
    let trace = req.extensions().get::<TraceParent>().copied();
    let (parts, body) = req.into_parts();
    // The body is read first (the API server takes at most a few MiB), so a
    // request can go to another relay when the first cannot be reached.
    let body = if out.upgrade {
        Bytes::new()
    } else {
        let limited = http_body_util::Limited::new(body, MAX_REQUEST_BODY).collect();
        match tokio::time::timeout(BODY_TIMEOUT, limited).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(_)) => {
                return Err(Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestEntityTooLarge",
                    format!("the request body is larger than {MAX_REQUEST_BODY} bytes, or was not received whole"),
                )
                .logged(log));
            }
            Err(_) => {
                return Err(Refusal::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "Timeout",
                    format!("the request body did not arrive within {} s", BODY_TIMEOUT.as_secs()),
                )
                .logged(log));
            }
        }
    };
    // On record before it leaves. A request that must be audited (a write,
    // a session, secrets) waits until its record is committed, and does not
    // leave if it cannot be; a read's record joins the next group commit.
    let allow = out.meta.entry(&out.cluster.id, out.groups, 0, "allow", "");
    let write = vec![Write::Audit { tenant: out.tenant.id.clone(), entry: Box::new(allow) }];
    let recorded =
        if out.must_audit { app.writer.commit(write, RECORD_TIMEOUT).await } else { app.writer.queue(write).await };
    if let Err(e) = recorded {
        tracing::error!(error = %e, "the decision record could not be written; the request is refused; {}", e.fate());
        let refusal = match e {
            // Retrying would be refused again: this record cannot be stored.
            WriteError::Refused(_) => Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!(
                    "KubeChat could not store the audit record of this request, so it was not sent; report request {} to your KubeChat operator",
                    out.meta.request_id
                ),
            ),
            WriteError::Stopped | WriteError::Timeout(_) => Refusal::unavailable(
                "KubeChat cannot write the audit record of this request right now, so it was not sent; retry",
            ),
        };
        return Err(refusal.logged(log));
    }
    let relay_path = format!("/v1/clusters/{}/k8s{}", out.cluster.id, out.path_and_query);
    let (mut signed, mut grant_header) = (out.signed, out.grant);
    let build = |route: &Route, signed: &[u8], grant_header: &str| {
        let uri =
            if out.upgrade { relay_path.clone() } else { format!("https://{}{relay_path}", route.internal_address) };
        let mut r = http::Request::builder().method(parts.method.clone()).uri(uri);
        if let Some(h) = r.headers_mut() {
            for (k, v) in &parts.headers {
                let name = k.as_str();
                if name == "host" || headers::is_caller_assertion(name) {
                    continue;
                }
                h.append(k.clone(), v.clone());
            }
            if out.upgrade
                && let Ok(v) = HeaderValue::from_str(&route.internal_address)
            {
                h.insert(header::HOST, v);
            }
            // Ours, not the caller's: the trace goes on with this hop's span.
            if let Some(t) = &trace
                && let Ok(v) = HeaderValue::from_str(&t.to_header())
            {
                h.insert(trace::HEADER, v);
            }
            let mut set = |n: &'static str, v: &str| {
                if let Ok(v) = HeaderValue::from_str(v) {
                    h.append(n, v);
                }
            };
            set(grant::HEADER, grant_header);
            // The relay passes the grant by this MAC under its own gate key
            // instead of checking the signature (the agent still does).
            set(grant::GATE_HEADER, &grant::gate_mac(&app.signer.gate_key(&route.relay_id), signed));
            set("kubechat-request-id", &out.meta.request_id);
            set("kubechat-user", &out.meta.user);
            for g in out.groups {
                set("kubechat-group", g);
            }
        }
        r.body(Full::new(body.clone()))
    };
    let mut sent = None;
    let mut resent_signed = false;
    let mut next = 0;
    while let Some(route) = candidates.get(next) {
        let Ok(req) = build(route, &signed, &grant_header) else {
            return Err(
                Refusal::new(StatusCode::BAD_REQUEST, "BadRequest", "the request could not be forwarded").logged(log)
            );
        };
        let attempt = if out.upgrade {
            match relays.upgrade_connection(&route.internal_address).await {
                Ok(mut send) => send.send_request(req).await.map_err(|e| (true, e.to_string())),
                Err(e) => Err((false, e)),
            }
        } else {
            relays.send(req).await.map_err(|e| (!e.is_connect(), e.to_string()))
        };
        // The relay could not pass or route the grant without its signature
        // (it has no gate key of its key id yet, or an agent without the
        // cluster key came up there since the routes were read): the
        // request went no further, so it goes again signed, and the
        // cluster's routes are read again.
        if let Ok(r) = &attempt
            && r.headers().contains_key(grant::RESEND_SIGNED_HEADER)
            && !resent_signed
            && let Some(again) = app.signer.sign_again(&signed)
        {
            tracing::info!(relay = %route.relay_id, "the relay asked for the grant with its signature; sending it again signed");
            app.metrics.grants_issued.inc("resent_signed");
            app.cache.forget_routes(&out.tenant.id, &out.cluster.id);
            grant_header = grant::to_header(&again);
            signed = again;
            resent_signed = true;
            continue;
        }
        match attempt {
            Err((false, e)) => {
                tracing::warn!(relay = %route.relay_id, error = %e, "cannot reach the relay; trying another");
                next += 1;
            }
            other => {
                sent = Some((route.relay_id.clone(), other));
                break;
            }
        }
    }
    let now = std::time::Instant::now();
    let mut resp = match sent {
        None => {
            app.breakers.record(&out.tenant.id, true, now);
            // The allow is on record; this says the request never left.
            let message = format!("no relay holding cluster {}'s tunnel can be reached; retry", out.cluster.name);
            let mut refusal = Refusal::unavailable(message).logged(log);
            refusal.message.push_str(" (the request was not sent)");
            return Err(refusal);
        }
        Some((_, Ok(r))) => r,
        Some((relay, Err((_, e)))) => {
            app.breakers.record(&out.tenant.id, true, now);
            tracing::warn!(relay = %relay, error = %e, "relay request failed");
            return Ok(super::status(
                StatusCode::BAD_GATEWAY,
                "InternalError",
                format!(
                    "the relay failed while forwarding to cluster {}; the request may or may not have reached it",
                    out.cluster.name
                ),
            ));
        }
    };
    // Only KubeChat's own path counts against the breaker: an answer the
    // relay made itself (no tunnel, agent failed, API server unreachable),
    // never the API server's own 5xx (an unavailable aggregated API).
    resp.headers_mut().remove(grant::RESEND_SIGNED_HEADER);
    let ours = resp.headers_mut().remove(status::ORIGIN_HEADER).is_some();
    app.breakers.record(&out.tenant.id, ours && resp.status().is_server_error(), now);
    if let Some(client_upgrade) = client_upgrade.filter(|_| resp.status() == StatusCode::SWITCHING_PROTOCOLS) {
        let relay_upgrade = hyper::upgrade::on(&mut resp);
        let closing = app.closing.clone();
        app.tasks.spawn(async move {
            let streams = async { tokio::try_join!(client_upgrade, relay_upgrade) };
            let (c, r) = tokio::select! {
                upgraded = streams => match upgraded { Ok(both) => both, Err(_) => return },
                () = closing.cancelled() => return,
            };
            let (mut c, mut r) = (TokioIo::new(c), TokioIo::new(r));
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut c, &mut r) => {}
                // The drain's grace period is over: both ends are told the
                // stream is done (kubectl sees its session end, the relay
                // and agent close theirs and record its outcome).
                () = closing.cancelled() => {
                    use tokio::io::AsyncWriteExt;
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
                        tokio::join!(c.shutdown(), r.shutdown())
                    })
                    .await;
                }
            }
        });
    }
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(parts, Body::new(body)))
}
