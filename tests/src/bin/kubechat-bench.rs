//! `kubechat-bench`: measures the tunnel, and the whole kube path, against
//! a direct baseline in the same process, on loopback, and prints a table
//! and one JSON line each.
//!
//! ```text
//! cargo run --release --bin kubechat-bench -- tunnel [--quick]
//! cargo run --release --bin kubechat-bench -- kube-path [--quick]
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kubechat_tests::backend::Backend;
use kubechat_tests::client::InternalClient;
use kubechat_tests::pki::TestPki;
use kubechat_tests::stack::{CLUSTER, TENANT, start_agent, start_relay};

/// One way to reach the backend.
#[derive(Clone)]
enum Path {
    Direct(SocketAddr),
    Tunnel(InternalClient),
}

enum Conn {
    Plain(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
}

impl Path {
    async fn connect(&self) -> Conn {
        match self {
            Self::Direct(addr) => {
                let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect backend");
                tcp.set_nodelay(true).expect("nodelay");
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.expect("handshake");
                tokio::spawn(conn);
                Conn::Plain(send)
            }
            Self::Tunnel(c) => Conn::Plain(c.h1().await),
        }
    }

    fn request(&self, path: &str) -> Request<Full<Bytes>> {
        match self {
            Self::Direct(addr) => Request::get(path)
                .header(http::header::HOST, addr.to_string())
                .body(Full::new(Bytes::new()))
                .expect("request"),
            Self::Tunnel(c) => c.request("GET", CLUSTER, path, false).body(Full::new(Bytes::new())).expect("request"),
        }
    }
}

impl Conn {
    /// Sends one request and reads the whole body; returns its length.
    async fn get(&mut self, req: Request<Full<Bytes>>) -> usize {
        let Self::Plain(send) = self;
        send.ready().await.expect("ready");
        let resp = send.send_request(req).await.expect("send");
        assert!(resp.status().is_success(), "status {}", resp.status());
        let mut body = resp.into_body();
        let mut n = 0;
        while let Some(f) = body.frame().await {
            if let Ok(d) = f.expect("body").into_data() {
                n += d.len();
            }
        }
        n
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Latency {
    p50: Duration,
    p99: Duration,
}

async fn reused_latency(path: &Path, n: usize) -> Latency {
    let mut conn = path.connect().await;
    for _ in 0..n / 10 {
        conn.get(path.request("/small")).await;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        conn.get(path.request("/small")).await;
        samples.push(t.elapsed());
    }
    samples.sort();
    Latency { p50: percentile(&samples, 0.5), p99: percentile(&samples, 0.99) }
}

async fn new_connection_latency(path: &Path, n: usize) -> Latency {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let t = Instant::now();
        let mut conn = path.connect().await;
        conn.get(path.request("/small")).await;
        if i >= n / 10 {
            samples.push(t.elapsed());
        }
    }
    samples.sort();
    Latency { p50: percentile(&samples, 0.5), p99: percentile(&samples, 0.99) }
}

async fn throughput(path: &Path, conns: usize, dur: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (path, done, stop) = (path.clone(), done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = path.connect().await;
            while !stop.load(Ordering::Relaxed) {
                conn.get(path.request("/small")).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Warm up, then count.
    tokio::time::sleep(dur / 5).await;
    let start_count = done.load(Ordering::Relaxed);
    let t = Instant::now();
    tokio::time::sleep(dur).await;
    let counted = done.load(Ordering::Relaxed) - start_count;
    let rps = counted as f64 / t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    rps
}

async fn bulk_mb_s(path: &Path, bytes: usize) -> f64 {
    let mut conn = path.connect().await;
    conn.get(path.request(&format!("/bytes?n={}", 1 << 20))).await;
    let t = Instant::now();
    let n = conn.get(path.request(&format!("/bytes?n={bytes}"))).await;
    assert_eq!(n, bytes);
    n as f64 / t.elapsed().as_secs_f64() / 1e6
}

async fn upload_mb_s(path: &Path, client: Option<&InternalClient>, addr: SocketAddr, bytes: usize) -> f64 {
    let data = Bytes::from(vec![7u8; bytes]);
    let req = match client {
        Some(c) => c.request("POST", CLUSTER, "/sha256", false).body(Full::new(data)).expect("request"),
        None => Request::post("/sha256")
            .header(http::header::HOST, addr.to_string())
            .body(Full::new(data))
            .expect("request"),
    };
    let mut conn = path.connect().await;
    let t = Instant::now();
    conn.get(req).await;
    bytes as f64 / t.elapsed().as_secs_f64() / 1e6
}

/// The agent's upstream hop alone: kube `Client::send` (as the agent
/// configures it) straight to the backend, one request at a time.
async fn kube_client_latency(backend: &Backend, n: usize) -> Latency {
    let mut cfg = kube::Config::new(backend.url().parse().expect("url"));
    cfg.default_retry = false;
    cfg.read_timeout = None;
    let client = kube::Client::try_from(cfg).expect("kube client");
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let req = Request::get("/small").body(kube::client::Body::from(Bytes::new())).expect("request");
        let t = Instant::now();
        let resp = client.send(req).await.expect("send");
        let _ = resp.into_body().collect().await.expect("body");
        if i >= n / 10 {
            samples.push(t.elapsed());
        }
    }
    samples.sort();
    Latency { p50: percentile(&samples, 0.5), p99: percentile(&samples, 0.99) }
}

/// The floor of one tunnel hop: a bare quinn stream round trip (100 bytes
/// each way, new stream per request) between two threads, mutual TLS as the
/// tunnel uses it.
async fn bare_quic_latency(pki: &Arc<TestPki>, n: usize) -> Latency {
    use kubechat_transport::{quic, tls};
    use tokio::io::AsyncWriteExt;
    let p = pki.clone();
    let addr = in_own_runtime("quic-echo", move || async move {
        let st = tls::tunnel_server_config(&p.relay_identity(), &p.agent_ca()).expect("tls");
        let ep = quic::server_endpoint(([127, 0, 0, 1], 0).into(), st, &Default::default()).expect("endpoint");
        let addr = ep.local_addr().expect("addr");
        tokio::spawn(async move {
            let conn = ep.accept().await.expect("incoming").await.expect("handshake");
            while let Ok((mut s, mut r)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    let _ = r.read_to_end(1 << 20).await;
                    let _ = s.write_all(&[1u8; 100]).await;
                    let _ = s.finish();
                });
            }
        });
        addr
    });
    let ct = tls::tunnel_client_config(&pki.agent_cert("bench", "quic").identity().expect("id"), &pki.relay_ca())
        .expect("tls");
    let cc = quic::client_config(ct, &Default::default()).expect("config");
    let ep = quic::client_endpoint(addr).expect("endpoint");
    let conn = ep.connect_with(cc, addr, "127.0.0.1").expect("dial").await.expect("handshake");
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let t = Instant::now();
        let (mut s, mut r) = conn.open_bi().await.expect("open");
        s.write_all(&[0u8; 100]).await.expect("write");
        s.shutdown().await.expect("finish");
        let _ = r.read_to_end(1 << 20).await.expect("read");
        if i >= n / 10 {
            samples.push(t.elapsed());
        }
    }
    samples.sort();
    Latency { p50: percentile(&samples, 0.5), p99: percentile(&samples, 0.99) }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn tunnel_bench(quick: bool) {
    let (n_lat, n_conn, dur, bulk) = if quick {
        (500, 100, Duration::from_secs(1), 16 << 20)
    } else {
        (5000, 1000, Duration::from_secs(3), 100 << 20)
    };
    // Each component runs on its own single-threaded runtime in its own
    // thread, as separate processes would (`--worker-threads 1`); the
    // client runs on the main thread's runtime.
    let pki = Arc::new(TestPki::new());
    let backend = in_own_runtime("backend", || Backend::start(CLUSTER));
    let p = pki.clone();
    let (relay_quic, relay_internal) = in_own_runtime("relay", move || async move {
        let r = start_relay(&p, |_| {}).await;
        let addrs = (r.quic, r.internal);
        std::mem::forget(r);
        addrs
    });
    let (p, url) = (pki.clone(), backend.url());
    let agent = in_own_runtime("agent", move || async move {
        let a = start_agent(&p, &[relay_quic], &p.agent_cert(TENANT, CLUSTER), &url, |_| {}).await;
        let h = a.handle.clone();
        std::mem::forget(a);
        h
    });
    while agent.tunnels_connected() < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let client = InternalClient::new(relay_internal, &pki.internal_client(), &pki.relay_ca());
    let direct = Path::Direct(backend.addr());
    let tunnel = Path::Tunnel(client.clone());

    if let Ok(only) = std::env::var("KUBECHAT_BENCH_PROFILE") {
        // For profilers: run one tunnelled measurement for a while, alone.
        match only.as_str() {
            "rps" => println!("tunnel rps {:.0}", throughput(&tunnel, 32, Duration::from_secs(8)).await),
            "bulk" => {
                for _ in 0..8 {
                    println!("tunnel MB/s {:.0}", bulk_mb_s(&tunnel, bulk).await);
                }
            }
            _ => println!("tunnel p50 {:.1} us", us(reused_latency(&tunnel, 20_000).await.p50)),
        }
        return;
    }
    let d_lat = reused_latency(&direct, n_lat).await;
    let t_lat = reused_latency(&tunnel, n_lat).await;
    let k_lat = kube_client_latency(&backend, n_lat).await;
    let q_lat = bare_quic_latency(&pki, n_lat).await;
    let d_new = new_connection_latency(&direct, n_conn).await;
    let t_new = new_connection_latency(&tunnel, n_conn).await;
    let d_rps = throughput(&direct, 32, dur).await;
    let t_rps = throughput(&tunnel, 32, dur).await;
    let d_bulk = bulk_mb_s(&direct, bulk).await;
    let t_bulk = bulk_mb_s(&tunnel, bulk).await;
    let t_up = upload_mb_s(&tunnel, Some(&client), backend.addr(), bulk).await;
    let d_up = upload_mb_s(&direct, None, backend.addr(), bulk).await;

    println!(
        "kubechat-bench tunnel (loopback; client, backend, relay and agent each on its own single-threaded runtime and thread; direct = plain HTTP/1.1 to the backend; tunnel = mTLS HTTP/1.1 to the relay, QUIC to the agent, kube client to the backend)"
    );
    println!("{:<44} {:>12} {:>12} {:>12}", "measure", "direct", "tunnel", "delta/ratio");
    println!(
        "{:<44} {:>12.1} {:>12.1} {:>+12.1}",
        "small GET p50, reused connection (us)",
        us(d_lat.p50),
        us(t_lat.p50),
        us(t_lat.p50) - us(d_lat.p50)
    );
    println!(
        "{:<44} {:>12.1} {:>12.1} {:>+12.1}",
        "small GET p99, reused connection (us)",
        us(d_lat.p99),
        us(t_lat.p99),
        us(t_lat.p99) - us(d_lat.p99)
    );
    println!(
        "{:<44} {:>12.1} {:>12.1} {:>+12.1}",
        "  of which kube Client::send alone, p50 (us)",
        us(d_lat.p50),
        us(k_lat.p50),
        us(k_lat.p50) - us(d_lat.p50)
    );
    println!("{:<44} {:>12} {:>12.1}", "  floor: bare QUIC stream round trip p50 (us)", "", us(q_lat.p50));
    println!(
        "{:<44} {:>12.1} {:>12.1} {:>+12.1}",
        "small GET p50, new connection each (us)",
        us(d_new.p50),
        us(t_new.p50),
        us(t_new.p50) - us(d_new.p50)
    );
    println!("{:<44} {:>12.0} {:>12.0} {:>11.2}x", "32 connections, requests/s", d_rps, t_rps, t_rps / d_rps);
    println!(
        "{:<44} {:>12.0} {:>12.0} {:>11.2}x",
        &format!("{} MiB download, MB/s", bulk >> 20),
        d_bulk,
        t_bulk,
        t_bulk / d_bulk
    );
    println!(
        "{:<44} {:>12.0} {:>12.0} {:>11.2}x",
        &format!("{} MiB upload, MB/s", bulk >> 20),
        d_up,
        t_up,
        t_up / d_up
    );
    let json = serde_json::json!({
        "bench": "tunnel",
        "quick": quick,
        "reused_p50_us": { "direct": us(d_lat.p50), "tunnel": us(t_lat.p50), "delta": us(t_lat.p50) - us(d_lat.p50) },
        "reused_p99_us": { "direct": us(d_lat.p99), "tunnel": us(t_lat.p99), "delta": us(t_lat.p99) - us(d_lat.p99) },
        "kube_client_p50_us": { "direct": us(d_lat.p50), "kube_client": us(k_lat.p50), "delta": us(k_lat.p50) - us(d_lat.p50) },
        "bare_quic_rtt_us": { "p50": us(q_lat.p50), "p99": us(q_lat.p99) },
        "new_conn_p50_us": { "direct": us(d_new.p50), "tunnel": us(t_new.p50), "delta": us(t_new.p50) - us(d_new.p50) },
        "rps_32_conns": { "direct": d_rps, "tunnel": t_rps, "ratio": t_rps / d_rps },
        "download_mb_s": { "bytes": bulk, "direct": d_bulk, "tunnel": t_bulk, "ratio": t_bulk / d_bulk },
        "upload_mb_s": { "bytes": bulk, "direct": d_up, "tunnel": t_up, "ratio": t_up / d_up },
    });
    println!("{json}");
}

/// Starts a component on its own current-thread runtime in a new thread,
/// which keeps running until the process exits; returns what `start` made.
fn in_own_runtime<T, Fut>(name: &str, start: impl FnOnce() -> Fut + Send + 'static) -> T
where
    T: Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                tx.send(start().await).expect("main thread waits");
                std::future::pending::<()>().await;
            });
        })
        .expect("spawn thread");
    rx.recv().expect("component started")
}

/// The allocator the binaries use.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // Logging as the binaries run it (`info` unless KUBECHAT_LOG says
    // otherwise), installed before the test platform's own capture (which
    // keeps every TRACE line of our crates for the secret scan: a cost no
    // deployment pays, and not KubeChat's to measure).
    kubechat_tests::logscan::opt_out();
    kubechat_transport::process::init_tracing();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    match args.first().map(String::as_str) {
        Some("tunnel") => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(tunnel_bench(quick));
        }
        Some("chat") => {
            let rt =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            rt.block_on(chat_bench(quick));
        }
        Some("kube-path") => {
            // The whole platform in one process, as the tests run it: two
            // worker threads for everything (this machine has two cores).
            let rt =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            rt.block_on(kube_path::bench(quick));
        }
        _ => {
            eprintln!("usage: kubechat-bench tunnel|kube-path|chat [--quick]");
            std::process::exit(64);
        }
    }
}

/// Direct to kube-sim vs kubectl's way through KubeChat: control plane
/// (authorize, record, sign) → relay → QUIC → agent → kube-sim.
mod kube_path {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http::Request;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    use kubechat_control_plane::Secret;
    use kubechat_tests::platform::{World, world_full};
    use kubechat_tests::stack::AGENT_TOKEN;
    use rustls_pki_types::ServerName;
    use serde_json::json;

    use super::{Latency, percentile, us};

    /// One way to the pods of `web`.
    #[derive(Clone)]
    pub(super) struct Target {
        addr: std::net::SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        path: String,
        headers: Vec<(String, String)>,
        /// A JSON body to POST instead of a GET.
        body: Option<String>,
    }

    impl Target {
        /// The same request, POSTed with a JSON `body`.
        pub(super) fn posting(mut self, body: serde_json::Value) -> Self {
            self.body = Some(body.to_string());
            self
        }

        pub(super) fn new(url: &str, ca_pem: &str, path: String, headers: Vec<(String, String)>) -> Self {
            let mut roots = rustls::RootCertStore::empty();
            for c in kubechat_transport::tls::parse_ca_pem(ca_pem).expect("ca") {
                roots.add(c).expect("root");
            }
            let mut tls = rustls::ClientConfig::builder_with_provider(kubechat_transport::tls::provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            let addr = url.trim_start_matches("https://").parse().expect("https://ip:port");
            Self { addr, tls: Arc::new(tls), path, headers, body: None }
        }

        pub(super) async fn connect(&self) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
            let tcp = tokio::net::TcpStream::connect(self.addr).await.expect("connect");
            tcp.set_nodelay(true).expect("nodelay");
            let name = ServerName::IpAddress(self.addr.ip().into());
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp).await.expect("tls");
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.expect("handshake");
            tokio::spawn(conn);
            send
        }

        pub(super) async fn get(&self, send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>) {
            let method = if self.body.is_some() { http::Method::POST } else { http::Method::GET };
            let mut req =
                Request::builder().method(method).uri(&self.path).header(http::header::HOST, self.addr.to_string());
            for (k, v) in &self.headers {
                req = req.header(k, v);
            }
            let body = match &self.body {
                Some(b) => {
                    req = req.header(http::header::CONTENT_TYPE, "application/json");
                    Bytes::from(b.clone())
                }
                None => Bytes::new(),
            };
            send.ready().await.expect("ready");
            let resp = send.send_request(req.body(Full::new(body)).expect("request")).await.expect("send");
            let status = resp.status();
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            assert!(status.is_success(), "status {status}: {}", String::from_utf8_lossy(&bytes));
        }
    }

    pub(super) async fn latency(t: &Target, n: usize) -> Latency {
        latency_and_cpu(t, n).await.0
    }

    /// Latency on one reused connection, and the CPU time the whole
    /// process spent per request meanwhile: with one request in flight,
    /// what of the latency is work (on either core) and what is waiting.
    pub(super) async fn latency_and_cpu(t: &Target, n: usize) -> (Latency, Duration) {
        let mut conn = t.connect().await;
        for _ in 0..n / 10 {
            t.get(&mut conn).await;
        }
        let mut samples = Vec::with_capacity(n);
        let cpu = cpu_time();
        for _ in 0..n {
            let at = Instant::now();
            t.get(&mut conn).await;
            samples.push(at.elapsed());
        }
        let cpu = (cpu_time() - cpu) / n.max(1) as u32;
        samples.sort();
        (Latency { p50: percentile(&samples, 0.5), p99: percentile(&samples, 0.99) }, cpu)
    }

    /// CPU time this process has used (every thread), from /proc/self/stat
    /// (user and system time in USER_HZ = 100 ticks per second).
    fn cpu_time() -> Duration {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command name (which is in parentheses).
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // utime and stime are fields 14 and 15 of stat, 12 and 13 here.
        Duration::from_millis((ticks(11) + ticks(12)) * 10)
    }

    /// Requests per second with `conns` connections, and the CPU time the
    /// whole process (client, control plane, relay, agent, kube-sim) spent
    /// per request meanwhile.
    async fn throughput(t: &Target, conns: usize, dur: Duration) -> (f64, Duration) {
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let (t, done, stop) = (t.clone(), done.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut conn = t.connect().await;
                while !stop.load(Ordering::Relaxed) {
                    t.get(&mut conn).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(dur / 5).await;
        let start = done.load(Ordering::Relaxed);
        let (at, cpu) = (Instant::now(), cpu_time());
        tokio::time::sleep(dur).await;
        let n = done.load(Ordering::Relaxed) - start;
        let rps = n as f64 / at.elapsed().as_secs_f64();
        let cpu = (cpu_time() - cpu) / n.max(1) as u32;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        (rps, cpu)
    }

    /// The same GET as the control plane sends it to the relay, without the
    /// control plane: `concurrency` requests at a time on its pooled HTTP/2
    /// client to the relay's internal listener, each with a grant the
    /// control plane's signer made and the relay's gate MAC (one grant per
    /// task, renewed every 20 s). What is left is the relay, QUIC, the agent
    /// and kube-sim — the floor the control plane sits on.
    async fn relay_floor_throughput(w: &World, concurrency: usize, dur: Duration) -> (f64, Duration) {
        use kubechat_protocol::grant;
        use kubechat_protocol::messages::Grant;
        let relays = w.app.relays.clone().expect("the control plane's relay client");
        let route = w.app.cache.routes(&w.tenant, &w.cluster).await.expect("routes").pop().expect("a route");
        let gate_key = w.app.signer.gate_key(&route.relay_id);
        // Sealed as the control plane seals it for this route.
        let macs_suffice = route.macs_suffice(w.app.signer.key_id());
        let path = "/api/v1/namespaces/web/pods";
        let uri = format!("https://{}/v1/clusters/{}/k8s{path}", route.internal_address, w.cluster);
        let mint = {
            let (app, tenant, cluster) = (w.app.clone(), w.tenant.clone(), w.cluster.clone());
            move || {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
                let now = now.as_millis() as u64;
                let seal = if macs_suffice {
                    kubechat_protocol::grant::GrantSigner::sign_macs_only
                } else {
                    kubechat_protocol::grant::GrantSigner::sign
                };
                let signed = seal(
                    &app.signer,
                    Grant {
                        request_id: format!("bench-floor-grant-{now}"),
                        tenant: tenant.clone(),
                        cluster: cluster.clone(),
                        user: "kubechat:user:bench@acme.example".into(),
                        groups: vec!["kubechat:tenant:acme".into(), "kubechat:role:tenant_admin".into()],
                        method: "GET".into(),
                        path: path.into(),
                        issued_at_ms: now,
                        expires_at_ms: now + grant::MAX_VALIDITY_MS,
                        key_id: String::new(),
                        client_address: "127.0.0.1".into(),
                        must_audit: false,
                    },
                );
                (grant::to_header(&signed), grant::gate_mac(&gate_key, &signed), Instant::now())
            }
        };
        // Request ids unique in the process (the relay's records carry them).
        static IDS: AtomicU64 = AtomicU64::new(0);
        let ids = &IDS;
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (relays, uri, mint, done, stop) =
                (relays.clone(), uri.clone(), mint.clone(), done.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut minted = mint();
                while !stop.load(Ordering::Relaxed) {
                    if minted.2.elapsed() > Duration::from_secs(20) {
                        minted = mint();
                    }
                    let req = Request::builder()
                        .uri(&uri)
                        .header(grant::HEADER, &minted.0)
                        .header(grant::GATE_HEADER, &minted.1)
                        .header("kubechat-request-id", format!("bench-floor-{}", ids.fetch_add(1, Ordering::Relaxed)))
                        .body(Full::new(Bytes::new()))
                        .expect("request");
                    let resp = relays.send(req).await.expect("the relay answers");
                    let status = resp.status();
                    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
                    assert!(status.is_success(), "status {status}: {}", String::from_utf8_lossy(&bytes));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(dur / 5).await;
        let start = done.load(Ordering::Relaxed);
        let (at, cpu) = (Instant::now(), cpu_time());
        tokio::time::sleep(dur).await;
        let n = done.load(Ordering::Relaxed) - start;
        let rps = n as f64 / at.elapsed().as_secs_f64();
        let cpu = (cpu_time() - cpu) / n.max(1) as u32;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        (rps, cpu)
    }

    /// How warm requests cost fsyncs. strace slows every system call, so
    /// the requests it watches come slower and each group commit takes
    /// fewer of them; hence two measurements: the writer's commits per
    /// request at full speed (its own counter, no strace), and fsync and
    /// fdatasync calls of this process per writer commit under strace
    /// (both less an idle window as long: presence reports and other
    /// background writes). Their product is the fsyncs per warm request.
    async fn fsyncs_per_request(w: &World, t: &Target, n: usize) -> Fsyncs {
        let batches = || w.app.writer.stats().batches.load(Ordering::Relaxed);
        let mut conn = t.connect().await;
        t.get(&mut conn).await;
        let (b0, at) = (batches(), Instant::now());
        for _ in 0..n {
            t.get(&mut conn).await;
        }
        let took = at.elapsed();
        let commits_busy = batches() - b0;
        let b1 = batches();
        tokio::time::sleep(took).await;
        let commits_idle = batches() - b1;
        let commits_per_request = commits_busy.saturating_sub(commits_idle) as f64 / n as f64;
        let per_commit = strace_fsyncs_per_commit(w, t, n).await;
        Fsyncs { commits_per_request, per_commit }
    }

    /// What [`fsyncs_per_request`] measured.
    struct Fsyncs {
        commits_per_request: f64,
        /// `None` without strace.
        per_commit: Option<f64>,
    }

    async fn strace_fsyncs_per_commit(w: &World, t: &Target, n: usize) -> Option<f64> {
        let batches = || w.app.writer.stats().batches.load(Ordering::Relaxed);
        async fn count<F: std::future::Future<Output = ()>>(work: F) -> Option<(u64, Duration)> {
            let pid = std::process::id().to_string();
            let out = tempfile::NamedTempFile::new().ok()?;
            let mut child = tokio::process::Command::new("strace")
                .args(["-f", "-c", "-e", "trace=fsync,fdatasync", "-o"])
                .arg(out.path())
                .args(["-p", &pid])
                .stderr(std::process::Stdio::null())
                .spawn()
                .ok()?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let at = Instant::now();
            work.await;
            let took = at.elapsed();
            let _ = tokio::process::Command::new("kill").args(["-INT", &child.id()?.to_string()]).status().await;
            let _ = child.wait().await;
            let text = std::fs::read_to_string(out.path()).ok()?;
            let calls = text
                .lines()
                .filter(|l| l.ends_with("fsync") || l.ends_with("fdatasync"))
                .filter_map(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
                .sum();
            Some((calls, took))
        }
        let mut conn = t.connect().await;
        t.get(&mut conn).await;
        let b0 = batches();
        let (busy, took) = count(async {
            for _ in 0..n {
                t.get(&mut conn).await;
            }
        })
        .await?;
        let b1 = batches();
        let (idle, _) = count(tokio::time::sleep(took)).await?;
        let b2 = batches();
        let commits = (b1 - b0).saturating_sub(b2 - b1).max(1);
        Some(busy.saturating_sub(idle) as f64 / commits as f64)
    }

    /// Wall time of the real `kubectl get pods -A` (discovery cached: the
    /// median of runs 2–6).
    async fn kubectl_wall(k: &kubechat_tests::kubectl::Kubectl) -> Duration {
        let mut runs = Vec::new();
        for i in 0..6 {
            let at = Instant::now();
            let out = k.ok(&["get", "pods", "-A"]).await;
            assert!(out.contains("Running"));
            if i > 0 {
                runs.push(at.elapsed());
            }
        }
        runs.sort();
        runs[runs.len() / 2]
    }

    struct Figures {
        backend: &'static str,
        direct: Latency,
        kubechat: Latency,
        rps_direct: f64,
        rps_kubechat: f64,
        cpu_direct: Duration,
        cpu_kubechat: Duration,
        /// The relay, QUIC, the agent and kube-sim without the control
        /// plane ([`relay_floor_throughput`]): requests/s and CPU per request.
        rps_floor: f64,
        cpu_floor: Duration,
        cpu_one_direct: Duration,
        cpu_one_kubechat: Duration,
        fsyncs: Fsyncs,
        kubectl_direct: Duration,
        kubectl_kubechat: Duration,
        /// Share of the run's kube-path grants sealed without a signature
        /// (every hop passes them by a MAC).
        unsigned_grants: f64,
    }

    /// Direct: what the agent sends kube-sim for the bench's person — the
    /// same impersonation headers (user, tenant and role groups, the
    /// request id as an extra), so kube-sim does the same work both ways.
    fn direct_target(w: &World) -> Target {
        Target::new(
            &w.sim.url(),
            &w.sim.ca_pem,
            "/api/v1/namespaces/web/pods".into(),
            vec![
                ("authorization".into(), format!("Bearer {AGENT_TOKEN}")),
                ("impersonate-user".into(), "kubechat:user:bench@acme.example".into()),
                ("impersonate-group".into(), "kubechat:tenant:acme".into()),
                ("impersonate-group".into(), "kubechat:role:tenant_admin".into()),
                (
                    kubechat_protocol::headers::REQUEST_ID_EXTRA.to_ascii_lowercase(),
                    "0f8e6b1c-4d2a-4e7b-9c3f-5a6b7c8d9e0f".into(),
                ),
            ],
        )
    }

    async fn measure(w: &World, backend: &'static str, quick: bool) -> Figures {
        let (n, dur) = if quick { (300, Duration::from_secs(1)) } else { (3000, Duration::from_secs(4)) };
        let issued = |seal: &str| w.app.metrics.grants_issued.get(seal) as f64;
        let (signed_before, unsigned_before) = (issued("signed"), issued("macs_only"));
        let token = w.user("bench@acme.example", "tenant_admin").await;
        let user = "kubechat:user:bench@acme.example";
        let direct = direct_target(w);
        let kubechat = Target::new(
            &w.cp_url,
            &w.cp_ca,
            format!("/k8s/clusters/{}/api/v1/namespaces/web/pods", w.cluster),
            vec![("authorization".into(), format!("Bearer {token}"))],
        );
        let (d, cpu_one_d) = latency_and_cpu(&direct, n).await;
        let (k, cpu_one_k) = latency_and_cpu(&kubechat, n).await;
        let (rps_d, cpu_d) = throughput(&direct, 32, dur).await;
        let (rps_k, cpu_k) = throughput(&kubechat, 32, dur).await;
        let (rps_floor, cpu_floor) = relay_floor_throughput(w, 32, dur).await;
        let fsyncs = fsyncs_per_request(w, &kubechat, n.min(500)).await;
        let kc_direct = kubechat_tests::kubectl::Kubectl::new(
            &kube_sim::kubeconfig::KubeconfigSpec {
                name: "direct".into(),
                server: w.sim.url(),
                ca_pem: Some(w.sim.ca_pem.clone()),
                credentials: kube_sim::kubeconfig::Credentials::Token(AGENT_TOKEN.into()),
                impersonate_user: Some(user.into()),
                impersonate_groups: vec!["kubechat:role:tenant_admin".into()],
                namespace: None,
            }
            .to_yaml(),
        );
        let kc_kubechat = w.kubectl(&token, &w.cluster);
        let (kubectl_direct, kubectl_kubechat) = (kubectl_wall(&kc_direct).await, kubectl_wall(&kc_kubechat).await);
        let unsigned = issued("macs_only") - unsigned_before;
        let unsigned_grants = unsigned / (unsigned + issued("signed") - signed_before).max(1.0);
        Figures {
            backend,
            direct: d,
            kubechat: k,
            rps_direct: rps_d,
            rps_kubechat: rps_k,
            cpu_direct: cpu_d,
            cpu_kubechat: cpu_k,
            rps_floor,
            cpu_floor,
            cpu_one_direct: cpu_one_d,
            cpu_one_kubechat: cpu_one_k,
            fsyncs,
            kubectl_direct,
            kubectl_kubechat,
            unsigned_grants,
        }
    }

    /// Each request-duration histogram series with more than 1,000
    /// observations: its mean in seconds, and the shares of observations
    /// over 1.6 ms and over 3.2 ms (two of its bucket bounds: where the
    /// tail is made).
    fn mean_durations(metrics: &str) -> Vec<(String, f64, f64, f64)> {
        let value = |line: &str| line.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()).unwrap_or(0.0);
        let find = |series: &str| metrics.lines().find(|l| l.rsplit_once(' ').is_some_and(|(s, _)| s == series));
        let mut out = Vec::new();
        for line in metrics.lines().filter(|l| l.contains("request_duration_seconds_sum")) {
            let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
            let count = find(&series.replacen("_sum", "_count", 1)).map_or(0.0, value);
            if count > 1000.0 {
                // `name_bucket{le="0.0016",labels}`.
                let bucket = |le: &str| {
                    let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
                    let name = name.replacen("_sum", "_bucket", 1);
                    find(&format!("{name}{{le=\"{le}\",{labels}")).map_or(f64::NAN, value)
                };
                let over = |le: &str| 1.0 - bucket(le) / count;
                out.push((series.replacen("_sum", "", 1), value(line) / count, over("0.0016"), over("0.0032")));
            }
        }
        out
    }

    /// The relay as it ships: with an event spool on disk (its audit
    /// record and usage event of every request, published to the control
    /// plane). The directory lives until the process ends.
    fn spool(r: &mut kubechat_relay::Config) {
        let dir = tempfile::tempdir().expect("a spool directory").keep();
        r.spool_dir = Some(dir);
    }

    fn limits(c: &mut kubechat_control_plane::Config) {
        c.per_token_rps = 1e9;
        c.per_tenant_rps = 1e9;
    }

    pub(super) async fn bench(quick: bool) {
        // For a profiler: only the KubeChat load (32 connections, or
        // KUBECHAT_BENCH_PROFILE_CONNS), for this many seconds, after a line
        // on stderr saying it starts.
        if let Some(secs) = std::env::var("KUBECHAT_BENCH_PROFILE_SECS").ok().and_then(|s| s.parse::<u64>().ok()) {
            let conns = std::env::var("KUBECHAT_BENCH_PROFILE_CONNS").ok().and_then(|s| s.parse().ok()).unwrap_or(32);
            // SQLite, or PostgreSQL with KUBECHAT_BENCH_PROFILE_DB=postgresql.
            let w = if std::env::var("KUBECHAT_BENCH_PROFILE_DB").is_ok_and(|d| d == "postgresql") {
                let url = kubechat_tests::postgres::fresh_database("bench").await;
                world_full(json!({}), spool, move |c| {
                    limits(c);
                    c.database_url = Secret(url);
                })
                .await
            } else {
                world_full(json!({}), spool, limits).await
            };
            let token = w.user("bench@acme.example", "tenant_admin").await;
            let kubechat = if std::env::var("KUBECHAT_BENCH_PROFILE_TARGET").is_ok_and(|t| t == "direct") {
                // The same load straight to kube-sim, as the full run's
                // *direct* sends it (to compare profiles).
                direct_target(&w)
            } else {
                Target::new(
                    &w.cp_url,
                    &w.cp_ca,
                    format!("/k8s/clusters/{}/api/v1/namespaces/web/pods", w.cluster),
                    vec![("authorization".into(), format!("Bearer {token}"))],
                )
            };
            // The full run's one-connection latency (3,000 requests on a
            // fresh world), then again once warm.
            for when in ["fresh", "warm"] {
                let l = latency(&kubechat, 3000).await;
                eprintln!("profile: one connection, {when}: p50 {:.0} µs, p99 {:.0} µs", us(l.p50), us(l.p99));
            }
            eprintln!("profile: load starts for {secs} s (pid {})", std::process::id());
            let (rps, cpu) = throughput(&kubechat, conns, Duration::from_secs(secs)).await;
            eprintln!("profile: {rps:.0} requests/s, {:.1} µs CPU per request", cpu.as_secs_f64() * 1e6);
            // Where a request's time goes: each component's mean time
            // inside it (its own work plus everything downstream).
            for (name, admin) in [("control plane", w.cp_admin), ("relay", w.relay.admin), ("agent", w.agent.admin)] {
                for (series, mean, over_1_6, over_3_2) in
                    mean_durations(&kubechat_tests::platform::admin_metrics(admin).await)
                {
                    eprintln!(
                        "profile: {name}: {series} mean {:.1} µs, {:.2} % over 1.6 ms, {:.2} % over 3.2 ms",
                        mean * 1e6,
                        over_1_6 * 100.0,
                        over_3_2 * 100.0
                    );
                }
            }
            return;
        }
        let mut all = Vec::new();
        {
            let w = world_full(json!({}), spool, limits).await;
            all.push(measure(&w, "sqlite", quick).await);
        }
        match std::env::var("KUBECHAT_TEST_POSTGRES_URL") {
            Ok(_) => {
                let url = kubechat_tests::postgres::fresh_database("bench").await;
                let w = world_full(json!({}), spool, move |c| {
                    limits(c);
                    c.database_url = Secret(url);
                })
                .await;
                all.push(measure(&w, "postgresql", quick).await);
            }
            Err(_) => eprintln!(
                "KUBECHAT_TEST_POSTGRES_URL is not set: PostgreSQL not measured (bash scripts/postgres.sh prints one)"
            ),
        }
        println!(
            "kubechat-bench kube-path (loopback, one process, 2 worker threads; direct = HTTPS to kube-sim as the agent sends it; kubechat = HTTPS to the control plane → relay → QUIC → agent → kube-sim; GET /api/v1/namespaces/web/pods)"
        );
        println!("{:<12} {:<40} {:>12} {:>12} {:>12}", "database", "measure", "direct", "kubechat", "delta/ratio");
        let mut json = Vec::new();
        for f in &all {
            let row = |m: &str, d: f64, k: f64| {
                println!("{:<12} {:<40} {:>12.3} {:>12.3} {:>+12.3}", f.backend, m, d, k, k - d);
            };
            row("p50, one connection (ms)", us(f.direct.p50) / 1e3, us(f.kubechat.p50) / 1e3);
            row("p99, one connection (ms)", us(f.direct.p99) / 1e3, us(f.kubechat.p99) / 1e3);
            row("CPU per request, one connection (ms)", us(f.cpu_one_direct) / 1e3, us(f.cpu_one_kubechat) / 1e3);
            println!(
                "{:<12} {:<40} {:>12.0} {:>12.0} {:>11.2}x",
                f.backend,
                "32 connections, requests/s",
                f.rps_direct,
                f.rps_kubechat,
                f.rps_kubechat / f.rps_direct
            );
            println!(
                "{:<12} {:<40} {:>12.0} {:>12.0} {:>11.2}x",
                f.backend,
                "CPU per request at 32 connections (us)",
                us(f.cpu_direct),
                us(f.cpu_kubechat),
                us(f.cpu_kubechat) / us(f.cpu_direct)
            );
            println!(
                "{:<12} {:<40} {:>12.0} {:>12.0} {:>11.2}x",
                f.backend,
                "32 streams, relay floor (no CP), req/s",
                f.rps_direct,
                f.rps_floor,
                f.rps_floor / f.rps_direct
            );
            println!(
                "{:<12} {:<40} {:>12.0} {:>12.0} {:>11.2}x",
                f.backend,
                "CPU per request, relay floor (us)",
                us(f.cpu_direct),
                us(f.cpu_floor),
                us(f.cpu_floor) / us(f.cpu_direct)
            );
            let single = |m: &str, v: String| println!("{:<12} {:<40} {:>12} {:>12}", f.backend, m, "", v);
            single("writer commits per warm request", format!("{:.3}", f.fsyncs.commits_per_request));
            match f.fsyncs.per_commit {
                Some(per) => {
                    single("fsyncs per writer commit (strace)", format!("{per:.2}"));
                    single("fsyncs per warm request", format!("{:.3}", per * f.fsyncs.commits_per_request));
                }
                None => single("fsyncs per writer commit", "no strace".into()),
            }
            row("kubectl get pods -A, wall (ms)", us(f.kubectl_direct) / 1e3, us(f.kubectl_kubechat) / 1e3);
            single("grants sent without a signature", format!("{:.1} %", f.unsigned_grants * 100.0));
            json.push(json!({
                "unsigned_grants_share": f.unsigned_grants,
                "database": f.backend,
                "p50_ms": {"direct": us(f.direct.p50) / 1e3, "kubechat": us(f.kubechat.p50) / 1e3},
                "p99_ms": {"direct": us(f.direct.p99) / 1e3, "kubechat": us(f.kubechat.p99) / 1e3},
                "rps_32": {"direct": f.rps_direct, "kubechat": f.rps_kubechat, "ratio": f.rps_kubechat / f.rps_direct},
                "cpu_us_per_request_32": {"direct": us(f.cpu_direct), "kubechat": us(f.cpu_kubechat)},
                "relay_floor_32": {"rps": f.rps_floor, "ratio": f.rps_floor / f.rps_direct, "cpu_us_per_request": us(f.cpu_floor)},
                "cpu_us_per_request_one": {"direct": us(f.cpu_one_direct), "kubechat": us(f.cpu_one_kubechat)},
                "writer_commits_per_warm_request": f.fsyncs.commits_per_request,
                "fsyncs_per_writer_commit": f.fsyncs.per_commit,
                "fsyncs_per_warm_request": f.fsyncs.per_commit.map(|p| p * f.fsyncs.commits_per_request),
                "kubectl_get_pods_all_ms": {"direct": us(f.kubectl_direct) / 1e3, "kubechat": us(f.kubectl_kubechat) / 1e3},
            }));
        }
        println!("{}", json!({"bench": "kube-path", "quick": quick, "runs": json}));
    }
}

/// A read through chat (plan + run) and a write's plan (+ server-side dry
/// run) against the same read through the kube path, in one run.
async fn chat_bench(quick: bool) {
    use kube_path::{Target, latency};
    use serde_json::json;
    let n = if quick { 200 } else { 2000 };
    let w = kubechat_tests::platform::world_full(
        json!({}),
        |_| {},
        |c| {
            c.per_token_rps = 1e9;
            c.per_tenant_rps = 1e9;
        },
    )
    .await;
    let token = w.user("bench@acme.example", "tenant_user").await;
    let auth = vec![("authorization".to_string(), format!("Bearer {token}"))];
    let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let mut kube_headers = auth.clone();
    kube_headers.push(("accept".into(), table.into()));
    let kube = Target::new(
        &w.cp_url,
        &w.cp_ca,
        format!("/k8s/clusters/{}/api/v1/namespaces/web/pods", w.cluster),
        kube_headers,
    );
    let commands = format!("/v1/clusters/{}/commands", w.cluster);
    let read = Target::new(&w.cp_url, &w.cp_ca, commands.clone(), auth.clone())
        .posting(json!({"argv": ["get", "pods", "-n", "web"]}));
    let write = Target::new(&w.cp_url, &w.cp_ca, commands.clone(), auth.clone())
        .posting(json!({"argv": ["scale", "deployment", "api", "-n", "web", "--replicas=2"]}));
    let english = Target::new(&w.cp_url, &w.cp_ca, commands, auth).posting(json!({"text": "show pods in web"}));
    let k = latency(&kube, n).await;
    let r = latency(&read, n).await;
    let e = latency(&english, n).await;
    let wr = latency(&write, n / 4).await;
    println!(
        "kubechat-bench chat (loopback, one process, 2 worker threads, SQLite; each through control plane → relay → QUIC → agent → kube-sim)"
    );
    println!("{:<44} {:>10} {:>10} {:>12}", "request", "p50 (ms)", "p99 (ms)", "Δp50 (ms)");
    let row = |name: &str, l: &Latency| {
        println!(
            "{:<44} {:>10.3} {:>10.3} {:>+12.3}",
            name,
            us(l.p50) / 1e3,
            us(l.p99) / 1e3,
            (us(l.p50) - us(k.p50)) / 1e3
        )
    };
    row("kube path: GET pods (Table), kubectl's way", &k);
    row("chat: get pods -n web (plan + run)", &r);
    row("chat: \"show pods in web\" (English, + run)", &e);
    row("chat: scale … (plan + server-side dry run)", &wr);
    println!(
        "{}",
        json!({"bench": "chat", "quick": quick, "p50_ms": {"kube": us(k.p50) / 1e3, "chat_read": us(r.p50) / 1e3, "chat_english": us(e.p50) / 1e3, "chat_write_plan": us(wr.p50) / 1e3},
               "p99_ms": {"kube": us(k.p99) / 1e3, "chat_read": us(r.p99) / 1e3, "chat_english": us(e.p99) / 1e3, "chat_write_plan": us(wr.p99) / 1e3}})
    );
}
