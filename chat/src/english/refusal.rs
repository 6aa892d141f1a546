//! What a sentence may not ask for, and why: flags that pick another
//! cluster or identity (`--kubeconfig`, `--server`, `--token`, `--as`),
//! `--raw`, files and URLs, and the commands KubeChat does not run from a
//! sentence (`exec`, `port-forward`, `proxy`, `edit`, `cp`, `apply`, `run`,
//! …). Checked before anything else is read.

use super::token::Token;

/// Global kubectl flags that choose another cluster, identity or
/// transport.
const IDENTITY_FLAGS: &[&str] = &[
    "kubeconfig",
    "server",
    "token",
    "as",
    "as-group",
    "as-uid",
    "as-user-extra",
    "user",
    "username",
    "password",
    "cluster",
    "context",
    "client-certificate",
    "client-key",
    "certificate-authority",
    "insecure-skip-tls-verify",
    "tls-server-name",
    "cache-dir",
];

/// Who `as …` would act as.
const IDENTITIES: &[&str] = &[
    "user",
    "group",
    "admin",
    "administrator",
    "root",
    "cluster-admin",
    "superuser",
    "serviceaccount",
    "service-account",
    "sa",
    "system",
];

/// kubectl verbs a sentence cannot ask for (not refused by policy: not
/// offered).
const UNOFFERED: &[&str] = &[
    "create",
    "patch",
    "replace",
    "expose",
    "autoscale",
    "taint",
    "diff",
    "explain",
    "config",
    "auth",
    "certificate",
    "wait",
    "version",
    "cluster-info",
    "api-resources",
    "api-versions",
    "kustomize",
    "plugin",
    "completion",
    "install",
    "upgrade",
    "helm",
];

/// Why the sentence in `tokens` is refused, if it is. `first` is the
/// index of its first content word (politeness skipped).
pub(crate) fn check(tokens: &[Token], first: Option<usize>) -> Option<String> {
    let word = |i: usize| tokens.get(i).map(|t| t.word.as_str()).unwrap_or("");
    for (i, t) in tokens.iter().enumerate() {
        let w = t.word.as_str();
        if let Some(long) = w.strip_prefix("--") {
            let name = long.split_once('=').map(|(n, _)| n).unwrap_or(long);
            if IDENTITY_FLAGS.contains(&name) {
                return Some(format!(
                    "--{name} is not available in chat: KubeChat chooses the cluster and identity, and authorizes every request as you."
                ));
            }
            if name == "raw" {
                return Some(raw());
            }
            if matches!(name, "filename" | "kustomize") {
                return Some(files());
            }
        }
        if t.raw == "-s" || t.raw.starts_with("-s=") {
            return Some(
                "-s (--server) is not available in chat: KubeChat chooses the cluster and identity, and authorizes every request as you."
                    .into(),
            );
        }
        if w.contains("://") {
            return Some(
                "KubeChat fetches nothing from a URL; say what you want to see or change in plain words.".into(),
            );
        }
        if (w == "-f" || w == "-k") && tokens.get(i + 1).is_some_and(|n| looks_like_file(&n.word)) {
            return Some(files());
        }
        if w == "raw" && word(i + 1).starts_with('/') {
            return Some(raw());
        }
        if w.contains("kubeconfig") {
            return Some("A kubeconfig is not available in chat: KubeChat chooses the cluster and identity.".into());
        }
        let next = word(i + 1);
        if matches!(w, "impersonate" | "impersonating" | "impersonation" | "sudo")
            || (w == "as" && (IDENTITIES.contains(&next) || next.contains(':')))
        {
            return Some("Acting as someone else (--as) is not available in chat: every request runs as you.".into());
        }
        if w == "bearer" || (matches!(w, "with" | "using" | "use") && matches!(next, "token" | "tokens")) {
            return Some("Tokens are not taken in chat: KubeChat authorizes every request as you.".into());
        }
        if matches!(w, "pause" | "resume") && tokens.iter().any(|t| t.word.starts_with("rollout")) {
            return Some(unoffered(&format!("{w} a rollout")));
        }
        if matches!(w, "exec" | "shell" | "ssh") {
            return Some(exec());
        }
        if matches!(w, "port-forward" | "portforward" | "port-forwarding")
            || (w == "port" && matches!(next, "forward" | "forwarding"))
            || (w == "forward" && matches!(next, "port" | "ports" | "traffic"))
        {
            return Some(
                "port-forward is not available in chat: it needs a local port; use kubectl with your KubeChat kubeconfig."
                    .into(),
            );
        }
    }
    let i = first?;
    let w = word(i);
    let next = word(i + 1);
    let about_keys = matches!(next, "label" | "labels" | "annotation" | "annotations");
    match w {
        "proxy" => Some(
            "kubectl proxy is not available in chat: it opens the API server to any request; ask for what you want to see."
                .into(),
        ),
        "edit" if !about_keys => {
            Some("edit is not available in chat: it needs an editor; use label, annotate, scale or restart.".into())
        }
        "cp" | "copy" | "scp" | "download" | "upload" => {
            Some("Copying files (cp) is not available in chat: KubeChat reads and writes no files.".into())
        }
        "apply" if !about_keys => Some(
            "apply is not available from a sentence: KubeChat reads no files or URLs; paste the manifest itself to apply it."
                .into(),
        ),
        "run" if super::quantity::number(&[next]).is_none() => Some(
            "Starting pods or commands (run) is not available from a sentence; I can scale, restart and roll back workloads."
                .into(),
        ),
        "execute" | "bash" | "sh" | "attach" => Some(exec()),
        "set" if matches!(next, "image" | "env" | "resources" | "serviceaccount" | "selector" | "subject") => {
            Some(unoffered(&format!("set {next}")))
        }
        "pause" | "resume" if next != "scheduling" => Some(unoffered(&format!("{w} a rollout"))),
        w if UNOFFERED.contains(&w) => Some(unoffered(w)),
        _ => None,
    }
}

fn looks_like_file(w: &str) -> bool {
    // a URL is refused as a URL
    !w.contains("://")
        && (w == "-"
            || w.contains('/')
            || w.contains('\\')
            || [".yaml", ".yml", ".json", ".txt", ".conf"].iter().any(|e| w.ends_with(e)))
}

fn raw() -> String {
    "--raw is not available in chat: it sends any path as it is; ask for the resource instead.".into()
}

fn files() -> String {
    "KubeChat reads no files: name the object instead (e.g. “delete pod api-7d9f8c6b5-x2kqp”).".into()
}

fn exec() -> String {
    "Running commands in a container (exec) is not available from a sentence; ask for its logs, or what's wrong with it."
        .into()
}

fn unoffered(what: &str) -> String {
    format!(
        "“{what}” is not something I do from a sentence. I can show, describe, show logs, events and usage, scale, restart, roll back, delete one object, cordon, uncordon, drain, label and annotate."
    )
}
