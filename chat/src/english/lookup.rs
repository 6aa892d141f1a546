//! Matching a typed object name against the live objects: an exact name
//! wins; then, for pods, the pods of a workload so named (`api` →
//! `api-7d9f8c6b5-x2kqp`, `db` → `db-0`); then a prefix (`api-7`,
//! `front`). One candidate is the command; several are a question (for a
//! write as for a read: nothing is picked among several); none is not
//! understood.

use super::command::nope;
use super::{Choice, Draft, Interpretation, Question};

/// The most choices a question lists.
const MAX_CHOICES: usize = 20;

/// `draft` with its lookup matched against `names`.
pub(crate) fn resolve(draft: Draft, names: &[String]) -> Interpretation {
    let Some(lookup) = &draft.lookup else {
        return Interpretation::Command(draft);
    };
    if lookup.argv_index >= draft.argv.len() {
        return nope("This command has no name to look up.");
    }
    let typed = lookup.typed.to_lowercase();
    let kind = lookup.resource.singular.clone();
    let place = match &lookup.namespace {
        Some(ns) => format!(" in {ns}"),
        None => String::new(),
    };
    // Names no object can have (an API server's bug or malice) are never
    // offered: a control character or 254+ bytes would only be refused
    // later, as an argument.
    let mut live: Vec<&str> = names.iter().map(String::as_str).filter(|n| could_be_a_name(n)).collect();
    live.sort_unstable();
    live.dedup();
    let with = |name: &str| {
        let mut argv = draft.argv.clone();
        argv[lookup.argv_index] = name.to_string();
        argv
    };
    if live.contains(&typed.as_str()) {
        return Interpretation::Command(Draft { argv: with(&typed), lookup: None });
    }
    let mut candidates: Vec<&str> = Vec::new();
    if lookup.resource.plural == "pods" && lookup.resource.group.is_empty() {
        candidates = live.iter().copied().filter(|n| is_pod_of(n, &typed)).collect();
    }
    if candidates.is_empty() && !typed.is_empty() {
        candidates = live.iter().copied().filter(|n| n.starts_with(typed.as_str())).collect();
    }
    match candidates.as_slice() {
        [] => {
            let some: Vec<&str> = live.iter().copied().take(5).collect();
            let listed = if some.is_empty() {
                format!(" (there are no {}{place})", lookup.resource.plural)
            } else {
                format!(
                    " ({}{} are: {})",
                    if live.len() > 5 { "some " } else { "" },
                    lookup.resource.plural,
                    some.join(", ")
                )
            };
            nope(format!("No {kind}{place} matches “{}”{listed}.", lookup.typed))
        }
        [one] => Interpretation::Command(Draft { argv: with(one), lookup: None }),
        many => {
            let more = if many.len() > MAX_CHOICES {
                format!(" (the first {MAX_CHOICES} of {})", many.len())
            } else {
                String::new()
            };
            Interpretation::Question(Question {
                text: format!("Several {}{place} match “{}”: which one?{more}", lookup.resource.plural, lookup.typed),
                choices: many
                    .iter()
                    .take(MAX_CHOICES)
                    .map(|n| Choice { label: n.to_string(), argv: with(n) })
                    .collect(),
            })
        }
    }
}

/// Whether an object could have the name `n`: 1–253 bytes, no control
/// characters (the API server's own limit for every resource's names).
fn could_be_a_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 253 && !n.chars().any(char::is_control)
}

/// Whether `pod` is one of workload `owner`'s pods: `owner-<hash>-<id>`
/// (a Deployment's), `owner-<id>` (a DaemonSet's or Job's),
/// `owner-<ordinal>` (a StatefulSet's).
fn is_pod_of(pod: &str, owner: &str) -> bool {
    let Some(rest) = pod.strip_prefix(owner).and_then(|r| r.strip_prefix('-')) else { return false };
    let alnum = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    match rest.split('-').collect::<Vec<_>>().as_slice() {
        [hash, id] => {
            // ReplicaSet hashes carry digits: `api-gateway-x7k2p` is not `api`'s
            (1..=10).contains(&hash.len())
                && alnum(hash)
                && hash.bytes().any(|b| b.is_ascii_digit())
                && id.len() == 5
                && alnum(id)
        }
        [id] => (id.len() == 5 && alnum(id)) || (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_of_a_workload() {
        assert!(is_pod_of("api-7d9f8c6b5-x2kqp", "api"));
        assert!(is_pod_of("db-0", "db"));
        assert!(is_pod_of("log-agent-x7k2p", "log-agent"));
        assert!(!is_pod_of("api-gateway-6f7g8h9k4-zt5qp", "api"));
        assert!(!is_pod_of("apiserver-x", "api"));
        assert!(!is_pod_of("api", "api"));
        assert!(!is_pod_of("api-gateway-x7k2p", "api"));
    }
}
