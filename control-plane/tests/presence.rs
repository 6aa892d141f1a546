//! The tunnel directory and agent certificate lifecycle, seen from a relay
//! (gRPC presence over mutual TLS) and an agent (renewal over its current
//! certificate), on SQLite and PostgreSQL.

mod common;

use std::time::Duration;

use common::*;
use kubechat_control_plane::client::Client;
use kubechat_protocol::presence::TunnelInfo;
use kubechat_transport::pki::{self, DevPki, LeafSpec, Validity};
use kubechat_transport::tls::{self, Identity};
use serde_json::json;

/// A route carries grants without their Ed25519 signature only while the
/// relay reports the gate key of the control plane's signing key and every
/// tunnel of the cluster there names that key's cluster grant key; a report
/// that breaks either makes this replica's next grant signed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_carries_unsigned_grants_only_where_the_relay_and_every_agent_there_hold_the_keys() {
    for (url, _dir) in databases().await {
        let env = start(&url).await;
        let (_, tid, cid, _) = tenant_and_cluster(&env).await;
        let key_id = env.app.signer.key_id().to_string();
        let mut relay = relay_client(&env, &relay_identity(&env, "eu-1"));
        let with_key = |id: u64, key: &str| TunnelInfo { cluster_grant_key_id: key.into(), ..tunnel(id, &tid, &cid) };
        let routes = || async { env.app.cache.routes(&tid, &cid).await.expect("routes") };
        let mac_ids = |routes: Vec<kubechat_control_plane::directory::Route>| {
            routes.into_iter().map(|r| (r.relay_id, r.mac_key_id)).collect::<Vec<_>>()
        };

        // The agent holds the key, but the relay has no gate key yet: sign.
        let ack = relay
            .report(report("eu-1", "e1", 1, true, vec![with_key(7, &key_id)], 60_000))
            .await
            .expect("report")
            .into_inner();
        assert_eq!(mac_ids(routes().await), [("eu-1".to_string(), None)]);
        // The answer gave the relay its gate key and named the key it derives from.
        assert_eq!(ack.grant_key_id, key_id);
        assert_eq!(ack.grant_gate_key.to_vec(), env.app.signer.gate_key("eu-1").to_vec());
        // The relay reports holding it: the cached route follows at once.
        let mut r = report("eu-1", "e1", 2, false, vec![], 60_000);
        r.gate_key_ids = vec![key_id.clone()];
        relay.report(r).await.expect("report");
        let now = routes().await;
        assert!(now[0].macs_suffice(&key_id) && !now[0].macs_suffice("another-key"));
        // An agent without the key (enrolled before cluster grant keys)
        // comes up there: sign again.
        let mut r = report("eu-1", "e1", 3, false, vec![with_key(8, "")], 60_000);
        r.gate_key_ids = vec![key_id.clone()];
        relay.report(r).await.expect("report");
        assert_eq!(mac_ids(routes().await), [("eu-1".to_string(), None)]);
        // It leaves: unsigned again.
        let mut r = report("eu-1", "e1", 4, false, vec![], 60_000);
        r.down = vec![with_key(8, "")];
        r.gate_key_ids = vec![key_id.clone()];
        relay.report(r).await.expect("report");
        assert_eq!(mac_ids(routes().await), [("eu-1".to_string(), Some(key_id.clone()))]);
        // An agent holding another signing key's cluster grant key: sign.
        let mut r = report("eu-1", "e1", 5, false, vec![with_key(9, "an-older-key")], 60_000);
        r.gate_key_ids = vec![key_id.clone()];
        relay.report(r).await.expect("report");
        assert_eq!(mac_ids(routes().await), [("eu-1".to_string(), None)]);
        // The relay's gate keys no longer include the signer's: sign.
        let mut r = report("eu-1", "e2", 1, true, vec![with_key(7, &key_id)], 60_000);
        r.gate_key_ids = vec!["an-older-key".into(), "with space".into()];
        relay.report(r).await.expect("report");
        assert_eq!(mac_ids(routes().await), [("eu-1".to_string(), None)]);
        // Each relay's route is decided on its own.
        let mut r = report("eu-1", "e2", 2, false, vec![], 60_000);
        r.gate_key_ids = vec!["an-older-key".into(), key_id.clone()];
        relay.report(r).await.expect("report");
        let mut other = relay_client(&env, &relay_identity(&env, "eu-2"));
        other.report(report("eu-2", "f1", 1, true, vec![with_key(1, &key_id)], 60_000)).await.expect("report");
        assert_eq!(mac_ids(routes().await), [("eu-1".to_string(), Some(key_id.clone())), ("eu-2".to_string(), None)]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_reports_build_a_directory_with_leases() {
    for (url, _dir) in databases().await {
        let env = start(&url).await;
        let (ta, tid, cid, _) = tenant_and_cluster(&env).await;
        let mut relay = relay_client(&env, &relay_identity(&env, "eu-1"));
        assert!(!connected(&ta, &tid, &cid).await);

        // A full snapshot puts the cluster on the map.
        let ack = relay
            .report(report("eu-1", "e1", 1, true, vec![tunnel(7, &tid, &cid)], 60_000))
            .await
            .expect("report")
            .into_inner();
        assert!(!ack.resend_full);
        assert!(ack.revocations_changed && ack.revocations_version != 0);
        let version = ack.revocations_version;
        assert!(connected(&ta, &tid, &cid).await);
        let r = ta.get(&format!("/v1/tenants/{tid}/tunnels")).await.expect("reach");
        assert_eq!(r.body["items"][0]["relayId"], "eu-1");
        assert_eq!(r.body["items"][0]["region"], "eu-west");
        let all = env.admin.get("/v1/tunnels").await.expect("reach");
        assert_eq!(all.body["items"].as_array().map(Vec::len), Some(1));
        assert_eq!(ta.get("/v1/tunnels").await.expect("reach").status, 403);

        // A delta in an unknown epoch, or not newer than the last, is not applied.
        let ack = relay.report(report("eu-1", "other", 9, false, vec![], 60_000)).await.expect("report").into_inner();
        assert!(ack.resend_full);
        let ack = relay.report(report("eu-1", "e1", 1, false, vec![], 60_000)).await.expect("report").into_inner();
        assert!(ack.resend_full);
        // A delta withdrawing the tunnel is.
        let mut down = report("eu-1", "e1", 2, false, vec![], 60_000);
        down.down = vec![tunnel(7, &tid, &cid)];
        down.revocations_version = version;
        let ack = relay.report(down).await.expect("report").into_inner();
        assert!(!ack.resend_full && !ack.revocations_changed);
        assert!(!connected(&ta, &tid, &cid).await);

        // A relay that stops reporting drops out when its lease ends.
        relay.report(report("eu-1", "e2", 1, true, vec![tunnel(8, &tid, &cid)], 300)).await.expect("report");
        assert!(connected(&ta, &tid, &cid).await);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while connected(&ta, &tid, &cid).await {
            assert!(tokio::time::Instant::now() < deadline, "the lease never expired");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // While lapsed, the kube path's cache learns there is no route.
        assert!(env.app.cache.routes(&tid, &cid).await.expect("routes").is_empty());
        // A late report (a delta that changes nothing) renews the lease, and
        // the cached routes are read again at once, not at their next refresh.
        let ack = relay.report(report("eu-1", "e2", 2, false, vec![], 60_000)).await.expect("report").into_inner();
        assert!(!ack.resend_full);
        assert!(connected(&ta, &tid, &cid).await);
        let routes = env.app.cache.routes(&tid, &cid).await.expect("routes");
        assert_eq!(routes.iter().map(|r| r.relay_id.as_str()).collect::<Vec<_>>(), ["eu-1"]);
        // And then it lapses again for the checks below.
        relay.report(report("eu-1", "e2", 3, false, vec![], 300)).await.expect("report");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while connected(&ta, &tid, &cid).await {
            assert!(tokio::time::Instant::now() < deadline, "the lease never expired");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // A report naming another relay than the certificate is refused.
        let err = relay.report(report("us-1", "e3", 1, true, vec![], 60_000)).await.expect_err("refused");
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        // A certificate from the relay CA that names no relay cannot report.
        let nameless = env
            .pki
            .relay_ca
            .issue(
                &LeafSpec { common_name: "nameless".into(), client: true, server: true, ..Default::default() },
                Validity::for_duration(Duration::from_secs(60)),
            )
            .expect("cert")
            .identity()
            .expect("identity");
        let mut bad = relay_client(&env, &nameless);
        assert!(bad.report(report("eu-1", "e4", 1, true, vec![], 60_000)).await.is_err());
        // Nor can a certificate of another CA.
        let other = DevPki::generate().expect("pki").relay_cert("eu-1", &["127.0.0.1"]).expect("cert");
        let mut bad = relay_client(&env, &other.identity().expect("identity"));
        assert!(bad.report(report("eu-1", "e5", 1, true, vec![], 60_000)).await.is_err());

        // Deleting the cluster puts it on the revocation list relays receive.
        let before = relay.report(report("eu-1", "e6", 1, true, vec![], 60_000)).await.expect("report").into_inner();
        assert_eq!(ta.delete(&format!("/v1/tenants/{tid}/clusters/{cid}")).await.expect("reach").status, 200);
        let mut r = report("eu-1", "e6", 2, false, vec![], 60_000);
        r.revocations_version = before.revocations_version;
        let after = relay.report(r).await.expect("report").into_inner();
        assert!(after.revocations_changed);
        assert_eq!(after.revoked_clusters, vec![cid.clone()]);
        // Unchanged lists are not resent.
        let mut r = report("eu-1", "e6", 3, false, vec![], 60_000);
        r.revocations_version = after.revocations_version;
        let same = relay.report(r).await.expect("report").into_inner();
        assert!(!same.revocations_changed && same.revoked_clusters.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_over_the_current_certificate_and_revoking_the_old_one() {
    for (url, _dir) in databases().await {
        let env = start(&url).await;
        let (ta, tid, cid, token) = tenant_and_cluster(&env).await;
        let ca = env.pki.relay_ca.cert_pem();
        let anon = Client::new_tls(&env.base, None, ca);
        let (key, csr) = pki::new_csr("spiffe://kubechat/tenant/other/cluster/theirs").expect("csr");
        let r = anon.post("/v1/enroll", &json!({"bootstrapToken": token, "csr": csr})).await.expect("reach");
        assert_eq!(r.status, 201, "{}", r.body);
        let first = Identity::from_pem(r.body["certificate"].as_str().expect("cert"), &key).expect("identity");
        let first_serial = r.body["serial"].as_str().expect("serial").to_string();
        assert_eq!(tls::certificate_serial(&first.chain[0]).as_deref(), Some(first_serial.as_str()));

        // Renewal needs the current certificate on the connection.
        let (key2, csr2) = pki::new_csr("spiffe://kubechat/tenant/other/cluster/theirs").expect("csr");
        let r = anon.post("/v1/renew", &json!({"csr": csr2})).await.expect("reach");
        assert_eq!(r.status, 401, "{}", r.body);
        // A certificate of the right shape from another agent CA is refused by TLS.
        let stranger = DevPki::generate().expect("pki");
        let fake = stranger
            .agent_cert(
                &kubechat_protocol::ClusterIdentity::new(&tid, &cid).expect("id"),
                Validity::for_duration(Duration::from_secs(60)),
            )
            .expect("cert")
            .identity()
            .expect("identity");
        let r = Client::new_mtls(&env.base, ca, &fake).post("/v1/renew", &json!({"csr": csr2})).await;
        assert!(r.is_err() || r.as_ref().is_ok_and(|r| r.status == 401), "{r:?}");

        let agent = Client::new_mtls(&env.base, ca, &first);
        let r = agent.post("/v1/renew", &json!({"csr": csr2})).await.expect("reach");
        assert_eq!(r.status, 201, "{}", r.body);
        let second = Identity::from_pem(r.body["certificate"].as_str().expect("cert"), &key2).expect("identity");
        let named = tls::cluster_identity(&second.chain[0]).expect("identity");
        assert_eq!((named.tenant.as_str(), named.cluster.as_str()), (tid.as_str(), cid.as_str()));
        let second_serial = r.body["serial"].as_str().expect("serial").to_string();
        assert_ne!(first_serial, second_serial);

        // The old certificate is superseded (revoked after the overlap, here 0 s):
        // listed as such, on the relays' revocation list, and useless for renewing.
        let list = ta.get(&format!("/v1/tenants/{tid}/clusters/{cid}/certificates")).await.expect("reach");
        let items = list.body["items"].as_array().expect("items").clone();
        let old = items.iter().find(|c| c["serial"] == first_serial.as_str()).expect("old listed");
        assert_eq!(old["replacedBy"], second_serial.as_str());
        let mut relay = relay_client(&env, &relay_identity(&env, "eu-1"));
        let ack = relay.report(report("eu-1", "e1", 1, true, vec![], 60_000)).await.expect("report").into_inner();
        assert_eq!(ack.revoked_certificates, vec![first_serial.clone()]);
        let (_, csr3) = pki::new_csr("x").expect("csr");
        let r = agent.post("/v1/renew", &json!({"csr": csr3})).await.expect("reach");
        assert_eq!(r.status, 403, "{}", r.body);

        // The new one renews, until an admin revokes it explicitly.
        let agent2 = Client::new_mtls(&env.base, ca, &second);
        let revoke = format!("/v1/tenants/{tid}/clusters/{cid}/certificates/{second_serial}/revoke");
        assert_eq!(ta.post(&revoke, &json!({})).await.expect("reach").status, 200);
        let r = agent2.post("/v1/renew", &json!({"csr": csr3})).await.expect("reach");
        assert_eq!(r.status, 403, "{}", r.body);
        let missing = format!("/v1/tenants/{tid}/clusters/{cid}/certificates/00ff/revoke");
        assert_eq!(ta.post(&missing, &json!({})).await.expect("reach").status, 404);
    }
}
