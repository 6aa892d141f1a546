//! `metrics.k8s.io/v1beta1`, as metrics-server serves it through the
//! aggregator: PodMetrics and NodeMetrics with made-up but stable usage
//! figures (the same pod or container always uses the same), a node's
//! usage being its pods' plus the system's. [`crate::cluster::Cluster::set_metrics`]
//! switches the API off, as in a cluster without metrics-server.

use serde_json::{Value, json};

use crate::cluster::{Cluster, s};
use crate::error::ApiError;
use crate::request::RequestInfo;
use crate::selector::Selector;
use crate::store::now_rfc3339;

/// The API group.
pub const GROUP: &str = "metrics.k8s.io";

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// A container's usage: (nanocores, KiB).
pub fn container_usage(ns: &str, pod: &str, container: &str) -> (u64, u64) {
    // The pod's name without its generated suffix, so replicas use alike.
    let h = fnv(&format!("{ns}/{pod}/{container}"));
    let cpu = (h % 47 + 1) * 1_000_000 + (h >> 8) % 1_000_000;
    let mem = ((h >> 16) % 180 + 12) * 1024 + (h >> 24) % 1024;
    (cpu, mem)
}

fn pod_metrics(pod: &Value, timestamp: &str) -> Value {
    let (ns, name) = (s(pod, "/metadata/namespace"), s(pod, "/metadata/name"));
    let containers: Vec<Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let (cpu, mem) = container_usage(ns, name, s(c, "/name"));
            json!({"name": s(c, "/name"), "usage": {"cpu": format!("{cpu}n"), "memory": format!("{mem}Ki")}})
        })
        .collect();
    let mut meta = json!({"name": name, "namespace": ns, "creationTimestamp": timestamp});
    if let Some(l) = pod.pointer("/metadata/labels") {
        meta["labels"] = l.clone();
    }
    json!({"metadata": meta, "timestamp": timestamp, "window": "10.512s", "containers": containers})
}

fn node_metrics(node: &Value, pods: &[Value], timestamp: &str) -> Value {
    let name = s(node, "/metadata/name");
    let h = fnv(name);
    let (mut cpu, mut mem) = (120_000_000 + h % 40_000_000, 900 * 1024 + (h >> 8) % 200_000);
    for p in pods.iter().filter(|p| s(p, "/spec/nodeName") == name) {
        for c in p.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
            let (c_cpu, c_mem) = container_usage(s(p, "/metadata/namespace"), s(p, "/metadata/name"), s(c, "/name"));
            cpu += c_cpu;
            mem += c_mem;
        }
    }
    let mut meta = json!({"name": name, "creationTimestamp": timestamp});
    if let Some(l) = node.pointer("/metadata/labels") {
        meta["labels"] = l.clone();
    }
    json!({"metadata": meta, "timestamp": timestamp, "window": "20.04s",
           "usage": {"cpu": format!("{cpu}n"), "memory": format!("{mem}Ki")}})
}

/// Answers a `metrics.k8s.io` request (get or list of pods or nodes).
pub fn serve(
    cluster: &Cluster,
    info: &RequestInfo,
    query: &std::collections::HashMap<String, String>,
) -> Result<Value, ApiError> {
    let r = cluster.resource(GROUP, &info.api_version, &info.resource).ok_or_else(|| ApiError::no_route(&info.path))?;
    if !matches!(info.verb.as_str(), "get" | "list") || !info.subresource.is_empty() {
        return Err(ApiError::method_not_allowed(&format!("{} {}", info.verb, info.resource)));
    }
    let now = now_rfc3339();
    let labels =
        Selector::parse(query.get("labelSelector").map_or("", String::as_str)).map_err(ApiError::bad_request)?;
    let fields =
        Selector::parse(query.get("fieldSelector").map_or("", String::as_str)).map_err(ApiError::bad_request)?;
    let pods_r = cluster.builtin("", "pods");
    let running = |p: &Value| s(p, "/status/phase") == "Running";
    let items: Vec<Value> = if info.resource == "pods" {
        let ns = (!info.namespace.is_empty()).then_some(info.namespace.as_str());
        let pods = cluster.store.list(&pods_r, ns).0;
        pods.iter()
            .filter(|p| running(p) && (info.name.is_empty() || s(p, "/metadata/name") == info.name))
            .filter(|p| labels.matches_labels(p) && fields.matches_fields(p))
            .map(|p| pod_metrics(p, &now))
            .collect()
    } else {
        let pods: Vec<Value> = cluster.store.list(&pods_r, None).0.into_iter().filter(running).collect();
        cluster
            .store
            .list(&cluster.builtin("", "nodes"), None)
            .0
            .iter()
            .filter(|n| (info.name.is_empty() || s(n, "/metadata/name") == info.name) && labels.matches_labels(n))
            .map(|n| node_metrics(n, &pods, &now))
            .collect()
    };
    let kind = r.kind.clone();
    if !info.name.is_empty() {
        let mut one = items.into_iter().next().ok_or_else(|| ApiError::not_found(&r, &info.name))?;
        one["kind"] = json!(kind);
        one["apiVersion"] = json!(r.group_version());
        return Ok(one);
    }
    Ok(json!({"kind": format!("{kind}List"), "apiVersion": r.group_version(), "metadata": {}, "items": items}))
}
