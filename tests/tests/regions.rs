//! Data residency: enrollment hands an agent only its tenant's home region's
//! relays, and the control plane routes a tenant's requests only through
//! relays of that region (or the failover region its settings name).

use std::time::Duration;

use kubechat_control_plane::Secret;
use kubechat_control_plane::client::Client;
use kubechat_control_plane::enroll::Enrollment;
use kubechat_tests::platform::{ADMIN, world_full};
use kubechat_tests::stack::{free_port, start_agent};
use kubechat_tests::wait::eventually;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_homed_in_eu_west_is_enrolled_and_routed_only_through_eu_west_relays() {
    // The control plane hands out relays by region.
    let (eu_port, us_port) = (free_port(), free_port());
    let w = world_full(
        json!({}),
        |_| {},
        |c| {
            let e: &mut Enrollment = c.enrollment.as_mut().expect("enrollment");
            e.relays.push(("eu-west".into(), format!("127.0.0.1:{eu_port}")));
            e.relays.push(("us-east".into(), format!("127.0.0.1:{us_port}")));
        },
    )
    .await;
    let eu = w.extra_relay("relay-eu", "eu-west", eu_port).await;
    let us = w.extra_relay("relay-us", "us-east", us_port).await;
    let platform = Client::new_tls(&w.cp_url, Some(Secret(ADMIN.into())), &w.cp_ca);
    let r = platform
        .post(
            "/v1/tenants",
            &json!({"name": "EuCo", "slug": "euco", "plan": "team", "adminEmail": "a@euco.example", "homeRegion": "eu-west"}),
        )
        .await
        .expect("reach");
    assert_eq!(r.status, 201, "{}", r.body);
    let tenant = r.body["tenant"]["id"].as_str().expect("id").to_string();
    let api = platform.with_token(r.body["token"].as_str().expect("token"));
    let c = api.post(&format!("/v1/tenants/{tenant}/clusters"), &json!({"name": "prod"})).await.expect("reach");
    let cluster = c.body["id"].as_str().expect("id").to_string();
    let token = c.body["bootstrapToken"].as_str().expect("token").to_string();

    // Enrollment answers with eu-west's relays only.
    let (_, csr) = kubechat_transport::pki::new_csr("spiffe://kubechat/enrolling").expect("csr");
    let anon = Client::new_tls(&w.cp_url, None, &w.cp_ca);
    let e = anon.post("/v1/enroll", &json!({"bootstrapToken": token, "csr": csr})).await.expect("reach");
    assert_eq!(e.status, 201, "{}", e.body);
    assert_eq!(e.body["region"], "eu-west");
    assert_eq!(e.body["relays"], json!([eu.quic.to_string()]));

    // An agent that (misconfigured) holds tunnels on both relays.
    let kube = w.agent_kube_config().await;
    let cert = w.pki.agent_cert(&tenant, &cluster);
    let agent_eu = start_agent(&w.pki, &[eu.quic], &cert, &w.sim.url(), |a| a.kube = kube.clone()).await;
    let _agent_us = start_agent(&w.pki, &[us.quic], &cert, &w.sim.url(), |a| a.kube = kube.clone()).await;
    let (a2, t2, c2) = (api.clone(), tenant.clone(), cluster.clone());
    eventually("both tunnels in the directory", Duration::from_secs(10), || {
        let (a, t, c) = (a2.clone(), t2.clone(), c2.clone());
        async move {
            let r = a.get(&format!("/v1/tenants/{t}/clusters/{c}")).await.expect("reach");
            r.body["tunnels"].as_array().is_some_and(|t| t.len() == 2)
        }
    })
    .await;
    let path = format!("/k8s/clusters/{cluster}/api/v1/namespaces/web/pods");
    let us_before = us.handle.metrics().streams_total.get();
    for _ in 0..10 {
        let r = api.get(&path).await.expect("reach");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(us.handle.metrics().streams_total.get(), us_before, "a request went through us-east");
    assert!(eu.handle.metrics().streams_total.get() >= 10);

    // Without its eu-west tunnel the cluster is not reachable through us-east...
    agent_eu.shutdown.cancel();
    agent_eu.task.await.expect("agent stops");
    let (a3, p3) = (api.clone(), path.clone());
    eventually("only the us-east tunnel left", Duration::from_secs(20), || {
        let (a, p) = (a3.clone(), p3.clone());
        async move {
            let r = a.get(&p).await.expect("reach");
            r.status == 503 && r.body["message"].as_str().is_some_and(|m| m.contains("outside region eu-west"))
        }
    })
    .await;
    assert_eq!(us.handle.metrics().streams_total.get(), us_before);
    // ...unless the tenant allows failover to it.
    let s =
        api.put(&format!("/v1/tenants/{tenant}/settings"), &json!({"failoverRegion": "us-east"})).await.expect("reach");
    assert_eq!(s.status, 200, "{}", s.body);
    let r = api.get(&path).await.expect("reach");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(us.handle.metrics().streams_total.get() > us_before);
}
