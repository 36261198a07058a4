//! The runbook as written: serde shapes only. These types never leave the `runbook`
//! module; `validate` turns them into the types of `model`. The JSON Schema of the
//! format (`runbook schema`) is derived from them, so the two cannot drift apart.

use std::time::Duration;

use indexmap::IndexMap;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::DeserializeOwned;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

pub use super::de::{Lenient, lenient};
use super::model::{Kind, OnFailure, OnTimeout, StepState};
use super::yaml::{Node, NodeValue, Scalar};
use crate::duration::parse_duration;

/// A top-level field, absent when missing or null.
fn field<T: DeserializeOwned>(root: &Node, name: &str) -> Option<Lenient<T>> {
    let (_, node) = root.entry(name)?;
    match &node.value {
        NodeValue::Scalar(Scalar::Null, _) => None,
        _ => Some(lenient(node)),
    }
}

/// The step nodes, each read into a `RawStep` only when it is validated: a large
/// runbook never holds all its raw steps at once.
#[derive(Debug)]
pub struct StepList<'a>(pub &'a [Node]);

impl JsonSchema for StepList<'_> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Steps".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        <Vec<RawStep>>::json_schema(generator)
    }
    fn inline_schema() -> bool {
        true
    }
}

impl<'a> RawRunbook<'a> {
    /// Reads the top level field by field, so one bad value does not hide the problems
    /// in the others.
    pub fn from_node(root: &'a Node) -> RawRunbook<'a> {
        let steps = root.entry("steps").and_then(|(_, node)| match &node.value {
            NodeValue::Scalar(Scalar::Null, _) => None,
            NodeValue::Seq(items) => Some(Lenient {
                value: Some(StepList(items)),
                errors: Vec::new(),
            }),
            _ => match lenient::<Vec<serde::de::IgnoredAny>>(node) {
                Lenient {
                    value: None,
                    errors,
                } => Some(Lenient {
                    value: None,
                    errors,
                }),
                Lenient { value: Some(_), .. } => None,
            },
        });
        RawRunbook {
            runbook: field(root, "runbook"),
            title: field(root, "title"),
            summary: field(root, "summary"),
            window: field(root, "window"),
            status_page: field(root, "status_page"),
            vars: field(root, "vars"),
            secrets: field(root, "secrets"),
            targets: field(root, "targets"),
            hosts: field(root, "hosts"),
            inventory: field(root, "inventory"),
            ssh: field(root, "ssh"),
            notify: field(root, "notify"),
            steps,
        }
    }
}

impl<T: JsonSchema> JsonSchema for Lenient<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
    fn inline_schema() -> bool {
        T::inline_schema()
    }
}

/// A duration written like `20m`, `1h30m` or `90s`.
#[derive(Debug, Clone, Copy)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as `20m`, `1h30m` or `90s`")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Dur, E> {
                parse_duration(s).map(Dur).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "the duration `{n}` has no unit; write it like `{n}m`, `{n}s` or `{n}h`"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Dur, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "a duration cannot be negative (`{n}`); write it like `20m`"
                    ))),
                }
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "the duration `{n}` has no unit; write it like `1h30m` or `90s`"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Dur {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration such as `20m`, `1h30m` or `90s`.",
            "pattern": "^\\s*([0-9]+\\s*(nanos|nsec|ns|usec|us|µs|millis|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w|months|month|M|years|year|yrs|yr|y)\\s*)+$",
            "examples": ["20m", "1h30m", "90s"]
        })
    }
}

/// A scalar (string, number or boolean) taken as text, for environment values.
#[derive(Debug, Clone)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Text(s)),
            v @ (Value::Number(_) | Value::Bool(_)) => Ok(Text(v.to_string())),
            _ => Err(serde::de::Error::custom(
                "expected a string, a number or a boolean",
            )),
        }
    }
}

impl JsonSchema for Text {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Text".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["string", "number", "boolean"] })
    }
}

/// A runbook file (format v1).
#[derive(Debug, JsonSchema)]
#[schemars(deny_unknown_fields, title = "runbook v1")]
pub struct RawRunbook<'a> {
    /// The runbook id, `[a-z0-9-]+`: names its runs, lease and history.
    #[schemars(required)]
    pub runbook: Option<Lenient<String>>,
    /// Public title of the maintenance (defaults to the id).
    pub title: Option<Lenient<String>>,
    /// Public summary shown on the status page.
    pub summary: Option<Lenient<String>>,
    /// The maintenance window.
    pub window: Option<Lenient<RawWindow>>,
    /// How the maintenance appears on the status page.
    pub status_page: Option<Lenient<RawStatusPage>>,
    /// Template values (`{{vars.NAME}}`), overridable with `--var NAME=VALUE`.
    pub vars: Option<Lenient<IndexMap<String, Value>>>,
    /// Environment variables whose values are masked in every output.
    pub secrets: Option<Lenient<Vec<String>>>,
    /// Lists for fan-out (`for_each: "{{targets.NAME}}"`): static or queried.
    pub targets: Option<Lenient<IndexMap<String, RawTarget>>>,
    /// The servers, by group: each a name (also its address) or `{ name, address, port,
    /// user, identity_file, options, vars }`.
    pub hosts: Option<Lenient<IndexMap<String, Vec<RawHost>>>>,
    /// An Ansible inventory file (INI or YAML), relative to the current directory.
    pub inventory: Option<Lenient<String>>,
    /// How to reach the hosts over SSH: defaults that a host overrides.
    pub ssh: Option<Lenient<RawSsh>>,
    /// Team notifications (not public): which events go to which webhook, Slack
    /// incoming webhook or email address.
    pub notify: Option<Lenient<Vec<RawNotify>>>,
    /// The steps, run in order (`requires` can pull a step earlier).
    #[schemars(required)]
    pub steps: Option<Lenient<StepList<'a>>>,
    // Unknown top-level fields are reported by `validate` from the node tree, so that one
    // of them does not hide the problems in the rest of the file.
}

/// The maintenance window.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    /// Planned start, RFC 3339 (`2026-11-24T19:00:00Z`); without an offset it is read in
    /// `timezone`.
    pub start: Option<String>,
    /// Length of the window; the deadline is start + duration.
    pub duration: Option<Dur>,
    /// IANA time zone for display (`Europe/London`); default UTC.
    pub timezone: Option<String>,
}

/// Status page settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStatusPage {
    /// Components set to `under_maintenance` while the service is closed.
    #[serde(default)]
    pub components: Vec<String>,
    /// How long before the window the maintenance is shown as scheduled.
    pub announce_before: Option<Dur>,
    /// When a step running late is announced: `{ after, every }`.
    pub overrun: Option<RawOverrun>,
    /// Public update templates of this runbook, replacing the ones in `templates/`:
    /// `scheduled`, `in_progress`, `step_started`, `overrun`, `verifying`, `no_go`,
    /// `stopped_before_changes`, `rolling_back`, `completed`, `rolled_back`, `failed`,
    /// `aborted`.
    #[serde(default)]
    pub updates: IndexMap<String, String>,
}

/// When a step running past `expected` is announced.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOverrun {
    /// How far past `expected` before the first update: a duration (`5m`) or a share of
    /// `expected` (`20%`). Default 0.
    pub after: Option<String>,
    /// At most one update per this interval while it stays late (default 15m).
    pub every: Option<Dur>,
}

/// A fan-out list: items written here, or a query whose rows are the items.
#[derive(Debug, JsonSchema)]
#[schemars(untagged)]
pub enum RawTarget {
    List(Vec<Value>),
    Query(RawQuery),
}

// Written by hand rather than `untagged`, so that a mistake inside the mapping keeps its
// own message and path instead of becoming "did not match any variant".
impl<'de> Deserialize<'de> for RawTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawTarget;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of items, or a query `{ sql, database }`")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, a: A) -> Result<RawTarget, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(a)).map(RawTarget::List)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, a: A) -> Result<RawTarget, A::Error> {
                RawQuery::deserialize(MapAccessDeserializer::new(a)).map(RawTarget::Query)
            }
        }
        d.deserialize_any(V)
    }
}

/// A query that yields fan-out items.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawQuery {
    pub sql: String,
    pub database: String,
}

/// A host of the inline inventory: a name that is also its address, or a mapping.
#[derive(Debug, JsonSchema)]
#[schemars(untagged)]
pub enum RawHost {
    Name(String),
    Detail(Box<RawHostDetail>),
}

impl<'de> Deserialize<'de> for RawHost {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawHost;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a host name, or `{ name, address, port, user, vars }`")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RawHost, E> {
                Ok(RawHost::Name(s.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, a: A) -> Result<RawHost, A::Error> {
                RawHostDetail::deserialize(MapAccessDeserializer::new(a))
                    .map(|d| RawHost::Detail(Box::new(d)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A host with its own settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHostDetail {
    /// What the host is called (`{{host.name}}`, logs, the report).
    pub name: String,
    /// Where ssh connects (default: the name).
    pub address: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity_file: Option<String>,
    /// OpenSSH `-o` options for this host.
    #[serde(default)]
    pub options: IndexMap<String, Text>,
    /// Values of this host (`{{host.vars.NAME}}`).
    #[serde(default)]
    pub vars: IndexMap<String, Value>,
}

/// One team notification target: exactly one of `webhook`, `slack`, `email`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    /// POST each event as JSON to this URL (templates such as `{{secrets.HOOK}}` work).
    pub webhook: Option<String>,
    /// A Slack-compatible incoming webhook URL: a readable message.
    pub slack: Option<String>,
    /// Mail each event to this address (the sender needs `--smtp`).
    pub email: Option<String>,
    /// Which events: `run_started`, `step_failed`, `rollback_started`, `run_ended`,
    /// `approval_waiting`, `overrun`, `guard_paused` (default: all of them).
    pub events: Option<Vec<String>>,
}

/// SSH defaults for every host.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSsh {
    pub user: Option<String>,
    pub port: Option<u16>,
    /// The private key (`~/` is the home directory).
    pub identity_file: Option<String>,
    /// `strict` (default): only known host keys; `accept_new`: a new host's key is
    /// added. A changed key is always refused.
    pub known_hosts: Option<super::model::KnownHosts>,
    /// Any OpenSSH `-o` option.
    #[serde(default)]
    pub options: IndexMap<String, Text>,
}

/// `on:`: one group or host, or a list of them.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "expected a group or host name (`web`, `all`), or a list of them"
)]
pub enum RawOn {
    One(String),
    Many(Vec<String>),
}

impl RawOn {
    pub fn names(&self) -> Vec<&str> {
        match self {
            RawOn::One(s) => vec![s.as_str()],
            RawOn::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// A wave's reach: a count of hosts or a percentage of the step's hosts.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "expected a count of hosts such as `1` or a percentage such as `25%`"
)]
pub enum RawWave {
    Count(u64),
    Percent(String),
}

/// A file or directory to upload to each host.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCopy {
    /// The local file or directory (relative to the current directory).
    pub src: String,
    /// Where it goes on the host.
    pub dest: String,
    /// Permission bits of the file, as octal text (`"0644"`).
    pub mode: Option<String>,
}

/// One step.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// Step id, unique in the runbook: `[a-z0-9][a-z0-9_-]*`.
    pub id: String,
    /// What the step is; database kinds have built-in behaviour.
    // Read as optional so that a step whose kind is missing or unknown still has its
    // other fields checked; `validate` reports it missing.
    #[schemars(required, schema_with = "kind_schema")]
    pub kind: Option<Kind>,
    /// Public text for the step (templates allowed).
    pub title: Option<String>,
    /// Planned duration: ETA, overrun alerts, window guard.
    pub expected: Option<Dur>,
    /// The step fails when an attempt runs longer.
    pub timeout: Option<Dur>,
    /// Retries after a failed attempt: a count, or `{ max, backoff }`.
    pub retries: Option<RawRetries>,
    /// A rollback point: a failure later rolls back to here.
    #[serde(default)]
    pub checkpoint: bool,
    /// Steps that must have succeeded before this one starts.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Conditions checked before the step starts.
    #[serde(default)]
    pub preconditions: Vec<RawCondition>,
    /// Re-check failing preconditions for this long before failing the step.
    pub wait_for: Option<Dur>,
    /// Checks a `test` or `verify` step runs.
    #[serde(default)]
    pub checks: Vec<RawCondition>,
    /// Conditions a `wait` step polls until they all hold.
    #[serde(default)]
    pub until: Vec<RawCondition>,
    /// Poll interval of a `wait` step (default 10s).
    pub interval: Option<Dur>,
    /// Parameters of the kind's built-in behaviour.
    #[serde(default)]
    pub with: IndexMap<String, Value>,
    /// A generic action: `shell`, `sql` or `http`.
    pub run: Option<RawAction>,
    /// How to undo this step when the run rolls back.
    pub rollback: Option<RawAction>,
    /// On a checkpoint: restore from its backup instead of undoing later steps one by one.
    pub restore: Option<RawAction>,
    /// rollback (default) | pause | abort | continue.
    pub on_failure: Option<OnFailure>,
    /// An `approve` step whose `timeout` passes: `reject` (default: the step fails and
    /// `on_failure` applies) or `approve` (the run goes on).
    pub on_timeout: Option<OnTimeout>,
    /// Why the failure policy is what it is (required for `continue` with a `rollback`).
    pub reason: Option<String>,
    /// Fan-out: `"{{targets.NAME}}"` or a list; each item is `{{item}}`.
    pub for_each: Option<RawForEach>,
    /// What a fan-out item is called in logs, `status`, log file names and the report
    /// (a template with `{{item}}`), for items without a `name` of their own.
    pub item_label: Option<String>,
    /// Runs once per host over SSH: groups or host names, `all` for every host.
    pub on: Option<RawOn>,
    /// A host step in waves: counts or percentages of its hosts done by the end of each
    /// (`[1, 25%, 100%]`).
    pub waves: Option<Vec<RawWave>>,
    /// Conditions checked after each wave but the last, on every host done so far.
    #[serde(default)]
    pub between_waves: Vec<RawCondition>,
    /// Wait this long after each wave but the last (after its gates).
    pub pause_between_waves: Option<Dur>,
    /// Wait for `runbook approve RUN STEP` after each wave but the last (after its gates
    /// and pause); `reject` fails the step.
    #[serde(default)]
    pub approve_between_waves: bool,
    /// How many items run at once (default 1).
    pub concurrency: Option<u32>,
    /// Failed items tolerated: a count or a percentage (`10%`); default 0.
    pub max_failures: Option<RawMaxFailures>,
    /// Safe to run again after a crash left it in doubt.
    #[serde(default)]
    pub idempotent: bool,
    /// `false` hides the step from the status page; a string replaces its title there.
    pub public: Option<RawPublic>,
    /// Names of the outputs the step's `run` action produces.
    #[serde(default)]
    pub outputs: Vec<String>,
}

/// A step's `kind` in the schema: required, and one of the kinds.
fn kind_schema(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<Kind>()
}

/// Retries: a count, or a policy.
#[derive(Debug, JsonSchema)]
#[schemars(untagged)]
pub enum RawRetries {
    Count(u32),
    Policy(RawRetryPolicy),
}

impl<'de> Deserialize<'de> for RawRetries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawRetries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of retries, or `{ max: N, backoff: DURATION }`")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<RawRetries, E> {
                u32::try_from(n)
                    .map(RawRetries::Count)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(n), &self))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<RawRetries, E> {
                u32::try_from(n)
                    .map(RawRetries::Count)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(n), &self))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, a: A) -> Result<RawRetries, A::Error> {
                RawRetryPolicy::deserialize(MapAccessDeserializer::new(a)).map(RawRetries::Policy)
            }
        }
        d.deserialize_any(V)
    }
}

/// Retry policy with exponential backoff.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRetryPolicy {
    /// Attempts after the first.
    pub max: u32,
    /// Wait before the first retry; doubles each time (default 10s).
    pub backoff: Option<Dur>,
}

/// Fan-out source.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "expected a reference such as `{{targets.tenants}}`, or a list of items"
)]
pub enum RawForEach {
    Reference(String),
    Items(Vec<Value>),
}

/// Tolerated failures.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "expected a count such as `2` or a percentage such as `10%`"
)]
pub enum RawMaxFailures {
    Count(u64),
    Percent(String),
}

/// Status page visibility.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "expected `false` to hide the step, the text to show instead of its title, or `{ title, started, overrun }`"
)]
pub enum RawPublic {
    Flag(bool),
    Text(String),
    Detail(RawPublicDetail),
}

/// A step's public text and its own update templates.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPublicDetail {
    /// Shown instead of the step's title.
    pub title: Option<String>,
    /// The update published when the step starts (replaces `step_started`, or
    /// `verifying` for a `test`/`verify` step).
    pub started: Option<String>,
    /// The update published when the step runs past `expected`.
    pub overrun: Option<String>,
}

/// A condition: exactly one of `sql`, `http`, `shell`, `window`, `step`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCondition {
    /// A query whose first column of the first row must be true (or equal `expect`).
    pub sql: Option<String>,
    /// Database URL for `sql` (`postgres://...`, `sqlite://...`).
    pub database: Option<String>,
    /// Expected value of the query's first column.
    pub expect: Option<Value>,
    /// An HTTP request with expectations.
    pub http: Option<RawHttp>,
    /// A shell command that must exit 0.
    pub shell: Option<String>,
    /// Environment for `shell`.
    pub env: Option<IndexMap<String, Text>>,
    /// A window condition.
    pub window: Option<RawWindowCondition>,
    /// Another step that must be in `state`.
    pub step: Option<String>,
    /// State required of `step` (default succeeded).
    pub state: Option<StepState>,
    /// What the condition means, shown when it fails.
    pub message: Option<String>,
}

/// A condition on the time left in the window.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWindowCondition {
    pub remaining_at_least: Dur,
}

/// An HTTP request and what its response must be.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub url: String,
    /// Default GET.
    pub method: Option<String>,
    #[serde(default)]
    pub headers: IndexMap<String, Text>,
    pub body: Option<String>,
    /// Default 200.
    pub expect_status: Option<u16>,
    /// Text the body must contain.
    pub expect_contains: Option<String>,
    /// JSON pointer → value the response body must have there.
    #[serde(default)]
    pub expect_json: IndexMap<String, Value>,
    /// Latency bound.
    pub within: Option<Dur>,
    pub timeout: Option<Dur>,
}

/// An action: a built-in `kind` with `with`, or exactly one of `shell`, `sql`, `http`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAction {
    /// A built-in behaviour (e.g. `migrate` with `to:` for a rollback).
    pub kind: Option<Kind>,
    /// Parameters of the built-in behaviour.
    pub with: Option<IndexMap<String, Value>>,
    /// A shell command (run with `sh -c` in its own process group).
    pub shell: Option<String>,
    /// SQL statements.
    pub sql: Option<String>,
    /// Database URL for `sql`.
    pub database: Option<String>,
    /// Run the SQL statements in one transaction (default true).
    pub transaction: Option<bool>,
    /// An HTTP request.
    pub http: Option<RawHttp>,
    /// Upload a file or directory to the step's hosts.
    pub copy: Option<RawCopy>,
    /// Environment for `shell`.
    pub env: Option<IndexMap<String, Text>>,
    /// Working directory for `shell`.
    pub cwd: Option<String>,
    pub timeout: Option<Dur>,
}

/// The JSON Schema of the runbook format.
pub fn schema() -> Value {
    schemars::schema_for!(RawRunbook).to_value()
}
