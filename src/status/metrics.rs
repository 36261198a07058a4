//! `GET /metrics`: Prometheus's text format (exposition format 0.0.4), a projection of
//! the journal and the outbox's books. Names follow Prometheus's conventions (`_total`
//! for counters, `_seconds` for durations, base units) and no label names a run: the
//! series stay as many however many runs there are.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::engine::event::Event;
use crate::engine::state::RunState;
use crate::store::{Store, StoreError};

/// The step-duration histogram's buckets, in seconds.
const BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0,
];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    n: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.n += 1;
    }
}

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The metrics of everything in `store`.
pub async fn render(store: &Store) -> Result<String, StoreError> {
    let mut runs: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut durations: BTreeMap<(String, &'static str), Histogram> = BTreeMap::new();
    let mut overruns: BTreeMap<String, u64> = BTreeMap::new();
    let mut updates: BTreeMap<String, u64> = BTreeMap::new();
    for row in store.runs().await? {
        let events = match store.load(&row.run_id).await {
            Ok(e) => e,
            Err(StoreError::Corrupt { .. }) => {
                *runs.entry("unknown").or_default() += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        let state = RunState::from_events(events.iter().map(|r| (&r.event, r.at_ms)));
        *runs
            .entry(state.map_or("unknown", |s| s.status.as_str()))
            .or_default() += 1;
        let mut kinds: BTreeMap<String, String> = BTreeMap::new();
        let mut started: BTreeMap<String, i64> = BTreeMap::new();
        let mut overran: std::collections::BTreeSet<String> = Default::default();
        for r in &events {
            match &r.event {
                Event::RunStarted {
                    public: Some(p), ..
                } => {
                    for s in &p.steps {
                        kinds.insert(s.id.clone(), s.kind.clone());
                    }
                }
                Event::StepStarted { step, .. } => {
                    started.insert(step.clone(), r.at_ms);
                }
                Event::StepSucceeded { step, .. }
                | Event::StepFailed { step, .. }
                | Event::StepTimedOut { step, .. } => {
                    if let Some(t0) = started.remove(step) {
                        let outcome = if matches!(r.event, Event::StepSucceeded { .. }) {
                            "succeeded"
                        } else {
                            "failed"
                        };
                        let kind = kinds.get(step).cloned().unwrap_or_else(|| "shell".into());
                        durations
                            .entry((kind, outcome))
                            .or_default()
                            .observe((r.at_ms - t0).max(0) as f64 / 1000.0);
                    }
                }
                Event::Published(u) => {
                    *updates.entry(u.kind.clone()).or_default() += 1;
                    if u.kind == "overrun"
                        && let Some(step) = &u.step
                        && overran.insert(step.clone())
                    {
                        let kind = kinds.get(step).cloned().unwrap_or_else(|| "shell".into());
                        *overruns.entry(kind).or_default() += 1;
                    }
                }
                _ => {}
            }
        }
    }
    for (id, _) in store.notices().await? {
        if let Ok(events) = store.load_notice_after(&id, 0).await {
            for r in events {
                if let crate::journal::NoticeEvent::Published(u) = r.event {
                    *updates.entry(u.kind).or_default() += 1;
                }
            }
        }
    }
    let counts = store.notify_counts().await?;

    let mut out = String::new();
    head(
        &mut out,
        "runbook_runs",
        "gauge",
        "Runs in the store, by state.",
    );
    for (state, n) in &runs {
        let _ = writeln!(out, "runbook_runs{{state=\"{state}\"}} {n}");
    }
    head(
        &mut out,
        "runbook_step_duration_seconds",
        "histogram",
        "How long steps took (each attempt), by kind and outcome.",
    );
    for ((kind, outcome), h) in &durations {
        let l = format!("kind=\"{}\",outcome=\"{outcome}\"", label(kind));
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "runbook_step_duration_seconds_bucket{{{l},le=\"{b}\"}} {}",
                h.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "runbook_step_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}",
            h.n
        );
        let _ = writeln!(out, "runbook_step_duration_seconds_sum{{{l}}} {}", h.sum);
        let _ = writeln!(out, "runbook_step_duration_seconds_count{{{l}}} {}", h.n);
    }
    head(
        &mut out,
        "runbook_step_overruns_total",
        "counter",
        "Steps that ran past their estimate (announced as an overrun), by kind.",
    );
    for (kind, n) in &overruns {
        let _ = writeln!(
            out,
            "runbook_step_overruns_total{{kind=\"{}\"}} {n}",
            label(kind)
        );
    }
    head(
        &mut out,
        "runbook_public_updates_total",
        "counter",
        "Public updates published, by kind.",
    );
    for (kind, n) in &updates {
        let _ = writeln!(
            out,
            "runbook_public_updates_total{{kind=\"{}\"}} {n}",
            label(kind)
        );
    }
    head(
        &mut out,
        "runbook_deliveries_sent_total",
        "counter",
        "Deliveries accepted by their recipient, by channel.",
    );
    let mut channels: BTreeMap<&str, (i64, i64, i64)> = BTreeMap::new();
    for (channel, state, n) in &counts.deliveries {
        let e = channels.entry(channel.as_str()).or_default();
        match state.as_str() {
            "sent" => e.0 += n,
            "failed" => e.1 += n,
            "pending" => e.2 += n,
            _ => {}
        }
    }
    for (channel, (sent, _, _)) in &channels {
        let _ = writeln!(
            out,
            "runbook_deliveries_sent_total{{channel=\"{}\"}} {sent}",
            label(channel)
        );
    }
    head(
        &mut out,
        "runbook_deliveries_failing",
        "gauge",
        "Deliveries given up after a day of tries, and pending ones whose last try failed, by channel.",
    );
    for (channel, n) in &counts.failing {
        let _ = writeln!(
            out,
            "runbook_deliveries_failing{{channel=\"{}\"}} {n}",
            label(channel)
        );
    }
    head(
        &mut out,
        "runbook_outbox_backlog",
        "gauge",
        "What is still to be sent: events not yet expanded, and pending deliveries.",
    );
    let pending: i64 = channels.values().map(|c| c.2).sum();
    let _ = writeln!(
        out,
        "runbook_outbox_backlog{{stage=\"events\"}} {}",
        counts.outbox
    );
    let _ = writeln!(
        out,
        "runbook_outbox_backlog{{stage=\"deliveries\"}} {pending}"
    );
    head(
        &mut out,
        "runbook_subscribers",
        "gauge",
        "Subscribers, by channel and state.",
    );
    for (channel, state, n) in &counts.subscribers {
        let _ = writeln!(
            out,
            "runbook_subscribers{{channel=\"{}\",state=\"{}\"}} {n}",
            label(channel),
            label(state)
        );
    }
    Ok(out)
}
