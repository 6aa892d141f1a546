//! The golden corpus (`english_corpus.txt`): every phrasing is read with
//! [`interpret`] and, when it names an object, [`resolve`]d against a
//! fixed set of live objects; every mismatch is reported at once (line,
//! phrase, expected, got). Every command line the grammar produces must
//! also be one kubectl's own grammar ([`argv::parse`]) accepts.

use kubechat_chat::argv;
use kubechat_chat::discovery::{ApiResource, Discovery};
use kubechat_chat::english::{Interpretation, NameLookup, interpret, resolve};

const CORPUS: &str = include_str!("english_corpus.txt");
const MIN_ENTRIES: usize = 300;

/// `Discovery::builtin()` and a CRD, `widgets.example.com` (short name
/// `wd`).
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
        verbs: ["get", "list", "watch", "create", "update", "patch", "delete"].iter().map(|s| s.to_string()).collect(),
    });
    d
}

/// The live objects of a lookup's resource and namespace.
fn live(lookup: &NameLookup) -> Vec<String> {
    let ns = lookup.namespace.as_deref().unwrap_or("");
    let names: &[&str] = match (lookup.resource.plural.as_str(), ns) {
        ("pods", "kube-system") => &["coredns-5d78c9869d-h8j2k", "kube-proxy-x7k2p"],
        ("pods", _) => &[
            "api-7d9f8c6b5-x2kqp",
            "api-7d9f8c6b5-m4n8z",
            "api-gateway-6f7b8c9d4-zt5qp",
            "frontend-5c6d7e8f9-abcde",
            "worker-6b7c8d9f2-qwert",
            "db-0",
            "db-1",
            "log-agent-x7k2p",
        ],
        ("deployments", "kube-system") => &["coredns"],
        ("deployments", _) => &["api", "api-gateway", "frontend", "worker"],
        ("statefulsets", _) => &["db"],
        ("daemonsets", _) => &["log-agent"],
        ("replicasets", _) => &["api-7d9f8c6b5", "frontend-5c6d7e8f9"],
        ("services", _) => &["api", "frontend", "db"],
        ("configmaps", _) => &["api-config", "frontend-config"],
        ("secrets", _) => &["db-password"],
        ("ingresses", _) => &["web"],
        ("jobs", _) => &["backup-28391"],
        ("cronjobs", _) => &["backup"],
        ("persistentvolumeclaims", _) => &["data-db-0", "data-db-1"],
        ("nodes", _) => &["sim-node-1", "sim-node-2"],
        ("namespaces", _) => &["default", "web", "kube-system"],
        ("widgets", _) => &["gizmo", "sprocket"],
        _ => &[],
    };
    names.iter().map(|s| s.to_string()).collect()
}

/// One corpus line: `[namespace] phrase => expected`.
struct Case<'a> {
    line: usize,
    namespace: &'a str,
    phrase: &'a str,
    expected: &'a str,
}

fn cases() -> Vec<Case<'static>> {
    let mut out = Vec::new();
    for (i, line) in CORPUS.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (lhs, expected) =
            trimmed.rsplit_once(" => ").unwrap_or_else(|| panic!("line {line_no}: no ` => ` in {trimmed:?}"));
        let (namespace, phrase) = match lhs.strip_prefix('[').and_then(|r| r.split_once(']')) {
            Some((ns, rest)) => (ns.trim(), rest.trim()),
            None => ("default", lhs.trim()),
        };
        out.push(Case { line: line_no, namespace, phrase, expected: expected.trim() });
    }
    out
}

/// The final reading of a case: interpret, then resolve any lookup.
fn read(c: &Case<'_>, d: &Discovery) -> Result<Interpretation, String> {
    let first = interpret(c.phrase, d, c.namespace);
    if let Interpretation::Command(draft) = &first
        && let Some(l) = &draft.lookup
    {
        if draft.argv.get(l.argv_index) != Some(&l.typed) {
            return Err(format!("lookup index {} does not hold {:?} in {:?}", l.argv_index, l.typed, draft.argv));
        }
        let names = live(l);
        return Ok(resolve(draft.clone(), &names));
    }
    Ok(first)
}

fn show(i: &Interpretation) -> String {
    match i {
        Interpretation::Command(d) => match &d.lookup {
            None => d.argv.join(" "),
            Some(l) => format!("{} (unresolved {:?})", d.argv.join(" "), l.typed),
        },
        Interpretation::Question(q) => {
            let mut s = format!("? {}", q.text);
            for c in &q.choices {
                s.push_str(" | ");
                s.push_str(&c.argv.join(" "));
            }
            s
        }
        Interpretation::NotUnderstood { message, .. } => format!("! {message}"),
    }
}

/// Whether `got` is what `expected` says (see the corpus's header).
fn matches(expected: &str, got: &Interpretation) -> bool {
    if let Some(fragment) = expected.strip_prefix('!') {
        let fragment = fragment.trim().to_lowercase();
        return matches!(got, Interpretation::NotUnderstood { message, .. } if message.to_lowercase().contains(&fragment));
    }
    if let Some(rest) = expected.strip_prefix('?') {
        let Interpretation::Question(q) = got else { return false };
        let mut parts = rest.split(" | ");
        let text = parts.next().unwrap_or("").trim().trim_end_matches('…').trim_end_matches("...").trim_end();
        let choices: Vec<&str> = parts.map(str::trim).collect();
        let got_choices: Vec<String> = q.choices.iter().map(|c| c.argv.join(" ")).collect();
        return q.text.starts_with(text) && got_choices == choices;
    }
    matches!(got, Interpretation::Command(d) if d.lookup.is_none() && d.argv.join(" ") == expected)
}

/// Every argv the reading holds is one kubectl's grammar accepts.
fn parses(got: &Interpretation, d: &Discovery) -> Result<(), String> {
    let argvs: Vec<&Vec<String>> = match got {
        Interpretation::Command(draft) => vec![&draft.argv],
        Interpretation::Question(q) => q.choices.iter().map(|c| &c.argv).collect(),
        Interpretation::NotUnderstood { .. } => Vec::new(),
    };
    for a in argvs {
        argv::parse(a, None, d).map_err(|e| format!("{a:?} is refused by argv::parse: {e}"))?;
    }
    Ok(())
}

#[test]
fn corpus_phrasings_read_as_expected() {
    let d = discovery();
    let cases = cases();
    let mut failures = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for c in &cases {
        let key = (c.namespace, c.phrase.to_lowercase());
        if let Some(first) = seen.insert(key, c.line) {
            failures.push(format!("line {}: {:?} repeats line {first}", c.line, c.phrase));
        }
        let got = match read(c, &d) {
            Ok(g) => g,
            Err(e) => {
                failures.push(format!("line {}: {:?}: {e}", c.line, c.phrase));
                continue;
            }
        };
        if !matches(c.expected, &got) {
            failures.push(format!(
                "line {}: [{}] {:?}\n    expected: {}\n    got:      {}",
                c.line,
                c.namespace,
                c.phrase,
                c.expected,
                show(&got)
            ));
        }
        if let Err(e) = parses(&got, &d) {
            failures.push(format!("line {}: {:?}: {e}", c.line, c.phrase));
        }
    }
    if cases.len() < MIN_ENTRIES {
        failures.push(format!("the corpus has {} entries; at least {MIN_ENTRIES} are wanted", cases.len()));
    }
    assert!(failures.is_empty(), "{} of {} corpus entries fail:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// The runner itself can fail: a wrong expectation is reported.
#[test]
fn a_wrong_expectation_is_a_mismatch() {
    let d = discovery();
    let c = Case { line: 0, namespace: "web", phrase: "show pods", expected: "get pods -n default" };
    let got = read(&c, &d).expect("reads");
    assert!(!matches(c.expected, &got));
    assert!(matches("get pods -n web", &got));
    assert!(!matches("! anything", &got));
    assert!(!matches("? anything", &got));
    let q = read(&Case { line: 0, namespace: "web", phrase: "scale frontend", expected: "" }, &d).expect("reads");
    assert!(matches("? To how many replicas", &q));
    assert!(!matches("? To how many replicas | scale deployments frontend -n web --replicas=1", &q));
}
