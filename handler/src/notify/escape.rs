//! Escaping for user-controlled text. Resource names, rule details and observed values come
//! from Azure and from whoever named the resources, so nothing from them may become markup,
//! a link or a mail header line.

/// Characters that Adaptive Card Markdown (a CommonMark subset), Teams and the card's
/// `{{DATE()}}` substitution act on, each with the look-alike shown instead. Teams clients show
/// backslash escapes literally (`change\(s\)`), so nothing is escaped: the few characters that
/// could make a link, emphasis, code, a tag, an entity or a substitution are replaced by
/// Unicode look-alikes, and parentheses, which act only after `]`, stay as they are.
const CARD_LOOKALIKES: &[(char, char)] = &[
    ('\\', '\u{29F5}'), // ⧵ reverse solidus operator
    ('*', '\u{2217}'),  // ∗ asterisk operator
    ('_', '\u{02CD}'),  // ˍ modifier letter low macron
    ('[', '\u{FF3B}'),  // ［ fullwidth left square bracket
    (']', '\u{FF3D}'),  // ］
    ('<', '\u{2039}'),  // ‹ single left-pointing angle quotation mark
    ('>', '\u{203A}'),  // ›
    ('`', '\u{02CB}'),  // ˋ modifier letter grave accent
    ('~', '\u{223C}'),  // ∼ tilde operator
    ('#', '\u{FF03}'),  // ＃
    ('|', '\u{2223}'),  // ∣ divides
    ('{', '\u{FF5B}'),  // ｛
    ('}', '\u{FF5D}'),  // ｝
    ('&', '\u{FF06}'),  // ＆
];

/// Text for an Adaptive Card `TextBlock` or `FactSet` value: one line, no Markdown effect, no
/// backslash.
pub fn card_text(text: &str) -> String {
    let line = single_line(text);
    let mut out = String::with_capacity(line.len() + 8);
    let mut only_digits_so_far = true;
    for (index, ch) in line.chars().enumerate() {
        // A leading `-`, `+` or `=` would start a list or underline a heading, `1.` a list.
        let ch = match ch {
            '-' if index == 0 => '\u{2010}',                      // ‐ hyphen
            '+' if index == 0 => '\u{FF0B}',                      // ＋
            '=' if index == 0 => '\u{FF1D}',                      // ＝
            '.' if index > 0 && only_digits_so_far => '\u{2024}', // ․ one dot leader
            other => CARD_LOOKALIKES
                .iter()
                .find(|(special, _)| *special == other)
                .map_or(other, |(_, lookalike)| *lookalike),
        };
        only_digits_so_far = only_digits_so_far && ch.is_ascii_digit();
        out.push(ch);
    }
    out
}

/// Text for an HTML element or a double-quoted attribute.
pub fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

/// Collapses line breaks and control characters ([`crate::text::is_control`]) to spaces, so a
/// value cannot start a new Markdown block or a new mail header line.
pub fn single_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last_was_space = false;
    for ch in text.chars() {
        let ch = if crate::text::is_control(ch) { ' ' } else { ch };
        if ch == ' ' && last_was_space {
            continue;
        }
        last_was_space = ch == ' ';
        out.push(ch);
    }
    out.trim().to_owned()
}

/// `text` on one line ([`single_line`]) and at most `max_chars` characters, a cut marked with
/// an ellipsis (the shared bound of [`crate::text`]).
pub fn bounded_line(text: &str, max_chars: usize) -> String {
    crate::text::clean_owned(single_line(text), crate::text::Limit::chars(max_chars))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "kv<script>*_[x](http://evil)";

    #[test]
    fn card_text_defuses_links_emphasis_and_tags_without_backslashes() {
        let shown = card_text(HOSTILE);
        assert_eq!(shown, "kv‹script›∗ˍ［x］(http://evil)");
        assert!(!shown.contains("]("));
        assert!(!shown.contains('<') && !shown.contains('\\'));
        assert_eq!(
            card_text("change(s) (never enabled)"),
            "change(s) (never enabled)"
        );
    }

    #[test]
    fn card_text_stays_on_one_line_and_starts_no_block() {
        assert_eq!(card_text("a\n\n- b\r\nc"), "a - b c");
        assert_eq!(card_text("- item"), "\u{2010} item");
        assert_eq!(card_text("12. item"), "12\u{2024} item");
        assert_eq!(card_text("kv1.vault.azure.net"), "kv1.vault.azure.net");
        assert_eq!(
            card_text("{{DATE(2020-01-01T00:00:00Z)}}"),
            "｛｛DATE(2020-01-01T00:00:00Z)｝｝"
        );
        assert_eq!(card_text(r"a\b"), "a⧵b");
    }

    #[test]
    fn html_escapes_markup_and_quotes() {
        assert_eq!(
            html(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn bounded_lines_respect_characters_and_separators() {
        assert_eq!(bounded_line("äöüß", 10), "äöüß");
        assert_eq!(bounded_line("äöüßxyz", 4), "äöü…");
        assert_eq!(bounded_line("a\u{2028}b\u{202e}c\n", 10), "a b c");
    }
}
