//! Escaping for user-controlled text. Resource names, rule details and observed values come
//! from Azure and from whoever named the resources, so nothing from them may become markup,
//! a link or a mail header line.

/// Characters that Adaptive Card Markdown (a CommonMark subset), Teams and the card's
/// `{{DATE()}}` substitution treat specially. Each is prefixed with a backslash: clients that
/// honour CommonMark escapes show the character, and the few that do not still see a
/// backslash between `]` and `(`, which can never form a link.
const CARD_SPECIAL: &[char] = &[
    '\\', '*', '_', '[', ']', '(', ')', '<', '>', '`', '~', '#', '|', '{', '}', '&', '!',
];

/// Text for an Adaptive Card `TextBlock` or `FactSet` value: one line, no Markdown effect.
pub fn card_text(text: &str) -> String {
    let line = single_line(text);
    let mut out = String::with_capacity(line.len() + 8);
    let mut only_digits_so_far = true;
    for (index, ch) in line.chars().enumerate() {
        // A leading `-`, `+` or `1.` would start a list, a leading `=` underline a heading.
        let starts_block = (index == 0 && matches!(ch, '-' | '+' | '='))
            || (ch == '.' && index > 0 && only_digits_so_far);
        only_digits_so_far = only_digits_so_far && ch.is_ascii_digit();
        if CARD_SPECIAL.contains(&ch) || starts_block {
            out.push('\\');
        }
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
    fn card_text_defuses_links_emphasis_and_tags() {
        let escaped = card_text(HOSTILE);
        assert_eq!(escaped, r"kv\<script\>\*\_\[x\]\(http://evil\)");
        assert!(!escaped.contains("]("));
        assert!(!escaped.replace("\\<", "").contains('<'));
    }

    #[test]
    fn card_text_stays_on_one_line_and_starts_no_block() {
        assert_eq!(card_text("a\n\n- b\r\nc"), "a - b c");
        assert_eq!(card_text("- item"), r"\- item");
        assert_eq!(card_text("12. item"), r"12\. item");
        assert_eq!(card_text("kv1.vault.azure.net"), "kv1.vault.azure.net");
        assert_eq!(
            card_text("{{DATE(2020-01-01T00:00:00Z)}}"),
            r"\{\{DATE\(2020-01-01T00:00:00Z\)\}\}"
        );
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
