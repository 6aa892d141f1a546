//! What the presence and events tests share: a control plane on SQLite or
//! PostgreSQL with TLS, an internal listener and enrollment; gRPC clients
//! acting as relays.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kubechat_control_plane::client::Client;
use kubechat_control_plane::enroll::Enrollment;
use kubechat_control_plane::{App, Config, ControlPlane, RelayTls, Secret};
use kubechat_protocol::presence::presence_client::PresenceClient;
use kubechat_protocol::presence::{PresenceReport, TunnelInfo};
use kubechat_transport::pki::{self, DevPki};
use kubechat_transport::tls::{self, Identity};
use serde_json::json;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

pub const ADMIN: &str = "kc_presencetestplatformadmintoken000000000";

pub type Grpc = PresenceClient<HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, tonic::body::Body>>;

pub async fn databases() -> Vec<(String, Option<tempfile::TempDir>)> {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!("sqlite://{}?mode=rwc", dir.path().join("cp.db").display());
    let base = std::env::var("KUBECHAT_TEST_POSTGRES_URL")
        .expect("KUBECHAT_TEST_POSTGRES_URL is not set: run `bash scripts/test.sh`");
    let name = format!("kc_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::AnyConnection::connect(&base).await.expect("connect to PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create a test database");
    let pg = format!("{}/{name}", base.rsplit_once('/').expect("url has a database").0);
    vec![(sqlite, Some(dir)), (pg, None)]
}

pub struct Env {
    pub pki: DevPki,
    pub base: String,
    pub internal: std::net::SocketAddr,
    pub admin: Client,
    pub app: Arc<App>,
    pub _shutdown: tokio_util::sync::DropGuard,
}

pub async fn start(url: &str) -> Env {
    let pki = DevPki::generate().expect("pki");
    let mut cfg = Config::new(url);
    cfg.platform_admin_token = Some(Secret(ADMIN.into()));
    cfg.tls = Some(pki.relay_cert("control-plane", &["127.0.0.1"]).expect("cert").identity().expect("identity"));
    cfg.relays = Some(RelayTls {
        client: pki.internal_client_cert("cp").expect("cert").identity().expect("identity"),
        relay_ca: tls::parse_ca_pem(pki.relay_ca.cert_pem()).expect("ca"),
    });
    cfg.internal_listen = Some(([127, 0, 0, 1], 0).into());
    cfg.enrollment = Some(Enrollment {
        agent_ca: Arc::new(pki::CertAuthority::from_pem(pki.agent_ca.cert_pem(), &agent_ca_key(&pki)).expect("ca")),
        relay_ca_pem: pki.relay_ca.cert_pem().to_string(),
        relays: vec![("local".into(), "127.0.0.1:7443".into())],
        cert_lifetime: Duration::from_secs(3600),
        bootstrap_lifetime: Duration::from_secs(3600),
        renewal_overlap: Duration::from_secs(0),
    });
    let cp = ControlPlane::bind(cfg).await.expect("start");
    let base = format!("https://{}", cp.addr());
    let internal = cp.internal_addr().expect("internal listener");
    let app = cp.app();
    let shutdown = CancellationToken::new();
    tokio::spawn(cp.run(shutdown.clone()));
    let admin = Client::new_tls(&base, Some(Secret(ADMIN.into())), pki.relay_ca.cert_pem());
    Env { pki, base, internal, admin, app, _shutdown: shutdown.drop_guard() }
}

/// The agent CA's key, through the dev set a relay operator would write.
pub fn agent_ca_key(pki: &DevPki) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = kubechat_protocol::ClusterIdentity::new("x", "y").expect("id");
    pki.write_dev_set(dir.path(), "relay-0", &["127.0.0.1"], &id).expect("write");
    std::fs::read_to_string(dir.path().join("agent-ca.key")).expect("read")
}

pub fn relay_client(env: &Env, identity: &Identity) -> Grpc {
    let roots = tls::parse_ca_pem(env.pki.relay_ca.cert_pem()).expect("ca");
    let cfg = tls::internal_client_config(identity, &roots, &[]).expect("tls");
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(cfg).https_only().enable_http2().build();
    let http = HyperClient::builder(TokioExecutor::new()).http2_only(true).build(https);
    PresenceClient::with_origin(http, format!("https://{}", env.internal).parse().expect("uri"))
}

pub fn relay_identity(env: &Env, id: &str) -> Identity {
    env.pki.relay_cert(id, &["127.0.0.1"]).expect("cert").identity().expect("identity")
}

pub fn tunnel(id: u64, tenant: &str, cluster: &str) -> TunnelInfo {
    TunnelInfo {
        tunnel_id: id,
        tenant: tenant.into(),
        cluster: cluster.into(),
        agent_id: "agent-0".into(),
        agent_version: "0.1.0".into(),
        transport: "quic".into(),
        remote_addr: "127.0.0.1:5000".into(),
        connected_at_ms: 1,
        certificate_serial: "01".into(),
        rtt_us: 850,
        open_streams: 2,
        ..Default::default()
    }
}

pub fn report(relay: &str, epoch: &str, seq: u64, full: bool, up: Vec<TunnelInfo>, lease_ms: u32) -> PresenceReport {
    PresenceReport {
        relay_id: relay.into(),
        region: "eu-west".into(),
        internal_address: "127.0.0.1:7444".into(),
        epoch: epoch.into(),
        seq,
        full,
        up,
        down: Vec::new(),
        lease_ms,
        revocations_version: 0,
        gate_key_ids: Vec::new(),
    }
}

pub async fn tenant_and_cluster(env: &Env) -> (Client, String, String, String) {
    let t = env
        .admin
        .post("/v1/tenants", &json!({"name": "Acme", "slug": "acme", "plan": "team", "adminEmail": "a@acme.example"}))
        .await
        .expect("reach");
    assert_eq!(t.status, 201, "{}", t.body);
    let tid = t.body["tenant"]["id"].as_str().expect("id").to_string();
    let ta = env.admin.with_token(t.body["token"].as_str().expect("token"));
    let c = ta.post(&format!("/v1/tenants/{tid}/clusters"), &json!({"name": "prod"})).await.expect("reach");
    assert_eq!(c.status, 201, "{}", c.body);
    let cid = c.body["id"].as_str().expect("id").to_string();
    let token = c.body["bootstrapToken"].as_str().expect("token").to_string();
    (ta, tid, cid, token)
}

pub async fn connected(ta: &Client, tid: &str, cid: &str) -> bool {
    let r = ta.get(&format!("/v1/tenants/{tid}/clusters/{cid}")).await.expect("reach");
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["connected"] == json!(true)
}
