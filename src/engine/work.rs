//! The effects of a step: its templates rendered, its action, its conditions. One path
//! for a single step and for every fan-out item, so that both check their
//! preconditions, run their action under its own `timeout`, and run their checks alike.
//!
//! A [`Worker`] only reads the run (it never records): the runner records what it
//! reports.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::FutureExt;
use indexmap::IndexMap;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::action::{self, Masker, Outcome, StepLog};
use super::builtin;
/// When a run's window opened (the runner reads it here).
use super::quote::{Mode, Templates};
use super::state::{RunState, StepStatus};
use super::target;
use super::timing::window_start;
use crate::runbook::{Action, Check, Condition, ForEach, HttpCheck, Kind, Runbook, Step, Target};

/// Outputs by step id (and `STEP.N` for fan-out items).
pub(crate) type Outputs = IndexMap<String, IndexMap<String, Value>>;

/// What the effects of a step read of the run: all borrowed, nothing recorded.
pub(crate) struct Worker<'w> {
    pub rb: &'w Runbook,
    pub state: &'w RunState,
    pub run_id: &'w str,
    pub masker: &'w Masker,
    pub secrets: &'w IndexMap<String, String>,
    pub templates: &'w Templates,
    pub log_dir: &'w Path,
    /// A dry run: SQL checks run where they cannot write.
    pub read_only: bool,
    /// Every step's outputs, read once when a built-in first needs them.
    outputs: OnceLock<Arc<Outputs>>,
}

/// What a step's work is done for: the step itself, or one fan-out item.
#[derive(Clone, Copy)]
pub(crate) enum Unit<'v> {
    Step,
    /// An item: its index, its value, and the stem of its files
    /// ([`super::items::stems`]).
    Item(usize, &'v Value, &'v str),
}

/// How a render error says a value exists only later in the run (an earlier step's
/// outputs): a dry run shows such a template as rendered when it runs.
pub const NOT_YET: &str = "has no value at this point of the run";

impl<'w> Worker<'w> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rb: &'w Runbook,
        state: &'w RunState,
        run_id: &'w str,
        masker: &'w Masker,
        secrets: &'w IndexMap<String, String>,
        templates: &'w Templates,
        log_dir: &'w Path,
        read_only: bool,
    ) -> Self {
        Worker {
            rb,
            state,
            run_id,
            masker,
            secrets,
            templates,
            log_dir,
            read_only,
            outputs: OnceLock::new(),
        }
    }

    /// The name of a unit's files and its `{{step}}`: `STEP`, or `STEP.NAME` (`STEP.N`)
    /// for an item.
    fn name(step: &Step, unit: Unit<'_>) -> String {
        match unit {
            Unit::Step => step.id.clone(),
            Unit::Item(_, _, stem) => stem.to_owned(),
        }
    }

    /// The names of a fan-out's items (see [`super::items`]), masked: each item's `name`,
    /// else the step's `item_label` rendered with its `{{item}}`, else its value.
    pub fn item_names(&self, step: &Step, items: &[Value]) -> Vec<String> {
        items
            .iter()
            .map(|item| {
                let label = || {
                    let t = step.item_label.as_deref()?;
                    let rendered = self.render(t, &self.context(Some(item))).ok()?;
                    let label = super::items::shorten(rendered.trim());
                    (!label.is_empty()).then_some(label)
                };
                let name = super::items::name_field(item)
                    .or_else(label)
                    .unwrap_or_else(|| super::items::of_value(item));
                self.masker.mask(&name)
            })
            .collect()
    }

    /// The context of a unit: the run's values, `{{item}}` for an item, and the step's
    /// name as `{{step}}`.
    pub(crate) fn unit_context(&self, step: &Step, unit: Unit<'_>) -> Value {
        let item = match unit {
            Unit::Step => None,
            Unit::Item(_, v, _) => Some(v),
        };
        let mut ctx = self.context(item);
        ctx["step"] = Value::from(Self::name(step, unit));
        // A host step's unit runs on its host: `{{host.*}}`, and its `shell` and
        // `copy` go there (see `remote`).
        if let (Some(ForEach::Hosts(_)), Some(host)) = (&step.for_each, item) {
            ctx["host"] = host.clone();
        }
        ctx
    }

    /// The host a unit runs on, from its context (see `unit_context`).
    fn remote(&self, ctx: &Value) -> Option<super::ssh::Remote<'w>> {
        let name = ctx.get("host")?.get("name")?.as_str()?;
        let host = self.rb.inventory.host(name)?;
        Some(super::ssh::Remote::new(self.rb, host, self.log_dir))
    }

    /// A host as templates see it (`{{host.name}}` ...): the values ssh uses.
    pub fn host_value(&self, host: &crate::runbook::Host) -> Value {
        let r = super::ssh::Remote::new(self.rb, host, self.log_dir);
        json!({
            "name": host.name,
            "address": host.address,
            "port": r.port().unwrap_or(22),
            "user": r.user().map(str::to_owned).or_else(|| std::env::var("USER").ok()).unwrap_or_default(),
            "vars": host.vars,
            "groups": host.groups,
        })
    }

    /// Before any host of a `copy` step is touched: every host's source is there.
    pub fn before_hosts(&self, step: &Step, items: &[Value]) -> Result<(), String> {
        let Some(Action::Copy { src, .. }) = step.run.as_deref() else {
            return Ok(());
        };
        for item in items {
            let ctx = self.unit_context(step, Unit::Item(0, item, ""));
            let src = self.render(src, &ctx)?;
            if let Err(e) = std::fs::metadata(&src) {
                return Err(format!(
                    "{}; no host was touched",
                    super::ssh::missing(Path::new(&src), &e)
                ));
            }
        }
        Ok(())
    }

    /// The work of a step, or of one of its fan-out items: the preconditions (an item
    /// checks its own; a single step's are checked before it starts), the action (or
    /// the `until` conditions of a `wait`), then the checks, all with the unit's
    /// context. A panic in the work fails the unit with the panic's message.
    pub async fn work(&self, step: &Step, unit: Unit<'_>) -> Outcome {
        let work = async {
            panic_point(&match unit {
                Unit::Step => step.id.clone(),
                Unit::Item(ix, ..) => format!("{}.{ix}", step.id),
            });
            let ctx = self.unit_context(step, unit);
            if matches!(unit, Unit::Item(..))
                && let Err(e) = self.preconditions_in(step, &ctx).await
            {
                return Outcome::Failed(format!("precondition: {e}"));
            }
            let mut log = self.log(&Self::name(step, unit));
            let outcome = if step.kind == Kind::Wait {
                self.wait_until(step, &ctx).await
            } else {
                self.act(step, &ctx, &mut log).await
            };
            let outcome = match outcome {
                Outcome::Succeeded(outputs) => match self.checks(&step.checks, &ctx).await {
                    Ok(()) => Outcome::Succeeded(outputs),
                    Err(e) => Outcome::Failed(e),
                },
                other => other,
            };
            // A log the disk would not take whole is said so in the outcome.
            log.noted(outcome)
        };
        unless_panics(work).await
    }

    /// The values templates can use at this point of the run.
    pub fn context(&self, item: Option<&Value>) -> Value {
        self.context_of(self.state, item)
    }

    /// The values templates can use in `state` (see [`super::context::context`]).
    pub fn context_of(&self, state: &RunState, item: Option<&Value>) -> Value {
        super::context::context(self.rb, state, self.run_id, self.secrets, item)
    }

    /// Text that is neither a shell command nor SQL, rendered: values inserted as they are.
    pub fn render(&self, text: &str, ctx: &Value) -> Result<String, String> {
        self.render_in(text, ctx, Mode::Plain)
    }

    /// Text rendered for what it is: in a shell command or an SQL statement every value a
    /// template inserts is quoted (see [`super::quote`]).
    pub fn render_in(&self, text: &str, ctx: &Value, mode: Mode) -> Result<String, String> {
        if !text.contains("{{") {
            return Ok(text.to_owned());
        }
        match self.templates.get(mode).render_template(text, ctx) {
            // Outputs hold secrets as references; the action gets the values (quoted
            // code has each value resolved as it is quoted).
            Ok(rendered) if mode == Mode::Plain => Ok(self.masker.resolve(&rendered)),
            Ok(rendered) => Ok(rendered),
            Err(e) => Err(match e.reason() {
                handlebars::RenderErrorReason::MissingVariable(Some(path)) => {
                    format!("`{{{{{path}}}}}` {NOT_YET} (in `{text}`)")
                }
                reason => format!("template `{text}`: {reason}"),
            }),
        }
    }

    /// What `a` would do, rendered with `ctx` (a dry run shows it): the command, the
    /// statement and its database, the request, or a built-in's parameters.
    pub fn rendered(&self, a: &Action, ctx: &Value) -> Result<String, String> {
        let one_line = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
        Ok(match a {
            Action::Shell { command, .. } => {
                format!(
                    "shell: {}",
                    one_line(&self.render_in(command, ctx, Mode::Shell)?)
                )
            }
            Action::Sql { sql, database, .. } => {
                let (sql, db) = self.render_sql(sql, database, ctx)?;
                format!(
                    "sql on {}: {}",
                    crate::sql::url::pg_url_without_password(&db),
                    one_line(&sql)
                )
            }
            Action::Http(h) => {
                let h = self.render_http(h, ctx)?;
                format!("http {} {}", h.method, h.url)
            }
            Action::Copy { src, dest, .. } => {
                let on = ctx["host"]["name"].as_str().unwrap_or_default();
                format!(
                    "copy {} to {on}:{}",
                    self.render(src, ctx)?,
                    self.render(dest, ctx)?
                )
            }
            Action::Builtin { kind, with } => {
                let mut shown = Vec::new();
                for (k, v) in with {
                    let v = match v {
                        Value::String(t) => Value::String(self.render(t, ctx)?),
                        other => other.clone(),
                    };
                    shown.push(format!("{k}: {v}"));
                }
                format!("{} with {{{}}}", kind.as_str(), shown.join(", "))
            }
        })
    }

    /// A statement and its database URL, rendered: the URL first, since the database's
    /// kind decides how the statement quotes values.
    fn render_sql(
        &self,
        sql: &str,
        database: &str,
        ctx: &Value,
    ) -> Result<(String, String), String> {
        let db = self.render(database, ctx)?;
        let engine = target::engine(&db)?;
        Ok((self.render_in(sql, ctx, Mode::Sql(engine))?, db))
    }

    /// The request with its URL, headers, body and expected text and values rendered.
    fn render_http(&self, h: &HttpCheck, ctx: &Value) -> Result<HttpCheck, String> {
        Ok(HttpCheck {
            url: self.render(&h.url, ctx)?,
            headers: h
                .headers
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.render(v, ctx)?)))
                .collect::<Result<_, String>>()?,
            body: h.body.as_ref().map(|b| self.render(b, ctx)).transpose()?,
            expect_contains: h
                .expect_contains
                .as_ref()
                .map(|c| self.render(c, ctx))
                .transpose()?,
            expect_json: h
                .expect_json
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.render_value(v, ctx)?)))
                .collect::<Result<_, String>>()?,
            ..h.clone()
        })
    }

    /// Every string in a value rendered as a template.
    fn render_value(&self, v: &Value, ctx: &Value) -> Result<Value, String> {
        Ok(match v {
            Value::String(s) => Value::String(self.render(s, ctx)?),
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|x| self.render_value(x, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| Ok((k.clone(), self.render_value(x, ctx)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }

    fn render_env(
        &self,
        env: &IndexMap<String, String>,
        ctx: &Value,
    ) -> Result<IndexMap<String, String>, String> {
        env.iter()
            .map(|(k, v)| Ok((k.clone(), self.render(v, ctx)?)))
            .collect()
    }

    pub fn log(&self, name: &str) -> StepLog {
        let path = self.log_dir.join(format!("{name}.log"));
        StepLog::open(&path, self.masker.clone())
    }

    /// The step's own action: its `run`, or its kind's built-in behaviour, or nothing
    /// (a kind whose work is its checks).
    async fn act(&self, step: &Step, ctx: &Value, log: &mut StepLog) -> Outcome {
        match &step.run {
            // On a host, the command leaves its outcome there, under a key of this run,
            // unit and attempt: a resume after a crash reads it instead of guessing.
            Some(a) if self.remote(ctx).is_some() => {
                let unit = ctx["step"].as_str().unwrap_or_default();
                let key = host_key(self.run_id, unit, self.state.step(&step.id).attempts);
                self.action_keyed(a, ctx, log, Some(&key)).await
            }
            Some(a) => self.action(a, ctx, log).await,
            None if has_builtin_work(step) => self.builtin(step.kind, &step.with, ctx, log).await,
            None => Outcome::Succeeded(IndexMap::new()),
        }
    }

    /// A kind's built-in behaviour, its `with` rendered first.
    async fn builtin(
        &self,
        kind: Kind,
        with: &IndexMap<String, Value>,
        ctx: &Value,
        log: &mut StepLog,
    ) -> Outcome {
        let with = match with
            .iter()
            .map(|(k, v)| Ok((k.clone(), self.render_value(v, ctx)?)))
            .collect::<Result<IndexMap<_, _>, String>>()
        {
            Ok(w) => w,
            Err(e) => return Outcome::Failed(e),
        };
        let outputs = self
            .outputs
            .get_or_init(|| Arc::new(all_outputs(self.state)))
            .clone();
        let env = builtin::Env {
            work_dir: self.work_dir(),
            run_id: self.run_id,
            step: ctx["step"].as_str().unwrap_or_default(),
            outputs: &outputs,
            log,
        };
        builtin::run(kind, &with, env).await
    }

    /// This run's directory for the files built-in actions make (backups, scratch).
    fn work_dir(&self) -> PathBuf {
        let state_dir = self
            .log_dir
            .parent()
            .and_then(|logs| logs.parent())
            .map(PathBuf::from)
            .unwrap_or_default();
        state_dir.join("work").join(self.run_id)
    }

    pub async fn action(&self, a: &Action, ctx: &Value, log: &mut StepLog) -> Outcome {
        self.action_keyed(a, ctx, log, None).await
    }

    /// An action; on a host, with `key` its outcome is left there (see `act`).
    async fn action_keyed(
        &self,
        a: &Action,
        ctx: &Value,
        log: &mut StepLog,
        key: Option<&str>,
    ) -> Outcome {
        match a {
            Action::Shell {
                command,
                env,
                cwd,
                timeout,
            } => {
                let rendered = (|| {
                    let command = self.render_in(command, ctx, Mode::Shell)?;
                    let env = self.render_env(env, ctx)?;
                    let cwd = cwd.as_ref().map(|c| self.render(c, ctx)).transpose()?;
                    Ok::<_, String>((command, env, cwd))
                })();
                match rendered {
                    Ok((command, env, cwd)) if self.remote(ctx).is_some() => {
                        let remote = self.remote(ctx).expect("checked");
                        remote
                            .shell(
                                &command,
                                &env,
                                cwd.as_deref(),
                                *timeout,
                                log,
                                super::ssh::With { stdin: None, key },
                            )
                            .await
                    }
                    Ok((command, env, cwd)) => {
                        action::shell(
                            &command,
                            &env,
                            cwd.as_deref().map(std::path::Path::new),
                            *timeout,
                            log,
                        )
                        .await
                    }
                    Err(e) => Outcome::Failed(e),
                }
            }
            Action::Sql {
                sql,
                database,
                transaction,
            } => match self.render_sql(sql, database, ctx) {
                Ok((sql, db)) => action::sql(&db, &sql, *transaction, None).await,
                Err(e) => Outcome::Failed(e),
            },
            Action::Http(h) => match self.render_http(h, ctx) {
                Ok(h) => action::http(&h, log).await,
                Err(e) => Outcome::Failed(e),
            },
            Action::Builtin { kind, with } => self.builtin(*kind, with, ctx, log).await,
            Action::Copy { src, dest, mode } => {
                let Some(remote) = self.remote(ctx) else {
                    return Outcome::Failed(
                        "`copy` uploads to hosts: the step has no `on:`".into(),
                    );
                };
                let rendered = self
                    .render(src, ctx)
                    .and_then(|s| Ok((s, self.render(dest, ctx)?)));
                match rendered {
                    Ok((src, dest)) => {
                        remote
                            .copy(Path::new(&src), &dest, *mode, &self.work_dir(), log, key)
                            .await
                    }
                    Err(e) => Outcome::Failed(e),
                }
            }
        }
    }

    /// A host step's `between_waves` conditions on one host that is done.
    pub async fn between_waves(
        &self,
        step: &Step,
        conditions: &[Condition],
        unit: Unit<'_>,
    ) -> Result<(), String> {
        let ctx = self.unit_context(step, unit);
        self.conditions(conditions, &ctx).await
    }

    /// A single step's preconditions, checked before it starts.
    pub async fn preconditions(&self, step: &Step) -> Result<(), String> {
        if step.preconditions.is_empty() {
            return Ok(());
        }
        let ctx = self.unit_context(step, Unit::Step);
        self.preconditions_in(step, &ctx).await
    }

    /// The preconditions in `ctx`, checked again for `wait_for` while they fail.
    async fn preconditions_in(&self, step: &Step, ctx: &Value) -> Result<(), String> {
        if step.preconditions.is_empty() {
            return Ok(());
        }
        let deadline = step.wait_for.map(|w| Instant::now() + w);
        loop {
            let result = self.conditions(&step.preconditions, ctx).await;
            match (result, deadline) {
                (Ok(()), _) => return Ok(()),
                (Err(_), Some(d)) if Instant::now() < d => {
                    tokio::time::sleep(Duration::from_secs(1).min(d - Instant::now())).await;
                }
                (Err(e), _) => return Err(e),
            }
        }
    }

    async fn checks(&self, checks: &[Condition], ctx: &Value) -> Result<(), String> {
        if checks.is_empty() {
            return Ok(());
        }
        self.conditions(checks, ctx).await
    }

    /// Every condition, in order; the first that does not hold fails with its message.
    async fn conditions(&self, conditions: &[Condition], ctx: &Value) -> Result<(), String> {
        for c in conditions {
            self.holds(c, ctx).await?;
        }
        Ok(())
    }

    /// One condition; when it does not hold, its `message` says what that means.
    pub async fn holds(&self, c: &Condition, ctx: &Value) -> Result<(), String> {
        self.condition(&c.check, ctx)
            .await
            .map_err(|why| match &c.message {
                // The message is a template too (`tenant {{item}} answers`).
                Some(m) => {
                    let m = self.render(m, ctx).unwrap_or_else(|_| m.clone());
                    format!("{m}: {why}")
                }
                None => why,
            })
    }

    async fn condition(&self, check: &Check, ctx: &Value) -> Result<(), String> {
        match check {
            Check::Sql {
                sql,
                database,
                expect,
            } => {
                let (sql, db) = self.render_sql(sql, database, ctx)?;
                let expect = expect
                    .as_ref()
                    .map(|e| self.render_value(e, ctx))
                    .transpose()?;
                target::sql_check(&db, &sql, expect.as_ref(), self.read_only).await
            }
            Check::Shell { command, env } => {
                let command = self.render_in(command, ctx, Mode::Shell)?;
                let env = self.render_env(env, ctx)?;
                let mut log = StepLog::memory(self.masker.clone());
                let limit = Some(Duration::from_secs(300));
                let ran = match self.remote(ctx) {
                    Some(remote) => {
                        remote
                            .shell(&command, &env, None, limit, &mut log, Default::default())
                            .await
                    }
                    None => action::shell(&command, &env, None, limit, &mut log).await,
                };
                match ran {
                    Outcome::Succeeded(_) => Ok(()),
                    Outcome::Failed(e) => Err(e),
                    Outcome::TimedOut => Err(format!("`{command}` timed out")),
                }
            }
            Check::Window { remaining_at_least } => {
                let (Some(start), Some(duration)) =
                    (window_start(self.rb, self.state), self.rb.window.duration)
                else {
                    return Ok(());
                };
                let end = crate::duration::after(start, duration);
                let left = (end - chrono::Utc::now()).to_std().unwrap_or_default();
                if left >= *remaining_at_least {
                    Ok(())
                } else {
                    Err(format!(
                        "only {} of the window is left, {} needed",
                        crate::duration::fmt_duration(left),
                        crate::duration::fmt_duration(*remaining_at_least)
                    ))
                }
            }
            Check::Step { id, state } => {
                let got = self.state.step(id).status;
                let want = match state {
                    crate::runbook::StepState::Succeeded => StepStatus::Succeeded,
                    crate::runbook::StepState::Failed => StepStatus::Failed,
                    crate::runbook::StepState::Skipped => StepStatus::Skipped,
                    crate::runbook::StepState::TimedOut => StepStatus::TimedOut,
                    crate::runbook::StepState::RolledBack => StepStatus::RolledBack,
                };
                if got == want {
                    Ok(())
                } else {
                    Err(format!(
                        "step `{id}` is {}, not {}",
                        got.as_str(),
                        want.as_str()
                    ))
                }
            }
            Check::Http(h) => {
                let h = self.render_http(h, ctx)?;
                let mut log = StepLog::memory(self.masker.clone());
                match action::http(&h, &mut log).await {
                    Outcome::Succeeded(_) => Ok(()),
                    Outcome::Failed(e) => Err(e),
                    Outcome::TimedOut => Err(format!("{} {} timed out", h.method, h.url)),
                }
            }
        }
    }

    /// A `wait` step (or item): its `until` conditions, checked every `interval` until
    /// they hold or its `timeout` would pass.
    async fn wait_until(&self, step: &Step, ctx: &Value) -> Outcome {
        let interval = step.interval.unwrap_or(Duration::from_secs(10));
        let deadline = step.timeout.map(|t| Instant::now() + t);
        loop {
            match self.conditions(&step.until, ctx).await {
                Ok(()) => return Outcome::Succeeded(IndexMap::new()),
                Err(_) if deadline.is_some_and(|d| Instant::now() + interval > d) => {
                    return Outcome::TimedOut;
                }
                Err(_) => tokio::time::sleep(interval).await,
            }
        }
    }

    /// The items of a fan-out step.
    pub async fn items(&self, step: &Step) -> Result<Vec<Value>, String> {
        match step.for_each.as_ref().expect("fan-out step") {
            ForEach::Items(items) => Ok(items.clone()),
            ForEach::Target(name) => match self.rb.targets.get(name) {
                Some(Target::Static(items)) => Ok(items.clone()),
                Some(Target::Query { sql, database }) => {
                    let ctx = self.context(None);
                    let (sql, db) = self.render_sql(sql, database, &ctx)?;
                    target::query_items(&db, &sql).await
                }
                None => Err(format!("unknown target `{name}`")),
            },
            ForEach::Hosts(hosts) => Ok(hosts
                .iter()
                .map(|&h| self.host_value(&self.rb.inventory.hosts[h]))
                .collect()),
        }
    }

    /// Runs an undo action (a `rollback` or a `restore`) under the step's `timeout`.
    async fn undo_once(
        &self,
        step: &Step,
        action: &Action,
        ctx: &Value,
        log: &mut StepLog,
    ) -> Outcome {
        let work = unless_panics(self.action(action, ctx, log));
        match step.timeout {
            Some(t) => tokio::time::timeout(t, work)
                .await
                .unwrap_or(Outcome::TimedOut),
            None => work.await,
        }
    }

    /// Undoes a step, or one of its fan-out items, with `action` (its `rollback`, or its
    /// checkpoint's `restore`). An item's undo has its `{{item}}` and its own outputs as
    /// `{{steps.ID.outputs.NAME}}` (the version that tenant was migrated from, the backup
    /// of that tenant, say).
    pub async fn undo(&self, step: &Step, action: &Action, unit: Unit<'_>) -> Outcome {
        let mut ctx = self.unit_context(step, unit);
        if let Unit::Item(ix, ..) = unit {
            let run = self.state.step(&step.id);
            if let Some(outputs) = run.item_outputs.get(&ix) {
                let mut merged = run.outputs.clone();
                merged.extend(outputs.clone());
                ctx["steps"][step.id.as_str()]["outputs"] = json!(merged);
            }
        }
        let mut log = self.log(&format!("{}.rollback", Self::name(step, unit)));
        let outcome = self.undo_once(step, action, &ctx, &mut log).await;
        log.noted(outcome)
    }
}

/// The name under which a host step's unit (`STEP.HOST`) leaves the outcome of its
/// attempt on the host.
pub(crate) fn host_key(run_id: &str, unit: &str, attempt: u32) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{run_id}\n{unit}\n{attempt}").as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// Whether a step without `run:` has built-in work of its kind to do (a `verify` step
/// with only `checks` has none).
pub(crate) fn has_builtin_work(step: &Step) -> bool {
    step.kind.has_builtin() && !(step.kind == Kind::Verify && step.with.is_empty())
}

/// Every step's outputs by id, and every fan-out item's as `STEP.N` (so `verify` finds
/// what a fan-out `backup` recorded of each file).
fn all_outputs(state: &RunState) -> Outputs {
    let mut all = IndexMap::new();
    for (id, s) in &state.steps {
        all.insert(id.clone(), s.outputs.clone());
        for (ix, o) in &s.item_outputs {
            all.insert(format!("{id}.{ix}"), o.clone());
        }
    }
    all
}

/// `work`'s outcome, or a failure with the panic's message when it panics: one item's
/// bug fails that item, not the runner.
async fn unless_panics(work: impl Future<Output = Outcome>) -> Outcome {
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Outcome::Failed(format!("internal error (panic): {message}"))
        }
    }
}

/// Fault injection for the tests: with `RUNBOOK_TEST_PANIC=NAME` the work of the step or
/// item `NAME` (`STEP` or `STEP.N`) panics, as a bug would.
fn panic_point(name: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("RUNBOOK_TEST_PANIC").ok());
    if at.as_deref() == Some(name) {
        panic!("injected panic in `{name}` (RUNBOOK_TEST_PANIC)");
    }
}
