//! Two control-plane replicas on one PostgreSQL database, caches warm: a
//! revoked token, a deleted user, a changed role, a suspended tenant and a
//! deleted cluster are refused on the other replica within the cache's
//! bound, and so is a web session signed out on one; and commands sent to
//! both at once never exceed the quota; a replica that drains gives back
//! the commands it reserved and did not spend.

use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Method, Request};
use http_body_util::BodyExt;
use kubechat_control_plane::client::{Client, Reply};
use kubechat_control_plane::{App, Config, ControlPlane, Secret};
use serde_json::json;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

mod common;

const ADMIN: &str = "kc_replicastestplatformadmintoken000000000";

async fn replica(url: &str, shutdown: &CancellationToken) -> String {
    replica_app(url, shutdown).await.0
}

/// Onboards tenant Acme (team plan) through replica `base`: the platform
/// admin's client there, the tenant's id, its admin's token.
async fn acme(base: &str) -> (Client, String, String) {
    let admin = Client::new(base, Some(Secret(ADMIN.into())));
    let r = admin
        .post(
            "/v1/tenants",
            &json!({"name": "Acme", "slug": "acme", "plan": "team", "adminEmail": "admin@acme.example"}),
        )
        .await
        .expect("reach");
    assert_eq!(r.status, 201, "{}", r.body);
    let tenant = r.body["tenant"]["id"].as_str().expect("id").to_string();
    (admin, tenant, r.body["token"].as_str().expect("token").to_string())
}

/// A replica's configuration: the platform admin's token, rate limits out
/// of the way.
fn config(url: &str) -> Config {
    let mut cfg = Config::new(url);
    cfg.platform_admin_token = Some(Secret(ADMIN.into()));
    cfg.per_token_rps = 100_000.0;
    cfg.per_tenant_rps = 100_000.0;
    cfg
}

/// A replica's base URL and its state (for in-process web requests).
async fn replica_app(url: &str, shutdown: &CancellationToken) -> (String, std::sync::Arc<App>) {
    let cp = ControlPlane::bind(config(url)).await.expect("replica");
    let base = format!("http://{}", cp.addr());
    let app = cp.app();
    tokio::spawn(cp.run(shutdown.child_token()));
    (base, app)
}

/// A browser's request to a replica's web app, in-process: status,
/// `Set-Cookie`, body.
async fn browse(
    app: &std::sync::Arc<App>,
    method: Method,
    path: &str,
    cookie: Option<&str>,
    form: &str,
) -> (u16, String, String) {
    let mut req = Request::builder().method(method).uri(path).header("sec-fetch-site", "same-origin");
    if let Some(c) = cookie {
        req = req.header("cookie", format!("__Host-kubechat={c}"));
    }
    if !form.is_empty() {
        req = req.header("content-type", "application/x-www-form-urlencoded");
    }
    let resp = kubechat_control_plane::http::router(app.clone())
        .oneshot(req.body(Body::from(form.to_string())).expect("request"))
        .await
        .expect("infallible");
    let set_cookie = resp.headers().get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, set_cookie, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_session_is_served_from_memory_and_signing_out_ends_it_on_every_replica() {
    let (url, _) = common::databases().await.into_iter().nth(1).expect("postgres");
    let shutdown = CancellationToken::new();
    let ((a, app_a), (_, app_b)) = (replica_app(&url, &shutdown).await, replica_app(&url, &shutdown).await);
    let (_, _, token) = acme(&a).await;

    let (status, set_cookie, _) = browse(&app_a, Method::POST, "/ui/login", None, &format!("token={token}")).await;
    assert_eq!(status, 303, "signed in on a");
    let cookie = set_cookie
        .strip_prefix("__Host-kubechat=")
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_string();
    // Replica b serves the session; once warm, from memory: a change to
    // its row that bypasses the change log (as no code path does) is not
    // seen, where a read of the row would refuse the cookie.
    let (status, _, _) = browse(&app_b, Method::GET, "/ui/people", Some(&cookie), "").await;
    assert_eq!(status, 200);
    let mut db = sqlx::AnyConnection::connect(&url).await.expect("connect");
    let hash = kubechat_control_plane::auth::hash(&cookie);
    let owner: String = sqlx::query_scalar("SELECT user_id FROM ui_sessions WHERE id_hash = $1")
        .bind(hash.clone())
        .fetch_one(&mut db)
        .await
        .expect("the stored session");
    let changed = sqlx::query("UPDATE ui_sessions SET user_id = 'someone-else' WHERE id_hash = $1")
        .bind(hash.clone())
        .execute(&mut db)
        .await
        .expect("update");
    assert_eq!(changed.rows_affected(), 1);
    let (status, _, page) = browse(&app_b, Method::GET, "/ui/people", Some(&cookie), "").await;
    assert_eq!(status, 200, "a warm page read its session from the database: {page}");
    sqlx::query("UPDATE ui_sessions SET user_id = $1 WHERE id_hash = $2")
        .bind(owner)
        .bind(hash)
        .execute(&mut db)
        .await
        .expect("restore");

    // Signed out on a: refused on a at once and on b within the bound.
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .expect("the page's CSRF token")
        .to_string();
    let (status, _, _) = browse(&app_a, Method::POST, "/ui/logout", Some(&cookie), &format!("csrf={csrf}")).await;
    assert_eq!(status, 303, "signed out on a");
    assert_eq!(browse(&app_a, Method::GET, "/ui/people", Some(&cookie), "").await.0, 303, "refused on a at once");
    let started = Instant::now();
    while browse(&app_b, Method::GET, "/ui/people", Some(&cookie), "").await.0 != 303 {
        assert!(started.elapsed() < Duration::from_secs(10), "the ended session is still served on b");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("signed-out session refused on the other replica after {:?} (documented bound 1 s)", started.elapsed());
    shutdown.cancel();
}

/// Waits until `probe` answers `status` on the other replica; returns how
/// long that took.
async fn refused_within(what: &str, status: u16, probe: impl AsyncFn() -> Reply) -> Duration {
    let started = Instant::now();
    loop {
        let r = probe().await;
        if r.status == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: still {} on the other replica: {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_every_replica_within_the_caches_bound() {
    let (url, _) = common::databases().await.into_iter().nth(1).expect("postgres");
    let shutdown = CancellationToken::new();
    let (a, b) = (replica(&url, &shutdown).await, replica(&url, &shutdown).await);
    let (admin_a, tenant, token) = acme(&a).await;
    let owner_a = admin_a.with_token(&token);
    let person = |email: &str, role: &str| {
        let (owner, tenant) = (owner_a.clone(), tenant.clone());
        let (email, role) = (email.to_string(), role.to_string());
        async move {
            let u = owner
                .post(&format!("/v1/tenants/{tenant}/users"), &json!({"email": email, "role": role}))
                .await
                .expect("reach");
            let uid = u.body["id"].as_str().expect("user id").to_string();
            let t = owner
                .post(&format!("/v1/tenants/{tenant}/tokens"), &json!({"name": "t", "userId": uid}))
                .await
                .expect("reach");
            (
                uid,
                t.body["token"].as_str().expect("token").to_string(),
                t.body["apiToken"]["id"].as_str().expect("id").to_string(),
            )
        }
    };
    let (_, revoked_token, revoked_id) = person("rita@acme.example", "tenant_user").await;
    let (deleted_uid, deleted_token, _) = person("dan@acme.example", "tenant_user").await;
    let (demoted_uid, demoted_token, _) = person("ada@acme.example", "tenant_admin").await;
    let c = owner_a.post(&format!("/v1/tenants/{tenant}/clusters"), &json!({"name": "prod"})).await.expect("reach");
    let cluster = c.body["id"].as_str().expect("cluster").to_string();

    // Warm replica b's cache with every one of them.
    let on_b = |token: &str| Client::new(&b, Some(Secret(token.to_string())));
    let tenant_path = format!("/v1/tenants/{tenant}");
    let users_path = format!("/v1/tenants/{tenant}/users");
    let kube_path = format!("/k8s/clusters/{cluster}/api/v1/pods");
    assert_eq!(on_b(&revoked_token).get(&tenant_path).await.expect("reach").status, 200);
    assert_eq!(on_b(&deleted_token).get(&tenant_path).await.expect("reach").status, 200);
    assert_eq!(on_b(&demoted_token).get(&users_path).await.expect("reach").status, 200);
    let k = on_b(&demoted_token).get(&kube_path).await.expect("reach");
    assert_eq!(k.status, 503, "the cluster is known (not connected): {}", k.body);

    let mut bounds = Vec::new();
    owner_a.delete(&format!("/v1/tenants/{tenant}/tokens/{revoked_id}")).await.expect("reach");
    bounds.push(
        refused_within("revoked token", 401, async || on_b(&revoked_token).get(&tenant_path).await.expect("reach"))
            .await,
    );
    owner_a.delete(&format!("/v1/tenants/{tenant}/users/{deleted_uid}")).await.expect("reach");
    bounds.push(
        refused_within("deleted user", 401, async || on_b(&deleted_token).get(&tenant_path).await.expect("reach"))
            .await,
    );
    owner_a
        .put(&format!("/v1/tenants/{tenant}/users/{demoted_uid}"), &json!({"role": "tenant_viewer"}))
        .await
        .expect("reach");
    bounds.push(
        refused_within("changed role", 403, async || on_b(&demoted_token).get(&users_path).await.expect("reach")).await,
    );
    owner_a.delete(&format!("/v1/tenants/{tenant}/clusters/{cluster}")).await.expect("reach");
    bounds.push(
        refused_within("deleted cluster", 404, async || on_b(&demoted_token).get(&kube_path).await.expect("reach"))
            .await,
    );
    admin_a.put(&format!("/v1/tenants/{tenant}"), &json!({"status": "suspended"})).await.expect("reach");
    bounds.push(
        refused_within("suspended tenant", 403, async || on_b(&demoted_token).get(&tenant_path).await.expect("reach"))
            .await,
    );
    println!("refused on the other replica after {bounds:?} (documented bound 1 s)");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sending_commands_together_never_exceed_the_quota() {
    let (url, _) = common::databases().await.into_iter().nth(1).expect("postgres");
    let shutdown = CancellationToken::new();
    let (a, b) = (replica(&url, &shutdown).await, replica(&url, &shutdown).await);
    let (admin, tenant, token) = acme(&a).await;
    const LIMIT: i64 = 200;
    let limits = json!({"maxUsers": 5, "maxClusters": 5, "maxCommandsPerMonth": LIMIT, "maxAuditRetentionDays": 30});
    assert_eq!(
        admin.put(&format!("/v1/tenants/{tenant}"), &json!({"limits": limits})).await.expect("reach").status,
        200
    );
    let owner = admin.with_token(&token);
    let c = owner.post(&format!("/v1/tenants/{tenant}/clusters"), &json!({"name": "prod"})).await.expect("reach");
    let path = format!("/k8s/clusters/{}/api/v1/pods", c.body["id"].as_str().expect("cluster"));
    // 300 commands (no session: each one counts), half to each replica, at once.
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..300 {
        let client = Client::new(if i % 2 == 0 { &a } else { &b }, Some(Secret(token.clone())));
        let path = path.clone();
        sends.spawn(async move { client.get(&path).await.expect("reach").status });
    }
    let (mut counted, mut refused) = (0i64, 0i64);
    while let Some(s) = sends.join_next().await {
        // 503: counted, then not connected (no agent in this test); 429: over the quota.
        match s.expect("send") {
            429 => refused += 1,
            503 => counted += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    let slack = 2 * 50;
    assert!(counted <= LIMIT, "{counted} commands passed a quota of {LIMIT}");
    assert!(
        counted >= LIMIT - slack,
        "only {counted} of {LIMIT} allowed: more unused reservations than two replicas hold"
    );
    assert_eq!(counted + refused, 300);
    shutdown.cancel();
}

/// Three commands on one replica, which then drains (a restart, or one
/// step of a rolling deploy): the next replica may send exactly the rest
/// of the quota, because the first gave back what it had reserved ahead
/// and not spent. SQLite (a restart on the same file) and PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_replica_gives_back_the_commands_it_did_not_spend() {
    for (url, _dir) in common::databases().await {
        let first = CancellationToken::new();
        let cp = ControlPlane::bind(config(&url)).await.expect("replica");
        let a = format!("http://{}", cp.addr());
        let running = tokio::spawn(cp.run(first.clone()));
        let (admin, tenant, token) = acme(&a).await;
        const LIMIT: i64 = 100;
        let limits =
            json!({"maxUsers": 5, "maxClusters": 5, "maxCommandsPerMonth": LIMIT, "maxAuditRetentionDays": 30});
        let r = admin.put(&format!("/v1/tenants/{tenant}"), &json!({"limits": limits})).await.expect("reach");
        assert_eq!(r.status, 200, "{}", r.body);
        let owner = admin.with_token(&token);
        let c = owner.post(&format!("/v1/tenants/{tenant}/clusters"), &json!({"name": "prod"})).await.expect("reach");
        let path = format!("/k8s/clusters/{}/api/v1/pods", c.body["id"].as_str().expect("cluster"));
        // 503: counted, then not connected (no agent in this test).
        for _ in 0..3 {
            assert_eq!(owner.get(&path).await.expect("reach").status, 503, "{url}");
        }
        first.cancel();
        running.await.expect("the first replica drained");

        let rest = CancellationToken::new();
        let b = Client::new(&replica(&url, &rest).await, Some(Secret(token.clone())));
        let mut counted = 3;
        loop {
            match b.get(&path).await.expect("reach").status {
                503 => counted += 1,
                429 => break,
                other => panic!("unexpected status {other} ({url})"),
            }
            assert!(counted <= LIMIT, "{counted} commands passed a quota of {LIMIT} ({url})");
        }
        assert_eq!(counted, LIMIT, "commands lost to the first replica's reservations ({url})");
        rest.cancel();
    }
}

/// How many audit records `tenant` has (read with the platform's scope:
/// PostgreSQL's row-level security hides them otherwise).
async fn audit_records(app: &App, tenant: &str) -> i64 {
    let mut tx = app.db.read(&kubechat_control_plane::store::Scope::Platform).await.expect("read");
    sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE tenant_id = $1")
        .bind(tenant.to_string())
        .fetch_one(&mut *tx)
        .await
        .expect("count")
}

/// The database goes away under a warm replica, which goes on answering
/// kube requests from memory and queueing their audit records; then it
/// drains. What the database did not take is spooled, and the next start
/// on the same spool directory commits it: no record is lost, none is
/// stored twice, and the chain still verifies. SQLite and PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_draining_with_the_database_down_spools_its_audit_records_for_the_next_start() {
    for (url, _dir) in common::databases().await {
        let spool = tempfile::tempdir().expect("spool dir");
        let mut cfg = config(&url);
        cfg.spool_dir = Some(spool.path().to_path_buf());
        cfg.grace_period = Duration::from_secs(1);
        // The outage outlasts no cache entry here, however slow the machine
        // (by default they are dropped 1 s after the change log fails).
        cfg.cache_offline_trust = Duration::from_secs(3600);
        let first = CancellationToken::new();
        let cp = ControlPlane::bind(cfg.clone()).await.expect("replica");
        let a = format!("http://{}", cp.addr());
        let app = cp.app();
        let running = tokio::spawn(cp.run(first.clone()));
        let (admin, tenant, token) = acme(&a).await;
        let owner = admin.with_token(&token);
        let c = owner.post(&format!("/v1/tenants/{tenant}/clusters"), &json!({"name": "prod"})).await.expect("reach");
        let path = format!("/k8s/clusters/{}/api/v1/pods", c.body["id"].as_str().expect("cluster"));
        // Warm: the caches and the quota's allotment. Its records committed.
        let warm = owner.get(&path).await.expect("reach");
        assert_eq!(warm.status, 503, "{url}");
        app.writer.commit(Vec::new(), Duration::from_secs(10)).await.expect("committed");
        let per_request = audit_records(&app, &tenant).await;
        assert!(per_request > 0, "the request left a record ({url})");

        // Every transaction fails from now on.
        drop(app.db.pool().close());
        let (r1, r2) = tokio::join!(owner.get(&path), owner.get(&path));
        for r in [r1, r2] {
            let r = r.expect("reach");
            assert_eq!(r.status, 503, "{url}");
            // As before the outage (no relay in this test), not "storage unavailable".
            assert_eq!(r.body["message"], warm.body["message"], "served from memory ({url})");
        }
        first.cancel();
        running.await.expect("the replica drained");
        let files: Vec<_> =
            std::fs::read_dir(spool.path()).expect("spool").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(files.len(), 1, "one spool file: {files:?} ({url})");

        // The next start commits it before anything else it writes.
        let rest = CancellationToken::new();
        let cp = ControlPlane::bind(cfg).await.expect("replica");
        let b = format!("http://{}", cp.addr());
        let next = cp.app();
        tokio::spawn(cp.run(rest.clone()));
        next.writer.commit(Vec::new(), Duration::from_secs(10)).await.expect("committed");
        let stored = audit_records(&next, &tenant).await;
        assert_eq!(stored, 3 * per_request, "every record of the three requests, each once ({url})");
        assert_eq!(std::fs::read_dir(spool.path()).expect("spool").count(), 0, "the spool file is deleted ({url})");
        let owner = Client::new(&b, Some(Secret(token.clone())));
        let v = owner.get(&format!("/v1/tenants/{tenant}/audit/verify")).await.expect("reach");
        assert_eq!(v.status, 200, "{}", v.body);
        assert_eq!(v.body["intact"], true, "the chain verifies after the spool's commit ({url}): {}", v.body);
        assert_eq!(v.body["events"], stored, "{}", v.body);
        rest.cancel();
    }
}

/// A TCP forwarder to PostgreSQL that can go silent: connections stay open
/// and nothing sent on them is answered (a partition, a database host
/// switched off: no refusal, no reset).
struct Silencer {
    addr: std::net::SocketAddr,
    /// The flag of connections opened from now on (each keeps the one it
    /// was opened under).
    current: std::sync::Arc<std::sync::Mutex<std::sync::Arc<std::sync::atomic::AtomicBool>>>,
}

impl Silencer {
    /// Every connection, open or to come, goes silent.
    fn silence(&self) {
        self.current.lock().expect("flag").store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// New connections are answered again; those open stay silent (what a
    /// failed-over database host, or a partition whose NAT state was lost,
    /// leaves behind).
    fn answer_new_connections(&self) {
        *self.current.lock().expect("flag") = Default::default();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    quiet: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if quiet.load(std::sync::atomic::Ordering::Relaxed) {
            // Swallowed, the connection held open: the sender waits for ever.
            let _held = (from, to);
            std::future::pending::<()>().await;
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn silencer(target: &str) -> Silencer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let current: std::sync::Arc<std::sync::Mutex<std::sync::Arc<std::sync::atomic::AtomicBool>>> = Default::default();
    let (flags, target) = (current.clone(), target.to_string());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (quiet, target) = (flags.lock().expect("flag").clone(), target.clone());
            tokio::spawn(async move {
                if quiet.load(std::sync::atomic::Ordering::Relaxed) {
                    // Accepted, never answered.
                    let _held = &client;
                    std::future::pending::<()>().await;
                }
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else { return };
                let ((cr, cw), (sr, sw)) = (client.into_split(), server.into_split());
                tokio::join!(pipe(cr, sw, quiet.clone()), pipe(sr, cw, quiet));
            });
        }
    });
    Silencer { addr, current }
}

/// A replica behind a [`Silencer`] forwarder, warm: its app, the address,
/// the owner's client, the tenant and a kube path that needs no database.
async fn warm_replica_behind(
    fwd: &Silencer,
    pg: &str,
    query: &str,
    stop: &CancellationToken,
) -> (std::sync::Arc<App>, Client, String, String) {
    let (head, rest) = pg.split_once("@").expect("user@host");
    let (_, db) = rest.split_once('/').expect("host/db");
    let url = format!("{head}@{}/{db}{query}", fwd.addr);
    let cp = ControlPlane::bind(config(&url)).await.expect("replica");
    let a = format!("http://{}", cp.addr());
    let app = cp.app();
    tokio::spawn(cp.run(stop.clone()));
    let (admin, tenant, token) = acme(&a).await;
    let owner = admin.with_token(&token);
    let c = owner.post(&format!("/v1/tenants/{tenant}/clusters"), &json!({"name": "prod"})).await.expect("reach");
    let path = format!("/k8s/clusters/{}/api/v1/pods", c.body["id"].as_str().expect("cluster"));
    assert_eq!(owner.get(&path).await.expect("reach").status, 503, "warm (no relay here)");
    (app, owner, tenant, path)
}

fn postgres_target(pg: &str) -> &str {
    let (_, rest) = pg.split_once("@").expect("user@host");
    rest.split_once('/').expect("host/db").0
}

/// The database goes silent under a warm replica (it neither answers nor
/// refuses; the pool would wait 30 s for a connection): the replica still
/// stops trusting its cache once the offline window (1 s) is over, as when
/// the database refuses at once. Before, the change-log read hung for the
/// pool's whole acquire timeout and the cache was trusted for 30 s, past
/// the documented revocation bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_database_goes_silent_stops_trusting_its_cache_after_the_offline_window() {
    let (pg, _) = common::databases().await.pop().expect("PostgreSQL");
    let fwd = silencer(postgres_target(&pg)).await;
    let stop = CancellationToken::new();
    let (app, owner, _, path) = warm_replica_behind(&fwd, &pg, "", &stop).await;
    let drops = app.cache.drops.load(std::sync::atomic::Ordering::Relaxed);
    fwd.silence();
    let started = Instant::now();
    while app.cache.drops.load(std::sync::atomic::Ordering::Relaxed) == drops {
        assert!(started.elapsed() < Duration::from_secs(10), "the cache is still trusted with the database silent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("cache dropped {:?} after the database went silent (offline window 1 s)", started.elapsed());
    // The token must now be read: storage unavailable, within the pool's
    // acquire timeout (not a hang, not a 401).
    let started = Instant::now();
    let r = owner.get(&path).await.expect("reach");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.to_string().contains("storage unavailable"), "{}", r.body);
    println!("a request needing the silent database answered 503 after {:?}", started.elapsed());
    stop.cancel();
}

/// A change-log read hangs mid-query on a connection that then goes silent
/// for good, while new connections are answered again (a failed-over
/// database host). Before, nothing ended that read until TCP gave up
/// (~15 min): the cache was dropped at every poll all that time, so every
/// request went to the database. Now a read past its deadline is left
/// behind (one at most) and another is started beside it, and an idle
/// connection that does not answer its ping is discarded within 1 s, not
/// waited on for the pool's whole acquire timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_change_log_read_hangs_mid_query_reads_it_again_beside_it() {
    use std::sync::atomic::Ordering::Relaxed;
    let (pg, _) = common::databases().await.pop().expect("PostgreSQL");
    let fwd = silencer(postgres_target(&pg)).await;
    let stop = CancellationToken::new();
    let (app, owner, tenant, _) = warm_replica_behind(&fwd, &pg, "", &stop).await;
    assert_eq!(setting(&app, "idle_in_transaction_session_timeout").await, "1min", "the control plane's default");
    // Hold the change log locked (directly, not through the forwarder)
    // until the replica's read waits on it: that read is then mid-query.
    let mut direct = sqlx::AnyConnection::connect(&pg).await.expect("connect");
    sqlx::query("BEGIN").execute(&mut direct).await.expect("begin");
    sqlx::query("LOCK TABLE cache_changes IN ACCESS EXCLUSIVE MODE").execute(&mut direct).await.expect("lock");
    // (Watched from another connection: one inside a transaction sees the
    // activity as of its first look.)
    let mut watch = sqlx::AnyConnection::connect(&pg).await.expect("connect");
    until_waiting_on(&mut watch, "FROM cache_changes").await;
    // Its answer will never arrive; new connections are answered.
    let drops = app.cache.drops.load(Relaxed);
    let left_behind = app.cache.stragglers.load(Relaxed);
    fwd.silence();
    sqlx::query("COMMIT").execute(&mut direct).await.expect("unlock");
    fwd.answer_new_connections();
    let healed = Instant::now();
    while app.cache.drops.load(Relaxed) == drops {
        assert!(healed.elapsed() < Duration::from_secs(10), "the cache is still trusted with its read hung");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while app.cache.change_log_age() > Duration::from_millis(500) {
        assert!(
            // Its deadline (2 s) plus a 1 s ping per silent idle connection;
            // waiting out the pool's acquire timeout per connection, as
            // sqlx's own unbounded ping does, takes over 20 s.
            healed.elapsed() < Duration::from_secs(15),
            "the change log is not read again beside the hung read ({} reads left behind)",
            app.cache.stragglers.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("change log read again {:?} after its read hung mid-query", healed.elapsed());
    assert_eq!(app.cache.stragglers.load(Relaxed) - left_behind, 1, "the hung read was left behind, once");
    // A request that needs the database (the cache was dropped meanwhile)
    // is served on a new connection, the silent idle ones discarded.
    let started = Instant::now();
    let r = owner.get(&format!("/v1/tenants/{tenant}/clusters")).await.expect("reach");
    assert_eq!(r.status, 200, "{}", r.body);
    println!("a request needing the database answered 200 after {:?}", started.elapsed());
    stop.cancel();
}

/// Waits until a query on `table` waits for its lock (seen from `watch`, a
/// connection outside any transaction).
async fn until_waiting_on(watch: &mut sqlx::AnyConnection, table: &str) {
    let started = Instant::now();
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1 AND pid <> pg_backend_pid()",
        )
        .bind(format!("%{table}%"))
        .fetch_one(&mut *watch)
        .await
        .expect("activity");
        if waiting > 0 {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no query waited on the lock of {table}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A kube request whose token must be read (not cached yet) has that read
/// hang mid-query: its connection goes silent for good. The request gets
/// 503 "storage unavailable; retry" once the read's deadline is over
/// (`cache::LOAD_TIMEOUT`, 15 s), not a hang until TCP gives up (~15 min;
/// kubectl sets no timeout of its own), and the next request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kube_request_whose_read_hangs_mid_query_answers_503_at_the_reads_deadline() {
    let (pg, _) = common::databases().await.pop().expect("PostgreSQL");
    let fwd = silencer(postgres_target(&pg)).await;
    let stop = CancellationToken::new();
    let (_app, owner, tenant, path) = warm_replica_behind(&fwd, &pg, "", &stop).await;
    let u = owner
        .post(&format!("/v1/tenants/{tenant}/users"), &json!({"email": "u@acme.example", "role": "tenant_user"}))
        .await
        .expect("reach");
    let uid = u.body["id"].as_str().expect("user id").to_string();
    let t =
        owner.post(&format!("/v1/tenants/{tenant}/tokens"), &json!({"name": "t", "userId": uid})).await.expect("reach");
    let fresh = owner.with_token(t.body["token"].as_str().expect("token"));
    // The users table held locked until the token's read waits on it.
    let mut direct = sqlx::AnyConnection::connect(&pg).await.expect("connect");
    let mut watch = sqlx::AnyConnection::connect(&pg).await.expect("connect");
    sqlx::query("BEGIN").execute(&mut direct).await.expect("begin");
    sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE").execute(&mut direct).await.expect("lock");
    let sent = Instant::now();
    let request = tokio::spawn({
        let (fresh, path) = (fresh.clone(), path.clone());
        async move { fresh.get(&path).await }
    });
    until_waiting_on(&mut watch, "FROM api_tokens").await;
    fwd.silence();
    sqlx::query("COMMIT").execute(&mut direct).await.expect("unlock");
    fwd.answer_new_connections();
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(60), request)
        .await
        .expect("the request hangs with its read")
        .expect("task")
        .expect("reach");
    println!("the request whose read hung answered {} after {:?}", r.status, started.elapsed());
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.to_string().contains("storage unavailable"), "{}", r.body);
    assert!(sent.elapsed() >= kubechat_control_plane::cache::LOAD_TIMEOUT, "answered before the read's deadline");
    // Retried, it is served (no relay holds the tunnel: 503 of another kind).
    let r = fresh.get(&path).await.expect("reach");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(!r.body.to_string().contains("storage unavailable"), "{}", r.body);
    stop.cancel();
}

/// The database's setting `name` as a transaction of `app`'s sees it.
async fn setting(app: &App, name: &str) -> String {
    let mut tx = app.db.read(&kubechat_control_plane::store::Scope::Platform).await.expect("read");
    let v = sqlx::query_scalar(&format!("SHOW {name}")).fetch_one(&mut *tx).await.expect("show");
    tx.commit().await.expect("commit");
    v
}

/// The writer's commit hangs mid-transaction: its connection goes silent
/// for good after its statement waited on a lock. Before, the writer
/// waited on that try for ever (until TCP gave up, ~15 min), every
/// tenant's records queued behind it and every must-audit request got 503.
/// Now the try is left behind after `writer::TRY_DEADLINE` (15 s) and
/// another started beside it; the server ends the orphaned transaction
/// (its row locks with it) after `idle_in_transaction_session_timeout`
/// (60 s by default, 3 s here), and the records are stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_commit_that_hangs_mid_transaction_is_tried_again_beside_it() {
    use kubechat_control_plane::audit::AuditEntry;
    use kubechat_control_plane::writer::Write;
    let (pg, _) = common::databases().await.pop().expect("PostgreSQL");
    let fwd = silencer(postgres_target(&pg)).await;
    let stop = CancellationToken::new();
    let quick = "?options=-c%20idle_in_transaction_session_timeout%3D3s";
    let (app, owner, tenant, _) = warm_replica_behind(&fwd, &pg, quick, &stop).await;
    assert_eq!(setting(&app, "idle_in_transaction_session_timeout").await, "3s", "the URL's own setting wins");
    let mut direct = sqlx::AnyConnection::connect(&pg).await.expect("connect");
    let mut watch = sqlx::AnyConnection::connect(&pg).await.expect("connect");
    sqlx::query("BEGIN").execute(&mut direct).await.expect("begin");
    sqlx::query("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE").execute(&mut direct).await.expect("lock");
    let id = uuid::Uuid::now_v7().to_string();
    let entry = AuditEntry {
        id: id.clone(),
        time_ms: 1,
        tenant_id: tenant.clone(),
        kind: "decision".into(),
        verb: "delete".into(),
        decision: "allow".into(),
        ..Default::default()
    };
    let commit = tokio::spawn({
        let (app, tenant) = (app.clone(), tenant.clone());
        async move {
            let write = Write::Audit { tenant, entry: Box::new(entry) };
            app.writer.commit(vec![write], Duration::from_secs(600)).await
        }
    });
    until_waiting_on(&mut watch, "audit_events").await;
    fwd.silence();
    sqlx::query("COMMIT").execute(&mut direct).await.expect("unlock");
    fwd.answer_new_connections();
    let started = Instant::now();
    let done = tokio::time::timeout(Duration::from_secs(120), commit).await.expect("the writer hangs with its try");
    done.expect("task").expect("committed");
    assert!(app.writer.stats().stragglers.load(std::sync::atomic::Ordering::Relaxed) >= 1, "the hung try left behind");
    println!("the record whose commit hung was committed {:?} later", started.elapsed());
    let mut tx = app.db.begin(&kubechat_control_plane::store::Scope::Platform).await.expect("begin");
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .expect("count");
    tx.commit().await.expect("commit");
    assert_eq!(stored, 1);
    let v = owner.get(&format!("/v1/tenants/{tenant}/audit/verify")).await.expect("reach");
    assert_eq!(v.body["intact"], true, "{}", v.body);
    stop.cancel();
}
