//! A hostile agent with a valid certificate sends garbage, truncated and
//! oversized frames: its connection is closed with the matching error code,
//! the caller gets a Status error, the relay keeps serving the other
//! tunnels, and nothing panics. One test function, so the process-wide panic
//! counter belongs to it alone.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use http::StatusCode;
use kubechat_protocol::frame::{self, KIND_DATA, KIND_MESSAGE};
use kubechat_protocol::messages::{Hello, control_message, stream_message};
use kubechat_protocol::{ErrorCode, ErrorCodeExt, version};
use kubechat_tests::stack::{CLUSTER, Stack, TENANT};
use kubechat_tests::wait::{panics, within};
use kubechat_transport::quic::{self, QuicSettings};
use kubechat_transport::tls;
use kubechat_transport::{FramedRecv, FramedSend};

const LONG: Duration = Duration::from_secs(30);

/// Dials the relay as the agent of `cluster`.
async fn dial(s: &Stack, cluster: &str) -> quinn::Connection {
    let cert = s.pki.agent_cert(TENANT, cluster).identity().expect("identity");
    let tls = tls::tunnel_client_config(&cert, &s.pki.relay_ca()).expect("tls");
    let cfg = quic::client_config(tls, &QuicSettings::default()).expect("quic config");
    let ep = quic::client_endpoint(s.relay.quic).expect("endpoint");
    ep.connect_with(cfg, s.relay.quic, "127.0.0.1").expect("connect").await.expect("handshake")
}

/// The close code the relay closed `conn` with.
async fn close_code(conn: &quinn::Connection) -> Option<ErrorCode> {
    match within("relay closes the connection", LONG, conn.closed()).await {
        quinn::ConnectionError::ApplicationClosed(c) => ErrorCode::from_close_code(c.error_code.into_inner()),
        other => panic!("expected an application close, got {other}"),
    }
}

/// Sends `bytes` as the first thing on the control stream.
async fn control_garbage(s: &Stack, cluster: &str, bytes: &[u8], finish: bool) -> Option<ErrorCode> {
    let conn = dial(s, cluster).await;
    let (mut send, _recv) = conn.open_bi().await.expect("open control stream");
    send.write_all(bytes).await.expect("write");
    if finish {
        send.finish().expect("finish");
    }
    close_code(&conn).await
}

/// Completes Hello as the agent of `cluster`, then answers the first relay
/// request stream with `reply`.
async fn hello(conn: &quinn::Connection) -> (FramedSend, FramedRecv) {
    let (send, recv) = conn.open_bi().await.expect("open control stream");
    let mut send = FramedSend::new(Box::new(send));
    let mut recv = FramedRecv::new(Box::new(recv), 1 << 16);
    let h = Hello { versions: version::SUPPORTED_VERSIONS.to_vec(), ..Default::default() };
    send.send_control_message(control_message::Kind::Hello(h)).await.expect("hello");
    match recv.next_control_message().await.expect("ack") {
        Some(control_message::Kind::HelloAck(_)) => {}
        other => panic!("expected HelloAck, got {other:?}"),
    }
    (send, recv)
}

async fn assert_stack_serves(s: &Stack) {
    let r = within("legit request", LONG, s.client.get(CLUSTER, "/small")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"hello");
}

async fn bad_response(
    s: &Stack,
    cluster: &str,
    reply: Vec<u8>,
) -> (Option<ErrorCode>, kubechat_tests::client::Buffered) {
    let conn = dial(s, cluster).await;
    let _control = hello(&conn).await;
    let client = s.client.clone();
    let c = cluster.to_string();
    let caller = tokio::spawn(async move { client.get(&c, "/api/v1/pods").await });
    let (mut send, recv) = within("relay opens a request stream", LONG, conn.accept_bi()).await.expect("stream");
    let mut framed = FramedRecv::new(Box::new(recv), 1 << 20);
    match framed.next_stream_message("open").await.expect("open") {
        stream_message::Kind::Open(o) => assert_eq!(o.uri, "/api/v1/pods"),
        other => panic!("expected StreamOpen, got {other:?}"),
    }
    send.write_all(&reply).await.expect("write reply");
    let _ = send.finish();
    let code = close_code(&conn).await;
    let resp = within("caller's answer", LONG, caller).await.expect("caller task");
    (code, resp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_close_only_the_offending_tunnel() {
    let s = Stack::start().await;
    let before = panics();

    // Garbage: an unknown frame kind.
    let code = control_garbage(&s, "evil-1", b"\xde\xad\xbe\xef this is not a frame", false).await;
    assert_eq!(code, Some(ErrorCode::Protocol));
    assert_stack_serves(&s).await;

    // Oversized: a header announcing a 2 GiB message.
    let code = control_garbage(&s, "evil-2", &[KIND_MESSAGE, 0x7f, 0xff, 0xff, 0xff], false).await;
    assert_eq!(code, Some(ErrorCode::FrameTooLarge));
    assert_stack_serves(&s).await;

    // Truncated: half a frame, then end of stream.
    let mut half = BytesMut::new();
    half.put_slice(&frame::header(KIND_MESSAGE, 100));
    half.put_slice(&[0u8; 10]);
    let code = control_garbage(&s, "evil-3", &half, true).await;
    assert_eq!(code, Some(ErrorCode::Protocol));
    assert_stack_serves(&s).await;

    // A valid frame that is not a valid message.
    let mut junk = BytesMut::new();
    junk.put_slice(&frame::header(KIND_MESSAGE, 3));
    junk.put_slice(&[0xff, 0xff, 0xff]);
    let code = control_garbage(&s, "evil-4", &junk, false).await;
    assert_eq!(code, Some(ErrorCode::Protocol));

    // Data where Hello must be.
    let mut data = BytesMut::new();
    frame::encode_data(b"hello?", &mut data);
    let code = control_garbage(&s, "evil-5", &data, false).await;
    assert_eq!(code, Some(ErrorCode::Protocol));

    // No common version.
    let conn = dial(&s, "evil-6").await;
    let (send, _recv) = conn.open_bi().await.expect("open");
    let mut send = FramedSend::new(Box::new(send));
    let h = Hello { versions: vec![99], ..Default::default() };
    send.send_control_message(control_message::Kind::Hello(h)).await.expect("hello");
    assert_eq!(close_code(&conn).await, Some(ErrorCode::VersionMismatch));
    assert_stack_serves(&s).await;

    // Garbage as the response to a request: the caller gets a Status 502.
    let (code, resp) = bad_response(&s, "evil-7", b"\x09garbage garbage".to_vec()).await;
    assert_eq!(code, Some(ErrorCode::Protocol));
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
    assert_eq!(resp.json()["kind"], "Status");

    // An oversized response frame.
    let (code, resp) = bad_response(&s, "evil-8", frame::header(KIND_DATA, 1 << 30).to_vec()).await;
    assert_eq!(code, Some(ErrorCode::FrameTooLarge));
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);

    // A truncated response head.
    let head = frame::encode_stream_message(stream_message::Kind::ResponseHead(Default::default()));
    let (code, resp) = bad_response(&s, "evil-9", head[..head.len().saturating_sub(1).max(3)].to_vec()).await;
    assert_eq!(code, Some(ErrorCode::Protocol));
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);

    assert_stack_serves(&s).await;
    assert!(s.relay.handle.metrics().protocol_errors.get() >= 8);
    assert_eq!(s.relay.handle.tunnel_count(), 1, "only the legit tunnel remains");
    assert_eq!(panics(), before, "something panicked");
}
