//! The control plane's public HTTP service, on axum: one router per
//! resource, merged here with the kube path, behind the middleware every
//! request passes (request id and span, metrics, and running the handler
//! in a task of its own so a client that goes away cannot cancel database
//! work half-way). The whole thing is a [`Router`] that tests drive
//! in-process with `tower::ServiceExt::oneshot`.
//!
//! # Layout
//! - [`extract`]: the caller ([`extract::Caller`], [`extract::Member`]),
//!   strict JSON bodies, a caller's access to a tenant.
//! - `tenants`, `users`, `tokens`, `access`, `clusters`, `certificates`,
//!   `audit`, `billing`, `tunnels`, `enroll`: a router each.
//! - the kube path (`crate::kube`) at `/k8s/clusters/{cluster}/…`.
//! - the web app (`crate::web`) at `/ui/…`.
//!
//! The OpenAPI document (`/v1/openapi.json`) is generated from the same
//! route declarations ([`openapi`]).

pub mod extract;

pub(crate) mod access;
pub(crate) mod audit;
pub(crate) mod billing;
mod certificates;
pub(crate) mod clusters;
mod commands;
mod enroll;
pub(crate) mod tenants;
pub(crate) mod tokens;
mod tunnels;
mod users;

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use http::{HeaderValue, Method, StatusCode};
use serde_json::json;
use tracing::Instrument;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

use kubechat_protocol::trace::TraceParent;

use crate::app::App;
use crate::error::ApiError;

/// The id of one request: its audit records, its grant, its log span and
/// the `Kubechat-Request-Id` answer header.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Response header naming the request id of every answer.
pub const REQUEST_ID_HEADER: &str = "kubechat-request-id";

/// Every documented route, with its OpenAPI operations.
fn api() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .merge(tenants::router())
        .merge(users::router())
        .merge(tokens::router())
        .merge(access::router())
        .merge(clusters::router())
        .merge(certificates::router())
        .merge(audit::router())
        .merge(billing::router())
        .merge(tunnels::router())
        .merge(enroll::router())
        .merge(commands::router())
}

/// The OpenAPI document of every REST route, generated from the routers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = api().split_for_parts();
    doc.info.title = "KubeChat control plane".into();
    doc.info.version = "v1".into();
    doc.info.description = Some(
        "Tenants, people, tokens, clusters, audit and billing. The kube path (/k8s/clusters/{clusterId}/…) speaks the Kubernetes API and is not listed here."
            .into(),
    );
    let bearer = SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("kc_…").build());
    doc.components.get_or_insert_with(Default::default).add_security_scheme("bearer", bearer);
    doc
}

/// The whole public service.
pub fn router(app: Arc<App>) -> Router {
    let (api, _) = api().split_for_parts();
    let doc = openapi();
    // REST answers come within the request timeout; the kube path has
    // watches and streams, and limits its body's arrival itself.
    let api = api.layer(middleware::from_fn_with_state(app.clone(), deadline));
    api.route("/v1/openapi.json", get(move || std::future::ready(Json(doc))))
        .route("/healthz", get(|| std::future::ready(Json(json!({"status": "ok"})))))
        .route("/k8s/clusters/{*rest}", any(crate::kube::serve))
        .merge(crate::web::router(app.clone()))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        // Outermost: everything below runs in a task a vanishing client cannot cancel.
        .layer(middleware::from_fn_with_state(app.clone(), detach))
        .with_state(app)
}

async fn no_route(req: Request) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "no_route",
        message: format!("no endpoint {}; see /v1/openapi.json", req.uri().path()),
        retry_after: None,
    }
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: format!("{} is not served at {}; see /v1/openapi.json", req.method(), req.uri().path()),
        retry_after: None,
    }
}

/// Answers a REST request that takes longer than the request timeout with
/// a 503 (its work goes on to the end in its own task).
async fn deadline(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(app.request_timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "timeout",
            message: format!("no answer within {} s; retry", app.request_timeout.as_secs()),
            retry_after: Some(1),
        }
        .into_response(),
    }
}

/// Gives the request its id and span, counts the answer.
async fn observe(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let id = uuid::Uuid::now_v7().to_string();
    req.extensions_mut().insert(RequestId(id.clone()));
    let kube = req.uri().path().starts_with("/k8s/");
    let writes = !kube && !matches!(*req.method(), Method::GET | Method::HEAD);
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_default();
    // One trace from here to the API server: the caller's, or a new one.
    let trace = req
        .headers()
        .get(kubechat_protocol::trace::HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
        .map_or_else(|| TraceParent::new(rand::random()), |t| t.child(rand::random()));
    req.extensions_mut().insert(trace);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        trace_id = %trace.trace_id_hex(),
        method = %req.method(),
        route = %route
    );
    let method = req.method().as_str().to_string();
    let started = std::time::Instant::now();
    let mut resp = next.run(req).instrument(span).await;
    // (A form post that succeeded answers with a redirect.)
    if writes && (resp.status().is_success() || resp.status().is_redirection()) {
        // What this write invalidated is dropped here before the answer
        // (other replicas follow within the cache's poll interval).
        if let Err(e) = app.cache.bounded_sync().await {
            tracing::warn!(error = %e, "cache not synced after a write");
            app.cache.invalidate(crate::cache::Change::All, "");
        }
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let counter = if kube { &app.metrics.kube_requests } else { &app.metrics.api_requests };
    counter.inc(resp.status().as_str());
    // Kube requests by the API server's verb; REST ones by method.
    let verb = resp.extensions().get::<crate::kube::Verb>().map_or(method, |v| v.0.clone());
    let route = if kube {
        "/k8s/clusters/{cluster}"
    } else if route.is_empty() {
        "unmatched"
    } else {
        &route
    };
    app.metrics.request_durations.observe(route, &verb, resp.status().as_u16(), started.elapsed().as_secs_f64());
    resp
}

/// Runs the rest of the request in a task of its own: a client that goes
/// away drops only the wait for the answer, never database work half-done
/// (sqlx's `begin` is not cancel-safe, transact-rs/sqlx#4394).
async fn detach(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    // Tracked: a draining control plane waits for it.
    match app.tasks.spawn(next.run(req)).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::error!(error = %e, "a request handler failed");
            ApiError::internal().into_response()
        }
    }
}
