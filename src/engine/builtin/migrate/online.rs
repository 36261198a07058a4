//! Online migrations on PostgreSQL: the next `NNNN_name.yaml` of the directory, in three
//! phases, so that the old and the new version of the application run side by side on
//! the same tables and no one is taken offline.
//!
//! - `start` (expand): in one transaction under `lock_timeout` (tried again after a lock
//!   timeout), the additive DDL (new columns, nullable; a NOT NULL one gets a `NOT VALID`
//!   check), a trigger per table that keeps old and new columns in step for writes
//!   through either version (the writer's `search_path` says which), and two schemas of
//!   views over every table, `SCHEMA_v<N-1>` (the old shape) and `SCHEMA_v<N>` (the
//!   new). Then the backfill, in batches by primary key (by `ctid` without one), each
//!   batch aiming at `batch_time`, its cursor committed with it in `runbook_online`, so a
//!   step run again goes on where it was; then every row is checked (new = up(old)), the
//!   NOT NULL checks validated, and indexes built `CONCURRENTLY`.
//! - `complete` (contract): drops the old schema, the triggers and the old columns,
//!   renames what is renamed, sets NOT NULL, and records the version in
//!   `runbook_migrations`.
//! - `abort` (the rollback of `start`, at any point before `complete`): removes all that
//!   `start` added; the old version never stopped working.

use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde_json::Value;

use super::tracking::lit;
use super::{Policy, show};
use crate::engine::action::StepLog;
use crate::engine::target::Target;
use crate::runbook::online::{Op, is_ident, parse};
use crate::runbook::with::{MigrateWith, Phase};
use crate::sql::migrations::Migration;

/// Where an online migration under way keeps its state (and the backfill its cursor).
const STATE: &str = "runbook_online";
/// The first backfill batch; later ones are sized to `batch_time`.
const FIRST_BATCH: i64 = 1000;
const MAX_BATCH: i64 = 100_000;

/// What a database says of the online migration under way.
#[derive(Debug, Clone)]
struct Started {
    version: u64,
    name: String,
    checksum: String,
    phase: String,
    created_old: bool,
    rows: i64,
    /// Table → last key backfilled.
    cursor: serde_json::Map<String, Value>,
}

fn q(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn duration(text: Option<&str>, field: &str, default: Duration) -> Result<Duration, String> {
    match text {
        None => Ok(default),
        Some(t) => crate::duration::parse_duration(t)
            .map_err(|e| format!("`with` `{field}` of a `migrate` step: {e}")),
    }
}

/// One phase of the next online migration.
pub(super) async fn run(
    conn: &mut Target,
    p: &MigrateWith,
    phase: Phase,
    policy: &Policy,
    migrations: &[Migration],
    log: &mut StepLog,
    unit: (&str, &str),
) -> Result<IndexMap<String, Value>, String> {
    if !conn.is_postgres() {
        return Err("online migrations (`phase`) need PostgreSQL".into());
    }
    let schema = p.schema.clone().unwrap_or_else(|| "public".into());
    if !is_ident(&schema) {
        return Err(format!(
            "`with` `schema` `{schema}` is not a plain identifier"
        ));
    }
    let o = Online {
        conn,
        schema,
        policy,
        log,
        unit: (unit.0.to_owned(), unit.1.to_owned()),
    };
    o.phase(p, phase, migrations).await
}

struct Online<'a> {
    conn: &'a mut Target,
    schema: String,
    policy: &'a Policy,
    log: &'a mut StepLog,
    /// The run and step the work is for (its progress is reported under them).
    unit: (String, String),
}

impl Online<'_> {
    async fn rows(&mut self, sql: &str, tx: bool) -> Result<Vec<IndexMap<String, Value>>, String> {
        self.conn.rows(sql, tx).await
    }

    async fn one(&mut self, sql: &str) -> Result<Value, String> {
        Ok(self
            .rows(sql, false)
            .await?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().map(|(_, v)| v))
            .unwrap_or(Value::Null))
    }

    /// Statements in one transaction under `lock_timeout`, tried again after a lock
    /// timeout as `retries` says.
    async fn locked(&mut self, what: &str, sql: &str) -> Result<(), String> {
        let ms = self.policy.lock_timeout.as_millis().max(1);
        let body = format!("SET LOCAL lock_timeout = '{ms}ms';\n{sql}");
        let mut wait = Duration::from_millis(200);
        for attempt in 0..=self.policy.retries {
            match self.rows(&body, true).await {
                Ok(_) => return Ok(()),
                Err(e) if e.contains("55P03") && attempt < self.policy.retries => {
                    self.log.line(
                        "migrate",
                        &format!(
                            "{what}: a lock wait passed {}; trying again in {}",
                            show(self.policy.lock_timeout),
                            show(wait)
                        ),
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(format!("{what}: {e}; nothing of it was changed")),
            }
        }
        unreachable!("the last attempt returns")
    }

    async fn applied(&mut self) -> Result<u64, String> {
        let exists = self
            .one("SELECT to_regclass('runbook_migrations') IS NOT NULL AS e")
            .await?;
        if exists != Value::Bool(true) {
            return Ok(0);
        }
        let v = self
            .one("SELECT coalesce(max(version), 0)::bigint AS v FROM runbook_migrations")
            .await?;
        Ok(v.as_i64().unwrap_or(0) as u64)
    }

    async fn started(&mut self) -> Result<Option<Started>, String> {
        let exists = self
            .one(&format!("SELECT to_regclass('{STATE}') IS NOT NULL AS e"))
            .await?;
        if exists != Value::Bool(true) {
            return Ok(None);
        }
        let rows = self
            .rows(&format!("SELECT version::bigint AS version, name, checksum, phase, created_old, rows::bigint AS rows, cursor::text AS cursor FROM {STATE} ORDER BY version"), false)
            .await?;
        Ok(rows.into_iter().next().map(|r| Started {
            version: r["version"].as_i64().unwrap_or(0) as u64,
            name: r["name"].as_str().unwrap_or_default().to_owned(),
            checksum: r["checksum"].as_str().unwrap_or_default().to_owned(),
            phase: r["phase"].as_str().unwrap_or_default().to_owned(),
            created_old: r["created_old"] == Value::Bool(true),
            rows: r["rows"].as_i64().unwrap_or(0),
            cursor: r["cursor"]
                .as_str()
                .and_then(|c| serde_json::from_str::<Value>(c).ok())
                .and_then(|v| v.as_object().cloned())
                .unwrap_or_default(),
        }))
    }

    async fn phase(
        mut self,
        p: &MigrateWith,
        phase: Phase,
        migrations: &[Migration],
    ) -> Result<IndexMap<String, Value>, String> {
        // The lock classic migrations take: one migrator per database.
        super::tracking::advisory_lock(self.conn).await?;
        let applied = self.applied().await?;
        let under_way = self.started().await?;
        let next = applied + 1;
        let m = migrations.iter().find(|m| m.version == next);
        match phase {
            Phase::Start => {
                let Some(m) = m.filter(|m| m.online) else {
                    return Err(match m {
                        Some(m) => format!(
                            "the next migration, version {next} ({}), is a classic one: apply it with a `migrate` step without `phase`",
                            m.up_file
                        ),
                        None => format!(
                            "there is no online migration to start: the database is at version {applied}, the latest in `{}`",
                            p.dir
                        ),
                    });
                };
                if let Some(s) = &under_way
                    && s.version != m.version
                {
                    return Err(format!(
                        "online migration {} ({}) is already started: complete or abort it before starting another",
                        s.version, s.name
                    ));
                }
                if let Some(s) = &under_way
                    && (s.checksum != m.checksum || s.name != m.name)
                {
                    return Err(format!(
                        "online migration {} ({}) is already started from another file than {}: complete or abort it before starting another",
                        s.version, s.name, m.up_file
                    ));
                }
                // Started in full, with another online migration after it: that one
                // waits until this one is completed (or aborted).
                if let Some(s) = &under_way
                    && s.phase == "started"
                    && let Some(later) = migrations
                        .iter()
                        .find(|x| x.online && x.version > s.version)
                {
                    return Err(format!(
                        "online migration {} ({}) is already started: complete or abort it before starting {}; nothing was changed",
                        s.version, s.name, later.up_file
                    ));
                }
                self.start(m, under_way, p).await
            }
            Phase::Complete | Phase::Abort => {
                let verb = if phase == Phase::Complete {
                    "complete"
                } else {
                    "abort"
                };
                let Some(s) = under_way else {
                    return Err(format!(
                        "no online migration is started (the database is at version {applied}): there is nothing to {verb}; `phase: start` comes first"
                    ));
                };
                let Some(m) = migrations
                    .iter()
                    .find(|m| m.version == s.version && m.online)
                else {
                    return Err(format!(
                        "online migration {} ({}) is started but its file is not in `{}`",
                        s.version, s.name, p.dir
                    ));
                };
                if m.checksum != s.checksum {
                    return Err(format!(
                        "{} changed since online migration {} was started: restore the file as it was started to {verb} it; nothing was changed",
                        m.up_file, s.version
                    ));
                }
                let ops =
                    parse(&m.up_sql).map_err(|e| format!("{}: {}", m.up_file, e[0].message))?;
                if phase == Phase::Complete {
                    if s.phase != "started" {
                        return Err(format!(
                            "online migration {} ({}) has not finished starting (its backfill is at {} rows): run its `phase: start` step again first",
                            s.version, s.name, s.rows
                        ));
                    }
                    self.complete(m, &s, &ops).await
                } else {
                    self.abort(m, &s, &ops).await
                }
            }
        }
    }

    fn old_schema(&self, v: u64) -> String {
        format!("{}_v{}", self.schema, v - 1)
    }

    fn new_schema(&self, v: u64) -> String {
        format!("{}_v{v}", self.schema)
    }

    /// The tables of the schema and their columns, in order (the runner's own left out).
    async fn tables(&mut self) -> Result<IndexMap<String, Vec<String>>, String> {
        let rows = self
            .rows(&format!(
                "SELECT c.relname AS t, a.attname AS col FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                 WHERE n.nspname = {} AND c.relkind IN ('r', 'p') AND c.relname NOT LIKE 'runbook\\_%' ORDER BY c.relname, a.attnum",
                lit(&self.schema)
            ), false)
            .await?;
        let mut out: IndexMap<String, Vec<String>> = IndexMap::new();
        for r in rows {
            let t = r["t"].as_str().unwrap_or_default().to_owned();
            out.entry(t)
                .or_default()
                .push(r["col"].as_str().unwrap_or_default().to_owned());
        }
        Ok(out)
    }

    async fn start(
        &mut self,
        m: &Migration,
        under_way: Option<Started>,
        p: &MigrateWith,
    ) -> Result<IndexMap<String, Value>, String> {
        let ops = parse(&m.up_sql).map_err(|e| format!("{}: {}", m.up_file, e[0].message))?;
        let v = m.version;
        let (old, new) = (self.old_schema(v), self.new_schema(v));
        let s = self.schema.clone();
        let started = Instant::now();
        let state = match under_way {
            Some(st) => {
                self.log.line(
                    "migrate",
                    &format!(
                        "{} was started before: going on from its backfill ({} rows)",
                        m.name, st.rows
                    ),
                );
                st
            }
            None => {
                let tables = self.tables().await?;
                check_against(&ops, &tables, &s)?;
                for op in &ops {
                    if let Some(idx) = built_index(op) {
                        let there = self
                            .one(&format!(
                                "SELECT to_regclass({}) IS NOT NULL AS e",
                                lit(&format!("{}.{}", q(&s), q(&idx)))
                            ))
                            .await?;
                        if there == Value::Bool(true) {
                            return Err(format!(
                                "an index or table named `{idx}` already exists in `{s}`: give the index another `name`; nothing was changed"
                            ));
                        }
                    }
                }
                let old_exists = self
                    .one(&format!(
                        "SELECT to_regnamespace({}) IS NOT NULL AS e",
                        lit(&old)
                    ))
                    .await?
                    == Value::Bool(true);
                let carry = self.carried(&ops, &s).await?;
                let sql = expand_sql(&ops, &tables, &s, &old, &new, !old_exists, m, &carry)?;
                self.locked(&format!("expanding {}", m.name), &sql).await?;
                self.log.line(
                    "migrate",
                    &format!("{}: expanded; views {old} (old) and {new} (new)", m.name),
                );
                self.started()
                    .await?
                    .ok_or("the migration's state row is missing after expanding")?
            }
        };
        // The backfill, table by table.
        let batch_time = duration(
            p.batch_time.as_deref(),
            "batch_time",
            Duration::from_millis(100),
        )?;
        let pause = duration(p.pause.as_deref(), "pause", Duration::ZERO)?;
        let max_lag = p
            .max_lag
            .as_deref()
            .map(|l| duration(Some(l), "max_lag", Duration::ZERO))
            .transpose()?;
        let mut rows = state.rows;
        for (table, set) in backfills(&ops) {
            rows += self
                .backfill(
                    v,
                    &table,
                    &set,
                    state.cursor.get(&table),
                    batch_time,
                    pause,
                    max_lag,
                )
                .await?;
        }
        // Every row as the new version must see it.
        for (table, col, up) in checks(&ops) {
            let bad = self
                .one(&format!(
                    "SELECT count(*)::bigint AS n FROM {}.{} WHERE {} IS DISTINCT FROM ({up})",
                    q(&s),
                    q(&table),
                    q(&col)
                ))
                .await?;
            if bad.as_i64().unwrap_or(0) != 0 {
                return Err(format!(
                    "after the backfill, {bad} rows of `{table}` have `{col}` other than `{up}`; the migration stays started (abort it with `phase: abort`)"
                ));
            }
        }
        for op in &ops {
            if let Op::AddColumn {
                table,
                name,
                nullable: false,
                ..
            } = op
            {
                self.rows(
                    &format!(
                        "ALTER TABLE {}.{} VALIDATE CONSTRAINT {}",
                        q(&s),
                        q(table),
                        q(&not_null_check(v, name))
                    ),
                    false,
                )
                .await?;
            }
            if let Op::AlterColumn { table, column, .. } = op {
                let k = not_null_check(v, &shadow(column));
                let there = self
                    .one(&format!(
                        "SELECT count(*)::bigint AS n FROM pg_constraint WHERE conname = {} AND conrelid = {}::regclass",
                        lit(&k),
                        lit(&format!("{}.{}", q(&s), q(table)))
                    ))
                    .await?;
                if there.as_i64().unwrap_or(0) > 0 {
                    self.rows(
                        &format!(
                            "ALTER TABLE {}.{} VALIDATE CONSTRAINT {}",
                            q(&s),
                            q(table),
                            q(&k)
                        ),
                        false,
                    )
                    .await?;
                }
            }
            if let Op::CreateIndex {
                table,
                columns,
                name,
                unique,
            } = op
            {
                let idx = index_name(table, columns, name.as_deref());
                // One a failure left invalid is built again.
                let invalid = self
                    .one(&format!(
                        "SELECT count(*)::bigint AS n FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = {} AND c.relname = {} AND NOT i.indisvalid",
                        lit(&s),
                        lit(&idx)
                    ))
                    .await?;
                if invalid.as_i64().unwrap_or(0) > 0 {
                    self.rows(
                        &format!("DROP INDEX CONCURRENTLY IF EXISTS {}.{}", q(&s), q(&idx)),
                        false,
                    )
                    .await?;
                }
                let cols: Vec<String> = columns.iter().map(|c| q(c)).collect();
                let sql = format!(
                    "CREATE {}INDEX CONCURRENTLY IF NOT EXISTS {} ON {}.{} ({})",
                    if *unique { "UNIQUE " } else { "" },
                    q(&idx),
                    q(&s),
                    q(table),
                    cols.join(", ")
                );
                if let Err(e) = self.rows(&sql, false).await {
                    let _ = self
                        .rows(
                            &format!("DROP INDEX CONCURRENTLY IF EXISTS {}.{}", q(&s), q(&idx)),
                            false,
                        )
                        .await;
                    return Err(format!("building index `{idx}`: {e}"));
                }
                self.log
                    .line("migrate", &format!("built index {idx} concurrently"));
            }
        }
        self.rows(
            &format!("UPDATE {STATE} SET phase = 'started' WHERE version = {v}"),
            false,
        )
        .await?;
        self.log.line("migrate", &format!("{} started in {} ms: {rows} rows backfilled; the old version reads {old}, the new {new}", m.name, started.elapsed().as_millis()));
        let mut out = IndexMap::new();
        out.insert("version".into(), Value::from(v));
        out.insert("old_schema".into(), Value::from(old));
        out.insert("new_schema".into(), Value::from(new));
        out.insert("rows_backfilled".into(), Value::from(rows));
        out.insert("phase".into(), Value::from("start"));
        Ok(out)
    }

    /// What a changed column carries over to its new one: its default and its NOT NULL;
    /// a column in an index or a constraint is refused (those cannot follow it).
    async fn carried(
        &mut self,
        ops: &[Op],
        s: &str,
    ) -> Result<IndexMap<(String, String), Carry>, String> {
        let mut out = IndexMap::new();
        for op in ops {
            let Op::AlterColumn { table, column, .. } = op else {
                continue;
            };
            let t = lit(&format!("{}.{}", q(s), q(table)));
            let rows = self
                .rows(&format!(
                    "SELECT a.attnotnull AS not_null, pg_get_expr(d.adbin, d.adrelid) AS def,                      (SELECT count(*)::bigint FROM pg_index i WHERE i.indrelid = a.attrelid AND a.attnum = ANY(i.indkey)) AS indexes,                      (SELECT count(*)::bigint FROM pg_constraint c WHERE c.conrelid = a.attrelid AND a.attnum = ANY(c.conkey)) AS constraints                      FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum                      WHERE a.attrelid = {t}::regclass AND a.attname = {}",
                    lit(column)
                ), false)
                .await?;
            let Some(r) = rows.into_iter().next() else {
                continue;
            };
            let used = r["indexes"].as_i64().unwrap_or(0) + r["constraints"].as_i64().unwrap_or(0);
            if used > 0 {
                return Err(format!(
                    "column `{column}` of `{s}.{table}` is in an index or a constraint, which an online type change cannot carry over to its new column; drop them first (or change the type in a classic migration); nothing was changed"
                ));
            }
            out.insert(
                (table.clone(), column.clone()),
                Carry {
                    not_null: r["not_null"] == Value::Bool(true),
                    default: r["def"].as_str().map(str::to_owned),
                },
            );
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn backfill(
        &mut self,
        v: u64,
        table: &str,
        set: &str,
        cursor: Option<&Value>,
        batch_time: Duration,
        pause: Duration,
        max_lag: Option<Duration>,
    ) -> Result<i64, String> {
        let s = self.schema.clone();
        let t = format!("{}.{}", q(&s), q(table));
        let pk = self
            .rows(&format!(
                "SELECT a.attname AS k FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = '{t}'::regclass AND i.indisprimary"
            ), false)
            .await?;
        let key = match pk.as_slice() {
            [one] => one["k"].as_str().map(q),
            _ => None,
        };
        let mut cursor = cursor.and_then(Value::as_str).map(str::to_owned);
        // Without a primary key: by `ctid`, up to the last row there is now.
        let upper = match key {
            Some(_) => None,
            None => self
                .one(&format!("SELECT max(ctid)::text AS m FROM {t}"))
                .await?
                .as_str()
                .map(str::to_owned),
        };
        if key.is_none() && upper.is_none() {
            return Ok(0);
        }
        let mut n = FIRST_BATCH;
        let mut total = 0i64;
        // About how many rows there are, for the progress lines (`runbook status`): the
        // planner's estimate, or a count when the table was never analysed.
        let mut estimate = self
            .one(&format!("SELECT greatest(reltuples, 0)::bigint AS n FROM pg_class WHERE oid = '{t}'::regclass"))
            .await?
            .as_i64()
            .unwrap_or(0);
        if estimate == 0 {
            estimate = self
                .one(&format!("SELECT count(*)::bigint AS n FROM {t}"))
                .await?
                .as_i64()
                .unwrap_or(0);
        }
        let began_all = Instant::now();
        let mut said = Instant::now();
        loop {
            if let Some(max) = max_lag {
                self.wait_for_replicas(max).await?;
            }
            let sql = match &key {
                Some(k) => format!(
                    "WITH b AS (SELECT {k} AS runbook_key FROM {t} {} ORDER BY {k} LIMIT {n}), \
                     u AS (UPDATE {t} SET {set} FROM b WHERE {t}.{k} = b.runbook_key RETURNING b.runbook_key), \
                     m AS (SELECT (SELECT u.runbook_key::text FROM u ORDER BY u.runbook_key DESC LIMIT 1) AS c, (SELECT count(*)::bigint FROM u) AS n), \
                     w AS (UPDATE {STATE} SET cursor = jsonb_set(cursor, ARRAY[{tl}], to_jsonb(m.c)), rows = rows + m.n FROM m WHERE version = {v} AND m.n > 0) \
                     SELECT c, n FROM m",
                    cursor
                        .as_ref()
                        .map(|c| format!("WHERE {k} > {}", lit(c)))
                        .unwrap_or_default(),
                    tl = lit(table),
                ),
                None => format!(
                    "WITH b AS (SELECT ctid AS runbook_key FROM {t} WHERE ctid <= {}::tid {} ORDER BY ctid LIMIT {n}), \
                     u AS (UPDATE {t} SET {set} WHERE {t}.ctid = ANY(ARRAY(SELECT runbook_key FROM b)) RETURNING 1), \
                     m AS (SELECT (SELECT max(runbook_key)::text FROM b) AS c, (SELECT count(*)::bigint FROM u) AS n), \
                     w AS (UPDATE {STATE} SET cursor = jsonb_set(cursor, ARRAY[{tl}], to_jsonb(m.c)), rows = rows + m.n FROM m WHERE version = {v} AND m.c IS NOT NULL) \
                     SELECT c, n FROM m",
                    lit(upper.as_deref().unwrap_or_default()),
                    cursor
                        .as_ref()
                        .map(|c| format!("AND ctid > {}::tid", lit(c)))
                        .unwrap_or_default(),
                    tl = lit(table),
                ),
            };
            // The batch sets the new columns itself: the triggers let it be.
            let sql = format!("SET LOCAL runbook.backfill = 'on';\n{sql}");
            let began = Instant::now();
            let got = self.rows(&sql, true).await.map_err(|e| format!("backfilling `{table}`: {e}; the backfill goes on from where it was when the step runs again"))?;
            let took = began.elapsed();
            let row = got.into_iter().next().unwrap_or_default();
            let done = row.get("n").and_then(Value::as_i64).unwrap_or(0);
            match row.get("c").and_then(Value::as_str) {
                Some(c) if done > 0 || key.is_none() => cursor = Some(c.to_owned()),
                _ => break,
            }
            total += done;
            if said.elapsed() >= Duration::from_secs(1) {
                said = Instant::now();
                let rate = total as f64 / began_all.elapsed().as_secs_f64().max(0.001);
                let eta = if estimate > total && rate > 0.0 {
                    format!(
                        ", about {}s to go",
                        ((estimate - total) as f64 / rate).ceil() as i64
                    )
                } else {
                    String::new()
                };
                self.log.line(
                    "migrate",
                    &format!(
                        "backfill of `{table}`: {total} of about {estimate} rows, {} rows/s{eta}",
                        rate as i64
                    ),
                );
            }
            // Every batch's progress and cursor, for the journal.
            let rate = total as f64 / began_all.elapsed().as_secs_f64().max(0.001);
            let left_ms = (estimate > total && rate > 0.0)
                .then(|| ((estimate - total) as f64 / rate * 1000.0) as i64);
            crate::engine::progress::report(
                &self.unit.0,
                &self.unit.1,
                crate::engine::progress::Report {
                    done: total as u64,
                    total: Some(estimate.max(total) as u64),
                    eta_ms: left_ms.map(|l| crate::store::now_ms() + l),
                    what: format!("rows of `{table}` backfilled"),
                    cursor: cursor.clone().map(|c| serde_json::json!({ table: c })),
                },
            );
            // The next batch sized to take `batch_time`.
            let scale = batch_time.as_secs_f64() / took.as_secs_f64().max(0.001);
            n = ((n as f64 * scale.clamp(0.5, 2.0)) as i64).clamp(100, MAX_BATCH);
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        let rate = total as f64 / began_all.elapsed().as_secs_f64().max(0.001);
        self.log.line(
            "migrate",
            &format!(
                "backfilled {total} rows of `{table}` ({} rows/s)",
                rate as i64
            ),
        );
        Ok(total)
    }

    async fn wait_for_replicas(&mut self, max: Duration) -> Result<(), String> {
        loop {
            let lag = self
                .one("SELECT coalesce(max(extract(epoch FROM replay_lag)) * 1000, 0)::bigint AS ms FROM pg_stat_replication")
                .await?
                .as_i64()
                .unwrap_or(0);
            if lag as u128 <= max.as_millis() {
                return Ok(());
            }
            self.log.line(
                "migrate",
                &format!(
                    "a replica is {lag} ms behind (max_lag {}): waiting",
                    show(max)
                ),
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn complete(
        &mut self,
        m: &Migration,
        st: &Started,
        ops: &[Op],
    ) -> Result<IndexMap<String, Value>, String> {
        let v = m.version;
        let s = q(&self.schema);
        let old = self.old_schema(v);
        let mut sql = format!("DROP SCHEMA IF EXISTS {} CASCADE;\n", q(&old));
        sql.push_str(&drop_triggers(v, ops, &s));
        for op in ops {
            match op {
                Op::AddColumn { table, name, nullable: false, .. } => sql.push_str(&format!(
                    "ALTER TABLE {s}.{t} ALTER COLUMN {c} SET NOT NULL;\nALTER TABLE {s}.{t} DROP CONSTRAINT {k};\n",
                    t = q(table), c = q(name), k = q(&not_null_check(v, name))
                )),
                Op::AlterColumn { table, column, .. } => sql.push_str(&format!(
                    "ALTER TABLE {s}.{t} DROP COLUMN {c};\nALTER TABLE {s}.{t} RENAME COLUMN {n} TO {c};\n\
                     DO $runbook$ BEGIN IF EXISTS (SELECT 1 FROM pg_constraint WHERE conname = {kl} AND conrelid = {tl}::regclass) THEN \
                     ALTER TABLE {s}.{t} ALTER COLUMN {c} SET NOT NULL; ALTER TABLE {s}.{t} DROP CONSTRAINT {k}; END IF; END $runbook$;\n",
                    t = q(table), c = q(column), n = q(&shadow(column)),
                    k = q(&not_null_check(v, &shadow(column))),
                    kl = lit(&not_null_check(v, &shadow(column))),
                    tl = lit(&format!("{s}.{}", q(table)))
                )),
                Op::RenameColumn { table, from, to } => sql.push_str(&format!(
                    "ALTER TABLE {s}.{} RENAME COLUMN {} TO {};\n", q(table), q(from), q(to)
                )),
                _ => {}
            }
        }
        sql.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS runbook_migrations (version bigint PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), duration_ms bigint NOT NULL);\n\
             INSERT INTO runbook_migrations (version, name, checksum, duration_ms) VALUES ({v}, {}, {}, 0);\n\
             DELETE FROM {STATE} WHERE version = {v};\n",
            lit(&m.name), lit(&m.checksum)
        ));
        self.locked(&format!("completing {}", m.name), &sql).await?;
        self.drop_state_if_empty().await?;
        let _ = st;
        self.log.line(
            "migrate",
            &format!(
                "{} completed: {old} dropped, only the new shape is left",
                m.name
            ),
        );
        let mut out = IndexMap::new();
        out.insert("version".into(), Value::from(v));
        out.insert("old_schema".into(), Value::from(old));
        out.insert("new_schema".into(), Value::from(self.new_schema(v)));
        out.insert("phase".into(), Value::from("complete"));
        Ok(out)
    }

    async fn abort(
        &mut self,
        m: &Migration,
        st: &Started,
        ops: &[Op],
    ) -> Result<IndexMap<String, Value>, String> {
        let v = m.version;
        let s = q(&self.schema);
        for op in ops {
            if let Some(idx) = built_index(op) {
                self.rows(
                    &format!("DROP INDEX CONCURRENTLY IF EXISTS {s}.{}", q(&idx)),
                    false,
                )
                .await?;
            }
        }
        let (old, new) = (self.old_schema(v), self.new_schema(v));
        let mut sql = format!("DROP SCHEMA IF EXISTS {} CASCADE;\n", q(&new));
        if st.created_old {
            sql.push_str(&format!("DROP SCHEMA IF EXISTS {} CASCADE;\n", q(&old)));
        }
        sql.push_str(&drop_triggers(v, ops, &s));
        for op in ops {
            match op {
                Op::AddColumn { table, name, .. } => sql.push_str(&format!(
                    "ALTER TABLE {s}.{} DROP COLUMN IF EXISTS {};\n",
                    q(table),
                    q(name)
                )),
                Op::AlterColumn { table, column, .. } => sql.push_str(&format!(
                    "ALTER TABLE {s}.{} DROP COLUMN IF EXISTS {};\n",
                    q(table),
                    q(&shadow(column))
                )),
                _ => {}
            }
        }
        sql.push_str(&format!("DELETE FROM {STATE} WHERE version = {v};\n"));
        self.locked(&format!("aborting {}", m.name), &sql).await?;
        self.drop_state_if_empty().await?;
        self.log.line(
            "migrate",
            &format!("{} aborted: everything it added is removed", m.name),
        );
        let mut out = IndexMap::new();
        out.insert("version".into(), Value::from(v));
        out.insert("phase".into(), Value::from("abort"));
        Ok(out)
    }

    async fn drop_state_if_empty(&mut self) -> Result<(), String> {
        let left = self
            .one(&format!("SELECT count(*)::bigint AS n FROM {STATE}"))
            .await?;
        if left.as_i64() == Some(0) {
            self.locked(
                "removing the online migration state",
                &format!("DROP TABLE IF EXISTS {STATE};"),
            )
            .await?;
        }
        Ok(())
    }
}

/// Drops the sync triggers of migration `v` (and their functions) from schema `s` (quoted).
fn drop_triggers(v: u64, ops: &[Op], s: &str) -> String {
    triggered_tables(ops)
        .iter()
        .map(|table| {
            let f = q(&trigger_name(v, table));
            format!(
                "DROP TRIGGER IF EXISTS {f} ON {s}.{};\nDROP FUNCTION IF EXISTS {s}.{f}();\n",
                q(table)
            )
        })
        .collect()
}

/// What a changed column's new column takes over from it.
#[derive(Debug, Clone, Default)]
struct Carry {
    not_null: bool,
    default: Option<String>,
}

fn trigger_name(v: u64, table: &str) -> String {
    format!("runbook_v{v}_{table}_sync")
}

fn shadow(column: &str) -> String {
    format!("_runbook_new_{column}")
}

fn not_null_check(v: u64, column: &str) -> String {
    format!("runbook_v{v}_{column}_not_null")
}

/// The index a `create_index` operation builds, by name.
fn built_index(op: &Op) -> Option<String> {
    match op {
        Op::CreateIndex {
            table,
            columns,
            name,
            ..
        } => Some(index_name(table, columns, name.as_deref())),
        _ => None,
    }
}

fn index_name(table: &str, columns: &[String], name: Option<&str>) -> String {
    name.map(str::to_owned).unwrap_or_else(|| {
        let mut n = format!("{table}_{}_idx", columns.join("_"));
        n.truncate(63);
        n
    })
}

fn triggered_tables(ops: &[Op]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for op in ops {
        let t = match op {
            Op::AddColumn {
                table, up: Some(_), ..
            }
            | Op::AlterColumn { table, .. } => table,
            _ => continue,
        };
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out
}

/// Per table, the `SET` list of its backfill.
fn backfills(ops: &[Op]) -> Vec<(String, String)> {
    let mut out: IndexMap<String, Vec<String>> = IndexMap::new();
    for op in ops {
        match op {
            Op::AddColumn {
                table,
                name,
                up: Some(up),
                ..
            } => out
                .entry(table.clone())
                .or_default()
                .push(format!("{} = ({up})", q(name))),
            Op::AlterColumn {
                table, column, up, ..
            } => out
                .entry(table.clone())
                .or_default()
                .push(format!("{} = ({up})", q(&shadow(column)))),
            _ => {}
        }
    }
    out.into_iter()
        .map(|(t, sets)| (t, sets.join(", ")))
        .collect()
}

/// What every row must satisfy once backfilled: (table, new column, up).
fn checks(ops: &[Op]) -> Vec<(String, String, String)> {
    ops.iter()
        .filter_map(|op| match op {
            Op::AddColumn {
                table,
                name,
                up: Some(up),
                ..
            } => Some((table.clone(), name.clone(), up.clone())),
            Op::AlterColumn {
                table, column, up, ..
            } => Some((table.clone(), shadow(column), up.clone())),
            _ => None,
        })
        .collect()
}

/// Tables and columns the operations name exist (or, for new ones, do not yet).
fn check_against(
    ops: &[Op],
    tables: &IndexMap<String, Vec<String>>,
    schema: &str,
) -> Result<(), String> {
    let mut added: Vec<(String, String)> = Vec::new();
    for op in ops {
        let t = op.table();
        let Some(cols) = tables.get(t) else {
            let known: Vec<&str> = tables.keys().map(String::as_str).collect();
            let hint = crate::suggest::did_you_mean(t, &known)
                .map(|h| format!("; {h}"))
                .unwrap_or_default();
            return Err(format!(
                "table `{schema}.{t}` does not exist{hint}; nothing was changed"
            ));
        };
        let has = |c: &str| {
            cols.iter().any(|x| x == c) || added.iter().any(|(tt, cc)| tt == t && cc == c)
        };
        let missing =
            |c: &str| format!("column `{c}` of `{schema}.{t}` does not exist; nothing was changed");
        match op {
            Op::AddColumn { name, .. } => {
                if has(name) {
                    return Err(format!(
                        "column `{name}` of `{schema}.{t}` already exists; nothing was changed"
                    ));
                }
                added.push((t.to_owned(), name.clone()));
            }
            Op::RenameColumn { from, to, .. } => {
                if !has(from) {
                    return Err(missing(from));
                }
                if has(to) {
                    return Err(format!(
                        "column `{to}` of `{schema}.{t}` already exists; nothing was changed"
                    ));
                }
            }
            Op::AlterColumn { column, .. } => {
                if !has(column) {
                    return Err(missing(column));
                }
            }
            Op::CreateIndex { columns, .. } => {
                if let Some(c) = columns.iter().find(|c| !has(c)) {
                    return Err(missing(c));
                }
            }
        }
    }
    Ok(())
}

/// The expand transaction: new columns, NOT VALID checks, triggers, the two schemas of
/// views, and the state row.
#[allow(clippy::too_many_arguments)]
fn expand_sql(
    ops: &[Op],
    tables: &IndexMap<String, Vec<String>>,
    schema: &str,
    old: &str,
    new: &str,
    create_old: bool,
    m: &Migration,
    carry: &IndexMap<(String, String), Carry>,
) -> Result<String, String> {
    let s = q(schema);
    let v = m.version;
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS {STATE} (version bigint PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, phase text NOT NULL, created_old boolean NOT NULL, rows bigint NOT NULL DEFAULT 0, cursor jsonb NOT NULL DEFAULT '{{}}', started_at timestamptz NOT NULL DEFAULT now());\n"
    );
    for op in ops {
        match op {
            Op::AddColumn {
                table,
                name,
                sql_type,
                default,
                nullable,
                ..
            } => {
                sql.push_str(&format!(
                    "ALTER TABLE {s}.{} ADD COLUMN {} {sql_type}{};\n",
                    q(table),
                    q(name),
                    default
                        .as_ref()
                        .map(|d| format!(" DEFAULT {d}"))
                        .unwrap_or_default()
                ));
                if !nullable {
                    sql.push_str(&format!(
                        "ALTER TABLE {s}.{} ADD CONSTRAINT {} CHECK ({} IS NOT NULL) NOT VALID;\n",
                        q(table),
                        q(&not_null_check(v, name)),
                        q(name)
                    ));
                }
            }
            Op::AlterColumn {
                table,
                column,
                sql_type,
                ..
            } => {
                let c = carry
                    .get(&(table.clone(), column.clone()))
                    .cloned()
                    .unwrap_or_default();
                sql.push_str(&format!(
                    "ALTER TABLE {s}.{} ADD COLUMN {} {sql_type}{};\n",
                    q(table),
                    q(&shadow(column)),
                    c.default
                        .map(|d| format!(" DEFAULT {d}"))
                        .unwrap_or_default()
                ));
                if c.not_null {
                    sql.push_str(&format!(
                        "ALTER TABLE {s}.{} ADD CONSTRAINT {} CHECK ({} IS NOT NULL) NOT VALID;\n",
                        q(table),
                        q(&not_null_check(v, &shadow(column))),
                        q(&shadow(column))
                    ));
                }
            }
            _ => {}
        }
    }
    // Triggers: a write through the old shape (or to the table itself) fills the new
    // columns from `up`; one through the new shape fills the old column from `down`.
    for table in triggered_tables(ops) {
        let mut old_side = String::new();
        let mut new_side = String::new();
        for op in ops.iter().filter(|o| o.table() == table) {
            match op {
                Op::AddColumn {
                    name, up: Some(up), ..
                } => old_side.push_str(&format!(
                    "    NEW.{} := (SELECT ({up}) FROM (SELECT NEW.*) AS runbook_row);\n",
                    q(name)
                )),
                Op::AlterColumn {
                    column, up, down, ..
                } => {
                    old_side.push_str(&format!(
                        "    NEW.{} := (SELECT ({up}) FROM (SELECT NEW.*) AS runbook_row);\n",
                        q(&shadow(column))
                    ));
                    new_side.push_str(&format!(
                        "    NEW.{c} := (SELECT ({down}) FROM (SELECT NEW.{n} AS {c}) AS runbook_row);\n",
                        c = q(column), n = q(&shadow(column))
                    ));
                }
                _ => {}
            }
        }
        let f = q(&trigger_name(v, &table));
        sql.push_str(&format!(
            "CREATE FUNCTION {s}.{f}() RETURNS trigger LANGUAGE plpgsql AS $runbook$\nBEGIN\n  IF current_setting('runbook.backfill', true) = 'on' THEN\n    RETURN NEW;\n  END IF;\n  IF NOT (string_to_array(replace(current_setting('search_path'), ' ', ''), ',') && ARRAY[{n1}, {n2}]) THEN\n{old_side}  ELSE\n{new_side}  END IF;\n  RETURN NEW;\nEND\n$runbook$;\n\
             CREATE TRIGGER {f} BEFORE INSERT OR UPDATE ON {s}.{t} FOR EACH ROW EXECUTE FUNCTION {s}.{f}();\n",
            n1 = lit(new), n2 = lit(&format!("\"{new}\"")), t = q(&table)
        ));
    }
    // The two shapes, as views over every table of the schema.
    if create_old {
        sql.push_str(&format!("CREATE SCHEMA {};\n", q(old)));
    }
    sql.push_str(&format!("CREATE SCHEMA {};\n", q(new)));
    for (table, cols) in tables {
        let added: Vec<&str> = ops
            .iter()
            .filter(|o| o.table() == table)
            .filter_map(|o| match o {
                Op::AddColumn { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        let old_cols: Vec<String> = cols.iter().map(|c| q(c)).collect();
        let mut new_cols: Vec<String> = Vec::new();
        for c in cols {
            let renamed = ops.iter().find_map(|o| match o {
                Op::RenameColumn { table: t, from, to } if t == table && from == c => {
                    Some(to.clone())
                }
                _ => None,
            });
            let altered = ops.iter().any(|o| matches!(o, Op::AlterColumn { table: t, column, .. } if t == table && column == c));
            new_cols.push(match (renamed, altered) {
                (_, true) => format!("{} AS {}", q(&shadow(c)), q(c)),
                (Some(to), false) => format!("{} AS {}", q(c), q(&to)),
                (None, false) => q(c),
            });
        }
        new_cols.extend(added.iter().map(|c| q(c)));
        if create_old {
            sql.push_str(&format!(
                "CREATE VIEW {}.{t} AS SELECT {} FROM {s}.{t};\n",
                q(old),
                old_cols.join(", "),
                t = q(table)
            ));
        }
        sql.push_str(&format!(
            "CREATE VIEW {}.{t} AS SELECT {} FROM {s}.{t};\n",
            q(new),
            new_cols.join(", "),
            t = q(table)
        ));
    }
    sql.push_str(&format!(
        "INSERT INTO {STATE} (version, name, checksum, phase, created_old) VALUES ({v}, {}, {}, 'backfilling', {create_old});\n",
        lit(&m.name), lit(&m.checksum)
    ));
    Ok(sql)
}
