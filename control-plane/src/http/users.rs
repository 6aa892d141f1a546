//! `/v1/tenants/{id}/users`: people of a tenant and their roles.

use std::sync::Arc;

use axum::extract::{Path, State};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{JsonBody, Member, Reply, admin_tenant, reply, tenant_for};
use super::tenants::valid_email;
use crate::app::App;
use crate::auth;
use crate::error::ApiError;
use crate::model::*;
use crate::store::{StoreError, now};

/// The users router.
pub(crate) fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(create, list)).routes(routes!(get_one, update, delete))
}

/// The refusal of a write above a plan limit.
pub(crate) fn plan_limit(t: &Tenant, what: &str, field: &str, fix: &str) -> ApiError {
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UserCreate {
    email: String,
    #[serde(default)]
    name: Option<String>,
    role: Role,
}

#[utoipa::path(post, path = "/v1/tenants/{id}/users", tag = "users",
    responses((status = 201, description = "add a user (plan maxUsers)")))]
async fn create(
    State(app): State<Arc<App>>,
    Member(p): Member,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<UserCreate>,
) -> Reply {
    let t = admin_tenant(&app, &p, &id).await?;
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
    reply(StatusCode::CREATED, json!(u))
}

#[utoipa::path(get, path = "/v1/tenants/{id}/users", tag = "users", responses((status = 200, description = "list users")))]
async fn list(State(app): State<Arc<App>>, Member(p): Member, Path(id): Path<String>) -> Reply {
    let t = admin_tenant(&app, &p, &id).await?;
    reply(StatusCode::OK, json!({"items": app.db.users(&t.id).await?}))
}

#[utoipa::path(get, path = "/v1/tenants/{id}/users/{userId}", tag = "users",
    responses((status = 200, description = "a user (admins, or the user themselves)")))]
async fn get_one(State(app): State<Arc<App>>, Member(p): Member, Path((id, uid)): Path<(String, String)>) -> Reply {
    let t = tenant_for(&app, &p, &id).await?;
    if !p.is_admin_of(&t.id) && p.user.id != uid {
        return Err(ApiError::not_found("user", &uid));
    }
    let u = app.db.user(&t.id, &uid).await?.ok_or_else(|| ApiError::not_found("user", &uid))?;
    reply(StatusCode::OK, json!(u))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UserUpdate {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    role: Option<Role>,
}

#[utoipa::path(put, path = "/v1/tenants/{id}/users/{userId}", tag = "users",
    responses((status = 200, description = "change name or role")))]
async fn update(
    State(app): State<Arc<App>>,
    Member(p): Member,
    Path((id, uid)): Path<(String, String)>,
    JsonBody(b): JsonBody<UserUpdate>,
) -> Reply {
    let t = admin_tenant(&app, &p, &id).await?;
    let mut u = app.db.user(&t.id, &uid).await?.ok_or_else(|| ApiError::not_found("user", &uid))?;
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
    reply(StatusCode::OK, json!(u))
}

#[utoipa::path(delete, path = "/v1/tenants/{id}/users/{userId}", tag = "users",
    responses((status = 200, description = "remove a user and their tokens")))]
async fn delete(State(app): State<Arc<App>>, Member(p): Member, Path((id, uid)): Path<(String, String)>) -> Reply {
    let t = admin_tenant(&app, &p, &id).await?;
    app.db.user(&t.id, &uid).await?.ok_or_else(|| ApiError::not_found("user", &uid))?;
    app.db.delete_user(&t.id, &uid).await?;
    reply(StatusCode::OK, json!({"deleted": uid}))
}
