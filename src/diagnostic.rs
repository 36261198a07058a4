//! Problems found in a runbook, and the one place they are rendered for people.

use std::fmt;

/// A position in the source: 1-based line, 0-based column (in characters). Kept to 32
/// bits each: files are limited to 16 MiB, and every node carries two of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    /// A position from 1-based line and 0-based column.
    pub fn new(line: usize, col: usize) -> Pos {
        Pos {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            col: u32::try_from(col).unwrap_or(u32::MAX),
        }
    }
}

/// A source range; `end` is exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: Pos,
    pub end: Pos,
}

impl Span {
    /// A zero-width span at the start of this one.
    pub fn at_start(self) -> Span {
        Span {
            start: self.start,
            end: self.start,
        }
    }
}

/// One step of a field path: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Where in the document a problem is, as `steps[3].requires[0]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    /// The root of the document.
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// This path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_owned()));
        p
    }

    /// This path extended by a list index.
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    /// This path followed by another.
    pub fn join(&self, tail: &FieldPath) -> Self {
        let mut p = self.clone();
        p.0.extend(tail.0.iter().cloned());
        p
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A problem in a runbook file: what is wrong, in which field, and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub message: String,
    pub path: FieldPath,
    pub span: Option<Span>,
    /// Shown after the carets, e.g. "did you mean `backup`?".
    pub label: Option<String>,
    /// A problem in another file the runbook names (its inventory): that file's name
    /// and text, where `span` is.
    pub file: Option<std::sync::Arc<(String, String)>>,
}

impl Diagnostic {
    /// A problem at a field path; the loader fills in the span.
    pub fn at(path: FieldPath, message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            path,
            span: None,
            label: None,
            file: None,
        }
    }

    /// The same problem with a label after the carets.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// The same problem with an explicit position.
    pub fn with_span(mut self, span: Span) -> Self {
        self.span = Some(span);
        self
    }

    /// Renders the problem like a compiler does: message, `--> file:line:col`, the source
    /// line with carets, and the field path. A long line is shown clipped around the
    /// carets (at most [`SHOWN_WIDTH`] characters of it, `...` where it was cut).
    pub fn render(&self, file: &str, source: Option<&Source>) -> String {
        let mut out = format!("error: {}\n", self.message);
        let Some(mut span) = self.span else {
            out.push_str(&format!("  --> {file}\n"));
            if !self.path.0.is_empty() {
                out.push_str(&format!("   = field: {}\n", self.path));
            }
            return out;
        };
        // A position past the last line (the end of the file) is shown at the end of it.
        if let Some(src) = source {
            let last = src.starts.len();
            if last > 0 && span.start.line as usize > last {
                let end = Pos::new(last, src.last_line_chars());
                span = Span { start: end, end };
            }
        }
        let line_no = (span.start.line as usize).max(1);
        let gutter = " ".repeat(line_no.to_string().len());
        out.push_str(&format!(
            "{gutter}--> {file}:{}:{}\n",
            line_no,
            span.start.col + 1
        ));
        if let Some((shown, caret_start, caret_len)) = source.and_then(|s| s.caret_line(span)) {
            let w = gutter.len();
            out.push_str(&format!("{gutter} |\n{line_no:>w$} | {shown}\n"));
            let label = self
                .label
                .as_deref()
                .map(|l| format!(" {l}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "{gutter} | {}{}{label}\n",
                " ".repeat(caret_start),
                "^".repeat(caret_len)
            ));
        } else if let Some(label) = &self.label {
            out.push_str(&format!("{gutter} = {label}\n"));
        }
        if !self.path.0.is_empty() {
            out.push_str(&format!("{gutter} = field: {}\n", self.path));
        }
        out
    }
}

/// The most characters of a source line shown under a problem (plus `...` where cut).
pub const SHOWN_WIDTH: usize = 120;
/// Of those, how many at most after the start of the carets.
const SHOWN_AFTER: usize = 80;

/// A file's text with its lines found once, so that showing many problems, or one on a
/// line of a megabyte, takes time in proportion to the text, not to its square.
pub struct Source<'a> {
    text: &'a str,
    /// Where each line starts (as `str::lines` counts them).
    starts: Vec<usize>,
    /// The last place found: (line, column in characters, byte offset). Problems come in
    /// file order, so the next one on the same line is found from here.
    cursor: std::cell::Cell<(usize, usize, usize)>,
}

impl<'a> Source<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut starts = Vec::new();
        if !text.is_empty() {
            starts.push(0);
            starts.extend(
                text.bytes()
                    .enumerate()
                    .filter(|&(i, b)| b == b'\n' && i + 1 < text.len())
                    .map(|(i, _)| i + 1),
            );
        }
        Source {
            text,
            starts,
            cursor: std::cell::Cell::new((0, 0, 0)),
        }
    }

    /// Line `n` (1-based), without its line break.
    fn line(&self, n: usize) -> Option<&'a str> {
        let start = *self.starts.get(n.checked_sub(1)?)?;
        let end = self.starts.get(n).copied().unwrap_or(self.text.len());
        let line = &self.text[start..end];
        let line = line.strip_suffix('\n').unwrap_or(line);
        Some(line.strip_suffix('\r').unwrap_or(line))
    }

    fn last_line_chars(&self) -> usize {
        self.line(self.starts.len())
            .map_or(0, |l| l.chars().count())
    }

    /// The byte offset in line `n` (its text `line`) of character column `col`.
    fn offset(&self, n: usize, line: &str, col: usize) -> usize {
        let (cn, ccol, cbyte) = self.cursor.get();
        let (mut c, mut byte) = if cn == n && ccol <= col && cbyte <= line.len() {
            (ccol, cbyte)
        } else {
            (0, 0)
        };
        for ch in line[byte..].chars() {
            if c == col {
                break;
            }
            c += 1;
            byte += ch.len_utf8();
        }
        self.cursor.set((n, c, byte));
        byte
    }

    /// The line of `span` as shown (tabs as four spaces, control characters escaped,
    /// clipped around the carets when long), where the carets start on it and how many.
    fn caret_line(&self, span: Span) -> Option<(String, usize, usize)> {
        let n = (span.start.line as usize).max(1);
        let line = self.line(n)?;
        let start = self.offset(n, line, span.start.col as usize);
        let width = |s: &str| s.chars().map(cell_width).sum::<usize>();
        // After the caret: up to SHOWN_AFTER characters, fewer when the line ends sooner.
        let mut hi = start;
        let mut after = 0;
        for ch in line[start..].chars() {
            if after >= SHOWN_AFTER {
                break;
            }
            after += 1;
            hi += ch.len_utf8();
        }
        // Before it: what is left of SHOWN_WIDTH.
        let mut lo = start;
        let mut before = 0;
        for ch in line[..start].chars().rev() {
            if before + after >= SHOWN_WIDTH {
                break;
            }
            before += 1;
            lo -= ch.len_utf8();
        }
        // A line that began soon before the caret gives the rest to what follows it.
        for ch in line[hi..].chars() {
            if before + after >= SHOWN_WIDTH {
                break;
            }
            after += 1;
            hi += ch.len_utf8();
        }
        let cut_left = lo > 0;
        let cut_right = hi < line.len();
        let mut shown = String::new();
        if cut_left {
            shown.push_str("...");
        }
        for ch in line[lo..hi].chars() {
            push_cell(&mut shown, ch);
        }
        if cut_right {
            shown.push_str("...");
        }
        let caret_start = if cut_left { 3 } else { 0 } + width(&line[lo..start]);
        let shown_after = width(&line[start..hi]);
        let len = if span.end.line == span.start.line && span.end.col > span.start.col {
            let end_col = span.end.col as usize;
            // Within the shown part only: count the span's characters up to `hi`.
            let chars = end_col - span.start.col as usize;
            let end = line[start..hi]
                .char_indices()
                .nth(chars)
                .map_or(hi, |(i, _)| start + i);
            width(&line[start..end])
        } else if span.end.line > span.start.line {
            shown_after
        } else {
            1
        };
        Some((shown, caret_start, len.max(1)))
    }
}

/// How many characters `c` takes when shown.
fn cell_width(c: char) -> usize {
    match c {
        '\t' => 4,
        c => crate::terminal::escape_of(c).map_or(1, |e| e.chars().count()),
    }
}

fn push_cell(out: &mut String, c: char) {
    match c {
        '\t' => out.push_str("    "),
        c => match crate::terminal::escape_of(c) {
            Some(e) => out.push_str(&e),
            None => out.push(c),
        },
    }
}

/// An error with its causes on one line, `outer: inner: root` (a cause its outer error
/// already says is not repeated).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = s.source();
    }
    text.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::Pos;
    use super::*;

    #[test]
    fn renders_like_a_compiler() {
        let src = "steps:\n  - id: migrate\n    requires: [bakup]\n";
        let d = Diagnostic::at(
            FieldPath::root()
                .key("steps")
                .index(0)
                .key("requires")
                .index(0),
            "step `migrate` requires unknown step `bakup`",
        )
        .with_label("did you mean `backup`?")
        .with_span(Span {
            start: Pos::new(3, 15),
            end: Pos::new(3, 20),
        });
        assert_eq!(
            d.render("up.yaml", Some(&Source::new(src))),
            "error: step `migrate` requires unknown step `bakup`\n \
             --> up.yaml:3:16\n  |\n3 |     requires: [bakup]\n  |                ^^^^^ did you mean `backup`?\n  = field: steps[0].requires[0]\n"
        );
    }

    #[test]
    fn tabs_keep_carets_aligned() {
        let src = Source::new("\ta: b\n");
        let got = src.caret_line(Span {
            start: Pos::new(1, 1),
            end: Pos::new(1, 2),
        });
        assert_eq!(got, Some(("    a: b".to_owned(), 4, 1)));
    }

    #[test]
    fn a_long_line_is_clipped_around_the_carets() {
        let line = format!("{}XYZ{}", "a".repeat(100_000), "b".repeat(100_000));
        let src = Source::new(&line);
        let (shown, start, len) = src
            .caret_line(Span {
                start: Pos::new(1, 100_000),
                end: Pos::new(1, 100_003),
            })
            .unwrap();
        assert_eq!(shown.len(), 3 + SHOWN_WIDTH + 3);
        assert!(shown.starts_with("...aaa") && shown.ends_with("bbb..."));
        assert_eq!(&shown[start..start + len], "XYZ");
    }
}
