//! A cluster's settings (tenant admins): its policy — read-only, the
//! namespaces people may touch, the resources nobody may — and deleting
//! it, which revokes its agent's credentials. Both go through the REST
//! API's own functions, so the same checks hold.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use http::StatusCode;
use serde::Deserialize;

use super::session::Session;
use super::{WebError, check_csrf, pages};
use crate::app::App;
use crate::model::ClusterPolicy;

/// The settings routes.
pub(super) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/ui/clusters/{id}/settings", get(page))
        .route("/ui/clusters/{id}/policy", post(save_policy))
        .route("/ui/clusters/{id}/delete", post(delete))
}

/// What only tenant admins may do here.
const ADMINS_ONLY: &str = "change a cluster's settings";

#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    saved: Option<String>,
}

async fn page(
    State(app): State<Arc<App>>,
    s: Session,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Html<String>, WebError> {
    s.own_tenant_as_admin(ADMINS_ONLY)?;
    let c = super::own_cluster(&app, &s, &id).await?;
    Ok(Html(pages::cluster_settings(&s, &c, q.saved.is_some(), None).into_string()))
}

#[derive(Debug, Deserialize)]
struct PolicyForm {
    #[serde(default)]
    csrf: String,
    /// A checkbox: present when ticked.
    #[serde(default)]
    read_only: Option<String>,
    /// Comma- or space-separated.
    #[serde(default)]
    allowed_namespaces: String,
    /// Comma- or space-separated.
    #[serde(default)]
    denied_resources: String,
}

/// `"a, b  c"` → `["a", "b", "c"]`, without repeats.
fn list(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in s.split(|c: char| c == ',' || c.is_whitespace()).filter(|w| !w.is_empty()) {
        if !out.iter().any(|o| o == w) {
            out.push(w.to_string());
        }
    }
    out
}

async fn save_policy(
    State(app): State<Arc<App>>,
    s: Session,
    Path(id): Path<String>,
    Form(f): Form<PolicyForm>,
) -> Result<Response, WebError> {
    check_csrf(&s, &f.csrf)?;
    let t = s.own_tenant_as_admin(ADMINS_ONLY)?;
    let c = super::own_cluster(&app, &s, &id).await?;
    let policy = ClusterPolicy {
        read_only: f.read_only.is_some(),
        allowed_namespaces: list(&f.allowed_namespaces),
        denied_resources: list(&f.denied_resources),
    };
    match crate::http::clusters::update_cluster(&app, &s.principal, &t.id, &c.id, None, Some(policy.clone())).await {
        Ok(_) => Ok(Redirect::to(&format!("/ui/clusters/{}/settings?saved=1", c.id)).into_response()),
        // Shown on the form, with what was typed kept.
        Err(e) if e.status == StatusCode::BAD_REQUEST => {
            let shown = crate::model::Cluster { policy, ..c };
            let html = pages::cluster_settings(&s, &shown, false, Some(&e.message)).into_string();
            Ok((StatusCode::BAD_REQUEST, Html(html)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
struct DeleteForm {
    #[serde(default)]
    csrf: String,
    /// The cluster's name, typed back.
    #[serde(default)]
    confirm_name: String,
}

async fn delete(
    State(app): State<Arc<App>>,
    s: Session,
    Path(id): Path<String>,
    Form(f): Form<DeleteForm>,
) -> Result<Response, WebError> {
    check_csrf(&s, &f.csrf)?;
    let t = s.own_tenant_as_admin(ADMINS_ONLY)?;
    let c = super::own_cluster(&app, &s, &id).await?;
    if f.confirm_name.trim() != c.name {
        let message = format!("Type the cluster's name, {}, to delete it.", c.name);
        let html = pages::cluster_settings(&s, &c, false, Some(&message)).into_string();
        return Ok((StatusCode::BAD_REQUEST, Html(html)).into_response());
    }
    crate::http::clusters::delete_cluster(&app, &s.principal, &t.id, &c.id).await?;
    Ok(Redirect::to("/ui/").into_response())
}

#[cfg(test)]
mod tests {
    use super::list;

    #[test]
    fn lists_split_on_commas_and_spaces_once_each() {
        assert_eq!(list(" web, api  web\nbatch,,"), vec!["web", "api", "batch"]);
        assert!(list(" , ").is_empty());
    }
}
