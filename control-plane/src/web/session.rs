//! Web app sessions: signing in with an API token gives a server-side
//! session behind a `__Host-` cookie (`Secure; HttpOnly; SameSite=Strict`).
//! The session stands for that token: revoking the token, deleting the
//! person or changing their role takes effect on the session too (the
//! principal is read through the same cache as API calls). Sessions end on
//! logout (on the server: the cookie is refused afterwards, on every
//! replica within the cache's bound), after [`IDLE`] without use and
//! [`ABSOLUTE`] after sign-in.
//!
//! A signed-in request reads its session from memory ([`crate::cache`]);
//! last use is written through the writer at most once a minute per
//! replica, and another replica sees it when its copy ages out
//! ([`crate::cache::MAX_AGE`]), so the idle timeout is judged within about
//! two minutes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use http::request::Parts;
use http::{HeaderValue, header};
use rand::Rng;

use super::WebError;
use crate::app::App;
use crate::auth::{self, Principal};
use crate::directory::now_ms;
use crate::model::{Tenant, TenantStatus};
use crate::store::sessions::StoredSession;
use crate::writer::Write;

/// The session cookie's name (`__Host-`: Secure, path `/`, no domain).
pub const COOKIE: &str = "__Host-kubechat";
/// A session unused this long ends.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, however used.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);
/// Last use is written at most this often.
const TOUCH_EVERY: i64 = 60_000;

/// A signed-in person, from the session cookie.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who they are (the API token the session was opened with).
    pub principal: Principal,
    /// Their tenant (none for platform administrators).
    pub tenant: Option<Tenant>,
    /// The CSRF token every state-changing request must carry.
    pub csrf: String,
    /// The stored session's id (the cookie's hash).
    pub id_hash: String,
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes).map(|_| format!("{:02x}", rng.random::<u8>())).collect()
}

/// The session cookie's value in `parts`, if sent.
pub(crate) fn cookie_value(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The `Set-Cookie` value of a new session.
pub(crate) fn set_cookie(value: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        ABSOLUTE.as_secs()
    ))
    .unwrap_or_else(|_| {
        HeaderValue::from_static("__Host-kubechat=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
    })
}

/// The `Set-Cookie` value that removes the cookie.
pub(crate) fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("__Host-kubechat=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Opens a session for `token` (an API token); the cookie value to set.
pub(crate) async fn open(app: &App, token: &str) -> Result<String, WebError> {
    let token = token.trim();
    if !token.starts_with(auth::TOKEN_PREFIX) {
        return Err(WebError::unauthenticated("That is not a KubeChat API token (they start with kc_)."));
    }
    let p = crate::http::extract::authenticate(app, token)
        .await
        .map_err(|e| WebError::unauthenticated(&format!("Sign-in refused: {}", e.message)))?;
    let cookie = random_hex(32);
    let now = now_ms();
    app.db
        .insert_session(&StoredSession {
            id_hash: auth::hash(&cookie),
            token_hash: auth::hash(token),
            user_id: p.user.id.clone(),
            csrf: random_hex(32),
            created_at_ms: now,
            last_seen_ms: now,
            ended_at_ms: None,
        })
        .await?;
    Ok(cookie)
}

/// Ends the session (logout).
pub(crate) async fn end(app: &App, s: &Session) -> Result<(), WebError> {
    app.db.end_session(&s.id_hash, now_ms()).await?;
    app.cache.invalidate(crate::cache::Change::Session, &s.id_hash);
    Ok(())
}

impl FromRequestParts<Arc<App>> for Session {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, WebError> {
        let cookie = cookie_value(parts).ok_or_else(WebError::sign_in)?;
        Self::of_cookie(app, &cookie).await
    }
}

impl Session {
    /// The live session a cookie value stands for (or sign in again).
    pub(crate) async fn of_cookie(app: &App, cookie: &str) -> Result<Self, WebError> {
        let id_hash = auth::hash(cookie);
        let s = app.cache.session(&id_hash).await?.ok_or_else(WebError::sign_in)?;
        let now = now_ms();
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        if s.ended_at_ms.is_some() || now - s.last_seen_ms > ms(IDLE) || now - s.created_at_ms > ms(ABSOLUTE) {
            return Err(WebError::sign_in());
        }
        let owner = app.cache.token_owner(&s.token_hash).await?.ok_or_else(WebError::sign_in)?;
        if owner.revoked_at.is_some() || owner.expires_at.is_some_and(|e| e <= crate::store::now()) {
            return Err(WebError::sign_in());
        }
        if owner.user.id != s.user_id {
            return Err(WebError::sign_in());
        }
        let mut principal = Principal { user: owner.user, token_id: owner.token_id, tenant_slug: None };
        app.per_token.check(&principal.token_id, Instant::now()).map_err(|w| {
            WebError::new(
                http::StatusCode::TOO_MANY_REQUESTS,
                &format!("Too many requests; retry in {} s.", w.as_secs().max(1)),
            )
        })?;
        let tenant = match principal.user.tenant_id.clone() {
            Some(t) => {
                let tenant = app.cache.tenant(&t).await?.ok_or_else(WebError::sign_in)?;
                if tenant.status == TenantStatus::Suspended {
                    return Err(WebError::new(
                        http::StatusCode::FORBIDDEN,
                        &format!("Tenant {} is suspended; contact support to reactivate it.", tenant.slug),
                    ));
                }
                principal.tenant_slug = Some(tenant.slug.clone());
                Some(tenant)
            }
            None => None,
        };
        if now - s.last_seen_ms > TOUCH_EVERY {
            app.cache.session_seen(&id_hash, now);
            // As token last-use: never waited on; a full queue skips one.
            if app.writer.try_queue(vec![Write::SessionSeen { id_hash: id_hash.clone(), at_ms: now }]).is_err() {
                tracing::debug!("session last use not recorded: the writer queue is full");
            }
        }
        Ok(Self { principal, tenant, csrf: s.csrf, id_hash })
    }

    /// The person's own tenant; platform administrators have none (they
    /// manage tenants through the API).
    pub fn own_tenant(&self) -> Result<&Tenant, WebError> {
        self.tenant.as_ref().ok_or_else(|| {
            WebError::new(
                http::StatusCode::NOT_FOUND,
                "Platform administrators have no tenant of their own here; manage tenants through the API.",
            )
        })
    }

    /// Whether the person administers their tenant.
    pub fn is_admin(&self) -> bool {
        matches!(self.principal.user.role, crate::model::Role::TenantAdmin | crate::model::Role::PlatformAdmin)
    }

    /// The person's own tenant when they administer it; else a 403 saying
    /// only tenant admins may `what` (e.g. "read the audit trail").
    pub fn own_tenant_as_admin(&self, what: &str) -> Result<&Tenant, WebError> {
        let t = self.own_tenant()?;
        if !self.is_admin() {
            return Err(WebError::forbidden(&format!("Only tenant admins {what}; ask one.")));
        }
        Ok(t)
    }
}

/// Whether `sent` is the session's CSRF token (compared in constant time).
pub(crate) fn csrf_ok(s: &Session, sent: &str) -> bool {
    let (a, b) = (s.csrf.as_bytes(), sent.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
