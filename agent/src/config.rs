//! The agent's validated configuration.

use std::net::SocketAddr;
use std::time::Duration;

use kubechat_transport::tls::Identity;
use rustls_pki_types::CertificateDer;

use crate::store::StoreLocation;

/// One relay to keep a tunnel to.
#[derive(Debug, Clone)]
pub struct RelayEndpoint {
    /// `host:port` of the relay's QUIC listener.
    pub address: String,
    /// The name the relay's certificate must carry (default: the host).
    pub server_name: String,
    /// TCP port of the relay's WebSocket fallback on the same host, if any.
    pub ws_port: Option<u16>,
    /// When QUIC last failed to reach this relay (shared by the endpoint's clones).
    quic_failed_at: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

impl PartialEq for RelayEndpoint {
    fn eq(&self, other: &Self) -> bool {
        self.address == other.address && self.server_name == other.server_name && self.ws_port == other.ws_port
    }
}

impl Eq for RelayEndpoint {}

impl RelayEndpoint {
    /// Parses `host:port`, optionally followed by `#ws=PORT` (the relay's
    /// WebSocket fallback on the same host, as enrollment hands it out); the
    /// server name defaults to the host.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some((addr, ws)) = s.split_once("#ws=") {
            let port = ws.parse::<u16>().map_err(|_| format!("relay {s:?} has an invalid websocket port"))?;
            return Ok(Self::parse(addr)?.with_ws_port(Some(port)));
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("relay {s:?} is not host:port"))?;
        port.parse::<u16>().map_err(|_| format!("relay {s:?} has an invalid port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("relay {s:?} has no host"));
        }
        Ok(Self {
            address: s.to_string(),
            server_name: host.to_string(),
            ws_port: None,
            quic_failed_at: Default::default(),
        })
    }

    /// An endpoint with a WebSocket fallback on `ws_port` of the same host.
    pub fn with_ws_port(mut self, ws_port: Option<u16>) -> Self {
        self.ws_port = ws_port;
        self
    }

    /// `host:port` of the WebSocket fallback, if any.
    pub fn ws_address(&self) -> Option<String> {
        let port = self.ws_port?;
        let host = self.address.rsplit_once(':').map_or(self.address.as_str(), |(h, _)| h);
        Some(format!("{host}:{port}"))
    }

    pub(crate) fn quic_failed(&self) {
        *self.quic_failed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
    }

    pub(crate) fn quic_worked(&self) {
        *self.quic_failed_at.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(crate) fn quic_failed_recently(&self, within: Duration) -> bool {
        self.quic_failed_at.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| t.elapsed() < within)
    }
}

/// The one-time bootstrap token (`kcb_…`). `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct BootstrapToken(String);

impl BootstrapToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, to send to the control plane (and nowhere else).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for BootstrapToken {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.trim().to_string()))
    }
}

/// Enrollment mode: the agent keeps its credentials in a store, enrolls
/// with a bootstrap token when the store holds none that is usable, and
/// renews its certificate with the control plane.
#[derive(Clone)]
pub struct Enrollment {
    /// Where the credentials are kept.
    pub store: StoreLocation,
    /// The control plane (`https://…`); `None`: the one stored at
    /// enrollment.
    pub control_plane_url: Option<String>,
    /// CA bundle (PEM) to trust for the control plane; `None`: the stored
    /// one, else the system's CA bundle.
    pub control_plane_ca: Option<String>,
    /// Needed only when the store holds no usable credentials.
    pub bootstrap_token: Option<BootstrapToken>,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("store", &self.store)
            .field("control_plane_url", &self.control_plane_url)
            .field("control_plane_ca", &self.control_plane_ca.as_ref().map(|_| "PEM"))
            .field("bootstrap_token", &self.bootstrap_token)
            .finish()
    }
}

impl Enrollment {
    /// Credentials in `store`, enrolling with `control_plane_url` if needed.
    pub fn new(store: StoreLocation, control_plane_url: &str) -> Self {
        Self {
            store,
            control_plane_url: Some(control_plane_url.to_string()),
            control_plane_ca: None,
            bootstrap_token: None,
        }
    }
}

/// Everything the agent needs to run.
#[derive(Clone)]
pub struct Config {
    /// Relays to connect to (one tunnel each). In enrollment mode, empty
    /// means the stored credentials' relays; set, it overrides them.
    pub relays: Vec<RelayEndpoint>,
    /// The agent's client certificate and key. `None` in enrollment mode
    /// (the stored credentials'); set there, it overrides them and the
    /// certificate is not renewed.
    pub tls: Option<Identity>,
    /// The relay CA to pin. In enrollment mode, empty means the stored
    /// credentials' relay CA.
    pub relay_ca: Vec<CertificateDer<'static>>,
    /// Enrollment mode: credentials from a store (enrolling first if it
    /// holds none), renewed at [`renew_at_fraction`](Self::renew_at_fraction)
    /// of their life.
    pub enrollment: Option<Enrollment>,
    /// Fraction of the certificate's life (from `notBefore`) at which it is
    /// renewed; 2/3 by default.
    pub renew_at_fraction: f64,
    /// Largest delay between renewal attempts after a failure (never past
    /// the certificate's expiry).
    pub renew_retry_cap: Duration,
    /// How to reach the Kubernetes API server (in-cluster or kubeconfig).
    pub kube: kube::Config,
    /// Admin listener address, if any.
    pub admin_listen: Option<SocketAddr>,
    /// This agent instance's id (pod name), for operators.
    pub agent_id: String,
    /// Request streams a relay may open at once on one tunnel.
    pub max_concurrent_streams: u32,
    /// Largest request body forwarded (the API server's own limit is ~3 MiB).
    pub max_request_body: usize,
    /// Largest frame accepted from a relay.
    pub max_frame_size: usize,
    /// Interval between heartbeats when the relay does not say otherwise.
    pub heartbeat_interval: Duration,
    /// A tunnel without a heartbeat answer for this long is dead.
    pub heartbeat_timeout: Duration,
    /// First reconnect delay ceiling.
    pub backoff_base: Duration,
    /// Largest reconnect delay.
    pub backoff_cap: Duration,
    /// A tunnel up this long resets the backoff.
    pub stable_after: Duration,
    /// With a WebSocket fallback in use, try QUIC again after this long.
    pub quic_retry_after: Duration,
    /// The relays' WebSocket fallback port (same hosts), for relays that do
    /// not name one.
    pub relay_ws_port: Option<u16>,
    /// Egress proxy (`http://host:port` or `https://host:port`), from
    /// `HTTPS_PROXY`: for the WebSocket fallback and the control plane
    /// (enrollment, renewal). QUIC is UDP and never proxied.
    pub https_proxy: Option<String>,
    /// Hosts the proxy is not used for, from `NO_PROXY`.
    pub no_proxy: Vec<String>,
    /// CA bundle for an `https://` proxy (default: the relay CA for relays,
    /// the control-plane CA for the control plane).
    pub proxy_ca: Vec<CertificateDer<'static>>,
    /// Tunnels to keep, each to a distinct relay of the list (all of them when
    /// the list is shorter).
    pub relay_connections: usize,
    /// Readiness stays true this long after the last tunnel went down (so a
    /// reconnect does not flap the pod), then fails.
    pub ready_grace: Duration,
    /// How long to wait for a relay's handshake.
    pub connect_timeout: Duration,
    /// How long in-flight streams get on shutdown.
    pub grace_period: Duration,
    /// How long an agent whose bootstrap token was refused waits for another
    /// replica (which spent the token first) to store its credentials.
    pub sibling_wait: Duration,
    /// Control-plane keys that sign grants. When set, every stream must carry
    /// a valid grant for this agent's own cluster (from its certificate),
    /// method and path; the impersonated identity comes from the grant. In
    /// enrollment mode, empty means the stored credentials' grant keys.
    pub grants: kubechat_protocol::grant::GrantVerifier,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("relays", &self.relays)
            .field("api_server", &self.kube.cluster_url.to_string())
            .field("agent_id", &self.agent_id)
            .field("enrollment", &self.enrollment)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The egress proxy settings ([`https_proxy`](Self::https_proxy),
    /// [`no_proxy`](Self::no_proxy), [`proxy_ca`](Self::proxy_ca)).
    pub fn egress_proxy(&self) -> crate::proxy::EgressProxy {
        crate::proxy::EgressProxy {
            url: self.https_proxy.clone(),
            no_proxy: self.no_proxy.clone(),
            ca: self.proxy_ca.clone(),
        }
    }

    /// Defaults for everything but the relays, identity and API server.
    pub fn new(
        relays: Vec<RelayEndpoint>,
        tls: Identity,
        relay_ca: Vec<CertificateDer<'static>>,
        kube: kube::Config,
    ) -> Self {
        Self { relays, tls: Some(tls), relay_ca, ..Self::defaults(kube) }
    }

    /// Enrollment mode: relays, identity, relay CA and grant keys come
    /// from the credentials `enrollment` keeps (stored, or obtained with
    /// its bootstrap token); defaults for the rest.
    pub fn enrolling(kube: kube::Config, enrollment: Enrollment) -> Self {
        Self { enrollment: Some(enrollment), ..Self::defaults(kube) }
    }

    fn defaults(kube: kube::Config) -> Self {
        Self {
            relays: Vec::new(),
            tls: None,
            relay_ca: Vec::new(),
            enrollment: None,
            renew_at_fraction: 2.0 / 3.0,
            renew_retry_cap: Duration::from_secs(30),
            kube,
            admin_listen: Some(([127, 0, 0, 1], 0).into()),
            agent_id: "agent-0".into(),
            max_concurrent_streams: 1024,
            max_request_body: 128 << 20,
            max_frame_size: kubechat_protocol::frame::DEFAULT_MAX_FRAME_SIZE,
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(15),
            backoff_base: Duration::from_millis(250),
            backoff_cap: Duration::from_secs(30),
            stable_after: Duration::from_secs(30),
            ready_grace: Duration::from_secs(10),
            relay_connections: 2,
            quic_retry_after: Duration::from_secs(300),
            relay_ws_port: None,
            https_proxy: None,
            no_proxy: Vec::new(),
            proxy_ca: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            grace_period: Duration::from_secs(30),
            sibling_wait: Duration::from_secs(30),
            grants: kubechat_protocol::grant::GrantVerifier::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_relay_endpoints() {
        let r = RelayEndpoint::parse("relay.eu.kubechat.io:7443").expect("valid");
        assert_eq!(r.server_name, "relay.eu.kubechat.io");
        assert_eq!(RelayEndpoint::parse("[::1]:7443").expect("valid").server_name, "::1");
        assert!(RelayEndpoint::parse("relay").is_err());
        assert!(RelayEndpoint::parse(":7443").is_err());
        assert!(RelayEndpoint::parse("relay:99999").is_err());
        let r = RelayEndpoint::parse("relay.eu.kubechat.io:7443#ws=443").expect("valid");
        assert_eq!((r.address.as_str(), r.ws_port), ("relay.eu.kubechat.io:7443", Some(443)));
        assert_eq!(r.ws_address().as_deref(), Some("relay.eu.kubechat.io:443"));
        assert!(RelayEndpoint::parse("relay:7443#ws=x").is_err());
    }

    #[test]
    fn the_bootstrap_token_never_prints() {
        let t: BootstrapToken = " kcb_secret\n".parse().expect("infallible");
        assert_eq!(t.expose(), "kcb_secret");
        assert_eq!(format!("{t:?}"), "***");
        let e =
            Enrollment { bootstrap_token: Some(t), ..Enrollment::new(StoreLocation::Dir("/x".into()), "https://cp") };
        assert!(!format!("{e:?}").contains("kcb_secret"));
    }
}
