//! Every flag the README and the dev stack's script show exists: each
//! command line of `kubechat-control-plane`, `kubechat-relay` (and its
//! subcommands) and `kubechat-agent` in README.md and scripts/dev.sh is
//! checked against the binary's own argument definitions.

use clap::CommandFactory;

/// The command lines of `text`, continuation lines joined.
fn command_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        out.push(std::mem::take(&mut current));
    }
    out
}

/// The long flags a command line gives to `bin`, with the subcommand if any.
fn flags_for(line: &str, bin: &str) -> Option<(Option<String>, Vec<String>)> {
    let words: Vec<&str> =
        line.split_whitespace().map(|w| w.trim_matches(|c| c == '"' || c == '[' || c == ']')).collect();
    // The binary as a command, not as a flag's value (`--agent-chart
    // ./charts/kubechat-agent` runs no agent).
    let at = (0..words.len()).find(|&i| {
        (words[i].ends_with(&format!("/{bin}")) || words[i] == bin) && (i == 0 || !words[i - 1].starts_with("--"))
    })?;
    let rest = &words[at + 1..];
    let sub = rest.first().filter(|w| !w.starts_with('-')).map(|w| (*w).to_string());
    let flags = rest
        .iter()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.trim_start_matches("--").split('=').next().unwrap_or_default().to_string())
        .filter(|f| !f.is_empty())
        .collect();
    Some((sub, flags))
}

fn known(cmd: &clap::Command, sub: Option<&str>) -> Vec<String> {
    let cmd = match sub.and_then(|s| cmd.find_subcommand(s)) {
        Some(s) => s.clone(),
        None => cmd.clone(),
    };
    let mut out: Vec<String> = cmd.get_arguments().filter_map(|a| a.get_long().map(str::to_string)).collect();
    out.extend(["help".to_string(), "version".to_string()]);
    out
}

#[test]
fn every_flag_the_readme_and_the_dev_script_show_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
    let binaries: Vec<(&str, clap::Command)> = vec![
        ("kubechat-control-plane", kubechat_control_plane::cli::Cli::command()),
        ("kubechat-relay", kubechat_relay::cli::Cli::command()),
        ("kubechat-agent", kubechat_agent::cli::Cli::command()),
    ];
    let mut checked = 0;
    for file in ["README.md", "scripts/dev.sh"] {
        let text = std::fs::read_to_string(root.join(file)).expect("read");
        for line in command_lines(&text) {
            for (bin, cmd) in &binaries {
                let Some((sub, flags)) = flags_for(&line, bin) else { continue };
                let known = known(cmd, sub.as_deref());
                for f in flags {
                    assert!(
                        known.contains(&f),
                        "{file}: `{bin}{}` has no --{f}: {line}",
                        sub.as_ref().map(|s| format!(" {s}")).unwrap_or_default()
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 40, "only {checked} flags found: the parser lost the command lines");
}
