//! A cluster's chat page: a kubectl line or plain English in, the plan out
//! (each request with its verdict, a write's server-side dry run and its
//! confirmation form), through [`crate::chat`] exactly as the REST API
//! runs it. With htmx each answer is a fragment added to the transcript;
//! without JavaScript the form posts and the answer is a page.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use http::HeaderMap;
use serde::Deserialize;

use super::session::Session;
use super::{WebError, check_csrf, pages};
use crate::app::App;
use crate::chat::{self, Asker, CommandRequest};

/// The chat routes.
pub(super) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/ui/clusters/{id}", get(page))
        .route("/ui/clusters/{id}/commands", post(command))
        .route("/ui/clusters/{id}/commands/{plan}/confirm", post(confirm))
        .route("/ui/clusters/{id}/commands/{plan}/stream", get(stream))
        .route("/ui/clusters/{id}/commands/{plan}/stop", post(stop))
}

#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    /// A command line to put in the box (deep links; never run by a GET).
    q: Option<String>,
}

async fn page(
    State(app): State<Arc<App>>,
    s: Session,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Html<String>, WebError> {
    let c = super::own_cluster(&app, &s, &id).await?;
    chat_page(&app, &s, &c, q.q.as_deref().unwrap_or_default(), None).await
}

/// The whole chat page: tunnel health, the last drop, the person's recent
/// lines, and `turn` (an answer, when the browser posted without htmx).
async fn chat_page(
    app: &App,
    s: &Session,
    c: &crate::model::Cluster,
    prefill: &str,
    turn: Option<maud::Markup>,
) -> Result<Html<String>, WebError> {
    let tunnels = tunnels(app, c).await?;
    let history = history(app, s, c).await?;
    let last_drop = last_drop(app, c).await?;
    let page = pages::ChatPage { tunnels: &tunnels, history: &history, last_drop: last_drop.as_ref(), prefill };
    Ok(Html(pages::chat(s, c, &page, turn).into_string()))
}

/// Why the cluster's last tunnel went down, and when: the relay's own
/// `tunnel_disconnect` record in the audit trail.
async fn last_drop(app: &App, c: &crate::model::Cluster) -> Result<Option<crate::audit::AuditEntry>, WebError> {
    let f = crate::audit::Filter {
        cluster: Some(c.id.clone()),
        kind: Some("tunnel_disconnect".into()),
        before: Some(i64::MAX),
        limit: 1,
        ..Default::default()
    };
    Ok(crate::audit::list(&app.db, &c.tenant_id, &f).await?.0.into_iter().next())
}

/// How many of the person's own lines the page offers again.
const HISTORY: usize = 20;
/// How many of the person's latest chat records are read to find them and
/// what became of each (a line leaves two to four: typed, planned or
/// refused, confirmed, done; a stream one more when it opens).
const HISTORY_STEPS: i64 = 200;

/// The person's latest lines on this cluster, newest first, each with
/// what became of it: chat's own audit records of what they typed and of
/// its later steps (kept as long as the audit trail).
async fn history(app: &App, s: &Session, c: &crate::model::Cluster) -> Result<Vec<pages::HistoryLine>, WebError> {
    let f = crate::audit::Filter {
        cluster: Some(c.id.clone()),
        user: Some(format!("kubechat:user:{}", s.principal.user.email)),
        kind: Some(crate::chat::record::KIND.to_string()),
        before: Some(i64::MAX),
        limit: HISTORY_STEPS,
        ..Default::default()
    };
    let steps = crate::audit::list(&app.db, &c.tenant_id, &f).await?.0;
    Ok(history_of(steps))
}

/// The utterances among `steps` (newest first), each with its request's
/// newest later step.
fn history_of(steps: Vec<crate::audit::AuditEntry>) -> Vec<pages::HistoryLine> {
    let mut latest: std::collections::HashMap<String, &'static str> = std::collections::HashMap::new();
    let mut lines = Vec::new();
    for e in steps {
        if e.verb == "utterance" {
            if lines.len() < HISTORY {
                lines.push(e);
            }
        } else {
            latest.entry(e.request_id.clone()).or_insert_with(|| became(&e.verb, &e.decision));
        }
    }
    lines
        .into_iter()
        .map(|e| {
            let became = latest.get(&e.request_id).copied().unwrap_or_default();
            pages::HistoryLine { entry: e, became }
        })
        .collect()
}

/// What a chat step says became of a line, in a word or two.
fn became(verb: &str, decision: &str) -> &'static str {
    match (verb, decision) {
        ("outcome", "allow") | ("stream", _) => "ran",
        ("outcome", _) => "failed",
        ("plan", _) => "awaiting confirmation",
        ("approval", _) => "approved",
        ("confirmation", _) => "confirmed",
        ("refused", _) => "refused",
        ("question", _) => "asked a question",
        _ => "",
    }
}

#[derive(Debug, Deserialize)]
struct CommandForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    line: String,
}

/// What a line asks for: a kubectl command line when it starts with
/// `kubectl` (split like a shell, never run by one), else plain English.
fn request_of(line: &str) -> Result<CommandRequest, String> {
    let line = line.trim();
    match line.strip_prefix("kubectl ") {
        Some(rest) => Ok(CommandRequest { argv: Some(crate::chat_cli::words(rest)?), ..Default::default() }),
        None if line == "kubectl" => Err("Say what kubectl should do, e.g. kubectl get pods.".into()),
        None => Ok(CommandRequest { text: Some(line.to_string()), ..Default::default() }),
    }
}

fn is_htmx(h: &HeaderMap) -> bool {
    h.get("hx-request").is_some_and(|v| v == "true")
}

/// The cluster's live tunnels.
async fn tunnels(app: &App, c: &crate::model::Cluster) -> Result<Vec<crate::directory::TunnelView>, WebError> {
    let scope = crate::store::Scope::Tenant(c.tenant_id.clone());
    Ok(crate::directory::tunnels(&app.db, &scope, Some(&c.id)).await?)
}

/// Whole page (no JavaScript) or fragment (htmx).
async fn answer(
    app: &App,
    htmx: bool,
    s: &Session,
    c: &crate::model::Cluster,
    turn: maud::Markup,
) -> Result<Response, WebError> {
    if htmx {
        Ok(Html(turn.into_string()).into_response())
    } else {
        Ok(chat_page(app, s, c, "", Some(turn)).await?.into_response())
    }
}

async fn command(
    State(app): State<Arc<App>>,
    s: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CommandForm>,
) -> Result<Response, WebError> {
    check_csrf(&s, &f.csrf)?;
    let c = super::own_cluster(&app, &s, &id).await?;
    let htmx = is_htmx(&headers);
    let req = match request_of(&f.line) {
        Ok(r) => r,
        Err(why) => return answer(&app, htmx, &s, &c, pages::turn_error(&f.line, &why, None)).await,
    };
    let who = Asker { principal: &s.principal, client_address: "" };
    let turn = match chat::command(&app, &who, &id, req).await {
        Ok(plan) => pages::turn(&s, &c, &f.line, &plan),
        Err(e) if e.code == "question" => match e.plan {
            Some(plan) => pages::turn(&s, &c, &f.line, &plan),
            None => pages::turn_error(&f.line, &e.message, None),
        },
        Err(e) => pages::turn_error(&f.line, &e.message, e.plan.as_deref()),
    };
    answer(&app, htmx, &s, &c, turn).await
}

#[derive(Debug, Deserialize)]
struct ConfirmForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirmation: String,
    #[serde(default)]
    typed_name: Option<String>,
}

async fn confirm(
    State(app): State<Arc<App>>,
    s: Session,
    headers: HeaderMap,
    Path((id, plan_id)): Path<(String, String)>,
    Form(f): Form<ConfirmForm>,
) -> Result<Response, WebError> {
    check_csrf(&s, &f.csrf)?;
    let c = super::own_cluster(&app, &s, &id).await?;
    let who = Asker { principal: &s.principal, client_address: "" };
    let typed = f.typed_name.as_deref().filter(|t| !t.is_empty());
    let out = match chat::confirm::confirm(&app, &who, &id, &plan_id, &f.confirmation, typed).await {
        Ok(o) => pages::outcome(&c.id, &o),
        Err(e) => pages::refusal(&e.message),
    };
    answer(&app, is_htmx(&headers), &s, &c, out).await
}

/// A stream's Server-Sent Events (`line`, `added`/`modified`/`deleted`,
/// `end`), read by `/ui/assets/app.js` as text (never as HTML).
async fn stream(
    State(app): State<Arc<App>>,
    s: Session,
    Path((id, plan_id)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let who = Asker { principal: &s.principal, client_address: "" };
    match chat::stream::open(&app, &who, &id, &plan_id).await {
        Ok(events) => Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response()),
        Err(e) => Err(WebError::new(e.status, &e.message)),
    }
}

async fn stop(
    State(app): State<Arc<App>>,
    s: Session,
    headers: HeaderMap,
    Path((id, plan_id)): Path<(String, String)>,
    Form(f): Form<super::CsrfForm>,
) -> Result<Response, WebError> {
    check_csrf(&s, &f.csrf)?;
    let c = super::own_cluster(&app, &s, &id).await?;
    let who = Asker { principal: &s.principal, client_address: "" };
    let out = match chat::stream::stop(&app, &who, &id, &plan_id).await {
        Ok(_) => pages::stopped(),
        Err(e) => pages::refusal(&e.message),
    };
    answer(&app, is_htmx(&headers), &s, &c, out).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_lines_are_argv_and_the_rest_is_english() {
        let r = request_of("kubectl get pods -n 'web'").expect("argv");
        assert_eq!(r.argv.as_deref(), Some(&["get".to_string(), "pods".into(), "-n".into(), "web".into()][..]));
        assert_eq!(request_of("show pods in web").expect("text").text.as_deref(), Some("show pods in web"));
        assert!(request_of("kubectl").is_err());
        assert!(request_of("kubectl get 'pods").is_err());
    }

    fn step(request: &str, verb: &str, decision: &str) -> crate::audit::AuditEntry {
        crate::audit::AuditEntry {
            request_id: request.into(),
            verb: verb.into(),
            decision: decision.into(),
            kubectl_command: format!("line {request}"),
            ..Default::default()
        }
    }

    #[test]
    fn history_says_what_became_of_each_line_from_its_newest_step() {
        // Newest first, as the audit listing returns them.
        let steps = vec![
            step("c", "plan", "allow"),
            step("b", "outcome", "deny"),
            step("c", "utterance", "allow"),
            step("b", "confirmation", "allow"),
            step("a", "refused", "deny"),
            step("b", "plan", "allow"),
            step("b", "utterance", "allow"),
            step("a", "utterance", "allow"),
            step("d", "utterance", "allow"),
        ];
        let h = history_of(steps);
        let got: Vec<(&str, &str)> = h.iter().map(|l| (l.entry.request_id.as_str(), l.became)).collect();
        assert_eq!(got, vec![("c", "awaiting confirmation"), ("b", "failed"), ("a", "refused"), ("d", "")]);
        let many = (0..30).map(|i| step(&i.to_string(), "utterance", "allow")).collect();
        assert_eq!(history_of(many).len(), HISTORY);
    }
}
