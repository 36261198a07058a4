//! Reading a runbook file: bytes → text → YAML nodes → raw types → validated `Runbook`.
//! Nothing runs until the whole file is valid; every problem found is reported.

use std::path::Path;

use super::model::Runbook;
use super::raw::RawRunbook;
use super::validate::validate;
use super::yaml::{self, NodeValue, Pos, Span};
use crate::diagnostic::{Diagnostic, FieldPath, Source};

/// Files larger than this are refused before parsing; a 10,000-step runbook is ~2 MiB.
pub use crate::input::MAX_FILE_BYTES;

/// A runbook file that could not be loaded, with everything needed to show why.
#[derive(Debug)]
pub struct Invalid {
    /// The file as the user named it.
    pub file: String,
    /// Its text, when it could be read, for source lines under each problem.
    pub source: Option<String>,
    /// Every problem, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Invalid {
    fn one(file: &str, source: Option<String>, d: Diagnostic) -> Self {
        Invalid {
            file: file.to_owned(),
            source,
            diagnostics: vec![d],
        }
    }

    /// All problems rendered for a terminal.
    pub fn render(&self) -> String {
        let source = self.source.as_deref().map(Source::new);
        let mut out = String::new();
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            match &d.file {
                Some(other) => out.push_str(&d.render(&other.0, Some(&Source::new(&other.1)))),
                None => out.push_str(&d.render(&self.file, source.as_ref())),
            }
        }
        out
    }
}

/// Loads and validates a runbook file (a regular file of at most [`MAX_FILE_BYTES`]).
pub fn load_file(path: &Path) -> Result<Runbook, Invalid> {
    let name = path.display().to_string();
    let bytes = crate::input::read_limited(path)
        .map_err(|msg| Invalid::one(&name, None, Diagnostic::at(FieldPath::root(), msg)))?;
    load_bytes(&name, &bytes)
}

/// Loads a runbook from bytes that should be UTF-8 YAML.
pub fn load_bytes(name: &str, bytes: &[u8]) -> Result<Runbook, Invalid> {
    match std::str::from_utf8(bytes) {
        Ok(text) => load_str(name, text),
        Err(e) => {
            let good = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            let line = good.matches('\n').count() + 1;
            let col = good.rsplit('\n').next().unwrap_or("").chars().count();
            let pos = Pos::new(line, col);
            let text = String::from_utf8_lossy(bytes).into_owned();
            let d = Diagnostic::at(
                FieldPath::root(),
                format!(
                    "the file is not valid UTF-8 (byte 0x{:02x})",
                    bytes[e.valid_up_to()]
                ),
            )
            .with_span(Span {
                start: pos,
                end: pos,
            });
            Err(Invalid::one(name, Some(text), d))
        }
    }
}

/// Loads a runbook from YAML text.
pub fn load_str(name: &str, text: &str) -> Result<Runbook, Invalid> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let fail = |diagnostics: Vec<Diagnostic>| Invalid {
        file: name.to_owned(),
        source: Some(text.to_owned()),
        diagnostics,
    };
    let root = yaml::parse(text).map_err(|e| {
        fail(vec![
            Diagnostic::at(FieldPath::root(), e.message).with_span(e.span),
        ])
    })?;
    if !matches!(root.value, NodeValue::Map(_)) {
        let d = Diagnostic::at(
            FieldPath::root(),
            "a runbook is a mapping of fields (`runbook:`, `title:`, `steps:` ...)",
        )
        .with_span(root.span);
        return Err(fail(vec![d]));
    }
    let raw = RawRunbook::from_node(&root);
    validate(raw, &root).map_err(|mut diagnostics| {
        diagnostics.sort_by_key(|d| {
            (
                d.file.is_some(),
                d.span.map(|s| (s.start.line, s.start.col)),
            )
        });
        fail(diagnostics)
    })
}
