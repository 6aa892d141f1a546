//! Live tunnels from the directory: every one (platform admins) or a
//! tenant's.

use std::sync::Arc;

use axum::extract::{Path, State};
use http::StatusCode;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Member, Reply, admin_tenant, reply};
use crate::app::App;
use crate::error::ApiError;
use crate::store::Scope;

/// The tunnels router.
pub(crate) fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(all)).routes(routes!(of_tenant))
}

#[utoipa::path(get, path = "/v1/tunnels", tag = "tunnels",
    responses((status = 200, description = "every live tunnel (platform admins)")))]
async fn all(State(app): State<Arc<App>>, Member(p): Member) -> Reply {
    if !p.is_platform() {
        return Err(ApiError::forbidden("role", "only platform admins see every tunnel; use /v1/tenants/{id}/tunnels"));
    }
    reply(StatusCode::OK, json!({"items": crate::directory::tunnels(&app.db, &Scope::Platform, None).await?}))
}

#[utoipa::path(get, path = "/v1/tenants/{id}/tunnels", tag = "tunnels",
    responses((status = 200, description = "the tenant's live tunnels")))]
async fn of_tenant(State(app): State<Arc<App>>, Member(p): Member, Path(id): Path<String>) -> Reply {
    let t = admin_tenant(&app, &p, &id).await?;
    reply(
        StatusCode::OK,
        json!({"items": crate::directory::tunnels(&app.db, &Scope::Tenant(t.id.clone()), None).await?}),
    )
}
