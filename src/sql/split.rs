//! The SQL scanner: tokens outside comments, and the statements of a file split at `;`
//! outside quotes, comments, dollar-quoted bodies and the `BEGIN ... END` blocks of
//! `CREATE` statements. `migrate` splits files with it; the runbook loader finds the
//! places of templates in SQL with its tokens (`runbook::code`).

/// What the scanner sees in SQL text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tok {
    /// A keyword or identifier.
    Word,
    /// `"quoted identifier"`.
    Quoted,
    /// A string, a dollar-quoted body, a number: text that is not a word.
    Literal,
    Semicolon,
    /// Any other character.
    Punct,
}

#[derive(Debug, Clone)]
pub struct Token {
    pub kind: Tok,
    pub text: String,
    pub start: usize,
    pub end: usize,
}

/// The tokens of SQL text, without comments.
fn tokens(sql: &str) -> Vec<Token> {
    tokens_for(sql, true)
}

/// The tokens of SQL text, without comments; `[...]` is a quoted identifier when
/// `brackets` (SQLite), an operator otherwise (PostgreSQL's subscripts).
pub fn tokens_for(sql: &str, brackets: bool) -> Vec<Token> {
    let b = sql.as_bytes();
    let n = b.len();
    let mut out = Vec::new();
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
    while i < n {
        let c = b[i];
        let start = i;
        let kind = match c {
            _ if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < n && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < n {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                continue;
            }
            b'\'' | b'"' | b'`' => {
                // PostgreSQL's E'...' has backslash escapes (`E'it\'s'`).
                let escapes = c == b'\''
                    && i > 0
                    && matches!(b[i - 1], b'E' | b'e')
                    && (i < 2 || !ident(b[i - 2]));
                i += 1;
                while i < n && b[i] != c {
                    i += if escapes && b[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(n);
                if c == b'\'' {
                    Tok::Literal
                } else {
                    Tok::Quoted
                }
            }
            b'[' if brackets => {
                // SQLite's [quoted identifier].
                while i < n && b[i] != b']' {
                    i += 1;
                }
                i = (i + 1).min(n);
                Tok::Quoted
            }
            b'$' => {
                // `$tag$ ... $tag$` (tag empty or an identifier not starting with a digit).
                let mut j = i + 1;
                while j < n && ident(b[j]) && !(j == i + 1 && b[j].is_ascii_digit()) {
                    j += 1;
                }
                if j < n && b[j] == b'$' {
                    let tag = &sql[i..=j];
                    match sql[j + 1..].find(tag) {
                        Some(k) => i = j + 1 + k + tag.len(),
                        None => i = n,
                    }
                    Tok::Literal
                } else {
                    i += 1;
                    while i < n && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    Tok::Punct
                }
            }
            b';' => {
                i += 1;
                Tok::Semicolon
            }
            _ if c.is_ascii_digit() => {
                while i < n && (ident(b[i]) || b[i] == b'.') {
                    i += 1;
                }
                Tok::Literal
            }
            _ if ident(c) => {
                while i < n && (ident(b[i]) || b[i] == b'$') {
                    i += 1;
                }
                Tok::Word
            }
            _ => {
                i += 1;
                while i < n && !sql.is_char_boundary(i) {
                    i += 1;
                }
                Tok::Punct
            }
        };
        out.push(Token {
            kind,
            text: sql[start..i].to_owned(),
            start,
            end: i,
        });
    }
    out
}

/// One statement of a file.
#[derive(Debug, Clone)]
pub struct Statement {
    pub text: String,
    pub words: Vec<Token>,
}

impl Statement {
    fn word(&self, i: usize) -> Option<String> {
        self.words
            .get(i)
            .filter(|t| t.kind == Tok::Word)
            .map(|t| t.text.to_ascii_uppercase())
    }

    /// `BEGIN`, `COMMIT`, `ROLLBACK`, `END`, `ABORT`, `START TRANSACTION`.
    pub fn controls_transaction(&self) -> bool {
        match self.word(0).as_deref() {
            Some("BEGIN" | "COMMIT" | "ROLLBACK" | "END" | "ABORT") => true,
            Some("START") => self.word(1).as_deref() == Some("TRANSACTION"),
            _ => false,
        }
    }

    /// The index a `CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] name ON ...`
    /// creates, as written (`public.idx`, `"Idx"`).
    pub fn concurrent_index(&self) -> Option<String> {
        let mut i = 0;
        let expect = |w: &str, optional: bool, i: &mut usize| {
            let found = self.word(*i).as_deref() == Some(w);
            if found {
                *i += 1;
            }
            found || optional
        };
        if !(expect("CREATE", false, &mut i)
            && expect("UNIQUE", true, &mut i)
            && expect("INDEX", false, &mut i)
            && expect("CONCURRENTLY", false, &mut i))
        {
            return None;
        }
        if self.word(i).as_deref() == Some("IF") {
            i += 3;
        }
        let mut name = String::new();
        for t in &self.words[i.min(self.words.len())..] {
            if t.kind == Tok::Word && t.text.eq_ignore_ascii_case("ON") {
                break;
            }
            name.push_str(&t.text);
        }
        (!name.is_empty()).then_some(name)
    }
}

/// The statements of a file: split at `;` outside quotes, comments, dollar-quoted
/// bodies and the `BEGIN ... END` (and `CASE ... END`) blocks of a `CREATE` statement.
/// Pieces with nothing but comments are left out.
pub fn split_statements(sql: &str) -> Vec<Statement> {
    let mut out = Vec::new();
    let mut words: Vec<Token> = Vec::new();
    let mut depth = 0usize;
    let finish = |words: &mut Vec<Token>, end: usize, out: &mut Vec<Statement>| {
        if let Some(first) = words.first() {
            out.push(Statement {
                text: sql[first.start..end].trim_end().to_owned(),
                words: std::mem::take(words),
            });
        }
    };
    for t in tokens(sql) {
        if t.kind == Tok::Semicolon && depth == 0 {
            finish(&mut words, t.start, &mut out);
            continue;
        }
        let creates = words
            .first()
            .is_some_and(|w| w.kind == Tok::Word && w.text.eq_ignore_ascii_case("CREATE"));
        if creates && t.kind == Tok::Word {
            let w = t.text.to_ascii_uppercase();
            if w == "BEGIN" || w == "CASE" {
                depth += 1;
            } else if w == "END" {
                depth = depth.saturating_sub(1);
            }
        }
        words.push(t);
    }
    let end = words.last().map_or(0, |t| t.end);
    finish(&mut words, end, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<String> {
        split_statements(sql).into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn splits_statements_outside_quotes_comments_and_bodies() {
        let sql = "-- a comment; not a statement\n\
                   CREATE TABLE t (a text DEFAULT ';');\n\
                   /* block; /* nested; */ still */\n\
                   CREATE FUNCTION f() RETURNS int AS $fn$ BEGIN RETURN 1; END $fn$ LANGUAGE plpgsql;\n\
                   INSERT INTO \"we;ird\" VALUES ($$x;y$$, 'it''s; fine');\n\
                   CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET a = CASE WHEN a = 'x' THEN 'y' ELSE a END; END;\n\
                   SELECT 1";
        let got = texts(sql);
        assert_eq!(got.len(), 5, "{got:#?}");
        assert_eq!(got[0], "CREATE TABLE t (a text DEFAULT ';')");
        assert!(got[1].starts_with("CREATE FUNCTION") && got[1].ends_with("plpgsql"));
        assert_eq!(
            got[2],
            "INSERT INTO \"we;ird\" VALUES ($$x;y$$, 'it''s; fine')"
        );
        assert!(got[3].starts_with("CREATE TRIGGER") && got[3].ends_with("END"));
        assert_eq!(got[4], "SELECT 1");
        assert!(texts("-- only a comment\n;\n").is_empty());
    }

    #[test]
    fn finds_transaction_control_and_concurrent_indexes() {
        let s = split_statements(
            "begin; create unique index concurrently if not exists public.\"Idx\" on t (a);\n\
             CREATE INDEX CONCURRENTLY ON t (b); CREATE INDEX plain ON t (c); start transaction; commit",
        );
        assert!(s[0].controls_transaction());
        assert_eq!(s[1].concurrent_index().as_deref(), Some("public.\"Idx\""));
        assert_eq!(s[2].concurrent_index(), None);
        assert_eq!(s[3].concurrent_index(), None);
        assert!(!s[1].controls_transaction());
        assert!(s[4].controls_transaction() && s[5].controls_transaction());
    }
}
