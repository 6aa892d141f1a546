//! `/v1/tenants`: onboarding (platform admins), reading and changing a
//! tenant, its settings and usage, and offboarding with a purge.

use std::sync::Arc;

use axum::extract::{Path, State};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{JsonBody, Member, Reply, admin_tenant, platform_only, reply, tenant_for};
use crate::app::App;
use crate::auth;
use crate::error::ApiError;
use crate::model::*;
use crate::store::{Scope, now};

/// The tenants router.
pub(crate) fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_one, update, delete))
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(usage))
}

/// Whether `s` is a DNS label of at most 40 characters (slugs, cluster names).
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `e` looks like an email address.
pub(crate) fn valid_email(e: &str) -> bool {
    e.len() <= 254
        && e.split_once('@').is_some_and(|(a, d)| !a.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !e.contains(char::is_whitespace)
}

/// A tenant to onboard, with its first admin.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TenantCreate {
    pub(crate) name: String,
    pub(crate) slug: String,
    #[serde(default)]
    pub(crate) domain: Option<String>,
    #[serde(default)]
    pub(crate) home_region: Option<String>,
    #[serde(default)]
    pub(crate) plan: Option<Plan>,
    #[serde(default)]
    pub(crate) status: Option<TenantStatus>,
    pub(crate) admin_email: String,
    #[serde(default)]
    pub(crate) admin_name: Option<String>,
}

/// What onboarding made: the tenant, its first admin, and the admin's API
/// token (the secret shown once).
pub(crate) struct Onboarded {
    pub(crate) tenant: Tenant,
    pub(crate) admin: User,
    pub(crate) secret: crate::Secret,
    pub(crate) token: ApiToken,
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

#[utoipa::path(post, path = "/v1/tenants", tag = "tenants",
    responses((status = 201, description = "onboard a tenant (platform admin): tenant, first admin, token")))]
async fn create(State(app): State<Arc<App>>, Member(p): Member, JsonBody(b): JsonBody<TenantCreate>) -> Reply {
    platform_only(&p, "can onboard tenants")?;
    let Onboarded { tenant, admin, secret, token } = onboard(&app, b).await?;
    reply(StatusCode::CREATED, json!({"tenant": tenant, "admin": admin, "token": secret.0, "apiToken": token}))
}

/// Validates and stores a new tenant with its first admin and their token:
/// the REST API's onboarding (platform admins) and the web app's
/// self-service sign-up.
pub(crate) async fn onboard(app: &App, b: TenantCreate) -> Result<Onboarded, ApiError> {
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
    let tenant = Tenant {
        id: auth::new_id('t'),
        name: b.name.trim().to_string(),
        slug: b.slug,
        domain: b.domain,
        status: b.status.unwrap_or(TenantStatus::Trial),
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
    Ok(Onboarded { tenant, admin, secret, token })
}

#[utoipa::path(get, path = "/v1/tenants", tag = "tenants",
    responses((status = 200, description = "the tenants visible to the caller")))]
async fn list(State(app): State<Arc<App>>, Member(p): Member) -> Reply {
    let scope =
        if p.is_platform() { Scope::Platform } else { Scope::Tenant(p.user.tenant_id.clone().unwrap_or_default()) };
    reply(StatusCode::OK, json!({"items": app.db.tenants(&scope).await?}))
}

#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants", responses((status = 200, description = "a tenant")))]
async fn get_one(State(app): State<Arc<App>>, Member(p): Member, Path(id): Path<String>) -> Reply {
    reply(StatusCode::OK, json!(tenant_for(&app, &p, &id).await?))
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

#[utoipa::path(put, path = "/v1/tenants/{id}", tag = "tenants",
    responses((status = 200, description = "update a tenant (status, plan, limits, region: platform admins)")))]
async fn update(
    State(app): State<Arc<App>>,
    Member(p): Member,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<TenantUpdate>,
) -> Reply {
    let mut t = admin_tenant(&app, &p, &id).await?;
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
    reply(StatusCode::OK, json!(t))
}

#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "tenants",
    responses((status = 200, description = "offboard: purge everything of the tenant, revoke its clusters")))]
async fn delete(State(app): State<Arc<App>>, Member(p): Member, Path(id): Path<String>) -> Reply {
    // Another tenant's id must look missing, even to a caller who may not offboard.
    tenant_for(&app, &p, &id).await?;
    platform_only(&p, "can offboard a tenant")?;
    let revoked = app.db.purge_tenant(&id).await?;
    tracing::info!(tenant = %id, clusters = revoked.len(), "tenant offboarded and purged");
    reply(StatusCode::OK, json!({"deleted": id, "revokedClusters": revoked}))
}

#[utoipa::path(get, path = "/v1/tenants/{id}/settings", tag = "tenants",
    responses((status = 200, description = "the tenant's settings")))]
async fn get_settings(State(app): State<Arc<App>>, Member(p): Member, Path(id): Path<String>) -> Reply {
    reply(StatusCode::OK, crate::chat::settings::shown(tenant_for(&app, &p, &id).await?.settings))
}

#[utoipa::path(put, path = "/v1/tenants/{id}/settings", tag = "tenants",
    responses((status = 200, description = "replace the tenant's settings (a JSON object)")))]
async fn put_settings(
    State(app): State<Arc<App>>,
    Member(p): Member,
    Path(id): Path<String>,
    JsonBody(settings): JsonBody<Value>,
) -> Reply {
    let mut t = admin_tenant(&app, &p, &id).await?;
    if !settings.is_object() {
        return Err(ApiError::bad_request("invalid_settings", "settings must be a JSON object"));
    }
    crate::chat::settings::ChatSettings::parse(settings.get("chat"))
        .map_err(|e| ApiError::bad_request("invalid_settings", e))?;
    let mut settings = settings;
    // A key shown as *** and sent back unchanged keeps the stored one.
    if settings.pointer("/chat/llm/apiKey").and_then(|k| k.as_str()) == Some("***")
        && let (Some(old), Some(k)) =
            (t.settings.pointer("/chat/llm/apiKey").cloned(), settings.pointer_mut("/chat/llm/apiKey"))
    {
        *k = old;
    }
    t.settings = settings;
    app.db.update_tenant(&Scope::Tenant(t.id.clone()), &t).await?;
    reply(StatusCode::OK, crate::chat::settings::shown(t.settings))
}

#[utoipa::path(get, path = "/v1/tenants/{id}/usage", tag = "tenants",
    responses((status = 200, description = "counts against the plan, and this month's metered usage")))]
async fn usage(State(app): State<Arc<App>>, Member(p): Member, Path(id): Path<String>) -> Reply {
    let t = tenant_for(&app, &p, &id).await?;
    let mut v = json!(app.db.usage(&t).await?);
    // This month's metered usage, per type (what the invoice bills).
    let month = crate::audit::this_month();
    let metered: serde_json::Map<String, Value> =
        crate::audit::usage_totals(&app.db, &t.id, &month).await?.into_iter().map(|(k, q)| (k, json!(q))).collect();
    v["month"] = json!(month);
    v["metered"] = Value::Object(metered);
    reply(StatusCode::OK, v)
}
