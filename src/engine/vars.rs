//! `--var` overrides: applied to a loaded runbook before it is run, planned or scheduled.

use crate::runbook::Runbook;
use crate::suggest::did_you_mean;

/// Applies `--var` overrides; a name the runbook does not define is refused.
pub fn apply_vars(rb: &mut Runbook, vars: &[(String, String)]) -> Result<(), String> {
    for (k, v) in vars {
        if !rb.vars.contains_key(k) {
            let names: Vec<&str> = rb.vars.keys().map(String::as_str).collect();
            let hint = did_you_mean(k, &names)
                .map(|h| format!(": {h}"))
                .unwrap_or_else(|| {
                    if names.is_empty() {
                        " (it defines no `vars`)".into()
                    } else {
                        format!(" (it defines {})", names.join(", "))
                    }
                });
            return Err(format!(
                "--var {k}: runbook `{}` has no variable `{k}`{hint}",
                rb.id
            ));
        }
        rb.vars
            .insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    secret_in_public_var(rb, vars)
}

/// A `--var` that public text uses must not hold a secret's value (in any form the
/// masker knows): the status page would have to show `****` where customers read it.
fn secret_in_public_var(rb: &Runbook, vars: &[(String, String)]) -> Result<(), String> {
    use crate::engine::action::{Masker, secret_values};
    let secrets: Vec<(String, Masker)> = secret_values(&rb.secrets)
        .into_iter()
        .map(|(name, value)| (name.clone(), Masker::new([(name, value)])))
        .collect();
    if secrets.is_empty() {
        return Ok(());
    }
    let public = crate::engine::publish::public_vars(rb);
    for (k, v) in vars.iter().filter(|(k, _)| public.contains(k)) {
        if let Some((name, _)) = secrets.iter().find(|(_, m)| m.hides(v)) {
            return Err(format!(
                "--var {k}: the value holds the value of secret `{name}`, and `{{{{vars.{k}}}}}` is used in public text (the title, the summary, a step's title or an update) that customers read; nothing was started. Keep secrets out of public text: use `{{{{secrets.{name}}}}}` in the steps' commands instead"
            ));
        }
    }
    Ok(())
}
