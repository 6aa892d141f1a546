//! `kube-sim`: runs the simulated API server and writes kubeconfigs for an
//! administrator and for the KubeChat agent's service account.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use kube_sim::kubeconfig::{Credentials, KubeconfigSpec};
use kube_sim::{KubeSim, SimConfig, UserInfo};
use kubechat_transport::pki::{CertAuthority, LeafSpec, Validity};
use kubechat_transport::process;
use tokio_util::sync::CancellationToken;

/// A simulated Kubernetes API server.
#[derive(Debug, Parser)]
#[command(name = "kube-sim", version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "KUBE_SIM_LISTEN", default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    plain_http: bool,
    /// Start without the demo data (only system RBAC).
    #[arg(long)]
    empty: bool,
    /// Where to write ca.crt, admin.kubeconfig and agent.kubeconfig.
    #[arg(long, default_value = ".dev/kube-sim")]
    out_dir: PathBuf,
    /// Milliseconds between log lines of the simulated containers.
    #[arg(long, default_value_t = 1000)]
    log_interval_ms: u64,
}

fn token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cli.out_dir).with_context(|| format!("cannot create {}", cli.out_dir.display()))?;
    let (admin_token, agent_token) = (token(), token());
    let mut tokens = HashMap::new();
    tokens
        .insert(admin_token.clone(), UserInfo { name: "kube-sim:admin".into(), groups: vec!["system:masters".into()] });
    tokens.insert(
        agent_token.clone(),
        UserInfo { name: kube_sim::seed::AGENT_USER.into(), groups: vec!["system:serviceaccounts".into()] },
    );
    let mut config = SimConfig::with_tokens(tokens);
    config.log_interval = Duration::from_millis(cli.log_interval_ms.max(10));
    let sim = KubeSim::new(config, !cli.empty);

    let listener =
        tokio::net::TcpListener::bind(cli.listen).await.with_context(|| format!("cannot listen on {}", cli.listen))?;
    let addr = listener.local_addr()?;
    let (scheme, tls, ca_pem) = if cli.plain_http {
        ("http", None, None)
    } else {
        let ca = CertAuthority::new("kube-sim cluster CA")?;
        let spec = LeafSpec {
            common_name: "kube-apiserver".into(),
            dns_names: vec!["localhost".into(), "kubernetes.default.svc".into()],
            ips: vec![addr.ip()],
            server: true,
            ..Default::default()
        };
        let cert = ca.issue(&spec, Validity::for_duration(Duration::from_secs(365 * 24 * 3600)))?;
        let id = cert.identity()?;
        let mut tls = rustls::ServerConfig::builder_with_provider(kubechat_transport::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(id.chain, id.key)?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        std::fs::write(cli.out_dir.join("ca.crt"), ca.cert_pem())?;
        ("https", Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls))), Some(ca.cert_pem().to_string()))
    };
    let server = format!("{scheme}://{addr}");
    for (file, name, tok) in
        [("admin.kubeconfig", "kube-sim-admin", &admin_token), ("agent.kubeconfig", "kube-sim-agent", &agent_token)]
    {
        let spec = KubeconfigSpec {
            name: name.into(),
            server: server.clone(),
            ca_pem: ca_pem.clone(),
            credentials: Credentials::Token(tok.clone()),
            impersonate_user: None,
            impersonate_groups: Vec::new(),
            namespace: None,
        };
        let path = cli.out_dir.join(file);
        std::fs::write(&path, spec.to_yaml()).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("kube-sim serving {server}; kubeconfigs in {}", cli.out_dir.display());
    let shutdown = CancellationToken::new();
    process::cancel_on_signals(shutdown.clone());
    kube_sim::serve(listener, tls, sim, shutdown).await;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    process::init_tracing();
    let rt = match process::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(process::EXIT_FAILURE)
        }
    }
}
