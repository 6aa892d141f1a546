//! Certificate renewal: at a fraction (2/3) of the certificate's life, a new
//! key and CSR go to the control plane's `/v1/renew` over mutual TLS with the
//! current certificate; the answer is saved to the store, the agent switches
//! to it and every tunnel is rotated onto it (see `tunnel`). Failures are
//! retried with backoff, never later than the certificate's expiry.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use serde_json::json;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::control_plane::ControlPlane;
use crate::credentials::{Credentials, unix_now};
use crate::enroll::EnrollError;
use crate::state::AgentState;
use crate::store::CredentialStore;
use crate::{AgentError, active_identity};

/// First retry delay ceiling after a failed renewal.
const RETRY_BASE: Duration = Duration::from_secs(2);
/// Shortest delay between two attempts.
const MIN_RETRY: Duration = Duration::from_secs(1);
/// The schedule re-reads the wall clock at least this often (suspends,
/// clock steps).
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// Renews the agent's certificate with its control plane.
pub(crate) struct Renewer {
    store: CredentialStore,
    control_plane_url: String,
    control_plane_ca: Option<String>,
    proxy: crate::proxy::EgressProxy,
    /// The credentials in use; held while a renewal runs, so two never
    /// overlap.
    current: tokio::sync::Mutex<Credentials>,
}

impl Renewer {
    pub(crate) fn new(
        store: CredentialStore,
        control_plane_url: String,
        control_plane_ca: Option<String>,
        proxy: crate::proxy::EgressProxy,
        current: Credentials,
    ) -> Self {
        Self { store, control_plane_url, control_plane_ca, proxy, current: tokio::sync::Mutex::new(current) }
    }

    /// Renews once: new key and CSR, `/v1/renew` with the current
    /// certificate as the TLS client certificate, save, switch. Counts the
    /// result in `kubechat_agent_renewals_total`.
    pub(crate) async fn renew(&self, state: &AgentState) -> Result<(), AgentError> {
        let result = self.try_renew(state).await;
        state.metrics.renewals.inc(if result.is_ok() { "success" } else { "failure" });
        result
    }

    /// Credentials another replica (sharing the store) renewed to: same
    /// identity, usable, and valid at least as long as `current`.
    async fn sibling_renewal(&self, current: &Credentials) -> Option<Credentials> {
        let now = unix_now();
        let stored = self.store.load().await.ok()??;
        let theirs = stored.check(now).ok()?;
        let ours = current.check(now).map(|v| v.not_after).unwrap_or(i64::MIN);
        (stored.identity == current.identity && stored.cert_pem != current.cert_pem && theirs.not_after >= ours)
            .then_some(stored)
    }

    async fn try_renew(&self, state: &AgentState) -> Result<(), AgentError> {
        let mut current = self.current.lock().await;
        // Replicas share the store: if another one renewed already, switch
        // to its certificate instead of renewing again (and instead of
        // presenting a certificate the control plane revokes after the
        // overlap).
        if let Some(newer) = self.sibling_renewal(&current).await {
            let active = active_identity(&state.config, &newer)?;
            info!(identity = %newer.identity, serial = %active.serial, store = %self.store, "another replica renewed the certificate; rotating tunnels to it");
            state.install(active);
            *current = newer;
            return Ok(());
        }
        let presented = current.tls_identity()?;
        let uri = if current.identity.is_empty() { "spiffe://kubechat/renewing" } else { current.identity.as_str() };
        let (key, csr) = kubechat_transport::pki::new_csr(uri).map_err(|e| EnrollError::Csr(e.to_string()))?;
        let cp = ControlPlane::new(
            &self.control_plane_url,
            self.control_plane_ca.as_deref(),
            Some(&presented),
            &self.proxy,
        )?;
        let answer = cp.post("/v1/renew", &json!({"csr": csr}), "renewal").await?;
        let next = Credentials::from_answer(
            key,
            &answer,
            Some(&current),
            &self.control_plane_url,
            self.control_plane_ca.as_deref(),
        )
        .map_err(EnrollError::Answer)?;
        let validity = next.check(unix_now()).map_err(EnrollError::Answer)?;
        let active = active_identity(&state.config, &next)?;
        // Saved before use: a restart never finds an older certificate
        // than the tunnels present.
        self.store.save(&next).await?;
        info!(
            identity = %next.identity,
            serial = %active.serial,
            not_after = validity.not_after,
            store = %self.store,
            "certificate renewed; rotating tunnels"
        );
        state.install(active);
        *current = next;
        Ok(())
    }
}

/// The delay before the next attempt after a failure: the backoff's, but
/// never past the certificate's expiry, and at least [`MIN_RETRY`].
fn retry_delay(backoff: Duration, now: i64, not_after: i64) -> Duration {
    let until_expiry = Duration::from_secs(u64::try_from(not_after - now).unwrap_or(0));
    let d = if until_expiry.is_zero() { backoff } else { backoff.min(until_expiry) };
    d.max(MIN_RETRY)
}

/// Renews the certificate whenever it is due, until shutdown.
pub(crate) async fn schedule(state: Arc<AgentState>) {
    let Some(renewer) = state.renewer.as_ref() else { return };
    let fraction = state.config.renew_at_fraction;
    let mut renewed = state.watch_active();
    'schedule: loop {
        let Some(validity) = renewed.borrow_and_update().validity else {
            warn!("the certificate's validity cannot be read; it will not be renewed");
            return;
        };
        info!(
            renew_at = validity.renew_at(fraction),
            renew_in_secs = validity.until_renewal(fraction, unix_now()).as_secs(),
            not_after = validity.not_after,
            "certificate renewal scheduled"
        );
        loop {
            let wait = validity.until_renewal(fraction, unix_now());
            if wait.is_zero() {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(wait.min(MAX_SLEEP)) => {}
                // Renewed meanwhile (`AgentHandle::renew_now`).
                r = renewed.changed() => match r {
                    Ok(()) => continue 'schedule,
                    Err(_) => return,
                },
                () = state.shutdown.cancelled() => return,
            }
        }
        let mut backoff = Backoff::new(RETRY_BASE, state.config.renew_retry_cap);
        loop {
            let result = tokio::select! {
                r = renewer.renew(&state) => r,
                () = state.shutdown.cancelled() => return,
            };
            let Err(e) = result else { continue 'schedule };
            let now = unix_now();
            let delay = retry_delay(backoff.next_delay(rand::rng().random::<f64>()), now, validity.not_after);
            if now >= validity.not_after {
                error!(
                    error = %e,
                    retry_in_secs = delay.as_secs(),
                    "the certificate has expired and could not be renewed: tunnels cannot reconnect; if this persists, enroll again with a new bootstrap token"
                );
            } else {
                warn!(error = %e, retry_in_secs = delay.as_secs(), "certificate renewal failed; retrying");
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                r = renewed.changed() => match r {
                    Ok(()) => continue 'schedule,
                    Err(_) => return,
                },
                () = state.shutdown.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_follow_the_backoff_but_never_pass_the_expiry() {
        let s = Duration::from_secs;
        // Far from expiry: the backoff's delay.
        assert_eq!(retry_delay(s(30), 1_000, 100_000), s(30));
        // Close to it: no later than the expiry itself.
        assert_eq!(retry_delay(s(30), 1_000, 1_010), s(10));
        // Never a busy loop.
        assert_eq!(retry_delay(Duration::ZERO, 1_000, 100_000), s(1));
        assert_eq!(retry_delay(s(30), 1_000, 1_000), s(30));
        // Expired: keep trying at the backoff's pace.
        assert_eq!(retry_delay(s(30), 2_000, 1_000), s(30));
    }
}
