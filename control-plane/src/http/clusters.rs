//! `/v1/tenants/{id}/clusters`: registering clusters (with a bootstrap
//! token and the `helm install` command), their policy, kubeconfigs, and
//! deleting them (their credentials are revoked).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use http::StatusCode;
use http::request::Parts;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{JsonBody, Member, Reply, admin_tenant, bearer, cluster_of, reply, tenant_for};
use super::tenants::is_dns_label;
use super::users::plan_limit;
use crate::app::App;
use crate::auth;
use crate::error::ApiError;
use crate::model::*;
use crate::store::{Scope, StoreError, now};

/// The clusters router.
pub(crate) fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_one, update, delete))
        .routes(routes!(kubeconfig))
        .routes(routes!(bootstrap_token))
}

/// A cluster to register.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ClusterCreate {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) region: Option<String>,
    #[serde(default)]
    pub(crate) labels: serde_json::Map<String, Value>,
    #[serde(default)]
    pub(crate) policy: ClusterPolicy,
}

#[utoipa::path(post, path = "/v1/tenants/{id}/clusters", tag = "clusters",
    responses((status = 201, description = "register a cluster (plan maxClusters); answers a one-time bootstrap token with helmInstall (a shell snippet), helmValues and helmChart")))]
async fn create(
    State(app): State<Arc<App>>,
    Member(p): Member,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ClusterCreate>,
) -> Reply {
    reply(StatusCode::CREATED, register(&app, &p, &id, b).await?)
}

/// Registers cluster `b` in tenant `id` for `p` (a tenant admin): the
/// cluster, and with enrollment configured a one-time bootstrap token and
/// its helm install command. The REST API and the web app's onboarding.
pub(crate) async fn register(app: &App, p: &auth::Principal, id: &str, b: ClusterCreate) -> Result<Value, ApiError> {
    let t = admin_tenant(app, p, id).await?;
    if !is_dns_label(&b.name) {
        return Err(ApiError::bad_request(
            "invalid_name",
            "cluster name must be lowercase letters, digits and '-', at most 40 characters",
        ));
    }
    check_policy(&b.policy)?;
    let c = Cluster {
        id: auth::new_id('c'),
        tenant_id: t.id.clone(),
        name: b.name,
        region: b.region.unwrap_or_else(|| t.home_region.clone()),
        labels: b.labels,
        policy: b.policy,
        created_at: now(),
    };
    app.db.add_cluster(&t, &c).await.map_err(|e| match e {
        StoreError::LimitReached { .. } => plan_limit(&t, "clusters", "maxClusters", "remove a cluster"),
        e if e.is_conflict_on("name") => {
            ApiError::conflict(format!("a cluster named {} already exists in this tenant", c.name))
        }
        e => e.into(),
    })?;
    let mut out = json!(c);
    if app.enrollment.is_some() {
        let (token, expires) = crate::enroll::issue_bootstrap(app, &t.id, &c.id, None).await?;
        out["bootstrapToken"] = json!(token);
        out["bootstrapExpiresAt"] = json!(expires);
        crate::enroll::helm_install(app, &token).add_to(&mut out);
    }
    Ok(out)
}

#[utoipa::path(get, path = "/v1/tenants/{id}/clusters", tag = "clusters", responses((status = 200, description = "list clusters")))]
async fn list(State(app): State<Arc<App>>, Member(p): Member, Path(id): Path<String>) -> Reply {
    let t = tenant_for(&app, &p, &id).await?;
    reply(StatusCode::OK, json!({"items": app.db.clusters(&t.id).await?}))
}

#[utoipa::path(get, path = "/v1/tenants/{id}/clusters/{clusterId}", tag = "clusters",
    responses((status = 200, description = "a cluster, whether it is connected, and its tunnels")))]
async fn get_one(State(app): State<Arc<App>>, Member(p): Member, Path((id, cid)): Path<(String, String)>) -> Reply {
    let t = tenant_for(&app, &p, &id).await?;
    let c = cluster_of(&app, &t, &cid).await?;
    let tunnels = crate::directory::tunnels(&app.db, &Scope::Tenant(t.id.clone()), Some(&cid)).await?;
    let mut v = json!(c);
    v["connected"] = json!(!tunnels.is_empty());
    v["tunnels"] = json!(tunnels);
    reply(StatusCode::OK, v)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClusterUpdate {
    #[serde(default)]
    labels: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    policy: Option<ClusterPolicy>,
}

#[utoipa::path(put, path = "/v1/tenants/{id}/clusters/{clusterId}", tag = "clusters",
    responses((status = 200, description = "change labels or policy")))]
async fn update(
    State(app): State<Arc<App>>,
    Member(p): Member,
    Path((id, cid)): Path<(String, String)>,
    JsonBody(b): JsonBody<ClusterUpdate>,
) -> Reply {
    let c = update_cluster(&app, &p, &id, &cid, b.labels, b.policy).await?;
    reply(StatusCode::OK, json!(c))
}

/// Refuses a policy naming what no request can carry: namespaces must be
/// DNS labels, resources lowercase names with an optional `/subresource`.
pub(crate) fn check_policy(policy: &ClusterPolicy) -> Result<(), ApiError> {
    // A namespace name is a DNS label of up to 63 characters.
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    if let Some(bad) = policy.allowed_namespaces.iter().find(|n| !label(n)) {
        return Err(ApiError::bad_request(
            "invalid_policy",
            format!("{bad:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"),
        ));
    }
    let resource = |s: &str| {
        let (r, sub) = s.split_once('/').unwrap_or((s, "a"));
        [r, sub].iter().all(|p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        })
    };
    if let Some(bad) = policy.denied_resources.iter().find(|r| !resource(r)) {
        return Err(ApiError::bad_request(
            "invalid_policy",
            format!("{bad:?} is not a resource name like secrets or pods/exec"),
        ));
    }
    Ok(())
}

/// Changes cluster `cid`'s labels or policy (tenant admins): the REST API's
/// and the web app's update.
pub(crate) async fn update_cluster(
    app: &App,
    p: &crate::auth::Principal,
    id: &str,
    cid: &str,
    labels: Option<serde_json::Map<String, serde_json::Value>>,
    policy: Option<ClusterPolicy>,
) -> Result<Cluster, ApiError> {
    let t = admin_tenant(app, p, id).await?;
    let mut c = cluster_of(app, &t, cid).await?;
    if let Some(l) = labels {
        c.labels = l;
    }
    if let Some(pol) = policy {
        check_policy(&pol)?;
        c.policy = pol;
    }
    app.db.update_cluster(&c).await?;
    tracing::info!(tenant = %t.id, cluster = %c.id, "cluster updated");
    Ok(c)
}

/// Deletes cluster `cid` and revokes its credentials (tenant admins).
pub(crate) async fn delete_cluster(app: &App, p: &crate::auth::Principal, id: &str, cid: &str) -> Result<(), ApiError> {
    let t = admin_tenant(app, p, id).await?;
    if !app.db.delete_cluster(&t.id, cid).await? {
        return Err(ApiError::not_found("cluster", cid));
    }
    tracing::info!(tenant = %t.id, cluster = %cid, "cluster deleted");
    Ok(())
}

#[utoipa::path(delete, path = "/v1/tenants/{id}/clusters/{clusterId}", tag = "clusters",
    responses((status = 200, description = "delete a cluster and revoke its credentials")))]
async fn delete(State(app): State<Arc<App>>, Member(p): Member, Path((id, cid)): Path<(String, String)>) -> Reply {
    delete_cluster(&app, &p, &id, &cid).await?;
    reply(StatusCode::OK, json!({"deleted": cid, "credentialsRevoked": true}))
}

/// A kubeconfig for `email` on `c`, carrying the caller's own token.
fn kubeconfig_yaml(app: &App, t: &Tenant, c: &Cluster, email: &str, token: &str) -> String {
    use base64::Engine;
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let name = format!("kubechat-{}-{}", t.slug, c.name);
    let server = format!("{}/k8s/clusters/{}", app.public_url.trim_end_matches('/'), c.id);
    let mut y = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {}\n  cluster:\n    server: {}\n",
        q(&name),
        q(&server)
    );
    if let Some(ca) = &app.public_ca_pem {
        y += &format!(
            "    certificate-authority-data: {}\n",
            base64::engine::general_purpose::STANDARD.encode(ca.as_bytes())
        );
    }
    y += &format!("users:\n- name: {}\n  user:\n    token: {}\n", q(email), q(token));
    y += &format!(
        "contexts:\n- name: {n}\n  context:\n    cluster: {n}\n    user: {u}\ncurrent-context: {n}\n",
        n = q(&name),
        u = q(email)
    );
    y
}

#[utoipa::path(get, path = "/v1/tenants/{id}/clusters/{clusterId}/kubeconfig", tag = "clusters",
    responses((status = 200, description = "a kubeconfig for this cluster carrying the caller's token")))]
async fn kubeconfig(
    State(app): State<Arc<App>>,
    Member(p): Member,
    Path((id, cid)): Path<(String, String)>,
    parts: Parts,
) -> Reply {
    let t = tenant_for(&app, &p, &id).await?;
    if p.user.tenant_id.as_deref() != Some(t.id.as_str()) {
        return Err(ApiError::forbidden("role", "kubeconfigs are for the tenant's own users"));
    }
    let c = cluster_of(&app, &t, &cid).await?;
    let token = bearer(&parts).unwrap_or_default();
    reply(StatusCode::OK, json!({"kubeconfig": kubeconfig_yaml(&app, &t, &c, &p.user.email, token)}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Life {
    #[serde(default)]
    expires_in_seconds: Option<u32>,
}

#[utoipa::path(post, path = "/v1/tenants/{id}/clusters/{clusterId}/bootstrap-tokens", tag = "clusters",
    responses((status = 201, description = "a new one-time bootstrap token and its helm install command")))]
async fn bootstrap_token(
    State(app): State<Arc<App>>,
    Member(p): Member,
    Path((id, cid)): Path<(String, String)>,
    JsonBody(life): JsonBody<Life>,
) -> Reply {
    let t = admin_tenant(&app, &p, &id).await?;
    cluster_of(&app, &t, &cid).await?;
    let lifetime = life.expires_in_seconds.map(|s| Duration::from_secs(u64::from(s)));
    let (token, expires) = crate::enroll::issue_bootstrap(&app, &t.id, &cid, lifetime).await?;
    let mut out = json!({"bootstrapToken": token, "expiresAt": expires});
    crate::enroll::helm_install(&app, &token).add_to(&mut out);
    reply(StatusCode::CREATED, out)
}
