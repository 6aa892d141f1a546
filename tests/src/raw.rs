//! Raw HTTP/1.1 over TLS, like `curl --path-as-is`: the request line and
//! headers are written byte for byte as given (no URL parsing, no
//! normalizing), so tests can send what no well-behaved client would.

use std::sync::Arc;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A response read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// Headers, names lowercase, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTPS server to send raw requests to.
#[derive(Clone)]
pub struct RawClient {
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

impl RawClient {
    /// A client of `url` (`https://127.0.0.1:<port>`) trusting `ca_pem`.
    pub fn new(url: &str, ca_pem: &str) -> Self {
        let addr = url.trim_start_matches("https://").trim_end_matches('/').parse().expect("an https://ip:port url");
        let mut roots = rustls::RootCertStore::empty();
        for ca in kubechat_transport::tls::parse_ca_pem(ca_pem).expect("ca") {
            roots.add(ca).expect("add ca");
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(kubechat_transport::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self { addr, tls: Arc::new(tls) }
    }

    /// The request head `method target HTTP/1.1` with `headers`, plus Host,
    /// the bearer token and `Connection: close`.
    fn head(&self, method: &str, target: &str, token: &str, headers: &[(&str, &str)]) -> String {
        let mut head =
            format!("{method} {target} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n", self.addr);
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let has_length = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
        if !has_length && matches!(method, "POST" | "PUT" | "PATCH") {
            head.push_str("Content-Length: 0\r\n");
        }
        head.push_str("Connection: close\r\n\r\n");
        head
    }

    /// Sends the request (see [`Self::head`]) and reads the whole response.
    pub async fn send(&self, method: &str, target: &str, token: &str, headers: &[(&str, &str)]) -> RawResponse {
        self.send_bytes(self.head(method, target, token, headers).as_bytes()).await
    }

    /// Sends `bytes` as they are and reads the response.
    pub async fn send_bytes(&self, bytes: &[u8]) -> RawResponse {
        let mut tls = self.connect(bytes).await;
        let mut data = Vec::new();
        // A close without close_notify is fine: everything read counts.
        let _ = tls.read_to_end(&mut data).await;
        parse(&data).unwrap_or_else(|| panic!("unparsable response: {:?}", String::from_utf8_lossy(&data)))
    }

    /// Like [`Self::send`], but reads only the head and a body with a
    /// `Content-Length`; a streamed (chunked) body — a watch, `logs -f` — is
    /// not waited for, and the connection is dropped.
    pub async fn send_head(&self, method: &str, target: &str, token: &str, headers: &[(&str, &str)]) -> RawResponse {
        let head = self.head(method, target, token, headers);
        let mut tls = self.connect(head.as_bytes()).await;
        let mut data = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                match length {
                    Some(n) if data.len() >= end + 4 + n => break,
                    Some(_) if method != "HEAD" => {}
                    _ => break,
                }
            }
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        }
        let end = data.windows(4).position(|w| w == b"\r\n\r\n").map_or(data.len(), |e| e + 4);
        let mut r =
            parse(&data[..end]).unwrap_or_else(|| panic!("unparsable response: {:?}", String::from_utf8_lossy(&data)));
        if r.header("content-length").is_some() {
            r.body = data[end..].to_vec();
        }
        r
    }

    /// Sends `body` as a JSON request body, byte for byte.
    pub async fn send_json(&self, method: &str, target: &str, token: &str, body: &[u8]) -> RawResponse {
        let length = body.len().to_string();
        let mut bytes = self
            .head(method, target, token, &[("Content-Type", "application/json"), ("Content-Length", &length)])
            .into_bytes();
        bytes.extend_from_slice(body);
        self.send_bytes(&bytes).await
    }

    /// A TLS connection, nothing sent yet.
    pub async fn open(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        self.connect(b"").await
    }

    /// The server's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    async fn connect(&self, bytes: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.expect("connect");
        let name = ServerName::IpAddress(self.addr.ip().into());
        let mut tls = TlsConnector::from(self.tls.clone()).connect(name, tcp).await.expect("tls");
        tls.write_all(bytes).await.expect("write");
        tls.flush().await.expect("flush");
        tls
    }
}

fn parse(data: &[u8]) -> Option<RawResponse> {
    let end = data.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&data[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &data[end + 4..];
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(rest)? } else { rest.to_vec() };
    Some(RawResponse { status, headers, body })
}

/// Decodes a chunked body; what a response cut short (a stream read only in
/// part) holds so far.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else { return Some(out) };
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        let Some(chunk) = data.get(..size) else { return Some(out) };
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

/// Server-Sent Events read off one raw connection as they arrive.
pub struct EventStream {
    tls: tokio_rustls::client::TlsStream<TcpStream>,
    /// Bytes read and not yet parsed (de-chunked).
    buf: Vec<u8>,
    /// Raw bytes of the chunked body not yet de-chunked.
    raw: Vec<u8>,
}

impl EventStream {
    /// GETs `target` (`Accept: text/event-stream`) and reads the head; panics
    /// unless it is a 200 event stream.
    pub async fn open(client: &RawClient, target: &str, token: &str) -> Self {
        let head = client.head("GET", target, token, &[("Accept", "text/event-stream")]);
        let mut tls = client.connect(head.as_bytes()).await;
        let mut data = Vec::new();
        let mut chunk = [0u8; 8192];
        let end = loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let n = tls.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed before the head: {:?}", String::from_utf8_lossy(&data));
            data.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&data[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{head}");
        Self { tls, buf: Vec::new(), raw: data[end..].to_vec() }
    }

    /// De-chunks what is complete in `raw` into `buf`.
    fn dechunk(&mut self) {
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else { return };
            let size = usize::from_str_radix(String::from_utf8_lossy(&self.raw[..line_end]).trim(), 16).unwrap_or(0);
            if self.raw.len() < line_end + 2 + size + 2 {
                return;
            }
            self.buf.extend_from_slice(&self.raw[line_end + 2..line_end + 2 + size]);
            self.raw.drain(..line_end + 2 + size + 2);
        }
    }

    /// The next event (its name, "message" if none, and its data); `None`
    /// once the server closes the stream.
    pub async fn next(&mut self) -> Option<(String, String)> {
        let mut chunk = [0u8; 8192];
        loop {
            self.dechunk();
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let text = String::from_utf8_lossy(&self.buf[..end]).to_string();
                self.buf.drain(..end + 2);
                let mut event = "message".to_string();
                let mut data = Vec::new();
                for line in text.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = e.trim().to_string();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push(d.strip_prefix(' ').unwrap_or(d).to_string());
                    }
                }
                if data.is_empty() && event == "message" {
                    continue; // a keep-alive comment
                }
                return Some((event, data.join("\n")));
            }
            match self.tls.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.raw.extend_from_slice(&chunk[..n]),
            }
        }
    }
}
