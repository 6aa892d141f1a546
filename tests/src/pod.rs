//! Runs a pod of kube-sim the way a kubelet would, as far as one machine
//! without a container runtime can, so that a chart's pod spec is what
//! starts the binary:
//!
//! - the container's `args` exactly, and its `env` with `fieldRef`,
//!   `secretKeyRef` and `configMapKeyRef` resolved against the cluster;
//! - its Secret and ConfigMap volumes, and a service-account token from a
//!   TokenRequest (`kubectl create token`), mounted at their paths inside a
//!   private mount namespace (`unshare --mount`), read-only;
//! - `KUBERNETES_SERVICE_HOST`/`_PORT` naming kube-sim, as in-cluster
//!   clients expect;
//! - the root filesystem read-only when `readOnlyRootFilesystem` says so,
//!   the pod's `runAsUser`/`runAsGroup`, no capabilities when they are
//!   dropped, and `no_new_privs` without privilege escalation.
//!
//! The one change: a pod has its own network namespace, so ports the
//! container binds on `0.0.0.0:<containerPort>` are mapped to free ports on
//! 127.0.0.1 (tests never bind fixed ports). Anything the runner does not
//! support (other volume kinds, `subPath`, a `command`) fails loudly.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use base64::Engine;
use kube_sim::TestSim;
use serde_json::Value;

use crate::kubectl::Kubectl;

/// Sets up the mount namespace, then becomes the container's process.
/// Arguments: stage dir, uid, gid, read-only root (true/false), then the
/// command line.
const ENTER_POD: &str = r#"set -eu
stage="$1"; uid="$2"; gid="$3"; ro="$4"; shift 4
mount -t tmpfs -o mode=0755 tmpfs /run
if [ -d "$stage/files/run" ]; then cp -a "$stage/files/run/." /run/; fi
if [ -d "$stage/files/etc" ]; then
  mount -t overlay overlay -o "lowerdir=/etc,upperdir=$stage/etc-upper,workdir=$stage/etc-work" /etc
  cp -a "$stage/files/etc/." /etc/
  mount -o remount,bind,ro /etc
fi
mount -o remount,ro /run
if [ "$ro" = true ]; then mount -o remount,bind,ro /; fi
exec setpriv --reuid "$uid" --regid "$gid" --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all -- "$@"
"#;

/// A pod's container running as a process.
pub struct RunningPod {
    /// The pod's name.
    pub name: String,
    /// `containerPort` → where it is reachable on this machine.
    pub ports: HashMap<u16, SocketAddr>,
    /// The container's arguments as started (after port mapping).
    pub args: Vec<String>,
    /// The container's environment as started.
    pub env: Vec<(String, String)>,
    child: tokio::process::Child,
    log: PathBuf,
    _stage: tempfile::TempDir,
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The decoded `data` (and `stringData`) of a Secret or ConfigMap.
fn object_data(obj: &Value, base64_data: bool) -> HashMap<String, Vec<u8>> {
    let mut out = HashMap::new();
    for (field, encoded) in [("data", base64_data), ("binaryData", true), ("stringData", false)] {
        if let Some(m) = obj.get(field).and_then(Value::as_object) {
            for (k, v) in m {
                let text = v.as_str().unwrap_or_default();
                let bytes = if encoded {
                    base64::engine::general_purpose::STANDARD.decode(text).expect("base64 data")
                } else {
                    text.as_bytes().to_vec()
                };
                out.insert(k.clone(), bytes);
            }
        }
    }
    out
}

/// Where a path of the pod lands in the mount namespace: `/var/run` is
/// `/run` on this machine; only `/run` and `/etc` can be populated.
fn staged_path(mount_path: &str) -> PathBuf {
    let p = mount_path.strip_prefix("/var/run/").map(|r| format!("/run/{r}")).unwrap_or(mount_path.to_string());
    assert!(
        p.starts_with("/run/") || p.starts_with("/etc/"),
        "the pod runner mounts only under /var/run, /run and /etc, not {mount_path}: extend tests/src/pod.rs"
    );
    PathBuf::from(p.trim_start_matches('/'))
}

fn write_files(dir: &Path, files: &HashMap<String, Vec<u8>>) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for (name, bytes) in files {
        let f = dir.join(name);
        std::fs::write(&f, bytes).expect("write a mounted file");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
}

impl RunningPod {
    /// Starts `pod`'s first container with `binary` as the image's
    /// entrypoint. `admin` is kubectl with cluster-admin rights on `sim`
    /// (it requests the service-account token, as the kubelet does).
    pub async fn start(sim: &TestSim, admin: &Kubectl, pod: &Value, binary: &Path) -> Self {
        let name = s(pod, "/metadata/name").to_string();
        let ns = s(pod, "/metadata/namespace").to_string();
        let spec = pod.get("spec").expect("pod spec");
        let containers = spec["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 1, "the pod runner runs one container");
        let c = &containers[0];
        assert!(c.get("command").is_none(), "a command would replace the image's entrypoint: {c}");
        let get = |plural: &str, obj_name: &str| -> Option<Value> {
            let r = sim.sim.cluster.resource("", "v1", plural).expect("core resource");
            sim.sim.cluster.store.get(&r, &ns, obj_name).ok()
        };
        let stage = tempfile::tempdir().expect("stage dir");
        let files = stage.path().join("files");
        for d in ["etc-upper", "etc-work"] {
            std::fs::create_dir_all(stage.path().join(d)).expect("mkdir");
        }

        // Volumes, as mounted.
        let volumes: HashMap<&str, &Value> =
            spec["volumes"].as_array().map(|v| v.iter().map(|v| (s(v, "/name"), v)).collect()).unwrap_or_default();
        for m in c["volumeMounts"].as_array().cloned().unwrap_or_default() {
            assert!(m.get("subPath").is_none(), "subPath mounts are not supported: {m}");
            let vol = volumes.get(s(&m, "/name")).unwrap_or_else(|| panic!("no volume for mount {m}"));
            let (obj, optional, base64_data) = if let Some(sv) = vol.get("secret") {
                (get("secrets", s(sv, "/secretName")), sv["optional"] == true, true)
            } else if let Some(cv) = vol.get("configMap") {
                (get("configmaps", s(cv, "/name")), cv["optional"] == true, false)
            } else {
                panic!("the pod runner supports secret and configMap volumes, not {vol}");
            };
            let data = match obj {
                Some(o) => object_data(&o, base64_data),
                None if optional => HashMap::new(),
                None => panic!("volume {vol} names an object that does not exist"),
            };
            write_files(&files.join(staged_path(s(&m, "/mountPath"))), &data);
        }

        // The service-account token, as the kubelet projects it.
        if spec["automountServiceAccountToken"] != false {
            let sa = s(spec, "/serviceAccountName");
            let sa = if sa.is_empty() { "default" } else { sa };
            let token = admin.ok(&["-n", &ns, "create", "token", sa, "--duration", "1h"]).await;
            let sa_files: HashMap<String, Vec<u8>> = [
                ("token".to_string(), token.trim().as_bytes().to_vec()),
                ("ca.crt".to_string(), sim.ca_pem.as_bytes().to_vec()),
                ("namespace".to_string(), ns.as_bytes().to_vec()),
            ]
            .into_iter()
            .collect();
            write_files(&files.join(staged_path("/var/run/secrets/kubernetes.io/serviceaccount")), &sa_files);
        }

        // Environment.
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
            ("HOSTNAME".into(), name.clone()),
            ("KUBERNETES_SERVICE_HOST".into(), sim.addr.ip().to_string()),
            ("KUBERNETES_SERVICE_PORT".into(), sim.addr.port().to_string()),
        ];
        for e in c["env"].as_array().cloned().unwrap_or_default() {
            let key = s(&e, "/name").to_string();
            let value = if let Some(v) = e.get("value") {
                v.as_str().expect("env value").to_string()
            } else if let Some(f) = e.pointer("/valueFrom/fieldRef") {
                match s(f, "/fieldPath") {
                    "metadata.name" => name.clone(),
                    "metadata.namespace" => ns.clone(),
                    "spec.serviceAccountName" => s(spec, "/serviceAccountName").to_string(),
                    "spec.nodeName" => s(spec, "/nodeName").to_string(),
                    "status.podIP" => "127.0.0.1".to_string(),
                    other => panic!("fieldRef {other} is not supported by the pod runner"),
                }
            } else if let Some(r) = e.pointer("/valueFrom/secretKeyRef") {
                let o = get("secrets", s(r, "/name")).unwrap_or_else(|| panic!("env {key}: no such Secret"));
                String::from_utf8(object_data(&o, true).remove(s(r, "/key")).expect("key")).expect("utf-8")
            } else if let Some(r) = e.pointer("/valueFrom/configMapKeyRef") {
                let o = get("configmaps", s(r, "/name")).unwrap_or_else(|| panic!("env {key}: no such ConfigMap"));
                String::from_utf8(object_data(&o, false).remove(s(r, "/key")).expect("key")).expect("utf-8")
            } else {
                panic!("env {e} is not supported by the pod runner");
            };
            env.push((key, value));
        }
        // Logs of the process under test, for the test to read.
        env.push(("KUBECHAT_LOG".into(), "info,kubechat_agent=debug".into()));

        // Ports: the pod's own network namespace becomes free loopback ports.
        let mut args: Vec<String> = c["args"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().expect("arg").to_string()).collect())
            .unwrap_or_default();
        let mut ports = HashMap::new();
        for p in c["ports"].as_array().cloned().unwrap_or_default() {
            let port = p["containerPort"].as_u64().expect("containerPort") as u16;
            let local = SocketAddr::from(([127, 0, 0, 1], crate::stack::free_port()));
            let mut bound = false;
            for a in &mut args {
                for any in [format!("0.0.0.0:{port}"), format!("[::]:{port}")] {
                    if a.contains(&any) {
                        *a = a.replace(&any, &local.to_string());
                        bound = true;
                    }
                }
            }
            assert!(bound, "containerPort {port} is declared but no argument binds it on 0.0.0.0: {args:?}");
            ports.insert(port, local);
        }

        let pod_sc = spec.get("securityContext").cloned().unwrap_or_default();
        let sc = c.get("securityContext").cloned().unwrap_or_default();
        let id = |k: &str| sc.get(k).or_else(|| pod_sc.get(k)).and_then(Value::as_u64).unwrap_or(0).to_string();
        let (uid, gid) = (id("runAsUser"), id("runAsGroup"));
        let ro = sc["readOnlyRootFilesystem"] == true;
        let log = stage.path().join("container.log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = tokio::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c", ENTER_POD, "enter-pod"])
            .arg(stage.path())
            .args([uid.as_str(), gid.as_str(), if ro { "true" } else { "false" }])
            .arg(binary)
            .args(&args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn unshare");
        Self { name, ports, args, env, child, log, _stage: stage }
    }

    /// What the container wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait")
    }

    /// Runs the container's `probe` (`livenessProbe`, `readinessProbe`)
    /// from `container` once: the HTTP status of its `httpGet`.
    pub async fn probe(&self, container: &Value, probe: &str) -> Option<u16> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let get = container.pointer(&format!("/{probe}/httpGet")).unwrap_or_else(|| panic!("no {probe}.httpGet"));
        let port = match &get["port"] {
            Value::Number(n) => n.as_u64().expect("port") as u16,
            Value::String(named) => container["ports"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == named.as_str()))
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap_or_else(|| panic!("{probe} names port {named}, which the container does not declare"))
                as u16,
            other => panic!("{probe} port {other}"),
        };
        let addr = self.ports.get(&port).unwrap_or_else(|| panic!("{probe} port {port} is not a container port"));
        let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n", s(get, "/path"));
        conn.write_all(req.as_bytes()).await.ok()?;
        let mut out = String::new();
        conn.read_to_string(&mut out).await.ok()?;
        out.split(' ').nth(1)?.parse().ok()
    }
}
