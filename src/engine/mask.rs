//! Hiding secrets in everything a run writes: its logs, its journal (and so the status
//! page, the feeds, the API and the reports), its errors and the terminal.
//!
//! A secret is hidden in the forms it commonly takes on its way out, not only as
//! written: in any letter case, URL-encoded, JSON-escaped, HTML-escaped and base64
//! (standard and URL-safe alphabets, at each of the three alignments, so that a secret
//! inside a longer base64 text is found too). A secret split by a line break is hidden as
//! well, each piece. Every form of every secret is found in one pass of one automaton
//! built once per run.

use std::ops::Range;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::Engine as _;
use serde_json::Value;

use super::event::Event;

/// What a hidden secret shows as.
pub const MASK: &str = "****";

/// The shortest base64 piece of a secret looked for: shorter ones would hide
/// unrelated text.
const MIN_BASE64: usize = 4;

/// Hides secret values: `****` in what people read, and `{{secrets.NAME}}` in step
/// outputs and variables, so that a later step's template gets the value back while the
/// journal never holds it.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// (name, value), longest value first.
    secrets: Vec<(String, String)>,
    /// Every form of every secret; `None` when there is no secret.
    finder: Option<Arc<Finder>>,
}

#[derive(Debug)]
struct Finder {
    automaton: AhoCorasick,
    /// The secret (index into `secrets`) each pattern is a form of.
    secret_of: Vec<usize>,
}

impl Masker {
    /// Masks these secrets, given as (name, value); empty values are ignored.
    pub fn new(secrets: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut secrets: Vec<(String, String)> =
            secrets.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        secrets.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        let mut patterns = Vec::new();
        let mut secret_of = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, (_, value)) in secrets.iter().enumerate() {
            for form in forms(value) {
                if seen.insert(form.to_ascii_lowercase()) {
                    patterns.push(form);
                    secret_of.push(i);
                }
            }
        }
        let finder = (!patterns.is_empty()).then(|| {
            let automaton = AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .expect("literal patterns always build");
            Arc::new(Finder {
                automaton,
                secret_of,
            })
        });
        Masker { secrets, finder }
    }

    /// Whether there is no secret to mask.
    pub fn is_empty(&self) -> bool {
        self.finder.is_none()
    }

    /// Whether the text holds a secret, in any of the forms masked.
    pub fn hides(&self, text: &str) -> bool {
        self.finder
            .as_ref()
            .is_some_and(|f| !f.hits(text).is_empty())
    }

    /// The text with secrets masked.
    pub fn mask(&self, text: &str) -> String {
        self.replace(text, false)
    }

    /// The text with each secret, as written, replaced by a reference to it,
    /// `{{secrets.NAME}}`; its other forms are masked.
    pub fn reference(&self, text: &str) -> String {
        self.replace(text, true)
    }

    /// A value (an output) with every string in it referenced instead of masked.
    pub fn reference_value(&self, value: Value) -> Value {
        self.map_strings(value, &|s| self.reference(s))
    }

    fn map_strings(&self, value: Value, f: &dyn Fn(&str) -> String) -> Value {
        if self.finder.is_none() {
            return value;
        }
        match value {
            Value::String(s) => Value::String(f(&s)),
            Value::Array(a) => a.into_iter().map(|v| self.map_strings(v, f)).collect(),
            Value::Object(o) => o
                .into_iter()
                .map(|(k, v)| (k, self.map_strings(v, f)))
                .collect(),
            other => other,
        }
    }

    /// An event as the journal may hold it: every text in it masked (references to
    /// secrets too), and step outputs and the run's variables referenced (a later
    /// template gets the value back).
    pub fn event(&self, event: Event) -> Event {
        if self.finder.is_none() {
            return event;
        }
        let Ok(Value::Object(fields)) = serde_json::to_value(&event) else {
            return event;
        };
        let fields = fields
            .into_iter()
            .map(|(k, v)| {
                let v = match k.as_str() {
                    "outputs" | "vars" => self.reference_value(v),
                    _ => self.mask_text(&k, v),
                };
                (k, v)
            })
            .collect();
        // Only texts changed: the event reads back (unless a secret is a word the
        // journal uses, such as `retry`, which is left alone).
        serde_json::from_value(Value::Object(fields)).unwrap_or(event)
    }

    /// The texts of an event's field `key`, masked (a text rendered from a reference, a
    /// variable's, too). Names the journal refers by (a step's id, the runbook, a kind,
    /// a status, the runbook file) are not texts: they stay as they are.
    fn mask_text(&self, key: &str, value: Value) -> Value {
        const NAMES: &[&str] = &[
            "type",
            "step",
            "id",
            "runbook",
            "kind",
            "status",
            "decision",
            "guard",
            "maintenance",
            "file",
            "file_sha256",
            "timezone",
        ];
        match value {
            _ if NAMES.contains(&key) => value,
            Value::String(s) => Value::String(self.mask(&self.resolve(&s))),
            Value::Array(a) => a.into_iter().map(|v| self.mask_text(key, v)).collect(),
            Value::Object(o) => o
                .into_iter()
                .map(|(k, v)| {
                    let v = self.mask_text(&k, v);
                    (k, v)
                })
                .collect(),
            other => other,
        }
    }

    /// Text rendered from templates with the references to secrets resolved again.
    pub fn resolve(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (name, value) in &self.secrets {
            let reference = format!("{{{{secrets.{name}}}}}");
            if out.contains(&reference) {
                out = out.replace(&reference, value);
            }
        }
        out
    }

    fn replace(&self, text: &str, reference: bool) -> String {
        let Some(finder) = &self.finder else {
            return text.to_owned();
        };
        let hits = finder.hits(text);
        if hits.is_empty() {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (range, secret) in hits {
            out.push_str(&text[at..range.start]);
            let (name, value) = &self.secrets[secret];
            if reference && &text[range.clone()] == value {
                out.push_str(&format!("{{{{secrets.{name}}}}}"));
            } else {
                out.push_str(MASK);
            }
            at = range.end;
        }
        out.push_str(&text[at..]);
        out
    }
}

impl Finder {
    /// Where secrets are in `text`, in order: (byte range, secret). A secret split by a
    /// line break gives one range per line it is on (the line breaks stay).
    fn hits(&self, text: &str) -> Vec<(Range<usize>, usize)> {
        let secret = |m: &aho_corasick::Match| self.secret_of[m.pattern().as_usize()];
        if !text.contains('\n') {
            return self
                .automaton
                .find_iter(text)
                .map(|m| (m.range(), secret(&m)))
                .collect();
        }
        // The lines joined, each line's start there and in `text`.
        let mut joined = String::with_capacity(text.len());
        let mut lines: Vec<(usize, usize)> = Vec::new();
        let mut start = 0;
        for line in text.split('\n') {
            lines.push((joined.len(), start));
            joined.push_str(line.strip_suffix('\r').unwrap_or(line));
            start += line.len() + 1;
        }
        let mut hits = Vec::new();
        for m in self.automaton.find_iter(&joined) {
            let first = lines.partition_point(|&(j, _)| j <= m.start()) - 1;
            for k in first..lines.len() {
                let (j, t) = lines[k];
                let end = lines.get(k + 1).map_or(joined.len(), |l| l.0);
                let (s, e) = (m.start().max(j), m.end().min(end));
                if s < e {
                    hits.push((t + s - j..t + e - j, secret(&m)));
                }
                if end >= m.end() {
                    break;
                }
            }
        }
        hits
    }
}

/// The forms of a secret that are looked for (letter case aside: matching ignores it).
fn forms(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_owned(), value.to_lowercase(), value.to_uppercase()];
    // URL-encoded: only unreserved characters kept, as `encodeURIComponent` does, as a
    // form does (`+` for a space), and as a path does.
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    forms.push(percent(value, unreserved, false));
    forms.push(percent(value, unreserved, true));
    forms.push(percent(
        value,
        |b| unreserved(b) || matches!(b, b'!' | b'*' | b'\'' | b'(' | b')'),
        false,
    ));
    forms.push(percent(
        value,
        |b| unreserved(b) || b"!$&'()*+,;=:@/".contains(&b),
        false,
    ));
    // JSON-escaped, with and without non-ASCII as `\uXXXX` and `/` as `\/`.
    let json = serde_json::to_string(value).expect("a string serializes");
    let json = json[1..json.len() - 1].to_owned();
    let mut ascii = String::new();
    for c in json.chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else {
            for unit in c.encode_utf16(&mut [0; 2]) {
                ascii.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    forms.push(json.replace('/', "\\/"));
    forms.push(json);
    forms.push(ascii);
    // As the template renderer's HTML mode writes it.
    forms.push(crate::template::html_escape(value));
    // Base64: the characters that depend on the secret's bytes alone, at each of the
    // three places it may start in a longer text.
    let bytes = value.as_bytes();
    for engine in [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        for lead in 0..3 {
            let mut input = vec![0u8; lead];
            input.extend_from_slice(bytes);
            let encoded = engine.encode(&input);
            let (from, to) = ((8 * lead).div_ceil(6), 8 * (lead + bytes.len()) / 6);
            if to >= from + MIN_BASE64 {
                forms.push(encoded[from..to].to_owned());
            }
        }
    }
    // As a shell word or an SQL literal writes it (a secret holding a quote or a
    // backslash, in a command that failed).
    forms.extend(crate::sql::quote::quoted_forms(value));
    forms.retain(|f| !f.is_empty());
    forms
}

/// `value` percent-encoded, every byte but those `keep` says encoded (`+` for a space
/// when `plus`).
fn percent(value: &str, keep: impl Fn(u8) -> bool, plus: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if keep(b) {
            out.push(b as char);
        } else if plus && b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "zx9q-Hunter2/s3cr3t value";

    fn masker() -> Masker {
        Masker::new([("TOKEN".to_owned(), SECRET.to_owned())])
    }

    #[test]
    fn every_form_is_masked() {
        let m = masker();
        let b64 = |lead: &str| {
            base64::engine::general_purpose::STANDARD.encode(format!("{lead}{SECRET} and more"))
        };
        let url = base64::engine::general_purpose::URL_SAFE.encode(format!("x{SECRET}"));
        for text in [
            SECRET.to_owned(),
            SECRET.to_uppercase(),
            SECRET.to_lowercase(),
            "zx9q-Hunter2%2Fs3cr3t%20value".to_owned(),
            "zx9q-hunter2%2fs3cr3t+value".to_owned(),
            "zx9q-Hunter2/s3cr3t%20value".to_owned(),
            "zx9q-Hunter2\\/s3cr3t value".to_owned(),
            b64(""),
            b64("a"),
            b64("ab"),
            url,
        ] {
            let masked = m.mask(&format!("before {text} after"));
            assert!(masked.contains(MASK), "{text}: {masked}");
            assert!(!masked.contains("s3cr3t"), "{text}: {masked}");
            assert!(masked.starts_with("before ") && masked.ends_with(" after"));
        }
        assert_eq!(m.mask("nothing here"), "nothing here");
    }

    #[test]
    fn a_secret_split_by_a_line_break_is_masked_in_each_piece() {
        let m = masker();
        let (a, b) = SECRET.split_at(9);
        assert_eq!(m.mask(&format!("x {a}\n{b} y")), "x ****\n**** y");
        assert_eq!(m.mask(&format!("x {a}\r\n{b} y")), "x ****\r\n**** y");
        assert_eq!(m.mask("a\n\nb"), "a\n\nb");
    }

    #[test]
    fn only_the_value_as_written_becomes_a_reference() {
        let m = masker();
        let text = format!("{SECRET} {}", SECRET.to_uppercase());
        assert_eq!(m.reference(&text), "{{secrets.TOKEN}} ****");
        assert_eq!(m.resolve(&m.reference(SECRET)), SECRET);
    }

    #[test]
    fn every_text_of_an_event_is_masked_and_variables_referenced() {
        let m = masker();
        let started = Event::RunStarted {
            runbook: "r".into(),
            title: format!("Deploy {}", SECRET.to_uppercase()),
            file: "r.yaml".into(),
            file_sha256: String::new(),
            vars: [("v".to_owned(), Value::String(format!("a {SECRET}")))].into(),
            operator: "ops".into(),
            host: "h".into(),
            pid: 1,
            window_start_ms: None,
            guard: None,
            rehearsal: false,
            public: Some(Box::new(crate::engine::event::PublicPlan {
                summary: Some(format!("For {SECRET}")),
                ..Default::default()
            })),
            limit: Vec::new(),
        };
        let Event::RunStarted {
            title,
            vars,
            public,
            ..
        } = m.event(started)
        else {
            panic!("the same kind of event");
        };
        assert_eq!(title, "Deploy ****");
        assert_eq!(vars["v"], "a {{secrets.TOKEN}}");
        assert_eq!(public.unwrap().summary.unwrap(), "For ****");
        // What the journal refers by is not text.
        let step = Event::StepFailed {
            step: format!("s-{SECRET}"),
            attempt: 1,
            error: format!("bad {SECRET}"),
        };
        assert_eq!(
            m.event(step),
            Event::StepFailed {
                step: format!("s-{SECRET}"),
                attempt: 1,
                error: "bad ****".into(),
            }
        );
        let update = Event::RunFailed {
            reason: "rendered from {{secrets.TOKEN}}".into(),
        };
        assert_eq!(
            m.event(update),
            Event::RunFailed {
                reason: "rendered from ****".into()
            }
        );
    }

    #[test]
    fn a_secret_that_holds_another_is_masked_whole() {
        let m = Masker::new([
            ("A".to_owned(), "abcdef".to_owned()),
            ("B".to_owned(), "abcdef123456".to_owned()),
        ]);
        assert_eq!(
            m.reference("x abcdef123456 abcdef"),
            "x {{secrets.B}} {{secrets.A}}"
        );
    }
}
