//! An HTTP/1.1 backend standing in for the Kubernetes API server in tunnel
//! tests: small answers, large bodies with checksums, responses the test
//! feeds chunk by chunk ("gates"), a barrier for concurrency, a WebSocket
//! echo, a redirect, and a header echo.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{Barrier, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

type Body = BoxBody<Bytes, Infallible>;

/// The deterministic content of `/bytes?n=N`.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i.wrapping_mul(31) ^ (i >> 13)) as u8).collect()
}

/// Hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Default)]
struct Shared {
    name: String,
    hits: Mutex<HashMap<String, usize>>,
    gates: Mutex<HashMap<String, mpsc::Receiver<Bytes>>>,
    barrier: Mutex<Option<Arc<Barrier>>>,
}

/// A running backend.
#[derive(Clone)]
pub struct Backend {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn reply(status: StatusCode, ct: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder().status(status).header(header::CONTENT_TYPE, ct).body(full(body)).expect("valid response")
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

impl Backend {
    /// Starts a backend named `name` on 127.0.0.1:0.
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared { name: name.to_string(), ..Default::default() });
        let s = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(route(req, s).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self { addr, shared }
    }

    /// The backend's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests seen for `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.shared.hits.lock().expect("lock").get(path).copied().unwrap_or(0)
    }

    /// Requests seen in all.
    pub fn total_hits(&self) -> usize {
        self.shared.hits.lock().expect("lock").values().sum()
    }

    /// Registers gate `name`: a request to `/gate/<name>` streams whatever is
    /// sent on the returned sender and ends when it is dropped.
    pub fn open_gate(&self, name: &str) -> mpsc::Sender<Bytes> {
        let (tx, rx) = mpsc::channel(16);
        self.shared.gates.lock().expect("lock").insert(name.to_string(), rx);
        tx
    }
}

async fn route(req: Request<Incoming>, s: Arc<Shared>) -> Response<Body> {
    let path = req.uri().path().to_string();
    *s.hits.lock().expect("lock").entry(path.clone()).or_default() += 1;
    match path.as_str() {
        "/small" => reply(StatusCode::OK, "text/plain", "hello"),
        "/whoami" => reply(StatusCode::OK, "text/plain", s.name.clone()),
        "/bytes" => {
            let n: usize = query_param(&req, "n").and_then(|v| v.parse().ok()).unwrap_or(0);
            let data = Bytes::from(pattern(n));
            let chunks: Vec<Result<Frame<Bytes>, Infallible>> =
                (0..n).step_by(64 * 1024).map(|i| Ok(Frame::data(data.slice(i..(i + 64 * 1024).min(n))))).collect();
            Response::builder()
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(chunks))))
                .expect("valid response")
        }
        "/sha256" => {
            let mut body = req.into_body();
            let mut h = Sha256::new();
            let mut len = 0usize;
            while let Some(Ok(f)) = body.frame().await {
                if let Ok(d) = f.into_data() {
                    len += d.len();
                    h.update(&d);
                }
            }
            let out = serde_json::json!({ "len": len, "sha256": hex(&h.finalize()) });
            reply(StatusCode::OK, "application/json", out.to_string())
        }
        "/headers" => {
            let mut map: HashMap<String, Vec<String>> = HashMap::new();
            for (k, v) in req.headers() {
                map.entry(k.as_str().to_string()).or_default().push(String::from_utf8_lossy(v.as_bytes()).into_owned());
            }
            reply(StatusCode::OK, "application/json", serde_json::to_vec(&map).expect("json"))
        }
        "/redirect" => Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, "/small")
            .body(full("redirecting"))
            .expect("valid response"),
        "/hold" => {
            let n: usize = query_param(&req, "n").and_then(|v| v.parse().ok()).unwrap_or(1);
            let barrier = s.barrier.lock().expect("lock").get_or_insert_with(|| Arc::new(Barrier::new(n))).clone();
            barrier.wait().await;
            reply(StatusCode::OK, "text/plain", "released")
        }
        "/ws" => websocket_echo(req),
        p if p.starts_with("/gate/") => {
            let name = &p["/gate/".len()..];
            let Some(rx) = s.gates.lock().expect("lock").remove(name) else {
                return reply(StatusCode::NOT_FOUND, "text/plain", "no such gate");
            };
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "text/plain")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .expect("valid response")
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found"),
    }
}

fn websocket_echo(mut req: Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return reply(StatusCode::BAD_REQUEST, "text/plain", "not a websocket request");
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header("sec-websocket-accept", accept)
        .body(full(Bytes::new()))
        .expect("valid response")
}
