//! kube-sim: a simulated Kubernetes API server, in memory, faithful enough
//! that the real kubectl (and the Helm library) work against it unchanged.
//! It is the stand-in for a cluster in tests and in the dev stack.
//!
//! # Layout
//! - [`server`]: authentication, impersonation, authorization, handlers.
//! - [`exec`]: pods/exec over WebSocket with a tiny shell.
//! - `websocket`: accepting the WebSocket upgrades of exec and port-forward.
//! - [`portforward`]: pods/portforward, SPDY/3.1 inside WebSocket, to a simulated in-pod HTTP service.
//! - [`request`]: request targets read the way Go's `net/url` and the API
//!   server's RequestInfo read them (its own code, shared with nothing).
//! - [`cluster`]: the store plus the simulated scheduler, kubelet, garbage collector, events, CRDs.
//! - [`admission`]: defaults and validation of the built-in kinds.
//! - [`workloads`]: the Deployment, ReplicaSet, DaemonSet and StatefulSet controllers.
//! - [`disruption`]: PodDisruptionBudgets and pods/eviction.
//! - [`metrics`]: `metrics.k8s.io` (PodMetrics, NodeMetrics), as metrics-server serves it.
//! - [`openapi`]: `/openapi/v3`, the schemas `kubectl explain` reads.
//! - [`store`]: objects, resource versions, watch history.
//! - [`resources`]: built-in and CRD resource types, discovery entries.
//! - [`rbac`]: the RBAC evaluator and the API server's forbidden messages.
//! - [`proto`]: protobuf object bodies (core and apps/v1 kinds, Eviction, DeleteOptions) as client-go's typed clients send them.
//! - [`review`]: (Self)SubjectAccessReview bodies, JSON and protobuf.
//! - [`patch`]: merge, JSON and strategic merge patches, server-side apply.
//! - [`selector`]: label and field selectors.
//! - [`table`]: `Table` answers for kubectl's columns.
//! - [`error`]: `Status` errors.
//! - [`kubeconfig`]: kubeconfig files for kubectl and the agent.
//! - [`seed`]: system RBAC and the demo data set.

pub mod admission;
pub mod cluster;
pub mod disruption;
pub mod error;
pub mod exec;
pub mod kubeconfig;
pub mod metrics;
pub mod openapi;
pub mod patch;
pub mod portforward;
pub mod proto;
pub mod rbac;
pub mod request;
pub mod resources;
pub mod review;
pub mod seed;
pub mod selector;
pub mod server;
pub mod store;
pub mod table;
mod websocket;
pub mod workloads;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub use rbac::UserInfo;
pub use server::{KubeSim, SimConfig};

impl KubeSim {
    /// A simulated cluster with system RBAC and, if `demo`, the demo data.
    pub fn new(config: SimConfig, demo: bool) -> Arc<Self> {
        let sim = Self {
            cluster: cluster::Cluster::new(),
            config,
            issued_tokens: Default::default(),
            seen: Default::default(),
            unavailable_groups: Default::default(),
        };
        seed::system(&sim.cluster);
        if demo {
            seed::demo(&sim.cluster);
        }
        Arc::new(sim)
    }
}

impl KubeSim {
    /// Installs or removes the metrics API (`kubectl top` needs it).
    pub fn set_metrics(&self, on: bool) {
        self.cluster.set_metrics(on);
    }
}

impl SimConfig {
    /// Settings with the given tokens and one-second log lines.
    pub fn with_tokens(tokens: HashMap<String, UserInfo>) -> Self {
        Self { tokens, log_interval: Duration::from_secs(1), bookmark_interval: Duration::from_secs(30) }
    }
}

/// Serves HTTP (or HTTPS with `tls`) on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, sim: Arc<KubeSim>, shutdown: CancellationToken) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
        };
        let _ = tcp.set_nodelay(true);
        let (sim, tls, builder, shutdown) = (sim.clone(), tls.clone(), builder.clone(), shutdown.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let sim = sim.clone();
                async move { Ok::<_, Infallible>(server::handle(sim, req).await) }
            });
            let served = async {
                match tls {
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(stream) => builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).await,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "tls handshake failed");
                            Ok(())
                        }
                    },
                    None => builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc).await,
                }
            };
            tokio::select! {
                r = served => if let Err(e) = r { tracing::debug!(%peer, error = %e, "connection ended") },
                () = shutdown.cancelled() => {}
            }
        });
    }
}

/// An HTTPS acceptor with a fresh CA; returns it and the CA's PEM.
pub fn test_tls(ip: std::net::IpAddr) -> (TlsAcceptor, String) {
    use kubechat_transport::pki::{CertAuthority, LeafSpec, Validity};
    let ca = CertAuthority::new("kube-sim cluster CA").expect("ca");
    let spec = LeafSpec {
        common_name: "kube-apiserver".into(),
        dns_names: vec!["localhost".into()],
        ips: vec![ip],
        server: true,
        ..Default::default()
    };
    let id = ca
        .issue(&spec, Validity::for_duration(Duration::from_secs(24 * 3600)))
        .expect("cert")
        .identity()
        .expect("identity");
    let mut tls = rustls::ServerConfig::builder_with_provider(kubechat_transport::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_no_client_auth()
        .with_single_cert(id.chain, id.key)
        .expect("server cert");
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (TlsAcceptor::from(Arc::new(tls)), ca.cert_pem().to_string())
}

/// A running kube-sim for tests on 127.0.0.1:0, over HTTPS with a fresh CA
/// (kubectl sends bearer tokens only over TLS).
pub struct TestSim {
    /// The simulator (inspect or change its cluster directly).
    pub sim: Arc<KubeSim>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The CA that signed its serving certificate.
    pub ca_pem: String,
    /// Cancel to stop.
    pub shutdown: CancellationToken,
}

impl TestSim {
    /// Starts kube-sim with `config` (and the demo data if `demo`).
    pub async fn start(config: SimConfig, demo: bool) -> Self {
        let sim = KubeSim::new(config, demo);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind kube-sim");
        let addr = listener.local_addr().expect("addr");
        let (tls, ca_pem) = test_tls(addr.ip());
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(listener, Some(tls), sim.clone(), shutdown.clone()));
        Self { sim, addr, ca_pem, shutdown }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}
