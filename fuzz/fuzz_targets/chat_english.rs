//! Whatever a person types, the English grammar gives a command, a
//! question or a reason, never a panic; and no command line it gives holds
//! a flag that picks another cluster or identity.
#![no_main]

use kubechat_chat::discovery::Discovery;
use kubechat_chat::english::{Interpretation, interpret, resolve};
use libfuzzer_sys::fuzz_target;

const REFUSED: &[&str] = &["--kubeconfig", "--server", "--token", "--as", "--raw", "--filename"];

fn check(i: &Interpretation) {
    let argvs: Vec<&Vec<String>> = match i {
        Interpretation::Command(d) => vec![&d.argv],
        Interpretation::Question(q) => q.choices.iter().map(|c| &c.argv).collect(),
        Interpretation::NotUnderstood { .. } => Vec::new(),
    };
    for a in argvs {
        for t in a {
            assert!(!REFUSED.iter().any(|r| t.starts_with(r)) && !t.contains("://"), "{a:?}");
        }
        let verb = a.first().map(String::as_str).unwrap_or("");
        assert!(!matches!(verb, "" | "proxy" | "edit" | "cp" | "port-forward" | "exec" | "apply"), "{a:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let d = Discovery::builtin();
    let first = interpret(&text, &d, "default");
    check(&first);
    assert_eq!(first, interpret(&text, &d, "default"), "deterministic");
    if let Interpretation::Command(draft) = first
        && draft.lookup.is_some()
    {
        let names = ["api", "api-7d9f8c6b5-x2kqp", "api-7d9f8c6b5-m4n8z", "db-0", "sim-node-1"].map(String::from);
        check(&resolve(draft, &names));
    }
});
