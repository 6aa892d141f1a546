//! The relay's validated configuration.

use std::net::SocketAddr;
use std::time::Duration;

use kubechat_transport::tls::Identity;
use rustls_pki_types::CertificateDer;

/// Everything the relay needs to run; no optional required parts.
#[derive(Debug, Clone)]
pub struct Config {
    /// This relay instance's id, e.g. `eu-west-1-a`.
    pub relay_id: String,
    /// The region this relay serves, e.g. `eu-west-1`.
    pub region: String,
    /// UDP address of the QUIC tunnel listener.
    pub quic_listen: SocketAddr,
    /// TCP address of the WebSocket fallback listener (TLS), if any.
    pub ws_listen: Option<SocketAddr>,
    /// TCP address of the internal HTTPS listener for the control plane.
    pub internal_listen: SocketAddr,
    /// TCP address of the admin listener, if any.
    pub admin_listen: Option<SocketAddr>,
    /// The relay's server certificate and key (tunnel and internal listener).
    pub tls: Identity,
    /// CA certificates that agent client certificates must chain to.
    pub agent_ca: Vec<CertificateDer<'static>>,
    /// CA certificates that control-plane client certificates must chain to.
    pub internal_ca: Vec<CertificateDer<'static>>,
    /// Request streams one tunnel may carry at once.
    pub max_streams_per_tunnel: usize,
    /// Largest request head (all header names and values) accepted, in bytes.
    pub max_header_bytes: usize,
    /// Largest frame accepted from an agent on a request stream, in bytes.
    pub max_frame_size: usize,
    /// How often agents should ping.
    pub heartbeat_interval: Duration,
    /// QUIC idle timeout: a silent tunnel is dropped after this long.
    pub idle_timeout: Duration,
    /// How long in-flight streams get to finish on shutdown.
    pub grace_period: Duration,
    /// TLS handshakes in progress at once; more are refused.
    pub max_concurrent_handshakes: usize,
    /// Development only: when a request carries no `kubechat-user` header,
    /// take the identity from its `Impersonate-User`/`Impersonate-Group`
    /// headers (what kubectl's `--as` sends), so kubectl can talk to the
    /// relay directly before the control plane exists. The caller is still
    /// the authenticated internal client.
    pub identity_from_impersonation: bool,
    /// Control-plane keys that sign grants. When set, every request must
    /// carry a valid grant for its cluster, method and path, and the
    /// identity comes from the grant only.
    pub grants: kubechat_protocol::grant::GrantVerifier,
    /// This relay's gate key to start with (32 bytes). The control plane
    /// tells it in every presence answer, which replaces this; set here
    /// only where there is no control plane (tests).
    pub grant_gate_key: Option<Vec<u8>>,
    /// Where to report tunnel presence (and learn revocations) and publish
    /// events, if anywhere.
    pub presence: Option<crate::presence::PresenceTarget>,
    /// Directory of the event spool; `None` records no events (development).
    pub spool_dir: Option<std::path::PathBuf>,
    /// Spool size past which audited requests are refused.
    pub spool_max_bytes: u64,
}

impl Config {
    /// A configuration with defaults for everything but identity and
    /// addresses (which tests set to `127.0.0.1:0`).
    pub fn new(
        tls: Identity,
        agent_ca: Vec<CertificateDer<'static>>,
        internal_ca: Vec<CertificateDer<'static>>,
    ) -> Self {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        Self {
            relay_id: "relay-0".into(),
            region: "local".into(),
            quic_listen: any,
            internal_listen: any,
            ws_listen: None,
            admin_listen: Some(any),
            tls,
            agent_ca,
            internal_ca,
            max_streams_per_tunnel: 1024,
            max_header_bytes: 64 * 1024,
            max_frame_size: kubechat_protocol::frame::DEFAULT_MAX_FRAME_SIZE,
            heartbeat_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            grace_period: Duration::from_secs(30),
            max_concurrent_handshakes: 512,
            identity_from_impersonation: false,
            grants: kubechat_protocol::grant::GrantVerifier::default(),
            grant_gate_key: None,
            presence: None,
            spool_dir: None,
            spool_max_bytes: 256 << 20,
        }
    }
}
