//! Each command's grammar: which parts it takes, what it defaults, when it
//! asks back, and its argv in the canonical spelling (verb and sub-verb,
//! plural resource, names, `-n ns` / `-A`, `-o fmt`, then `--flag=value`
//! in one fixed order).
//!
//! A write (delete, scale, rollout restart/undo, cordon, uncordon, drain,
//! label, annotate) names exactly one object, or is a question or not
//! understood: never a selector, `--all`, a negated sentence or a guess at
//! a count.

use super::lexicon;
use super::slot::{Named, Part, Scope, Slots};
use super::verb::{Mode, Reading, Verb};
use super::{Choice, Draft, Interpretation, NameLookup, Question, examples};
use crate::discovery::{ApiResource, Discovery};

/// The most replicas a sentence scales to.
pub(crate) const MAX_REPLICAS: i64 = 1000;
/// The most log lines asked for.
const MAX_TAIL: i64 = 100_000;
/// How far back `changes` goes.
const MAX_CHANGES_SECONDS: u64 = 7 * 24 * 3600;
/// Workloads that roll out.
const ROLLOUT_KINDS: &[&str] = &["deployments", "statefulsets", "daemonsets"];
/// Workloads that scale.
const SCALE_KINDS: &[&str] = &["deployments", "statefulsets", "replicasets", "replicationcontrollers"];
/// Workloads whose pods give logs.
const POD_OWNERS: &[&str] = &["deployments", "statefulsets", "daemonsets", "replicasets", "jobs"];
/// What an object name with no resource word most likely is, asked back.
const LIKELY_KINDS: &[&str] = &["deployments", "statefulsets", "services"];

/// An answer found before the command line is complete: a question or a
/// reason (boxed: it is the rare path).
pub(crate) struct Halt(Box<Interpretation>);

type Built = Result<Interpretation, Halt>;

/// What a command's object phrase gave: resource, name, namespace.
type Object = (Option<ApiResource>, Option<String>, Option<Scope>);

/// The command `reading` and `slots` make, in `namespace` by default.
pub(crate) fn build(reading: &Reading, slots: Slots, d: &Discovery, namespace: &str) -> Interpretation {
    let c = Ctx { d, s: slots, verb: reading.verb, mode: reading.mode, default_ns: namespace };
    let built = match c.verb {
        Verb::Get => c.get(),
        Verb::Describe => c.describe(),
        Verb::Logs => c.logs(),
        Verb::Events => c.events(),
        Verb::Top => c.top(),
        Verb::Scale => c.scale(),
        Verb::Restart => c.rollout("restart"),
        Verb::Status => c.rollout("status"),
        Verb::Undo => c.rollout("undo"),
        Verb::History => c.rollout("history"),
        Verb::Delete => c.delete(),
        Verb::Cordon => c.node("cordon"),
        Verb::Uncordon => c.node("uncordon"),
        Verb::Drain => c.node("drain"),
        Verb::Label => c.keys(false),
        Verb::Annotate => c.keys(true),
        Verb::Diagnose => c.diagnose(),
        Verb::Changes => c.changes(),
    };
    built.unwrap_or_else(|h| *h.0)
}

/// Not understood, with the usual examples.
pub(crate) fn nope(message: impl Into<String>) -> Interpretation {
    Interpretation::NotUnderstood { message: message.into(), examples: examples() }
}

/// Stops with a reason.
fn stop(message: impl Into<String>) -> Halt {
    Halt(Box::new(nope(message)))
}

/// Stops with a question.
fn ask(text: impl Into<String>, choices: Vec<Choice>) -> Halt {
    Halt(Box::new(Interpretation::Question(Question { text: text.into(), choices })))
}

/// `pods` → `Pods`, to open a sentence.
fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

/// `api-7d9f8c6b5-x2kqp` (a ReplicaSet's pod), `db-0` (a StatefulSet's),
/// `api-7` (the start of one).
fn looks_like_pod(name: &str) -> bool {
    let segs: Vec<&str> = name.split('-').collect();
    let alnum = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    match segs.as_slice() {
        [_, .., hash, suffix] if segs.len() >= 3 => {
            (suffix.len() == 5
                && alnum(suffix)
                && (6..=10).contains(&hash.len())
                && alnum(hash)
                && hash.bytes().any(|b| b.is_ascii_digit()))
                || suffix.bytes().all(|b| b.is_ascii_digit())
        }
        [_, last] => !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()),
        _ => false,
    }
}

struct Ctx<'a> {
    d: &'a Discovery,
    s: Slots,
    verb: Verb,
    mode: Mode,
    default_ns: &'a str,
}

impl Ctx<'_> {
    fn kind(&self, plural: &str) -> Option<ApiResource> {
        let group = match plural {
            "deployments" | "statefulsets" | "daemonsets" | "replicasets" => "apps",
            "jobs" | "cronjobs" => "batch",
            _ => "",
        };
        self.d.by_plural(group, plural).cloned()
    }

    /// What kind an object named `name` with no resource word is, if its
    /// shape says (`sim-node-1`: a node, `api-7d9f8c6b5-x2kqp`: a pod).
    fn guess(&self, name: &str) -> Option<ApiResource> {
        if name.split('-').any(|s| s.starts_with("node")) {
            return self.kind("nodes");
        }
        looks_like_pod(name).then(|| self.kind("pods")).flatten()
    }

    /// The resource word for argv: the plural, qualified when another
    /// group has the same plural.
    fn plural(&self, r: &ApiResource) -> String {
        if self.d.all_named(&r.plural).len() > 1 { r.qualified() } else { r.plural.clone() }
    }

    /// Problems, unknown words, a write's collection words, and parts the
    /// command does not take.
    fn check(&self, allowed: &[Part]) -> Result<(), Halt> {
        if let Some(p) = self.s.problems.first() {
            return Err(stop(p.clone()));
        }
        if !self.s.unknown.is_empty() {
            return Err(stop(format!(
                "I don't understand “{}”. Say what to do and to which object, e.g. “show pods in web” or “logs of api”.",
                self.s.unknown.join(" ")
            )));
        }
        if self.verb.is_write() {
            if self.s.negated {
                return Err(stop(format!(
                    "That reads as not wanting to {}; I did nothing. Say what to do, e.g. “{}”.",
                    self.verb.name(),
                    self.verb.example()
                )));
            }
            if self.s.all.is_some() || !self.s.selector.is_empty() {
                let what = self.s.all.clone().unwrap_or_else(|| self.s.selector.join(","));
                return Err(stop(format!(
                    "I {} one object at a time, by its name — not “{what}”. Say e.g. “{}”.",
                    self.verb.name(),
                    self.verb.example()
                )));
            }
        }
        if let Some((_, phrase)) = self.s.parts.iter().find(|(p, _)| !allowed.contains(p)) {
            return Err(stop(format!("“{phrase}” doesn't go with {}.", self.verb.name())));
        }
        Ok(())
    }

    fn no_numbers(&self, numbers: &[i64]) -> Result<(), Halt> {
        match numbers.first() {
            Some(n) => Err(stop(format!("I don't know what “{n}” is for here."))),
            None => Ok(()),
        }
    }

    fn resource(&self) -> Result<Option<ApiResource>, Halt> {
        let mut out: Vec<&ApiResource> = Vec::new();
        for r in &self.s.resources {
            if !out.iter().any(|o| o.group == r.group && o.plural == r.plural) {
                out.push(r);
            }
        }
        match out.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some((*one).clone())),
            many => Err(stop(format!(
                "Name one kind of object at a time (I read {}).",
                many.iter().map(|r| r.plural.as_str()).collect::<Vec<_>>().join(" and ")
            ))),
        }
    }

    fn name(&self) -> Result<Option<String>, Halt> {
        match self.s.names.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.name.clone())),
            many => Err(stop(format!(
                "I can't tell which of {} is the object's name; name one object.",
                many.iter().map(|n| format!("“{}”", n.name)).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// The namespace named, or all, or `None` (the default).
    fn scope(&self) -> Result<Option<Scope>, Halt> {
        match (&self.s.scope, &self.s.namespace_word) {
            (Some(Scope::Namespace(a)), Some(b)) if a != b => Err(stop("I read two different namespaces; name one.")),
            (Some(s), _) => Ok(Some(s.clone())),
            (None, Some(ns)) if lexicon::is_namespace(ns) => Ok(Some(Scope::Namespace(ns.clone()))),
            (None, Some(ns)) => Err(stop(format!("“{ns}” is not a namespace name."))),
            (None, None) => Ok(None),
        }
    }

    /// The resource and name, with `namespace web` read as the namespace
    /// object when nothing else is named.
    fn object(&self) -> Result<Object, Halt> {
        let resource = self.resource()?;
        let name = self.name()?;
        if resource.is_none()
            && name.is_none()
            && self.s.scope.is_none()
            && let Some(ns) = &self.s.namespace_word
        {
            return Ok((self.kind("namespaces"), Some(ns.clone()), None));
        }
        if resource.as_ref().is_some_and(|r| r.plural == "namespaces" && r.group.is_empty())
            && name.is_none()
            && self.s.scope.is_none()
            && let Some(ns) = &self.s.namespace_word
        {
            return Ok((resource, Some(ns.clone()), None));
        }
        Ok((resource, name, self.scope()?))
    }

    /// `-n ns`, `-A` or nothing (cluster-scoped).
    fn scope_args(&self, r: &ApiResource, scope: &Option<Scope>) -> Vec<String> {
        if !r.namespaced {
            return Vec::new();
        }
        match scope {
            Some(Scope::All) => argv(&["-A"]),
            Some(Scope::Namespace(ns)) => argv(&["-n", ns]),
            None => argv(&["-n", self.default_ns]),
        }
    }

    fn namespace_of(&self, r: &ApiResource, scope: &Option<Scope>) -> Option<String> {
        if !r.namespaced {
            return None;
        }
        match scope {
            Some(Scope::Namespace(ns)) => Some(ns.clone()),
            _ => Some(self.default_ns.to_string()),
        }
    }

    fn where_(&self, scope: &Option<Scope>) -> String {
        match scope {
            Some(Scope::All) => "every namespace".into(),
            Some(Scope::Namespace(ns)) => ns.clone(),
            None => self.default_ns.into(),
        }
    }

    /// A draft whose `argv[index]` is `name`, to match against the live
    /// objects of `r`.
    fn draft(&self, argv: Vec<String>, r: &ApiResource, scope: &Option<Scope>, name: &str, index: usize) -> Built {
        Ok(Interpretation::Command(Draft {
            argv,
            lookup: Some(NameLookup {
                resource: r.clone(),
                namespace: self.namespace_of(r, scope),
                typed: name.to_string(),
                argv_index: index,
            }),
        }))
    }

    fn all_scope(&self, scope: Option<Scope>) -> Option<Scope> {
        match scope {
            None if self.s.all.is_some() => Some(Scope::All),
            s => s,
        }
    }

    /// A name with no resource word and no telling shape: ask which kind.
    fn which_kind(&self, what: &str, name: &str, argv_for: impl Fn(&ApiResource) -> Vec<String>) -> Built {
        let choices = LIKELY_KINDS
            .iter()
            .filter_map(|k| self.kind(k))
            .map(|r| Choice { label: format!("the {} {name}", r.singular), argv: argv_for(&r) })
            .collect();
        Err(ask(
            format!("{what} which “{name}”? Say its kind, e.g. “{} deployment {name}”.", what.to_lowercase()),
            choices,
        ))
    }

    /// "show everything": ask which kind.
    fn which_objects(&self, scope: &Option<Scope>) -> Built {
        let choices = ["pods", "deployments", "services"]
            .iter()
            .filter_map(|k| self.kind(k))
            .map(|r| {
                let mut a = argv(&["get", &self.plural(&r)]);
                a.extend(self.scope_args(&r, scope));
                Choice { label: r.plural.clone(), argv: a }
            })
            .collect();
        Err(ask(format!("Which kind of objects in {}?", self.where_(scope)), choices))
    }

    fn get(&self) -> Built {
        self.check(&[Part::Scope, Part::Output, Part::Selector])?;
        self.no_numbers(&self.s.numbers)?;
        let (resource, name, scope) = self.object()?;
        let scope = if name.is_none() { self.all_scope(scope) } else { scope };
        let resource = match resource {
            Some(r) => r,
            None if self.s.namespaces_noun && name.is_none() => {
                self.kind("namespaces").ok_or_else(|| stop("this cluster serves no namespaces"))?
            }
            None if self.s.everything || (self.s.all.is_some() && name.is_none()) => {
                return self.which_objects(&scope);
            }
            None if self.s.replica_word => self.kind("deployments").ok_or_else(|| stop("no deployments"))?,
            None => match &name {
                Some(n) => self.guess(n).ok_or_else(|| {
                    stop(format!(
                        "I don't know a kind of object called “{n}”. Name a resource type this cluster serves (e.g. “show pods in web”), or the object with its kind (e.g. “show the {n} deployment”)."
                    ))
                })?,
                None => return Err(stop("Show what? Name a kind of object, e.g. “show pods in web”.")),
            },
        };
        if resource.plural == "events" && resource.group.is_empty() {
            return self.events();
        }
        if name.is_some() && scope == Some(Scope::All) {
            return Err(stop("An object's name needs its namespace, not every namespace; say e.g. “… in web”."));
        }
        if name.is_some() && !self.s.selector.is_empty() {
            return Err(stop("Name an object or give a label selector, not both."));
        }
        let mut a = argv(&["get", &self.plural(&resource)]);
        let index = a.len();
        if let Some(n) = &name {
            a.push(n.clone());
        }
        a.extend(self.scope_args(&resource, &scope));
        if let Some(o) = self.s.output {
            a.extend(argv(&["-o", o]));
        }
        if !self.s.selector.is_empty() {
            a.push(format!("--selector={}", self.s.selector.join(",")));
        }
        match name {
            Some(n) => self.draft(a, &resource, &scope, &n, index),
            None => Ok(Interpretation::Command(Draft { argv: a, lookup: None })),
        }
    }

    fn describe(&self) -> Built {
        if self.s.output.is_some() {
            // "describe api as yaml": the object itself
            return self.get();
        }
        self.check(&[Part::Scope, Part::Selector])?;
        self.no_numbers(&self.s.numbers)?;
        let (resource, name, scope) = self.object()?;
        let scope = if name.is_none() { self.all_scope(scope) } else { scope };
        let resource = match (resource, &name) {
            (Some(r), _) => r,
            (None, _) if self.s.everything => return self.which_objects(&scope),
            (None, Some(n)) => match self.guess(n) {
                Some(r) => r,
                None => {
                    return self.which_kind("Describe", n, |r| {
                        let mut a = argv(&["describe", &self.plural(r), n]);
                        a.extend(self.scope_args(r, &scope));
                        a
                    });
                }
            },
            (None, None) => return Err(stop("Describe what? Name an object, e.g. “describe the api deployment”.")),
        };
        if name.is_some() && scope == Some(Scope::All) {
            return Err(stop("An object's name needs its namespace, not every namespace; say e.g. “… in web”."));
        }
        if name.is_some() && !self.s.selector.is_empty() {
            return Err(stop("Name an object or give a label selector, not both."));
        }
        let mut a = argv(&["describe", &self.plural(&resource)]);
        let index = a.len();
        if let Some(n) = &name {
            a.push(n.clone());
        }
        a.extend(self.scope_args(&resource, &scope));
        if !self.s.selector.is_empty() {
            a.push(format!("--selector={}", self.s.selector.join(",")));
        }
        match name {
            Some(n) => self.draft(a, &resource, &scope, &n, index),
            None => Ok(Interpretation::Command(Draft { argv: a, lookup: None })),
        }
    }

    fn logs(&self) -> Built {
        if self.s.all.is_some() || !self.s.selector.is_empty() {
            return Err(stop(
                "Logs come from one pod at a time: name it or its deployment, e.g. “logs of api”, not all pods or a selector.",
            ));
        }
        self.check(&[Part::Scope, Part::Tail, Part::Since, Part::Previous, Part::Container, Part::Follow])?;
        self.no_numbers(&self.s.numbers)?;
        let (resource, name, scope) = self.object()?;
        if let Some(r) = &resource
            && !(r.plural == "pods" || POD_OWNERS.contains(&r.plural.as_str()))
        {
            return Err(stop(format!("Logs come from pods (or a deployment's pods), not {}.", r.plural)));
        }
        let Some(name) = name else {
            return Err(ask("Logs of which pod? Name it or its deployment, e.g. “logs of api”.", Vec::new()));
        };
        if scope == Some(Scope::All) {
            return Err(stop("Logs come from one pod in one namespace; say which namespace, e.g. “… in web”."));
        }
        let pods = self.kind("pods").ok_or_else(|| stop("this cluster serves no pods"))?;
        let mut a = argv(&["logs", &name]);
        a.extend(self.scope_args(&pods, &scope));
        if let Some(t) = self.s.tail {
            if !(1..=MAX_TAIL).contains(&t) {
                return Err(stop(format!("I show between 1 and {MAX_TAIL} log lines, not {t}.")));
            }
            a.push(format!("--tail={t}"));
        }
        if let Some(s) = &self.s.since {
            if s.seconds == 0 {
                return Err(stop("A span of time has to be longer than zero."));
            }
            a.push(format!("--since={}", s.go));
        }
        if self.s.previous {
            a.push("--previous".into());
        }
        if let Some(c) = &self.s.container {
            a.push(format!("--container={c}"));
        }
        if self.s.follow {
            a.push("--follow".into());
        }
        self.draft(a, &pods, &scope, &name, 1)
    }

    fn events(&self) -> Built {
        self.check(&[Part::Scope, Part::Since])?;
        self.no_numbers(&self.s.numbers)?;
        let resource = self.resource()?;
        let name = self.name()?;
        if resource.as_ref().is_some_and(|r| r.plural != "events") || name.is_some() {
            let what = name.or(resource.map(|r| r.plural)).unwrap_or_default();
            return Err(stop(format!(
                "I list the events of a whole namespace (“events in web”); for “{what}” alone, ask “what's wrong with {what}” or describe it."
            )));
        }
        let scope = self.all_scope(self.scope()?);
        let events = self.kind("events").ok_or_else(|| stop("this cluster serves no events"))?;
        let mut a = argv(&["events"]);
        a.extend(self.scope_args(&events, &scope));
        if let Some(span) = &self.s.since {
            let mut changes = argv(&["changes"]);
            changes.extend(self.scope_args(&events, &scope));
            changes.push(format!("--since={}", span.go));
            return Err(ask(
                format!(
                    "Events aren't listed by time. Show all events in {}, or what changed in the last {}?",
                    self.where_(&scope),
                    span.go
                ),
                vec![
                    Choice { label: "all events".into(), argv: a },
                    Choice { label: format!("what changed in the last {}", span.go), argv: changes },
                ],
            ));
        }
        Ok(Interpretation::Command(Draft { argv: a, lookup: None }))
    }

    fn top(&self) -> Built {
        self.check(&[Part::Scope, Part::Selector])?;
        self.no_numbers(&self.s.numbers)?;
        let (resource, name, scope) = self.object()?;
        let resource = match resource.or_else(|| name.as_deref().and_then(|n| self.guess(n))) {
            Some(r) => r,
            None => self.kind("pods").ok_or_else(|| stop("this cluster serves no pods"))?,
        };
        if !(resource.group.is_empty() && matches!(resource.plural.as_str(), "pods" | "nodes")) {
            return Err(stop(format!("Usage (top) is shown for pods or nodes, not {}.", resource.plural)));
        }
        let scope = if name.is_none() { self.all_scope(scope) } else { scope };
        if name.is_some() && scope == Some(Scope::All) {
            return Err(stop("An object's name needs its namespace, not every namespace; say e.g. “… in web”."));
        }
        if name.is_some() && !self.s.selector.is_empty() {
            return Err(stop("Name an object or give a label selector, not both."));
        }
        let mut a = argv(&["top", &resource.plural]);
        if let Some(n) = &name {
            a.push(n.clone());
        }
        a.extend(self.scope_args(&resource, &scope));
        if !self.s.selector.is_empty() {
            a.push(format!("--selector={}", self.s.selector.join(",")));
        }
        match name {
            Some(n) => self.draft(a, &resource, &scope, &n, 2),
            None => Ok(Interpretation::Command(Draft { argv: a, lookup: None })),
        }
    }

    fn scale(&self) -> Built {
        self.check(&[Part::Scope, Part::Replicas])?;
        let (resource, name, scope) = self.object()?;
        let resource = match resource.or_else(|| name.as_deref().and_then(|n| self.guess(n))) {
            Some(r) => r,
            None => self.kind("deployments").ok_or_else(|| stop("this cluster serves no deployments"))?,
        };
        if !SCALE_KINDS.contains(&resource.plural.as_str()) {
            return Err(stop(format!(
                "{} don't scale; deployments, statefulsets and replicasets do (e.g. “scale deployment api to 3”).",
                capitalized(&resource.plural)
            )));
        }
        // "scale api 3": the sentence's only number is the count
        let mut numbers = self.s.numbers.clone();
        let replicas = match self.s.replicas {
            Some(r) => Some(r),
            None if numbers.len() == 1 => numbers.pop(),
            None => None,
        };
        self.no_numbers(&numbers)?;
        if scope == Some(Scope::All) {
            return Err(stop("I scale one object in one namespace; say which namespace, e.g. “… in web”."));
        }
        let kind = resource.singular.clone();
        let Some(name) = name else {
            let to = replicas.map(|r| format!(" to {r} replicas")).unwrap_or_default();
            return Err(ask(
                format!("Which {kind} should I scale{to}? Name it, e.g. “scale {kind} api to 3”."),
                Vec::new(),
            ));
        };
        let Some(replicas) = replicas else {
            let by = match self.s.relative {
                Some(n) => format!(" I scale to a count, not by {n}."),
                None => String::new(),
            };
            return Err(ask(
                format!("To how many replicas should I scale {kind} {name}?{by} Say e.g. “scale {name} to 3”."),
                Vec::new(),
            ));
        };
        if replicas < 0 {
            return Err(stop(format!("A replica count can't be negative ({replicas}).")));
        }
        if replicas > MAX_REPLICAS {
            return Err(stop(format!(
                "{replicas} replicas is more than I scale to from a sentence (at most {MAX_REPLICAS})."
            )));
        }
        let mut a = argv(&["scale", &self.plural(&resource), &name]);
        a.extend(self.scope_args(&resource, &scope));
        a.push(format!("--replicas={replicas}"));
        self.draft(a, &resource, &scope, &name, 2)
    }

    fn rollout(&self, sub: &str) -> Built {
        let allowed: &[Part] = match sub {
            "undo" => &[Part::Scope, Part::Revision, Part::Previous],
            "history" => &[Part::Scope, Part::Revision],
            "status" => &[Part::Scope, Part::Follow],
            _ => &[Part::Scope],
        };
        let (resource, name, scope) = self.object()?;
        if sub == "status"
            && let Some(r) = &resource
            && !ROLLOUT_KINDS.contains(&r.plural.as_str())
        {
            // "status of the pods in web": show them
            return self.get();
        }
        self.check(allowed)?;
        // "reboot sim-node-1" is no deployment's rollout
        let resource = match resource.or_else(|| name.as_deref().and_then(|n| self.guess(n))) {
            Some(r) => r,
            None => self.kind("deployments").ok_or_else(|| stop("this cluster serves no deployments"))?,
        };
        if !ROLLOUT_KINDS.contains(&resource.plural.as_str()) {
            if sub == "restart" && resource.plural == "pods" {
                return Err(stop(
                    "Pods aren't restarted in place: delete the pod (“delete pod …”) and its deployment starts a new one, or restart the deployment (“restart deployment api”).",
                ));
            }
            return Err(stop(format!(
                "{} don't roll out; deployments, statefulsets and daemonsets do.",
                capitalized(&resource.plural)
            )));
        }
        // A revision is said as one ("to revision 2", "to 2"), never
        // taken from a stray number.
        self.no_numbers(&self.s.numbers)?;
        let revision = self.s.revision;
        if let Some(r) = revision
            && r < 1
        {
            return Err(stop(format!("Revisions are numbered from 1, not {r}.")));
        }
        if scope == Some(Scope::All) {
            return Err(stop("A rollout is of one object in one namespace; say which namespace, e.g. “… in web”."));
        }
        let kind = resource.singular.clone();
        let Some(name) = name else {
            let what = match sub {
                "restart" => format!("Which {kind} should I restart?"),
                "undo" => format!("Which {kind} should I roll back?"),
                "status" => format!("Which {kind}'s rollout status?"),
                _ => format!("Which {kind}'s rollout history?"),
            };
            return Err(ask(format!("{what} Name it, e.g. “{} {kind} api”.", self.verb.name()), Vec::new()));
        };
        let mut a = argv(&["rollout", sub, &self.plural(&resource), &name]);
        a.extend(self.scope_args(&resource, &scope));
        if let Some(r) = revision {
            a.push(if sub == "undo" { format!("--to-revision={r}") } else { format!("--revision={r}") });
        }
        self.draft(a, &resource, &scope, &name, 3)
    }

    fn delete(&self) -> Built {
        if self.s.everything {
            return Err(stop(
                "I delete one object at a time, by its name — never everything. Say e.g. “delete pod api-7d9f8c6b5-x2kqp”.",
            ));
        }
        self.check(&[Part::Scope])?;
        self.no_numbers(&self.s.numbers)?;
        let (resource, name, scope) = self.object()?;
        let Some(name) = name else {
            return Err(stop(match resource {
                Some(r) => format!(
                    "I delete one object at a time, by its name — not all {}. Say e.g. “delete {} NAME”.",
                    r.plural, r.singular
                ),
                None => "Delete what? Name one object, e.g. “delete pod api-7d9f8c6b5-x2kqp”.".into(),
            }));
        };
        if scope == Some(Scope::All) {
            return Err(stop("I delete one object in one namespace; say which namespace, e.g. “… in web”."));
        }
        let resource = match resource.or_else(|| self.guess(&name)) {
            Some(r) => r,
            None => {
                return self.which_kind("Delete", &name, |r| {
                    let mut a = argv(&["delete", &self.plural(r), &name]);
                    a.extend(self.scope_args(r, &scope));
                    a
                });
            }
        };
        let mut a = argv(&["delete", &self.plural(&resource), &name]);
        a.extend(self.scope_args(&resource, &scope));
        self.draft(a, &resource, &scope, &name, 2)
    }

    fn node(&self, verb: &str) -> Built {
        self.check(&[])?;
        self.no_numbers(&self.s.numbers)?;
        let (resource, name, _) = self.object()?;
        if let Some(r) = &resource
            && !(r.group.is_empty() && r.plural == "nodes")
        {
            return Err(stop(format!("Only nodes are {verb}ed, not {}.", r.plural)));
        }
        let nodes = self.kind("nodes").ok_or_else(|| stop("this cluster serves no nodes"))?;
        let Some(name) = name else {
            return Err(ask(
                format!("Which node should I {verb}? Name it, e.g. “{verb} node sim-node-1”."),
                Vec::new(),
            ));
        };
        let mut a = argv(&[verb, &name]);
        if verb == "drain" {
            a.extend(argv(&["--ignore-daemonsets", "--delete-emptydir-data"]));
        }
        self.draft(a, &nodes, &None, &name, 1)
    }

    fn keys(&self, annotate: bool) -> Built {
        let noun = if annotate { "annotation" } else { "label" };
        let verb = if annotate { "annotate" } else { "label" };
        self.check(&[Part::Scope, Part::Change, Part::Overwrite])?;
        self.no_numbers(&self.s.numbers)?;
        let resource = self.resource()?;
        let mut changes = self.s.changes.clone();
        // "unlabel pod x tier": the name by the resource word is the
        // object, the others are keys to remove.
        let names: Vec<Named> = if self.mode == Mode::RemoveKeys && self.s.names.len() > 1 {
            let object = self.s.names.iter().position(|n| n.by_resource).unwrap_or(0);
            for (i, n) in self.s.names.iter().enumerate() {
                if i != object {
                    changes.push(format!("{}-", n.name));
                }
            }
            vec![self.s.names[object].clone()]
        } else {
            self.s.names.clone()
        };
        let name = match names.as_slice() {
            [] => None,
            [one] => Some(one.name.clone()),
            many => {
                return Err(stop(format!(
                    "I can't tell which of {} is the object's name; name one object.",
                    many.iter().map(|n| format!("“{}”", n.name)).collect::<Vec<_>>().join(", ")
                )));
            }
        };
        // "label namespace web team=shop": the namespace object
        let (resource, name, scope) = match (&resource, &name, &self.s.namespace_word) {
            (None, None, Some(ns)) if self.s.scope.is_none() => (self.kind("namespaces"), Some(ns.clone()), None),
            _ => (resource, name, self.scope()?),
        };
        let Some(name) = name else {
            return Err(ask(
                format!("Which object should I {verb}? Say e.g. “{verb} pod api-7d9f8c6b5-x2kqp tier=web”."),
                Vec::new(),
            ));
        };
        if changes.is_empty() {
            let text = if self.mode == Mode::RemoveKeys {
                format!("Which {noun} should I remove from {name}? Say e.g. “remove {noun} tier from {name}”.")
            } else {
                format!("Which {noun} should I set on {name}? Say e.g. “{verb} {name} tier=web”.")
            };
            return Err(ask(text, Vec::new()));
        }
        let mut keys: Vec<&str> = Vec::new();
        for c in &changes {
            let key = c.split_once('=').map(|(k, _)| k).unwrap_or_else(|| c.trim_end_matches('-'));
            if !lexicon::is_key(key) {
                return Err(stop(format!("“{key}” is not a {noun} key.")));
            }
            if keys.contains(&key) {
                return Err(stop(format!("I read the {noun} “{key}” twice; change each key once.")));
            }
            keys.push(key);
        }
        if scope == Some(Scope::All) {
            return Err(stop(format!("I {verb} one object in one namespace; say which namespace, e.g. “… in web”.")));
        }
        let overwrite = self.s.overwrite || self.mode == Mode::Overwrite;
        let argv_for = |r: &ApiResource| {
            let mut a = argv(&[verb, &self.plural(r), &name]);
            a.extend(changes.iter().cloned());
            a.extend(self.scope_args(r, &scope));
            if overwrite {
                a.push("--overwrite".into());
            }
            a
        };
        let resource = match resource.or_else(|| self.guess(&name)) {
            Some(r) => r,
            None => return self.which_kind(if annotate { "Annotate" } else { "Label" }, &name, argv_for),
        };
        self.draft(argv_for(&resource), &resource, &scope, &name, 2)
    }

    fn diagnose(&self) -> Built {
        self.check(&[Part::Scope])?;
        self.no_numbers(&self.s.numbers)?;
        let (resource, name, scope) = self.object()?;
        let scope = if name.is_none() { self.all_scope(scope) } else { scope };
        let Some(name) = name else {
            let listed = match &resource {
                Some(r) if r.plural != "events" => r.clone(),
                _ => self.kind("pods").ok_or_else(|| stop("this cluster serves no pods"))?,
            };
            let mut get = argv(&["get", &self.plural(&listed)]);
            get.extend(self.scope_args(&listed, &scope));
            let events = self.kind("events").ok_or_else(|| stop("this cluster serves no events"))?;
            let mut ev = argv(&["events"]);
            ev.extend(self.scope_args(&events, &scope));
            return Err(ask(
                format!(
                    "What should I look at in {}? Name the object, e.g. “what's wrong with api”, or see:",
                    self.where_(&scope)
                ),
                vec![
                    Choice { label: format!("the {}", listed.plural), argv: get },
                    Choice { label: "recent events".into(), argv: ev },
                ],
            ));
        };
        if scope == Some(Scope::All) {
            return Err(stop("An object's name needs its namespace, not every namespace; say e.g. “… in web”."));
        }
        let resource = match resource.or_else(|| self.guess(&name)) {
            Some(r) => r,
            None => self.kind("deployments").ok_or_else(|| stop("this cluster serves no deployments"))?,
        };
        let mut a = argv(&["diagnose", &self.plural(&resource), &name]);
        a.extend(self.scope_args(&resource, &scope));
        self.draft(a, &resource, &scope, &name, 2)
    }

    fn changes(&self) -> Built {
        self.check(&[Part::Scope, Part::Since])?;
        self.no_numbers(&self.s.numbers)?;
        let resource = self.resource()?;
        let name = self.name()?;
        if resource.is_some() || name.is_some() {
            let what = name.or(resource.map(|r| r.plural)).unwrap_or_default();
            return Err(stop(format!(
                "I list what changed in a whole namespace (“what changed in web”); for one deployment, ask for its history (“history of {what}”)."
            )));
        }
        let scope = self.all_scope(self.scope()?);
        let mut a = argv(&["changes"]);
        match &scope {
            Some(Scope::All) => a.push("-A".into()),
            Some(Scope::Namespace(ns)) => a.extend(argv(&["-n", ns])),
            None => a.extend(argv(&["-n", self.default_ns])),
        }
        if let Some(s) = &self.s.since {
            if s.seconds == 0 {
                return Err(stop("A span of time has to be longer than zero."));
            }
            if s.seconds > MAX_CHANGES_SECONDS {
                return Err(stop("I look back at most 7 days (168h) for changes."));
            }
            a.push(format!("--since={}", s.go));
        }
        Ok(Interpretation::Command(Draft { argv: a, lookup: None }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_shaped_names() {
        for name in ["api-7d9f8c6b5-x2kqp", "frontend-5c6d7e8f9-abcde", "db-0", "api-7", "web-2-0"] {
            assert!(looks_like_pod(name), "{name}");
        }
        for name in ["api", "log-agent", "api-gateway", "frontend-abcde", "a-b-c"] {
            assert!(!looks_like_pod(name), "{name}");
        }
    }
}
