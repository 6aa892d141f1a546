//! The real Helm library (helm-sdkpy, which bundles Helm v4), driven through
//! the small Python programs in `tests/helm/`; `scripts/install-helm.sh`
//! (run by the test command) installs it and exports `KUBECHAT_HELM_PY`.
//! Also reads back the `helm install` snippet a cluster registration
//! answers with, so tests install exactly what a customer would paste.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube_sim::kubeconfig::{Credentials, KubeconfigSpec};
use kube_sim::{SimConfig, TestSim, UserInfo};
use serde_json::{Map, Value};

use crate::kubectl::Kubectl;

/// The workspace root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn python(script: &str, args: &[&std::ffi::OsStr]) -> Value {
    let helm = std::env::var("KUBECHAT_HELM_PY")
        .expect("KUBECHAT_HELM_PY is not set: run `bash scripts/test.sh` (it installs helm-sdkpy)");
    let out = std::process::Command::new("python3")
        .arg(repo().join("tests/helm").join(script))
        .args(args)
        .env("PYTHONPATH", helm)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{script} failed to run: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {stdout}"))
}

/// Lints `chart`: the number of errors and the messages.
pub fn lint(chart: &Path) -> (u64, Value) {
    let v = python("lint.py", &[chart.as_os_str()]);
    (v["errors"].as_u64().expect("errors"), v["messages"].clone())
}

/// `helm install` of `chart` as `release` into `namespace` (created if
/// missing) of the cluster `kubeconfig` names, with the values in
/// `values_file` (YAML). The release, or Helm's error message.
pub fn install(
    kubeconfig: &Path,
    namespace: &str,
    release: &str,
    chart: &Path,
    values_file: &Path,
) -> Result<Value, String> {
    let v = python(
        "install.py",
        &[kubeconfig.as_os_str(), namespace.as_ref(), release.as_ref(), chart.as_os_str(), values_file.as_os_str()],
    );
    if v["ok"] == true { Ok(v["release"].clone()) } else { Err(v["error"].as_str().unwrap_or_default().to_string()) }
}

/// kube-sim's admin token in a [`TestCluster`].
const SIM_ADMIN: &str = "kube-sim-admin-token-for-the-chart-tests";

/// An empty cluster to install charts into: kube-sim with system RBAC only,
/// and an admin kubeconfig for Helm and kubectl.
pub struct TestCluster {
    /// The simulated cluster.
    pub sim: TestSim,
    /// kubectl as cluster admin.
    pub admin: Kubectl,
    /// The admin kubeconfig file (for Helm).
    pub kubeconfig: PathBuf,
    /// Holds the kubeconfig and values files.
    pub dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts it.
    pub async fn empty() -> Self {
        let tokens =
            [(SIM_ADMIN.to_string(), UserInfo { name: "admin".into(), groups: vec!["system:masters".into()] })]
                .into_iter()
                .collect();
        let mut cfg = SimConfig::with_tokens(tokens);
        cfg.log_interval = Duration::from_millis(200);
        let sim = TestSim::start(cfg, false).await;
        let yaml = KubeconfigSpec {
            name: "sim".into(),
            server: sim.url(),
            ca_pem: Some(sim.ca_pem.clone()),
            credentials: Credentials::Token(SIM_ADMIN.into()),
            impersonate_user: None,
            impersonate_groups: Vec::new(),
            namespace: None,
        }
        .to_yaml();
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("admin.kubeconfig");
        std::fs::write(&kubeconfig, &yaml).expect("kubeconfig");
        Self { admin: Kubectl::new(&yaml), sim, kubeconfig, dir }
    }

    /// `helm install` of `chart` as `release` into `namespace` with
    /// `values` (written to a values file).
    pub fn install(&self, namespace: &str, release: &str, chart: &Path, values: &Value) -> Result<Value, String> {
        let file = self.dir.path().join(format!("{release}-values.yaml"));
        std::fs::write(&file, serde_json::to_string_pretty(values).expect("json")).expect("values file");
        install(&self.kubeconfig, namespace, release, chart, &file)
    }

    /// `kubectl get … -o json`, its `items` (or the object itself).
    pub async fn get(&self, args: &[&str]) -> Vec<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let v: Value = serde_json::from_str(&self.admin.ok(&all).await).expect("kubectl json");
        match v.get("items").and_then(Value::as_array) {
            Some(items) => items.clone(),
            None => vec![v],
        }
    }

    /// The pods a Deployment or StatefulSet selects.
    pub async fn pods_of(&self, workload: &Value) -> Vec<Value> {
        let ns = workload["metadata"]["namespace"].as_str().expect("namespace");
        let labels = workload["spec"]["selector"]["matchLabels"].as_object().expect("selector");
        let sel: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
        self.get(&["-n", ns, "get", "pods", "-l", &sel.join(",")]).await
    }
}

/// The `helm install` a shell snippet ran.
#[derive(Debug, Clone, PartialEq)]
pub struct InstallCommand {
    /// Release name.
    pub release: String,
    /// Chart reference.
    pub chart: String,
    /// `--version`, if any.
    pub version: Option<String>,
    /// `--namespace`.
    pub namespace: String,
    /// Whether `--create-namespace` is given.
    pub create_namespace: bool,
    /// The values `--set` and `--set-file` give (files from the snippet's
    /// heredocs).
    pub values: Value,
}

/// Undoes Helm's `--set` escaping (`\,` and `\\`).
fn helm_unescape(v: &str) -> String {
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            assert_ne!(c, ',', "an unescaped comma splits a --set value: {v}");
            out.push(c);
        }
    }
    out
}

/// Runs the registration's `helmInstall` snippet the way a customer would,
/// in `sh`, with a stand-in `helm` on the `PATH` that records its
/// arguments; then reads them as Helm would (`--set` unescaped,
/// `--set-file` files read from where the snippet wrote them).
pub fn run_install_snippet(snippet: &str) -> InstallCommand {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let stub = bin.join("helm");
    std::fs::write(&stub, "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done > \"$HELM_ARGS_FILE\"\n")
        .expect("stub");
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let args_file = dir.path().join("args");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = std::process::Command::new("sh")
        .args(["-c", snippet])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("HELM_ARGS_FILE", &args_file)
        .output()
        .expect("run sh");
    assert!(out.status.success(), "the snippet failed in sh: {}", String::from_utf8_lossy(&out.stderr));
    let raw = std::fs::read(&args_file).expect("the snippet ran helm");
    let words: Vec<String> =
        raw.split(|b| *b == 0).filter(|w| !w.is_empty()).map(|w| String::from_utf8_lossy(w).into_owned()).collect();
    assert_eq!(words.first().map(String::as_str), Some("install"), "not a helm install: {words:?}");
    let mut cmd = InstallCommand {
        release: words[1].clone(),
        chart: words[2].clone(),
        version: None,
        namespace: "default".into(),
        create_namespace: false,
        values: Value::Object(Map::new()),
    };
    let mut it = words[3..].iter();
    while let Some(w) = it.next() {
        let mut next = || it.next().unwrap_or_else(|| panic!("{w} needs a value")).clone();
        match w.as_str() {
            "--version" => cmd.version = Some(next()),
            "--namespace" => cmd.namespace = next(),
            "--create-namespace" => cmd.create_namespace = true,
            "--set" | "--set-file" => {
                let arg = next();
                let (key, value) = arg.split_once('=').expect("key=value");
                assert!(!key.contains('.') && !key.contains('['), "nested keys are not expected: {key}");
                let value = if w == "--set" {
                    helm_unescape(value)
                } else {
                    std::fs::read_to_string(dir.path().join(value))
                        .unwrap_or_else(|e| panic!("--set-file {value}: the snippet did not write it: {e}"))
                };
                cmd.values[key] = Value::String(value);
            }
            other => panic!("unexpected argument {other} in the helm command"),
        }
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_a_snippet_with_a_ca_file() {
        let snippet = "cat > ca.pem <<'END'\n-----BEGIN X-----\nAA==\n-----END X-----\nEND\n\
                       helm install kubechat-agent ./charts/kubechat-agent \\\n  --namespace kubechat --create-namespace \\\n  \
                       --set 'controlPlaneUrl=https://a\\,b' \\\n  --set 'bootstrapToken=it'\\''s' \\\n  --set-file controlPlaneCa=ca.pem";
        let c = run_install_snippet(snippet);
        assert_eq!(
            (c.release.as_str(), c.chart.as_str(), c.namespace.as_str()),
            ("kubechat-agent", "./charts/kubechat-agent", "kubechat")
        );
        assert!(c.create_namespace);
        assert_eq!(c.values["controlPlaneUrl"], "https://a,b");
        assert_eq!(c.values["bootstrapToken"], "it's");
        assert_eq!(c.values["controlPlaneCa"], "-----BEGIN X-----\nAA==\n-----END X-----\n");
    }
}
