//! Properties of the English grammar over arbitrary input: it never
//! panics; no command line it gives (a command, or a question's choice)
//! holds a refused flag or verb; a write names exactly one object; kubectl's
//! own grammar accepts every command line; the same input always reads the
//! same; an object lookup points at the name typed.

use kubechat_chat::argv;
use kubechat_chat::discovery::{ApiResource, Discovery};
use kubechat_chat::english::{Interpretation, MAX_CHARS, interpret, resolve};
use proptest::prelude::*;

/// Words that reach every part of the grammar, and some that should not.
#[rustfmt::skip]
const VOCABULARY: &[&str] = &[
    "show", "list", "get", "describe", "logs", "log", "of", "for", "api", "frontend", "db-0", "db", "sim-node-1",
    "api-7", "api-7d9f8c6b5-x2kqp", "pods", "pod", "deployment", "deploy", "svc", "nodes", "node", "namespace", "ns",
    "in", "web", "kube-system", "all", "every", "each", "any", "everything", "everywhere", "-n", "-A", "-o", "yaml",
    "wide", "json", "as", "with", "label", "labels", "annotation", "app=api", "tier=web", "tier-", "owner=ops",
    "last", "past", "50", "lines", "10m", "1h30m", "minutes", "hour", "days", "since", "ago", "yesterday", "half",
    "an", "a", "the", "follow", "stream", "previous", "before", "crash", "container", "sidecar", "-c", "-p", "-f",
    "scale", "to", "by", "3", "three", "twenty", "five", "0", "-2", "minus", "1000000", "replicas", "restart",
    "rollout", "status", "undo", "roll", "back", "revision", "history", "delete", "remove", "kill", "rm", "cordon",
    "uncordon", "drain", "annotate", "unlabel", "overwrite", "what's", "wrong", "why", "crashing", "changed",
    "changes", "events", "happened", "top", "cpu", "memory", "usage", "not", "don't", "never", "no", "please", "?",
    "!", "and", "then", "is", "ok", "exec", "shell", "proxy", "edit", "cp", "apply", "run", "create", "set", "image",
    "--kubeconfig=x", "--server", "--token=x", "--as=admin", "--as", "--raw", "/api", "port-forward",
    "https://x.example", "file.yaml", "widgets", "wd", "widget", "gizmo", "-l", "--all", "--force",
    "--selector=app=api", "--replicas=3", "--to-revision=2", "--revision=1", "--tail=5", "--since=1h", "--overwrite",
    "--namespace=web", "node/sim-node-1", "deployment/api", "x", "é", "🙂", "\u{0}", "\n", "kubectl", "k", "stateful",
    "sets", "config", "maps", "apps", "more", "details", "manifest", "mark", "unschedulable", "schedulable",
    "scheduling", "stop", "ignoring", "daemonsets", "tag", "change", "add", "from", "it", "restarted", "one", "dozen",
    "zero",
];

fn discovery() -> Discovery {
    let mut d = Discovery::builtin();
    d.resources.push(ApiResource {
        group: "example.com".into(),
        version: "v1".into(),
        plural: "widgets".into(),
        singular: "widget".into(),
        kind: "Widget".into(),
        short_names: vec!["wd".into()],
        namespaced: true,
        verbs: vec!["get".into(), "list".into(), "delete".into()],
    });
    d
}

/// Live objects for any lookup: several pods of a workload, prefixes,
/// and the names the vocabulary types.
fn live() -> Vec<String> {
    [
        "api",
        "api-7d9f8c6b5-x2kqp",
        "api-7d9f8c6b5-m4n8z",
        "frontend",
        "frontend-5c6d7e8f9-abcde",
        "db-0",
        "db-1",
        "sim-node-1",
        "sim-node-2",
        "web",
        "gizmo",
        "x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// What is refused, wherever it appears in a command line.
fn refused(a: &[String]) -> Option<String> {
    for t in a {
        let flag = t.split_once('=').map(|(f, _)| f).unwrap_or(t);
        if matches!(
            flag,
            "--kubeconfig"
                | "--server"
                | "-s"
                | "--token"
                | "--as"
                | "--as-group"
                | "--as-uid"
                | "--raw"
                | "--filename"
                | "-f"
                | "-k"
                | "--context"
                | "--cluster"
                | "--user"
        ) || t.contains("://")
        {
            return Some(format!("{t} in {a:?}"));
        }
    }
    match a.first().map(String::as_str) {
        Some("proxy" | "edit" | "cp" | "port-forward" | "exec" | "apply" | "attach" | "run" | "debug") | None => {
            Some(format!("verb of {a:?}"))
        }
        _ => None,
    }
}

/// For a write, the objects it names (`None`: not a write).
fn write_objects(a: &[String]) -> Option<Vec<String>> {
    let mut positional = Vec::new();
    let mut i = 0;
    while i < a.len() {
        let t = a[i].as_str();
        if t == "-n" || t == "-o" {
            i += 2;
            continue;
        }
        if !t.starts_with('-') {
            positional.push(t.to_string());
        }
        i += 1;
    }
    let names: Vec<String> = match positional.first().map(String::as_str)? {
        "delete" | "scale" => positional.get(2..)?.to_vec(),
        "label" | "annotate" => {
            positional.get(2..)?.iter().filter(|p| !p.contains('=') && !p.ends_with('-')).cloned().collect()
        }
        "rollout" if matches!(positional.get(1).map(String::as_str), Some("restart" | "undo")) => {
            positional.get(3..)?.to_vec()
        }
        "cordon" | "uncordon" | "drain" => positional.get(1..)?.to_vec(),
        _ => return None,
    };
    Some(names)
}

/// Every command line in `i` is allowed, and a write names one object.
fn check(i: &Interpretation, d: &Discovery) -> Result<(), String> {
    let argvs: Vec<&Vec<String>> = match i {
        Interpretation::Command(draft) => {
            if let Some(l) = &draft.lookup
                && draft.argv.get(l.argv_index) != Some(&l.typed)
            {
                return Err(format!("lookup {l:?} does not point at its name in {:?}", draft.argv));
            }
            vec![&draft.argv]
        }
        Interpretation::Question(q) => q.choices.iter().map(|c| &c.argv).collect(),
        Interpretation::NotUnderstood { message, .. } => {
            if message.is_empty() {
                return Err("not understood, with no reason".into());
            }
            Vec::new()
        }
    };
    for a in argvs {
        if let Some(r) = refused(a) {
            return Err(format!("refused: {r}"));
        }
        if let Some(objects) = write_objects(a) {
            let collection = a.iter().any(|t| t == "-A" || t == "--all" || t.starts_with("--selector") || t == "-l");
            if objects.len() != 1 || collection || objects.iter().any(|o| o.is_empty() || o == "all" || o == "*") {
                return Err(format!("a write that does not name exactly one object: {a:?}"));
            }
        }
        argv::parse(a, None, d).map_err(|e| format!("{a:?} is refused by argv::parse: {e}"))?;
    }
    Ok(())
}

/// Reads `text`, checks the reading, resolves it and checks that too.
fn read_and_check(text: &str, d: &Discovery) -> Result<(), TestCaseError> {
    let first = interpret(text, d, "default");
    prop_assert_eq!(&first, &interpret(text, &d.clone(), "default"), "not deterministic for {:?}", text);
    check(&first, d).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
    if let Interpretation::Command(draft) = first
        && draft.lookup.is_some()
    {
        let resolved = resolve(draft.clone(), &live());
        prop_assert_eq!(&resolved, &resolve(draft, &live()));
        check(&resolved, d).map_err(|e| TestCaseError::fail(format!("{text:?} resolved: {e}")))?;
        if let Interpretation::Command(done) = &resolved {
            prop_assert!(done.lookup.is_none(), "a resolved command still has a lookup");
        }
    }
    Ok(())
}

fn sentence() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(VOCABULARY), 0..12).prop_map(|w| w.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn sentences_of_the_vocabulary_give_only_allowed_commands(text in sentence()) {
        read_and_check(&text, &discovery())?;
    }

    #[test]
    fn arbitrary_strings_never_panic_and_give_only_allowed_commands(text in any::<String>()) {
        read_and_check(&text, &discovery())?;
    }

    #[test]
    fn arbitrary_names_resolve_without_panic(
        text in sentence(),
        names in prop::collection::vec("[a-z0-9.-]{0,24}|.{0,8}", 0..8),
    ) {
        if let Interpretation::Command(draft) = interpret(&text, &discovery(), "web")
            && draft.lookup.is_some()
        {
            let resolved = resolve(draft, &names);
            check(&resolved, &discovery()).map_err(|e| TestCaseError::fail(format!("{text:?} with {names:?}: {e}")))?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn long_input_is_not_read(chars in prop::collection::vec(any::<char>(), MAX_CHARS + 1..MAX_CHARS * 2)) {
        let text: String = chars.into_iter().collect();
        let got = interpret(&text, &discovery(), "default");
        let too_long = matches!(&got, Interpretation::NotUnderstood { message, .. } if message.contains("too long"));
        prop_assert!(too_long, "{:?}", got);
    }

    #[test]
    fn input_up_to_the_cap_never_panics(chars in prop::collection::vec(any::<char>(), 0..MAX_CHARS)) {
        let text: String = chars.into_iter().collect();
        read_and_check(&text, &discovery())?;
    }
}

/// Found by `arbitrary_names_resolve_without_panic`: a live name with a
/// control character became an argument that `argv::parse` refuses.
#[test]
fn live_names_no_object_can_have_are_never_offered() {
    let Interpretation::Command(draft) = interpret("follow k", &discovery(), "web") else {
        panic!("`follow k` is a command with a lookup");
    };
    assert!(draft.lookup.is_some());
    let names = ["k\u{b}".to_string(), "k\u{0}x".to_string(), format!("k{}", "a".repeat(253))];
    let resolved = resolve(draft.clone(), &names);
    check(&resolved, &discovery()).expect("every command it gives parses");
    assert!(matches!(&resolved, Interpretation::NotUnderstood { .. }), "{resolved:?}");
    let with_real = resolve(draft, &[names[0].clone(), "kafka-0".to_string()]);
    assert!(
        matches!(&with_real, Interpretation::Command(d) if d.argv.contains(&"kafka-0".to_string())),
        "{with_real:?}"
    );
}

#[test]
fn a_megabyte_of_words_is_refused_quickly() {
    let text = "delete pod api ".repeat(70_000);
    let started = std::time::Instant::now();
    let got = interpret(&text, &discovery(), "default");
    assert!(matches!(got, Interpretation::NotUnderstood { .. }), "{got:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn the_checks_themselves_catch_what_they_look_for() {
    let d = discovery();
    let cmd = |a: &[&str]| {
        Interpretation::Command(kubechat_chat::english::Draft {
            argv: a.iter().map(|s| s.to_string()).collect(),
            lookup: None,
        })
    };
    assert!(check(&cmd(&["get", "pods", "-n", "web"]), &d).is_ok());
    assert!(check(&cmd(&["delete", "pods", "-n", "web", "--selector=app=api"]), &d).is_err());
    assert!(check(&cmd(&["delete", "pods", "a", "b", "-n", "web"]), &d).is_err());
    assert!(check(&cmd(&["label", "pods", "a", "tier=web", "-n", "web"]), &d).is_ok());
    assert!(check(&cmd(&["get", "pods", "--kubeconfig=/x"]), &d).is_err());
    assert!(check(&cmd(&["exec", "a", "--", "sh"]), &d).is_err());
    assert!(check(&cmd(&["scale", "deployments", "api", "-n", "web"]), &d).is_err(), "argv::parse wants --replicas");
}
