//! Plain English → a kubectl command line, by a deterministic grammar: no
//! model, nothing sent anywhere, the same sentence always read the same.
//!
//! A sentence is read in four steps:
//!
//! 1. its words (`token`): lowercased, punctuation trimmed,
//!    contractions split; more than [`MAX_CHARS`] characters are not read;
//! 2. what it may not ask for (`refusal`): another cluster or identity
//!    (`--kubeconfig`, `--server`, `--token`, `--as`), `--raw`, files and
//!    URLs, `exec`, `port-forward`, `proxy`, `edit`, `cp`, `apply` …;
//! 3. its verb phrase (`verb`), anywhere in the sentence: "*show* me",
//!    "*logs* of", "*why* is", "*roll* api *back*"; none is `get`;
//! 4. the rest (`slot`): resource words resolved against the cluster's
//!    [`Discovery`] (plural, singular, short names, kinds, CRDs, and
//!    `deploys`, `stateful sets`, `apps`), object names, the namespace
//!    (`in web`, `everywhere`), and each option (`as yaml`, `app=api`,
//!    `last 50 lines`, `in the last hour`, `container sidecar`, `to three
//!    replicas`, `revision 2`, `tier=web`, `remove label tier`), which
//!    `command` then assembles into the canonical argv, a question back,
//!    or a reason it was not understood.
//!
//! A sentence that names an object gives a [`Draft`] whose [`NameLookup`]
//! is matched against the live objects by [`resolve`] (`lookup`).
//!
//! # Layout
//!
//! - `token`: words.
//! - `quantity`: numbers and spans of time.
//! - `lexicon`: filler, formats, resource words, name shapes.
//! - `refusal`: what is refused, and why.
//! - `verb`: which command.
//! - `slot`: resource, names, namespace, options.
//! - `command`: each command's grammar and argv.
//! - `lookup`: typed names against live objects.

use serde::Serialize;

use crate::discovery::{ApiResource, Discovery};

mod command;
mod lexicon;
mod lookup;
mod quantity;
mod refusal;
mod slot;
mod token;
mod verb;

/// The longest sentence read, in characters.
pub const MAX_CHARS: usize = 2000;

/// What a sentence was read as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[allow(
    clippy::large_enum_variant,
    reason = "the interface callers match on; one value per sentence, never in a hot loop"
)]
pub enum Interpretation {
    /// A command line, perhaps with one object name still to resolve
    /// against the cluster's objects ([`resolve`]).
    Command(Draft),
    /// A question back: the sentence is ambiguous, or a write is unclear.
    Question(Question),
    /// Not understood; `message` says what would be.
    NotUnderstood {
        /// What went wrong and what the grammar understands.
        message: String,
        /// Example sentences.
        examples: Vec<String>,
    },
}

/// A command line read from a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Draft {
    /// The kubectl command line (without `kubectl`).
    pub argv: Vec<String>,
    /// An object name in `argv` that must be matched against the cluster's
    /// objects first (`api` → `api-7d9f…`).
    pub lookup: Option<NameLookup>,
}

/// An object name to match against the live objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NameLookup {
    /// The resource whose objects are listed.
    pub resource: ApiResource,
    /// Their namespace (`None`: cluster-scoped).
    pub namespace: Option<String>,
    /// What the person typed.
    pub typed: String,
    /// Where in `argv` the resolved name goes.
    pub argv_index: usize,
}

/// A question with the commands each answer stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Question {
    /// The question.
    pub text: String,
    /// The answers, each a command line.
    pub choices: Vec<Choice>,
}

/// One answer to a [`Question`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Choice {
    /// What the person sees.
    pub label: String,
    /// The command line it stands for.
    pub argv: Vec<String>,
}

/// Example sentences shown with what was not understood.
pub(crate) fn examples() -> Vec<String> {
    [
        "show pods in web",
        "logs of api last 50 lines",
        "what's wrong with api",
        "scale frontend to 3",
        "restart deployment api",
        "what changed in web in the last hour",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Reads `text` in `namespace` (the person's current namespace).
///
/// Never panics and never sends anything; the same input always gives the
/// same answer. A write is a [`Command`](Interpretation::Command) only when
/// it names one object and everything it needs (a count to scale to);
/// otherwise it is a question or not understood.
pub fn interpret(text: &str, discovery: &Discovery, namespace: &str) -> Interpretation {
    if text.chars().nth(MAX_CHARS).is_some() {
        return command::nope(format!(
            "That is too long for me to read (more than {MAX_CHARS} characters); ask for one thing in a sentence."
        ));
    }
    if !lexicon::is_namespace(namespace) {
        return command::nope(format!("The current namespace “{namespace}” is not a valid namespace name."));
    }
    let mut tokens = token::tokenize(text);
    let leading = tokens.iter().take_while(|t| matches!(t.word.as_str(), "kubectl" | "k" | "kc")).count();
    tokens.drain(..leading);
    if tokens.is_empty() {
        return command::nope("Say what you'd like to see or do, e.g. “show pods in web”.");
    }
    let content = verb::content(&tokens);
    if let Some(why) = refusal::check(&tokens, content.first().copied()) {
        return command::nope(why);
    }
    let reading = verb::read(&tokens, discovery);
    if let Some(other) = &reading.conflict {
        return command::nope(format!(
            "One command at a time: I read “{other}” as well as {}. Ask for each on its own.",
            reading.verb.name()
        ));
    }
    if reading.asks && reading.verb.is_write() {
        return command::nope(format!(
            "That reads as a question, so I changed nothing. To {}, ask for it, e.g. “{}”.",
            reading.verb.name(),
            reading.verb.example()
        ));
    }
    let rest: Vec<&token::Token> =
        tokens.iter().enumerate().filter(|(i, _)| !reading.taken.contains(i)).map(|(_, t)| t).collect();
    let slots = slot::read(&rest, reading.verb, reading.mode, discovery);
    command::build(&reading, slots, discovery, namespace)
}

/// Matches a draft's name against `names` (the objects of its lookup).
///
/// An exact name wins; otherwise the pods of a workload so named (for
/// pods), or a unique prefix. Several candidates are a [`Question`] with
/// one [`Choice`] each (a write never picks among several); none is
/// [`NotUnderstood`](Interpretation::NotUnderstood). A draft without a
/// lookup is returned as it is.
pub fn resolve(draft: Draft, names: &[String]) -> Interpretation {
    lookup::resolve(draft, names)
}
