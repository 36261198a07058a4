//! The status page section: its components, which kinds of update it replaces, and the
//! overrun cadence (how late a step is announced, and how often).

use super::*;

/// The status page as the model holds it, every problem of it reported.
pub(super) fn status_page(cx: &mut Ctx, sp: RawStatusPage) -> StatusPage {
    let top = FieldPath::root();
    let mut seen = HashSet::new();
    for (i, c) in sp.components.iter().enumerate() {
        let path = top.key("status_page").key("components").index(i);
        if c.trim().is_empty() {
            cx.error(path, "a component name is empty");
        } else if !seen.insert(c.as_str()) {
            cx.error(path, format!("component `{c}` is listed twice"));
        }
    }
    for key in sp.updates.keys() {
        if !UPDATE_KINDS.contains(&key.as_str()) {
            cx.error(
                top.key("status_page").key("updates").key(key),
                format!("unknown kind of update `{key}`"),
            );
            cx.diags.last_mut().expect("pushed").label = did_you_mean(key, UPDATE_KINDS)
                .or_else(|| Some(format!("known: {}", UPDATE_KINDS.join(", "))));
        }
    }
    let mut overrun_after = Margin::default();
    let mut overrun_every = OVERRUN_EVERY;
    if let Some(o) = &sp.overrun {
        let path = top.key("status_page").key("overrun");
        if let Some(after) = &o.after {
            let t = after.trim();
            let neither =
                || format!("`{after}` is neither a duration (`5m`) nor a percentage (`20%`)");
            let parsed = match t.strip_suffix('%') {
                Some(p) => p
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|p| p.is_finite() && *p >= 0.0)
                    .map(Margin::Percent)
                    .ok_or_else(neither),
                // A duration over the limit is told as that.
                None => crate::duration::parse_duration(t)
                    .map(Margin::Fixed)
                    .map_err(|e| if e.contains("too long") { e } else { neither() }),
            };
            match parsed {
                Ok(m) => overrun_after = m,
                Err(e) => {
                    cx.error(path.key("after"), e);
                }
            }
        }
        if let Some(every) = &o.every {
            if every.0.is_zero() {
                cx.error(path.key("every"), "`every` must be more than zero");
            } else {
                overrun_every = every.0;
            }
        }
    }
    StatusPage {
        overrun_after,
        overrun_every,
        updates: sp.updates,
        components: sp.components,
        announce_before: sp.announce_before.map(|d| d.0),
    }
}
