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
            "application/vnd.kubernetes.protobuf ({api_version} {kind}; kube-sim decodes protobuf only for v1 Secret, ConfigMap and Namespace, and TokenRequest)"
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
        let err = object_to_json(&envelope("apps/v1", "Deployment", Vec::new())).expect_err("refused");
        assert_eq!(err.code, 415);
        assert!(err.message.contains("apps/v1 Deployment"), "{}", err.message);
        assert_eq!(object_to_json(b"k8s\x00\xff\xff").expect_err("malformed").code, 400);
        assert_eq!(object_to_json(&envelope("v1", "Secret", vec![0xff, 0xff])).expect_err("malformed").code, 400);
    }
}
