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

/// Ends the heredoc that writes the CA file; no line of a certificate can
/// be this.
const HEREDOC_END: &str = "KUBECHAT_CA_END";

/// Only the `CERTIFICATE` blocks of a PEM bundle (comments and anything
/// else an operator's file holds stay out of a snippet run in a shell),
/// each line checked to be PEM.
fn certificates_only(pem: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in pem.lines().map(str::trim) {
        match line {
            "-----BEGIN CERTIFICATE-----" => inside = true,
            "-----END CERTIFICATE-----" if inside => {
                out += "-----END CERTIFICATE-----\n";
                inside = false;
                continue;
            }
            _ => {}
        }
        let pem_line = line.starts_with("-----BEGIN CERTIFICATE")
            || line.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='));
        if inside && pem_line {
            out += line;
            out.push('\n');
        }
    }
    out
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
    if let Some(pem) = ca_pem.map(certificates_only).filter(|p| !p.is_empty()) {
        command += &format!("cat > {CA_FILE} <<'{HEREDOC_END}'\n{pem}{HEREDOC_END}\n");
        values.insert("controlPlaneCa".into(), json!(pem));
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
        assert!(
            h.command.starts_with(&format!("cat > {CA_FILE} <<'KUBECHAT_CA_END'\n-----BEGIN CERTIFICATE-----\nMIIB\n"))
        );
        assert!(h.command.contains(
            "-----END CERTIFICATE-----\nKUBECHAT_CA_END\nhelm install kubechat-agent ./charts/kubechat-agent \\"
        ));
        assert!(h.command.ends_with(&format!("--set-file controlPlaneCa={CA_FILE}")));
        assert!(!h.command.contains("--version"), "a local chart has no version");
        assert_eq!(h.values["controlPlaneCa"], pem);
        assert_eq!(h.chart["version"], Value::Null);
    }

    #[test]
    fn only_certificate_lines_reach_the_shell() {
        let hostile = "# my CA\n-----BEGIN CERTIFICATE-----\nMIIB\nEOF\n$(rm -rf ~)\nKUBECHAT_CA_END\n-----END CERTIFICATE-----\nrm -rf /\n";
        assert_eq!(certificates_only(hostile), "-----BEGIN CERTIFICATE-----\nMIIB\nEOF\n-----END CERTIFICATE-----\n");
        let h = install(DEFAULT_AGENT_CHART, "https://cp", Some(hostile), "kcb_x");
        assert!(!h.command.contains("rm -rf") && !h.command.contains("# my CA"), "{}", h.command);
        assert_eq!(h.command.matches("\nKUBECHAT_CA_END\n").count(), 1);
        assert!(
            install(DEFAULT_AGENT_CHART, "https://cp", Some("no certificate"), "kcb_x")
                .values
                .get("controlPlaneCa")
                .is_none()
        );
    }

    #[test]
    fn the_chart_version_is_the_agent_charts() {
        let chart = include_str!("../../charts/kubechat-agent/Chart.yaml");
        assert!(
            chart.lines().any(|l| l == format!("version: {CHART_VERSION}")),
            "bump charts/kubechat-agent/Chart.yaml"
        );
    }

    #[test]
    fn values_are_quoted_for_the_shell_and_helm() {
        assert_eq!(set_arg("k", "a,b"), r"'k=a\,b'");
        assert_eq!(set_arg("k", "it's"), r"'k=it'\''s'");
        assert_eq!(set_arg("k", r"a\b"), r"'k=a\\b'");
    }
}
