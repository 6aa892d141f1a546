//! API requests a chat command makes, sent as the person through the kube
//! path ([`crate::kube::send_as`]): the same classification, authorization,
//! audit record, grant and relays as their kubectl's.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;

use kubechat_protocol::kube_request;
use serde::Serialize;

use crate::app::App;
use crate::auth::Principal;
use crate::kube::{OnBehalf, send_as};
use crate::model::{ClusterPolicy, Role};

/// Largest answer a chat command reads into memory (pages are smaller).
pub const MAX_ANSWER: usize = 8 << 20;

/// The Table form of a list or object, as kubectl asks for it.
pub const TABLE: &str =
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

/// An answer that was not a success: the API server's (or KubeChat's)
/// `Status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct KubeError {
    /// HTTP status.
    pub code: u16,
    /// The Status reason (`NotFound`, `Forbidden`, `Conflict`, …).
    pub reason: String,
    /// What the server said.
    pub message: String,
}

impl KubeError {
    /// A failure the client made itself (no answer, an unreadable one).
    pub fn local(message: impl Into<String>) -> Self {
        Self { code: 502, reason: "InternalError".into(), message: message.into() }
    }

    fn from_answer(code: StatusCode, body: &[u8]) -> Self {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let message = v["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).trim().to_string());
        Self {
            code: code.as_u16(),
            reason: v["reason"].as_str().unwrap_or(code.canonical_reason().unwrap_or("Error")).to_string(),
            message,
        }
    }

    /// A 404.
    pub fn is_not_found(&self) -> bool {
        self.code == 404
    }
}

/// One answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status (2xx).
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
    /// `Kubechat-Request-Id`: joins the answer with its audit records.
    pub request_id: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value, KubeError> {
        serde_json::from_slice(&self.body).map_err(|e| KubeError::local(format!("the answer is not JSON: {e}")))
    }
}

/// One API request a chat command made (or planned), as the kube path's
/// own classifier reads it, with the `authorize()` verdict for the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestView {
    /// HTTP method.
    pub method: String,
    /// Canonical path and query, as the API server receives it.
    pub path: String,
    /// The API server's verb.
    pub verb: String,
    /// API group.
    pub api_group: String,
    /// Resource.
    pub resource: String,
    /// Subresource.
    pub subresource: String,
    /// Namespace.
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// Whether the caller's role and the cluster's policy allow it.
    pub allowed: bool,
    /// Why not.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub reason: String,
    /// A server-side dry run (`dryRun=All`).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub dry_run: bool,
    /// The answer's HTTP status, once sent (0: not sent).
    #[serde(skip_serializing_if = "is_zero", default)]
    pub status: u16,
    /// The kube path's request id, once sent (joins its audit records).
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub request_id: String,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

/// Classifies `method path_and_query` with the kube path's classifier and
/// authorizes it for `role` under `policy`.
pub fn classify(method: &str, path_and_query: &str, role: Role, policy: &ClusterPolicy) -> RequestView {
    let (path, query) = path_and_query.split_once('?').map_or((path_and_query, None), |(p, q)| (p, Some(q)));
    let mut view = RequestView {
        method: method.to_string(),
        path: path_and_query.to_string(),
        verb: String::new(),
        api_group: String::new(),
        resource: String::new(),
        subresource: String::new(),
        namespace: String::new(),
        name: String::new(),
        allowed: false,
        reason: String::new(),
        dry_run: query.is_some_and(|q| q.split('&').any(|kv| kv == "dryRun=All")),
        status: 0,
        request_id: String::new(),
    };
    match kube_request::Target::parse(path, query).and_then(|t| kube_request::classify(method, &t).map(|i| (t, i))) {
        Ok((t, info)) => {
            view.path = t.path_and_query();
            let verdict = crate::kube_authz::authorize(role, policy, &info);
            view.allowed = verdict.is_ok();
            view.reason = verdict.err().unwrap_or_default();
            view.verb = info.verb;
            view.api_group = info.api_group;
            view.resource = info.resource;
            view.subresource = info.subresource;
            view.namespace = info.namespace;
            view.name = info.name;
        }
        Err(e) => view.reason = e.to_string(),
    }
    view
}

/// A cluster as one person reaches it from chat.
#[derive(Clone)]
pub struct ClusterClient {
    app: Arc<App>,
    principal: Principal,
    client_address: String,
    cluster_id: String,
    command_line: String,
    session: String,
    role: Role,
    policy: ClusterPolicy,
    sent: Arc<Mutex<Vec<RequestView>>>,
}

impl ClusterClient {
    /// Requests to `cluster_id` as `principal` (whose role there is
    /// `role`, under the cluster's `policy`), recorded as part of
    /// `command_line` (the audit's `kubectlCommand`) and plan `session`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        app: Arc<App>,
        principal: Principal,
        client_address: String,
        cluster_id: String,
        command_line: String,
        session: String,
        role: Role,
        policy: ClusterPolicy,
    ) -> Self {
        Self { app, principal, client_address, cluster_id, command_line, session, role, policy, sent: Arc::default() }
    }

    /// The same client for another command line (a step of a plan).
    pub fn for_command(&self, command_line: &str) -> Self {
        Self { command_line: command_line.to_string(), ..self.clone() }
    }

    /// The same client recording into a list of its own (discovery reads,
    /// which are not the command's requests).
    pub fn apart(&self) -> Self {
        Self { sent: Arc::default(), ..self.clone() }
    }

    /// The person.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The caller's role on the cluster.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Classifies a request as this caller would send it.
    pub fn classify(&self, method: &str, path_and_query: &str) -> RequestView {
        classify(method, path_and_query, self.role, &self.policy)
    }

    /// Every request sent so far, in order.
    pub fn sent(&self) -> Vec<RequestView> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record(&self, view: RequestView) {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).push(view);
    }

    /// The cluster's id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Sends one request and returns the raw response (for streams and
    /// upgrades). It is recorded with its verdict.
    pub async fn raw(&self, req: Request) -> axum::response::Response {
        let mut view = self.classify(req.method().as_str(), &req.uri().to_string());
        let resp = self.send_unrecorded(req).await;
        view.status = resp.status().as_u16();
        view.request_id =
            resp.headers().get("kubechat-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        self.record(view);
        resp
    }

    async fn send_unrecorded(&self, req: Request) -> axum::response::Response {
        let who = OnBehalf {
            principal: &self.principal,
            client_address: &self.client_address,
            command_line: &self.command_line,
            session: &self.session,
        };
        send_as(&self.app, &who, &self.cluster_id, req).await
    }

    /// Sends one request and reads its answer (at most [`MAX_ANSWER`]
    /// bytes); anything but a 2xx is a [`KubeError`].
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: Option<&str>,
        accept: &str,
        body: Bytes,
    ) -> Result<Answer, KubeError> {
        let mut b = Request::builder().method(method).uri(path_and_query);
        if let Some(h) = b.headers_mut() {
            if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(c).ok()) {
                h.insert(header::CONTENT_TYPE, ct);
            }
            if let Ok(a) = HeaderValue::from_str(accept) {
                h.insert(header::ACCEPT, a);
            }
            h.insert(header::USER_AGENT, HeaderValue::from_static("kubechat-chat"));
        }
        let req = b.body(Body::from(body)).map_err(|e| KubeError::local(format!("bad request: {e}")))?;
        let resp = self.raw(req).await;
        let status = resp.status();
        let request_id =
            resp.headers().get("kubechat-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| {
                KubeError::local(format!("the answer could not be read whole (at most {MAX_ANSWER} bytes): {e}"))
            })?
            .to_bytes();
        if !status.is_success() {
            return Err(KubeError::from_answer(status, &body));
        }
        Ok(Answer { status, body, request_id })
    }

    /// GET as JSON.
    pub async fn get(&self, path_and_query: &str) -> Result<Value, KubeError> {
        self.send(Method::GET, path_and_query, None, "application/json", Bytes::new()).await?.json()
    }

    /// GET as the server's Table.
    pub async fn get_table(&self, path_and_query: &str) -> Result<Value, KubeError> {
        self.send(Method::GET, path_and_query, None, TABLE, Bytes::new()).await?.json()
    }

    /// GET as text (logs).
    pub async fn get_text(&self, path_and_query: &str) -> Result<String, KubeError> {
        let a = self.send(Method::GET, path_and_query, None, "*/*", Bytes::new()).await?;
        Ok(String::from_utf8_lossy(&a.body).into_owned())
    }

    /// A write with a JSON body; returns the answer's JSON.
    pub async fn write(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: &str,
        body: &Value,
    ) -> Result<Value, KubeError> {
        let bytes = Bytes::from(serde_json::to_vec(body).map_err(|e| KubeError::local(e.to_string()))?);
        self.send(method, path_and_query, Some(content_type), "application/json", bytes).await?.json()
    }
}
