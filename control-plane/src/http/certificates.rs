//! Agent certificates of a cluster (list, revoke one), and the list of
//! revoked clusters platform identities read.

use std::sync::Arc;

use axum::extract::{Path, State};
use http::StatusCode;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Member, Reply, admin_tenant, cluster_of, reply};
use crate::app::App;
use crate::error::ApiError;

/// The certificates router.
pub(crate) fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(revoke)).routes(routes!(revoked_clusters))
}

#[utoipa::path(get, path = "/v1/tenants/{id}/clusters/{clusterId}/certificates", tag = "certificates",
    responses((status = 200, description = "the agent certificates issued for the cluster")))]
async fn list(State(app): State<Arc<App>>, Member(p): Member, Path((id, cid)): Path<(String, String)>) -> Reply {
    let t = admin_tenant(&app, &p, &id).await?;
    cluster_of(&app, &t, &cid).await?;
    reply(StatusCode::OK, json!({"items": app.db.agent_certificates(&t.id, &cid).await?}))
}

#[utoipa::path(post, path = "/v1/tenants/{id}/clusters/{clusterId}/certificates/{serial}/revoke", tag = "certificates",
    responses((status = 200, description = "revoke one agent certificate (relays drop and refuse it)")))]
async fn revoke(
    State(app): State<Arc<App>>,
    Member(p): Member,
    Path((id, cid, serial)): Path<(String, String, String)>,
) -> Reply {
    let t = admin_tenant(&app, &p, &id).await?;
    cluster_of(&app, &t, &cid).await?;
    if !app.db.revoke_agent_certificate(&t.id, &cid, &serial).await? {
        return Err(ApiError::not_found("certificate", &serial));
    }
    tracing::info!(tenant = %t.id, cluster = %cid, %serial, "agent certificate revoked");
    reply(StatusCode::OK, json!({"revoked": serial}))
}

#[utoipa::path(get, path = "/v1/revoked-clusters", tag = "certificates",
    responses((status = 200, description = "revoked cluster ids (platform identities)")))]
async fn revoked_clusters(State(app): State<Arc<App>>, Member(p): Member) -> Reply {
    if !p.is_platform() {
        return Err(ApiError::forbidden("role", "only platform identities (relays) read the revocation list"));
    }
    reply(StatusCode::OK, json!({"clusters": app.db.revoked_clusters().await?}))
}
