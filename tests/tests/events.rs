//! Audit and usage events end to end: kubectl sessions audited with every
//! request (refusals included), a full spool refusing what must be audited,
//! and no event lost or doubled when the control plane is down, killed with
//! SIGKILL, or the relay restarts in between.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use kubechat_control_plane::client::Client;
use kubechat_control_plane::{Config, ControlPlane, RelayTls, Secret};
use kubechat_relay::presence::PresenceTarget;
use kubechat_tests::backend::Backend;
use kubechat_tests::client::{InternalClient, buffer};
use kubechat_tests::pki::TestPki;
use kubechat_tests::platform::world_with;
use kubechat_tests::stack::{Stack, TestRelay, free_port, start_agent, start_relay};
use kubechat_tests::wait::eventually;
use kubechat_transport::tls;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const LONG: Duration = Duration::from_secs(60);
const ADMIN: &str = "kc_eventstestplatformadmintoken00000000000";

async fn audit_items(api: &Client, tenant: &str, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let r = api.get(&format!("/v1/tenants/{tenant}/audit?limit=1000&after={after}{query}")).await.expect("reach");
        assert_eq!(r.status, 200, "{}", r.body);
        out.extend(r.body["items"].as_array().cloned().unwrap_or_default());
        match r.body["next"].as_i64() {
            Some(n) => after = n,
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_of_a_kubectl_session_shows_every_request_including_refusals() {
    let spool = tempfile::tempdir().expect("tempdir");
    let dir = spool.path().to_path_buf();
    let w = world_with(json!({}), |c| c.spool_dir = Some(dir)).await;
    let user = w.kubectl(&w.user("ursula@acme.example", "tenant_user").await, &w.cluster);
    let pod = user
        .ok(&["get", "pods", "-n", "web", "-l", "app=api", "-o", "name"])
        .await
        .trim()
        .trim_start_matches("pod/")
        .to_string();
    user.ok(&["delete", "pod", &pod, "-n", "web", "--wait=false"]).await;
    let viewer = w.kubectl(&w.user("victor@acme.example", "tenant_viewer").await, &w.cluster);
    viewer.fails(&["delete", "pod", "frontend-x", "-n", "web"]).await;

    let ursula = "kubechat:user:ursula@acme.example";
    let victor = "kubechat:user:victor@acme.example";
    let (api, tenant) = (w.api.clone(), w.tenant.clone());
    eventually("the session's events in the audit log", LONG, || {
        let (api, tenant) = (api.clone(), tenant.clone());
        async move {
            let items = audit_items(&api, &tenant, "").await;
            let has = |kind: &str, user: &str, verb: &str, decision: &str| {
                items
                    .iter()
                    .any(|e| e["kind"] == kind && e["user"] == user && e["verb"] == verb && e["decision"] == decision)
            };
            // The relays' records of the allowed requests (their decisions
            // are written first), and the control plane's refusal.
            has("request", ursula, "list", "allow")
                && has("request", ursula, "delete", "allow")
                && has("decision", victor, "delete", "deny")
        }
    })
    .await;
    let items = audit_items(&w.api, &w.tenant, "").await;
    // Each forwarded request has the control plane's decision (before it
    // left) and the relay's record of how it went, joined by request id.
    let outcome = |user: &str, verb: &str| {
        items.iter().find(|e| e["user"] == user && e["verb"] == verb && e["kind"] == "request").cloned()
    };
    let list = outcome(ursula, "list").expect("list");
    let decided = items
        .iter()
        .find(|e| e["kind"] == "decision" && e["requestId"] == list["requestId"])
        .expect("the control plane's decision record of the list");
    assert_eq!((decided["decision"].as_str(), decided["relayId"].as_str()), (Some("allow"), Some("")));
    assert!(decided["seq"].as_i64() < list["seq"].as_i64(), "the decision is recorded before the outcome");
    assert_eq!(decided["path"], list["path"]);
    let list = &list;
    assert_eq!(list["resource"], "pods");
    assert_eq!(list["namespace"], "web");
    assert_eq!(list["status"], 200);
    assert_eq!(list["relayId"], "relay-0");
    assert_eq!(list["clusterId"], w.cluster.as_str());
    assert!(list["kubectlCommand"].as_str().is_some_and(|c| c.starts_with("kubectl get")), "{list}");
    assert!(list["clientAddress"].as_str().is_some_and(|a| a == "127.0.0.1"), "{list}");
    assert!(list["groups"].as_array().is_some_and(|g| g.contains(&json!("kubechat:role:tenant_user"))));
    let delete = outcome(ursula, "delete").expect("delete");
    assert_eq!((delete["resource"].as_str(), delete["name"].as_str()), (Some("pods"), Some(pod.as_str())));
    assert_eq!(delete["status"], 200);
    // The refusal is the control plane's own event, with kubectl's reason.
    let denied = items.iter().find(|e| e["user"] == victor && e["verb"] == "delete").expect("denied");
    assert_eq!(denied["status"], 403);
    assert_eq!(denied["relayId"], "");
    assert!(denied["reason"].as_str().is_some_and(|r| r.contains("tenant_viewer can only read")), "{denied}");
    // Every request of every kubectl invocation, each once.
    let ids: Vec<&str> = items.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), ids.iter().collect::<HashSet<_>>().len(), "an event was stored twice");
    assert!(items.iter().any(|e| e["kind"] == "tunnel_connect"), "the tunnel's connection is audited");
    // Filters.
    let mine = audit_items(&w.api, &w.tenant, &format!("&user={ursula}&verb=delete")).await;
    assert_eq!(mine.len(), 2, "the decision and the outcome: {mine:?}");
    let mine = audit_items(&w.api, &w.tenant, &format!("&user={ursula}&verb=delete&kind=request")).await;
    assert_eq!(mine.len(), 1);
    let joined = w
        .api
        .get(&format!("/v1/tenants/{}/audit/requests/{}", w.tenant, delete["requestId"].as_str().unwrap_or_default()))
        .await
        .expect("reach");
    assert_eq!(joined.body["decision"]["decision"], "allow", "{}", joined.body);
    assert_eq!(joined.body["outcomes"][0]["status"], 200, "{}", joined.body);
    assert_eq!(joined.body["complete"], true);
    // The chain verifies, and the export holds the same events.
    let v = w.api.get(&format!("/v1/tenants/{}/audit/verify", w.tenant)).await.expect("reach");
    assert_eq!(v.body["intact"], true, "{}", v.body);
    let export = w.api.get(&format!("/v1/tenants/{}/audit/export", w.tenant)).await.expect("reach");
    assert_eq!(export.status, 200);
    let lines = export.body.as_str().map(|s| s.lines().count()).unwrap_or(0);
    assert!(lines >= items.len(), "export has {lines} lines, the log {}", items.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_audited_requests_and_keeps_serving_reads() {
    let spool = tempfile::tempdir().expect("tempdir");
    let dir = spool.path().to_path_buf();
    // No control plane: nothing is ever acknowledged.
    let s = Stack::start_with(
        |c| {
            c.spool_dir = Some(dir);
            c.spool_max_bytes = 4096;
        },
        |_| {},
    )
    .await;
    let h = s.relay.handle.clone();
    let mut reads = 0;
    // Full on disk, not just by what is queued: queued usage events merge
    // as they are written, so a queue-only count can fall back under.
    while h.spool_written_bytes() < 4096 {
        assert_eq!(s.client.get(kubechat_tests::stack::CLUSTER, "/small").await.status, StatusCode::OK);
        reads += 1;
        assert!(reads < 1000, "the spool never filled");
    }
    let post = s
        .client
        .request("POST", kubechat_tests::stack::CLUSTER, "/echo", false)
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("request");
    let r = buffer(s.client.send(post).await).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    let msg = r.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("the audit spool is full") && msg.contains("reads are still served"), "{msg}");
    assert_eq!(s.backend.hits("/echo"), 0, "a refused write reached the API server");
    // Reads still pass, and the refusal is counted where operators look.
    assert_eq!(s.client.get(kubechat_tests::stack::CLUSTER, "/small").await.status, StatusCode::OK);
    let metrics = reqwest_metrics(s.relay.admin).await;
    assert!(metrics.contains("kubechat_relay_audit_refusals_total 1"), "{metrics}");
}

/// The relay's `/metrics`.
async fn reqwest_metrics(admin: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

/// Control plane, relay, agent and backend for the outage tests, the
/// control plane either in this process or a child process.
struct Rig {
    pki: TestPki,
    dir: tempfile::TempDir,
    cp_port: u16,
    internal_port: u16,
    backend: Backend,
}

impl Rig {
    async fn new() -> Self {
        Self {
            pki: TestPki::new(),
            dir: tempfile::tempdir().expect("tempdir"),
            cp_port: free_port(),
            internal_port: free_port(),
            backend: Backend::start("prod").await,
        }
    }

    fn db_url(&self) -> String {
        format!("sqlite://{}?mode=rwc", self.dir.path().join("cp.db").display())
    }

    fn cp_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.cp_port)
    }

    fn admin(&self) -> Client {
        Client::new_tls(&self.cp_url(), Some(Secret(ADMIN.into())), self.pki.pki.relay_ca.cert_pem())
    }

    /// The control plane in this process.
    async fn start_cp(&self) -> CancellationToken {
        let mut cfg = Config::new(&self.db_url());
        cfg.listen = ([127, 0, 0, 1], self.cp_port).into();
        cfg.platform_admin_token = Some(Secret(ADMIN.into()));
        cfg.tls = Some(self.pki.relay_cert_for("control-plane").identity().expect("identity"));
        cfg.relays = Some(RelayTls { client: self.pki.internal_client(), relay_ca: self.pki.relay_ca() });
        cfg.internal_listen = Some(([127, 0, 0, 1], self.internal_port).into());
        let cp = ControlPlane::bind(cfg).await.expect("control plane");
        let shutdown = CancellationToken::new();
        tokio::spawn(cp.run(shutdown.clone()));
        shutdown
    }

    /// The control plane as a child process (SIGKILL on drop or `kill`).
    fn spawn_cp(&self) -> tokio::process::Child {
        let d = self.dir.path();
        self.pki.relay_cert_for("control-plane").write(d, "cp").expect("write");
        std::fs::write(d.join("relay-ca.crt"), self.pki.pki.relay_ca.cert_pem()).expect("write");
        self.pki.pki.internal_client_cert("cp").expect("cert").write(d, "internal").expect("write");
        let arg = |p: &str| d.join(p).display().to_string();
        tokio::process::Command::new(env!("CARGO_BIN_EXE_test-control-plane"))
            .args(["--listen", &format!("127.0.0.1:{}", self.cp_port)])
            .args(["--internal-listen", &format!("127.0.0.1:{}", self.internal_port)])
            .args(["--database-url", &self.db_url()])
            .args(["--tls-cert", &arg("cp.crt"), "--tls-key", &arg("cp.key")])
            .args(["--relay-ca", &arg("relay-ca.crt")])
            .args(["--relay-client-cert", &arg("internal.crt"), "--relay-client-key", &arg("internal.key")])
            .env("KUBECHAT_PLATFORM_ADMIN_TOKEN", ADMIN)
            .env("KUBECHAT_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the control plane")
    }

    async fn wait_cp(&self) {
        let admin = self.admin();
        eventually("the control plane answers", LONG, || {
            let admin = admin.clone();
            async move { admin.get("/healthz").await.is_ok_and(|r| r.status == 200) }
        })
        .await;
    }

    /// A tenant and a cluster; the admin's client and their ids.
    async fn tenant(&self) -> (Client, String, String) {
        let r = self
            .admin()
            .post(
                "/v1/tenants",
                &json!({"name": "Acme", "slug": "acme", "plan": "team", "adminEmail": "a@acme.example"}),
            )
            .await
            .expect("reach");
        assert_eq!(r.status, 201, "{}", r.body);
        let tid = r.body["tenant"]["id"].as_str().expect("id").to_string();
        let api = self.admin().with_token(r.body["token"].as_str().expect("token"));
        let c = api.post(&format!("/v1/tenants/{tid}/clusters"), &json!({"name": "prod"})).await.expect("reach");
        (api, tid, c.body["id"].as_str().expect("id").to_string())
    }

    async fn relay(&self, spool: &Path) -> TestRelay {
        let (port, pki) = (self.internal_port, &self.pki);
        let dir = spool.to_path_buf();
        start_relay(pki, |c| {
            c.spool_dir = Some(dir);
            c.presence = Some(PresenceTarget {
                url: format!("https://127.0.0.1:{port}"),
                tls: tls::internal_client_config(&pki.relay_identity(), &pki.relay_ca(), &[]).expect("tls"),
                interval: Duration::from_millis(200),
                advertise: None,
            });
        })
        .await
    }
}

/// Sends `n` requests with ids `prefix-<i>` through the relay.
async fn traffic(client: &InternalClient, cluster: &str, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let req = client
            .request("GET", cluster, "/small", false)
            .header("kubechat-request-id", id.as_str())
            .body(Full::new(Bytes::new()))
            .expect("request");
        assert_eq!(buffer(client.send(req).await).await.status, StatusCode::OK);
        ids.push(id);
    }
    ids
}

/// Waits until the audit log holds exactly the request events `ids` (each
/// once) and verifies.
async fn all_arrive_once(api: &Client, tenant: &str, ids: &[String]) {
    let want: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let (api2, t2, want2) = (api.clone(), tenant.to_string(), want.clone());
    eventually("every request event stored", LONG, || {
        let (api, t, want) = (api2.clone(), t2.clone(), want2.clone());
        async move {
            let items = audit_items(&api, &t, "").await;
            let got: HashSet<&str> = items.iter().filter_map(|e| e["requestId"].as_str()).collect();
            want.iter().all(|id| got.contains(id))
        }
    })
    .await;
    let items = audit_items(api, tenant, "").await;
    let requests: Vec<&str> =
        items.iter().filter(|e| e["kind"] == "request").filter_map(|e| e["requestId"].as_str()).collect();
    assert_eq!(requests.len(), want.len(), "stored exactly once each: {requests:?}");
    assert_eq!(requests.iter().copied().collect::<HashSet<_>>(), want);
    let v = api.get(&format!("/v1/tenants/{tenant}/audit/verify")).await.expect("reach");
    assert_eq!(v.body["intact"], true, "{}", v.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_a_control_plane_outage_and_a_relay_restart() {
    kubechat_tests::wait::init_logging();
    let rig = Rig::new().await;
    let cp = rig.start_cp().await;
    rig.wait_cp().await;
    let (api, tenant, cluster) = rig.tenant().await;
    let spool = tempfile::tempdir().expect("tempdir");
    let relay = rig.relay(spool.path()).await;
    let cert = rig.pki.agent_cert(&tenant, &cluster);
    let agent = start_agent(&rig.pki, &[relay.quic], &cert, &rig.backend.url(), |_| {}).await;
    agent.wait_tunnels(1).await;
    let client = InternalClient::new(relay.internal, &rig.pki.internal_client(), &rig.pki.relay_ca());
    let mut ids = traffic(&client, &cluster, "up", 5).await;

    // The control plane goes away; traffic goes on into the spool.
    cp.cancel();
    ids.extend(traffic(&client, &cluster, "down", 20).await);
    // The relay restarts too (same spool), then the control plane returns.
    relay.shutdown.cancel();
    relay.task.await.expect("relay stops");
    let relay = rig.relay(spool.path()).await;
    let _cp = rig.start_cp().await;
    all_arrive_once(&api, &tenant, &ids).await;
    eventually("the spool empties", LONG, || {
        let h = relay.handle.clone();
        async move { h.events_pending() == 0 }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_the_control_plane_killed_with_sigkill_mid_traffic() {
    kubechat_tests::wait::init_logging();
    let rig = Rig::new().await;
    let mut cp = rig.spawn_cp();
    rig.wait_cp().await;
    let (api, tenant, cluster) = rig.tenant().await;
    let spool = tempfile::tempdir().expect("tempdir");
    let relay = rig.relay(spool.path()).await;
    let cert = rig.pki.agent_cert(&tenant, &cluster);
    let agent = start_agent(&rig.pki, &[relay.quic], &cert, &rig.backend.url(), |_| {}).await;
    agent.wait_tunnels(1).await;
    let client = InternalClient::new(relay.internal, &rig.pki.internal_client(), &rig.pki.relay_ca());

    // Traffic flows all along: the control plane is killed (no chance to
    // flush anything) once it has stored some events, and started again.
    let stop = CancellationToken::new();
    let (c2, cl2, stop2) = (client.clone(), cluster.clone(), stop.clone());
    let flow = tokio::spawn(async move {
        let mut ids = Vec::new();
        let mut round = 0;
        while !stop2.is_cancelled() {
            ids.extend(traffic(&c2, &cl2, &format!("flow{round}"), 5).await);
            round += 1;
        }
        ids
    });
    let h = relay.handle.clone();
    eventually("some events stored", LONG, || {
        let h = h.clone();
        async move { h.metrics().events_published.get() >= 10 }
    })
    .await;
    cp.start_kill().expect("SIGKILL");
    cp.wait().await.expect("reaped");
    let at_kill = h.metrics().events_published.get();
    let _cp = rig.spawn_cp();
    rig.wait_cp().await;
    eventually("events stored again after the restart", LONG, || {
        let h = h.clone();
        async move { h.metrics().events_published.get() > at_kill + 10 }
    })
    .await;
    stop.cancel();
    let ids = flow.await.expect("traffic");
    assert!(h.metrics().publish_failures.get() > 0, "the relay noticed the control plane was gone");
    all_arrive_once(&api, &tenant, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_quota_refuses_with_its_reset_time_until_an_upgrade_and_invoices_match_usage() {
    let spool = tempfile::tempdir().expect("tempdir");
    let dir = spool.path().to_path_buf();
    let w = world_with(json!({}), |c| c.spool_dir = Some(dir)).await;
    let platform = Client::new_tls(&w.cp_url, Some(Secret(kubechat_tests::platform::ADMIN.into())), &w.cp_ca);
    let limits = json!({"maxUsers": 50, "maxClusters": 20, "maxCommandsPerMonth": 3, "maxAuditRetentionDays": 90});
    let r = platform.put(&format!("/v1/tenants/{}", w.tenant), &json!({"limits": limits})).await.expect("reach");
    assert_eq!(r.status, 200, "{}", r.body);
    // Tenant admins cannot raise their own limits.
    let r = w.api.put(&format!("/v1/tenants/{}", w.tenant), &json!({"limits": limits})).await.expect("reach");
    assert_eq!(r.status, 403);

    let user = w.kubectl(&w.user("ursula@acme.example", "tenant_user").await, &w.cluster);
    // Three kubectl invocations (each several requests: discovery, then the call).
    for _ in 0..3 {
        assert!(user.ok(&["get", "pods", "-n", "web"]).await.contains("api-"));
    }
    let err = user.fails(&["get", "pods", "-n", "web"]).await;
    let month = kubechat_control_plane::audit::this_month();
    let (resets, _) = kubechat_control_plane::billing::month_reset(&month);
    assert!(err.contains("has used all 3 kubectl commands of its team plan"), "{err}");
    assert!(err.contains(&format!("the quota resets at {resets}")), "{err}");
    let metrics = w.cp_metrics().await;
    assert!(metrics.contains("kubechat_cp_quota_refusals_total 1"), "{metrics}");
    assert!(!metrics.contains("kubechat_cp_events_accepted_total 0"), "{metrics}");

    // The upgrade lifts it at once.
    let r = w
        .api
        .post(&format!("/v1/subscriptions/{}/upgrade", w.tenant), &json!({"plan": "enterprise"}))
        .await
        .expect("reach");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["subscription"]["plan"], "enterprise");
    assert!(user.ok(&["get", "pods", "-n", "web"]).await.contains("api-"));
    let r =
        w.api.post(&format!("/v1/subscriptions/{}/upgrade", w.tenant), &json!({"plan": "team"})).await.expect("reach");
    assert_eq!(r.status, 400, "a downgrade is not an upgrade");

    // The invoice: the plan's base plus each usage line at its price; the
    // quantities are the usage ledger's (4 commands counted, the refused one not).
    let (api, tenant) = (w.api.clone(), w.tenant.clone());
    let m2 = month.clone();
    eventually("API requests metered", LONG, || {
        let (api, tenant, month) = (api.clone(), tenant.clone(), m2.clone());
        async move {
            let inv = api.get(&format!("/v1/tenants/{tenant}/invoices/{month}")).await.expect("reach").body;
            inv["lines"].as_array().is_some_and(|l| l.iter().any(|l| l["usageType"] == "api_request"))
        }
    })
    .await;
    let inv = w.api.get(&format!("/v1/tenants/{}/invoices/{month}", w.tenant)).await.expect("reach").body;
    let lines = inv["lines"].as_array().expect("lines");
    let commands = lines.iter().find(|l| l["usageType"] == "command_executed").expect("commands line");
    assert_eq!(commands["quantity"], 4.0, "{inv}");
    let sum: i64 = lines.iter().map(|l| l["amountMicros"].as_i64().expect("amount")).sum();
    assert_eq!(inv["totalMicros"].as_i64(), Some(sum));
    for l in lines {
        let q = l["quantity"].as_f64().expect("quantity");
        let unit = l["unitPriceMicros"].as_i64().expect("unit");
        assert_eq!(l["amountMicros"].as_i64(), Some((q * unit as f64).round() as i64), "{l}");
    }
    assert_eq!(lines[0]["unitPriceMicros"], 999_000_000, "billed at the plan it is on: {inv}");
    let usage = w.api.get(&format!("/v1/tenants/{}/usage", w.tenant)).await.expect("reach").body;
    assert_eq!(usage["metered"]["command_executed"], 4.0, "{usage}");
    let bad = w.api.get(&format!("/v1/tenants/{}/invoices/2026-13", w.tenant)).await.expect("reach");
    assert_eq!(bad.status, 400);

    // Revenue, for platform admins only; trials do not pay.
    let mrr = platform.get("/v1/analytics/mrr").await.expect("reach");
    let enterprise = &mrr.body["byPlan"]["enterprise"];
    assert_eq!(
        enterprise["tenants"].as_i64().unwrap_or(0) + enterprise["trials"].as_i64().unwrap_or(0),
        1,
        "{}",
        mrr.body
    );
    let r = platform.put(&format!("/v1/tenants/{}", w.tenant), &json!({"status": "active"})).await.expect("reach");
    assert_eq!(r.status, 200, "{}", r.body);
    let mrr = platform.get("/v1/analytics/mrr").await.expect("reach");
    assert_eq!(mrr.body["byPlan"]["enterprise"]["mrrMicros"], 999_000_000, "{}", mrr.body);
    assert_eq!(w.api.get("/v1/analytics/mrr").await.expect("reach").status, 403);
}
