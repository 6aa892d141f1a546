//! SelfSubjectAccessReview and SubjectAccessReview bodies, JSON or the
//! Kubernetes protobuf envelope (`k8s\0` + runtime.Unknown), which is what
//! `kubectl auth can-i` sends.

use prost::Message;
use serde_json::Value;

use crate::proto;
use crate::rbac::Attributes;

#[derive(Clone, PartialEq, Message)]
struct ResourceAttributes {
    #[prost(string, optional, tag = "1")]
    namespace: Option<String>,
    #[prost(string, optional, tag = "2")]
    verb: Option<String>,
    #[prost(string, optional, tag = "3")]
    group: Option<String>,
    #[prost(string, optional, tag = "4")]
    version: Option<String>,
    #[prost(string, optional, tag = "5")]
    resource: Option<String>,
    #[prost(string, optional, tag = "6")]
    subresource: Option<String>,
    #[prost(string, optional, tag = "7")]
    name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct NonResourceAttributes {
    #[prost(string, optional, tag = "1")]
    path: Option<String>,
    #[prost(string, optional, tag = "2")]
    verb: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct Spec {
    #[prost(message, optional, tag = "1")]
    resource_attributes: Option<ResourceAttributes>,
    #[prost(message, optional, tag = "2")]
    non_resource_attributes: Option<NonResourceAttributes>,
}

#[derive(Clone, PartialEq, Message)]
struct SelfSubjectAccessReview {
    #[prost(bytes = "vec", optional, tag = "1")]
    metadata: Option<Vec<u8>>,
    #[prost(message, optional, tag = "2")]
    spec: Option<Spec>,
}

/// The attributes a review asks about, and for SubjectAccessReview the
/// user and groups it names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Review {
    /// What is asked.
    pub attrs: Attributes,
    /// `spec.user` (SubjectAccessReview only).
    pub user: Option<String>,
    /// `spec.groups` (SubjectAccessReview only).
    pub groups: Vec<String>,
}

fn from_proto(body: &[u8]) -> Result<Review, String> {
    let (_, raw) = proto::unwrap(body)?;
    let review = SelfSubjectAccessReview::decode(raw.as_slice()).map_err(|e| format!("invalid review: {e}"))?;
    let spec = review.spec.unwrap_or_default();
    let attrs = if let Some(r) = spec.resource_attributes {
        Attributes {
            verb: r.verb.unwrap_or_default(),
            resource_request: true,
            api_group: r.group.unwrap_or_default(),
            resource: r.resource.unwrap_or_default(),
            subresource: r.subresource.unwrap_or_default(),
            namespace: r.namespace.unwrap_or_default(),
            name: r.name.unwrap_or_default(),
            path: String::new(),
        }
    } else if let Some(n) = spec.non_resource_attributes {
        Attributes { verb: n.verb.unwrap_or_default(), path: n.path.unwrap_or_default(), ..Default::default() }
    } else {
        return Err("the review names neither resourceAttributes nor nonResourceAttributes".into());
    };
    Ok(Review { attrs, user: None, groups: Vec::new() })
}

fn from_json(v: &Value) -> Result<Review, String> {
    let spec = v.get("spec").ok_or("the review has no spec")?;
    let s = |o: &Value, k: &str| o.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let attrs = if let Some(r) = spec.get("resourceAttributes") {
        Attributes {
            verb: s(r, "verb"),
            resource_request: true,
            api_group: s(r, "group"),
            resource: s(r, "resource"),
            subresource: s(r, "subresource"),
            namespace: s(r, "namespace"),
            name: s(r, "name"),
            path: String::new(),
        }
    } else if let Some(n) = spec.get("nonResourceAttributes") {
        Attributes { verb: s(n, "verb"), path: s(n, "path"), ..Default::default() }
    } else {
        return Err("the review names neither resourceAttributes nor nonResourceAttributes".into());
    };
    let user = spec.get("user").and_then(Value::as_str).map(str::to_string);
    let groups = spec
        .get("groups")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|g| g.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    Ok(Review { attrs, user, groups })
}

/// Parses a review body, protobuf or JSON.
pub fn parse(body: &[u8]) -> Result<Review, String> {
    if body.starts_with(proto::MAGIC) {
        from_proto(body)
    } else {
        let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
        from_json(&v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_kubectls_protobuf_review() {
        let review = SelfSubjectAccessReview {
            metadata: None,
            spec: Some(Spec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some("web".into()),
                    verb: Some("delete".into()),
                    resource: Some("pods".into()),
                    ..Default::default()
                }),
                non_resource_attributes: None,
            }),
        };
        let unknown = proto::Unknown {
            type_meta: Some(proto::TypeMeta {
                api_version: Some("authorization.k8s.io/v1".into()),
                kind: Some("SelfSubjectAccessReview".into()),
            }),
            raw: Some(review.encode_to_vec()),
        };
        let mut body = proto::MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        let r = parse(&body).expect("parses");
        assert_eq!(
            (r.attrs.verb.as_str(), r.attrs.resource.as_str(), r.attrs.namespace.as_str()),
            ("delete", "pods", "web")
        );
        assert!(r.attrs.resource_request);
        assert!(parse(b"k8s\x00\xff\xff").is_err());
    }
}
