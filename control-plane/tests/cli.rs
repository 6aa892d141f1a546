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

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_shows_tunnels_across_relays_with_filters() {
    let (url, _dir) = common::databases().await.remove(0);
    let env = common::start(&url).await;
    let (ta, tid, cid, _) = common::tenant_and_cluster(&env).await;
    let r = ta.post(&format!("/v1/tenants/{tid}/tokens"), &serde_json::json!({"name": "cli"})).await.expect("reach");
    let tenant_token = r.body["token"].as_str().expect("token").to_string();
    for (relay, region, id) in [("eu-1", "eu-west", 1), ("us-1", "us-east", 2)] {
        let mut c = common::relay_client(&env, &common::relay_identity(&env, relay));
        let mut r = common::report(relay, "e1", 1, true, vec![common::tunnel(id, &tid, &cid)], 60_000);
        r.region = region.into();
        c.report(r).await.expect("report");
    }
    let ca = tempfile::tempdir().expect("tempdir");
    let ca_file = ca.path().join("ca.pem");
    std::fs::write(&ca_file, env.pki.relay_ca.cert_pem()).expect("write");
    let ca_arg = ca_file.to_str().expect("path");
    let run = |token: &str, args: &[&str]| {
        let mut all = vec!["--ca-file", ca_arg];
        all.extend_from_slice(args);
        kubechat(&env.base, token, &all)
    };
    let (ok, out, err) = run(common::ADMIN, &["-o", "json", "tunnels"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(2), "{out}");
    assert_eq!(v["items"][0]["rttUs"], 850);
    let (ok, out, _) = run(common::ADMIN, &["tunnels", "--region", "us-east"]);
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("TENANT") && lines[0].contains("RTT_US") && lines[0].contains("RECONNECTS"), "{out}");
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[1].contains("us-1") && lines[1].contains(&cid), "{out}");
    // A tenant admin sees their own tenant's tunnels, not everyone's.
    let (ok, _, err) = run(&tenant_token, &["tunnels"]);
    assert!(!ok && err.contains("403"), "{err}");
    let (ok, out, err) = run(&tenant_token, &["-o", "json", "tunnels", "--tenant", &tid, "--relay", "eu-1"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(1), "{out}");
}
