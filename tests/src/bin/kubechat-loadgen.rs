//! `kubechat-loadgen`: opens N simulated agents from one process — real
//! mutual-TLS QUIC tunnels, each with its own certificate, Hello and
//! heartbeats — against a relay process, and measures what the relay pays
//! for them: resident memory per idle tunnel, mTLS handshakes per second, and
//! how long until every agent is back after the relay is killed (SIGKILL)
//! and restarted.
//!
//! ```text
//! cargo build --release -p kubechat-tests --bins
//! target/release/kubechat-loadgen [--counts 1000,5000,10000] [--transport quic|websocket] [--quick]
//! ```
//!
//! The relay is the real binary (`test-relay`, next to this one), so its
//! memory is measured alone (`VmRSS` of its process).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kubechat_protocol::messages::{Hello, Ping, control_message};
use kubechat_protocol::version;
use kubechat_tests::pki::TestPki;
use kubechat_tests::stack::{RelayProcess, free_port};
use kubechat_transport::quic::{self, QuicConnection, QuicSettings};
use kubechat_transport::{Connection, FramedRecv, FramedSend, tls};
use rand::Rng;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Handshakes in flight at once (a fleet reconnecting is not a stampede of
/// unbounded size either: agents back off).
const CONCURRENT_HANDSHAKES: usize = 256;
/// Simulated agents' heartbeat; the path is declared dead after three.
const HEARTBEAT: Duration = Duration::from_secs(1);

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// How a simulated agent reaches the relay.
#[derive(Clone)]
enum Dial {
    Quic { endpoint: quinn::Endpoint, relay: SocketAddr, cfg: quinn::ClientConfig },
    WebSocket { relay: SocketAddr, tls: Arc<rustls::ClientConfig> },
}

impl Dial {
    async fn connect(&self) -> Result<Arc<dyn Connection>, String> {
        match self {
            Self::Quic { endpoint, relay, cfg } => {
                let conn = endpoint.connect_with(cfg.clone(), *relay, "127.0.0.1").map_err(|e| e.to_string())?;
                let conn = conn.await.map_err(|e| e.to_string())?;
                Ok(Arc::new(QuicConnection::new(conn)))
            }
            Self::WebSocket { relay, tls } => {
                let tcp = tokio::net::TcpStream::connect(relay).await.map_err(|e| e.to_string())?;
                let name = rustls_pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
                let stream = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| e.to_string())?;
                let url = format!("wss://{relay}{}", kubechat_transport::ws::TUNNEL_PATH);
                let config = Some(kubechat_transport::ws::websocket_config());
                let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, config)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Arc::new(kubechat_transport::ws::WsConnection::new(
                    kubechat_transport::ws::WsIo::new(ws),
                    true,
                    *relay,
                )))
            }
        }
    }
}

/// One simulated agent: connect, Hello, heartbeat until the path dies,
/// back off with jitter, again — until `stop`.
async fn agent(dial: Dial, up: Arc<AtomicUsize>, gate: Arc<Semaphore>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(50);
    while !stop.is_cancelled() {
        let session = async {
            let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            let conn = tokio::time::timeout(Duration::from_secs(10), dial.connect())
                .await
                .map_err(|_| "timeout".to_string())??;
            let s = conn.open_stream().await.map_err(|e| e.to_string())?;
            let (mut send, mut recv) = (FramedSend::new(s.send), FramedRecv::for_small_messages(s.recv, 64 * 1024));
            let hello = control_message::Kind::Hello(Hello {
                versions: version::SUPPORTED_VERSIONS.to_vec(),
                capabilities: vec![],
                agent_version: "loadgen".into(),
                agent_id: "loadgen".into(),
                ..Default::default()
            });
            send.send_control_message(hello).await.map_err(|e| e.to_string())?;
            match recv.next_control_message().await {
                Ok(Some(control_message::Kind::HelloAck(_))) => Ok((conn, send, recv)),
                other => Err(format!("no HelloAck: {other:?}")),
            }
        };
        let (conn, mut send, mut recv) = match session.await {
            Ok(s) => s,
            Err(_) => {
                let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64);
                tokio::time::sleep(Duration::from_millis(jitter)).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        up.fetch_add(1, Ordering::SeqCst);
        let mut last = Instant::now();
        let mut nonce = 0;
        let mut tick = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if last.elapsed() > HEARTBEAT * 3 {
                        break;
                    }
                    nonce += 1;
                    if send.send_control_message(control_message::Kind::Ping(Ping { nonce })).await.is_err() {
                        break;
                    }
                }
                m = recv.next_control_message() => match m {
                    Ok(Some(_)) => last = Instant::now(),
                    _ => break,
                },
                () = stop.cancelled() => break,
            }
        }
        conn.close(kubechat_protocol::ErrorCode::Ok, "loadgen");
        up.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn wait_until(what: &str, limit: Duration, cond: impl Fn() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            eprintln!("  {what}: not reached within {limit:?}");
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some(start.elapsed())
}

struct Run {
    transport: &'static str,
    count: usize,
    per_tunnel_kib: f64,
    handshakes_per_s: f64,
    back_after_restart_s: Option<f64>,
}

async fn run(count: usize, websocket: bool, pki: &Arc<TestPki>, certs: &[tls::Identity], dir: &std::path::Path) -> Run {
    let bin = std::env::current_exe().expect("exe").with_file_name("test-relay");
    let (q, i, a, w) = (free_port(), free_port(), free_port(), free_port());
    let mut args: Vec<String> = ["--max-streams-per-tunnel", "16", "--idle-timeout-secs", "6", "--heartbeat-secs", "1"]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
    args.extend(["--ws-listen".to_string(), format!("127.0.0.1:{w}")]);
    let ws_addr: SocketAddr = ([127, 0, 0, 1], w).into();
    let mut relay = RelayProcess::spawn_with(bin.to_str().expect("path"), dir, q, i, a, &args);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = relay.pid();
    let base = rss_kib(pid);
    let settings = QuicSettings {
        idle_timeout: HEARTBEAT * 4,
        keep_alive: HEARTBEAT,
        max_incoming_streams: 16,
        ..QuicSettings::default()
    };
    let endpoints: Vec<quinn::Endpoint> =
        (0..16).map(|_| quic::client_endpoint(relay.quic).expect("endpoint")).collect();
    let up = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(CONCURRENT_HANDSHAKES));
    let stop = CancellationToken::new();
    let started = Instant::now();
    for (n, id) in certs.iter().take(count).enumerate() {
        let mut tls = tls::tunnel_client_config(id, &pki.relay_ca()).expect("tls");
        let dial = if websocket {
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            Dial::WebSocket { relay: ws_addr, tls: Arc::new(tls) }
        } else {
            let cfg = quic::client_config(tls, &settings).expect("quic");
            Dial::Quic { endpoint: endpoints[n % endpoints.len()].clone(), relay: relay.quic, cfg }
        };
        tokio::spawn(agent(dial, up.clone(), gate.clone(), stop.clone()));
    }
    let u = up.clone();
    let connected = wait_until("all agents up", Duration::from_secs(300), || u.load(Ordering::SeqCst) >= count).await;
    let handshakes_per_s = count as f64 / connected.unwrap_or(started.elapsed()).as_secs_f64();
    // Idle for a few heartbeats, then weigh the relay.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let loaded = rss_kib(pid);
    let per_tunnel_kib = loaded.saturating_sub(base) as f64 / count as f64;

    // SIGKILL, restart on the same ports, time until every agent is back.
    relay.kill();
    let u = up.clone();
    wait_until("agents notice", Duration::from_secs(60), || u.load(Ordering::SeqCst) == 0).await;
    let restarted = Instant::now();
    let relay2 = RelayProcess::spawn_with(bin.to_str().expect("path"), dir, q, i, a, &args);
    let u = up.clone();
    let back = wait_until("all agents back", Duration::from_secs(120), || u.load(Ordering::SeqCst) >= count).await;
    let back_after_restart_s = back.map(|_| restarted.elapsed().as_secs_f64());
    stop.cancel();
    drop(relay2);
    Run {
        transport: if websocket { "websocket" } else { "quic" },
        count,
        per_tunnel_kib,
        handshakes_per_s,
        back_after_restart_s,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let counts: Vec<usize> = match args.iter().position(|a| a == "--counts") {
        Some(p) => args.get(p + 1).map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect()).unwrap_or_default(),
        None if quick => vec![200],
        None => vec![1000, 5000, 10000],
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let pki = Arc::new(TestPki::new());
        let dir = tempfile::tempdir().expect("tempdir");
        pki.write_relay_files(dir.path());
        let max = counts.iter().copied().max().unwrap_or(0);
        let t = Instant::now();
        let certs: Vec<tls::Identity> = (0..max)
            .map(|i| pki.agent_cert("loadgen", &format!("c{i}")).identity().expect("identity"))
            .collect();
        eprintln!("{max} agent certificates in {:.1}s", t.elapsed().as_secs_f64());
        println!("| transport | agents | relay RSS per idle tunnel | mTLS handshakes/s (256 at a time) | all back after SIGKILL + restart |");
        println!("|---|---:|---:|---:|---:|");
        let mut json = Vec::new();
        let transports: Vec<bool> = match args.iter().position(|a| a == "--transport").and_then(|p| args.get(p + 1)) {
            Some(t) if t == "quic" => vec![false],
            Some(t) if t == "websocket" => vec![true],
            _ => vec![false, true],
        };
        for (websocket, c) in transports.iter().flat_map(|w| counts.iter().map(move |c| (*w, *c))) {
            let r = run(c, websocket, &pki, &certs, dir.path()).await;
            println!(
                "| {} | {} | {:.1} KiB | {:.0} | {} |",
                r.transport,
                r.count,
                r.per_tunnel_kib,
                r.handshakes_per_s,
                r.back_after_restart_s.map_or("not within 120 s".into(), |s| format!("{s:.2} s"))
            );
            json.push(serde_json::json!({
                "transport": r.transport,
                "agents": r.count,
                "rss_kib_per_tunnel": r.per_tunnel_kib,
                "handshakes_per_s": r.handshakes_per_s,
                "back_after_restart_s": r.back_after_restart_s,
            }));
        }
        println!("{}", serde_json::json!({"bench": "agents", "runs": json}));
    });
}
