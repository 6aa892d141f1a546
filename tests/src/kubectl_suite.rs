//! The kubectl suite: what a person does with the real kubectl, checked
//! end to end. Each function takes a kubectl already pointed at a cluster
//! (directly through a relay, or through the control plane) acting as a
//! user who may read and write namespace `web` and exec/port-forward there.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::kubectl::Kubectl;
use crate::wait::within;

const LONG: Duration = Duration::from_secs(60);

/// Reads lines from a child's stdout until one satisfies `pred`.
pub async fn read_until(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut seen = Vec::new();
    within(what, LONG, async {
        while let Some(l) = lines.next_line().await.expect("read kubectl output") {
            let done = pred(&l);
            seen.push(l);
            if done {
                return;
            }
        }
        panic!("kubectl ended before {what}; saw {seen:?}");
    })
    .await;
    seen
}

/// The first pod of the `api` deployment in `web`.
pub async fn api_pod(k: &Kubectl) -> String {
    let pods = k.ok(&["get", "pods", "-n", "web", "-l", "app=api", "-o", "name"]).await;
    pods.lines().next().expect("an api pod").trim_start_matches("pod/").to_string()
}

/// `auth can-i` answers for the impersonated user: yes in `web`, no for nodes.
pub async fn auth_can_i_for_a_user(k: &Kubectl) {
    assert_eq!(k.ok(&["auth", "can-i", "delete", "pods", "-n", "web"]).await.trim(), "yes");
    let r = k.run(&["auth", "can-i", "delete", "nodes"]).await;
    assert_eq!(r.stdout.trim(), "no", "{r:?}");
    assert_eq!(r.code, Some(1));
}

/// Every function of the suite, in turn.
pub async fn all(k: &Kubectl) {
    version_and_get_pods_across_namespaces(k).await;
    get_watch_sees_a_pod_created_meanwhile(k).await;
    describe_pod_shows_its_events(k).await;
    logs_follow_streams_lines_as_they_are_written(k).await;
    apply_patch_server_side_apply_and_delete(k).await;
    auth_can_i_for_a_user(k).await;
    exec_runs_commands_and_cat_echoes_stdin(k).await;
    exec_it_shell_under_a_pseudo_terminal(k).await;
    port_forward_reaches_the_pods_service(k).await;
}

/// Version and get pods across namespaces.
pub async fn version_and_get_pods_across_namespaces(k: &Kubectl) {
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["version", "-o", "json"]).await).expect("json");
    assert!(v["serverVersion"]["gitVersion"].as_str().is_some_and(|g| g.starts_with("v1.37")), "{v}");
    let out = k.ok(&["get", "pods", "-A"]).await;
    let header = out.lines().next().expect("a header line");
    for col in ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"] {
        assert!(header.contains(col), "{out}");
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("web") && l.contains("frontend-") && l.contains("1/1") && l.contains("Running")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with("kube-system") && l.contains("coredns-")), "{out}");
}

/// Get watch sees a pod created meanwhile.
pub async fn get_watch_sees_a_pod_created_meanwhile(k: &Kubectl) {
    let mut child =
        k.command(&["get", "pods", "-n", "web", "-w"]).stdout(std::process::Stdio::piped()).spawn().expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    read_until(&mut lines, "the initial list", |l| l.contains("frontend-")).await;
    let manifest = k.dir().join("pod.yaml");
    std::fs::write(&manifest, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: watched-pod\n  namespace: web\nspec:\n  containers:\n  - name: main\n    image: busybox\n").expect("write");
    k.ok(&["create", "-f", manifest.to_str().expect("path")]).await;
    let seen = read_until(&mut lines, "the new pod in the watch", |l| l.contains("watched-pod")).await;
    assert!(seen.last().is_some_and(|l| l.contains("watched-pod")));
    let _ = child.kill().await;
}

/// Describe pod shows its events.
pub async fn describe_pod_shows_its_events(k: &Kubectl) {
    let pods = k.ok(&["get", "pods", "-n", "web", "-l", "app=api", "-o", "name"]).await;
    let pod = pods.lines().next().expect("an api pod").trim_start_matches("pod/").to_string();
    let out = k.ok(&["describe", "pod", &pod, "-n", "web"]).await;
    assert!(out.contains(&format!("Name:         {pod}")), "{out}");
    assert!(out.contains("Status:       Running"), "{out}");
    assert!(out.contains("Events:"), "{out}");
    assert!(out.contains("Scheduled") && out.contains("Successfully assigned"), "{out}");
}

/// Logs follow streams lines as they are written.
pub async fn logs_follow_streams_lines_as_they_are_written(k: &Kubectl) {
    let pods = k.ok(&["get", "pods", "-n", "web", "-l", "app=api", "-o", "name"]).await;
    let pod = pods.lines().next().expect("an api pod").trim_start_matches("pod/").to_string();
    let printed = k.ok(&["logs", &pod, "-n", "web", "--tail=2"]).await;
    assert_eq!(printed.lines().count(), 2, "{printed}");
    let mut child = k
        .command(&["logs", "-f", &pod, "-n", "web", "--tail=1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = read_until(&mut lines, "the first line", |_| true).await;
    let n = |l: &str| l.rsplit(' ').next().and_then(|x| x.parse::<u64>().ok()).expect("line number");
    let start = n(&first[0]);
    // Lines written after kubectl started arrive while it keeps following.
    let later = read_until(&mut lines, "a line written later", |l| n(l) >= start + 3).await;
    assert!(later.iter().all(|l| l.contains(&format!("{pod}/main: handled request"))), "{later:?}");
    let _ = child.kill().await;
}

/// Apply patch server side apply and delete.
pub async fn apply_patch_server_side_apply_and_delete(k: &Kubectl) {
    let file = k.dir().join("cm.yaml");
    let path = file.to_str().expect("path");
    let cm = |v: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: web\ndata:\n  mode: {v}\n")
    };
    std::fs::write(&file, cm("one")).expect("write");
    assert!(k.ok(&["apply", "-f", path]).await.contains("configmap/settings created"));
    std::fs::write(&file, cm("two")).expect("write");
    assert!(k.ok(&["apply", "-f", path]).await.contains("configmap/settings configured"));
    let got: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "configmap", "settings", "-n", "web", "-o", "json"]).await).expect("json");
    assert_eq!(got["data"]["mode"], "two");
    assert!(got["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].is_string());

    let ssa = k.dir().join("ssa.yaml");
    std::fs::write(
        &ssa,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  namespace: web\ndata:\n  k: v\n",
    )
    .expect("write");
    let out = k.ok(&["apply", "--server-side", "-f", ssa.to_str().expect("path")]).await;
    assert!(out.contains("configmap/applied serverside-applied"), "{out}");
    std::fs::write(
        &ssa,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  namespace: web\ndata:\n  k: w\n",
    )
    .expect("write");
    k.ok(&["apply", "--server-side", "-f", ssa.to_str().expect("path")]).await;
    assert_eq!(k.ok(&["get", "cm", "applied", "-n", "web", "-o", "jsonpath={.data.k}"]).await, "w");

    assert!(k.ok(&["delete", "-f", path]).await.contains("configmap \"settings\" deleted"));
    let err = k.fails(&["get", "configmap", "settings", "-n", "web"]).await;
    assert!(err.contains("Error from server (NotFound): configmaps \"settings\" not found"), "{err}");
}

/// Exec runs commands and cat echoes stdin.
pub async fn exec_runs_commands_and_cat_echoes_stdin(k: &Kubectl) {
    let pod = api_pod(k).await;
    assert_eq!(k.ok(&["exec", &pod, "-n", "web", "--", "hostname"]).await.trim(), pod);
    assert!(k.ok(&["exec", &pod, "-n", "web", "--", "env"]).await.contains(&format!("HOSTNAME={pod}")));

    let mut child = k
        .command(&["exec", "-i", &pod, "-n", "web", "--", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    use tokio::io::AsyncWriteExt;
    stdin.write_all(b"first line\nsecond line\n").await.expect("write");
    drop(stdin);
    let out = within("exec -i cat", LONG, child.wait_with_output()).await.expect("output");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "first line\nsecond line\n");

    let r = k.run(&["exec", &pod, "-n", "web", "--", "sh", "-c", "exit 3"]).await;
    assert_eq!(r.code, Some(3), "{r:?}");
    let r = k.run(&["exec", &pod, "-n", "web", "--", "no-such-command"]).await;
    assert_eq!(r.code, Some(127), "{r:?}");
    assert!(r.stderr.contains("no-such-command: not found"), "{r:?}");
}

/// Exec it shell under a pseudo terminal.
pub async fn exec_it_shell_under_a_pseudo_terminal(k: &Kubectl) {
    let pod = api_pod(k).await;
    // `script` gives kubectl a real pseudo-terminal, as a person's shell would.
    let kubectl = k.command(&["exec", "-it", &pod, "-n", "web", "--", "sh"]);
    let cmdline: Vec<String> = std::iter::once(crate::kubectl::kubectl_bin().display().to_string())
        .chain(kubectl.as_std().get_args().map(|a| format!("'{}'", a.to_string_lossy())))
        .collect();
    let mut child = tokio::process::Command::new("script")
        .args(["-q", "-e", "-c", &cmdline.join(" "), "/dev/null"])
        .env("HOME", k.dir())
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn script");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut seen = Vec::new();
    let mut wait_for = async |needle: &str, seen: &mut Vec<u8>| {
        within(&format!("tty output {needle:?}"), LONG, async {
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(seen).contains(needle) {
                let n = stdout.read(&mut buf).await.expect("read");
                assert!(n > 0, "terminal closed early; saw {:?}", String::from_utf8_lossy(seen));
                seen.extend_from_slice(&buf[..n]);
            }
        })
        .await;
    };
    wait_for("/ # ", &mut seen).await;
    stdin.write_all(b"hostname\r").await.expect("type");
    wait_for(&format!("{pod}\r\n/ # "), &mut seen).await;
    stdin.write_all(b"echo tty-works\r").await.expect("type");
    wait_for("tty-works\r\n/ # ", &mut seen).await;
    stdin.write_all(b"exit\r").await.expect("type");
    let status = within("kubectl exits", LONG, child.wait()).await.expect("wait");
    assert!(status.success(), "exit {status}; saw {:?}", String::from_utf8_lossy(&seen));
}

/// Port forward reaches the pods service.
pub async fn port_forward_reaches_the_pods_service(k: &Kubectl) {
    let pod = api_pod(k).await;
    let mut child = k
        .command(&["port-forward", &format!("pod/{pod}"), "-n", "web", "--address", "127.0.0.1", ":8080"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let seen = read_until(&mut lines, "the forwarding line", |l| l.starts_with("Forwarding from 127.0.0.1:")).await;
    let line = seen.last().expect("a line");
    let port: u16 =
        line["Forwarding from 127.0.0.1:".len()..].split(' ').next().and_then(|p| p.parse().ok()).expect("local port");
    for _ in 0..2 {
        // Two connections: each is its own pair of SPDY streams.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn =
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect to the forwarded port");
        conn.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("write");
        let mut resp = String::new();
        within("forwarded response", LONG, conn.read_to_string(&mut resp)).await.expect("read");
        assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
        assert!(resp.ends_with(&format!("hello from {pod} port 8080\n")), "{resp}");
    }
    let _ = child.kill().await;
}
