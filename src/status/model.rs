//! The status projection: what customers may know, folded from the journal alone.
//!
//! Each run and each scheduled maintenance is a stream of events in the journal. This
//! module folds them, with the clock, into a [`Page`]: maintenances, incidents and
//! components with Atlassian Statuspage's vocabulary. It reads only public fields (titles,
//! the public plan, published updates), never logs, errors or outputs.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

pub use crate::engine::event::{Announcement, NoticeEvent, NoticeRecorded};
use crate::engine::event::{Event, PublicPlan, PublicUpdate, Recorded};
use crate::store::Damage;

/// One stream of the journal, as the projection reads it.
#[derive(Debug, Clone)]
pub enum Stream {
    Run {
        id: String,
        events: Vec<Recorded>,
    },
    Notice {
        id: String,
        events: Vec<NoticeRecorded>,
    },
}

/// Statuspage's maintenance statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MaintenanceStatus {
    Scheduled,
    InProgress,
    Verifying,
    Completed,
}

impl MaintenanceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MaintenanceStatus::Scheduled => "scheduled",
            MaintenanceStatus::InProgress => "in_progress",
            MaintenanceStatus::Verifying => "verifying",
            MaintenanceStatus::Completed => "completed",
        }
    }

    /// How the page says it.
    pub fn label(self) -> &'static str {
        match self {
            MaintenanceStatus::Scheduled => "Scheduled",
            MaintenanceStatus::InProgress => "In progress",
            MaintenanceStatus::Verifying => "Verifying",
            MaintenanceStatus::Completed => "Completed",
        }
    }
}

/// Statuspage's component statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentStatus {
    Operational,
    UnderMaintenance,
    DegradedPerformance,
    PartialOutage,
    MajorOutage,
}

impl ComponentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentStatus::Operational => "operational",
            ComponentStatus::UnderMaintenance => "under_maintenance",
            ComponentStatus::DegradedPerformance => "degraded_performance",
            ComponentStatus::PartialOutage => "partial_outage",
            ComponentStatus::MajorOutage => "major_outage",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ComponentStatus::Operational => "Operational",
            ComponentStatus::UnderMaintenance => "Under maintenance",
            ComponentStatus::DegradedPerformance => "Degraded performance",
            ComponentStatus::PartialOutage => "Partial outage",
            ComponentStatus::MajorOutage => "Major outage",
        }
    }
}

/// How a run's maintenance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Completed,
    RolledBack,
    Failed,
    Aborted,
}

/// One public update as shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Update {
    /// Stable: the stream and the event's place in it.
    pub id: String,
    pub at_ms: i64,
    /// Statuspage status at this update.
    pub status: String,
    pub kind: String,
    pub body: String,
    pub eta_ms: Option<i64>,
    /// An update of the incident, not of the maintenance.
    pub incident: bool,
}

/// Where a running maintenance is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    /// The public step under way (1-based), or the last one started.
    pub current: usize,
    pub total: usize,
    pub step_title: Option<String>,
}

/// A maintenance: scheduled by `runbook schedule`, carried out by a run, or both.
#[derive(Debug, Clone, PartialEq)]
pub struct Maintenance {
    pub id: String,
    pub runbook: String,
    pub title: String,
    pub summary: Option<String>,
    pub components: Vec<String>,
    pub timezone: Tz,
    pub status: MaintenanceStatus,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub planned_start_ms: Option<i64>,
    pub planned_end_ms: Option<i64>,
    /// Shown as scheduled from here on; `None`: at once.
    pub announce_from_ms: Option<i64>,
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub run_id: Option<String>,
    pub outcome: Option<Outcome>,
    pub progress: Option<Progress>,
    /// Projected end, from the latest update that gave one (while it runs).
    pub eta_ms: Option<i64>,
    /// The service is closed for it right now (as far as its journal can be read).
    pub closed: bool,
    /// Its journal cannot be read past some event: what it is doing now is unknown.
    pub damaged: bool,
    /// The incident its failure opened.
    pub incident: Option<String>,
    /// Newest first, the incident's included.
    pub updates: Vec<Update>,
}

impl Maintenance {
    pub fn active(&self) -> bool {
        matches!(
            self.status,
            MaintenanceStatus::InProgress | MaintenanceStatus::Verifying
        )
    }
}

/// An incident: opened when a run fails (or is aborted with the service closed).
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub id: String,
    pub name: String,
    /// investigating | identified | monitoring | resolved.
    pub status: String,
    /// minor (the service stayed open) | major (it was left closed).
    pub impact: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub resolved_ms: Option<i64>,
    pub components: Vec<String>,
    pub maintenance: String,
    pub timezone: Tz,
    /// Newest first.
    pub updates: Vec<Update>,
}

impl Incident {
    pub fn resolved(&self) -> bool {
        self.status == "resolved"
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Component {
    /// A slug of the name: stable across runs.
    pub id: String,
    pub name: String,
    pub status: ComponentStatus,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub position: usize,
}

/// Settings of the page itself (from `runbook serve`'s flags).
#[derive(Debug, Clone)]
pub struct PageInfo {
    pub name: String,
    /// Absolute base URL, for feeds and links (`http://ADDR` unless given).
    pub url: String,
    /// The zone every time is shown in (`--timezone`); `None`: each maintenance's own
    /// (its runbook's `window.timezone`).
    pub timezone: Option<Tz>,
}

/// Everything the public side shows, at one moment.
#[derive(Debug, Clone)]
pub struct Page {
    pub info: PageInfo,
    pub now_ms: i64,
    /// Newest first (by planned start, else start, else creation).
    pub maintenances: Vec<Maintenance>,
    /// Newest first.
    pub incidents: Vec<Incident>,
    pub components: Vec<Component>,
    /// When anything shown last changed.
    pub updated_ms: i64,
}

/// The overall indicator, as Statuspage's `status` object says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Indicator {
    pub indicator: &'static str,
    pub description: &'static str,
}

impl Page {
    /// The zone the page shows a maintenance's times in.
    pub fn zone(&self, m: &Maintenance) -> Tz {
        self.info.timezone.unwrap_or(m.timezone)
    }

    /// The zone for times not tied to one maintenance.
    pub fn page_zone(&self) -> Tz {
        self.info.timezone.unwrap_or(Tz::UTC)
    }

    /// Maintenances in progress or verifying.
    pub fn active(&self) -> impl Iterator<Item = &Maintenance> {
        self.maintenances.iter().filter(|m| m.active())
    }

    /// Scheduled maintenances shown now (announced, and not past their window), soonest
    /// first.
    pub fn upcoming(&self) -> Vec<&Maintenance> {
        let mut v: Vec<&Maintenance> = self
            .maintenances
            .iter()
            .filter(|m| m.status == MaintenanceStatus::Scheduled && self.announced(m))
            .filter(|m| m.planned_end_ms.is_none_or(|end| end > self.now_ms))
            .collect();
        v.sort_by_key(|m| (m.planned_start_ms, m.created_ms));
        v
    }

    /// Whether a maintenance may be shown at all yet.
    pub fn announced(&self, m: &Maintenance) -> bool {
        m.status != MaintenanceStatus::Scheduled
            || m.announce_from_ms.is_none_or(|t| t <= self.now_ms)
    }

    /// Maintenances to list and give a page: everything announced.
    pub fn visible(&self) -> impl Iterator<Item = &Maintenance> {
        self.maintenances.iter().filter(|m| self.announced(m))
    }

    /// Finished maintenances, newest first.
    pub fn past(&self) -> impl Iterator<Item = &Maintenance> {
        let mut v: Vec<&Maintenance> = self
            .maintenances
            .iter()
            .filter(|m| m.status == MaintenanceStatus::Completed)
            .collect();
        // The latest to end first.
        v.sort_by_key(|m| std::cmp::Reverse((m.ended_ms.unwrap_or(m.updated_ms), m.id.clone())));
        v.into_iter()
    }

    pub fn unresolved_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.iter().filter(|i| !i.resolved())
    }

    /// The next moment the page changes with no new event (an announcement comes due,
    /// or a scheduled window passes).
    pub fn next_change_ms(&self) -> Option<i64> {
        self.maintenances
            .iter()
            .filter(|m| m.status == MaintenanceStatus::Scheduled)
            .flat_map(|m| [m.announce_from_ms, m.planned_end_ms])
            .flatten()
            .filter(|&t| t > self.now_ms)
            .min()
    }

    pub fn indicator(&self) -> Indicator {
        let worst = self.unresolved_incidents().map(|i| i.impact.as_str()).fold(
            "none",
            |acc, impact| match (acc, impact) {
                ("major", _) | (_, "major") => "major",
                _ => "minor",
            },
        );
        match worst {
            // A maintenance whose journal cannot be read may be doing anything.
            _ if self.maintenances.iter().any(|m| m.damaged) => Indicator {
                indicator: "major",
                description: "Status Unknown",
            },
            "major" => Indicator {
                indicator: "major",
                description: "Major System Outage",
            },
            "minor" => Indicator {
                indicator: "minor",
                description: "Partial System Outage",
            },
            _ if self.active().next().is_some() => Indicator {
                indicator: "maintenance",
                description: "Service Under Maintenance",
            },
            _ => Indicator {
                indicator: "none",
                description: "All Systems Operational",
            },
        }
    }

    /// Every update of every visible maintenance, newest first, with its maintenance.
    pub fn all_updates(&self) -> Vec<(&Maintenance, &Update)> {
        let mut v: Vec<(&Maintenance, &Update)> = self
            .visible()
            .flat_map(|m| m.updates.iter().map(move |u| (m, u)))
            .collect();
        v.sort_by(|a, b| b.1.at_ms.cmp(&a.1.at_ms).then(b.1.id.cmp(&a.1.id)));
        v
    }
}

/// A component's id: its name in lower case, runs of anything else as `-`.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        "component".into()
    } else {
        out
    }
}

pub use crate::duration::local;

/// A time of day in a zone: `20:45 GMT` (for an ETA the same day).
pub fn local_time(ms: i64, tz: Tz) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.with_timezone(&tz).format("%H:%M %Z").to_string(),
        None => String::new(),
    }
}

/// RFC 3339 in UTC with milliseconds, as Statuspage's JSON writes times.
pub fn iso(ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => String::new(),
    }
}

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
        .unwrap_or(0);
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
                ..
            },
        ..
    }) = events.first()
    else {
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
    });
    let mut incident: Option<Incident> = None;
    for r in &events[1..] {
        match &r.event {
            Event::StepStarted { step, .. } => {
                if let Some(pos) = public_steps.iter().position(|s| &s.id == step) {
                    m.progress = Some(Progress {
                        current: pos + 1,
                        total: public_steps.len(),
                        step_title: public_steps[pos].title.clone(),
                    });
                }
            }
            Event::ServiceClosed => {
                m.closed = true;
                m.updated_ms = r.at_ms;
            }
            Event::ServiceReopened => {
                m.closed = false;
                m.updated_ms = r.at_ms;
            }
            Event::RollbackStarted { .. } => {
                m.status = MaintenanceStatus::InProgress;
            }
            Event::RunCompleted | Event::RunRolledBack { .. } => {
                m.status = MaintenanceStatus::Completed;
                m.ended_ms = Some(r.at_ms);
                m.updated_ms = r.at_ms;
                m.eta_ms = None;
                m.outcome = Some(if matches!(r.event, Event::RunCompleted) {
                    Outcome::Completed
                } else {
                    Outcome::RolledBack
                });
            }
            Event::RunFailed { .. } | Event::RunAborted { .. } => {
                let failed = matches!(r.event, Event::RunFailed { .. });
                m.status = MaintenanceStatus::Completed;
                m.ended_ms = Some(r.at_ms);
                m.updated_ms = r.at_ms;
                m.eta_ms = None;
                m.outcome = Some(if failed {
                    Outcome::Failed
                } else {
                    Outcome::Aborted
                });
                if failed || m.closed {
                    let id = format!("inc-{run_id}");
                    m.incident = Some(id.clone());
                    incident = Some(Incident {
                        id,
                        name: format!("Problem during maintenance: {}", m.title),
                        status: "investigating".into(),
                        impact: if m.closed { "major" } else { "minor" }.into(),
                        created_ms: r.at_ms,
                        updated_ms: r.at_ms,
                        resolved_ms: None,
                        components: m.components.clone(),
                        maintenance: m.id.clone(),
                        timezone: m.timezone,
                        updates: Vec::new(),
                    });
                }
            }
            Event::Published(u) => {
                let shown = update(run_id, r.seq, r.at_ms, u);
                match incident.as_mut() {
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
                        // The run's updates say when it is verifying (once the work
                        // is done); its end says when it completed.
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
            _ => {}
        }
    }
    if let Some(i) = incident {
        incidents.push(i);
    }
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
            if m.active() && m.closed {
                c.status = c.status.max(ComponentStatus::UnderMaintenance);
            }
        }
        for i in incidents.iter().filter(|i| named(&i.components)) {
            c.updated_ms = c.updated_ms.max(i.updated_ms);
            if !i.resolved() && i.impact == "major" {
                c.status = c.status.max(ComponentStatus::MajorOutage);
            }
        }
    }
    out
}
