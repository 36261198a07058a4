//! Public updates: what the run tells customers, written by the templates in
//! `templates/updates/` (or the runbook's and step's own), recorded in the journal in the
//! same commit as the transition they announce.

use std::sync::LazyLock;

use chrono::DateTime;
use handlebars::Handlebars;

use crate::template::{self, Mode};
use serde_json::{Value, json};

use crate::engine::event::{Event, PublicPlan, PublicStep, PublicUpdate};
use crate::engine::state::{RunState, RunStatus, StepStatus};
use crate::engine::timing::{Learned, eta_ms};
use crate::runbook::{Kind, OnTimeout, Public, Runbook, Step};

/// The default templates, by kind.
const DEFAULTS: &[(&str, &str)] = &[
    (
        "scheduled",
        include_str!("../../templates/updates/scheduled.hbs"),
    ),
    (
        "in_progress",
        include_str!("../../templates/updates/in_progress.hbs"),
    ),
    (
        "step_started",
        include_str!("../../templates/updates/step_started.hbs"),
    ),
    (
        "overrun",
        include_str!("../../templates/updates/overrun.hbs"),
    ),
    (
        "verifying",
        include_str!("../../templates/updates/verifying.hbs"),
    ),
    ("no_go", include_str!("../../templates/updates/no_go.hbs")),
    (
        "stopped_before_changes",
        include_str!("../../templates/updates/stopped_before_changes.hbs"),
    ),
    (
        "rolling_back",
        include_str!("../../templates/updates/rolling_back.hbs"),
    ),
    (
        "completed",
        include_str!("../../templates/updates/completed.hbs"),
    ),
    (
        "rolled_back",
        include_str!("../../templates/updates/rolled_back.hbs"),
    ),
    ("failed", include_str!("../../templates/updates/failed.hbs")),
    (
        "aborted",
        include_str!("../../templates/updates/aborted.hbs"),
    ),
];

/// Public updates are plain text: escaping happens where they are shown (HTML, XML,
/// JSON), never here.
static DEFAULT_TEMPLATES: LazyLock<Handlebars<'static>> = LazyLock::new(|| {
    let trimmed: Vec<(&str, &str)> = DEFAULTS.iter().map(|(k, t)| (*k, t.trim_end())).collect();
    template::compiled(Mode::Text, false, "templates/updates", &[], &trimmed)
});

fn render(text: Option<&String>, kind: &str, ctx: &Value) -> String {
    let out = match text {
        Some(t) => template::render_text(t, ctx),
        None => DEFAULT_TEMPLATES.render(kind, ctx),
    };
    // Templates were checked at load time; should one still fail, say nothing rather
    // than something half-rendered.
    out.map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// Public text of a step: its `public` text, else its title; `None` when hidden.
pub fn step_title(step: &Step) -> Option<&str> {
    match &step.public {
        Public::Hidden => None,
        Public::Text(t) => Some(t),
        Public::Shown => Some(step.display_title()),
    }
}

/// Renders a public text of the runbook (a title with `{{vars.x}}`) in `ctx`.
pub(crate) fn text(t: &str, ctx: &Value) -> String {
    if !t.contains("{{") {
        return t.to_owned();
    }
    template::render_text(t, ctx).unwrap_or_else(|_| t.to_owned())
}

/// The variables public text uses (`{{vars.NAME}}` in the title, the summary, the
/// update templates, the steps' titles and public texts), in the order first used.
pub fn public_vars(rb: &Runbook) -> Vec<String> {
    let mut texts: Vec<&str> = vec![rb.title.as_str()];
    texts.extend(rb.summary.as_deref());
    texts.extend(rb.status_page.updates.values().map(String::as_str));
    for s in &rb.steps {
        texts.extend(s.title.as_deref());
        texts.extend(step_title(s));
        texts.extend(s.updates.values().map(String::as_str));
    }
    let mut names: Vec<String> = Vec::new();
    for t in texts.into_iter().filter(|t| t.contains("{{")) {
        let Ok((refs, _)) = crate::runbook::template_references(t) else {
            continue;
        };
        for r in refs {
            if let [root, name, ..] = r.segments.as_slice()
                && root == "vars"
                && !names.contains(name)
            {
                names.push(name.clone());
            }
        }
    }
    names
}

/// What the status page may know of a run of `rb`, recorded in `run_started`. `ctx` is
/// the run's template context (`vars`, `run`, `window`).
pub fn plan(rb: &Runbook, maintenance: Option<String>, ctx: &Value) -> PublicPlan {
    let start = rb.window.start.map(|t| t.timestamp_millis());
    let end = start
        .zip(rb.window.duration)
        .map(|(s, d)| s.saturating_add(crate::duration::millis(d)));
    PublicPlan {
        maintenance,
        title: Some(text(&rb.title, ctx)),
        summary: rb.summary.as_deref().map(|s| text(s, ctx)),
        components: rb.status_page.components.clone(),
        timezone: rb.window.timezone.name().to_owned(),
        planned_start_ms: start,
        planned_end_ms: end,
        window_ms: rb.window.duration.map(crate::duration::millis),
        steps: rb
            .order
            .iter()
            .map(|&i| {
                let s = &rb.steps[i];
                PublicStep {
                    id: s.id.clone(),
                    title: step_title(s).map(|t| text(t, ctx)),
                    expected_ms: s.expected.map(|d| crate::duration::millis(d) as u64),
                    kind: s.kind.as_str().to_owned(),
                    label: s.title.as_deref().map(|t| text(t, ctx)),
                    checkpoint: s.checkpoint,
                }
            })
            .collect(),
        secrets: rb.secrets.clone(),
    }
}

/// Writes public updates for the run's transitions.
pub struct Publisher<'a> {
    rb: &'a Runbook,
    learned: &'a Learned,
}

impl<'a> Publisher<'a> {
    pub fn new(rb: &'a Runbook, learned: &'a Learned) -> Self {
        Publisher { rb, learned }
    }

    /// The template context of an update: the run's (`vars`, `run`, `window`) and the
    /// update's own values.
    fn context(&self, base: &Value, eta: Option<i64>, now_ms: i64, step: Option<&Step>) -> Value {
        let rb = self.rb;
        let tz = rb.window.timezone;
        let mut ctx = base.clone();
        if !ctx.is_object() {
            ctx = json!({});
        }
        // Nothing secret reaches a public template, whatever it says.
        if let Some(obj) = ctx.as_object_mut() {
            obj.remove("secrets");
        }
        // The window as customers read it: in the runbook's zone.
        for edge in ["start", "end"] {
            let at = ctx["window"][edge]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
            if let Some(at) = at {
                ctx["window"][edge] =
                    Value::from(crate::duration::local(at.timestamp_millis(), tz));
            }
        }
        let public: Vec<&Step> = rb
            .order
            .iter()
            .map(|&i| &rb.steps[i])
            .filter(|s| step_title(s).is_some())
            .collect();
        ctx["title"] = Value::from(text(&rb.title, base));
        ctx["summary"] = Value::from(rb.summary.as_deref().map(|s| text(s, base)));
        ctx["runbook"] = Value::from(rb.id.as_str());
        ctx["components"] = Value::from(rb.status_page.components.join(", "));
        // A runbook that never closes the service (online steps only): it stays up.
        ctx["open"] = Value::Bool(
            !rb.steps
                .iter()
                .any(|s| s.kind == crate::runbook::Kind::Close),
        );
        ctx["eta"] = Value::from(eta.map(|ms| crate::duration::near(ms, now_ms, tz)));
        ctx["step"] = match step {
            Some(s) => json!({
                "id": s.id,
                "title": step_title(s).map(|t| text(t, base)),
                "number": public.iter().position(|p| p.id == s.id).map(|p| p + 1),
                "total": public.len(),
            }),
            None => json!({ "id": null, "title": null, "number": null, "total": public.len() }),
        };
        ctx
    }

    fn update(
        &self,
        kind: &str,
        status: &str,
        base: &Value,
        (eta, now_ms): (Option<i64>, i64),
        step: Option<&Step>,
        own: Option<&String>,
    ) -> Option<PublicUpdate> {
        let ctx = self.context(base, eta, now_ms, step);
        let updates = &self.rb.status_page.updates;
        // A runbook that wrote its own `rolling_back` (or silenced it) meant every
        // rollback, unless it also wrote the finer kind.
        let template = own.or_else(|| updates.get(kind)).or_else(|| {
            matches!(kind, "no_go" | "stopped_before_changes")
                .then(|| updates.get("rolling_back"))
                .flatten()
        });
        let body = render(template, kind, &ctx);
        // An empty template is how a runbook says "publish nothing here".
        (!body.is_empty()).then(|| PublicUpdate {
            kind: kind.to_owned(),
            status: status.to_owned(),
            body,
            step: step.map(|s| s.id.clone()),
            eta_ms: eta,
            by: None,
            incident: false,
            quiet_until_ms: None,
        })
    }

    /// The ETA customers read: the projection, never earlier than what a person said
    /// (their word stands until the work is seen to take longer still).
    fn eta(&self, state: &RunState, now_ms: i64) -> Option<i64> {
        let projected = eta_ms(self.rb, state, self.learned, now_ms)?;
        Some(state.person_eta_ms.map_or(projected, |p| p.max(projected)))
    }

    /// The update `runbook schedule` publishes.
    pub fn scheduled(&self, base: &Value, now_ms: i64) -> Option<PublicUpdate> {
        self.update("scheduled", "scheduled", base, (None, now_ms), None, None)
    }

    /// The Statuspage status of the maintenance while its run is in `state`:
    /// `verifying` once, from the first check (`test`, `verify`, hidden or not) to start
    /// after the plan's last step that changes things, until the run ends; back to
    /// `in_progress` only while a rollback runs. A check before or between the changes
    /// (the backup's verify) is part of the work.
    fn status(&self, state: &RunState) -> &'static str {
        let rb = self.rb;
        let last_change = rb
            .order
            .iter()
            .rposition(|&i| crate::engine::undo::changes_things(&rb.steps[i]));
        let after = last_change.map_or(0, |at| at + 1);
        let checking = rb.order[after..].iter().any(|&i| {
            let s = &rb.steps[i];
            matches!(s.kind, Kind::Test | Kind::Verify)
                && state.step(&s.id).status != StepStatus::Pending
        });
        match maintenance_status(state.status) {
            "completed" => "completed",
            _ if state.status == RunStatus::RollingBack => "in_progress",
            _ if checking => "verifying",
            _ => "in_progress",
        }
    }

    /// What a rollback beginning after `before` and then `prior` is, for customers:
    /// `no_go` when a person said no (an `approve` step rejected, or timed out with
    /// `on_timeout: reject`), `stopped_before_changes` when no step that changes things
    /// (the plan's rule) has succeeded yet, nor any item of one that fans out, else
    /// `rolling_back`.
    fn rollback_kind(&self, before: &RunState, prior: &[Event]) -> &'static str {
        let mut folded;
        let state = if prior.is_empty() {
            before
        } else {
            folded = before.clone();
            for e in prior {
                // Every event of the batch was checked by the caller.
                let _ = folded.apply(e, 0);
            }
            &folded
        };
        let said_no = self.rb.steps.iter().any(|s| {
            let r = state.step(&s.id);
            s.kind == Kind::Approve
                && !r.failure_ignored
                && match r.status {
                    StepStatus::Failed => {
                        r.outputs.get("decision").and_then(Value::as_str) == Some("rejected")
                    }
                    StepStatus::TimedOut => s.on_timeout == OnTimeout::Reject,
                    _ => false,
                }
        });
        let changed = self.rb.steps.iter().any(|s| {
            let r = state.step(&s.id);
            crate::engine::undo::changes_things(s) && r.acted
        });
        if said_no {
            "no_go"
        } else if !changed {
            "stopped_before_changes"
        } else {
            "rolling_back"
        }
    }

    /// The update for a step running past its `expected` duration.
    pub fn overrun(
        &self,
        state: &RunState,
        step: &Step,
        base: &Value,
        now_ms: i64,
    ) -> Option<PublicUpdate> {
        step_title(step)?;
        if state.rehearsal || quiet(state, now_ms) {
            return None;
        }
        let eta = self.eta(state, now_ms);
        let status = self.status(state);
        self.update(
            "overrun",
            status,
            base,
            (eta, now_ms),
            Some(step),
            step.updates.get("overrun"),
        )
    }

    /// Updates announcing `events`, which take the run from `before` to `after`.
    pub fn updates(
        &self,
        before: &RunState,
        events: &[Event],
        after: &RunState,
        base: &Value,
        now_ms: i64,
    ) -> Vec<PublicUpdate> {
        // A rehearsal tells customers nothing.
        if after.rehearsal {
            return Vec::new();
        }
        let eta = self.eta(after, now_ms);
        let quiet = quiet(after, now_ms);
        let status = self.status(after);
        let mut out = Vec::new();
        for (n, event) in events.iter().enumerate() {
            let u = match event {
                Event::RunStarted { .. } => self.update(
                    "in_progress",
                    "in_progress",
                    base,
                    (eta, now_ms),
                    None,
                    None,
                ),
                Event::StepStarted {
                    step,
                    attempt: 1,
                    verifying,
                    ..
                } => {
                    let Some(s) = self.rb.steps.iter().find(|s| &s.id == step) else {
                        continue;
                    };
                    // The one move to verifying is said even when the check that makes
                    // it is hidden (without naming the check).
                    if *verifying && status == "verifying" && self.status(before) != "verifying" {
                        let shown = step_title(s).map(|_| s);
                        let own = shown.and_then(|s| s.updates.get("started"));
                        out.extend(self.update(
                            "verifying",
                            "verifying",
                            base,
                            (eta, now_ms),
                            shown,
                            own,
                        ));
                        continue;
                    }
                    // Muted by a person: step texts wait; changes of status do not.
                    if step_title(s).is_none() || quiet {
                        continue;
                    }
                    let own = s.updates.get("started");
                    // Subscribers hear of the work, not of every check: a step's start is
                    // announced when it changes something (or closes or reopens the
                    // service), or when the step wrote its own text for it.
                    if own.is_none() && !announced_start(s) {
                        continue;
                    }
                    if s.kind == Kind::Announce {
                        let body = own
                            .map(|t| {
                                render(
                                    Some(t),
                                    "announce",
                                    &self.context(base, eta, now_ms, Some(s)),
                                )
                            })
                            .or_else(|| step_title(s).map(|t| text(t, base)))
                            .unwrap_or_default();
                        (!body.is_empty()).then(|| PublicUpdate {
                            kind: "announce".into(),
                            status: status.into(),
                            body,
                            step: Some(s.id.clone()),
                            eta_ms: eta,
                            by: None,
                            incident: false,
                            quiet_until_ms: None,
                        })
                    } else {
                        self.update("step_started", status, base, (eta, now_ms), Some(s), own)
                    }
                }
                Event::RollbackStarted { .. } => {
                    let kind = self.rollback_kind(before, &events[..n]);
                    self.update(kind, "in_progress", base, (None, now_ms), None, None)
                }
                Event::RunCompleted => {
                    self.update("completed", "completed", base, (None, now_ms), None, None)
                }
                Event::RunRolledBack { .. } => {
                    self.update("rolled_back", "completed", base, (None, now_ms), None, None)
                }
                Event::RunFailed { .. } => self
                    .update("failed", "investigating", base, (None, now_ms), None, None)
                    .map(|u| PublicUpdate {
                        incident: true,
                        ..u
                    }),
                Event::RunAborted { .. } => {
                    // Aborted with the service closed opens an incident (the page must
                    // not say "completed" while customers are locked out).
                    let closed = before.closed || after.closed;
                    let status = if closed { "investigating" } else { "completed" };
                    self.update("aborted", status, base, (None, now_ms), None, None)
                        .map(|u| PublicUpdate {
                            incident: closed,
                            ..u
                        })
                }
                _ => None,
            };
            out.extend(u);
        }
        out
    }
}

/// Whether the start of public step `s` is announced by default: an announcement, or a
/// step that changes something or closes or reopens the service.
fn announced_start(s: &Step) -> bool {
    matches!(s.kind, Kind::Announce | Kind::Close | Kind::Reopen)
        || crate::engine::undo::changes_things(s)
}

/// Whether a person muted automatic texts (`runbook update --quiet`) at `now_ms`.
fn quiet(state: &RunState, now_ms: i64) -> bool {
    state.quiet_until_ms.is_some_and(|t| now_ms < t)
}

/// Whether an event may be announced (so that the context is built only then).
pub fn announces(event: &Event) -> bool {
    matches!(
        event,
        Event::RunStarted { .. }
            | Event::StepStarted { attempt: 1, .. }
            | Event::RollbackStarted { .. }
            | Event::RunCompleted
            | Event::RunRolledBack { .. }
            | Event::RunFailed { .. }
            | Event::RunAborted { .. }
    )
}

/// The Statuspage status of a maintenance whose run is in `status`.
pub fn maintenance_status(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Verifying => "verifying",
        RunStatus::Completed | RunStatus::RolledBack => "completed",
        _ => "in_progress",
    }
}
