//! The status projection: what customers may know, folded from the journal alone.
//!
//! Each run and each scheduled maintenance is a stream of events in the journal;
//! [`project`] folds them, with the clock, into the [`Page`] defined here:
//! maintenances, incidents and components with Atlassian Statuspage's vocabulary. It
//! reads only public fields (titles, the public plan, published updates), never logs,
//! errors or outputs.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::engine::event::Recorded;
pub use crate::engine::event::{Announcement, NoticeEvent, NoticeRecorded};

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

/// What the page says above everything else ([`Page::headline`]).
#[derive(Debug, Clone, Copy)]
pub struct Headline<'a> {
    pub maintenance: Option<&'a Maintenance>,
    pub status: &'static str,
    pub closed: Option<bool>,
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

impl Outcome {
    /// How the page, the feeds and the banner name it.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Completed => "Completed",
            Outcome::RolledBack => "Rolled back",
            Outcome::Failed => "Failed",
            Outcome::Aborted => "Stopped",
        }
    }

    /// The outcome a run's last public update (of `kind`) tells.
    pub fn of_update(kind: &str) -> Option<Outcome> {
        match kind {
            "completed" => Some(Outcome::Completed),
            "rolled_back" => Some(Outcome::RolledBack),
            "failed" => Some(Outcome::Failed),
            "aborted" => Some(Outcome::Aborted),
            _ => None,
        }
    }
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
    /// The component statuses that changed since the run's previous update (Statuspage's
    /// `affected_components`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ComponentChange>,
}

/// A component's status changed, as an update tells it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentChange {
    /// The component's id.
    pub code: String,
    pub name: String,
    pub old_status: ComponentStatus,
    pub new_status: ComponentStatus,
}

/// Where a running maintenance is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    /// The public step under way (1-based), or the last one started.
    pub current: usize,
    pub total: usize,
    pub step_title: Option<String>,
    /// How much of the current step's work is done, in percent, when it reports it (an
    /// online migration's backfill).
    pub step_percent: Option<u8>,
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

    /// Under way past its ETA: the page says it is taking longer, never a past time.
    pub fn late(&self, now_ms: i64) -> bool {
        self.active()
            && self
                .eta_ms
                .or(self.planned_end_ms)
                .is_some_and(|eta| eta <= now_ms)
    }

    /// The ETA to show: none once it has passed.
    pub fn eta_shown(&self, now_ms: i64) -> Option<i64> {
        self.eta_ms.filter(|_| self.active() && !self.late(now_ms))
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
#[derive(Debug, Clone, Default)]
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

    /// The zone for times not tied to one maintenance, and the page's `time_zone`:
    /// `--timezone`, else the zone every maintenance is shown in when they share one
    /// (so the API names the zone the pages show), else UTC.
    pub fn page_zone(&self) -> Tz {
        if let Some(tz) = self.info.timezone {
            return tz;
        }
        let mut zones = self.maintenances.iter().map(|m| m.timezone);
        match zones.next() {
            Some(first) if zones.all(|z| z == first) => first,
            _ => Tz::UTC,
        }
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

    /// Whether `m`, ended, left the service closed: until a later run of the same
    /// runbook (a recovery run) has it open again.
    fn left_closed(&self, m: &Maintenance) -> bool {
        m.closed
            && !m.active()
            && !self.maintenances.iter().any(|later| {
                later.runbook == m.runbook
                    && !later.closed
                    && later
                        .started_ms
                        .zip(m.started_ms)
                        .is_some_and(|(l, e)| l > e)
            })
    }

    /// What the page says above everything else, in one place for `/api/v1/maintenance`
    /// and the badge: the maintenance that closed the service (or left it closed), else
    /// the newest active one, else the one whose incident is still open, else the next
    /// one; its status (`none`, `scheduled`, `in_progress`, `verifying`, `incident`,
    /// `unknown`); and whether the service is closed (`None`: cannot be known, a journal
    /// is damaged).
    pub fn headline(&self) -> Headline<'_> {
        let active: Vec<&Maintenance> = self.active().collect();
        // A run that ended with the service closed keeps it closed, until a later run
        // of the same runbook (a recovery run) has the service open again.
        let left_closed = self.maintenances.iter().find(|m| self.left_closed(m));
        let open_incident = self.unresolved_incidents().find_map(|i| {
            self.maintenances
                .iter()
                .find(|m| m.incident.as_deref() == Some(i.id.as_str()))
        });
        let current = active
            .iter()
            .find(|m| m.closed)
            .copied()
            .or(left_closed)
            .or(active.first().copied())
            .or(open_incident)
            .or(self.upcoming().first().copied());
        let closed = current.is_some_and(|m| m.active() && m.closed || self.left_closed(m));
        // A maintenance whose journal cannot be read may have closed the service since
        // its last readable event: not knowing is said as such, never as open.
        let damaged = self.maintenances.iter().find(|m| m.damaged);
        if !closed && let Some(d) = damaged {
            return Headline {
                maintenance: Some(d),
                status: "unknown",
                closed: None,
            };
        }
        let status = match current {
            Some(m) if m.active() || m.status == MaintenanceStatus::Scheduled => m.status.as_str(),
            Some(_) => "incident",
            None => "none",
        };
        Headline {
            maintenance: current,
            status,
            closed: Some(closed),
        }
    }

    pub fn unresolved_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.iter().filter(|i| !i.resolved())
    }

    /// The next moment the page changes with no new event (an announcement comes due,
    /// or a scheduled window passes).
    pub fn next_change_ms(&self) -> Option<i64> {
        let scheduled = self
            .maintenances
            .iter()
            .filter(|m| m.status == MaintenanceStatus::Scheduled)
            .flat_map(|m| [m.announce_from_ms, m.planned_end_ms]);
        // The moment an ETA passes, the page says the work is taking longer.
        let etas = self
            .maintenances
            .iter()
            .filter(|m| m.active())
            .map(|m| m.eta_ms);
        scheduled
            .chain(etas)
            .flatten()
            .filter(|&t| t > self.now_ms)
            .min()
    }

    pub fn indicator(&self) -> Indicator {
        let rank = |impact: &str| match impact {
            "critical" => 3,
            "major" => 2,
            _ => 1,
        };
        let worst = self
            .unresolved_incidents()
            .map(|i| i.impact.as_str())
            .max_by_key(|i| rank(i))
            .map(|i| match rank(i) {
                3 => "critical",
                2 => "major",
                _ => "minor",
            })
            .unwrap_or("none");
        // Statuspage's pairs of indicator and description.
        match worst {
            // A maintenance whose journal cannot be read may be doing anything.
            _ if self.maintenances.iter().any(|m| m.damaged) => Indicator {
                indicator: "major",
                description: "Status Unknown",
            },
            "critical" => Indicator {
                indicator: "critical",
                description: "Major System Outage",
            },
            "major" => Indicator {
                indicator: "major",
                description: "Partial System Outage",
            },
            "minor" => Indicator {
                indicator: "minor",
                description: "Minor Service Outage",
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

/// RFC 3339 in UTC with milliseconds, as Statuspage's JSON writes times.
pub fn iso(ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => String::new(),
    }
}

mod project;
pub use project::{RunJournal, project, project_journals};
