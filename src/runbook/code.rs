//! Where a template stands in a `shell` command or an `sql` statement. A value is
//! inserted there quoted (one shell word, one SQL literal: see `crate::sql::quote`), which
//! keeps it a value only outside quotes, comments, here-documents and the like; the
//! loader refuses an expression anywhere else, and `{{{x}}}`, which would not quote.

use crate::sql::Engine;
use crate::sql::split::{Tok, tokens_for};

/// The language of a field whose templates insert quoted values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Shell,
    /// SQL for this database, if its URL says which without rendering.
    Sql(Option<Engine>),
}

/// An expression written where its value would not stay a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Misplaced {
    /// Byte range of the expression in the text.
    pub start: usize,
    pub end: usize,
    pub message: String,
    pub label: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// `{{x}}`, `{{lookup ...}}`: inserts a value, quoted.
    Value,
    /// `{{raw x}}`: inserts text as it is, wherever the author wants it.
    Raw,
    /// `{{{x}}}`: would insert a value unquoted.
    Triple,
    /// Blocks, `else`, comments: insert nothing themselves.
    Silent,
}

struct Expr {
    start: usize,
    end: usize,
    kind: Kind,
}

/// The expressions of a template, in order (an unclosed one ends the list: the
/// template's syntax error is reported on its own).
fn expressions(text: &str) -> Vec<Expr> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(k) = text[i..].find("{{") {
        let start = i + k;
        if start > 0 && text.as_bytes()[start - 1] == b'\\' {
            // `\{{` is text.
            i = start + 2;
            continue;
        }
        let rest = &text[start..];
        let (close, kind) = if rest.starts_with("{{{{") {
            ("}}}}", Kind::Silent)
        } else if rest.starts_with("{{!--") {
            ("--}}", Kind::Silent)
        } else if rest.starts_with("{{{") {
            ("}}}", Kind::Triple)
        } else {
            ("}}", Kind::Value)
        };
        let Some(e) = rest.find(close) else { break };
        let end = start + e + close.len();
        let kind = match kind {
            Kind::Value => {
                let inner =
                    text[start + 2..end - 2].trim_matches(|c: char| c == '~' || c.is_whitespace());
                let name = inner
                    .split(|c: char| c.is_whitespace() || c == '(')
                    .next()
                    .unwrap_or_default();
                if inner.starts_with(['#', '^', '/', '!', '>']) || name == "else" {
                    Kind::Silent
                } else if name == "raw" {
                    Kind::Raw
                } else {
                    Kind::Value
                }
            }
            k => k,
        };
        out.push(Expr { start, end, kind });
        i = end;
    }
    out
}

/// Every expression of `text` (a `code` field) that is written where it must not be.
pub fn misplaced(text: &str, code: Code) -> Vec<Misplaced> {
    let exprs = expressions(text);
    // The text with every expression as a word of `_`, so that the lexers see a value
    // where each stands and nothing of what is inside it.
    let mut masked = text.as_bytes().to_vec();
    for e in &exprs {
        masked[e.start..e.end].fill(b'_');
    }
    let masked = String::from_utf8(masked).expect("ASCII replaced whole characters");
    let starts: Vec<usize> = exprs.iter().map(|e| e.start).collect();
    let places = match code {
        Code::Shell => shell_places(&masked, &starts),
        Code::Sql(engine) => sql_places(&masked, &starts, engine),
    };
    let language = match code {
        Code::Shell => "a shell command",
        Code::Sql(_) => "SQL",
    };
    let mut out = Vec::new();
    for (e, place) in exprs.iter().zip(places) {
        let written = &text[e.start..e.end];
        let refused = match e.kind {
            Kind::Silent | Kind::Raw => None,
            Kind::Triple => {
                let inner = written.trim_matches(['{', '}']).trim();
                Some((
                    format!("`{written}` would insert its value unquoted in {language}"),
                    format!(
                        "write `{{{{{inner}}}}}` to insert it quoted, or `{{{{raw {inner}}}}}` for text as it is"
                    ),
                ))
            }
            Kind::Value => place.map(|p| p.explain(written)),
        };
        if let Some((message, label)) = refused {
            out.push(Misplaced {
                start: e.start,
                end: e.end,
                message,
                label,
            });
        }
    }
    out
}

/// Where in shell or SQL text an expression stands, when it is not plain code.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Place {
    ShellQuotes,
    Backquotes,
    HereDocument,
    ShellComment,
    SqlString,
    SqlIdentifier,
    DollarBody,
    SqlComment,
}

impl Place {
    fn explain(self, e: &str) -> (String, String) {
        let (message, label) = match self {
            Place::ShellQuotes => (
                format!(
                    "`{e}` is inside quotes in a shell command; the value it inserts is one quoted word already"
                ),
                "remove the quotes around it",
            ),
            Place::Backquotes => (
                format!(
                    "`{e}` is inside backquotes in a shell command, where its quoting does not hold"
                ),
                "write `$(...)` instead of backquotes",
            ),
            Place::HereDocument => (
                format!("`{e}` is in a here-document, where a value cannot be quoted"),
                "pass it in `env:` and write `$NAME`",
            ),
            Place::ShellComment => (
                format!("`{e}` is in a shell comment, which a line break in its value would end"),
                "remove it from the comment",
            ),
            Place::SqlString => (
                format!(
                    "`{e}` is inside a quoted string in SQL; the value it inserts is a quoted literal already"
                ),
                "remove the quotes around it (join text with `||`)",
            ),
            Place::SqlIdentifier => (
                format!("`{e}` is inside a quoted identifier in SQL"),
                "write `{{ident ...}}` without the quotes",
            ),
            Place::DollarBody => (
                format!("`{e}` is inside a dollar-quoted body in SQL, which its value could end"),
                "insert the value outside the body",
            ),
            Place::SqlComment => (
                format!("`{e}` is in an SQL comment, which a line break in its value would end"),
                "remove it from the comment",
            ),
        };
        (message, label.to_owned())
    }
}

/// Where each of `offsets` (in order) stands in SQL text, by the tokens migrations are
/// split with.
fn sql_places(sql: &str, offsets: &[usize], engine: Option<Engine>) -> Vec<Option<Place>> {
    let brackets = engine != Some(Engine::Postgres);
    let tokens = tokens_for(sql, brackets);
    offsets
        .iter()
        .map(|&offset| {
            let at = tokens.partition_point(|t| t.end <= offset);
            match tokens.get(at).filter(|t| t.start <= offset) {
                // Text outside every token, and not blank (it is the expression): a comment.
                None => Some(Place::SqlComment),
                Some(t) => match t.kind {
                    Tok::Quoted => Some(Place::SqlIdentifier),
                    Tok::Literal if t.text.starts_with('\'') => Some(Place::SqlString),
                    Tok::Literal if t.text.starts_with('$') => Some(Place::DollarBody),
                    _ => None,
                },
            }
        })
        .collect()
}

/// A level of shell syntax the lexer is in.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Frame {
    /// Commands: at the top, in `$(...)` (with its open parentheses), in `${...}`.
    Code {
        parens: usize,
        brace: bool,
    },
    Double,
    Backquote,
}

/// Where each of `offsets` (in order) stands in a shell command, by POSIX quoting:
/// single and double quotes, backslashes, `$(...)` (whose inside is code again, even
/// within double quotes), backquotes, `#` comments and here-documents. One pass.
fn shell_places(sh: &str, offsets: &[usize]) -> Vec<Option<Place>> {
    let b = sh.as_bytes();
    let mut places = vec![None; offsets.len()];
    let mut k = 0;
    let mut stack = vec![Frame::Code {
        parens: 0,
        brace: false,
    }];
    // Here-documents whose bodies start at the next line: (delimiter, tabs stripped).
    let mut pending: Vec<(String, bool)> = Vec::new();
    let mut i = 0;
    while i < b.len() && k < offsets.len() {
        let top = *stack.last().expect("the top frame stays");
        let c = b[i];
        let (place, next) = match top {
            Frame::Backquote => match c {
                b'\\' => (Some(Place::Backquotes), i + 2),
                b'`' => {
                    stack.pop();
                    (Some(Place::Backquotes), i + 1)
                }
                _ => (Some(Place::Backquotes), i + 1),
            },
            Frame::Double => match c {
                b'\\' => (Some(Place::ShellQuotes), i + 2),
                b'"' => {
                    stack.pop();
                    (Some(Place::ShellQuotes), i + 1)
                }
                b'`' => {
                    stack.push(Frame::Backquote);
                    (Some(Place::Backquotes), i + 1)
                }
                b'$' if b.get(i + 1) == Some(&b'(') => {
                    stack.push(Frame::Code {
                        parens: 0,
                        brace: false,
                    });
                    (None, i + 2)
                }
                _ => (Some(Place::ShellQuotes), i + 1),
            },
            Frame::Code { parens, brace } => {
                code_step(sh, i, parens, brace, &mut stack, &mut pending)
            }
        };
        while k < offsets.len() && offsets[k] < next {
            places[k] = place;
            k += 1;
        }
        i = next;
    }
    places
}

/// One character (or construct) of commands at `i`: where it stands, and where the next
/// one starts. Opens and closes the frames of quotes, `$(...)` and `${...}`, and notes
/// the here-documents whose bodies start at the next line.
fn code_step(
    sh: &str,
    i: usize,
    parens: usize,
    brace: bool,
    stack: &mut Vec<Frame>,
    pending: &mut Vec<(String, bool)>,
) -> (Option<Place>, usize) {
    let b = sh.as_bytes();
    let c = b[i];
    let word_start = |i: usize| i == 0 || b" \t\n;&|()<>".contains(&b[i - 1]);
    match c {
        b'\\' => (None, i + 2),
        b'\'' => {
            let close = sh[i + 1..].find('\'').map_or(b.len(), |k| i + 1 + k);
            (Some(Place::ShellQuotes), close + 1)
        }
        b'"' => {
            stack.push(Frame::Double);
            (None, i + 1)
        }
        b'`' => {
            stack.push(Frame::Backquote);
            (None, i + 1)
        }
        b'$' if b.get(i + 1) == Some(&b'(') => {
            stack.push(Frame::Code {
                parens: 0,
                brace: false,
            });
            (None, i + 2)
        }
        b'$' if b.get(i + 1) == Some(&b'{') => {
            stack.push(Frame::Code {
                parens: 0,
                brace: true,
            });
            (None, i + 2)
        }
        b'(' => {
            *stack.last_mut().expect("top") = Frame::Code {
                parens: parens + 1,
                brace,
            };
            (None, i + 1)
        }
        b')' if parens > 0 => {
            *stack.last_mut().expect("top") = Frame::Code {
                parens: parens - 1,
                brace,
            };
            (None, i + 1)
        }
        b')' if !brace && stack.len() > 1 => {
            stack.pop();
            (None, i + 1)
        }
        b'}' if brace => {
            stack.pop();
            (None, i + 1)
        }
        b'#' if word_start(i) => {
            let end = sh[i..].find('\n').map_or(b.len(), |k| i + k);
            (Some(Place::ShellComment), end)
        }
        b'<' if b.get(i + 1) == Some(&b'<') && b.get(i + 2) != Some(&b'<') => {
            let (delimiter, tabs, end) = here_document(sh, i + 2);
            if !delimiter.is_empty() {
                pending.push((delimiter, tabs));
            }
            (None, end)
        }
        b'\n' if !pending.is_empty() => {
            let mut at = i + 1;
            for (delimiter, tabs) in std::mem::take(pending) {
                at = body_end(sh, at, &delimiter, tabs);
            }
            (Some(Place::HereDocument), at)
        }
        _ => (None, i + 1),
    }
}

/// The delimiter of the here-document operator whose `<<` ends before `i` (quotes
/// removed), whether it strips tabs (`<<-`), and where the operator's word ends.
fn here_document(sh: &str, mut i: usize) -> (String, bool, usize) {
    let b = sh.as_bytes();
    let tabs = b.get(i) == Some(&b'-');
    if tabs {
        i += 1;
    }
    while i < b.len() && matches!(b[i], b' ' | b'\t') {
        i += 1;
    }
    let mut delimiter = String::new();
    while i < b.len() && !b" \t\n;&|()<>".contains(&b[i]) {
        match b[i] {
            q @ (b'\'' | b'"') => {
                let close = sh[i + 1..].find(q as char).map_or(b.len(), |k| i + 1 + k);
                delimiter.push_str(&sh[i + 1..close]);
                i = close + 1;
            }
            b'\\' => i += 1,
            _ => {
                let ch = sh[i..].chars().next().expect("in the text");
                delimiter.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    (delimiter, tabs, i.min(b.len()))
}

/// Where a here-document's body that starts at `at` ends: after its delimiter line.
fn body_end(sh: &str, mut at: usize, delimiter: &str, tabs: bool) -> usize {
    while at < sh.len() {
        let end = sh[at..].find('\n').map_or(sh.len(), |k| at + k);
        let line = &sh[at..end];
        let line = if tabs {
            line.trim_start_matches('\t')
        } else {
            line
        };
        at = (end + 1).min(sh.len());
        if line == delimiter {
            break;
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str, code: Code) -> Vec<&str> {
        misplaced(text, code)
            .into_iter()
            .map(|m| &text[m.start..m.end])
            .collect()
    }

    #[test]
    fn shell_values_stand_outside_quotes_comments_and_here_documents() {
        let sh = Code::Shell;
        assert!(refused("echo {{a}} >> {{b}}; case {{c}} in x) exit 1;; esac", sh).is_empty());
        assert!(refused("test \"$(cat {{a}}/v)\" = {{b}}", sh).is_empty());
        assert!(refused("echo ${X:-{{a}}} 'lit' \"lit\" {{#if a}}{{b}}{{/if}}", sh).is_empty());
        assert!(refused("echo '{{raw a}}' \"{{raw b}}\"", sh).is_empty());
        assert_eq!(
            refused("echo '{{a}}' \"x {{b}}\" {{c}}", sh),
            ["{{a}}", "{{b}}"]
        );
        assert_eq!(
            refused("echo `cat {{a}}` \"`{{b}}`\"", sh),
            ["{{a}}", "{{b}}"]
        );
        assert_eq!(refused("exit 3 # {{a}}\necho {{b}}", sh), ["{{a}}"]);
        assert_eq!(refused("echo a#{{a}}", sh), Vec::<&str>::new());
        assert_eq!(
            refused("cat <<EOF > f\nx {{a}}\nEOF\necho {{b}}", sh),
            ["{{a}}"]
        );
        assert_eq!(refused("cat <<-'E'\n\t{{a}}\n\tE\n{{b}}", sh), ["{{a}}"]);
        assert_eq!(refused("echo {{{a}}} \\'{{b}}", sh), ["{{{a}}}"]);
    }

    #[test]
    fn sql_values_stand_outside_strings_identifiers_bodies_and_comments() {
        let pg = Code::Sql(Some(Engine::Postgres));
        let lite = Code::Sql(Some(Engine::Sqlite));
        let q = "select * from {{ident t}} where n = {{a}} and x like {{b}} || '%'";
        assert!(refused(q, pg).is_empty());
        assert!(refused("select a[{{i}}] from t", pg).is_empty());
        assert_eq!(refused("select a[{{i}}] from t", lite), ["{{i}}"]);
        assert_eq!(
            refused(
                "select '{{a}}', \"{{b}}\", E'\\' {{c}}', {{d}} -- {{e}}",
                pg
            ),
            ["{{a}}", "{{b}}", "{{c}}", "{{e}}"]
        );
        assert_eq!(
            refused("do $$ begin {{a}} end $$; /* {{b}} */", pg),
            ["{{a}}", "{{b}}"]
        );
        assert_eq!(
            refused("select {{{a}}}, '{{raw b}}'", Code::Sql(None)),
            ["{{{a}}}"]
        );
    }
}
