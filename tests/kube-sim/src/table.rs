//! `meta.k8s.io/v1` `Table` answers (`Accept: …;as=Table`), with the
//! columns kubectl shows for the common kinds and NAME/AGE for the rest.

use serde_json::{Value, json};

fn s<'a>(o: &'a Value, p: &str) -> &'a str {
    o.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// Human age of an RFC 3339 timestamp, like kubectl prints it.
pub fn age(ts: &str) -> String {
    let Ok(t) = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339) else {
        return "<unknown>".into();
    };
    let secs = (time::OffsetDateTime::now_utc() - t).whole_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn columns(kind: &str) -> Vec<(&'static str, &'static str)> {
    match kind {
        "Pod" => vec![
            ("Name", "string"),
            ("Ready", "string"),
            ("Status", "string"),
            ("Restarts", "string"),
            ("Age", "string"),
            ("IP", "string"),
            ("Node", "string"),
        ],
        "Deployment" => vec![
            ("Name", "string"),
            ("Ready", "string"),
            ("Up-to-date", "string"),
            ("Available", "string"),
            ("Age", "string"),
        ],
        "Service" => vec![
            ("Name", "string"),
            ("Type", "string"),
            ("Cluster-IP", "string"),
            ("External-IP", "string"),
            ("Port(s)", "string"),
            ("Age", "string"),
        ],
        "Node" => vec![
            ("Name", "string"),
            ("Status", "string"),
            ("Roles", "string"),
            ("Age", "string"),
            ("Version", "string"),
        ],
        "Event" => vec![
            ("Last Seen", "string"),
            ("Type", "string"),
            ("Reason", "string"),
            ("Object", "string"),
            ("Message", "string"),
        ],
        "Namespace" => vec![("Name", "string"), ("Status", "string"), ("Age", "string")],
        "ReplicaSet" => vec![
            ("Name", "string"),
            ("Desired", "integer"),
            ("Current", "integer"),
            ("Ready", "integer"),
            ("Age", "string"),
        ],
        "DaemonSet" => vec![
            ("Name", "string"),
            ("Desired", "integer"),
            ("Current", "integer"),
            ("Ready", "integer"),
            ("Up-to-date", "integer"),
            ("Available", "integer"),
            ("Node Selector", "string"),
            ("Age", "string"),
        ],
        "PodDisruptionBudget" => vec![
            ("Name", "string"),
            ("Min Available", "string"),
            ("Max Unavailable", "string"),
            ("Allowed Disruptions", "integer"),
            ("Age", "string"),
        ],
        _ => vec![("Name", "string"), ("Age", "string")],
    }
}

fn cells(kind: &str, o: &Value) -> Vec<Value> {
    let name = s(o, "/metadata/name");
    let a = age(s(o, "/metadata/creationTimestamp"));
    match kind {
        "Pod" => {
            let total = o.pointer("/spec/containers").and_then(Value::as_array).map_or(0, Vec::len);
            let statuses =
                o.pointer("/status/containerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
            let ready = statuses.iter().filter(|c| c.get("ready").and_then(Value::as_bool).unwrap_or(false)).count();
            let restarts: i64 = statuses.iter().filter_map(|c| c.get("restartCount").and_then(Value::as_i64)).sum();
            let phase =
                if o.pointer("/metadata/deletionTimestamp").is_some() { "Terminating" } else { s(o, "/status/phase") };
            vec![
                json!(name),
                json!(format!("{ready}/{total}")),
                json!(if phase.is_empty() { "Pending" } else { phase }),
                json!(restarts.to_string()),
                json!(a),
                json!(if s(o, "/status/podIP").is_empty() { "<none>" } else { s(o, "/status/podIP") }),
                json!(if s(o, "/spec/nodeName").is_empty() { "<none>" } else { s(o, "/spec/nodeName") }),
            ]
        }
        "Deployment" => {
            let want = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            let n = |p: &str| o.pointer(p).and_then(Value::as_i64).unwrap_or(0);
            vec![
                json!(name),
                json!(format!("{}/{want}", n("/status/readyReplicas"))),
                json!(n("/status/updatedReplicas")),
                json!(n("/status/availableReplicas")),
                json!(a),
            ]
        }
        "Service" => {
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            format!(
                                "{}/{}",
                                p.get("port").and_then(Value::as_i64).unwrap_or(0),
                                p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let t = s(o, "/spec/type");
            vec![
                json!(name),
                json!(if t.is_empty() { "ClusterIP" } else { t }),
                json!(if s(o, "/spec/clusterIP").is_empty() { "<none>" } else { s(o, "/spec/clusterIP") }),
                json!("<none>"),
                json!(if ports.is_empty() { "<none>".to_string() } else { ports.join(",") }),
                json!(a),
            ]
        }
        "Node" => {
            let ready = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| cs.iter().any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True"));
            let mut status = if ready { "Ready" } else { "NotReady" }.to_string();
            if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
                status.push_str(",SchedulingDisabled");
            }
            vec![json!(name), json!(status), json!("<none>"), json!(a), json!(s(o, "/status/nodeInfo/kubeletVersion"))]
        }
        "ReplicaSet" => {
            let n = |p: &str| o.pointer(p).and_then(Value::as_i64).unwrap_or(0);
            vec![
                json!(name),
                json!(n("/spec/replicas")),
                json!(n("/status/replicas")),
                json!(n("/status/readyReplicas")),
                json!(a),
            ]
        }
        "DaemonSet" => {
            let n = |p: &str| o.pointer(p).and_then(Value::as_i64).unwrap_or(0);
            let sel: Vec<String> = o
                .pointer("/spec/template/spec/nodeSelector")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect())
                .unwrap_or_default();
            vec![
                json!(name),
                json!(n("/status/desiredNumberScheduled")),
                json!(n("/status/currentNumberScheduled")),
                json!(n("/status/numberReady")),
                json!(n("/status/updatedNumberScheduled")),
                json!(n("/status/numberAvailable")),
                json!(if sel.is_empty() { "<none>".to_string() } else { sel.join(",") }),
                json!(a),
            ]
        }
        "PodDisruptionBudget" => {
            let show = |p: &str| match o.pointer(p) {
                Some(Value::String(v)) => v.clone(),
                Some(Value::Number(v)) => v.to_string(),
                _ => "N/A".to_string(),
            };
            vec![
                json!(name),
                json!(show("/spec/minAvailable")),
                json!(show("/spec/maxUnavailable")),
                json!(o.pointer("/status/disruptionsAllowed").and_then(Value::as_i64).unwrap_or(0)),
                json!(a),
            ]
        }
        "Event" => vec![
            json!(age(if s(o, "/lastTimestamp").is_empty() {
                s(o, "/metadata/creationTimestamp")
            } else {
                s(o, "/lastTimestamp")
            })),
            json!(s(o, "/type")),
            json!(s(o, "/reason")),
            json!(format!("{}/{}", s(o, "/involvedObject/kind").to_ascii_lowercase(), s(o, "/involvedObject/name"))),
            json!(s(o, "/message")),
        ],
        "Namespace" => vec![
            json!(name),
            json!(if s(o, "/status/phase").is_empty() { "Active" } else { s(o, "/status/phase") }),
            json!(a),
        ],
        _ => vec![json!(name), json!(a)],
    }
}

fn partial_metadata(o: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(json!({}))})
}

/// A Table of `items` of `kind`.
pub fn table(kind: &str, items: &[Value], resource_version: &str, continue_token: Option<&str>) -> Value {
    let defs: Vec<Value> = columns(kind)
        .iter()
        .enumerate()
        .map(|(i, (n, t))| {
            json!({"name": n, "type": t, "format": if *n == "Name" { "name" } else { "" }, "description": n, "priority": if i > 4 { 1 } else { 0 }})
        })
        .collect();
    let rows: Vec<Value> =
        items.iter().map(|o| json!({"cells": cells(kind, o), "object": partial_metadata(o)})).collect();
    let mut meta = json!({"resourceVersion": resource_version});
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": defs, "rows": rows})
}

/// Whether an `Accept` header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|first| first.contains("as=Table"))
}
