//! Agent enrollment (a bootstrap token and a CSR buy a certificate),
//! renewal over the current certificate, and the grant keys relays and
//! agents trust.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use http::StatusCode;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{JsonBody, Reply, reply};
use crate::app::App;
use crate::enroll::AgentPeer;

/// The enrollment router (no bearer token: the bootstrap token or the
/// agent's certificate is the credential).
pub(crate) fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(enroll)).routes(routes!(renew)).routes(routes!(grant_keys))
}

#[utoipa::path(post, path = "/v1/enroll", tag = "enroll",
    responses((status = 200, description = "a bootstrap token and a CSR: the agent's certificate, the relay CA, relays and grant keys")))]
async fn enroll(State(app): State<Arc<App>>, JsonBody(b): JsonBody<crate::enroll::EnrollRequest>) -> Reply {
    let (status, v) = crate::enroll::enroll(&app, b).await?;
    reply(status, v)
}

#[utoipa::path(post, path = "/v1/renew", tag = "enroll",
    responses((status = 200, description = "a new certificate for the identity the TLS client certificate proves")))]
async fn renew(
    State(app): State<Arc<App>>,
    peer: Option<Extension<AgentPeer>>,
    JsonBody(b): JsonBody<crate::enroll::RenewRequest>,
) -> Reply {
    let (status, v) = crate::enroll::renew(&app, peer.as_ref().map(|p| &p.0), b).await?;
    reply(status, v)
}

#[utoipa::path(get, path = "/v1/grant-keys", tag = "enroll",
    responses((status = 200, description = "the grant-verification public keys (for relays' and agents' --grant-key)")))]
async fn grant_keys(State(app): State<Arc<App>>) -> Reply {
    // Public keys only: what relays and agents pass to --grant-key.
    let id = app.signer.key_id().to_string();
    let key = kubechat_protocol::grant::to_header(&app.signer.public_key());
    reply(StatusCode::OK, json!({"keys": [{"id": id, "publicKey": key, "flag": format!("{id}={key}")}]}))
}
