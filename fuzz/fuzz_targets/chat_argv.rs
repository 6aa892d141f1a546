//! Whatever command line a person sends, kubectl's grammar gives a command
//! or a reason, never a panic; nothing it accepts picks another cluster or
//! identity, and a namespace it accepts is a DNS label.
#![no_main]

use kubechat_chat::argv::parse;
use kubechat_chat::discovery::Discovery;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // NUL-separated arguments; the first one that starts with "---\n" is the manifest.
    let text = String::from_utf8_lossy(data);
    let mut argv: Vec<String> = text.split('\0').map(str::to_string).collect();
    let manifest = argv.iter().position(|a| a.starts_with("---\n")).map(|i| argv.remove(i));
    let d = Discovery::builtin();
    if let Ok(inv) = parse(&argv, manifest.as_deref(), &d) {
        for a in argv.iter().take_while(|a| *a != "--") {
            let flag = a.split('=').next().unwrap_or_default();
            assert!(!matches!(flag, "--kubeconfig" | "--server" | "--token" | "--as" | "--raw" | "--context"), "{argv:?}");
        }
        if let Some(ns) = inv.namespace {
            assert!(ns.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{ns:?}");
        }
    }
});
