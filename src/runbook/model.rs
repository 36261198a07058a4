//! The validated runbook: the only form the rest of the program sees.
//!
//! Every value here has passed the loader's checks: ids are unique, references resolve,
//! durations and timestamps are parsed, templates compile and refer to values that exist.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A maintenance runbook, ready to plan or run.
#[derive(Debug, Clone)]
pub struct Runbook {
    pub id: String,
    /// Public title; defaults to the id.
    pub title: String,
    /// Public summary shown on the status page.
    pub summary: Option<String>,
    pub window: Window,
    pub status_page: StatusPage,
    /// Template values; `--var k=v` overrides them.
    pub vars: IndexMap<String, Value>,
    /// Names of environment variables whose values are masked everywhere.
    pub secrets: Vec<String>,
    pub targets: IndexMap<String, Target>,
    /// The servers host steps (`on:`) run on: `hosts:` and the `inventory:` file.
    pub inventory: Inventory,
    /// How the runner reaches them over SSH (a host overrides).
    pub ssh: Ssh,
    /// Team notifications (`notify:`), in the order written.
    pub notify: Vec<Notify>,
    /// `execute --limit`: the hosts and groups host steps run on (all when empty).
    pub limit: Vec<String>,
    /// Steps as written in the file.
    pub steps: Vec<Step>,
    /// Indexes into `steps` in execution order (`requires` first, then file order).
    pub order: Vec<usize>,
}

impl Runbook {
    /// How many items the fan-out step `s` runs over, when that is known before the run
    /// (a list, or a static target); `None` for a single step or a query target.
    pub fn item_count(&self, s: &Step) -> Option<usize> {
        match s.for_each.as_ref()? {
            ForEach::Items(items) => Some(items.len()),
            ForEach::Target(name) => match self.targets.get(name)? {
                Target::Static(items) => Some(items.len()),
                Target::Query { .. } => None,
            },
            ForEach::Hosts(hosts) => Some(hosts.len()),
        }
    }
}

impl Runbook {
    /// `execute --limit HOST,GROUP`: host steps run only on the hosts named, or in the
    /// groups named. A name that is neither is refused.
    pub fn limit_to(&mut self, names: &[String]) -> Result<(), String> {
        if names.is_empty() {
            return Ok(());
        }
        let mut keep = vec![false; self.inventory.hosts.len()];
        for name in names {
            if name == "all" {
                keep.iter_mut().for_each(|k| *k = true);
            } else if let Some(members) = self.inventory.groups.get(name) {
                members.iter().for_each(|&m| keep[m] = true);
            } else if let Some(ix) = self.inventory.hosts.iter().position(|h| &h.name == name) {
                keep[ix] = true;
            } else {
                let mut known: Vec<&str> =
                    self.inventory.groups.keys().map(String::as_str).collect();
                known.extend(self.inventory.hosts.iter().map(|h| h.name.as_str()));
                let hint = crate::suggest::did_you_mean(name, &known)
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default();
                return Err(format!(
                    "--limit: `{name}` is not a group or host of the runbook{hint}"
                ));
            }
        }
        for step in &mut self.steps {
            if let Some(ForEach::Hosts(hosts)) = &mut step.for_each {
                hosts.retain(|&h| keep[h]);
            }
        }
        self.limit = names.to_vec();
        Ok(())
    }
}

/// The servers of a runbook, in the order first named.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub hosts: Vec<Host>,
    /// Group name → its hosts (indexes into `hosts`), in the order listed.
    pub groups: IndexMap<String, Vec<usize>>,
    /// The inventory file could not be read (reported): names in `on:` are not held
    /// against the runbook.
    pub unread: bool,
}

impl Inventory {
    /// The host called `name`.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

/// One server.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// What the host is called everywhere (logs, `status`, the report, `{{host.name}}`).
    pub name: String,
    /// Where ssh connects (the name when none is given).
    pub address: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity_file: Option<String>,
    /// OpenSSH `-o` options of this host (over the runbook's `ssh.options`).
    pub options: IndexMap<String, String>,
    pub vars: IndexMap<String, Value>,
    /// The groups it belongs to, in the order listed.
    pub groups: Vec<String>,
    /// Where it was defined: `line N` of the runbook, or `FILE:N` of an inventory.
    pub origin: String,
}

/// A team notification target (`notify:`).
#[derive(Debug, Clone, PartialEq)]
pub struct Notify {
    pub channel: NotifyChannel,
    /// URL or email address, as written (templates are rendered when the run starts).
    pub address: String,
    /// The events it hears of, in [`TeamEvent::ALL`]'s order.
    pub events: Vec<TeamEvent>,
}

/// How a team target is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyChannel {
    Webhook,
    Slack,
    Email,
}

impl NotifyChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyChannel::Webhook => "webhook",
            NotifyChannel::Slack => "slack",
            NotifyChannel::Email => "email",
        }
    }
}

/// What a team hears of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeamEvent {
    RunStarted,
    StepFailed,
    RollbackStarted,
    RunEnded,
    ApprovalWaiting,
    Overrun,
    GuardPaused,
}

impl TeamEvent {
    pub const ALL: [TeamEvent; 7] = [
        TeamEvent::RunStarted,
        TeamEvent::StepFailed,
        TeamEvent::RollbackStarted,
        TeamEvent::RunEnded,
        TeamEvent::ApprovalWaiting,
        TeamEvent::Overrun,
        TeamEvent::GuardPaused,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TeamEvent::RunStarted => "run_started",
            TeamEvent::StepFailed => "step_failed",
            TeamEvent::RollbackStarted => "rollback_started",
            TeamEvent::RunEnded => "run_ended",
            TeamEvent::ApprovalWaiting => "approval_waiting",
            TeamEvent::Overrun => "overrun",
            TeamEvent::GuardPaused => "guard_paused",
        }
    }

    pub fn named(name: &str) -> Option<TeamEvent> {
        TeamEvent::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The journal kinds (`Event::kind`) it may come from; which of their events it is
    /// is [`TeamEvent::of`]'s to say.
    pub fn kinds(self) -> &'static [&'static str] {
        match self {
            TeamEvent::RunStarted => &["run_started"],
            TeamEvent::StepFailed => &["step_failed", "step_timed_out"],
            TeamEvent::RollbackStarted => &["rollback_started"],
            TeamEvent::RunEnded => &[
                "run_completed",
                "run_rolled_back",
                "run_failed",
                "run_aborted",
            ],
            TeamEvent::ApprovalWaiting => &["approval_requested"],
            TeamEvent::Overrun => &["published"],
            TeamEvent::GuardPaused => &["run_paused"],
        }
    }

    /// The team event a journal event is, if any: a retried failure is no step failure
    /// yet (only the last try's is), an overrun is its public update, and a pause the
    /// window guard's.
    pub fn of(kind: &str, body: &serde_json::Value) -> Option<TeamEvent> {
        let field = |f: &str| body.get(f).and_then(|v| v.as_str());
        Some(match kind {
            "run_started" => TeamEvent::RunStarted,
            "step_failed" | "step_timed_out" => TeamEvent::StepFailed,
            "rollback_started" => TeamEvent::RollbackStarted,
            "run_completed" | "run_rolled_back" | "run_failed" | "run_aborted" => {
                TeamEvent::RunEnded
            }
            "approval_requested" => TeamEvent::ApprovalWaiting,
            "published" if field("kind") == Some("overrun") => TeamEvent::Overrun,
            "run_paused" if body.get("guard").is_some_and(|g| !g.is_null()) => {
                TeamEvent::GuardPaused
            }
            _ => return None,
        })
    }
}

/// How the runner connects to hosts: defaults that a host overrides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ssh {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<String>,
    pub known_hosts: KnownHosts,
    /// Any OpenSSH `-o` option (`ServerAliveInterval: "10"`).
    pub options: IndexMap<String, String>,
}

/// What ssh does with a host key it has not seen (a changed key is always refused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KnownHosts {
    /// Only hosts whose key is in known_hosts (`StrictHostKeyChecking=yes`).
    #[default]
    Strict,
    /// A new host's key is added; a changed one is refused (`accept-new`).
    AcceptNew,
}

/// How a host step rolls out: in waves, with gates between them.
#[derive(Debug, Clone, Default)]
pub struct Rollout {
    /// How many of the step's hosts are done when each wave ends (the last reaches all).
    pub waves: Vec<WaveSize>,
    /// Checked after each wave but the last, for every host done so far.
    pub between_waves: Vec<Condition>,
    pub pause_between_waves: Option<Duration>,
    pub approve_between_waves: bool,
}

/// The reach of one wave: a count of hosts, or a share of the step's hosts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WaveSize {
    Count(u64),
    Percent(f64),
}

impl Rollout {
    /// Where each wave ends, as a count of the step's `total` hosts: increasing, the last
    /// `total`; a share is rounded up, so a wave is never empty of hosts it promised.
    pub fn wave_ends(&self, total: usize) -> Vec<usize> {
        let mut ends: Vec<usize> = Vec::with_capacity(self.waves.len() + 1);
        for w in &self.waves {
            let n = match *w {
                WaveSize::Count(n) => usize::try_from(n).unwrap_or(usize::MAX),
                WaveSize::Percent(p) => ((total as f64) * p / 100.0).ceil() as usize,
            }
            .min(total);
            if n > 0 && ends.last().is_none_or(|&last| n > last) {
                ends.push(n);
            }
        }
        if ends.last() != Some(&total) && total > 0 {
            ends.push(total);
        }
        ends
    }
}

/// The maintenance window.
#[derive(Debug, Clone)]
pub struct Window {
    pub start: Option<DateTime<Utc>>,
    pub duration: Option<Duration>,
    /// Zone for display on the page and in reports.
    pub timezone: Tz,
}

/// How the run appears on the status page.
#[derive(Debug, Clone)]
pub struct StatusPage {
    pub components: Vec<String>,
    pub announce_before: Option<Duration>,
    /// Update templates replacing the defaults, by kind.
    pub updates: IndexMap<String, String>,
    /// How far past `expected` a step is announced as late.
    pub overrun_after: Margin,
    /// At most one overrun update per this interval.
    pub overrun_every: Duration,
}

/// A margin past a planned duration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Margin {
    Fixed(Duration),
    /// A share of the planned duration, in percent.
    Percent(f64),
}

impl Default for Margin {
    fn default() -> Self {
        Margin::Fixed(Duration::ZERO)
    }
}

impl Margin {
    /// The margin for a step planned to take `expected`.
    pub fn of(self, expected: Duration) -> Duration {
        match self {
            Margin::Fixed(d) => d,
            // Saturating: a share of a long estimate must not overflow (or panic).
            Margin::Percent(p) => Duration::try_from_secs_f64(expected.as_secs_f64() * p / 100.0)
                .unwrap_or(Duration::MAX),
        }
    }
}

/// Default interval between overrun updates.
pub const OVERRUN_EVERY: Duration = Duration::from_secs(15 * 60);

impl Default for StatusPage {
    fn default() -> Self {
        StatusPage {
            components: Vec::new(),
            announce_before: None,
            updates: IndexMap::new(),
            overrun_after: Margin::default(),
            overrun_every: OVERRUN_EVERY,
        }
    }
}

/// Kinds of public update a runbook's `status_page.updates` may replace.
pub const UPDATE_KINDS: &[&str] = &[
    "scheduled",
    "in_progress",
    "step_started",
    "overrun",
    "verifying",
    "no_go",
    "stopped_before_changes",
    "rolling_back",
    "completed",
    "rolled_back",
    "failed",
    "aborted",
];

/// A list of items for fan-out.
#[derive(Debug, Clone)]
pub enum Target {
    /// Items written in the runbook.
    Static(Vec<Value>),
    /// Items returned by a query at run time, one per row.
    Query { sql: String, database: String },
}

/// The kind of a step: what it is for, and which built-in behaviour it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Backup,
    Patch,
    Migrate,
    #[serde(alias = "optimize")]
    Optimise,
    Install,
    Verify,
    Test,
    Reopen,
    Close,
    Approve,
    Wait,
    Announce,
    /// Restores the target from a checkpoint's backup (used in `restore:`).
    Restore,
}

impl Kind {
    /// The name as written in runbooks.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Backup => "backup",
            Kind::Patch => "patch",
            Kind::Migrate => "migrate",
            Kind::Optimise => "optimise",
            Kind::Install => "install",
            Kind::Verify => "verify",
            Kind::Test => "test",
            Kind::Reopen => "reopen",
            Kind::Close => "close",
            Kind::Approve => "approve",
            Kind::Wait => "wait",
            Kind::Announce => "announce",
            Kind::Restore => "restore",
        }
    }

    /// Whether this kind has a built-in behaviour (and so a typed `with`: see
    /// [`super::with::With`]).
    pub fn has_builtin(self) -> bool {
        matches!(
            self,
            Kind::Backup | Kind::Verify | Kind::Restore | Kind::Migrate | Kind::Optimise
        )
    }

    /// Outputs the built-in behaviour of this kind records, usable as
    /// `{{steps.ID.outputs.NAME}}` by later steps.
    pub fn builtin_outputs(self) -> &'static [&'static str] {
        match self {
            Kind::Backup => &[
                "path",
                "size_bytes",
                "sha256",
                "format",
                "duration",
                "duration_ms",
                "database",
                "server_version",
                "tables",
                "row_counts",
                "row_counts_in_snapshot",
                "source",
            ],
            Kind::Migrate => &["from_version", "to_version", "applied", "direction"],
            Kind::Optimise => &["actions", "size_before", "size_after"],
            Kind::Verify => &[
                "checks",
                "skipped",
                "restored_from",
                "tables",
                "format",
                "duration",
                "duration_ms",
            ],
            Kind::Restore => &[
                "restored_from",
                "database",
                "old_database",
                "duration",
                "duration_ms",
            ],
            Kind::Approve => &["by", "decision"],
            _ => &[],
        }
    }
}

/// What the engine does when a step fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Undo completed steps back to the last checkpoint, then end the run `rolled_back`.
    #[default]
    Rollback,
    /// Stop and wait for the operator (`runbook resume`).
    Pause,
    /// Stop without undoing anything.
    Abort,
    /// Record the failure and carry on.
    Continue,
}

impl OnFailure {
    /// The name as written in runbooks.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Rollback => "rollback",
            OnFailure::Pause => "pause",
            OnFailure::Abort => "abort",
            OnFailure::Continue => "continue",
        }
    }
}

/// What an `approve` step does when nobody decides within its `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// The step times out and fails; `on_failure` applies.
    #[default]
    Reject,
    /// The run goes on as if approved (recorded as approved by `timeout`).
    Approve,
}

/// A step state a precondition can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    #[default]
    Succeeded,
    Failed,
    Skipped,
    TimedOut,
    RolledBack,
}

/// One step of a runbook.
#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub kind: Kind,
    pub title: Option<String>,
    pub expected: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Retries,
    pub checkpoint: bool,
    pub requires: Vec<String>,
    pub preconditions: Vec<Condition>,
    /// How long to keep re-checking failing preconditions before failing the step.
    pub wait_for: Option<Duration>,
    pub checks: Vec<Condition>,
    pub until: Vec<Condition>,
    pub interval: Option<Duration>,
    pub with: IndexMap<String, Value>,
    pub run: Option<Box<Action>>,
    pub rollback: Option<Box<Action>>,
    pub restore: Option<Box<Action>>,
    pub on_failure: OnFailure,
    pub on_timeout: OnTimeout,
    pub reason: Option<String>,
    pub for_each: Option<ForEach>,
    /// A host step's waves and gates (`waves`, `between_waves` ...).
    pub rollout: Option<Box<Rollout>>,
    /// How a fan-out's items are named (a template with `{{item}}`) when they have no
    /// `name` of their own.
    pub item_label: Option<String>,
    pub concurrency: u32,
    pub max_failures: MaxFailures,
    pub idempotent: bool,
    pub public: Public,
    /// The step's own update templates: `started`, `overrun`.
    pub updates: IndexMap<String, String>,
    pub outputs: Vec<String>,
}

impl Step {
    /// The title people read: the step's own, or its id.
    pub fn display_title(&self) -> &str {
        self.title.as_deref().unwrap_or(&self.id)
    }
}

/// Attempts after the first failure, with exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retries {
    pub max: u32,
    pub backoff: Duration,
}

/// Where a fan-out step's items come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ForEach {
    /// `{{targets.NAME}}`.
    Target(String),
    /// A list written on the step.
    Items(Vec<Value>),
    /// `on:`: the hosts (indexes into the inventory), one item each.
    Hosts(Vec<usize>),
}

/// How many fan-out items may fail before the step fails.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum MaxFailures {
    #[default]
    None,
    Count(u64),
    Percent(f64),
}

/// Whether and how a step appears on the status page.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Public {
    /// Shown with its title.
    #[default]
    Shown,
    /// Shown with this text instead of the title.
    Text(String),
    /// Never shown.
    Hidden,
}

/// Something the engine does: a built-in kind's behaviour or a generic action.
#[derive(Debug, Clone)]
pub enum Action {
    Builtin {
        kind: Kind,
        with: IndexMap<String, Value>,
    },
    Shell {
        command: String,
        env: IndexMap<String, String>,
        cwd: Option<String>,
        timeout: Option<Duration>,
    },
    Sql {
        sql: String,
        database: String,
        /// All statements in one transaction (default true).
        transaction: bool,
    },
    Http(Box<HttpCheck>),
    /// Uploads a file or a directory to each host of the step.
    Copy {
        src: String,
        dest: String,
        /// Permission bits of the file (`0644`), when given.
        mode: Option<u32>,
    },
}

impl Action {
    /// A short description for plans and logs.
    pub fn describe(&self) -> String {
        match self {
            Action::Builtin { kind, .. } => format!("{} (built-in)", kind.as_str()),
            Action::Shell { command, .. } => format!("shell: {command}"),
            Action::Sql { .. } => "sql".to_owned(),
            Action::Http(h) => format!("http {} {}", h.method, h.url),
            Action::Copy { src, dest, .. } => format!("copy {src} to {dest}"),
        }
    }
}

/// An HTTP request with expectations.
#[derive(Debug, Clone)]
pub struct HttpCheck {
    pub url: String,
    pub method: String,
    pub headers: IndexMap<String, String>,
    pub body: Option<String>,
    pub expect_status: u16,
    pub expect_contains: Option<String>,
    /// JSON pointer → expected value.
    pub expect_json: IndexMap<String, Value>,
    /// Latency bound.
    pub within: Option<Duration>,
    pub timeout: Option<Duration>,
}

/// A condition: a precondition, a test check or a `wait` condition.
#[derive(Debug, Clone)]
pub struct Condition {
    pub check: Check,
    /// What the condition means, shown when it fails.
    pub message: Option<String>,
}

/// What a condition tests.
#[derive(Debug, Clone)]
pub enum Check {
    /// The first column of the first row is `true` (or equals `expect`).
    Sql {
        sql: String,
        database: String,
        expect: Option<Value>,
    },
    /// Boxed: the rarer, larger check keeps every condition small.
    Http(Box<HttpCheck>),
    /// Exit status 0.
    Shell {
        command: String,
        env: IndexMap<String, String>,
    },
    /// At least this much of the window is left.
    Window { remaining_at_least: Duration },
    /// Another step is in this state.
    Step { id: String, state: StepState },
}
