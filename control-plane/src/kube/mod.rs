//! The kube path: `https://<control-plane>/k8s/clusters/<cluster>/…`.
//!
//! kubectl authenticates with a KubeChat token. The request then walks one
//! pipeline, straight down, and leaves by one door:
//!
//! 1. the caller ([`crate::http::extract::Caller`]: token, rate limits);
//! 2. the cluster and the caller's role on it (their own tenant's, or a
//!    cross-tenant grant's; any other cluster is the same 404 as a missing
//!    one), both tenants not suspended;
//! 3. the canonical target and its classification, as the API server reads
//!    it ([`kubechat_protocol::kube_request`]; other spellings are a 400),
//!    and the upgrade, if any;
//! 4. authorization ([`crate::kube_authz`]);
//! 5. the monthly command quota, and the tenant's circuit breaker;
//! 6. the relays holding the cluster's tunnel (the directory, residency);
//! 7. the decision record in the audit log, and an Ed25519 grant for exactly
//!    this canonical request;
//! 8. forwarding ([`forward`]).
//!
//! Every refusal is a [`Refusal`]: a Kubernetes `Status` that kubectl
//! prints as usual, recorded in the audit log once the tenant is known.

mod forward;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use kubechat_protocol::grant::{self, GrantSigner};
use kubechat_protocol::messages::Grant;
use kubechat_protocol::status::Status;
use kubechat_protocol::{headers, kube_request};
use rand::seq::SliceRandom;

use crate::app::App;
use crate::audit::AuditEntry;
use crate::error::ApiError;
use crate::http::RequestId;
use crate::http::extract::Caller;
use crate::model::{Cluster, Role, Tenant, TenantStatus};
use crate::writer::Write;

pub use forward::MAX_REQUEST_BODY;

/// Error type of streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a refusal waits for its record to commit before answering.
const REFUSAL_RECORD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The audit kind of the control plane's own decision records.
pub const DECISION: &str = "decision";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A `Status` answer.
pub(crate) fn status(code: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    let mut r = Response::new(Body::from(Status::failure(code.as_u16(), reason, message).to_json()));
    *r.status_mut() = code;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Where a refusal is recorded: the tenant whose log it goes to, the
/// cluster id as asked, and the groups the request would have carried.
#[derive(Debug, Clone)]
struct LogPlace {
    tenant: String,
    cluster: String,
    groups: Vec<String>,
}

/// Why a kube request is not forwarded: the one door every refusal leaves by.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    reason: &'static str,
    message: String,
    retry_after: Option<u64>,
    /// Where to record it (`None` before the caller's tenant is known).
    log: Option<LogPlace>,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self { status, reason, message: message.into(), retry_after: None, log: None }
    }

    fn logged(mut self, place: &LogPlace) -> Self {
        self.log = Some(place.clone());
        self
    }

    fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", message)
    }

    /// The `Status` answer, after recording the refusal where it belongs.
    async fn answer(self, app: &App, meta: &RequestMeta) -> Response {
        if let Some(place) = &self.log {
            let entry = meta.entry(&place.cluster, &place.groups, self.status.as_u16(), "deny", &self.message);
            // On record before kubectl prints it (one group commit; a flood
            // of refusals waits its turn instead of growing the queue).
            let write = Write::Audit { tenant: place.tenant.clone(), entry: Box::new(entry) };
            if let Err(e) = app.writer.commit(vec![write], REFUSAL_RECORD_TIMEOUT).await {
                tracing::error!(error = %e, "a refusal was not committed to the audit log; {}", e.fate());
            }
        }
        let mut r = status(self.status, self.reason, self.message);
        if let Some(v) = self.retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}

impl From<ApiError> for Refusal {
    /// The caller's refusals (401, 429, 503) as the kube path answers them.
    fn from(e: ApiError) -> Self {
        let reason = match e.status {
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
            StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
            StatusCode::FORBIDDEN => "Forbidden",
            _ => "InternalError",
        };
        let message = match e.code {
            "rate_limited" => e.message.split("; retry").next().unwrap_or_default().to_string() + "; retry shortly",
            _ => e.message,
        };
        Self { retry_after: e.retry_after, ..Self::new(e.status, reason, message) }
    }
}

impl From<crate::store::StoreError> for Refusal {
    fn from(e: crate::store::StoreError) -> Self {
        Self::from(ApiError::from(e))
    }
}

/// What the audit trail needs of a kube request the control plane decides on.
pub(crate) struct RequestMeta {
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
    /// Counted against the command quota here (chat counts its commands
    /// itself, once each).
    metered: bool,
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
}

/// The cluster a request is for, as the caller may use it.
struct Resolved {
    /// The cluster's tenant (the caller's own, or a granting one).
    tenant: Tenant,
    cluster: Cluster,
    role: Role,
    /// Where its refusals are recorded from now on.
    log: LogPlace,
}

/// Serves one kube-path request (mounted at `/k8s/clusters/{*rest}`).
pub async fn serve(
    State(app): State<Arc<App>>,
    caller: Result<Caller, ApiError>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    req: Request,
) -> Response {
    // The raw path: the cluster id, then the API path still escaped.
    let after = req.uri().path().strip_prefix("/k8s/clusters/").unwrap_or_default().to_string();
    let (cluster_id, rest) =
        after.split_once('/').map_or((after.as_str(), "/".to_string()), |(c, p)| (c, format!("/{p}")));
    let raw_query = req.uri().query().map(str::to_string);
    let (kubectl_command, kubectl_session) = {
        let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        (header("kubectl-command"), header("kubectl-session"))
    };
    let mut meta = RequestMeta {
        request_id,
        user: String::new(),
        client_address: req.extensions().get::<crate::ClientAddr>().map(|a| a.0.ip().to_string()).unwrap_or_default(),
        method: req.method().as_str().to_string(),
        path: match &raw_query {
            Some(q) => format!("{rest}?{q}"),
            None => rest.clone(),
        },
        info: kube_request::RequestInfo { verb: req.method().as_str().to_ascii_lowercase(), ..Default::default() },
        kubectl_command,
        kubectl_session,
        metered: true,
    };
    let mut resp = match pipeline(&app, caller, &mut meta, req, cluster_id, &rest, raw_query.as_deref()).await {
        Ok(resp) => resp,
        Err(refusal) => refusal.answer(&app, &meta).await,
    };
    resp.extensions_mut().insert(Verb(if meta.info.verb.is_empty() {
        "unknown".into()
    } else {
        meta.info.verb.clone()
    }));
    resp
}

/// Who a request the control plane makes on a person's behalf (a chat
/// command) is for, and how it is recorded.
pub(crate) struct OnBehalf<'a> {
    /// The person.
    pub principal: &'a crate::auth::Principal,
    /// Their address.
    pub client_address: &'a str,
    /// The command line it belongs to (the audit's `kubectlCommand`).
    pub command_line: &'a str,
    /// The plan it belongs to (the audit's `kubectlSession`).
    pub session: &'a str,
}

/// Sends `req` (its URI the API path and query, e.g.
/// `/api/v1/namespaces/web/pods?limit=500`) to `cluster_id` as `who`,
/// through the very pipeline kubectl's requests take: the same
/// classification, authorization, audit record, grant and relays. Not
/// counted against the command quota (the caller counts each command once).
/// Refusals are `Status` answers, as kubectl would get them.
pub(crate) async fn send_as(app: &Arc<App>, who: &OnBehalf<'_>, cluster_id: &str, req: Request) -> Response {
    let rest = req.uri().path().to_string();
    let raw_query = req.uri().query().map(str::to_string);
    let mut meta = RequestMeta {
        request_id: uuid::Uuid::now_v7().to_string(),
        user: String::new(),
        client_address: who.client_address.to_string(),
        method: req.method().as_str().to_string(),
        path: match &raw_query {
            Some(q) => format!("{rest}?{q}"),
            None => rest.clone(),
        },
        info: kube_request::RequestInfo { verb: req.method().as_str().to_ascii_lowercase(), ..Default::default() },
        kubectl_command: who.command_line.to_string(),
        kubectl_session: who.session.to_string(),
        metered: false,
    };
    let caller = Ok(Caller(who.principal.clone()));
    let mut resp = match pipeline(app, caller, &mut meta, req, cluster_id, &rest, raw_query.as_deref()).await {
        Ok(resp) => resp,
        Err(refusal) => refusal.answer(app, &meta).await,
    };
    if let Ok(v) = HeaderValue::from_str(&meta.request_id) {
        resp.headers_mut().entry("kubechat-request-id").or_insert(v);
    }
    resp
}

/// The API server's verb of a kube-path request, on its response (for the
/// request-duration histogram).
#[derive(Debug, Clone)]
pub struct Verb(pub String);

async fn pipeline(
    app: &Arc<App>,
    caller: Result<Caller, ApiError>,
    meta: &mut RequestMeta,
    req: Request,
    cluster_id: &str,
    rest: &str,
    raw_query: Option<&str>,
) -> Result<Response, Refusal> {
    let Caller(p) = caller?;
    meta.user = format!("kubechat:user:{}", p.user.email);
    let method = req.method().as_str().to_string();
    let target = kube_request::Target::parse(rest, raw_query)
        .and_then(|t| kube_request::classify(&method, &t).map(|info| (t, info)));
    if let Ok((t, info)) = &target {
        meta.path = t.path_and_query();
        meta.info = info.clone();
    }
    let r = resolve(app, &p, cluster_id).await?;
    // A spelling the API server would read differently from how it looks.
    let (target, info) = target
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "BadRequest", format!("KubeChat: {e}")).logged(&r.log))?;
    let upgrade = req.headers().get(header::UPGRADE).is_some();
    if upgrade {
        check_upgrade(req.headers(), &info).map_err(|why| {
            Refusal::new(StatusCode::BAD_REQUEST, "BadRequest", format!("KubeChat: {why}")).logged(&r.log)
        })?;
    }
    crate::kube_authz::authorize(r.role, &r.cluster.policy, &info).map_err(|reason| {
        let what = if info.resource.is_empty() { info.path.clone() } else { info.resource.clone() };
        Refusal::new(StatusCode::FORBIDDEN, "Forbidden", format!("{what} is forbidden: KubeChat: {reason}"))
            .logged(&r.log)
    })?;
    if meta.metered {
        quota(app, &r, meta).await?;
    }
    if let Err(open) = app.breakers.check(&r.tenant.id, std::time::Instant::now()) {
        app.metrics.breaker_refusals.inc();
        return Err(Refusal::unavailable(format!(
            "KubeChat: requests to tenant {}'s clusters failed on KubeChat's path (relay, tunnel or agent) {} times in a row; they are paused for {}s so the relay stays available to others; check the agent",
            r.tenant.slug,
            open.failures,
            open.retry_in.as_secs().max(1)
        ))
        .logged(&r.log));
    }
    let Some(relays) = app.relays.clone() else {
        return Err(
            Refusal::unavailable("this control plane has no relay client certificate configured").logged(&r.log)
        );
    };
    let mut candidates = routes(app, &r).await?;
    // Spread over the relays holding a tunnel.
    candidates.shuffle(&mut rand::rng());
    let now = now_ms();
    // No signature where every relay it may go to, and the agents there,
    // pass it by a MAC: the Ed25519 signature is the largest single cost
    // of the control plane's path.
    let macs_suffice = crate::directory::macs_suffice_on_all(&candidates, app.signer.key_id());
    let seal = if macs_suffice { GrantSigner::sign_macs_only } else { GrantSigner::sign };
    app.metrics.grants_issued.inc(if macs_suffice { "macs_only" } else { "signed" });
    let signed = seal(
        &app.signer,
        Grant {
            request_id: meta.request_id.clone(),
            tenant: r.tenant.id.clone(),
            cluster: r.cluster.id.clone(),
            user: meta.user.clone(),
            groups: r.log.groups.clone(),
            method,
            path: target.path_and_query(),
            issued_at_ms: now,
            expires_at_ms: now + grant::MAX_VALIDITY_MS,
            key_id: String::new(),
            client_address: meta.client_address.clone(),
            must_audit: crate::kube_authz::must_audit(&info),
        },
    );
    let must_audit = crate::kube_authz::must_audit(&info);
    let out = forward::Outgoing {
        tenant: &r.tenant,
        cluster: &r.cluster,
        groups: &r.log.groups,
        meta,
        grant: grant::to_header(&signed),
        signed,
        path_and_query: target.path_and_query(),
        upgrade,
        must_audit,
    };
    forward::send(app, &relays, &candidates, out, req, &r.log).await
}

/// The cluster and the caller's role on it; both tenants must be active.
async fn resolve(app: &App, p: &crate::auth::Principal, cluster_id: &str) -> Result<Resolved, Refusal> {
    let not_found = || Refusal::new(StatusCode::NOT_FOUND, "NotFound", format!("cluster {cluster_id} not found"));
    let Some(home_id) = p.user.tenant_id.clone() else { return Err(not_found()) };
    let home = app.cache.tenant(&home_id).await?.ok_or_else(not_found)?;
    // Refusals until the cluster is known go to the caller's own log.
    let home_log = LogPlace { tenant: home.id.clone(), cluster: cluster_id.to_string(), groups: Vec::new() };
    let Some(cluster) = app.cache.cluster(cluster_id).await? else {
        return Err(not_found().logged(&home_log));
    };
    let (tenant, role) = if cluster.tenant_id == home.id {
        (home.clone(), p.user.role)
    } else {
        // A cross-tenant grant, or the cluster does not exist for them.
        // Audited in the caller's own log: the other tenant's stays theirs.
        let Some(role) = app.cache.access_role(&cluster.tenant_id, &p.user.email, &home.slug).await? else {
            return Err(not_found().logged(&home_log));
        };
        let t = app.cache.tenant(&cluster.tenant_id).await?;
        (t.ok_or_else(not_found)?, role)
    };
    for t in [&home, &tenant] {
        if t.status == TenantStatus::Suspended {
            let message = format!("tenant {} is suspended; contact support to reactivate it", t.slug);
            return Err(Refusal::new(StatusCode::FORBIDDEN, "Forbidden", message).logged(&home_log));
        }
    }
    let groups = vec![format!("kubechat:tenant:{}", tenant.slug), format!("kubechat:role:{}", role.as_str())];
    let log = LogPlace { tenant: tenant.id.clone(), cluster: cluster.id.clone(), groups };
    Ok(Resolved { tenant, cluster, role, log })
}

/// Only `SPDY/3.1`, or websocket with Kubernetes' subprotocols, and only
/// for exec, attach and port-forward.
fn check_upgrade(h: &http::HeaderMap, info: &kube_request::RequestInfo) -> Result<(), String> {
    let up = h.get(header::UPGRADE).map(|v| v.to_str().map_err(|_| "the Upgrade header is not text"));
    let offered = h.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter().filter_map(|v| v.to_str().ok());
    match up {
        Some(Ok(up)) => headers::check_upgrade(up, offered)?,
        Some(Err(e)) => return Err(e.to_string()),
        None => return Ok(()),
    }
    if info.is_interactive() {
        Ok(())
    } else {
        Err("connection upgrades are only for exec, attach and port-forward".to_string())
    }
}

/// The cluster owner's monthly command quota (one kubectl invocation, one command).
async fn quota(app: &App, r: &Resolved, meta: &RequestMeta) -> Result<(), Refusal> {
    count_command(app, &r.tenant, &r.cluster.id, &meta.kubectl_session).await.map_err(|e| {
        let (status, message) = match e {
            ApiOrQuota::Api(e) => return Refusal::from(e),
            ApiOrQuota::Quota(m) => (StatusCode::TOO_MANY_REQUESTS, m),
        };
        Refusal::new(status, "TooManyRequests", message).logged(&r.log)
    })
}

/// Why a command was not counted.
pub(crate) enum ApiOrQuota {
    /// Storage failed.
    Api(ApiError),
    /// The quota is used up (the message says until when).
    Quota(String),
}

/// Counts a command against `tenant`'s monthly quota and meters it as
/// `command_executed` (once per `session` window; every call when
/// `session` is empty), or says why not.
pub(crate) async fn count_command(
    app: &App,
    tenant: &Tenant,
    cluster_id: &str,
    session: &str,
) -> Result<(), ApiOrQuota> {
    match app.quota.count(&app.db, &app.tasks, tenant, session).await.map_err(|e| ApiOrQuota::Api(e.into()))? {
        Ok(true) => {
            let write = Write::Meter {
                tenant: tenant.id.clone(),
                cluster: cluster_id.to_string(),
                usage_type: "command_executed".into(),
                quantity: 1.0,
                time_ms: crate::directory::now_ms(),
            };
            if let Err(e) = app.writer.queue(vec![write]).await {
                tracing::warn!(error = %e, "a command was not metered");
            }
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(q) => {
            app.metrics.quota_refusals.inc();
            // No Retry-After: client-go would sleep that long (days) and
            // retry; kubectl should print the reason now.
            Err(ApiOrQuota::Quota(format!(
                "KubeChat: tenant {} has used all {} kubectl commands of its {} plan for {}; the quota resets at {}; a tenant admin can upgrade with POST /v1/subscriptions/{}/upgrade",
                tenant.slug,
                q.limit,
                q.plan.as_str(),
                q.month,
                q.resets_at,
                tenant.id
            )))
        }
    }
}

/// The cluster a chat command is for, its tenant and the caller's role on
/// it, resolved as the kube path resolves them (the same 404 for another
/// tenant's cluster, the same suspension checks); or the status and
/// message to answer.
pub(crate) async fn resolve_cluster(
    app: &App,
    p: &crate::auth::Principal,
    cluster_id: &str,
) -> Result<(Tenant, Cluster, Role), (StatusCode, String)> {
    match resolve(app, p, cluster_id).await {
        Ok(r) => Ok((r.tenant, r.cluster, r.role)),
        Err(refusal) => Err((refusal.status, refusal.message)),
    }
}

/// The relays holding the cluster's tunnel that residency allows: the
/// tenant's home region, or the failover region its settings name when none
/// of the home region holds a tunnel.
async fn routes(app: &App, r: &Resolved) -> Result<Vec<crate::directory::Route>, Refusal> {
    let routes = app.cache.routes(&r.tenant.id, &r.cluster.id).await?;
    let failover = r.tenant.settings.get("failoverRegion").and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let home: Vec<_> = routes.iter().filter(|x| x.region == r.tenant.home_region).cloned().collect();
    let allowed: Vec<_> = if home.is_empty() && !failover.is_empty() {
        routes.iter().filter(|x| x.region == failover).cloned().collect()
    } else {
        home
    };
    if allowed.is_empty() && !routes.is_empty() {
        return Err(Refusal::unavailable(format!(
            "cluster {} is connected only through relays outside region {} (the tenant's home region{}); its agent must reach a relay of that region",
            r.cluster.name,
            r.tenant.home_region,
            if failover.is_empty() { String::new() } else { format!(", failover {failover}") }
        ))
        .logged(&r.log));
    }
    if allowed.is_empty() {
        return Err(Refusal::unavailable(format!(
            "cluster {} is not connected: no agent tunnel is up on any relay; check the agent (kubectl -n kubechat logs deploy/kubechat-agent)",
            r.cluster.name
        ))
        .logged(&r.log));
    }
    Ok(allowed)
}

/// A fresh Ed25519 grant signer (when none is configured).
pub fn generated_signer(key_id: &str) -> GrantSigner {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("the system random source works");
    GrantSigner::from_pkcs8(key_id, pkcs8.as_ref()).expect("a freshly generated key parses")
}

/// A full body from bytes (the audit export's chunks use a channel instead).
pub fn full(b: impl Into<Bytes>) -> Body {
    Body::from(b.into())
}
