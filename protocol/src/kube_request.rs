//! Kubernetes API requests as the API server sees them.
//!
//! kube-apiserver decodes the request path once (Go's `net/url`: `%XX`
//! escapes, an encoded `/` becomes a real one) and then classifies the
//! decoded path (`RequestInfoFactory` in
//! `k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`): verb, API
//! group and version, namespace, resource, subresource, name. Authorizing
//! anything else than that decoded path lets a differently spelled request
//! (`%73ecrets`, `v1%2Fnamespaces%2F…`) past every rule.
//!
//! So a request target is first made canonical ([`Target::parse`]): decoded
//! once, refused if a canonical path cannot hold it (an encoded `/`, a dot
//! segment, an empty segment, a control character, an invalid escape, a
//! query the API server would partly ignore), and encoded again the one way
//! Go's `url.URL` encodes it. The canonical form is what the control plane
//! authorizes ([`classify`]), what it signs into the grant, and exactly what
//! the agent sends the API server, which decodes it back to the same path.
//! For the requests kubectl makes, the canonical form is byte for byte what
//! kubectl sent.

/// Why a request target cannot be forwarded as it is spelled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The path does not start with `/`.
    #[error("the request path must start with /")]
    NotAbsolute,
    /// A `%` not followed by two hex digits, in the path.
    #[error("the path holds an invalid percent-escape ({0:?}); write % as %25")]
    InvalidEscape(String),
    /// `%2F` (an encoded `/`), which the API server would split on.
    #[error("the path holds an encoded slash (%2F); spell the path with plain / separators")]
    EncodedSlash,
    /// A `.` or `..` segment (encoded or not).
    #[error("the path holds a dot segment ({0:?}); spell the path without . or .. segments")]
    DotSegment(String),
    /// `//` or a trailing `/`.
    #[error("the path holds an empty segment (// or a trailing /); remove it")]
    EmptySegment,
    /// A control character, raw or encoded in the path, raw in the query.
    #[error("the request target holds a control character")]
    ControlCharacter,
    /// The decoded path is not UTF-8.
    #[error("the path does not decode to UTF-8")]
    NotUtf8,
    /// A `%` not followed by two hex digits, or bytes that are not UTF-8, in the query.
    #[error("the query parameter {0:?} holds an invalid percent-escape or is not UTF-8")]
    InvalidQuery(String),
    /// A `;` in the query, which Go's query parser drops with its pair.
    #[error("the query parameter {0:?} holds a semicolon, which the API server would ignore; encode it as %3B")]
    QuerySemicolon(String),
    /// `/api/v1/watch` or `/api/v1/proxy` with nothing after it.
    #[error("the path {0} names the {1} verb but no resource")]
    NoResource(String, String),
}

/// A request target made canonical: the decoded path segments and query
/// pairs, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// Decoded path segments (none for `/`).
    pub segments: Vec<String>,
    /// Decoded query parameters, in the order sent.
    pub query: Vec<(String, String)>,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// Percent-decodes `raw`; `plus` turns `+` into a space (query components).
/// `None` for an invalid escape.
fn decode(raw: &str, plus: bool) -> Option<Vec<u8>> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = b.get(i + 1).copied().and_then(hex)?;
                let lo = b.get(i + 2).copied().and_then(hex)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Bytes a path segment keeps unescaped: Go's `url.URL` path encoding
/// (unreserved characters and `$&+,:;=@`), so kubectl's paths stay as sent.
fn path_keeps(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-_.~$&+,:;=@".contains(&c)
}

/// Bytes a query component keeps unescaped (Go's `url.QueryEscape`).
fn query_keeps(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-_.~".contains(&c)
}

fn encode(s: &str, keeps: fn(u8) -> bool, space_as_plus: bool, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in s.as_bytes() {
        if keeps(c) {
            out.push(char::from(c));
        } else if c == b' ' && space_as_plus {
            out.push('+');
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(c >> 4)]));
            out.push(char::from(HEX[usize::from(c & 15)]));
        }
    }
}

impl Target {
    /// Decodes a request's path and query (as received, still escaped) and
    /// refuses what a canonical path cannot hold.
    pub fn parse(path: &str, query: Option<&str>) -> Result<Self, Malformed> {
        if path.bytes().chain(query.unwrap_or_default().bytes()).any(is_control) {
            return Err(Malformed::ControlCharacter);
        }
        let rest = path.strip_prefix('/').ok_or(Malformed::NotAbsolute)?;
        let mut segments = Vec::new();
        if !rest.is_empty() {
            for raw in rest.split('/') {
                let bytes = decode(raw, false).ok_or_else(|| Malformed::InvalidEscape(raw.to_string()))?;
                if bytes.contains(&b'/') {
                    return Err(Malformed::EncodedSlash);
                }
                if bytes.iter().copied().any(is_control) {
                    return Err(Malformed::ControlCharacter);
                }
                let segment = String::from_utf8(bytes).map_err(|_| Malformed::NotUtf8)?;
                match segment.as_str() {
                    "" => return Err(Malformed::EmptySegment),
                    "." | ".." => return Err(Malformed::DotSegment(raw.to_string())),
                    _ => segments.push(segment),
                }
            }
        }
        Ok(Self { segments, query: parse_query(query.unwrap_or_default())? })
    }

    /// The decoded path, `/` and the segments.
    pub fn path(&self) -> String {
        format!("/{}", self.segments.join("/"))
    }

    /// The path, encoded the canonical way.
    pub fn encoded_path(&self) -> String {
        let mut out = String::new();
        for s in &self.segments {
            out.push('/');
            encode(s, path_keeps, false, &mut out);
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }

    /// The query, encoded the canonical way ("" when there is none).
    pub fn encoded_query(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.query {
            if !out.is_empty() {
                out.push('&');
            }
            encode(k, query_keeps, true, &mut out);
            out.push('=');
            encode(v, query_keeps, true, &mut out);
        }
        out
    }

    /// The canonical path and query: what is signed and sent.
    pub fn path_and_query(&self) -> String {
        let q = self.encoded_query();
        if q.is_empty() { self.encoded_path() } else { format!("{}?{q}", self.encoded_path()) }
    }

    /// The first value of query parameter `key`, as the API server reads it.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of query parameter `key`, in order.
    pub fn params<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.query.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Decodes a query string the way Go's `url.ParseQuery` does (`&`-separated
/// pairs, `+` is a space), refusing what it would drop instead of dropping it.
pub fn parse_query(raw: &str) -> Result<Vec<(String, String)>, Malformed> {
    let mut out = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let short = || pair.chars().take(64).collect::<String>();
        if pair.contains(';') {
            return Err(Malformed::QuerySemicolon(short()));
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let text = |s: &str| decode(s, true).and_then(|b| String::from_utf8(b).ok());
        match (text(k), text(v)) {
            (Some(k), Some(v)) => out.push((k, v)),
            _ => return Err(Malformed::InvalidQuery(short())),
        }
    }
    Ok(out)
}

/// What a request is about, as the API server's `RequestInfo` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// A request for a resource (else a non-resource path like `/version`).
    pub resource_request: bool,
    /// The decoded path.
    pub path: String,
    /// The verb: get, list, watch, create, update, patch, delete,
    /// deletecollection, proxy; the lowercase method for non-resource paths;
    /// "" for a method the API server knows no verb for.
    pub verb: String,
    /// `api` or `apis` ("" for non-resource paths).
    pub api_prefix: String,
    /// API group ("" for core).
    pub api_group: String,
    /// API version.
    pub api_version: String,
    /// Namespace, if any (for `/namespaces/<n>` itself too, as the API server has it).
    pub namespace: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource, if any.
    pub subresource: String,
    /// Object name, if any (for a list or watch, from a `metadata.name` field selector).
    pub name: String,
    /// The path parts from the resource on.
    pub parts: Vec<String>,
}

/// Methods that only read (the API server's verbs get, list and watch).
pub const READ_VERBS: &[&str] = &["get", "list", "watch"];

impl RequestInfo {
    /// Whether the request only reads (get, list, watch of a resource).
    pub fn is_read(&self) -> bool {
        READ_VERBS.contains(&self.verb.as_str())
    }

    /// Whether this is exec, attach or port-forward: an interactive session.
    pub fn is_interactive(&self) -> bool {
        matches!(self.subresource.as_str(), "exec" | "attach" | "portforward")
    }

    /// Whether this proxies to something in the cluster (the `proxy`
    /// subresource or the deprecated `/proxy/` verb prefix).
    pub fn is_proxy(&self) -> bool {
        self.subresource == "proxy" || self.verb == "proxy"
    }

    /// The namespace of the object the request acts on: "" for a
    /// `Namespace` object itself (cluster-scoped, though the API server
    /// files `/namespaces/<n>` under namespace `<n>`).
    pub fn target_namespace(&self) -> &str {
        if self.api_group.is_empty() && self.resource == "namespaces" { "" } else { &self.namespace }
    }
}

/// Subresources of a namespace itself (`/namespaces/<n>/status`).
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// Classifies a canonical request like `RequestInfoFactory.NewRequestInfo`.
pub fn classify(method: &str, target: &Target) -> Result<RequestInfo, Malformed> {
    let mut info = RequestInfo { path: target.path(), verb: method.to_ascii_lowercase(), ..Default::default() };
    let parts = &target.segments;
    if parts.len() < 3 || !matches!(parts[0].as_str(), "api" | "apis") {
        return Ok(info);
    }
    let mut rest: &[String] = &parts[1..];
    if parts[0] == "apis" {
        if rest.len() < 3 {
            return Ok(info);
        }
        info.api_group = rest[0].clone();
        rest = &rest[1..];
    }
    info.api_prefix = parts[0].clone();
    info.resource_request = true;
    info.api_version = rest[0].clone();
    rest = &rest[1..];
    if matches!(rest[0].as_str(), "watch" | "proxy") {
        if rest.len() < 2 {
            return Err(Malformed::NoResource(info.path.clone(), rest[0].clone()));
        }
        info.verb = rest[0].clone();
        rest = &rest[1..];
    } else {
        info.verb = match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        }
        .to_string();
    }
    if rest[0] == "namespaces" && rest.len() > 1 {
        info.namespace = rest[1].clone();
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2].as_str()) {
            rest = &rest[2..];
        }
    }
    info.parts = rest.to_vec();
    info.resource = rest[0].clone();
    if let Some(name) = rest.get(1) {
        info.name = name.clone();
    }
    if let Some(sub) = rest.get(2).filter(|_| info.verb != "proxy") {
        info.subresource = sub.clone();
    }
    if info.name.is_empty() && info.verb == "get" {
        let options = list_options(target);
        info.verb = if options.as_ref().map_or_else(|| watch_param(target), |o| o.watch) { "watch" } else { "list" }
            .to_string();
        if let Some(name) = options.and_then(|o| o.name).filter(|n| valid_path_segment_name(n)) {
            info.name = name;
        }
    }
    if info.name.is_empty() && info.verb == "delete" {
        info.verb = "deletecollection".into();
    }
    Ok(info)
}

/// Go's query-to-bool conversion: anything but `0` or `false` is true.
fn truthy(v: &str) -> bool {
    !(v == "0" || v.eq_ignore_ascii_case("false"))
}

fn watch_param(target: &Target) -> bool {
    target.param("watch").is_some_and(truthy)
}

/// What the API server reads of a list's options for classification.
struct ListOptions {
    watch: bool,
    name: Option<String>,
}

/// Decodes the list options the way the API server's parameter codec
/// does for classification; `None` when it would fail (a bad number or
/// field selector), and then only `watch` is read.
fn list_options(target: &Target) -> Option<ListOptions> {
    for key in ["limit", "timeoutSeconds"] {
        if let Some(v) = target.param(key) {
            v.parse::<i64>().ok()?;
        }
    }
    let name = match target.param("fieldSelector") {
        Some(s) => exact_match(s, "metadata.name").ok()?,
        None => None,
    };
    Some(ListOptions { watch: watch_param(target), name })
}

/// Whether `name` may be a path segment (`path.IsValidPathSegmentName`).
fn valid_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.contains('/') && !name.contains('%')
}

/// The value a field selector requires `field` to equal, if it does
/// (`fields.ParseSelector(..).RequiresExactMatch`); `Err` if the selector
/// does not parse.
fn exact_match(selector: &str, field: &str) -> Result<Option<String>, ()> {
    // Terms split at commas not escaped by a backslash, then sorted.
    let mut terms = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in selector.chars() {
        if escaped {
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            current.push(c);
            escaped = true;
        } else if c == ',' {
            terms.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    terms.push(current);
    terms.sort();
    let mut found = None;
    for term in terms.iter().filter(|t| !t.is_empty()) {
        let (lhs, op, rhs) = split_term(term).ok_or(())?;
        let value = unescape_field_value(rhs)?;
        if found.is_none() && op != "!=" && lhs == field {
            found = Some(value);
        }
    }
    Ok(found)
}

/// Splits a selector term at its first operator (`!=`, `==`, `=`, tried
/// in that order at each position, like `fields.splitTerm`).
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    (0..term.len()).filter(|i| term.is_char_boundary(*i)).find_map(|i| {
        let rest = &term[i..];
        ["!=", "==", "="].into_iter().find(|op| rest.starts_with(op)).map(|op| (&term[..i], op, &rest[op.len()..]))
    })
}

/// `fields.UnescapeValue`: `\\`, `\,` and `\=` only; a bare `,` or `=` is an error.
fn unescape_field_value(s: &str) -> Result<String, ()> {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        match (escaped, c) {
            (true, '\\' | ',' | '=') => {
                out.push(c);
                escaped = false;
            }
            (true, _) | (false, ',' | '=') => return Err(()),
            (false, '\\') => escaped = true,
            (false, _) => out.push(c),
        }
    }
    if escaped { Err(()) } else { Ok(out) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn info(method: &str, target: &str) -> Result<RequestInfo, Malformed> {
        let (path, query) = target.split_once('?').map_or((target, None), |(p, q)| (p, Some(q)));
        classify(method, &Target::parse(path, query)?)
    }

    fn short(i: &RequestInfo) -> (String, String, String, String, String, String) {
        (
            i.verb.clone(),
            i.api_group.clone(),
            i.namespace.clone(),
            i.resource.clone(),
            i.name.clone(),
            i.subresource.clone(),
        )
    }

    fn t(v: &str, g: &str, ns: &str, r: &str, n: &str, s: &str) -> (String, String, String, String, String, String) {
        (v.into(), g.into(), ns.into(), r.into(), n.into(), s.into())
    }

    #[test]
    fn classifies_like_the_api_server() {
        let ok = |m: &str, p: &str| short(&info(m, p).expect(p));
        assert_eq!(ok("GET", "/api/v1/namespaces/web/pods/p1/log"), t("get", "", "web", "pods", "p1", "log"));
        assert_eq!(ok("GET", "/apis/apps/v1/deployments?watch=true"), t("watch", "apps", "", "deployments", "", ""));
        assert_eq!(ok("GET", "/api/v1/namespaces/web"), t("get", "", "web", "namespaces", "web", ""));
        assert_eq!(
            ok("PUT", "/api/v1/namespaces/web/finalize"),
            t("update", "", "web", "namespaces", "web", "finalize")
        );
        assert_eq!(ok("DELETE", "/api/v1/namespaces/web/pods"), t("deletecollection", "", "web", "pods", "", ""));
        assert_eq!(ok("GET", "/api/v1/watch/namespaces/web/secrets"), t("watch", "", "web", "secrets", "", ""));
        assert_eq!(ok("GET", "/api/v1/proxy/namespaces/web/pods/p/x/y"), t("proxy", "", "web", "pods", "p", ""));
        assert_eq!(ok("GET", "/api/v1/pods?watch=yes"), t("watch", "", "", "pods", "", ""));
        assert_eq!(ok("GET", "/api/v1/pods?watch=FALSE"), t("list", "", "", "pods", "", ""));
        assert_eq!(ok("GET", "/api/v1/pods?watch=0&watch=1"), t("list", "", "", "pods", "", ""));
        assert_eq!(
            ok("GET", "/api/v1/namespaces/web/pods?fieldSelector=metadata.name%3Dp1"),
            t("list", "", "web", "pods", "p1", "")
        );
        assert_eq!(
            ok("GET", "/api/v1/pods?fieldSelector=metadata.name%3Dp1&limit=x&watch=1"),
            t("watch", "", "", "pods", "", "")
        );
        assert_eq!(ok("OPTIONS", "/api/v1/pods"), t("", "", "", "pods", "", ""));
        // Decoded before classifying, as Go does.
        assert_eq!(ok("GET", "/api/v1/namespaces/web/%73ecrets"), t("list", "", "web", "secrets", "", ""));
        let i = info("GET", "/apis/apps/v1").expect("ok");
        assert!(!i.resource_request);
        assert_eq!(i.verb, "get");
        assert!(!info("GET", "/version").expect("ok").resource_request);
        assert!(matches!(info("GET", "/api/v1/watch"), Err(Malformed::NoResource(..))));
    }

    #[test]
    fn refuses_what_a_canonical_path_cannot_hold() {
        let bad = |p: &str| info("GET", p).expect_err(p);
        assert_eq!(bad("/api/v1%2Fnamespaces%2Fweb%2Fsecrets"), Malformed::EncodedSlash);
        assert_eq!(bad("/api/v1/namespaces/web/pods/%2f"), Malformed::EncodedSlash);
        assert!(matches!(bad("/api/v1/namespaces/web/pods/../secrets"), Malformed::DotSegment(_)));
        assert!(matches!(bad("/api/v1/namespaces/web/%2e%2E/x"), Malformed::DotSegment(_)));
        assert!(matches!(bad("/api/v1/./pods"), Malformed::DotSegment(_)));
        assert_eq!(bad("/api//v1/pods"), Malformed::EmptySegment);
        assert_eq!(bad("/api/v1/pods/"), Malformed::EmptySegment);
        assert_eq!(bad("/api/v1/pods%00"), Malformed::ControlCharacter);
        assert_eq!(bad("/api/v1/po\tds"), Malformed::ControlCharacter);
        assert!(matches!(bad("/api/v1/pods%zz"), Malformed::InvalidEscape(_)));
        assert!(matches!(bad("/api/v1/pods%4"), Malformed::InvalidEscape(_)));
        assert_eq!(bad("/api/v1/pods%ff"), Malformed::NotUtf8);
        assert!(matches!(bad("/api/v1/pods?watch=1;x=2"), Malformed::QuerySemicolon(_)));
        assert!(matches!(bad("/api/v1/pods?w%zztch=1"), Malformed::InvalidQuery(_)));
        assert_eq!(bad("api/v1/pods"), Malformed::NotAbsolute);
    }

    #[test]
    fn kubectl_requests_stay_byte_for_byte() {
        for target in [
            "/api/v1/namespaces/web/pods?limit=500",
            "/api/v1/namespaces/web/pods/api-1/exec?command=sh&command=-c&command=echo+hi%0A&container=main&stdin=true&stdout=true&tty=true",
            "/api/v1/namespaces/web/events?fieldSelector=involvedObject.uid%3Dabc%2CinvolvedObject.name%3Dp&limit=500",
            "/apis/apps/v1/namespaces/web/deployments/api?fieldManager=kubectl-client-side-apply&fieldValidation=Strict",
            "/api/v1/namespaces/web/pods/p:8080/proxy",
            "/openapi/v3/apis/apps/v1?hash=ABC",
            "/",
        ] {
            let (path, query) = target.split_once('?').map_or((target, None), |(p, q)| (p, Some(q)));
            assert_eq!(Target::parse(path, query).expect(target).path_and_query(), target);
        }
        // Other spellings become the canonical one.
        let t = Target::parse("/api/v1/namespaces/web/%73ecrets", Some("w%61tch=1&&labelSelector=a%3db")).expect("ok");
        assert_eq!(t.path_and_query(), "/api/v1/namespaces/web/secrets?watch=1&labelSelector=a%3Db");
    }

    proptest! {
        /// The canonical form parses to itself, and to the same request.
        #[test]
        fn canonical_is_a_fixed_point(segments in proptest::collection::vec("[ -~\u{e9}\u{4e2d}]{1,8}", 0..6),
                                      query in proptest::collection::vec(("[ -~]{0,6}", "[ -~\u{e9}]{0,6}"), 0..4)) {
            let target = Target { segments, query };
            prop_assume!(target.segments.iter().all(|s| !s.contains('/') && s != "." && s != ".."));
            let wire = target.path_and_query();
            let (path, q) = wire.split_once('?').map_or((wire.as_str(), None), |(p, q)| (p, Some(q)));
            let back = Target::parse(path, q).expect("the canonical form parses");
            prop_assert_eq!(&back, &target);
            prop_assert_eq!(back.path_and_query(), wire.clone());
        }

        /// Whatever bytes arrive, parsing never panics, and what it accepts
        /// re-parses from its canonical form to the same classification.
        #[test]
        fn any_target_parses_or_is_refused(path in "/[a-z0-9%./A-F;?=&+-]{0,40}") {
            let (p, q) = path.split_once('?').map_or((path.as_str(), None), |(p, q)| (p, Some(q)));
            if let Ok(t) = Target::parse(p, q) {
                let wire = t.path_and_query();
                let (p2, q2) = wire.split_once('?').map_or((wire.as_str(), None), |(p, q)| (p, Some(q)));
                let again = Target::parse(p2, q2).expect("canonical parses");
                prop_assert_eq!(classify("GET", &t), classify("GET", &again));
            }
        }
    }
}
