//! `pods/exec` over WebSocket (`v5.channel.k8s.io`, also v4) with a tiny
//! built-in shell: echo, cat, env, hostname, ls, pwd, true, false, exit.
//!
//! Every WebSocket binary message starts with a channel byte: 0 stdin,
//! 1 stdout, 2 stderr, 3 status (a `Status` object), 4 resize, 255 close
//! (`[255, 0]`: the client closed stdin).

use std::collections::HashMap;

use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::json;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::error::ApiError;
use crate::server::Body;
use crate::websocket;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const CLOSE: u8 = 255;

/// The channel protocols accepted, most preferred first.
const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// What the caller asked to run.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// Pod name (the shell's hostname).
    pub pod: String,
    /// Container name.
    pub container: String,
    /// argv.
    pub command: Vec<String>,
    /// Whether stdin is attached.
    pub stdin: bool,
    /// Whether a TTY is allocated.
    pub tty: bool,
}

impl ExecRequest {
    /// From the query of an exec request.
    pub fn from_query(pod: &str, container: &str, pairs: &[(String, String)]) -> Self {
        let flag = |k: &str| pairs.iter().any(|(kk, v)| kk == k && (v == "true" || v == "1"));
        Self {
            pod: pod.into(),
            container: container.into(),
            command: pairs.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect(),
            stdin: flag("stdin"),
            tty: flag("tty"),
        }
    }
}

/// Answers the upgrade and runs the session in the background.
pub fn upgrade(req: Request<Incoming>, exec: ExecRequest) -> Result<Response<Body>, ApiError> {
    if !websocket::is_websocket(&req) {
        return Err(ApiError::bad_request("kube-sim serves exec over WebSocket only (Upgrade: websocket)"));
    }
    let offered = websocket::offered_protocols(&req);
    let Some(protocol) = PROTOCOLS.iter().find(|p| offered.iter().any(|o| o == *p)) else {
        return Err(ApiError::bad_request(format!(
            "no supported channel protocol offered (want one of {PROTOCOLS:?}, got {offered:?})"
        )));
    };
    websocket::accept(req, protocol, "exec", move |ws| session(ws, exec))
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::binary(v)
}

/// The outcome of one command line.
struct Outcome {
    stdout: String,
    stderr: String,
    code: i32,
    exit: bool,
}

fn env_of(exec: &ExecRequest) -> HashMap<&'static str, String> {
    HashMap::from([
        ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()),
        ("HOSTNAME", exec.pod.clone()),
        ("HOME", "/root".to_string()),
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1".to_string()),
        ("KUBERNETES_SERVICE_PORT", "443".to_string()),
    ])
}

/// Runs one command of the tiny shell.
fn run(argv: &[String], exec: &ExecRequest) -> Outcome {
    let ok = |stdout: String| Outcome { stdout, stderr: String::new(), code: 0, exit: false };
    let Some(cmd) = argv.first() else { return ok(String::new()) };
    let args = &argv[1..];
    match cmd.as_str() {
        "echo" => ok(format!("{}\n", args.join(" "))),
        "hostname" => ok(format!("{}\n", exec.pod)),
        "pwd" => ok("/\n".into()),
        "env" | "printenv" => {
            let env = env_of(exec);
            let mut keys: Vec<&&str> = env.keys().collect();
            keys.sort();
            ok(keys.iter().map(|k| format!("{k}={}\n", env[**k])).collect())
        }
        "ls" => ok("bin\ndev\netc\nhome\nproc\nroot\nsys\ntmp\nusr\nvar\n".into()),
        "true" => ok(String::new()),
        "false" => Outcome { stdout: String::new(), stderr: String::new(), code: 1, exit: false },
        "cat" if args.first().is_some_and(|a| a == "/etc/hostname") => ok(format!("{}\n", exec.pod)),
        "cat" => Outcome {
            stdout: String::new(),
            stderr: format!(
                "cat: can't open '{}': No such file or directory\n",
                args.first().map_or("", String::as_str)
            ),
            code: 1,
            exit: false,
        },
        "exit" => Outcome {
            stdout: String::new(),
            stderr: String::new(),
            code: args.first().and_then(|c| c.parse().ok()).unwrap_or(0),
            exit: true,
        },
        other => Outcome { stdout: String::new(), stderr: format!("sh: {other}: not found\n"), code: 127, exit: false },
    }
}

fn status(code: i32) -> Vec<u8> {
    let s = if code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({"metadata": {}, "status": "Failure", "message": format!("command terminated with non-zero exit code: error executing command [sh], exit code {code}"),
               "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
    };
    serde_json::to_vec(&s).unwrap_or_default()
}

async fn session<S>(ws: WebSocketStream<S>, exec: ExecRequest)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = ws.split();
    let nl = |s: &str| if exec.tty { s.replace('\n', "\r\n") } else { s.to_string() };
    let interactive_shell =
        matches!(exec.command.first().map(String::as_str), Some("sh" | "bash" | "/bin/sh" | "/bin/bash"))
            && exec.command.len() == 1;
    let code = if exec.command.first().is_some_and(|c| c == "cat") && exec.command.len() == 1 {
        // cat: stdin to stdout until stdin closes.
        loop {
            match rx.next().await {
                Some(Ok(Message::Binary(b)))
                    if b.first() == Some(&STDIN) && tx.send(frame(STDOUT, &b[1..])).await.is_err() =>
                {
                    return;
                }
                Some(Ok(Message::Binary(b))) if b.first() == Some(&CLOSE) => break,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                _ => {}
            }
        }
        0
    } else if interactive_shell {
        let mut line = Vec::new();
        let mut code = 0;
        let prompt = "/ # ";
        if tx.send(frame(STDOUT, prompt.as_bytes())).await.is_err() {
            return;
        }
        'outer: loop {
            match rx.next().await {
                Some(Ok(Message::Binary(b))) if b.first() == Some(&STDIN) => {
                    for &c in &b[1..] {
                        if exec.tty && c != b'\r' && c != b'\n' {
                            let _ = tx.send(frame(STDOUT, &[c])).await;
                        }
                        if c == b'\r' || c == b'\n' {
                            if exec.tty {
                                let _ = tx.send(frame(STDOUT, b"\r\n")).await;
                            }
                            let text = String::from_utf8_lossy(&line).to_string();
                            line.clear();
                            let argv: Vec<String> = text.split_whitespace().map(str::to_string).collect();
                            let out = run(&argv, &exec);
                            code = out.code;
                            if !out.stdout.is_empty() {
                                let _ = tx.send(frame(STDOUT, nl(&out.stdout).as_bytes())).await;
                            }
                            if !out.stderr.is_empty() {
                                let ch = if exec.tty { STDOUT } else { STDERR };
                                let _ = tx.send(frame(ch, nl(&out.stderr).as_bytes())).await;
                            }
                            if out.exit {
                                break 'outer;
                            }
                            let _ = tx.send(frame(STDOUT, prompt.as_bytes())).await;
                        } else if c == 0x7f || c == 0x08 {
                            line.pop();
                        } else if c == 0x04 && line.is_empty() {
                            break 'outer;
                        } else {
                            line.push(c);
                        }
                    }
                }
                Some(Ok(Message::Binary(b))) if b.first() == Some(&CLOSE) => break,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                _ => {}
            }
        }
        code
    } else {
        let argv: Vec<String> = match exec.command.as_slice() {
            [sh, c, script] if (sh == "sh" || sh == "/bin/sh") && c == "-c" => {
                script.split_whitespace().map(str::to_string).collect()
            }
            other => other.to_vec(),
        };
        let out = run(&argv, &exec);
        if !out.stdout.is_empty() {
            let _ = tx.send(frame(STDOUT, nl(&out.stdout).as_bytes())).await;
        }
        if !out.stderr.is_empty() {
            let _ = tx.send(frame(if exec.tty { STDOUT } else { STDERR }, nl(&out.stderr).as_bytes())).await;
        }
        out.code
    };
    let _ = tx.send(frame(STATUS, &status(code))).await;
    let normal = CloseFrame { code: CloseCode::Normal, reason: "".into() };
    let _ = tx.send(Message::Close(Some(normal))).await;
    let _ = tx.flush().await;
}
