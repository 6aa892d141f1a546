//! KubeChat's chat commands, without I/O.
//!
//! - [`discovery`]: the resource types a cluster serves (from its live
//!   discovery), and how a word names one (plural, singular, short name,
//!   kind, CRDs).
//! - [`argv`]: a kubectl command line, parsed with kubectl's own grammar
//!   (never a shell) into a [`argv::Command`], or refused with a reason.
//! - [`english`]: plain English, read by a deterministic grammar, into a
//!   kubectl command line (or a question back); nothing is sent anywhere.
//!
//! What a command does to the cluster (its API requests, dry run,
//! confirmation) is planned by the control plane's `chat` module, which
//! classifies every request with the kube path's own classifier.

pub mod argv;
pub mod discovery;
pub mod english;
