//! The control plane's configuration: defaults < file (`--config`, TOML,
//! keys as the long flags) < environment (`KUBECHAT_*`) < flags, like the
//! relay's and the agent's. Every setting is optional in [`RawConfig`]; only
//! [`RawConfig::validate`] turns them into a [`Config`], and
//! `--check-config` validates and exits (an invalid configuration exits
//! with code 64 before anything starts).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use kubechat_transport::tls;
use serde::Deserialize;

use crate::{Config, RelayTls, Secret};

/// Every setting, all optional, as flags/environment and as file keys.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    /// Address of the public listener (REST API, kube path) [default: 127.0.0.1:8443].
    #[arg(long, env = "KUBECHAT_LISTEN")]
    pub listen: Option<String>,
    /// sqlite://path?mode=rwc (embedded default) or postgres://user@host/db
    /// [default: sqlite://kubechat.db?mode=rwc].
    #[arg(long, env = "KUBECHAT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The platform admin's token to create on first start (kc_…); without
    /// it one is generated and printed once.
    #[arg(long, env = "KUBECHAT_PLATFORM_ADMIN_TOKEN", hide_env_values = true)]
    pub platform_admin_token: Option<String>,
    /// Home region of new tenants when none is given [default: local].
    #[arg(long, env = "KUBECHAT_DEFAULT_REGION")]
    pub default_region: Option<String>,
    /// Requests per second per API token [default: 50].
    #[arg(long, env = "KUBECHAT_PER_TOKEN_RPS")]
    pub per_token_rps: Option<f64>,
    /// Requests per second per tenant [default: 200].
    #[arg(long, env = "KUBECHAT_PER_TENANT_RPS")]
    pub per_tenant_rps: Option<f64>,
    /// Serving certificate (PEM); with --tls-key, serve HTTPS (kubectl sends
    /// tokens only over TLS).
    #[arg(long, env = "KUBECHAT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Serving key (PEM).
    #[arg(long, env = "KUBECHAT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Address of the internal gRPC listener relays report tunnel presence
    /// and events to (mutual TLS; needs --tls-cert, --relay-ca and the relay
    /// client certificate).
    #[arg(long, env = "KUBECHAT_INTERNAL_LISTEN")]
    pub internal_listen: Option<String>,
    /// CA bundle relays' certificates chain to (PEM).
    #[arg(long, env = "KUBECHAT_RELAY_CA")]
    pub relay_ca: Option<PathBuf>,
    /// The control plane's client certificate for relays (PEM).
    #[arg(long, env = "KUBECHAT_RELAY_CLIENT_CERT")]
    pub relay_client_cert: Option<PathBuf>,
    /// Its key (PEM).
    #[arg(long, env = "KUBECHAT_RELAY_CLIENT_KEY")]
    pub relay_client_key: Option<PathBuf>,
    /// The agent CA certificate (PEM); with --agent-ca-key, enables enrollment.
    #[arg(long, env = "KUBECHAT_AGENT_CA_CERT")]
    pub agent_ca_cert: Option<PathBuf>,
    /// The agent CA key (PEM).
    #[arg(long, env = "KUBECHAT_AGENT_CA_KEY")]
    pub agent_ca_key: Option<PathBuf>,
    /// Relay endpoints given to enrolling agents, `region=host:port` (plain
    /// `host:port`: the default region), with `#ws=PORT` for the relay's
    /// WebSocket fallback; repeatable. Agents get only their tenant's home
    /// region's relays.
    #[arg(long = "enroll-relay", env = "KUBECHAT_ENROLL_RELAYS", value_delimiter = ',')]
    pub enroll_relay: Option<Vec<String>>,
    /// Life of agent certificates, hours [default: 24].
    #[arg(long, env = "KUBECHAT_AGENT_CERT_HOURS")]
    pub agent_cert_hours: Option<u64>,
    /// Seconds a renewed agent certificate stays valid next to its successor [default: 300].
    #[arg(long, env = "KUBECHAT_RENEWAL_OVERLAP_SECS")]
    pub renewal_overlap_secs: Option<u64>,
    /// URL users reach the control plane at: kubeconfigs point there, and the web app accepts only that origin [default: https://<listen>].
    #[arg(long, env = "KUBECHAT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// CA bundle (PEM) kubeconfigs tell kubectl to trust.
    #[arg(long, env = "KUBECHAT_PUBLIC_CA")]
    pub public_ca: Option<PathBuf>,
    /// Agent chart named by the registration's `helm install` command (an
    /// OCI reference, a repo/chart, or a local path such as ./charts/kubechat-agent).
    #[arg(long, env = "KUBECHAT_AGENT_CHART")]
    pub agent_chart: Option<String>,
    /// Admin listener (plain HTTP: /healthz, /readyz, /metrics) [default:
    /// 127.0.0.1:9092]; "off" disables it.
    #[arg(long, env = "KUBECHAT_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Failures of KubeChat's own path in a row (relay unreachable, no
    /// tunnel, agent errors) that pause a tenant's kube requests [default: 20].
    #[arg(long, env = "KUBECHAT_BREAKER_THRESHOLD")]
    pub breaker_threshold: Option<u32>,
    /// Seconds a tenant's paused kube requests stay refused before a trial [default: 10].
    #[arg(long, env = "KUBECHAT_BREAKER_COOLDOWN_SECS")]
    pub breaker_cooldown_secs: Option<u64>,
    /// Grant signing key, key-id=base64url(PKCS#8 Ed25519) [default: generated per start].
    #[arg(long, env = "KUBECHAT_GRANT_SIGNING_KEY", hide_env_values = true)]
    pub grant_signing_key: Option<String>,
    /// Connections the public listener holds at once [default: 10000].
    #[arg(long, env = "KUBECHAT_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Connections it holds at once from one IP address [default: 256].
    #[arg(long, env = "KUBECHAT_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,
    /// Seconds a TLS handshake may take [default: 10].
    #[arg(long, env = "KUBECHAT_HANDSHAKE_TIMEOUT_SECS")]
    pub handshake_timeout_secs: Option<u64>,
    /// Seconds a request's headers may take to arrive [default: 10].
    #[arg(long, env = "KUBECHAT_HEADER_TIMEOUT_SECS")]
    pub header_timeout_secs: Option<u64>,
    /// Seconds a REST request may take to be answered [default: 30].
    #[arg(long, env = "KUBECHAT_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<u64>,
    /// Seconds open requests may run after a shutdown signal before the
    /// connections still open (watches, logs -f) are closed [default: 10].
    #[arg(long, env = "KUBECHAT_GRACE_PERIOD_SECS")]
    pub grace_period_secs: Option<u64>,
    /// Directory where a drain spools the audit records and usage the
    /// database has not taken by the end of the grace period; the next start
    /// on it commits them. Keep it on a volume that outlives the process
    /// [default: none: a drain waits for the database].
    #[arg(long, env = "KUBECHAT_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Let tenants' chat LLM endpoints be on loopback over plain http (dev
    /// stack and tests only) [default: false].
    #[arg(long, env = "KUBECHAT_CHAT_LLM_ALLOW_LOOPBACK", num_args = 0..=1, default_missing_value = "true")]
    pub chat_llm_allow_loopback: Option<bool>,
    /// Let anyone create a tenant (free plan, on trial) from the web app's
    /// sign-up page; its email is not verified [default: false].
    #[arg(long, env = "KUBECHAT_SELF_SERVICE_SIGNUP", num_args = 0..=1, default_missing_value = "true")]
    pub self_service_signup: Option<bool>,
}

macro_rules! merge {
    ($a:ident, $b:ident, $($f:ident),*) => { RawConfig { $($f: $a.$f.or($b.$f)),* } };
}

impl RawConfig {
    /// `self` (flags and environment) over `file`.
    pub fn over(self, file: Self) -> Self {
        merge!(
            self,
            file,
            listen,
            database_url,
            platform_admin_token,
            default_region,
            per_token_rps,
            per_tenant_rps,
            tls_cert,
            tls_key,
            internal_listen,
            relay_ca,
            relay_client_cert,
            relay_client_key,
            agent_ca_cert,
            agent_ca_key,
            enroll_relay,
            agent_cert_hours,
            renewal_overlap_secs,
            public_url,
            public_ca,
            agent_chart,
            admin_listen,
            breaker_threshold,
            breaker_cooldown_secs,
            grant_signing_key,
            max_connections,
            max_connections_per_address,
            handshake_timeout_secs,
            header_timeout_secs,
            request_timeout_secs,
            grace_period_secs,
            spool_dir,
            chat_llm_allow_loopback,
            self_service_signup
        )
    }

    /// A configuration file's settings.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Checks every setting and reads the files they name.
    pub fn validate(self) -> anyhow::Result<Config> {
        fn addr(v: Option<&str>, default: &str, flag: &str) -> anyhow::Result<std::net::SocketAddr> {
            let s = v.unwrap_or(default);
            s.parse().with_context(|| format!("--{flag} {s:?} is not an address like 127.0.0.1:8443"))
        }
        let mut c = Config::new(self.database_url.as_deref().unwrap_or("sqlite://kubechat.db?mode=rwc"));
        c.listen = addr(self.listen.as_deref(), "127.0.0.1:8443", "listen")?;
        if let Some(t) = &self.platform_admin_token {
            anyhow::ensure!(
                t.starts_with(crate::auth::TOKEN_PREFIX) && t.len() >= 32,
                "--platform-admin-token must start with kc_ and be at least 32 characters"
            );
            c.platform_admin_token = Some(Secret(t.clone()));
        }
        if let Some(r) = &self.default_region {
            c.default_region = r.clone();
        }
        c.per_token_rps = self.per_token_rps.unwrap_or(c.per_token_rps);
        c.per_tenant_rps = self.per_tenant_rps.unwrap_or(c.per_tenant_rps);
        anyhow::ensure!(c.per_token_rps > 0.0 && c.per_tenant_rps > 0.0, "rate limits must be positive");
        c.tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(tls::Identity::from_files(cert, key)?),
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        c.internal_listen =
            self.internal_listen.as_deref().map(|a| addr(Some(a), "", "internal-listen")).transpose()?;
        c.relays = self.relay_tls()?;
        c.enrollment = self.enrollment(&c.default_region)?;
        c.public_url = self.public_url.clone();
        c.public_ca_pem = match &self.public_ca {
            Some(f) => {
                Some(std::fs::read_to_string(f).with_context(|| format!("cannot read --public-ca {}", f.display()))?)
            }
            None => None,
        };
        if let Some(chart) = &self.agent_chart {
            c.agent_chart = chart.clone();
        }
        c.admin_listen = match self.admin_listen.as_deref() {
            Some("off") => None,
            other => Some(addr(other, "127.0.0.1:9092", "admin-listen")?),
        };
        c.breaker_threshold = self.breaker_threshold.unwrap_or(c.breaker_threshold);
        if let Some(s) = self.breaker_cooldown_secs {
            c.breaker_cooldown = Duration::from_secs(s);
        }
        c.grant_signing_key = self.grant_signing_key.clone().map(Secret);
        let l = &mut c.limits;
        l.max_connections = self.max_connections.unwrap_or(l.max_connections);
        l.max_per_address = self.max_connections_per_address.unwrap_or(l.max_per_address);
        anyhow::ensure!(l.max_connections > 0 && l.max_per_address > 0, "connection limits must be at least 1");
        for (v, slot, flag) in [
            (self.handshake_timeout_secs, &mut l.handshake_timeout, "handshake-timeout-secs"),
            (self.header_timeout_secs, &mut l.header_timeout, "header-timeout-secs"),
        ] {
            if let Some(s) = v {
                anyhow::ensure!(s > 0, "--{flag} must be at least 1");
                *slot = Duration::from_secs(s);
            }
        }
        if let Some(s) = self.request_timeout_secs {
            anyhow::ensure!(s > 0, "--request-timeout-secs must be at least 1");
            c.request_timeout = Duration::from_secs(s);
        }
        if let Some(s) = self.grace_period_secs {
            anyhow::ensure!(s > 0, "--grace-period-secs must be at least 1");
            c.grace_period = Duration::from_secs(s);
        }
        if let Some(dir) = &self.spool_dir {
            anyhow::ensure!(!dir.is_file(), "--spool-dir {} is a file, not a directory", dir.display());
        }
        c.spool_dir = self.spool_dir.clone();
        c.chat_llm_allow_loopback = self.chat_llm_allow_loopback.unwrap_or(false);
        c.self_service_signup = self.self_service_signup.unwrap_or(false);
        Ok(c)
    }

    fn relay_tls(&self) -> anyhow::Result<Option<RelayTls>> {
        let (Some(cert), Some(key)) = (&self.relay_client_cert, &self.relay_client_key) else {
            anyhow::ensure!(
                self.relay_client_cert.is_none() && self.relay_client_key.is_none(),
                "--relay-client-cert and --relay-client-key go together"
            );
            anyhow::ensure!(
                self.internal_listen.is_none(),
                "--internal-listen needs --relay-client-cert/--relay-client-key"
            );
            return Ok(None);
        };
        let ca = self.relay_ca.as_ref().context("--relay-client-cert needs --relay-ca")?;
        Ok(Some(RelayTls {
            client: tls::Identity::from_files(cert, key)?,
            relay_ca: tls::load_certs(ca, "relay CA bundle")?,
        }))
    }

    fn enrollment(&self, default_region: &str) -> anyhow::Result<Option<crate::enroll::Enrollment>> {
        let (Some(cert), Some(key)) = (&self.agent_ca_cert, &self.agent_ca_key) else {
            anyhow::ensure!(
                self.agent_ca_cert.is_none() && self.agent_ca_key.is_none(),
                "--agent-ca-cert and --agent-ca-key go together"
            );
            return Ok(None);
        };
        let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()));
        let ca = kubechat_transport::pki::CertAuthority::from_pem(&read(cert)?, &read(key)?)?;
        let relay_ca = read(self.relay_ca.as_ref().context("enrollment needs --relay-ca (the CA agents pin)")?)?;
        let relays = self.enroll_relay.clone().unwrap_or_default();
        anyhow::ensure!(!relays.is_empty(), "enrollment needs at least one --enroll-relay host:port");
        let hours = self.agent_cert_hours.unwrap_or(24);
        anyhow::ensure!(hours >= 1, "--agent-cert-hours must be at least 1");
        Ok(Some(crate::enroll::Enrollment {
            agent_ca: std::sync::Arc::new(ca),
            relay_ca_pem: relay_ca,
            relays: relays
                .iter()
                .map(|r| match r.split_once('=') {
                    // `region=host:port…`: a region never holds ':' or '#' (the
                    // `#ws=` suffix of an address does).
                    Some((region, addr)) if !region.contains([':', '#']) => (region.to_string(), addr.to_string()),
                    _ => (default_region.to_string(), r.clone()),
                })
                .collect(),
            cert_lifetime: Duration::from_secs(hours * 3600),
            bootstrap_lifetime: Duration::from_secs(3600),
            renewal_overlap: Duration::from_secs(self.renewal_overlap_secs.unwrap_or(300)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_environment_override_the_file_and_defaults_apply() {
        let file: RawConfig = toml::from_str(
            "listen = \"127.0.0.1:9443\"\nper-token-rps = 5.0\nmax-connections = 7\nadmin-listen = \"off\"\n",
        )
        .expect("file");
        let flags = RawConfig { per_token_rps: Some(9.0), ..RawConfig::default() };
        let c = flags.over(file).validate().expect("valid");
        assert_eq!(c.listen.to_string(), "127.0.0.1:9443");
        assert_eq!(c.per_token_rps, 9.0);
        assert_eq!(c.limits.max_connections, 7);
        assert_eq!(c.limits.max_per_address, 256);
        assert!(c.admin_listen.is_none());
        assert!(toml::from_str::<RawConfig>("bogus = 1").is_err(), "unknown keys are refused");
        let bad = RawConfig { listen: Some("nowhere".into()), ..RawConfig::default() };
        assert!(bad.validate().expect_err("invalid").to_string().contains("--listen"));
        let bad = RawConfig { platform_admin_token: Some("short".into()), ..RawConfig::default() };
        assert!(bad.validate().is_err());
    }
}
