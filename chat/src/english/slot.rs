//! The parts of a sentence besides its verb: the resource type, object
//! names, the namespace, and each option (output format, selector, lines,
//! time span, container, replicas, revision, label changes …), read left
//! to right by trying each phrase at each word.
//!
//! Every phrase is read whatever the command; the command then says which
//! it takes ([`super::command`]), so "logs of api as yaml" is refused with
//! a reason instead of silently dropping "as yaml". Only the phrases whose
//! sense depends on the command ask for it: `to 3` (replicas or revision),
//! `last 50` (lines), `key=value` (a selector, or a label to set).

use super::lexicon::{self, is_filler, is_keyword, is_name};
use super::quantity::{self, Span};
use super::token::Token;
use super::verb::{Mode, Verb};
use crate::discovery::{ApiResource, Discovery};

/// Which option a phrase set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// A namespace, or all namespaces.
    Scope,
    /// `-o`.
    Output,
    /// `-l`.
    Selector,
    /// A label or annotation change.
    Change,
    /// `--tail`.
    Tail,
    /// `--since`.
    Since,
    /// `--previous`.
    Previous,
    /// `--container`.
    Container,
    /// `--follow`.
    Follow,
    /// `--replicas`.
    Replicas,
    /// A revision.
    Revision,
    /// `--overwrite`.
    Overwrite,
}

/// Where the command reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// One namespace.
    Namespace(String),
    /// Every namespace.
    All,
}

/// An object name and whether it stood by a resource word ("pod *x*",
/// "the *api* deployment").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Named {
    /// The name.
    pub(crate) name: String,
    /// Right after or before a resource word.
    pub(crate) by_resource: bool,
}

/// Everything read besides the verb.
#[derive(Debug, Clone, Default)]
pub(crate) struct Slots {
    /// Resource types named, in order.
    pub(crate) resources: Vec<ApiResource>,
    /// Object names, in order.
    pub(crate) names: Vec<Named>,
    /// The namespace, or all of them.
    pub(crate) scope: Option<Scope>,
    /// `namespace web` with no preposition: the namespace object, or where
    /// to look.
    pub(crate) namespace_word: Option<String>,
    /// `-o`.
    pub(crate) output: Option<&'static str>,
    /// Selector terms.
    pub(crate) selector: Vec<String>,
    /// `key=value` and `key-` changes.
    pub(crate) changes: Vec<String>,
    /// `--tail`.
    pub(crate) tail: Option<i64>,
    /// `--since`.
    pub(crate) since: Option<Span>,
    /// `--previous`.
    pub(crate) previous: bool,
    /// `--container`.
    pub(crate) container: Option<String>,
    /// `--follow`.
    pub(crate) follow: bool,
    /// `--replicas`.
    pub(crate) replicas: Option<i64>,
    /// "by 2": a relative change.
    pub(crate) relative: Option<i64>,
    /// A revision number.
    pub(crate) revision: Option<i64>,
    /// `--overwrite`.
    pub(crate) overwrite: bool,
    /// The word that asked for every object (`all`, `every`, `--all`).
    pub(crate) all: Option<String>,
    /// `everything`.
    pub(crate) everything: bool,
    /// Numbers no phrase took.
    pub(crate) numbers: Vec<i64>,
    /// `not`, `never`, `no`.
    pub(crate) negated: bool,
    /// `replicas` was said.
    pub(crate) replica_word: bool,
    /// "all namespaces" with no preposition ("show all namespaces"): the
    /// namespaces themselves, when no other resource is named.
    pub(crate) namespaces_noun: bool,
    /// Words not understood.
    pub(crate) unknown: Vec<String>,
    /// What is wrong with a phrase that was understood (a bad flag value).
    pub(crate) problems: Vec<String>,
    /// Each option's phrase, in order.
    pub(crate) parts: Vec<(Part, String)>,
}

/// Reads `tokens` (less those the verb phrase took).
pub(crate) fn read(tokens: &[&Token], verb: Verb, mode: Mode, d: &Discovery) -> Slots {
    let mut r = Reader {
        words: tokens.iter().map(|t| t.word.as_str()).collect(),
        raws: tokens.iter().map(|t| t.raw.as_str()).collect(),
        verb,
        mode,
        d,
        i: 0,
        last_was_resource: false,
        s: Slots::default(),
    };
    while r.i < r.words.len() {
        let start = r.i;
        r.step();
        if r.i <= start {
            // Every phrase takes at least one word; never loop.
            r.i = start + 1;
        }
    }
    r.s
}

struct Reader<'a> {
    words: Vec<&'a str>,
    raws: Vec<&'a str>,
    verb: Verb,
    mode: Mode,
    d: &'a Discovery,
    i: usize,
    last_was_resource: bool,
    s: Slots,
}

/// Words before a noun that change nothing in a phrase.
const ARTICLES: &[&str] = &["the", "a", "an", "this", "that", "my", "our", "its", "their", "his", "her"];
/// Words `3 replicas` may end with.
const REPLICA_WORDS: &[&str] = &["replicas", "replica", "instances", "instance", "copies", "copy"];
/// Words a label or annotation phrase names its kind with.
const KEY_WORDS: &[&str] = &["label", "labels", "annotation", "annotations", "tag", "tags"];

impl<'a> Reader<'a> {
    fn w(&self, at: usize) -> &'a str {
        self.words.get(at).copied().unwrap_or("")
    }

    /// The index after any articles from `at`.
    fn skip_articles(&self, mut at: usize) -> usize {
        while ARTICLES.contains(&self.w(at)) {
            at += 1;
        }
        at
    }

    fn phrase(&self, from: usize, to: usize) -> String {
        self.raws[from..to.min(self.raws.len())].join(" ")
    }

    fn part(&mut self, part: Part, from: usize, to: usize) {
        let p = self.phrase(from, to);
        self.s.parts.push((part, p));
        self.i = to;
        self.last_was_resource = false;
    }

    /// Whether the word at `at` can be a name in a phrase (`in web`,
    /// `container sidecar`): a name that is no other word of the grammar.
    fn plain_name(&self, at: usize) -> bool {
        let w = self.w(at);
        is_name(w)
            && !is_filler(w)
            && !is_keyword(w)
            && lexicon::format(w).is_none()
            && quantity::number(&self.words[at..]).is_none()
            && quantity::duration(&self.words[at..]).is_none()
            && lexicon::resource(self.d, &self.words[at..]).is_none()
    }

    fn step(&mut self) {
        let i = self.i;
        let w = self.w(i);
        if w.len() > 1 && w.starts_with('-') && quantity::digits(w).is_none() {
            return self.flag();
        }
        let matchers: [fn(&mut Self) -> bool; 15] = [
            Self::all_namespaces,
            Self::since,
            Self::tail,
            Self::output,
            Self::container,
            Self::namespace,
            Self::revision,
            Self::previous,
            Self::follow,
            Self::replicas,
            Self::keys,
            Self::overwrite,
            Self::every,
            Self::drain_words,
            Self::negation,
        ];
        for m in matchers {
            if m(self) {
                return;
            }
        }
        if self.resource() {
            return;
        }
        if w.contains('=') {
            return self.equals();
        }
        if let Some((n, k)) = quantity::number(&self.words[i..]) {
            self.s.numbers.push(n);
            self.i = i + k;
            self.last_was_resource = false;
            return;
        }
        // "delete pods a and b", "what's wrong with api and frontend": one
        // object at a time ("tier=web and app=api" joins selectors)
        if matches!(w, "and" | "or" | "plus" | "&") {
            let mut j = i + 1;
            while matches!(self.w(j), "then" | "also" | "the" | "a" | "an" | "too") {
                j += 1;
            }
            let next = self.w(j);
            let rest = &self.words[j.min(self.words.len())..];
            let object = is_name(next)
                && !is_filler(next)
                && !is_keyword(next)
                && quantity::number(rest).is_none()
                && lexicon::resource(self.d, rest).is_none();
            if object && (!self.s.names.is_empty() || !self.s.resources.is_empty()) {
                self.s.problems.push(format!(
                    "I read more than one object (“{} {}”); ask about one at a time.",
                    self.raws[i], self.raws[j]
                ));
            }
            self.i = i + 1;
            return;
        }
        // "why did api restart", "why was db-0 evicted"
        let diagnose_word = self.verb == Verb::Diagnose
            && matches!(
                w,
                "restart"
                    | "kill"
                    | "killed"
                    | "evict"
                    | "scale"
                    | "scaled"
                    | "drain"
                    | "drained"
                    | "delete"
                    | "deleted"
                    | "change"
            );
        if is_filler(w) || diagnose_word {
            self.i = i + 1;
            return;
        }
        if is_name(w) && !is_keyword(w) {
            // "pod x" (a resource word before; "the api deployment" is
            // marked when the resource word comes)
            let by_resource = self.last_was_resource;
            self.s.names.push(Named { name: w.to_string(), by_resource });
            self.i = i + 1;
            self.last_was_resource = false;
            return;
        }
        self.s.unknown.push(self.raws[i].to_string());
        self.i = i + 1;
    }

    /// `-n web`, `--namespace=web`, `-A`, `-o yaml`, `-l app=api`,
    /// `--tail=50`, `--since 10m`, `-p`, `-c sidecar`, `-f`,
    /// `--replicas=3`, `--to-revision=2`, `--revision=2`,
    /// `--ignore-daemonsets`, `--delete-emptydir-data`, `--overwrite`.
    fn flag(&mut self) {
        let i = self.i;
        let raw = self.raws[i];
        let (name, attached): (String, Option<String>) = if let Some(long) = raw.strip_prefix("--") {
            match long.split_once('=') {
                Some((n, v)) => (n.to_ascii_lowercase(), Some(v.to_string())),
                None => (long.to_ascii_lowercase(), None),
            }
        } else {
            let mut chars = raw[1..].chars();
            let c = chars.next().unwrap_or(' ');
            let rest: String = chars.collect();
            let long = match c {
                'n' => "namespace",
                'A' => "all-namespaces",
                'o' => "output",
                'l' => "selector",
                'c' => "container",
                'p' => "previous",
                'f' => "follow",
                'w' => "watch",
                _ => "",
            };
            if long.is_empty() || (matches!(c, 'A' | 'p' | 'f' | 'w') && !rest.is_empty()) {
                self.s.problems.push(format!("I don't know the flag “{raw}”."));
                self.i = i + 1;
                return;
            }
            let rest = rest.strip_prefix('=').map(str::to_string).unwrap_or(rest);
            (long.to_string(), (!rest.is_empty()).then_some(rest))
        };
        let boolean = matches!(
            name.as_str(),
            "all-namespaces"
                | "previous"
                | "follow"
                | "ignore-daemonsets"
                | "delete-emptydir-data"
                | "overwrite"
                | "all"
                | "watch"
                | "force"
        );
        let (value, end) = if boolean {
            (String::new(), i + 1)
        } else if let Some(v) = attached {
            (v, i + 1)
        } else if i + 1 < self.raws.len() {
            (self.raws[i + 1].to_string(), i + 2)
        } else {
            self.s.problems.push(format!("The flag “{raw}” needs a value."));
            self.i = i + 1;
            return;
        };
        let lower = value.to_ascii_lowercase();
        match name.as_str() {
            "namespace" => {
                if lexicon::is_namespace(&lower) {
                    self.set_scope(Scope::Namespace(lower), i, end);
                } else {
                    self.s.problems.push(format!("“{value}” is not a namespace name."));
                    self.i = end;
                }
            }
            "all-namespaces" => self.set_scope(Scope::All, i, end),
            "output" => match lexicon::format(&lower) {
                Some(f) => self.set_output(f, i, end),
                None => {
                    self.s.problems.push(format!("I show output as wide, yaml or json, not “{value}”."));
                    self.i = end;
                }
            },
            "selector" => {
                if lexicon::is_selector(&value) {
                    self.s.selector.push(value);
                    self.part(Part::Selector, i, end);
                } else {
                    self.s.problems.push(format!("“{value}” is not a label selector (e.g. app=api)."));
                    self.i = end;
                }
            }
            "tail" | "replicas" | "to-revision" | "revision" => match quantity::digits(&value) {
                Some(n) => {
                    let part = match name.as_str() {
                        "tail" => {
                            self.s.tail = Some(n);
                            Part::Tail
                        }
                        "replicas" => {
                            self.s.replicas = Some(n);
                            Part::Replicas
                        }
                        _ => {
                            self.s.revision = Some(n);
                            Part::Revision
                        }
                    };
                    self.part(part, i, end);
                }
                None => {
                    self.s.problems.push(format!("--{name} takes a number, not “{value}”."));
                    self.i = end;
                }
            },
            "since" => match quantity::duration(&[lower.as_str()]) {
                Some((span, _)) => {
                    self.s.since = Some(span);
                    self.part(Part::Since, i, end);
                }
                None => {
                    self.s.problems.push(format!("--since takes a duration such as 10m or 2h, not “{value}”."));
                    self.i = end;
                }
            },
            "container" => {
                if is_name(&lower) {
                    self.s.container = Some(lower);
                    self.part(Part::Container, i, end);
                } else {
                    self.s.problems.push(format!("“{value}” is not a container name."));
                    self.i = end;
                }
            }
            "previous" => {
                self.s.previous = true;
                self.part(Part::Previous, i, end);
            }
            "follow" => {
                self.s.follow = true;
                self.part(Part::Follow, i, end);
            }
            "overwrite" => {
                self.s.overwrite = true;
                self.part(Part::Overwrite, i, end);
            }
            // Always given to drain.
            "ignore-daemonsets" | "delete-emptydir-data" if self.verb == Verb::Drain => self.i = end,
            "all" => {
                self.s.all = Some(raw.to_string());
                self.i = end;
            }
            _ => {
                self.s.problems.push(format!("I don't use the flag “{raw}” here."));
                self.i = end;
            }
        }
    }

    fn set_scope(&mut self, scope: Scope, from: usize, to: usize) {
        if let Some(old) = &self.s.scope
            && *old != scope
        {
            self.s.problems.push("I read two different namespaces; name one.".into());
        }
        self.s.scope = Some(scope);
        self.part(Part::Scope, from, to);
    }

    fn set_output(&mut self, f: &'static str, from: usize, to: usize) {
        if self.s.output.is_some_and(|o| o != f) {
            self.s.problems.push("I read two output formats; name one.".into());
        }
        self.s.output = Some(f);
        self.part(Part::Output, from, to);
    }

    /// `everywhere`, `cluster-wide`, `in all namespaces`, `across every
    /// namespace`, `in the whole cluster`.
    fn all_namespaces(&mut self) -> bool {
        let i = self.i;
        let w = self.w(i);
        if matches!(w, "everywhere" | "clusterwide" | "cluster-wide") {
            self.set_scope(Scope::All, i, i + 1);
            return true;
        }
        if w == "cluster" && self.w(i + 1) == "wide" {
            self.set_scope(Scope::All, i, i + 2);
            return true;
        }
        let mut j = i;
        if matches!(w, "in" | "across" | "throughout" | "over" | "from" | "within" | "on") {
            j = self.skip_articles(i + 1);
        }
        if matches!(self.w(j), "all" | "every" | "each" | "any") {
            let mut k = j + 1;
            if self.w(k) == "of" {
                k += 1;
            }
            k = self.skip_articles(k);
            if matches!(self.w(k), "namespaces" | "namespace" | "ns") {
                self.s.namespaces_noun |= j == i;
                self.set_scope(Scope::All, i, k + 1);
                return true;
            }
            if self.w(j) == "all" && self.w(j + 1) == "over" {
                let k = self.skip_articles(j + 2);
                let end = if self.w(k) == "cluster" { k + 1 } else { j + 2 };
                self.set_scope(Scope::All, i, end);
                return true;
            }
        }
        if j > i {
            let k = if matches!(self.w(j), "whole" | "entire") { j + 1 } else { j };
            if self.w(k) == "cluster" {
                self.set_scope(Scope::All, i, k + 1);
                return true;
            }
        }
        false
    }

    /// `since 10m`, `in the last hour`, `from the past 30 minutes`,
    /// `last 2 days`, `10 minutes ago`, `since an hour ago`, `10m`,
    /// `since yesterday`.
    fn since(&mut self) -> bool {
        let i = self.i;
        let mut j = i;
        let prep = self.w(j);
        // "the", not "a"/"an": "since an hour ago"
        let skip_the = |r: &Self, mut at: usize| {
            while r.w(at) == "the" {
                at += 1;
            }
            at
        };
        let has_prep = matches!(prep, "since" | "from" | "in" | "over" | "during" | "within" | "for");
        if has_prep {
            j = skip_the(self, j + 1);
        }
        let last = matches!(self.w(j), "last" | "past" | "previous" | "recent" | "latest");
        if last {
            j = skip_the(self, j + 1);
        }
        let found = match quantity::duration(&self.words[j.min(self.words.len())..]) {
            Some((span, k)) => Some((span, j + k)),
            None if last => quantity::bare_unit(self.w(j)).map(|s| (s, j + 1)),
            None if prep == "since" && self.w(j) == "yesterday" => Some((quantity::span(24, 3600), j + 1)),
            None => None,
        };
        let Some((span, mut end)) = found else { return false };
        if self.w(end) == "ago" {
            end += 1;
        }
        self.s.since = Some(span);
        self.part(Part::Since, i, end);
        true
    }

    /// `last 50 lines`, `50 lines`, `tail 20`, `the last 50` (logs).
    fn tail(&mut self) -> bool {
        let i = self.i;
        let lead =
            matches!(self.w(i), "last" | "latest" | "final" | "recent" | "past" | "tail" | "only" | "just" | "limit");
        let j = if lead { self.skip_articles(i + 1) } else { i };
        let Some((n, k)) = quantity::number(&self.words[j.min(self.words.len())..]) else {
            if self.w(i) == "first" && (self.w(i + 2) == "lines" || quantity::number(&self.words[i + 1..]).is_some()) {
                self.s.problems.push("Logs show the last lines, not the first; say “last 50 lines”.".into());
                self.i = i + 1;
                return true;
            }
            return false;
        };
        let mut end = j + k;
        if self.w(end) == "log" {
            end += 1;
        }
        let lines = matches!(self.w(end), "lines" | "line" | "entries" | "rows");
        if lines {
            end += 1;
        } else if !(lead && self.verb == Verb::Logs && j > i) {
            return false;
        }
        self.s.tail = Some(n);
        self.part(Part::Tail, i, end);
        true
    }

    /// `as yaml`, `in json format`, `-o wide` (a flag), `wide`, `with more
    /// details`, `the manifest`.
    fn output(&mut self) -> bool {
        let i = self.i;
        let mut j = i;
        if matches!(self.w(j), "as" | "in" | "with" | "using" | "into" | "to") {
            j = self.skip_articles(j + 1);
        }
        let f = match lexicon::format(self.w(j)) {
            Some(f) => Some((f, j + 1)),
            None if matches!(self.w(j), "more" | "extra" | "additional")
                && matches!(self.w(j + 1), "details" | "detail" | "info" | "information" | "columns") =>
            {
                Some(("wide", j + 2))
            }
            None if j == i && matches!(self.w(j), "manifest" | "definition" | "spec") => Some(("yaml", j + 1)),
            None if j > i && self.w(j) == "table" => {
                // "as a table": the default
                self.i = j + 1;
                return true;
            }
            None => None,
        };
        let Some((f, mut end)) = f else { return false };
        if matches!(self.w(end), "format" | "output" | "formatted") {
            end += 1;
        }
        self.set_output(f, i, end);
        true
    }

    /// `container sidecar`, `the sidecar container`, `in container
    /// sidecar`.
    fn container(&mut self) -> bool {
        let i = self.i;
        let mut j = i;
        if matches!(self.w(j), "in" | "of" | "from" | "for") {
            j = self.skip_articles(j + 1);
        }
        if matches!(self.w(j), "container" | "ctr") {
            let mut k = self.skip_articles(j + 1);
            if matches!(self.w(k), "named" | "called") {
                k += 1;
            }
            if self.plain_name(k) {
                let c = self.w(k).to_string();
                self.s.container = Some(c);
                self.part(Part::Container, i, k + 1);
                return true;
            }
            return false;
        }
        // "the sidecar container" (but "api container sidecar": sidecar)
        if self.plain_name(j) && self.w(j + 1) == "container" && !self.plain_name(j + 2) {
            let c = self.w(j).to_string();
            self.s.container = Some(c);
            self.part(Part::Container, i, j + 2);
            return true;
        }
        false
    }

    /// `in web`, `in namespace web`, `in the web namespace`, `-n web` (a
    /// flag), `namespace web` / `web namespace` (no preposition: maybe the
    /// namespace object), `in this namespace`.
    fn namespace(&mut self) -> bool {
        let i = self.i;
        let w = self.w(i);
        let ns_word = |s: &str| matches!(s, "namespace" | "ns");
        if matches!(w, "in" | "within" | "inside" | "from" | "under") {
            let j = self.skip_articles(i + 1);
            if ns_word(self.w(j)) && self.plain_name(j + 1) {
                let ns = self.w(j + 1).to_string();
                return self.namespace_named(ns, i, j + 2);
            }
            if self.plain_name(j) && ns_word(self.w(j + 1)) {
                let ns = self.w(j).to_string();
                return self.namespace_named(ns, i, j + 2);
            }
            // "in this namespace", "in the current namespace": the default
            if matches!(self.w(j), "current" | "same") && ns_word(self.w(j + 1)) {
                self.i = j + 2;
                return true;
            }
            if j > i + 1 && ns_word(self.w(j)) {
                self.i = j + 1;
                return true;
            }
            // "from web" once the object is named ("delete pod db-0 from
            // web"); before, it is the object ("logs from api")
            if (w != "from" || !self.s.names.is_empty()) && self.plain_name(j) {
                let ns = self.w(j).to_string();
                return self.namespace_named(ns, i, j + 1);
            }
            return false;
        }
        if ns_word(w) && self.plain_name(i + 1) {
            self.s.namespace_word = Some(self.w(i + 1).to_string());
            self.i = i + 2;
            self.last_was_resource = false;
            return true;
        }
        if self.plain_name(i) && ns_word(self.w(i + 1)) {
            self.s.namespace_word = Some(w.to_string());
            self.i = i + 2;
            self.last_was_resource = false;
            return true;
        }
        false
    }

    fn namespace_named(&mut self, ns: String, from: usize, to: usize) -> bool {
        if lexicon::is_namespace(&ns) {
            self.set_scope(Scope::Namespace(ns), from, to);
        } else {
            self.s.problems.push(format!("“{ns}” is not a namespace name."));
            self.i = to;
        }
        true
    }

    /// `revision 2`, `to revision 2`, `rev 3`, `version 4`, `to 2` (undo),
    /// `to the previous revision` (undo's default).
    fn revision(&mut self) -> bool {
        let i = self.i;
        let mut j = i;
        if self.w(j) == "to" {
            j = self.skip_articles(j + 1);
        }
        if matches!(self.w(j), "previous" | "last" | "prior" | "earlier" | "old" | "older")
            && matches!(self.w(j + 1), "revision" | "version" | "one" | "release")
            && self.verb != Verb::Logs
        {
            self.i = j + 2;
            return true;
        }
        if matches!(self.w(j), "revision" | "rev" | "version") {
            let mut k = j + 1;
            if matches!(self.w(k), "number" | "no" | "num") {
                k += 1;
            }
            if let Some((n, c)) = quantity::number(&self.words[k.min(self.words.len())..]) {
                self.s.revision = Some(n);
                self.part(Part::Revision, i, k + c);
                return true;
            }
            if j == i {
                // the word alone
                self.i = i + 1;
                return true;
            }
            return false;
        }
        if self.verb == Verb::Undo
            && j > i
            && let Some((n, c)) = quantity::number(&self.words[j..])
        {
            self.s.revision = Some(n);
            self.part(Part::Revision, i, j + c);
            return true;
        }
        false
    }

    /// `previous`, `-p` (a flag), `before the last crash`, `the crashed
    /// container`.
    fn previous(&mut self) -> bool {
        let i = self.i;
        let w = self.w(i);
        if matches!(w, "previous" | "prev" | "prior" | "earlier") {
            let end = if matches!(self.w(i + 1), "container" | "instance" | "run" | "one") { i + 2 } else { i + 1 };
            self.s.previous = true;
            self.part(Part::Previous, i, end);
            return true;
        }
        if w == "before" {
            let mut j = self.skip_articles(i + 1);
            if self.w(j) == "it" {
                j += 1;
            }
            if matches!(self.w(j), "last" | "latest" | "most") {
                j += 1;
            }
            if self.w(j) == "recent" {
                j += 1;
            }
            if matches!(self.w(j), "crash" | "crashed" | "restart" | "restarted" | "died" | "crashing" | "restarting") {
                self.s.previous = true;
                self.part(Part::Previous, i, j + 1);
                return true;
            }
        }
        if matches!(w, "crashed" | "terminated" | "dead") && matches!(self.w(i + 1), "container" | "instance") {
            self.s.previous = true;
            self.part(Part::Previous, i, i + 2);
            return true;
        }
        false
    }

    /// `follow`, `stream`, `live`, `watch`, `-f` (a flag).
    fn follow(&mut self) -> bool {
        let i = self.i;
        if matches!(
            self.w(i),
            "follow"
                | "following"
                | "stream"
                | "streaming"
                | "live"
                | "watch"
                | "watching"
                | "realtime"
                | "real-time"
                | "continuously"
                | "tailing"
        ) {
            self.s.follow = true;
            self.part(Part::Follow, i, i + 1);
            return true;
        }
        false
    }

    /// `to 3`, `to three replicas`, `3 replicas`, `replicas to 3`, `by 2`.
    fn replicas(&mut self) -> bool {
        let i = self.i;
        let w = self.w(i);
        let scale = self.verb == Verb::Scale;
        let replica_word = |s: &str, scale: bool| REPLICA_WORDS.contains(&s) || (scale && matches!(s, "pods" | "pod"));
        if scale && matches!(w, "to" | "at" | "=") {
            let j = self.skip_articles(i + 1);
            if let Some((n, k)) = quantity::number(&self.words[j.min(self.words.len())..]) {
                let mut end = j + k;
                if replica_word(self.w(end), true) {
                    end += 1;
                }
                self.s.replicas = Some(n);
                self.part(Part::Replicas, i, end);
                return true;
            }
            return false;
        }
        if scale && w == "by" {
            if let Some((n, k)) = quantity::number(&self.words[i + 1..]) {
                self.s.relative = Some(n);
                self.i = i + 1 + k;
                return true;
            }
            return false;
        }
        if let Some((n, k)) = quantity::number(&self.words[i..])
            && replica_word(self.w(i + k), scale)
        {
            self.s.replicas = Some(n);
            self.part(Part::Replicas, i, i + k + 1);
            return true;
        }
        if REPLICA_WORDS.contains(&w) && lexicon::resource(self.d, &self.words[i..]).is_none() {
            self.s.replica_word = true;
            let mut j = i + 1;
            if matches!(self.w(j), "to" | "=" | "at") {
                j += 1;
            }
            if let Some((n, k)) = quantity::number(&self.words[j.min(self.words.len())..]) {
                self.s.replicas = Some(n);
                self.part(Part::Replicas, i, j + k);
                return true;
            }
            self.i = i + 1;
            return true;
        }
        false
    }

    /// Label and annotation phrases: `label tier=web`, `label tier to
    /// web`, `remove label tier`, `the tier label`, `tier-`.
    fn keys(&mut self) -> bool {
        let i = self.i;
        let w = self.w(i);
        if !matches!(self.verb, Verb::Label | Verb::Annotate) {
            // "pods with label app=api": the selector says it all
            if matches!(w, "label" | "labels") {
                self.i = i + 1;
                return true;
            }
            return false;
        }
        let raw = self.raws[i];
        let key_like = |s: &str| lexicon::is_key(s);
        if KEY_WORDS.contains(&w) {
            let j = self.skip_articles(i + 1);
            let key = self.raws.get(j).copied().unwrap_or("");
            let usable =
                key_like(key) && lexicon::resource(self.d, &self.words[j..]).is_none() && !is_filler(self.w(j));
            if self.mode == Mode::RemoveKeys && usable {
                self.s.changes.push(format!("{key}-"));
                self.part(Part::Change, i, j + 1);
                return true;
            }
            if self.mode != Mode::RemoveKeys
                && usable
                && matches!(self.w(j + 1), "to" | "as" | "=" | "equals" | "equal")
            {
                let mut v = j + 2;
                if self.w(v) == "to" {
                    v += 1;
                }
                let value = self.raws.get(v).copied().unwrap_or("");
                if !value.is_empty() && lexicon::resource(self.d, &self.words[v..]).is_none() && !is_filler(self.w(v)) {
                    self.s.changes.push(format!("{key}={value}"));
                    self.part(Part::Change, i, v + 1);
                    return true;
                }
            }
            self.i = i + 1;
            return true;
        }
        if self.mode == Mode::RemoveKeys
            && key_like(raw)
            && KEY_WORDS.contains(&self.w(i + 1))
            && lexicon::resource(self.d, &self.words[i..]).is_none()
            && !is_filler(w)
        {
            self.s.changes.push(format!("{raw}-"));
            self.part(Part::Change, i, i + 2);
            return true;
        }
        if let Some(key) = raw.strip_suffix('-')
            && key_like(key)
            && !raw.contains('=')
        {
            self.s.changes.push(raw.to_string());
            self.part(Part::Change, i, i + 1);
            return true;
        }
        false
    }

    /// `overwrite`, `overwriting`, `replacing`, `--overwrite` (a flag).
    fn overwrite(&mut self) -> bool {
        let i = self.i;
        if matches!(
            self.w(i),
            "overwrite"
                | "overwriting"
                | "override"
                | "overriding"
                | "replacing"
                | "force"
                | "forcing"
                | "forced"
                | "forcibly"
        ) {
            self.s.overwrite = true;
            self.part(Part::Overwrite, i, i + 1);
            return true;
        }
        false
    }

    /// `all`, `every`, `each`, `everything`, `any` (in a write).
    fn every(&mut self) -> bool {
        let i = self.i;
        let w = self.w(i);
        match w {
            "everything" | "everyone" | "*" => {
                self.s.everything = true;
                self.s.all.get_or_insert_with(|| w.to_string());
            }
            "all" | "every" | "each" => {
                self.s.all.get_or_insert_with(|| w.to_string());
            }
            "any" if self.verb.is_write() => {
                self.s.all.get_or_insert_with(|| w.to_string());
            }
            // "are there any pods": a read's `any` changes nothing
            "any" => {}
            _ => return false,
        }
        self.i = i + 1;
        true
    }

    /// Drain's `ignoring daemonsets` (always given).
    fn drain_words(&mut self) -> bool {
        let i = self.i;
        if self.verb != Verb::Drain || !matches!(self.w(i), "ignore" | "ignoring" | "skip" | "skipping") {
            return false;
        }
        let j = self.skip_articles(i + 1);
        match lexicon::resource(self.d, &self.words[j..]) {
            Some((r, n)) if r.plural == "daemonsets" => {
                self.i = j + n;
                true
            }
            _ => false,
        }
    }

    /// `not`, `never`, `no`, `don't` (as `do not`).
    fn negation(&mut self) -> bool {
        if matches!(self.w(self.i), "not" | "never" | "no" | "without") {
            self.s.negated = true;
            self.i += 1;
            return true;
        }
        false
    }

    /// A resource type (`pods`, `stateful sets`), or `TYPE/NAME`.
    fn resource(&mut self) -> bool {
        let i = self.i;
        let w = self.w(i);
        if !w.contains('=')
            && let Some((ty, name)) = w.split_once('/')
        {
            if let Some(r) = lexicon::one_word(self.d, ty)
                && is_name(name)
            {
                self.s.resources.push(r.clone());
                self.s.names.push(Named { name: name.to_string(), by_resource: true });
                self.i = i + 1;
                self.last_was_resource = false;
                return true;
            }
            self.s.unknown.push(self.raws[i].to_string());
            self.i = i + 1;
            return true;
        }
        let Some((r, n)) = lexicon::resource(self.d, &self.words[i..]) else { return false };
        let r = r.clone();
        self.s.resources.push(r);
        // "the api deployment": the name before is by a resource too
        let before = if i > 0 { self.w(i - 1) } else { "" };
        if let Some(last) = self.s.names.last_mut()
            && before == last.name
        {
            last.by_resource = true;
        }
        self.i = i + n;
        self.last_was_resource = true;
        true
    }

    /// `key=value`: a selector in reads, a change for label and annotate.
    fn equals(&mut self) {
        let i = self.i;
        let raw = self.raws[i];
        if matches!(self.verb, Verb::Label | Verb::Annotate) {
            let (k, v) = raw.split_once('=').unwrap_or((raw, ""));
            let ok = lexicon::is_key(k) && (self.verb == Verb::Annotate || lexicon::is_label_value(v));
            if !ok {
                self.s.problems.push(format!("“{raw}” is not a valid key=value."));
            } else if self.mode == Mode::RemoveKeys {
                self.s.changes.push(format!("{k}-"));
            } else {
                self.s.changes.push(raw.to_string());
            }
            self.part(Part::Change, i, i + 1);
            return;
        }
        if lexicon::is_selector(raw) {
            self.s.selector.push(raw.to_string());
            self.part(Part::Selector, i, i + 1);
        } else {
            self.s.problems.push(format!("“{raw}” is not a label selector (e.g. app=api)."));
            self.i = i + 1;
        }
    }
}
