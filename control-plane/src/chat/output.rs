//! What a chat command shows, as data: tables (from the API's `Table`
//! answers) with their columns, YAML or JSON of objects, text (logs,
//! descriptions), and lists of findings. Secret values are redacted unless
//! the caller's role may read secrets.

use serde::Serialize;
use serde_json::{Value, json};

use crate::model::Role;

/// Rows shown per table page.
pub const PAGE_ROWS: usize = 500;
/// Longest text block shown, in bytes.
pub const MAX_TEXT: usize = 1 << 20;

/// One part of a command's output.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Block {
    /// A table.
    Table {
        /// What it lists (`pods`, `deployments.apps`).
        title: String,
        /// Column names and types, in order.
        columns: Vec<Column>,
        /// Rows of cells (strings, numbers).
        rows: Vec<Vec<Value>>,
        /// There is more: send the command again with this `continue`.
        #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
        next: Option<String>,
        /// The object each row is (one per row, in order), when the API
        /// said: what a deep link to a row names.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        objects: Vec<ObjectRef>,
    },
    /// Text (logs, a description).
    Text {
        /// What it is.
        title: String,
        /// The text.
        text: String,
        /// Cut at [`MAX_TEXT`].
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
    },
    /// An object or list as YAML.
    Yaml {
        /// The YAML.
        text: String,
    },
    /// An object or list as JSON.
    Json {
        /// The value.
        value: Value,
    },
    /// What is wrong or notable, most important first.
    Findings {
        /// What was looked at.
        title: String,
        /// One per finding.
        items: Vec<Finding>,
    },
}

/// The object a table row shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// Its name.
    pub name: String,
    /// Its namespace (none for cluster-scoped objects).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A table column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Column {
    /// Header.
    pub name: String,
    /// `string`, `integer`, `number`, `date`…
    #[serde(rename = "type")]
    pub kind: String,
}

/// One finding of `diagnose` or `changes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// `error`, `warning` or `info`.
    pub severity: String,
    /// The object it is about (`pod/api-7d9f8c6b5-x2kqp`).
    pub object: String,
    /// What was found.
    pub message: String,
    /// Evidence (log lines, an event's message).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

impl Block {
    /// A text block, cut at [`MAX_TEXT`].
    pub fn text(title: impl Into<String>, mut text: String) -> Self {
        let truncated = text.len() > MAX_TEXT;
        if truncated {
            let mut end = MAX_TEXT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        Self::Text { title: title.into(), text, truncated }
    }

    /// A table of string columns.
    pub fn simple_table(title: impl Into<String>, columns: &[&str], rows: Vec<Vec<Value>>) -> Self {
        Self::Table {
            title: title.into(),
            columns: columns.iter().map(|c| Column { name: c.to_string(), kind: "string".into() }).collect(),
            rows,
            next: None,
            objects: Vec::new(),
        }
    }

    /// The table a `Table` answer holds: priority-0 columns, or all of them
    /// when `wide`; a NAMESPACE column first when `namespaces`; a LABELS
    /// column last when `labels`.
    pub fn from_table(title: &str, table: &Value, wide: bool, namespaces: bool, labels: bool) -> Self {
        let defs = table["columnDefinitions"].as_array().cloned().unwrap_or_default();
        let keep: Vec<usize> = defs
            .iter()
            .enumerate()
            .filter(|(_, d)| wide || d["priority"].as_i64().unwrap_or(0) == 0)
            .map(|(i, _)| i)
            .collect();
        let mut columns: Vec<Column> = keep
            .iter()
            .map(|&i| Column {
                name: defs[i]["name"].as_str().unwrap_or("").to_ascii_uppercase(),
                kind: defs[i]["type"].as_str().unwrap_or("string").to_string(),
            })
            .collect();
        if namespaces {
            columns.insert(0, Column { name: "NAMESPACE".into(), kind: "string".into() });
        }
        if labels {
            columns.push(Column { name: "LABELS".into(), kind: "string".into() });
        }
        let rows = table["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .take(PAGE_ROWS)
            .map(|row| {
                let cells = row["cells"].as_array().cloned().unwrap_or_default();
                let mut out: Vec<Value> = keep.iter().map(|&i| cells.get(i).cloned().unwrap_or(Value::Null)).collect();
                if namespaces {
                    out.insert(0, row["object"]["metadata"]["namespace"].clone());
                }
                if labels {
                    let l = row["object"]["metadata"]["labels"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_else(|| "<none>".into());
                    out.push(Value::String(l));
                }
                out
            })
            .collect();
        let next = table["metadata"]["continue"].as_str().filter(|c| !c.is_empty()).map(str::to_string);
        // Every row's object, or none at all (rows and objects stay in step).
        let objects = table["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .take(PAGE_ROWS)
            .map(|row| {
                let meta = &row["object"]["metadata"];
                Some(ObjectRef {
                    name: meta["name"].as_str().filter(|n| !n.is_empty())?.to_string(),
                    namespace: meta["namespace"].as_str().filter(|n| !n.is_empty()).map(str::to_string),
                })
            })
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default();
        Self::Table { title: title.to_string(), columns, rows, next, objects }
    }
}

/// Whether `role` may read secret values.
pub fn may_read_secrets(role: Role) -> bool {
    !matches!(role, Role::TenantViewer)
}

const REDACTED: &str = "<redacted>";

/// Env var names whose literal values are hidden from those who may not
/// read secrets.
fn looks_secret(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["PASSWORD", "PASSWD", "SECRET", "TOKEN", "APIKEY", "API_KEY", "PRIVATE", "CREDENTIAL", "AUTH"]
        .iter()
        .any(|w| n.contains(w))
}

/// Hides secret values in `v` (an object or a list of them) from a caller
/// whose role may not read secrets: Secrets' `data` and `stringData`
/// (kept as sizes), their last-applied annotation, and literal values of
/// secret-looking env vars in pod templates. Callers who may read secrets
/// see Secrets' values only when they asked for YAML or JSON (`explicit`).
pub fn redact(v: &mut Value, role: Role, explicit: bool) {
    let may = may_read_secrets(role) && explicit;
    redact_in(v, may, may_read_secrets(role));
}

fn redact_in(v: &mut Value, secrets_ok: bool, env_ok: bool) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(|i| redact_in(i, secrets_ok, env_ok)),
        Value::Object(map) => {
            if let Some(items) = map.get_mut("items") {
                redact_in(items, secrets_ok, env_ok);
            }
            let is_secret = map.get("kind").and_then(Value::as_str) == Some("Secret");
            if is_secret && !secrets_ok {
                for key in ["data", "stringData"] {
                    if let Some(Value::Object(d)) = map.get_mut(key) {
                        for (_, val) in d.iter_mut() {
                            let len = val.as_str().map_or(0, str::len);
                            *val = Value::String(format!("{REDACTED} ({len} bytes)"));
                        }
                    }
                }
                if let Some(Value::Object(a)) = map.get_mut("metadata").and_then(|m| m.get_mut("annotations"))
                    && let Some(x) = a.get_mut("kubectl.kubernetes.io/last-applied-configuration")
                {
                    *x = Value::String(REDACTED.into());
                }
            }
            if !env_ok {
                redact_env(map);
            }
        }
        _ => {}
    }
}

fn redact_env(map: &mut serde_json::Map<String, Value>) {
    for (k, v) in map.iter_mut() {
        if k == "env"
            && let Value::Array(vars) = v
        {
            for var in vars {
                let secret = var["name"].as_str().is_some_and(looks_secret);
                if secret && var.get("value").is_some() {
                    var["value"] = json!(REDACTED);
                }
            }
        } else if let Value::Object(inner) = v {
            redact_env(inner);
        } else if let Value::Array(items) = v {
            for i in items {
                if let Value::Object(inner) = i {
                    redact_env(inner);
                }
            }
        }
    }
}

/// YAML of `v`, as kubectl prints it.
pub fn yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|e| format!("# not shown as YAML: {e}\n{v}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_secret_looking_env_values_are_hidden_from_viewers() {
        let mut s = json!({"kind": "Secret", "metadata": {"name": "db", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"password\":\"aHVudGVyMg==\"}}"}}, "data": {"password": "aHVudGVyMg=="}});
        redact(&mut s, Role::TenantViewer, true);
        assert_eq!(s["data"]["password"], "<redacted> (12 bytes)");
        assert_eq!(s["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"], "<redacted>");
        let mut s2 = json!({"kind": "Secret", "data": {"password": "aHVudGVyMg=="}});
        redact(&mut s2, Role::TenantUser, true);
        assert_eq!(s2["data"]["password"], "aHVudGVyMg==", "asked for explicitly by a role that may read it");
        let mut s3 = json!({"kind": "Secret", "data": {"password": "aHVudGVyMg=="}});
        redact(&mut s3, Role::TenantAdmin, false);
        assert!(s3["data"]["password"].as_str().is_some_and(|v| v.starts_with("<redacted>")));

        let mut pod = json!({"kind": "List", "items": [{"kind": "Pod", "spec": {"containers": [{"name": "app", "env": [
            {"name": "DB_PASSWORD", "value": "hunter2"},
            {"name": "LOG_LEVEL", "value": "debug"},
            {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "t", "key": "k"}}}
        ]}]}}]});
        redact(&mut pod, Role::TenantViewer, true);
        let env = &pod["items"][0]["spec"]["containers"][0]["env"];
        assert_eq!(env[0]["value"], "<redacted>");
        assert_eq!(env[1]["value"], "debug");
        assert!(env[2].get("value").is_none());
    }

    #[test]
    fn table_rows_name_their_objects_only_when_every_row_does() {
        let t = json!({"columnDefinitions": [{"name": "Name", "type": "string", "priority": 0}], "rows": [
            {"cells": ["api-1"], "object": {"metadata": {"name": "api-1", "namespace": "web"}}},
            {"cells": ["node-a"], "object": {"metadata": {"name": "node-a"}}}
        ]});
        let Block::Table { objects, .. } = Block::from_table("pods", &t, false, false, false) else { panic!() };
        assert_eq!(
            objects,
            vec![
                ObjectRef { name: "api-1".into(), namespace: Some("web".into()) },
                ObjectRef { name: "node-a".into(), namespace: None }
            ]
        );
        let partial = json!({"columnDefinitions": [], "rows": [
            {"cells": [], "object": {"metadata": {"name": "a"}}},
            {"cells": [], "object": {"metadata": {}}}
        ]});
        let Block::Table { objects, .. } = Block::from_table("pods", &partial, false, false, false) else { panic!() };
        assert!(objects.is_empty(), "rows and objects must stay in step");
    }

    #[test]
    fn tables_keep_priority_zero_columns_unless_wide() {
        let t = json!({"columnDefinitions": [
            {"name": "Name", "type": "string", "priority": 0},
            {"name": "IP", "type": "string", "priority": 1}
        ], "rows": [{"cells": ["a", "10.0.0.1"], "object": {"metadata": {"namespace": "web", "labels": {"app": "a"}}}}],
           "metadata": {"continue": "next-page"}});
        let Block::Table { columns, rows, next, .. } = Block::from_table("pods", &t, false, true, true) else {
            panic!()
        };
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["NAMESPACE", "NAME", "LABELS"]);
        assert_eq!(rows[0], vec![json!("web"), json!("a"), json!("app=a")]);
        assert_eq!(next.as_deref(), Some("next-page"));
        let Block::Table { columns, .. } = Block::from_table("pods", &t, true, false, false) else { panic!() };
        assert_eq!(columns.len(), 2);
    }
}
