//! Streams (`logs -f`, `get -w`, `events -w`) as Server-Sent Events: the
//! plan names the one request it will keep open; reading
//! `GET /v1/clusters/{id}/commands/{planId}/stream` (by the person who
//! planned it, once, within [`super::CONFIRMATION_TTL`]) starts it; it stops
//! when the reader goes away, on `DELETE …/stream`, or after [`MAX_STREAM`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::Event;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::StatusCode;
use http_body_util::BodyExt;
use kubechat_chat::argv::{Command, Invocation};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Asker, ChatError, Ctx, Plan, Scope, Stored, meter, now_ms, record, scope, store, stored_of};
use crate::app::App;

/// Longest a stream stays open.
pub const MAX_STREAM: Duration = Duration::from_secs(30 * 60);
/// Longest line passed on; longer ones are cut.
const MAX_LINE: usize = 64 * 1024;

/// Streams running on this replica, by plan id.
#[derive(Default)]
pub struct Streams {
    running: Mutex<HashMap<String, CancellationToken>>,
}

impl Streams {
    fn start(&self, id: &str) -> CancellationToken {
        let t = CancellationToken::new();
        self.running.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), t.clone());
        t
    }

    fn end(&self, id: &str) {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// Stops stream `id`; `false` if it is not running here.
    pub fn stop(&self, id: &str) -> bool {
        match self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(id) {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }
}

/// Plans a stream: the request it keeps open, authorized now.
pub async fn plan(app: &Arc<App>, s: &Scope, ctx: &Ctx, inv: &Invocation, plan: &mut Plan) -> Result<Plan, ChatError> {
    let (path, what) = match &inv.command {
        Command::Logs(l) => {
            let (pod, note) = super::reads::pod_of(ctx, &l.object).await.map_err(|e| ChatError::kube(&e).with(plan))?;
            if let Some(n) = note {
                plan.notes.push(n);
            }
            (super::reads::log_path(&ctx.namespace, &pod, l, true), "logs")
        }
        Command::Get { targets, selector, field_selector, .. } => {
            let [t] = targets.as_slice() else {
                return Err(ChatError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_command",
                    "get -w watches one resource type",
                )
                .with(plan));
            };
            if t.name.is_some() {
                let ns = ctx.ns_for(&t.resource);
                let field = format!("metadata.name={}", t.name.as_deref().unwrap_or_default());
                let path = t.resource.collection_path(ns.as_deref())
                    + &super::reads::query(&[("fieldSelector", Some(field)), ("watch", Some("true".into()))]);
                (path, "watch")
            } else {
                let ns = ctx.ns_for(&t.resource);
                let path = t.resource.collection_path(ns.as_deref())
                    + &super::reads::query(&[
                        ("labelSelector", selector.clone()),
                        ("fieldSelector", field_selector.clone()),
                        ("watch", Some("true".into())),
                    ]);
                (path, "watch")
            }
        }
        Command::Events { for_object, types, .. } => {
            (super::reads::events_path(ctx, for_object.as_ref(), types) + "&watch=true", "watch")
        }
        _ => {
            return Err(
                ChatError::new(StatusCode::BAD_REQUEST, "invalid_command", "this command does not stream").with(plan)
            );
        }
    };
    let view = ctx.client.classify("GET", &path);
    if !view.allowed {
        let mut p = plan.clone();
        p.requests = vec![view.clone()];
        return Err(ChatError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{} is forbidden: KubeChat: {}", view.path, view.reason),
        )
        .with(&p));
    }
    let body = Stored::Stream { path, what: what.to_string() };
    store(app, s, ctx.client.principal(), plan, "stream", &body, super::Gate::default()).await?;
    // A stream needs no confirmation: it is read by its planner, once.
    plan.confirmation = None;
    plan.stream = Some(format!("/v1/clusters/{}/commands/{}/stream", s.cluster.id, plan.id));
    plan.requests = vec![view];
    Ok(plan.clone())
}

/// Starts stream `plan_id` for its planner; its events.
pub async fn open(
    app: &Arc<App>,
    who: &Asker<'_>,
    cluster_id: &str,
    plan_id: &str,
) -> Result<impl Stream<Item = Result<Event, Infallible>> + Send + 'static, ChatError> {
    let s = scope(app, who, cluster_id).await?;
    let p = app
        .db
        .chat_plan(&s.tenant.id, plan_id)
        .await?
        .filter(|p| p.cluster_id == cluster_id && p.kind == "stream")
        .ok_or_else(|| {
            ChatError::new(StatusCode::NOT_FOUND, "not_found", format!("no stream {plan_id} on cluster {cluster_id}"))
        })?;
    if p.user_id != who.principal.user.id {
        return Err(ChatError::new(StatusCode::FORBIDDEN, "not_your_plan", "this stream was planned by someone else"));
    }
    let now = now_ms();
    if p.used_at.is_some() || now >= p.expires_at {
        return Err(ChatError::new(
            StatusCode::GONE,
            "expired",
            "this stream was already read or has expired; run the command again",
        ));
    }
    let Stored::Stream { path, what } = stored_of(&p.body_json)? else {
        return Err(ChatError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "not a stream"));
    };
    meter(app, &s, &Plan::default()).await?;
    if !app.db.use_chat_plan(&s.tenant.id, &p.id, &who.principal.user.id, &p.confirmation_hash, now).await? {
        return Err(ChatError::new(StatusCode::GONE, "expired", "this stream was already read; run the command again"));
    }
    let client = super::client_for(app, who, &s, &p.command_line, &p.id);
    let req = axum::extract::Request::builder()
        .method("GET")
        .uri(&path)
        .header(http::header::ACCEPT, if what == "logs" { "*/*" } else { "application/json" })
        .body(axum::body::Body::empty())
        .map_err(|e| ChatError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let resp = client.raw(req).await;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        return Err(ChatError::new(
            status,
            "cluster_error",
            v["message"].as_str().unwrap_or("the stream was refused").to_string(),
        ));
    }
    let _ = record::step(
        app,
        &s,
        &p.id,
        &who.principal.user.email,
        who.client_address,
        "stream",
        &p.command_line,
        &path,
        "allow",
        false,
    )
    .await;
    let stop = app.chat.streams.start(&p.id);
    let role = s.role;
    let app2 = app.clone();
    let id = p.id.clone();
    let body = resp.into_body().into_data_stream();
    let lines = lines(body);
    let events = futures_util::stream::unfold(
        (Box::pin(lines), stop, tokio::time::Instant::now() + MAX_STREAM, false),
        move |(mut lines, stop, until, done)| {
            let what = what.clone();
            async move {
                if done {
                    return None;
                }
                let ended = |why: &str| Event::default().event("end").data(json!({"reason": why}).to_string());
                tokio::select! {
                    () = stop.cancelled() => Some((Ok(ended("stopped")), (lines, stop, until, true))),
                    () = tokio::time::sleep_until(until) => Some((Ok(ended("time limit")), (lines, stop, until, true))),
                    line = lines.next() => match line {
                        None => Some((Ok(ended("the server ended the stream")), (lines, stop, until, true))),
                        Some(line) => Some((Ok(event(&what, &line, role)), (lines, stop, until, false))),
                    },
                }
            }
        },
    );
    // Unregistered when the stream ends or its reader goes away.
    let guard = EndGuard { app: app2, id };
    Ok(events.map(move |e| {
        let _keep = &guard;
        e
    }))
}

struct EndGuard {
    app: Arc<App>,
    id: String,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.app.chat.streams.end(&self.id);
    }
}

fn event(what: &str, line: &str, role: crate::model::Role) -> Event {
    if what == "logs" {
        return Event::default().event("line").data(line);
    }
    let mut v: Value =
        serde_json::from_str(line).unwrap_or_else(|_| json!({"type": "ERROR", "object": {"message": line}}));
    super::output::redact(&mut v["object"], role, true);
    let kind = v["type"].as_str().unwrap_or("ERROR").to_ascii_lowercase();
    let o = &v["object"];
    let summary = json!({
        "type": v["type"],
        "name": o["metadata"]["name"],
        "namespace": o["metadata"]["namespace"],
        "resourceVersion": o["metadata"]["resourceVersion"],
        "object": o,
    });
    Event::default().event(kind).data(summary.to_string())
}

/// Lines of a byte stream (the last one even without a newline), each cut
/// at [`MAX_LINE`].
fn lines<S, E>(body: S) -> impl Stream<Item = String> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
{
    futures_util::stream::unfold((Box::pin(body), BytesMut::new(), false), |(mut body, mut buf, eof)| async move {
        loop {
            if let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line = buf.split_to(i + 1);
                let text = String::from_utf8_lossy(&line[..line.len().min(MAX_LINE)])
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                return Some((text, (body, buf, eof)));
            }
            if buf.len() > MAX_LINE {
                let line = buf.split_to(MAX_LINE);
                return Some((String::from_utf8_lossy(&line).into_owned(), (body, buf, eof)));
            }
            if eof {
                if buf.is_empty() {
                    return None;
                }
                let rest = buf.split();
                return Some((String::from_utf8_lossy(&rest).into_owned(), (body, buf, true)));
            }
            match body.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(_)) | None => {
                    return if buf.is_empty() {
                        None
                    } else {
                        Some((String::from_utf8_lossy(&buf.split()).into_owned(), (body, BytesMut::new(), true)))
                    };
                }
            }
        }
    })
}

/// Handles `DELETE /v1/clusters/{id}/commands/{planId}/stream`.
pub async fn stop(app: &Arc<App>, who: &Asker<'_>, cluster_id: &str, plan_id: &str) -> Result<Value, ChatError> {
    let s = scope(app, who, cluster_id).await?;
    let p = app
        .db
        .chat_plan(&s.tenant.id, plan_id)
        .await?
        .filter(|p| p.cluster_id == cluster_id && p.kind == "stream")
        .ok_or_else(|| {
            ChatError::new(StatusCode::NOT_FOUND, "not_found", format!("no stream {plan_id} on cluster {cluster_id}"))
        })?;
    if p.user_id != who.principal.user.id {
        return Err(ChatError::new(StatusCode::FORBIDDEN, "not_your_plan", "this stream was planned by someone else"));
    }
    Ok(json!({"id": plan_id, "stopped": app.chat.streams.stop(plan_id)}))
}
