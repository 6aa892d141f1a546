//! The REST API under `/v1`: tenants, settings, usage, users, tokens,
//! clusters; bearer-token authentication, roles, tenant isolation (another
//! tenant's ids get the same 404 as missing ones), plan limits, suspension,
//! rate limits and strict JSON bodies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::auth::{self, Principal};
use crate::error::ApiError;
use crate::model::*;
use crate::ratelimit::RateLimiter;
use crate::store::{Db, Scope, StoreError, now};

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// Shared state of the API.
pub struct App {
    /// Storage.
    pub db: Db,
    /// Per-token limit.
    pub per_token: RateLimiter,
    /// Per-tenant limit.
    pub per_tenant: RateLimiter,
    /// Region of new tenants when none is given.
    pub default_region: String,
    /// Pooled connections to relays, if a relay client certificate is configured.
    pub relays: Option<crate::relays::RelayClients>,
    /// Signs per-request grants.
    pub signer: kubechat_protocol::grant::GrantSigner,
    /// The URL kubectl reaches this control plane at, for kubeconfigs.
    pub public_url: String,
    /// The CA (PEM) kubectl should trust for `public_url`, if not public.
    pub public_ca_pem: Option<String>,
    /// The agent chart reference `helm install` commands name.
    pub agent_chart: String,
    /// Agent enrollment, if an agent CA is configured.
    pub enrollment: Option<crate::enroll::Enrollment>,
    /// Per-tenant circuit breakers of the kube path.
    pub breakers: crate::breaker::Breakers,
    /// Prometheus metrics.
    pub metrics: crate::metrics::CpMetrics,
}

type Reply = Result<(StatusCode, Value), ApiError>;

fn respond(r: Reply) -> Response<crate::kube::Body> {
    let (status, body, retry) = match r {
        Ok((s, v)) => (s, v, None),
        Err(e) => (e.status, e.body(), e.retry_after),
    };
    let mut resp = Response::new(crate::kube::full(Bytes::from(serde_json::to_vec(&body).unwrap_or_default())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    if let Some(v) = retry.and_then(|s| header::HeaderValue::from_str(&s.to_string()).ok()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Serves one request.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<crate::kube::Body> {
    if let Some(rest) = req.uri().path().strip_prefix("/k8s/clusters/") {
        let (cluster, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(c, p)| (c, format!("/{p}")));
        let (cluster, path) = (cluster.to_string(), path);
        let resp = crate::kube::handle(&app, req, &cluster, &path).await;
        app.metrics.kube_requests.inc(resp.status().as_str());
        return resp;
    }
    if req.method() == Method::GET
        && let Some(id) = req.uri().path().strip_prefix("/v1/tenants/").and_then(|r| r.strip_suffix("/audit/export"))
        && !id.contains('/')
    {
        let id = id.to_string();
        return match export_audit(&app, &req, &id).await {
            Ok(r) => r,
            Err(e) => respond(Err(e)),
        };
    }
    let resp = respond(route(&app, req).await);
    app.metrics.api_requests.inc(resp.status().as_str());
    resp
}

/// `GET /v1/tenants/{id}/audit/export`: every audit event of the tenant as
/// JSON Lines, oldest first, streamed (with `seq`, `prevHash` and `hash`, so
/// the export can be verified offline); metered as `audit_export`.
async fn export_audit(
    app: &Arc<App>,
    req: &Request<Incoming>,
    id: &str,
) -> Result<Response<crate::kube::Body>, ApiError> {
    let p = checked_principal(app, req).await?;
    let t = admin_tenant(app, &p, id).await?;
    let (mut tx, body) = http_body_util::Channel::<Bytes, crate::kube::BoxError>::new(8);
    let app = app.clone();
    tokio::spawn(async move {
        let mut f = crate::audit::Filter { limit: 1000, ..Default::default() };
        let mut exported = 0u64;
        loop {
            let (items, next) = match crate::audit::list(&app.db, &t.id, &f).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "audit export failed");
                    tx.abort("storage failure during the export".into());
                    return;
                }
            };
            let mut chunk = Vec::new();
            for e in &items {
                chunk.extend_from_slice(&serde_json::to_vec(e).unwrap_or_default());
                chunk.push(b'\n');
            }
            exported += items.len() as u64;
            if tx.send_data(Bytes::from(chunk)).await.is_err() {
                return;
            }
            match next {
                Some(n) => f.after = n,
                None => break,
            }
        }
        let id = uuid::Uuid::now_v7().to_string();
        let now = crate::directory::now_ms();
        if let Err(e) = crate::audit::add_usage(&app.db, &id, &t.id, "", "audit_export", exported as f64, now).await {
            tracing::warn!(error = %e, "audit export not metered");
        }
    });
    let mut resp = Response::new(body.boxed_unsync());
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/x-ndjson"));
    Ok(resp)
}

async fn body_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let bytes =
        Limited::new(req.into_body(), MAX_BODY).collect().await.map_err(|_| ApiError::too_large(MAX_BODY))?.to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the request body is not valid: {e}")))
}

/// Authenticates the bearer token of `req`.
pub(crate) async fn authenticate(app: &App, req: &Request<Incoming>) -> Result<Principal, ApiError> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| t.starts_with(auth::TOKEN_PREFIX))
        .ok_or_else(|| ApiError::unauthenticated("send an API token: Authorization: Bearer kc_…"))?;
    let owner = app
        .db
        .token_owner(&auth::hash(token))
        .await?
        .ok_or_else(|| ApiError::unauthenticated("the API token is not valid"))?;
    if owner.revoked_at.is_some() {
        return Err(ApiError::unauthenticated("the API token was revoked; create a new one"));
    }
    if owner.expires_at.is_some_and(|e| e <= now()) {
        return Err(ApiError::unauthenticated("the API token has expired; create a new one"));
    }
    Ok(Principal { user: owner.user, token_id: owner.token_id, tenant_slug: None })
}

fn limited(rl: &RateLimiter, key: &str, scope: &str) -> Result<(), ApiError> {
    rl.check(key, Instant::now()).map_err(|wait| ApiError::rate_limited(scope, wait.as_secs().max(1)))
}

/// The authenticated caller, after rate limits and the suspension check.
async fn checked_principal(app: &Arc<App>, req: &Request<Incoming>) -> Result<Principal, ApiError> {
    let mut p = authenticate(app, req).await?;
    limited(&app.per_token, &p.token_id, "API token")?;
    if let Some(t) = p.user.tenant_id.clone() {
        limited(&app.per_tenant, &t, "tenant")?;
        // A suspended tenant is refused everywhere.
        let tenant = app
            .db
            .tenant(&Scope::Tenant(t.clone()), &t)
            .await?
            .ok_or_else(|| ApiError::unauthenticated("the API token is not valid"))?;
        if tenant.status == TenantStatus::Suspended {
            return Err(ApiError::forbidden(
                "tenant_suspended",
                format!("tenant {} is suspended; contact support to reactivate it", tenant.slug),
            ));
        }
        p.tenant_slug = Some(tenant.slug);
    }
    Ok(p)
}

async fn route(app: &Arc<App>, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let method = req.method().clone();
    match (method.clone(), path.as_str()) {
        (Method::GET, "/healthz") => return Ok((StatusCode::OK, json!({"status": "ok"}))),
        (Method::GET, "/v1/openapi.json") => return Ok((StatusCode::OK, crate::openapi::document())),
        (Method::POST, "/v1/enroll") => return crate::enroll::enroll(app, body_json(req).await?).await,
        (Method::POST, "/v1/renew") => {
            let peer = req.extensions().get::<crate::enroll::AgentPeer>().cloned();
            return crate::enroll::renew(app, peer.as_ref(), body_json(req).await?).await;
        }
        (Method::GET, "/v1/grant-keys") => {
            // Public keys only: what relays and agents pass to --grant-key.
            let id = app.signer.key_id().to_string();
            let key = kubechat_protocol::grant::to_header(&app.signer.public_key());
            return Ok((
                StatusCode::OK,
                json!({"keys": [{"id": id, "publicKey": key, "flag": format!("{id}={key}")}]}),
            ));
        }
        _ => {}
    }
    let p = checked_principal(app, &req).await?;
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segs.as_slice()) {
        (Method::GET, ["v1", "revoked-clusters"]) => {
            if !p.is_platform() {
                return Err(ApiError::forbidden("role", "only platform identities (relays) read the revocation list"));
            }
            Ok((StatusCode::OK, json!({"clusters": app.db.revoked_clusters().await?})))
        }
        (Method::POST, ["v1", "tenants"]) => create_tenant(app, &p, body_json(req).await?).await,
        (Method::GET, ["v1", "tenants"]) => {
            let scope = if p.is_platform() {
                Scope::Platform
            } else {
                Scope::Tenant(p.user.tenant_id.clone().unwrap_or_default())
            };
            Ok((StatusCode::OK, json!({"items": app.db.tenants(&scope).await?})))
        }
        (Method::GET, ["v1", "tenants", id]) => Ok((StatusCode::OK, json!(tenant_for(app, &p, id).await?))),
        (Method::PUT, ["v1", "tenants", id]) => update_tenant(app, &p, id, body_json(req).await?).await,
        (Method::DELETE, ["v1", "tenants", id]) => delete_tenant(app, &p, id).await,
        (Method::GET, ["v1", "tenants", id, "settings"]) => {
            Ok((StatusCode::OK, tenant_for(app, &p, id).await?.settings))
        }
        (Method::PUT, ["v1", "tenants", id, "settings"]) => {
            let mut t = admin_tenant(app, &p, id).await?;
            let settings: Value = body_json(req).await?;
            if !settings.is_object() {
                return Err(ApiError::bad_request("invalid_settings", "settings must be a JSON object"));
            }
            t.settings = settings;
            app.db.update_tenant(&Scope::Tenant(t.id.clone()), &t).await?;
            Ok((StatusCode::OK, t.settings))
        }
        (Method::GET, ["v1", "tenants", id, "usage"]) => {
            let t = tenant_for(app, &p, id).await?;
            let mut v = json!(app.db.usage(&t).await?);
            // This month's metered usage, per type (what the invoice bills).
            let month = crate::audit::this_month();
            let metered: serde_json::Map<String, Value> = crate::audit::usage_totals(&app.db, &t.id, &month)
                .await?
                .into_iter()
                .map(|(k, q)| (k, json!(q)))
                .collect();
            v["month"] = json!(month);
            v["metered"] = Value::Object(metered);
            Ok((StatusCode::OK, v))
        }
        (Method::POST, ["v1", "tenants", id, "users"]) => create_user(app, &p, id, body_json(req).await?).await,
        (Method::GET, ["v1", "tenants", id, "users"]) => {
            let t = admin_tenant(app, &p, id).await?;
            Ok((StatusCode::OK, json!({"items": app.db.users(&t.id).await?})))
        }
        (Method::GET, ["v1", "tenants", id, "users", uid]) => {
            let t = tenant_for(app, &p, id).await?;
            if !p.is_admin_of(&t.id) && p.user.id != *uid {
                return Err(ApiError::not_found("user", uid));
            }
            Ok((StatusCode::OK, json!(app.db.user(&t.id, uid).await?.ok_or_else(|| ApiError::not_found("user", uid))?)))
        }
        (Method::PUT, ["v1", "tenants", id, "users", uid]) => {
            update_user(app, &p, id, uid, body_json(req).await?).await
        }
        (Method::DELETE, ["v1", "tenants", id, "users", uid]) => {
            let t = admin_tenant(app, &p, id).await?;
            app.db.user(&t.id, uid).await?.ok_or_else(|| ApiError::not_found("user", uid))?;
            app.db.delete_user(&t.id, uid).await?;
            Ok((StatusCode::OK, json!({"deleted": uid})))
        }
        (Method::POST, ["v1", "tenants", id, "tokens"]) => create_token(app, &p, id, body_json(req).await?).await,
        (Method::GET, ["v1", "tenants", id, "tokens"]) => {
            let t = tenant_for(app, &p, id).await?;
            let mut tokens = app.db.tokens(&t.id).await?;
            if !p.is_admin_of(&t.id) {
                tokens.retain(|k| k.user_id == p.user.id);
            }
            Ok((StatusCode::OK, json!({"items": tokens})))
        }
        (Method::DELETE, ["v1", "tenants", id, "tokens", tid]) => {
            let t = tenant_for(app, &p, id).await?;
            let owned = app.db.tokens(&t.id).await?.into_iter().find(|k| k.id == *tid);
            match owned {
                Some(k) if p.is_admin_of(&t.id) || k.user_id == p.user.id => {
                    app.db.revoke_token(&t.id, tid).await?;
                    Ok((StatusCode::OK, json!({"revoked": tid})))
                }
                _ => Err(ApiError::not_found("token", tid)),
            }
        }
        (Method::POST, ["v1", "tenants", id, "cross-tenant-access"]) => {
            grant_access(app, &p, id, body_json(req).await?).await
        }
        (Method::GET, ["v1", "tenants", id, "cross-tenant-access"]) => {
            let t = tenant_for(app, &p, id).await?;
            if !p.is_admin_of(&t.id) {
                return Err(ApiError::forbidden("role", "only the tenant's own admins manage cross-tenant access"));
            }
            Ok((StatusCode::OK, json!({"items": app.db.accesses(&t.id).await?})))
        }
        (Method::DELETE, ["v1", "tenants", id, "cross-tenant-access", gid]) => {
            let t = tenant_for(app, &p, id).await?;
            if !p.is_admin_of(&t.id) {
                return Err(ApiError::forbidden("role", "only the tenant's own admins manage cross-tenant access"));
            }
            if !app.db.revoke_access(&t.id, gid).await? {
                return Err(ApiError::not_found("cross-tenant access", gid));
            }
            Ok((StatusCode::OK, json!({"revoked": gid})))
        }
        (Method::POST, ["v1", "tenants", id, "clusters"]) => create_cluster(app, &p, id, body_json(req).await?).await,
        (Method::GET, ["v1", "tenants", id, "clusters"]) => {
            let t = tenant_for(app, &p, id).await?;
            Ok((StatusCode::OK, json!({"items": app.db.clusters(&t.id).await?})))
        }
        (Method::GET, ["v1", "tenants", id, "clusters", cid]) => {
            let t = tenant_for(app, &p, id).await?;
            let c = app
                .db
                .clusters(&t.id)
                .await?
                .into_iter()
                .find(|c| c.id == *cid)
                .ok_or_else(|| ApiError::not_found("cluster", cid))?;
            let tunnels = crate::directory::tunnels(&app.db, &Scope::Tenant(t.id.clone()), Some(cid)).await?;
            let mut v = json!(c);
            v["connected"] = json!(!tunnels.is_empty());
            v["tunnels"] = json!(tunnels);
            Ok((StatusCode::OK, v))
        }
        (Method::GET, ["v1", "tenants", id, "clusters", cid, "certificates"]) => {
            let t = admin_tenant(app, &p, id).await?;
            cluster_of(app, &t, cid).await?;
            Ok((StatusCode::OK, json!({"items": app.db.agent_certificates(&t.id, cid).await?})))
        }
        (Method::POST, ["v1", "tenants", id, "clusters", cid, "certificates", serial, "revoke"]) => {
            let t = admin_tenant(app, &p, id).await?;
            cluster_of(app, &t, cid).await?;
            if !app.db.revoke_agent_certificate(&t.id, cid, serial).await? {
                return Err(ApiError::not_found("certificate", serial));
            }
            tracing::info!(tenant = %t.id, cluster = %cid, %serial, "agent certificate revoked");
            Ok((StatusCode::OK, json!({"revoked": serial})))
        }
        (Method::GET, ["v1", "tenants", id, "audit"]) => {
            let t = admin_tenant(app, &p, id).await?;
            let f = audit_filter(req.uri().query())?;
            let (items, next) = crate::audit::list(&app.db, &t.id, &f).await?;
            Ok((StatusCode::OK, json!({"items": items, "next": next})))
        }
        (Method::GET, ["v1", "tenants", id, "audit", "requests", request_id]) => {
            let t = admin_tenant(app, &p, id).await?;
            let joined = crate::audit::request(&app.db, &t.id, request_id).await?;
            joined.map(|j| (StatusCode::OK, json!(j))).ok_or_else(|| ApiError::not_found("request", request_id))
        }
        (Method::GET, ["v1", "tenants", id, "audit", "verify"]) => {
            let t = admin_tenant(app, &p, id).await?;
            Ok((StatusCode::OK, json!(crate::audit::verify(&app.db, &t.id, &app.signer).await?)))
        }
        (Method::GET, ["v1", "tenants", id, "invoices", month]) => {
            let t = admin_tenant(app, &p, id).await?;
            let valid = month.len() == 7
                && month.as_bytes()[4] == b'-'
                && month[..4].parse::<u16>().is_ok()
                && month[5..].parse::<u8>().is_ok_and(|m| (1..=12).contains(&m));
            if !valid {
                return Err(ApiError::bad_request("invalid_month", "the month must be YYYY-MM, e.g. 2026-11"));
            }
            Ok((StatusCode::OK, json!(crate::billing::invoice(&app.db, &t, month).await?)))
        }
        (Method::POST, ["v1", "subscriptions", id, "upgrade"]) => {
            let mut t = admin_tenant(app, &p, id).await?;
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase", deny_unknown_fields)]
            struct Upgrade {
                plan: Plan,
            }
            let b: Upgrade = body_json(req).await?;
            let rank = |p: Plan| match p {
                Plan::Free => 0,
                Plan::Team => 1,
                Plan::Enterprise => 2,
            };
            if rank(b.plan) <= rank(t.subscription.plan) && !p.is_platform() {
                return Err(ApiError::bad_request(
                    "not_an_upgrade",
                    format!(
                        "{} is not above the current plan {}; contact support to downgrade",
                        b.plan.as_str(),
                        t.subscription.plan.as_str()
                    ),
                ));
            }
            t.subscription.plan = b.plan;
            t.subscription.limits = b.plan.limits();
            let scope = if p.is_platform() { Scope::Platform } else { Scope::Tenant(t.id.clone()) };
            app.db.update_tenant(&scope, &t).await?;
            tracing::info!(tenant = %t.id, plan = b.plan.as_str(), "subscription upgraded");
            Ok((StatusCode::OK, json!(t)))
        }
        (Method::GET, ["v1", "analytics", "mrr"]) => {
            if !p.is_platform() {
                return Err(ApiError::forbidden("role", "only platform administrators see revenue"));
            }
            Ok((StatusCode::OK, crate::billing::mrr(&app.db).await?))
        }
        (Method::GET, ["v1", "tunnels"]) => {
            if !p.is_platform() {
                return Err(ApiError::forbidden(
                    "role",
                    "only platform admins see every tunnel; use /v1/tenants/{id}/tunnels",
                ));
            }
            Ok((StatusCode::OK, json!({"items": crate::directory::tunnels(&app.db, &Scope::Platform, None).await?})))
        }
        (Method::GET, ["v1", "tenants", id, "tunnels"]) => {
            let t = admin_tenant(app, &p, id).await?;
            Ok((
                StatusCode::OK,
                json!({"items": crate::directory::tunnels(&app.db, &Scope::Tenant(t.id.clone()), None).await?}),
            ))
        }
        (Method::PUT, ["v1", "tenants", id, "clusters", cid]) => {
            update_cluster(app, &p, id, cid, body_json(req).await?).await
        }
        (Method::POST, ["v1", "tenants", id, "clusters", cid, "bootstrap-tokens"]) => {
            let t = admin_tenant(app, &p, id).await?;
            app.db
                .clusters(&t.id)
                .await?
                .into_iter()
                .find(|c| c.id == *cid)
                .ok_or_else(|| ApiError::not_found("cluster", cid))?;
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase", deny_unknown_fields)]
            struct Life {
                #[serde(default)]
                expires_in_seconds: Option<u32>,
            }
            let life: Life = body_json(req).await?;
            let (token, expires) = crate::enroll::issue_bootstrap(
                app,
                &t.id,
                cid,
                life.expires_in_seconds.map(|s| Duration::from_secs(u64::from(s))),
            )
            .await?;
            let mut out = json!({"bootstrapToken": token, "expiresAt": expires});
            crate::enroll::helm_install(app, &token).add_to(&mut out);
            Ok((StatusCode::CREATED, out))
        }
        (Method::GET, ["v1", "tenants", id, "clusters", cid, "kubeconfig"]) => {
            let t = tenant_for(app, &p, id).await?;
            if p.user.tenant_id.as_deref() != Some(t.id.as_str()) {
                return Err(ApiError::forbidden("role", "kubeconfigs are for the tenant's own users"));
            }
            let c = app
                .db
                .clusters(&t.id)
                .await?
                .into_iter()
                .find(|c| c.id == *cid)
                .ok_or_else(|| ApiError::not_found("cluster", cid))?;
            let token = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default()
                .to_string();
            Ok((StatusCode::OK, json!({"kubeconfig": kubeconfig(app, &t, &c, &p.user.email, &token)})))
        }
        (Method::DELETE, ["v1", "tenants", id, "clusters", cid]) => {
            let t = admin_tenant(app, &p, id).await?;
            if !app.db.delete_cluster(&t.id, cid).await? {
                return Err(ApiError::not_found("cluster", cid));
            }
            Ok((StatusCode::OK, json!({"deleted": cid, "credentialsRevoked": true})))
        }
        _ => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "no_route",
            message: format!("no endpoint {path}; see /v1/openapi.json"),
            retry_after: None,
        }),
    }
}

/// The audit listing's query: `cluster`, `user`, `verb`, `resource`,
/// `kind`, `requestId`,
/// `since`/`until` (RFC 3339 or Unix milliseconds), `after` (cursor), `limit`
/// (1–1000, default 100).
fn audit_filter(query: Option<&str>) -> Result<crate::audit::Filter, ApiError> {
    let mut f = crate::audit::Filter { limit: 100, ..Default::default() };
    let time = |k: &str, v: &str| -> Result<i64, ApiError> {
        if let Ok(ms) = v.parse::<i64>() {
            return Ok(ms);
        }
        time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
            .map_err(|_| ApiError::bad_request("invalid_query", format!("{k} must be RFC 3339 or Unix milliseconds")))
    };
    let pairs = kubechat_protocol::kube_request::parse_query(query.unwrap_or_default())
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
    for (k, v) in pairs {
        match k.as_str() {
            "cluster" => f.cluster = Some(v),
            "kind" => f.kind = Some(v),
            "requestId" => f.request_id = Some(v),
            "user" => f.user = Some(v),
            "verb" => f.verb = Some(v),
            "resource" => f.resource = Some(v),
            "since" => f.since_ms = Some(time(&k, &v)?),
            "until" => f.until_ms = Some(time(&k, &v)?),
            "after" => {
                f.after = v.parse().map_err(|_| ApiError::bad_request("invalid_query", "after must be a number"))?;
            }
            "limit" => {
                f.limit = v
                    .parse::<i64>()
                    .ok()
                    .filter(|l| (1..=1000).contains(l))
                    .ok_or_else(|| ApiError::bad_request("invalid_query", "limit must be 1 to 1000"))?;
            }
            other => {
                return Err(ApiError::bad_request("invalid_query", format!("unknown audit filter {other:?}")));
            }
        }
    }
    Ok(f)
}

/// Cluster `cid` of tenant `t`, or the same 404 as a missing one.
async fn cluster_of(app: &App, t: &Tenant, cid: &str) -> Result<Cluster, ApiError> {
    app.db.clusters(&t.id).await?.into_iter().find(|c| c.id == cid).ok_or_else(|| ApiError::not_found("cluster", cid))
}

/// The caller's role in tenant `id`: their own, the platform's, or one
/// granted by a cross-tenant access grant; `None` if they have no access.
async fn role_in(app: &App, p: &Principal, id: &str) -> Result<Option<Role>, ApiError> {
    if p.can_see(id) {
        return Ok(Some(p.user.role));
    }
    match &p.tenant_slug {
        Some(slug) => Ok(app.db.access_role(id, &p.user.email, slug).await?),
        None => Ok(None),
    }
}

/// The tenant `id` if the caller may see it, with the caller's role there;
/// another tenant's id is a 404 exactly like a missing one.
async fn tenant_and_role(app: &App, p: &Principal, id: &str) -> Result<(Tenant, Role), ApiError> {
    let Some(role) = role_in(app, p, id).await? else {
        return Err(ApiError::not_found("tenant", id));
    };
    let scope = if p.is_platform() { Scope::Platform } else { Scope::Tenant(id.to_string()) };
    let t = app.db.tenant(&scope, id).await?.ok_or_else(|| ApiError::not_found("tenant", id))?;
    Ok((t, role))
}

/// The tenant `id` if the caller may see it.
async fn tenant_for(app: &App, p: &Principal, id: &str) -> Result<Tenant, ApiError> {
    Ok(tenant_and_role(app, p, id).await?.0)
}

/// Like [`tenant_for`], and the caller must administer it.
async fn admin_tenant(app: &App, p: &Principal, id: &str) -> Result<Tenant, ApiError> {
    let (t, role) = tenant_and_role(app, p, id).await?;
    if !matches!(role, Role::TenantAdmin | Role::PlatformAdmin) {
        return Err(ApiError::forbidden("role", format!("role {} cannot do this; ask a tenant admin", role.as_str())));
    }
    Ok(t)
}

/// A kubeconfig for `user` on `cluster`, carrying the caller's own token.
fn kubeconfig(app: &App, t: &Tenant, c: &Cluster, email: &str, token: &str) -> String {
    use base64::Engine;
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let name = format!("kubechat-{}-{}", t.slug, c.name);
    let server = format!("{}/k8s/clusters/{}", app.public_url.trim_end_matches('/'), c.id);
    let mut y = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {}\n  cluster:\n    server: {}\n",
        q(&name),
        q(&server)
    );
    if let Some(ca) = &app.public_ca_pem {
        y += &format!(
            "    certificate-authority-data: {}\n",
            base64::engine::general_purpose::STANDARD.encode(ca.as_bytes())
        );
    }
    y += &format!("users:\n- name: {}\n  user:\n    token: {}\n", q(email), q(token));
    y += &format!(
        "contexts:\n- name: {n}\n  context:\n    cluster: {n}\n    user: {u}\ncurrent-context: {n}\n",
        n = q(&name),
        u = q(email)
    );
    y
}

/// The refusal of a write above a plan limit.
fn plan_limit(t: &Tenant, what: &str, field: &str, fix: &str) -> ApiError {
    let limit = if what == "users" { t.subscription.limits.max_users } else { t.subscription.limits.max_clusters };
    ApiError::forbidden(
        "plan_limit",
        format!(
            "tenant {} is on the {} plan, which allows {limit} {what} ({field}); {fix} or upgrade the plan",
            t.slug,
            t.subscription.plan.as_str(),
        ),
    )
}

/// An optional lifetime given as days or seconds (not both).
fn lifetime(days: Option<u32>, seconds: Option<u32>) -> Result<Option<Duration>, ApiError> {
    match (days, seconds) {
        (Some(d), None) => Ok(Some(Duration::from_secs(u64::from(d) * 86_400))),
        (None, Some(s)) => Ok(Some(Duration::from_secs(u64::from(s)))),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => {
            Err(ApiError::bad_request("invalid_expiry", "give expiresInDays or expiresInSeconds, not both"))
        }
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn valid_email(e: &str) -> bool {
    e.len() <= 254
        && e.split_once('@').is_some_and(|(a, d)| !a.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !e.contains(char::is_whitespace)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TenantCreate {
    name: String,
    slug: String,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    home_region: Option<String>,
    #[serde(default)]
    plan: Option<Plan>,
    #[serde(default)]
    status: Option<TenantStatus>,
    admin_email: String,
    #[serde(default)]
    admin_name: Option<String>,
}

fn next_billing_date() -> String {
    let d = time::OffsetDateTime::now_utc().date();
    let (y, m) = if d.month() == time::Month::December {
        (d.year() + 1, time::Month::January)
    } else {
        (d.year(), d.month().next())
    };
    format!("{y:04}-{:02}-01", u8::from(m))
}

async fn create_tenant(app: &App, p: &Principal, b: TenantCreate) -> Reply {
    if !p.is_platform() {
        return Err(ApiError::forbidden("role", "only platform administrators can onboard tenants"));
    }
    if !is_dns_label(&b.slug) {
        return Err(ApiError::bad_request(
            "invalid_slug",
            "slug must be lowercase letters, digits and '-', at most 40 characters",
        ));
    }
    if b.name.trim().is_empty() || b.name.len() > 200 {
        return Err(ApiError::bad_request("invalid_name", "name must be 1 to 200 characters"));
    }
    if !valid_email(&b.admin_email) {
        return Err(ApiError::bad_request(
            "invalid_email",
            format!("adminEmail {:?} is not an email address", b.admin_email),
        ));
    }
    let plan = b.plan.unwrap_or(Plan::Free);
    let status = b.status.unwrap_or(TenantStatus::Trial);
    let tenant = Tenant {
        id: auth::new_id('t'),
        name: b.name.trim().to_string(),
        slug: b.slug,
        domain: b.domain,
        status,
        home_region: b.home_region.unwrap_or_else(|| app.default_region.clone()),
        settings: json!({}),
        subscription: Subscription {
            plan,
            limits: plan.limits(),
            billing_cycle: "monthly".into(),
            next_billing_date: next_billing_date(),
        },
        created_at: now(),
    };
    let admin = User {
        id: auth::new_id('u'),
        tenant_id: Some(tenant.id.clone()),
        email: b.admin_email.to_ascii_lowercase(),
        name: b.admin_name.unwrap_or_default(),
        role: Role::TenantAdmin,
        created_at: now(),
    };
    let secret = auth::new_token();
    let token = ApiToken {
        id: auth::new_id('k'),
        tenant_id: Some(tenant.id.clone()),
        user_id: admin.id.clone(),
        name: "onboarding".into(),
        prefix: auth::prefix(&secret.0),
        expires_at: None,
        revoked_at: None,
        created_at: now(),
    };
    app.db.create_tenant(&tenant, &admin, &token, &auth::hash(&secret.0)).await.map_err(|e| {
        if e.is_conflict_on("slug") {
            ApiError::conflict(format!("a tenant with slug {} already exists", tenant.slug))
        } else {
            e.into()
        }
    })?;
    tracing::info!(tenant = %tenant.id, slug = %tenant.slug, "tenant onboarded");
    Ok((StatusCode::CREATED, json!({"tenant": tenant, "admin": admin, "token": secret.0, "apiToken": token})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TenantUpdate {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    status: Option<TenantStatus>,
    #[serde(default)]
    plan: Option<Plan>,
    #[serde(default)]
    home_region: Option<String>,
    /// A contract's own limits (platform administrators only).
    #[serde(default)]
    limits: Option<UsageLimits>,
}

async fn update_tenant(app: &App, p: &Principal, id: &str, b: TenantUpdate) -> Reply {
    let mut t = admin_tenant(app, p, id).await?;
    if (b.status.is_some() || b.plan.is_some() || b.home_region.is_some() || b.limits.is_some()) && !p.is_platform() {
        return Err(ApiError::forbidden(
            "role",
            "only platform administrators can change status, plan, limits or home region; tenant admins upgrade with POST /v1/subscriptions/{id}/upgrade",
        ));
    }
    if let Some(n) = b.name {
        if n.trim().is_empty() || n.len() > 200 {
            return Err(ApiError::bad_request("invalid_name", "name must be 1 to 200 characters"));
        }
        t.name = n.trim().to_string();
    }
    if b.domain.is_some() {
        t.domain = b.domain;
    }
    if let Some(s) = b.status {
        t.status = s;
    }
    if let Some(plan) = b.plan {
        t.subscription.plan = plan;
        t.subscription.limits = plan.limits();
    }
    if let Some(l) = b.limits {
        if l.max_users < 0 || l.max_clusters < 0 || l.max_commands_per_month < 0 || l.max_audit_retention_days < 1 {
            return Err(ApiError::bad_request(
                "invalid_limits",
                "limits must not be negative; retention at least 1 day",
            ));
        }
        t.subscription.limits = l;
    }
    if let Some(r) = b.home_region {
        t.home_region = r;
    }
    let scope = if p.is_platform() { Scope::Platform } else { Scope::Tenant(t.id.clone()) };
    app.db.update_tenant(&scope, &t).await?;
    Ok((StatusCode::OK, json!(t)))
}

async fn delete_tenant(app: &App, p: &Principal, id: &str) -> Reply {
    if !p.is_platform() {
        // Tenants cannot offboard themselves through the API; and another
        // tenant's id must look missing.
        tenant_for(app, p, id).await?;
        return Err(ApiError::forbidden("role", "only platform administrators can offboard a tenant"));
    }
    tenant_for(app, p, id).await?;
    let revoked = app.db.purge_tenant(id).await?;
    tracing::info!(tenant = %id, clusters = revoked.len(), "tenant offboarded and purged");
    Ok((StatusCode::OK, json!({"deleted": id, "revokedClusters": revoked})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UserCreate {
    email: String,
    #[serde(default)]
    name: Option<String>,
    role: Role,
}

async fn create_user(app: &App, p: &Principal, id: &str, b: UserCreate) -> Reply {
    let t = admin_tenant(app, p, id).await?;
    if b.role == Role::PlatformAdmin {
        return Err(ApiError::bad_request("invalid_role", "role must be tenant_admin, tenant_user or tenant_viewer"));
    }
    if !valid_email(&b.email) {
        return Err(ApiError::bad_request("invalid_email", format!("email {:?} is not an email address", b.email)));
    }
    let u = User {
        id: auth::new_id('u'),
        tenant_id: Some(t.id.clone()),
        email: b.email.to_ascii_lowercase(),
        name: b.name.unwrap_or_default(),
        role: b.role,
        created_at: now(),
    };
    app.db.add_user(&t, &u).await.map_err(|e| match e {
        StoreError::LimitReached { .. } => plan_limit(&t, "users", "maxUsers", "remove a user"),
        e if e.is_conflict_on("email") => {
            ApiError::conflict(format!("a user with email {} already exists in this tenant", u.email))
        }
        e => e.into(),
    })?;
    Ok((StatusCode::CREATED, json!(u)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UserUpdate {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    role: Option<Role>,
}

async fn update_user(app: &App, p: &Principal, id: &str, uid: &str, b: UserUpdate) -> Reply {
    let t = admin_tenant(app, p, id).await?;
    let mut u = app.db.user(&t.id, uid).await?.ok_or_else(|| ApiError::not_found("user", uid))?;
    if b.role == Some(Role::PlatformAdmin) {
        return Err(ApiError::bad_request("invalid_role", "role must be tenant_admin, tenant_user or tenant_viewer"));
    }
    if let Some(n) = b.name {
        u.name = n;
    }
    if let Some(r) = b.role {
        u.role = r;
    }
    app.db.update_user(&u).await?;
    Ok((StatusCode::OK, json!(u)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenCreate {
    name: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    expires_in_days: Option<u32>,
    #[serde(default)]
    expires_in_seconds: Option<u32>,
}

async fn create_token(app: &App, p: &Principal, id: &str, b: TokenCreate) -> Reply {
    let t = tenant_for(app, p, id).await?;
    let owner = b.user_id.unwrap_or_else(|| p.user.id.clone());
    if owner != p.user.id && !p.is_admin_of(&t.id) {
        return Err(ApiError::forbidden("role", "only tenant admins can create tokens for other users"));
    }
    app.db.user(&t.id, &owner).await?.ok_or_else(|| ApiError::not_found("user", &owner))?;
    if b.name.trim().is_empty() || b.name.len() > 100 {
        return Err(ApiError::bad_request("invalid_name", "name must be 1 to 100 characters"));
    }
    let life = Some(lifetime(b.expires_in_days, b.expires_in_seconds)?.unwrap_or(Duration::from_secs(90 * 86_400)));
    let secret = auth::new_token();
    let token = ApiToken {
        id: auth::new_id('k'),
        tenant_id: Some(t.id.clone()),
        user_id: owner,
        name: b.name,
        prefix: auth::prefix(&secret.0),
        expires_at: life.map(|l| now() + l.as_secs() as i64),
        revoked_at: None,
        created_at: now(),
    };
    app.db.add_token(&token, &auth::hash(&secret.0)).await?;
    Ok((StatusCode::CREATED, json!({"token": secret.0, "apiToken": token})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AccessCreate {
    grantee_email: String,
    grantee_tenant: String,
    role: Role,
    #[serde(default)]
    expires_in_days: Option<u32>,
    #[serde(default)]
    expires_in_seconds: Option<u32>,
}

async fn grant_access(app: &App, p: &Principal, id: &str, b: AccessCreate) -> Reply {
    let t = tenant_for(app, p, id).await?;
    if !p.is_admin_of(&t.id) {
        return Err(ApiError::forbidden("role", "only the tenant's own admins manage cross-tenant access"));
    }
    if b.role == Role::PlatformAdmin {
        return Err(ApiError::bad_request("invalid_role", "role must be tenant_admin, tenant_user or tenant_viewer"));
    }
    if !valid_email(&b.grantee_email) || !is_dns_label(&b.grantee_tenant) {
        return Err(ApiError::bad_request(
            "invalid_grantee",
            "granteeEmail must be an email and granteeTenant a tenant slug",
        ));
    }
    if b.grantee_tenant == t.slug {
        return Err(ApiError::bad_request(
            "invalid_grantee",
            "members of this tenant need no cross-tenant access; add them as users",
        ));
    }
    let life = lifetime(b.expires_in_days, b.expires_in_seconds)?.map(|d| d.as_secs() as i64);
    let a = CrossTenantAccess {
        id: auth::new_id('x'),
        tenant_id: t.id.clone(),
        grantee_email: b.grantee_email.to_ascii_lowercase(),
        grantee_tenant: b.grantee_tenant,
        role: b.role,
        expires_at: life.map(|l| now() + l),
        created_at: now(),
    };
    app.db.add_access(&a).await?;
    Ok((StatusCode::CREATED, json!(a)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClusterCreate {
    name: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    labels: serde_json::Map<String, Value>,
    #[serde(default)]
    policy: ClusterPolicy,
}

async fn create_cluster(app: &App, p: &Principal, id: &str, b: ClusterCreate) -> Reply {
    let t = admin_tenant(app, p, id).await?;
    if !is_dns_label(&b.name) {
        return Err(ApiError::bad_request(
            "invalid_name",
            "cluster name must be lowercase letters, digits and '-', at most 40 characters",
        ));
    }
    let c = Cluster {
        id: auth::new_id('c'),
        tenant_id: t.id.clone(),
        name: b.name,
        region: b.region.unwrap_or_else(|| t.home_region.clone()),
        labels: b.labels,
        policy: b.policy,
        created_at: now(),
    };
    app.db.add_cluster(&t, &c).await.map_err(|e| match e {
        StoreError::LimitReached { .. } => plan_limit(&t, "clusters", "maxClusters", "remove a cluster"),
        e if e.is_conflict_on("name") => {
            ApiError::conflict(format!("a cluster named {} already exists in this tenant", c.name))
        }
        e => e.into(),
    })?;
    let mut out = json!(c);
    if app.enrollment.is_some() {
        let (token, expires) = crate::enroll::issue_bootstrap(app, &t.id, &c.id, None).await?;
        out["bootstrapToken"] = json!(token);
        out["bootstrapExpiresAt"] = json!(expires);
        crate::enroll::helm_install(app, &token).add_to(&mut out);
    }
    Ok((StatusCode::CREATED, out))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClusterUpdate {
    #[serde(default)]
    labels: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    policy: Option<ClusterPolicy>,
}

async fn update_cluster(app: &App, p: &Principal, id: &str, cid: &str, b: ClusterUpdate) -> Reply {
    let t = admin_tenant(app, p, id).await?;
    let mut c = app
        .db
        .clusters(&t.id)
        .await?
        .into_iter()
        .find(|c| c.id == cid)
        .ok_or_else(|| ApiError::not_found("cluster", cid))?;
    if let Some(l) = b.labels {
        c.labels = l;
    }
    if let Some(pol) = b.policy {
        c.policy = pol;
    }
    app.db.update_cluster(&c).await?;
    Ok((StatusCode::OK, json!(c)))
}
