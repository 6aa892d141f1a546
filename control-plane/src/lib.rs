//! The KubeChat control plane: tenants, users, roles, API tokens and
//! clusters, on SQLite (embedded default) or PostgreSQL (several replicas,
//! row-level security per tenant), served as a REST API; and the `kubechat`
//! CLI that talks to it.
//!
//! # Layout
//! - [`cli`]: the server's command line and `main`.
//! - [`config`]: file < environment < flags, validated; `--check-config`.
//! - [`app`]: the shared state.
//! - [`http`]: the public HTTP service on axum: a router per resource, the
//!   caller extractor, the kube path mounted, the generated OpenAPI document.
//! - [`store`]: the data-access layer over SQLite and PostgreSQL, migrations, RLS; storage errors.
//! - [`model`]: tenants, subscriptions, plans, users, roles, tokens, clusters.
//! - [`auth`]: API tokens and the authenticated caller.
//! - [`kube_authz`]: the role matrix and cluster policy for kubectl requests.
//! - [`ratelimit`]: token buckets per token and per tenant.
//! - [`enroll`]: bootstrap tokens and agent enrollment (CSR → certificate).
//! - [`helm`]: the `helm install` command a cluster registration answers with.
//! - [`error`]: JSON errors with a code and a message a person can act on.
//! - [`kube`]: the kube path as a pipeline: caller → cluster & role →
//!   classify & authorize → quota → route → record → sign → forward.
//! - [`directory`]: cluster → relay, from relays' presence reports, with leases.
//! - [`audit`]: the per-tenant hash-chained audit log and the usage ledger.
//! - [`ingest`]: the gRPC service relays publish events to.
//! - [`billing`]: prices, the monthly command quota, invoices, MRR.
//! - [`breaker`]: per-tenant circuit breakers on the kube path.
//! - [`cache`]: what warm requests read, with invalidation across replicas.
//! - [`writer`]: the one task that writes, with group commit.
//! - [`metrics`]: Prometheus metrics on the admin listener.
//! - `presence`: the internal gRPC listener relays report to (mutual TLS).
//! - [`relays`]: pooled mutual-TLS connections to relays.
//! - [`chat`]: the chat command service: kubectl or English in, a plan
//!   with a server-side dry run out, writes only on a bound confirmation.
//! - [`chat_cli`]: `kubechat chat`, the interactive prompt over the chat API.
//! - [`client`]: the REST client the CLI and tests use.

pub mod app;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod breaker;
pub mod cache;
pub mod certificates;
pub mod chat;
pub mod chat_cli;
pub mod cli;
pub mod client;
pub mod config;
pub mod directory;
pub mod enroll;
pub mod error;
pub mod helm;
pub mod http;
pub mod ingest;
pub mod kube;
pub mod kube_authz;
pub mod metrics;
pub mod model;
pub mod ratelimit;
pub mod relays;
pub mod store;
pub mod web;
pub mod writer;

mod presence;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

pub use app::App;
pub use auth::Secret;
pub use store::Db;

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    /// The database is unreachable or its schema could not be migrated.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Bootstrapping the platform admin failed.
    #[error("bootstrap: {0}")]
    Bootstrap(#[from] store::StoreError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Error.
        #[source]
        source: std::io::Error,
    },
    /// The grant signing key is not `key-id=base64url-pkcs8`.
    #[error("the grant signing key must be key-id=base64url(PKCS#8 Ed25519)")]
    BadSigningKey,
    /// The serving certificate is unusable.
    #[error("tls: {0}")]
    Tls(String),
    /// A given bootstrap token is not a `kc_` token.
    #[error("the platform admin token must start with kc_ and be at least 32 characters")]
    BadBootstrapToken,
    /// The writer's spool directory cannot be created or written to.
    #[error("cannot write to the spool directory {dir}: {source} (set --spool-dir to a writable directory)")]
    Spool {
        /// The directory.
        dir: std::path::PathBuf,
        /// Error.
        #[source]
        source: std::io::Error,
    },
}

/// Control-plane settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// `sqlite://…` or `postgres://…`.
    pub database_url: Secret,
    /// The platform admin's token to create on first start (else generated
    /// and printed once).
    pub platform_admin_token: Option<Secret>,
    /// Requests per second per API token (burst 2×).
    pub per_token_rps: f64,
    /// Requests per second per tenant (burst 2×).
    pub per_tenant_rps: f64,
    /// Home region of new tenants when none is given.
    pub default_region: String,
    /// Mutual TLS with relays: dialling them for kube requests, and
    /// verifying their presence reports.
    pub relays: Option<RelayTls>,
    /// Address of the internal gRPC listener relays report presence to
    /// (needs `tls` and `relays`).
    pub internal_listen: Option<SocketAddr>,
    /// Grant signing key: `key-id=base64url(PKCS#8 Ed25519)`; generated at
    /// start when absent (then every replica has its own key).
    pub grant_signing_key: Option<Secret>,
    /// Serve HTTPS with this certificate (kubectl sends tokens only over TLS).
    pub tls: Option<kubechat_transport::tls::Identity>,
    /// The URL users reach this control plane at (for kubeconfigs);
    /// default `https://<listen>`.
    pub public_url: Option<String>,
    /// The CA (PEM) kubeconfigs should tell kubectl to trust.
    pub public_ca_pem: Option<String>,
    /// The agent chart the registration's `helm install` command names
    /// (default [`helm::DEFAULT_AGENT_CHART`]).
    pub agent_chart: String,
    /// Agent enrollment (agent CA, relay CA and endpoints), if enabled.
    pub enrollment: Option<enroll::Enrollment>,
    /// Admin listener (`/healthz`, `/readyz`, `/metrics`), plain HTTP; bind
    /// it to a private address.
    pub admin_listen: Option<SocketAddr>,
    /// Upstream failures in a row that open a tenant's circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker refuses before a trial request.
    pub breaker_cooldown: std::time::Duration,
    /// Connection caps and timeouts of the public listener (the internal
    /// and admin listeners use the defaults).
    pub limits: kubechat_transport::limits::Limits,
    /// Longest a REST request (not the kube path, not the audit export's
    /// streamed body) may take to be answered.
    pub request_timeout: std::time::Duration,
    /// How long a draining control plane lets its open requests run after
    /// the shutdown signal; then it closes the connections still open
    /// (watches, `logs -f`: the client sees the stream end, as when an API
    /// server restarts), gives upgraded streams (exec, port-forward) the
    /// same time again, and commits what was queued (the database down:
    /// for as long again, then it spools to `spool_dir`). Keep three grace
    /// periods plus 10 s under the pod's `terminationGracePeriodSeconds`.
    pub grace_period: std::time::Duration,
    /// Where a drain keeps the writes the database has not taken by the end
    /// of its grace period (committed by the next start on the same
    /// directory: keep it on a volume that outlives the process). Without
    /// one, a drain waits for the database however long it takes.
    pub spool_dir: Option<std::path::PathBuf>,
    /// Tenants' chat LLM endpoints may be on loopback over plain http.
    pub chat_llm_allow_loopback: bool,
    /// Anyone may create a (free, trial) tenant from `/ui/signup`.
    pub self_service_signup: bool,
    /// How long cached principals, tenants, clusters and grants are still
    /// trusted once the database's change log cannot be read (see
    /// [`cache::Cache::set_offline_trust`]).
    pub cache_offline_trust: std::time::Duration,
}

impl Config {
    /// Defaults for `database_url`, listening on 127.0.0.1:0.
    pub fn new(database_url: &str) -> Self {
        Self {
            listen: ([127, 0, 0, 1], 0).into(),
            database_url: Secret(database_url.to_string()),
            platform_admin_token: None,
            per_token_rps: 50.0,
            per_tenant_rps: 200.0,
            default_region: "local".into(),
            relays: None,
            internal_listen: None,
            grant_signing_key: None,
            tls: None,
            public_url: None,
            public_ca_pem: None,
            agent_chart: helm::DEFAULT_AGENT_CHART.into(),
            enrollment: None,
            admin_listen: None,
            breaker_threshold: 20,
            breaker_cooldown: std::time::Duration::from_secs(10),
            limits: kubechat_transport::limits::Limits::default(),
            request_timeout: std::time::Duration::from_secs(30),
            grace_period: std::time::Duration::from_secs(10),
            spool_dir: None,
            chat_llm_allow_loopback: false,
            self_service_signup: false,
            cache_offline_trust: cache::OFFLINE_TRUST,
        }
    }
}

/// The TCP peer of a request (never a forwarded-for header: those can be forged).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Certificates for talking with relays.
#[derive(Debug, Clone)]
pub struct RelayTls {
    /// The control plane's client certificate for relays' internal listeners
    /// (chains to the relays' internal CA).
    pub client: kubechat_transport::tls::Identity,
    /// The CA relays' certificates chain to (their internal listeners, and
    /// the client certificates they report presence with).
    pub relay_ca: Vec<rustls_pki_types::CertificateDer<'static>>,
}

/// Longest a drain spends giving back unspent quota.
const QUOTA_RELEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A bound control plane.
pub struct ControlPlane {
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    internal: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    admin: Option<TcpListener>,
    limits: kubechat_transport::limits::Limits,
    grace_period: std::time::Duration,
    /// The platform admin token, if this start generated it (one given in
    /// the configuration is never echoed: it would end up in pod logs).
    pub created_admin_token: Option<Secret>,
}

impl ControlPlane {
    /// Connects the database, migrates, creates the platform admin on first
    /// start, and binds the listener.
    pub async fn bind(config: Config) -> Result<Self, ControlPlaneError> {
        Self::bind_with_internal(config, None).await
    }

    /// As [`ControlPlane::bind`], with the internal listener already bound
    /// (`internal_listen` then only says that there is one): for whoever
    /// must hand its port to relays before the control plane starts.
    pub async fn bind_with_internal(
        config: Config,
        bound: Option<std::net::TcpListener>,
    ) -> Result<Self, ControlPlaneError> {
        // The listeners first: a configured port is taken before anything
        // slow (connecting and migrating the database) happens.
        let internal = match (config.internal_listen, &config.tls, &config.relays) {
            (None, _, _) => None,
            (Some(addr), Some(id), Some(relays)) => {
                let cfg = kubechat_transport::tls::internal_server_config(id, &relays.relay_ca)
                    .map_err(|e| ControlPlaneError::Tls(e.to_string()))?;
                let l = match bound {
                    Some(l) => l
                        .set_nonblocking(true)
                        .and_then(|()| TcpListener::from_std(l))
                        .map_err(|source| ControlPlaneError::Bind { addr, source })?,
                    None => TcpListener::bind(addr).await.map_err(|source| ControlPlaneError::Bind { addr, source })?,
                };
                Some((l, tokio_rustls::TlsAcceptor::from(Arc::new(cfg))))
            }
            (Some(_), _, _) => {
                return Err(ControlPlaneError::Tls(
                    "the internal listener needs a serving certificate and the relay CA".into(),
                ));
            }
        };
        let admin_listener = match config.admin_listen {
            Some(addr) => {
                Some(TcpListener::bind(addr).await.map_err(|source| ControlPlaneError::Bind { addr, source })?)
            }
            None => None,
        };
        let db = Db::connect(&config.database_url.0).await?;
        let token = match config.platform_admin_token.clone() {
            Some(t) if t.0.starts_with(auth::TOKEN_PREFIX) && t.0.len() >= 32 => t,
            Some(_) => return Err(ControlPlaneError::BadBootstrapToken),
            None => auth::new_token(),
        };
        let admin = model::User {
            id: auth::new_id('u'),
            tenant_id: None,
            email: "platform-admin@kubechat.local".into(),
            name: "Platform admin".into(),
            role: model::Role::PlatformAdmin,
            created_at: store::now(),
        };
        let api_token = model::ApiToken {
            id: auth::new_id('k'),
            tenant_id: None,
            user_id: admin.id.clone(),
            name: "bootstrap".into(),
            prefix: auth::prefix(&token.0),
            expires_at: None,
            revoked_at: None,
            created_at: store::now(),
        };
        let created = db.ensure_platform_admin(&admin, &api_token, &auth::hash(&token.0)).await?;
        let signer = match &config.grant_signing_key {
            Some(Secret(spec)) => {
                use base64::Engine;
                let (id, key) = spec.split_once('=').ok_or(ControlPlaneError::BadSigningKey)?;
                let pkcs8 = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(key)
                    .map_err(|_| ControlPlaneError::BadSigningKey)?;
                kubechat_protocol::grant::GrantSigner::from_pkcs8(id, &pkcs8)
                    .map_err(|_| ControlPlaneError::BadSigningKey)?
            }
            None => kube::generated_signer(&auth::new_id('g')),
        };
        let tls = match &config.tls {
            Some(id) => Some(public_tls(id, config.enrollment.as_ref())?),
            None => None,
        };
        let relays = match &config.relays {
            Some(r) => Some(
                relays::RelayClients::new(&r.client, &r.relay_ca).map_err(|e| ControlPlaneError::Tls(e.to_string()))?,
            ),
            None => None,
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ControlPlaneError::Bind { addr: config.listen, source })?;
        let cache = cache::Cache::new(db.clone()).await?;
        cache.set_offline_trust(config.cache_offline_trust);
        if let Some(dir) = &config.spool_dir {
            // Found unwritable now, not at the drain that needs it.
            writer::check_spool_dir(dir).map_err(|source| ControlPlaneError::Spool { dir: dir.clone(), source })?;
        }
        let writer = writer::Writer::start(db.clone(), config.spool_dir.clone());
        let app = Arc::new(App {
            cache,
            writer,
            quota: billing::Quota::default(),
            db,
            per_token: ratelimit::RateLimiter::new(config.per_token_rps, config.per_token_rps * 2.0),
            per_tenant: ratelimit::RateLimiter::new(config.per_tenant_rps, config.per_tenant_rps * 2.0),
            default_region: config.default_region,
            relays,
            signer,
            self_service_signup: config.self_service_signup,
            public_url: config.public_url.clone().unwrap_or_else(|| {
                let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
                format!("{}://{addr}", if tls.is_some() { "https" } else { "http" })
            }),
            public_ca_pem: config.public_ca_pem,
            agent_chart: config.agent_chart,
            enrollment: config.enrollment,
            breakers: breaker::Breakers::new(config.breaker_threshold, config.breaker_cooldown),
            metrics: metrics::CpMetrics::default(),
            tasks: TaskTracker::new(),
            closing: CancellationToken::new(),
            request_timeout: config.request_timeout,
            chat: chat::ChatState { llm_allow_loopback: config.chat_llm_allow_loopback, ..Default::default() },
        });
        Ok(Self {
            app,
            listener,
            tls,
            internal,
            admin: admin_listener,
            limits: config.limits,
            grace_period: config.grace_period,
            created_admin_token: (created && config.platform_admin_token.is_none()).then_some(token),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The bound address of the admin listener, if any.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound address of the internal gRPC listener, if any.
    pub fn internal_addr(&self) -> Option<SocketAddr> {
        self.internal.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The grant key id and raw Ed25519 public key relays and agents must trust.
    pub fn grant_public_key(&self) -> (String, Vec<u8>) {
        (self.app.signer.key_id().to_string(), self.app.signer.public_key())
    }

    /// The shared state (tests reach the database through it).
    pub fn app(&self) -> Arc<App> {
        self.app.clone()
    }

    /// Serves until `shutdown`, then drains: in-flight requests get the
    /// grace period, connections still open then are closed, the writer
    /// commits what was queued (or, the database down past another grace
    /// period, spools it to the spool directory) and unspent quota goes back.
    pub async fn run(self, shutdown: CancellationToken) {
        let tasks = TaskTracker::new();
        if let Some((listener, acceptor)) = self.internal {
            let limits = kubechat_transport::limits::Limits::default();
            tasks.spawn(presence::serve(listener, acceptor, self.app.clone(), shutdown.clone(), limits));
        }
        if let Some(listener) = self.admin {
            let handler = Arc::new(metrics::CpAdmin { app: self.app.clone(), shutdown: shutdown.clone() });
            tasks.spawn(kubechat_transport::admin::serve(listener, handler, shutdown.clone()));
        }
        // Invalidations other replicas wrote.
        tasks.spawn(self.app.cache.clone().follow(shutdown.clone()));
        // Audit retention: each tenant's plan says how many days are kept.
        let (app, stop) = (self.app.clone(), shutdown.clone());
        tasks.spawn(async move {
            loop {
                if let Err(e) = audit::apply_retention(&app).await {
                    tracing::warn!(error = %e, "audit retention failed; retrying in an hour");
                }
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
                    () = stop.cancelled() => return,
                }
            }
        });
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // Headers must arrive in time; without a timer hyper waits forever.
        builder.http1().timer(TokioTimer::new()).header_read_timeout(self.limits.header_timeout);
        let admission = kubechat_transport::limits::Admission::new(self.limits);
        let router = http::router(self.app.clone());
        // Cancelled when the grace period is over: closes what is still open.
        let force = self.app.closing.clone();
        loop {
            let (tcp, client) = tokio::select! {
                () = shutdown.cancelled() => break,
                r = self.listener.accept() => match r { Ok(c) => c, Err(_) => continue },
            };
            // Over a cap: closed before TLS, before anything is read.
            let permit = match admission.admit(client.ip()) {
                Ok(p) => p,
                Err(why) => {
                    self.app.metrics.connections_refused.inc(why.as_str());
                    continue;
                }
            };
            // Answers stream (watches, logs, bodies relayed as they come):
            // no Nagle wait for the caller's ACK between a head and its body.
            let _ = tcp.set_nodelay(true);
            let handshake_timeout = self.limits.handshake_timeout;
            let (router, builder, tls, watcher, force) =
                (router.clone(), builder.clone(), self.tls.clone(), graceful.watcher(), force.clone());
            tasks.spawn(force.run_until_cancelled_owned(async move {
                let _permit = permit;
                // What every request of this connection carries: the TCP
                // peer, and the agent certificate it presented, if any.
                let service = move |peer: Option<enroll::AgentPeer>| {
                    let router = router.clone();
                    hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                        if let Some(p) = &peer {
                            req.extensions_mut().insert(p.clone());
                        }
                        req.extensions_mut().insert(ClientAddr(client));
                        let router = router.clone();
                        async move { Ok::<_, Infallible>(router.oneshot(req).await.unwrap_or_else(|e| match e {})) }
                    })
                };
                match tls {
                    Some(acceptor) => {
                        let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(peer = %client, error = %e, "tls handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(peer = %client, "tls handshake timed out");
                                return;
                            }
                        };
                        // An agent renewing its certificate presents it here.
                        let peer = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(enroll::AgentPeer::from_certificate);
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service(peer));
                        let _ = watcher.watch(conn.into_owned()).await;
                    }
                    None => {
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service(None));
                        let _ = watcher.watch(conn.into_owned()).await;
                    }
                }
            }));
        }
        drop(self.listener);
        // Requests finish within the grace period; a connection still open
        // then (a watch, `logs -f`) is closed, and so is an upgraded stream
        // (exec, attach, port-forward: no longer hyper's connections, they
        // are the app's tasks).
        let grace_over = tokio::time::Instant::now() + self.grace_period;
        self.app.tasks.close();
        let drained = async {
            graceful.shutdown().await;
            self.app.tasks.wait().await;
        };
        if tokio::time::timeout_at(grace_over, drained).await.is_err() {
            tracing::info!(
                grace_secs = self.grace_period.as_secs_f64(),
                "grace period over; closing the connections and sessions still open"
            );
        }
        force.cancel();
        tasks.close();
        // Handlers (detached from their connections), upgraded streams and
        // the listeners' own tasks, all within one more grace period (the
        // cache's follower may be inside a database call that only gives up
        // after the pool's 10 s acquire timeout when the database is down).
        let _ = tokio::time::timeout(self.grace_period, async {
            self.app.tasks.wait().await;
            tasks.wait().await;
        })
        .await;
        // What the drained requests queued: the audit trail first. With a
        // spool directory, what the database has not taken within the grace
        // period is spooled there for the next start.
        self.app.writer.close(self.grace_period).await;
        // Then give back the commands reserved and not spent, so a restart
        // costs no tenant any of its quota (bounded: a database that does
        // not answer must not keep the process from exiting).
        match tokio::time::timeout(QUOTA_RELEASE_TIMEOUT, self.app.quota.release(&self.app.db)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(commands = n, "gave back reserved commands this replica did not spend"),
            Err(_) => tracing::warn!("giving back reserved commands timed out; the rest stay spent this month"),
        }
    }
}

/// The public listener's TLS: the serving certificate; when enrollment is on,
/// an optional client certificate from the agent CA (agents renew over their
/// current identity; everyone else presents none).
fn public_tls(
    id: &kubechat_transport::tls::Identity,
    enrollment: Option<&enroll::Enrollment>,
) -> Result<tokio_rustls::TlsAcceptor, ControlPlaneError> {
    let provider = kubechat_transport::tls::provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ControlPlaneError::Tls(e.to_string()))?;
    let builder = match enrollment {
        Some(e) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in kubechat_transport::tls::parse_ca_pem(e.agent_ca.cert_pem())
                .map_err(|e| ControlPlaneError::Tls(e.to_string()))?
            {
                roots.add(ca).map_err(|e| ControlPlaneError::Tls(e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| ControlPlaneError::Tls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|e| ControlPlaneError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}
