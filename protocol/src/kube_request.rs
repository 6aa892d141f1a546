//! Parsing a Kubernetes API request the way the API server's RequestInfo
//! does (verb, group, version, namespace, resource, subresource, name), for
//! the control plane's authorization and for kube-sim.

/// What a request is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// A request for a resource (else a non-resource path like `/version`).
    pub resource_request: bool,
    /// The verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// API group ("" for core).
    pub api_group: String,
    /// API version.
    pub api_version: String,
    /// Namespace, if any.
    pub namespace: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource, if any.
    pub subresource: String,
    /// Object name, if any.
    pub name: String,
    /// The raw path.
    pub path: String,
}

/// Decodes `%XX` and `+` in a query component.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters, decoded.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Parses `method` and `path` (plus whether `?watch=true` was given).
pub fn parse(method: &str, path: &str, watch: bool) -> RequestInfo {
    let mut info = RequestInfo { path: path.to_string(), ..Default::default() };
    let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|p| !p.is_empty()).collect();
    let rest: &[&str] = match parts.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => {
            info.api_version = (*version).to_string();
            rest
        }
        ["apis", group, version, rest @ ..] if !rest.is_empty() => {
            info.api_group = (*group).to_string();
            info.api_version = (*version).to_string();
            rest
        }
        _ => {
            info.verb = method.to_ascii_lowercase();
            return info;
        }
    };
    info.resource_request = true;
    let rest: Vec<&str> = if rest[0] == "namespaces" && rest.len() >= 2 {
        info.namespace = rest[1].to_string();
        if rest.len() >= 3 { rest[2..].to_vec() } else { rest.to_vec() }
    } else {
        rest.to_vec()
    };
    info.resource = rest[0].to_string();
    info.name = rest.get(1).map(|s| (*s).to_string()).unwrap_or_default();
    info.subresource = rest.get(2).map(|s| (*s).to_string()).unwrap_or_default();
    info.verb = match method {
        "GET" | "HEAD" if watch => "watch",
        "GET" | "HEAD" if info.name.is_empty() => "list",
        "GET" | "HEAD" => "get",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" if info.name.is_empty() => "deletecollection",
        "DELETE" => "delete",
        other => return RequestInfo { verb: other.to_ascii_lowercase(), ..info },
    }
    .to_string();
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_the_api_server() {
        let i = parse("GET", "/api/v1/namespaces/web/pods/p1/log", false);
        assert_eq!(
            (i.verb.as_str(), i.namespace.as_str(), i.resource.as_str(), i.name.as_str(), i.subresource.as_str()),
            ("get", "web", "pods", "p1", "log")
        );
        let i = parse("GET", "/apis/apps/v1/deployments", true);
        assert_eq!((i.verb.as_str(), i.api_group.as_str(), i.resource.as_str()), ("watch", "apps", "deployments"));
        let i = parse("GET", "/api/v1/namespaces/web", false);
        assert_eq!(
            (i.verb.as_str(), i.resource.as_str(), i.name.as_str(), i.namespace.as_str()),
            ("get", "namespaces", "web", "web")
        );
        let i = parse("DELETE", "/api/v1/namespaces/web/pods", false);
        assert_eq!(i.verb, "deletecollection");
        let i = parse("GET", "/apis/apps/v1", false);
        assert!(!i.resource_request);
        assert_eq!(percent_decode("app%3Dweb%2Ctier+x"), "app=web,tier x");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
