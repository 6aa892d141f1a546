//! Which command a sentence asks for: its verb phrase, found anywhere in
//! the sentence ("can you please *show* me …", "*logs* of api", "*why* is
//! api crashing", "*roll* api *back*").
//!
//! Phrases are matched on the sentence's content words (politeness and
//! articles skipped). The earliest phrase of a command wins, the longest at
//! one place; the plain reading words (`show`, `list`, `what are`) only
//! count when no other command is named, and a sentence naming no command
//! reads as `get` (or, with a word like `crashing`, as `diagnose`). A write
//! beside another command ("show pods and delete api") is not read at all:
//! one command at a time.

use super::lexicon;
use super::quantity;
use super::token::Token;
use crate::discovery::Discovery;

/// A command of the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    /// `get`.
    Get,
    /// `describe`.
    Describe,
    /// `logs`.
    Logs,
    /// `events`.
    Events,
    /// `top`.
    Top,
    /// `scale`.
    Scale,
    /// `rollout restart`.
    Restart,
    /// `rollout status`.
    Status,
    /// `rollout undo`.
    Undo,
    /// `rollout history`.
    History,
    /// `delete`.
    Delete,
    /// `cordon`.
    Cordon,
    /// `uncordon`.
    Uncordon,
    /// `drain`.
    Drain,
    /// `label`.
    Label,
    /// `annotate`.
    Annotate,
    /// KubeChat's `diagnose`.
    Diagnose,
    /// KubeChat's `changes`.
    Changes,
}

impl Verb {
    /// Whether it changes the cluster.
    pub(crate) fn is_write(self) -> bool {
        matches!(
            self,
            Self::Scale
                | Self::Restart
                | Self::Undo
                | Self::Delete
                | Self::Cordon
                | Self::Uncordon
                | Self::Drain
                | Self::Label
                | Self::Annotate
        )
    }

    /// A sentence that does it, for messages.
    pub(crate) fn example(self) -> &'static str {
        match self {
            Self::Scale => "scale deployment api to 3",
            Self::Restart => "restart deployment api",
            Self::Undo => "roll back deployment api",
            Self::Delete => "delete pod api-7d9f8c6b5-x2kqp",
            Self::Cordon => "cordon node sim-node-1",
            Self::Uncordon => "uncordon node sim-node-1",
            Self::Drain => "drain node sim-node-1",
            Self::Label => "label pod db-0 tier=web",
            Self::Annotate => "annotate deployment api owner=ops",
            Self::Logs => "logs of api",
            Self::Diagnose => "what's wrong with api",
            Self::Changes => "what changed in web in the last hour",
            Self::Events => "events in web",
            Self::Top => "top pods in web",
            Self::Status => "rollout status of api",
            Self::History => "history of api",
            Self::Describe => "describe the api deployment",
            Self::Get => "show pods in web",
        }
    }

    /// How a message names it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Get => "showing objects",
            Self::Describe => "describe",
            Self::Logs => "logs",
            Self::Events => "events",
            Self::Top => "usage (top)",
            Self::Scale => "scale",
            Self::Restart => "restart",
            Self::Status => "rollout status",
            Self::Undo => "roll back",
            Self::History => "rollout history",
            Self::Delete => "delete",
            Self::Cordon => "cordon",
            Self::Uncordon => "uncordon",
            Self::Drain => "drain",
            Self::Label => "label",
            Self::Annotate => "annotate",
            Self::Diagnose => "what's wrong",
            Self::Changes => "what changed",
        }
    }
}

/// How a label or annotation command changes keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Sets keys (`key=value`), removes `key-`.
    Plain,
    /// Removes the keys named ("remove label tier from …").
    RemoveKeys,
    /// Sets keys, overwriting values ("change label …").
    Overwrite,
}

/// What a sentence's verb phrase was read as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reading {
    /// The command.
    pub(crate) verb: Verb,
    /// For label and annotate.
    pub(crate) mode: Mode,
    /// Tokens the phrase used up (the rest are the command's arguments).
    pub(crate) taken: Vec<usize>,
    /// Another command's words beside a write ("… and show pods").
    pub(crate) conflict: Option<String>,
    /// The sentence opens as a question ("when did api restart?", "how
    /// do I scale api?"): never a write.
    pub(crate) asks: bool,
}

/// Which of a phrase's words it uses up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    All,
    First,
    Nothing,
}

#[derive(Debug, Clone, Copy)]
struct Pattern {
    /// Content words, each `a|b|c` alternatives.
    words: &'static [&'static str],
    verb: Verb,
    mode: Mode,
    take: Take,
    /// A plain reading word: counts only when no other command is named.
    weak: bool,
    /// Only as the sentence's first content word.
    start: bool,
    /// A noun other commands also use ("the api *rollout*"): never a
    /// conflict.
    noun: bool,
    /// Not right after one of these words ("more *details*").
    not_after: &'static [&'static str],
}

const fn pat(words: &'static [&'static str], verb: Verb) -> Pattern {
    Pattern { words, verb, mode: Mode::Plain, take: Take::All, weak: false, start: false, noun: false, not_after: &[] }
}

impl Pattern {
    const fn weak(mut self) -> Self {
        self.weak = true;
        self
    }
    const fn start(mut self) -> Self {
        self.start = true;
        self
    }
    const fn noun(mut self) -> Self {
        self.noun = true;
        self
    }
    const fn first(mut self) -> Self {
        self.take = Take::First;
        self
    }
    const fn keep(mut self) -> Self {
        self.take = Take::Nothing;
        self
    }
    const fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
    const fn not_after(mut self, words: &'static [&'static str]) -> Self {
        self.not_after = words;
        self
    }
}

use Verb::*;

const REMOVE: &str = "remove|delete|drop|clear|strip|unset|erase";
const LABEL_WORDS: &str = "label|labels";
const ANNOTATION_WORDS: &str = "annotation|annotations";
const ADD: &str = "add|set|put|attach|apply";
const CHANGE: &str = "change|update|replace|modify|overwrite|edit";

const PATTERNS: &[Pattern] = &[
    // label and annotate
    pat(&[REMOVE, LABEL_WORDS], Label).mode(Mode::RemoveKeys).first(),
    pat(&[REMOVE, ANNOTATION_WORDS], Annotate).mode(Mode::RemoveKeys).first(),
    pat(&["unlabel"], Label).mode(Mode::RemoveKeys),
    pat(&["unannotate"], Annotate).mode(Mode::RemoveKeys),
    pat(&[ADD, LABEL_WORDS], Label).first(),
    pat(&[ADD, ANNOTATION_WORDS], Annotate).first(),
    pat(&[CHANGE, LABEL_WORDS], Label).mode(Mode::Overwrite).first(),
    pat(&[CHANGE, ANNOTATION_WORDS], Annotate).mode(Mode::Overwrite).first(),
    pat(&["relabel"], Label).mode(Mode::Overwrite),
    pat(&["label|tag"], Label).start(),
    pat(&["annotate"], Annotate),
    // diagnose
    pat(&["what", "is|was|are", "wrong"], Diagnose),
    pat(&["what", "wrong"], Diagnose),
    pat(&["what", "is", "going", "on", "with"], Diagnose),
    pat(&["what", "is", "going", "on"], Events),
    pat(&["what", "is", "up", "with"], Diagnose),
    pat(&["what", "is|was", "happening", "with|to"], Diagnose),
    pat(&["what", "happened", "to|with"], Diagnose),
    pat(&["what", "is", "matter", "with"], Diagnose),
    pat(&["why"], Diagnose),
    pat(&["wrong"], Diagnose),
    pat(&["diagnose|diagnosis|debug|troubleshoot|investigate"], Diagnose),
    pat(&["problem|problems|issue|issues|trouble", "with"], Diagnose),
    pat(&["health|healthy|unhealthy"], Diagnose),
    // changes
    pat(&["what", "changed"], Changes),
    pat(&["what", "has|have|was|were|got|is", "changed"], Changes),
    pat(&["who", "changed"], Changes),
    pat(&["changes|changed|modifications|modified"], Changes),
    pat(&["what", "is", "new|different"], Changes),
    // events
    pat(&["events|event"], Events),
    pat(&["what", "happened"], Events),
    pat(&["what", "is|was", "happening"], Events),
    // logs
    pat(&["logs|log|logging|stdout|stderr"], Logs),
    pat(&["tail"], Logs),
    pat(&["follow|stream"], Logs).keep(),
    // top
    pat(&["top"], Top),
    pat(&["cpu|memory|mem|ram|usage|utilization|utilisation|consumption|metrics"], Top),
    // rollout
    pat(&["rollout|roll", "restart"], Restart),
    pat(&["rolling", "restart"], Restart),
    pat(&["restart|redeploy|bounce|reboot|recycle|relaunch"], Restart),
    pat(&["rollout", "status"], Status),
    pat(&["rollout", "undo"], Undo),
    pat(&["rollout", "history"], History),
    pat(&["undo|rollback|revert|downgrade"], Undo),
    pat(&["roll", "back"], Undo),
    pat(&["go", "back"], Undo),
    pat(&["history|revisions"], History),
    pat(&["previous|past|old|older|earlier", "versions|revisions"], History),
    pat(&["revision"], History).keep().noun(),
    pat(&["status|progress"], Status),
    pat(&["rollout|rollouts"], Status).noun(),
    pat(&["rolled|rolling|roll", "out"], Status),
    // scale
    pat(&["scale|rescale|resize|scaling"], Scale),
    pat(&["increase|decrease|bump|reduce"], Scale),
    // delete
    pat(&["delete|remove|rm|del|kill|destroy|terminate|nuke|erase|evict|wipe|purge"], Delete),
    pat(&["get", "rid"], Delete),
    // nodes
    pat(&["uncordon"], Uncordon),
    pat(&["schedulable"], Uncordon),
    pat(&["allow|enable|resume|restore|unblock|reenable|re-enable", "scheduling"], Uncordon),
    pat(&["cordon"], Cordon),
    pat(&["unschedulable"], Cordon),
    pat(&["stop|disable|prevent|pause|block", "scheduling"], Cordon),
    pat(&["drain|evacuate"], Drain),
    // describe
    pat(&["describe|inspect"], Describe),
    pat(&["details|detail|info|information|description", "of|about|for|on"], Describe).not_after(&[
        "more",
        "extra",
        "additional",
        "with",
        "wide",
    ]),
    pat(&["tell", "about"], Describe),
    // get
    pat(&["show|list|get|display|give|print|view|see|fetch|find|lookup|check|enumerate|ls|query|count"], Get).weak(),
    pat(&["look", "at|up|for"], Get).weak(),
    pat(&["what|which", "are|is"], Get).weak(),
    pat(&["which"], Get).weak(),
    pat(&["how", "many"], Get).weak(),
    pat(&["are|is", "there"], Get).weak(),
];

/// Skipped when looking for the verb phrase.
#[rustfmt::skip]
const SKIP: &[&str] = &[
    "the", "a", "an", "please", "pls", "plz", "kindly", "can", "could", "would", "will", "you", "me", "us", "i", "we",
    "let", "want", "wanna", "like", "need", "just", "ahead", "and", "hey", "hi", "hello", "so", "now", "quickly",
    "kubectl", "k8s", "kubernetes", "my", "our", "your", "kubechat", "also", "then", "try", "help", "some", "k",
];

/// Words that, with no command named, make a sentence a question of
/// what is wrong ("api keeps crashing").
#[rustfmt::skip]
const TROUBLE: &[&str] = &[
    "crashing", "crashlooping", "crashloopbackoff", "failing", "failed", "broken", "erroring", "restarting", "stuck",
    "dying", "dead", "hanging", "oomkilled", "crashed", "down",
];

/// Words a question opens with. A request ("can you restart api") opens
/// with none of them: `can`, `could`, `would`, `please` are skipped.
const QUESTION_WORDS: &[&str] = &[
    "when", "did", "does", "do", "has", "have", "had", "was", "were", "is", "are", "how", "who", "where", "what",
    "which", "whether", "why",
];

/// How an `is … ok?` question ends.
#[rustfmt::skip]
const STATUS_END: &[&str] = &[
    "ok", "okay", "fine", "working", "running", "up", "down", "ready", "alive", "crashing", "failing", "broken",
    "stuck", "pending", "available", "responding",
];

/// Intent words that make `replicas` a scale.
const SCALE_INTENT: &[&str] =
    &["set", "change", "make", "update", "increase", "decrease", "bump", "reduce", "adjust", "modify", "want", "give"];

/// Whether the sentence opens as a question. "do a rolling restart" is a
/// request, "do you restart …" a question.
fn asks(tokens: &[Token]) -> bool {
    let mut words = tokens.iter().map(|t| t.word.as_str()).skip_while(|w| {
        matches!(*w, "please" | "pls" | "hey" | "hi" | "hello" | "ok" | "okay" | "so" | "well" | "um" | "kubechat")
    });
    match words.next() {
        Some("do") => matches!(words.next(), Some("you" | "i" | "we" | "they")),
        Some(w) => QUESTION_WORDS.contains(&w),
        None => false,
    }
}

/// Indices of the content words of `tokens` (politeness and articles
/// skipped).
pub(crate) fn content(tokens: &[Token]) -> Vec<usize> {
    tokens.iter().enumerate().filter(|(_, t)| !SKIP.contains(&t.word.as_str())).map(|(i, _)| i).collect()
}

#[derive(Debug, Clone)]
struct Match {
    verb: Verb,
    mode: Mode,
    /// Content position of its first word.
    at: usize,
    /// Content words it spans.
    len: usize,
    /// Token indices it spans.
    span: Vec<usize>,
    /// Token indices it uses up.
    take: Vec<usize>,
    weak: bool,
    noun: bool,
}

/// Reads the verb phrase of `tokens`.
pub(crate) fn read(tokens: &[Token], d: &Discovery) -> Reading {
    let content = content(tokens);
    let words: Vec<&str> = content.iter().map(|&i| tokens[i].word.as_str()).collect();
    let asks = asks(tokens);
    let mut matches = Vec::new();
    for at in 0..words.len() {
        for p in PATTERNS {
            if p.start && words[..at].iter().any(|w| *w != "to") {
                continue;
            }
            if at > 0 && p.not_after.contains(&words[at - 1]) {
                continue;
            }
            let n = p.words.len();
            if at + n > words.len()
                || !p.words.iter().zip(&words[at..]).all(|(alts, w)| alts.split('|').any(|a| a == *w))
            {
                continue;
            }
            let span: Vec<usize> = content[at..at + n].to_vec();
            let take = match p.take {
                Take::All => span.clone(),
                Take::First => vec![span[0]],
                Take::Nothing => Vec::new(),
            };
            matches.push(Match { verb: p.verb, mode: p.mode, at, len: n, span, take, weak: p.weak, noun: p.noun });
        }
    }
    special(tokens, &content, &words, d, &mut matches);
    let pick = |weak: bool| {
        matches.iter().filter(|m| m.weak == weak).min_by(|a, b| a.at.cmp(&b.at).then(b.len.cmp(&a.len))).cloned()
    };
    let Some(chosen) = pick(false).or_else(|| pick(true)) else {
        let trouble = tokens.iter().any(|t| TROUBLE.contains(&t.word.as_str()))
            || (tokens.iter().any(|t| t.word == "not")
                && tokens.iter().any(|t| matches!(t.word.as_str(), "ready" | "starting" | "working" | "responding")));
        let verb = if trouble { Diagnose } else { Get };
        return Reading { verb, mode: Mode::Plain, taken: Vec::new(), conflict: None, asks };
    };
    let conflict = if chosen.verb.is_write() {
        matches
            .iter()
            .filter(|m| !m.noun && m.verb != chosen.verb && m.span.iter().all(|i| !chosen.span.contains(i)))
            .map(|m| m.span.iter().map(|&i| tokens[i].word.as_str()).collect::<Vec<_>>().join(" "))
            .next()
    } else {
        None
    };
    Reading { verb: chosen.verb, mode: chosen.mode, taken: chosen.take, conflict, asks }
}

/// Phrases with a gap or a condition: "roll api back", "remove the tier
/// label", "run 3 replicas of api", "set api's replicas to 3", "is api ok".
fn special(tokens: &[Token], content: &[usize], words: &[&str], d: &Discovery, out: &mut Vec<Match>) {
    let m = |verb, mode, at: usize, len: usize, span: Vec<usize>, take: Vec<usize>| Match {
        verb,
        mode,
        at,
        len,
        span,
        take,
        weak: false,
        noun: false,
    };
    for (p, w) in words.iter().enumerate() {
        // roll … back
        if *w == "roll"
            && let Some(q) = (p + 1..words.len().min(p + 7)).find(|&q| words[q] == "back")
        {
            out.push(m(Undo, Mode::Plain, p, 2, vec![content[p], content[q]], vec![content[p], content[q]]));
        }
        // remove the tier label from …
        if REMOVE.split('|').any(|r| r == *w)
            && let (Some(key), Some(noun)) = (words.get(p + 1), words.get(p + 2))
        {
            let verb = if LABEL_WORDS.split('|').any(|l| l == *noun) {
                Some(Label)
            } else if ANNOTATION_WORDS.split('|').any(|l| l == *noun) {
                Some(Annotate)
            } else {
                None
            };
            let plain_key = lexicon::is_key(key)
                && lexicon::resource(d, &[key]).is_none()
                && !matches!(*key, "with" | "having" | "by" | "matching" | "where" | "all" | "every" | "any");
            if let Some(verb) = verb
                && plain_key
            {
                out.push(m(verb, Mode::RemoveKeys, p, 3, content[p..=p + 2].to_vec(), vec![content[p]]));
            }
        }
    }
    // run 3 replicas of api
    if words.first() == Some(&"run") && words.get(1).and_then(|w| quantity::number(&[w])).is_some() {
        out.push(m(Scale, Mode::Plain, 0, 1, vec![content[0]], vec![content[0]]));
    }
    // set the replicas of api to 3; give api 3 replicas
    let replica_word = |w: &str| matches!(w, "replicas" | "replica" | "instances" | "copies");
    if words.iter().any(|w| replica_word(w)) {
        let to_number = tokens.windows(2).any(|p| p[0].word == "to" && quantity::number(&[&p[1].word]).is_some());
        // "i need 4 replicas": intent words the content view skips
        let wanted =
            tokens.iter().any(|t| matches!(t.word.as_str(), "want" | "wants" | "need" | "needs" | "should" | "wanna"));
        if let Some(p) = words.iter().position(|w| SCALE_INTENT.contains(w)) {
            out.push(m(Scale, Mode::Plain, p, 1, vec![content[p]], vec![content[p]]));
        } else if (to_number || wanted)
            && let Some(p) = words.iter().position(|w| replica_word(w))
        {
            out.push(m(Scale, Mode::Plain, p, 1, vec![content[p]], Vec::new()));
        }
    }
    // is api ok?
    if matches!(words.first(), Some(&("is" | "are")))
        && words.len() > 2
        && words.last().is_some_and(|w| STATUS_END.contains(w))
    {
        out.push(m(Diagnose, Mode::Plain, 0, 1, vec![content[0]], Vec::new()));
    }
}

#[cfg(test)]
mod tests {
    use super::super::token::tokenize;
    use super::*;

    fn verb(s: &str) -> (Verb, Mode, bool) {
        let r = read(&tokenize(s), &Discovery::builtin());
        (r.verb, r.mode, r.conflict.is_some())
    }

    #[test]
    fn earliest_command_wins_and_reading_words_are_weak() {
        assert_eq!(verb("can you please show me the logs of api"), (Logs, Mode::Plain, false));
        assert_eq!(verb("show pods"), (Get, Mode::Plain, false));
        assert_eq!(verb("pods in web"), (Get, Mode::Plain, false));
        assert_eq!(verb("why did api restart"), (Diagnose, Mode::Plain, false));
        assert_eq!(verb("logs of api before the last restart"), (Logs, Mode::Plain, false));
        assert_eq!(verb("get rid of pod x"), (Delete, Mode::Plain, false));
        assert_eq!(verb("roll the api deployment back"), (Undo, Mode::Plain, false));
        assert_eq!(verb("remove the tier label from pod x"), (Label, Mode::RemoveKeys, false));
        assert_eq!(verb("delete pods with label app=api"), (Delete, Mode::Plain, false));
        assert_eq!(verb("set the replicas of api to 3"), (Scale, Mode::Plain, false));
        assert_eq!(verb("api keeps crashing"), (Diagnose, Mode::Plain, false));
        assert_eq!(verb("is the api deployment ok"), (Diagnose, Mode::Plain, false));
        assert_eq!(verb("undo the api rollout to revision 2"), (Undo, Mode::Plain, false));
    }

    #[test]
    fn a_write_beside_another_command_is_a_conflict() {
        assert!(verb("show pods and delete api").2);
        assert!(verb("restart api and then show me its logs").2);
        assert!(!verb("please delete pod x").2);
        assert!(!verb("scale api to 3 replicas").2);
    }
}
