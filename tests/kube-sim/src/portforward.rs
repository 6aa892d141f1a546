//! `pods/portforward` over WebSocket (`SPDY/3.1+portforward.k8s.io`): SPDY/3.1
//! frames carried in WebSocket binary messages (a frame may span messages).
//!
//! Per forwarded connection kubectl opens an error stream and a data stream
//! (`streamtype`, `port`, `requestid` headers, zlib-compressed with the SPDY
//! dictionary). The simulated pod answers HTTP on each port its containers
//! declare; other ports get an error on the error stream, like a refused
//! connection in a real pod.

use std::collections::HashMap;

use bytes::{Buf, BufMut, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::error::ApiError;
use crate::server::Body;
use crate::websocket;

/// The subprotocol kubectl offers for port-forward over WebSocket.
pub const PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 0x01;

/// The SPDY/3 header-compression dictionary (draft 3, section 2.6.10.1):
/// length-prefixed header names and values, then a run of common text.
fn spdy_dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized",
        "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable",
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut d = Vec::with_capacity(1424);
    for w in WORDS {
        d.put_u32(w.len() as u32);
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(TAIL.as_bytes());
    d
}

/// One direction's zlib stream for SPDY header blocks.
struct HeaderCodec {
    inflate: Decompress,
    deflate: Compress,
    dictionary: Vec<u8>,
}

impl HeaderCodec {
    fn new() -> Self {
        Self {
            inflate: Decompress::new(true),
            deflate: Compress::new(Compression::fast(), true),
            dictionary: spdy_dictionary(),
        }
    }

    fn decode(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let mut pos = 0;
        loop {
            let before = self.inflate.total_in();
            out.reserve(1024);
            match self.inflate.decompress_vec(&block[pos..], &mut out, FlushDecompress::Sync) {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&self.dictionary)
                        .map_err(|e| format!("spdy dictionary rejected: {e}"))?;
                }
                Err(e) => return Err(format!("bad header block: {e}")),
            }
            pos += (self.inflate.total_in() - before) as usize;
            if pos >= block.len() && out.capacity() > out.len() {
                break;
            }
        }
        parse_pairs(&out)
    }

    fn encode(&mut self, pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut plain = Vec::new();
        plain.put_u32(pairs.len() as u32);
        for (k, v) in pairs {
            plain.put_u32(k.len() as u32);
            plain.extend_from_slice(k.as_bytes());
            plain.put_u32(v.len() as u32);
            plain.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut pos = 0;
        loop {
            let before = self.deflate.total_in();
            out.reserve(256);
            if self.deflate.compress_vec(&plain[pos..], &mut out, FlushCompress::Sync).is_err() {
                break;
            }
            pos += (self.deflate.total_in() - before) as usize;
            if pos >= plain.len() && out.capacity() > out.len() {
                break;
            }
        }
        out
    }
}

fn parse_pairs(b: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut b = b;
    let take = |b: &mut &[u8]| -> Result<String, String> {
        if b.len() < 4 {
            return Err("truncated header block".into());
        }
        let n = b.get_u32() as usize;
        if b.len() < n {
            return Err("truncated header block".into());
        }
        let s = String::from_utf8_lossy(&b[..n]).into_owned();
        b.advance(n);
        Ok(s)
    };
    if b.len() < 4 {
        return Err("empty header block".into());
    }
    let count = b.get_u32();
    let mut pairs = Vec::new();
    for _ in 0..count {
        let k = take(&mut b)?;
        let v = take(&mut b)?;
        pairs.push((k, v));
    }
    Ok(pairs)
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Message {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.put_u16(0x8003);
    f.put_u16(kind);
    f.put_u32((u32::from(flags) << 24) | payload.len() as u32);
    f.extend_from_slice(payload);
    Message::binary(f)
}

fn data(stream: u32, flags: u8, payload: &[u8]) -> Message {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.put_u32(stream & 0x7fff_ffff);
    f.put_u32((u32::from(flags) << 24) | payload.len() as u32);
    f.extend_from_slice(payload);
    Message::binary(f)
}

/// Answers the upgrade and runs the session in the background.
pub fn upgrade(req: Request<Incoming>, pod: String, ports: Vec<u16>) -> Result<Response<Body>, ApiError> {
    if !websocket::is_websocket(&req) || !websocket::offered_protocols(&req).iter().any(|p| p == PROTOCOL) {
        return Err(ApiError::bad_request(format!("kube-sim serves port-forward over WebSocket with {PROTOCOL} only")));
    }
    websocket::accept(req, PROTOCOL, "port-forward", move |ws| async move {
        if let Err(e) = session(ws, &pod, &ports).await {
            tracing::debug!(error = %e, "port-forward session ended with an error");
        }
    })
}

#[derive(Default)]
struct Forward {
    error_stream: Option<u32>,
    data_stream: Option<u32>,
    port: u16,
    request: Vec<u8>,
    answered: bool,
}

fn header_value<'a>(pairs: &'a [(String, String)], name: &str) -> &'a str {
    pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map_or("", |(_, v)| v.as_str())
}

async fn session<S>(ws: WebSocketStream<S>, pod: &str, ports: &[u16]) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = ws.split();
    let mut codec = HeaderCodec::new();
    let mut buf = BytesMut::new();
    let mut forwards: HashMap<String, Forward> = HashMap::new();
    let mut stream_to_request: HashMap<u32, String> = HashMap::new();
    while let Some(msg) = rx.next().await {
        match msg.map_err(|e| e.to_string())? {
            Message::Binary(b) => buf.extend_from_slice(&b),
            Message::Close(_) => break,
            _ => continue,
        }
        while buf.len() >= 8 {
            let len = (u32::from_be_bytes([0, buf[5], buf[6], buf[7]])) as usize;
            if buf.len() < 8 + len {
                break;
            }
            let head = buf.split_to(8);
            let payload = buf.split_to(len).freeze();
            let flags = head[4];
            if head[0] & 0x80 != 0 {
                let kind = u16::from_be_bytes([head[2], head[3]]);
                match kind {
                    SYN_STREAM => {
                        if payload.len() < 10 {
                            return Err("short SYN_STREAM".into());
                        }
                        let id = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff;
                        let pairs = codec.decode(&payload[10..])?;
                        let request = header_value(&pairs, "requestid").to_string();
                        let f = forwards.entry(request.clone()).or_default();
                        f.port = header_value(&pairs, "port").parse().unwrap_or(0);
                        match header_value(&pairs, "streamtype") {
                            "error" => f.error_stream = Some(id),
                            "data" => f.data_stream = Some(id),
                            other => return Err(format!("unknown stream type {other:?}")),
                        }
                        stream_to_request.insert(id, request);
                        let mut reply = Vec::new();
                        reply.put_u32(id);
                        reply.extend(codec.encode(&[]));
                        tx.send(control(SYN_REPLY, 0, &reply)).await.map_err(|e| e.to_string())?;
                    }
                    PING => {
                        tx.send(control(PING, 0, &payload)).await.map_err(|e| e.to_string())?;
                    }
                    GOAWAY => return Ok(()),
                    RST_STREAM => {}
                    _ => {}
                }
                continue;
            }
            let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
            let Some(request) = stream_to_request.get(&id).cloned() else { continue };
            let Some(f) = forwards.get_mut(&request) else { continue };
            if f.data_stream != Some(id) || f.answered {
                continue;
            }
            f.request.extend_from_slice(&payload);
            let complete = f.request.windows(4).any(|w| w == b"\r\n\r\n") || flags & FLAG_FIN != 0;
            if !complete {
                continue;
            }
            f.answered = true;
            let (data_id, error_id) = (id, f.error_stream.unwrap_or(0));
            if ports.contains(&f.port) {
                let body = format!("hello from {pod} port {}\n", f.port);
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                tx.send(data(data_id, 0, resp.as_bytes())).await.map_err(|e| e.to_string())?;
            } else {
                let msg = format!(
                    "error forwarding port {} to pod {pod}: failed to connect to localhost:{}: connection refused",
                    f.port, f.port
                );
                tx.send(data(error_id, 0, msg.as_bytes())).await.map_err(|e| e.to_string())?;
            }
            tx.send(data(data_id, FLAG_FIN, &[])).await.map_err(|e| e.to_string())?;
            tx.send(data(error_id, FLAG_FIN, &[])).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_has_the_spec_length() {
        assert_eq!(spdy_dictionary().len(), 1423);
    }

    #[test]
    fn header_blocks_round_trip_through_one_zlib_stream() {
        let mut client = HeaderCodec::new();
        let mut server = HeaderCodec::new();
        // Compress on the "client" with the dictionary, as Go's spdystream does.
        client.deflate = Compress::new(Compression::fast(), true);
        client.deflate.set_dictionary(&spdy_dictionary()).expect("dictionary");
        for port in ["8080", "9090"] {
            let block = client.encode(&[("streamtype", "data"), ("port", port), ("requestid", "0")]);
            let pairs = server.decode(&block).expect("decodes");
            assert_eq!(header_value(&pairs, "port"), port);
            assert_eq!(header_value(&pairs, "streamtype"), "data");
        }
    }
}
