//! Clients that vanish at any point — during TLS, mid-headers, mid-body,
//! after sending a request that writes, while the database is busy — leave
//! nothing behind: afterwards every REST and kube request succeeds and no
//! database connection is left inside a transaction. On SQLite and on
//! PostgreSQL.

use std::time::Duration;

use kubechat_control_plane::Secret;
use kubechat_control_plane::store::{Backend, Scope};
use kubechat_tests::platform::{World, world_full};
use kubechat_tests::raw::RawClient;
use kubechat_tests::wait::eventually;
use rand::Rng;
use serde_json::json;
use sqlx::Row;
use tokio::io::AsyncWriteExt;

const CLIENTS: usize = 1000;
const AT_ONCE: usize = 50;

async fn world_on(postgres: bool) -> World {
    let url = if postgres { Some(kubechat_tests::postgres::fresh_database("vanish").await) } else { None };
    world_full(
        json!({}),
        |_| {},
        move |c| {
            if let Some(url) = url {
                c.database_url = Secret(url);
            }
            c.per_token_rps = 100_000.0;
            c.per_tenant_rps = 100_000.0;
        },
    )
    .await
}

/// One client that goes away at the point `kind` names.
async fn vanish(raw: RawClient, kind: u32, token: String, tenant: String, cluster: String) {
    match kind {
        // Straight after TCP.
        0 => drop(tokio::net::TcpStream::connect(raw.addr()).await),
        // Half a TLS ClientHello.
        1 => {
            if let Ok(mut s) = tokio::net::TcpStream::connect(raw.addr()).await {
                let _ = s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]).await;
            }
        }
        // TLS, then half the headers.
        2 => {
            let mut s = raw.open().await;
            let _ = s.write_all(b"GET /v1/tenants HTTP/1.1\r\nHost: x\r\nAuthori").await;
        }
        // Headers of a write, then half its body.
        3 => {
            let mut s = raw.open().await;
            let head = format!(
                "POST /v1/tenants/{tenant}/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{{\"name\":"
            );
            let _ = s.write_all(head.as_bytes()).await;
        }
        // A whole write, gone before the answer (the handler runs on).
        4 => {
            let mut s = raw.open().await;
            let body = r#"{"name":"vanishing"}"#;
            let req = format!(
                "POST /v1/tenants/{tenant}/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(req.as_bytes()).await;
            let _ = s.flush().await;
        }
        // A whole kube request, gone before the answer.
        _ => {
            let mut s = raw.open().await;
            let req = format!(
                "GET /k8s/clusters/{cluster}/api/v1/namespaces/web/pods HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
            );
            let _ = s.write_all(req.as_bytes()).await;
            let _ = s.flush().await;
        }
    }
}

/// Holds the database busy for `hold`: SQLite's write lock, or PostgreSQL
/// locks on the tables requests write.
async fn busy_database(w: &World, hold: Duration) -> tokio::task::JoinHandle<()> {
    let db = w.app.db.clone();
    let (locked, ready) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut tx = db.begin(&Scope::Platform).await.expect("begin");
        if db.backend() == Backend::Postgres {
            sqlx::query("LOCK TABLE api_tokens, audit_heads IN EXCLUSIVE MODE").execute(&mut *tx).await.expect("lock");
        }
        let _ = locked.send(());
        tokio::time::sleep(hold).await;
        tx.commit().await.expect("commit");
    });
    ready.await.expect("the database is held");
    task
}

async fn nothing_left_behind(postgres: bool) {
    let w = world_on(postgres).await;
    let raw = RawClient::new(&w.cp_url, &w.cp_ca);
    let token = w.user("ursula@acme.example", "tenant_user").await;
    let busy = busy_database(&w, Duration::from_secs(3)).await;
    let mut rng = rand::rng();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        while clients.len() >= AT_ONCE {
            let _ = clients.join_next().await;
        }
        let kind = rng.random_range(0..6);
        clients.spawn(vanish(raw.clone(), kind, token.clone(), w.tenant.clone(), w.cluster.clone()));
    }
    while clients.join_next().await.is_some() {}
    busy.await.expect("the busy transaction ends");
    // While the database was held, presence reports could not be stored and
    // the tunnel's lease may have run out; the next report renews it.
    let (raw2, t2, path) =
        (raw.clone(), token.clone(), format!("/k8s/clusters/{}/api/v1/namespaces/web/pods", w.cluster));
    eventually("the cluster served again once the database is free", Duration::from_secs(30), || {
        let (raw, t, p) = (raw2.clone(), t2.clone(), path.clone());
        async move { raw.send("GET", &p, &t, &[]).await.status == 200 }
    })
    .await;

    // Every REST and kube request succeeds afterwards.
    for i in 0..20 {
        let r = w.api.get(&format!("/v1/tenants/{}", w.tenant)).await.expect("reach");
        assert_eq!(r.status, 200, "REST read {i}: {}", r.body);
        let r = w
            .api
            .post(&format!("/v1/tenants/{}/tokens", w.tenant), &json!({"name": format!("after-{i}")}))
            .await
            .expect("reach");
        assert_eq!(r.status, 201, "REST write {i}: {}", r.body);
        let k = raw.send("GET", &format!("/k8s/clusters/{}/api/v1/namespaces/web/pods", w.cluster), &token, &[]).await;
        assert_eq!(k.status, 200, "kube request {i}: {}", k.text());
    }
    let kubectl = w.kubectl(&token, &w.cluster);
    assert!(kubectl.ok(&["get", "pods", "-n", "web"]).await.contains("api-"));

    // No pooled connection is left inside a transaction: every one of them
    // can start a write transaction now.
    let db = w.app.db.clone();
    let mut txs = Vec::new();
    for _ in 0..8 {
        let mut tx = db.begin(&Scope::Platform).await.expect("a clean connection");
        sqlx::query("SELECT 1 AS one").fetch_one(&mut *tx).await.expect("query");
        txs.push(tx);
        if db.backend() == Backend::Sqlite {
            // One writer at a time on SQLite: commit before the next.
            txs.pop().expect("tx").commit().await.expect("commit");
        }
    }
    for tx in txs {
        tx.commit().await.expect("commit");
    }
    if db.backend() == Backend::Postgres {
        let db2 = db.clone();
        eventually("no PostgreSQL session idle in a transaction", Duration::from_secs(30), || {
            let db = db2.clone();
            async move {
                let mut tx = db.begin(&Scope::Platform).await.expect("begin");
                let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'")
                    .fetch_one(&mut *tx)
                    .await
                    .expect("query")
                    .try_get("n")
                    .expect("n");
                tx.commit().await.expect("commit");
                n == 0
            }
        })
        .await;
    }
    // And the audit chain is whole.
    let v = w.api.get(&format!("/v1/tenants/{}/audit/verify", w.tenant)).await.expect("reach");
    assert_eq!(v.body["intact"], true, "{}", v.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_vanishing_clients_leave_nothing_behind_on_sqlite() {
    nothing_left_behind(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_vanishing_clients_leave_nothing_behind_on_postgresql() {
    nothing_left_behind(true).await;
}
