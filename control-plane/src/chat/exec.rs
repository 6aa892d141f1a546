//! `exec` from chat: one command, no terminal, run through the kube path's
//! WebSocket upgrade (`v5.channel.k8s.io`) exactly as kubectl runs it, its
//! output collected (at most [`MAX_OUTPUT`] bytes, [`TIMEOUT`] long).

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use base64::Engine;
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::client::{ClusterClient, KubeError};
use super::reads::encode;

/// Longest a chat exec may run.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Most output kept (stdout and stderr together).
pub const MAX_OUTPUT: usize = 256 * 1024;

/// What a command printed, and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecOutput {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// The exit code (0 on success; from the error channel's Status).
    pub exit_code: i64,
    /// The error channel's message, when it failed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Cut at [`MAX_OUTPUT`] or [`TIMEOUT`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// The exec path of `command` in `pod`.
pub fn path(ns: &str, pod: &str, container: Option<&str>, command: &[String]) -> String {
    let mut q: Vec<String> = command.iter().map(|c| format!("command={}", encode(c))).collect();
    if let Some(c) = container {
        q.push(format!("container={}", encode(c)));
    }
    q.push("stderr=true".into());
    q.push("stdout=true".into());
    format!("/api/v1/namespaces/{ns}/pods/{pod}/exec?{}", q.join("&"))
}

/// Runs `command` in `pod` and collects what it prints.
pub async fn run(
    client: &ClusterClient,
    ns: &str,
    pod: &str,
    container: Option<&str>,
    command: &[String],
) -> Result<ExecOutput, KubeError> {
    let key: [u8; 16] = rand::random();
    let mut b = Request::builder().method("GET").uri(path(ns, pod, container, command));
    if let Some(h) = b.headers_mut() {
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io"));
        if let Ok(k) = HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(key)) {
            h.insert(header::SEC_WEBSOCKET_KEY, k);
        }
    }
    let req = b.body(Body::empty()).map_err(|e| KubeError::local(e.to_string()))?;
    let mut resp = client.raw(req).await;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(resp.into_body(), 64 * 1024))
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        return Err(KubeError {
            code: status.as_u16(),
            reason: v["reason"].as_str().unwrap_or("Failure").to_string(),
            message: v["message"]
                .as_str()
                .map_or_else(|| format!("exec was answered {status}, not an upgrade"), str::to_string),
        });
    }
    let upgraded =
        hyper::upgrade::on(&mut resp).await.map_err(|e| KubeError::local(format!("exec upgrade failed: {e}")))?;
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    let mut out = ExecOutput::default();
    let collect = async {
        while let Some(msg) = ws.next().await {
            let data = match msg {
                Ok(Message::Binary(d)) => d.to_vec(),
                Ok(Message::Text(t)) => t.as_bytes().to_vec(),
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            let Some((&channel, rest)) = data.split_first() else { continue };
            let text = String::from_utf8_lossy(rest);
            match channel {
                1 | 2 => {
                    let room = MAX_OUTPUT.saturating_sub(out.stdout.len() + out.stderr.len());
                    let mut part: String = text.into_owned();
                    if part.len() > room {
                        let mut end = room;
                        while !part.is_char_boundary(end) {
                            end -= 1;
                        }
                        part.truncate(end);
                        out.truncated = true;
                    }
                    if channel == 1 { out.stdout.push_str(&part) } else { out.stderr.push_str(&part) }
                }
                3 => {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    if v["status"] != "Success" {
                        out.message = v["message"].as_str().unwrap_or("").to_string();
                        out.exit_code = v["details"]["causes"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|c| c["reason"] == "ExitCode")
                            .and_then(|c| c["message"].as_str()?.parse().ok())
                            .unwrap_or(1);
                    }
                }
                _ => {}
            }
        }
    };
    if tokio::time::timeout(TIMEOUT, collect).await.is_err() {
        out.truncated = true;
        out.message = format!("stopped after {} s", TIMEOUT.as_secs());
    }
    Ok(out)
}

/// Whether `command` is allowed by `allow_list`: some entry is a prefix of
/// it, word for word (`["ls"]` allows `ls -l /`; `["cat", "/etc/os-release"]`
/// allows only that).
pub fn allowed(allow_list: &[Vec<String>], command: &[String]) -> bool {
    allow_list
        .iter()
        .any(|entry| !entry.is_empty() && command.len() >= entry.len() && command[..entry.len()] == entry[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_allow_list_matches_whole_words_from_the_start() {
        let list = vec![v(&["ls"]), v(&["cat", "/etc/os-release"])];
        assert!(allowed(&list, &v(&["ls", "-l", "/"])));
        assert!(allowed(&list, &v(&["cat", "/etc/os-release"])));
        assert!(!allowed(&list, &v(&["cat", "/etc/shadow"])));
        assert!(!allowed(&list, &v(&["lsblk"])));
        assert!(!allowed(&list, &v(&["sh", "-c", "ls"])));
        assert!(!allowed(&[vec![]], &v(&["rm"])));
    }

    #[test]
    fn the_exec_path_carries_each_argument() {
        assert_eq!(
            path("web", "api-1", Some("app"), &v(&["ls", "-l", "a b"])),
            "/api/v1/namespaces/web/pods/api-1/exec?command=ls&command=-l&command=a%20b&container=app&stderr=true&stdout=true"
        );
    }
}
