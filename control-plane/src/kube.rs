//! The kube path: `https://<control-plane>/k8s/clusters/<cluster>/…`.
//!
//! kubectl authenticates with a KubeChat token; the control plane makes the
//! request target canonical and classifies it like the API server
//! ([`kubechat_protocol::kube_request`]; a spelling the API server would
//! read differently is refused with a 400), authorizes it (tenant role and
//! cluster policy, [`crate::kube_authz`]), records its decision in the audit
//! log, signs an Ed25519 grant for exactly this canonical request, finds a relay holding the cluster's tunnel in the directory
//! ([`crate::directory`]) and forwards it there over mutual TLS (pooled
//! HTTP/2; a fresh HTTP/1.1 connection for upgrades). Responses stream
//! back; upgraded connections (exec, attach, port-forward) are piped both
//! ways. Every refusal is a Kubernetes `Status` that kubectl prints as usual.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kubechat_protocol::grant::{self, GrantSigner};
use kubechat_protocol::messages::Grant;
use kubechat_protocol::status::{self, Status};
use kubechat_protocol::{headers, kube_request};
use rand::seq::SliceRandom;

use crate::api::App;
use crate::audit::AuditEntry;
use crate::model::TenantStatus;
use crate::store::Scope;

/// Error type of streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body of every control-plane response.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// What the audit trail needs of a kube request the control plane decides on.
struct RequestMeta {
    /// The request id (also the grant's, when one is signed).
    request_id: String,
    user: String,
    client_address: String,
    method: String,
    /// The canonical path and query once the target parsed; else as sent.
    path: String,
    info: kube_request::RequestInfo,
    kubectl_command: String,
    kubectl_session: String,
}

impl RequestMeta {
    fn entry(&self, cluster: &str, groups: &[String], status: u16, decision: &str, reason: &str) -> AuditEntry {
        AuditEntry {
            id: uuid::Uuid::now_v7().to_string(),
            time_ms: crate::directory::now_ms(),
            cluster_id: cluster.to_string(),
            request_id: self.request_id.clone(),
            kind: DECISION.into(),
            user: self.user.clone(),
            groups: groups.to_vec(),
            verb: self.info.verb.clone(),
            api_group: self.info.api_group.clone(),
            resource: self.info.resource.clone(),
            namespace: self.info.namespace.clone(),
            name: self.info.name.clone(),
            subresource: self.info.subresource.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            status: i64::from(status),
            decision: decision.into(),
            reason: reason.to_string(),
            client_address: self.client_address.clone(),
            kubectl_command: self.kubectl_command.clone(),
            kubectl_session: self.kubectl_session.clone(),
            ..Default::default()
        }
    }

    /// Records the control plane's own refusal in `tenant`'s audit chain.
    /// A failure to record is logged; the refusal stands either way.
    async fn deny(&self, app: &App, tenant: &str, cluster: &str, groups: &[String], status: u16, reason: &str) {
        let entry = self.entry(cluster, groups, status, "deny", reason);
        if let Err(e) = crate::audit::append(&app.db, tenant, vec![entry]).await {
            tracing::error!(error = %e, "a refusal could not be written to the audit log");
        }
    }

    /// Records that the control plane lets the request go to the cluster,
    /// before it does: the request is on record even if the relay dies
    /// while it runs. The relay's outcome record joins it by request id.
    async fn allow(&self, app: &App, tenant: &str, cluster: &str, groups: &[String]) -> Result<(), String> {
        let entry = self.entry(cluster, groups, 0, "allow", "");
        crate::audit::append(&app.db, tenant, vec![entry]).await.map(|_| ()).map_err(|e| e.to_string())
    }
}

/// The audit kind of the control plane's own decision records.
pub const DECISION: &str = "decision";

/// Largest request body forwarded on the kube path.
pub const MAX_REQUEST_BODY: usize = 16 << 20;

/// A full body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed_unsync()
}

fn status(code: StatusCode, reason: &str, message: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(full(Status::failure(code.as_u16(), reason, message).to_json()));
    *r.status_mut() = code;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Response header naming the request id of every kube-path answer: the id
/// of its audit records (`GET /v1/tenants/{id}/audit/requests/{requestId}`),
/// its grant, and the `kubechat.io/request-id` the cluster's audit log shows.
pub const REQUEST_ID_HEADER: &str = "kubechat-request-id";

/// Serves one kube-path request for `cluster_id`; `rest` is the API path
/// as sent (still escaped).
pub async fn handle(app: &Arc<App>, req: Request<Incoming>, cluster_id: &str, rest: &str) -> Response<Body> {
    let request_id = uuid::Uuid::now_v7().to_string();
    let mut resp = decide_and_forward(app, req, cluster_id, rest, &request_id).await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

async fn decide_and_forward(
    app: &Arc<App>,
    mut req: Request<Incoming>,
    cluster_id: &str,
    rest: &str,
    request_id: &str,
) -> Response<Body> {
    let p = match crate::api::authenticate(app, &req).await {
        Ok(p) => p,
        // A storage failure is a 503, never a 401: kubectl would ask for
        // credentials that are fine.
        Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => {
            return status(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", e.message);
        }
        Err(e) => return status(StatusCode::UNAUTHORIZED, "Unauthorized", e.message),
    };
    let not_found = || status(StatusCode::NOT_FOUND, "NotFound", format!("cluster {cluster_id} not found"));
    let Some(home_id) = p.user.tenant_id.clone() else { return not_found() };
    let raw_query = req.uri().query().map(str::to_string);
    // The target as the API server will read it; a spelling it would read
    // differently from how it looks is refused below, once the cluster's
    // tenant is known (so the refusal lands in its audit log).
    let target = kube_request::Target::parse(rest, raw_query.as_deref())
        .and_then(|t| kube_request::classify(req.method().as_str(), &t).map(|info| (t, info)));
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let mut meta = RequestMeta {
        request_id: request_id.to_string(),
        user: format!("kubechat:user:{}", p.user.email),
        client_address: req.extensions().get::<crate::ClientAddr>().map(|a| a.0.ip().to_string()).unwrap_or_default(),
        method: req.method().as_str().to_string(),
        path: match &raw_query {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_string(),
        },
        info: kube_request::RequestInfo { verb: req.method().as_str().to_ascii_lowercase(), ..Default::default() },
        kubectl_command: header("kubectl-command"),
        kubectl_session: header("kubectl-session"),
    };
    if let Ok((t, info)) = &target {
        meta.path = t.path_and_query();
        meta.info = info.clone();
    }
    let now = std::time::Instant::now();
    for (limiter, key, what) in [(&app.per_token, &p.token_id, "API token"), (&app.per_tenant, &home_id, "tenant")] {
        if let Err(e) = limiter.check(key, now) {
            let mut r = status(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                format!("too many requests for this {what}; retry shortly"),
            );
            if let Ok(v) = HeaderValue::from_str(&e.as_secs().max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
    }
    let storage = || status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "storage failure; retry");
    let home = match app.db.tenant(&Scope::Tenant(home_id.clone()), &home_id).await {
        Ok(Some(t)) => t,
        Ok(None) => return not_found(),
        Err(_) => return storage(),
    };
    let cluster = match app.db.cluster_by_id(cluster_id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            meta.deny(app, &home.id, cluster_id, &[], 404, "cluster not found").await;
            return not_found();
        }
        Err(_) => return storage(),
    };
    // The caller's role on this cluster: their own in their tenant, or one a
    // cross-tenant access grant gives them; otherwise the cluster does not
    // exist for them (the same 404 as a missing one).
    let role = if cluster.tenant_id == home.id {
        p.user.role
    } else {
        match app.db.access_role(&cluster.tenant_id, &p.user.email, &home.slug).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                // Audited in the caller's own log: the other tenant's stays theirs.
                meta.deny(app, &home.id, cluster_id, &[], 404, "cluster not found").await;
                return not_found();
            }
            Err(_) => return storage(),
        }
    };
    let tenant = if cluster.tenant_id == home.id {
        home.clone()
    } else {
        match app.db.tenant(&Scope::Tenant(cluster.tenant_id.clone()), &cluster.tenant_id).await {
            Ok(Some(t)) => t,
            Ok(None) => return not_found(),
            Err(_) => return storage(),
        }
    };
    for t in [&home, &tenant] {
        if t.status == TenantStatus::Suspended {
            let message = format!("tenant {} is suspended; contact support to reactivate it", t.slug);
            meta.deny(app, &home.id, cluster_id, &[], 403, &message).await;
            return status(StatusCode::FORBIDDEN, "Forbidden", message);
        }
    }
    let groups = vec![format!("kubechat:tenant:{}", tenant.slug), format!("kubechat:role:{}", role.as_str())];
    let (target, info) = match target {
        Ok(t) => t,
        Err(e) => {
            let message = format!("KubeChat: {e}");
            meta.deny(app, &tenant.id, &cluster.id, &groups, 400, &message).await;
            return status(StatusCode::BAD_REQUEST, "BadRequest", message);
        }
    };
    let upgrade = match req.headers().get(header::UPGRADE) {
        None => None,
        Some(v) => {
            let offered = req.headers().get_all(header::SEC_WEBSOCKET_PROTOCOL).iter().filter_map(|v| v.to_str().ok());
            let checked = match v.to_str() {
                Ok(up) => headers::check_upgrade(up, offered),
                Err(_) => Err("the Upgrade header is not text".to_string()),
            };
            let checked = checked.and_then(|()| {
                if info.is_interactive() {
                    Ok(())
                } else {
                    Err("connection upgrades are only for exec, attach and port-forward".to_string())
                }
            });
            if let Err(why) = checked {
                let message = format!("KubeChat: {why}");
                meta.deny(app, &tenant.id, &cluster.id, &groups, 400, &message).await;
                return status(StatusCode::BAD_REQUEST, "BadRequest", message);
            }
            Some(())
        }
    };
    if let Err(reason) = crate::kube_authz::authorize(role, &cluster.policy, &info) {
        let what = if info.resource.is_empty() { info.path.clone() } else { info.resource.clone() };
        let message = format!("{what} is forbidden: KubeChat: {reason}");
        meta.deny(app, &tenant.id, &cluster.id, &groups, 403, &message).await;
        return status(StatusCode::FORBIDDEN, "Forbidden", message);
    }
    // The cluster owner's monthly command quota (one kubectl invocation, one command).
    match crate::billing::count_command(&app.db, &tenant, &meta.kubectl_session).await {
        Ok(Ok(true)) => {
            let id = uuid::Uuid::now_v7().to_string();
            let at = crate::directory::now_ms();
            if let Err(e) =
                crate::audit::add_usage(&app.db, &id, &tenant.id, &cluster.id, "command_executed", 1.0, at).await
            {
                tracing::warn!(error = %e, "a command was not metered");
            }
        }
        Ok(Ok(false)) => {}
        Ok(Err(q)) => {
            let message = format!(
                "KubeChat: tenant {} has used all {} kubectl commands of its {} plan for {}; the quota resets at {}; a tenant admin can upgrade with POST /v1/subscriptions/{}/upgrade",
                tenant.slug,
                q.limit,
                q.plan.as_str(),
                q.month,
                q.resets_at,
                tenant.id
            );
            app.metrics.quota_refusals.inc();
            meta.deny(app, &tenant.id, &cluster.id, &groups, 429, &message).await;
            // No Retry-After: client-go would sleep that long (days) and
            // retry; kubectl should print the reason now.
            return status(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message);
        }
        Err(_) => return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "storage failure; retry"),
    }
    if let Err(open) = app.breakers.check(&tenant.id, std::time::Instant::now()) {
        let message = format!(
            "KubeChat: requests to tenant {}'s clusters failed on KubeChat's path (relay, tunnel or agent) {} times in a row; they are paused for {}s so the relay stays available to others; check the agent",
            tenant.slug,
            open.failures,
            open.retry_in.as_secs().max(1)
        );
        app.metrics.breaker_refusals.inc();
        meta.deny(app, &tenant.id, &cluster.id, &groups, 503, &message).await;
        return status(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", message);
    }
    let Some(relays) = app.relays.clone() else {
        let message = "this control plane has no relay client certificate configured";
        meta.deny(app, &tenant.id, &cluster.id, &groups, 503, message).await;
        return status(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", message);
    };
    let routes = match crate::directory::routes(&app.db, &tenant.id, &cluster.id).await {
        Ok(r) => r,
        Err(_) => return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "storage failure; retry"),
    };
    // Residency: only relays of the tenant's home region, or of the failover
    // region its settings name when none of the home region holds a tunnel.
    let failover = tenant.settings.get("failoverRegion").and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let home: Vec<_> = routes.iter().filter(|r| r.region == tenant.home_region).cloned().collect();
    let allowed = if home.is_empty() && !failover.is_empty() {
        routes.iter().filter(|r| r.region == failover).cloned().collect()
    } else {
        home
    };
    if allowed.is_empty() && !routes.is_empty() {
        let message = format!(
            "cluster {} is connected only through relays outside region {} (the tenant's home region{}); its agent must reach a relay of that region",
            cluster.name,
            tenant.home_region,
            if failover.is_empty() { String::new() } else { format!(", failover {failover}") }
        );
        meta.deny(app, &tenant.id, &cluster.id, &groups, 503, &message).await;
        return status(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", message);
    }
    if allowed.is_empty() {
        let message = format!(
            "cluster {} is not connected: no agent tunnel is up on any relay; check the agent (kubectl -n kubechat logs deploy/kubechat-agent)",
            cluster.name
        );
        meta.deny(app, &tenant.id, &cluster.id, &groups, 503, &message).await;
        return status(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", message);
    }
    // Spread over the relays holding a tunnel; a relay that cannot be
    // reached (crashed, not yet expired from the directory) is skipped.
    let mut candidates = allowed;
    candidates.shuffle(&mut rand::rng());
    let path_and_query = target.path_and_query();
    let now = now_ms();
    let signed = app.signer.sign(Grant {
        request_id: meta.request_id.clone(),
        tenant: tenant.id.clone(),
        cluster: cluster.id.clone(),
        user: meta.user.clone(),
        groups: groups.clone(),
        method: req.method().as_str().to_string(),
        path: path_and_query.clone(),
        issued_at_ms: now,
        expires_at_ms: now + grant::MAX_VALIDITY_MS,
        key_id: String::new(),
        client_address: meta.client_address.clone(),
        must_audit: crate::kube_authz::must_audit(&info),
    });

    let client_upgrade = upgrade.map(|()| hyper::upgrade::on(&mut req));
    let upgrade = client_upgrade.is_some();
    let (parts, body) = req.into_parts();
    // The body is read first (the API server takes at most a few MiB), so a
    // request can go to another relay when the first cannot be reached.
    let body = if upgrade {
        Bytes::new()
    } else {
        match http_body_util::Limited::new(body, MAX_REQUEST_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                let message =
                    format!("the request body is larger than {MAX_REQUEST_BODY} bytes, or was not received whole");
                meta.deny(app, &tenant.id, &cluster.id, &groups, 413, &message).await;
                return status(StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge", message);
            }
        }
    };
    // On record before it leaves: if that cannot be written, it does not leave.
    if let Err(e) = meta.allow(app, &tenant.id, &cluster.id, &groups).await {
        tracing::error!(error = %e, "the decision record could not be written; the request is refused");
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "KubeChat cannot write the audit record of this request right now, so it was not sent; retry",
        );
    }
    let relay_path = format!("/v1/clusters/{}/k8s{path_and_query}", cluster.id);
    let build = |route: &crate::directory::Route| {
        let uri = if upgrade { relay_path.clone() } else { format!("https://{}{relay_path}", route.internal_address) };
        let mut out = Request::builder().method(parts.method.clone()).uri(uri);
        if let Some(h) = out.headers_mut() {
            for (k, v) in &parts.headers {
                let name = k.as_str();
                if name == "host" || headers::is_caller_assertion(name) {
                    continue;
                }
                h.append(k.clone(), v.clone());
            }
            if upgrade && let Ok(v) = HeaderValue::from_str(&route.internal_address) {
                h.insert(header::HOST, v);
            }
            let mut set = |n: &'static str, v: &str| {
                if let Ok(v) = HeaderValue::from_str(v) {
                    h.append(n, v);
                }
            };
            set(grant::HEADER, &grant::to_header(&signed));
            set("kubechat-request-id", &meta.request_id);
            set("kubechat-user", &meta.user);
            for g in &groups {
                set("kubechat-group", g);
            }
        }
        out.body(Full::new(body.clone()))
    };
    let mut sent = None;
    for route in &candidates {
        let Ok(out) = build(route) else {
            return status(StatusCode::BAD_REQUEST, "BadRequest", "the request could not be forwarded");
        };
        let attempt = if upgrade {
            match relays.upgrade_connection(&route.internal_address).await {
                Ok(mut send) => send.send_request(out).await.map_err(|e| (true, e.to_string())),
                Err(e) => Err((false, e)),
            }
        } else {
            relays.send(out).await.map_err(|e| (!e.is_connect(), e.to_string()))
        };
        match attempt {
            Err((false, e)) => {
                tracing::warn!(relay = %route.relay_id, error = %e, "cannot reach the relay; trying another");
                continue;
            }
            other => {
                sent = Some((route.relay_id.clone(), other));
                break;
            }
        }
    }
    let mut resp = match sent {
        None => {
            app.breakers.record(&tenant.id, true, std::time::Instant::now());
            // The allow is on record; this says the request never left.
            let message = format!("no relay holding cluster {}'s tunnel can be reached; retry", cluster.name);
            meta.deny(app, &tenant.id, &cluster.id, &groups, 503, &format!("{message} (the request was not sent)"))
                .await;
            return status(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", message);
        }
        Some((_, Ok(r))) => r,
        Some((relay, Err((_, e)))) => {
            app.breakers.record(&tenant.id, true, std::time::Instant::now());
            tracing::warn!(relay = %relay, error = %e, "relay request failed");
            return status(
                StatusCode::BAD_GATEWAY,
                "InternalError",
                format!(
                    "the relay failed while forwarding to cluster {}; the request may or may not have reached it",
                    cluster.name
                ),
            );
        }
    };
    // Only KubeChat's own path counts against the breaker: an answer the
    // relay made itself (no tunnel, agent failed, API server unreachable),
    // never the API server's own 5xx (an unavailable aggregated API).
    let ours = resp.headers_mut().remove(status::ORIGIN_HEADER).is_some();
    let upstream_failed = ours && resp.status().is_server_error();
    app.breakers.record(&tenant.id, upstream_failed, std::time::Instant::now());
    if let Some(client_upgrade) = client_upgrade.filter(|_| resp.status() == StatusCode::SWITCHING_PROTOCOLS) {
        let relay_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            if let (Ok(c), Ok(r)) = (client_upgrade.await, relay_upgrade.await) {
                let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(r)).await;
            }
        });
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed_unsync())
}

/// A fresh Ed25519 grant signer (when none is configured).
pub fn generated_signer(key_id: &str) -> GrantSigner {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("the system random source works");
    GrantSigner::from_pkcs8(key_id, pkcs8.as_ref()).expect("a freshly generated key parses")
}
