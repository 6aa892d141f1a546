//! The SaaS side's charts, end to end: `charts/kubechat-control-plane` and
//! `charts/kubechat-relay` installed by the real Helm library into kube-sim
//! with their certificates and secrets in Secrets, then every pod run from
//! its spec (`kubechat_tests::pod`): two control-plane replicas on one real
//! PostgreSQL database must turn ready and answer the API with the admin
//! token from their Secret; each relay must turn ready and report presence
//! to the control plane under its own certificate's id. A flag, env
//! variable, Secret key or mount path renamed on one side only fails here.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use kubechat_control_plane::Secret;
use kubechat_control_plane::client::Client;
use kubechat_protocol::grant::GrantSigner;
use kubechat_tests::helm::{self, TestCluster};
use kubechat_tests::pod::RunningPod;
use kubechat_tests::wait::eventually;
use kubechat_transport::pki::DevPki;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(60);
const NS: &str = "kubechat-system";
const ADMIN_TOKEN: &str = "kc_platformadmintokenforthesaaschartstest00";

/// A fresh database on the test PostgreSQL server (the test command starts it).
async fn fresh_database() -> String {
    kubechat_tests::postgres::fresh_database("charts").await
}

/// Writes `files` into the cluster as a generic Secret.
async fn secret(c: &TestCluster, name: &str, files: &[(&str, &str)]) {
    let dir = c.dir.path().join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut args = vec!["-n".to_string(), NS.into(), "create".into(), "secret".into(), "generic".into(), name.into()];
    for (key, value) in files {
        let f = dir.join(key);
        std::fs::write(&f, value).expect("write");
        args.push(format!("--from-file={key}={}", f.display()));
    }
    c.admin.ok(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
}

/// Runs every pod of `workload` with `binary`; waits until each is ready.
async fn run(c: &TestCluster, workload: &Value, binary: &str) -> Vec<RunningPod> {
    let pods = c.pods_of(workload).await;
    let want = workload["spec"]["replicas"].as_u64().expect("replicas") as usize;
    assert_eq!(pods.len(), want, "pods of {}", workload["metadata"]["name"]);
    let container = &workload["spec"]["template"]["spec"]["containers"][0];
    // All at once, as a rollout starts them (two control planes migrate
    // one database concurrently).
    let mut running = Vec::new();
    for p in &pods {
        running.push(RunningPod::start(&c.sim, &c.admin, p, Path::new(binary)).await);
    }
    for pod in &mut running {
        pod.wait_ready(container, LONG).await;
    }
    running
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

async fn metrics(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

fn counter(text: &str, series: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_and_relay_charts_run_from_their_pod_specs() {
    let c = TestCluster::empty().await;
    c.admin.ok(&["create", "namespace", NS]).await;
    let pki = DevPki::generate().expect("pki");
    let names = ["127.0.0.1", "localhost"];
    // The agent CA's key, as `kubechat-relay dev-certs` writes it.
    let dev_set = c.dir.path().join("dev-set");
    let agent = kubechat_protocol::ClusterIdentity::new("t", "c").expect("identity");
    pki.write_dev_set(&dev_set, "unused", &names, &agent).expect("dev set");
    let agent_ca_key = std::fs::read_to_string(dev_set.join("agent-ca.key")).expect("agent CA key");
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("keygen");
    let signer = GrantSigner::from_pkcs8("cp-1", pkcs8.as_ref()).expect("signer");
    let grant_key = format!("cp-1={}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pkcs8.as_ref()));

    // The control plane: database URL and keys from Secrets, two replicas
    // migrating one PostgreSQL database at once.
    let cp_cert = pki.relay_cert("control-plane", &names).expect("cert");
    let client = pki.internal_client_cert("kubechat-control-plane").expect("cert");
    secret(&c, "kubechat-database", &[("url", &fresh_database().await)]).await;
    secret(&c, "kubechat-control-plane", &[("grant-signing-key", &grant_key), ("platform-admin-token", ADMIN_TOKEN)])
        .await;
    secret(&c, "kubechat-control-plane-tls", &[("tls.crt", &cp_cert.cert_pem), ("tls.key", &cp_cert.key_pem)]).await;
    secret(
        &c,
        "kubechat-control-plane-cas",
        &[
            ("relay-ca.crt", pki.relay_ca.cert_pem()),
            ("internal-client.crt", &client.cert_pem),
            ("internal-client.key", &client.key_pem),
            ("agent-ca.crt", pki.agent_ca.cert_pem()),
            ("agent-ca.key", &agent_ca_key),
        ],
    )
    .await;
    let cp_values = json!({
        "replicaCount": 2,
        "publicUrl": "https://kubechat.example",
        "defaultRegion": "eu-west",
        "enrollRelays": ["eu-west=relay.example:7443#ws=443"],
    });
    c.install(NS, "kubechat-control-plane", &helm::repo().join("charts/kubechat-control-plane"), &cp_values)
        .unwrap_or_else(|e| panic!("helm install of the control plane failed: {e}"));
    let cp_set = &c.get(&["-n", NS, "get", "statefulset", "kubechat-control-plane"]).await[0];
    // Each replica keeps a spool volume of its own, where a drain with the
    // database down leaves what its next start commits.
    assert_eq!(cp_set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "spool");
    let cp_pod = &cp_set["spec"]["template"]["spec"];
    let args: Vec<&str> =
        cp_pod["containers"][0]["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    assert!(args.contains(&"--spool-dir=/var/lib/kubechat/spool"), "{args:?}");
    assert!(args.contains(&"--grace-period-secs=10"), "{args:?}");
    assert_eq!(cp_pod["terminationGracePeriodSeconds"], 45, "three grace periods and the quota's release");
    assert_eq!(cp_pod["securityContext"]["fsGroup"], 65532, "the claim's files writable by the pod's user");
    let cps = run(&c, cp_set, env!("CARGO_BIN_EXE_test-control-plane")).await;
    // The admin token from the Secret works on every replica; a wrong one does not.
    let port = |pod: &RunningPod, p: u16| *pod.ports.get(&p).unwrap_or_else(|| panic!("no port {p}"));
    for cp in &cps {
        let base = format!("https://{}", port(cp, 8443));
        let api = Client::new_tls(&base, Some(Secret(ADMIN_TOKEN.into())), pki.relay_ca.cert_pem());
        let r = api.get("/v1/tenants").await.expect("reach");
        assert_eq!(r.status, 200, "{}: {}", cp.name, r.body);
        let wrong = Client::new_tls(&base, Some(Secret("kc_wrong".into())), pki.relay_ca.cert_pem());
        assert_eq!(wrong.get("/v1/tenants").await.expect("reach").status, 401);
        assert!(!cp.log().contains(ADMIN_TOKEN) && !cp.log().contains("PRIVATE KEY"), "{}", cp.log());
    }

    // The relays: one certificate Secret per relay id, reporting presence
    // to the first control-plane replica's internal listener.
    for id in ["relay-a", "relay-b"] {
        let cert = pki.relay_cert(id, &names).expect("cert");
        let dir = c.dir.path().join(id);
        std::fs::create_dir_all(&dir).expect("mkdir");
        cert.write(&dir, "tls").expect("write");
        let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        let name = format!("kubechat-relay-tls-{id}");
        c.admin.ok(&["-n", NS, "create", "secret", "tls", &name, "--cert", path(&crt), "--key", path(&key)]).await;
    }
    secret(
        &c,
        "kubechat-relay-cas",
        &[
            ("agent-ca.crt", pki.agent_ca.cert_pem()),
            ("internal-ca.crt", pki.internal_ca.cert_pem()),
            ("control-plane-ca.crt", pki.relay_ca.cert_pem()),
        ],
    )
    .await;
    let relay_values = json!({
        "relayIds": ["relay-a", "relay-b"],
        "region": "eu-west",
        "controlPlane": {"url": format!("https://{}", port(&cps[0], 8444))},
        "grantKeys": [format!("cp-1={}", kubechat_protocol::grant::to_header(&signer.public_key()))],
        "spoolMiB": 16,
    });
    c.install(NS, "kubechat-relay", &helm::repo().join("charts/kubechat-relay"), &relay_values)
        .unwrap_or_else(|e| panic!("helm install of the relays failed: {e}"));
    let sets = c.get(&["-n", NS, "get", "statefulsets", "-l", "app.kubernetes.io/instance=kubechat-relay"]).await;
    let mut set_names: Vec<&str> = sets.iter().filter_map(|s| s["metadata"]["name"].as_str()).collect();
    set_names.sort();
    assert_eq!(set_names, ["kubechat-relay-relay-a", "kubechat-relay-relay-b"], "one StatefulSet per relay id");
    let mut relays = Vec::new();
    for set in &sets {
        let pod_spec = &set["spec"]["template"]["spec"];
        assert_eq!(pod_spec["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod_spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "spool");
        relays.extend(run(&c, set, env!("CARGO_BIN_EXE_test-relay")).await);
    }
    let services = c.get(&["-n", NS, "get", "service", "kubechat-relay"]).await;
    let protocols: Vec<&str> =
        services[0]["spec"]["ports"].as_array().expect("ports").iter().filter_map(|p| p["protocol"].as_str()).collect();
    assert_eq!(protocols, ["UDP", "TCP"], "QUIC over UDP, the WebSocket fallback over TCP");

    // Each relay's reports are accepted: its id (from the chart) matches its
    // certificate (from its own Secret).
    let admin = port(&cps[0], 9092);
    for r in &relays {
        let log = || r.log();
        eventually(&format!("{} reports presence", r.name), LONG, || async move {
            log().contains("reporting tunnel presence to the control plane")
        })
        .await;
        assert!(!r.log().contains("refused a presence report"), "{}", r.log());
        assert!(!r.log().contains("PRIVATE KEY"), "{}", r.log());
    }
    assert!(counter(&metrics(admin).await, "kubechat_cp_presence_reports_total{result=\"applied\"}") >= 2);
}
