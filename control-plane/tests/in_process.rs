//! The control plane's HTTP service driven in-process (no socket):
//! `tower::ServiceExt::oneshot` on the router. The generated OpenAPI
//! document lists every route and every listed route is served; a storage
//! failure is a 503, never a 401.

use std::sync::Arc;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use kubechat_control_plane::{App, Config, ControlPlane, Secret};
use serde_json::{Value, json};
use tower::ServiceExt;

const ADMIN: &str = "kc_inprocessplatformadmintoken000000000000";

async fn app() -> (Arc<App>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::new(&format!("sqlite://{}?mode=rwc", dir.path().join("cp.db").display()));
    cfg.platform_admin_token = Some(Secret(ADMIN.into()));
    let cp = ControlPlane::bind(cfg).await.expect("control plane");
    (cp.app(), dir)
}

async fn call(
    app: &Arc<App>,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let resp = kubechat_control_plane::http::router(app.clone())
        .oneshot(req.body(body).expect("request"))
        .await
        .expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())))
}

#[tokio::test]
async fn handlers_answer_in_process() {
    let (app, _dir) = app().await;
    let (s, v) = call(
        &app,
        Method::POST,
        "/v1/tenants",
        Some(ADMIN),
        Some(json!({"name": "Acme", "slug": "acme", "adminEmail": "a@acme.example"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let tenant = v["tenant"]["id"].as_str().expect("id").to_string();
    let token = v["token"].as_str().expect("token").to_string();
    let (s, v) = call(&app, Method::GET, &format!("/v1/tenants/{tenant}"), Some(&token), None).await;
    assert_eq!((s, v["slug"].as_str()), (StatusCode::OK, Some("acme")));
    // No token, a bad body, an unknown route, a wrong method: each its own answer.
    let (s, v) = call(&app, Method::GET, "/v1/tenants", None, None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthenticated")));
    let (s, v) = call(
        &app,
        Method::POST,
        &format!("/v1/tenants/{tenant}/users"),
        Some(&token),
        Some(json!({"email": "x@acme.example", "role": "tenant_user", "bogus": 1})),
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_json")), "{v}");
    let (s, v) = call(&app, Method::GET, "/v1/nothing-here", Some(&token), None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("no_route")));
    let (s, v) = call(&app, Method::PATCH, "/v1/tenants", Some(&token), None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")));
    // Another tenant's id is the same 404 as a missing one.
    let (s1, v1) = call(&app, Method::GET, "/v1/tenants/t000000000000", Some(&token), None).await;
    assert_eq!(s1, StatusCode::NOT_FOUND, "{v1}");
    // The kube path answers Status, here for a cluster that does not exist.
    let (s, v) = call(&app, Method::GET, "/k8s/clusters/c000000000000/api/v1/pods", Some(&token), None).await;
    assert_eq!(
        (s, v["kind"].as_str(), v["reason"].as_str()),
        (StatusCode::NOT_FOUND, Some("Status"), Some("NotFound"))
    );
    let (s, v) = call(&app, Method::GET, "/k8s/clusters/c000000000000/api/v1/pods", None, None).await;
    assert_eq!((s, v["kind"].as_str()), (StatusCode::UNAUTHORIZED, Some("Status")));
}

#[tokio::test]
async fn a_storage_failure_is_a_503_never_a_401() {
    let (app, _dir) = app().await;
    app.db.pool().close().await;
    let (s, v) = call(&app, Method::GET, "/v1/tenants", Some(ADMIN), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["message"], "storage unavailable; retry");
    let (s, v) = call(&app, Method::GET, "/k8s/clusters/c1/api/v1/pods", Some(ADMIN), None).await;
    assert_eq!((s, v["kind"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("Status")), "{v}");
}

/// Path parameters filled with a value no object has.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { if s == "{month}" { "2026-11" } else { "x0" } } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_every_listed_route_is_served() {
    let (app, _dir) = app().await;
    let doc = serde_json::to_value(kubechat_control_plane::http::openapi()).expect("json");
    let (s, served) = call(&app, Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(served, doc, "the served document is the generated one");
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            operations += 1;
            assert!(
                op["summary"].is_string() || op["description"].is_string() || op["responses"].is_object(),
                "{method} {path}"
            );
            let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
            let body = matches!(m, Method::POST | Method::PUT).then(|| json!({}));
            let (_, v) = call(&app, m, &concrete(path), Some(ADMIN), body).await;
            let code = v["error"]["code"].as_str().unwrap_or_default();
            assert!(
                !matches!(code, "no_route" | "method_not_allowed"),
                "{method} {path} is listed but not served: {v}"
            );
        }
    }
    // Every route is declared once, with its operation: the resource
    // routers add routes only through utoipa's `routes!`.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut declared = 0;
    for entry in std::fs::read_dir(&dir).expect("src/http") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        declared += text.matches("#[utoipa::path(").count();
        if path.file_name().is_some_and(|n| n != "mod.rs") {
            assert!(!text.contains(".route("), "{} adds a route the OpenAPI document does not see", path.display());
        }
    }
    assert_eq!(operations, declared, "every declared operation is in the document");
    assert!(operations >= 40, "only {operations} operations");
}

/// A NUL character anywhere in a JSON body is a 400 naming where it is,
/// the same on either backend (PostgreSQL cannot store one: it would have
/// been a 503 "storage unavailable" there and stored on SQLite); a body
/// that only spells a backslash before `u0000` is fine.
#[tokio::test]
async fn a_nul_character_in_a_json_body_is_refused_where_it_is() {
    let (app, _dir) = app().await;
    let (s, v) = call(
        &app,
        Method::POST,
        "/v1/tenants",
        Some(ADMIN),
        Some(json!({"name": "Acme\u{0}", "slug": "acme", "adminEmail": "a@acme.example"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v.to_string().contains("NUL character") && v.to_string().contains("/name"), "{v}");
    let (s, v) = call(
        &app,
        Method::POST,
        "/v1/tenants",
        Some(ADMIN),
        Some(json!({"name": "Acme \\u0000", "slug": "acme", "adminEmail": "a@acme.example"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["tenant"]["name"], "Acme \\u0000");
}

/// An audit export the client walks away from mid-stream is metered for
/// what it was handed (before, only an export read to its end was: leaving
/// one page early exported all but the last page for free).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_export_cut_short_is_metered_for_what_was_sent() {
    use kubechat_control_plane::audit::AuditEntry;
    use kubechat_control_plane::writer::Write;
    let (app, _dir) = app().await;
    let (s, v) = call(
        &app,
        Method::POST,
        "/v1/tenants",
        Some(ADMIN),
        Some(json!({"name": "Acme", "slug": "acme", "plan": "team", "adminEmail": "a@acme.example"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let tenant = v["tenant"]["id"].as_str().expect("id").to_string();
    let token = v["token"].as_str().expect("token").to_string();
    // More pages (1,000 events each) than the stream buffers (8).
    let writes: Vec<Write> = (0..12_000)
        .map(|i| Write::Audit {
            tenant: tenant.clone(),
            entry: Box::new(AuditEntry {
                id: format!("e{i:06}"),
                time_ms: i,
                tenant_id: tenant.clone(),
                kind: "decision".into(),
                verb: "get".into(),
                decision: "allow".into(),
                ..Default::default()
            }),
        })
        .collect();
    app.writer.commit(writes, std::time::Duration::from_secs(120)).await.expect("stored");
    let req = Request::get(format!("/v1/tenants/{tenant}/audit/export"))
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request");
    let resp = kubechat_control_plane::http::router(app.clone()).oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = body.frame().await.expect("a frame").expect("data").into_data().expect("data");
    assert_eq!(first.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count(), 1000, "a page");
    drop(body);
    // The export's usage, metered through the writer.
    let metered = || async {
        let mut tx = app.db.begin(&kubechat_control_plane::store::Scope::Platform).await.expect("begin");
        let q: Option<f64> = sqlx::query_scalar(
            "SELECT SUM(quantity) FROM usage_events WHERE usage_type = 'audit_export' AND tenant_id = $1",
        )
        .bind(tenant.clone())
        .fetch_one(&mut *tx)
        .await
        .expect("sum");
        tx.commit().await.expect("commit");
        q
    };
    let started = std::time::Instant::now();
    let exported = loop {
        if let Some(q) = metered().await {
            break q;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "the cut export was never metered");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!((1000.0..12_000.0).contains(&exported), "metered {exported} of the 12,000 events");
}
