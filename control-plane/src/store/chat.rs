//! Chat plans awaiting confirmation (`chat_plans`): what each will send,
//! bound to its person, cluster and confirmation, used at most once.

use sqlx::Row;

use super::{Db, Scope, StoreError};

/// A stored plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPlan {
    /// Its id.
    pub id: String,
    /// The cluster's tenant.
    pub tenant_id: String,
    /// The cluster.
    pub cluster_id: String,
    /// Who planned it (only they may confirm it).
    pub user_id: String,
    /// `write`, `exec` or `stream`.
    pub kind: String,
    /// The command line shown.
    pub command_line: String,
    /// `read`, `write`, `destructive` or `interactive`.
    pub risk: String,
    /// What it will send (JSON).
    pub body_json: String,
    /// SHA-256 of `body_json`.
    pub body_hash: String,
    /// SHA-256 of the confirmation.
    pub confirmation_hash: String,
    /// What must be typed back (destructive commands).
    pub type_to_confirm: Option<String>,
    /// A second tenant admin must approve it first.
    pub needs_approval: bool,
    /// Who approved it.
    pub approved_by: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds after which it cannot run.
    pub expires_at: i64,
    /// When it was used (confirmed or started), if it was.
    pub used_at: Option<i64>,
}

fn from_row(r: &sqlx::any::AnyRow) -> Result<StoredPlan, sqlx::Error> {
    Ok(StoredPlan {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        cluster_id: r.try_get("cluster_id")?,
        user_id: r.try_get("user_id")?,
        kind: r.try_get("kind")?,
        command_line: r.try_get("command_line")?,
        risk: r.try_get("risk")?,
        body_json: r.try_get("body_json")?,
        body_hash: r.try_get("body_hash")?,
        confirmation_hash: r.try_get("confirmation_hash")?,
        type_to_confirm: r.try_get("type_to_confirm")?,
        needs_approval: r.try_get::<i64, _>("needs_approval")? != 0,
        approved_by: r.try_get("approved_by")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        used_at: r.try_get("used_at")?,
    })
}

impl Db {
    /// Stores a plan (and drops its tenant's plans that expired an hour ago).
    pub async fn insert_chat_plan(&self, p: &StoredPlan) -> Result<(), StoreError> {
        let mut tx = self.begin(&Scope::Tenant(p.tenant_id.clone())).await?;
        sqlx::query("DELETE FROM chat_plans WHERE tenant_id = $1 AND expires_at < $2")
            .bind(p.tenant_id.clone())
            .bind(p.created_at - 3_600_000)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO chat_plans (id, tenant_id, cluster_id, user_id, kind, command_line, risk, body_json, body_hash, confirmation_hash, type_to_confirm, needs_approval, approved_by, created_at, expires_at, used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(p.id.clone())
        .bind(p.tenant_id.clone())
        .bind(p.cluster_id.clone())
        .bind(p.user_id.clone())
        .bind(p.kind.clone())
        .bind(p.command_line.clone())
        .bind(p.risk.clone())
        .bind(p.body_json.clone())
        .bind(p.body_hash.clone())
        .bind(p.confirmation_hash.clone())
        .bind(p.type_to_confirm.clone())
        .bind(i64::from(p.needs_approval))
        .bind(p.approved_by.clone())
        .bind(p.created_at)
        .bind(p.expires_at)
        .bind(p.used_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Plan `id` of `tenant_id`.
    pub async fn chat_plan(&self, tenant_id: &str, id: &str) -> Result<Option<StoredPlan>, StoreError> {
        let mut tx = self.begin(&Scope::Tenant(tenant_id.to_string())).await?;
        let row = sqlx::query("SELECT * FROM chat_plans WHERE id = $1 AND tenant_id = $2")
            .bind(id.to_string())
            .bind(tenant_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Marks plan `id` used, if it is still unused and unexpired at `now`
    /// and `confirmation_hash` and `user_id` are its own; `false` if another
    /// request used it first (or it no longer qualifies).
    pub async fn use_chat_plan(
        &self,
        tenant_id: &str,
        id: &str,
        user_id: &str,
        confirmation_hash: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin(&Scope::Tenant(tenant_id.to_string())).await?;
        let r = sqlx::query(
            "UPDATE chat_plans SET used_at = $1 WHERE id = $2 AND tenant_id = $3 AND user_id = $4 AND confirmation_hash = $5 AND used_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(id.to_string())
        .bind(tenant_id.to_string())
        .bind(user_id.to_string())
        .bind(confirmation_hash.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    /// Records `by` as the approver of plan `id` (not yet used).
    pub async fn approve_chat_plan(&self, tenant_id: &str, id: &str, by: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin(&Scope::Tenant(tenant_id.to_string())).await?;
        let r = sqlx::query(
            "UPDATE chat_plans SET approved_by = $1 WHERE id = $2 AND tenant_id = $3 AND used_at IS NULL AND user_id <> $1",
        )
        .bind(by.to_string())
        .bind(id.to_string())
        .bind(tenant_id.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }
}
