//! One tunnelled request: sanitize, impersonate, send to the API server with
//! the kube client, stream the response (or the upgraded connection) back.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use kubechat_protocol::frame::DATA_CHUNK_SIZE;
use kubechat_protocol::frame::Frame;
use kubechat_protocol::headers::{impersonation, sanitize_request};
use kubechat_protocol::messages::{Header, Reset, ResponseHead, StreamEnd, StreamOpen, stream_message};
use kubechat_protocol::trace::{self, TraceParent};
use kubechat_protocol::{ErrorCode, ErrorCodeExt, frame, grant, kube_request};
use kubechat_transport::framed::{COALESCE_LIMIT, FramesEnd, copy_from_frames, copy_into_frames};
use kubechat_transport::{BiStream, FramedRecv, FramedSend, StreamError};
use tokio::io::AsyncWriteExt;
use tracing::{Instrument, debug, warn};

use crate::state::{ActiveIdentity, AgentState};

/// Why a stream could not be forwarded; becomes a `Reset` to the relay.
struct Refusal {
    code: ErrorCode,
    message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// Serves one relay-opened stream to completion, checking its grant with the
/// keys of `identity`: those its tunnel was opened with (and named in its
/// Hello), not a renewal's installed since, whose cluster grant key may be
/// of another signing key than the grants this tunnel's relay sends it.
pub(crate) async fn serve_stream(stream: BiStream, state: Arc<AgentState>, identity: Arc<ActiveIdentity>) {
    let mut recv = FramedRecv::new(stream.recv, state.config.max_frame_size);
    let mut send = FramedSend::new(stream.send);
    let open = match recv.next_stream_message("the request head").await {
        Ok(stream_message::Kind::Open(o)) => o,
        Ok(_) => {
            reset(&mut send, &state, Refusal::new(ErrorCode::Protocol, "expected StreamOpen")).await;
            return;
        }
        Err(e) => {
            debug!(error = %e, "unreadable request head");
            let code = if matches!(e, StreamError::Frame(kubechat_protocol::FrameError::TooLarge { .. })) {
                ErrorCode::FrameTooLarge
            } else {
                ErrorCode::Protocol
            };
            reset(&mut send, &state, Refusal::new(code, format!("unreadable request head: {e}"))).await;
            return;
        }
    };
    // The control plane's trace goes on to the API server, with this hop's span.
    let mut open = open;
    let trace = open
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(trace::HEADER))
        .and_then(|h| std::str::from_utf8(&h.value).ok())
        .and_then(TraceParent::parse)
        .map(|t| t.child(rand::random()));
    open.headers.retain(|h| !h.name.eq_ignore_ascii_case(trace::HEADER));
    if let Some(t) = trace {
        open.headers.push(Header { name: trace::HEADER.into(), value: Bytes::from(t.to_header()) });
    }
    let trace_id = trace.map(|t| t.trace_id_hex()).unwrap_or_default();
    let span =
        tracing::info_span!("stream", request_id = %open.request_id, method = %open.method, trace_id = %trace_id);
    state.metrics.streams_open.inc();
    state.metrics.streams_total.inc();
    forward(open, recv, &mut send, &state, &identity).instrument(span).await;
    state.metrics.streams_open.dec();
}

async fn reset(send: &mut FramedSend, state: &AgentState, r: Refusal) {
    state.metrics.stream_errors.inc(r.code.label());
    let msg = stream_message::Kind::Reset(Reset { code: r.code as i32, message: r.message });
    let _ = send.send_stream_message(msg).await;
    let _ = send.finish().await;
}

fn build_request(open: &StreamOpen, body: Bytes) -> Result<Request<kube::client::Body>, Refusal> {
    let refused = |m: String| Refusal::new(ErrorCode::Refused, m);
    let method =
        Method::from_bytes(open.method.as_bytes()).map_err(|_| refused(format!("invalid method {:?}", open.method)))?;
    if !open.uri.starts_with('/') {
        return Err(refused(format!("request uri {:?} must be a path", open.uri)));
    }
    let uri: http::uri::PathAndQuery =
        open.uri.parse().map_err(|_| refused(format!("invalid request uri {:?}", open.uri)))?;
    // The control plane sends canonical targets only (what it authorized is
    // what the API server reads); anything else is not sent on.
    let canonical = kube_request::Target::parse(uri.path(), uri.query()).map(|t| t.path_and_query());
    if canonical.as_deref() != Ok(open.uri.as_str()) {
        return Err(refused(format!("request uri {:?} is not in canonical form", open.uri)));
    }
    let identity = open
        .identity
        .as_ref()
        .filter(|i| !i.user.is_empty())
        .ok_or_else(|| refused("the request carries no identity to impersonate".into()))?;
    let mut req = Request::builder().method(method).uri(uri.as_str());
    let headers = req.headers_mut().ok_or_else(|| refused("invalid request".into()))?;
    let sanitized = sanitize_request(&open.headers, open.upgrade);
    for Header { name, value } in sanitized.iter().chain(impersonation(identity, &open.request_id).iter()) {
        let n =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| refused(format!("invalid header name {name:?}")))?;
        let v = HeaderValue::from_bytes(value).map_err(|_| refused(format!("invalid value for header {name:?}")))?;
        headers.append(n, v);
    }
    req.body(kube::client::Body::from(body)).map_err(|e| refused(format!("invalid request: {e}")))
}

/// Reads the request body (DATA frames until the relay ends the stream).
async fn read_body(recv: &mut FramedRecv, limit: usize) -> Result<Bytes, Refusal> {
    let mut body = BytesMut::new();
    loop {
        match recv.next_frame().await {
            Ok(Some(Frame::Data(d))) => {
                if body.len() + d.len() > limit {
                    return Err(Refusal::new(
                        ErrorCode::TooLarge,
                        format!("request body exceeds the agent's limit of {limit} bytes"),
                    ));
                }
                body.extend_from_slice(&d);
            }
            Ok(Some(Frame::Message(m))) => {
                return Err(match frame::decode_stream_message(m) {
                    Ok(stream_message::Kind::Reset(r)) => {
                        Refusal::new(ErrorCode::Cancelled, format!("relay cancelled the request: {}", r.message))
                    }
                    _ => Refusal::new(ErrorCode::Protocol, "unexpected message in the request body"),
                });
            }
            Ok(None) => return Ok(body.freeze()),
            Err(e) => {
                return Err(Refusal::new(ErrorCode::Protocol, format!("request body: {e}")));
            }
        }
    }
}

fn response_head(status: StatusCode, headers: &http::HeaderMap) -> stream_message::Kind {
    stream_message::Kind::ResponseHead(ResponseHead {
        status: u32::from(status.as_u16()),
        headers: headers
            .iter()
            .map(|(k, v)| Header { name: k.as_str().to_string(), value: Bytes::copy_from_slice(v.as_bytes()) })
            .collect(),
    })
}

async fn forward(
    open: StreamOpen,
    mut recv: FramedRecv,
    send: &mut FramedSend,
    state: &AgentState,
    active: &ActiveIdentity,
) {
    let started = Instant::now();
    let mut open = open;
    if !active.grants.is_empty() {
        match verify_grant(&open, active) {
            Ok((g, checked)) => {
                state.metrics.grants_checked.inc(checked.label());
                // The grant alone says who the request is made as.
                open.identity = Some(kubechat_protocol::messages::Identity { user: g.user, groups: g.groups });
                open.request_id = g.request_id;
            }
            Err(e) => {
                warn!(error = %e, "stream refused: invalid grant");
                let refusal = Refusal::new(ErrorCode::GrantInvalid, format!("the agent refused the request: {e}"));
                return reset(send, state, refusal).await;
            }
        }
    }
    let body = if open.upgrade {
        Bytes::new()
    } else {
        match read_body(&mut recv, state.config.max_request_body).await {
            Ok(b) => b,
            Err(r) => return reset(send, state, r).await,
        }
    };
    let bytes_in = body.len() as u64;
    let req = match build_request(&open, body) {
        Ok(r) => r,
        Err(r) => {
            warn!(reason = %r.message, "refused a malformed request");
            return reset(send, state, r).await;
        }
    };
    let client_upgrade = open.upgrade;
    state.metrics.request_bytes.add(bytes_in);
    let mut resp = match state.client.send(req).await {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "kubernetes api server unreachable");
            return reset(
                send,
                state,
                Refusal::new(
                    ErrorCode::UpstreamUnavailable,
                    format!("the agent cannot reach the Kubernetes API server: {e}"),
                ),
            )
            .await;
        }
    };
    let status = resp.status();
    let (path, query) = open.uri.split_once('?').map_or((open.uri.as_str(), None), |(p, q)| (p, Some(q)));
    let verb = kube_request::Target::parse(path, query)
        .and_then(|t| kube_request::classify(&open.method, &t))
        .map_or_else(|_| "unknown".to_string(), |i| i.verb);
    state.metrics.request_durations.observe("api-server", &verb, status.as_u16(), started.elapsed().as_secs_f64());
    send.queue_stream_message(response_head(status, resp.headers()));

    if status == StatusCode::SWITCHING_PROTOCOLS && client_upgrade {
        if send.flush().await.is_err() {
            debug!("relay went away before the response head");
            return;
        }
        let upgraded = match hyper::upgrade::on(&mut resp).await {
            Ok(u) => u,
            Err(e) => {
                return reset(send, state, Refusal::new(ErrorCode::UpstreamFailed, format!("upgrade failed: {e}")))
                    .await;
            }
        };
        let (mut rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));
        let down = async {
            let n = copy_into_frames(&mut rd, send).await.unwrap_or(0);
            state.metrics.response_bytes.add(n);
            n
        };
        let up = async {
            let n = match copy_from_frames(&mut recv, &mut wr).await {
                Ok(FramesEnd::Eof(n) | FramesEnd::Message(_, n)) => n,
                Err(e) => {
                    debug!(error = %e, "upgraded stream from relay ended");
                    0
                }
            };
            let _ = wr.shutdown().await;
            state.metrics.request_bytes.add(n);
        };
        let (bytes_out, ()) = tokio::join!(down, up);
        end(send, status, bytes_in, bytes_out, started, ErrorCode::Ok).await;
        return;
    }
    drop(recv);

    // The head stays queued while body chunks are ready at once, so a small
    // response leaves as one write (head, data, end); whenever the API
    // server makes us wait (a watch, logs -f), what is queued goes first.
    let mut body = resp.into_body();
    let mut bytes_out = 0u64;
    loop {
        let next = match body.frame().now_or_never() {
            Some(next) => next,
            None => {
                if let Err(e) = send.flush().await {
                    debug!(error = %e, "relay stopped reading the response; cancelling upstream");
                    state.metrics.stream_errors.inc("cancelled");
                    return;
                }
                body.frame().await
            }
        };
        match next {
            Some(Ok(f)) => {
                let Ok(data) = f.into_data() else { continue };
                bytes_out += data.len() as u64;
                state.metrics.response_bytes.add(data.len() as u64);
                let written = if data.len() <= COALESCE_LIMIT && send.queued() < DATA_CHUNK_SIZE {
                    send.queue_data(&data);
                    Ok(())
                } else {
                    send.send_data(&data).await
                };
                if let Err(e) = written {
                    debug!(error = %e, "relay stopped reading the response; cancelling upstream");
                    state.metrics.stream_errors.inc("cancelled");
                    return;
                }
            }
            Some(Err(e)) => {
                warn!(error = %e, "api server response failed midway");
                return reset(
                    send,
                    state,
                    Refusal::new(ErrorCode::UpstreamFailed, format!("the API server's response failed: {e}")),
                )
                .await;
            }
            None => break,
        }
    }
    end(send, status, bytes_in, bytes_out, started, ErrorCode::Ok).await;
}

fn verify_grant(
    open: &StreamOpen,
    active: &ActiveIdentity,
) -> Result<(kubechat_protocol::messages::Grant, grant::Checked), grant::GrantError> {
    let own = active.cluster.as_ref().map(|i| i.cluster.as_str()).unwrap_or_default();
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let expected = grant::Expected { cluster: own, method: &open.method, path: &open.uri };
    let (g, checked) = active.grants.verify_gated(&open.grant, None, now, expected)?;
    if active.cluster.as_ref().is_some_and(|i| i.tenant != g.tenant) {
        return Err(grant::GrantError::WrongCluster {
            granted: format!("{}/{}", g.tenant, g.cluster),
            actual: own.to_string(),
        });
    }
    Ok((g, checked))
}

async fn end(
    send: &mut FramedSend,
    status: StatusCode,
    bytes_in: u64,
    bytes_out: u64,
    started: Instant,
    error: ErrorCode,
) {
    let msg = stream_message::Kind::End(StreamEnd {
        status: u32::from(status.as_u16()),
        bytes_in,
        bytes_out,
        duration_us: started.elapsed().as_micros() as u64,
        error: error as i32,
    });
    send.queue_stream_message(msg);
    let _ = send.finish().await;
}
