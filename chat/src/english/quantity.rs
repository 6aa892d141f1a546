//! Numbers as people type them (`3`, `three`, `twenty five`, `a dozen`,
//! `minus two`) and spans of time (`10m`, `1h30m`, `2 days`, `an hour`,
//! `half an hour`), written back as Go durations (`10m`, `1h`, `48h`).

/// Number words up to nineteen.
const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];

/// Tens.
const TENS: [(&str, i64); 8] = [
    ("twenty", 20),
    ("thirty", 30),
    ("forty", 40),
    ("fifty", 50),
    ("sixty", 60),
    ("seventy", 70),
    ("eighty", 80),
    ("ninety", 90),
];

/// The number `words` start with, and how many words it took.
pub(crate) fn number(words: &[&str]) -> Option<(i64, usize)> {
    match *words.first()? {
        "minus" | "negative" => {
            let (n, k) = unsigned(&words[1..])?;
            Some((n.saturating_neg(), k + 1))
        }
        _ => unsigned(words),
    }
}

fn unsigned(words: &[&str]) -> Option<(i64, usize)> {
    let first = *words.first()?;
    if let Some(n) = digits(first) {
        return Some((n, 1));
    }
    let next = words.get(1).copied().unwrap_or("");
    let scale = |w: &str| match w {
        "dozen" => Some(12),
        "hundred" => Some(100),
        "thousand" => Some(1000),
        "million" => Some(1_000_000),
        _ => None,
    };
    match first {
        "a" | "an" => {
            if next == "couple" {
                return Some((2, if words.get(2) == Some(&"of") { 3 } else { 2 }));
            }
            scale(next).map(|n| (n, 2))
        }
        "couple" => Some((2, if next == "of" { 2 } else { 1 })),
        "single" => Some((1, 1)),
        w if scale(w).is_some() => scale(w).map(|n| (n, 1)),
        w => {
            let n = word_number(w)?;
            if let Some(s) = scale(next) {
                return Some((n.saturating_mul(s), 2));
            }
            if n >= 20
                && n % 10 == 0
                && let Some(o) = ONES[1..10].iter().position(|o| *o == next)
            {
                return Some((n + o as i64 + 1, 2));
            }
            Some((n, 1))
        }
    }
}

/// A number word: `seven`, `forty`, `twenty-five`.
fn word_number(w: &str) -> Option<i64> {
    if let Some(i) = ONES.iter().position(|o| *o == w) {
        return Some(i as i64);
    }
    if let Some((_, n)) = TENS.iter().find(|(t, _)| *t == w) {
        return Some(*n);
    }
    let (tens, ones) = w.split_once('-')?;
    let (_, t) = TENS.iter().find(|(t, _)| *t == tens)?;
    let o = ONES[1..10].iter().position(|o| *o == ones)?;
    Some(t + o as i64 + 1)
}

/// Digits with an optional sign; very long numbers saturate (they are
/// refused as absurd later, never wrapped).
pub(crate) fn digits(s: &str) -> Option<i64> {
    let (negative, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = body.parse::<i64>().unwrap_or(i64::MAX);
    Some(if negative { -n } else { n })
}

/// A span of time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Span {
    /// Its length in seconds (saturating).
    pub(crate) seconds: u64,
    /// As a Go duration (`30m`, `1h`, `48h`, `1h30m`).
    pub(crate) go: String,
}

/// Seconds in a unit word.
pub(crate) fn unit(word: &str) -> Option<u64> {
    Some(match word {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "wk" | "wks" | "week" | "weeks" => 604_800,
        _ => return None,
    })
}

/// `amount` units of `unit_seconds`.
pub(crate) fn span(amount: u64, unit_seconds: u64) -> Span {
    let seconds = amount.saturating_mul(unit_seconds);
    let go = match unit_seconds {
        1 => format!("{amount}s"),
        60 => format!("{amount}m"),
        _ => format!("{}h", seconds / 3600),
    };
    Span { seconds, go }
}

/// One unit, for `the last hour`, `the past day`.
pub(crate) fn bare_unit(word: &str) -> Option<Span> {
    match word {
        "second" | "minute" | "hour" | "day" | "week" => unit(word).map(|u| span(1, u)),
        _ => None,
    }
}

/// The span of time `words` start with, and how many words it took:
/// `10m`, `1h30m`, `10 minutes`, `ten mins`, `an hour`, `half an hour`.
pub(crate) fn duration(words: &[&str]) -> Option<(Span, usize)> {
    let first = *words.first()?;
    if let Some(s) = glued(first) {
        return Some((s, 1));
    }
    let next = words.get(1).copied().unwrap_or("");
    if first == "half" {
        return match (next, words.get(2).copied().unwrap_or("")) {
            ("an" | "a", "hour") => Some((span(30, 60), 3)),
            ("hour", _) => Some((span(30, 60), 2)),
            ("a", "day") => Some((span(12, 3600), 3)),
            ("day", _) => Some((span(12, 3600), 2)),
            _ => None,
        };
    }
    if matches!(first, "a" | "an")
        && let Some(u) = unit(next)
        && next.len() > 1
    {
        return Some((span(1, u), 2));
    }
    let (n, k) = number(words)?;
    let u = unit(words.get(k)?)?;
    let n = u64::try_from(n).ok()?;
    Some((span(n, u), k + 1))
}

/// A duration in one word: `10m`, `2hrs`, `30secs`, `1d`, `1h30m`.
fn glued(word: &str) -> Option<Span> {
    let split = word.find(|c: char| !c.is_ascii_digit())?;
    if split == 0 || split > 9 {
        return None;
    }
    let (num, rest) = word.split_at(split);
    let n: u64 = num.parse().ok()?;
    if let Some(u) = unit(rest) {
        return Some(span(n, u));
    }
    // Go's compound form, h/m/s only: 1h30m, 2m30s.
    let mut seconds = 0u64;
    let mut rest = word;
    let mut parts = 0;
    while !rest.is_empty() {
        let d = rest.find(|c: char| !c.is_ascii_digit()).filter(|d| *d > 0 && *d <= 9)?;
        let n: u64 = rest[..d].parse().ok()?;
        let u = match rest.as_bytes().get(d)? {
            b'h' => 3600,
            b'm' => 60,
            b's' => 1,
            _ => return None,
        };
        seconds = seconds.saturating_add(n.saturating_mul(u));
        rest = &rest[d + 1..];
        parts += 1;
    }
    (parts > 1).then(|| Span { seconds, go: word.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> Option<(i64, usize)> {
        let w: Vec<&str> = s.split(' ').collect();
        number(&w)
    }

    fn dur(s: &str) -> Option<(String, usize)> {
        let w: Vec<&str> = s.split(' ').collect();
        duration(&w).map(|(s, k)| (s.go, k))
    }

    #[test]
    fn numbers_in_digits_and_words() {
        assert_eq!(num("3 replicas"), Some((3, 1)));
        assert_eq!(num("three"), Some((3, 1)));
        assert_eq!(num("twenty"), Some((20, 1)));
        assert_eq!(num("twenty five"), Some((25, 2)));
        assert_eq!(num("twenty-five"), Some((25, 1)));
        assert_eq!(num("a dozen"), Some((12, 2)));
        assert_eq!(num("a couple of"), Some((2, 3)));
        assert_eq!(num("two hundred"), Some((200, 2)));
        assert_eq!(num("minus 2"), Some((-2, 2)));
        assert_eq!(num("-4"), Some((-4, 1)));
        assert_eq!(num("99999999999999999999999"), Some((i64::MAX, 1)));
        assert_eq!(num("api"), None);
        assert_eq!(num("a"), None);
    }

    #[test]
    fn durations_as_go_durations() {
        assert_eq!(dur("10m"), Some(("10m".into(), 1)));
        assert_eq!(dur("10 minutes ago"), Some(("10m".into(), 2)));
        assert_eq!(dur("an hour"), Some(("1h".into(), 2)));
        assert_eq!(dur("2 days"), Some(("48h".into(), 2)));
        assert_eq!(dur("1d"), Some(("24h".into(), 1)));
        assert_eq!(dur("a week"), Some(("168h".into(), 2)));
        assert_eq!(dur("half an hour"), Some(("30m".into(), 3)));
        assert_eq!(dur("ninety seconds"), Some(("90s".into(), 2)));
        assert_eq!(dur("1h30m"), Some(("1h30m".into(), 1)));
        assert_eq!(dur("3 replicas"), None);
        assert_eq!(dur("10"), None);
        assert_eq!(dur("a m"), None);
        assert_eq!(dur("-5 minutes"), None);
        assert_eq!(duration(&["1h30m"]).map(|(s, _)| s.seconds), Some(5400));
    }
}
