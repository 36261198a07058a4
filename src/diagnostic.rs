//! Problems found in a runbook, and the one place they are rendered for people.

use std::fmt;

use crate::runbook::yaml::Span;

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
}

impl Diagnostic {
    /// A problem at a field path; the loader fills in the span.
    pub fn at(path: FieldPath, message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            path,
            span: None,
            label: None,
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
    /// line with carets, and the field path.
    pub fn render(&self, file: &str, source: Option<&str>) -> String {
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
            let last = src.lines().count();
            if last > 0 && span.start.line as usize > last {
                let text = src.lines().last().unwrap_or_default();
                let end = crate::runbook::yaml::Pos::new(last, text.chars().count());
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
        if let Some(text) = source.and_then(|s| s.lines().nth(line_no - 1)) {
            let (shown, caret_start, caret_len) = caret_line(text, span);
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

/// The source line with tabs shown as four spaces, and where the carets go on it.
fn caret_line(text: &str, span: Span) -> (String, usize, usize) {
    let text = text.trim_end_matches('\r');
    let mut shown = String::with_capacity(text.len());
    let mut display_col = Vec::with_capacity(text.len() + 1);
    for c in text.chars() {
        display_col.push(shown.chars().count());
        if c == '\t' {
            shown.push_str("    ");
        } else {
            shown.push(c);
        }
    }
    let width = shown.chars().count();
    display_col.push(width);
    let at = |col: u32| display_col.get(col as usize).copied().unwrap_or(width);
    let start = at(span.start.col);
    let end = if span.end.line == span.start.line && span.end.col > span.start.col {
        at(span.end.col)
    } else if span.end.line > span.start.line {
        width.max(start + 1)
    } else {
        start + 1
    };
    let len = end.saturating_sub(start).max(1);
    (shown, start, len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runbook::yaml::Pos;

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
            d.render("up.yaml", Some(src)),
            "error: step `migrate` requires unknown step `bakup`\n \
             --> up.yaml:3:16\n  |\n3 |     requires: [bakup]\n  |                ^^^^^ did you mean `backup`?\n  = field: steps[0].requires[0]\n"
        );
    }

    #[test]
    fn tabs_keep_carets_aligned() {
        let (shown, start, len) = caret_line(
            "\ta: b",
            Span {
                start: Pos::new(1, 1),
                end: Pos::new(1, 2),
            },
        );
        assert_eq!((shown.as_str(), start, len), ("    a: b", 4, 1));
    }
}
