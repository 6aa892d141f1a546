//! `/v1/clusters/{id}/commands`: chat commands (see [`crate::chat`]).
//!
//! - `POST …/commands` `{"argv": [...]}` or `{"text": "..."}`: a plan;
//!   reads carry their `result`, writes a dry run and a `confirmation`.
//! - `POST …/commands/{planId}/confirm` `{"confirmation", "typedName"?}`:
//!   runs a write plan once.
//! - `POST …/commands/{planId}/approve`: a second tenant admin's approval.
//! - `GET …/commands/{planId}/stream`: a stream's Server-Sent Events;
//!   `DELETE` stops it.
//!
//! Errors are `{"error": {"code", "message"}, "plan": {…}}`, the plan
//! showing each request and its verdict as far as it got.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{CommandBody, JsonBody, Member};
use crate::ClientAddr;
use crate::app::App;
use crate::chat::{self, Asker, ChatError, CommandRequest, ConfirmRequest};

/// The commands router.
pub(crate) fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(command))
        .routes(routes!(confirm))
        .routes(routes!(approve))
        .routes(routes!(open_stream, stop_stream))
}

impl IntoResponse for ChatError {
    fn into_response(self) -> Response {
        if self.code == "question" {
            let plan = self.plan.map(|p| json!(*p)).unwrap_or_default();
            return (StatusCode::OK, axum::Json(plan)).into_response();
        }
        let mut body = json!({"error": {"code": self.code, "message": self.message}});
        if let Some(p) = self.plan {
            body["plan"] = json!(*p);
        }
        (self.status, axum::Json(body)).into_response()
    }
}

fn address(addr: Option<Extension<ClientAddr>>) -> String {
    addr.map(|Extension(a)| a.0.ip().to_string()).unwrap_or_default()
}

#[utoipa::path(post, path = "/v1/clusters/{id}/commands", tag = "commands", request_body = CommandRequest,
    responses((status = 200, description = "a plan: each API request with its verdict; reads carry their result, writes a server-side dry run and a single-use confirmation; or a question back")))]
async fn command(
    State(app): State<Arc<App>>,
    Member(p): Member,
    addr: Option<Extension<ClientAddr>>,
    Path(id): Path<String>,
    CommandBody(req): CommandBody<CommandRequest>,
) -> Result<Response, ChatError> {
    let a = address(addr);
    let plan = chat::command(&app, &Asker { principal: &p, client_address: &a }, &id, req).await?;
    Ok((StatusCode::OK, axum::Json(plan)).into_response())
}

#[utoipa::path(post, path = "/v1/clusters/{id}/commands/{planId}/confirm", tag = "commands", request_body = ConfirmRequest,
    responses((status = 200, description = "the plan ran: what was done")))]
async fn confirm(
    State(app): State<Arc<App>>,
    Member(p): Member,
    addr: Option<Extension<ClientAddr>>,
    Path((id, plan_id)): Path<(String, String)>,
    JsonBody(req): JsonBody<ConfirmRequest>,
) -> Result<Response, ChatError> {
    let a = address(addr);
    let who = Asker { principal: &p, client_address: &a };
    let out = chat::confirm::confirm(&app, &who, &id, &plan_id, &req.confirmation, req.typed_name.as_deref()).await?;
    Ok((StatusCode::OK, axum::Json(out)).into_response())
}

#[utoipa::path(post, path = "/v1/clusters/{id}/commands/{planId}/approve", tag = "commands",
    responses((status = 200, description = "a second tenant admin approved the plan")))]
async fn approve(
    State(app): State<Arc<App>>,
    Member(p): Member,
    addr: Option<Extension<ClientAddr>>,
    Path((id, plan_id)): Path<(String, String)>,
) -> Result<Response, ChatError> {
    let a = address(addr);
    let v = chat::confirm::approve(&app, &Asker { principal: &p, client_address: &a }, &id, &plan_id).await?;
    Ok((StatusCode::OK, axum::Json(v)).into_response())
}

#[utoipa::path(get, path = "/v1/clusters/{id}/commands/{planId}/stream", tag = "commands",
    responses((status = 200, description = "Server-Sent Events: `line` (logs), `added`/`modified`/`deleted` (watches), `end`")))]
async fn open_stream(
    State(app): State<Arc<App>>,
    Member(p): Member,
    addr: Option<Extension<ClientAddr>>,
    Path((id, plan_id)): Path<(String, String)>,
) -> Result<Response, ChatError> {
    let a = address(addr);
    let events = chat::stream::open(&app, &Asker { principal: &p, client_address: &a }, &id, &plan_id).await?;
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

#[utoipa::path(delete, path = "/v1/clusters/{id}/commands/{planId}/stream", tag = "commands",
    responses((status = 200, description = "the stream is stopped")))]
async fn stop_stream(
    State(app): State<Arc<App>>,
    Member(p): Member,
    addr: Option<Extension<ClientAddr>>,
    Path((id, plan_id)): Path<(String, String)>,
) -> Result<Response, ChatError> {
    let a = address(addr);
    let v = chat::stream::stop(&app, &Asker { principal: &p, client_address: &a }, &id, &plan_id).await?;
    Ok((StatusCode::OK, axum::Json(v)).into_response())
}
