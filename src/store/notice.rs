//! Scheduled maintenances in the journal (`runbook schedule` writes them): the ones no run
//! has carried out yet, and the mark a run leaves on the one it carries out.

use super::{Store, StoreError, now_ms};
use crate::journal::{Announcement, NoticeEvent};

/// A scheduled maintenance not yet carried out by a run.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: String,
    /// Its journal's last sequence number.
    pub seq: i64,
    pub announcement: Announcement,
}

/// The scheduled maintenances of `runbook` that no run has started, oldest first.
pub async fn pending(store: &Store, runbook: &str) -> Result<Vec<Pending>, StoreError> {
    let mut out = Vec::new();
    for (id, rb) in store.notices().await? {
        if rb != runbook {
            continue;
        }
        let events = store.load_notice_after(&id, 0).await?;
        let started = events
            .iter()
            .any(|r| matches!(r.event, NoticeEvent::MaintenanceStarted { .. }));
        let latest = events.iter().rev().find_map(|r| match &r.event {
            NoticeEvent::MaintenanceScheduled(a) => Some(a.clone()),
            _ => None,
        });
        if let (false, Some(announcement)) = (started, latest) {
            out.push(Pending {
                id,
                seq: events.last().map_or(0, |r| r.seq),
                announcement,
            });
        }
    }
    Ok(out)
}

/// Marks a scheduled maintenance as started by `run` (the run's own journal names it
/// too; this lets the next `schedule` know it is taken).
pub async fn mark_started(store: &Store, p: &Pending, run: &str) -> Result<(), StoreError> {
    let event = NoticeEvent::MaintenanceStarted {
        run: run.to_owned(),
    };
    store
        .append_notice(
            &p.id,
            &p.announcement.runbook,
            p.seq + 1,
            &[event],
            now_ms(),
        )
        .await
        .map(|_| ())
}
