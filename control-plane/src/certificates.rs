//! Agent certificates the control plane issued: recorded at enrollment and
//! renewal, listed per cluster, revoked one by one (relays learn revoked
//! serials from their presence answers and refuse them).

use serde::Serialize;
use sqlx::Row;

use crate::store::StoreError;
use crate::store::{Db, Scope, now};

/// One issued agent certificate.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCertificate {
    /// Hex serial.
    pub serial: String,
    /// Tenant id.
    pub tenant_id: String,
    /// Cluster id.
    pub cluster_id: String,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// When it is (or was) revoked, Unix seconds.
    pub revoked_at: Option<i64>,
    /// The serial of the certificate that renewed it.
    pub replaced_by: Option<String>,
}

impl Db {
    /// Records a certificate just issued for `cluster`.
    pub async fn add_agent_certificate(
        &self,
        tenant_id: &str,
        cluster_id: &str,
        serial: &str,
        not_after: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin(&Scope::Tenant(tenant_id.to_string())).await?;
        sqlx::query("INSERT INTO agent_certificates (serial, tenant_id, cluster_id, issued_at, not_after) VALUES ($1, $2, $3, $4, $5)")
            .bind(serial.to_string())
            .bind(tenant_id.to_string())
            .bind(cluster_id.to_string())
            .bind(now())
            .bind(not_after)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether `cluster` exists and belongs to `tenant`.
    pub async fn cluster_exists(&self, tenant_id: &str, cluster_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin(&Scope::Tenant(tenant_id.to_string())).await?;
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM clusters WHERE id = $1 AND tenant_id = $2")
            .bind(cluster_id.to_string())
            .bind(tenant_id.to_string())
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Whether the certificate with `serial` is revoked now.
    pub async fn agent_certificate_revoked(&self, serial: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin(&Scope::Platform).await?;
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM agent_certificates WHERE serial = $1 AND revoked_at IS NOT NULL AND revoked_at <= $2",
        )
        .bind(serial.to_string())
        .bind(now())
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Marks `old` as replaced by `new`, revoked from `retire_at` on (unless
    /// it already is, earlier).
    pub async fn supersede_agent_certificate(&self, old: &str, new: &str, retire_at: i64) -> Result<(), StoreError> {
        let mut tx = self.begin(&Scope::Platform).await?;
        sqlx::query(
            "UPDATE agent_certificates SET replaced_by = $1, revoked_at = CASE WHEN revoked_at IS NULL OR revoked_at > $2 THEN $2 ELSE revoked_at END WHERE serial = $3",
        )
        .bind(new.to_string())
        .bind(retire_at)
        .bind(old.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Certificates issued for a cluster, newest first.
    pub async fn agent_certificates(
        &self,
        tenant_id: &str,
        cluster_id: &str,
    ) -> Result<Vec<AgentCertificate>, StoreError> {
        let mut tx = self.begin(&Scope::Tenant(tenant_id.to_string())).await?;
        let rows = sqlx::query(
            "SELECT serial, tenant_id, cluster_id, issued_at, not_after, revoked_at, replaced_by FROM agent_certificates WHERE tenant_id = $1 AND cluster_id = $2 ORDER BY issued_at DESC, serial",
        )
        .bind(tenant_id.to_string())
        .bind(cluster_id.to_string())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows
            .iter()
            .map(|r| {
                Ok(AgentCertificate {
                    serial: r.try_get("serial")?,
                    tenant_id: r.try_get("tenant_id")?,
                    cluster_id: r.try_get("cluster_id")?,
                    issued_at: r.try_get("issued_at")?,
                    not_after: r.try_get("not_after")?,
                    revoked_at: r.try_get("revoked_at")?,
                    replaced_by: r.try_get("replaced_by")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?)
    }

    /// Revokes one certificate of a cluster now; `false` if there is none
    /// with that serial.
    pub async fn revoke_agent_certificate(
        &self,
        tenant_id: &str,
        cluster_id: &str,
        serial: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin(&Scope::Tenant(tenant_id.to_string())).await?;
        let r = sqlx::query(
            "UPDATE agent_certificates SET revoked_at = $1 WHERE serial = $2 AND tenant_id = $3 AND cluster_id = $4 AND (revoked_at IS NULL OR revoked_at > $1)",
        )
        .bind(now())
        .bind(serial.to_string())
        .bind(tenant_id.to_string())
        .bind(cluster_id.to_string())
        .execute(&mut *tx)
        .await?;
        let exists: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM agent_certificates WHERE serial = $1 AND tenant_id = $2 AND cluster_id = $3",
        )
        .bind(serial.to_string())
        .bind(tenant_id.to_string())
        .bind(cluster_id.to_string())
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0 || exists > 0)
    }
}
