//! What reaches the operator's terminal: text from runbooks, `--var`, step output and
//! errors may hold control characters (an ESC sequence can rewrite the screen, set the
//! window title, or hide a line). Everything printed goes through [`safe`].

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` is shown escaped: C0 controls other than newline and tab, DEL, and C1.
fn escaped(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') || matches!(c, '\u{2028}' | '\u{2029}')
}

/// `text` with every control character other than newline and tab written out as an
/// escape (`\u001b`, `\r`, `\u009b`), so that it prints as the characters it is.
pub fn safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if escaped(c) {
            push_escape(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The escape `c` is shown as, when it is one [`safe`] escapes; `None` otherwise.
pub fn escape_of(c: char) -> Option<String> {
    escaped(c).then(|| {
        let mut s = String::new();
        push_escape(&mut s, c);
        s
    })
}

/// `\r`, or `\u001b` and the like: the escapes JSON has, so that a JSON line printed
/// through [`safe`] is still JSON, and means the same.
fn push_escape(out: &mut String, c: char) {
    match c {
        '\r' => out.push_str("\\r"),
        c => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(safe("plain\ttext\n"), "plain\ttext\n");
        assert_eq!(
            safe("a\x1b]0;pwned\x07b\r\u{9b}31m\x7f"),
            "a\\u001b]0;pwned\\u0007b\\r\\u009b31m\\u007f"
        );
        // A JSON line stays JSON, with the same meaning.
        let json = serde_json::json!({ "t": "\u{1b}[2J\u{9b}\u{7f}" }).to_string();
        let back: serde_json::Value = serde_json::from_str(&safe(&json)).unwrap();
        assert_eq!(back["t"], "\u{1b}[2J\u{9b}\u{7f}");
        assert!(matches!(safe("é ok"), Cow::Borrowed(_)));
    }
}
