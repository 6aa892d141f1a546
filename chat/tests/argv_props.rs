//! The kubectl grammar never panics, and what it accepts is well formed:
//! names and namespaces are path-safe, writes name their objects (or a
//! selector), refused forms stay refused however they are spelt.

use kubechat_chat::argv::{Command, Refusal, parse};
use kubechat_chat::discovery::Discovery;
use proptest::prelude::*;

fn words() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("get".to_string()),
        Just("delete".to_string()),
        Just("logs".to_string()),
        Just("exec".to_string()),
        Just("scale".to_string()),
        Just("label".to_string()),
        Just("rollout".to_string()),
        Just("undo".to_string()),
        Just("drain".to_string()),
        Just("pods".to_string()),
        Just("deploy/api".to_string()),
        Just("-n".to_string()),
        Just("-A".to_string()),
        Just("--".to_string()),
        Just("-o".to_string()),
        Just("yaml".to_string()),
        Just("--replicas=3".to_string()),
        Just("-l".to_string()),
        Just("app=api".to_string()),
        Just("-f".to_string()),
        Just("--kubeconfig=/x".to_string()),
        Just("--as=admin".to_string()),
        Just("-s".to_string()),
        Just("--raw".to_string()),
        Just("x=y".to_string()),
        Just("x-".to_string()),
        "[a-z0-9./=:-]{0,12}",
        "\\PC{0,16}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn never_panics_and_accepts_only_well_formed_commands(argv in proptest::collection::vec(words(), 0..10), manifest in proptest::option::of("\\PC{0,64}")) {
        let d = Discovery::builtin();
        match parse(&argv, manifest.as_deref(), &d) {
            Err(Refusal::Refused(m) | Refusal::Invalid(m)) => prop_assert!(!m.is_empty()),
            Ok(inv) => {
                if let Some(ns) = &inv.namespace {
                    prop_assert!(!ns.is_empty() && !ns.contains('/') && ns != "." && ns != "..", "{ns:?}");
                }
                // Nothing that reaches outside what is authorized is accepted.
                // (After `--` the words are exec's command, not flags.)
                for a in argv.iter().take_while(|a| *a != "--") {
                    let long = a.split('=').next().unwrap_or_default();
                    prop_assert!(!matches!(long, "--kubeconfig" | "--as" | "--raw" | "--server" | "--token"), "{argv:?}");
                }
                match &inv.command {
                    Command::Delete { targets, selector, all, .. } => {
                        prop_assert!(targets.iter().all(|t| t.name.is_some()) || selector.is_some() || *all);
                    }
                    Command::Scale { objects, .. } => prop_assert!(!objects.is_empty()),
                    Command::Exec { command, .. } => prop_assert!(!command.is_empty()),
                    Command::Get { targets, .. } | Command::Describe { targets, .. } => {
                        for t in targets {
                            if let Some(n) = &t.name {
                                prop_assert!(!n.is_empty() && !n.contains('/') && !n.contains('%'), "{n:?}");
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// However the flag is spelt, a refused flag is refused.
    #[test]
    fn refused_flags_are_refused_in_every_spelling(flag in prop_oneof![Just("kubeconfig"), Just("server"), Just("token"), Just("as"), Just("as-group"), Just("context")], value in "[a-z/]{1,8}", before in any::<bool>(), joined in any::<bool>()) {
        let d = Discovery::builtin();
        let mut argv = vec!["get".to_string(), "pods".to_string()];
        let f = if joined { vec![format!("--{flag}={value}")] } else { vec![format!("--{flag}"), value] };
        if before { argv.splice(0..0, f); } else { argv.extend(f); }
        prop_assert!(matches!(parse(&argv, None, &d), Err(Refusal::Refused(_))), "{argv:?}");
    }
}
