//! The schema's SQL files: a fresh database and one created by the
//! migrator before the files existed (its versions in `schema_migrations`)
//! end identical once the control plane has started on them, on SQLite and
//! on PostgreSQL; starting again changes nothing.

use kubechat_control_plane::Db;
use kubechat_control_plane::store::Backend;
use kubechat_control_plane::store::migrations;
use sqlx::{AnyPool, Row};

mod common;

/// What a database's schema is: tables, columns, indexes, policies.
async fn schema(url: &str) -> Vec<String> {
    let pool = AnyPool::connect(url).await.expect("connect");
    let mut out = Vec::new();
    if url.starts_with("sqlite") {
        let rows = sqlx::query(
            "SELECT type, name, tbl_name, COALESCE(sql, '') AS sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND name NOT IN ('_sqlx_migrations', 'schema_migrations') ORDER BY type, name",
        )
        .fetch_all(&pool)
        .await
        .expect("sqlite_master");
        for r in rows {
            let get = |c: &str| r.try_get::<String, _>(c).expect("column");
            // SQLite keeps the text of the statement: an added column shows
            // there as it was written, so compare the columns too.
            out.push(format!("{} {} {}", get("type"), get("name"), get("tbl_name")));
        }
        let tables: Vec<String> = sqlx::query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT IN ('_sqlx_migrations', 'schema_migrations') ORDER BY name",
        )
        .fetch_all(&pool)
        .await
        .expect("tables")
        .iter()
        .map(|r| r.try_get("name").expect("name"))
        .collect();
        for t in tables {
            for c in sqlx::query(&format!("SELECT name, type, \"notnull\" AS nn, COALESCE(dflt_value, '') AS d, pk FROM pragma_table_info('{t}') ORDER BY name"))
                .fetch_all(&pool)
                .await
                .expect("columns")
            {
                out.push(format!(
                    "column {t}.{} {} notnull={} default={} pk={}",
                    c.try_get::<String, _>("name").expect("name"),
                    c.try_get::<String, _>("type").expect("type"),
                    c.try_get::<i64, _>("nn").expect("notnull"),
                    c.try_get::<String, _>("d").expect("default"),
                    c.try_get::<i64, _>("pk").expect("pk"),
                ));
            }
        }
    } else {
        for (sql, cols) in [
            (
                "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || COALESCE(column_default, '') AS x FROM information_schema.columns WHERE table_schema = current_schema() AND table_name NOT IN ('_sqlx_migrations', 'schema_migrations') ORDER BY 1",
                "x",
            ),
            (
                "SELECT indexname || ' ' || indexdef AS x FROM pg_indexes WHERE schemaname = current_schema() AND tablename NOT IN ('_sqlx_migrations', 'schema_migrations') ORDER BY 1",
                "x",
            ),
            (
                "SELECT tablename || ' ' || policyname || ' ' || COALESCE(qual, '') || ' ' || COALESCE(with_check, '') AS x FROM pg_policies ORDER BY 1",
                "x",
            ),
            (
                "SELECT relname || ' rls=' || relrowsecurity::text || ' force=' || relforcerowsecurity::text AS x FROM pg_class WHERE relkind = 'r' AND relnamespace = current_schema()::regnamespace ORDER BY 1",
                "x",
            ),
        ] {
            for r in sqlx::query(sql).fetch_all(&pool).await.expect("catalog") {
                out.push(r.try_get::<String, _>(cols).expect("x"));
            }
        }
    }
    let versions: Vec<i64> = sqlx::query("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(&pool)
        .await
        .expect("_sqlx_migrations")
        .iter()
        .map(|r| r.try_get("version").expect("version"))
        .collect();
    out.push(format!("applied {versions:?}"));
    pool.close().await;
    out
}

/// A database as the migrator before the SQL files left it: versions 1–7
/// run statement by statement, recorded in `schema_migrations`.
async fn legacy(url: &str, backend: Backend) {
    let pool = AnyPool::connect(url).await.expect("connect");
    sqlx::query("CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
        .execute(&pool)
        .await
        .expect("schema_migrations");
    for (version, _, sql) in migrations::files(backend).iter().filter(|(v, _, _)| *v <= 7) {
        for statement in sql.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::query(statement).execute(&pool).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)")
            .bind(*version)
            .execute(&pool)
            .await
            .expect("record");
    }
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_and_an_upgraded_database_end_identical() {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = |n: &str| format!("sqlite://{}?mode=rwc", dir.path().join(n).display());
    let pairs = vec![
        (Backend::Sqlite, sqlite("fresh.db"), sqlite("old.db")),
        (
            Backend::Postgres,
            common::databases().await.into_iter().nth(1).expect("postgres").0,
            common::databases().await.into_iter().nth(1).expect("postgres").0,
        ),
    ];
    for (backend, fresh, old) in pairs {
        Db::connect(&fresh).await.expect("fresh");
        legacy(&old, backend).await;
        Db::connect(&old).await.expect("the control plane starts on the old database");
        let (a, b) = (schema(&fresh).await, schema(&old).await);
        assert!(a.len() > 20, "{backend:?}: the schema dump is too small: {a:?}");
        assert_eq!(a, b, "{backend:?}: a fresh and an upgraded database differ");
        assert!(
            a.last().is_some_and(|v| v.ends_with(&format!("{}]", migrations::files(backend).len()))),
            "{backend:?}: every file applied: {:?}",
            a.last()
        );
        // Starting again applies nothing and changes nothing.
        Db::connect(&old).await.expect("again");
        assert_eq!(schema(&old).await, b, "{backend:?}");
    }
}
