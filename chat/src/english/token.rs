//! A sentence's words: split on whitespace, trimmed of surrounding
//! punctuation, lowercased, contractions split (`what's` → `what is`,
//! `don't` → `do not`, `api's` → `api`).
//!
//! Control characters count as spaces; a piece with no letter or digit at
//! all (`?`, `:)`, an emoji) is dropped.

/// One word of a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    /// As typed, less surrounding punctuation: label keys and values keep
    /// their case.
    pub(crate) raw: String,
    /// Lowercase.
    pub(crate) word: String,
}

/// Punctuation trimmed from the front of a word (`-` is kept: flags).
const LEADING: &[char] =
    &['"', '\'', '`', '(', '[', '{', '<', '*', '_', '~', '!', '?', '.', ',', ';', ':', '#', '¿', '¡', '@'];
/// Punctuation trimmed from the end of a word (`-` is kept: `tier-`).
const TRAILING: &[char] = &['"', '\'', '`', ')', ']', '}', '>', '*', '_', '~', '!', '?', '.', ',', ';', ':'];

/// Words `'s` turns into `word is` rather than a possessive.
const IS_STEMS: &[&str] = &["what", "that", "it", "there", "here", "who", "how", "where", "he", "she", "this"];

/// The words of `text`.
pub(crate) fn tokenize(text: &str) -> Vec<Token> {
    let cleaned: String = text
        .chars()
        .map(|c| match c {
            '\u{2018}' | '\u{2019}' | '\u{02bc}' | '\u{2032}' => '\'',
            '\u{201c}' | '\u{201d}' => '"',
            c if c.is_control() || c.is_whitespace() => ' ',
            c => c,
        })
        .collect();
    let mut out = Vec::new();
    for piece in cleaned.split(' ') {
        let piece = piece.trim_start_matches(LEADING).trim_end_matches(TRAILING);
        if !piece.chars().any(char::is_alphanumeric) {
            continue;
        }
        push_word(piece, &mut out);
    }
    out
}

fn push_word(raw: &str, out: &mut Vec<Token>) {
    let word = raw.to_lowercase();
    if !word.contains('=')
        && let Some(parts) = contraction(&word)
    {
        out.extend(parts.into_iter().filter(|p| !p.is_empty()).map(|p| Token { raw: p.clone(), word: p }));
        return;
    }
    out.push(Token { raw: raw.to_string(), word });
}

/// `word` as the words it stands for, if it is a contraction.
fn contraction(word: &str) -> Option<Vec<String>> {
    let fixed: Option<&[&str]> = match word {
        "whats" => Some(&["what", "is"]),
        "hows" => Some(&["how", "is"]),
        "thats" => Some(&["that", "is"]),
        "theres" => Some(&["there", "is"]),
        "dont" => Some(&["do", "not"]),
        "doesnt" => Some(&["does", "not"]),
        "didnt" => Some(&["did", "not"]),
        "isnt" => Some(&["is", "not"]),
        "arent" => Some(&["are", "not"]),
        "wasnt" => Some(&["was", "not"]),
        "cant" | "cannot" => Some(&["can", "not"]),
        "wont" => Some(&["will", "not"]),
        "shouldnt" => Some(&["should", "not"]),
        "lets" => Some(&["let", "us"]),
        "im" => Some(&["i", "am"]),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.iter().map(|s| s.to_string()).collect());
    }
    let (stem, rest) = word.split_once('\'')?;
    let words: Vec<&str> = match rest {
        "s" if IS_STEMS.contains(&stem) => vec![stem, "is"],
        "s" if stem == "let" => vec!["let", "us"],
        "s" | "" => vec![stem],
        "t" if stem.ends_with('n') => {
            let base = &stem[..stem.len() - 1];
            let base = match base {
                "ca" => "can",
                "wo" => "will",
                "sha" => "shall",
                "ai" => "is",
                b => b,
            };
            vec![base, "not"]
        }
        "re" => vec![stem, "are"],
        "ve" => vec![stem, "have"],
        "ll" => vec![stem, "will"],
        "d" => vec![stem, "would"],
        "m" => vec![stem, "am"],
        _ => return None,
    };
    Some(words.into_iter().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        tokenize(text).into_iter().map(|t| t.word).collect()
    }

    #[test]
    fn punctuation_case_and_contractions() {
        assert_eq!(words("What's wrong with API?!"), ["what", "is", "wrong", "with", "api"]);
        assert_eq!(words("don’t  delete\tit."), ["do", "not", "delete", "it"]);
        assert_eq!(words("show api's logs :) 🙏"), ["show", "api", "logs"]);
        assert_eq!(words("get pods -n web -A"), ["get", "pods", "-n", "web", "-a"]);
        assert_eq!(words("label pod x tier- (now)"), ["label", "pod", "x", "tier-", "now"]);
        assert_eq!(words("\u{0}\u{7}  "), Vec::<String>::new());
    }

    #[test]
    fn raw_keeps_case_for_label_values() {
        let t = tokenize("label pod x Tier=Web,");
        assert_eq!(t[3].raw, "Tier=Web");
        assert_eq!(t[3].word, "tier=web");
        assert_eq!(t[2].raw, "x");
    }
}
