//! What handlers take from a request: the caller ([`Caller`], [`Member`]),
//! strict JSON bodies ([`JsonBody`]), and the caller's access to a tenant.
//! Authorization reads the extracted caller; nothing re-parses the token.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequest, FromRequestParts, Request};
use http::request::Parts;
use http::{StatusCode, header};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::app::App;
use crate::auth::{self, Principal};
use crate::error::ApiError;
use crate::model::{Cluster, Role, Tenant, TenantStatus};
use crate::store::{Scope, now};

/// Largest JSON body the REST API accepts.
pub const MAX_BODY: usize = 64 * 1024;

/// The bearer token of a request, if it sent a `kc_` one.
pub(crate) fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| t.starts_with(auth::TOKEN_PREFIX))
}

/// The authenticated caller, within the per-token and per-tenant rate
/// limits. Shared by the REST API and the kube path (which answers its
/// refusals as a Kubernetes `Status`).
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let token =
            bearer(parts).ok_or_else(|| ApiError::unauthenticated("send an API token: Authorization: Bearer kc_…"))?;
        let p = authenticate(app, token).await?;
        let now = Instant::now();
        app.per_token.check(&p.token_id, now).map_err(|w| ApiError::rate_limited("API token", w.as_secs().max(1)))?;
        if let Some(t) = &p.user.tenant_id {
            app.per_tenant.check(t, now).map_err(|w| ApiError::rate_limited("tenant", w.as_secs().max(1)))?;
        }
        Ok(Self(p))
    }
}

/// Authenticates `token` (a `kc_` token): its owner, unless the token is
/// unknown, revoked or expired (401). A storage failure is a 503. Warm
/// tokens are answered from the cache (invalidated by revocation, user
/// deletion and role changes through the change log).
pub(crate) async fn authenticate(app: &App, token: &str) -> Result<Principal, ApiError> {
    let owner = app
        .cache
        .token_owner(&auth::hash(token))
        .await?
        .ok_or_else(|| ApiError::unauthenticated("the API token is not valid"))?;
    if owner.revoked_at.is_some() {
        return Err(ApiError::unauthenticated("the API token was revoked; create a new one"));
    }
    if owner.expires_at.is_some_and(|e| e <= now()) {
        return Err(ApiError::unauthenticated("the API token has expired; create a new one"));
    }
    note_use(app, &owner.token_id);
    Ok(Principal { user: owner.user, token_id: owner.token_id, tenant_slug: None })
}

/// Tokens' last use is written at most once a minute per token, by the writer.
fn note_use(app: &App, token_id: &str) {
    static LAST: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, i64>>> =
        std::sync::LazyLock::new(Default::default);
    let at = now();
    {
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        if last.get(token_id).is_some_and(|t| at - t < 60) {
            return;
        }
        if last.len() > 100_000 {
            last.clear();
        }
        last.insert(token_id.to_string(), at);
    }
    let write = crate::writer::Write::TokenUsed { token_id: token_id.to_string(), at };
    if app.writer.try_queue(vec![write]).is_err() {
        tracing::debug!("token last-use not recorded: the writer queue is full");
    }
}

/// A [`Caller`] whose own tenant is not suspended (every REST call but
/// enrollment needs one). Its `tenant_slug` is set.
#[derive(Debug, Clone)]
pub struct Member(pub Principal);

impl FromRequestParts<Arc<App>> for Member {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let Caller(mut p) = Caller::from_request_parts(parts, app).await?;
        if let Some(t) = p.user.tenant_id.clone() {
            let tenant =
                app.cache.tenant(&t).await?.ok_or_else(|| ApiError::unauthenticated("the API token is not valid"))?;
            if tenant.status == TenantStatus::Suspended {
                return Err(ApiError::forbidden(
                    "tenant_suspended",
                    format!("tenant {} is suspended; contact support to reactivate it", tenant.slug),
                ));
            }
            p.tenant_slug = Some(tenant.slug);
        }
        Ok(Self(p))
    }
}

/// A JSON body: at most [`MAX_BODY`] bytes, unknown fields refused by the
/// target type, errors answered the API's way.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let body = http_body_util::Limited::new(req.into_body(), MAX_BODY);
        let bytes = body.collect().await.map_err(|_| ApiError::too_large(MAX_BODY))?.to_bytes();
        parse_json(&bytes).map(Self)
    }
}

/// `bytes` as a `T`, refusing a NUL character in any string or key: neither
/// backend should be asked to store one (PostgreSQL's text cannot hold it,
/// so it would come back as "storage unavailable" instead of this 400).
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the request body is not valid: {e}")))?;
    // A NUL can only be spelled `\u0000` (JSON forbids it raw); most bodies
    // do not hold that sequence at all, and are not looked at twice.
    if bytes.windows(6).any(|w| w == b"\\u0000") {
        // (A body that parsed as `T` but not as a tree, e.g. a lone
        // surrogate in a field `T` ignores, is not let through unchecked.)
        let tree: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("the request body is not valid: {e}")))?;
        if let Some(at) = nul_at(&tree, String::new()) {
            return Err(ApiError::bad_request(
                "invalid_json",
                format!("the request body holds a NUL character (\\u0000) at {at:?}; remove it"),
            ));
        }
    }
    Ok(value)
}

/// The JSON pointer of the first string or key holding a NUL in `v`.
fn nul_at(v: &serde_json::Value, at: String) -> Option<String> {
    match v {
        serde_json::Value::String(s) if s.contains('\0') => Some(if at.is_empty() { "/".into() } else { at }),
        serde_json::Value::Array(items) => items.iter().enumerate().find_map(|(i, x)| nul_at(x, format!("{at}/{i}"))),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, x)| {
            let here = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
            if k.contains('\0') { Some(here) } else { nul_at(x, here) }
        }),
        _ => None,
    }
}

/// Largest body of a chat command (a pasted manifest of up to 1 MiB, in JSON).
pub const MAX_COMMAND_BODY: usize = 2 << 20;

/// A chat command's JSON body: like [`JsonBody`], at most
/// [`MAX_COMMAND_BODY`] bytes.
#[derive(Debug)]
pub struct CommandBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for CommandBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let body = http_body_util::Limited::new(req.into_body(), MAX_COMMAND_BODY);
        let bytes = body.collect().await.map_err(|_| ApiError::too_large(MAX_COMMAND_BODY))?.to_bytes();
        parse_json(&bytes).map(Self)
    }
}

/// The caller's role in tenant `id`: their own, the platform's, or one
/// granted by a cross-tenant access grant; `None` if they have no access.
pub(crate) async fn role_in(app: &App, p: &Principal, id: &str) -> Result<Option<Role>, ApiError> {
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
pub(crate) async fn tenant_and_role(app: &App, p: &Principal, id: &str) -> Result<(Tenant, Role), ApiError> {
    let Some(role) = role_in(app, p, id).await? else {
        return Err(ApiError::not_found("tenant", id));
    };
    let scope = if p.is_platform() { Scope::Platform } else { Scope::Tenant(id.to_string()) };
    let t = app.db.tenant(&scope, id).await?.ok_or_else(|| ApiError::not_found("tenant", id))?;
    Ok((t, role))
}

/// The tenant `id` if the caller may see it.
pub(crate) async fn tenant_for(app: &App, p: &Principal, id: &str) -> Result<Tenant, ApiError> {
    Ok(tenant_and_role(app, p, id).await?.0)
}

/// Like [`tenant_for`], and the caller must administer it.
pub(crate) async fn admin_tenant(app: &App, p: &Principal, id: &str) -> Result<Tenant, ApiError> {
    let (t, role) = tenant_and_role(app, p, id).await?;
    if !matches!(role, Role::TenantAdmin | Role::PlatformAdmin) {
        return Err(ApiError::forbidden("role", format!("role {} cannot do this; ask a tenant admin", role.as_str())));
    }
    Ok(t)
}

/// Cluster `cid` of tenant `t`, or the same 404 as a missing one.
pub(crate) async fn cluster_of(app: &App, t: &Tenant, cid: &str) -> Result<Cluster, ApiError> {
    app.db.clusters(&t.id).await?.into_iter().find(|c| c.id == cid).ok_or_else(|| ApiError::not_found("cluster", cid))
}

/// Refuses unless the caller is a platform administrator.
pub(crate) fn platform_only(p: &Principal, what: &str) -> Result<(), ApiError> {
    if p.is_platform() {
        Ok(())
    } else {
        Err(ApiError::forbidden("role", format!("only platform administrators {what}")))
    }
}

/// Status and JSON body of a successful answer.
pub(crate) type Reply = Result<(StatusCode, axum::Json<serde_json::Value>), ApiError>;

/// A successful answer.
pub(crate) fn reply(status: StatusCode, v: serde_json::Value) -> Reply {
    Ok((status, axum::Json(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Named {
        #[allow(dead_code)]
        name: String,
    }

    /// A NUL is refused wherever it is, also in a body that parses as the
    /// handler's type but not as a JSON tree (a lone surrogate in a field
    /// the type ignores): before, that body skipped the check.
    #[test]
    fn a_nul_is_refused_even_beside_a_field_only_the_handlers_type_ignores() {
        let plain = br#"{"name":"a\u0000b"}"#;
        let e = parse_json::<Named>(plain).expect_err("a NUL");
        assert!(format!("{e:?}").contains("NUL"), "{e:?}");
        let sneaky = br#"{"name":"a\u0000b","junk":"\ud800"}"#;
        assert!(serde_json::from_slice::<Named>(sneaky).is_ok(), "the handler's type alone would take it");
        assert!(parse_json::<Named>(sneaky).is_err(), "let through unchecked");
        assert!(parse_json::<Named>(br#"{"name":"fine","junk":"\ud800"}"#).is_ok(), "no NUL, no second look");
    }
}
