//! API errors: an HTTP status, a stable machine code and a message a person
//! can act on, answered as `{"error": {"code": …, "message": …}}`.

use http::StatusCode;

use crate::store::StoreError;

/// An error answer of the REST API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `plan_limit`.
    pub code: &'static str,
    /// What happened and what to do.
    pub message: String,
    /// Seconds to wait, for 429.
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }
    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 401.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }
    /// 403 with a code.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }
    /// 404: also what another tenant's ids get, so they cannot be probed.
    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} {id} not found"))
    }
    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("request body exceeds {limit} bytes"))
    }
    /// 429 with Retry-After.
    pub fn rate_limited(scope: &str, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests for this {scope}; retry in {retry_after}s"),
            )
        }
    }
    /// 503 for storage failures (details go to the log, not the caller):
    /// nothing was applied, and retrying may succeed.
    pub fn storage_unavailable() -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", "storage unavailable; retry")
        }
    }
    /// 500 (details go to the log, not the caller).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the request was not applied, retry later",
        )
    }
    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(v) = self.retry_after.and_then(|s| http::HeaderValue::from_str(&s.to_string()).ok()) {
            resp.headers_mut().insert(http::header::RETRY_AFTER, v);
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    /// The generic answer to a storage error; callers that know what a
    /// conflict or a limit means for their write map those themselves.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(e) => {
                tracing::error!(error = %e, "storage failure");
                Self::storage_unavailable()
            }
            StoreError::Conflict { constraint } => {
                Self::conflict(format!("an object with that name already exists ({constraint})"))
            }
            StoreError::LimitReached { what, limit } => {
                Self::forbidden("plan_limit", format!("the plan allows {limit} {what}; upgrade the plan"))
            }
            StoreError::Corrupt(why) => {
                tracing::error!(error = %why, "stored data is invalid");
                Self::internal()
            }
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from(e).into()
    }
}
