//! The Helm charts, linted by the real Helm library (helm-sdkpy, which
//! bundles Helm v4; `scripts/install-helm.sh`, run by the test command,
//! installs it): every chart passes with its default values, and the
//! values schema rejects unknown keys and wrong types.

use std::path::{Path, PathBuf};

use kubechat_tests::helm::{lint, repo};

/// A copy of `chart` whose values.yaml has `edit` applied.
fn edited(chart: &Path, edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = |from: &Path, to: &Path| {
        for e in std::fs::read_dir(from).expect("read chart") {
            let e = e.expect("entry");
            let target = to.join(e.file_name());
            if e.file_type().expect("type").is_dir() {
                std::fs::create_dir_all(&target).expect("mkdir");
                for f in std::fs::read_dir(e.path()).expect("read") {
                    let f = f.expect("entry");
                    std::fs::copy(f.path(), target.join(f.file_name())).expect("copy");
                }
            } else {
                std::fs::copy(e.path(), &target).expect("copy");
            }
        }
    };
    copy(chart, dir.path());
    let values = dir.path().join("values.yaml");
    let text = std::fs::read_to_string(&values).expect("values");
    std::fs::write(&values, edit(text)).expect("write");
    dir
}

#[test]
fn every_chart_lints_clean_with_its_defaults() {
    let charts: Vec<PathBuf> = std::fs::read_dir(repo().join("charts"))
        .expect("charts/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Chart.yaml").exists())
        .collect();
    assert!(!charts.is_empty(), "no charts found");
    for chart in charts {
        let (errors, out) = lint(&chart);
        assert_eq!(errors, 0, "{}: {out}", chart.display());
    }
}

#[test]
fn the_agent_chart_schema_rejects_unknown_keys_and_wrong_types() {
    let chart = repo().join("charts/kubechat-agent");
    let unknown = edited(&chart, |v| format!("{v}\nbootstrapTokn: kcb_typo\n"));
    let (errors, out) = lint(unknown.path());
    assert!(errors > 0, "an unknown key passed: {out}");
    let wrong = edited(&chart, |v| v.replace("replicaCount: 2", "replicaCount: \"two\""));
    let (errors, out) = lint(wrong.path());
    assert!(errors > 0, "a wrong type passed: {out}");
    let bad_url = edited(&chart, |v| v.replace("controlPlaneUrl: \"\"", "controlPlaneUrl: \"http://cp\""));
    let (errors, out) = lint(bad_url.path());
    assert!(errors > 0, "a plain-http control plane URL passed: {out}");
}
