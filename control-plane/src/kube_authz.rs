//! Authorization of kubectl requests on the kube path: the tenant role
//! matrix and the cluster's policy, decided on the request's canonical
//! classification ([`kubechat_protocol::kube_request`], the API server's
//! own reading of the path) before a grant is signed. The customer's own
//! RBAC (for the impersonated identity) applies after this, in their API
//! server.
//!
//! - viewer: reads and logs; no secrets, no exec/attach/port-forward/proxy,
//!   no writes;
//! - user: reads, and writes of namespaced objects and exec/attach/
//!   port-forward, in the cluster's allowed namespaces; reads of
//!   cluster-scoped objects; no write to anything without a namespace (a
//!   write whose target has no namespace is cluster-scoped: nodes, CRDs,
//!   admission policies, cluster-scoped custom resources, a `Namespace`
//!   itself — no list of kinds to fall out of date);
//! - admin (and platform admin): everything, including cluster-scoped writes,
//!   proxy and non-resource paths, in every namespace.
//!
//! Non-admins may use only the discovery, version, OpenAPI and health
//! non-resource paths, with GET or HEAD. Any verb other than get, list and
//! watch counts as a write (an unknown method too).
//!
//! Cluster policy applies to everyone: `readOnly` refuses every write (and
//! exec/attach/port-forward/proxy), `deniedResources` refuses any access.

use kubechat_protocol::kube_request::RequestInfo;

use crate::model::{ClusterPolicy, Role};

/// Built-in cluster-scoped kinds, by API group: reads of them carry no
/// namespace, so a cluster that allows only some namespaces still lets
/// people read these. Fails closed: a cluster-scoped kind not listed here
/// (a custom resource) cannot be read without a namespace under
/// `allowedNamespaces`, except by admins. Writes never use this list.
const CLUSTER_SCOPED_READS: &[(&str, &str)] = &[
    ("", "nodes"),
    ("", "namespaces"),
    ("", "persistentvolumes"),
    ("", "componentstatuses"),
    ("storage.k8s.io", "storageclasses"),
    ("storage.k8s.io", "csidrivers"),
    ("storage.k8s.io", "csinodes"),
    ("storage.k8s.io", "volumeattachments"),
    ("rbac.authorization.k8s.io", "clusterroles"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("apiregistration.k8s.io", "apiservices"),
    ("scheduling.k8s.io", "priorityclasses"),
    ("networking.k8s.io", "ingressclasses"),
    ("node.k8s.io", "runtimeclasses"),
    ("certificates.k8s.io", "certificatesigningrequests"),
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
];

/// Non-resource paths every member may read: discovery (`/api`,
/// `/api/<version>`, `/apis`, `/apis/<group>[/<version>]`), `/version`,
/// OpenAPI (`/openapi/v2`, `/openapi/v3…`) and health (`/healthz`,
/// `/livez`, `/readyz`, and their named checks).
fn is_discovery(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        ["api"] | ["api", _] | ["apis"] | ["apis", _] | ["apis", _, _] | ["version"] => true,
        ["openapi", "v2"] | ["openapi", "v3", ..] => true,
        ["healthz" | "livez" | "readyz", rest @ ..] => rest.len() <= 1,
        _ => false,
    }
}

/// Whether a request is a self-review anyone may make (`kubectl auth
/// can-i`, `kubectl auth whoami`): it asks about the caller only.
fn is_self_review(info: &RequestInfo) -> bool {
    let own = match info.api_group.as_str() {
        "authorization.k8s.io" => {
            matches!(info.resource.as_str(), "selfsubjectaccessreviews" | "selfsubjectrulesreviews")
        }
        "authentication.k8s.io" => info.resource == "selfsubjectreviews",
        _ => false,
    };
    own && info.verb == "create" && info.name.is_empty() && info.subresource.is_empty()
}

/// Whether a request may only run once its audit record is safe: anything
/// but a plain read, interactive sessions and proxying, and every access
/// to secrets.
pub fn must_audit(info: &RequestInfo) -> bool {
    (info.resource_request && !info.is_read())
        || info.is_interactive()
        || info.is_proxy()
        || info.resource == "secrets"
        || (!info.resource_request && !matches!(info.verb.as_str(), "get" | "head"))
}

fn what(info: &RequestInfo) -> String {
    if info.subresource.is_empty() { info.resource.clone() } else { format!("{}/{}", info.resource, info.subresource) }
}

/// Decides a request; `Err(reason)` is a refusal a person can understand.
pub fn authorize(role: Role, policy: &ClusterPolicy, info: &RequestInfo) -> Result<(), String> {
    let admin = matches!(role, Role::TenantAdmin | Role::PlatformAdmin);
    if !info.resource_request {
        let read = matches!(info.verb.as_str(), "get" | "head");
        if admin || (read && is_discovery(&info.path)) {
            return Ok(());
        }
        return Err(format!(
            "{} may only GET discovery, version, OpenAPI and health paths; {} {} needs tenant_admin",
            role.as_str(),
            info.verb.to_ascii_uppercase(),
            info.path
        ));
    }
    if is_self_review(info) {
        return Ok(());
    }
    let write = !info.is_read();
    let interactive = info.is_interactive();
    let proxy = info.is_proxy();
    let with_sub = format!("{}/{}", info.resource, info.subresource);
    if policy.denied_resources.iter().any(|d| *d == info.resource || *d == with_sub) {
        return Err(format!("the cluster's policy denies access to {}", info.resource));
    }
    if policy.read_only && (write || interactive || proxy) {
        return Err("the cluster is read-only by policy".into());
    }
    if proxy && !admin {
        return Err(format!("{} cannot proxy ({}); only tenant admins may", role.as_str(), what(info)));
    }
    if admin {
        return Ok(());
    }
    match role {
        Role::TenantViewer => {
            if write || interactive {
                let verb = if info.verb.is_empty() { "this method on" } else { info.verb.as_str() };
                return Err(format!(
                    "tenant_viewer can only read; {verb} {} needs tenant_user or tenant_admin",
                    what(info)
                ));
            }
            if info.resource == "secrets" {
                return Err("tenant_viewer cannot read secrets".into());
            }
        }
        Role::TenantUser => {
            if write && info.target_namespace().is_empty() {
                return Err(format!(
                    "tenant_user cannot change cluster-scoped {} (a write without a namespace); ask a tenant admin",
                    what(info)
                ));
            }
        }
        Role::TenantAdmin | Role::PlatformAdmin => {}
    }
    if !policy.allowed_namespaces.is_empty() {
        let allowed = policy.allowed_namespaces.join(", ");
        if info.namespace.is_empty() {
            let cluster_scoped = CLUSTER_SCOPED_READS.contains(&(info.api_group.as_str(), info.resource.as_str()));
            if !cluster_scoped {
                return Err(format!(
                    "the cluster's policy allows {} only in namespaces {allowed}; name one with -n",
                    info.resource
                ));
            }
        } else if !policy.allowed_namespaces.contains(&info.namespace) {
            return Err(format!("the cluster's policy allows only namespaces {allowed}, not {}", info.namespace));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubechat_protocol::kube_request::{Target, classify};

    fn check(role: Role, policy: &ClusterPolicy, method: &str, path: &str) -> Result<(), String> {
        let (p, q) = path.split_once('?').map_or((path, None), |(p, q)| (p, Some(q)));
        authorize(role, policy, &classify(method, &Target::parse(p, q).expect("canonical")).expect("classified"))
    }

    const V: Role = Role::TenantViewer;
    const U: Role = Role::TenantUser;
    const A: Role = Role::TenantAdmin;

    #[test]
    fn viewer_reads_and_logs_but_no_secrets_exec_or_writes() {
        let p = ClusterPolicy::default();
        assert!(check(V, &p, "GET", "/api/v1/namespaces/web/pods").is_ok());
        assert!(check(V, &p, "GET", "/api/v1/pods").is_ok());
        assert!(check(V, &p, "GET", "/api/v1/namespaces/web/pods/p/log").is_ok());
        assert!(check(V, &p, "GET", "/api/v1/namespaces/web/secrets").expect_err("refused").contains("secrets"));
        assert!(
            check(V, &p, "DELETE", "/api/v1/namespaces/web/pods/p").expect_err("refused").contains("can only read")
        );
        assert!(check(V, &p, "GET", "/api/v1/namespaces/web/pods/p/exec").is_err());
        assert!(check(V, &p, "POST", "/api/v1/namespaces/web/pods/p/portforward").is_err());
        assert!(check(V, &p, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews").is_ok());
        assert!(check(V, &p, "GET", "/apis").is_ok());
        assert!(check(V, &p, "GET", "/openapi/v3/apis/apps/v1").is_ok());
        assert!(check(V, &p, "GET", "/metrics").is_err());
        // The same requests, spelled the API server's other ways.
        assert!(check(V, &p, "GET", "/api/v1/namespaces/web/%73ecrets").expect_err("refused").contains("secrets"));
        assert!(check(V, &p, "GET", "/api/v1/watch/namespaces/web/secrets").is_err());
        assert!(check(V, &p, "GET", "/api/v1/namespaces/web/secrets?watch=yes").is_err());
        assert!(check(V, &p, "GET", "/api/v1/proxy/namespaces/web/pods/p").is_err());
        assert!(check(V, &p, "OPTIONS", "/api/v1/namespaces/web/pods").is_err());
        assert!(check(V, &p, "POST", "/api/v1/namespaces/web/pods/p/attach").is_err());
    }

    #[test]
    fn non_resource_paths_are_an_allow_list_of_reads() {
        let p = ClusterPolicy::default();
        for path in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/version",
            "/openapi/v2",
            "/openapi/v3",
            "/openapi/v3/api/v1",
            "/healthz",
            "/readyz/etcd",
            "/livez",
        ] {
            assert!(check(V, &p, "GET", path).is_ok(), "{path}");
            assert!(check(U, &p, "HEAD", path).is_ok(), "{path}");
            assert!(check(U, &p, "POST", path).is_err(), "{path}");
        }
        for path in [
            "/",
            "/metrics",
            "/logs/kube-apiserver.log",
            "/debug/pprof",
            "/openapi",
            "/readyz/a/b",
            "/version/x",
            "/.well-known/openid-configuration",
        ] {
            let e = check(U, &p, "GET", path).expect_err(path);
            assert!(e.contains("needs tenant_admin"), "{e}");
            assert!(check(A, &p, "GET", path).is_ok(), "{path}");
        }
    }

    #[test]
    fn a_user_never_writes_without_a_namespace() {
        let p = ClusterPolicy::default();
        for (m, path) in [
            ("POST", "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"),
            ("PUT", "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/f"),
            ("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"),
            ("DELETE", "/apis/example.com/v1/clusterwidgets/w"),
            ("PATCH", "/api/v1/namespaces/web"),
            ("DELETE", "/api/v1/namespaces/web"),
            ("PUT", "/api/v1/namespaces/web/finalize"),
            ("DELETE", "/api/v1/pods"),
        ] {
            let e = check(U, &p, m, path).expect_err(path);
            assert!(e.contains("cluster-scoped"), "{path}: {e}");
            assert!(check(A, &p, m, path).is_ok(), "{path}");
        }
        assert!(check(U, &p, "GET", "/apis/example.com/v1/clusterwidgets").is_ok());
        assert!(check(U, &p, "POST", "/apis/example.com/v1/namespaces/web/widgets").is_ok());
        assert!(check(U, &p, "POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews").is_ok());
    }

    #[test]
    fn must_audit_covers_writes_sessions_proxy_and_secrets() {
        let info = |m: &str, p: &str| classify(m, &Target::parse(p, None).expect("ok")).expect("ok");
        assert!(!must_audit(&info("GET", "/api/v1/namespaces/web/pods")));
        assert!(!must_audit(&info("GET", "/apis")));
        assert!(must_audit(&info("GET", "/api/v1/namespaces/web/secrets/s")));
        assert!(must_audit(&info("GET", "/api/v1/watch/namespaces/web/secrets")));
        assert!(must_audit(&info("GET", "/api/v1/namespaces/web/pods/p/exec")));
        assert!(must_audit(&info("GET", "/api/v1/namespaces/web/services/s/proxy")));
        assert!(must_audit(&info("DELETE", "/api/v1/namespaces/web/pods/p")));
        assert!(must_audit(&info("POST", "/metrics")));
    }

    #[test]
    fn user_works_in_allowed_namespaces_only() {
        let p = ClusterPolicy { allowed_namespaces: vec!["web".into()], ..Default::default() };
        assert!(check(U, &p, "DELETE", "/api/v1/namespaces/web/pods/p").is_ok());
        assert!(check(U, &p, "GET", "/api/v1/namespaces/web/pods/p/exec").is_ok());
        assert!(check(U, &p, "GET", "/api/v1/namespaces/web/secrets/s").is_ok());
        let e = check(U, &p, "GET", "/api/v1/namespaces/default/pods").expect_err("refused");
        assert!(e.contains("only namespaces web") && e.contains("default"), "{e}");
        assert!(check(U, &p, "GET", "/api/v1/pods").expect_err("refused").contains("-n"));
        assert!(check(U, &p, "GET", "/api/v1/nodes").is_ok());
        assert!(check(U, &p, "GET", "/api/v1/namespaces/web").is_ok());
        assert!(check(U, &p, "DELETE", "/api/v1/nodes/n1").expect_err("refused").contains("cluster-scoped"));
        assert!(check(U, &p, "GET", "/api/v1/namespaces/web/services/s/proxy").expect_err("refused").contains("proxy"));
        // An admin is not restricted to the allowed namespaces.
        assert!(check(A, &p, "DELETE", "/api/v1/namespaces/default/pods/p").is_ok());
        assert!(check(A, &p, "DELETE", "/api/v1/nodes/n1").is_ok());
        assert!(check(A, &p, "GET", "/api/v1/namespaces/web/services/s/proxy").is_ok());
    }

    #[test]
    fn read_only_and_denied_resources_bind_everyone() {
        let ro = ClusterPolicy { read_only: true, ..Default::default() };
        for role in [V, U, A, Role::PlatformAdmin] {
            assert!(
                check(role, &ro, "PATCH", "/apis/apps/v1/namespaces/web/deployments/d")
                    .expect_err("refused")
                    .contains("read-only")
            );
            assert!(check(role, &ro, "GET", "/apis/apps/v1/namespaces/web/deployments/d").is_ok());
        }
        assert!(check(U, &ro, "GET", "/api/v1/namespaces/web/pods/p/exec").is_err());
        let denied = ClusterPolicy { denied_resources: vec!["configmaps".into()], ..Default::default() };
        assert!(
            check(A, &denied, "GET", "/api/v1/namespaces/web/configmaps")
                .expect_err("refused")
                .contains("denies access to configmaps")
        );
    }
}
