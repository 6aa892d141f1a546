//! Authorization of kubectl requests on the kube path: the tenant role
//! matrix and the cluster's policy, decided before a grant is signed. The
//! customer's own RBAC (for the impersonated identity) applies after this,
//! in their API server.
//!
//! - viewer: reads, logs; no secrets, no exec/attach/port-forward, no writes;
//! - user: reads and writes of namespaced resources and exec/attach/
//!   port-forward, in the cluster's allowed namespaces; cluster-scoped reads;
//! - admin (and platform admin): everything, including cluster-scoped writes
//!   and `*/proxy`, in every namespace.
//!
//! Cluster policy applies to everyone: `readOnly` refuses every write (and
//! exec/attach/port-forward/proxy), `deniedResources` refuses any access.

use kubechat_protocol::kube_request::RequestInfo;

use crate::model::{ClusterPolicy, Role};

/// Resources that are not namespaced (reads of them need no namespace).
const CLUSTER_SCOPED: &[&str] = &[
    "nodes",
    "namespaces",
    "persistentvolumes",
    "storageclasses",
    "clusterroles",
    "clusterrolebindings",
    "customresourcedefinitions",
    "apiservices",
    "priorityclasses",
    "ingressclasses",
    "runtimeclasses",
    "csidrivers",
    "csinodes",
    "volumeattachments",
    "certificatesigningrequests",
    "validatingwebhookconfigurations",
    "mutatingwebhookconfigurations",
];

/// Non-resource paths every member may read (discovery and health).
fn is_discovery(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    ["/api", "/apis", "/version", "/openapi", "/healthz", "/readyz", "/livez"]
        .iter()
        .any(|prefix| p == *prefix || p.starts_with(&format!("{prefix}/")))
}

fn role_name(role: Role) -> &'static str {
    role.as_str()
}

/// Decides a request; `Err(reason)` is a refusal a person can understand.
pub fn authorize(role: Role, policy: &ClusterPolicy, info: &RequestInfo) -> Result<(), String> {
    let admin = matches!(role, Role::TenantAdmin | Role::PlatformAdmin);
    if !info.resource_request {
        if is_discovery(&info.path) || admin {
            return Ok(());
        }
        return Err(format!("{} cannot use the non-resource path {}", role_name(role), info.path));
    }
    let review = info.api_group == "authorization.k8s.io" && info.resource.starts_with("self") && info.verb == "create";
    if review {
        return Ok(());
    }
    let write = matches!(info.verb.as_str(), "create" | "update" | "patch" | "delete" | "deletecollection");
    let interactive = matches!(info.subresource.as_str(), "exec" | "attach" | "portforward");
    let proxy = info.subresource == "proxy";
    let with_sub = format!("{}/{}", info.resource, info.subresource);
    if policy.denied_resources.iter().any(|d| *d == info.resource || *d == with_sub) {
        return Err(format!("the cluster's policy denies access to {}", info.resource));
    }
    if policy.read_only && (write || interactive || proxy) {
        return Err("the cluster is read-only by policy".into());
    }
    if proxy && !admin {
        return Err(format!("{} cannot use {with_sub}; only tenant admins may proxy", role_name(role)));
    }
    if admin {
        return Ok(());
    }
    match role {
        Role::TenantViewer => {
            if write || interactive {
                let what = if info.subresource.is_empty() { info.resource.clone() } else { with_sub.clone() };
                return Err(format!(
                    "tenant_viewer can only read; {} {what} needs tenant_user or tenant_admin",
                    info.verb
                ));
            }
            if info.resource == "secrets" {
                return Err("tenant_viewer cannot read secrets".into());
            }
        }
        Role::TenantUser => {
            let cluster_scoped = CLUSTER_SCOPED.contains(&info.resource.as_str());
            if cluster_scoped && write {
                return Err(format!("tenant_user cannot change cluster-scoped {}; ask a tenant admin", info.resource));
            }
        }
        Role::TenantAdmin | Role::PlatformAdmin => {}
    }
    if !policy.allowed_namespaces.is_empty() {
        let allowed = policy.allowed_namespaces.join(", ");
        if info.namespace.is_empty() {
            let cluster_scoped = CLUSTER_SCOPED.contains(&info.resource.as_str());
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
    use kubechat_protocol::kube_request::parse;

    fn check(role: Role, policy: &ClusterPolicy, method: &str, path: &str) -> Result<(), String> {
        authorize(role, policy, &parse(method, path, false))
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
