//! Authorization like the API server's RBAC authorizer: Role/ClusterRole
//! rules reached through RoleBinding/ClusterRoleBinding subjects.

use serde_json::Value;

use crate::store::Store;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// Groups, including `system:authenticated`.
    pub groups: Vec<String>,
}

/// What is being asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Verb: get, list, watch, create, update, patch, delete, impersonate, …
    pub verb: String,
    /// Whether this is a resource request (else `path` is used).
    pub resource_request: bool,
    /// API group.
    pub api_group: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource, if any.
    pub subresource: String,
    /// Namespace ("" for cluster scope).
    pub namespace: String,
    /// Object name, if any.
    pub name: String,
    /// Non-resource URL path.
    pub path: String,
}

fn strs(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    let verbs = strs(rule.get("verbs"));
    if !verbs.iter().any(|v| v == "*" || *v == a.verb) {
        return false;
    }
    if !a.resource_request {
        return strs(rule.get("nonResourceURLs"))
            .iter()
            .any(|u| u == "*" || *u == a.path || u.strip_suffix('*').is_some_and(|prefix| a.path.starts_with(prefix)));
    }
    let groups = strs(rule.get("apiGroups"));
    if !groups.iter().any(|g| g == "*" || *g == a.api_group) {
        return false;
    }
    let combined =
        if a.subresource.is_empty() { a.resource.clone() } else { format!("{}/{}", a.resource, a.subresource) };
    let resources = strs(rule.get("resources"));
    let resource_ok = resources.iter().any(|r| {
        r == "*"
            || *r == combined
            || (a.subresource.is_empty() && *r == a.resource)
            || (!a.subresource.is_empty()
                && (*r == format!("*/{}", a.subresource) || *r == format!("{}/*", a.resource)))
    });
    if !resource_ok {
        return false;
    }
    let names = strs(rule.get("resourceNames"));
    names.is_empty() || names.contains(&a.name)
}

fn subject_matches(subject: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let kind = subject.get("kind").and_then(Value::as_str).unwrap_or_default();
    let name = subject.get("name").and_then(Value::as_str).unwrap_or_default();
    match kind {
        "User" => user.name == name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = subject.get("namespace").and_then(Value::as_str).filter(|n| !n.is_empty()).unwrap_or(binding_ns);
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn find<'a>(objs: &'a [Value], name: &str, ns: &str) -> Option<&'a Value> {
    objs.iter().find(|o| {
        o.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
            && o.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default() == ns
    })
}

/// No rule of any binding allows the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied;

/// Whether `user` may do `a`, and which binding allowed it.
pub fn authorize(store: &Store, user: &UserInfo, a: &Attributes) -> Result<String, Denied> {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Ok("system:masters".into());
    }
    let rbac = "rbac.authorization.k8s.io";
    let cluster_roles = store.all_of(&format!("{rbac}/clusterroles"));
    let roles = store.all_of(&format!("{rbac}/roles"));
    let allows = |role: Option<&Value>| {
        role.is_some_and(|r| {
            r.get("rules").and_then(Value::as_array).is_some_and(|rules| rules.iter().any(|rule| rule_allows(rule, a)))
        })
    };
    for b in store.all_of(&format!("{rbac}/clusterrolebindings")) {
        let subjects = b.get("subjects").and_then(Value::as_array).cloned().unwrap_or_default();
        if !subjects.iter().any(|s| subject_matches(s, user, "")) {
            continue;
        }
        let role_name = b.pointer("/roleRef/name").and_then(Value::as_str).unwrap_or_default();
        if allows(find(&cluster_roles, role_name, "")) {
            return Ok(format!(
                "ClusterRoleBinding {}",
                b.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
            ));
        }
    }
    if a.namespace.is_empty() {
        return Err(Denied);
    }
    for b in store.all_of(&format!("{rbac}/rolebindings")) {
        let ns = b.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
        if ns != a.namespace {
            continue;
        }
        let subjects = b.get("subjects").and_then(Value::as_array).cloned().unwrap_or_default();
        if !subjects.iter().any(|s| subject_matches(s, user, ns)) {
            continue;
        }
        let role_name = b.pointer("/roleRef/name").and_then(Value::as_str).unwrap_or_default();
        let role = match b.pointer("/roleRef/kind").and_then(Value::as_str) {
            Some("ClusterRole") => find(&cluster_roles, role_name, ""),
            _ => find(&roles, role_name, ns),
        };
        if allows(role) {
            return Ok(format!(
                "RoleBinding {ns}/{}",
                b.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
            ));
        }
    }
    Err(Denied)
}

/// The API server's message for a refusal.
pub fn forbidden_message(user: &UserInfo, a: &Attributes) -> String {
    if !a.resource_request {
        return format!("forbidden: User \"{}\" cannot {} path \"{}\"", user.name, a.verb, a.path);
    }
    let resource =
        if a.subresource.is_empty() { a.resource.clone() } else { format!("{}/{}", a.resource, a.subresource) };
    let qualified = if a.api_group.is_empty() { a.resource.clone() } else { format!("{}.{}", a.resource, a.api_group) };
    let subject = if a.name.is_empty() { qualified } else { format!("{qualified} \"{}\"", a.name) };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    format!(
        "{subject} is forbidden: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        user.name, a.verb, a.api_group
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::builtins;
    use serde_json::json;

    fn store_with(objs: Vec<(&str, &str, Value)>) -> Store {
        let store = Store::new();
        let res = builtins();
        for (plural, ns, obj) in objs {
            let r = res.iter().find(|r| r.plural == plural).expect("known resource");
            store.create(r, ns, obj).expect("create");
        }
        store
    }

    fn attrs(verb: &str, resource: &str, ns: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            resource: resource.into(),
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    fn alice() -> UserInfo {
        UserInfo { name: "alice".into(), groups: vec!["devs".into(), "system:authenticated".into()] }
    }

    #[test]
    fn role_binding_grants_only_its_namespace_and_verbs() {
        let s = store_with(vec![
            (
                "roles",
                "web",
                json!({"metadata": {"name": "reader"}, "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}]}),
            ),
            (
                "rolebindings",
                "web",
                json!({"metadata": {"name": "rb"}, "roleRef": {"kind": "Role", "name": "reader"}, "subjects": [{"kind": "Group", "name": "devs"}]}),
            ),
        ]);
        assert!(authorize(&s, &alice(), &attrs("list", "pods", "web", "")).is_ok());
        assert!(
            authorize(&s, &alice(), &Attributes { subresource: "log".into(), ..attrs("get", "pods", "web", "p") })
                .is_ok()
        );
        assert!(
            authorize(&s, &alice(), &Attributes { subresource: "exec".into(), ..attrs("get", "pods", "web", "p") })
                .is_err()
        );
        assert!(authorize(&s, &alice(), &attrs("delete", "pods", "web", "p")).is_err());
        assert!(authorize(&s, &alice(), &attrs("list", "pods", "default", "")).is_err());
        assert!(authorize(&s, &alice(), &attrs("list", "pods", "", "")).is_err());
    }

    #[test]
    fn resource_names_wildcards_and_cluster_roles() {
        let s = store_with(vec![
            (
                "clusterroles",
                "",
                json!({"metadata": {"name": "one-cm"}, "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["settings"], "verbs": ["*"]}]}),
            ),
            (
                "clusterroles",
                "",
                json!({"metadata": {"name": "all-apps"}, "rules": [{"apiGroups": ["apps"], "resources": ["*"], "verbs": ["get"]}]}),
            ),
            (
                "clusterroles",
                "",
                json!({"metadata": {"name": "health"}, "rules": [{"nonResourceURLs": ["/healthz", "/metrics/*"], "verbs": ["get"]}]}),
            ),
            (
                "clusterrolebindings",
                "",
                json!({"metadata": {"name": "a"}, "roleRef": {"kind": "ClusterRole", "name": "all-apps"}, "subjects": [{"kind": "User", "name": "alice"}]}),
            ),
            (
                "clusterrolebindings",
                "",
                json!({"metadata": {"name": "h"}, "roleRef": {"kind": "ClusterRole", "name": "health"}, "subjects": [{"kind": "Group", "name": "system:authenticated"}]}),
            ),
            (
                "rolebindings",
                "web",
                json!({"metadata": {"name": "cm"}, "roleRef": {"kind": "ClusterRole", "name": "one-cm"}, "subjects": [{"kind": "User", "name": "alice"}]}),
            ),
        ]);
        let u = alice();
        assert!(authorize(&s, &u, &attrs("delete", "configmaps", "web", "settings")).is_ok());
        assert!(authorize(&s, &u, &attrs("delete", "configmaps", "web", "other")).is_err());
        assert!(authorize(&s, &u, &attrs("delete", "configmaps", "default", "settings")).is_err());
        assert!(
            authorize(&s, &u, &Attributes { api_group: "apps".into(), ..attrs("get", "deployments", "x", "d") })
                .is_ok()
        );
        assert!(
            authorize(&s, &u, &Attributes { api_group: "apps".into(), ..attrs("delete", "deployments", "x", "d") })
                .is_err()
        );
        let path = |p: &str| Attributes { verb: "get".into(), path: p.into(), ..Default::default() };
        assert!(authorize(&s, &u, &path("/healthz")).is_ok());
        assert!(authorize(&s, &u, &path("/metrics/cadvisor")).is_ok());
        assert!(authorize(&s, &u, &path("/logs")).is_err());
    }

    #[test]
    fn service_account_subjects_and_masters() {
        let s = store_with(vec![
            (
                "clusterroles",
                "",
                json!({"metadata": {"name": "imp"}, "rules": [{"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]}]}),
            ),
            (
                "clusterrolebindings",
                "",
                json!({"metadata": {"name": "imp"}, "roleRef": {"kind": "ClusterRole", "name": "imp"}, "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": "kubechat"}]}),
            ),
        ]);
        let sa = UserInfo { name: "system:serviceaccount:kubechat:agent".into(), groups: vec![] };
        assert!(authorize(&s, &sa, &attrs("impersonate", "users", "", "bob")).is_ok());
        let other = UserInfo { name: "system:serviceaccount:default:agent".into(), groups: vec![] };
        assert!(authorize(&s, &other, &attrs("impersonate", "users", "", "bob")).is_err());
        let admin = UserInfo { name: "root".into(), groups: vec!["system:masters".into()] };
        assert!(authorize(&s, &admin, &attrs("delete", "nodes", "", "n1")).is_ok());
    }

    #[test]
    fn forbidden_message_matches_the_api_server() {
        let m = forbidden_message(&alice(), &attrs("delete", "pods", "default", "web-1"));
        assert_eq!(
            m,
            "pods \"web-1\" is forbidden: User \"alice\" cannot delete resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let m = forbidden_message(
            &alice(),
            &Attributes { api_group: "apps".into(), ..attrs("list", "deployments", "", "") },
        );
        assert_eq!(
            m,
            "deployments.apps is forbidden: User \"alice\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"
        );
    }
}
