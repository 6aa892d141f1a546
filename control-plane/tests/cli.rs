//! The `kubechat` CLI against a running control plane (SQLite).

use std::process::Command;

use kubechat_control_plane::{Config, ControlPlane, Secret};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "kc_clitestplatformadmintoken000000000000000";

fn kubechat(server: &str, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kubechat"))
        .args(["--server", server, "--token", token])
        .args(args)
        .env_remove("KUBECHAT_TOKEN")
        .output()
        .expect("run kubechat");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_covers_tenants_clusters_and_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::new(&format!("sqlite://{}?mode=rwc", dir.path().join("cp.db").display()));
    cfg.platform_admin_token = Some(Secret(ADMIN.into()));
    let cp = ControlPlane::bind(cfg).await.expect("start");
    let server = format!("http://{}", cp.addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(cp.run(shutdown.clone()));

    let s = server.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        kubechat(
            &s,
            ADMIN,
            &[
                "-o",
                "json",
                "tenants",
                "create",
                "--name",
                "Acme",
                "--slug",
                "acme",
                "--admin-email",
                "a@acme.example",
                "--plan",
                "team",
            ],
        )
    })
    .await
    .expect("join");
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).expect("json");
    let tid = created["tenant"]["id"].as_str().expect("id").to_string();
    let token = created["token"].as_str().expect("token").to_string();

    let (s, t, tid2) = (server.clone(), token.clone(), tid.clone());
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        kubechat(&s, &t, &["clusters", "add", "--tenant", &tid2, "--name", "prod-eu"])
    })
    .await
    .expect("join");
    assert!(ok, "{err}");
    assert!(
        out.lines().next().is_some_and(|h| h.starts_with("ID") && h.contains("NAME") && h.contains("REGION")),
        "{out}"
    );
    assert!(out.contains("prod-eu"), "{out}");

    let s = server.clone();
    let (ok, out, _) =
        tokio::task::spawn_blocking(move || kubechat(&s, ADMIN, &["tenants", "list"])).await.expect("join");
    assert!(ok);
    assert!(out.lines().nth(1).is_some_and(|l| l.contains("acme") && l.contains("team")), "{out}");

    let (s, t, tid2) = (server.clone(), token.clone(), tid.clone());
    let (ok, out, _) =
        tokio::task::spawn_blocking(move || kubechat(&s, &t, &["tokens", "create", "--tenant", &tid2, "--name", "ci"]))
            .await
            .expect("join");
    assert!(ok);
    assert!(out.contains("token (shown once): kc_"), "{out}");

    // Errors are printed with the API's code and message, and a failing exit.
    let (s, t) = (server.clone(), token.clone());
    let (ok, _, err) = tokio::task::spawn_blocking(move || kubechat(&s, &t, &["tenants", "get", "t000000000000"]))
        .await
        .expect("join");
    assert!(!ok);
    assert!(err.contains("not_found (HTTP 404): tenant t000000000000 not found"), "{err}");
    shutdown.cancel();
}
