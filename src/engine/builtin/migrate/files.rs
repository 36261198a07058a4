//! The migrations directory compared with what the database records as applied (the
//! directory itself is read and checked by `crate::sql::migrations`).

use super::apply::Job;
use super::tracking::{Applied, TABLE};
use crate::sql::migrations::Migration;

impl Migration {
    /// The job that undoes this migration, when it has a down file.
    pub(super) fn down_job(&self) -> Option<Job<'_>> {
        self.down.as_ref().map(|(file, sql)| Job {
            version: self.version,
            name: &self.name,
            file,
            sql,
            up: false,
            checksum: &self.checksum,
        })
    }
}

/// Compares what the database applied with the files: every applied version has its
/// file, unchanged (or accepted), and the applied versions are 1 to the current one.
/// Returns the accepted changes, (migration, what the database recorded).
pub(super) fn check_applied<'m>(
    migrations: &'m [Migration],
    applied: &[Applied],
    accept: &[u64],
    dir: &str,
) -> Result<Vec<(&'m Migration, Applied)>, String> {
    let latest = migrations.last().map_or(0, |m| m.version);
    if let Some(last) = applied.last()
        && last.version > latest
    {
        return Err(format!(
            "the database is at version {} ({}, applied on {}) but `{dir}` has migrations only up to {latest}: is it the right directory, or an older copy of it?",
            last.version, last.name, last.applied_at
        ));
    }
    for (i, a) in applied.iter().enumerate() {
        let expected = i as u64 + 1;
        if a.version != expected {
            let file = migrations
                .iter()
                .find(|m| m.version == expected)
                .map_or(String::new(), |m| format!(" ({})", m.up_file));
            return Err(format!(
                "the tracking table {TABLE} records version {} but not version {expected}{file}; \
                 it was changed by hand: make it list versions 1 to {} or none",
                a.version, a.version
            ));
        }
    }
    let mut changed = Vec::new();
    let mut accepted = Vec::new();
    for a in applied {
        let m = &migrations[a.version as usize - 1];
        if m.checksum == a.checksum && m.name == a.name {
            continue;
        }
        if accept.contains(&a.version) {
            accepted.push((m, a.clone()));
            continue;
        }
        let what = if m.name != a.name {
            format!("it was applied as {} and is now {}", a.name, m.up_file)
        } else {
            format!(
                "checksum recorded {}, now {}",
                a.checksum.chars().take(12).collect::<String>(),
                &m.checksum[..12]
            )
        };
        changed.push((
            a.version,
            format!(
                "{} was changed after it was applied on {} ({what})",
                m.up_file, a.applied_at
            ),
        ));
    }
    if !changed.is_empty() {
        let versions: Vec<String> = changed.iter().map(|(v, _)| v.to_string()).collect();
        let texts: Vec<String> = changed.into_iter().map(|(_, t)| t).collect();
        return Err(format!(
            "{}; an applied migration must not change (write a new one). If the change is deliberate and already done in the database, accept it with `accept_changed: [{}]` in the step's `with`",
            texts.join("; "),
            versions.join(", ")
        ));
    }
    Ok(accepted)
}
