//! Runs a pod of kube-sim the way a kubelet would, as far as one machine
//! without a container runtime can, so that a chart's pod spec is what
//! starts the binary:
//!
//! - the container's `args` exactly, and its `env` with `fieldRef`,
//!   `secretKeyRef` and `configMapKeyRef` resolved against the cluster;
//! - its Secret, ConfigMap and projected volumes, and a service-account
//!   token from a TokenRequest (`kubectl create token`), mounted at their
//!   paths inside a private mount namespace (`unshare --mount`), read-only;
//!   `emptyDir` and `persistentVolumeClaim` volumes as empty writable
//!   directories (tmpfs) owned by the pod's user;
//! - `$(VAR)` references in `env` and `args` expanded as the kubelet does;
//! - `KUBERNETES_SERVICE_HOST`/`_PORT` naming kube-sim, as in-cluster
//!   clients expect;
//! - the root filesystem read-only when `readOnlyRootFilesystem` says so,
//!   the pod's `runAsUser`/`runAsGroup` (refusing root under
//!   `runAsNonRoot`), no capabilities when `ALL` are dropped, and
//!   `no_new_privs` when privilege escalation is not allowed.
//!
//! The one change: a pod has its own network namespace, so ports the
//! container binds on `0.0.0.0:<containerPort>` are mapped to free ports on
//! 127.0.0.1 (tests never bind fixed ports). Ports inside env values are
//! not remapped (a relay advertises its in-pod internal port, which the
//! tests do not dial). Anything the runner does not support (other volume
//! kinds, `subPath`, a `command`) fails loudly.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use base64::Engine;
use kube_sim::TestSim;
use serde_json::{Value, json};

use crate::kubectl::Kubectl;

/// Sets up the mount namespace, then becomes the container's process.
/// Arguments: stage dir, uid, gid, read-only root (true/false), setpriv's
/// privilege flags (from the security context), then the command line.
const ENTER_POD: &str = r#"set -eu
stage="$1"; uid="$2"; gid="$3"; ro="$4"; privs="$5"; shift 5
mount -t tmpfs -o mode=0755 tmpfs /run
for top in $(ls "$stage/files"); do
  if [ "$top" != run ]; then
    mkdir -p "$stage/upper/$top" "$stage/work/$top"
    mount -t overlay overlay -o "lowerdir=/$top,upperdir=$stage/upper/$top,workdir=$stage/work/$top" "/$top"
  fi
  cp -a "$stage/files/$top/." "/$top/"
done
while read -r dir; do
  mount -t tmpfs -o "mode=0770,uid=$uid,gid=$gid" tmpfs "$dir"
done < "$stage/writable"
for top in $(ls "$stage/files"); do
  if [ "$top" = run ]; then mount -o remount,ro /run; else mount -o remount,bind,ro "/$top"; fi
done
if [ "$ro" = true ]; then mount -o remount,bind,ro /; fi
exec setpriv --reuid "$uid" --regid "$gid" --clear-groups $privs -- "$@"
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

/// Where a path of the pod lands in the stage (`files/<path>`): `/var/run`
/// is `/run` on this machine; `/run` gets a tmpfs of its own, any other
/// top-level directory an overlay, so nothing of the host changes.
fn staged_path(mount_path: &str) -> PathBuf {
    let p = mount_path.strip_prefix("/var/run/").map(|r| format!("/run/{r}")).unwrap_or(mount_path.to_string());
    let top = p.trim_start_matches('/').split('/').next().unwrap_or_default();
    assert!(
        p.starts_with('/') && !["", "proc", "sys", "dev", "tmp"].contains(&top) && !p.contains(".."),
        "the pod runner cannot mount at {mount_path}"
    );
    PathBuf::from(p.trim_start_matches('/'))
}

/// Expands `$(VAR)` references to `env` as the kubelet does (`$$` escapes;
/// unknown references stay as they are).
fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|a| a.split_once(')')) {
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The files a Secret or ConfigMap source gives: all keys, or the listed
/// `items` at their paths.
fn source_files(obj: &Value, base64_data: bool, items: Option<&Vec<Value>>) -> HashMap<String, Vec<u8>> {
    let mut data = object_data(obj, base64_data);
    match items {
        None => data,
        Some(items) => items
            .iter()
            .map(|i| {
                let key = s(i, "/key");
                let bytes =
                    data.remove(key).unwrap_or_else(|| panic!("item {key} is not in {}", obj["metadata"]["name"]));
                (s(i, "/path").to_string(), bytes)
            })
            .collect(),
    }
}

fn write_files(dir: &Path, files: &HashMap<String, Vec<u8>>) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for (name, bytes) in files {
        assert!(!name.starts_with('/') && !name.contains(".."), "a file path {name} escapes its volume");
        let f = dir.join(name);
        let parent = f.parent().expect("parent");
        std::fs::create_dir_all(parent).expect("mkdir");
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).expect("chmod");
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
        std::fs::create_dir_all(&files).expect("mkdir");
        let mut writable = String::new();

        // Volumes, as mounted.
        let volumes: HashMap<&str, &Value> =
            spec["volumes"].as_array().map(|v| v.iter().map(|v| (s(v, "/name"), v)).collect()).unwrap_or_default();
        let from = |kind: &str, src: &Value| -> HashMap<String, Vec<u8>> {
            let (plural, name, base64_data) = match kind {
                // A secret volume names it `secretName`; a projected source, `name`.
                "secret" => (
                    "secrets",
                    s(src, if src.get("secretName").is_some() { "/secretName" } else { "/name" }).to_string(),
                    true,
                ),
                "configMap" => ("configmaps", s(src, "/name").to_string(), false),
                other => panic!("the pod runner does not support {other} volumes"),
            };
            match get(plural, &name) {
                Some(o) => source_files(&o, base64_data, src.get("items").and_then(Value::as_array)),
                None if src["optional"] == true => HashMap::new(),
                None => panic!("{kind} {name} does not exist (and is not optional)"),
            }
        };
        for m in c["volumeMounts"].as_array().cloned().unwrap_or_default() {
            assert!(m.get("subPath").is_none(), "subPath mounts are not supported: {m}");
            let vol = volumes.get(s(&m, "/name")).unwrap_or_else(|| panic!("no volume for mount {m}"));
            let at = files.join(staged_path(s(&m, "/mountPath")));
            if vol.get("emptyDir").is_some() || vol.get("persistentVolumeClaim").is_some() {
                std::fs::create_dir_all(&at).expect("mkdir");
                let path = staged_path(s(&m, "/mountPath"));
                writable += &format!("/{}\n", path.display());
                continue;
            }
            let data = if let Some(sv) = vol.get("secret") {
                from("secret", sv)
            } else if let Some(cv) = vol.get("configMap") {
                from("configMap", cv)
            } else if let Some(sources) = vol.pointer("/projected/sources").and_then(Value::as_array) {
                let mut all = HashMap::new();
                for src in sources {
                    let (kind, inner) = src.as_object().and_then(|o| o.iter().next()).expect("a projected source");
                    all.extend(from(kind, inner));
                }
                all
            } else {
                panic!(
                    "the pod runner supports secret, configMap, projected, emptyDir and persistentVolumeClaim volumes, not {vol}"
                );
            };
            write_files(&at, &data);
        }
        std::fs::write(stage.path().join("writable"), &writable).expect("writable list");

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
                expand(v.as_str().expect("env value"), &env)
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
        let non_root = sc.get("runAsNonRoot").or_else(|| pod_sc.get("runAsNonRoot")) == Some(&Value::Bool(true));
        // The kubelet refuses to start such a container.
        assert!(!(non_root && uid == "0"), "runAsNonRoot, but the container would run as root (no runAsUser)");
        let ro = sc["readOnlyRootFilesystem"] == true;
        let mut privs = Vec::new();
        if sc["allowPrivilegeEscalation"] == false {
            privs.push("--no-new-privs");
        }
        if sc.pointer("/capabilities/drop").and_then(Value::as_array).is_some_and(|d| d.contains(&json!("ALL"))) {
            privs.extend(["--inh-caps=-all", "--bounding-set=-all"]);
        }
        let log = stage.path().join("container.log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = tokio::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c", ENTER_POD, "enter-pod"])
            .arg(stage.path())
            .args([uid.as_str(), gid.as_str(), if ro { "true" } else { "false" }, &privs.join(" ")])
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

    /// Waits until the readiness probe answers 200 (then checks liveness);
    /// fails at once, with the container's log, if the process exits.
    pub async fn wait_ready(&mut self, container: &Value, within: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                panic!("pod {} exited ({status}); its log:\n{}", self.name, self.log());
            }
            if self.probe(container, "readinessProbe").await == Some(200) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "pod {} never became ready; its log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(self.probe(container, "livenessProbe").await, Some(200), "{}", self.log());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_variables_like_the_kubelet() {
        let env = vec![("POD_IP".to_string(), "10.0.0.7".to_string()), ("ID".to_string(), "relay-0".to_string())];
        assert_eq!(expand("$(POD_IP):7444", &env), "10.0.0.7:7444");
        assert_eq!(expand("/tls/$(ID)/tls.crt", &env), "/tls/relay-0/tls.crt");
        assert_eq!(expand("$$(POD_IP) $(NOPE) $5", &env), "$(POD_IP) $(NOPE) $5");
    }

    #[test]
    fn stages_paths_off_the_hosts_sensitive_directories() {
        assert_eq!(staged_path("/var/run/kubechat/bootstrap"), PathBuf::from("run/kubechat/bootstrap"));
        assert_eq!(staged_path("/var/lib/kubechat/spool"), PathBuf::from("var/lib/kubechat/spool"));
        assert!(std::panic::catch_unwind(|| staged_path("/proc/x")).is_err());
        assert!(std::panic::catch_unwind(|| staged_path("/etc/../proc")).is_err());
    }
}
