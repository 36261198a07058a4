//! How a template inserts a value into code: in a `shell` command as one quoted shell
//! word, in `sql` as a quoted literal of the statement's database, elsewhere as it is.
//! `{{raw X}}` inserts text as it is everywhere; `{{ident X}}` quotes an SQL identifier.
//!
//! Quoting is done by handlebars' escape function, one registry per [`Mode`] (each a
//! strict `Text` registry of [`crate::template`] with its escaping replaced), on the
//! value with its secret references resolved: the command gets the secret's value, quoted.

use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, JsonRender, Output, RenderContext,
    RenderError, RenderErrorReason,
};

use super::mask::Masker;
use crate::sql::Engine;
pub use crate::sql::quote::{ident, literal, quoted_forms, shell_word};

/// What a field's text is, which decides how the values its templates insert are quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Text that no shell or database parses (`env` values, `cwd`, URLs, `with`, ...).
    Plain,
    /// A shell command: each value is one word.
    Shell,
    /// An SQL statement for this database: each value is a literal.
    Sql(Engine),
}

/// The template registries of a run, one per [`Mode`].
#[derive(Clone)]
pub struct Templates {
    plain: Handlebars<'static>,
    shell: Handlebars<'static>,
    postgres: Handlebars<'static>,
    sqlite: Handlebars<'static>,
}

impl Templates {
    /// Registries whose quoting sees the values of the run's secrets (`masker`).
    pub fn new(masker: &Masker) -> Self {
        let registry = |mode: Mode| {
            // Text mode, strict; shell and SQL quoting are its escaping replaced.
            let mut r = crate::template::registry(crate::template::Mode::Text, true);
            let m = masker.clone();
            match mode {
                // Resolved after rendering, with the whole text.
                Mode::Plain => {}
                Mode::Shell => r.register_escape_fn(move |s| shell_word(&m.resolve(s))),
                Mode::Sql(engine) => {
                    r.register_escape_fn(move |s| literal(engine, &m.resolve(s)));
                    r.register_helper(
                        "ident",
                        Box::new(Insert {
                            masker: masker.clone(),
                            quote: ident,
                        }),
                    );
                }
            }
            r.register_helper(
                "raw",
                Box::new(Insert {
                    masker: masker.clone(),
                    quote: str::to_owned,
                }),
            );
            r
        };
        Templates {
            plain: registry(Mode::Plain),
            shell: registry(Mode::Shell),
            postgres: registry(Mode::Sql(Engine::Postgres)),
            sqlite: registry(Mode::Sql(Engine::Sqlite)),
        }
    }

    pub fn get(&self, mode: Mode) -> &Handlebars<'static> {
        match mode {
            Mode::Plain => &self.plain,
            Mode::Shell => &self.shell,
            Mode::Sql(Engine::Postgres) => &self.postgres,
            Mode::Sql(Engine::Sqlite) => &self.sqlite,
        }
    }
}

/// `{{raw X}}` and `{{ident X}}`: the value of X, its secret references resolved, written
/// with `quote` instead of the registry's quoting. `{{{{raw}}}}...{{{{/raw}}}}` (a raw
/// block) still writes its text as written.
struct Insert {
    masker: Masker,
    quote: fn(&str) -> String,
}

impl HelperDef for Insert {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        if let Some(t) = h.template() {
            return handlebars::Renderable::render(t, r, ctx, rc, out);
        }
        let name = h.name();
        let [value] = h.params().as_slice() else {
            return Err(RenderErrorReason::Other(format!(
                "`{name}` takes one value, as in `{{{{{name} vars.NAME}}}}`"
            ))
            .into());
        };
        if value.is_value_missing() {
            return Err(RenderError::strict_error(value.relative_path()));
        }
        let text = self.masker.resolve(&value.value().render());
        out.write(&(self.quote)(&text))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_inserted_value_is_quoted_in_its_mode_and_raw_is_not() {
        let masker = Masker::new([("PW".to_owned(), "pa'ss".to_owned())]);
        let t = Templates::new(&masker);
        let ctx = serde_json::json!({ "v": "a b", "n": 5, "s": "{{secrets.PW}}", "t": "x\"y" });
        let render = |mode, text: &str| t.get(mode).render_template(text, &ctx).unwrap();
        assert_eq!(render(Mode::Shell, "echo {{v}} {{n}}"), "echo 'a b' '5'");
        assert_eq!(render(Mode::Shell, "echo {{s}}"), r"echo 'pa'\''ss'");
        assert_eq!(render(Mode::Shell, "ls {{raw v}}"), "ls a b");
        assert_eq!(
            render(
                Mode::Sql(Engine::Sqlite),
                "select * from {{ident t}} where x = {{s}}"
            ),
            r#"select * from "x""y" where x = 'pa''ss'"#
        );
        assert_eq!(render(Mode::Plain, "{{v}}/{{raw v}}"), "a b/a b");
        assert!(
            t.get(Mode::Shell)
                .render_template("{{raw nothing}}", &ctx)
                .is_err()
        );
    }
}
