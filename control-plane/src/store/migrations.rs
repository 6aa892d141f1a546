//! The schema as numbered SQL files per dialect (`control-plane/migrations/
//! sqlite/` and `postgres/`), embedded in the binary and applied by sqlx's
//! migrator (`_sqlx_migrations` records what ran, with checksums; replicas
//! starting together take its lock on PostgreSQL).
//!
//! Databases created before the files existed recorded their versions in
//! `schema_migrations`; those versions are carried over into
//! `_sqlx_migrations` once (the SQL the files hold is exactly what ran), so
//! an upgraded database ends identical to a fresh one.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::migrate::{Migrate, MigrateError, Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AnyPool, Row};

use super::Backend;

type Files = &'static [(i64, &'static str, &'static str)];

/// `version "NNNN" "name"`: the file `NNNN_name.sql` of a dialect.
macro_rules! files {
    ($dialect:literal: $($v:literal $n:literal $name:literal),* $(,)?) => {
        &[$(($v, $name, include_str!(concat!("../../migrations/", $dialect, "/", $n, "_", $name, ".sql")))),*]
    };
}

/// SQLite's migrations.
pub const SQLITE: Files = files!("sqlite":
    1 "0001" "tenancy", 2 "0002" "directory", 3 "0003" "audit", 4 "0004" "quotas",
    5 "0005" "tunnel_figures", 6 "0006" "audit_marks", 7 "0007" "cache_changes", 8 "0008" "sessions_in_memory", 9 "0009" "chat_plans", 10 "0010" "ui_sessions",
    11 "0011" "grant_key_ids",
);

/// PostgreSQL's migrations (the same tables, tenant rows under row-level security).
pub const POSTGRES: Files = files!("postgres":
    1 "0001" "tenancy", 2 "0002" "directory", 3 "0003" "audit", 4 "0004" "quotas",
    5 "0005" "tunnel_figures", 6 "0006" "audit_marks", 7 "0007" "cache_changes", 8 "0008" "sessions_in_memory", 9 "0009" "chat_plans", 10 "0010" "ui_sessions",
    11 "0011" "grant_key_ids",
);

/// The versions the pre-file migrator knew (`schema_migrations`).
const LEGACY_VERSIONS: i64 = 7;

/// Embedded migration files, as sqlx's migrator reads a directory.
#[derive(Debug, Clone, Copy)]
struct Embedded(Files);

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, sqlx::error::BoxDynError>> + Send + 'static>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(v, name, sql)| {
                    Migration::new(*v, Cow::Borrowed(*name), MigrationType::Simple, Cow::Borrowed(*sql), false)
                })
                .collect())
        })
    }
}

/// The files of `backend`.
pub fn files(backend: Backend) -> Files {
    match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    }
}

/// Applies every migration `pool` has not run yet.
pub async fn run(pool: &AnyPool, backend: Backend) -> Result<(), MigrateError> {
    let migrator = Migrator::new(Embedded(files(backend))).await?;
    carry_over_legacy(pool, backend, &migrator).await?;
    migrator.run(pool).await
}

async fn table_exists(conn: &mut sqlx::AnyConnection, backend: Backend, name: &str) -> Result<bool, sqlx::Error> {
    let sql = match backend {
        Backend::Sqlite => "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = $1",
        Backend::Postgres => {
            "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1"
        }
    };
    let n: i64 = sqlx::query(sql).bind(name.to_string()).fetch_one(&mut *conn).await?.try_get("n")?;
    Ok(n > 0)
}

/// Records the versions a database created before the files has run in
/// `_sqlx_migrations`, with the files' checksums, and drops the old table.
async fn carry_over_legacy(pool: &AnyPool, backend: Backend, migrator: &Migrator) -> Result<(), MigrateError> {
    let mut conn = pool.acquire().await?;
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    if backend == Backend::Postgres {
        // One replica carries over; the others then find it done.
        sqlx::query("SELECT pg_advisory_xact_lock(7041)").execute(&mut *tx).await?;
    }
    if !table_exists(&mut tx, backend, "schema_migrations").await? {
        tx.commit().await?;
        return Ok(());
    }
    let applied: Option<i64> =
        sqlx::query("SELECT MAX(version) AS v FROM schema_migrations").fetch_one(&mut *tx).await?.try_get("v")?;
    tx.ensure_migrations_table().await?;
    for m in migrator.iter().filter(|m| m.version <= applied.unwrap_or(0).min(LEGACY_VERSIONS)) {
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES ($1, $2, TRUE, $3, 0) ON CONFLICT (version) DO NOTHING",
        )
        .bind(m.version)
        .bind(m.description.to_string())
        .bind(m.checksum.to_vec())
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("DROP TABLE schema_migrations").execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}
