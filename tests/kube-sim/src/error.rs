//! API errors, answered as `Status` objects with the API server's codes,
//! reasons and messages.

use serde_json::{Value, json};

use crate::resources::Resource;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub code: u16,
    /// Kubernetes reason.
    pub reason: &'static str,
    /// The message kubectl prints.
    pub message: String,
    /// `details`, if any.
    pub details: Option<Value>,
}

fn qualified(r: &Resource) -> String {
    if r.group.is_empty() { r.plural.clone() } else { format!("{}.{}", r.plural, r.group) }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None }
    }

    fn with_details(mut self, r: &Resource, name: &str) -> Self {
        self.details = Some(json!({"name": name, "group": r.group, "kind": r.plural}));
        self
    }

    /// 404 NotFound.
    pub fn not_found(r: &Resource, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", qualified(r))).with_details(r, name)
    }

    /// 404 for a path that names no resource.
    pub fn no_route(path: &str) -> Self {
        Self::new(404, "NotFound", format!("the server could not find the requested resource ({path})"))
    }

    /// 409 AlreadyExists.
    pub fn already_exists(r: &Resource, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", qualified(r))).with_details(r, name)
    }

    /// 409 Conflict.
    pub fn conflict(r: &Resource, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified(r)
            ),
        )
        .with_details(r, name)
    }

    /// 409 Conflict for another reason than a stale resourceVersion.
    pub fn conflict_because(r: &Resource, name: &str, why: &str) -> Self {
        Self::new(409, "Conflict", format!("Operation cannot be fulfilled on {} \"{name}\": {why}", qualified(r)))
            .with_details(r, name)
    }

    /// 409 Conflict from a failed precondition (`DeleteOptions.preconditions`):
    /// the API server names the kind there, not the resource.
    pub fn precondition(r: &Resource, name: &str, why: &str) -> Self {
        let kind = if r.group.is_empty() { r.kind.clone() } else { format!("{}.{}", r.kind, r.group) };
        let mut e = Self::new(409, "Conflict", format!("Operation cannot be fulfilled on {kind} \"{name}\": {why}"));
        e.details = Some(json!({"name": name, "group": r.group, "kind": r.kind}));
        e
    }

    /// 422 Invalid.
    pub fn invalid(kind: &str, name: &str, why: &str) -> Self {
        Self::new(422, "Invalid", format!("{kind} \"{name}\" is invalid: {why}"))
    }

    /// 422 Invalid for field errors, as `errors.NewInvalid` words it: the
    /// group-qualified kind, each error as `field: detail`, and the causes.
    pub fn invalid_fields(group: &str, kind: &str, name: &str, errs: &[FieldError]) -> Self {
        let qualified = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        let list: Vec<String> = errs.iter().map(FieldError::to_string).collect();
        let why = if list.len() == 1 { list[0].clone() } else { format!("[{}]", list.join(", ")) };
        let causes: Vec<Value> =
            errs.iter().map(|e| json!({"reason": e.reason, "message": e.body(), "field": e.field})).collect();
        let mut e = Self::new(422, "Invalid", format!("{qualified} \"{name}\" is invalid: {why}"));
        e.details = Some(json!({"name": name, "group": group, "kind": kind, "causes": causes}));
        e
    }

    /// The 422 for a `dryRun` other than `All` (`options` is
    /// `CreateOptions`, `UpdateOptions`, `PatchOptions` or `DeleteOptions`).
    pub fn bad_dry_run(options: &str, values: &[String]) -> Self {
        let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
        let err = FieldError {
            field: "dryRun".into(),
            reason: "FieldValueNotSupported",
            detail: format!("Unsupported value: []string{{{}}}: supported values: \"All\"", quoted.join(", ")),
        };
        Self::invalid_fields("meta.k8s.io", options, "", &[err])
    }

    /// 429 TooManyRequests, with a cause (as the eviction subresource answers).
    pub fn too_many_requests(message: &str, retry_after: u32, cause: (&str, String)) -> Self {
        let mut e = Self::new(429, "TooManyRequests", message);
        let mut details = json!({"causes": [{"reason": cause.0, "message": cause.1}]});
        if retry_after > 0 {
            details["retryAfterSeconds"] = json!(retry_after);
        }
        e.details = Some(details);
        e
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// 403 Forbidden with the API server's message.
    pub fn forbidden(message: String) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(what: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({what})"),
        )
    }

    /// 410 Expired: a watch from a resource version no longer in history.
    pub fn gone(rv: u64) -> Self {
        Self::new(410, "Expired", format!("too old resource version: {rv}"))
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format: {ct}"))
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// One field error of a validation (`field.Error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path, e.g. `spec.template.metadata.labels`.
    pub field: String,
    /// The cause reason, e.g. `FieldValueRequired`.
    pub reason: &'static str,
    /// The body, e.g. `Required value`.
    pub detail: String,
}

impl FieldError {
    /// `Required value`.
    pub fn required(field: &str) -> Self {
        Self { field: field.into(), reason: "FieldValueRequired", detail: "Required value".into() }
    }

    /// `Invalid value: <value>: <why>`.
    pub fn invalid(field: &str, value: &str, why: &str) -> Self {
        Self { field: field.into(), reason: "FieldValueInvalid", detail: format!("Invalid value: {value}: {why}") }
    }

    fn body(&self) -> &str {
        &self.detail
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.detail)
    }
}
