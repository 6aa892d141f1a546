//! The HTTP(S) front: authentication, impersonation, authorization, and
//! the handlers for discovery, CRUD, watch, logs and access reviews.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::cluster::{Cluster, DeleteOptions, Propagation, WriteOptions};
use crate::error::{ApiError, FieldError};
use crate::rbac::{self, Attributes, UserInfo};
use crate::request::{self, GoUrl, RequestInfo};
use crate::resources::Resource;
use crate::selector::Selector;
use crate::store::{Preconditions, resource_key};
use crate::{patch, proto, review, table};

/// Response body type.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body accepted (the real API server's limit is 3 MiB).
const MAX_BODY: usize = 3 << 20;

/// Settings of a simulated API server.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Bearer token → identity.
    pub tokens: HashMap<String, UserInfo>,
    /// How often simulated containers write a log line.
    pub log_interval: Duration,
    /// Interval between BOOKMARK events on watches that ask for them.
    pub bookmark_interval: Duration,
}

/// One request as kube-sim received and read it (tests compare this with
/// what the control plane authorized).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// The HTTP method.
    pub method: String,
    /// The request target exactly as it arrived (path and query, escaped).
    pub target: String,
    /// How the API server's rules classify it.
    pub info: RequestInfo,
    /// The user it ran as (after impersonation; "" if that failed).
    pub user: String,
    /// The groups it ran with.
    pub groups: Vec<String>,
    /// The `kubechat.io/request-id` impersonation extra, if any.
    pub request_id: String,
    /// Every header (lowercase names) as received.
    pub headers: Vec<(String, String)>,
}

/// What impersonation names besides the user and groups.
#[derive(Debug, Clone, Default)]
struct Impersonated {
    /// `Impersonate-Extra-*` pairs (key, value), in the order received.
    extras: Vec<(String, String)>,
    /// `Impersonate-Uid`.
    uid: Option<String>,
}

/// How many received requests kube-sim remembers.
const SEEN_LIMIT: usize = 20_000;

/// The simulated API server.
pub struct KubeSim {
    /// The cluster state.
    pub cluster: Cluster,
    /// Settings.
    pub config: SimConfig,
    /// Service-account tokens issued by TokenRequest (`kubectl create
    /// token`, or a test standing in for the kubelet), with their user.
    pub issued_tokens: std::sync::Mutex<HashMap<String, UserInfo>>,
    /// The requests received, oldest first (the last [`SEEN_LIMIT`]).
    pub seen: std::sync::Mutex<std::collections::VecDeque<Seen>>,
    /// API groups served by an aggregated API that is down: the aggregator
    /// answers their requests `503 service unavailable`.
    pub unavailable_groups: std::sync::Mutex<Vec<String>>,
}

impl KubeSim {
    /// Every request received (the last [`SEEN_LIMIT`]), oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect()
    }

    /// The request carrying impersonation extra `kubechat.io/request-id=<id>`.
    pub fn seen_request(&self, id: &str) -> Option<Seen> {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().find(|s| s.request_id == id).cloned()
    }

    /// Marks `group`'s aggregated API as down (or up again).
    pub fn set_unavailable(&self, group: &str, down: bool) {
        let mut g = self.unavailable_groups.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        g.retain(|x| x != group);
        if down {
            g.push(group.to_string());
        }
    }

    fn remember(&self, seen: Seen) {
        let mut all = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if all.len() >= SEEN_LIMIT {
            all.pop_front();
        }
        all.push_back(seen);
    }
}

fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(serde_json::to_vec(v).unwrap_or_default())).boxed_unsync());
    *r.status_mut() = code;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &e.status())
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

impl KubeSim {
    /// Authenticates the bearer token.
    fn authenticate(&self, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
        let token = header_str(headers, "authorization").strip_prefix("Bearer ").map(str::trim).unwrap_or("");
        let issued =
            || self.issued_tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(token).cloned();
        let mut user = self.config.tokens.get(token).cloned().or_else(issued).ok_or_else(ApiError::unauthorized)?;
        if !user.groups.iter().any(|g| g == "system:authenticated") {
            user.groups.push("system:authenticated".into());
        }
        Ok(user)
    }

    /// Applies `Impersonate-*` headers, checking the caller's `impersonate`
    /// permission for the user, each group and each extra, like the API server.
    fn impersonate(&self, caller: UserInfo, headers: &HeaderMap) -> Result<(UserInfo, Impersonated), ApiError> {
        let user = header_str(headers, "impersonate-user").to_string();
        let groups: Vec<String> =
            headers.get_all("impersonate-group").iter().filter_map(|v| v.to_str().ok().map(str::to_string)).collect();
        let extras: Vec<(String, String)> = headers
            .iter()
            .filter_map(|(k, v)| {
                let key = k.as_str().strip_prefix("impersonate-extra-")?;
                Some((request::path_unescape(key)?, v.to_str().ok()?.to_string()))
            })
            .collect();
        let uid = Some(header_str(headers, "impersonate-uid").to_string()).filter(|u| !u.is_empty());
        if user.is_empty() {
            if uid.is_some() {
                return Err(ApiError::bad_request("requested impersonation of uid without impersonating a user"));
            }
            if !groups.is_empty() || !extras.is_empty() {
                return Err(ApiError::bad_request(
                    "requested impersonation of groups or extras without impersonating a user",
                ));
            }
            return Ok((caller, Impersonated::default()));
        }
        let check = |a: Attributes| -> Result<(), ApiError> {
            rbac::authorize(&self.cluster.store, &caller, &a)
                .map(|_| ())
                .map_err(|rbac::Denied| ApiError::forbidden(rbac::forbidden_message(&caller, &a)))
        };
        let imp = |resource: &str, group: &str, sub: &str, name: &str| Attributes {
            verb: "impersonate".into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            ..Default::default()
        };
        check(imp("users", "", "", &user))?;
        for g in &groups {
            check(imp("groups", "", "", g))?;
        }
        for (k, v) in &extras {
            check(imp("userextras", "authentication.k8s.io", k, v))?;
        }
        if let Some(u) = &uid {
            check(imp("uids", "authentication.k8s.io", "", u))?;
        }
        let mut groups = groups;
        groups.push("system:authenticated".into());
        Ok((UserInfo { name: user, groups }, Impersonated { extras, uid }))
    }

    fn authorize(&self, user: &UserInfo, info: &RequestInfo) -> Result<(), ApiError> {
        let a = Attributes {
            verb: info.verb.clone(),
            resource_request: info.resource_request,
            api_group: info.api_group.clone(),
            resource: info.resource.clone(),
            subresource: info.subresource.clone(),
            namespace: info.namespace.clone(),
            name: info.name.clone(),
            path: info.path.clone(),
        };
        rbac::authorize(&self.cluster.store, user, &a)
            .map(|_| ())
            .map_err(|rbac::Denied| ApiError::forbidden(rbac::forbidden_message(user, &a)))
    }
}

/// Serves one request.
pub async fn handle(sim: Arc<KubeSim>, req: Request<Incoming>) -> Response<Body> {
    // Go's net/http refuses a target it cannot parse before any handler
    // runs, with a bare text answer.
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
    let url = match GoUrl::parse_request_uri(&target) {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(%target, error = ?e, "request target refused");
            let mut r = Response::new(Full::new(Bytes::from_static(b"400 Bad Request")).boxed_unsync());
            *r.status_mut() = StatusCode::BAD_REQUEST;
            r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
            return r;
        }
    };
    match route(&sim, req, &target, &url).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

async fn read_body(req: Request<Incoming>) -> Result<(http::request::Parts, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| ApiError {
            code: 413,
            reason: "RequestEntityTooLarge",
            message: format!("request body too large or unreadable: {e}"),
            details: None,
        })?
        .to_bytes();
    Ok((parts, bytes))
}

async fn route(
    sim: &Arc<KubeSim>,
    req: Request<Incoming>,
    target: &str,
    url: &GoUrl,
) -> Result<Response<Body>, ApiError> {
    tracing::debug!(
        method = %req.method(),
        uri = %req.uri(),
        content_type = header_str(req.headers(), "content-type"),
        accept = header_str(req.headers(), "accept"),
        "request"
    );
    let info = request::request_info(req.method().as_str(), url).map_err(|e| ApiError {
        code: 500,
        reason: "InternalError",
        message: format!("failed to create RequestInfo: {}", e.0),
        details: None,
    })?;
    let mut seen = Seen {
        method: req.method().as_str().to_string(),
        target: target.to_string(),
        info: info.clone(),
        request_id: header_str(req.headers(), "impersonate-extra-kubechat.io%2frequest-id").to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        ..Default::default()
    };
    let caller = sim.authenticate(req.headers());
    let user = caller.and_then(|c| sim.impersonate(c, req.headers()));
    if let Ok((u, _)) = &user {
        seen.user = u.name.clone();
        seen.groups = u.groups.clone();
    }
    sim.remember(seen);
    let (user, impersonated) = user?;
    let values = url.query();
    let query: HashMap<String, String> = values.first_values();
    sim.authorize(&user, &info)?;
    let down =
        sim.unavailable_groups.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&info.api_group);
    if down && !info.api_group.is_empty() {
        // What kube-aggregator answers for an APIService whose backend is down.
        let mut r = Response::new(Full::new(Bytes::from_static(b"service unavailable\n")).boxed_unsync());
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
        return Ok(r);
    }
    if !info.resource_request {
        return discovery(sim, &info, req.headers());
    }
    if info.api_group == crate::metrics::GROUP && sim.cluster.metrics_enabled() {
        return crate::metrics::serve(&sim.cluster, &info, &query).map(|v| json_response(StatusCode::OK, &v));
    }
    let r = sim
        .cluster
        .resource(&info.api_group, &info.api_version, &info.resource)
        .ok_or_else(|| ApiError::no_route(&info.path))?;
    if r.namespaced
        && info.namespace.is_empty()
        && !matches!(info.verb.as_str(), "list" | "watch")
        && r.plural != "namespaces"
    {
        return Err(ApiError::no_route(&info.path));
    }
    let ns = if r.plural == "namespaces" { String::new() } else { info.namespace.clone() };
    let accept = header_str(req.headers(), "accept").to_string();
    match (info.verb.as_str(), info.subresource.as_str()) {
        ("create", "") if r.group == "authorization.k8s.io" => {
            let (_, body) = read_body(req).await?;
            access_review(sim, &r, &user, &body)
        }
        ("create", "") if r.plural == "selfsubjectreviews" => {
            read_body(req).await?;
            let mut extra = serde_json::Map::new();
            for (k, v) in &impersonated.extras {
                let entry = extra.entry(k.clone()).or_insert_with(|| json!([]));
                if let Some(a) = entry.as_array_mut() {
                    a.push(json!(v));
                }
            }
            let mut info = json!({"username": user.name, "groups": user.groups});
            if let Some(uid) = &impersonated.uid {
                info["uid"] = json!(uid);
            }
            if !extra.is_empty() {
                info["extra"] = Value::Object(extra);
            }
            Ok(json_response(
                StatusCode::CREATED,
                &json!({"kind": "SelfSubjectReview", "apiVersion": r.group_version(), "metadata": {"creationTimestamp": null},
                        "status": {"userInfo": info}}),
            ))
        }
        ("create", "eviction") if r.plural == "pods" && r.group.is_empty() => {
            let dry = dry_run_of(&values, "CreateOptions")?;
            let (_, body) = read_body(req).await?;
            let eviction = if body.starts_with(proto::MAGIC) {
                proto::object_to_json(&body)?
            } else {
                serde_json::from_slice::<Value>(&body)
                    .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?
            };
            if eviction.pointer("/metadata/name").and_then(Value::as_str) != Some(info.name.as_str()) {
                return Err(ApiError::bad_request("name in URL does not match name in Eviction object"));
            }
            let mut opts = delete_options(eviction.get("deleteOptions").unwrap_or(&json!({})))?;
            if dry
                && !opts.dry_run
                && eviction
                    .pointer("/deleteOptions/dryRun")
                    .is_some_and(|d| d.as_array().is_some_and(|a| !a.is_empty()))
            {
                return Err(ApiError::bad_request("Non-matching dry-run options in request and content"));
            }
            opts.dry_run |= dry;
            let status = sim.cluster.evict(&ns, &info.name, &opts)?;
            Ok(json_response(StatusCode::CREATED, &status))
        }
        ("get", "log") => logs(sim, &r, &ns, &info.name, &query).await,
        ("create", "token") if r.plural == "serviceaccounts" => {
            let (_, body) = read_body(req).await?;
            token_request(sim, &r, &ns, &info.name, &body)
        }
        ("get" | "create", "exec") => {
            let pod = sim.cluster.store.get(&r, &ns, &info.name)?;
            let container = pick_container(&pod, &info.name, query.get("container"))?;
            if pod.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
                return Err(ApiError::bad_request(format!("pod {} is not running", info.name)));
            }
            crate::exec::upgrade(req, crate::exec::ExecRequest::from_query(&info.name, &container, &values.pairs))
        }
        ("get" | "patch" | "update", "scale") => {
            let live = sim.cluster.store.get(&r, &ns, &info.name)?;
            let scale_of = |o: &Value| {
                let replicas = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
                let labels: Vec<String> = o
                    .pointer("/spec/selector/matchLabels")
                    .and_then(Value::as_object)
                    .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect())
                    .unwrap_or_default();
                json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
                       "metadata": {"name": info.name, "namespace": ns, "resourceVersion": o.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""))},
                       "spec": {"replicas": replicas},
                       "status": {"replicas": o.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": labels.join(",")}})
            };
            if info.verb == "get" {
                return Ok(json_response(StatusCode::OK, &scale_of(&live)));
            }
            let opts = WriteOptions {
                dry_run: dry_run_of(&values, if info.verb == "update" { "UpdateOptions" } else { "PatchOptions" })?,
            };
            let ct = header_str(req.headers(), "content-type").split(';').next().unwrap_or("").trim().to_string();
            let (_, body) = read_body(req).await?;
            let sent: Value =
                serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
            let mut scale = scale_of(&live);
            match (info.verb.as_str(), ct.as_str()) {
                ("update", _) => scale = sent,
                (_, "application/json-patch+json") => {
                    patch::json_patch(&mut scale, &sent).map_err(|e| ApiError::invalid("Scale", &info.name, &e))?
                }
                _ => patch::merge(&mut scale, &sent),
            }
            let replicas = scale.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
            if replicas < 0 {
                return Err(ApiError::invalid_fields(
                    "autoscaling",
                    "Scale",
                    &info.name,
                    &[FieldError::invalid(
                        "spec.replicas",
                        &replicas.to_string(),
                        "must be greater than or equal to 0",
                    )],
                ));
            }
            let sent_rv = scale.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("").to_string();
            let mut updated = live;
            updated["spec"]["replicas"] = json!(replicas);
            if sent_rv.is_empty() {
                strip_rv(&mut updated);
            } else {
                updated["metadata"]["resourceVersion"] = json!(sent_rv);
            }
            let updated = sim.cluster.update_with(&r, &ns, &info.name, updated, opts)?;
            Ok(json_response(StatusCode::OK, &scale_of(&updated)))
        }
        ("get" | "create", "portforward") => {
            let pod = sim.cluster.store.get(&r, &ns, &info.name)?;
            if pod.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
                return Err(ApiError::bad_request(format!("pod {} is not running", info.name)));
            }
            let ports: Vec<u16> = pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|c| c.get("ports").and_then(Value::as_array).cloned().unwrap_or_default())
                .filter_map(|p| p.get("containerPort").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok()))
                .collect();
            crate::portforward::upgrade(req, info.name.clone(), ports)
        }
        (_, "exec" | "attach" | "portforward") => Err(ApiError {
            code: 501,
            reason: "NotImplemented",
            message: format!("kube-sim does not simulate pods/{} yet", info.subresource),
            details: None,
        }),
        ("get", "" | "status") => {
            let obj = sim.cluster.store.get(&r, &ns, &info.name)?;
            if table::wants_table(&accept) {
                let rv = obj.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("").to_string();
                return Ok(json_response(StatusCode::OK, &table::table(&r.kind, &[obj], &rv, None)));
            }
            Ok(json_response(StatusCode::OK, &obj))
        }
        ("list", "") => list(sim, &r, &info, &query, &accept),
        ("watch", "") => watch(sim, &r, &info, &query, &accept),
        ("create", "") => {
            let opts = WriteOptions { dry_run: dry_run_of(&values, "CreateOptions")? };
            let (_, body) = read_body(req).await?;
            let obj = parse_object(&body, &r, &ns)?;
            let created = sim.cluster.create_with(&r, &ns, obj, opts)?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        ("update", "" | "status") => {
            let opts = WriteOptions { dry_run: dry_run_of(&values, "UpdateOptions")? };
            let (_, body) = read_body(req).await?;
            let mut obj = parse_object(&body, &r, &ns)?;
            if obj.pointer("/metadata/name").and_then(Value::as_str).is_some_and(|n| n != info.name) {
                return Err(ApiError::bad_request("the name of the object does not match the name on the URL"));
            }
            obj["metadata"]["name"] = json!(info.name);
            if info.subresource == "status" {
                // The status subresource changes only the status.
                let mut live = sim.cluster.store.get(&r, &ns, &info.name)?;
                live["status"] = obj.get("status").cloned().unwrap_or(json!({}));
                live["metadata"]["resourceVersion"] =
                    obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
                obj = live;
            }
            let updated = sim.cluster.update_with(&r, &ns, &info.name, obj, opts)?;
            Ok(json_response(StatusCode::OK, &updated))
        }
        ("patch", "" | "status") => {
            let opts = WriteOptions { dry_run: dry_run_of(&values, "PatchOptions")? };
            let ct = header_str(req.headers(), "content-type").split(';').next().unwrap_or("").trim().to_string();
            let (_, body) = read_body(req).await?;
            patch_object(sim, &r, &ns, &info.name, &ct, &body, &query, opts)
        }
        ("delete", "") => {
            let (_, body) = read_body(req).await?;
            let opts = delete_options_of(&body, &values)?;
            let gone = sim.cluster.delete_with(&r, &ns, &info.name, &opts)?;
            Ok(json_response(StatusCode::OK, &deleted_answer(&r, gone)))
        }
        ("deletecollection", "") => {
            let (_, body) = read_body(req).await?;
            let opts = delete_options_of(&body, &values)?;
            let (items, _) = sim.cluster.store.list(&r, Some(&ns));
            let labels = selector(&query, "labelSelector")?;
            let fields = field_selector(&r, &query)?;
            let mut gone = Vec::new();
            for o in items.into_iter().filter(|o| labels.matches_labels(o) && fields.matches_fields(o)) {
                let name = o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
                if let Ok(g) = sim.cluster.delete_with(&r, &ns, &name, &opts) {
                    gone.push(g);
                }
            }
            Ok(json_response(StatusCode::OK, &list_object(&r, gone, sim.cluster.store.resource_version(), None)))
        }
        (verb, sub) => Err(ApiError::method_not_allowed(&format!(
            "{verb} {}{}",
            r.plural,
            if sub.is_empty() { String::new() } else { format!("/{sub}") }
        ))),
    }
}

/// `serviceaccounts/{name}/token`: issues a bearer token for an existing
/// service account, as the kubelet asks for a pod's projected token.
fn token_request(sim: &KubeSim, r: &Resource, ns: &str, name: &str, body: &[u8]) -> Result<Response<Body>, ApiError> {
    sim.cluster.store.get(r, ns, name)?;
    let req: Value = if body.is_empty() {
        json!({})
    } else if body.starts_with(proto::MAGIC) {
        proto::object_to_json(body)?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?
    };
    let seconds = req.pointer("/spec/expirationSeconds").and_then(Value::as_i64).unwrap_or(3600);
    if seconds < 600 {
        return Err(ApiError::bad_request("spec.expirationSeconds: may not specify a duration less than 10 minutes"));
    }
    let token = format!("kubesim-sa.{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let user = UserInfo {
        name: format!("system:serviceaccount:{ns}:{name}"),
        groups: vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{ns}")],
    };
    sim.issued_tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(token.clone(), user);
    let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds);
    let expires = expires.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    Ok(json_response(
        StatusCode::CREATED,
        &json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
            "spec": {
                "audiences": req.pointer("/spec/audiences").cloned().unwrap_or_else(|| json!(["https://kubernetes.default.svc"])),
                "expirationSeconds": seconds,
                "boundObjectRef": req.pointer("/spec/boundObjectRef").cloned().unwrap_or(Value::Null),
            },
            "status": {"token": token, "expirationTimestamp": expires},
        }),
    ))
}

/// The `dryRun` query parameters: none, or only `All` (anything else is
/// the 422 `errors.NewInvalid` gives for the `options` kind).
fn dry_run_of(values: &request::Values, options: &str) -> Result<bool, ApiError> {
    let all: Vec<String> = values.pairs.iter().filter(|(k, _)| k == "dryRun").map(|(_, v)| v.clone()).collect();
    if all.iter().any(|v| v != "All") {
        return Err(ApiError::bad_dry_run(options, &all));
    }
    Ok(!all.is_empty())
}

/// `DeleteOptions` from a JSON object.
fn delete_options(v: &Value) -> Result<DeleteOptions, ApiError> {
    let dry: Vec<String> = v
        .get("dryRun")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    if dry.iter().any(|d| d != "All") {
        return Err(ApiError::bad_dry_run("DeleteOptions", &dry));
    }
    let pre = |k: &str| v.pointer(&format!("/preconditions/{k}")).and_then(Value::as_str).map(str::to_string);
    let propagation = match (v.get("propagationPolicy").and_then(Value::as_str), v.get("orphanDependents")) {
        (Some("Orphan"), _) | (None, Some(Value::Bool(true))) => Propagation::Orphan,
        (Some("Foreground"), _) => Propagation::Foreground,
        _ => Propagation::Background,
    };
    Ok(DeleteOptions {
        dry_run: !dry.is_empty(),
        preconditions: Preconditions { uid: pre("uid"), resource_version: pre("resourceVersion") },
        propagation,
    })
}

/// `DeleteOptions` as the delete handler reads them: from the body when
/// there is one (then the query is not read), else from the query.
fn delete_options_of(body: &[u8], values: &request::Values) -> Result<DeleteOptions, ApiError> {
    if !body.is_empty() {
        let v = if body.starts_with(proto::MAGIC) {
            proto::object_to_json(body)?
        } else {
            serde_json::from_slice::<Value>(body)
                .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?
        };
        return delete_options(&v);
    }
    let mut v = json!({});
    let dry: Vec<&str> = values.pairs.iter().filter(|(k, _)| k == "dryRun").map(|(_, x)| x.as_str()).collect();
    if !dry.is_empty() {
        v["dryRun"] = json!(dry);
    }
    if let Some(p) = values.get("propagationPolicy") {
        v["propagationPolicy"] = json!(p);
    }
    if let Some(o) = values.get("orphanDependents") {
        v["orphanDependents"] = json!(o == "true");
    }
    delete_options(&v)
}

/// What a delete answers: the object for the kinds whose registry returns
/// it (`ReturnDeletedObject`), else a `Status` naming it.
fn deleted_answer(r: &Resource, gone: Value) -> Value {
    let returns_object = !crate::resources::is_builtin_group(&r.group)
        || matches!(
            (r.group.as_str(), r.plural.as_str()),
            ("", "pods" | "services" | "serviceaccounts" | "namespaces")
        );
    if returns_object {
        return gone;
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
           "details": {"name": gone.pointer("/metadata/name").cloned().unwrap_or(Value::Null), "group": r.group,
                       "kind": r.plural, "uid": gone.pointer("/metadata/uid").cloned().unwrap_or(Value::Null)}})
}

/// A field selector, refused (400) when it names a field the resource does
/// not index, as the API server refuses it.
fn field_selector(r: &Resource, query: &HashMap<String, String>) -> Result<Selector, ApiError> {
    let raw = query.get("fieldSelector").map(String::as_str).unwrap_or("");
    let sel = Selector::parse(raw).map_err(ApiError::bad_request)?;
    for field in sel.fields() {
        if !crate::resources::selectable_field(r, field) {
            return Err(ApiError::bad_request(format!("field label not supported: {field}")));
        }
    }
    Ok(sel)
}

fn selector(query: &HashMap<String, String>, key: &str) -> Result<Selector, ApiError> {
    Selector::parse(query.get(key).map(String::as_str).unwrap_or("")).map_err(ApiError::bad_request)
}

fn parse_object(body: &[u8], r: &Resource, ns: &str) -> Result<Value, ApiError> {
    let obj: Value = if body.starts_with(proto::MAGIC) {
        proto::object_to_json(body)?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?
    };
    if !obj.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    if let Some(kind) = obj.get("kind").and_then(Value::as_str).filter(|k| *k != r.kind) {
        return Err(ApiError::bad_request(format!(
            "the kind {kind:?} does not match the resource {:?} ({})",
            r.plural, r.kind
        )));
    }
    let obj_ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
    if r.namespaced && !obj_ns.is_empty() && obj_ns != ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(obj)
}

fn list_object(r: &Resource, items: Vec<Value>, rv: u64, cont: Option<String>) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({"kind": format!("{}List", r.kind), "apiVersion": r.group_version(), "metadata": meta, "items": items})
}

fn list(
    sim: &KubeSim,
    r: &Resource,
    info: &RequestInfo,
    query: &HashMap<String, String>,
    accept: &str,
) -> Result<Response<Body>, ApiError> {
    let ns = (!info.namespace.is_empty()).then_some(info.namespace.as_str());
    let (items, rv) = sim.cluster.store.list(r, ns);
    let labels = selector(query, "labelSelector")?;
    let fields = field_selector(r, query)?;
    let items: Vec<Value> =
        items.into_iter().filter(|o| labels.matches_labels(o) && fields.matches_fields(o)).collect();
    let start: usize = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(c) => c
            .strip_prefix("offset-")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| ApiError::bad_request("invalid continue token"))?,
        None => 0,
    };
    let limit: usize = query.get("limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
    let end = start.saturating_add(limit).min(items.len());
    let page: Vec<Value> = items.get(start.min(items.len())..end).map(<[Value]>::to_vec).unwrap_or_default();
    let cont = (end < items.len()).then(|| format!("offset-{end}"));
    if table::wants_table(accept) {
        return Ok(json_response(StatusCode::OK, &table::table(&r.kind, &page, &rv.to_string(), cont.as_deref())));
    }
    Ok(json_response(StatusCode::OK, &list_object(r, page, rv, cont)))
}

fn watch(
    sim: &Arc<KubeSim>,
    r: &Resource,
    info: &RequestInfo,
    query: &HashMap<String, String>,
    accept: &str,
) -> Result<Response<Body>, ApiError> {
    let labels = selector(query, "labelSelector")?;
    let mut fields = field_selector(r, query)?;
    if !info.name.is_empty() {
        fields = Selector::parse(&format!("metadata.name={}", info.name)).map_err(ApiError::bad_request)?;
    }
    let rv: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let as_table = table::wants_table(accept);
    let bookmarks = query.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    // WatchList (`sendInitialEvents=true`): the current objects as ADDED,
    // then a BOOKMARK marking the end of the initial events.
    let initial_events = query.get("sendInitialEvents").is_some_and(|v| v == "true");
    let rv = if initial_events { 0 } else { rv };
    let timeout = query.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).map(Duration::from_secs);
    let ns = info.namespace.clone();
    let resource = resource_key(r);
    let (initial, mut rx) = if rv == 0 {
        // No resource version: synthetic ADDED for what exists, then changes.
        let (items, now, rx) = sim.cluster.store.list_and_watch(r, (!ns.is_empty()).then_some(ns.as_str()));
        let evs: Vec<crate::store::Event> = items
            .into_iter()
            .map(|o| crate::store::Event { rv: now, resource: resource.clone(), kind: "ADDED", object: o })
            .collect();
        (evs, rx)
    } else {
        sim.cluster.store.watch_from(rv)?
    };
    let r2 = r.clone();
    let matches = move |e: &crate::store::Event| {
        e.resource == resource
            && (ns.is_empty()
                || !r2.namespaced
                || e.object.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns.as_str()))
            && labels.matches_labels(&e.object)
            && fields.matches_fields(&e.object)
    };
    let kind = r.kind.clone();
    let encode = move |e: &crate::store::Event| -> Bytes {
        let obj = if as_table {
            let rv = e.object.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("").to_string();
            table::table(&kind, std::slice::from_ref(&e.object), &rv, None)
        } else {
            e.object.clone()
        };
        let mut line = serde_json::to_vec(&json!({"type": e.kind, "object": obj})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    };
    let (tx, out) = mpsc::channel::<Bytes>(64);
    let bookmark_every = sim.config.bookmark_interval;
    let sim2 = sim.clone();
    let bookmark_kind = r.kind.clone();
    let api_version = r.group_version();
    tokio::spawn(async move {
        for e in initial.iter().filter(|e| matches(e)) {
            if tx.send(encode(e)).await.is_err() {
                return;
            }
        }
        if initial_events {
            let rv = initial.iter().map(|e| e.rv).max().unwrap_or_else(|| sim2.cluster.store.resource_version());
            let line = json!({"type": "BOOKMARK", "object": {"kind": bookmark_kind, "apiVersion": api_version,
                "metadata": {"resourceVersion": rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}}});
            if tx.send(Bytes::from(format!("{line}\n"))).await.is_err() {
                return;
            }
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut tick = tokio::time::interval(bookmark_every);
        tick.tick().await;
        loop {
            let sleep_until = deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(e) if matches(&e) => {
                        if tx.send(encode(&e)).await.is_err() { return; }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let line = json!({"type": "ERROR", "object": ApiError::gone(0).status()});
                        let _ = tx.send(Bytes::from(format!("{line}\n"))).await;
                        return;
                    }
                    Err(_) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    let rv = sim2.cluster.store.resource_version().to_string();
                    let line = json!({"type": "BOOKMARK", "object": {"kind": bookmark_kind, "apiVersion": api_version, "metadata": {"resourceVersion": rv}}});
                    if tx.send(Bytes::from(format!("{line}\n"))).await.is_err() { return; }
                }
                () = tokio::time::sleep_until(sleep_until) => return,
                () = tx.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(out, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut resp = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache, private"));
    Ok(resp)
}

#[allow(clippy::too_many_arguments)]
fn patch_object(
    sim: &KubeSim,
    r: &Resource,
    ns: &str,
    name: &str,
    content_type: &str,
    body: &[u8],
    query: &HashMap<String, String>,
    opts: WriteOptions,
) -> Result<Response<Body>, ApiError> {
    let p: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    let rv = |o: &Value| o.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("").to_string();
    if content_type == "application/apply-patch+yaml" {
        // Server-side apply: create when missing, else merge the applied
        // configuration into the live object.
        let manager = query.get("fieldManager").cloned().unwrap_or_else(|| "unknown".into());
        return match sim.cluster.store.get(r, ns, name) {
            Err(e) if e.code == 404 => {
                let mut obj = parse_object(body, r, ns)?;
                obj["metadata"]["name"] = json!(name);
                obj["metadata"]["managedFields"] = json!([{"manager": manager, "operation": "Apply", "apiVersion": r.group_version(), "fieldsType": "FieldsV1"}]);
                Ok(json_response(StatusCode::CREATED, &sim.cluster.create_with(r, ns, obj, opts)?))
            }
            Err(e) => Err(e),
            Ok(mut live) => {
                patch::strategic(&mut live, &p);
                Ok(json_response(StatusCode::OK, &sim.cluster.update_with(r, ns, name, live, opts)?))
            }
        };
    }
    // Like the API server, retry on a conflict the patch did not ask for
    // (it names no other resourceVersion); a stale one it names is a 409.
    let mut tries = 0;
    loop {
        let live = sim.cluster.store.get(r, ns, name)?;
        let mut patched = live.clone();
        match content_type {
            "application/merge-patch+json" => patch::merge(&mut patched, &p),
            "application/strategic-merge-patch+json" => patch::strategic(&mut patched, &p),
            "application/json-patch+json" => {
                patch::json_patch(&mut patched, &p).map_err(|e| ApiError::invalid(&r.kind, name, &e))?
            }
            other => return Err(ApiError::unsupported_media_type(other)),
        }
        let asked_rv = rv(&patched);
        if asked_rv.is_empty() {
            patched["metadata"]["resourceVersion"] = json!(rv(&live));
        }
        match sim.cluster.update_with(r, ns, name, patched, opts) {
            Err(e) if e.code == 409 && (asked_rv.is_empty() || asked_rv == rv(&live)) && tries < 5 => tries += 1,
            Err(e) => return Err(e),
            Ok(v) => return Ok(json_response(StatusCode::OK, &v)),
        }
    }
}

fn strip_rv(o: &mut Value) {
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
}

fn access_review(sim: &KubeSim, r: &Resource, user: &UserInfo, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let rev = review::parse(body).map_err(ApiError::bad_request)?;
    let subject = if r.plural == "subjectaccessreviews" {
        UserInfo { name: rev.user.clone().unwrap_or_default(), groups: rev.groups.clone() }
    } else {
        user.clone()
    };
    let decision = rbac::authorize(&sim.cluster.store, &subject, &rev.attrs);
    let (allowed, reason) = match &decision {
        Ok(by) => (true, format!("RBAC: allowed by {by}")),
        Err(rbac::Denied) => (false, String::new()),
    };
    let mut spec = json!({});
    if rev.attrs.resource_request {
        spec["resourceAttributes"] = json!({"namespace": rev.attrs.namespace, "verb": rev.attrs.verb, "group": rev.attrs.api_group,
            "resource": rev.attrs.resource, "subresource": rev.attrs.subresource, "name": rev.attrs.name});
    } else {
        spec["nonResourceAttributes"] = json!({"path": rev.attrs.path, "verb": rev.attrs.verb});
    }
    if r.plural == "subjectaccessreviews" {
        spec["user"] = json!(subject.name);
        spec["groups"] = json!(subject.groups);
    }
    let out = json!({"kind": r.kind, "apiVersion": r.group_version(), "metadata": {"creationTimestamp": null}, "spec": spec,
        "status": {"allowed": allowed, "reason": reason}});
    Ok(json_response(StatusCode::CREATED, &out))
}

/// The container a logs/exec request means, like the API server picks it.
fn pick_container(pod: &Value, name: &str, asked: Option<&String>) -> Result<String, ApiError> {
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string)).collect())
        .unwrap_or_default();
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if containers.contains(c) => Ok(c.clone()),
        Some(c) => Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}"))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            containers.join(" ")
        ))),
    }
}

async fn logs(
    sim: &Arc<KubeSim>,
    r: &Resource,
    ns: &str,
    name: &str,
    query: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let pod = sim.cluster.store.get(r, ns, name)?;
    let container = pick_container(&pod, name, query.get("container"))?;
    let started = pod.pointer("/status/startTime").and_then(Value::as_str).unwrap_or("");
    let start = time::OffsetDateTime::parse(started, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    let follow = query.get("follow").is_some_and(|v| v == "true");
    let timestamps = query.get("timestamps").is_some_and(|v| v == "true");
    let tail: Option<usize> = query.get("tailLines").and_then(|t| t.parse().ok());
    let interval = sim.config.log_interval;
    let name = name.to_string();
    let line = move |i: u64| -> Bytes {
        let at = start + time::Duration::nanoseconds((interval.as_nanos() as i64).saturating_mul(i as i64));
        let ts = at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let text = format!("{name}/{container}: handled request {i}\n");
        Bytes::from(if timestamps { format!("{ts} {text}") } else { text })
    };
    let written_by = move |now: time::OffsetDateTime| -> u64 {
        let elapsed = (now - start).whole_nanoseconds().max(0) as u128;
        // Three lines are written at start, then one per interval.
        (elapsed / interval.as_nanos().max(1)) as u64 + 3
    };
    let n = written_by(time::OffsetDateTime::now_utc());
    let first = tail.map_or(0, |t| n.saturating_sub(t as u64));
    let (tx, out) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        for i in first..n {
            if tx.send(line(i)).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        let mut next = n;
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let upto = written_by(time::OffsetDateTime::now_utc());
                    while next < upto {
                        if tx.send(line(next)).await.is_err() { return; }
                        next += 1;
                    }
                }
                () = tx.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(out, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut resp = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
    Ok(resp)
}

fn discovery(sim: &KubeSim, info: &RequestInfo, headers: &HeaderMap) -> Result<Response<Body>, ApiError> {
    if info.verb != "get" {
        return Err(ApiError::method_not_allowed(&info.path));
    }
    let accept = header_str(headers, "accept");
    let aggregated = accept.split(',').next().is_some_and(|a| a.contains("as=APIGroupDiscoveryList"));
    let resources = sim.cluster.resources();
    let path = info.path.trim_end_matches('/');
    let gv_of = |g: &str, v: &str| -> Vec<Resource> {
        resources.iter().filter(|r| r.group == g && r.version == v).cloned().collect()
    };
    let mut groups: Vec<(String, String)> = Vec::new();
    for r in &resources {
        if !r.group.is_empty() && !groups.contains(&(r.group.clone(), r.version.clone())) {
            groups.push((r.group.clone(), r.version.clone()));
        }
    }
    match path {
        "/version" => Ok(json_response(
            StatusCode::OK,
            &json!({"major": "1", "minor": "37", "emulationMajor": "1", "emulationMinor": "37", "minCompatibilityMajor": "1", "minCompatibilityMinor": "36",
                    "gitVersion": "v1.37.1-kube-sim", "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                    "buildDate": "2026-11-01T00:00:00Z", "goVersion": "go1.25.0", "compiler": "gc", "platform": "linux/amd64"}),
        )),
        "/healthz" | "/readyz" | "/livez" => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"ok")).boxed_unsync());
            r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
            Ok(r)
        }
        "/openapi/v2" => {
            let mut r = Response::new(Full::new(Bytes::new()).boxed_unsync());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/com.github.proto-openapi.spec.v2.v1.0+protobuf"),
            );
            Ok(r)
        }
        "/openapi/v3" => Ok(json_response(StatusCode::OK, &crate::openapi::index())),
        p if p.starts_with("/openapi/v3/") => {
            let doc = crate::openapi::document(&p["/openapi/v3/".len()..]).ok_or_else(|| ApiError::no_route(p))?;
            let mut r = json_response(StatusCode::OK, doc);
            r.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("public, immutable"));
            Ok(r)
        }
        "/api" if aggregated => Ok(aggregated_response(&[(String::new(), "v1".to_string())], &resources)),
        "/apis" if aggregated => Ok(aggregated_response(&groups, &resources)),
        "/api" => Ok(json_response(
            StatusCode::OK,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}),
        )),
        "/apis" => {
            let list: Vec<Value> = groups
                .iter()
                .map(|(g, v)| json!({"name": g, "versions": [{"groupVersion": format!("{g}/{v}"), "version": v}], "preferredVersion": {"groupVersion": format!("{g}/{v}"), "version": v}}))
                .collect();
            Ok(json_response(StatusCode::OK, &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list})))
        }
        "/api/v1" => Ok(resource_list("v1", &gv_of("", "v1"))),
        p => {
            let parts: Vec<&str> = p.trim_start_matches('/').split('/').collect();
            match parts.as_slice() {
                ["apis", g, v] if !gv_of(g, v).is_empty() => Ok(resource_list(&format!("{g}/{v}"), &gv_of(g, v))),
                ["apis", g] if groups.iter().any(|(gg, _)| gg == g) => {
                    let v = groups.iter().find(|(gg, _)| gg == g).map(|(_, v)| v.clone()).unwrap_or_default();
                    Ok(json_response(
                        StatusCode::OK,
                        &json!({"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": [{"groupVersion": format!("{g}/{v}"), "version": v}], "preferredVersion": {"groupVersion": format!("{g}/{v}"), "version": v}}),
                    ))
                }
                _ => Err(ApiError::no_route(p)),
            }
        }
    }
}

fn resource_list(gv: &str, rs: &[Resource]) -> Response<Body> {
    let resources: Vec<Value> = rs.iter().flat_map(Resource::api_resources).collect();
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn aggregated_response(groups: &[(String, String)], resources: &[Resource]) -> Response<Body> {
    let items: Vec<Value> = groups
        .iter()
        .map(|(g, v)| {
            let rs: Vec<Value> = resources.iter().filter(|r| r.group == *g && r.version == *v).map(Resource::aggregated).collect();
            json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": [{"version": v, "resources": rs, "freshness": "Current"}]})
        })
        .collect();
    let body = json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items});
    let mut r = json_response(StatusCode::OK, &body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"),
    );
    r
}

/// Whether this is a method kube-sim answers at all.
pub fn known_method(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
}
