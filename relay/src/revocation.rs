//! Revoked clusters: the relay polls the control plane's revocation list,
//! drops live tunnels of revoked clusters and refuses them afterwards.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kubechat_protocol::ErrorCode;
use tracing::{debug, warn};

use crate::state::RelayState;

/// Where the revocation list comes from.
#[derive(Clone)]
pub struct RevocationSource {
    /// `https://<control-plane>/v1/revoked-clusters`.
    pub url: String,
    /// A platform token allowed to read it.
    pub token: String,
    /// TLS configuration trusting the control plane.
    pub tls: rustls::ClientConfig,
    /// How often to poll.
    pub interval: Duration,
}

impl std::fmt::Debug for RevocationSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationSource").field("url", &self.url).field("token", &"***").finish_non_exhaustive()
    }
}

async fn fetch(
    client: &Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Empty<Bytes>>,
    src: &RevocationSource,
) -> Result<HashSet<String>, String> {
    let req = http::Request::get(&src.url)
        .header("authorization", format!("Bearer {}", src.token))
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    Ok(v.get("clusters")
        .and_then(|c| c.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default())
}

/// Polls until shutdown, closing tunnels of newly revoked clusters.
pub(crate) async fn poll(src: RevocationSource, state: Arc<RelayState>) {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(src.tls.clone())
        .https_or_http()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build(https);
    loop {
        match fetch(&client, &src).await {
            Ok(set) => {
                for t in state.registry.all() {
                    if set.contains(&t.identity.cluster) {
                        warn!(cluster = %t.identity.cluster, "cluster revoked; closing its tunnel");
                        state.metrics.handshake_failures.inc("revoked");
                        t.conn.close(ErrorCode::IdentityInvalid, "cluster revoked");
                    }
                }
                *state.revoked.write().unwrap_or_else(|p| p.into_inner()) = set;
            }
            Err(e) => debug!(error = %e, "cannot fetch the revocation list; keeping the last one"),
        }
        tokio::select! {
            () = tokio::time::sleep(src.interval) => {}
            () = state.shutdown.cancelled() => return,
        }
    }
}
