//! Fresh databases on the test PostgreSQL server (`scripts/test.sh` starts
//! it and sets `KUBECHAT_TEST_POSTGRES_URL`).

use sqlx::Connection;

/// A fresh, empty database; its URL.
pub async fn fresh_database(prefix: &str) -> String {
    sqlx::any::install_default_drivers();
    let base = std::env::var("KUBECHAT_TEST_POSTGRES_URL")
        .expect("KUBECHAT_TEST_POSTGRES_URL is not set: run `bash scripts/test.sh`");
    let name = format!("kc_{prefix}_{:016x}", rand::random::<u64>());
    let mut conn = sqlx::AnyConnection::connect(&base).await.expect("connect to PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create a database");
    format!("{}/{name}", base.rsplit_once('/').expect("url has a database").0)
}
