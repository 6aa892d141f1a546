//! Which request headers may travel to the Kubernetes API server, and the
//! impersonation headers that replace the caller's.
//!
//! The caller's `Authorization`, every `Impersonate-*` header (any case,
//! repeated), the front-proxy `X-Remote-*` headers, hop-by-hop headers and
//! every header named in a `Connection` header are removed; the agent then adds
//! impersonation for the identity the stream carries.

use crate::messages::{Header, Identity};

/// Hop-by-hop headers (RFC 9110 §7.6.1), plus `Proxy-Connection`.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The impersonation extra key carrying the request id.
pub const REQUEST_ID_EXTRA: &str = "Impersonate-Extra-kubechat.io%2Frequest-id";

fn named_in_connection(headers: &[Header]) -> Vec<String> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| {
            String::from_utf8_lossy(&h.value)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether a request header must never reach the API server as sent.
fn is_forbidden_request_header(lower: &str, connection_named: &[String]) -> bool {
    lower == "authorization"
        || lower == "host"
        || lower == "content-length"
        || lower.starts_with("impersonate-")
        || lower.starts_with("x-remote-")
        || lower.starts_with("kubechat-")
        || HOP_BY_HOP.contains(&lower)
        || connection_named.iter().any(|n| n == lower)
}

/// Removes every header the caller must not pass to the API server.
///
/// When `upgrade` is set the caller's `Upgrade` value is kept and
/// `Connection: Upgrade` re-added, so WebSocket and SPDY upgrades still work.
pub fn sanitize_request(headers: &[Header], upgrade: bool) -> Vec<Header> {
    let named = named_in_connection(headers);
    let mut out: Vec<Header> = headers
        .iter()
        .filter(|h| !is_forbidden_request_header(&h.name.to_ascii_lowercase(), &named))
        .cloned()
        .collect();
    if let Some(up) = headers.iter().find(|h| h.name.eq_ignore_ascii_case("upgrade")).filter(|_| upgrade) {
        out.push(Header { name: "Connection".into(), value: "Upgrade".into() });
        out.push(Header { name: "Upgrade".into(), value: up.value.clone() });
    }
    out
}

/// Removes hop-by-hop headers from a response, except on `101 Switching
/// Protocols`, whose `Connection`/`Upgrade` headers the client needs.
pub fn sanitize_response(status: u16, headers: &[Header]) -> Vec<Header> {
    if status == 101 {
        return headers.to_vec();
    }
    let named = named_in_connection(headers);
    headers
        .iter()
        .filter(|h| {
            let lower = h.name.to_ascii_lowercase();
            !HOP_BY_HOP.contains(&lower.as_str()) && !named.contains(&lower)
        })
        .cloned()
        .collect()
}

/// The impersonation headers for `identity`, with the request id as extra.
pub fn impersonation(identity: &Identity, request_id: &str) -> Vec<Header> {
    let mut out = Vec::with_capacity(identity.groups.len() + 2);
    out.push(Header { name: "Impersonate-User".into(), value: identity.user.clone().into_bytes().into() });
    for g in &identity.groups {
        out.push(Header { name: "Impersonate-Group".into(), value: g.clone().into_bytes().into() });
    }
    if !request_id.is_empty() {
        out.push(Header { name: REQUEST_ID_EXTRA.into(), value: request_id.to_string().into_bytes().into() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str, value: &str) -> Header {
        Header { name: name.into(), value: value.to_string().into_bytes().into() }
    }

    fn names(hs: &[Header]) -> Vec<String> {
        hs.iter().map(|h| h.name.to_ascii_lowercase()).collect()
    }

    #[test]
    fn strips_impersonation_in_any_case_and_repeated() {
        let hs = vec![
            h("Impersonate-User", "admin"),
            h("impersonate-group", "system:masters"),
            h("IMPERSONATE-GROUP", "system:nodes"),
            h("Impersonate-Extra-scopes", "x"),
            h("Impersonate-Uid", "1"),
            h("Authorization", "Bearer secret"),
            h("X-Remote-User", "admin"),
            h("Accept", "application/json"),
        ];
        assert_eq!(names(&sanitize_request(&hs, false)), vec!["accept"]);
    }

    #[test]
    fn strips_headers_named_in_connection() {
        let hs = vec![
            h("Connection", "keep-alive, X-Secret-Hop , Impersonate-User"),
            h("x-secret-hop", "1"),
            h("Keep-Alive", "timeout=5"),
            h("Transfer-Encoding", "chunked"),
            h("Kubectl-Command", "kubectl get"),
        ];
        assert_eq!(names(&sanitize_request(&hs, false)), vec!["kubectl-command"]);
    }

    #[test]
    fn keeps_upgrade_for_upgrades_only() {
        let hs = vec![h("Connection", "Upgrade"), h("Upgrade", "websocket"), h("Sec-WebSocket-Key", "k")];
        assert_eq!(names(&sanitize_request(&hs, false)), vec!["sec-websocket-key"]);
        assert_eq!(names(&sanitize_request(&hs, true)), vec!["sec-websocket-key", "connection", "upgrade"]);
    }

    #[test]
    fn response_keeps_upgrade_headers_on_101() {
        let hs = vec![h("Connection", "Upgrade"), h("Upgrade", "websocket"), h("Content-Type", "x")];
        assert_eq!(sanitize_response(101, &hs).len(), 3);
        assert_eq!(names(&sanitize_response(200, &hs)), vec!["content-type"]);
    }

    #[test]
    fn impersonation_names_user_groups_and_request_id() {
        let id = Identity { user: "kubechat:user:a@b.c".into(), groups: vec!["g1".into(), "g2".into()] };
        let hs = impersonation(&id, "r1");
        assert_eq!(
            names(&hs),
            vec![
                "impersonate-user",
                "impersonate-group",
                "impersonate-group",
                REQUEST_ID_EXTRA.to_ascii_lowercase().as_str()
            ]
        );
    }
}
