//! Audit and usage events from a relay's side (gRPC over mutual TLS), and
//! the tamper-evident chain, on SQLite and PostgreSQL.

mod common;

use common::*;
use kubechat_control_plane::store::Scope;
use kubechat_protocol::events::events_client::EventsClient;
use kubechat_protocol::events::{AuditBody, Event, EventBatch, UsageBody, UsageType, event};
use kubechat_transport::tls;
use serde_json::Value;
use sqlx::Row;

type EventsGrpc = EventsClient<
    hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        tonic::body::Body,
    >,
>;

fn events_client(env: &Env, relay: &str) -> EventsGrpc {
    let roots = tls::parse_ca_pem(env.pki.relay_ca.cert_pem()).expect("ca");
    let cfg = tls::internal_client_config(&relay_identity(env, relay), &roots, &[]).expect("tls");
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(cfg).https_only().enable_http2().build();
    let http =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).http2_only(true).build(https);
    EventsClient::with_origin(http, format!("https://{}", env.internal).parse().expect("uri"))
}

fn audit(tenant: &str, cluster: &str, relay: &str, user: &str, verb: &str) -> Event {
    Event {
        id: uuid::Uuid::now_v7().to_string(),
        time_ms: 1_700_000_000_000,
        tenant: tenant.into(),
        cluster: cluster.into(),
        relay: relay.into(),
        request_id: uuid::Uuid::now_v7().to_string(),
        body: Some(event::Body::Audit(AuditBody {
            kind: "request".into(),
            user: user.into(),
            verb: verb.into(),
            resource: "pods".into(),
            namespace: "web".into(),
            method: "GET".into(),
            path: "/api/v1/namespaces/web/pods".into(),
            status: 200,
            decision: "allow".into(),
            ..Default::default()
        })),
    }
}

fn usage(tenant: &str, relay: &str, kind: UsageType) -> Event {
    Event {
        id: uuid::Uuid::now_v7().to_string(),
        time_ms: 1_700_000_000_000,
        tenant: tenant.into(),
        cluster: "c1".into(),
        relay: relay.into(),
        request_id: String::new(),
        body: Some(event::Body::Usage(UsageBody { r#type: kind as i32, quantity: 1.0 })),
    }
}

/// Runs `sql` as the platform (row-level security lets a bare connection
/// see nothing on PostgreSQL): how a database administrator would tamper.
async fn platform_sql(env: &Env, sql: &str) -> Vec<sqlx::any::AnyRow> {
    let mut tx = env.app.db.begin(&Scope::Platform).await.expect("begin");
    let rows = sqlx::query(sql).fetch_all(&mut *tx).await.expect("sql");
    tx.commit().await.expect("commit");
    rows
}

async fn count(env: &Env, sql: &str) -> i64 {
    platform_sql(env, sql).await[0].try_get("n").expect("n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_duplicated_events_lose_none_of_the_valid_ones() {
    for (url, _dir) in databases().await {
        let env = start(&url).await;
        let (_, tid, cid, _) = tenant_and_cluster(&env).await;
        let mut relay = events_client(&env, "eu-1");
        let good = audit(&tid, &cid, "eu-1", "kubechat:user:a@acme.example", "list");
        let good2 = usage(&tid, "eu-1", UsageType::ApiRequest);
        let mut bad_id = audit(&tid, &cid, "eu-1", "u", "get");
        bad_id.id = "not-a-uuid".into();
        let other_relay = audit(&tid, &cid, "us-1", "u", "get");
        let no_tenant = audit("t-does-not-exist", &cid, "eu-1", "u", "get");
        let mut no_body = audit(&tid, &cid, "eu-1", "u", "get");
        no_body.body = None;
        let mut bad_decision = audit(&tid, &cid, "eu-1", "u", "get");
        if let Some(event::Body::Audit(a)) = &mut bad_decision.body {
            a.decision = "maybe".into();
        }
        let unknown_usage = usage(&tid, "eu-1", UsageType::Unspecified);
        let batch = vec![
            good.clone(),
            bad_id.clone(),
            good.clone(), // duplicated within the batch
            other_relay.clone(),
            no_tenant.clone(),
            no_body.clone(),
            bad_decision.clone(),
            unknown_usage.clone(),
            good2.clone(),
        ];
        let ack = relay.publish(EventBatch { events: batch }).await.expect("publish").into_inner();
        let rejected: Vec<&str> = ack.rejected.iter().map(|r| r.id.as_str()).collect();
        for e in [&bad_id, &other_relay, &no_tenant, &no_body, &bad_decision, &unknown_usage] {
            assert!(rejected.contains(&e.id.as_str()), "{} not rejected: {ack:?}", e.id);
        }
        assert!(ack.rejected.iter().any(|r| r.reason.contains("UUID")), "{ack:?}");
        assert!(ack.rejected.iter().any(|r| r.reason.contains("sent by")), "{ack:?}");
        assert!(ack.accepted.contains(&good.id) && ack.accepted.contains(&good2.id), "{ack:?}");
        // Resent (a lost acknowledgement): accepted again, stored once.
        let again = relay.publish(EventBatch { events: vec![good.clone(), good2.clone()] }).await.expect("publish");
        assert_eq!(again.into_inner().accepted.len(), 2);
        assert_eq!(count(&env, &format!("SELECT COUNT(*) AS n FROM audit_events WHERE tenant_id = '{tid}'")).await, 1);
        assert_eq!(count(&env, &format!("SELECT COUNT(*) AS n FROM usage_events WHERE id = '{}'", good2.id)).await, 1);
        // An oversized batch is refused whole, with a reason.
        let huge: Vec<Event> = (0..5001).map(|_| audit(&tid, &cid, "eu-1", "u", "get")).collect();
        let err = relay.publish(EventBatch { events: huge }).await.expect_err("too many");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
}

async fn verify(env: &Env, tenant: &str) -> Value {
    let r = env.admin.get(&format!("/v1/tenants/{tenant}/audit/verify")).await.expect("reach");
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_deleting_or_reordering_a_stored_row_is_named_by_verify() {
    for (url, _dir) in databases().await {
        let env = start(&url).await;
        let (ta, tid, cid, _) = tenant_and_cluster(&env).await;
        let mut relay = events_client(&env, "eu-1");
        let events: Vec<Event> =
            (0..6).map(|i| audit(&tid, &cid, "eu-1", &format!("kubechat:user:u{i}@acme.example"), "get")).collect();
        relay.publish(EventBatch { events }).await.expect("publish");
        let v = verify(&env, &tid).await;
        assert_eq!(v["intact"], true, "{v}");
        assert_eq!(v["events"], 6);
        let env = &env;
        let exec = |sql: String| async move { platform_sql(env, &sql).await };

        // Edited: the content of event 3 no longer matches its hash.
        exec(format!("UPDATE audit_events SET user_name = 'kubechat:user:mallory@evil.example' WHERE tenant_id = '{tid}' AND seq = 3")).await;
        let v = verify(env, &tid).await;
        assert_eq!(v["intact"], false);
        assert_eq!(v["firstBreak"]["position"], 3, "{v}");
        assert!(v["firstBreak"]["problem"].as_str().expect("problem").contains("edited"), "{v}");
        exec(format!(
            "UPDATE audit_events SET user_name = 'kubechat:user:u2@acme.example' WHERE tenant_id = '{tid}' AND seq = 3"
        ))
        .await;
        assert_eq!(verify(env, &tid).await["intact"], true);

        // Reordered: events 4 and 5 swap places.
        exec(format!("UPDATE audit_events SET seq = -4 WHERE tenant_id = '{tid}' AND seq = 4")).await;
        exec(format!("UPDATE audit_events SET seq = 4 WHERE tenant_id = '{tid}' AND seq = 5")).await;
        exec(format!("UPDATE audit_events SET seq = 5 WHERE tenant_id = '{tid}' AND seq = -4")).await;
        let v = verify(env, &tid).await;
        assert_eq!(v["firstBreak"]["position"], 4, "{v}");
        assert!(v["firstBreak"]["problem"].as_str().expect("problem").contains("link"), "{v}");
        exec(format!("UPDATE audit_events SET seq = -4 WHERE tenant_id = '{tid}' AND seq = 4")).await;
        exec(format!("UPDATE audit_events SET seq = 4 WHERE tenant_id = '{tid}' AND seq = 5")).await;
        exec(format!("UPDATE audit_events SET seq = 5 WHERE tenant_id = '{tid}' AND seq = -4")).await;
        assert_eq!(verify(env, &tid).await["intact"], true);

        // Deleted: event 2 is gone.
        exec(format!("DELETE FROM audit_events WHERE tenant_id = '{tid}' AND seq = 2")).await;
        let v = verify(env, &tid).await;
        assert_eq!(v["firstBreak"]["position"], 2, "{v}");
        assert!(v["firstBreak"]["problem"].as_str().expect("problem").contains("missing"), "{v}");

        // The last event deleted (in another tenant's intact log first).
        let (_, tid2, cid2) = {
            let t = env
                .admin
                .post(
                    "/v1/tenants",
                    &serde_json::json!({"name": "B", "slug": "bee", "plan": "team", "adminEmail": "b@bee.example"}),
                )
                .await
                .expect("reach");
            let tid2 = t.body["tenant"]["id"].as_str().expect("id").to_string();
            (t, tid2, "c2".to_string())
        };
        let events: Vec<Event> = (0..3).map(|_| audit(&tid2, &cid2, "eu-1", "u", "get")).collect();
        relay.publish(EventBatch { events }).await.expect("publish");
        assert_eq!(verify(env, &tid2).await["intact"], true);
        exec(format!("DELETE FROM audit_events WHERE tenant_id = '{tid2}' AND seq = 3")).await;
        let v = verify(env, &tid2).await;
        assert_eq!(v["firstBreak"]["position"], 3, "{v}");
        assert!(v["firstBreak"]["problem"].as_str().expect("problem").contains("end"), "{v}");

        // Filters and pages of the listing; a tenant user may not read it.
        let page = ta.get(&format!("/v1/tenants/{tid}/audit?limit=2")).await.expect("reach");
        assert_eq!(page.status, 200, "{}", page.body);
        assert_eq!(page.body["items"].as_array().map(Vec::len), Some(2));
        let next = page.body["next"].as_i64().expect("a next page");
        let rest = ta.get(&format!("/v1/tenants/{tid}/audit?after={next}&limit=100")).await.expect("reach");
        assert_eq!(rest.body["items"].as_array().map(Vec::len), Some(3), "{}", rest.body);
        // Newest first: `before=max`, then the page's `next`.
        let newest = ta.get(&format!("/v1/tenants/{tid}/audit?before=max&limit=2")).await.expect("reach");
        let seqs = |v: &serde_json::Value| -> Vec<i64> {
            v["items"].as_array().map(|a| a.iter().filter_map(|e| e["seq"].as_i64()).collect()).unwrap_or_default()
        };
        let top = seqs(&newest.body);
        assert!(top.len() == 2 && top[0] > top[1], "{}", newest.body);
        let below = newest.body["next"].as_i64().expect("an older page");
        let older = ta.get(&format!("/v1/tenants/{tid}/audit?before={below}&limit=100")).await.expect("reach");
        let down = seqs(&older.body);
        assert_eq!(down.len(), 3, "{}", older.body);
        assert!(down[0] < top[1] && down.windows(2).all(|p| p[0] > p[1]), "{down:?}");
        let bad = ta.get(&format!("/v1/tenants/{tid}/audit?before=soon")).await.expect("reach");
        assert_eq!(bad.status, 400);
        let one = ta.get(&format!("/v1/tenants/{tid}/audit?user=kubechat:user:u5@acme.example")).await.expect("reach");
        assert_eq!(one.body["items"].as_array().map(Vec::len), Some(1), "{}", one.body);
        let bad = ta.get(&format!("/v1/tenants/{tid}/audit?since=yesterday")).await.expect("reach");
        assert_eq!(bad.status, 400);
        // Another tenant's audit is a 404 like any of its ids.
        let other = ta.get(&format!("/v1/tenants/{tid2}/audit")).await.expect("reach");
        assert_eq!(other.status, 404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_old_events_behind_a_signed_checkpoint_that_verify_checks() {
    for (url, _dir) in databases().await {
        let env = start(&url).await;
        let (ta, tid, cid, _) = tenant_and_cluster(&env).await;
        let mut relay = events_client(&env, "eu-1");
        let now = kubechat_control_plane::directory::now_ms();
        // The team plan keeps 90 days: four events are older, three are not.
        let mut events = Vec::new();
        for (i, age_days) in [200i64, 150, 120, 95, 10, 1, 0].iter().enumerate() {
            let mut e = audit(&tid, &cid, "eu-1", &format!("kubechat:user:u{i}@acme.example"), "get");
            e.time_ms = now - age_days * 86_400_000;
            events.push(e);
        }
        relay.publish(EventBatch { events }).await.expect("publish");
        kubechat_control_plane::audit::apply_retention(&env.app).await.expect("retention");
        let page = ta.get(&format!("/v1/tenants/{tid}/audit")).await.expect("reach");
        let seqs: Vec<i64> =
            page.body["items"].as_array().expect("items").iter().filter_map(|e| e["seq"].as_i64()).collect();
        assert_eq!(seqs, vec![5, 6, 7], "{}", page.body);
        let v = verify(&env, &tid).await;
        assert_eq!(v["intact"], true, "{v}");
        assert_eq!(v["events"], 3);
        // New events keep chaining after the pruned start.
        relay.publish(EventBatch { events: vec![audit(&tid, &cid, "eu-1", "u", "get")] }).await.expect("publish");
        assert_eq!(verify(&env, &tid).await["intact"], true);
        // A forged checkpoint (hash rewritten without the key) is named.
        platform_sql(&env, &format!("UPDATE audit_checkpoints SET hash = 'forged' WHERE tenant_id = '{tid}'")).await;
        let v = verify(&env, &tid).await;
        assert_eq!(v["intact"], false);
        assert_eq!(v["firstBreak"]["position"], 4, "{v}");
        assert!(v["firstBreak"]["problem"].as_str().expect("problem").contains("not signed"), "{v}");
    }
}

/// A batch travels to the database as one JSON parameter: every field of
/// every event must come back exactly as it went in (quotes, backslashes,
/// control characters, non-ASCII, integer extremes, marks), across the
/// insert's chunk boundary, with duplicates skipped and the chain intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_of_a_stored_audit_event_comes_back_exactly() {
    use kubechat_control_plane::audit::{self, AuditEntry, Filter};
    for (url, _dir) in databases().await {
        let env = start(&url).await;
        let (_, tid, cid, _) = tenant_and_cluster(&env).await;
        let awkward = "quote \" backslash \\ tab \t newline \n nul-free ünïcødé 日本 🚀 '; DROP TABLE x; --";
        let entries: Vec<AuditEntry> = (0..300i64)
            .map(|i| AuditEntry {
                id: uuid::Uuid::new_v4().to_string(),
                time_ms: 1_700_000_000_000 + i,
                cluster_id: cid.clone(),
                relay_id: "eu-1".into(),
                request_id: format!("req-{i}"),
                kind: "decision".into(),
                user: format!("kubechat:user:{i}@acme.example"),
                groups: vec!["kubechat:tenant:x".into(), awkward.into(), String::new()],
                verb: "list".into(),
                api_group: String::new(),
                resource: "pods".into(),
                namespace: "web".into(),
                name: awkward.into(),
                subresource: String::new(),
                method: "GET".into(),
                path: format!("/api/v1/namespaces/web/pods?labelSelector=a%3Db&i={i}"),
                status: [0, 200, 403, 599][i as usize % 4],
                bytes_in: i64::MAX - i,
                bytes_out: if i % 2 == 0 { 0 } else { 1 << 40 },
                duration_ms: i,
                decision: "allow".into(),
                reason: awkward.into(),
                client_address: "[::1]:5".into(),
                kubectl_command: "kubectl get pods".into(),
                kubectl_session: format!("s{i}"),
                truncated: if i % 3 == 0 { [("path".to_string(), 9000u64)].into() } else { Default::default() },
                ..Default::default()
            })
            .collect();
        let mut batch = entries.clone();
        batch.insert(10, entries[3].clone()); // a repeat within the batch
        assert_eq!(audit::append(&env.app.db, &tid, batch).await.expect("append"), 300);
        // A repeat of a stored one is skipped, a new one follows it.
        let mut again = vec![entries[299].clone()];
        again.push(AuditEntry { id: uuid::Uuid::new_v4().to_string(), ..entries[0].clone() });
        assert_eq!(audit::append(&env.app.db, &tid, again).await.expect("append"), 1);
        let filter = Filter { kind: Some("decision".into()), limit: 1000, ..Default::default() };
        let (stored, _) = audit::list(&env.app.db, &tid, &filter).await.expect("list");
        let stored: Vec<&AuditEntry> = stored.iter().filter(|e| e.request_id.starts_with("req-")).collect();
        assert_eq!(stored.len(), 301, "{url}");
        for (want, got) in entries.iter().zip(&stored) {
            let want = AuditEntry {
                seq: got.seq,
                tenant_id: tid.clone(),
                prev_hash: got.prev_hash.clone(),
                hash: got.hash.clone(),
                ..want.clone()
            };
            assert_eq!(&want, *got, "{url}");
        }
        assert!(stored.windows(2).all(|w| w[1].seq == w[0].seq + 1 && w[1].prev_hash == w[0].hash));
        assert_eq!(verify(&env, &tid).await["intact"], true, "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metered_usage_is_summed_into_one_row_per_tenant_cluster_type_and_hour_of_a_batch() {
    use kubechat_control_plane::writer::Write;
    use std::time::Duration;
    for (url, _dir) in databases().await {
        let env = start(&url).await;
        let (_, tid, _, _) = tenant_and_cluster(&env).await;
        let hour = 1_700_000_000_000 / 3_600_000 * 3_600_000;
        let meter = |cluster: &str, time_ms: i64, quantity: f64| Write::Meter {
            tenant: tid.clone(),
            cluster: cluster.into(),
            usage_type: "command_executed".into(),
            quantity,
            time_ms,
        };
        let mut batch: Vec<Write> = (0..50).map(|i| meter("c1", hour + i * 1000, 1.0)).collect();
        batch.extend((0..3).map(|_| meter("c2", hour + 5, 2.0)));
        batch.extend((0..2).map(|_| meter("c1", hour + 3_600_000, 1.0)));
        // One job is one batch.
        env.app.writer.commit(batch, Duration::from_secs(10)).await.expect("commit");
        let rows = |cluster: &str| {
            format!("SELECT COUNT(*) AS n FROM usage_events WHERE tenant_id = '{tid}' AND cluster_id = '{cluster}'")
        };
        assert_eq!(count(&env, &rows("c1")).await, 2, "{url}: one row per hour");
        assert_eq!(count(&env, &rows("c2")).await, 1, "{url}");
        let sums = platform_sql(
            &env,
            &format!(
                "SELECT cluster_id, CAST(SUM(quantity) AS BIGINT) AS q, MAX(time_ms) AS t FROM usage_events WHERE tenant_id = '{tid}' GROUP BY cluster_id ORDER BY cluster_id"
            ),
        )
        .await;
        let got: Vec<(String, i64, i64)> = sums
            .iter()
            .map(|r| (r.try_get("cluster_id").expect("c"), r.try_get("q").expect("q"), r.try_get("t").expect("t")))
            .collect();
        assert_eq!(got, [("c1".to_string(), 52, hour + 3_600_000), ("c2".to_string(), 6, hour + 5)], "{url}");
        // A later batch adds a row of its own; nothing is lost or counted twice.
        env.app.writer.commit(vec![meter("c2", hour + 9, 1.0)], Duration::from_secs(10)).await.expect("commit");
        assert_eq!(count(&env, &rows("c2")).await, 2, "{url}");
        let month = time::OffsetDateTime::from_unix_timestamp(hour / 1000).expect("time");
        let month = format!("{:04}-{:02}", month.year(), u8::from(month.month()));
        let totals = kubechat_control_plane::audit::usage_totals(&env.app.db, &tid, &month).await.expect("totals");
        assert_eq!(totals, [("command_executed".to_string(), 59.0)], "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dedupes_audit_appends_by_the_id_index_with_a_plan_it_keeps() {
    use kubechat_control_plane::audit::{self, AuditEntry};
    // The dedupe query is prepared (planned once a connection, not once a
    // batch). PostgreSQL soon switches it to a generic plan it keeps; one
    // made while the table was small would scan every stored event, and go
    // on doing so as the table grows (414 full scans in one benchmark run).
    let (url, _) = databases().await.into_iter().nth(1).expect("postgres");
    let env = start(&url).await;
    let (_, tid, cid, _) = tenant_and_cluster(&env).await;
    let backend = env.app.db.backend();
    let mut tx = env.app.db.begin(&Scope::Platform).await.expect("begin");
    let entries = |round: usize| -> Vec<AuditEntry> {
        (0..3)
            .map(|i| AuditEntry {
                id: format!("dedupe-{round}-{i}"),
                tenant_id: tid.clone(),
                cluster_id: cid.clone(),
                kind: "request".into(),
                time_ms: 1_700_000_000_000,
                ..AuditEntry::default()
            })
            .collect()
    };
    // While the table is small: eight batches, and each again.
    for round in 0..8 {
        assert_eq!(audit::append_in(&mut tx, backend, &tid, entries(round)).await.expect("append"), 3);
        // The same ids again: found by the dedupe, none stored twice.
        assert_eq!(audit::append_in(&mut tx, backend, &tid, entries(round)).await.expect("append"), 0);
    }
    // The table grows ...
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, seq, id, time_ms, cluster_id, relay_id, request_id, kind, user_name, \
         groups_json, verb, api_group, resource, namespace, name, subresource, method, path, status, bytes_in, bytes_out, \
         duration_ms, decision, reason, client_address, kubectl_command, kubectl_session, prev_hash, hash) \
         SELECT $1, 1000000 + g, 'grown-' || g, 0, '', '', '', 'request', '', '[]', '', '', '', '', '', '', '', '', 0, 0, 0, \
         0, '', '', '', '', '', '', '' FROM generate_series(1, 30000) AS g",
    )
    .bind(tid.clone())
    .execute(&mut *tx)
    .await
    .expect("grow the table");
    // ... (a plan made earlier is not made again for that: only analysing
    // the table would) and this transaction's scans of it are counted.
    // Sequential scans of the table; scans of its id index, and the index
    // entries they read.
    async fn scans(tx: &mut sqlx::Transaction<'static, sqlx::Any>) -> (i64, i64, i64) {
        let r = sqlx::query(
            "SELECT COALESCE(seq_scan, 0) AS seq, pg_stat_get_xact_numscans('audit_events_id_key'::regclass) AS idx, \
             pg_stat_get_xact_tuples_returned('audit_events_id_key'::regclass) AS read \
             FROM pg_stat_xact_user_tables WHERE relname = 'audit_events'",
        )
        .fetch_one(&mut **tx)
        .await
        .expect("scans");
        (r.try_get("seq").expect("seq"), r.try_get("idx").expect("idx"), r.try_get("read").expect("read"))
    }
    let (seq_before, idx_before, read_before) = scans(&mut tx).await;
    for round in 0..3 {
        assert_eq!(audit::append_in(&mut tx, backend, &tid, entries(round)).await.expect("append"), 0, "all stored");
        assert_eq!(audit::append_in(&mut tx, backend, &tid, entries(100 + round)).await.expect("append"), 3);
    }
    let (seq_after, idx_after, read_after) = scans(&mut tx).await;
    // Prepared, and run with a generic plan by now.
    let dedupe: Vec<(i64, i64)> = sqlx::query(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE 'SELECT id FROM audit_events%'",
    )
    .fetch_all(&mut *tx)
    .await
    .expect("prepared statements")
    .iter()
    .map(|r| (r.try_get("generic_plans").expect("generic"), r.try_get("custom_plans").expect("custom")))
    .collect();
    tx.rollback().await.expect("rollback");
    assert_eq!(dedupe.len(), 1, "the dedupe is one prepared statement: {dedupe:?}");
    assert!(dedupe[0].0 > 0, "PostgreSQL runs the dedupe with its generic plan by now: {dedupe:?}");
    assert_eq!(seq_after - seq_before, 0, "the dedupe scanned the whole table");
    assert!(idx_after - idx_before >= 6, "the dedupe looks ids up by index ({} index scans)", idx_after - idx_before);
    // Six lookups of three ids: a few dozen index entries, not a walk
    // through the whole index (a merge join would read all 30,000).
    assert!(read_after - read_before < 1000, "the dedupe read {} index entries", read_after - read_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appenders_on_two_connections_never_read_the_same_head() {
    use kubechat_control_plane::audit::{self, AuditEntry};
    for (url, _dir) in databases().await {
        let env = start(&url).await;
        let (_, tid, cid, _) = tenant_and_cluster(&env).await;
        // Two appenders of one tenant's chain at once, each in transactions
        // of its own (as two replicas' writers are): a head read twice
        // would give two events one position, which the key refuses.
        let mut appenders = tokio::task::JoinSet::new();
        for who in 0..2 {
            let (db, tid, cid) = (env.app.db.clone(), tid.clone(), cid.clone());
            appenders.spawn(async move {
                for round in 0..20 {
                    let entries: Vec<AuditEntry> = (0..5)
                        .map(|i| AuditEntry {
                            id: format!("appender-{who}-{round}-{i}"),
                            time_ms: 1_700_000_000_000,
                            cluster_id: cid.clone(),
                            kind: "request".into(),
                            ..AuditEntry::default()
                        })
                        .collect();
                    assert_eq!(audit::append(&db, &tid, entries).await.expect("append"), 5);
                }
            });
        }
        while let Some(done) = appenders.join_next().await {
            done.expect("an appender failed");
        }
        let v = verify(&env, &tid).await;
        assert_eq!(v["intact"], true, "{url}: {v}");
        assert_eq!(v["headSeq"], 200, "{url}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_transaction_neither_waits_for_a_writer_nor_writes() {
    use kubechat_control_plane::store::Backend;
    for (url, _dir) in databases().await {
        let env = start(&url).await;
        let db = &env.app.db;
        let count = |n: sqlx::any::AnyRow| n.try_get::<i64, _>("n").expect("count");
        // A writer holds its transaction open (on SQLite: the write lock).
        let mut write = db.begin(&Scope::Platform).await.expect("begin");
        sqlx::query("INSERT INTO cache_changes (kind, key, at_ms) VALUES ('tokens', 'read-test', 0)")
            .execute(&mut *write)
            .await
            .expect("insert");
        // A read meanwhile goes through at once (a `BEGIN IMMEDIATE` would
        // wait for the lock, then fail: database is locked) and sees what
        // was committed, not the open write.
        let mut read = db.read(&Scope::Platform).await.expect("a read transaction while a write is open");
        let seen = sqlx::query("SELECT COUNT(*) AS n FROM cache_changes WHERE key = 'read-test'")
            .fetch_one(&mut *read)
            .await
            .map(count)
            .expect("read while a write is open");
        assert_eq!(seen, 0, "{url}: the read saw an uncommitted write");
        read.commit().await.expect("end the read");
        write.commit().await.expect("commit");
        if db.backend() == Backend::Postgres {
            // And a read transaction cannot write.
            let mut read = db.read(&Scope::Platform).await.expect("read");
            let refused = sqlx::query("DELETE FROM cache_changes WHERE key = 'read-test'").execute(&mut *read).await;
            let code = refused
                .expect_err("a write in a read transaction")
                .into_database_error()
                .and_then(|e| e.code().map(|c| c.to_string()));
            assert_eq!(code.as_deref(), Some("25006"), "read_only_sql_transaction");
        }
    }
}

/// A NUL character, which PostgreSQL's text and jsonb cannot hold, in a
/// field of an audit record (a chat utterance is recorded as typed; a relay
/// sends what it saw) is stored as U+FFFD, the field marked like a cut one;
/// a relay's event naming its tenant, cluster or request with one is
/// refused. Before, on PostgreSQL, one such record failed its whole batch
/// for ever: the writer retried it, every tenant's records queued behind
/// it, and every request that must be audited first was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_in_an_audit_record_is_stored_replaced_and_marked_and_wedges_no_batch() {
    use kubechat_control_plane::audit::{self, AuditEntry, Filter};
    use kubechat_control_plane::writer::Write;
    for (url, _dir) in databases().await {
        let env = start(&url).await;
        let (_, tid, cid, _) = tenant_and_cluster(&env).await;
        let entry = |request: &str, text: &str| AuditEntry {
            id: uuid::Uuid::now_v7().to_string(),
            time_ms: 1_700_000_000_000,
            cluster_id: cid.clone(),
            request_id: request.into(),
            kind: "chat".into(),
            user: "kubechat:user:a@acme.example".into(),
            groups: vec![format!("g{text}")],
            verb: "utterance".into(),
            decision: "allow".into(),
            reason: text.into(),
            kubectl_command: format!("get pods{text} -A"),
            ..Default::default()
        };
        let writes = vec![
            Write::Audit { tenant: tid.clone(), entry: Box::new(entry("req-nul", "\0")) },
            Write::Audit { tenant: tid.clone(), entry: Box::new(entry("req-after", "")) },
        ];
        env.app
            .writer
            .commit(writes, std::time::Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("the batch did not commit ({url}): {e}"));
        let (stored, _) =
            audit::list(&env.app.db, &tid, &Filter { limit: 100, ..Default::default() }).await.expect("list");
        let got = stored.iter().find(|e| e.request_id == "req-nul").expect("stored");
        assert_eq!(got.kubectl_command, "get pods\u{fffd} -A", "{url}");
        assert_eq!(got.reason, "\u{fffd}", "{url}");
        assert_eq!(got.groups, ["g\u{fffd}"], "{url}");
        let marked: Vec<&str> = got.truncated.keys().map(String::as_str).collect();
        assert_eq!(marked, ["groups", "kubectlCommand", "reason"], "{url}");
        assert_eq!(got.truncated["kubectlCommand"], "get pods\0 -A".len() as u64);
        assert!(stored.iter().any(|e| e.request_id == "req-after"), "the rest of the batch ({url})");
        assert_eq!(verify(&env, &tid).await["intact"], true, "{url}");

        // From a relay: a NUL in what it saw is kept replaced; in the names
        // that place the event, refused with a reason.
        let mut relay = events_client(&env, "eu-1");
        let seen = audit(&tid, &cid, "eu-1", "kubechat:user:\0", "get");
        let mut misplaced = audit(&tid, &cid, "eu-1", "u", "get");
        misplaced.request_id = "r\0".into();
        let ack = relay.publish(EventBatch { events: vec![seen.clone(), misplaced.clone()] }).await.expect("publish");
        let ack = ack.into_inner();
        assert_eq!(ack.accepted, std::slice::from_ref(&seen.id), "{ack:?}");
        assert!(ack.rejected.iter().any(|r| r.id == misplaced.id && r.reason.contains("control character")), "{ack:?}");
        let (stored, _) =
            audit::list(&env.app.db, &tid, &Filter { limit: 100, ..Default::default() }).await.expect("list");
        assert!(stored.iter().any(|e| e.user == "kubechat:user:\u{fffd}"), "{url}");
    }
}

/// Has the database refuse (a constraint violation, from a trigger) a row
/// of `table` whose `column` is `'poison'`: a stand-in for any value a
/// future change gets wrong.
async fn poison(env: &Env, url: &str, table: &str, column: &str) {
    if url.starts_with("postgres") {
        platform_sql(
            env,
            &format!(
                "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN IF NEW.{column} = 'poison' THEN \
                 RAISE EXCEPTION 'a poisoned row' USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$ \
                 LANGUAGE plpgsql"
            ),
        )
        .await;
        platform_sql(
            env,
            &format!("CREATE TRIGGER poison BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION poison()"),
        )
        .await;
    } else {
        platform_sql(
            env,
            &format!(
                "CREATE TRIGGER poison BEFORE INSERT ON {table} WHEN NEW.{column} = 'poison' \
                 BEGIN SELECT RAISE(ABORT, 'a poisoned row'); END"
            ),
        )
        .await;
    }
}

/// A write the database refuses for what it holds (here a trigger refuses
/// one usage row: a stand-in for any constraint or value a future change
/// gets wrong) is set aside alone: the rest of its batch is stored, the
/// relay is told which event was refused (it keeps it in its dead
/// letters), and the writer goes on. Before, the batch was retried for
/// ever and every tenant's records waited behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_database_refuses_is_set_aside_alone_and_the_rest_of_its_batch_is_stored() {
    for (url, _dir) in databases().await {
        let env = start(&url).await;
        let (_, tid, cid, _) = tenant_and_cluster(&env).await;
        poison(&env, &url, "usage_events", "cluster_id").await;
        let mut relay = events_client(&env, "eu-1");
        let good = audit(&tid, &cid, "eu-1", "kubechat:user:a@acme.example", "list");
        let mut poisoned = usage(&tid, "eu-1", UsageType::ApiRequest);
        poisoned.cluster = "poison".into();
        let fine = usage(&tid, "eu-1", UsageType::ApiRequest);
        let batch = vec![good.clone(), poisoned.clone(), fine.clone()];
        let ack = relay.publish(EventBatch { events: batch }).await.expect("publish").into_inner();
        assert_eq!(ack.accepted, [good.id.clone(), fine.id.clone()], "{url}: {ack:?}");
        assert_eq!(ack.rejected.len(), 1, "{ack:?}");
        assert_eq!(ack.rejected[0].id, poisoned.id);
        assert!(ack.rejected[0].reason.contains("refused"), "{ack:?}");
        assert_eq!(count(&env, &format!("SELECT COUNT(*) AS n FROM audit_events WHERE id = '{}'", good.id)).await, 1);
        assert_eq!(count(&env, &format!("SELECT COUNT(*) AS n FROM usage_events WHERE id = '{}'", fine.id)).await, 1);
        assert_eq!(env.app.writer.stats().set_aside.load(std::sync::atomic::Ordering::Relaxed), 1, "{url}");
        // The writer goes on.
        let next = audit(&tid, &cid, "eu-1", "kubechat:user:a@acme.example", "get");
        let ack = relay.publish(EventBatch { events: vec![next.clone()] }).await.expect("publish").into_inner();
        assert_eq!(ack.accepted, std::slice::from_ref(&next.id), "{ack:?}");
        assert_eq!(verify(&env, &tid).await["intact"], true, "{url}");
    }
}

/// A kube write whose audit record the database refuses (a trigger stands
/// in for any value a future change gets wrong) is not sent, and kubectl is
/// told it is KubeChat's fault with the request id to report: a 500, not
/// the 503 "retry" a database that is down gets (a retry would be refused
/// the same). The record is set aside; the next request goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kube_write_whose_audit_record_is_refused_is_not_sent_and_names_its_request_id() {
    for (url, _dir) in databases().await {
        let env = start(&url).await;
        let (ta, tid, cid, _) = tenant_and_cluster(&env).await;
        poison(&env, &url, "audit_events", "name").await;
        // A relay says it holds the tunnel (nothing listens at its address).
        let mut presence = relay_client(&env, &relay_identity(&env, "eu-1"));
        let mut held = report("eu-1", "e1", 1, true, vec![tunnel(7, &tid, &cid)], 60_000);
        held.region = "local".into();
        presence.report(held).await.expect("report");
        let path = |name: &str| format!("/k8s/clusters/{cid}/api/v1/namespaces/default/configmaps/{name}");
        let r = ta.delete(&path("poison")).await.expect("reach");
        assert_eq!(r.status, 500, "{url}: {}", r.body);
        assert_eq!(r.body["kind"], "Status", "{}", r.body);
        assert_eq!(r.body["reason"], "InternalError", "{}", r.body);
        let message = r.body["message"].as_str().expect("message");
        assert!(message.contains("was not sent") && message.contains("report request"), "{message}");
        // Its decision record and the refusal's own (both name the object).
        assert_eq!(env.app.writer.stats().set_aside.load(std::sync::atomic::Ordering::Relaxed), 2, "{url}");
        // Another write's record is stored: it gets as far as the relay
        // (none holds this cluster's tunnel here).
        let r = ta.delete(&path("fine")).await.expect("reach");
        assert_eq!(r.status, 503, "{url}: {}", r.body);
        assert!(r.body["message"].as_str().expect("message").contains("can be reached"), "{}", r.body);
    }
}
