//! The status projection's fold: every journal stream, with the clock, into the
//! [`Page`]. A run is read through the engine's history fold
//! ([`crate::engine::history`]), as the report and the terminal read it.

use chrono_tz::Tz;

use super::*;
use crate::engine::event::{Event, PublicPlan, PublicUpdate, Recorded};
use crate::engine::history::{Change, End, History};
use crate::store::Damage;

fn zone(name: &str, fallback: Tz) -> Tz {
    name.parse().unwrap_or(fallback)
}

/// Folds the streams into the page at `now_ms`.
pub fn project(info: PageInfo, streams: &[Stream], now_ms: i64) -> Page {
    let runs = streams.iter().filter_map(|s| match s {
        Stream::Run { id, events } => Some((id.as_str(), events.as_slice(), None)),
        Stream::Notice { .. } => None,
    });
    let notices = streams.iter().filter_map(|s| match s {
        Stream::Notice { id, events } => Some((id.as_str(), events.as_slice())),
        Stream::Run { .. } => None,
    });
    project_journals(info, runs, notices, now_ms)
}

/// A run's journal as the projection reads it: its id, its events as far as they can
/// be read, and where that stops when it does.
pub type RunJournal<'a> = (&'a str, &'a [Recorded], Option<&'a Damage>);

/// [`project`] over borrowed journals (the follower's, without copying them).
pub fn project_journals<'a>(
    info: PageInfo,
    runs: impl Iterator<Item = RunJournal<'a>>,
    notices: impl Iterator<Item = (&'a str, &'a [NoticeRecorded])>,
    now_ms: i64,
) -> Page {
    let tz = Tz::UTC;
    let mut maintenances: Vec<Maintenance> = Vec::new();
    let mut incidents: Vec<Incident> = Vec::new();
    // Notices first, so that a run finds the maintenance it carries out.
    for (id, events) in notices {
        if let Some(m) = fold_notice(id, events, tz) {
            maintenances.push(m);
        }
    }
    let mut runs: Vec<RunJournal> = runs
        .filter(|(_, e, damage)| !e.is_empty() || damage.is_some())
        .collect();
    let started = |(_, e, damage): &RunJournal| {
        e.first()
            .map(|r| r.at_ms)
            .or(damage.map(|d| d.at_ms))
            .unwrap_or_default()
    };
    runs.sort_by_key(|r| (started(r), r.0));
    for (id, events, damage) in runs {
        fold_run(id, events, tz, &mut maintenances, &mut incidents);
        if let Some(damage) = damage {
            unreadable(id, damage, tz, &mut maintenances, &mut incidents);
        }
    }
    maintenances.sort_by(|a, b| {
        let key = |m: &Maintenance| m.planned_start_ms.or(m.started_ms).unwrap_or(m.created_ms);
        key(b).cmp(&key(a)).then(b.id.cmp(&a.id))
    });
    incidents.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id)));
    let components = components(&maintenances, &incidents);
    let shown = |m: &&Maintenance| {
        m.status != MaintenanceStatus::Scheduled || m.announce_from_ms.is_none_or(|t| t <= now_ms)
    };
    let updated_ms = maintenances
        .iter()
        .filter(shown)
        .map(|m| m.updated_ms)
        .chain(incidents.iter().map(|i| i.updated_ms))
        .chain(
            maintenances
                .iter()
                .flat_map(|m| m.announce_from_ms)
                .filter(|&t| t <= now_ms),
        )
        .max()
        // A page with nothing on it yet is as of now, never of 1970.
        .unwrap_or(now_ms);
    Page {
        info,
        now_ms,
        maintenances,
        incidents,
        components,
        updated_ms,
    }
}

fn update(stream: &str, seq: i64, at_ms: i64, u: &PublicUpdate) -> Update {
    Update {
        id: format!("{stream}-{seq}"),
        at_ms,
        status: u.status.clone(),
        kind: u.kind.clone(),
        body: u.body.clone(),
        eta_ms: u.eta_ms,
        incident: u.incident,
        components: Vec::new(),
    }
}

fn fold_notice(id: &str, events: &[NoticeRecorded], tz: Tz) -> Option<Maintenance> {
    let mut m: Option<Maintenance> = None;
    for r in events {
        match &r.event {
            NoticeEvent::MaintenanceScheduled(a) => {
                let created_ms = m.as_ref().map_or(r.at_ms, |m| m.created_ms);
                // Updates never shown (their announcement was still to come) go with
                // the schedule they announced.
                let mut updates = m.take().map(|m| m.updates).unwrap_or_default();
                updates.retain(|u| u.at_ms <= r.at_ms);
                m = Some(Maintenance {
                    id: id.to_owned(),
                    runbook: a.runbook.clone(),
                    title: a.title.clone(),
                    summary: a.summary.clone(),
                    components: a.components.clone(),
                    timezone: zone(&a.timezone, tz),
                    status: MaintenanceStatus::Scheduled,
                    created_ms,
                    updated_ms: r.at_ms,
                    planned_start_ms: Some(a.planned_start_ms),
                    planned_end_ms: Some(a.planned_end_ms),
                    announce_from_ms: Some(a.announce_from_ms),
                    started_ms: None,
                    ended_ms: None,
                    run_id: None,
                    outcome: None,
                    progress: (a.public_steps > 0).then_some(Progress {
                        current: 0,
                        total: a.public_steps,
                        step_title: None,
                        step_percent: None,
                    }),
                    eta_ms: None,
                    closed: false,
                    damaged: false,
                    incident: None,
                    updates,
                });
            }
            NoticeEvent::Published(u) => {
                if let Some(m) = m.as_mut() {
                    // Customers first see it when the maintenance is announced.
                    let at = m.announce_from_ms.map_or(r.at_ms, |a| a.max(r.at_ms));
                    m.updates.insert(0, update(id, r.seq, at, u));
                    m.updated_ms = m.updated_ms.max(r.at_ms);
                }
            }
            NoticeEvent::MaintenanceStarted { .. } => {}
        }
    }
    m
}

fn fold_run(
    run_id: &str,
    events: &[Recorded],
    tz: Tz,
    maintenances: &mut Vec<Maintenance>,
    incidents: &mut Vec<Incident>,
) {
    let Some(Recorded {
        at_ms: started_ms,
        event:
            Event::RunStarted {
                runbook,
                title,
                public,
                rehearsal: false,
                ..
            },
        ..
    }) = events.first()
    else {
        // A rehearsal is not on the page at all.
        return;
    };
    let plan = public.as_deref().cloned().unwrap_or_default();
    let public_steps: Vec<_> = plan.steps.iter().filter(|s| s.title.is_some()).collect();
    // The scheduled maintenance this run carries out, or a new one.
    let at = plan.maintenance.as_deref().and_then(|id| {
        maintenances
            .iter()
            .position(|m| m.id == id && m.run_id.is_none())
    });
    let m = match at {
        Some(i) => &mut maintenances[i],
        None => {
            maintenances.push(new_maintenance(run_id, runbook, &plan, tz, *started_ms));
            maintenances.last_mut().expect("just pushed")
        }
    };
    m.title = plan.title.clone().unwrap_or_else(|| title.clone());
    if plan.summary.is_some() {
        m.summary = plan.summary.clone();
    }
    if !plan.components.is_empty() {
        m.components = plan.components.clone();
    }
    m.run_id = Some(run_id.to_owned());
    m.started_ms = Some(*started_ms);
    m.status = MaintenanceStatus::InProgress;
    m.updated_ms = *started_ms;
    m.progress = Some(Progress {
        current: 0,
        total: public_steps.len(),
        step_title: None,
        step_percent: None,
    });
    let mut history = History::default();
    history.apply(&events[0]);
    let mut incident: Option<Incident> = None;
    // What this run's components were last said to be, for each update's changes.
    let mut reported = ComponentStatus::Operational;
    for r in &events[1..] {
        match history.apply(r) {
            Change::StepStarted(step) => {
                if let Some(pos) = public_steps.iter().position(|s| s.id == step) {
                    m.progress = Some(Progress {
                        current: pos + 1,
                        total: public_steps.len(),
                        step_title: public_steps[pos].title.clone(),
                        step_percent: None,
                    });
                }
            }
            Change::StepProgress {
                step,
                done,
                total,
                eta_ms,
            } => {
                let current = public_steps
                    .iter()
                    .position(|s| s.id == step)
                    .map(|p| p + 1);
                if let (Some(p), Some(total)) = (m.progress.as_mut(), total.filter(|t| *t > 0))
                    && current == Some(p.current)
                {
                    p.step_percent = Some((done.saturating_mul(100) / total).min(100) as u8);
                }
                // The maintenance cannot end before the running step's work does.
                if let Some(eta) = eta_ms
                    && m.eta_ms.is_some_and(|shown| eta > shown)
                {
                    m.eta_ms = Some(eta);
                }
            }
            Change::ServiceClosed => {
                m.closed = true;
                m.updated_ms = r.at_ms;
            }
            Change::ServiceReopened => {
                m.closed = false;
                m.updated_ms = r.at_ms;
            }
            Change::RollbackStarted => m.status = MaintenanceStatus::InProgress,
            Change::Ended(end) => {
                if let Some(i) = ended(run_id, m, end, r.at_ms) {
                    incident = Some(i);
                }
            }
            Change::Published(u) => {
                published(run_id, r, u, m, incident.as_mut());
                let now = implied(m, incident.as_ref());
                if now != reported {
                    m.updates[0].components = m
                        .components
                        .iter()
                        .map(|name| ComponentChange {
                            code: slug(name),
                            name: name.clone(),
                            old_status: reported,
                            new_status: now,
                        })
                        .collect();
                    if let Some(i) = incident.as_mut().filter(|_| u.incident) {
                        i.updates[0].components = m.updates[0].components.clone();
                    }
                    reported = now;
                }
            }
            Change::Other => {}
        }
    }
    if let Some(i) = incident {
        incidents.push(i);
    }
}

/// The run ended at `at_ms`: its maintenance is completed, and a failure (or an abort
/// that left the service closed) opens an incident.
fn ended(run_id: &str, m: &mut Maintenance, end: End, at_ms: i64) -> Option<Incident> {
    m.status = MaintenanceStatus::Completed;
    m.ended_ms = Some(at_ms);
    m.updated_ms = at_ms;
    m.eta_ms = None;
    m.outcome = Some(match end {
        End::Completed => Outcome::Completed,
        End::RolledBack => Outcome::RolledBack,
        End::Failed => Outcome::Failed,
        End::Aborted => Outcome::Aborted,
    });
    let failed = end == End::Failed;
    if !(failed || (end == End::Aborted && m.closed)) {
        return None;
    }
    let id = format!("inc-{run_id}");
    m.incident = Some(id.clone());
    Some(Incident {
        id,
        name: format!("Problem during maintenance: {}", m.title),
        status: "investigating".into(),
        impact: if m.closed { "major" } else { "minor" }.into(),
        created_ms: at_ms,
        updated_ms: at_ms,
        resolved_ms: None,
        components: m.components.clone(),
        maintenance: m.id.clone(),
        timezone: m.timezone,
        updates: Vec::new(),
    })
}

/// A public update: of the incident the run's failure opened, or of the maintenance,
/// whose status it sets while the run goes on.
fn published(
    run_id: &str,
    r: &Recorded,
    u: &PublicUpdate,
    m: &mut Maintenance,
    incident: Option<&mut Incident>,
) {
    let shown = update(run_id, r.seq, r.at_ms, u);
    match incident {
        Some(i) if u.incident => {
            i.status = u.status.clone();
            i.updated_ms = r.at_ms;
            if i.status == "resolved" {
                i.resolved_ms.get_or_insert(r.at_ms);
                // A person says the service is back.
                m.closed = false;
            } else {
                i.resolved_ms = None;
            }
            i.updates.insert(0, shown.clone());
        }
        _ => {
            // The run's updates say when it is verifying (once the work is done); its
            // end says when it completed.
            if m.status != MaintenanceStatus::Completed {
                m.eta_ms = u.eta_ms.or(m.eta_ms);
                match u.status.as_str() {
                    "verifying" => m.status = MaintenanceStatus::Verifying,
                    "in_progress" => m.status = MaintenanceStatus::InProgress,
                    _ => {}
                }
            }
        }
    }
    m.updated_ms = r.at_ms;
    m.updates.insert(0, shown);
}

/// A run whose journal cannot be read past `damage`: its maintenance (made from
/// nothing when not even its first event can be read) says its status is unknown, and
/// an unresolved major incident says so on the page and to every client. It stays
/// closed if it was closed at its last readable event.
fn unreadable(
    run_id: &str,
    damage: &Damage,
    tz: Tz,
    maintenances: &mut Vec<Maintenance>,
    incidents: &mut Vec<Incident>,
) {
    let m = match maintenances
        .iter()
        .position(|m| m.run_id.as_deref() == Some(run_id))
    {
        Some(i) => &mut maintenances[i],
        None => {
            let mut m = new_maintenance(run_id, "", &PublicPlan::default(), tz, damage.at_ms);
            m.title = format!("Maintenance {run_id}");
            m.run_id = Some(run_id.to_owned());
            maintenances.push(m);
            maintenances.last_mut().expect("just pushed")
        }
    };
    m.damaged = true;
    m.updated_ms = m.updated_ms.max(damage.at_ms);
    let id = format!("unknown-{run_id}");
    let body = "The record of this maintenance cannot be read, so its status is unknown. Until the operators have looked into it, the service may be unavailable.";
    let shown = Update {
        id: format!("{run_id}-unknown"),
        at_ms: damage.at_ms,
        status: "investigating".into(),
        kind: "status_unknown".into(),
        body: body.into(),
        eta_ms: None,
        incident: true,
        components: Vec::new(),
    };
    m.updates.insert(0, shown.clone());
    if m.incident.is_none() {
        m.incident = Some(id.clone());
    }
    incidents.push(Incident {
        id,
        name: format!("Status unknown: {}", m.title),
        status: "investigating".into(),
        impact: "major".into(),
        created_ms: damage.at_ms,
        updated_ms: damage.at_ms,
        resolved_ms: None,
        components: m.components.clone(),
        maintenance: m.id.clone(),
        timezone: m.timezone,
        updates: vec![shown],
    });
}

fn new_maintenance(
    run_id: &str,
    runbook: &str,
    plan: &PublicPlan,
    tz: Tz,
    started_ms: i64,
) -> Maintenance {
    Maintenance {
        id: run_id.to_owned(),
        runbook: runbook.to_owned(),
        title: String::new(),
        summary: None,
        components: Vec::new(),
        timezone: zone(&plan.timezone, tz),
        status: MaintenanceStatus::InProgress,
        created_ms: started_ms,
        updated_ms: started_ms,
        planned_start_ms: plan.planned_start_ms,
        planned_end_ms: plan.planned_end_ms,
        announce_from_ms: None,
        started_ms: Some(started_ms),
        ended_ms: None,
        run_id: None,
        outcome: None,
        progress: None,
        eta_ms: None,
        closed: false,
        damaged: false,
        incident: None,
        updates: Vec::new(),
    }
}

/// Every component any maintenance names, in order of first mention: under maintenance
/// while a run has the service closed, in a major outage while an incident that left
/// it closed is unresolved.
fn components(maintenances: &[Maintenance], incidents: &[Incident]) -> Vec<Component> {
    let mut out: Vec<Component> = Vec::new();
    let mut by_age: Vec<&Maintenance> = maintenances.iter().collect();
    by_age.sort_by_key(|m| (m.created_ms, m.id.clone()));
    for m in &by_age {
        for name in &m.components {
            let id = slug(name);
            if !out.iter().any(|c| c.id == id) {
                out.push(Component {
                    position: out.len() + 1,
                    id,
                    name: name.clone(),
                    status: ComponentStatus::Operational,
                    created_ms: m.created_ms,
                    updated_ms: m.created_ms,
                });
            }
        }
    }
    for c in &mut out {
        let named = |names: &[String]| names.iter().any(|n| slug(n) == c.id);
        for m in maintenances.iter().filter(|m| named(&m.components)) {
            c.updated_ms = c.updated_ms.max(m.updated_ms);
            c.status = c.status.max(implied(m, None));
        }
        for i in incidents.iter().filter(|i| named(&i.components)) {
            c.updated_ms = c.updated_ms.max(i.updated_ms);
            c.status = c.status.max(incident_implies(i));
        }
    }
    out
}

/// The status a maintenance (and the incident its run opened) gives its components:
/// under maintenance while its run has the service closed, in a major outage while an
/// incident that left it closed is unresolved.
fn implied(m: &Maintenance, incident: Option<&Incident>) -> ComponentStatus {
    let own = if m.active() && m.closed {
        ComponentStatus::UnderMaintenance
    } else {
        ComponentStatus::Operational
    };
    own.max(incident.map_or(ComponentStatus::Operational, incident_implies))
}

fn incident_implies(i: &Incident) -> ComponentStatus {
    if !i.resolved() && i.impact == "major" {
        ComponentStatus::MajorOutage
    } else {
        ComponentStatus::Operational
    }
}
