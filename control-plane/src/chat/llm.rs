//! A tenant's optional OpenAI-compatible endpoint, asked only when the
//! English grammar does not understand a sentence, and only for a
//! proposal: a kubectl command line, which then goes through the same
//! parser, policy, dry run and confirmation as one a person typed (and is
//! never an exec). Secrets are redacted from the sentence before it is
//! sent; nothing else about the cluster is sent.
//!
//! The endpoint is dialled without following redirects, with a timeout and
//! an answer limit, over https — plain http only to loopback when the
//! platform allows it (`--chat-llm-allow-loopback`, tests and the dev
//! stack) — and never to link-local or private addresses.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use super::settings::LlmSettings;

/// Longest the endpoint may take.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer read.
const MAX_ANSWER: usize = 64 * 1024;

const SYSTEM: &str = "You translate a person's request about their Kubernetes cluster into ONE kubectl command line. \
Answer only JSON: {\"argv\": [\"get\", \"pods\", \"-n\", \"web\"]} without the word kubectl, or {\"argv\": []} if unsure. \
Never use exec, proxy, port-forward, edit, cp, --raw, --kubeconfig, --server, --token or --as.";

/// Hides what looks secret in `text`: KubeChat tokens, bearer tokens, JWTs,
/// long base64 or hex strings, and the word after password/token/secret/key.
pub fn redact(text: &str) -> String {
    let mut out = Vec::new();
    let mut hide_next = false;
    for word in text.split_whitespace() {
        let lower = word.to_ascii_lowercase();
        let core = word.trim_matches(|c: char| {
            !c.is_ascii_alphanumeric() && c != '_' && c != '-' && c != '=' && c != '+' && c != '/'
        });
        let secretish = core.starts_with("kc_")
            || core.starts_with("kcc_")
            || core.starts_with("eyJ")
            || core.starts_with("sk-")
            || (core.len() >= 24
                && core.chars().all(|c| c.is_ascii_alphanumeric() || "+/=_-".contains(c))
                && core.chars().any(|c| c.is_ascii_digit()));
        // "password is hunter2": the connecting word stays, the value goes.
        if hide_next && matches!(lower.as_str(), "is" | "was" | "=" | ":" | "are" | "of" | "to" | "be") {
            out.push(word.to_string());
            continue;
        }
        if hide_next || secretish {
            out.push("[redacted]".to_string());
            hide_next = false;
            continue;
        }
        let keyword = ["password", "passwd", "token", "secret", "apikey", "api-key", "api_key", "bearer"];
        if let Some((k, v)) = word.split_once(['=', ':'])
            && keyword.iter().any(|w| k.to_ascii_lowercase().contains(w))
            && !v.is_empty()
        {
            out.push(format!("{k}=[redacted]"));
            continue;
        }
        if keyword.iter().any(|w| lower.trim_end_matches([':', '=']) == *w) {
            hide_next = true;
        }
        out.push(word.to_string());
    }
    out.join(" ")
}

fn client() -> &'static Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>> {
    static C: OnceLock<Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>> = OnceLock::new();
    C.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(c);
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .unwrap_or_else(|_| {
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .expect("TLS 1.3 is supported")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            });
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Client::builder(TokioExecutor::new()).build(https)
    })
}

fn private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            v.is_private()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || v.octets()[0] == 100 && (v.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            v.is_unspecified() || (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Checks where `url` points before dialling it; loopback only when
/// `loopback_ok` (`--chat-llm-allow-loopback`: tests, dev stack).
async fn check_target(url: &http::Uri, loopback_ok: bool) -> Result<(), String> {
    let host = url.host().ok_or("the LLM URL has no host")?.trim_matches(['[', ']']).to_string();
    let port = url.port_u16().unwrap_or(if url.scheme_str() == Some("https") { 443 } else { 80 });
    let addrs: Vec<IpAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve the LLM host {host}: {e}"))?
        .map(|a| a.ip())
        .collect();
    for ip in &addrs {
        if ip.is_loopback() && !loopback_ok {
            return Err("the LLM endpoint is on loopback, which this control plane does not allow".into());
        }
        if private(*ip) {
            return Err(format!("the LLM endpoint resolves to a private or link-local address ({ip}); refused"));
        }
    }
    let all_loopback = !addrs.is_empty() && addrs.iter().all(IpAddr::is_loopback);
    if url.scheme_str() != Some("https") && !all_loopback {
        return Err("the LLM endpoint must be https (plain http only to loopback)".into());
    }
    Ok(())
}

/// Asks the endpoint for a command line for `text` (redacted first);
/// `loopback_ok` lets it be on loopback over plain http.
pub async fn propose(llm: &LlmSettings, text: &str, namespace: &str, loopback_ok: bool) -> Result<Vec<String>, String> {
    let url: http::Uri = format!("{}/chat/completions", llm.url.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("bad LLM URL: {e}"))?;
    check_target(&url, loopback_ok).await?;
    let body = json!({
        "model": llm.model,
        "temperature": 0,
        "response_format": {"type": "json_object"},
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": format!("(current namespace: {namespace}) {}", redact(text))}
        ]
    });
    let mut req =
        http::Request::builder().method("POST").uri(url).header(http::header::CONTENT_TYPE, "application/json");
    if !llm.api_key.is_empty() {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {}", llm.api_key));
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(TIMEOUT, client().request(req))
        .await
        .map_err(|_| "the LLM endpoint did not answer in time".to_string())?
        .map_err(|e| format!("the LLM endpoint cannot be reached: {e}"))?;
    if !resp.status().is_success() {
        // Redirects are not followed.
        return Err(format!("the LLM endpoint answered {}", resp.status()));
    }
    let bytes = tokio::time::timeout(TIMEOUT, http_body_util::Limited::new(resp.into_body(), MAX_ANSWER).collect())
        .await
        .map_err(|_| "the LLM answer did not arrive in time".to_string())?
        .map_err(|e| format!("the LLM answer could not be read: {e}"))?
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("the LLM answer is not JSON: {e}"))?;
    let content = v["choices"][0]["message"]["content"].as_str().ok_or("the LLM answer has no message")?;
    argv_of(content)
}

/// The `argv` of an answer's content (JSON, perhaps in a code fence).
fn argv_of(content: &str) -> Result<Vec<String>, String> {
    let start = content.find('{').ok_or("the LLM proposed no JSON")?;
    let end = content.rfind('}').ok_or("the LLM proposed no JSON")?;
    let v: Value =
        serde_json::from_str(&content[start..=end]).map_err(|e| format!("the LLM proposal is not JSON: {e}"))?;
    let argv: Vec<String> = v["argv"]
        .as_array()
        .ok_or("the LLM proposal has no argv")?
        .iter()
        .map(|a| a.as_str().map(str::to_string).ok_or("argv holds a non-string"))
        .collect::<Result<_, _>>()?;
    if argv.is_empty() || argv.len() > 64 {
        return Err("the LLM proposed nothing".into());
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_before_anything_is_sent() {
        let t = redact(
            "set password hunter2 and token=abc123 for kc_0123456789abcdef0123456789abcdef01234567 with Bearer eyJhbGciOi.x.y and aGVsbG8gd29ybGQgdGhpcyBpcyAxMjM0NTY=",
        );
        for secret in ["hunter2", "abc123", "kc_0123", "eyJhbGci", "aGVsbG8gd29y"] {
            assert!(!t.contains(secret), "{secret} leaked: {t}");
        }
        assert!(t.contains("set password [redacted]"), "{t}");
        assert_eq!(redact("show pods in web"), "show pods in web");
    }

    #[test]
    fn proposals_are_read_from_json_only() {
        assert_eq!(
            argv_of("```json\n{\"argv\": [\"get\", \"pods\"]}\n```"),
            Ok(vec!["get".to_string(), "pods".to_string()])
        );
        assert!(argv_of("get pods").is_err());
        assert!(argv_of("{\"argv\": []}").is_err());
        assert!(argv_of("{\"argv\": [1]}").is_err());
    }

    #[test]
    fn private_ranges_are_refused() {
        for ip in
            ["10.0.0.1", "172.16.3.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "fd00::1", "fe80::1", "0.0.0.0"]
        {
            assert!(private(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["8.8.8.8", "2001:4860::8888"] {
            assert!(!private(ip.parse().expect("ip")), "{ip}");
        }
    }
}
