//! The control plane's API suite, run against SQLite and against a real
//! PostgreSQL (started by scripts/test.sh; its URL in
//! KUBECHAT_TEST_POSTGRES_URL). Every scenario runs on both backends.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use kubechat_control_plane::client::Client;
use kubechat_control_plane::store::{Backend, Scope, TENANT_TABLES};
use kubechat_control_plane::{App, Config, ControlPlane, Secret};
use serde_json::{Value, json};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

mod common;
use common::databases;

const ADMIN_TOKEN: &str = "kc_platformadmintokenfortests0000000000000";

struct Env {
    admin: Client,
    app: Arc<App>,
    base: String,
    shutdown: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(url: &str, tweak: impl FnOnce(&mut Config)) -> Env {
    let mut cfg = Config::new(url);
    cfg.platform_admin_token = Some(Secret(ADMIN_TOKEN.into()));
    tweak(&mut cfg);
    let cp = ControlPlane::bind(cfg).await.expect("control plane starts");
    let base = format!("http://{}", cp.addr());
    let app = cp.app();
    let shutdown = CancellationToken::new();
    tokio::spawn(cp.run(shutdown.clone()));
    Env { admin: Client::new(&base, Some(Secret(ADMIN_TOKEN.into()))), app, base, shutdown }
}

/// Onboards a tenant; returns (tenant id, admin client).
async fn onboard(env: &Env, slug: &str, plan: &str) -> (String, Client) {
    let (id, client, _) = onboard_with_token(env, slug, plan).await;
    (id, client)
}

/// Onboards a tenant; returns (tenant id, admin client, admin token).
async fn onboard_with_token(env: &Env, slug: &str, plan: &str) -> (String, Client, String) {
    let r = env.admin.post("/v1/tenants", &json!({"name": format!("{slug} inc"), "slug": slug, "plan": plan, "adminEmail": format!("admin@{slug}.example")})).await.expect("reach");
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.body["token"].as_str().expect("token").to_string();
    assert!(token.starts_with("kc_"));
    (r.body["tenant"]["id"].as_str().expect("id").to_string(), env.admin.with_token(&token), token)
}

fn code(r: &kubechat_control_plane::client::Reply) -> &str {
    r.body.pointer("/error/code").and_then(Value::as_str).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_and_every_endpoints_happy_path() {
    for (url, _dir) in databases().await {
        let env = start(&url, |_| {}).await;
        let (tid, admin) = onboard(&env, "acme", "team").await;
        let t = admin.get(&format!("/v1/tenants/{tid}")).await.expect("reach");
        assert_eq!(t.status, 200);
        assert_eq!(t.body["slug"], "acme");
        assert_eq!(t.body["subscription"]["plan"], "team");
        assert_eq!(t.body["subscription"]["limits"]["maxUsers"], 50);
        let r = admin
            .put(&format!("/v1/tenants/{tid}"), &json!({"name": "Acme Corp", "domain": "acme.example"}))
            .await
            .expect("reach");
        assert_eq!((r.status, r.body["name"].as_str()), (200, Some("Acme Corp")), "{}", r.body);
        let r = admin
            .put(&format!("/v1/tenants/{tid}/settings"), &json!({"sso": {"issuer": "https://idp.acme.example"}}))
            .await
            .expect("reach");
        assert_eq!(r.status, 200);
        assert_eq!(
            admin.get(&format!("/v1/tenants/{tid}/settings")).await.expect("reach").body["sso"]["issuer"],
            "https://idp.acme.example"
        );

        let r = admin
            .post(&format!("/v1/tenants/{tid}/users"), &json!({"email": "Bob@Acme.example", "role": "tenant_viewer"}))
            .await
            .expect("reach");
        assert_eq!(r.status, 201, "{}", r.body);
        let bob = r.body["id"].as_str().expect("id").to_string();
        assert_eq!(r.body["email"], "bob@acme.example");
        let r =
            admin.put(&format!("/v1/tenants/{tid}/users/{bob}"), &json!({"role": "tenant_user"})).await.expect("reach");
        assert_eq!(r.body["role"], "tenant_user");
        assert_eq!(
            admin.get(&format!("/v1/tenants/{tid}/users")).await.expect("reach").body["items"].as_array().map(Vec::len),
            Some(2)
        );

        let r = admin
            .post(&format!("/v1/tenants/{tid}/tokens"), &json!({"name": "bob-cli", "userId": bob, "expiresInDays": 30}))
            .await
            .expect("reach");
        assert_eq!(r.status, 201, "{}", r.body);
        let bob_client = admin.with_token(r.body["token"].as_str().expect("token"));
        assert_eq!(bob_client.get(&format!("/v1/tenants/{tid}/users/{bob}")).await.expect("reach").status, 200);
        // A user cannot manage the tenant.
        let r = bob_client
            .post(&format!("/v1/tenants/{tid}/users"), &json!({"email": "eve@acme.example", "role": "tenant_admin"}))
            .await
            .expect("reach");
        assert_eq!((r.status, code(&r)), (403, "role"));

        let r = admin.post(&format!("/v1/tenants/{tid}/clusters"), &json!({"name": "prod-eu", "labels": {"env": "prod"}, "policy": {"allowedNamespaces": ["web"], "readOnly": true}})).await.expect("reach");
        assert_eq!(r.status, 201, "{}", r.body);
        let cid = r.body["id"].as_str().expect("id").to_string();
        let r = admin
            .put(&format!("/v1/tenants/{tid}/clusters/{cid}"), &json!({"policy": {"deniedResources": ["secrets"]}}))
            .await
            .expect("reach");
        assert_eq!(r.body["policy"]["deniedResources"], json!(["secrets"]));
        // A policy naming what no request can carry is refused, made or changed.
        let r = admin
            .put(&format!("/v1/tenants/{tid}/clusters/{cid}"), &json!({"policy": {"allowedNamespaces": ["Web App"]}}))
            .await
            .expect("reach");
        assert_eq!((r.status, code(&r)), (400, "invalid_policy"), "{}", r.body);
        let bad = json!({"name": "prod-us", "policy": {"deniedResources": ["Secrets!"]}});
        let r = admin.post(&format!("/v1/tenants/{tid}/clusters"), &bad).await.expect("reach");
        assert_eq!((r.status, code(&r)), (400, "invalid_policy"), "{}", r.body);
        assert_eq!(
            bob_client.get(&format!("/v1/tenants/{tid}/clusters/{cid}")).await.expect("reach").body["name"],
            "prod-eu"
        );

        let u = admin.get(&format!("/v1/tenants/{tid}/usage")).await.expect("reach").body;
        assert_eq!(
            (u["users"].as_i64(), u["clusters"].as_i64(), u["activeTokens"].as_i64()),
            (Some(2), Some(1), Some(2)),
            "{u}"
        );

        assert_eq!(admin.delete(&format!("/v1/tenants/{tid}/clusters/{cid}")).await.expect("reach").status, 200);
        assert!(env.app.db.cluster_revoked(&cid).await.expect("db"));
        assert_eq!(admin.delete(&format!("/v1/tenants/{tid}/users/{bob}")).await.expect("reach").status, 200);
        assert_eq!(
            bob_client.get(&format!("/v1/tenants/{tid}")).await.expect("reach").status,
            401,
            "a deleted user's token dies"
        );
        let openapi = Client::new(&env.base, None).get("/v1/openapi.json").await.expect("reach");
        assert!(openapi.body["paths"]["/v1/tenants"].is_object());
        let list = env.admin.get("/v1/tenants").await.expect("reach");
        assert_eq!(list.body["items"].as_array().map(Vec::len), Some(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_limits_name_the_plan_and_the_limit() {
    for (url, _dir) in databases().await {
        let env = start(&url, |_| {}).await;
        let (tid, admin) = onboard(&env, "tiny", "free").await;
        for i in 0..2 {
            let r = admin
                .post(
                    &format!("/v1/tenants/{tid}/users"),
                    &json!({"email": format!("u{i}@tiny.example"), "role": "tenant_user"}),
                )
                .await
                .expect("reach");
            assert_eq!(r.status, 201);
        }
        let r = admin
            .post(&format!("/v1/tenants/{tid}/users"), &json!({"email": "u9@tiny.example", "role": "tenant_user"}))
            .await
            .expect("reach");
        assert_eq!((r.status, code(&r)), (403, "plan_limit"));
        let msg = r.body["error"]["message"].as_str().expect("message");
        assert!(msg.contains("free plan") && msg.contains("3 users") && msg.contains("maxUsers"), "{msg}");
        assert_eq!(
            admin.post(&format!("/v1/tenants/{tid}/clusters"), &json!({"name": "one"})).await.expect("reach").status,
            201
        );
        let r = admin.post(&format!("/v1/tenants/{tid}/clusters"), &json!({"name": "two"})).await.expect("reach");
        assert_eq!((r.status, code(&r)), (403, "plan_limit"));
        assert!(r.body["error"]["message"].as_str().expect("message").contains("maxClusters"));
        // Tenant admins cannot upgrade themselves; the platform can.
        let r = admin.put(&format!("/v1/tenants/{tid}"), &json!({"plan": "team"})).await.expect("reach");
        assert_eq!(r.status, 403);
        assert_eq!(
            env.admin.put(&format!("/v1/tenants/{tid}"), &json!({"plan": "team"})).await.expect("reach").status,
            200
        );
        assert_eq!(
            admin.post(&format!("/v1/tenants/{tid}/clusters"), &json!({"name": "two"})).await.expect("reach").status,
            201
        );
        // Same name twice is a conflict, not a crash.
        let r = admin.post(&format!("/v1/tenants/{tid}/clusters"), &json!({"name": "two"})).await.expect("reach");
        assert_eq!(r.status, 409, "{}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_tenants_are_refused_everywhere() {
    for (url, _dir) in databases().await {
        let env = start(&url, |_| {}).await;
        let (tid, admin) = onboard(&env, "late-payer", "team").await;
        assert_eq!(
            env.admin.put(&format!("/v1/tenants/{tid}"), &json!({"status": "suspended"})).await.expect("reach").status,
            200
        );
        for path in [format!("/v1/tenants/{tid}"), format!("/v1/tenants/{tid}/clusters"), "/v1/tenants".to_string()] {
            let r = admin.get(&path).await.expect("reach");
            assert_eq!((r.status, code(&r)), (403, "tenant_suspended"), "{path}");
            assert!(r.body["error"]["message"].as_str().expect("message").contains("late-payer is suspended"));
        }
        assert_eq!(env.admin.get(&format!("/v1/tenants/{tid}")).await.expect("reach").body["status"], "suspended");
        env.admin.put(&format!("/v1/tenants/{tid}"), &json!({"status": "active"})).await.expect("reach");
        assert_eq!(admin.get(&format!("/v1/tenants/{tid}")).await.expect("reach").status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_purges_every_row_and_revokes_clusters() {
    for (url, _dir) in databases().await {
        let env = start(&url, |_| {}).await;
        let (tid, admin) = onboard(&env, "leaving", "team").await;
        let (other, other_admin) = onboard(&env, "staying", "team").await;
        admin
            .post(&format!("/v1/tenants/{tid}/users"), &json!({"email": "x@leaving.example", "role": "tenant_user"}))
            .await
            .expect("reach");
        admin.post(&format!("/v1/tenants/{tid}/tokens"), &json!({"name": "ci"})).await.expect("reach");
        let cid = admin
            .post(&format!("/v1/tenants/{tid}/clusters"), &json!({"name": "prod"}))
            .await
            .expect("reach")
            .body["id"]
            .as_str()
            .expect("id")
            .to_string();
        other_admin.post(&format!("/v1/tenants/{other}/clusters"), &json!({"name": "prod"})).await.expect("reach");

        assert_eq!(
            admin.delete(&format!("/v1/tenants/{tid}")).await.expect("reach").status,
            403,
            "a tenant cannot offboard itself"
        );
        let r = env.admin.delete(&format!("/v1/tenants/{tid}")).await.expect("reach");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["revokedClusters"], json!([cid]));
        assert!(env.app.db.cluster_revoked(&cid).await.expect("db"));
        // Nothing of the tenant is left, in any table.
        let mut tx = env.app.db.begin(&Scope::Platform).await.expect("tx");
        for table in TENANT_TABLES {
            let column = if *table == "tenants" { "id" } else { "tenant_id" };
            let n: i64 = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table} WHERE {column} = $1"))
                .bind(tid.clone())
                .fetch_one(&mut *tx)
                .await
                .expect("count")
                .try_get("n")
                .expect("n");
            assert_eq!(n, 0, "{table} still holds rows of the purged tenant");
        }
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE email LIKE '%leaving.example'")
            .fetch_one(&mut *tx)
            .await
            .expect("count")
            .try_get("n")
            .expect("n");
        assert_eq!(n, 0);
        drop(tx);
        assert_eq!(admin.get(&format!("/v1/tenants/{tid}")).await.expect("reach").status, 401);
        assert_eq!(
            other_admin.get(&format!("/v1/tenants/{other}/clusters")).await.expect("reach").body["items"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_tenants_ids_look_exactly_like_missing_ones() {
    for (url, _dir) in databases().await {
        let env = start(&url, |_| {}).await;
        let (a, admin_a) = onboard(&env, "alpha", "team").await;
        let (b, admin_b) = onboard(&env, "beta", "team").await;
        let cb = admin_b
            .post(&format!("/v1/tenants/{b}/clusters"), &json!({"name": "prod"}))
            .await
            .expect("reach")
            .body["id"]
            .as_str()
            .expect("id")
            .to_string();
        let tokens_b = admin_b.get(&format!("/v1/tenants/{b}/tokens")).await.expect("reach").body;
        let kb = tokens_b["items"][0]["id"].as_str().expect("token id").to_string();
        for (theirs, missing) in [
            (format!("/v1/tenants/{b}"), "/v1/tenants/t000000000000".to_string()),
            (format!("/v1/tenants/{b}/clusters"), "/v1/tenants/t000000000000/clusters".to_string()),
            (format!("/v1/tenants/{b}/clusters/{cb}"), "/v1/tenants/t000000000000/clusters/c000000000000".to_string()),
            (format!("/v1/tenants/{b}/users"), "/v1/tenants/t000000000000/users".to_string()),
            (format!("/v1/tenants/{a}/clusters/{cb}"), format!("/v1/tenants/{a}/clusters/c000000000000")),
        ] {
            let r1 = admin_a.get(&theirs).await.expect("reach");
            let r2 = admin_a.get(&missing).await.expect("reach");
            assert_eq!(r1.status, 404, "{theirs}");
            assert_eq!((r1.status, code(&r1)), (r2.status, code(&r2)), "{theirs} vs {missing}");
        }
        let r = admin_a.delete(&format!("/v1/tenants/{b}/tokens/{kb}")).await.expect("reach");
        assert_eq!(r.status, 404);
        let r = admin_a.delete(&format!("/v1/tenants/{a}/tokens/{kb}")).await.expect("reach");
        assert_eq!(r.status, 404, "another tenant's token id under one's own tenant");
        assert_eq!(
            admin_b.get(&format!("/v1/tenants/{b}")).await.expect("reach").status,
            200,
            "beta's token still works"
        );
        let visible = admin_a.get("/v1/tenants").await.expect("reach").body;
        assert_eq!(visible["items"].as_array().map(Vec::len), Some(1));

        if env.app.db.backend() == Backend::Postgres {
            // A hand-written query without the tenant set sees no row of any tenant.
            let mut conn = env.app.db.pool().acquire().await.expect("conn");
            for table in ["tenants", "users", "api_tokens", "clusters"] {
                let n: i64 = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
                    .fetch_one(&mut *conn)
                    .await
                    .expect("count")
                    .try_get("n")
                    .expect("n");
                assert_eq!(n, 0, "{table}: rows visible without a tenant set");
            }
            // With tenant alpha set, only alpha's rows.
            let mut tx = env.app.db.begin(&Scope::Tenant(a.clone())).await.expect("tx");
            let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM clusters")
                .fetch_one(&mut *tx)
                .await
                .expect("count")
                .try_get("n")
                .expect("n");
            assert_eq!(n, 0, "alpha has no clusters; beta's must not show");
            let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM tenants")
                .fetch_one(&mut *tx)
                .await
                .expect("count")
                .try_get("n")
                .expect("n");
            assert_eq!(n, 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_revoked_tokens_are_refused_on_the_next_request() {
    for (url, _dir) in databases().await {
        let env = start(&url, |_| {}).await;
        let (tid, admin) = onboard(&env, "tok", "team").await;
        let r = admin
            .post(&format!("/v1/tenants/{tid}/tokens"), &json!({"name": "short", "expiresInSeconds": 1}))
            .await
            .expect("reach");
        let short = admin.with_token(r.body["token"].as_str().expect("token"));
        let r = admin.post(&format!("/v1/tenants/{tid}/tokens"), &json!({"name": "revoke-me"})).await.expect("reach");
        let (rid, revocable) = (
            r.body["apiToken"]["id"].as_str().expect("id").to_string(),
            admin.with_token(r.body["token"].as_str().expect("token")),
        );
        assert_eq!(revocable.get(&format!("/v1/tenants/{tid}")).await.expect("reach").status, 200);
        assert_eq!(admin.delete(&format!("/v1/tenants/{tid}/tokens/{rid}")).await.expect("reach").status, 200);
        let r = revocable.get(&format!("/v1/tenants/{tid}")).await.expect("reach");
        assert_eq!(r.status, 401);
        assert!(r.body["error"]["message"].as_str().expect("message").contains("revoked"));
        // The short token expires; wait for that condition (bounded).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let r = short.get(&format!("/v1/tenants/{tid}")).await.expect("reach");
            if r.status == 401 {
                assert!(r.body["error"]["message"].as_str().expect("message").contains("expired"));
                break;
            }
            assert_eq!(r.status, 200);
            assert!(tokio::time::Instant::now() < deadline, "token never expired");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let r = Client::new(&env.base, Some(Secret("kc_nope".into()))).get("/v1/tenants").await.expect("reach");
        assert_eq!((r.status, code(&r)), (401, "unauthenticated"));
        let r = Client::new(&env.base, None).get("/v1/tenants").await.expect("reach");
        assert_eq!(r.status, 401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after() {
    for (url, _dir) in databases().await {
        let env = start(&url, |c| c.per_token_rps = 2.0).await;
        let (tid, admin) = onboard(&env, "chatty", "team").await;
        let mut limited = None;
        for _ in 0..20 {
            let r = admin.get(&format!("/v1/tenants/{tid}")).await.expect("reach");
            if r.status == 429 {
                limited = Some(r);
                break;
            }
            assert_eq!(r.status, 200);
        }
        let r = limited.expect("the token was never rate limited");
        assert_eq!(code(&r), "rate_limited");
        assert!(r.retry_after.is_some_and(|s| s >= 1), "{r:?}");
        // Another token is not affected.
        assert_eq!(env.admin.get(&format!("/v1/tenants/{tid}")).await.expect("reach").status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_400_or_413_and_write_nothing() {
    for (url, _dir) in databases().await {
        let env = start(&url, |_| {}).await;
        let bad =
            env.admin.raw(Method::POST, "/v1/tenants", Bytes::from_static(b"{\"name\": \"x\", ")).await.expect("reach");
        assert_eq!((bad.status, code(&bad)), (400, "invalid_json"));
        let unknown = env
            .admin
            .post("/v1/tenants", &json!({"name": "x", "slug": "x", "adminEmail": "a@x.example", "isAdmin": true}))
            .await
            .expect("reach");
        assert_eq!((unknown.status, code(&unknown)), (400, "invalid_json"));
        assert!(unknown.body["error"]["message"].as_str().expect("message").contains("isAdmin"), "{}", unknown.body);
        let huge =
            format!("{{\"name\": \"{}\", \"slug\": \"x\", \"adminEmail\": \"a@x.example\"}}", "n".repeat(100_000));
        let big = env.admin.raw(Method::POST, "/v1/tenants", Bytes::from(huge)).await.expect("reach");
        assert_eq!((big.status, code(&big)), (413, "body_too_large"));
        let slug = env
            .admin
            .post("/v1/tenants", &json!({"name": "x", "slug": "Not A Slug", "adminEmail": "a@x.example"}))
            .await
            .expect("reach");
        assert_eq!((slug.status, code(&slug)), (400, "invalid_slug"));
        let email = env
            .admin
            .post("/v1/tenants", &json!({"name": "x", "slug": "x", "adminEmail": "nope"}))
            .await
            .expect("reach");
        assert_eq!((email.status, code(&email)), (400, "invalid_email"));
        assert_eq!(
            env.admin.get("/v1/tenants").await.expect("reach").body["items"].as_array().map(Vec::len),
            Some(0),
            "nothing written"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_control_plane_processes_on_one_postgres_see_each_others_writes() {
    let (url, _) = databases().await.into_iter().nth(1).expect("postgres");
    let one = start(&url, |_| {}).await;
    // The second replica is the real binary, in its own process.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut two = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubechat-control-plane"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--database-url", &url])
        .env("KUBECHAT_PLATFORM_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the control plane binary");
    let two_base = format!("http://127.0.0.1:{port}");
    let probe = Client::new(&two_base, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while probe.get("/healthz").await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the second replica never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (tid, admin_one, token) = onboard_with_token(&one, "shared", "team").await;
    let admin_two = Client::new(&two_base, None).with_token(&token);
    assert_eq!(admin_two.get(&format!("/v1/tenants/{tid}")).await.expect("reach").body["slug"], "shared");
    let c =
        admin_two.post(&format!("/v1/tenants/{tid}/clusters"), &json!({"name": "made-on-two"})).await.expect("reach");
    assert_eq!(c.status, 201, "{}", c.body);
    let listed = admin_one.get(&format!("/v1/tenants/{tid}/clusters")).await.expect("reach").body;
    assert_eq!(listed["items"][0]["name"], "made-on-two");
    // Suspension on one replica is in force on the other once it reads the
    // cache's change log (every 200 ms; ≤ 1 s documented). Its cache is warm.
    assert_eq!(admin_two.get(&format!("/v1/tenants/{tid}")).await.expect("reach").status, 200);
    assert_eq!(
        one.admin.put(&format!("/v1/tenants/{tid}"), &json!({"status": "suspended"})).await.expect("reach").status,
        200
    );
    assert_eq!(admin_one.get(&format!("/v1/tenants/{tid}")).await.expect("reach").status, 403, "at once where written");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while admin_two.get(&format!("/v1/tenants/{tid}")).await.expect("reach").status != 403 {
        assert!(tokio::time::Instant::now() < deadline, "the other replica never saw the suspension");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = two.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_tenant_access_grants_a_role_until_revoked_or_expired() {
    for (url, _dir) in databases().await {
        let env = start(&url, |_| {}).await;
        let (a, admin_a) = onboard(&env, "host", "team").await;
        let (_b, admin_b) = onboard(&env, "consultants", "team").await;
        let ca = admin_a
            .post(&format!("/v1/tenants/{a}/clusters"), &json!({"name": "prod"}))
            .await
            .expect("reach")
            .body["id"]
            .as_str()
            .expect("id")
            .to_string();
        // Before any grant: the other tenant is invisible.
        assert_eq!(admin_b.get(&format!("/v1/tenants/{a}/clusters")).await.expect("reach").status, 404);
        let g = admin_a
            .post(&format!("/v1/tenants/{a}/cross-tenant-access"), &json!({"granteeEmail": "admin@consultants.example", "granteeTenant": "consultants", "role": "tenant_viewer"}))
            .await
            .expect("reach");
        assert_eq!(g.status, 201, "{}", g.body);
        let gid = g.body["id"].as_str().expect("id").to_string();
        // The grantee reads with the granted role, and no more.
        let r = admin_b.get(&format!("/v1/tenants/{a}/clusters/{ca}")).await.expect("reach");
        assert_eq!((r.status, r.body["name"].as_str()), (200, Some("prod")), "{}", r.body);
        let r = admin_b.post(&format!("/v1/tenants/{a}/clusters"), &json!({"name": "sneaky"})).await.expect("reach");
        assert_eq!((r.status, code(&r)), (403, "role"));
        let r = admin_b.post(&format!("/v1/tenants/{a}/cross-tenant-access"), &json!({"granteeEmail": "x@consultants.example", "granteeTenant": "consultants", "role": "tenant_admin"})).await.expect("reach");
        assert_eq!(r.status, 403, "a grantee cannot grant further");
        // Revoked: invisible again.
        assert_eq!(
            admin_a.delete(&format!("/v1/tenants/{a}/cross-tenant-access/{gid}")).await.expect("reach").status,
            200
        );
        assert_eq!(admin_b.get(&format!("/v1/tenants/{a}/clusters")).await.expect("reach").status, 404);
        // An expired grant gives nothing.
        admin_a
            .post(&format!("/v1/tenants/{a}/cross-tenant-access"), &json!({"granteeEmail": "admin@consultants.example", "granteeTenant": "consultants", "role": "tenant_admin", "expiresInSeconds": 1}))
            .await
            .expect("reach");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while admin_b.get(&format!("/v1/tenants/{a}")).await.expect("reach").status == 200 {
            assert!(tokio::time::Instant::now() < deadline, "grant never expired");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(admin_b.get(&format!("/v1/tenants/{a}")).await.expect("reach").status, 404);
        // Offboarding the grantee's tenant removes grants naming its people.
        admin_a
            .post(&format!("/v1/tenants/{a}/cross-tenant-access"), &json!({"granteeEmail": "admin@consultants.example", "granteeTenant": "consultants", "role": "tenant_user"}))
            .await
            .expect("reach");
        let b_id =
            admin_b.get("/v1/tenants").await.expect("reach").body["items"][0]["id"].as_str().expect("id").to_string();
        assert_eq!(env.admin.delete(&format!("/v1/tenants/{b_id}")).await.expect("reach").status, 200);
        let left = admin_a.get(&format!("/v1/tenants/{a}/cross-tenant-access")).await.expect("reach").body;
        assert_eq!(
            left["items"].as_array().map(Vec::len),
            Some(0),
            "grants naming the purged tenant's people remain: {left}"
        );
    }
}
