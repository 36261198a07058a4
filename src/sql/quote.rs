//! Quoting text for the languages a template inserts values into: one POSIX shell word,
//! an SQL string literal of either database, an SQL identifier; and the forms quoting
//! writes a value in, which a masker must hide too.

use super::url::Engine;

/// `text` as one POSIX shell word: in single quotes, each `'` written `'\''`.
pub fn shell_word(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// `text` as an SQL string literal, by PostgreSQL's `quote_literal` rules (quotes doubled;
/// with a backslash, `E'...'` with backslashes doubled) or SQLite's (quotes doubled).
pub fn literal(engine: Engine, text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if engine == Engine::Postgres && text.contains('\\') {
        format!("E'{}'", quoted.replace('\\', r"\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// `name` as an SQL identifier: in double quotes, each `"` doubled (both databases).
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The forms other than itself in which quoting may write `value` inside its quotes (the
/// shell's `'\''`, SQL's `''`, PostgreSQL's `\\`). A secret's value differs from them only
/// when it holds a quote or a backslash; a masker must mask them too, since a command or
/// statement shown in an error is the quoted text.
pub fn quoted_forms(value: &str) -> Vec<String> {
    let mut forms = vec![
        value.replace('\'', r"'\''"),
        value.replace('\'', "''"),
        value.replace('\'', "''").replace('\\', r"\\"),
    ];
    forms.retain(|f| f != value);
    forms.dedup();
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_by_the_rules_of_each_language() {
        assert_eq!(shell_word("a"), "'a'");
        assert_eq!(
            shell_word("'; touch X; echo '"),
            r"''\''; touch X; echo '\'''"
        );
        assert_eq!(shell_word(""), "''");
        assert_eq!(literal(Engine::Sqlite, "x'; drop"), "'x''; drop'");
        assert_eq!(literal(Engine::Sqlite, r"a\b"), r"'a\b'");
        assert_eq!(literal(Engine::Postgres, "it's"), "'it''s'");
        assert_eq!(literal(Engine::Postgres, r"a\'b"), r"E'a\\''b'");
        assert_eq!(ident(r#"my "t""#), r#""my ""t""""#);
    }

    #[test]
    fn the_quoted_forms_of_a_value_are_what_quoting_writes_inside_its_quotes() {
        assert!(quoted_forms("plain").is_empty());
        assert_eq!(quoted_forms(r"it's\"), [r"it'\''s\", r"it''s\", r"it''s\\"]);
        for v in ["it's", r"a\b", r"x\'y"] {
            for text in [
                shell_word(v),
                literal(Engine::Postgres, v),
                literal(Engine::Sqlite, v),
            ] {
                let inner = text.strip_prefix('E').unwrap_or(&text);
                let inner = &inner[1..inner.len() - 1];
                assert!(
                    inner == v || quoted_forms(v).iter().any(|f| f == inner),
                    "{text}"
                );
            }
        }
    }
}
