//! `/v1/tenants/{id}/audit`: the hash-chained audit log (filters and
//! pages), one request's records joined, chain verification, and a
//! streamed JSON Lines export.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use bytes::Bytes;
use http::{StatusCode, header};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Member, Reply, admin_tenant, reply};
use crate::app::App;
use crate::audit::Filter;
use crate::error::ApiError;
use crate::writer::Write;

/// The audit router.
pub(crate) fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(request)).routes(routes!(verify)).routes(routes!(export))
}

/// The listing's query: `cluster`, `user`, `verb`, `resource`, `kind`,
/// `decision`, `requestId`, `since`/`until` (RFC 3339 or Unix
/// milliseconds), `after` (cursor, oldest first) or `before` (cursor,
/// newest first; `before=max` for the newest page), `limit` (1–1000,
/// default 100).
fn filter(query: Option<&str>) -> Result<Filter, ApiError> {
    let mut f = Filter { limit: 100, ..Default::default() };
    let time = |k: &str, v: &str| -> Result<i64, ApiError> {
        if let Ok(ms) = v.parse::<i64>() {
            return Ok(ms);
        }
        time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
            .map_err(|_| ApiError::bad_request("invalid_query", format!("{k} must be RFC 3339 or Unix milliseconds")))
    };
    let pairs = kubechat_protocol::kube_request::parse_query(query.unwrap_or_default())
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
    for (k, v) in pairs {
        match k.as_str() {
            "cluster" => f.cluster = Some(v),
            "kind" => f.kind = Some(v),
            "requestId" => f.request_id = Some(v),
            "user" => f.user = Some(v),
            "verb" => f.verb = Some(v),
            "resource" => f.resource = Some(v),
            "since" => f.since_ms = Some(time(&k, &v)?),
            "until" => f.until_ms = Some(time(&k, &v)?),
            "decision" => f.decision = Some(v),
            "after" => {
                f.after = v.parse().map_err(|_| ApiError::bad_request("invalid_query", "after must be a number"))?;
            }
            "before" => {
                let before = if v == "max" { Ok(i64::MAX) } else { v.parse() };
                f.before =
                    Some(before.map_err(|_| ApiError::bad_request("invalid_query", "before must be a number or max"))?);
            }
            "limit" => {
                f.limit = v
                    .parse::<i64>()
                    .ok()
                    .filter(|l| (1..=1000).contains(l))
                    .ok_or_else(|| ApiError::bad_request("invalid_query", "limit must be 1 to 1000"))?;
            }
            other => {
                return Err(ApiError::bad_request("invalid_query", format!("unknown audit filter {other:?}")));
            }
        }
    }
    Ok(f)
}

#[utoipa::path(get, path = "/v1/tenants/{id}/audit", tag = "audit",
    responses((status = 200, description = "a page of audit events, oldest first, and the next cursor")))]
async fn list(State(app): State<Arc<App>>, Member(p): Member, Path(id): Path<String>, RawQuery(q): RawQuery) -> Reply {
    let t = admin_tenant(&app, &p, &id).await?;
    let f = filter(q.as_deref())?;
    let (items, next) = crate::audit::list(&app.db, &t.id, &f).await?;
    reply(StatusCode::OK, json!({"items": items, "next": next}))
}

#[utoipa::path(get, path = "/v1/tenants/{id}/audit/requests/{requestId}", tag = "audit",
    responses((status = 200, description = "one kube request: the control plane's decision and the relays' outcome, joined")))]
async fn request(State(app): State<Arc<App>>, Member(p): Member, Path((id, rid)): Path<(String, String)>) -> Reply {
    let t = admin_tenant(&app, &p, &id).await?;
    let joined = crate::audit::request(&app.db, &t.id, &rid).await?;
    joined.map(|j| (StatusCode::OK, axum::Json(json!(j)))).ok_or_else(|| ApiError::not_found("request", &rid))
}

#[utoipa::path(get, path = "/v1/tenants/{id}/audit/verify", tag = "audit",
    responses((status = 200, description = "the chain verified: intact, or the first break")))]
async fn verify(State(app): State<Arc<App>>, Member(p): Member, Path(id): Path<String>) -> Reply {
    let t = admin_tenant(&app, &p, &id).await?;
    reply(StatusCode::OK, json!(crate::audit::verify(&app.db, &t.id, &app.signer).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{id}/audit/export", tag = "audit",
    responses((status = 200, description = "every audit event as JSON Lines, oldest first, streamed; metered as audit_export")))]
async fn export(State(app): State<Arc<App>>, Member(p): Member, Path(id): Path<String>) -> Result<Response, ApiError> {
    let t = admin_tenant(&app, &p, &id).await?;
    Ok(export_stream(app, t.id, Filter::default()))
}

/// Every event of `tenant` that `only` selects (its cursors and page size
/// are ignored), as JSON Lines, oldest first, streamed by a task of the
/// control plane's (so a client that goes away only ends the stream);
/// metered as `audit_export`, through the writer, for the events handed to
/// the client however the stream ends (complete, the client gone, a
/// storage failure, the drain's grace period over). A stream that does not
/// end complete ends with an error, never a clean end that would pass for
/// a whole export. The REST export and the web app's share it.
/// Sends the pages of the export into `tx`, counting the events handed
/// over in `exported`; `Err`: why it could not go on (the client is told).
/// The client gone is `Ok` (nobody to tell). The drain's end
/// (`App::closing`) stops it between pages or while the client is slow to
/// take one, never inside a page's read.
async fn export_pages(
    app: &App,
    t: &str,
    only: Filter,
    tx: &mut http_body_util::channel::Sender<Bytes, crate::kube::BoxError>,
    exported: &mut u64,
) -> Result<(), &'static str> {
    const CLOSING: &str = "the control plane is shutting down; export again";
    let mut f = Filter { limit: 1000, after: 0, before: None, ..only };
    loop {
        if app.closing.is_cancelled() {
            return Err(CLOSING);
        }
        let (items, next) = match crate::audit::list(&app.db, t, &f).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "audit export failed");
                return Err("storage failure during the export; export again");
            }
        };
        let mut chunk = Vec::new();
        for e in &items {
            chunk.extend_from_slice(&serde_json::to_vec(e).unwrap_or_default());
            chunk.push(b'\n');
        }
        tokio::select! {
            sent = tx.send_data(Bytes::from(chunk)) => if sent.is_err() { return Ok(()) },
            () = app.closing.cancelled() => return Err(CLOSING),
        }
        *exported += items.len() as u64;
        match next {
            Some(n) => f.after = n,
            None => return Ok(()),
        }
    }
}

pub(crate) fn export_stream(app: Arc<App>, t: String, only: Filter) -> Response {
    let (mut tx, body) = http_body_util::Channel::<Bytes, crate::kube::BoxError>::new(8);
    let tasks = app.tasks.clone();
    tasks.spawn(async move {
        let mut exported = 0u64;
        if let Err(why) = export_pages(&app, &t, only, &mut tx, &mut exported).await {
            tx.abort(why.into());
        }
        let usage = Write::Usage {
            id: uuid::Uuid::now_v7().to_string(),
            tenant: t.clone(),
            cluster: String::new(),
            usage_type: "audit_export".into(),
            quantity: exported as f64,
            time_ms: crate::directory::now_ms(),
        };
        if let Err(e) = app.writer.queue(vec![usage]).await {
            tracing::error!(error = %e, tenant = %t, events = exported, "an audit export is not metered; {}", e.fate());
        }
    });
    let mut resp = Response::new(Body::new(body));
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/x-ndjson"));
    resp
}
