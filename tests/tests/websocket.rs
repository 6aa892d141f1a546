//! The WebSocket fallback: an agent whose QUIC cannot get out connects over
//! WebSocket (TLS over TCP, yamux streams) on its own, and everything works
//! over it — the whole kubectl suite.

use kubechat_tests::kubectl_suite as suite;
use kubechat_tests::stack::KubeStack;

const USER: &str = "kubechat:user:alice@example.com";
const USER_GROUPS: &[&str] = &["kubechat:tenant:acme", "kubechat:role:tenant_user"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_udp_blocked_the_agent_falls_back_to_websocket_and_kubectl_works() {
    let s = KubeStack::start_over_websocket().await;
    let (transport, n) = {
        let t = s.relay.handle.tunnel_transports();
        (t.first().cloned().unwrap_or_default(), t.len())
    };
    assert_eq!((transport.as_str(), n), ("websocket", 1));
    suite::all(&s.kubectl(USER, USER_GROUPS)).await;
}
