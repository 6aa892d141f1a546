//! End-to-end harness for KubeChat: fresh certificates per test, a built-in
//! HTTP backend standing in for an API server, in-process relays and agents
//! (or the real relay binary as a child process), mutual-TLS clients of the
//! relay's internal listener, and an `eventually` helper.
//!
//! # Layout
//! - [`pki`]: a fresh CA set and certificates per test.
//! - [`backend`]: the HTTP backend (echo, checksums, gates, WebSocket, redirects).
//! - [`client`]: HTTP/1.1, HTTP/2 and WebSocket clients of the relay's internal listener.
//! - [`kubectl`]: the real kubectl, installed on first use, one cache per test.
//! - [`kubectl_suite`]: what a person does with kubectl, checked end to end.
//! - [`logscan`]: capturing every log line to prove no secret reaches one.
//! - [`helm`]: the real Helm library (helm-sdkpy): lint, install, and the registration's `helm install` command.
//! - [`pod`]: running a pod's container from its spec, as a kubelet would.
//! - [`platform`]: control plane, relay, agent and kube-sim wired together.
//! - [`postgres`]: fresh databases on the test PostgreSQL server.
//! - [`raw`]: raw HTTP/1.1 over TLS, sent byte for byte (`curl --path-as-is`).
//! - [`shapes`]: request shapes, read by the control plane and by kube-sim.
//! - [`stack`]: starting relays and agents on 127.0.0.1:0.
//! - [`tinyproxy`]: a real HTTP proxy on a free port.
//! - [`wait`]: `eventually` and a panic counter.

pub mod backend;
pub mod client;
pub mod helm;
pub mod kubectl;
pub mod kubectl_suite;
pub mod logscan;
pub mod pki;
pub mod platform;
pub mod pod;
pub mod postgres;
pub mod raw;
pub mod shapes;
pub mod stack;
pub mod tinyproxy;
pub mod wait;
pub mod web_client;
