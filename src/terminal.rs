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
/// escape (`\x1b`, `\r`, `\u{9b}`), so that it prints as the characters it is.
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

fn push_escape(out: &mut String, c: char) {
    match c {
        '\r' => out.push_str("\\r"),
        c if (c as u32) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
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
            "a\\x1b]0;pwned\\x07b\\r\\u{9b}31m\\x7f"
        );
        assert!(matches!(safe("é ok"), Cow::Borrowed(_)));
    }
}
