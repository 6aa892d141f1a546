//! A client of the web app that behaves like a browser on the wire: it
//! keeps the session cookie, sends `Origin` and `Sec-Fetch-Site` as a
//! browser would (or as a hostile page would, when told), and posts HTML
//! forms. The real browser tests drive chromium; this one shows the server's
//! side of each rule byte for byte.

use crate::raw::{RawClient, RawResponse};

/// A browser-like client of one control plane.
#[derive(Clone)]
pub struct WebClient {
    raw: RawClient,
    /// `https://127.0.0.1:<port>`: the control plane's own origin.
    pub origin: String,
    /// The session cookie (`__Host-kubechat=…`), once signed in.
    pub cookie: Option<String>,
}

/// Percent-encodes a form value.
pub fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of the first `<input name="{name}" value="…">` in `html`
/// (maud writes `name` before `value`), HTML entities decoded.
pub fn input_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &html[at + name.len() + 15..];
    let end = rest.find('"')?;
    Some(rest[..end].replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
}

impl WebClient {
    /// A client of `url` trusting `ca_pem`, not signed in.
    pub fn new(url: &str, ca_pem: &str) -> Self {
        Self { raw: RawClient::new(url, ca_pem), origin: url.trim_end_matches('/').to_string(), cookie: None }
    }

    fn head(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> String {
        let host = self.origin.trim_start_matches("https://");
        let mut h = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
        if let Some(c) = &self.cookie {
            h.push_str(&format!("Cookie: {c}\r\n"));
        }
        for (k, v) in headers {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        h
    }

    /// A page, as a same-origin navigation.
    pub async fn get(&self, path: &str) -> RawResponse {
        self.get_with(path, &[("Sec-Fetch-Site", "same-origin")]).await
    }

    /// A GET with exactly `headers` (besides Host and the cookie).
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> RawResponse {
        let mut h = self.head("GET", path, headers);
        h.push_str("Connection: close\r\n\r\n");
        self.raw.send_bytes(h.as_bytes()).await
    }

    /// A form post from this origin (`fields` encoded), as htmx sends it
    /// when `htmx` is set.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)], htmx: bool) -> RawResponse {
        let origin = self.origin.clone();
        let mut headers = vec![("Origin", origin.as_str()), ("Sec-Fetch-Site", "same-origin")];
        if htmx {
            headers.push(("HX-Request", "true"));
        }
        self.post_with(path, fields, &headers).await
    }

    /// A form post with exactly `headers` (besides Host, the cookie and
    /// the body's own).
    pub async fn post_with(&self, path: &str, fields: &[(&str, &str)], headers: &[(&str, &str)]) -> RawResponse {
        let body =
            fields.iter().map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v))).collect::<Vec<_>>().join("&");
        let mut h = self.head("POST", path, headers);
        h.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ));
        self.raw.send_bytes(h.as_bytes()).await
    }

    /// Signs in with `token`; the response (a redirect on success). Keeps
    /// the cookie it set.
    pub async fn sign_in(&mut self, token: &str) -> RawResponse {
        let r = self.post("/ui/login", &[("token", token)], false).await;
        if let Some(set) = r.header("set-cookie") {
            self.cookie = set.split(';').next().map(str::to_string);
        }
        r
    }

    /// The CSRF token of the page at `path`.
    pub async fn csrf(&self, path: &str) -> String {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        input_value(&r.text(), "csrf").expect("every signed-in page has a CSRF token")
    }
}
