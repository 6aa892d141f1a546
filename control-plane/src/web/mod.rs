//! The web app, served under `/ui/`: server-rendered HTML (maud) with
//! htmx, its JavaScript vendored from npm at pinned versions and embedded
//! in the binary (`assets/vendor`, refreshed by
//! `scripts/vendor-web-assets.sh`), so running it needs no Node.
//!
//! # Trust
//! - A browser signs in with an API token for now ([`session`]); the
//!   session cookie is `__Host-`, `Secure; HttpOnly; SameSite=Strict`.
//! - Every state-changing request carries the session's CSRF token (form
//!   field `csrf`), and no request under `/ui/` is served to a foreign
//!   `Origin` or a cross-site fetch ([`guard`]): a cross-site form post,
//!   `EventSource` or WebSocket never acts.
//! - Pages carry a strict Content-Security-Policy (scripts only from
//!   `/ui/assets/`), `X-Frame-Options: DENY` and referrers only to itself.
//! - What a page offers follows the role, and every action goes through
//!   the same handlers and policy as the REST API (chat commands through
//!   [`crate::chat`]): a hidden control forged by hand is refused there.
//!
//! # Layout
//! - [`session`]: sign-in, the session extractor, CSRF tokens.
//! - `pages`: the HTML of every page (maud).
//! - `chat`: a cluster's chat (plans, dry runs, confirmations).
//! - `clusters`: a cluster's settings (policy, delete).

pub mod session;

mod chat;
mod clusters;
mod pages;

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use http::{HeaderValue, Method, StatusCode, header};
use serde::Deserialize;

use crate::app::App;
use crate::store::{Scope, StoreError};
use session::Session;

/// An answer that is not a page: an error shown as one, or a redirect to
/// sign in.
#[derive(Debug)]
pub struct WebError {
    /// The status.
    pub status: StatusCode,
    /// What happened and what to do.
    pub message: String,
    /// Send the browser to the sign-in page instead.
    pub sign_in: bool,
}

impl WebError {
    /// An error page.
    pub fn new(status: StatusCode, message: &str) -> Self {
        Self { status, message: message.to_string(), sign_in: false }
    }

    /// No (valid) session: sign in.
    pub fn sign_in() -> Self {
        Self { status: StatusCode::UNAUTHORIZED, message: "Sign in to continue.".into(), sign_in: true }
    }

    /// Sign-in refused.
    pub fn unauthenticated(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// The role may not do this.
    pub fn forbidden(message: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
}

impl From<StoreError> for WebError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "web app: storage failure");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "Storage is unavailable; retry in a moment.")
    }
}

impl From<crate::error::ApiError> for WebError {
    fn from(e: crate::error::ApiError) -> Self {
        Self::new(e.status, &e.message)
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        if self.sign_in {
            let mut r = Redirect::to("/ui/login").into_response();
            // htmx follows this header for fragments.
            r.headers_mut().insert("hx-redirect", HeaderValue::from_static("/ui/login"));
            return r;
        }
        (self.status, Html(pages::error(self.status, &self.message).into_string())).into_response()
    }
}

/// The web app's routes.
pub fn router(app: Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(home))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/signup", get(signup_page).post(signup))
        .route("/ui/audit", get(audit))
        .route("/ui/audit/export", get(audit_export))
        .route("/ui/billing", get(billing))
        .route("/ui/billing/upgrade", post(upgrade))
        .route("/ui/assets/{file}", get(asset))
        .route("/ui/clusters", post(add_cluster))
        .route("/ui/people", get(people))
        .route("/ui/tokens", post(create_token))
        .route("/ui/tokens/{id}/revoke", post(revoke_token))
        .route("/ui/access", post(grant_access))
        .route("/ui/access/{id}/revoke", post(revoke_access))
        .route("/ui/clusters/{id}/status", get(cluster_status))
        .merge(chat::router())
        .merge(clusters::router())
        .layer(middleware::from_fn_with_state(app, guard))
}

/// The origin (`scheme://host[:port]`) browsers reach this control plane at.
fn own_origin(app: &App) -> String {
    let u = app.public_url.trim_end_matches('/');
    match u.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.split('/').next().unwrap_or_default()),
        None => u.to_string(),
    }
}

/// Refuses what a browser sent on another site's behalf: a foreign
/// `Origin` (forms, `fetch`, `EventSource`, WebSocket), a `Sec-Fetch-Site`
/// of `cross-site` or `same-site`, and a state-changing request that names
/// no origin at all; then adds the security headers to every answer.
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_string);
    let fetch_site = req.headers().get("sec-fetch-site").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD);
    let refuse = |why: &str| {
        tracing::info!(path = %req.uri().path(), why, "web app: cross-site request refused");
        WebError::forbidden(&format!("Cross-site request refused: {why}.")).into_response()
    };
    let own = own_origin(&app);
    if let Some(o) = &origin
        && *o != own
    {
        return refuse(&format!("it came from {o}, not {own}"));
    }
    if matches!(fetch_site.as_str(), "cross-site" | "same-site") {
        return refuse("the browser says another site sent it");
    }
    if writes && origin.is_none() && fetch_site.is_empty() {
        return refuse("a form post must name its origin");
    }
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let req = if writes && form {
        match no_nul(req).await {
            Ok(req) => req,
            Err(resp) => return resp,
        }
    } else {
        req
    };
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: with it, browsers send `Origin: null` on form posts.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// Largest form the web app reads (a chat command's pasted manifest).
const MAX_FORM: usize = crate::http::extract::MAX_COMMAND_BODY;

/// Refuses a posted form (URL-encoded) holding a NUL character (`%00`: in it, a
/// literal `%` is always `%25`, so `%00` is only ever a NUL), which neither
/// backend should be asked to store (PostgreSQL cannot: it would be
/// "storage unavailable" there); the request as it came otherwise.
async fn no_nul(req: Request) -> Result<Request, Response> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM).await.map_err(|_| {
        WebError::new(StatusCode::PAYLOAD_TOO_LARGE, &format!("The form is larger than {} MiB.", MAX_FORM >> 20))
            .into_response()
    })?;
    // A raw NUL byte too: the form decoder keeps raw bytes as they are.
    if bytes.contains(&0) || bytes.windows(3).any(|w| w == b"%00") {
        return Err(WebError::new(
            StatusCode::BAD_REQUEST,
            "The form holds a NUL character (%00); remove it and send it again.",
        )
        .into_response());
    }
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

/// A form posted with the session's CSRF token.
#[derive(Debug, Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    pub(crate) csrf: String,
}

/// Refuses unless `sent` is the session's CSRF token.
pub(crate) fn check_csrf(s: &Session, sent: &str) -> Result<(), WebError> {
    if session::csrf_ok(s, sent) {
        Ok(())
    } else {
        Err(WebError::forbidden("This form has expired or was not sent by this page; reload the page and try again."))
    }
}

async fn login_page(State(app): State<Arc<App>>) -> Html<String> {
    Html(pages::login(None, app.self_service_signup).into_string())
}

/// Refuses unless the operator opened self-service sign-up.
fn signup_open(app: &App) -> Result<(), WebError> {
    if app.self_service_signup {
        Ok(())
    } else {
        Err(WebError::new(
            StatusCode::NOT_FOUND,
            "Sign-up is not open here; ask your platform operator for an account.",
        ))
    }
}

async fn signup_page(State(app): State<Arc<App>>) -> Result<Html<String>, WebError> {
    signup_open(&app)?;
    Ok(Html(pages::signup(&pages::SignupFields::default(), None).into_string()))
}

/// Creates a tenant (free plan, on trial) and its first admin through the
/// REST API's onboarding, signs the admin in, and shows their token once.
/// No session exists yet, so no CSRF token: the [`guard`]'s origin check
/// is what refuses another site's form.
async fn signup(State(app): State<Arc<App>>, Form(f): Form<pages::SignupFields>) -> Result<Response, WebError> {
    signup_open(&app)?;
    let req = crate::http::tenants::TenantCreate {
        name: f.name.trim().to_string(),
        slug: f.slug.trim().to_string(),
        admin_email: f.email.trim().to_string(),
        admin_name: Some(f.person.trim().to_string()).filter(|n| !n.is_empty()),
        plan: Some(crate::model::Plan::Free),
        status: Some(crate::model::TenantStatus::Trial),
        ..Default::default()
    };
    let made = match crate::http::tenants::onboard(&app, req).await {
        Ok(made) => made,
        Err(e) if e.status.is_client_error() => {
            let html = pages::signup(&f, Some(&e.message)).into_string();
            return Ok((e.status, Html(html)).into_response());
        }
        Err(e) => return Err(e.into()),
    };
    let cookie = session::open(&app, &made.secret.0).await?;
    let s = session::Session::of_cookie(&app, &cookie).await?;
    let mut r = Html(pages::welcome(&s, &made.tenant, &made.secret.0).into_string()).into_response();
    r.headers_mut().insert(header::SET_COOKIE, session::set_cookie(&cookie));
    Ok(r)
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

async fn login(State(app): State<Arc<App>>, Form(f): Form<LoginForm>) -> Response {
    match session::open(&app, &f.token).await {
        Ok(cookie) => {
            let mut r = Redirect::to("/ui/").into_response();
            r.headers_mut().insert(header::SET_COOKIE, session::set_cookie(&cookie));
            r
        }
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            let page = pages::login(Some(&e.message), app.self_service_signup);
            (StatusCode::UNAUTHORIZED, Html(page.into_string())).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn logout(State(app): State<Arc<App>>, s: Session, Form(f): Form<CsrfForm>) -> Result<Response, WebError> {
    check_csrf(&s, &f.csrf)?;
    session::end(&app, &s).await?;
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut().insert(header::SET_COOKIE, session::clear_cookie());
    Ok(r)
}

/// The signed-in person's clusters and whether each is connected.
async fn home(State(app): State<Arc<App>>, s: Session) -> Result<Html<String>, WebError> {
    let Some(t) = &s.tenant else {
        return platform(&app, &s).await;
    };
    let clusters = app.db.clusters(&t.id).await?;
    let tunnels = crate::directory::tunnels(&app.db, &Scope::Tenant(t.id.clone()), None).await?;
    let rows: Vec<pages::ClusterRow> = clusters
        .into_iter()
        .map(|c| {
            let mine: Vec<_> = tunnels.iter().filter(|x| x.cluster_id == c.id).cloned().collect();
            pages::ClusterRow { cluster: c, tunnels: mine }
        })
        .collect();
    Ok(Html(pages::home(&s, t, &rows).into_string()))
}

/// The platform operator's start page: every tenant, revenue, every tunnel.
async fn platform(app: &App, s: &Session) -> Result<Html<String>, WebError> {
    if !s.principal.is_platform() {
        return Err(WebError::forbidden("This account belongs to no tenant; ask a platform admin."));
    }
    let tenants = app.db.tenants(&Scope::Platform).await?;
    let mrr = crate::billing::mrr(&app.db).await?;
    let tunnels = crate::directory::tunnels(&app.db, &Scope::Platform, None).await?;
    Ok(Html(pages::platform_home(s, &tenants, &mrr, &tunnels).into_string()))
}

#[derive(Debug, Deserialize)]
struct AddCluster {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

/// Onboarding: registers a cluster and shows the helm command that
/// installs its agent, then waits live for the agent.
async fn add_cluster(
    State(app): State<Arc<App>>,
    s: Session,
    Form(f): Form<AddCluster>,
) -> Result<Html<String>, WebError> {
    check_csrf(&s, &f.csrf)?;
    let t = s.own_tenant()?;
    let req = crate::http::clusters::ClusterCreate { name: f.name.trim().to_string(), ..Default::default() };
    let out = crate::http::clusters::register(&app, &s.principal, &t.id, req).await?;
    let id = out["id"].as_str().unwrap_or_default().to_string();
    let name = out["name"].as_str().unwrap_or_default().to_string();
    let helm = out["helmInstall"].as_str().map(str::to_string);
    Ok(Html(pages::connect(&s, &id, &name, helm.as_deref()).into_string()))
}

/// A cluster's connection badge; polled by the page until connected.
async fn cluster_status(
    State(app): State<Arc<App>>,
    s: Session,
    Path(id): Path<String>,
) -> Result<Html<String>, WebError> {
    let c = own_cluster(&app, &s, &id).await?;
    let connected = !app.cache.routes(&c.tenant_id, &c.id).await?.is_empty();
    Ok(Html(pages::status(&c.id, connected).into_string()))
}

/// Cluster `id` of the person's own tenant, or the same 404 as a missing one.
pub(crate) async fn own_cluster(app: &App, s: &Session, id: &str) -> Result<crate::model::Cluster, WebError> {
    let t = s.own_tenant()?;
    app.db
        .clusters(&t.id)
        .await?
        .into_iter()
        .find(|c| c.id == id)
        .ok_or_else(|| WebError::new(StatusCode::NOT_FOUND, &format!("There is no cluster {id} in your tenant.")))
}

/// People (tenant admins see everyone and their roles) and API tokens (your
/// own; tenant admins see all); `created` is a token just made, shown once.
async fn people_page(app: &App, s: &Session, created: Option<(String, String)>) -> Result<Html<String>, WebError> {
    let t = s.own_tenant()?;
    let tokens = crate::http::tokens::list_tokens(app, &s.principal, &t.id).await?;
    let users = if s.is_admin() { app.db.users(&t.id).await? } else { Vec::new() };
    let access =
        if s.is_admin() { crate::http::access::list_access(app, &s.principal, &t.id).await? } else { Vec::new() };
    Ok(Html(pages::people(s, t, &users, &tokens, &access, created).into_string()))
}

#[derive(Debug, Deserialize)]
struct GrantForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    grantee_email: String,
    #[serde(default)]
    grantee_tenant: String,
    #[serde(default)]
    role: String,
    /// Empty: until revoked.
    #[serde(default)]
    expires_in_days: String,
}

/// Grants a person of another tenant a role here (the REST API's grant).
async fn grant_access(State(app): State<Arc<App>>, s: Session, Form(f): Form<GrantForm>) -> Result<Response, WebError> {
    check_csrf(&s, &f.csrf)?;
    let t = s.own_tenant()?;
    // platform_admin parses, and the grant refuses it like the REST API does.
    let role = crate::model::Role::parse(&f.role)
        .ok_or_else(|| WebError::new(StatusCode::BAD_REQUEST, &format!("There is no role {:?} to grant.", f.role)))?;
    let days = match f.expires_in_days.trim() {
        "" => None,
        d => {
            Some(d.parse::<u32>().map_err(|_| WebError::new(StatusCode::BAD_REQUEST, "Days must be a whole number."))?)
        }
    };
    let r = crate::http::access::AccessCreate {
        grantee_email: f.grantee_email.trim().to_string(),
        grantee_tenant: f.grantee_tenant.trim().to_string(),
        role,
        expires_in_days: days,
        expires_in_seconds: None,
    };
    crate::http::access::grant_access(&app, &s.principal, &t.id, r).await?;
    Ok(Redirect::to("/ui/people").into_response())
}

async fn revoke_access(
    State(app): State<Arc<App>>,
    s: Session,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, WebError> {
    check_csrf(&s, &f.csrf)?;
    let t = s.own_tenant()?;
    crate::http::access::revoke_access(&app, &s.principal, &t.id, &id).await?;
    Ok(Redirect::to("/ui/people").into_response())
}

async fn people(State(app): State<Arc<App>>, s: Session) -> Result<Html<String>, WebError> {
    people_page(&app, &s, None).await
}

#[derive(Debug, Deserialize)]
struct NewToken {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

async fn create_token(
    State(app): State<Arc<App>>,
    s: Session,
    Form(f): Form<NewToken>,
) -> Result<Html<String>, WebError> {
    check_csrf(&s, &f.csrf)?;
    let t = s.own_tenant()?;
    let req = crate::http::tokens::TokenCreate { name: f.name.trim().to_string(), ..Default::default() };
    let (secret, token) = crate::http::tokens::create_token(&app, &s.principal, &t.id, req).await?;
    people_page(&app, &s, Some((token.name, secret.0))).await
}

async fn revoke_token(
    State(app): State<Arc<App>>,
    s: Session,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, WebError> {
    check_csrf(&s, &f.csrf)?;
    let t = s.own_tenant()?;
    crate::http::tokens::revoke_token(&app, &s.principal, &t.id, &id).await?;
    Ok(Redirect::to("/ui/people").into_response())
}

/// The audit page's query: what to show (all optional; an empty field
/// filters nothing) and where the page starts.
#[derive(Debug, Default, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub(crate) struct AuditQuery {
    pub(crate) cluster: String,
    pub(crate) user: String,
    pub(crate) verb: String,
    pub(crate) resource: String,
    pub(crate) kind: String,
    pub(crate) decision: String,
    /// First day shown, `YYYY-MM-DD` (UTC).
    pub(crate) since: String,
    /// Last day shown, `YYYY-MM-DD` (UTC), inclusive.
    pub(crate) until: String,
    /// Newest first, below this position (the "Older" link's cursor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) before: Option<i64>,
    /// Events a page (10–500, default 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) limit: Option<i64>,
}

impl AuditQuery {
    /// The storage filter, or what is wrong with the query.
    fn filter(&self) -> Result<crate::audit::Filter, WebError> {
        let day = |name: &str, v: &str| -> Result<Option<i64>, WebError> {
            if v.is_empty() {
                return Ok(None);
            }
            let format = time::macros::format_description!("[year]-[month]-[day]");
            time::Date::parse(v, &format)
                .map(|d| Some(d.midnight().assume_utc().unix_timestamp() * 1000))
                .map_err(|_| WebError::new(StatusCode::BAD_REQUEST, &format!("{name} must be a date like 2026-12-01.")))
        };
        let some = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
        let limit = self.limit.unwrap_or(50);
        if !(10..=500).contains(&limit) {
            return Err(WebError::new(StatusCode::BAD_REQUEST, "A page holds 10 to 500 events."));
        }
        Ok(crate::audit::Filter {
            cluster: some(&self.cluster),
            user: some(&self.user),
            verb: some(&self.verb),
            resource: some(&self.resource),
            kind: some(&self.kind),
            decision: some(&self.decision),
            since_ms: day("The first day", &self.since)?,
            // The last day is shown whole.
            until_ms: day("The last day", &self.until)?.map(|ms| ms + 86_400_000),
            request_id: None,
            after: 0,
            before: Some(self.before.unwrap_or(i64::MAX)),
            limit,
        })
    }

    /// This query as a URL query string, without the page cursor.
    pub(crate) fn without_cursor(&self) -> String {
        let q = Self { before: None, ..self.clone() };
        serde_urlencoded::to_string(&q).unwrap_or_default()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct BillingQuery {
    /// The invoice shown, `YYYY-MM` (default: this month).
    month: String,
}

/// The months whose invoices the page offers: this one and the five before.
fn recent_months(now: time::OffsetDateTime) -> Vec<String> {
    let (mut y, mut m) = (now.year(), u8::from(now.month()));
    let mut out = Vec::new();
    for _ in 0..6 {
        out.push(format!("{y:04}-{m:02}"));
        if m == 1 {
            (y, m) = (y - 1, 12);
        } else {
            m -= 1;
        }
    }
    out
}

/// Usage against the plan, invoices by month, and the upgrade (tenant admins).
async fn billing(
    State(app): State<Arc<App>>,
    s: Session,
    axum::extract::Query(q): axum::extract::Query<BillingQuery>,
) -> Result<Html<String>, WebError> {
    let t = s.own_tenant_as_admin("see usage and invoices")?;
    let months = recent_months(time::OffsetDateTime::now_utc());
    let month = if q.month.is_empty() { months[0].clone() } else { q.month.clone() };
    if !months.contains(&month) {
        return Err(WebError::new(StatusCode::NOT_FOUND, "Invoices are shown for this month and the five before it."));
    }
    // The session's tenant comes from the cache, which an upgrade syncs
    // before its redirect answers: a plan just raised shows at once.
    let usage = app.db.usage(t).await?;
    let metered = crate::audit::usage_totals(&app.db, &t.id, &months[0]).await?;
    let invoice = crate::billing::invoice(&app.db, t, &month).await?;
    let page = pages::BillingPage { usage: &usage, metered: &metered, months: &months, invoice: &invoice };
    Ok(Html(pages::billing(&s, t, &page).into_string()))
}

#[derive(Debug, Deserialize)]
struct UpgradeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    plan: String,
}

/// Raises the plan (the REST API's upgrade), then shows the billing page.
async fn upgrade(State(app): State<Arc<App>>, s: Session, Form(f): Form<UpgradeForm>) -> Result<Response, WebError> {
    check_csrf(&s, &f.csrf)?;
    let t = s.own_tenant()?;
    // A plan that is no upgrade parses, and upgrade_plan refuses it.
    let plan = crate::model::Plan::parse(&f.plan)
        .ok_or_else(|| WebError::new(StatusCode::BAD_REQUEST, &format!("There is no plan {:?}.", f.plan)))?;
    crate::http::billing::upgrade_plan(&app, &s.principal, &t.id, plan).await?;
    Ok(Redirect::to("/ui/billing").into_response())
}

/// The tenant's audit trail, filtered, newest first a page at a time, and
/// whether its chain verifies.
async fn audit(
    State(app): State<Arc<App>>,
    s: Session,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> Result<Html<String>, WebError> {
    let t = s.own_tenant_as_admin("read the audit trail")?;
    let f = q.filter()?;
    let verification = crate::audit::verify(&app.db, &t.id, &app.signer).await?;
    let (items, next) = crate::audit::list(&app.db, &t.id, &f).await?;
    let clusters = app.db.clusters(&t.id).await?;
    let page = pages::AuditPage { query: &q, items: &items, older: next, clusters: &clusters };
    Ok(Html(pages::audit(&s, t, &verification, &page).into_string()))
}

/// The events the page's filters select, as JSON Lines (oldest first), for
/// the signed-in admin — the REST export's stream.
async fn audit_export(
    State(app): State<Arc<App>>,
    s: Session,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> Result<Response, WebError> {
    let t = s.own_tenant_as_admin("read the audit trail")?;
    let f = q.filter()?;
    let mut resp = crate::http::audit::export_stream(app.clone(), t.id.clone(), f);
    let name = format!("attachment; filename=\"kubechat-audit-{}.jsonl\"", t.slug);
    if let Ok(v) = HeaderValue::from_str(&name) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// The vendored and own static files.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind): (&'static [u8], &str) = match file.as_str() {
        "htmx.min.js" => (include_bytes!("../../assets/vendor/htmx.min.js"), "text/javascript"),
        "htmx-ext-sse.min.js" => (include_bytes!("../../assets/vendor/htmx-ext-sse.min.js"), "text/javascript"),
        "app.css" => (include_bytes!("../../assets/app.css"), "text/css"),
        "app.js" => (include_bytes!("../../assets/app.js"), "text/javascript"),
        _ => return WebError::new(StatusCode::NOT_FOUND, "No such file.").into_response(),
    };
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_str(kind).unwrap_or(HeaderValue::from_static("text/plain")));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    r
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    #[test]
    fn vendored_assets_are_the_pinned_ones() {
        let sums = include_str!("../../assets/vendor/SHA256SUMS");
        let files: [(&str, &[u8]); 2] = [
            ("htmx.min.js", include_bytes!("../../assets/vendor/htmx.min.js")),
            ("htmx-ext-sse.min.js", include_bytes!("../../assets/vendor/htmx-ext-sse.min.js")),
        ];
        for (name, bytes) in files {
            let hex: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
            assert!(sums.lines().any(|l| l == format!("{hex}  {name}")), "{name} is not the vendored file: {hex}");
        }
    }
}
