//! A whole KubeChat platform in one test process: control plane, relay,
//! agent and kube-sim, wired as in production (presence over gRPC, grants,
//! enrollment), with a demo tenant and cluster. Dropping a [`World`] checks
//! that no secret reached any log line.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use kube_sim::kubeconfig::{Credentials, KubeconfigSpec};
use kubechat_control_plane::client::Client;
use kubechat_control_plane::enroll::Enrollment;
use kubechat_control_plane::{Config, ControlPlane, RelayTls, Secret};
use kubechat_protocol::grant::{GrantSigner, GrantVerifier};
use kubechat_relay::presence::PresenceTarget;
use kubechat_transport::pki::Validity;
use kubechat_transport::tls;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::kubectl::Kubectl;
use crate::pki::TestPki;
use crate::stack::{AGENT_TOKEN, start_agent, start_relay};

/// The platform admin's token.
pub const ADMIN: &str = "kc_platformadmintokenforkubepathtests000000";

/// The SaaS side of a platform on 127.0.0.1: control plane (SQLite, HTTPS,
/// internal gRPC, enrollment), a relay reporting presence, and a demo
/// tenant with one registered cluster (no agent yet).
pub struct Platform {
    /// Certificates of this world.
    pub pki: TestPki,
    /// `https://127.0.0.1:<port>` of the control plane.
    pub cp_url: String,
    /// The CA (PEM) the control plane's certificate chains to.
    pub cp_ca: String,
    /// The tenant admin's API client.
    pub api: Client,
    /// The relay.
    pub relay: crate::stack::TestRelay,
    /// Holds the control plane's database.
    pub dir: tempfile::TempDir,
    /// Stops the control plane.
    pub shutdown: CancellationToken,
    /// The control plane's `run`: it ends once a shutdown has drained.
    pub cp_run: Option<tokio::task::JoinHandle<()>>,
    /// The tenant id.
    pub tenant: String,
    /// The cluster id.
    pub cluster: String,
    /// The cluster registration's answer (bootstrap token, `helmInstall`, …).
    pub registration: serde_json::Value,
    /// The control plane's internal (gRPC) port relays report to.
    pub internal_port: u16,
    /// The control plane's admin listener (`/metrics`).
    pub cp_admin: std::net::SocketAddr,
    /// The grant key relays and agents trust, as `--grant-key` takes it.
    pub grant_key: String,
    /// The grant keys, as the agent's configuration takes them.
    pub grants: GrantVerifier,
    /// The control plane's state (its database).
    pub app: std::sync::Arc<kubechat_control_plane::App>,
    /// Secrets no log line may contain (besides the generic patterns).
    pub secrets: Vec<String>,
}

/// A whole platform: [`Platform`] plus kube-sim and an agent serving the
/// cluster. Dereferences to the [`Platform`].
pub struct World {
    /// The control plane, relay, tenant and cluster.
    pub platform: Platform,
    /// The simulated cluster.
    pub sim: kube_sim::TestSim,
    /// The agent of the cluster.
    pub agent: crate::stack::TestAgent,
}

impl std::ops::Deref for World {
    type Target = Platform;
    fn deref(&self) -> &Platform {
        &self.platform
    }
}

impl std::ops::DerefMut for World {
    fn deref_mut(&mut self) -> &mut Platform {
        &mut self.platform
    }
}

impl Drop for World {
    /// Every test ends by proving that no token or private key reached any
    /// log line, at any level (our crates at TRACE, dependencies at DEBUG).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let literals: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
            crate::logscan::assert_no_secrets(&literals);
        }
    }
}

impl World {
    /// The agent's kube configuration for kube-sim (its service-account token).
    pub async fn agent_kube_config(&self) -> kube::Config {
        let kc = KubeconfigSpec {
            name: "sim".into(),
            server: self.sim.url(),
            ca_pem: Some(self.sim.ca_pem.clone()),
            credentials: Credentials::Token(AGENT_TOKEN.into()),
            impersonate_user: None,
            impersonate_groups: Vec::new(),
            namespace: None,
        };
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::from_yaml(&kc.to_yaml()).expect("yaml"),
            &Default::default(),
        )
        .await
        .expect("kube config")
    }
}

/// A relay binary ready to run beside a [`Platform`]: its own certificate
/// (for its relay id) and the CAs in a directory, flags that report
/// presence to the platform's control plane and trust its grant key, and
/// fixed ports, so it can be killed and started again on the same ones.
pub struct RelaySpec {
    /// Certificates (and anything the flags point at, e.g. a spool).
    pub dir: tempfile::TempDir,
    /// The flags besides listen addresses and certificates.
    pub args: Vec<String>,
    /// QUIC, internal and admin ports.
    pub ports: (u16, u16, u16),
}

impl RelaySpec {
    /// Starts the relay binary `bin` (an integration test passes
    /// `env!("CARGO_BIN_EXE_test-relay")`).
    pub fn spawn(&self, bin: &str) -> crate::stack::RelayProcess {
        let (quic, internal, admin) = self.ports;
        crate::stack::RelayProcess::spawn_with(bin, self.dir.path(), quic, internal, admin, &self.args)
    }
}

impl World {
    /// The name of a demo pod in `ns` whose name starts with `prefix`.
    pub fn pod(&self, ns: &str, prefix: &str) -> String {
        let pods = self.sim.sim.cluster.resource("", "v1", "pods").expect("kube-sim serves pods");
        let (items, _) = self.sim.sim.cluster.store.list(&pods, Some(ns));
        items
            .into_iter()
            .filter_map(|p| p.pointer("/metadata/name").and_then(serde_json::Value::as_str).map(str::to_string))
            .find(|n| n.starts_with(prefix))
            .unwrap_or_else(|| panic!("no pod {prefix}… in {ns}"))
    }
}

impl Platform {
    /// A relay `relay_id` to run as a process, reporting to this platform's
    /// control plane every 200 ms, with `extra` flags.
    pub fn relay_spec(&self, relay_id: &str, extra: &[&str]) -> RelaySpec {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        self.pki.relay_cert_for(relay_id).write(d, "relay").expect("write the relay certificate");
        for (file, pem) in [
            ("agent-ca.crt", self.pki.pki.agent_ca.cert_pem()),
            ("internal-ca.crt", self.pki.pki.internal_ca.cert_pem()),
            ("relay-ca.crt", self.pki.pki.relay_ca.cert_pem()),
        ] {
            std::fs::write(d.join(file), pem).expect("write a CA");
        }
        let mut args: Vec<String> = vec![
            "--relay-id".into(),
            relay_id.into(),
            "--control-plane-url".into(),
            format!("https://127.0.0.1:{}", self.internal_port),
            "--control-plane-ca".into(),
            d.join("relay-ca.crt").display().to_string(),
            "--presence-interval-ms".into(),
            "200".into(),
            "--grant-key".into(),
            self.grant_key.clone(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let free = crate::stack::free_port;
        RelaySpec { dir, args, ports: (free(), free(), free()) }
    }

    /// kubectl for `cluster` with `token`.
    pub fn kubectl(&self, token: &str, cluster: &str) -> Kubectl {
        Kubectl::new(
            &KubeconfigSpec {
                name: "kubechat".into(),
                server: format!("{}/k8s/clusters/{cluster}", self.cp_url),
                ca_pem: Some(self.cp_ca.clone()),
                credentials: Credentials::Token(token.into()),
                impersonate_user: None,
                impersonate_groups: Vec::new(),
                namespace: None,
            }
            .to_yaml(),
        )
    }

    /// kubectl with the kubeconfig the control plane hands out for `token`.
    pub async fn kubectl_downloaded(&self, token: &str) -> Kubectl {
        let c = Client::new_tls(&self.cp_url, Some(Secret(token.into())), &self.cp_ca);
        let r =
            c.get(&format!("/v1/tenants/{}/clusters/{}/kubeconfig", self.tenant, self.cluster)).await.expect("reach");
        assert_eq!(r.status, 200, "{}", r.body);
        Kubectl::new(r.body["kubeconfig"].as_str().expect("kubeconfig"))
    }

    /// A user of the tenant with `role`; returns their token.
    pub async fn user(&self, email: &str, role: &str) -> String {
        let r = self
            .api
            .post(&format!("/v1/tenants/{}/users", self.tenant), &json!({"email": email, "role": role}))
            .await
            .expect("reach");
        assert_eq!(r.status, 201, "{}", r.body);
        let uid = r.body["id"].as_str().expect("id").to_string();
        let t = self
            .api
            .post(&format!("/v1/tenants/{}/tokens", self.tenant), &json!({"name": "kubectl", "userId": uid}))
            .await
            .expect("reach");
        t.body["token"].as_str().expect("token").to_string()
    }

    /// The control plane's Prometheus metrics.
    pub async fn cp_metrics(&self) -> String {
        admin_metrics(self.cp_admin).await
    }

    /// Another relay `relay_id` of `region` (QUIC on `quic_port`, 0 for any),
    /// reporting presence to this world's control plane.
    pub async fn extra_relay(&self, relay_id: &str, region: &str, quic_port: u16) -> crate::stack::TestRelay {
        let port = self.internal_port;
        let identity = self.pki.relay_cert_for(relay_id).identity().expect("identity");
        let pki = &self.pki;
        start_relay(pki, |c| {
            c.relay_id = relay_id.to_string();
            c.region = region.to_string();
            c.quic_listen = ([127, 0, 0, 1], quic_port).into();
            c.tls = identity.clone();
            c.presence = Some(PresenceTarget {
                url: format!("https://127.0.0.1:{port}"),
                tls: tls::internal_client_config(&identity, &pki.relay_ca(), &[]).expect("tls"),
                interval: Duration::from_millis(200),
                advertise: None,
            });
        })
        .await
    }
}

/// A world whose cluster has `policy`.
pub async fn world(policy: serde_json::Value) -> World {
    world_with(policy, |_| {}).await
}

/// A world whose cluster has `policy`, its relay configured by `tweak` too.
pub async fn world_with(policy: serde_json::Value, tweak: impl FnOnce(&mut kubechat_relay::Config)) -> World {
    world_full(policy, tweak, |_| {}).await
}

/// A platform whose cluster has `policy`, its relay and control plane
/// configured by the tweaks; no agent or cluster runs yet.
pub async fn platform(
    policy: serde_json::Value,
    tweak: impl FnOnce(&mut kubechat_relay::Config),
    cp_tweak: impl FnOnce(&mut Config),
) -> Platform {
    crate::logscan::install();
    let pki = TestPki::new();
    // The control plane's grant key, and what relays and agents trust.
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("keygen");
    let signer = GrantSigner::from_pkcs8("cp-1", pkcs8.as_ref()).expect("signer");
    let trust = || GrantVerifier::new([("cp-1".to_string(), signer.public_key())]);
    // The relay starts first: enrollment hands out its address. It reports
    // presence to the control plane's internal port (chosen now; reports
    // are retried until the control plane is up). The control plane is
    // handed this listener itself, so no parallel test can take the port.
    let internal = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the internal listener");
    let internal_port = internal.local_addr().expect("internal address").port();
    let relay = start_relay(&pki, |c| {
        c.ws_listen = Some(([127, 0, 0, 1], 0).into());
        tweak(c);
        c.grants = trust();
        c.presence = Some(PresenceTarget {
            url: format!("https://127.0.0.1:{internal_port}"),
            tls: tls::internal_client_config(&pki.relay_identity(), &pki.relay_ca(), &[]).expect("tls"),
            interval: Duration::from_millis(200),
            advertise: None,
        });
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::new(&format!("sqlite://{}?mode=rwc", dir.path().join("cp.db").display()));
    cfg.platform_admin_token = Some(Secret(ADMIN.into()));
    cfg.grant_signing_key =
        Some(Secret(format!("cp-1={}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pkcs8.as_ref()))));
    let serving = pki.relay_cert_for("control-plane");
    cfg.tls = Some(serving.identity().expect("identity"));
    cfg.public_ca_pem = Some(pki.pki.relay_ca.cert_pem().to_string());
    cfg.relays = Some(RelayTls { client: pki.internal_client(), relay_ca: pki.relay_ca() });
    cfg.internal_listen = Some(([127, 0, 0, 1], internal_port).into());
    cfg.enrollment = Some(Enrollment {
        agent_ca: Arc::new(pki.pki.agent_ca.try_clone().expect("agent CA")),
        relay_ca_pem: pki.pki.relay_ca.cert_pem().to_string(),
        relays: vec![("local".into(), format!("{}#ws={}", relay.quic, relay.ws.map(|a| a.port()).unwrap_or_default()))],
        cert_lifetime: Duration::from_secs(3600),
        bootstrap_lifetime: Duration::from_secs(3600),
        renewal_overlap: Duration::ZERO,
    });
    cfg.admin_listen = Some(([127, 0, 0, 1], 0).into());
    cp_tweak(&mut cfg);
    let cp = ControlPlane::bind_with_internal(cfg, Some(internal)).await.expect("control plane");
    let app = cp.app();
    let cp_admin = cp.admin_addr().expect("admin listener");
    let cp_url = format!("https://{}", cp.addr());
    let http_api = cp_url.clone();
    let shutdown = CancellationToken::new();
    let cp_run = Some(tokio::spawn(cp.run(shutdown.clone())));

    let api_admin = kubechat_control_plane::client::Client::new_tls(
        &http_api,
        Some(Secret(ADMIN.into())),
        pki.pki.relay_ca.cert_pem(),
    );
    let r = api_admin
        .post(
            "/v1/tenants",
            &json!({"name": "Acme", "slug": "acme", "plan": "team", "adminEmail": "admin@acme.example"}),
        )
        .await
        .expect("reach");
    assert_eq!(r.status, 201, "{}", r.body);
    let tenant = r.body["tenant"]["id"].as_str().expect("id").to_string();
    let api = api_admin.with_token(r.body["token"].as_str().expect("token"));
    let c = api
        .post(&format!("/v1/tenants/{tenant}/clusters"), &json!({"name": "prod", "policy": policy}))
        .await
        .expect("reach");
    assert_eq!(c.status, 201, "{}", c.body);
    let cluster = c.body["id"].as_str().expect("id").to_string();
    let cluster_key = kubechat_protocol::grant::to_header(&signer.cluster_key(&tenant, &cluster));
    Platform {
        cp_ca: pki.pki.relay_ca.cert_pem().to_string(),
        pki,
        cp_url,
        api,
        relay,
        dir,
        shutdown,
        cp_run,
        tenant,
        cluster,
        registration: c.body,
        internal_port,
        cp_admin,
        grant_key: format!("cp-1={}", kubechat_protocol::grant::to_header(&signer.public_key())),
        grants: trust(),
        app,
        secrets: vec![
            ADMIN.to_string(),
            AGENT_TOKEN.to_string(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pkcs8.as_ref()),
            // The demo cluster's grant key (its agent holds it).
            cluster_key,
        ],
    }
}

/// A world whose relay and control plane are configured by the tweaks too.
pub async fn world_full(
    policy: serde_json::Value,
    tweak: impl FnOnce(&mut kubechat_relay::Config),
    cp_tweak: impl FnOnce(&mut Config),
) -> World {
    let platform = platform(policy, tweak, cp_tweak).await;
    let Platform { pki, relay, api, tenant, cluster, .. } = &platform;
    let mut tokens = HashMap::new();
    tokens.insert(
        AGENT_TOKEN.to_string(),
        kube_sim::UserInfo { name: kube_sim::seed::AGENT_USER.into(), groups: vec!["system:serviceaccounts".into()] },
    );
    let mut sim_cfg = kube_sim::SimConfig::with_tokens(tokens);
    sim_cfg.log_interval = Duration::from_millis(200);
    let sim = kube_sim::TestSim::start(sim_cfg, true).await;
    let kc = KubeconfigSpec {
        name: "sim".into(),
        server: sim.url(),
        ca_pem: Some(sim.ca_pem.clone()),
        credentials: Credentials::Token(AGENT_TOKEN.into()),
        impersonate_user: None,
        impersonate_groups: Vec::new(),
        namespace: None,
    };
    let kube_config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&kc.to_yaml()).expect("yaml"),
        &Default::default(),
    )
    .await
    .expect("kube config");
    let cert = pki.agent_cert_valid(tenant, cluster, Validity::for_duration(Duration::from_secs(3600)));
    // What enrollment would have given it: the grant keys and its cluster
    // grant key (a secret the log scan looks for).
    let cluster_key = platform.app.signer.cluster_key_spec(tenant, cluster);
    let grants = platform.grants.clone().with_cluster_key(&cluster_key).expect("a cluster grant key");
    let agent = start_agent(pki, &[relay.quic], &cert, &sim.url(), |a| {
        a.kube = kube_config;
        a.grants = grants;
    })
    .await;
    agent.wait_tunnels(1).await;
    // The directory knows the tunnel once the relay reported it.
    let (a, t, c) = (api.clone(), tenant.clone(), cluster.clone());
    crate::wait::eventually("the directory lists the tunnel", Duration::from_secs(10), || {
        let (a, t, c) = (a.clone(), t.clone(), c.clone());
        async move {
            let r = a.get(&format!("/v1/tenants/{t}/clusters/{c}")).await.expect("reach");
            r.body["connected"] == json!(true)
        }
    })
    .await;
    World { platform, sim, agent }
}

/// The `/metrics` answer (head and text) of the admin listener at `admin`.
pub async fn admin_metrics(admin: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin).await.expect("connect to an admin listener");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}
