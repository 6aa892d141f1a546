//! Request parsing, shared with the control plane (see
//! `kubechat_protocol::kube_request`).

pub use kubechat_protocol::kube_request::*;
