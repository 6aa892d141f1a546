//! The grammar's words: what it reads past (articles, politeness, status
//! words, words of a verb already read), output formats, and how a word
//! names a resource type — the cluster's discovery first, then plurals of
//! short names (`deploys`), compounds (`stateful sets`) and a few
//! synonyms (`apps`).

use crate::discovery::{ApiResource, Discovery};

/// Words read past wherever they stand. Anything here can never be an
/// object's name, so names people give objects (`web`, `api`, `test`,
/// `default`, `server`) stay out.
#[rustfmt::skip]
const FILLER: &[&str] = &[
    // articles, pronouns, politeness
    "a", "an", "the", "this", "that", "these", "those", "my", "our", "your", "its", "their", "his", "her", "me", "us",
    "i", "we", "you", "it", "they", "them", "he", "she", "someone", "something", "anything", "please", "pls", "plz",
    "kindly", "thanks", "thank", "thx", "ty", "cheers", "hey", "hi", "hello", "yo", "ok", "okay", "alright", "so",
    "well", "now", "right", "just", "quickly", "quick", "asap", "again", "also", "too", "then", "and", "or", "but",
    "can", "could", "would", "will", "shall", "should", "might", "may", "must", "want", "wanna", "like", "need",
    "needs", "let", "help", "try", "go", "ahead", "do", "does", "did", "done", "doing", "is", "are", "am", "was",
    "were", "be", "been", "being", "have", "has", "had", "having", "there", "here", "what", "which", "who", "whom",
    "how", "where", "when", "whether", "if", "sure", "really", "actually", "exactly", "maybe", "probably", "kubechat",
    "bot", "kubectl", "k8s", "kubernetes", "kube", "cluster", "named", "called", "object", "objects", "thing",
    "things", "stuff", "ones", "some", "currently", "current", "existing", "exist", "exists", "available", "active",
    "real", "very", "much", "many", "more", "most", "lot", "lots", "bit", "also", "only", "still", "yet",
    // connectives
    "of", "for", "from", "in", "on", "at", "by", "about", "with", "to", "into", "onto", "over", "under", "within",
    "inside", "as", "per", "via", "up", "down", "out", "off", "back",
    // how things are going (diagnose words when asked why)
    "running", "run", "runs", "failing", "failed", "fail", "fails", "crashing", "crashed", "crash", "crashes",
    "crashloop", "crashlooping", "crashloopbackoff", "broken", "break", "healthy", "unhealthy", "health", "ready",
    "fine", "working", "work", "works", "stuck", "pending", "restarting", "erroring", "error", "errors", "dying",
    "died", "die", "dead", "slow", "starting", "start", "started", "stopped", "stop", "keep", "keeps", "kept",
    "going", "happening", "happened", "matter", "problem", "problems", "issue", "issues", "trouble", "wrong", "bad",
    "status", "state", "alive", "oomkilled", "evicted", "hanging", "hung", "doing", "behaving", "weird", "strange",
    "acting",
    // verbs whose sense was read already
    "show", "list", "get", "display", "give", "print", "view", "see", "fetch", "find", "lookup", "look", "check",
    "count", "tell", "know", "enumerate", "ls", "query", "mark", "make", "set", "put", "add",
    // nouns of a command read already
    "logs", "log", "logging", "output", "stdout", "stderr", "lines", "line", "entries", "replicas", "replica",
    "instances", "instance", "copies", "rollout", "rollouts", "rolling", "roll", "rolled", "revisions", "versions",
    "history", "events", "event", "changes", "changed", "cpu", "memory", "mem", "ram", "usage", "utilization",
    "utilisation", "consumption", "consuming", "using", "uses", "use", "used", "metrics", "load", "resources",
    "resource", "scheduling", "schedulable", "unschedulable", "labels", "labeled", "labelled", "tagged", "selector",
    "matching", "match", "where", "annotations", "scale", "scaled", "top", "recent", "recently", "latest", "last",
    "past", "ago", "new", "newest", "full", "raw", "complete", "entire", "whole", "table", "format", "formatted",
    "information", "info", "details", "detail", "detailed", "progress", "progressing", "finished", "complete",
    "completed", "successful", "succeeded", "rid", "safely", "gracefully", "number", "count",
];

/// Words that are never an object's name even where a name is expected
/// (they belong to some phrase of the grammar).
#[rustfmt::skip]
const KEYWORDS: &[&str] = &[
    "all", "every", "each", "everything", "any", "namespace", "namespaces", "ns", "container", "containers", "yaml",
    "yml", "json", "wide", "previous", "prev", "prior", "since", "last", "past", "revision", "version", "not", "no",
    "never", "label", "annotation", "lines", "line", "before", "after", "follow", "stream", "live", "watch",
    "overwrite", "force", "everywhere", "first", "manifest", "definition", "spec",
];

/// Words of the grammar's commands and quantities: never an object's
/// name ("restart in" names no object called `in`).
#[rustfmt::skip]
const COMMAND_WORDS: &[&str] = &[
    "delete", "remove", "rm", "del", "kill", "destroy", "terminate", "nuke", "erase", "evict", "wipe", "purge",
    "rescale", "resize", "scaling", "restart", "restarted", "redeploy", "bounce", "reboot", "recycle", "relaunch",
    "undo", "rollback", "revert", "downgrade", "cordon", "uncordon", "drain", "evacuate", "unlabel", "relabel",
    "annotate", "unannotate", "describe", "inspect", "diagnose", "troubleshoot", "investigate", "create", "patch",
    "replace", "expose", "autoscale", "taint", "diff", "explain", "edit", "cp", "copy", "apply", "run", "exec",
    "attach", "increase", "decrease", "bump", "reduce", "change", "update", "modify", "ago", "yesterday", "half",
    "second", "seconds", "sec", "secs", "minute", "minutes", "min", "mins", "hour", "hours", "hr", "hrs", "day",
    "days", "week", "weeks", "ignoring", "ignore", "image", "minus", "negative", "tail", "since", "before", "after",
    "until",
];

/// Words never read as a resource type although discovery names one so
/// (`no` is nodes' short name, and the English word).
const NOT_RESOURCES: &[&str] = &["no", "all"];

/// Words never joined into a compound resource word.
#[rustfmt::skip]
const JOIN_STOP: &[&str] = &[
    "the", "a", "an", "of", "in", "on", "to", "for", "and", "or", "with", "from", "all", "my", "this", "that", "is",
    "are", "me", "show", "list", "get",
];

/// Whether `w` is read past.
pub(crate) fn is_filler(w: &str) -> bool {
    FILLER.contains(&w)
}

/// Whether `w` belongs to a phrase or a command and can never be a name.
pub(crate) fn is_keyword(w: &str) -> bool {
    KEYWORDS.contains(&w) || COMMAND_WORDS.contains(&w)
}

/// An output format word.
pub(crate) fn format(w: &str) -> Option<&'static str> {
    match w {
        "yaml" | "yml" => Some("yaml"),
        "json" => Some("json"),
        "wide" => Some("wide"),
        _ => None,
    }
}

/// Whether `s` can be an object's name (lowercase DNS subdomain).
pub(crate) fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 253
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Whether `s` can be a namespace's name (DNS label).
pub(crate) fn is_namespace(s: &str) -> bool {
    is_name(s) && s.len() <= 63 && !s.contains('.')
}

/// A label or annotation key: optional DNS prefix and `/`, then at most
/// 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
pub(crate) fn is_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(is_name)
}

/// A label value: empty, or at most 63 of `[A-Za-z0-9_.-]`,
/// alphanumeric at both ends.
pub(crate) fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// A selector term as a person types it: `app=api`, `tier!=web`,
/// several joined by commas.
pub(crate) fn is_selector(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 1024
        && s.split(',').all(|term| {
            let (k, v) = match term.split_once("!=").or_else(|| term.split_once("==")).or_else(|| term.split_once('='))
            {
                Some(kv) => kv,
                None => return false,
            };
            is_key(k) && is_label_value(v)
        })
}

/// The resource type the words at the start of `words` name, and how
/// many words: `pods`, `deploy`, `deploys`, `stateful sets`,
/// `persistent volume claims`, `widgets.example.com`, `apps`.
pub(crate) fn resource<'d>(d: &'d Discovery, words: &[&str]) -> Option<(&'d ApiResource, usize)> {
    for n in [3, 2] {
        if words.len() >= n && words[..n].iter().all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase())) {
            if words[..n].iter().any(|w| JOIN_STOP.contains(w)) {
                continue;
            }
            if let Some(r) = one_word(d, &words[..n].concat()) {
                return Some((r, n));
            }
        }
    }
    one_word(d, words.first()?).map(|r| (r, 1))
}

/// The resource type one word names.
pub(crate) fn one_word<'d>(d: &'d Discovery, w: &str) -> Option<&'d ApiResource> {
    if w.is_empty() || w.len() > 253 || NOT_RESOURCES.contains(&w) {
        return None;
    }
    if let Some(r) = d.find(w) {
        return Some(r);
    }
    // `config-maps`, `stateful-sets`
    if w.contains('-') && w.split('-').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase())) {
        return one_word(d, &w.replace('-', ""));
    }
    if !w.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    // plurals of short names and kinds: deploys, svcs, pvcs, hpas
    if let Some(stem) = w.strip_suffix('s').filter(|s| s.len() >= 2)
        && let Some(r) = d.find(stem)
    {
        return Some(r);
    }
    let (group, plural) = match w {
        "apps" | "application" | "applications" | "workloads" | "workload" => ("apps", "deployments"),
        "volumes" | "volume" => ("", "persistentvolumes"),
        "claims" | "volumeclaims" | "volumeclaim" => ("", "persistentvolumeclaims"),
        "crons" => ("batch", "cronjobs"),
        _ => return None,
    };
    d.by_plural(group, plural)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_words() {
        let d = Discovery::builtin();
        let plural = |s: &str| {
            let w: Vec<&str> = s.split(' ').collect();
            resource(&d, &w).map(|(r, n)| (r.plural.clone(), n))
        };
        assert_eq!(plural("deploys in web"), Some(("deployments".into(), 1)));
        assert_eq!(plural("stateful sets"), Some(("statefulsets".into(), 2)));
        assert_eq!(plural("persistent volume claims"), Some(("persistentvolumeclaims".into(), 3)));
        assert_eq!(plural("config-maps"), Some(("configmaps".into(), 1)));
        assert_eq!(plural("svcs"), Some(("services".into(), 1)));
        assert_eq!(plural("apps"), Some(("deployments".into(), 1)));
        assert_eq!(plural("pod disruption budgets"), Some(("poddisruptionbudgets".into(), 3)));
        assert_eq!(plural("no"), None);
        assert_eq!(plural("the pods"), None);
        assert_eq!(plural("api"), None);
    }

    #[test]
    fn names_keys_selectors() {
        assert!(is_name("api-7d9f8c6b5-x2kqp"));
        assert!(is_name("widgets.example.com"));
        assert!(!is_name("-api") && !is_name("api-") && !is_name("Api") && !is_name(""));
        assert!(is_namespace("kube-system") && !is_namespace("a.b"));
        assert!(is_key("app.kubernetes.io/name") && !is_key("bad key") && !is_key("/x"));
        assert!(is_selector("app=api,tier!=web") && !is_selector("app") && !is_selector("a=b c"));
    }
}
