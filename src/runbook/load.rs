//! Reading a runbook file: bytes → text → YAML nodes → raw types → validated `Runbook`.
//! Nothing runs until the whole file is valid; every problem found is reported.

use std::path::Path;

use super::model::Runbook;
use super::raw::RawRunbook;
use super::validate::validate;
use super::yaml::{self, NodeValue, Pos, Span};
use crate::diagnostic::{Diagnostic, FieldPath};

/// Files larger than this are refused before parsing; a 10,000-step runbook is ~2 MiB.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

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
        let mut out = String::new();
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&d.render(&self.file, self.source.as_deref()));
        }
        out
    }
}

/// Loads and validates a runbook file.
pub fn load_file(path: &Path) -> Result<Runbook, Invalid> {
    let name = path.display().to_string();
    let file_error =
        |msg: String| Invalid::one(&name, None, Diagnostic::at(FieldPath::root(), msg));
    let meta = std::fs::metadata(path).map_err(|e| file_error(io_message(&name, &e)))?;
    if meta.is_dir() {
        return Err(file_error(format!(
            "`{name}` is a directory, not a runbook file"
        )));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(file_error(format!(
            "`{name}` is {} bytes; runbook files are limited to {} MiB",
            meta.len(),
            MAX_FILE_BYTES / 1024 / 1024
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| file_error(io_message(&name, &e)))?;
    load_bytes(&name, &bytes)
}

fn io_message(name: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => format!("cannot read `{name}`: no such file"),
        std::io::ErrorKind::PermissionDenied => format!("cannot read `{name}`: permission denied"),
        _ => format!("cannot read `{name}`: {e}"),
    }
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
        diagnostics.sort_by_key(|d| d.span.map(|s| (s.start.line, s.start.col)));
        fail(diagnostics)
    })
}
