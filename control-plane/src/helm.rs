//! The `helm install` command a cluster registration answers with: the
//! agent chart (`charts/kubechat-agent`, published as an OCI artifact) with
//! the values enrollment needs. The same values come back as an object
//! (`helmValues`) for tools that write a values file instead.

use serde_json::{Map, Value, json};

/// Where the agent chart is published; `--agent-chart` overrides it (a
/// local path such as `./charts/kubechat-agent` in the dev stack).
pub const DEFAULT_AGENT_CHART: &str = "oci://ghcr.io/kubechat/charts/kubechat-agent";
/// The chart version this control plane's agents match.
pub const CHART_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Release name in the command.
pub const RELEASE: &str = "kubechat-agent";
/// Namespace in the command.
pub const NAMESPACE: &str = "kubechat";
/// File the command writes the control plane's CA to (private CAs only).
pub const CA_FILE: &str = "kubechat-control-plane-ca.pem";

/// The install instructions for one bootstrap token.
#[derive(Debug, Clone, PartialEq)]
pub struct HelmInstall {
    /// A shell snippet to paste: writes the CA file if one is needed, then
    /// runs `helm install`.
    pub command: String,
    /// The chart values the command sets (`controlPlaneUrl`,
    /// `bootstrapToken`, `controlPlaneCa` when the CA is private).
    pub values: Value,
    /// `{release, namespace, chart, version}`.
    pub chart: Value,
}

/// Quotes one `--set key=value` argument for the shell, escaping what
/// Helm's `--set` parser treats specially (`\` and `,`).
fn set_arg(key: &str, value: &str) -> String {
    let helm = value.replace('\\', "\\\\").replace(',', "\\,");
    format!("'{key}={}'", helm.replace('\'', r"'\''"))
}

/// A chart reference is local when it is a path; then it has no version.
fn is_local(chart: &str) -> bool {
    chart.starts_with('.') || chart.starts_with('/')
}

/// Builds the command and values for `token`.
pub fn install(chart: &str, public_url: &str, ca_pem: Option<&str>, token: &str) -> HelmInstall {
    let mut values = Map::new();
    values.insert("controlPlaneUrl".into(), json!(public_url));
    values.insert("bootstrapToken".into(), json!(token));
    let mut command = String::new();
    let mut args = vec![format!("helm install {RELEASE} {chart}")];
    if !is_local(chart) {
        args[0] += &format!(" --version {CHART_VERSION}");
    }
    args.push(format!("--namespace {NAMESPACE} --create-namespace"));
    args.push(format!("--set {}", set_arg("controlPlaneUrl", public_url)));
    args.push(format!("--set {}", set_arg("bootstrapToken", token)));
    if let Some(pem) = ca_pem {
        values.insert("controlPlaneCa".into(), json!(pem));
        command += &format!("cat > {CA_FILE} <<'EOF'\n{}\nEOF\n", pem.trim_end());
        args.push(format!("--set-file controlPlaneCa={CA_FILE}"));
    }
    command += &args.join(" \\\n  ");
    let version = if is_local(chart) { Value::Null } else { json!(CHART_VERSION) };
    HelmInstall {
        command,
        values: Value::Object(values),
        chart: json!({"release": RELEASE, "namespace": NAMESPACE, "chart": chart, "version": version}),
    }
}

impl HelmInstall {
    /// Adds `helmInstall`, `helmValues` and `helmChart` to a JSON answer.
    pub fn add_to(self, out: &mut Value) {
        out["helmInstall"] = json!(self.command);
        out["helmValues"] = self.values;
        out["helmChart"] = self.chart;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_control_plane_needs_only_the_url_and_token() {
        let h = install(DEFAULT_AGENT_CHART, "https://kubechat.example", None, "kcb_abc");
        assert_eq!(
            h.command,
            format!(
                "helm install kubechat-agent oci://ghcr.io/kubechat/charts/kubechat-agent --version {CHART_VERSION} \\\n  \
                 --namespace kubechat --create-namespace \\\n  \
                 --set 'controlPlaneUrl=https://kubechat.example' \\\n  \
                 --set 'bootstrapToken=kcb_abc'"
            )
        );
        assert_eq!(h.values, json!({"controlPlaneUrl": "https://kubechat.example", "bootstrapToken": "kcb_abc"}));
        assert_eq!(h.chart["version"], CHART_VERSION);
    }

    #[test]
    fn a_private_ca_is_written_to_a_file_and_set_from_it() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let h = install("./charts/kubechat-agent", "https://127.0.0.1:8443", Some(pem), "kcb_abc");
        assert!(h.command.starts_with(&format!("cat > {CA_FILE} <<'EOF'\n-----BEGIN CERTIFICATE-----\nMIIB\n")));
        assert!(
            h.command
                .contains("-----END CERTIFICATE-----\nEOF\nhelm install kubechat-agent ./charts/kubechat-agent \\")
        );
        assert!(h.command.ends_with(&format!("--set-file controlPlaneCa={CA_FILE}")));
        assert!(!h.command.contains("--version"), "a local chart has no version");
        assert_eq!(h.values["controlPlaneCa"], pem);
        assert_eq!(h.chart["version"], Value::Null);
    }

    #[test]
    fn values_are_quoted_for_the_shell_and_helm() {
        assert_eq!(set_arg("k", "a,b"), r"'k=a\,b'");
        assert_eq!(set_arg("k", "it's"), r"'k=it'\''s'");
        assert_eq!(set_arg("k", r"a\b"), r"'k=a\\b'");
    }
}
