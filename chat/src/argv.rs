//! A kubectl command line, parsed with kubectl's own grammar (cobra and
//! pflag), never a shell: no quoting, globbing, pipes or variables — each
//! argument is one element of the array the caller sends.
//!
//! What pflag accepts, this accepts: `--flag=value`, `--flag value`,
//! `-f value`, `-fvalue`, `-f=value`, grouped short booleans (`-it`),
//! `--bool=false`, flags anywhere among the arguments, and `--` ending the
//! flags. Resource arguments follow kubectl's resource builder: `TYPE`,
//! `TYPE NAME…`, `TYPE1,TYPE2 NAME…` and `TYPE/NAME…`, with the type
//! resolved against the cluster's discovery (plural, singular, short name,
//! kind, `.group`).
//!
//! A command line is refused, with a reason, when it would reach outside
//! the request KubeChat authorizes (`--kubeconfig`, `--server`, `--token`,
//! `--as…`, `--raw`, `proxy`, `port-forward`, `edit`, `cp`, `-f` with a URL
//! or a file), and is invalid when kubectl itself would reject it.

use std::time::Duration;

use serde::Serialize;

use crate::discovery::{ApiResource, Discovery};

/// Longest command line read, in arguments.
pub const MAX_ARGS: usize = 128;
/// Longest argument read, in bytes.
pub const MAX_ARG_BYTES: usize = 4096;
/// Largest pasted manifest read, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Invocation {
    /// What it does.
    pub command: Command,
    /// `-n`/`--namespace`, if given.
    pub namespace: Option<String>,
    /// `-A`/`--all-namespaces`.
    pub all_namespaces: bool,
}

/// Why a command line is not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
pub enum Refusal {
    /// KubeChat does not run this (it would reach outside what is
    /// authorized, or needs a terminal or files).
    #[error("{0}")]
    Refused(String),
    /// kubectl itself would reject it.
    #[error("{0}")]
    Invalid(String),
}

/// The resource and name of one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// Its resource type.
    pub resource: ApiResource,
    /// Its name.
    pub name: String,
}

/// One resource argument: a type, with a name or all of that type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The resource type.
    pub resource: ApiResource,
    /// The object's name (`None`: every object of the type, narrowed by
    /// any selector).
    pub name: Option<String>,
}

/// `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Output {
    /// The server's table.
    Table,
    /// The table with its wide columns.
    Wide,
    /// YAML.
    Yaml,
    /// JSON.
    Json,
    /// `resource/name` per line.
    Name,
}

/// `kubectl logs`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Logs {
    /// The pod, or a workload (`deployment/api`) one of whose pods is read.
    pub object: ObjectRef,
    /// `-c`.
    pub container: Option<String>,
    /// `--all-containers`.
    pub all_containers: bool,
    /// `--tail` (`None`: everything, or 10 with a selector as kubectl does).
    pub tail: Option<i64>,
    /// `--since` (seconds).
    pub since_seconds: Option<u64>,
    /// `--since-time` (RFC 3339).
    pub since_time: Option<String>,
    /// `-p`.
    pub previous: bool,
    /// `-f`.
    pub follow: bool,
    /// `--timestamps`.
    pub timestamps: bool,
    /// `--limit-bytes`.
    pub limit_bytes: Option<u64>,
}

/// A label or annotation change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyChange {
    /// The key.
    pub key: String,
    /// The new value (`None`: remove the key, `key-`).
    pub value: Option<String>,
}

/// `kubectl rollout …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Rollout {
    /// `restart`.
    Restart,
    /// `status`.
    Status,
    /// `undo [--to-revision=N]` (0: the previous revision).
    Undo {
        /// The revision to go back to.
        to_revision: u64,
    },
    /// `history [--revision=N]`.
    History {
        /// One revision's details (0: list them all).
        revision: u64,
    },
}

/// `kubectl drain` options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Drain {
    /// The node.
    pub node: String,
    /// `--ignore-daemonsets`.
    pub ignore_daemonsets: bool,
    /// `--delete-emptydir-data`.
    pub delete_emptydir_data: bool,
    /// `--force` (pods no controller owns are evicted too).
    pub force: bool,
    /// `--grace-period` (seconds; `None`: each pod's own).
    pub grace_period: Option<i64>,
    /// `--disable-eviction` is refused; pods are always evicted (PDBs hold).
    pub selector: Option<String>,
}

/// What a command line does.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "verb")]
pub enum Command {
    /// `kubectl get`.
    Get {
        /// What to get.
        targets: Vec<Target>,
        /// `-o`.
        output: Output,
        /// `-l`.
        selector: Option<String>,
        /// `--field-selector`.
        field_selector: Option<String>,
        /// `-w`.
        watch: bool,
        /// `--show-labels`.
        show_labels: bool,
    },
    /// `kubectl describe`.
    Describe {
        /// What to describe.
        targets: Vec<Target>,
        /// `-l`.
        selector: Option<String>,
    },
    /// `kubectl logs`.
    Logs(Logs),
    /// `kubectl events`.
    Events {
        /// `--for kind/name`.
        for_object: Option<ObjectRef>,
        /// `--types` (Normal, Warning).
        types: Vec<String>,
        /// `-w`.
        watch: bool,
    },
    /// `kubectl top pods|nodes`.
    Top {
        /// `pods` or `nodes`.
        nodes: bool,
        /// One object.
        name: Option<String>,
        /// `-l`.
        selector: Option<String>,
        /// `--containers`.
        containers: bool,
    },
    /// `kubectl scale`.
    Scale {
        /// The objects (named).
        objects: Vec<ObjectRef>,
        /// `--replicas`.
        replicas: u32,
        /// `--current-replicas` (a precondition).
        current_replicas: Option<u32>,
    },
    /// `kubectl rollout`.
    Rollout {
        /// What to do.
        rollout: Rollout,
        /// The workload.
        object: ObjectRef,
    },
    /// `kubectl delete`.
    Delete {
        /// What to delete (named, or all of a type with a selector or `--all`).
        targets: Vec<Target>,
        /// `-l`.
        selector: Option<String>,
        /// `--all`.
        all: bool,
        /// `--grace-period`.
        grace_period: Option<i64>,
        /// `--cascade` (background, foreground, orphan).
        cascade: String,
    },
    /// `kubectl cordon`.
    Cordon {
        /// The node.
        node: String,
    },
    /// `kubectl uncordon`.
    Uncordon {
        /// The node.
        node: String,
    },
    /// `kubectl drain`.
    Drain(Drain),
    /// `kubectl label`.
    Label {
        /// The objects.
        targets: Vec<Target>,
        /// The changes.
        changes: Vec<KeyChange>,
        /// `--overwrite`.
        overwrite: bool,
        /// `-l`.
        selector: Option<String>,
    },
    /// `kubectl annotate`.
    Annotate {
        /// The objects.
        targets: Vec<Target>,
        /// The changes.
        changes: Vec<KeyChange>,
        /// `--overwrite`.
        overwrite: bool,
        /// `-l`.
        selector: Option<String>,
    },
    /// `kubectl apply -f -` of a pasted manifest.
    Apply {
        /// The manifest (YAML or JSON, one or more documents).
        manifest: String,
        /// `--server-side`.
        server_side: bool,
        /// `--force-conflicts`.
        force_conflicts: bool,
    },
    /// `kubectl exec POD [-c C] -- COMMAND…` (no terminal: the command runs
    /// and its output is shown).
    Exec {
        /// The pod (or a workload one of whose pods runs it).
        object: ObjectRef,
        /// `-c`.
        container: Option<String>,
        /// The command and its arguments.
        command: Vec<String>,
    },
    /// KubeChat's `diagnose TYPE NAME`: status, conditions, events and
    /// recent logs of one object, read and summed up.
    Diagnose {
        /// The object.
        object: ObjectRef,
    },
    /// KubeChat's `changes [--since=1h]`: what changed (events, rollouts)
    /// in a namespace or everywhere.
    Changes {
        /// How far back, in seconds.
        since_seconds: u64,
    },
}

/// How much a command can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Risk {
    /// Reads only.
    Read,
    /// Changes objects.
    Write,
    /// Deletes, evicts, scales to zero or rolls back.
    Destructive,
    /// Runs a process in a container.
    Interactive,
}

impl Command {
    /// The command's risk.
    pub fn risk(&self) -> Risk {
        match self {
            Self::Get { .. }
            | Self::Describe { .. }
            | Self::Logs(_)
            | Self::Events { .. }
            | Self::Top { .. }
            | Self::Diagnose { .. }
            | Self::Changes { .. } => Risk::Read,
            Self::Rollout { rollout: Rollout::Status | Rollout::History { .. }, .. } => Risk::Read,
            Self::Rollout { rollout: Rollout::Undo { .. }, .. } => Risk::Destructive,
            Self::Rollout { rollout: Rollout::Restart, .. } => Risk::Write,
            Self::Scale { replicas: 0, .. } => Risk::Destructive,
            Self::Scale { .. }
            | Self::Cordon { .. }
            | Self::Uncordon { .. }
            | Self::Label { .. }
            | Self::Annotate { .. }
            | Self::Apply { .. } => Risk::Write,
            Self::Delete { .. } | Self::Drain(_) => Risk::Destructive,
            Self::Exec { .. } => Risk::Interactive,
        }
    }

    /// Whether it streams until stopped (`logs -f`, `get -w`, `events -w`).
    pub fn streams(&self) -> bool {
        match self {
            Self::Get { watch, .. } | Self::Events { watch, .. } => *watch,
            Self::Logs(l) => l.follow,
            _ => false,
        }
    }
}

/// Parses `argv` (a leading `kubectl` is skipped) against the cluster's
/// `discovery`. `manifest` is the pasted manifest of `apply -f -`.
pub fn parse(argv: &[String], manifest: Option<&str>, discovery: &Discovery) -> Result<Invocation, Refusal> {
    check_limits(argv, manifest)?;
    let argv = match argv.first().map(String::as_str) {
        Some("kubectl") => &argv[1..],
        _ => argv,
    };
    let Some(verb_at) = find_verb(argv)? else {
        return Err(invalid("no command given; for example: get pods -n web"));
    };
    let verb = argv[verb_at].as_str();
    let spec = command_spec(verb)?;
    let mut rest: Vec<String> = argv[..verb_at].to_vec();
    rest.extend_from_slice(&argv[verb_at + 1..]);
    let parsed = Flags::parse(&rest, spec.flags, verb)?;
    let namespace = parsed.value("namespace").map(str::to_string);
    if let Some(ns) = &namespace {
        check_namespace(ns)?;
    }
    let all_namespaces = parsed.bool("all-namespaces");
    if all_namespaces && !spec.all_namespaces {
        return Err(invalid(format!("unknown shorthand flag: 'A' in -A (kubectl {verb} has no --all-namespaces)")));
    }
    let command = (spec.build)(&parsed, discovery, manifest)?;
    Ok(Invocation { command, namespace, all_namespaces })
}

fn invalid(m: impl Into<String>) -> Refusal {
    Refusal::Invalid(format!("error: {}", m.into()))
}

fn refused(m: impl Into<String>) -> Refusal {
    Refusal::Refused(m.into())
}

fn check_limits(argv: &[String], manifest: Option<&str>) -> Result<(), Refusal> {
    if argv.len() > MAX_ARGS {
        return Err(invalid(format!("the command line has {} arguments; at most {MAX_ARGS} are read", argv.len())));
    }
    for a in argv {
        if a.len() > MAX_ARG_BYTES {
            return Err(invalid(format!("an argument is {} bytes long; at most {MAX_ARG_BYTES} are read", a.len())));
        }
        if a.chars().any(|c| c.is_control() && c != '\t') {
            return Err(invalid(format!("argument {a:?} contains a control character")));
        }
    }
    if let Some(m) = manifest
        && m.len() > MAX_MANIFEST_BYTES
    {
        return Err(invalid(format!("the manifest is {} bytes; at most {MAX_MANIFEST_BYTES} are read", m.len())));
    }
    Ok(())
}

/// Flags every command accepts (kubectl's global flags) and what they take.
const GLOBAL: &[FlagSpec] = &[FlagSpec::value("namespace", Some('n')), FlagSpec::boolean("all-namespaces", Some('A'))];

/// Global kubectl flags that choose another cluster, identity or
/// transport: KubeChat decides those.
const REFUSED_GLOBAL: &[(&str, Option<char>)] = &[
    ("kubeconfig", None),
    ("server", Some('s')),
    ("token", None),
    ("as", None),
    ("as-group", None),
    ("as-uid", None),
    ("as-user-extra", None),
    ("user", None),
    ("username", None),
    ("password", None),
    ("cluster", None),
    ("context", None),
    ("client-certificate", None),
    ("client-key", None),
    ("certificate-authority", None),
    ("insecure-skip-tls-verify", None),
    ("tls-server-name", None),
    ("disable-compression", None),
    ("cache-dir", None),
    ("profile", None),
    ("profile-output", None),
];

/// Skips global flags (and their values) before the verb; the verb is the
/// first positional argument.
fn find_verb(argv: &[String]) -> Result<Option<usize>, Refusal> {
    let mut i = 0;
    while i < argv.len() {
        let a = argv[i].as_str();
        if a == "--" {
            return Ok(None);
        }
        if !a.starts_with('-') || a == "-" {
            return Ok(Some(i));
        }
        // A global flag that takes a value and has none attached skips the
        // next argument too.
        let takes_next = match a.strip_prefix("--") {
            Some(long) => !long.contains('=') && (long == "namespace" || is_refused_long(long)),
            None => a == "-n" || a == "-s",
        };
        i += if takes_next { 2 } else { 1 };
    }
    Ok(None)
}

fn is_refused_long(name: &str) -> bool {
    REFUSED_GLOBAL.iter().any(|(n, _)| *n == name)
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Bool,
    Value,
}

/// One flag of a command.
#[derive(Debug, Clone, Copy)]
struct FlagSpec {
    long: &'static str,
    short: Option<char>,
    kind: Kind,
}

impl FlagSpec {
    const fn value(long: &'static str, short: Option<char>) -> Self {
        Self { long, short, kind: Kind::Value }
    }

    const fn boolean(long: &'static str, short: Option<char>) -> Self {
        Self { long, short, kind: Kind::Bool }
    }
}

/// Flags and positional arguments, pflag's way.
#[derive(Debug, Default)]
struct Flags {
    values: Vec<(&'static str, String)>,
    positional: Vec<String>,
    /// Arguments after `--`.
    after_dash: Option<Vec<String>>,
}

/// The value of `flag` given as the next argument `v`. pflag would take
/// even a flag as the value (`-l --kubeconfig=/x` selects by the label
/// "--kubeconfig=/x"); a person never means that, and a command line that
/// reads as if it carried a refused flag is not run: it is refused with how
/// to say it unambiguously. Negative numbers (`--tail -1`) are values.
fn separate_value(flag: &str, v: &str) -> Result<String, Refusal> {
    let numeric = v.strip_prefix('-').is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()));
    if v.len() > 1 && v.starts_with('-') && !numeric {
        return Err(invalid(format!(
            "flag {flag} needs a value, but the next argument {v:?} is a flag; if you mean it as the value, write {flag}={v}"
        )));
    }
    Ok(v.to_string())
}

impl Flags {
    fn parse(args: &[String], own: &[FlagSpec], verb: &str) -> Result<Self, Refusal> {
        let find_long = |name: &str| own.iter().chain(GLOBAL).find(|f| f.long == name).copied();
        let find_short = |c: char| own.iter().chain(GLOBAL).find(|f| f.short == Some(c)).copied();
        let mut out = Self::default();
        let mut i = 0;
        while i < args.len() {
            let a = args[i].as_str();
            i += 1;
            if a == "--" {
                out.after_dash = Some(args[i..].to_vec());
                break;
            }
            if let Some(long) = a.strip_prefix("--") {
                let (name, attached) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (long, None),
                };
                refuse_flag(name, verb)?;
                let spec = find_long(name).ok_or_else(|| invalid(format!("unknown flag: --{name}")))?;
                let value = match (spec.kind, attached) {
                    (Kind::Bool, None) => "true".to_string(),
                    (Kind::Bool, Some(v)) => bool_value(&v, name)?.to_string(),
                    (Kind::Value, Some(v)) => v,
                    (Kind::Value, None) => {
                        let v = args.get(i).ok_or_else(|| invalid(format!("flag needs an argument: --{name}")))?;
                        i += 1;
                        separate_value(&format!("--{name}"), v)?
                    }
                };
                out.values.push((spec.long, value));
            } else if a.len() > 1 && a.starts_with('-') {
                // Short flags: a group of booleans, the last of which may
                // take a value (attached, after `=`, or the next argument).
                let chars: Vec<char> = a[1..].chars().collect();
                let mut j = 0;
                while j < chars.len() {
                    let c = chars[j];
                    j += 1;
                    if let Some((long, _)) = REFUSED_GLOBAL.iter().find(|(_, s)| *s == Some(c)) {
                        refuse_flag(long, verb)?;
                    }
                    let spec = find_short(c).ok_or_else(|| {
                        invalid(format!("unknown shorthand flag: '{c}' in {a} (kubectl {verb} has no -{c})"))
                    })?;
                    match spec.kind {
                        Kind::Bool => {
                            let mut value = "true".to_string();
                            if chars.get(j) == Some(&'=') {
                                let v: String = chars[j + 1..].iter().collect();
                                value = bool_value(&v, spec.long)?.to_string();
                                j = chars.len();
                            }
                            out.values.push((spec.long, value));
                        }
                        Kind::Value => {
                            let rest: String = chars[j..].iter().collect();
                            let value = if let Some(v) = rest.strip_prefix('=') {
                                v.to_string()
                            } else if !rest.is_empty() {
                                rest
                            } else {
                                let v = args
                                    .get(i)
                                    .ok_or_else(|| invalid(format!("flag needs an argument: '{c}' in -{c}")))?;
                                i += 1;
                                separate_value(&format!("-{c}"), v)?
                            };
                            out.values.push((spec.long, value));
                            j = chars.len();
                        }
                    }
                }
            } else {
                out.positional.push(a.to_string());
            }
        }
        Ok(out)
    }

    /// The last value of `long` (pflag: the last one wins).
    fn value(&self, long: &str) -> Option<&str> {
        self.values.iter().rev().find(|(n, _)| *n == long).map(|(_, v)| v.as_str())
    }

    fn bool(&self, long: &str) -> bool {
        self.value(long) == Some("true")
    }

    fn int(&self, long: &str) -> Result<Option<i64>, Refusal> {
        self.value(long)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| invalid(format!("invalid argument {v:?} for \"--{long}\" flag: not an integer")))
            })
            .transpose()
    }

    fn duration(&self, long: &str) -> Result<Option<Duration>, Refusal> {
        self.value(long)
            .map(|v| {
                go_duration(v).ok_or_else(|| {
                    invalid(format!("invalid argument {v:?} for \"--{long}\" flag: not a duration (e.g. 30s, 10m, 1h)"))
                })
            })
            .transpose()
    }

    fn selector(&self) -> Result<Option<String>, Refusal> {
        self.value("selector").map(|s| check_selector(s).map(|()| s.to_string())).transpose()
    }
}

fn bool_value(v: &str, name: &str) -> Result<bool, Refusal> {
    match v {
        "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(true),
        "false" | "0" | "f" | "F" | "FALSE" | "False" => Ok(false),
        _ => Err(invalid(format!("invalid argument {v:?} for \"--{name}\" flag: not a boolean"))),
    }
}

/// Flags KubeChat refuses, on any command: they pick another cluster or
/// identity, or bypass what is authorized.
fn refuse_flag(name: &str, verb: &str) -> Result<(), Refusal> {
    if is_refused_long(name) {
        return Err(refused(format!(
            "--{name} is not available in chat: KubeChat chooses the cluster and identity, and authorizes every request as you"
        )));
    }
    if name == "raw" {
        return Err(refused(
            "--raw is not available in chat: it sends any path as it is; ask for the resource instead (kubectl get TYPE NAME)",
        ));
    }
    if name == "kustomize" || (name == "filename" && verb != "apply") {
        return Err(refused(format!(
            "--{name} is not available in chat: KubeChat reads no files; paste a manifest to apply"
        )));
    }
    Ok(())
}

/// Go's `time.ParseDuration` for the units people use: `300ms`, `30s`,
/// `10m`, `1h30m`, `1.5h`.
pub fn go_duration(s: &str) -> Option<Duration> {
    if s.is_empty() || s.len() > 32 {
        return None;
    }
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * unit;
        rest = &rest[unit_end..];
    }
    (total.is_finite() && total < 1e10).then(|| Duration::from_secs_f64(total))
}

/// Names as the API server accepts them in a path: no `/`, `%`, spaces,
/// not `.` or `..`, at most 253 bytes.
fn check_name(what: &str, name: &str) -> Result<(), Refusal> {
    let bad = name.is_empty()
        || name.len() > 253
        || name == "."
        || name == ".."
        || name.chars().any(|c| c == '/' || c == '%' || c == '?' || c == '#' || c.is_whitespace() || c.is_control());
    if bad {
        return Err(invalid(format!("{what} {name:?} is not a valid name")));
    }
    Ok(())
}

/// A namespace: a DNS-1123 label, as the API server requires.
fn check_namespace(ns: &str) -> Result<(), Refusal> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if !ok {
        return Err(invalid(format!(
            "namespace {ns:?} is not a valid name: a lowercase RFC 1123 label (letters, digits and '-')"
        )));
    }
    Ok(())
}

/// A label selector as kubectl passes it on (the API server parses it;
/// here only what could not be one).
fn check_selector(s: &str) -> Result<(), Refusal> {
    if s.is_empty() || s.len() > 1024 || s.chars().any(char::is_control) {
        return Err(invalid(format!("invalid selector {s:?}")));
    }
    Ok(())
}

struct CommandSpec {
    flags: &'static [FlagSpec],
    all_namespaces: bool,
    build: fn(&Flags, &Discovery, Option<&str>) -> Result<Command, Refusal>,
}

/// Commands KubeChat runs, and why the others are refused.
fn command_spec(verb: &str) -> Result<CommandSpec, Refusal> {
    const GET: &[FlagSpec] = &[
        FlagSpec::value("output", Some('o')),
        FlagSpec::value("selector", Some('l')),
        FlagSpec::value("field-selector", None),
        FlagSpec::boolean("watch", Some('w')),
        FlagSpec::boolean("show-labels", None),
        FlagSpec::value("chunk-size", None),
        FlagSpec::boolean("no-headers", None),
        FlagSpec::boolean("raw", None),
    ];
    const DESCRIBE: &[FlagSpec] = &[FlagSpec::value("selector", Some('l')), FlagSpec::boolean("show-events", None)];
    const LOGS: &[FlagSpec] = &[
        FlagSpec::value("container", Some('c')),
        FlagSpec::boolean("all-containers", None),
        FlagSpec::value("tail", None),
        FlagSpec::value("since", None),
        FlagSpec::value("since-time", None),
        FlagSpec::boolean("previous", Some('p')),
        FlagSpec::boolean("follow", Some('f')),
        FlagSpec::boolean("timestamps", None),
        FlagSpec::value("limit-bytes", None),
        FlagSpec::value("selector", Some('l')),
    ];
    const EVENTS: &[FlagSpec] =
        &[FlagSpec::value("for", None), FlagSpec::value("types", None), FlagSpec::boolean("watch", Some('w'))];
    const TOP: &[FlagSpec] = &[FlagSpec::value("selector", Some('l')), FlagSpec::boolean("containers", None)];
    const SCALE: &[FlagSpec] = &[FlagSpec::value("replicas", None), FlagSpec::value("current-replicas", None)];
    const ROLLOUT: &[FlagSpec] = &[
        FlagSpec::value("to-revision", None),
        FlagSpec::value("revision", None),
        FlagSpec::value("timeout", None),
        FlagSpec::boolean("watch", Some('w')),
    ];
    const DELETE: &[FlagSpec] = &[
        FlagSpec::value("selector", Some('l')),
        FlagSpec::boolean("all", None),
        FlagSpec::value("grace-period", None),
        FlagSpec::boolean("force", None),
        FlagSpec::value("cascade", None),
        FlagSpec::boolean("wait", None),
        FlagSpec::boolean("now", None),
        FlagSpec::value("filename", Some('f')),
    ];
    const DRAIN: &[FlagSpec] = &[
        FlagSpec::boolean("ignore-daemonsets", None),
        FlagSpec::boolean("delete-emptydir-data", None),
        FlagSpec::boolean("force", None),
        FlagSpec::value("grace-period", None),
        FlagSpec::value("timeout", None),
        FlagSpec::value("selector", Some('l')),
        FlagSpec::value("pod-selector", None),
        FlagSpec::boolean("disable-eviction", None),
    ];
    const LABEL: &[FlagSpec] = &[
        FlagSpec::boolean("overwrite", None),
        FlagSpec::value("selector", Some('l')),
        FlagSpec::boolean("all", None),
        FlagSpec::value("filename", Some('f')),
    ];
    const APPLY: &[FlagSpec] = &[
        FlagSpec::value("filename", Some('f')),
        FlagSpec::boolean("server-side", None),
        FlagSpec::boolean("force-conflicts", None),
        FlagSpec::value("kustomize", Some('k')),
        FlagSpec::boolean("prune", None),
    ];
    const EXEC: &[FlagSpec] = &[
        FlagSpec::value("container", Some('c')),
        FlagSpec::boolean("stdin", Some('i')),
        FlagSpec::boolean("tty", Some('t')),
        FlagSpec::boolean("quiet", Some('q')),
    ];
    const NONE: &[FlagSpec] = &[FlagSpec::value("selector", Some('l'))];
    const CHANGES: &[FlagSpec] = &[FlagSpec::value("since", None)];
    let spec = |flags, all_namespaces, build| Ok(CommandSpec { flags, all_namespaces, build });
    match verb {
        "get" => spec(GET, true, build_get),
        "describe" => spec(DESCRIBE, true, build_describe),
        "logs" | "log" => spec(LOGS, false, build_logs),
        "events" => spec(EVENTS, true, build_events),
        "top" => spec(TOP, true, build_top),
        "scale" => spec(SCALE, false, build_scale),
        "rollout" => spec(ROLLOUT, false, build_rollout),
        "delete" => spec(DELETE, true, build_delete),
        "cordon" => spec(NONE, false, |f, _, _| Ok(Command::Cordon { node: one_node(f, "cordon")? })),
        "uncordon" => spec(NONE, false, |f, _, _| Ok(Command::Uncordon { node: one_node(f, "uncordon")? })),
        "drain" => spec(DRAIN, false, build_drain),
        "label" => spec(LABEL, true, |f, d, _| build_keys(f, d, false)),
        "annotate" => spec(LABEL, true, |f, d, _| build_keys(f, d, true)),
        "apply" => spec(APPLY, false, build_apply),
        "exec" => spec(EXEC, false, build_exec),
        "diagnose" => spec(NONE, false, build_diagnose),
        "changes" => spec(CHANGES, true, build_changes),
        "proxy" => Err(refused(
            "kubectl proxy is not available in chat: it opens the API server to any request; ask for what you want to see",
        )),
        "port-forward" => Err(refused(
            "port-forward is not available in chat: it needs a local port; use kubectl with your KubeChat kubeconfig",
        )),
        "edit" => Err(refused(
            "edit is not available in chat: it needs an editor; use label, annotate, scale or apply a manifest",
        )),
        "cp" => Err(refused("cp is not available in chat: KubeChat reads and writes no files")),
        "attach" | "debug" => Err(refused(format!(
            "{verb} is not available in chat: it needs a terminal; use kubectl with your KubeChat kubeconfig"
        ))),
        "config" | "plugin" | "completion" | "kustomize" | "alpha" | "auth" | "certificate" | "api-resources"
        | "api-versions" | "cluster-info" | "version" | "explain" | "wait" | "create" | "replace" | "patch" | "set"
        | "run" | "expose" | "autoscale" | "taint" | "diff" => Err(refused(format!(
            "{verb} is not available in chat; it offers get, describe, logs, events, top, scale, rollout, delete, cordon, uncordon, drain, label, annotate, apply (a pasted manifest), exec (allowed commands), diagnose and changes"
        ))),
        other => Err(invalid(format!("unknown command {other:?} for \"kubectl\""))),
    }
}

/// Resource arguments, kubectl's resource builder way.
fn targets(args: &[String], d: &Discovery, need_names: bool, verb: &str) -> Result<Vec<Target>, Refusal> {
    let Some(first) = args.first() else {
        return Err(invalid(format!(
            "you must specify the type of resource to {verb}; for example: kubectl {verb} pods{}",
            if need_names { " NAME" } else { "" }
        )));
    };
    let slash_form = args.iter().any(|a| a.contains('/'));
    let mut out = Vec::new();
    if slash_form {
        for a in args {
            let Some((ty, name)) = a.split_once('/') else {
                return Err(invalid(format!(
                    "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'kubectl {verb} resource/<resource_name>' instead of 'kubectl {verb} resource resource/<resource_name>'"
                )));
            };
            check_name("name", name)?;
            out.push(Target { resource: resource(ty, d)?.clone(), name: Some(name.to_string()) });
        }
        return Ok(out);
    }
    let types: Vec<ApiResource> = first.split(',').map(|t| resource(t, d).cloned()).collect::<Result<_, _>>()?;
    let names = &args[1..];
    for ty in &types {
        if names.is_empty() {
            out.push(Target { resource: ty.clone(), name: None });
        }
        for n in names {
            check_name("name", n)?;
            out.push(Target { resource: ty.clone(), name: Some(n.clone()) });
        }
    }
    Ok(out)
}

fn resource<'d>(word: &str, d: &'d Discovery) -> Result<&'d ApiResource, Refusal> {
    if word.is_empty() {
        return Err(invalid("a resource type is empty"));
    }
    if word == "all" {
        return Err(invalid(
            "\"all\" is not available in chat: name the resource types (e.g. pods,services,deployments)",
        ));
    }
    d.find(word).ok_or_else(|| invalid(format!("the server doesn't have a resource type \"{word}\"")))
}

/// One `TYPE NAME` or `TYPE/NAME` object.
fn one_object(args: &[String], d: &Discovery, verb: &str, default_type: Option<&str>) -> Result<ObjectRef, Refusal> {
    let (ty, name) = match args {
        [one] if one.contains('/') => {
            one.split_once('/').map(|(t, n)| (t.to_string(), n.to_string())).unwrap_or_default()
        }
        [one] => match default_type {
            Some(t) => (t.to_string(), one.clone()),
            None => {
                return Err(invalid(format!(
                    "{verb} needs TYPE NAME or TYPE/NAME (e.g. kubectl {verb} deployment/api)"
                )));
            }
        },
        [ty, name] if !name.contains('/') => (ty.clone(), name.clone()),
        [] => return Err(invalid(format!("{verb} needs the object: TYPE NAME or TYPE/NAME"))),
        _ => return Err(invalid(format!("{verb} takes one object: TYPE NAME or TYPE/NAME"))),
    };
    check_name("name", &name)?;
    Ok(ObjectRef { resource: resource(&ty, d)?.clone(), name })
}

fn output(f: &Flags) -> Result<Output, Refusal> {
    Ok(match f.value("output") {
        None | Some("") => Output::Table,
        Some("wide") => Output::Wide,
        Some("yaml") => Output::Yaml,
        Some("json") => Output::Json,
        Some("name") => Output::Name,
        Some(other) => {
            return Err(invalid(format!(
                "unable to match a printer suitable for the output format {other:?}; chat shows -o wide, yaml, json or name"
            )));
        }
    })
}

fn no_dash_args(f: &Flags, verb: &str) -> Result<(), Refusal> {
    if f.after_dash.as_ref().is_some_and(|a| !a.is_empty()) {
        return Err(invalid(format!("kubectl {verb} takes no arguments after --")));
    }
    Ok(())
}

fn build_get(f: &Flags, d: &Discovery, _: Option<&str>) -> Result<Command, Refusal> {
    no_dash_args(f, "get")?;
    let targets = targets(&f.positional, d, false, "get")?;
    Ok(Command::Get {
        output: output(f)?,
        selector: f.selector()?,
        field_selector: f.value("field-selector").map(str::to_string),
        watch: f.bool("watch"),
        show_labels: f.bool("show-labels"),
        targets,
    })
}

fn build_describe(f: &Flags, d: &Discovery, _: Option<&str>) -> Result<Command, Refusal> {
    no_dash_args(f, "describe")?;
    Ok(Command::Describe { targets: targets(&f.positional, d, false, "describe")?, selector: f.selector()? })
}

fn build_logs(f: &Flags, d: &Discovery, _: Option<&str>) -> Result<Command, Refusal> {
    no_dash_args(f, "logs")?;
    if f.selector()?.is_some() {
        return Err(refused("logs -l is not available in chat: name the pod or workload (e.g. logs deployment/api)"));
    }
    let (object, container) = match f.positional.as_slice() {
        [one] => (one_object(std::slice::from_ref(one), d, "logs", Some("pods"))?, None),
        [pod, c] if !pod.contains('/') => {
            (one_object(std::slice::from_ref(pod), d, "logs", Some("pods"))?, Some(c.clone()))
        }
        [] => return Err(invalid("expected POD or TYPE/NAME, e.g. kubectl logs api-7d9f8c6b5-x2kqp")),
        _ => return Err(invalid("expected 'logs [-f] [-p] (POD | TYPE/NAME) [-c CONTAINER]'")),
    };
    if f.value("container").is_some() && container.is_some() {
        return Err(invalid("only one of -c or an inline container name is allowed"));
    }
    let container = f.value("container").map(str::to_string).or(container);
    if let Some(c) = &container {
        check_name("container", c)?;
    }
    let tail = f.int("tail")?.filter(|t| *t >= 0);
    let since = f.duration("since")?;
    let since_time = f.value("since-time").map(str::to_string);
    if since.is_some() && since_time.is_some() {
        return Err(invalid("at most one of `sinceTime` or `sinceSeconds` may be specified"));
    }
    let limit_bytes = f.int("limit-bytes")?.map(|b| b.max(1) as u64);
    Ok(Command::Logs(Logs {
        object,
        container,
        all_containers: f.bool("all-containers"),
        tail,
        since_seconds: since.map(|s| s.as_secs().max(1)),
        since_time,
        previous: f.bool("previous"),
        follow: f.bool("follow"),
        timestamps: f.bool("timestamps"),
        limit_bytes,
    }))
}

fn build_events(f: &Flags, d: &Discovery, _: Option<&str>) -> Result<Command, Refusal> {
    no_dash_args(f, "events")?;
    if !f.positional.is_empty() {
        return Err(invalid("kubectl events takes no arguments; use --for TYPE/NAME"));
    }
    let for_object = match f.value("for") {
        None => None,
        Some(v) => Some(one_object(&[v.to_string()], d, "events --for", None)?),
    };
    let types = match f.value("types") {
        None => Vec::new(),
        Some(t) => t
            .split(',')
            .map(|t| match t.to_ascii_lowercase().as_str() {
                "normal" => Ok("Normal".to_string()),
                "warning" => Ok("Warning".to_string()),
                _ => Err(invalid(format!("valid --types are Normal or Warning, not {t:?}"))),
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(Command::Events { for_object, types, watch: f.bool("watch") })
}

fn build_top(f: &Flags, _: &Discovery, _: Option<&str>) -> Result<Command, Refusal> {
    no_dash_args(f, "top")?;
    let (kind, name) = match f.positional.as_slice() {
        [k] => (k.as_str(), None),
        [k, n] => (k.as_str(), Some(n.clone())),
        _ => return Err(invalid("expected 'top pods [NAME]' or 'top nodes [NAME]'")),
    };
    let nodes = match kind {
        "pods" | "pod" | "po" => false,
        "nodes" | "node" | "no" => true,
        other => return Err(invalid(format!("unknown command {other:?} for \"kubectl top\": use pods or nodes"))),
    };
    if let Some(n) = &name {
        check_name("name", n)?;
    }
    Ok(Command::Top { nodes, name, selector: f.selector()?, containers: f.bool("containers") })
}

fn build_scale(f: &Flags, d: &Discovery, _: Option<&str>) -> Result<Command, Refusal> {
    no_dash_args(f, "scale")?;
    if f.selector()?.is_some() {
        return Err(refused(
            "scale -l is not available in chat: name the workload (e.g. scale deployment/api --replicas=3)",
        ));
    }
    let replicas = f.int("replicas")?.ok_or_else(|| invalid("required flag(s) \"replicas\" not set"))?;
    let replicas = u32::try_from(replicas)
        .ok()
        .filter(|r| *r <= 10_000)
        .ok_or_else(|| invalid(format!("--replicas={replicas} is out of range (0 to 10000)")))?;
    let current_replicas = f.int("current-replicas")?.filter(|c| *c >= 0).map(|c| c.min(u32::MAX as i64) as u32);
    let objects = targets(&f.positional, d, true, "scale")?
        .into_iter()
        .map(|t| match t.name {
            Some(name) => Ok(ObjectRef { resource: t.resource, name }),
            None => Err(invalid("resource(s) were provided, but no name was specified")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    for o in &objects {
        if !matches!(
            o.resource.plural.as_str(),
            "deployments" | "replicasets" | "statefulsets" | "replicationcontrollers"
        ) {
            return Err(invalid(format!(
                "cannot scale {}: it has no scale subresource kubectl knows",
                o.resource.plural
            )));
        }
    }
    Ok(Command::Scale { objects, replicas, current_replicas })
}

fn build_rollout(f: &Flags, d: &Discovery, _: Option<&str>) -> Result<Command, Refusal> {
    no_dash_args(f, "rollout")?;
    let Some((action, args)) = f.positional.split_first() else {
        return Err(invalid("expected 'rollout restart|status|undo|history TYPE NAME'"));
    };
    let rollout = match action.as_str() {
        "restart" => Rollout::Restart,
        "status" => Rollout::Status,
        "undo" => Rollout::Undo { to_revision: revision(f, "to-revision")? },
        "history" => Rollout::History { revision: revision(f, "revision")? },
        "pause" | "resume" => {
            return Err(refused(format!(
                "rollout {action} is not available in chat; restart, status, undo and history are"
            )));
        }
        other => return Err(invalid(format!("unknown command {other:?} for \"kubectl rollout\""))),
    };
    let object = one_object(args, d, &format!("rollout {action}"), None)?;
    if !matches!(object.resource.plural.as_str(), "deployments" | "statefulsets" | "daemonsets") {
        return Err(invalid(format!(
            "no rollout for {}: deployments, statefulsets and daemonsets roll out",
            object.resource.plural
        )));
    }
    Ok(Command::Rollout { rollout, object })
}

fn revision(f: &Flags, flag: &str) -> Result<u64, Refusal> {
    match f.int(flag)? {
        None => Ok(0),
        Some(n) if n >= 0 => Ok(n as u64),
        Some(n) => Err(invalid(format!("--{flag}={n} must be 0 or more"))),
    }
}

fn build_delete(f: &Flags, d: &Discovery, manifest: Option<&str>) -> Result<Command, Refusal> {
    no_dash_args(f, "delete")?;
    if f.value("filename").is_some() || manifest.is_some() {
        return Err(refused("delete -f is not available in chat: name what to delete (TYPE NAME)"));
    }
    if f.bool("force") || f.bool("now") {
        return Err(refused(
            "delete --force/--now is not available in chat: objects are deleted with their grace period",
        ));
    }
    let selector = f.selector()?;
    let all = f.bool("all");
    let targets = targets(&f.positional, d, true, "delete")?;
    if targets.iter().any(|t| t.name.is_none()) && selector.is_none() && !all {
        return Err(invalid(
            "resource(s) were provided, but no name was specified; name the objects, or give a label selector (-l) or --all",
        ));
    }
    if targets.iter().any(|t| t.name.is_some()) && (selector.is_some() || all) {
        return Err(invalid("name objects, or select them with -l/--all, not both"));
    }
    let cascade = match f.value("cascade").unwrap_or("background") {
        c @ ("background" | "foreground" | "orphan") => c.to_string(),
        "true" => "background".into(),
        "false" => "orphan".into(),
        other => {
            return Err(invalid(format!("invalid cascade value ({other}): must be background, foreground or orphan")));
        }
    };
    let grace_period = f.int("grace-period")?.filter(|g| *g >= 0);
    Ok(Command::Delete { targets, selector, all, grace_period, cascade })
}

fn one_node(f: &Flags, verb: &str) -> Result<String, Refusal> {
    no_dash_args(f, verb)?;
    if f.selector()?.is_some() {
        return Err(refused(format!("{verb} -l is not available in chat: name the node")));
    }
    match f.positional.as_slice() {
        [node] => {
            let node = node.strip_prefix("node/").or_else(|| node.strip_prefix("nodes/")).unwrap_or(node);
            check_name("node", node)?;
            Ok(node.to_string())
        }
        [] => Err(invalid(format!("{verb} needs a node name"))),
        _ => Err(invalid(format!("{verb} takes one node in chat"))),
    }
}

fn build_drain(f: &Flags, _: &Discovery, _: Option<&str>) -> Result<Command, Refusal> {
    let node = one_node(&Flags { values: Vec::new(), positional: f.positional.clone(), after_dash: None }, "drain")?;
    no_dash_args(f, "drain")?;
    if f.bool("disable-eviction") {
        return Err(refused("drain --disable-eviction is not available in chat: it bypasses PodDisruptionBudgets"));
    }
    let selector = f.value("pod-selector").map(str::to_string);
    if f.value("selector").is_some() {
        return Err(refused("drain -l (several nodes) is not available in chat: name one node"));
    }
    Ok(Command::Drain(Drain {
        node,
        ignore_daemonsets: f.bool("ignore-daemonsets"),
        delete_emptydir_data: f.bool("delete-emptydir-data"),
        force: f.bool("force"),
        grace_period: f.int("grace-period")?.filter(|g| *g >= 0),
        selector,
    }))
}

fn build_keys(f: &Flags, d: &Discovery, annotations: bool) -> Result<Command, Refusal> {
    let verb = if annotations { "annotate" } else { "label" };
    no_dash_args(f, verb)?;
    if f.value("filename").is_some() {
        return Err(refused(format!("{verb} -f is not available in chat: name the objects")));
    }
    if f.bool("all") {
        return Err(refused(format!("{verb} --all is not available in chat: name the objects or give -l")));
    }
    // Positional: resource arguments, then key=value / key- changes.
    let split = f.positional.iter().position(|a| a.contains('=') || a.ends_with('-')).unwrap_or(f.positional.len());
    let (resources, changes) = f.positional.split_at(split);
    if changes.is_empty() {
        return Err(invalid(format!(
            "at least one {} update is required",
            if annotations { "annotation" } else { "label" }
        )));
    }
    let mut parsed = Vec::new();
    for c in changes {
        let change = if let Some((k, v)) = c.split_once('=') {
            KeyChange { key: k.to_string(), value: Some(v.to_string()) }
        } else if let Some(k) = c.strip_suffix('-') {
            KeyChange { key: k.to_string(), value: None }
        } else {
            return Err(invalid(format!("invalid {verb} update {c:?}: use key=value or key-")));
        };
        check_key(&change.key, verb)?;
        if !annotations && let Some(v) = &change.value {
            check_label_value(v)?;
        }
        if parsed.iter().any(|p: &KeyChange| p.key == change.key) {
            return Err(invalid(format!("can not both modify and remove the same key {:?}", change.key)));
        }
        parsed.push(change);
    }
    let selector = f.selector()?;
    let targets = targets(resources, d, true, verb)?;
    if targets.iter().any(|t| t.name.is_none()) && selector.is_none() {
        return Err(invalid("resource(s) were provided, but no name was specified"));
    }
    let overwrite = f.bool("overwrite");
    Ok(if annotations {
        Command::Annotate { targets, changes: parsed, overwrite, selector }
    } else {
        Command::Label { targets, changes: parsed, overwrite, selector }
    })
}

/// A qualified key: optional DNS prefix `/`, then a name of at most 63
/// characters of `[A-Za-z0-9_.-]`, starting and ending alphanumeric.
fn check_key(key: &str, verb: &str) -> Result<(), Refusal> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    });
    if !(name_ok && prefix_ok) {
        return Err(invalid(format!(
            "invalid {verb} key {key:?}: a qualified name must be [prefix/]name of alphanumerics, '-', '_' or '.'"
        )));
    }
    Ok(())
}

fn check_label_value(v: &str) -> Result<(), Refusal> {
    let ok = v.is_empty()
        || (v.len() <= 63
            && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if !ok {
        return Err(invalid(format!("invalid label value {v:?}: at most 63 alphanumerics, '-', '_' or '.'")));
    }
    Ok(())
}

fn build_apply(f: &Flags, _: &Discovery, manifest: Option<&str>) -> Result<Command, Refusal> {
    no_dash_args(f, "apply")?;
    if f.value("kustomize").is_some() {
        return Err(refused("apply -k is not available in chat: KubeChat reads no files; paste the rendered manifest"));
    }
    if f.bool("prune") {
        return Err(refused("apply --prune is not available in chat: it deletes objects the manifest does not name"));
    }
    match f.value("filename") {
        None | Some("-") => {}
        Some(u) if u.contains("://") => {
            return Err(refused("apply -f URL is not available in chat: KubeChat fetches nothing; paste the manifest"));
        }
        Some(_) => {
            return Err(refused("apply -f FILE is not available in chat: KubeChat reads no files; paste the manifest"));
        }
    }
    if !f.positional.is_empty() {
        return Err(invalid("apply takes no arguments; paste the manifest"));
    }
    let manifest = manifest
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("must specify -f - with a pasted manifest (send it as \"manifest\" beside argv)"))?;
    Ok(Command::Apply {
        manifest: manifest.to_string(),
        server_side: f.bool("server-side"),
        force_conflicts: f.bool("force-conflicts"),
    })
}

fn build_exec(f: &Flags, d: &Discovery, _: Option<&str>) -> Result<Command, Refusal> {
    if f.bool("stdin") || f.bool("tty") {
        return Err(refused(
            "exec -i/-t is not available in chat: it needs a terminal; chat runs a command and shows its output",
        ));
    }
    let command = f.after_dash.clone().unwrap_or_default();
    let object = match f.positional.as_slice() {
        [pod] => one_object(std::slice::from_ref(pod), d, "exec", Some("pods"))?,
        [] => return Err(invalid("expected 'exec POD -- COMMAND [args...]'")),
        _ => {
            return Err(invalid(
                "exec [POD] [COMMAND] is not supported; use exec [POD] -- [COMMAND] (the command goes after --)",
            ));
        }
    };
    if command.is_empty() {
        return Err(invalid("you must specify at least one command for the container (after --)"));
    }
    let container = f.value("container").map(str::to_string);
    if let Some(c) = &container {
        check_name("container", c)?;
    }
    Ok(Command::Exec { object, container, command })
}

fn build_diagnose(f: &Flags, d: &Discovery, _: Option<&str>) -> Result<Command, Refusal> {
    no_dash_args(f, "diagnose")?;
    Ok(Command::Diagnose { object: one_object(&f.positional, d, "diagnose", None)? })
}

fn build_changes(f: &Flags, _: &Discovery, _: Option<&str>) -> Result<Command, Refusal> {
    no_dash_args(f, "changes")?;
    if !f.positional.is_empty() {
        return Err(invalid("changes takes no arguments: changes [-n NAMESPACE | -A] [--since=1h]"));
    }
    let since = f.duration("since")?.unwrap_or(Duration::from_secs(3600));
    Ok(Command::Changes { since_seconds: since.as_secs().clamp(1, 7 * 24 * 3600) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Invocation, Refusal> {
        let argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(&argv, None, &Discovery::builtin())
    }

    fn ok(args: &[&str]) -> Invocation {
        p(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn flags_are_read_the_way_pflag_reads_them() {
        for args in [
            &["get", "pods", "-n", "web"][..],
            &["get", "pods", "-nweb"],
            &["get", "pods", "-n=web"],
            &["get", "pods", "--namespace", "web"],
            &["get", "pods", "--namespace=web"],
            &["-n", "web", "get", "pods"],
            &["--namespace=web", "get", "pods"],
            &["kubectl", "get", "-n", "web", "pods"],
        ] {
            let i = ok(args);
            assert_eq!(i.namespace.as_deref(), Some("web"), "{args:?}");
            let Command::Get { targets, .. } = i.command else { panic!("{args:?}") };
            assert_eq!(targets.len(), 1);
            assert_eq!(targets[0].resource.plural, "pods");
            assert_eq!(targets[0].name, None);
        }
        let Command::Logs(l) = ok(&["logs", "-fp", "api-1", "--tail=5"]).command else { panic!() };
        assert!(l.follow && l.previous);
        assert_eq!(l.tail, Some(5));
        let Command::Get { watch, .. } = ok(&["get", "pods", "--watch=false"]).command else { panic!() };
        assert!(!watch);
    }

    #[test]
    fn resource_arguments_follow_the_resource_builder() {
        let Command::Get { targets, output, .. } = ok(&["get", "deploy,svc", "api", "-o", "yaml"]).command else {
            panic!()
        };
        assert_eq!(output, Output::Yaml);
        let got: Vec<(String, Option<String>)> = targets.into_iter().map(|t| (t.resource.plural, t.name)).collect();
        assert_eq!(got, vec![("deployments".into(), Some("api".into())), ("services".into(), Some("api".into()))]);
        let Command::Get { targets, .. } = ok(&["get", "pod/a", "deployments.apps/b"]).command else { panic!() };
        assert_eq!(targets[1].resource.group, "apps");
        assert!(matches!(p(&["get", "pods", "pod/a"]), Err(Refusal::Invalid(m)) if m.contains("resource/name form")));
        assert!(
            matches!(p(&["get", "widgets"]), Err(Refusal::Invalid(m)) if m.contains("doesn't have a resource type \"widgets\""))
        );
        assert!(matches!(p(&["get", "pods", "a/../b"]), Err(Refusal::Invalid(_))));
    }

    #[test]
    fn what_reaches_outside_the_authorized_request_is_refused() {
        for args in [
            &["get", "pods", "--kubeconfig=/etc/k"][..],
            &["get", "pods", "--kubeconfig", "/etc/k"],
            &["--server", "https://evil", "get", "pods"],
            &["get", "pods", "-s", "https://evil"],
            &["get", "pods", "--token=abc"],
            &["get", "pods", "--as=admin"],
            &["get", "pods", "--as-group=system:masters"],
            &["get", "pods", "--context", "other"],
            &["get", "--raw", "/api/v1/secrets"],
            &["proxy"],
            &["port-forward", "pod/a", "8080"],
            &["edit", "deploy/api"],
            &["cp", "a:/etc/passwd", "."],
            &["apply", "-f", "https://evil.example/x.yaml"],
            &["apply", "-f", "/etc/passwd"],
            &["apply", "-k", "."],
            &["exec", "-it", "api", "--", "sh"],
            &["delete", "pod", "a", "--force"],
        ] {
            assert!(matches!(p(args), Err(Refusal::Refused(_))), "{args:?}: {:?}", p(args));
        }
    }

    #[test]
    fn a_negative_number_is_a_value_not_a_flag() {
        ok(&["logs", "a", "--tail", "-1"]);
        ok(&["logs", "a", "--tail=-1"]);
    }

    #[test]
    fn kubectl_errors_are_invalid_with_kubectls_reason() {
        for (args, want) in [
            (&["get"][..], "you must specify the type of resource"),
            (&["frobnicate"], "unknown command \"frobnicate\""),
            (&["get", "pods", "--bogus"], "unknown flag: --bogus"),
            (&["get", "pods", "-z"], "unknown shorthand flag: 'z'"),
            (&["scale", "deploy", "api"], "required flag(s) \"replicas\" not set"),
            (&["scale", "deploy", "api", "--replicas=-1"], "out of range"),
            (&["delete", "pods"], "no name was specified"),
            (&["logs", "a", "--since=soon"], "not a duration"),
            (&["exec", "api"], "at least one command"),
            (&["label", "pod", "a"], "at least one label update"),
            (&["label", "pod", "a", "bad key=x"], "invalid label key"),
            (&["get", "pods", "-l", "--kubeconfig=/x"], "the next argument \"--kubeconfig=/x\" is a flag"),
            (&["get", "pods", "--selector", "-o"], "write --selector=-o"),
            (&["get", "pods", "-o", "jsonpath={.items}"], "chat shows -o wide, yaml, json or name"),
            (&["logs", "-n"], "flag needs an argument"),
            (&["rollout", "restart", "pods", "a"], "no rollout for pods"),
        ] {
            match p(args) {
                Err(Refusal::Invalid(m)) => assert!(m.contains(want), "{args:?}: {m}"),
                other => panic!("{args:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn commands_carry_their_risk() {
        for (args, risk) in [
            (&["get", "pods"][..], Risk::Read),
            (&["logs", "deploy/api", "-f"], Risk::Read),
            (&["rollout", "status", "deploy/api"], Risk::Read),
            (&["scale", "deploy/api", "--replicas=3"], Risk::Write),
            (&["scale", "deploy/api", "--replicas=0"], Risk::Destructive),
            (&["rollout", "undo", "deploy", "api"], Risk::Destructive),
            (&["delete", "pods", "-l", "app=api"], Risk::Destructive),
            (&["drain", "sim-node-1", "--ignore-daemonsets"], Risk::Destructive),
            (&["cordon", "node/sim-node-1"], Risk::Write),
            (&["label", "pods", "a", "tier=web", "old-"], Risk::Write),
            (&["exec", "api-1", "-c", "app", "--", "ls", "-l"], Risk::Interactive),
            (&["diagnose", "deployment", "api"], Risk::Read),
            (&["changes", "-A", "--since=30m"], Risk::Read),
        ] {
            assert_eq!(ok(args).command.risk(), risk, "{args:?}");
        }
        let Command::Exec { command, .. } = ok(&["exec", "api-1", "--", "ls", "-l", "--", "-n"]).command else {
            panic!()
        };
        assert_eq!(command, vec!["ls", "-l", "--", "-n"], "everything after -- is the command");
    }

    #[test]
    fn apply_takes_a_pasted_manifest_only() {
        let argv: Vec<String> = ["apply", "-f", "-"].iter().map(|s| s.to_string()).collect();
        let i = parse(&argv, Some("apiVersion: v1\nkind: ConfigMap\n"), &Discovery::builtin()).expect("apply");
        assert!(matches!(i.command, Command::Apply { .. }));
        assert!(matches!(p(&["apply", "-f", "-"]), Err(Refusal::Invalid(m)) if m.contains("pasted manifest")));
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(go_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(go_duration("0"), Some(Duration::ZERO));
        for bad in ["", "10", "h", "1x", "-1s", "1e400h"] {
            assert_eq!(go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn oversized_and_odd_input_is_invalid() {
        let long = vec!["get".to_string(); MAX_ARGS + 1];
        assert!(matches!(parse(&long, None, &Discovery::builtin()), Err(Refusal::Invalid(_))));
        assert!(matches!(p(&["get", "pods\u{0}"]), Err(Refusal::Invalid(m)) if m.contains("control character")));
        assert!(matches!(p(&[]), Err(Refusal::Invalid(_))));
        assert!(matches!(p(&["--", "get"]), Err(Refusal::Invalid(_))));
    }
}
