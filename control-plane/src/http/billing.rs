//! Invoices, subscription upgrades and revenue.

use std::sync::Arc;

use axum::extract::{Path, State};
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{JsonBody, Member, Reply, admin_tenant, platform_only, reply};
use crate::app::App;
use crate::error::ApiError;
use crate::model::Plan;
use crate::store::Scope;

/// The billing router.
pub(crate) fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(invoice)).routes(routes!(upgrade)).routes(routes!(mrr))
}

#[utoipa::path(get, path = "/v1/tenants/{id}/invoices/{month}", tag = "billing",
    responses((status = 200, description = "the invoice of a month (YYYY-MM): the base plus each metered usage type")))]
async fn invoice(State(app): State<Arc<App>>, Member(p): Member, Path((id, month)): Path<(String, String)>) -> Reply {
    let t = admin_tenant(&app, &p, &id).await?;
    let valid = month.len() == 7
        && month.as_bytes()[4] == b'-'
        && month[..4].parse::<u16>().is_ok()
        && month[5..].parse::<u8>().is_ok_and(|m| (1..=12).contains(&m));
    if !valid {
        return Err(ApiError::bad_request("invalid_month", "the month must be YYYY-MM, e.g. 2026-11"));
    }
    reply(StatusCode::OK, json!(crate::billing::invoice(&app.db, &t, &month).await?))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Upgrade {
    plan: Plan,
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/upgrade", tag = "billing",
    responses((status = 200, description = "raise the plan and its limits at once")))]
async fn upgrade(
    State(app): State<Arc<App>>,
    Member(p): Member,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<Upgrade>,
) -> Reply {
    let t = upgrade_plan(&app, &p, &id, b.plan).await?;
    reply(StatusCode::OK, json!(t))
}

/// How plans rank: an upgrade goes up.
pub(crate) fn rank(p: Plan) -> u8 {
    match p {
        Plan::Free => 0,
        Plan::Team => 1,
        Plan::Enterprise => 2,
    }
}

/// Raises tenant `id`'s plan to `plan` and its limits with it, at once
/// (tenant admins; platform admins may also lower it). The REST API's and
/// the web app's upgrade.
pub(crate) async fn upgrade_plan(
    app: &App,
    p: &crate::auth::Principal,
    id: &str,
    plan: Plan,
) -> Result<crate::model::Tenant, ApiError> {
    let mut t = admin_tenant(app, p, id).await?;
    if rank(plan) <= rank(t.subscription.plan) && !p.is_platform() {
        return Err(ApiError::bad_request(
            "not_an_upgrade",
            format!(
                "{} is not above the current plan {}; contact support to downgrade",
                plan.as_str(),
                t.subscription.plan.as_str()
            ),
        ));
    }
    t.subscription.plan = plan;
    t.subscription.limits = plan.limits();
    let scope = if p.is_platform() { Scope::Platform } else { Scope::Tenant(t.id.clone()) };
    app.db.update_tenant(&scope, &t).await?;
    tracing::info!(tenant = %t.id, plan = plan.as_str(), "subscription upgraded");
    Ok(t)
}

#[utoipa::path(get, path = "/v1/analytics/mrr", tag = "billing",
    responses((status = 200, description = "monthly recurring revenue by plan (platform admins)")))]
async fn mrr(State(app): State<Arc<App>>, Member(p): Member) -> Reply {
    platform_only(&p, "see revenue")?;
    reply(StatusCode::OK, crate::billing::mrr(&app.db).await?)
}
