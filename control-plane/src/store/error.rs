//! Storage errors, apart from HTTP errors: what went wrong in the database,
//! for the caller to map to an answer where it knows what the write meant
//! (a unique constraint on a tenant's slug is "that slug is taken").

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or failed (busy, I/O, pool timeout,
    /// a broken connection): nothing was applied; retrying may succeed.
    #[error("storage unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A unique constraint refused the write. `constraint` names it: the
    /// index name on PostgreSQL, `table.column` on SQLite.
    #[error("the write conflicts with an existing row ({constraint})")]
    Conflict {
        /// Which constraint.
        constraint: String,
    },
    /// A plan limit, checked in the same transaction as the write.
    #[error("the plan allows {limit} {what}")]
    LimitReached {
        /// What is limited (`users`, `clusters`).
        what: &'static str,
        /// The limit.
        limit: i64,
    },
    /// A stored value is not what this version can read.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether this is a conflict on a constraint whose name contains `name`
    /// (e.g. `slug`): a named constraint, mapped where it is used.
    pub fn is_conflict_on(&self, name: &str) -> bool {
        matches!(self, Self::Conflict { constraint } if constraint.contains(name))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                let constraint = d.constraint().map(str::to_string).unwrap_or_else(|| {
                    // SQLite: "UNIQUE constraint failed: tenants.slug"
                    d.message().rsplit(": ").next().unwrap_or_default().to_string()
                });
                Self::Conflict { constraint }
            }
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::ColumnNotFound(_) => {
                Self::Corrupt(e.to_string())
            }
            _ => Self::Unavailable(e),
        }
    }
}
