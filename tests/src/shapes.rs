//! Request shapes for comparing the control plane's classifier with the API
//! server's reading (kube-sim's own parser): encodings, dot and empty
//! segments, the `watch/` and `proxy/` prefixes, subresources, non-resource
//! paths and every verb. Writes use the `scratch` namespace and names that do
//! not exist, so sending the table through a stack changes nothing that
//! matters.

use kube_sim::request::{GoUrl, request_info};
use kubechat_protocol::kube_request::{self, Target};

/// What the control plane must do with a shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Accept it, classified exactly as the API server classifies it.
    Same,
    /// Refuse it (400); the error message contains this.
    Refused(&'static str),
}

/// One request shape.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// HTTP method.
    pub method: &'static str,
    /// The request target, exactly as sent (path and query, escaped).
    pub target: &'static str,
    /// What the control plane must do.
    pub expect: Expect,
}

const fn same(method: &'static str, target: &'static str) -> Shape {
    Shape { method, target, expect: Expect::Same }
}

const fn refused(method: &'static str, target: &'static str, why: &'static str) -> Shape {
    Shape { method, target, expect: Expect::Refused(why) }
}

/// The table.
pub const SHAPES: &[Shape] = &[
    // Reads, plain and spelled differently.
    same("GET", "/api/v1/pods"),
    same("GET", "/api/v1/pods?limit=500"),
    same("GET", "/api/v1/namespaces/web/pods"),
    same("GET", "/api/v1/namespaces/web/pods/no-such-pod"),
    same("GET", "/api/v1/namespaces/web/pods/no-such-pod/log?container=main&tailLines=1"),
    same("GET", "/api/v1/namespaces/web/pods/no-such-pod/status"),
    same("GET", "/api/v1/namespaces/web/%73ecrets"),
    same("GET", "/api/v1/namespaces/web/secrets/%64b-password"),
    same("GET", "/api/v1/namespaces/%77eb/pods"),
    same("GET", "/%61pi/v1/pods"),
    same("GET", "/api/v1/namespaces/web/%53ecrets"),
    same("HEAD", "/api/v1/namespaces/web/pods"),
    // watch as a parameter, every value the API server reads.
    same("GET", "/api/v1/namespaces/web/pods?watch=true"),
    same("GET", "/api/v1/namespaces/web/pods?watch=1"),
    same("GET", "/api/v1/namespaces/web/pods?watch=yes"),
    same("GET", "/api/v1/namespaces/web/pods?watch="),
    same("GET", "/api/v1/namespaces/web/pods?watch"),
    same("GET", "/api/v1/namespaces/web/pods?watch=False"),
    same("GET", "/api/v1/namespaces/web/pods?watch=0&watch=1"),
    same("GET", "/api/v1/namespaces/web/pods?w%61tch=1"),
    same("GET", "/api/v1/namespaces/web/secrets?watch=true&resourceVersion=0"),
    // The deprecated verb prefixes.
    same("GET", "/api/v1/watch/pods"),
    same("GET", "/api/v1/watch/namespaces/web/secrets"),
    same("GET", "/api/v1/watch/namespaces/web/pods/no-such-pod"),
    same("GET", "/apis/apps/v1/watch/namespaces/web/deployments"),
    same("GET", "/api/v1/%77atch/namespaces/web/secrets"),
    same("GET", "/api/v1/proxy/namespaces/web/pods/no-such-pod"),
    same("GET", "/api/v1/proxy/namespaces/web/services/api/extra/path"),
    same("GET", "/api/v1/proxy/nodes/no-such-node"),
    // Subresources.
    same("GET", "/api/v1/namespaces/web/pods/no-such-pod/proxy"),
    same("GET", "/api/v1/namespaces/web/services/api:80/proxy/healthz"),
    same("GET", "/api/v1/nodes/no-such-node/proxy/metrics"),
    same("GET", "/apis/apps/v1/namespaces/web/deployments/no-such-deploy/scale"),
    same("GET", "/api/v1/namespaces/web/pods/no-such-pod/exec?command=sh&stdin=true"),
    same("POST", "/api/v1/namespaces/web/pods/no-such-pod/exec?command=ls"),
    same("POST", "/api/v1/namespaces/web/pods/no-such-pod/attach?stdin=true"),
    same("GET", "/api/v1/namespaces/web/pods/no-such-pod/portforward?ports=8080"),
    same("GET", "/api/v1/namespaces/web/pods/no-such-pod/%65xec?command=sh"),
    // A name from the field selector, for lists and watches only.
    same("GET", "/api/v1/namespaces/web/pods?fieldSelector=metadata.name%3Dno-such-pod"),
    same("GET", "/api/v1/namespaces/web/pods?fieldSelector=status.phase%3DRunning%2Cmetadata.name%3D%3Dx"),
    same("GET", "/api/v1/namespaces/web/pods?fieldSelector=metadata.name%21%3Dx"),
    same("GET", "/api/v1/pods?fieldSelector=metadata.name%3Dx&limit=abc"),
    same("GET", "/api/v1/pods?watch=1&fieldSelector=metadata.name%3Dx"),
    // Groups, CRDs, cluster scope.
    same("GET", "/apis/apps/v1/deployments"),
    same("GET", "/apis/example.com/v1/widgets"),
    same("GET", "/api/v1/namespaces"),
    same("GET", "/api/v1/namespaces/web"),
    same("PUT", "/api/v1/namespaces/scratch/finalize"),
    same("PUT", "/api/v1/namespaces/scratch/status"),
    same("DELETE", "/api/v1/namespaces/scratch"),
    // Writes, every verb.
    same("POST", "/api/v1/namespaces/scratch/pods"),
    same("PUT", "/api/v1/namespaces/scratch/pods/no-such-pod"),
    same("PATCH", "/apis/apps/v1/namespaces/scratch/deployments/no-such-deploy"),
    same("DELETE", "/api/v1/namespaces/scratch/pods/no-such-pod"),
    same("DELETE", "/api/v1/namespaces/scratch/pods"),
    same("DELETE", "/api/v1/namespaces/scratch/%70ods"),
    same("POST", "/api/v1/namespaces/scratch/pods/no-such-pod/eviction"),
    same("PATCH", "/api/v1/namespaces/scratch/pods/no-such-pod/ephemeralcontainers"),
    same("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"),
    same("POST", "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"),
    same("PUT", "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/no-such-schema"),
    same("DELETE", "/api/v1/nodes/no-such-node"),
    same("POST", "/api/v1/namespaces/scratch/serviceaccounts/no-such-sa/token"),
    same("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"),
    same("OPTIONS", "/api/v1/namespaces/web/pods"),
    same("PROPFIND", "/api/v1/namespaces/web/pods"),
    // Non-resource paths.
    same("GET", "/"),
    same("GET", "/api"),
    same("GET", "/api/v1"),
    same("GET", "/apis"),
    same("GET", "/apis/apps"),
    same("GET", "/apis/apps/v1"),
    same("GET", "/version"),
    same("GET", "/%76ersion"),
    same("GET", "/openapi/v2"),
    same("GET", "/openapi/v3/apis/apps/v1"),
    same("GET", "/healthz"),
    same("GET", "/readyz/etcd"),
    same("GET", "/metrics"),
    same("POST", "/version"),
    // What a canonical path cannot hold: the API server would read these
    // as something else than they look like.
    refused("GET", "/api/v1%2Fnamespaces%2Fweb%2Fsecrets", "encoded slash"),
    refused("GET", "/api/v1/namespaces/web/pods/x%2F..%2F..%2Fsecrets", "encoded slash"),
    refused("DELETE", "/api/v1/namespaces/scratch/pods/x%2f..%2f..%2fsecrets", "encoded slash"),
    refused("GET", "/api/v1/namespaces/web/pods/../secrets", "dot segment"),
    refused("GET", "/api/v1/namespaces/web/%2e%2e/kube-system/secrets", "dot segment"),
    refused("GET", "/api/v1/./namespaces/web/secrets", "dot segment"),
    refused("GET", "/api//v1/pods", "empty segment"),
    refused("GET", "/api/v1/pods/", "empty segment"),
    refused("GET", "//api/v1/namespaces/web/secrets", "empty segment"),
    refused("GET", "/api/v1/namespaces/web/secrets%00", "control character"),
    refused("GET", "/api/v1/namespaces/web/pods%zz", "invalid percent-escape"),
    refused("GET", "/api/v1/namespaces/web/pods%4", "invalid percent-escape"),
    refused("GET", "/api/v1/namespaces/web/pods/%ff", "UTF-8"),
    refused("GET", "/api/v1/namespaces/web/pods?watch=1;x=1", "semicolon"),
    refused("GET", "/api/v1/namespaces/web/pods?watch=%zz", "invalid percent-escape"),
    refused("GET", "/api/v1/watch", "no resource"),
];

/// The classification both sides are compared on.
pub type Reading = (bool, String, String, String, String, String, String, String);

/// The control plane's reading of a target, or its refusal.
pub fn control_plane(method: &str, target: &str) -> Result<(Reading, String), String> {
    let (path, query) = target.split_once('?').map_or((target, None), |(p, q)| (p, Some(q)));
    let t = Target::parse(path, query).map_err(|e| e.to_string())?;
    let i = kube_request::classify(method, &t).map_err(|e| e.to_string())?;
    let reading =
        (i.resource_request, i.verb, i.api_group, i.api_version, i.namespace, i.resource, i.subresource, i.name);
    Ok((reading, t.path_and_query()))
}

/// The API server's reading (kube-sim's own parser) of a target.
pub fn api_server(method: &str, target: &str) -> Result<Reading, String> {
    let url = GoUrl::parse_request_uri(target).map_err(|e| format!("400 Bad Request ({e:?})"))?;
    let i = request_info(method, &url).map_err(|e| format!("500 {}", e.0))?;
    Ok((i.resource_request, i.verb, i.api_group, i.api_version, i.namespace, i.resource, i.subresource, i.name))
}

/// A reading as the API audit log would name it.
pub fn describe(r: &Reading) -> String {
    let (res, verb, group, version, ns, resource, sub, name) = r;
    if !res {
        return format!("non-resource {verb}");
    }
    let what = if sub.is_empty() { resource.clone() } else { format!("{resource}/{sub}") };
    format!("{verb} {group}/{version} {what} ns={ns:?} name={name:?}")
}
