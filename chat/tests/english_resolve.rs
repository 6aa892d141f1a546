//! `english::resolve`: a typed name against the live objects. An exact
//! name wins, then a workload's pods, then a unique prefix; several are a
//! question (a write never picks among them); none is not understood.

use kubechat_chat::discovery::Discovery;
use kubechat_chat::english::{Draft, Interpretation, interpret, resolve};

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

fn draft(text: &str) -> Draft {
    match interpret(text, &Discovery::builtin(), "web") {
        Interpretation::Command(d) => {
            assert!(d.lookup.is_some(), "{text:?} has no lookup: {d:?}");
            d
        }
        other => panic!("{text:?}: {other:?}"),
    }
}

fn argv(i: &Interpretation) -> Vec<String> {
    match i {
        Interpretation::Command(d) => {
            assert!(d.lookup.is_none(), "still to resolve: {d:?}");
            d.argv.clone()
        }
        other => panic!("not a command: {other:?}"),
    }
}

#[test]
fn lookups_say_what_to_list_and_where_the_name_goes() {
    let d = draft("logs of api last 5 lines");
    let l = d.lookup.as_ref().expect("lookup");
    assert_eq!((l.resource.plural.as_str(), l.namespace.as_deref(), l.typed.as_str()), ("pods", Some("web"), "api"));
    assert_eq!(d.argv[l.argv_index], "api");
    let d = draft("cordon sim-node-1");
    let l = d.lookup.as_ref().expect("lookup");
    assert_eq!((l.resource.plural.as_str(), l.namespace.as_deref()), ("nodes", None));
    let d = draft("undo the api rollout to revision 2");
    assert_eq!(d.lookup.as_ref().map(|l| l.argv_index), Some(3));
}

#[test]
fn an_exact_name_wins_over_prefixes() {
    let got = resolve(draft("scale api to 3"), &names(&["api-gateway", "api", "api-v2"]));
    assert_eq!(argv(&got), ["scale", "deployments", "api", "-n", "web", "--replicas=3"]);
}

#[test]
fn a_unique_prefix_or_a_workloads_only_pod_is_taken() {
    let got = resolve(draft("describe pod api-7"), &names(&["api-7d9f8c6b5-x2kqp", "db-0"]));
    assert_eq!(argv(&got), ["describe", "pods", "api-7d9f8c6b5-x2kqp", "-n", "web"]);
    let got = resolve(draft("logs of api"), &names(&["api-7d9f8c6b5-x2kqp", "api-gateway-6f7b8c9d4-zt5qp"]));
    assert_eq!(argv(&got), ["logs", "api-7d9f8c6b5-x2kqp", "-n", "web"], "api-gateway's pod is not api's");
}

#[test]
fn several_candidates_are_a_question_even_more_so_for_a_write() {
    let live = names(&["db-1", "db-0", "frontend-5c6d7e8f9-abcde"]);
    for text in ["delete pod db", "logs of db", "what's wrong with pod db"] {
        let Interpretation::Question(q) = resolve(draft(text), &live) else { panic!("{text:?} did not ask") };
        let chosen: Vec<&str> = q.choices.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(chosen, ["db-0", "db-1"], "{text:?}: one choice per name, sorted");
        for c in &q.choices {
            assert!(c.argv.contains(&c.label), "{text:?}: the choice's argv names it: {:?}", c.argv);
        }
    }
}

#[test]
fn no_candidate_is_not_understood_naming_the_resource() {
    let got = resolve(draft("delete pod nosuch"), &names(&["db-0"]));
    assert!(
        matches!(&got, Interpretation::NotUnderstood { message, .. } if message.contains("No pod in web matches “nosuch”")),
        "{got:?}"
    );
    let got = resolve(draft("drain sim-node-9"), &[]);
    assert!(
        matches!(&got, Interpretation::NotUnderstood { message, .. } if message.contains("there are no nodes")),
        "{got:?}"
    );
}

#[test]
fn a_draft_without_lookup_is_returned_as_it_is_and_a_bad_index_never_panics() {
    let plain = Draft { argv: names(&["get", "pods", "-n", "web"]), lookup: None };
    assert_eq!(resolve(plain.clone(), &names(&["x"])), Interpretation::Command(plain));
    let mut bad = draft("delete pod db-0");
    if let Some(l) = bad.lookup.as_mut() {
        l.argv_index = 99;
    }
    assert!(matches!(resolve(bad, &names(&["db-0"])), Interpretation::NotUnderstood { .. }));
}
