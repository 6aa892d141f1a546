//! Which request headers may travel to the Kubernetes API server, and the
//! impersonation headers that replace the caller's.
//!
//! The caller's `Authorization`, every `Impersonate-*` header (any case,
//! repeated), the front-proxy `X-Remote-*` headers, the proxy headers
//! `X-Forwarded-*`, `Forwarded` and `X-Real-Ip` (so the cluster's audit log
//! shows only what the agent asserts), hop-by-hop headers and every header
//! named in a `Connection` header are removed; the agent then adds
//! impersonation for the identity the stream carries.
//!
//! An upgrade is only ever to SPDY/3.1 or to a WebSocket speaking
//! Kubernetes' channel subprotocols ([`check_upgrade`]).

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

/// Whether a request header (name in lowercase) is the caller's say about
/// who they are or where they come from, which must never reach the API
/// server: credentials, impersonation, front-proxy identity, proxy hops,
/// and KubeChat's own headers.
pub fn is_caller_assertion(lower: &str) -> bool {
    lower == "authorization"
        || lower == "forwarded"
        || lower == "x-real-ip"
        || lower.starts_with("x-forwarded-")
        || lower.starts_with("impersonate-")
        || lower.starts_with("x-remote-")
        || lower.starts_with("kubechat-")
}

/// Whether a request header must never reach the API server as sent.
fn is_forbidden_request_header(lower: &str, connection_named: &[String]) -> bool {
    is_caller_assertion(lower)
        || lower == "host"
        || lower == "content-length"
        || HOP_BY_HOP.contains(&lower)
        || connection_named.iter().any(|n| n == lower)
}

/// Whether a WebSocket subprotocol is one of Kubernetes' streaming
/// protocols (`v5.channel.k8s.io`, `base64.channel.k8s.io`,
/// `SPDY/3.1+portforward.k8s.io`, `portforward.k8s.io`, …). The bearer-token
/// subprotocol (`base64url.bearer.authorization.k8s.io.…`) is not.
pub fn is_kubernetes_subprotocol(p: &str) -> bool {
    let base = p.strip_prefix("SPDY/3.1+").unwrap_or(p);
    let base = base.strip_prefix("base64.").unwrap_or(base);
    let base = match base.split_once('.') {
        Some((v, rest)) if v.len() >= 2 && v.starts_with('v') && v[1..].bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => base,
    };
    let base = base.strip_prefix("base64.").unwrap_or(base);
    matches!(base, "channel.k8s.io" | "portforward.k8s.io")
}

/// Checks an upgrade request: `upgrade` is the `Upgrade` header, and
/// `subprotocols` the protocols offered in `Sec-WebSocket-Protocol` (comma
/// separated, possibly repeated). Only `SPDY/3.1`, or `websocket` offering
/// nothing but Kubernetes' subprotocols, may pass; `Err` says why not.
pub fn check_upgrade<'a>(upgrade: &str, subprotocols: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    let upgrade = upgrade.trim();
    if upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        return Ok(());
    }
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return Err(format!(
            "upgrading to {upgrade:?} is not allowed; only SPDY/3.1 and websocket (exec, attach, port-forward) are"
        ));
    }
    let offered: Vec<&str> =
        subprotocols.into_iter().flat_map(|v| v.split(',')).map(str::trim).filter(|p| !p.is_empty()).collect();
    if offered.is_empty() {
        return Err("a websocket upgrade must offer a Kubernetes subprotocol (e.g. v5.channel.k8s.io)".into());
    }
    match offered.iter().find(|p| !is_kubernetes_subprotocol(p)) {
        Some(p) if p.contains("bearer.authorization.k8s.io") => {
            Err("the websocket bearer-token subprotocol is not allowed; authenticate with your KubeChat token".into())
        }
        Some(p) => Err(format!("the websocket subprotocol {p:?} is not one of Kubernetes' channel protocols")),
        None => Ok(()),
    }
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
/// Protocols`, whose `Connection`/`Upgrade` headers the client needs; and
/// KubeChat's own `kubechat-*` headers, which only KubeChat may set.
pub fn sanitize_response(status: u16, headers: &[Header]) -> Vec<Header> {
    let named = if status == 101 { Vec::new() } else { named_in_connection(headers) };
    headers
        .iter()
        .filter(|h| {
            let lower = h.name.to_ascii_lowercase();
            let hop = status != 101 && (HOP_BY_HOP.contains(&lower.as_str()) || named.contains(&lower));
            !hop && !lower.starts_with("kubechat-")
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
            h("X-Forwarded-For", "10.0.0.1"),
            h("x-forwarded-host", "evil"),
            h("Forwarded", "for=10.0.0.1"),
            h("X-Real-IP", "10.0.0.1"),
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
    fn upgrades_only_to_kubernetes_streaming_protocols() {
        assert!(check_upgrade("SPDY/3.1", []).is_ok());
        assert!(check_upgrade("spdy/3.1", []).is_ok());
        assert!(check_upgrade("websocket", ["v5.channel.k8s.io"]).is_ok());
        assert!(check_upgrade("websocket", ["v5.channel.k8s.io, v4.channel.k8s.io", "channel.k8s.io"]).is_ok());
        assert!(check_upgrade("websocket", ["base64.channel.k8s.io"]).is_ok());
        assert!(check_upgrade("websocket", ["v4.base64.channel.k8s.io"]).is_ok());
        assert!(check_upgrade("websocket", ["SPDY/3.1+portforward.k8s.io"]).is_ok());
        assert!(check_upgrade("websocket", ["portforward.k8s.io"]).is_ok());
        assert!(check_upgrade("h2c", []).expect_err("refused").contains("h2c"));
        assert!(check_upgrade("websocket, h2c", ["v5.channel.k8s.io"]).is_err());
        assert!(check_upgrade("websocket", []).is_err());
        assert!(check_upgrade("websocket", ["chat"]).is_err());
        assert!(check_upgrade("websocket", ["v5.channel.k8s.io, x.channel.k8s.io.evil"]).is_err());
        let e = check_upgrade("websocket", ["v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.a2NfeA"]);
        assert!(e.expect_err("refused").contains("bearer"));
    }

    #[test]
    fn response_keeps_upgrade_headers_on_101() {
        let hs = vec![
            h("Connection", "Upgrade"),
            h("Upgrade", "websocket"),
            h("Content-Type", "x"),
            h("Kubechat-Origin", "relay"),
        ];
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
