//! The data-access layer: one API over SQLite (embedded default) and
//! PostgreSQL (several replicas sharing one database), through sqlx's `Any`
//! driver with runtime-built queries (no database at compile time).
//!
//! On PostgreSQL every tenant-scoped table has row-level security: each
//! transaction states its scope ([`Scope`]) with `set_config`, and a query
//! without one sees nothing of any tenant. SQLite has no RLS; the same
//! scoping is enforced by the queries themselves (every one filters by tenant).

pub mod chat;
mod error;
pub mod migrations;
pub mod sessions;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row, Transaction};

pub use error::StoreError;

use crate::model::*;

/// Which backend a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Whose rows a transaction may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One tenant's rows.
    Tenant(String),
    /// Every row (platform administration, token lookup).
    Platform,
}

/// The database.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// The scope statement each PostgreSQL transaction starts with (it
    /// also sets [`IDLE_IN_TRANSACTION_TIMEOUT`] unless the URL's `options`
    /// set that themselves).
    scope_sql: std::sync::Arc<str>,
}

/// Tables holding a tenant's rows, in the order a purge deletes them.
pub const TENANT_TABLES: &[&str] = &[
    "cross_tenant_access",
    "chat_plans",
    "bootstrap_tokens",
    "api_tokens",
    "relay_tunnels",
    "agent_certificates",
    "audit_events",
    "audit_heads",
    "usage_events",
    "command_counters",
    "audit_checkpoints",
    "clusters",
    "users",
    "tenants",
];

/// Now, Unix seconds.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn tenant_from_row(r: &AnyRow) -> Result<Tenant, sqlx::Error> {
    let plan = Plan::parse(&r.try_get::<String, _>("plan")?).unwrap_or(Plan::Free);
    Ok(Tenant {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        slug: r.try_get("slug")?,
        domain: r.try_get("domain")?,
        status: TenantStatus::parse(&r.try_get::<String, _>("status")?).unwrap_or(TenantStatus::Suspended),
        home_region: r.try_get("home_region")?,
        settings: serde_json::from_str(&r.try_get::<String, _>("settings")?).unwrap_or_default(),
        subscription: Subscription {
            plan,
            limits: UsageLimits {
                max_users: r.try_get("max_users")?,
                max_clusters: r.try_get("max_clusters")?,
                max_commands_per_month: r.try_get("max_commands_per_month")?,
                max_audit_retention_days: r.try_get("max_audit_retention_days")?,
            },
            billing_cycle: r.try_get("billing_cycle")?,
            next_billing_date: r.try_get("next_billing_date")?,
        },
        created_at: r.try_get("created_at")?,
    })
}

fn user_from_row(r: &AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        email: r.try_get("email")?,
        name: r.try_get("name")?,
        role: Role::parse(&r.try_get::<String, _>("role")?).unwrap_or(Role::TenantViewer),
        created_at: r.try_get("created_at")?,
    })
}

fn token_from_row(r: &AnyRow) -> Result<ApiToken, sqlx::Error> {
    Ok(ApiToken {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        user_id: r.try_get("user_id")?,
        name: r.try_get("name")?,
        prefix: r.try_get("prefix")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        created_at: r.try_get("created_at")?,
    })
}

fn cluster_from_row(r: &AnyRow) -> Result<Cluster, sqlx::Error> {
    Ok(Cluster {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        name: r.try_get("name")?,
        region: r.try_get("region")?,
        labels: serde_json::from_str(&r.try_get::<String, _>("labels")?).unwrap_or_default(),
        policy: serde_json::from_str(&r.try_get::<String, _>("policy")?).unwrap_or_default(),
        created_at: r.try_get("created_at")?,
    })
}

const TENANT_COLUMNS: &str = "id, name, slug, domain, status, home_region, settings, plan, max_users, max_clusters, max_commands_per_month, max_audit_retention_days, billing_cycle, next_billing_date, created_at";

/// A user found by an API token.
#[derive(Debug, Clone)]
pub struct TokenOwner {
    /// The user.
    pub user: User,
    /// The token's id.
    pub token_id: String,
    /// Expiry, unix seconds.
    pub expires_at: Option<i64>,
    /// Revocation, unix seconds.
    pub revoked_at: Option<i64>,
}

/// Longest a transaction waits for a pooled connection (connecting and
/// checking it included) before the caller is told storage is unavailable.
pub const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long an idle PostgreSQL connection may take to answer the ping that
/// checks it before use; past it the connection is discarded, not waited on.
pub const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// An idle connection released (and pinged) less than this ago is not
/// pinged again before use.
const RECENTLY_PINGED: std::time::Duration = std::time::Duration::from_secs(1);

/// How long PostgreSQL keeps a transaction of ours whose client has gone
/// quiet inside it (`idle_in_transaction_session_timeout`, set in each
/// transaction's first statement): none of ours waits between statements,
/// and one whose connection went silent (a partition) would otherwise hold
/// its row locks, e.g. an audit chain's head, until the server's TCP gives
/// up, ~15 min. A database URL whose `options` set it keeps its own.
pub const IDLE_IN_TRANSACTION_TIMEOUT: &str = "60s";

/// A ping answered within [`PING_TIMEOUT`] (`true`), or an error: the
/// pool then drops the connection without waiting on it further.
async fn bounded_ping(conn: &mut sqlx::AnyConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    match tokio::time::timeout(PING_TIMEOUT, conn.ping()).await {
        Ok(r) => r.map(|()| true),
        Err(_) => Err(sqlx::Error::Protocol(format!("no answer to a ping within {PING_TIMEOUT:?}"))),
    }
}

impl Db {
    /// Connects (`sqlite://file.db?mode=rwc`, `sqlite::memory:`,
    /// `postgres://…`) and applies migrations.
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres") { Backend::Postgres } else { Backend::Sqlite };
        let mut opts = AnyPoolOptions::new()
            .max_connections(if url.contains(":memory:") { 1 } else { 8 })
            // A database that does not answer is "storage unavailable"
            // within this, not sqlx's 30 s (above SQLite's 5 s busy
            // timeout, so waiting for the write lock under load is not it).
            .acquire_timeout(ACQUIRE_TIMEOUT);
        if backend == Backend::Postgres {
            // sqlx's own check of an idle connection (a ping) waits as long
            // as the acquire does: a connection gone silent (a partition, a
            // failed-over host; sqlx has no TCP keepalive) would cost every
            // caller that draws it the whole acquire timeout, one after the
            // other. A bounded ping discards it and draws the next.
            // Likewise on release: sqlx pings a connection it takes back
            // (unbounded); one dropped mid-query on a silent connection
            // would hold its pool slot for as long. A bounded ping first
            // discards it.
            opts = opts
                .test_before_acquire(false)
                // (Not again for one released, and so pinged, just now.)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for < RECENTLY_PINGED { Ok(true) } else { bounded_ping(conn).await }
                    })
                })
                .after_release(|conn, _| Box::pin(bounded_ping(conn)));
        }
        if backend == Backend::Sqlite {
            opts = opts.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA busy_timeout = 5000").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                    // Write-ahead log: readers never wait for the writer,
                    // and a commit is one fsync of the log (FULL: durable
                    // against power loss too), not several of the database.
                    sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await?;
                    // Statement journals (a multi-row insert's undo within
                    // a transaction) in memory rather than in a temporary
                    // file: they are thrown away at the statement's end.
                    sqlx::query("PRAGMA temp_store = MEMORY").execute(&mut *conn).await?;
                    Ok(())
                })
            });
        }
        let pool = opts.connect(url).await?;
        // Set per transaction, in the statement each starts with anyway (no
        // round trip of its own; through PgBouncer too, which refuses a
        // startup `options` it does not know).
        let mut scope_sql =
            "SELECT set_config('kubechat.tenant', $1, true), set_config('kubechat.platform', $2, true)".to_string();
        if !url.contains("idle_in_transaction_session_timeout") {
            scope_sql +=
                &format!(", set_config('idle_in_transaction_session_timeout', '{IDLE_IN_TRANSACTION_TIMEOUT}', true)");
        }
        let scope_sql = scope_sql.into();
        let db = Self { pool, backend, scope_sql };
        db.migrate().await?;
        Ok(db)
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The raw pool (for tests that check what the database holds).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        migrations::run(&self.pool, self.backend).await
    }

    /// A read-only transaction limited to `scope`. On SQLite it takes no
    /// lock (write-ahead log: it reads a snapshot), so it never waits for
    /// the writer's commit nor makes the writer wait, as
    /// [`begin`](Self::begin)'s `BEGIN IMMEDIATE` would; on PostgreSQL it is
    /// `READ ONLY`, so a write through it fails.
    pub async fn read(&self, scope: &Scope) -> Result<Transaction<'static, sqlx::Any>, sqlx::Error> {
        let mut tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN DEFERRED").await?,
            Backend::Postgres => self.pool.begin_with("BEGIN READ ONLY").await?,
        };
        if self.backend == Backend::Postgres {
            self.set_scope(&mut tx, scope).await?;
        }
        Ok(tx)
    }

    /// Sets the row-level security scope of a PostgreSQL transaction.
    async fn set_scope(&self, tx: &mut Transaction<'static, sqlx::Any>, scope: &Scope) -> Result<(), sqlx::Error> {
        let (tenant, platform) = match scope {
            Scope::Tenant(t) => (t.as_str(), "off"),
            Scope::Platform => ("", "on"),
        };
        sqlx::query(&self.scope_sql).bind(tenant.to_string()).bind(platform.to_string()).execute(&mut **tx).await?;
        Ok(())
    }

    /// A transaction limited to `scope`.
    pub async fn begin(&self, scope: &Scope) -> Result<Transaction<'static, sqlx::Any>, sqlx::Error> {
        // On SQLite a transaction that reads and then writes fails at once
        // (SQLITE_BUSY, no waiting) if another wrote meanwhile; taking the
        // write lock up front makes concurrent writers wait their turn
        // (busy_timeout) instead.
        let mut tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        if self.backend == Backend::Postgres {
            self.set_scope(&mut tx, scope).await?;
        }
        Ok(tx)
    }

    /// Creates a tenant with its first admin user and token (hash given).
    pub async fn create_tenant(
        &self,
        t: &Tenant,
        admin: &User,
        token: &ApiToken,
        token_hash: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin(&Scope::Platform).await?;
        let l = t.subscription.limits;
        sqlx::query(&format!("INSERT INTO tenants ({TENANT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"))
            .bind(t.id.clone())
            .bind(t.name.clone())
            .bind(t.slug.clone())
            .bind(t.domain.clone())
            .bind(t.status.as_str().to_string())
            .bind(t.home_region.clone())
            .bind(t.settings.to_string())
            .bind(t.subscription.plan.as_str().to_string())
            .bind(l.max_users)
            .bind(l.max_clusters)
            .bind(l.max_commands_per_month)
            .bind(l.max_audit_retention_days)
            .bind(t.subscription.billing_cycle.clone())
            .bind(t.subscription.next_billing_date.clone())
            .bind(t.created_at)
            .execute(&mut *tx)
            .await?;
        insert_user(&mut tx, admin).await?;
        insert_token(&mut tx, token, token_hash).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates the platform admin and its token, unless a platform admin exists.
    /// Returns whether it was created.
    pub async fn ensure_platform_admin(
        &self,
        admin: &User,
        token: &ApiToken,
        token_hash: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin(&Scope::Platform).await?;
        if self.backend == Backend::Postgres {
            // Replicas starting together on a fresh database: one creates
            // the admin, the others then see it (SQLite's BEGIN IMMEDIATE
            // serializes this already).
            sqlx::query("SELECT pg_advisory_xact_lock(7042)").execute(&mut *tx).await?;
        }
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE role = 'platform_admin'")
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if n > 0 {
            // Ended now, not when the pooled connection is next used: the
            // advisory lock lives until the transaction ends.
            tx.commit().await?;
            return Ok(false);
        }
        insert_user(&mut tx, admin).await?;
        insert_token(&mut tx, token, token_hash).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// One tenant, as seen in `scope`.
    pub async fn tenant(&self, scope: &Scope, id: &str) -> Result<Option<Tenant>, StoreError> {
        let mut tx = self.begin(scope).await?;
        let row = sqlx::query(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row.as_ref().map(tenant_from_row).transpose()?)
    }

    /// All tenants visible in `scope`.
    pub async fn tenants(&self, scope: &Scope) -> Result<Vec<Tenant>, StoreError> {
        let mut tx = self.begin(scope).await?;
        let sql = match scope {
            Scope::Platform => format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY created_at, id"),
            Scope::Tenant(_) => format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1 ORDER BY id"),
        };
        let mut q = sqlx::query(&sql);
        if let Scope::Tenant(t) = scope {
            q = q.bind(t.clone());
        }
        let rows = q.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(rows.iter().map(tenant_from_row).collect::<Result<_, _>>()?)
    }

    /// Replaces a tenant's mutable fields.
    pub async fn update_tenant(&self, scope: &Scope, t: &Tenant) -> Result<(), StoreError> {
        let mut tx = self.begin(scope).await?;
        let l = t.subscription.limits;
        sqlx::query("UPDATE tenants SET name = $1, domain = $2, status = $3, settings = $4, plan = $5, max_users = $6, max_clusters = $7, max_commands_per_month = $8, max_audit_retention_days = $9, home_region = $10 WHERE id = $11")
            .bind(t.name.clone())
            .bind(t.domain.clone())
            .bind(t.status.as_str().to_string())
            .bind(t.settings.to_string())
            .bind(t.subscription.plan.as_str().to_string())
            .bind(l.max_users)
            .bind(l.max_clusters)
            .bind(l.max_commands_per_month)
            .bind(l.max_audit_retention_days)
            .bind(t.home_region.clone())
            .bind(t.id.clone())
            .execute(&mut *tx)
            .await?;
        crate::cache::note(&mut tx, crate::cache::Change::Tenant, &t.id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes everything of a tenant; returns its cluster ids (now revoked).
    pub async fn purge_tenant(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin(&Scope::Platform).await?;
        let clusters: Vec<String> = sqlx::query("SELECT id FROM clusters WHERE tenant_id = $1")
            .bind(id.to_string())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("id"))
            .collect::<Result<_, _>>()?;
        for c in &clusters {
            sqlx::query("INSERT INTO revoked_clusters (cluster_id, revoked_at) VALUES ($1, $2)")
                .bind(c.clone())
                .bind(now())
                .execute(&mut *tx)
                .await?;
        }
        // Grants elsewhere naming this tenant's people go too.
        let slug: Option<String> = sqlx::query("SELECT slug FROM tenants WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get("slug"))
            .transpose()?;
        if let Some(slug) = slug {
            sqlx::query("DELETE FROM cross_tenant_access WHERE grantee_tenant = $1")
                .bind(slug)
                .execute(&mut *tx)
                .await?;
        }
        for table in TENANT_TABLES {
            let column = if *table == "tenants" { "id" } else { "tenant_id" };
            sqlx::query(&format!("DELETE FROM {table} WHERE {column} = $1"))
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        crate::cache::note(&mut tx, crate::cache::Change::All, id).await?;
        tx.commit().await?;
        Ok(clusters)
    }

    /// Counts for the usage endpoint and plan limits.
    pub async fn usage(&self, tenant: &Tenant) -> Result<Usage, StoreError> {
        let scope = Scope::Tenant(tenant.id.clone());
        let mut tx = self.begin(&scope).await?;
        let tenant_id = tenant.id.clone();
        let users: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE tenant_id = $1")
            .bind(tenant_id.clone())
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        let clusters: i64 = sqlx::query("SELECT COUNT(*) AS n FROM clusters WHERE tenant_id = $1")
            .bind(tenant_id.clone())
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        let active_tokens: i64 = sqlx::query("SELECT COUNT(*) AS n FROM api_tokens WHERE tenant_id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)")
            .bind(tenant_id)
            .bind(now())
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        tx.commit().await?;
        Ok(Usage { tenant_id: tenant.id.clone(), users, clusters, active_tokens, limits: tenant.subscription.limits })
    }

    /// Adds a user, refusing above the plan's `maxUsers` (checked in the same
    /// transaction).
    pub async fn add_user(&self, tenant: &Tenant, u: &User) -> Result<(), StoreError> {
        let mut tx = self.begin(&Scope::Tenant(tenant.id.clone())).await?;
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE tenant_id = $1")
            .bind(tenant.id.clone())
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if n >= tenant.subscription.limits.max_users {
            return Err(StoreError::LimitReached { what: "users", limit: tenant.subscription.limits.max_users });
        }
        insert_user(&mut tx, u).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Users of a tenant.
    pub async fn users(&self, tenant_id: &str) -> Result<Vec<User>, StoreError> {
        let mut tx = self.begin(&Scope::Tenant(tenant_id.to_string())).await?;
        let rows = sqlx::query("SELECT id, tenant_id, email, name, role, created_at FROM users WHERE tenant_id = $1 ORDER BY created_at, id")
            .bind(tenant_id.to_string())
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    /// One user of a tenant.
    pub async fn user(&self, tenant_id: &str, id: &str) -> Result<Option<User>, StoreError> {
        Ok(self.users(tenant_id).await?.into_iter().find(|u| u.id == id))
    }

    /// Changes a user's name and role.
    pub async fn update_user(&self, u: &User) -> Result<(), StoreError> {
        let tenant = u.tenant_id.clone().unwrap_or_default();
        let mut tx = self.begin(&Scope::Tenant(tenant.clone())).await?;
        sqlx::query("UPDATE users SET name = $1, role = $2 WHERE id = $3 AND tenant_id = $4")
            .bind(u.name.clone())
            .bind(u.role.as_str().to_string())
            .bind(u.id.clone())
            .bind(tenant)
            .execute(&mut *tx)
            .await?;
        crate::cache::note(&mut tx, crate::cache::Change::Tokens, &u.id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a user and their tokens.
    pub async fn delete_user(&self, tenant_id: &str, id: &str) -> Result<(), StoreError> {
        let mut tx = self.begin(&Scope::Tenant(tenant_id.to_string())).await?;
        for sql in [
            "DELETE FROM api_tokens WHERE user_id = $1 AND tenant_id = $2",
            "DELETE FROM users WHERE id = $1 AND tenant_id = $2",
        ] {
            sqlx::query(sql).bind(id.to_string()).bind(tenant_id.to_string()).execute(&mut *tx).await?;
        }
        crate::cache::note(&mut tx, crate::cache::Change::Tokens, id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a new token (its hash only).
    pub async fn add_token(&self, t: &ApiToken, hash: &str) -> Result<(), StoreError> {
        let scope = t.tenant_id.clone().map_or(Scope::Platform, Scope::Tenant);
        let mut tx = self.begin(&scope).await?;
        insert_token(&mut tx, t, hash).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Tokens of a tenant.
    pub async fn tokens(&self, tenant_id: &str) -> Result<Vec<ApiToken>, StoreError> {
        let mut tx = self.begin(&Scope::Tenant(tenant_id.to_string())).await?;
        let rows = sqlx::query("SELECT id, tenant_id, user_id, name, prefix, expires_at, revoked_at, created_at FROM api_tokens WHERE tenant_id = $1 ORDER BY created_at, id")
            .bind(tenant_id.to_string())
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows.iter().map(token_from_row).collect::<Result<_, _>>()?)
    }

    /// Revokes a token of a tenant; `false` if there is no such token.
    pub async fn revoke_token(&self, tenant_id: &str, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin(&Scope::Tenant(tenant_id.to_string())).await?;
        let r = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND tenant_id = $3 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(id.to_string())
        .bind(tenant_id.to_string())
        .execute(&mut *tx)
        .await?;
        crate::cache::note(&mut tx, crate::cache::Change::Tokens, id).await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    /// Finds a token's owner by the token's hash (across tenants).
    pub async fn token_owner(&self, hash: &str) -> Result<Option<TokenOwner>, StoreError> {
        let mut tx = self.begin(&Scope::Platform).await?;
        let row = sqlx::query("SELECT u.id, u.tenant_id, u.email, u.name, u.role, u.created_at, t.id AS token_id, t.expires_at, t.revoked_at FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1")
            .bind(hash.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(TokenOwner {
            user: user_from_row(&r)?,
            token_id: r.try_get("token_id")?,
            expires_at: r.try_get("expires_at")?,
            revoked_at: r.try_get("revoked_at")?,
        }))
    }

    /// Registers a cluster, refusing above the plan's `maxClusters`.
    pub async fn add_cluster(&self, tenant: &Tenant, c: &Cluster) -> Result<(), StoreError> {
        let mut tx = self.begin(&Scope::Tenant(tenant.id.clone())).await?;
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM clusters WHERE tenant_id = $1")
            .bind(tenant.id.clone())
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if n >= tenant.subscription.limits.max_clusters {
            return Err(StoreError::LimitReached { what: "clusters", limit: tenant.subscription.limits.max_clusters });
        }
        sqlx::query("INSERT INTO clusters (id, tenant_id, name, region, labels, policy, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(c.id.clone())
            .bind(c.tenant_id.clone())
            .bind(c.name.clone())
            .bind(c.region.clone())
            .bind(serde_json::Value::Object(c.labels.clone()).to_string())
            .bind(serde_json::to_string(&c.policy).unwrap_or_default())
            .bind(c.created_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Clusters of a tenant.
    pub async fn clusters(&self, tenant_id: &str) -> Result<Vec<Cluster>, StoreError> {
        let mut tx = self.begin(&Scope::Tenant(tenant_id.to_string())).await?;
        let rows = sqlx::query("SELECT id, tenant_id, name, region, labels, policy, created_at FROM clusters WHERE tenant_id = $1 ORDER BY created_at, id")
            .bind(tenant_id.to_string())
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows.iter().map(cluster_from_row).collect::<Result<_, _>>()?)
    }

    /// A cluster by its (globally unique) id, whatever its tenant; for the
    /// kube path, which then decides whether the caller may use it.
    pub async fn cluster_by_id(&self, id: &str) -> Result<Option<Cluster>, StoreError> {
        let mut tx = self.begin(&Scope::Platform).await?;
        let row =
            sqlx::query("SELECT id, tenant_id, name, region, labels, policy, created_at FROM clusters WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(row.as_ref().map(cluster_from_row).transpose()?)
    }

    /// Updates a cluster's labels and policy.
    pub async fn update_cluster(&self, c: &Cluster) -> Result<(), StoreError> {
        let mut tx = self.begin(&Scope::Tenant(c.tenant_id.clone())).await?;
        sqlx::query("UPDATE clusters SET labels = $1, policy = $2 WHERE id = $3 AND tenant_id = $4")
            .bind(serde_json::Value::Object(c.labels.clone()).to_string())
            .bind(serde_json::to_string(&c.policy).unwrap_or_default())
            .bind(c.id.clone())
            .bind(c.tenant_id.clone())
            .execute(&mut *tx)
            .await?;
        crate::cache::note(&mut tx, crate::cache::Change::Cluster, &c.id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a cluster and revokes its credentials.
    pub async fn delete_cluster(&self, tenant_id: &str, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin(&Scope::Tenant(tenant_id.to_string())).await?;
        let r = sqlx::query("DELETE FROM clusters WHERE id = $1 AND tenant_id = $2")
            .bind(id.to_string())
            .bind(tenant_id.to_string())
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() > 0 {
            sqlx::query("INSERT INTO revoked_clusters (cluster_id, revoked_at) VALUES ($1, $2)")
                .bind(id.to_string())
                .bind(now())
                .execute(&mut *tx)
                .await?;
        }
        crate::cache::note(&mut tx, crate::cache::Change::Cluster, id).await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    /// Grants another tenant's user access to `access.tenant_id`.
    pub async fn add_access(&self, a: &CrossTenantAccess) -> Result<(), StoreError> {
        let mut tx = self.begin(&Scope::Tenant(a.tenant_id.clone())).await?;
        sqlx::query("INSERT INTO cross_tenant_access (id, tenant_id, grantee_email, grantee_tenant, role, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(a.id.clone())
            .bind(a.tenant_id.clone())
            .bind(a.grantee_email.clone())
            .bind(a.grantee_tenant.clone())
            .bind(a.role.as_str().to_string())
            .bind(a.expires_at)
            .bind(a.created_at)
            .execute(&mut *tx)
            .await?;
        crate::cache::note(&mut tx, crate::cache::Change::Access, &a.tenant_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The cross-tenant grants of a tenant.
    pub async fn accesses(&self, tenant_id: &str) -> Result<Vec<CrossTenantAccess>, StoreError> {
        let mut tx = self.begin(&Scope::Tenant(tenant_id.to_string())).await?;
        let rows = sqlx::query("SELECT id, tenant_id, grantee_email, grantee_tenant, role, expires_at, created_at FROM cross_tenant_access WHERE tenant_id = $1 ORDER BY created_at, id")
            .bind(tenant_id.to_string())
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(CrossTenantAccess {
                    id: r.try_get("id")?,
                    tenant_id: r.try_get("tenant_id")?,
                    grantee_email: r.try_get("grantee_email")?,
                    grantee_tenant: r.try_get("grantee_tenant")?,
                    role: Role::parse(&r.try_get::<String, _>("role")?).unwrap_or(Role::TenantViewer),
                    expires_at: r.try_get("expires_at")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Removes a grant; `false` if there is none.
    pub async fn revoke_access(&self, tenant_id: &str, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin(&Scope::Tenant(tenant_id.to_string())).await?;
        let r = sqlx::query("DELETE FROM cross_tenant_access WHERE id = $1 AND tenant_id = $2")
            .bind(id.to_string())
            .bind(tenant_id.to_string())
            .execute(&mut *tx)
            .await?;
        crate::cache::note(&mut tx, crate::cache::Change::Access, tenant_id).await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    /// The role a user of another tenant holds in `tenant_id` through an
    /// unexpired grant, if any.
    pub async fn access_role(
        &self,
        tenant_id: &str,
        email: &str,
        grantee_tenant: &str,
    ) -> Result<Option<Role>, StoreError> {
        let mut tx = self.begin(&Scope::Platform).await?;
        let row = sqlx::query("SELECT role FROM cross_tenant_access WHERE tenant_id = $1 AND grantee_email = $2 AND grantee_tenant = $3 AND (expires_at IS NULL OR expires_at > $4) ORDER BY created_at DESC")
            .bind(tenant_id.to_string())
            .bind(email.to_string())
            .bind(grantee_tenant.to_string())
            .bind(now())
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row.map(|r| r.try_get::<String, _>("role")).transpose()?.and_then(|s| Role::parse(&s)))
    }

    /// Stores a one-time bootstrap token (its hash) for a cluster.
    pub async fn add_bootstrap_token(
        &self,
        tenant_id: &str,
        cluster_id: &str,
        hash: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin(&Scope::Tenant(tenant_id.to_string())).await?;
        sqlx::query("INSERT INTO bootstrap_tokens (id, tenant_id, cluster_id, token_hash, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(crate::auth::new_id('b'))
            .bind(tenant_id.to_string())
            .bind(cluster_id.to_string())
            .bind(hash.to_string())
            .bind(expires_at)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The (tenant, cluster) a bootstrap token would enroll, if it is usable
    /// now; spends nothing.
    pub async fn peek_bootstrap_token(&self, hash: &str) -> Result<Option<(String, String)>, StoreError> {
        let mut tx = self.begin(&Scope::Platform).await?;
        let row = sqlx::query("SELECT b.tenant_id, b.cluster_id FROM bootstrap_tokens b JOIN clusters c ON c.id = b.cluster_id WHERE b.token_hash = $1 AND b.used_at IS NULL AND b.expires_at > $2")
            .bind(hash.to_string())
            .bind(now())
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row.map(|r| Ok::<_, sqlx::Error>((r.try_get("tenant_id")?, r.try_get("cluster_id")?))).transpose()?)
    }

    /// Uses a bootstrap token: returns (tenant, cluster) once, if it is
    /// unexpired, unused and its cluster still exists; marks it used in the
    /// same transaction.
    pub async fn use_bootstrap_token(&self, hash: &str) -> Result<Option<(String, String)>, StoreError> {
        let mut tx = self.begin(&Scope::Platform).await?;
        let row = sqlx::query("SELECT b.id, b.tenant_id, b.cluster_id FROM bootstrap_tokens b JOIN clusters c ON c.id = b.cluster_id WHERE b.token_hash = $1 AND b.used_at IS NULL AND b.expires_at > $2")
            .bind(hash.to_string())
            .bind(now())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let id: String = r.try_get("id")?;
        let used = sqlx::query("UPDATE bootstrap_tokens SET used_at = $1 WHERE id = $2 AND used_at IS NULL")
            .bind(now())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if used.rows_affected() != 1 {
            return Ok(None);
        }
        let pair = (r.try_get("tenant_id")?, r.try_get("cluster_id")?);
        tx.commit().await?;
        Ok(Some(pair))
    }

    /// Every revoked cluster id (for relays).
    pub async fn revoked_clusters(&self) -> Result<Vec<String>, StoreError> {
        let rows =
            sqlx::query("SELECT cluster_id FROM revoked_clusters ORDER BY revoked_at").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| r.try_get::<String, _>("cluster_id")).collect::<Result<_, _>>()?)
    }

    /// Whether a cluster's credentials were revoked.
    pub async fn cluster_revoked(&self, id: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM revoked_clusters WHERE cluster_id = $1")
            .bind(id.to_string())
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(n > 0)
    }
}

async fn insert_user(tx: &mut Transaction<'static, sqlx::Any>, u: &User) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO users (id, tenant_id, email, name, role, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(u.id.clone())
        .bind(u.tenant_id.clone())
        .bind(u.email.clone())
        .bind(u.name.clone())
        .bind(u.role.as_str().to_string())
        .bind(u.created_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_token(tx: &mut Transaction<'static, sqlx::Any>, t: &ApiToken, hash: &str) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO api_tokens (id, tenant_id, user_id, name, token_hash, prefix, expires_at, revoked_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
        .bind(t.id.clone())
        .bind(t.tenant_id.clone())
        .bind(t.user_id.clone())
        .bind(t.name.clone())
        .bind(hash.to_string())
        .bind(t.prefix.clone())
        .bind(t.expires_at)
        .bind(t.revoked_at)
        .bind(t.created_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
