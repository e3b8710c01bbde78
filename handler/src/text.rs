//! Text from outside — event fields, binding names, deserializer messages, response bodies —
//! made safe to show. Whatever reaches a host `Logs` line, an Outcome `reason`, a log record, a
//! card or an email passes through here: a control character could forge a log line or move a
//! terminal's cursor, and an unbounded field would let one event make every line and reply
//! as large as itself.
//!
//! Control characters are escaped (`\n`, `\r`, `\t`, `\u{1b}`), not dropped, so a reader still
//! sees that they were there; a cut is marked with `…`. Text that is already clean and short is
//! passed through without a copy: most text is, and the irrelevant-event path is hot.

use std::borrow::Cow;
use std::fmt::Write as _;

/// How much of a text may be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    max_chars: usize,
    max_bytes: usize,
}

impl Limit {
    /// At most `max_chars` characters, the ellipsis of a cut included.
    pub const fn chars(max_chars: usize) -> Self {
        Self {
            max_chars,
            max_bytes: usize::MAX,
        }
    }
}

/// The most bytes of one host `Logs` line or one Outcome `reason`.
pub const LINE_BYTES: usize = 4096;

/// One piece of outside text inside a message: an event id, a type, a subject, a key name.
pub const FIELD: Limit = Limit::chars(200);

/// A whole reason: room for a few fields and the explanation around them, within one line.
pub const REASON: Limit = Limit {
    max_chars: 1000,
    max_bytes: LINE_BYTES,
};

/// A whole log line, whatever it is made of.
pub const LINE: Limit = Limit {
    max_chars: usize::MAX,
    max_bytes: LINE_BYTES,
};

/// Characters that can forge a line, move a terminal's cursor or reorder what a reader sees:
/// C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the bidirectional
/// embedding, override and isolate marks.
pub fn is_control(ch: char) -> bool {
    ch.is_control()
        || matches!(ch, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with controls escaped, within `limit`; borrowed when it already is.
pub fn clean(text: &str, limit: Limit) -> Cow<'_, str> {
    match rewrite(text, limit) {
        None => Cow::Borrowed(text),
        Some(cleaned) => Cow::Owned(cleaned),
    }
}

/// [`clean`] for text that is owned already: the same string, not a copy, when it is clean.
pub fn clean_owned(text: String, limit: Limit) -> String {
    rewrite(&text, limit).unwrap_or(text)
}

/// [`clean`] to [`FIELD`]: for one piece of outside text placed inside a message.
pub fn field(text: &str) -> Cow<'_, str> {
    clean(text, FIELD)
}

/// `None` when `text` is within `limit` and has no control character; else the rewritten text.
fn rewrite(text: &str, limit: Limit) -> Option<String> {
    if fits(text, limit) {
        return None;
    }
    const ELLIPSIS: char = '…';
    let mut out = String::with_capacity(text.len().min(1024));
    let mut chars = 0usize;
    let mut cut = false;
    for ch in text.chars() {
        let before = out.len();
        if is_control(ch) {
            match ch {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                other => {
                    let _ = write!(out, "\\u{{{:x}}}", u32::from(other));
                }
            }
        } else {
            out.push(ch);
        }
        // Escapes are ASCII: their bytes are their characters.
        let added = if is_control(ch) {
            out.len() - before
        } else {
            1
        };
        if chars + added > limit.max_chars || out.len() > limit.max_bytes {
            out.truncate(before);
            cut = true;
            break;
        }
        chars += added;
    }
    if cut {
        while !out.is_empty()
            && (chars + 1 > limit.max_chars || out.len() + ELLIPSIS.len_utf8() > limit.max_bytes)
        {
            out.pop();
            chars -= 1;
        }
        out.push(ELLIPSIS);
    }
    Some(out)
}

/// True when `text` can be shown as it is.
fn fits(text: &str, limit: Limit) -> bool {
    if text.len() > limit.max_bytes {
        return false;
    }
    // One pass over plain ASCII settles most text (its byte length is its character count);
    // counted without stopping early, so that the compiler can check many bytes at once.
    if text.bytes().filter(|b| !(0x20..0x7f).contains(b)).count() == 0 {
        return text.len() <= limit.max_chars;
    }
    let mut chars = 0usize;
    for ch in text.chars() {
        if is_control(ch) {
            return false;
        }
        chars += 1;
    }
    chars <= limit.max_chars
}

/// An error and its causes as one line, `outer: cause: root`; a cause whose text the line
/// already holds (libraries often repeat their source in their own message) is not repeated.
/// The one cause-chain formatter: reasons, logs and alert details all read errors through it.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !cause_text.is_empty() && !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What stands where a secret was.
pub const REDACTED: &str = "[redacted]";

/// `text` without secrets: the query string of every URL in it (a SAS, a Workflows `sig` —
/// credentials travel in queries) and every occurrence of each of `secrets`, as written or
/// percent-encoded. The one redaction: state store errors, alert delivery failures and the
/// configuration's messages all go through it. Fragments under 4 characters are not
/// replaced: replacing `/` everywhere would only garble the message.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = redact_urls(text);
    let mut secrets: Vec<&String> = secrets.iter().filter(|s| s.len() >= 4).collect();
    // Longest first, so a URL is replaced whole before its query is.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in secrets {
        let encoded =
            percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        out = out.replace(secret.as_str(), REDACTED);
        if encoded != *secret {
            out = out.replace(&encoded, REDACTED);
        }
    }
    out
}

/// `text` with the query string of every `http://` or `https://` URL in it replaced.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = find_url(rest) {
        out.push_str(&rest[..start]);
        let url_and_after = &rest[start..];
        let end = url_and_after
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(url_and_after.len());
        let url = &url_and_after[..end];
        match url.find('?') {
            Some(query) => {
                out.push_str(&url[..query]);
                out.push('?');
                out.push_str(REDACTED);
            }
            None => out.push_str(url),
        }
        rest = &url_and_after[end..];
    }
    out.push_str(rest);
    out
}

fn find_url(text: &str) -> Option<usize> {
    match (text.find("https://"), text.find("http://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_control(text: &str) -> bool {
        text.chars().any(is_control)
    }

    #[test]
    fn clean_short_text_is_borrowed() {
        for text in ["e1", "Microsoft.KeyVault.KeyExpired", "Grüße, 鍵", ""] {
            assert!(matches!(field(text), Cow::Borrowed(_)), "{text}");
        }
        let owned = String::from("abc");
        let pointer = owned.as_ptr();
        let kept = clean_owned(owned, FIELD);
        assert_eq!(kept.as_ptr(), pointer);
    }

    #[test]
    fn controls_are_escaped_where_a_reader_sees_them() {
        assert_eq!(field("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(field("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(field("nul\0"), "nul\\u{0}");
        assert_eq!(field("del\u{7f}"), "del\\u{7f}");
        assert_eq!(field("c1\u{85}\u{9b}"), "c1\\u{85}\\u{9b}");
        assert_eq!(field("ls\u{2028}ps\u{2029}"), "ls\\u{2028}ps\\u{2029}");
        assert_eq!(field("rlo\u{202e}txt"), "rlo\\u{202e}txt");
        assert!(!has_control(&field(
            "\u{0}\u{1f}\u{7f}\u{80}\u{9f}\u{2066}"
        )));
    }

    #[test]
    fn long_text_is_cut_with_an_ellipsis_within_the_limit() {
        let long = "x".repeat(500_000);
        let cut = field(&long);
        assert_eq!(cut.chars().count(), 200);
        assert!(cut.ends_with('…'));
        assert_eq!(field(&"x".repeat(200)).chars().count(), 200);
        assert!(!field(&"x".repeat(200)).ends_with('…'));
        assert_eq!(clean("äöüßxyz", Limit::chars(4)), "äöü…");
        assert_eq!(clean("äöüß", Limit::chars(4)), "äöüß");
    }

    #[test]
    fn escapes_count_towards_the_limit() {
        let newlines = "\n".repeat(1000);
        let cut = field(&newlines);
        assert!(cut.chars().count() <= 200, "{}", cut.chars().count());
        assert!(cut.ends_with('…'));
        assert!(!has_control(&cut));
    }

    #[test]
    fn lines_and_reasons_stay_within_4_kib_whatever_the_characters() {
        for unit in ["x", "é", "鍵", "😀", "\n", "\u{1b}", "\u{2028}"] {
            let text = unit.repeat(10_000);
            for limit in [LINE, REASON] {
                let cleaned = clean(&text, limit);
                assert!(cleaned.len() <= LINE_BYTES, "{unit:?}: {}", cleaned.len());
                assert!(!has_control(&cleaned), "{unit:?}");
            }
        }
        let exact = "鍵".repeat(LINE_BYTES / 3);
        assert!(matches!(clean(&exact, LINE), Cow::Borrowed(_)));
    }

    #[test]
    fn a_chain_reads_every_cause_once() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let root = E("refused", None);
        let repeated = E("connect: refused", Some(Box::new(root)));
        let outer = E("sending failed", Some(Box::new(repeated)));
        assert_eq!(chain(&outer), "sending failed: connect: refused");
        assert_eq!(chain(&E("alone", None)), "alone");
    }

    #[test]
    fn redaction_removes_url_queries_and_known_secrets_plain_or_encoded() {
        let secrets = vec!["p@ss".to_owned(), "ab".to_owned()];
        assert_eq!(
            redact(
                "GET https://acct.blob.core.windows.net/c/b?sv=1&sig=xyz failed for p@ss (p%40ss) ab",
                &secrets
            ),
            "GET https://acct.blob.core.windows.net/c/b?[redacted] failed for [redacted] ([redacted]) ab"
        );
        assert_eq!(redact_urls("no url here"), "no url here");
    }
}
