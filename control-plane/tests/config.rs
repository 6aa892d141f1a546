//! The server's configuration like the relay's and the agent's: a TOML
//! file, the environment and flags (in that order of precedence), and
//! `--check-config`, which validates and exits (64 when invalid).

use std::process::Command;

fn check(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kubechat-control-plane"));
    c.arg("--check-config").args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run the control plane");
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn check_config_validates_file_environment_and_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cp.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:9443\"\nmax-connections = 100\nheader-timeout-secs = 5\n")
        .expect("write");
    let f = file.display().to_string();
    let (code, out) = check(&["--config", &f], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("configuration is valid"), "{out}");
    // A flag beats the environment, which beats the file.
    let (code, out) = check(&["--config", &f, "--listen", "nowhere"], &[("KUBECHAT_LISTEN", "127.0.0.1:1")]);
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("--listen \"nowhere\""), "{out}");
    let (code, out) = check(&["--config", &f], &[("KUBECHAT_LISTEN", "nowhere-either")]);
    assert_eq!(code, Some(64), "{out}");
    // Unknown keys, settings that go together, bad limits.
    std::fs::write(&file, "lisen = \"127.0.0.1:9443\"\n").expect("write");
    let (code, out) = check(&["--config", &f], &[]);
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("lisen"), "{out}");
    let (code, out) = check(&["--tls-cert", "x.crt"], &[]);
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("go together"), "{out}");
    let (code, _) = check(&["--max-connections", "0"], &[]);
    assert_eq!(code, Some(64));
    // The drain's grace period: a file key, and never zero.
    std::fs::write(&file, "grace-period-secs = 8\n").expect("write");
    let (code, out) = check(&["--config", &f], &[]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = check(&["--grace-period-secs", "0"], &[]);
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("--grace-period-secs must be at least 1"), "{out}");
    // The writer's spool: a directory (a file key or the environment), not a file.
    let spool = dir.path().join("spool");
    std::fs::write(&file, format!("spool-dir = {:?}\n", spool.display().to_string())).expect("write");
    let (code, out) = check(&["--config", &f], &[]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = check(&[], &[("KUBECHAT_SPOOL_DIR", &f)]);
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("is a file, not a directory"), "{out}");
}
