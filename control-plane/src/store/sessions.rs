//! Web app sessions (`ui_sessions`): a browser's sign-in, stored by the
//! hash of its cookie so that any replica can serve it and a stolen
//! database holds no usable cookie. A session stands for the API token it
//! was opened with; revoking the token ends it.

use sqlx::Row;

use super::{Db, Scope, StoreError};

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// SHA-256 (hex) of the cookie's value.
    pub id_hash: String,
    /// SHA-256 (hex) of the API token it was opened with.
    pub token_hash: String,
    /// The person.
    pub user_id: String,
    /// The session's CSRF token (sent back by every state-changing form).
    pub csrf: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Last use, in Unix milliseconds (written at most once a minute).
    pub last_seen_ms: i64,
    /// When it was ended (logout), if it was.
    pub ended_at_ms: Option<i64>,
}

impl Db {
    /// Stores a new session (and forgets sessions unused for a day).
    pub async fn insert_session(&self, s: &StoredSession) -> Result<(), StoreError> {
        let mut tx = self.begin(&Scope::Platform).await?;
        sqlx::query("DELETE FROM ui_sessions WHERE last_seen_ms < $1")
            .bind(s.created_at_ms - 86_400_000)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO ui_sessions (id_hash, token_hash, user_id, csrf, created_at_ms, last_seen_ms, ended_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(s.id_hash.clone())
        .bind(s.token_hash.clone())
        .bind(s.user_id.clone())
        .bind(s.csrf.clone())
        .bind(s.created_at_ms)
        .bind(s.last_seen_ms)
        .bind(s.ended_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The session whose cookie hashes to `id_hash`.
    pub async fn session(&self, id_hash: &str) -> Result<Option<StoredSession>, StoreError> {
        let mut tx = self.begin(&Scope::Platform).await?;
        let row = sqlx::query("SELECT * FROM ui_sessions WHERE id_hash = $1")
            .bind(id_hash.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row
            .map(|r| -> Result<StoredSession, sqlx::Error> {
                Ok(StoredSession {
                    id_hash: r.try_get("id_hash")?,
                    token_hash: r.try_get("token_hash")?,
                    user_id: r.try_get("user_id")?,
                    csrf: r.try_get("csrf")?,
                    created_at_ms: r.try_get("created_at_ms")?,
                    last_seen_ms: r.try_get("last_seen_ms")?,
                    ended_at_ms: r.try_get("ended_at_ms")?,
                })
            })
            .transpose()?)
    }

    /// Ends the session (logout): its cookie is refused from now on, on
    /// every replica once its cache reads the change log.
    pub async fn end_session(&self, id_hash: &str, now: i64) -> Result<(), StoreError> {
        let mut tx = self.begin(&Scope::Platform).await?;
        sqlx::query("UPDATE ui_sessions SET ended_at_ms = $1 WHERE id_hash = $2 AND ended_at_ms IS NULL")
            .bind(now)
            .bind(id_hash.to_string())
            .execute(&mut *tx)
            .await?;
        crate::cache::note(&mut tx, crate::cache::Change::Session, id_hash).await?;
        tx.commit().await?;
        Ok(())
    }
}
