//! How kube-apiserver reads a request target, written from Go's `net/url`
//! (`ParseRequestURI`, `unescape`, `ParseQuery`) and k8s.io/apiserver's
//! `RequestInfoFactory.NewRequestInfo`.
//!
//! It deliberately shares no code with the control plane's classifier
//! (`kubechat_protocol::kube_request`): end-to-end tests compare the two, so
//! a way of spelling a request that the control plane reads differently
//! from an API server shows up as a difference instead of being hidden by a
//! shared bug. Like the API server it is lenient where Go is: dot and empty
//! segments are ordinary segments here, an encoded `/` splits the path,
//! and a query pair Go cannot decode is silently dropped.

use std::collections::HashMap;

/// Why Go's `net/http` would answer a bare `400 Bad Request` before any
/// handler sees the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// `net/url: invalid control character in URL`.
    ControlCharacter,
    /// `invalid URL escape "%zz"`.
    Escape(String),
    /// `invalid URI for request` (not an absolute path).
    NotAPath,
}

/// A request URL as Go holds it: the path decoded once, the query raw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GoUrl {
    /// `URL.Path`: every `%XX` decoded (an encoded `/` is a `/` now).
    pub path: String,
    /// `URL.RawQuery`.
    pub raw_query: String,
}

fn from_hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Go's `unescape`: `query` mode turns `+` into a space.
fn go_unescape(s: &str, query: bool) -> Result<String, UrlError> {
    let bytes = s.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0usize;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'%' {
            let pair = (bytes.get(i + 1).copied().and_then(from_hex), bytes.get(i + 2).copied().and_then(from_hex));
            let (Some(h), Some(l)) = pair else {
                let end = (i + 3).min(bytes.len());
                return Err(UrlError::Escape(String::from_utf8_lossy(&bytes[i..end]).into_owned()));
            };
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(if query && c == b'+' { b' ' } else { c });
        i += 1;
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

impl GoUrl {
    /// `url.ParseRequestURI` of an origin-form request target.
    pub fn parse_request_uri(target: &str) -> Result<Self, UrlError> {
        if target.bytes().any(|b| b < b' ' || b == 0x7f) {
            return Err(UrlError::ControlCharacter);
        }
        let (rest, raw_query) = match target.find('?') {
            Some(i) => (&target[..i], &target[i + 1..]),
            None => (target, ""),
        };
        if !rest.starts_with('/') {
            return Err(UrlError::NotAPath);
        }
        Ok(Self { path: go_unescape(rest, false)?, raw_query: raw_query.to_string() })
    }

    /// `URL.Query()`: pairs split at `&`, decoded; a pair with a `;` or a bad
    /// escape is dropped, as Go drops it.
    pub fn query(&self) -> Values {
        let mut v = Values::default();
        for piece in self.raw_query.split('&') {
            if piece.is_empty() || piece.contains(';') {
                continue;
            }
            let (k, val) = piece.split_once('=').unwrap_or((piece, ""));
            if let (Ok(k), Ok(val)) = (go_unescape(k, true), go_unescape(val, true)) {
                v.pairs.push((k, val));
            }
        }
        v
    }
}

/// `url.Values`, keeping the order pairs came in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Values {
    /// Every decoded pair, in order.
    pub pairs: Vec<(String, String)>,
}

impl Values {
    /// `Values.Get`: the first value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The first value of every key (what `Get` answers), as a map.
    pub fn first_values(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        for (k, v) in &self.pairs {
            m.entry(k.clone()).or_insert_with(|| v.clone());
        }
        m
    }
}

/// `url.PathUnescape` (impersonation extra keys are escaped this way).
pub fn path_unescape(s: &str) -> Option<String> {
    go_unescape(s, false).ok()
}

/// The API server's `RequestInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// `IsResourceRequest`.
    pub resource_request: bool,
    /// `Path`: the decoded URL path.
    pub path: String,
    /// `Verb`.
    pub verb: String,
    /// `APIPrefix`.
    pub api_prefix: String,
    /// `APIGroup`.
    pub api_group: String,
    /// `APIVersion`.
    pub api_version: String,
    /// `Namespace`.
    pub namespace: String,
    /// `Resource`.
    pub resource: String,
    /// `Subresource`.
    pub subresource: String,
    /// `Name`.
    pub name: String,
}

/// `NewRequestInfo` failed (the API server answers 500 with this message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoError(pub String);

/// `NewRequestInfo` for a method and a parsed URL.
pub fn request_info(method: &str, url: &GoUrl) -> Result<RequestInfo, InfoError> {
    let mut ri = RequestInfo { path: url.path.clone(), verb: method.to_lowercase(), ..Default::default() };
    // splitPath: trim every leading and trailing '/', then split; inner
    // empty segments stay.
    let trimmed = url.path.trim_matches('/');
    let mut cur: Vec<&str> = if trimmed.is_empty() { Vec::new() } else { trimmed.split('/').collect() };
    if cur.len() < 3 {
        return Ok(ri);
    }
    let prefix = cur[0];
    if prefix != "api" && prefix != "apis" {
        return Ok(ri);
    }
    ri.api_prefix = prefix.to_string();
    cur.remove(0);
    if prefix == "apis" {
        if cur.len() < 3 {
            return Ok(ri);
        }
        ri.api_group = cur.remove(0).to_string();
    }
    ri.resource_request = true;
    ri.api_version = cur.remove(0).to_string();
    let special = cur[0] == "proxy" || cur[0] == "watch";
    if special {
        if cur.len() < 2 {
            return Err(InfoError(format!("unable to determine kind and namespace from url, {}", url.path)));
        }
        ri.verb = cur.remove(0).to_string();
    } else {
        ri.verb = String::from(match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        });
    }
    if cur[0] == "namespaces" && cur.len() > 1 {
        ri.namespace = cur[1].to_string();
        if cur.len() > 2 && cur[2] != "status" && cur[2] != "finalize" {
            cur.drain(..2);
        }
    }
    // resource / name / subresource (none for the proxy verb)
    ri.resource = cur[0].to_string();
    if cur.len() >= 2 {
        ri.name = cur[1].to_string();
    }
    if cur.len() >= 3 && ri.verb != "proxy" {
        ri.subresource = cur[2].to_string();
    }
    if ri.name.is_empty() && ri.verb == "get" {
        let q = url.query();
        let (watch, selected) = decode_list_options(&q).unwrap_or_else(|| (watch_flag(q.get("watch")), None));
        ri.verb = if watch { "watch" } else { "list" }.to_string();
        if let Some(n) = selected {
            let valid = n != "." && n != ".." && !n.contains('/') && !n.contains('%');
            if valid {
                ri.name = n;
            }
        }
    }
    if ri.name.is_empty() && ri.verb == "delete" {
        ri.verb = "deletecollection".to_string();
    }
    Ok(ri)
}

/// `Convert_Slice_string_To_bool`: present and neither `0` nor `false`.
fn watch_flag(v: Option<&str>) -> bool {
    match v {
        None => false,
        Some(v) => v != "0" && !v.eq_ignore_ascii_case("false"),
    }
}

/// `metainternalversion.ListOptions` as far as classification reads it:
/// `(watch, metadata.name the field selector requires)`, or `None` where
/// the parameter codec would fail.
fn decode_list_options(q: &Values) -> Option<(bool, Option<String>)> {
    for numeric in ["limit", "timeoutSeconds"] {
        if let Some(v) = q.get(numeric)
            && v.parse::<i64>().is_err()
        {
            return None;
        }
    }
    let name = match q.get("fieldSelector") {
        None => None,
        Some(sel) => field_selector_name(sel)?,
    };
    Some((watch_flag(q.get("watch")), name))
}

/// `fields.ParseSelector(sel).RequiresExactMatch("metadata.name")`;
/// `None` when the selector does not parse.
fn field_selector_name(sel: &str) -> Option<Option<String>> {
    // splitTerms: commas split unless escaped.
    let chars: Vec<char> = sel.chars().collect();
    let mut terms: Vec<String> = vec![String::new()];
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && i + 1 < chars.len() {
            let last = terms.last_mut().expect("one term at least");
            last.push(c);
            last.push(chars[i + 1]);
            i += 2;
            continue;
        }
        if c == ',' {
            terms.push(String::new());
        } else {
            terms.last_mut().expect("one term at least").push(c);
        }
        i += 1;
    }
    terms.sort();
    let mut result: Option<String> = None;
    for term in terms.into_iter().filter(|t| !t.is_empty()) {
        // splitTerm: the earliest position holding an operator, trying
        // "!=", "==", "=" there.
        let mut split = None;
        for (at, _) in term.char_indices() {
            let tail = &term[at..];
            if let Some(op) = ["!=", "==", "="].into_iter().find(|op| tail.starts_with(*op)) {
                split = Some((term[..at].to_string(), op, tail[op.len()..].to_string()));
                break;
            }
        }
        let (field, op, raw_value) = split?;
        // UnescapeValue
        let mut value = String::new();
        let mut pending_backslash = false;
        for c in raw_value.chars() {
            if pending_backslash {
                if c != '\\' && c != ',' && c != '=' {
                    return None;
                }
                value.push(c);
                pending_backslash = false;
            } else if c == '\\' {
                pending_backslash = true;
            } else if c == ',' || c == '=' {
                return None;
            } else {
                value.push(c);
            }
        }
        if pending_backslash {
            return None;
        }
        if result.is_none() && op != "!=" && field == "metadata.name" {
            result = Some(value);
        }
    }
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ri(method: &str, target: &str) -> RequestInfo {
        request_info(method, &GoUrl::parse_request_uri(target).expect("parses")).expect("info")
    }

    #[test]
    fn decodes_before_classifying_like_go() {
        let i = ri("GET", "/api/v1%2Fnamespaces%2Fweb%2Fsecrets");
        assert_eq!((i.verb.as_str(), i.namespace.as_str(), i.resource.as_str()), ("list", "web", "secrets"));
        let i = ri("GET", "/api/v1/namespaces/web/%73ecrets/s1");
        assert_eq!((i.verb.as_str(), i.resource.as_str(), i.name.as_str()), ("get", "secrets", "s1"));
        // Dot segments are ordinary segments to the API server.
        let i = ri("GET", "/api/v1/namespaces/web/pods/../secrets");
        assert_eq!((i.resource.as_str(), i.name.as_str(), i.subresource.as_str()), ("pods", "..", "secrets"));
        let i = ri("GET", "/api/v1/watch/namespaces/web/secrets");
        assert_eq!((i.verb.as_str(), i.resource.as_str()), ("watch", "secrets"));
        let i = ri("GET", "/api/v1/pods?watch");
        assert_eq!(i.verb, "watch");
        let i = ri("GET", "/api/v1/pods?watch=1;x=1");
        assert_eq!(i.verb, "list", "a pair with a semicolon is dropped");
        let i = ri("GET", "/api/v1/pods?fieldSelector=metadata.name%3D%3Dp1");
        assert_eq!((i.verb.as_str(), i.name.as_str()), ("list", "p1"));
        assert_eq!(GoUrl::parse_request_uri("/api/v1/pods%zz"), Err(UrlError::Escape("%zz".into())));
        assert_eq!(GoUrl::parse_request_uri("/api/\u{1}"), Err(UrlError::ControlCharacter));
        assert!(request_info("GET", &GoUrl::parse_request_uri("/apis/apps/v1/watch").expect("parses")).is_err());
    }
}
