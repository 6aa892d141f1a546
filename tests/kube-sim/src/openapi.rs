//! `/openapi/v3`: the index of group-version documents and each document.

use serde_json::{Value, json};

/// The `/openapi/v3` index.
pub fn index() -> Value {
    json!({"paths": {}})
}
