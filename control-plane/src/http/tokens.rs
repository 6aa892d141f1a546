//! `/v1/tenants/{id}/tokens`: API tokens (a new one is shown once; only its
//! hash is stored).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{JsonBody, Member, Reply, reply, tenant_for};
use crate::app::App;
use crate::auth;
use crate::error::ApiError;
use crate::model::*;
use crate::store::now;

/// The tokens router.
pub(crate) fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(create, list)).routes(routes!(revoke))
}

/// An optional lifetime given as days or seconds (not both).
pub(crate) fn lifetime(days: Option<u32>, seconds: Option<u32>) -> Result<Option<Duration>, ApiError> {
    match (days, seconds) {
        (Some(d), None) => Ok(Some(Duration::from_secs(u64::from(d) * 86_400))),
        (None, Some(s)) => Ok(Some(Duration::from_secs(u64::from(s)))),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => {
            Err(ApiError::bad_request("invalid_expiry", "give expiresInDays or expiresInSeconds, not both"))
        }
    }
}

/// A token to create.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TokenCreate {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) user_id: Option<String>,
    #[serde(default)]
    pub(crate) expires_in_days: Option<u32>,
    #[serde(default)]
    pub(crate) expires_in_seconds: Option<u32>,
}

#[utoipa::path(post, path = "/v1/tenants/{id}/tokens", tag = "tokens",
    responses((status = 201, description = "create an API token (shown once)")))]
async fn create(
    State(app): State<Arc<App>>,
    Member(p): Member,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<TokenCreate>,
) -> Reply {
    let (secret, token) = create_token(&app, &p, &id, b).await?;
    reply(StatusCode::CREATED, json!({"token": secret.0, "apiToken": token}))
}

/// Creates token `b` in tenant `id` for `p` (or, for a tenant admin, for
/// another user): the secret (shown once) and the stored metadata. The REST
/// API and the web app.
pub(crate) async fn create_token(
    app: &App,
    p: &auth::Principal,
    id: &str,
    b: TokenCreate,
) -> Result<(auth::Secret, ApiToken), ApiError> {
    let t = tenant_for(app, p, id).await?;
    let owner = b.user_id.unwrap_or_else(|| p.user.id.clone());
    if owner != p.user.id && !p.is_admin_of(&t.id) {
        return Err(ApiError::forbidden("role", "only tenant admins can create tokens for other users"));
    }
    app.db.user(&t.id, &owner).await?.ok_or_else(|| ApiError::not_found("user", &owner))?;
    if b.name.trim().is_empty() || b.name.len() > 100 {
        return Err(ApiError::bad_request("invalid_name", "name must be 1 to 100 characters"));
    }
    let life = lifetime(b.expires_in_days, b.expires_in_seconds)?.unwrap_or(Duration::from_secs(90 * 86_400));
    let secret = auth::new_token();
    let token = ApiToken {
        id: auth::new_id('k'),
        tenant_id: Some(t.id.clone()),
        user_id: owner,
        name: b.name,
        prefix: auth::prefix(&secret.0),
        expires_at: Some(now() + life.as_secs() as i64),
        revoked_at: None,
        created_at: now(),
    };
    app.db.add_token(&token, &auth::hash(&secret.0)).await?;
    Ok((secret, token))
}

#[utoipa::path(get, path = "/v1/tenants/{id}/tokens", tag = "tokens",
    responses((status = 200, description = "list tokens (metadata only; a user sees their own)")))]
async fn list(State(app): State<Arc<App>>, Member(p): Member, Path(id): Path<String>) -> Reply {
    reply(StatusCode::OK, json!({"items": list_tokens(&app, &p, &id).await?}))
}

/// The tokens of tenant `id` that `p` may see (a user, their own).
pub(crate) async fn list_tokens(app: &App, p: &auth::Principal, id: &str) -> Result<Vec<ApiToken>, ApiError> {
    let t = tenant_for(app, p, id).await?;
    let mut tokens = app.db.tokens(&t.id).await?;
    if !p.is_admin_of(&t.id) {
        tokens.retain(|k| k.user_id == p.user.id);
    }
    Ok(tokens)
}

#[utoipa::path(delete, path = "/v1/tenants/{id}/tokens/{tokenId}", tag = "tokens",
    responses((status = 200, description = "revoke a token (refused on the next request)")))]
async fn revoke(State(app): State<Arc<App>>, Member(p): Member, Path((id, tid)): Path<(String, String)>) -> Reply {
    revoke_token(&app, &p, &id, &tid).await?;
    reply(StatusCode::OK, json!({"revoked": tid}))
}

/// Revokes token `tid` of tenant `id` if `p` owns it or administers the
/// tenant (else the same 404 as a missing one).
pub(crate) async fn revoke_token(app: &App, p: &auth::Principal, id: &str, tid: &str) -> Result<(), ApiError> {
    let t = tenant_for(app, p, id).await?;
    let owned = app.db.tokens(&t.id).await?.into_iter().find(|k| k.id == tid);
    match owned {
        Some(k) if p.is_admin_of(&t.id) || k.user_id == p.user.id => {
            app.db.revoke_token(&t.id, tid).await?;
            Ok(())
        }
        _ => Err(ApiError::not_found("token", tid)),
    }
}
