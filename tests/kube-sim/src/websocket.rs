//! Accepting the WebSocket upgrades of `pods/exec` and `pods/portforward`:
//! the offered subprotocols, the `101 Switching Protocols` answer, and the
//! session run on the upgraded connection in the background.

use std::future::Future;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::error::ApiError;
use crate::server::Body;

/// The server side of an upgraded connection.
pub(crate) type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Whether the request asks for a WebSocket.
pub(crate) fn is_websocket(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The subprotocols the client offered, in order.
pub(crate) fn offered_protocols(req: &Request<Incoming>) -> Vec<String> {
    req.headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect()
}

/// Answers `101 Switching Protocols` with `protocol` and runs `session` on
/// the socket once the upgrade completes. `what` names it in logs.
pub(crate) fn accept<F, Fut>(
    mut req: Request<Incoming>,
    protocol: &'static str,
    what: &'static str,
    session: F,
) -> Result<Response<Body>, ApiError>
where
    F: FnOnce(Socket) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let key = req
        .headers()
        .get("sec-websocket-key")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let accept = HeaderValue::from_str(&accept).map_err(|_| ApiError::bad_request("bad Sec-WebSocket-Key"))?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(io) => session(WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None).await).await,
            Err(e) => tracing::debug!(error = %e, what, "upgrade failed"),
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()).boxed_unsync());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert("sec-websocket-accept", accept);
    h.insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
    Ok(r)
}
