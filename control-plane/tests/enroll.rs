//! Enrollment: one-time expiring bootstrap tokens and CSRs, on SQLite and
//! PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use kubechat_control_plane::client::Client;
use kubechat_control_plane::enroll::Enrollment;
use kubechat_control_plane::{Config, ControlPlane, Secret};
use kubechat_transport::pki::{self, DevPki};
use kubechat_transport::tls;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod common;

use common::databases;

const ADMIN: &str = "kc_enrollmenttestplatformadmintoken0000000";

/// A control plane (HTTP) enrolling with a fresh agent CA and `relays`; its
/// base URL and the token that stops it.
async fn start(url: &str, relays: Vec<(String, String)>) -> (String, CancellationToken) {
    let ca = DevPki::generate().expect("pki");
    let mut cfg = Config::new(url);
    cfg.platform_admin_token = Some(Secret(ADMIN.into()));
    cfg.enrollment = Some(Enrollment {
        agent_ca: Arc::new(ca.agent_ca),
        relay_ca_pem: ca.relay_ca.cert_pem().to_string(),
        relays,
        cert_lifetime: Duration::from_secs(24 * 3600),
        bootstrap_lifetime: Duration::from_secs(3600),
        renewal_overlap: Duration::from_secs(0),
    });
    let cp = ControlPlane::bind(cfg).await.expect("start");
    let base = format!("http://{}", cp.addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(cp.run(shutdown.clone()));
    (base, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_issues_only_the_tokens_identity_once() {
    for (url, _dir) in databases().await {
        let (base, shutdown) = start(
            &url,
            vec![("local".into(), "relay.eu.example:7443".into()), ("us-east".into(), "relay.us.example:7443".into())],
        )
        .await;
        let admin = Client::new(&base, Some(Secret(ADMIN.into())));
        let t = admin
            .post(
                "/v1/tenants",
                &json!({"name": "Acme", "slug": "acme", "plan": "team", "adminEmail": "a@acme.example"}),
            )
            .await
            .expect("reach");
        let tid = t.body["tenant"]["id"].as_str().expect("id").to_string();
        let ta = admin.with_token(t.body["token"].as_str().expect("token"));
        let c = ta.post(&format!("/v1/tenants/{tid}/clusters"), &json!({"name": "prod"})).await.expect("reach");
        assert_eq!(c.status, 201, "{}", c.body);
        let cid = c.body["id"].as_str().expect("id").to_string();
        let token = c.body["bootstrapToken"].as_str().expect("bootstrap token").to_string();
        assert!(token.starts_with("kcb_"));
        assert!(c.body["helmInstall"].as_str().expect("helm").contains(&format!("'bootstrapToken={token}'")));
        assert_eq!(c.body["helmValues"]["bootstrapToken"], token.as_str());
        assert_eq!(c.body["helmChart"]["chart"], kubechat_control_plane::helm::DEFAULT_AGENT_CHART);

        // A CSR asking for another tenant's cluster still gets only the token's identity.
        let (key, csr) = pki::new_csr("spiffe://kubechat/tenant/someone-else/cluster/theirs").expect("csr");
        let anon = Client::new(&base, None);
        let r = anon.post("/v1/enroll", &json!({"bootstrapToken": token, "csr": csr})).await.expect("reach");
        assert_eq!(r.status, 201, "{}", r.body);
        let cert = r.body["certificate"].as_str().expect("certificate");
        let id = tls::Identity::from_pem(cert, &key).expect("certificate matches the agent's key");
        let named = tls::cluster_identity(&id.chain[0]).expect("identity");
        assert_eq!((named.tenant.as_str(), named.cluster.as_str()), (tid.as_str(), cid.as_str()));
        assert_eq!(r.body["relays"], json!(["relay.eu.example:7443"]));
        assert!(r.body["relayCa"].as_str().is_some_and(|p| p.contains("BEGIN CERTIFICATE")));
        assert!(r.body["grantKeys"][0].as_str().is_some_and(|k| k.contains('=')));
        // The cluster grant key: of the signing key's id, usable by a verifier.
        let key_id = r.body["grantKeys"][0].as_str().and_then(|k| k.split_once('=')).expect("id=key").0;
        let cluster_key = r.body["clusterGrantKey"].as_str().expect("a cluster grant key");
        assert!(cluster_key.starts_with(&format!("{key_id}=")), "{cluster_key}");
        kubechat_protocol::grant::GrantVerifier::default().with_cluster_key(cluster_key).expect("32 bytes");
        let life = r.body["expiresAt"].as_i64().expect("expiry") - time_now();
        assert!(life <= 24 * 3600 && life > 23 * 3600, "{life}");

        // Reused: refused.
        let (_, csr2) = pki::new_csr("spiffe://kubechat/tenant/x/cluster/y").expect("csr");
        let again = anon.post("/v1/enroll", &json!({"bootstrapToken": token, "csr": csr2})).await.expect("reach");
        assert_eq!(again.status, 401, "{}", again.body);
        // Expired: refused.
        let short = ta
            .post(&format!("/v1/tenants/{tid}/clusters/{cid}/bootstrap-tokens"), &json!({"expiresInSeconds": 1}))
            .await
            .expect("reach");
        let short_token = short.body["bootstrapToken"].as_str().expect("token").to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (_, csr3) = pki::new_csr("spiffe://kubechat/tenant/x/cluster/y").expect("csr");
            // Probe with a malformed CSR first: it must not spend the token.
            let bad =
                anon.post("/v1/enroll", &json!({"bootstrapToken": short_token, "csr": "nope"})).await.expect("reach");
            assert_eq!(bad.status, 400);
            if time_now() > short.body["expiresAt"].as_i64().expect("expiry") {
                let r =
                    anon.post("/v1/enroll", &json!({"bootstrapToken": short_token, "csr": csr3})).await.expect("reach");
                assert_eq!(r.status, 401, "an expired bootstrap token enrolled: {}", r.body);
                break;
            }
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A deleted cluster's token: refused.
        let fresh =
            ta.post(&format!("/v1/tenants/{tid}/clusters/{cid}/bootstrap-tokens"), &json!({})).await.expect("reach");
        let fresh_token = fresh.body["bootstrapToken"].as_str().expect("token").to_string();
        assert_eq!(ta.delete(&format!("/v1/tenants/{tid}/clusters/{cid}")).await.expect("reach").status, 200);
        let (_, csr4) = pki::new_csr("spiffe://kubechat/tenant/x/cluster/y").expect("csr");
        let r = anon.post("/v1/enroll", &json!({"bootstrapToken": fresh_token, "csr": csr4})).await.expect("reach");
        assert_eq!(r.status, 401);
        // Garbage tokens and bodies.
        let r = anon.post("/v1/enroll", &json!({"bootstrapToken": "kc_wrong-kind", "csr": "x"})).await.expect("reach");
        assert_eq!(r.status, 401);
        let r: Value = anon.post("/v1/enroll", &json!({"bootstrapToken": "kcb_x"})).await.expect("reach").body;
        assert_eq!(r["error"]["code"], "invalid_json");
        shutdown.cancel();
    }
}

fn time_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_enrollment_does_not_spend_the_bootstrap_token() {
    for (url, _dir) in databases().await {
        let (base, shutdown) = start(&url, vec![("local".into(), "relay.example:7443#ws=443".into())]).await;
        let admin = Client::new(&base, Some(Secret(ADMIN.into())));
        // A tenant homed where no relay is configured.
        let t = admin
            .post(
                "/v1/tenants",
                &json!({"name": "Far", "slug": "far", "plan": "team", "adminEmail": "a@far.example", "homeRegion": "ap-south"}),
            )
            .await
            .expect("reach");
        let tid = t.body["tenant"]["id"].as_str().expect("id").to_string();
        let ta = admin.with_token(t.body["token"].as_str().expect("token"));
        let c = ta.post(&format!("/v1/tenants/{tid}/clusters"), &json!({"name": "prod"})).await.expect("reach");
        let token = c.body["bootstrapToken"].as_str().expect("token").to_string();
        let anon = Client::new(&base, None);
        let (_, csr) = pki::new_csr("spiffe://kubechat/enrolling").expect("csr");
        let r = anon.post("/v1/enroll", &json!({"bootstrapToken": token, "csr": csr})).await.expect("reach");
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(r.body["error"]["message"].as_str().is_some_and(|m| m.contains("no relay serves region ap-south")));
        // A CSR that only looks like one is refused before the token is spent too.
        let fake = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
        let r = anon.post("/v1/enroll", &json!({"bootstrapToken": token, "csr": fake})).await.expect("reach");
        assert_eq!(r.status, 400, "{}", r.body);
        // Once the operator fixes the region, the same token still enrolls,
        // and the relay comes with its WebSocket port.
        let r = admin.put(&format!("/v1/tenants/{tid}"), &json!({"homeRegion": "local"})).await.expect("reach");
        assert_eq!(r.status, 200, "{}", r.body);
        let r = anon.post("/v1/enroll", &json!({"bootstrapToken": token, "csr": csr})).await.expect("reach");
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.body["relays"], json!(["relay.example:7443#ws=443"]));
        shutdown.cancel();
    }
}
