//! Kubernetes `Status` JSON, the body of every error on the kube path, so
//! kubectl prints our errors the way it prints the API server's.

use serde::{Deserialize, Serialize};

/// Media type of a `Status` body.
pub const CONTENT_TYPE: &str = "application/json";

/// Response header a relay sets on every answer it makes itself (no
/// tunnel, the agent failed, the API server could not be reached), as
/// opposed to one the API server made. The control plane counts only those
/// against a tenant's circuit breaker, and removes the header.
pub const ORIGIN_HEADER: &str = "kubechat-origin";

/// A `meta.k8s.io/v1` `Status` object with `status: Failure`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Always `Status`.
    pub kind: String,
    /// Always `v1`.
    pub api_version: String,
    /// Always empty.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Always `Failure`.
    pub status: String,
    /// What happened and what to do, for a person.
    pub message: String,
    /// A machine-readable reason, e.g. `ServiceUnavailable`.
    pub reason: String,
    /// The HTTP status code.
    pub code: u16,
}

impl Status {
    /// A failure with HTTP `code`, Kubernetes `reason` and a `message`.
    pub fn failure(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            kind: "Status".into(),
            api_version: "v1".into(),
            metadata: serde_json::Map::new(),
            status: "Failure".into(),
            message: message.into(),
            reason: reason.into(),
            code,
        }
    }

    /// The JSON encoding.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a Status of strings and numbers always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_api_server() {
        let s = Status::failure(503, "ServiceUnavailable", "no agent");
        let v: serde_json::Value = serde_json::from_slice(&s.to_json()).expect("json");
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["code"], 503);
        assert_eq!(v["reason"], "ServiceUnavailable");
    }
}
