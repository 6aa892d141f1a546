//! Carrying one control-plane request to an agent and its response back.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body::Frame as BodyFrame;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kubechat_protocol::events::AuditBody;
use kubechat_protocol::frame::{self, Frame};
use kubechat_protocol::headers::sanitize_response;
use kubechat_protocol::identity::is_dns_label;
use kubechat_protocol::kube_request;
use kubechat_protocol::messages::{Header, Identity, Reset, StreamOpen, stream_message};
use kubechat_protocol::status::{self, Status};
use kubechat_protocol::trace::{self, TraceParent};
use kubechat_protocol::{ErrorCode, ErrorCodeExt, grant};
use kubechat_transport::framed::{FramesEnd, copy_from_frames, copy_into_frames};
use kubechat_transport::{FramedRecv, FramedSend, StreamError};
use tokio::io::AsyncWriteExt;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{Instrument, debug, warn};

use crate::events::{self, RequestAudit};
use crate::registry::PickError;
use crate::state::RelayState;
use crate::tunnel::{Tunnel, close_code_for};

/// Error type of response bodies.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;
/// Response body type of the internal listener.
pub(crate) type RespBody = UnsyncBoxBody<Bytes, BodyError>;

/// Header naming the user the request is made as (set by the control plane).
pub const USER_HEADER: &str = "kubechat-user";
/// Header naming one group of that user; repeated.
pub const GROUP_HEADER: &str = "kubechat-group";
/// Header carrying the request id chosen by the control plane.
pub const REQUEST_ID_HEADER: &str = "kubechat-request-id";

/// How long to wait for the agent to accept a new stream.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// A 503 for a grant sent without its signature that this relay cannot
/// pass or route: it never went further, and [`grant::RESEND_SIGNED_HEADER`]
/// tells the control plane to send it again signed.
fn resend_signed(message: String) -> Response<RespBody> {
    let mut r = status_response(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", message);
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r.headers_mut().insert(grant::RESEND_SIGNED_HEADER, HeaderValue::from_static("1"));
    r
}

/// A response with a Kubernetes `Status` body.
pub(crate) fn status_response(code: StatusCode, reason: &str, message: impl Into<String>) -> Response<RespBody> {
    let body = Status::failure(code.as_u16(), reason, message).to_json();
    let mut r = Response::new(full(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(status::CONTENT_TYPE));
    r.headers_mut().insert(status::ORIGIN_HEADER, HeaderValue::from_static("relay"));
    r
}

fn full(b: Bytes) -> RespBody {
    http_body_util::Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

fn empty() -> RespBody {
    full(Bytes::new())
}

/// Splits `/v1/clusters/<cluster>/k8s/<rest>` into the cluster id and the
/// path-and-query to send to the API server.
pub(crate) fn parse_target(path: &str, query: Option<&str>) -> Option<(String, String)> {
    let rest = path.strip_prefix("/v1/clusters/")?;
    let (cluster, rest) = rest.split_once('/')?;
    let k8s_path = rest.strip_prefix("k8s")?;
    if !is_dns_label(cluster) || !(k8s_path.is_empty() || k8s_path.starts_with('/')) {
        return None;
    }
    let mut uri = if k8s_path.is_empty() { "/".to_string() } else { k8s_path.to_string() };
    if let Some(q) = query {
        uri.push('?');
        uri.push_str(q);
    }
    Some((cluster.to_string(), uri))
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn ago(t: SystemTime) -> String {
    let secs = SystemTime::now().duration_since(t).map(|d| d.as_secs()).unwrap_or(0);
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s => format!("{}h ago", s / 3600),
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))))
}

fn status_for_reset(code: ErrorCode) -> (StatusCode, &'static str) {
    match code {
        ErrorCode::UpstreamUnavailable | ErrorCode::GoingAway => {
            (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
        }
        ErrorCode::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge"),
        ErrorCode::Refused | ErrorCode::GrantInvalid => (StatusCode::FORBIDDEN, "Forbidden"),
        ErrorCode::TooManyStreams => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests"),
        ErrorCode::IdleTimeout => (StatusCode::GATEWAY_TIMEOUT, "Timeout"),
        _ => (StatusCode::BAD_GATEWAY, "InternalError"),
    }
}

/// Handles one request on the internal listener.
pub(crate) async fn handle(req: Request<Incoming>, state: Arc<RelayState>) -> Response<RespBody> {
    let Some((cluster, uri)) = parse_target(req.uri().path(), req.uri().query()) else {
        state.metrics.requests_refused.inc("bad_path");
        return status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no such relay endpoint {:?}; use /v1/clusters/<cluster>/k8s/<path>", req.uri().path()),
        );
    };
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    // The control plane's trace goes on, with this hop's span.
    let trace = req
        .headers()
        .get(trace::HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
        .map(|t| t.child(rand::random()));
    let trace_id = trace.map(|t| t.trace_id_hex()).unwrap_or_default();
    let span = tracing::info_span!("stream", request_id = %request_id, cluster = %cluster, trace_id = %trace_id);
    let (path, query) = uri.split_once('?').map_or((uri.as_str(), None), |(p, q)| (p, Some(q)));
    let verb = kube_request::Target::parse(path, query)
        .and_then(|t| kube_request::classify(req.method().as_str(), &t))
        .map_or_else(|_| "unknown".to_string(), |i| i.verb);
    let started = std::time::Instant::now();
    async move {
        let mut audit = None;
        let metrics_state = state.clone();
        let resp = forward(req, state, cluster, uri, request_id, trace, &mut audit).await;
        if let Some(a) = &audit {
            a.answered(resp.status().as_u16());
        }
        let seconds = started.elapsed().as_secs_f64();
        metrics_state.metrics.request_durations.observe(
            "/v1/clusters/{cluster}/k8s",
            &verb,
            resp.status().as_u16(),
            seconds,
        );
        resp
    }
    .instrument(span)
    .await
}

/// Counts a refusal and notes its reason in the request's audit record.
fn refuse(state: &RelayState, audit: &Option<Arc<RequestAudit>>, reason: &'static str) {
    state.metrics.requests_refused.inc(reason);
    if let Some(a) = audit {
        a.refused(reason);
    }
}

/// Whose request an audit record is about.
struct Subject<'a> {
    tenant: &'a str,
    cluster: &'a str,
    request_id: &'a str,
    client_address: &'a str,
}

/// The audit record of a request about to be handled as `identity`.
fn audit_record(
    state: &Arc<RelayState>,
    req: &Request<Incoming>,
    who: Subject<'_>,
    uri: &str,
    identity: &Identity,
) -> Arc<RequestAudit> {
    let Subject { tenant, cluster, request_id, client_address } = who;
    // The control plane sends canonical targets, so this is its own
    // classification; a target that is not (no grant) is recorded as is.
    let (path, query) = uri.split_once('?').map_or((uri, None), |(p, q)| (p, Some(q)));
    let info = kube_request::Target::parse(path, query)
        .and_then(|t| kube_request::classify(req.method().as_str(), &t))
        .unwrap_or_default();
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    RequestAudit::new(
        state.clone(),
        tenant,
        cluster,
        request_id,
        AuditBody {
            kind: "request".into(),
            user: identity.user.clone(),
            groups: identity.groups.clone(),
            verb: info.verb,
            api_group: info.api_group,
            resource: info.resource,
            namespace: info.namespace,
            name: info.name,
            subresource: info.subresource,
            method: req.method().as_str().to_string(),
            path: uri.to_string(),
            client_address: client_address.to_string(),
            kubectl_command: header("kubectl-command"),
            kubectl_session: header("kubectl-session"),
            ..Default::default()
        },
    )
}

async fn forward(
    mut req: Request<Incoming>,
    state: Arc<RelayState>,
    cluster: String,
    uri: String,
    request_id: String,
    trace: Option<TraceParent>,
    audit: &mut Option<Arc<RequestAudit>>,
) -> Response<RespBody> {
    let head_bytes: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if head_bytes > state.config.max_header_bytes {
        state.metrics.requests_refused.inc("header_too_large");
        return status_response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "BadRequest",
            format!("request headers are {head_bytes} bytes; the limit is {}", state.config.max_header_bytes),
        );
    }
    // With grant keys configured, the grant alone says who and what.
    let mut granted: Option<(kubechat_protocol::messages::Grant, Bytes)> = None;
    // The grant carries no signature (only a MAC).
    let mut unsigned = false;
    if !state.config.grants.is_empty() {
        let verified = req
            .headers()
            .get(grant::HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or(grant::GrantError::Missing)
            .and_then(grant::from_header)
            .and_then(|signed| {
                let expected = grant::Expected { cluster: &cluster, method: req.method().as_str(), path: &uri };
                let mac = req.headers().get(grant::GATE_HEADER).and_then(|v| v.to_str().ok());
                let gates = state.grant_gate.read().unwrap_or_else(|p| p.into_inner());
                // A gate MAC stands in for the signature of a key this relay
                // trusts only.
                let gate = |key_id: &str| gates.for_key(key_id).filter(|_| state.config.grants.trusts(key_id)).zip(mac);
                state
                    .config
                    .grants
                    .verify_gated_by(&signed, gate, unix_ms(), expected)
                    .map(|g| (g, Bytes::from(signed)))
            });
        match verified {
            Ok((v, signed)) => {
                state.metrics.grants_checked.inc(v.checked.label());
                unsigned = !v.signed;
                granted = Some((v.grant, signed));
            }
            // A grant without its signature whose MAC this relay holds no
            // key for (restarted, not yet told its gate key): the control
            // plane resends it signed.
            Err(grant::GrantError::Unsigned) => {
                state.metrics.requests_refused.inc("grant_unsigned");
                return resend_signed(format!(
                    "relay {} holds no gate key for this grant, which carries no signature; retry",
                    state.config.relay_id
                ));
            }
            Err(e) => {
                state.metrics.requests_refused.inc("grant_invalid");
                warn!(error = %e, "request refused: invalid grant");
                return status_response(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    format!("the relay refused the request: {e}"),
                );
            }
        }
    }
    let (user_header, group_header) = match req.headers().get(USER_HEADER) {
        None if state.config.identity_from_impersonation => ("impersonate-user", "impersonate-group"),
        _ => (USER_HEADER, GROUP_HEADER),
    };
    let header_user = req.headers().get(user_header).and_then(|v| v.to_str().ok()).filter(|u| !u.is_empty());
    let Some(user) = header_user.or(granted.as_ref().map(|(g, _)| g.user.as_str())) else {
        state.metrics.requests_refused.inc("no_identity");
        return status_response(StatusCode::BAD_REQUEST, "BadRequest", format!("missing {USER_HEADER} header"));
    };
    let identity = match &granted {
        Some((g, _)) => Identity { user: g.user.clone(), groups: g.groups.clone() },
        None => Identity {
            user: user.to_string(),
            groups: req
                .headers()
                .get_all(group_header)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_string))
                .collect(),
        },
    };

    let upgrade = is_upgrade(req.headers());
    // With a grant, the tenant is known before a tunnel is picked, so even a
    // request refused for want of a tunnel is audited.
    if let Some((g, _)) = &granted {
        let who = Subject {
            tenant: &g.tenant,
            cluster: &cluster,
            request_id: &g.request_id,
            client_address: &g.client_address,
        };
        *audit = Some(audit_record(&state, &req, who, &uri, &identity));
    }
    let must_audit =
        events::must_audit(req.method().as_str(), upgrade) || granted.as_ref().is_some_and(|(g, _)| g.must_audit);
    if must_audit && let Some(why) = state.spool.as_ref().and_then(|s| s.write_error()) {
        refuse(&state, audit, "audit_spool_unwritable");
        state.metrics.audit_refusals.inc();
        return status_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!(
                "relay {}: the audit spool cannot be written ({why}); writes, exec, attach and port-forward are refused until it can, reads are still served",
                state.config.relay_id
            ),
        );
    }
    if must_audit && state.spool.as_ref().is_some_and(|s| s.is_full()) {
        refuse(&state, audit, "audit_spool_full");
        state.metrics.audit_refusals.inc();
        let limit = state.spool.as_ref().map_or(0, |s| s.max_bytes());
        return status_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!(
                "relay {}: the audit spool is full ({limit} bytes of events the control plane has not acknowledged); writes, exec, attach and port-forward are refused until it catches up, reads are still served",
                state.config.relay_id
            ),
        );
    }

    // A grant without a signature goes only to an agent that passes it by
    // its cluster MAC (any other refuses it).
    let key_holder = granted.as_ref().filter(|_| unsigned).map(|(g, _)| g.key_id.as_str());
    let (tunnel, permit) = match state.registry.pick(&cluster, key_holder) {
        Ok(t) => t,
        Err(PickError::NoKeyHolder { key_id }) => {
            refuse(&state, audit, "no_key_holder");
            return resend_signed(format!(
                "cluster {cluster}'s agents on relay {} hold no cluster grant key {key_id:?} to check this unsigned grant with (an older agent connected since the control plane last read this relay's tunnels); retry",
                state.config.relay_id
            ));
        }
        Err(PickError::NoTunnel { last_seen }) => {
            refuse(&state, audit, "no_tunnel");
            let since = match last_seen {
                Some(t) => format!("last seen {} on relay {}", ago(t), state.config.relay_id),
                None => format!("not seen on relay {} since it started", state.config.relay_id),
            };
            return status_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!("cluster {cluster} has no connected agent ({since}); check the agent's pod and logs"),
            );
        }
        Err(PickError::Busy { limit }) => {
            refuse(&state, audit, "busy");
            let mut r = status_response(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                format!("cluster {cluster} has {limit} requests in flight on every tunnel; retry shortly"),
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
    };

    if audit.is_none() {
        let who =
            Subject { tenant: &tunnel.identity.tenant, cluster: &cluster, request_id: &request_id, client_address: "" };
        *audit = Some(audit_record(&state, &req, who, &uri, &identity));
    }
    if granted.as_ref().is_some_and(|(g, _)| g.tenant != tunnel.identity.tenant) {
        refuse(&state, audit, "grant_invalid");
        return status_response(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "the relay refused the request: the grant is for another tenant",
        );
    }
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let mut headers: Vec<Header> = req
        .headers()
        .iter()
        .filter(|(k, _)| !k.as_str().starts_with("kubechat-") && k.as_str() != trace::HEADER)
        .map(|(k, v)| Header { name: k.as_str().to_string(), value: Bytes::copy_from_slice(v.as_bytes()) })
        .collect();
    if let Some(t) = trace {
        headers.push(Header { name: trace::HEADER.into(), value: Bytes::from(t.to_header()) });
    }
    let open = StreamOpen {
        request_id: granted.as_ref().map_or_else(|| request_id.clone(), |(g, _)| g.request_id.clone()),
        method: req.method().as_str().to_string(),
        uri,
        headers,
        identity: Some(identity),
        // Verified or not here, the grant travels on: the agent checks it again.
        grant: granted.as_ref().map(|(_, signed)| signed.clone()).unwrap_or_else(|| {
            req.headers()
                .get(grant::HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| grant::from_header(v).ok())
                .map(Bytes::from)
                .unwrap_or_default()
        }),
        upgrade,
    };

    let stream = match tokio::time::timeout(OPEN_TIMEOUT, tunnel.conn.open_stream()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(error = %e, "tunnel lost while opening a stream");
            return status_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!("the tunnel to cluster {cluster} closed; retry"),
            );
        }
        Err(_) => {
            return status_response(
                StatusCode::GATEWAY_TIMEOUT,
                "Timeout",
                format!("the agent of cluster {cluster} did not accept the request in time"),
            );
        }
    };
    if let Some(a) = audit.as_ref() {
        a.forwarded();
    }
    let guard = StreamGuard::new(state.clone(), tunnel.clone(), permit, audit.clone());
    let mut send = FramedSend::new(stream.send);
    let mut recv = FramedRecv::new(stream.recv, state.config.max_frame_size);

    // A request without a body leaves as one write: head and end of stream.
    let bodyless = !upgrade && http_body::Body::is_end_stream(req.body());
    send.queue_stream_message(stream_message::Kind::Open(open));
    let sent = if bodyless { send.finish().await } else { send.flush().await };
    if let Err(e) = sent {
        debug!(error = %e, "stream lost while sending the request head");
        return status_response(StatusCode::BAD_GATEWAY, "InternalError", "the tunnel stream failed; retry");
    }

    // Upgrades carry no body before the 101; the sender waits for the
    // upgraded bytes. Everything else streams its body now.
    let mut upgrade_send = None;
    if upgrade {
        upgrade_send = Some(send);
    } else if !bodyless {
        let body = req.into_body();
        state.tasks.spawn(pump_request(body, send, guard.clone()).in_current_span());
    }

    let head = match recv.next_stream_message("the response head").await {
        Ok(stream_message::Kind::ResponseHead(h)) => h,
        Ok(stream_message::Kind::Reset(r)) => {
            let code = ErrorCode::try_from(r.code).unwrap_or(ErrorCode::Internal);
            let (status, reason) = status_for_reset(code);
            return status_response(status, reason, format!("cluster {cluster}: {}", r.message));
        }
        Ok(_) => {
            guard.protocol_violation(ErrorCode::Protocol, "expected a response head");
            return status_response(StatusCode::BAD_GATEWAY, "InternalError", "the agent broke the tunnel protocol");
        }
        Err(e) => {
            if !matches!(e, StreamError::Io(_) | StreamError::UnexpectedEnd(_)) {
                guard.protocol_violation(close_code_for(&e), &e.to_string());
            }
            debug!(error = %e, "no response head");
            return status_response(
                StatusCode::BAD_GATEWAY,
                "InternalError",
                format!("the agent of cluster {cluster} failed before answering ({e})"),
            );
        }
    };

    let status = StatusCode::from_u16(u16::try_from(head.status).unwrap_or(502)).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut builder = Response::builder().status(status);
    if let Some(h) = builder.headers_mut() {
        for Header { name, value } in sanitize_response(status.as_u16(), &head.headers) {
            match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(&value)) {
                (Ok(n), Ok(v)) => {
                    h.append(n, v);
                }
                _ => debug!(header = %name, "dropping invalid response header from agent"),
            }
        }
    }

    if status == StatusCode::SWITCHING_PROTOCOLS {
        let (Some(on_upgrade), Some(send)) = (on_upgrade, upgrade_send) else {
            guard.protocol_violation(ErrorCode::Protocol, "101 for a request that asked no upgrade");
            return status_response(StatusCode::BAD_GATEWAY, "InternalError", "the agent broke the tunnel protocol");
        };
        state.tasks.spawn(pump_upgraded(on_upgrade, send, recv, guard).in_current_span());
        return builder
            .body(empty())
            .unwrap_or_else(|_| status_response(StatusCode::BAD_GATEWAY, "InternalError", "bad head"));
    }
    if let Some(mut send) = upgrade_send {
        // The API server refused the upgrade: nothing else goes upstream.
        let _ = send.finish().await;
    }
    let body = TunnelBody { recv: Some(recv), guard, pending_error: None }.boxed_unsync();
    builder.body(body).unwrap_or_else(|_| status_response(StatusCode::BAD_GATEWAY, "InternalError", "bad head"))
}

/// Keeps a stream's slot and gauges for as long as any part of it lives.
#[derive(Clone)]
struct StreamGuard(Arc<GuardInner>);

struct GuardInner {
    state: Arc<RelayState>,
    tunnel: Arc<Tunnel>,
    _permit: OwnedSemaphorePermit,
    /// Written when the last part of the stream is gone.
    audit: Option<Arc<RequestAudit>>,
}

impl StreamGuard {
    fn new(
        state: Arc<RelayState>,
        tunnel: Arc<Tunnel>,
        permit: OwnedSemaphorePermit,
        audit: Option<Arc<RequestAudit>>,
    ) -> Self {
        state.metrics.streams_open.inc();
        state.metrics.streams_total.inc();
        Self(Arc::new(GuardInner { state, tunnel, _permit: permit, audit }))
    }

    fn count_to_agent(&self, n: u64) {
        self.0.tunnel.bytes_to_agent.fetch_add(n, Ordering::Relaxed);
        self.0.state.metrics.bytes_to_agents.add(n);
        if let Some(a) = &self.0.audit {
            a.bytes_in.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn count_from_agent(&self, n: u64) {
        self.0.tunnel.bytes_from_agent.fetch_add(n, Ordering::Relaxed);
        self.0.state.metrics.bytes_from_agents.add(n);
        if let Some(a) = &self.0.audit {
            a.bytes_out.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The agent broke the protocol: close its whole tunnel.
    fn protocol_violation(&self, code: ErrorCode, why: &str) {
        warn!(code = code.label(), why, "agent broke the tunnel protocol; closing tunnel");
        self.0.state.metrics.protocol_errors.inc();
        self.0.tunnel.conn.close(code, why);
    }
}

impl Drop for GuardInner {
    fn drop(&mut self) {
        self.state.metrics.streams_open.dec();
    }
}

async fn pump_request(mut body: Incoming, mut send: FramedSend, guard: StreamGuard) {
    loop {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    if let Err(e) = send.send_data(&data).await {
                        debug!(error = %e, "agent stopped reading the request body");
                        return;
                    }
                    guard.count_to_agent(data.len() as u64);
                }
            }
            Some(Err(e)) => {
                debug!(error = %e, "caller's request body failed");
                let reset =
                    Reset { code: ErrorCode::Cancelled as i32, message: "the caller's request body failed".into() };
                let _ = send.send_stream_message(stream_message::Kind::Reset(reset)).await;
                let _ = send.finish().await;
                return;
            }
            None => break,
        }
    }
    let _ = send.finish().await;
}

async fn pump_upgraded(
    on_upgrade: hyper::upgrade::OnUpgrade,
    mut send: FramedSend,
    mut recv: FramedRecv,
    guard: StreamGuard,
) {
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            debug!(error = %e, "caller did not complete the upgrade");
            let reset = Reset { code: ErrorCode::Cancelled as i32, message: "caller went away".into() };
            let _ = send.send_stream_message(stream_message::Kind::Reset(reset)).await;
            let _ = send.finish().await;
            return;
        }
    };
    let (mut rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));
    let up = async {
        let n = copy_into_frames(&mut rd, &mut send).await;
        let _ = send.finish().await;
        if let Ok(n) = n {
            guard.count_to_agent(n);
        }
    };
    let down = async {
        match copy_from_frames(&mut recv, &mut wr).await {
            Ok(FramesEnd::Eof(n) | FramesEnd::Message(_, n)) => guard.count_from_agent(n),
            Err(e) => debug!(error = %e, "upgraded stream from agent ended"),
        }
        let _ = wr.shutdown().await;
    };
    tokio::join!(up, down);
}

/// A response body read from the tunnel: DATA frames until StreamEnd.
struct TunnelBody {
    recv: Option<FramedRecv>,
    guard: StreamGuard,
    /// An error to report on the next poll (seen while peeking ahead).
    pending_error: Option<String>,
}

impl TunnelBody {
    /// Handles a message frame inside the body: `Ok(())` for StreamEnd,
    /// `Err` for anything else.
    fn on_message(&self, m: Bytes) -> Result<(), String> {
        match frame::decode_stream_message(m) {
            Ok(stream_message::Kind::End(_)) => Ok(()),
            Ok(stream_message::Kind::Reset(r)) => Err(format!("the agent aborted the response: {}", r.message)),
            Ok(_) => {
                self.guard.protocol_violation(ErrorCode::Protocol, "unexpected message in response body");
                Err("the agent broke the tunnel protocol".to_string())
            }
            Err(e) => {
                self.guard.protocol_violation(ErrorCode::Protocol, &e.to_string());
                Err(format!("the agent broke the tunnel protocol: {e}"))
            }
        }
    }
}

impl http_body::Body for TunnelBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<BodyFrame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(e) = this.pending_error.take() {
            return Poll::Ready(Some(Err(e.into())));
        }
        let Some(recv) = this.recv.as_mut() else {
            return Poll::Ready(None);
        };
        let result = std::task::ready!(recv.poll_frame(cx));
        let outcome = match result {
            Ok(Some(Frame::Data(d))) => {
                this.guard.count_from_agent(d.len() as u64);
                // If StreamEnd is already here, end with this chunk, so
                // HTTP/2 marks it END_STREAM instead of sending an empty frame.
                if let Some(m) = recv.take_buffered_message() {
                    if let Err(e) = this.on_message(m) {
                        this.pending_error = Some(e);
                    }
                    this.recv = None;
                }
                return Poll::Ready(Some(Ok(BodyFrame::data(d))));
            }
            Ok(Some(Frame::Message(m))) => this.on_message(m),
            Ok(None) => Err("the tunnel stream ended before the response was complete".to_string()),
            Err(e) => {
                if !matches!(e, StreamError::Io(_)) {
                    this.guard.protocol_violation(close_code_for(&e), &e.to_string());
                }
                Err(format!("the tunnel stream failed: {e}"))
            }
        };
        this.recv = None;
        match outcome {
            Ok(()) => Poll::Ready(None),
            Err(msg) => Poll::Ready(Some(Err(msg.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_none() && self.pending_error.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(
            parse_target("/v1/clusters/prod/k8s/api/v1/pods", Some("limit=500")),
            Some(("prod".into(), "/api/v1/pods?limit=500".into()))
        );
        assert_eq!(parse_target("/v1/clusters/prod/k8s", None), Some(("prod".into(), "/".into())));
        assert_eq!(parse_target("/v1/clusters/prod/k8sx/api", None), None);
        assert_eq!(parse_target("/v1/clusters/a%2Fb/k8s/api", None), None);
        assert_eq!(parse_target("/v1/clusters/../k8s/api", None), None);
        assert_eq!(parse_target("/v2/clusters/prod/k8s/api", None), None);
    }
}
