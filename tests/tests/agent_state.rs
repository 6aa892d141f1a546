//! The agent's credentials kept across restarts, and renewal: the Secret
//! store against kube-sim with the least privilege the Helm chart grants
//! (get and update on one Secret), load-or-enroll on start, renewal with the
//! current certificate as the TLS client certificate, rotation of every
//! tunnel once its own streams have finished, and no key material or token
//! in the logs.
//!
//! A small fake control plane stands in for `/v1/enroll` and `/v1/renew`
//! here (it signs CSRs with the test's agent CA and records the client
//! certificate it was shown); the real control plane's endpoints are tested
//! with it elsewhere.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kube_sim::kubeconfig::{Credentials as KubeCredentials, KubeconfigSpec};
use kube_sim::{SimConfig, TestSim, UserInfo};
use kubechat_agent::{
    AgentError, AgentHandle, BootstrapToken, CredentialStore, Credentials, Enrollment, StoreLocation,
};
use kubechat_protocol::ClusterIdentity;
use kubechat_tests::backend::Backend;
use kubechat_tests::client::{InternalClient, TEST_USER};
use kubechat_tests::pki::TestPki;
use kubechat_tests::stack::{CLUSTER, TENANT, TestRelay, start_relay};
use kubechat_tests::wait::{eventually, within};
use kubechat_transport::pki::Validity;
use kubechat_transport::tls;
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const LONG: Duration = Duration::from_secs(60);
const NS: &str = "kubechat";
const SECRET: &str = "kubechat-agent-state";
const AGENT_TOKEN: &str = "agent-service-account-token";
const BOOTSTRAP: &str = "kcb_bootstraptokenforagentstatetests0000000";

// ---------------------------------------------------------------- kube-sim

/// kube-sim where the agent's service account may get and update Secret
/// `kubechat/kubechat-agent-state` only (as the Helm chart's Role), and
/// also create secrets in the namespace if `may_create`.
async fn sim(may_create: bool) -> TestSim {
    capture_logs();
    let mut tokens = HashMap::new();
    tokens.insert(
        AGENT_TOKEN.to_string(),
        UserInfo { name: kube_sim::seed::AGENT_USER.into(), groups: vec!["system:serviceaccounts".into()] },
    );
    let s = TestSim::start(SimConfig::with_tokens(tokens), false).await;
    create(&s, "namespaces", "", json!({"metadata": {"name": NS}}));
    let mut rules = vec![
        json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": [SECRET], "verbs": ["get", "update"]}),
    ];
    if may_create {
        rules.push(json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}));
    }
    create(&s, "roles", NS, json!({"metadata": {"name": "kubechat-agent-state"}, "rules": rules}));
    create(
        &s,
        "rolebindings",
        NS,
        json!({
            "metadata": {"name": "kubechat-agent-state"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kubechat-agent-state"},
            "subjects": [{"kind": "ServiceAccount", "name": "kubechat-agent", "namespace": NS}],
        }),
    );
    // The user the relay names in test requests may do anything.
    create(
        &s,
        "clusterrolebindings",
        "",
        json!({
            "metadata": {"name": "test-user-admin"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "User", "name": TEST_USER, "apiGroup": "rbac.authorization.k8s.io"}],
        }),
    );
    s
}

fn create(s: &TestSim, plural: &str, ns: &str, obj: Value) {
    let r = s.sim.cluster.resource_by_plural(plural).expect("built-in resource");
    s.sim.cluster.create(&r, ns, obj).expect("create");
}

/// The Secret as stored in kube-sim.
fn stored_secret(s: &TestSim) -> Option<Value> {
    let r = s.sim.cluster.resource_by_plural("secrets").expect("secrets");
    s.sim.cluster.store.get(&r, NS, SECRET).ok()
}

fn delete_secret(s: &TestSim) {
    let r = s.sim.cluster.resource_by_plural("secrets").expect("secrets");
    s.sim.cluster.delete(&r, NS, SECRET).expect("delete");
}

/// The Secret the Helm chart creates: no data, a label of its own.
fn precreate_secret(s: &TestSim) {
    create(
        s,
        "secrets",
        NS,
        json!({"metadata": {"name": SECRET, "labels": {"app.kubernetes.io/managed-by": "Helm"}}, "type": "Opaque"}),
    );
}

/// The agent's kube configuration for kube-sim: its service-account token.
async fn kube_config(s: &TestSim) -> kube::Config {
    let spec = KubeconfigSpec {
        name: "sim".into(),
        server: s.url(),
        ca_pem: Some(s.ca_pem.clone()),
        credentials: KubeCredentials::Token(AGENT_TOKEN.into()),
        impersonate_user: None,
        impersonate_groups: Vec::new(),
        namespace: None,
    };
    let kc = kube::config::Kubeconfig::from_yaml(&spec.to_yaml()).expect("kubeconfig");
    kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await.expect("kube config")
}

async fn secret_store(s: &TestSim) -> CredentialStore {
    let client = kube::Client::try_from(kube_config(s).await).expect("kube client");
    CredentialStore::secret(client, NS, SECRET)
}

fn secret_location() -> StoreLocation {
    StoreLocation::Secret { namespace: NS.into(), name: SECRET.into() }
}

// ---------------------------------------------------- fake control plane

/// `/v1/enroll` (bootstrap token) and `/v1/renew` (client certificate),
/// signing with the test's agent CA.
struct FakeControlPlane {
    url: String,
    ca_pem: String,
    /// Serials of the client certificates `/v1/renew` was shown.
    renewed_serials: Arc<Mutex<Vec<String>>>,
    /// Successful enrollments.
    enrollments: Arc<AtomicUsize>,
    /// Refuse renewals (as for a revoked certificate).
    refuse_renewals: Arc<AtomicBool>,
    /// Enrollment answers wait until this many attempts arrived (so
    /// concurrent replicas really race for the token).
    hold_enrollments_until: Arc<AtomicUsize>,
    shutdown: CancellationToken,
}

impl Drop for FakeControlPlane {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

struct CpShared {
    pki: Arc<TestPki>,
    relays: Vec<String>,
    renewed_serials: Arc<Mutex<Vec<String>>>,
    enrollments: Arc<AtomicUsize>,
    refuse_renewals: Arc<AtomicBool>,
    hold_enrollments_until: Arc<AtomicUsize>,
    enroll_attempts: tokio::sync::watch::Sender<usize>,
}

fn json_response(status: StatusCode, v: &Value) -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r
}

fn error_response(status: StatusCode, message: &str) -> http::Response<Full<Bytes>> {
    json_response(status, &json!({"error": {"code": "refused", "message": message}}))
}

async fn cp_handle(
    req: http::Request<hyper::body::Incoming>,
    peer: Option<CertificateDer<'static>>,
    cp: Arc<CpShared>,
) -> http::Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(csr) = body["csr"].as_str() else { return error_response(StatusCode::BAD_REQUEST, "no csr") };
    let identity = match path.as_str() {
        "/v1/enroll" => {
            cp.enroll_attempts.send_modify(|n| *n += 1);
            let want = cp.hold_enrollments_until.load(Ordering::SeqCst);
            let mut attempts = cp.enroll_attempts.subscribe();
            let _ = tokio::time::timeout(LONG, attempts.wait_for(|n| *n >= want)).await;
            // Spent atomically, as the control plane's database does.
            if body["bootstrapToken"] != BOOTSTRAP
                || cp.enrollments.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst).is_err()
            {
                return error_response(StatusCode::UNAUTHORIZED, "the bootstrap token is invalid or already used");
            }
            ClusterIdentity::new(TENANT, CLUSTER).expect("identity")
        }
        "/v1/renew" => {
            let Some(peer) = peer else {
                return error_response(StatusCode::UNAUTHORIZED, "renewal needs the current certificate");
            };
            cp.renewed_serials.lock().expect("lock").push(tls::certificate_serial(&peer).expect("serial"));
            if cp.refuse_renewals.load(Ordering::SeqCst) {
                return error_response(StatusCode::FORBIDDEN, "the certificate is revoked");
            }
            tls::cluster_identity(&peer).expect("agent identity")
        }
        _ => return error_response(StatusCode::NOT_FOUND, "no such endpoint"),
    };
    let cert = cp
        .pki
        .pki
        .agent_ca
        .sign_agent_csr(csr, &identity, Validity::for_duration(Duration::from_secs(7200)))
        .expect("sign");
    let leaf = tls::parse_ca_pem(&cert).expect("cert");
    json_response(
        StatusCode::CREATED,
        &json!({
            "identity": identity.spiffe_uri(),
            "certificate": cert,
            "caCertificate": cp.pki.pki.agent_ca.cert_pem(),
            "relayCa": cp.pki.pki.relay_ca.cert_pem(),
            "relays": cp.relays,
            "grantKeys": [],
            "expiresAt": tls::certificate_not_after(&leaf[0]),
        }),
    )
}

async fn fake_control_plane(pki: Arc<TestPki>, relays: Vec<String>) -> FakeControlPlane {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        {
            let mut roots = rustls::RootCertStore::empty();
            for ca in pki.agent_ca() {
                roots.add(ca).expect("agent ca");
            }
            Arc::new(roots)
        },
        tls::provider(),
    )
    .allow_unauthenticated()
    .build()
    .expect("verifier");
    let serving = pki.relay_identity();
    let mut config = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(serving.chain, serving.key)
        .expect("server cert");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shared = Arc::new(CpShared {
        pki: pki.clone(),
        relays,
        renewed_serials: Arc::default(),
        enrollments: Arc::default(),
        refuse_renewals: Arc::default(),
        hold_enrollments_until: Arc::default(),
        enroll_attempts: tokio::sync::watch::Sender::new(0),
    });
    let cp = FakeControlPlane {
        url: format!("https://{addr}"),
        ca_pem: pki.pki.relay_ca.cert_pem().to_string(),
        renewed_serials: shared.renewed_serials.clone(),
        enrollments: shared.enrollments.clone(),
        refuse_renewals: shared.refuse_renewals.clone(),
        hold_enrollments_until: shared.hold_enrollments_until.clone(),
        shutdown: CancellationToken::new(),
    };
    let shutdown = cp.shutdown.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                () = shutdown.cancelled() => return,
                r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
            };
            let (acceptor, shared) = (acceptor.clone(), shared.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else { return };
                let peer = stream.get_ref().1.peer_certificates().and_then(|c| c.first().cloned());
                let svc = hyper::service::service_fn(move |req| {
                    let (peer, shared) = (peer.clone(), shared.clone());
                    async move { Ok::<_, std::convert::Infallible>(cp_handle(req, peer, shared).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    cp
}

// ------------------------------------------------------------------ agent

/// A usable bundle for the default tenant/cluster, dialling `relays`.
fn bundle(pki: &TestPki, relays: &[SocketAddr], cp: Option<&FakeControlPlane>, validity: Validity) -> Credentials {
    let cert = pki.agent_cert_valid(TENANT, CLUSTER, validity);
    let leaf = tls::parse_ca_pem(&cert.cert_pem).expect("cert");
    Credentials {
        key_pem: cert.key_pem,
        cert_pem: cert.cert_pem,
        relay_ca_pem: pki.pki.relay_ca.cert_pem().to_string(),
        relays: relays.iter().map(SocketAddr::to_string).collect(),
        grant_keys: Vec::new(),
        cluster_grant_key: None,
        identity: format!("spiffe://kubechat/tenant/{TENANT}/cluster/{CLUSTER}"),
        expires_at: tls::certificate_not_after(&leaf[0]).expect("notAfter"),
        control_plane_url: cp.map(|c| c.url.clone()),
        control_plane_ca: cp.map(|c| c.ca_pem.clone()),
    }
}

fn serial_of(c: &Credentials) -> String {
    tls::certificate_serial(&tls::parse_ca_pem(&c.cert_pem).expect("cert")[0]).expect("serial")
}

fn enrolling(kube: kube::Config, enrollment: Enrollment) -> kubechat_agent::Config {
    let mut c = kubechat_agent::Config::enrolling(kube, enrollment);
    c.backoff_base = Duration::from_millis(20);
    c.backoff_cap = Duration::from_millis(500);
    c.grace_period = Duration::from_secs(10);
    c.sibling_wait = Duration::from_secs(2);
    c
}

struct RunningAgent {
    handle: AgentHandle,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl RunningAgent {
    async fn start(config: kubechat_agent::Config) -> Result<Self, AgentError> {
        let shutdown = CancellationToken::new();
        let agent = kubechat_agent::Agent::new(config, shutdown.clone()).await?;
        let handle = agent.handle();
        let task = tokio::spawn(agent.run());
        Ok(Self { handle, shutdown, task })
    }

    async fn wait_tunnels(&self, n: i64) {
        let h = self.handle.clone();
        eventually(&format!("agent has {n} tunnels"), LONG, || {
            let h = h.clone();
            async move { h.tunnels_connected() == n }
        })
        .await;
    }

    async fn stop(self) {
        self.shutdown.cancel();
        within("agent stops", LONG, self.task).await.expect("agent task");
    }
}

async fn relay(pki: &TestPki) -> TestRelay {
    start_relay(pki, |_| {}).await
}

/// Every log line of this test process, from every test in it.
static CAPTURED: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

/// Writes log lines into [`CAPTURED`].
#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per process; every test here calls it first) a global
/// subscriber that captures every line at TRACE but kube-sim's, and prints
/// them too when `TEST_LOG` is set. Global rather than per-thread: a scoped
/// subscriber loses lines to the callsite-interest cache while other tests'
/// threads register the same callsites.
fn capture_logs() {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let buffer = CAPTURED.get_or_init(Arc::default).clone();
    let capture = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(move || Capture(buffer.clone()))
        .with_filter(tracing_subscriber::EnvFilter::new("trace,kube_sim=off"));
    let print = std::env::var("TEST_LOG").ok().map(|f| {
        tracing_subscriber::fmt::layer().with_test_writer().with_filter(tracing_subscriber::EnvFilter::new(f))
    });
    let _ = tracing_subscriber::registry().with(capture).with(print).try_init();
}

fn captured_logs() -> String {
    CAPTURED
        .get()
        .map(|b| String::from_utf8_lossy(&b.lock().unwrap_or_else(|p| p.into_inner())).into_owned())
        .unwrap_or_default()
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_store_round_trips_with_only_get_and_update() {
    let s = sim(false).await;
    precreate_secret(&s);
    let store = secret_store(&s).await;
    assert_eq!(store.to_string(), format!("Secret {NS}/{SECRET}"));
    assert!(store.load().await.expect("load").is_none(), "a Secret without data holds nothing");
    store.prepare().await.expect("get and a dry-run update are allowed");
    assert!(stored_secret(&s).expect("secret").get("data").is_none(), "the dry run wrote nothing");

    let pki = TestPki::new();
    let relay: SocketAddr = "127.0.0.1:7443".parse().expect("addr");
    let mut first = bundle(&pki, &[relay], None, Validity::for_duration(Duration::from_secs(3600)));
    first.cluster_grant_key = Some(format!("cp-1={}", kubechat_protocol::grant::to_header(&[7; 32])));
    store.save(&first).await.expect("save");
    assert_eq!(store.load().await.expect("load"), Some(first.clone()));

    let secret = stored_secret(&s).expect("secret");
    let mut keys: Vec<&str> = secret["data"].as_object().expect("data").keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["cluster-grant.key", "enrollment.json", "relay-ca.crt", "tls.crt", "tls.key"]);
    let b64 = |k: &str| {
        let raw =
            base64::engine::general_purpose::STANDARD.decode(secret["data"][k].as_str().expect(k)).expect("base64");
        String::from_utf8(raw).expect("utf-8")
    };
    assert_eq!(b64("tls.key"), first.key_pem);
    assert_eq!(Some(b64("cluster-grant.key")), first.cluster_grant_key);
    assert!(!b64("enrollment.json").contains("BwcH"), "the cluster grant key is not in the summary");
    let summary: Value = serde_json::from_str(&b64("enrollment.json")).expect("json");
    assert_eq!(summary["relays"], json!(["127.0.0.1:7443"]));
    assert_eq!(summary["identity"], json!(first.identity));
    assert_eq!(summary["expiresAt"], json!(first.expires_at));
    assert!(summary.get("controlPlaneUrl").is_none());
    assert_eq!(secret["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm", "the chart's metadata is kept");

    // An update replaces our keys and keeps anyone else's.
    let r = s.sim.cluster.resource_by_plural("secrets").expect("secrets");
    let mut with_other = secret.clone();
    with_other["data"]["other"] = json!(base64::engine::general_purpose::STANDARD.encode("kept"));
    s.sim.cluster.update(&r, NS, SECRET, with_other).expect("update");
    let mut second = bundle(&pki, &[relay], None, Validity::for_duration(Duration::from_secs(7200)));
    second.control_plane_url = Some("https://cp.example".into());
    store.save(&second).await.expect("update");
    assert_eq!(store.load().await.expect("load"), Some(second.clone()), "no cluster grant key kept from the first");
    assert_ne!(serial_of(&first), serial_of(&second));
    assert!(stored_secret(&s).expect("secret")["data"].get("other").is_some());

    // Gone, and the agent may not create it: the error says what to do,
    // before and after enrolling.
    delete_secret(&s);
    assert!(store.load().await.expect("load").is_none());
    for err in [store.prepare().await.expect_err("no create"), store.save(&first).await.expect_err("no create")] {
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("Secret {NS}/{SECRET} does not exist"))
                && msg.contains("create the Secret")
                && msg.contains("`create`"),
            "{msg}"
        );
    }
    assert!(stored_secret(&s).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_secret_is_created_when_the_agent_may() {
    let s = sim(true).await;
    let store = secret_store(&s).await;
    assert!(store.load().await.expect("load").is_none());
    let pki = TestPki::new();
    let c = bundle(&pki, &["127.0.0.1:7443".parse().expect("addr")], None, Validity::for_duration(LONG));
    store.save(&c).await.expect("created");
    assert_eq!(store.load().await.expect("load"), Some(c));
    let secret = stored_secret(&s).expect("created");
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(secret["metadata"]["labels"]["app.kubernetes.io/managed-by"], "kubechat-agent");

    // prepare() creates an empty one before a bootstrap token is spent.
    delete_secret(&s);
    store.prepare().await.expect("created empty");
    assert!(stored_secret(&s).is_some());
    assert!(store.load().await.expect("load").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_reuses_its_secret_without_a_bootstrap_token() {
    let s = sim(false).await;
    precreate_secret(&s);
    let pki = Arc::new(TestPki::new());
    let relay = relay(&pki).await;
    let cp = fake_control_plane(pki.clone(), vec![relay.quic.to_string()]).await;
    let enrollment = |token: Option<&str>| Enrollment {
        store: secret_location(),
        control_plane_url: Some(cp.url.clone()),
        control_plane_ca: Some(cp.ca_pem.clone()),
        bootstrap_token: token.map(BootstrapToken::new),
    };

    // First start: nothing stored, so it enrolls with the token.
    let agent =
        RunningAgent::start(enrolling(kube_config(&s).await, enrollment(Some(BOOTSTRAP)))).await.expect("enrolled");
    agent.wait_tunnels(1).await;
    assert_eq!(cp.enrollments.load(Ordering::SeqCst), 1);
    let serial = agent.handle.certificate_serial();
    let stored = secret_store(&s).await.load().await.expect("load").expect("stored");
    assert_eq!(serial_of(&stored), serial);
    assert_eq!(stored.relays, [relay.quic.to_string()]);
    assert_eq!(stored.control_plane_url.as_deref(), Some(cp.url.as_str()));
    agent.stop().await;

    // Restart: no token (it is spent anyway), same certificate, no
    // enrollment; the control plane comes from the Secret too.
    let e = Enrollment { control_plane_url: None, control_plane_ca: None, ..enrollment(None) };
    let agent = RunningAgent::start(enrolling(kube_config(&s).await, e)).await.expect("reused");
    agent.wait_tunnels(1).await;
    assert_eq!(agent.handle.certificate_serial(), serial);
    assert_eq!(cp.enrollments.load(Ordering::SeqCst), 1);
    // ... and it renews with the stored control plane.
    within("renewal", LONG, agent.handle.renew_now()).await.expect("renewed");
    assert_eq!(*cp.renewed_serials.lock().expect("lock"), vec![serial.clone()]);
    agent.stop().await;

    // A stored certificate that has expired needs a new token.
    let expired = bundle(&pki, &[relay.quic], Some(&cp), Validity::expired());
    secret_store(&s).await.save(&expired).await.expect("save");
    let err = RunningAgent::start(enrolling(kube_config(&s).await, enrollment(None))).await.err().expect("no token");
    assert!(matches!(err, AgentError::NeedsBootstrapToken { .. }), "{err}");
    assert!(err.to_string().contains("--bootstrap-token"), "{err}");
    // The spent token is refused, with the control plane's reason.
    let err = RunningAgent::start(enrolling(kube_config(&s).await, enrollment(Some(BOOTSTRAP))))
        .await
        .err()
        .expect("spent token");
    assert!(err.to_string().contains("already used") && err.to_string().contains("HTTP 401"), "{err}");
}

/// The chart runs two replicas that share the state Secret and the one-time
/// bootstrap token: one enrolls, the other is refused and takes the first
/// one's credentials from the Secret instead of crash-looping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sharing_one_token_both_come_up_with_one_enrollment() {
    let s = sim(false).await;
    precreate_secret(&s);
    let pki = Arc::new(TestPki::new());
    let relay = relay(&pki).await;
    let cp = fake_control_plane(pki.clone(), vec![relay.quic.to_string()]).await;
    let enrollment = Enrollment {
        store: secret_location(),
        control_plane_url: Some(cp.url.clone()),
        control_plane_ca: Some(cp.ca_pem.clone()),
        bootstrap_token: Some(BootstrapToken::new(BOOTSTRAP)),
    };
    capture_logs();
    // Both attempts reach the control plane before either is answered.
    cp.hold_enrollments_until.store(2, Ordering::SeqCst);
    let (a, b) = tokio::join!(
        RunningAgent::start(enrolling(kube_config(&s).await, enrollment.clone())),
        RunningAgent::start(enrolling(kube_config(&s).await, enrollment.clone())),
    );
    let (a, b) = (a.expect("replica a"), b.expect("replica b"));
    a.wait_tunnels(1).await;
    b.wait_tunnels(1).await;
    assert_eq!(cp.enrollments.load(Ordering::SeqCst), 1, "the token is spent once");
    assert_eq!(a.handle.certificate_serial(), b.handle.certificate_serial(), "both use the one enrollment");
    assert!(captured_logs().contains("another replica enrolled; using its credentials"));

    // One renews; the other, due too, takes that certificate from the
    // Secret instead of renewing the shared one again.
    let shared_serial = a.handle.certificate_serial();
    within("renewal of a", LONG, a.handle.renew_now()).await.expect("renewed");
    let renewed = a.handle.certificate_serial();
    assert_ne!(renewed, shared_serial);
    within("renewal of b", LONG, b.handle.renew_now()).await.expect("took the sibling's");
    assert_eq!(b.handle.certificate_serial(), renewed);
    assert_eq!(*cp.renewed_serials.lock().expect("lock"), vec![shared_serial], "one renewal for both");
    a.stop().await;
    b.stop().await;
}

/// Renewal end to end with the directory store and the test backend as the
/// API server: a streaming response stays on the old tunnel until it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_rotates_tunnels_once_their_streams_finish() {
    kubechat_tests::wait::count_panics();
    capture_logs();
    let pki = Arc::new(TestPki::new());
    let backend = Backend::start(CLUSTER).await;
    let relay = relay(&pki).await;
    let cp = fake_control_plane(pki.clone(), vec![relay.quic.to_string()]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = CredentialStore::dir(dir.path());
    let first = bundle(&pki, &[relay.quic], Some(&cp), Validity::for_duration(Duration::from_secs(3600)));
    store.save(&first).await.expect("save");
    let kube = kube::Config::new(backend.url().parse().expect("url"));
    let agent = RunningAgent::start(enrolling(
        kube,
        Enrollment {
            store: StoreLocation::Dir(dir.path().to_path_buf()),
            control_plane_url: None,
            control_plane_ca: None,
            bootstrap_token: None,
        },
    ))
    .await
    .expect("agent");
    agent.wait_tunnels(1).await;
    let old_serial = agent.handle.certificate_serial();
    assert_eq!(old_serial, serial_of(&first));

    // A response in flight on the current tunnel.
    let client = InternalClient::new(relay.internal, &pki.internal_client(), &pki.relay_ca());
    let gate = backend.open_gate("rotation");
    let req = client.request("GET", CLUSTER, "/gate/rotation", false).body(Full::new(Bytes::new())).expect("request");
    let resp = within("response head", LONG, client.send(req)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    gate.send(Bytes::from_static(b"before ")).await.expect("gate");
    let got = within("first chunk", LONG, body.frame()).await.expect("frame").expect("ok");
    assert_eq!(got.into_data().expect("data"), "before ");

    within("renewal", LONG, agent.handle.renew_now()).await.expect("renewed");
    // The control plane saw the current certificate as the client certificate.
    assert_eq!(*cp.renewed_serials.lock().expect("lock"), vec![old_serial.clone()]);
    let new_serial = agent.handle.certificate_serial();
    assert_ne!(new_serial, old_serial);
    assert_eq!(agent.handle.renewals(), 1);
    // Saved before use.
    let saved = store.load().await.expect("load").expect("stored");
    assert_eq!(serial_of(&saved), new_serial);
    assert_ne!(saved.key_pem, first.key_pem, "a new key for every renewal");

    // The replacement is dialled first; the old tunnel stays for its stream.
    let h = agent.handle.clone();
    eventually("replacement tunnel up beside the old one", LONG, || {
        let h = h.clone();
        async move { h.metrics().tunnel_rotations.get() == 1 && h.tunnels_connected() == 2 }
    })
    .await;
    assert_eq!(relay.handle.tunnel_count(), 2);
    for _ in 0..4 {
        let r = client.get(CLUSTER, "/small").await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    gate.send(Bytes::from_static(b"after")).await.expect("gate");
    let got = within("chunk after renewal", LONG, body.frame()).await.expect("frame").expect("ok");
    assert_eq!(got.into_data().expect("data"), "after");
    assert_eq!(h.tunnels_connected(), 2, "the old tunnel waits for its stream");

    // The stream ends: the old tunnel closes.
    drop(gate);
    assert!(within("end of body", LONG, body.frame()).await.is_none());
    eventually("old tunnel closed", LONG, || {
        let h = h.clone();
        async move { h.tunnels_connected() == 1 }
    })
    .await;
    let rh = relay.handle.clone();
    eventually("relay has one tunnel", LONG, || {
        let rh = rh.clone();
        async move { rh.tunnel_count() == 1 }
    })
    .await;
    let r = client.get(CLUSTER, "/small").await;
    assert_eq!(r.status, StatusCode::OK);

    let metrics = h.metrics().render();
    assert!(metrics.contains("kubechat_agent_renewals_total{result=\"success\"} 1"), "{metrics}");
    assert!(metrics.contains(&format!("kubechat_agent_certificate_expiry_seconds {}", saved.expires_at)), "{metrics}");
    assert!(metrics.contains("kubechat_agent_tunnel_rotations_total 1"), "{metrics}");
    agent.stop().await;
    assert_eq!(kubechat_tests::wait::panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_renewal_keeps_the_current_certificate_and_says_why() {
    capture_logs();
    let pki = Arc::new(TestPki::new());
    let relay = relay(&pki).await;
    let cp = fake_control_plane(pki.clone(), vec![relay.quic.to_string()]).await;
    cp.refuse_renewals.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().expect("tempdir");
    let first = bundle(&pki, &[relay.quic], Some(&cp), Validity::for_duration(Duration::from_secs(3600)));
    CredentialStore::dir(dir.path()).save(&first).await.expect("save");
    let agent = RunningAgent::start(enrolling(
        kube::Config::new("https://127.0.0.1:1".parse().expect("url")),
        Enrollment::new(StoreLocation::Dir(dir.path().to_path_buf()), &cp.url),
    ))
    .await
    .expect("agent");
    agent.wait_tunnels(1).await;
    let err = within("renewal", LONG, agent.handle.renew_now()).await.expect_err("refused");
    let msg = err.to_string();
    assert!(msg.contains("refused renewal (HTTP 403): the certificate is revoked"), "{msg}");
    assert!(!msg.contains("PRIVATE KEY"), "{msg}");
    assert_eq!(agent.handle.certificate_serial(), serial_of(&first));
    assert_eq!(agent.handle.renewals(), 0);
    assert_eq!(agent.handle.metrics().renewals.get("failure"), 1);
    let stored = CredentialStore::dir(dir.path()).load().await.expect("load").expect("stored");
    assert_eq!(stored, first, "nothing saved");

    // Without the control plane's CA (and no system bundle holding it) the
    // TLS handshake fails rather than trusting anything.
    let e = Enrollment {
        control_plane_ca: Some(pki.pki.internal_ca.cert_pem().to_string()),
        ..Enrollment::new(StoreLocation::Dir(dir.path().to_path_buf()), &cp.url)
    };
    let other = RunningAgent::start(enrolling(kube::Config::new("https://127.0.0.1:1".parse().expect("url")), e))
        .await
        .expect("agent");
    let err = within("renewal", LONG, other.handle.renew_now()).await.expect_err("untrusted");
    assert!(err.to_string().contains("cannot reach the control plane"), "{err}");
    other.stop().await;
    agent.stop().await;
}

/// Everything at TRACE level (but kube-sim's own) while the agent enrolls
/// into the Secret, restarts from it and renews: no key, no bootstrap
/// token, no Secret data, in any form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_secret_never_appears_in_logs() {
    let s = sim(false).await;
    precreate_secret(&s);
    let pki = Arc::new(TestPki::new());
    let relay = relay(&pki).await;
    let cp = fake_control_plane(pki.clone(), vec![relay.quic.to_string()]).await;
    let e = Enrollment {
        store: secret_location(),
        control_plane_url: Some(cp.url.clone()),
        control_plane_ca: Some(cp.ca_pem.clone()),
        bootstrap_token: Some(BootstrapToken::new(BOOTSTRAP)),
    };
    let agent = RunningAgent::start(enrolling(kube_config(&s).await, e.clone())).await.expect("enrolled");
    agent.wait_tunnels(1).await;
    let enrolled = secret_store(&s).await.load().await.expect("load").expect("stored");
    agent.handle.renew_now().await.expect("renewed");
    tracing::debug!(config = ?enrolling(kube_config(&s).await, e.clone()), "the configuration, as it would be logged");
    agent.stop().await;
    let agent = RunningAgent::start(enrolling(kube_config(&s).await, e)).await.expect("reused");
    agent.wait_tunnels(1).await;
    let renewed = secret_store(&s).await.load().await.expect("load").expect("stored");
    agent.stop().await;
    assert_ne!(enrolled.key_pem, renewed.key_pem);
    let secret_data = stored_secret(&s).expect("secret")["data"].clone();

    let logs = captured_logs();
    assert!(logs.contains("enrolled; credentials stored") && logs.contains("certificate renewed"), "{logs}");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut forbidden = vec![BOOTSTRAP.to_string(), "PRIVATE KEY".to_string()];
    for key in [&enrolled.key_pem, &renewed.key_pem] {
        forbidden.push(b64(key));
        // Any line of the key's base64 body.
        forbidden.extend(key.lines().filter(|l| !l.starts_with("-----") && l.len() > 16).map(str::to_string));
    }
    // Every stored value (an empty one, as for no cluster grant key,
    // hides nothing).
    for v in secret_data.as_object().expect("data").values() {
        forbidden.extend(v.as_str().filter(|v| !v.is_empty()).map(str::to_string));
    }
    for f in &forbidden {
        assert!(!logs.contains(f.as_str()), "the logs contain secret material ({} chars)", f.len());
    }
}
