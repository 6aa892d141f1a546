//! `/v1/tenants/{id}/cross-tenant-access`: a role on this tenant for a
//! person of another tenant, until revoked or expired.

use std::sync::Arc;

use axum::extract::{Path, State};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{JsonBody, Member, Reply, reply, tenant_for};
use super::tenants::{is_dns_label, valid_email};
use super::tokens::lifetime;
use crate::app::App;
use crate::auth::{self, Principal};
use crate::error::ApiError;
use crate::model::*;
use crate::store::now;

/// The cross-tenant access router.
pub(crate) fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(grant, list)).routes(routes!(revoke))
}

fn own_admins_only(p: &Principal, t: &Tenant) -> Result<(), ApiError> {
    if p.is_admin_of(&t.id) {
        Ok(())
    } else {
        Err(ApiError::forbidden("role", "only the tenant's own admins manage cross-tenant access"))
    }
}

/// A grant to make: a person of another tenant, the role here, how long.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AccessCreate {
    pub(crate) grantee_email: String,
    pub(crate) grantee_tenant: String,
    pub(crate) role: Role,
    #[serde(default)]
    pub(crate) expires_in_days: Option<u32>,
    #[serde(default)]
    pub(crate) expires_in_seconds: Option<u32>,
}

#[utoipa::path(post, path = "/v1/tenants/{id}/cross-tenant-access", tag = "access",
    responses((status = 201, description = "grant a user of another tenant (email + tenant slug) a role here")))]
async fn grant(
    State(app): State<Arc<App>>,
    Member(p): Member,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<AccessCreate>,
) -> Reply {
    let a = grant_access(&app, &p, &id, b).await?;
    reply(StatusCode::CREATED, json!(a))
}

/// Grants a person of another tenant a role on tenant `id` (its own
/// admins): the REST API's and the web app's grant.
pub(crate) async fn grant_access(
    app: &App,
    p: &Principal,
    id: &str,
    b: AccessCreate,
) -> Result<CrossTenantAccess, ApiError> {
    let t = tenant_for(app, p, id).await?;
    own_admins_only(p, &t)?;
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
    Ok(a)
}

#[utoipa::path(get, path = "/v1/tenants/{id}/cross-tenant-access", tag = "access",
    responses((status = 200, description = "list grants")))]
async fn list(State(app): State<Arc<App>>, Member(p): Member, Path(id): Path<String>) -> Reply {
    reply(StatusCode::OK, json!({"items": list_access(&app, &p, &id).await?}))
}

/// Tenant `id`'s grants to people of other tenants (its own admins).
pub(crate) async fn list_access(app: &App, p: &Principal, id: &str) -> Result<Vec<CrossTenantAccess>, ApiError> {
    let t = tenant_for(app, p, id).await?;
    own_admins_only(p, &t)?;
    Ok(app.db.accesses(&t.id).await?)
}

/// Revokes grant `gid` of tenant `id` (its own admins; another tenant's
/// grant is a 404 like a missing one).
pub(crate) async fn revoke_access(app: &App, p: &Principal, id: &str, gid: &str) -> Result<(), ApiError> {
    let t = tenant_for(app, p, id).await?;
    own_admins_only(p, &t)?;
    if !app.db.revoke_access(&t.id, gid).await? {
        return Err(ApiError::not_found("cross-tenant access", gid));
    }
    Ok(())
}

#[utoipa::path(delete, path = "/v1/tenants/{id}/cross-tenant-access/{grantId}", tag = "access",
    responses((status = 200, description = "revoke a grant")))]
async fn revoke(State(app): State<Arc<App>>, Member(p): Member, Path((id, gid)): Path<(String, String)>) -> Reply {
    revoke_access(&app, &p, &id, &gid).await?;
    reply(StatusCode::OK, json!({"revoked": gid}))
}
