//! The one template renderer: how every handlebars registry of the program is set up, in
//! one of two explicit modes. `Text` inserts values as they are (public updates, titles,
//! the step fields whose quoting `engine::quote` lays on top); `Html` escapes every
//! inserted value for HTML (the status page). Which values a template refers to is
//! `runbook::template`'s business; this module only renders.

use std::sync::LazyLock;

use handlebars::{Handlebars, RenderError};
use serde::Serialize;

/// How a registry writes the values its templates insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As they are: escaping, if any, happens where the text is shown (HTML, XML,
    /// JSON), or is laid on by the caller (`engine::quote`'s shell and SQL quoting).
    Text,
    /// HTML-escaped (`{{ }}`; `{{{ }}}` writes a value as it is). Partials are not
    /// re-indented, so inserted text keeps its lines as written.
    Html,
}

/// A fresh registry for `mode`. `strict`: a template that refers to a value that does
/// not exist fails instead of rendering it blank.
pub fn registry(mode: Mode, strict: bool) -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(strict);
    match mode {
        Mode::Text => hb.register_escape_fn(handlebars::no_escape),
        Mode::Html => {
            hb.register_escape_fn(handlebars::html_escape);
            hb.set_prevent_indent(true);
        }
    }
    hb
}

/// A registry for `mode` with the program's own templates and partials, by name. They
/// are embedded in the binary, so one that does not compile is a bug caught by the
/// first test that renders anything: it panics, naming the template (under `dir`).
pub fn compiled(
    mode: Mode,
    strict: bool,
    dir: &str,
    partials: &[(&str, &str)],
    templates: &[(&str, &str)],
) -> Handlebars<'static> {
    let mut hb = registry(mode, strict);
    for (name, source) in partials {
        hb.register_partial(name, *source)
            .unwrap_or_else(|e| panic!("{dir}/{name}: {e}"));
    }
    for (name, source) in templates {
        hb.register_template_string(name, *source)
            .unwrap_or_else(|e| panic!("{dir}/{name}: {e}"));
    }
    hb
}

/// The registry for one-off text templates (a runbook's own), lenient: a missing value
/// renders blank.
static TEXT: LazyLock<Handlebars<'static>> = LazyLock::new(|| registry(Mode::Text, false));

/// Renders a one-off template in `Text` mode, lenient about missing values.
pub fn render_text(template: &str, ctx: &impl Serialize) -> Result<String, RenderError> {
    TEXT.render_template(template, ctx)
}

/// `text` escaped for HTML exactly as `Html` mode escapes an inserted value.
pub fn html_escape(text: &str) -> String {
    handlebars::html_escape(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_inserts_values_as_they_are_and_html_escapes_them() {
        let ctx = json!({ "v": "<a & 'b'>" });
        let text = registry(Mode::Text, true).render_template("{{v}}", &ctx);
        assert_eq!(text.unwrap(), "<a & 'b'>");
        let html = registry(Mode::Html, true).render_template("{{v}}|{{{v}}}", &ctx);
        assert_eq!(html.unwrap(), "&lt;a &amp; &#x27;b&#x27;&gt;|<a & 'b'>");
        assert_eq!(html_escape("<a & 'b'>"), "&lt;a &amp; &#x27;b&#x27;&gt;");
    }

    #[test]
    fn strictness_decides_whether_a_missing_value_fails() {
        let ctx = json!({});
        assert!(
            registry(Mode::Text, true)
                .render_template("{{x.y}}", &ctx)
                .is_err()
        );
        assert_eq!(render_text("[{{x.y}}]", &ctx).unwrap(), "[]");
    }

    #[test]
    fn compiled_registers_partials_and_templates_by_name() {
        let hb = compiled(
            Mode::Html,
            true,
            "t",
            &[("p", "<b>{{v}}</b>")],
            &[("page", "{{> p}}!")],
        );
        assert_eq!(
            hb.render("page", &json!({ "v": "&" })).unwrap(),
            "<b>&amp;</b>!"
        );
    }
}
