//! Object bodies in the Kubernetes protobuf encoding: the `k8s\0` magic,
//! then a `runtime.Unknown` envelope whose `raw` holds the object. client-go's
//! typed clients send core objects this way when they prefer protobuf (Helm's
//! release storage does, for its Secrets). kube-sim decodes the kinds those
//! clients write and answers in JSON, which client-go accepts because it
//! always offers `application/json` too.

use std::collections::HashMap;

use prost::Message;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::kubeconfig::base64;

/// The protobuf envelope's magic prefix.
pub const MAGIC: &[u8] = b"k8s\x00";

/// `runtime.TypeMeta`.
#[derive(Clone, PartialEq, Message)]
pub struct TypeMeta {
    /// `apiVersion`.
    #[prost(string, optional, tag = "1")]
    pub api_version: Option<String>,
    /// `kind`.
    #[prost(string, optional, tag = "2")]
    pub kind: Option<String>,
}

/// `runtime.Unknown`: the envelope around every protobuf body.
#[derive(Clone, PartialEq, Message)]
pub struct Unknown {
    /// What `raw` holds.
    #[prost(message, optional, tag = "1")]
    pub type_meta: Option<TypeMeta>,
    /// The encoded object.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub raw: Option<Vec<u8>>,
}

/// The fields of `meta.v1.ObjectMeta` a client may set on create or update.
#[derive(Clone, PartialEq, Message)]
struct ObjectMeta {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    generate_name: Option<String>,
    #[prost(string, optional, tag = "3")]
    namespace: Option<String>,
    #[prost(string, optional, tag = "5")]
    uid: Option<String>,
    #[prost(string, optional, tag = "6")]
    resource_version: Option<String>,
    #[prost(map = "string, string", tag = "11")]
    labels: HashMap<String, String>,
    #[prost(map = "string, string", tag = "12")]
    annotations: HashMap<String, String>,
    #[prost(string, repeated, tag = "14")]
    finalizers: Vec<String>,
}

/// `core.v1.Secret`.
#[derive(Clone, PartialEq, Message)]
struct Secret {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(map = "string, bytes", tag = "2")]
    data: HashMap<String, Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    r#type: Option<String>,
    #[prost(map = "string, string", tag = "4")]
    string_data: HashMap<String, String>,
    #[prost(bool, optional, tag = "5")]
    immutable: Option<bool>,
}

/// `core.v1.ConfigMap`.
#[derive(Clone, PartialEq, Message)]
struct ConfigMap {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(map = "string, string", tag = "2")]
    data: HashMap<String, String>,
    #[prost(map = "string, bytes", tag = "3")]
    binary_data: HashMap<String, Vec<u8>>,
    #[prost(bool, optional, tag = "4")]
    immutable: Option<bool>,
}

/// `core.v1.Namespace` (its spec and status are the server's to set).
#[derive(Clone, PartialEq, Message)]
struct Namespace {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
}

/// `authentication.v1.BoundObjectReference`.
#[derive(Clone, PartialEq, Message)]
struct BoundObjectReference {
    #[prost(string, optional, tag = "1")]
    kind: Option<String>,
    #[prost(string, optional, tag = "2")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "3")]
    name: Option<String>,
    #[prost(string, optional, tag = "4")]
    uid: Option<String>,
}

/// `authentication.v1.TokenRequestSpec`.
#[derive(Clone, PartialEq, Message)]
struct TokenRequestSpec {
    #[prost(string, repeated, tag = "1")]
    audiences: Vec<String>,
    #[prost(message, optional, tag = "3")]
    bound_object_ref: Option<BoundObjectReference>,
    #[prost(int64, optional, tag = "4")]
    expiration_seconds: Option<i64>,
}

/// `authentication.v1.TokenRequest` (what `kubectl create token` sends).
#[derive(Clone, PartialEq, Message)]
struct TokenRequest {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<TokenRequestSpec>,
}

/// `meta.v1.LabelSelectorRequirement`.
#[derive(Clone, PartialEq, Message)]
struct LabelSelectorRequirement {
    #[prost(string, optional, tag = "1")]
    key: Option<String>,
    #[prost(string, optional, tag = "2")]
    operator: Option<String>,
    #[prost(string, repeated, tag = "3")]
    values: Vec<String>,
}

/// `meta.v1.LabelSelector`.
#[derive(Clone, PartialEq, Message)]
struct LabelSelector {
    #[prost(map = "string, string", tag = "1")]
    match_labels: HashMap<String, String>,
    #[prost(message, repeated, tag = "2")]
    match_expressions: Vec<LabelSelectorRequirement>,
}

/// `util.intstr.IntOrString`.
#[derive(Clone, PartialEq, Message)]
struct IntOrString {
    #[prost(int64, optional, tag = "1")]
    r#type: Option<i64>,
    #[prost(int32, optional, tag = "2")]
    int_val: Option<i32>,
    #[prost(string, optional, tag = "3")]
    str_val: Option<String>,
}

/// `api.resource.Quantity`.
#[derive(Clone, PartialEq, Message)]
struct Quantity {
    #[prost(string, optional, tag = "1")]
    string: Option<String>,
}

/// `core.v1.ContainerPort`.
#[derive(Clone, PartialEq, Message)]
struct ContainerPort {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(int32, optional, tag = "2")]
    host_port: Option<i32>,
    #[prost(int32, optional, tag = "3")]
    container_port: Option<i32>,
    #[prost(string, optional, tag = "4")]
    protocol: Option<String>,
    #[prost(string, optional, tag = "5")]
    host_ip: Option<String>,
}

/// `core.v1.EnvVar` (without `valueFrom`).
#[derive(Clone, PartialEq, Message)]
struct EnvVar {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    value: Option<String>,
}

/// `core.v1.ResourceRequirements`.
#[derive(Clone, PartialEq, Message)]
struct ResourceRequirements {
    #[prost(map = "string, message", tag = "1")]
    limits: HashMap<String, Quantity>,
    #[prost(map = "string, message", tag = "2")]
    requests: HashMap<String, Quantity>,
}

/// `core.v1.VolumeMount`.
#[derive(Clone, PartialEq, Message)]
struct VolumeMount {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(bool, optional, tag = "2")]
    read_only: Option<bool>,
    #[prost(string, optional, tag = "3")]
    mount_path: Option<String>,
    #[prost(string, optional, tag = "4")]
    sub_path: Option<String>,
}

/// `core.v1.Container`: the fields kubectl's generators set.
#[derive(Clone, PartialEq, Message)]
struct Container {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(string, optional, tag = "2")]
    image: Option<String>,
    #[prost(string, repeated, tag = "3")]
    command: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    args: Vec<String>,
    #[prost(string, optional, tag = "5")]
    working_dir: Option<String>,
    #[prost(message, repeated, tag = "6")]
    ports: Vec<ContainerPort>,
    #[prost(message, repeated, tag = "7")]
    env: Vec<EnvVar>,
    #[prost(message, optional, tag = "8")]
    resources: Option<ResourceRequirements>,
    #[prost(message, repeated, tag = "9")]
    volume_mounts: Vec<VolumeMount>,
    #[prost(string, optional, tag = "13")]
    termination_message_path: Option<String>,
    #[prost(string, optional, tag = "14")]
    image_pull_policy: Option<String>,
    #[prost(bool, optional, tag = "16")]
    stdin: Option<bool>,
    #[prost(bool, optional, tag = "17")]
    stdin_once: Option<bool>,
    #[prost(bool, optional, tag = "18")]
    tty: Option<bool>,
    #[prost(string, optional, tag = "20")]
    termination_message_policy: Option<String>,
}

/// `core.v1.LocalObjectReference`.
#[derive(Clone, PartialEq, Message)]
struct LocalObjectReference {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
}

/// `core.v1.EmptyDirVolumeSource`.
#[derive(Clone, PartialEq, Message)]
struct EmptyDirVolumeSource {
    #[prost(string, optional, tag = "1")]
    medium: Option<String>,
    #[prost(message, optional, tag = "2")]
    size_limit: Option<Quantity>,
}

/// `core.v1.SecretVolumeSource`.
#[derive(Clone, PartialEq, Message)]
struct SecretVolumeSource {
    #[prost(string, optional, tag = "1")]
    secret_name: Option<String>,
    #[prost(int32, optional, tag = "3")]
    default_mode: Option<i32>,
    #[prost(bool, optional, tag = "4")]
    optional: Option<bool>,
}

/// `core.v1.ConfigMapVolumeSource`.
#[derive(Clone, PartialEq, Message)]
struct ConfigMapVolumeSource {
    #[prost(message, optional, tag = "1")]
    local_object_reference: Option<LocalObjectReference>,
    #[prost(int32, optional, tag = "3")]
    default_mode: Option<i32>,
    #[prost(bool, optional, tag = "4")]
    optional: Option<bool>,
}

/// `core.v1.PersistentVolumeClaimVolumeSource`.
#[derive(Clone, PartialEq, Message)]
struct PersistentVolumeClaimVolumeSource {
    #[prost(string, optional, tag = "1")]
    claim_name: Option<String>,
    #[prost(bool, optional, tag = "2")]
    read_only: Option<bool>,
}

/// `core.v1.VolumeSource`: the common sources.
#[derive(Clone, PartialEq, Message)]
struct VolumeSource {
    #[prost(message, optional, tag = "2")]
    empty_dir: Option<EmptyDirVolumeSource>,
    #[prost(message, optional, tag = "6")]
    secret: Option<SecretVolumeSource>,
    #[prost(message, optional, tag = "10")]
    persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
    #[prost(message, optional, tag = "19")]
    config_map: Option<ConfigMapVolumeSource>,
}

/// `core.v1.Volume`.
#[derive(Clone, PartialEq, Message)]
struct Volume {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(message, optional, tag = "2")]
    volume_source: Option<VolumeSource>,
}

/// `core.v1.Toleration`.
#[derive(Clone, PartialEq, Message)]
struct Toleration {
    #[prost(string, optional, tag = "1")]
    key: Option<String>,
    #[prost(string, optional, tag = "2")]
    operator: Option<String>,
    #[prost(string, optional, tag = "3")]
    value: Option<String>,
    #[prost(string, optional, tag = "4")]
    effect: Option<String>,
    #[prost(int64, optional, tag = "5")]
    toleration_seconds: Option<i64>,
}

/// `core.v1.PodSpec`: the fields clients commonly set.
#[derive(Clone, PartialEq, Message)]
struct PodSpec {
    #[prost(message, repeated, tag = "1")]
    volumes: Vec<Volume>,
    #[prost(message, repeated, tag = "2")]
    containers: Vec<Container>,
    #[prost(string, optional, tag = "3")]
    restart_policy: Option<String>,
    #[prost(int64, optional, tag = "4")]
    termination_grace_period_seconds: Option<i64>,
    #[prost(int64, optional, tag = "5")]
    active_deadline_seconds: Option<i64>,
    #[prost(string, optional, tag = "6")]
    dns_policy: Option<String>,
    #[prost(map = "string, string", tag = "7")]
    node_selector: HashMap<String, String>,
    #[prost(string, optional, tag = "8")]
    service_account_name: Option<String>,
    #[prost(string, optional, tag = "9")]
    service_account: Option<String>,
    #[prost(string, optional, tag = "10")]
    node_name: Option<String>,
    #[prost(bool, optional, tag = "11")]
    host_network: Option<bool>,
    #[prost(message, repeated, tag = "15")]
    image_pull_secrets: Vec<LocalObjectReference>,
    #[prost(string, optional, tag = "16")]
    hostname: Option<String>,
    #[prost(string, optional, tag = "17")]
    subdomain: Option<String>,
    #[prost(string, optional, tag = "19")]
    scheduler_name: Option<String>,
    #[prost(message, repeated, tag = "20")]
    init_containers: Vec<Container>,
    #[prost(bool, optional, tag = "21")]
    automount_service_account_token: Option<bool>,
    #[prost(message, repeated, tag = "22")]
    tolerations: Vec<Toleration>,
    #[prost(string, optional, tag = "24")]
    priority_class_name: Option<String>,
}

/// `core.v1.PodTemplateSpec`.
#[derive(Clone, PartialEq, Message)]
struct PodTemplateSpec {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<PodSpec>,
}

/// `core.v1.Pod` (its status is the server's).
#[derive(Clone, PartialEq, Message)]
struct Pod {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<PodSpec>,
}

/// `apps.v1.RollingUpdateDeployment`.
#[derive(Clone, PartialEq, Message)]
struct RollingUpdateDeployment {
    #[prost(message, optional, tag = "1")]
    max_unavailable: Option<IntOrString>,
    #[prost(message, optional, tag = "2")]
    max_surge: Option<IntOrString>,
}

/// `apps.v1.DeploymentStrategy`.
#[derive(Clone, PartialEq, Message)]
struct DeploymentStrategy {
    #[prost(string, optional, tag = "1")]
    r#type: Option<String>,
    #[prost(message, optional, tag = "2")]
    rolling_update: Option<RollingUpdateDeployment>,
}

/// `apps.v1.DeploymentSpec`.
#[derive(Clone, PartialEq, Message)]
struct DeploymentSpec {
    #[prost(int32, optional, tag = "1")]
    replicas: Option<i32>,
    #[prost(message, optional, tag = "2")]
    selector: Option<LabelSelector>,
    #[prost(message, optional, tag = "3")]
    template: Option<PodTemplateSpec>,
    #[prost(message, optional, tag = "4")]
    strategy: Option<DeploymentStrategy>,
    #[prost(int32, optional, tag = "5")]
    min_ready_seconds: Option<i32>,
    #[prost(int32, optional, tag = "6")]
    revision_history_limit: Option<i32>,
    #[prost(bool, optional, tag = "7")]
    paused: Option<bool>,
    #[prost(int32, optional, tag = "9")]
    progress_deadline_seconds: Option<i32>,
}

/// `apps.v1.ReplicaSetSpec`.
#[derive(Clone, PartialEq, Message)]
struct ReplicaSetSpec {
    #[prost(int32, optional, tag = "1")]
    replicas: Option<i32>,
    #[prost(message, optional, tag = "2")]
    selector: Option<LabelSelector>,
    #[prost(message, optional, tag = "3")]
    template: Option<PodTemplateSpec>,
    #[prost(int32, optional, tag = "4")]
    min_ready_seconds: Option<i32>,
}

/// `apps.v1.StatefulSetSpec` (without volume claim templates and update strategy).
#[derive(Clone, PartialEq, Message)]
struct StatefulSetSpec {
    #[prost(int32, optional, tag = "1")]
    replicas: Option<i32>,
    #[prost(message, optional, tag = "2")]
    selector: Option<LabelSelector>,
    #[prost(message, optional, tag = "3")]
    template: Option<PodTemplateSpec>,
    #[prost(string, optional, tag = "5")]
    service_name: Option<String>,
    #[prost(string, optional, tag = "6")]
    pod_management_policy: Option<String>,
    #[prost(int32, optional, tag = "8")]
    revision_history_limit: Option<i32>,
    #[prost(int32, optional, tag = "9")]
    min_ready_seconds: Option<i32>,
}

/// `apps.v1.DaemonSetSpec` (without the update strategy).
#[derive(Clone, PartialEq, Message)]
struct DaemonSetSpec {
    #[prost(message, optional, tag = "1")]
    selector: Option<LabelSelector>,
    #[prost(message, optional, tag = "2")]
    template: Option<PodTemplateSpec>,
    #[prost(int32, optional, tag = "4")]
    min_ready_seconds: Option<i32>,
    #[prost(int32, optional, tag = "6")]
    revision_history_limit: Option<i32>,
}

/// An apps/v1 workload: metadata and a spec of type `S`.
#[derive(Clone, PartialEq, Message)]
struct Workload<S: Message + Default + PartialEq + std::fmt::Debug> {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<S>,
}

/// `meta.v1.Preconditions`.
#[derive(Clone, PartialEq, Message)]
struct Preconditions {
    #[prost(string, optional, tag = "1")]
    uid: Option<String>,
    #[prost(string, optional, tag = "2")]
    resource_version: Option<String>,
}

/// `meta.v1.DeleteOptions`.
#[derive(Clone, PartialEq, Message)]
struct DeleteOptions {
    #[prost(int64, optional, tag = "1")]
    grace_period_seconds: Option<i64>,
    #[prost(message, optional, tag = "2")]
    preconditions: Option<Preconditions>,
    #[prost(bool, optional, tag = "3")]
    orphan_dependents: Option<bool>,
    #[prost(string, optional, tag = "4")]
    propagation_policy: Option<String>,
    #[prost(string, repeated, tag = "5")]
    dry_run: Vec<String>,
}

/// `policy.v1.Eviction` (what `kubectl drain` sends).
#[derive(Clone, PartialEq, Message)]
struct Eviction {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    delete_options: Option<DeleteOptions>,
}

/// Sets `key` to `v` when it is there and not the zero value Go's JSON
/// encoding omits (`omitempty`): Go's protobuf encoding writes non-pointer
/// fields even when empty, so `""`, `0` and `false` arrive for unset
/// fields. Pointer fields that may be zero on purpose go through [`put_ptr`].
fn put(o: &mut Value, key: &str, v: Option<Value>) {
    let zero = |v: &Value| v.as_str() == Some("") || v.as_i64() == Some(0) || v.as_bool() == Some(false);
    if let Some(v) = v.filter(|v| !zero(v)) {
        o[key] = v;
    }
}

/// Sets `key` to `v` when it is there (a pointer field: zero is a value).
fn put_ptr(o: &mut Value, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        o[key] = v;
    }
}

fn strs(v: Vec<String>) -> Option<Value> {
    (!v.is_empty()).then(|| json!(v))
}

fn selector_json(s: LabelSelector) -> Value {
    let mut v = json!({});
    if !s.match_labels.is_empty() {
        v["matchLabels"] = sorted(s.match_labels, Value::from);
    }
    if !s.match_expressions.is_empty() {
        let e: Vec<Value> = s
            .match_expressions
            .into_iter()
            .map(|r| json!({"key": r.key.unwrap_or_default(), "operator": r.operator.unwrap_or_default(), "values": r.values}))
            .collect();
        v["matchExpressions"] = json!(e);
    }
    v
}

fn int_or_string(i: IntOrString) -> Value {
    match (i.r#type, i.int_val, i.str_val) {
        (Some(1), _, Some(s)) => json!(s),
        (_, Some(n), _) => json!(n),
        (_, None, Some(s)) => json!(s),
        _ => json!(0),
    }
}

fn quantities(m: HashMap<String, Quantity>) -> Value {
    sorted(m, |q| json!(q.string.unwrap_or_default()))
}

fn container_json(c: Container) -> Value {
    let mut v = json!({"name": c.name.unwrap_or_default()});
    put(&mut v, "image", c.image.map(Value::from));
    put(&mut v, "command", strs(c.command));
    put(&mut v, "args", strs(c.args));
    put(&mut v, "workingDir", c.working_dir.map(Value::from));
    if !c.ports.is_empty() {
        let ports: Vec<Value> = c
            .ports
            .into_iter()
            .map(|p| {
                let mut pv = json!({"containerPort": p.container_port.unwrap_or(0)});
                put(&mut pv, "name", p.name.map(Value::from));
                put(&mut pv, "hostPort", p.host_port.map(Value::from));
                put(&mut pv, "protocol", p.protocol.map(Value::from));
                put(&mut pv, "hostIP", p.host_ip.map(Value::from));
                pv
            })
            .collect();
        v["ports"] = json!(ports);
    }
    if !c.env.is_empty() {
        let env: Vec<Value> = c
            .env
            .into_iter()
            .map(|e| {
                let mut ev = json!({"name": e.name.unwrap_or_default()});
                put(&mut ev, "value", e.value.map(Value::from));
                ev
            })
            .collect();
        v["env"] = json!(env);
    }
    if let Some(r) = c.resources {
        let mut rv = json!({});
        if !r.limits.is_empty() {
            rv["limits"] = quantities(r.limits);
        }
        if !r.requests.is_empty() {
            rv["requests"] = quantities(r.requests);
        }
        v["resources"] = rv;
    }
    if !c.volume_mounts.is_empty() {
        let mounts: Vec<Value> = c
            .volume_mounts
            .into_iter()
            .map(|m| {
                let mut mv = json!({"name": m.name.unwrap_or_default(), "mountPath": m.mount_path.unwrap_or_default()});
                put(&mut mv, "readOnly", m.read_only.map(Value::from));
                put(&mut mv, "subPath", m.sub_path.map(Value::from));
                mv
            })
            .collect();
        v["volumeMounts"] = json!(mounts);
    }
    put(&mut v, "terminationMessagePath", c.termination_message_path.map(Value::from));
    put(&mut v, "terminationMessagePolicy", c.termination_message_policy.map(Value::from));
    put(&mut v, "imagePullPolicy", c.image_pull_policy.map(Value::from));
    put(&mut v, "stdin", c.stdin.map(Value::from));
    put(&mut v, "stdinOnce", c.stdin_once.map(Value::from));
    put(&mut v, "tty", c.tty.map(Value::from));
    v
}

fn volume_json(vol: Volume) -> Value {
    let mut v = json!({"name": vol.name.unwrap_or_default()});
    let src = vol.volume_source.unwrap_or_default();
    if let Some(e) = src.empty_dir {
        let mut ev = json!({});
        put(&mut ev, "medium", e.medium.map(Value::from));
        put(&mut ev, "sizeLimit", e.size_limit.and_then(|q| q.string).map(Value::from));
        v["emptyDir"] = ev;
    }
    if let Some(s) = src.secret {
        let mut sv = json!({});
        put(&mut sv, "secretName", s.secret_name.map(Value::from));
        put_ptr(&mut sv, "defaultMode", s.default_mode.map(Value::from));
        put_ptr(&mut sv, "optional", s.optional.map(Value::from));
        v["secret"] = sv;
    }
    if let Some(c) = src.config_map {
        let mut cv = json!({});
        put(&mut cv, "name", c.local_object_reference.and_then(|r| r.name).map(Value::from));
        put_ptr(&mut cv, "defaultMode", c.default_mode.map(Value::from));
        put_ptr(&mut cv, "optional", c.optional.map(Value::from));
        v["configMap"] = cv;
    }
    if let Some(p) = src.persistent_volume_claim {
        let mut pv = json!({"claimName": p.claim_name.unwrap_or_default()});
        put(&mut pv, "readOnly", p.read_only.map(Value::from));
        v["persistentVolumeClaim"] = pv;
    }
    v
}

fn pod_spec_json(s: PodSpec) -> Value {
    let mut v = json!({"containers": s.containers.into_iter().map(container_json).collect::<Vec<_>>()});
    if !s.init_containers.is_empty() {
        v["initContainers"] = json!(s.init_containers.into_iter().map(container_json).collect::<Vec<_>>());
    }
    if !s.volumes.is_empty() {
        v["volumes"] = json!(s.volumes.into_iter().map(volume_json).collect::<Vec<_>>());
    }
    put(&mut v, "restartPolicy", s.restart_policy.map(Value::from));
    put_ptr(&mut v, "terminationGracePeriodSeconds", s.termination_grace_period_seconds.map(Value::from));
    put(&mut v, "activeDeadlineSeconds", s.active_deadline_seconds.map(Value::from));
    put(&mut v, "dnsPolicy", s.dns_policy.map(Value::from));
    if !s.node_selector.is_empty() {
        v["nodeSelector"] = sorted(s.node_selector, Value::from);
    }
    put(&mut v, "serviceAccountName", s.service_account_name.map(Value::from));
    put(&mut v, "serviceAccount", s.service_account.map(Value::from));
    put(&mut v, "nodeName", s.node_name.map(Value::from));
    put(&mut v, "hostNetwork", s.host_network.map(Value::from));
    if !s.image_pull_secrets.is_empty() {
        let refs: Vec<Value> =
            s.image_pull_secrets.into_iter().map(|r| json!({"name": r.name.unwrap_or_default()})).collect();
        v["imagePullSecrets"] = json!(refs);
    }
    put(&mut v, "hostname", s.hostname.map(Value::from));
    put(&mut v, "subdomain", s.subdomain.map(Value::from));
    put(&mut v, "schedulerName", s.scheduler_name.map(Value::from));
    put_ptr(&mut v, "automountServiceAccountToken", s.automount_service_account_token.map(Value::from));
    if !s.tolerations.is_empty() {
        let ts: Vec<Value> = s
            .tolerations
            .into_iter()
            .map(|t| {
                let mut tv = json!({});
                put(&mut tv, "key", t.key.map(Value::from));
                put(&mut tv, "operator", t.operator.map(Value::from));
                put(&mut tv, "value", t.value.map(Value::from));
                put(&mut tv, "effect", t.effect.map(Value::from));
                put_ptr(&mut tv, "tolerationSeconds", t.toleration_seconds.map(Value::from));
                tv
            })
            .collect();
        v["tolerations"] = json!(ts);
    }
    put(&mut v, "priorityClassName", s.priority_class_name.map(Value::from));
    v
}

fn template_json(t: PodTemplateSpec) -> Value {
    json!({"metadata": metadata(t.metadata.unwrap_or_default()), "spec": pod_spec_json(t.spec.unwrap_or_default())})
}

fn decode<M: Message + Default>(raw: &[u8], kind: &str) -> Result<M, ApiError> {
    M::decode(raw).map_err(|e| ApiError::bad_request(format!("invalid {kind}: {e}")))
}

/// The JSON of an apps/v1 workload (or v1 Pod) body.
fn workload_json(kind: &str, raw: &[u8]) -> Result<Value, ApiError> {
    let (meta, spec) = match kind {
        "Deployment" => {
            let d: Workload<DeploymentSpec> = decode(raw, kind)?;
            let s = d.spec.unwrap_or_default();
            let mut v = json!({});
            put_ptr(&mut v, "replicas", s.replicas.map(Value::from));
            put(&mut v, "selector", s.selector.map(selector_json));
            put(&mut v, "template", s.template.map(template_json));
            if let Some(st) = s.strategy {
                let mut sv = json!({});
                put(&mut sv, "type", st.r#type.map(Value::from));
                if let Some(ru) = st.rolling_update {
                    let mut rv = json!({});
                    put_ptr(&mut rv, "maxUnavailable", ru.max_unavailable.map(int_or_string));
                    put_ptr(&mut rv, "maxSurge", ru.max_surge.map(int_or_string));
                    sv["rollingUpdate"] = rv;
                }
                v["strategy"] = sv;
            }
            put(&mut v, "minReadySeconds", s.min_ready_seconds.map(Value::from));
            put_ptr(&mut v, "revisionHistoryLimit", s.revision_history_limit.map(Value::from));
            put(&mut v, "paused", s.paused.map(Value::from));
            put_ptr(&mut v, "progressDeadlineSeconds", s.progress_deadline_seconds.map(Value::from));
            (d.metadata, v)
        }
        "ReplicaSet" => {
            let d: Workload<ReplicaSetSpec> = decode(raw, kind)?;
            let s = d.spec.unwrap_or_default();
            let mut v = json!({});
            put_ptr(&mut v, "replicas", s.replicas.map(Value::from));
            put(&mut v, "selector", s.selector.map(selector_json));
            put(&mut v, "template", s.template.map(template_json));
            put(&mut v, "minReadySeconds", s.min_ready_seconds.map(Value::from));
            (d.metadata, v)
        }
        "StatefulSet" => {
            let d: Workload<StatefulSetSpec> = decode(raw, kind)?;
            let s = d.spec.unwrap_or_default();
            let mut v = json!({});
            put_ptr(&mut v, "replicas", s.replicas.map(Value::from));
            put(&mut v, "selector", s.selector.map(selector_json));
            put(&mut v, "template", s.template.map(template_json));
            put(&mut v, "serviceName", s.service_name.map(Value::from));
            put(&mut v, "podManagementPolicy", s.pod_management_policy.map(Value::from));
            put_ptr(&mut v, "revisionHistoryLimit", s.revision_history_limit.map(Value::from));
            put(&mut v, "minReadySeconds", s.min_ready_seconds.map(Value::from));
            (d.metadata, v)
        }
        "DaemonSet" => {
            let d: Workload<DaemonSetSpec> = decode(raw, kind)?;
            let s = d.spec.unwrap_or_default();
            let mut v = json!({});
            put(&mut v, "selector", s.selector.map(selector_json));
            put(&mut v, "template", s.template.map(template_json));
            put(&mut v, "minReadySeconds", s.min_ready_seconds.map(Value::from));
            put_ptr(&mut v, "revisionHistoryLimit", s.revision_history_limit.map(Value::from));
            (d.metadata, v)
        }
        _ => {
            let p: Pod = decode(raw, kind)?;
            (p.metadata, pod_spec_json(p.spec.unwrap_or_default()))
        }
    };
    let api_version = if kind == "Pod" { "v1" } else { "apps/v1" };
    Ok(json!({"apiVersion": api_version, "kind": kind, "metadata": metadata(meta.unwrap_or_default()), "spec": spec}))
}

fn delete_options_json(d: DeleteOptions) -> Value {
    let mut v = json!({});
    put_ptr(&mut v, "gracePeriodSeconds", d.grace_period_seconds.map(Value::from));
    if let Some(p) = d.preconditions {
        let mut pv = json!({});
        put(&mut pv, "uid", p.uid.map(Value::from));
        put(&mut pv, "resourceVersion", p.resource_version.map(Value::from));
        v["preconditions"] = pv;
    }
    put_ptr(&mut v, "orphanDependents", d.orphan_dependents.map(Value::from));
    put(&mut v, "propagationPolicy", d.propagation_policy.map(Value::from));
    put(&mut v, "dryRun", strs(d.dry_run));
    v
}

/// Opens the envelope: the object's type and its encoded bytes.
pub fn unwrap(body: &[u8]) -> Result<(TypeMeta, Vec<u8>), String> {
    let rest = body.strip_prefix(MAGIC).ok_or("the body does not start with the protobuf magic")?;
    let unknown = Unknown::decode(rest).map_err(|e| format!("invalid protobuf envelope: {e}"))?;
    Ok((unknown.type_meta.unwrap_or_default(), unknown.raw.unwrap_or_default()))
}

fn sorted<V>(m: HashMap<String, V>, f: impl Fn(V) -> Value) -> Value {
    let mut keys: Vec<(String, V)> = m.into_iter().collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Object(keys.into_iter().map(|(k, v)| (k, f(v))).collect::<Map<String, Value>>())
}

fn metadata(m: ObjectMeta) -> Value {
    let mut out = Map::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            out.insert(k.into(), json!(v));
        }
    };
    put("name", m.name);
    put("generateName", m.generate_name);
    put("namespace", m.namespace);
    put("uid", m.uid);
    put("resourceVersion", m.resource_version);
    if !m.labels.is_empty() {
        out.insert("labels".into(), sorted(m.labels, Value::from));
    }
    if !m.annotations.is_empty() {
        out.insert("annotations".into(), sorted(m.annotations, Value::from));
    }
    if !m.finalizers.is_empty() {
        out.insert("finalizers".into(), json!(m.finalizers));
    }
    Value::Object(out)
}

/// Decodes a protobuf object body into the JSON object the API would have
/// received; only the kinds client-go's typed clients write here (Secret,
/// ConfigMap, Namespace, TokenRequest). A malformed body is a 400; any other kind a 415 naming it.
pub fn object_to_json(body: &[u8]) -> Result<Value, ApiError> {
    let (meta, raw) = unwrap(body).map_err(ApiError::bad_request)?;
    let api_version = meta.api_version.unwrap_or_default();
    let kind = meta.kind.unwrap_or_default();
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Secret") => {
            let s =
                Secret::decode(raw.as_slice()).map_err(|e| ApiError::bad_request(format!("invalid Secret: {e}")))?;
            let mut v = json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": metadata(s.metadata.unwrap_or_default()),
                "type": s.r#type.unwrap_or_else(|| "Opaque".into()),
            });
            if !s.data.is_empty() {
                v["data"] = sorted(s.data, |b| json!(base64(&b)));
            }
            if !s.string_data.is_empty() {
                v["stringData"] = sorted(s.string_data, Value::from);
            }
            if let Some(i) = s.immutable {
                v["immutable"] = json!(i);
            }
            Ok(v)
        }
        ("v1", "ConfigMap") => {
            let c = ConfigMap::decode(raw.as_slice())
                .map_err(|e| ApiError::bad_request(format!("invalid ConfigMap: {e}")))?;
            let mut v = json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": metadata(c.metadata.unwrap_or_default()),
            });
            if !c.data.is_empty() {
                v["data"] = sorted(c.data, Value::from);
            }
            if !c.binary_data.is_empty() {
                v["binaryData"] = sorted(c.binary_data, |b| json!(base64(&b)));
            }
            if let Some(i) = c.immutable {
                v["immutable"] = json!(i);
            }
            Ok(v)
        }
        ("v1", "Namespace") => {
            let n = Namespace::decode(raw.as_slice())
                .map_err(|e| ApiError::bad_request(format!("invalid Namespace: {e}")))?;
            Ok(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata(n.metadata.unwrap_or_default())}))
        }
        ("apps/v1", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") | ("v1", "Pod") => {
            workload_json(&kind, &raw)
        }
        ("policy/v1" | "policy/v1beta1", "Eviction") => {
            let e: Eviction = decode(&raw, "Eviction")?;
            let mut v =
                json!({"apiVersion": api_version, "kind": kind, "metadata": metadata(e.metadata.unwrap_or_default())});
            put(&mut v, "deleteOptions", e.delete_options.map(delete_options_json));
            Ok(v)
        }
        (_, "DeleteOptions") => {
            let d: DeleteOptions = decode(&raw, "DeleteOptions")?;
            let mut v = delete_options_json(d);
            v["kind"] = json!("DeleteOptions");
            v["apiVersion"] = json!(api_version);
            Ok(v)
        }
        ("authentication.k8s.io/v1", "SelfSubjectReview") => {
            Ok(json!({"apiVersion": api_version, "kind": kind, "metadata": {}}))
        }
        ("authentication.k8s.io/v1", "TokenRequest") => {
            let t = TokenRequest::decode(raw.as_slice())
                .map_err(|e| ApiError::bad_request(format!("invalid TokenRequest: {e}")))?;
            let spec = t.spec.unwrap_or_default();
            let mut v = json!({
                "apiVersion": api_version,
                "kind": kind,
                "metadata": metadata(t.metadata.unwrap_or_default()),
                "spec": {"audiences": spec.audiences},
            });
            if let Some(s) = spec.expiration_seconds {
                v["spec"]["expirationSeconds"] = json!(s);
            }
            if let Some(b) = spec.bound_object_ref {
                v["spec"]["boundObjectRef"] = json!({
                    "kind": b.kind, "apiVersion": b.api_version, "name": b.name, "uid": b.uid,
                });
            }
            Ok(v)
        }
        _ => Err(ApiError::unsupported_media_type(&format!(
            "application/vnd.kubernetes.protobuf ({api_version} {kind}; kube-sim decodes protobuf only for v1 Secret, ConfigMap, Namespace and Pod, apps/v1 Deployment, ReplicaSet, StatefulSet and DaemonSet, Eviction, DeleteOptions, SelfSubjectReview and TokenRequest)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let u = Unknown {
            type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
            raw: Some(raw),
        };
        let mut body = MAGIC.to_vec();
        body.extend(u.encode_to_vec());
        body
    }

    #[test]
    fn decodes_a_helm_release_secret() {
        let secret = Secret {
            metadata: Some(ObjectMeta {
                name: Some("sh.helm.release.v1.agent.v1".into()),
                labels: [("owner".to_string(), "helm".to_string()), ("name".to_string(), "agent".to_string())]
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            data: [("release".to_string(), b"\x1f\x8b\x00binary".to_vec())].into_iter().collect(),
            r#type: Some("helm.sh/release.v1".into()),
            ..Default::default()
        };
        let v = object_to_json(&envelope("v1", "Secret", secret.encode_to_vec())).expect("decodes");
        assert_eq!(v["kind"], "Secret");
        assert_eq!(v["type"], "helm.sh/release.v1");
        assert_eq!(v["metadata"]["name"], "sh.helm.release.v1.agent.v1");
        assert_eq!(v["metadata"]["labels"]["owner"], "helm");
        assert_eq!(v["data"]["release"], base64(b"\x1f\x8b\x00binary"));
    }

    #[test]
    fn decodes_a_config_map_and_refuses_other_kinds() {
        let cm = ConfigMap {
            metadata: Some(ObjectMeta { name: Some("settings".into()), ..Default::default() }),
            data: [("a".to_string(), "1".to_string())].into_iter().collect(),
            ..Default::default()
        };
        let v = object_to_json(&envelope("v1", "ConfigMap", cm.encode_to_vec())).expect("decodes");
        assert_eq!((v["metadata"]["name"].as_str(), v["data"]["a"].as_str()), (Some("settings"), Some("1")));
        let err = object_to_json(&envelope("batch/v1", "Job", Vec::new())).expect_err("refused");
        assert_eq!(err.code, 415);
        assert!(err.message.contains("batch/v1 Job"), "{}", err.message);
        assert_eq!(object_to_json(b"k8s\x00\xff\xff").expect_err("malformed").code, 400);
        assert_eq!(object_to_json(&envelope("v1", "Secret", vec![0xff, 0xff])).expect_err("malformed").code, 400);
    }
}

#[cfg(test)]
mod apps_tests {
    use super::*;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let u = Unknown {
            type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
            raw: Some(raw),
        };
        let mut body = MAGIC.to_vec();
        body.extend(u.encode_to_vec());
        body
    }

    /// What `kubectl create deployment web --image=nginx --port=80 --replicas=2` sends.
    fn kubectl_deployment() -> Workload<DeploymentSpec> {
        let labels: HashMap<String, String> = [("app".to_string(), "web".to_string())].into_iter().collect();
        Workload {
            metadata: Some(ObjectMeta { name: Some("web".into()), labels: labels.clone(), ..Default::default() }),
            spec: Some(DeploymentSpec {
                replicas: Some(2),
                selector: Some(LabelSelector { match_labels: labels.clone(), match_expressions: vec![] }),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta { labels, ..Default::default() }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: Some("nginx".into()),
                            image: Some("nginx".into()),
                            ports: vec![ContainerPort { container_port: Some(80), ..Default::default() }],
                            resources: Some(ResourceRequirements::default()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                }),
                strategy: Some(DeploymentStrategy::default()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn decodes_kubectls_deployment() {
        let v =
            object_to_json(&envelope("apps/v1", "Deployment", kubectl_deployment().encode_to_vec())).expect("decodes");
        assert_eq!(v["metadata"]["name"], "web");
        assert_eq!(v["spec"]["replicas"], 2);
        assert_eq!(v["spec"]["selector"]["matchLabels"]["app"], "web");
        let c = &v["spec"]["template"]["spec"]["containers"][0];
        assert_eq!((c["name"].as_str(), c["image"].as_str()), (Some("nginx"), Some("nginx")));
        assert_eq!(c["ports"][0]["containerPort"], 80);
        assert_eq!(v["spec"]["template"]["metadata"]["labels"]["app"], "web");
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut raw = kubectl_deployment().encode_to_vec();
        // Field 99 (length-delimited) and field 98 (varint) of a newer API.
        raw.extend([0x9a, 0x06, 0x03, b'a', b'b', b'c', 0x90, 0x06, 0x07]);
        let v = object_to_json(&envelope("apps/v1", "Deployment", raw)).expect("decodes");
        assert_eq!(v["spec"]["replicas"], 2);
        let ds = Workload::<DaemonSetSpec> {
            metadata: Some(ObjectMeta { name: Some("agent".into()), ..Default::default() }),
            spec: Some(DaemonSetSpec { revision_history_limit: Some(3), ..Default::default() }),
        };
        let v = object_to_json(&envelope("apps/v1", "DaemonSet", ds.encode_to_vec())).expect("decodes");
        assert_eq!((v["kind"].as_str(), v["spec"]["revisionHistoryLimit"].as_i64()), (Some("DaemonSet"), Some(3)));
    }

    #[test]
    fn decodes_drains_eviction() {
        let e = Eviction {
            metadata: Some(ObjectMeta {
                name: Some("api-1".into()),
                namespace: Some("web".into()),
                ..Default::default()
            }),
            delete_options: Some(DeleteOptions { dry_run: vec!["All".into()], ..Default::default() }),
        };
        let v = object_to_json(&envelope("policy/v1", "Eviction", e.encode_to_vec())).expect("decodes");
        assert_eq!(v["metadata"]["name"], "api-1");
        assert_eq!(v["deleteOptions"]["dryRun"][0], "All");
    }
}
