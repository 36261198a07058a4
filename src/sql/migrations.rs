//! The migrations directory: file names checked (versions 1, 2, 3 ... without gap,
//! duplicate or stray), files read and checksummed. The loader checks a directory that
//! exists when the runbook is validated; `migrate` loads it to apply.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

/// One migration found in the directory.
#[derive(Debug, Clone)]
pub struct Migration {
    pub version: u64,
    /// `0002_add_points`, as the files are named.
    pub name: String,
    pub up_file: String,
    pub up_sql: String,
    /// SHA-256 of the up file, lowercase hex.
    pub checksum: String,
    /// The down file's name and text, when there is one.
    pub down: Option<(String, String)>,
    /// An online migration (`NNNN_name.yaml`): `up_file` and `up_sql` are its file and
    /// text, applied with `phase: start`, `complete` or `abort`.
    pub online: bool,
}

/// Whether a file is an online migration by its name (`NNNN_name.yaml`).
pub fn is_online_file(file: &str) -> bool {
    file.ends_with(".yaml") || file.ends_with(".yml")
}

/// SHA-256, lowercase hex.
fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a file name says: `Some((version, stem, is_up))` for a migration file, `None` for
/// a file that is not SQL (a README), an error for SQL that is named wrongly.
fn classify(file: &str) -> Result<Option<(u64, &str, bool)>, String> {
    if !file.starts_with('.') && is_online_file(file) {
        // An online migration when it is named like one; other YAML is not a migration.
        let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
        return Ok(stem.split_once('_').and_then(|(digits, name)| {
            let v: u64 = digits.parse().ok().filter(|v| *v > 0)?;
            (digits.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty())
                .then_some((v, stem, true))
        }));
    }
    if file.starts_with('.') || !file.ends_with(".sql") {
        return Ok(None);
    }
    let wrong = || {
        format!("{file} is not a migration file name: write NNNN_name.up.sql or NNNN_name.down.sql")
    };
    let (stem, up) = if let Some(s) = file.strip_suffix(".up.sql") {
        (s, true)
    } else if let Some(s) = file.strip_suffix(".down.sql") {
        (s, false)
    } else {
        return Err(wrong());
    };
    let (digits, name) = stem.split_once('_').ok_or_else(wrong)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
        return Err(wrong());
    }
    let version: u64 = digits
        .parse()
        .map_err(|_| format!("{file}: the version is too large"))?;
    if version == 0 {
        return Err(format!(
            "{file}: versions start at 1 (0 means no migration applied)"
        ));
    }
    Ok(Some((version, stem, up)))
}

/// The check the loader makes of a migrations directory that exists when the runbook is
/// validated: the file names (gaps, duplicates, strays) and, when the step's rollback
/// migrates down (`needs_down`), a down file for every migration.
pub fn check_dir(dir: &Path, needs_down: bool) -> Result<(), String> {
    let migrations = load(dir)?;
    let missing: Vec<String> = migrations
        .iter()
        .filter(|m| m.down.is_none() && !m.online)
        .map(|m| format!("{}.down.sql", m.name))
        .collect();
    if needs_down && !missing.is_empty() {
        return Err(format!(
            "the step's rollback migrates down, but `{}` has no {}",
            dir.display(),
            list(&missing)
        ));
    }
    Ok(())
}

/// The migrations in `dir`, checked: versions 1, 2, 3 ... without gap or duplicate, each
/// down file beside its up file.
pub fn load(dir: &Path) -> Result<Vec<Migration>, String> {
    let shown = dir.display();
    let entries = std::fs::read_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            let cwd = std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default();
            format!("the migrations directory `{shown}` does not exist (looked in {cwd})")
        }
        _ => format!("cannot read the migrations directory `{shown}`: {e}"),
    })?;
    let mut names: Vec<String> = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| format!("cannot read the migrations directory `{shown}`: {e}"))?;
        if entry
            .file_type()
            .is_ok_and(|t| t.is_file() || t.is_symlink())
        {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    check_names(&names, &shown.to_string())?
        .into_iter()
        .map(
            |Named {
                 version,
                 stem,
                 up,
                 down,
             }| {
                let read = |file: &str| crate::input::read_limited_text(&dir.join(file));
                let up_sql = read(&up)?;
                let down = match down {
                    Some(d) => {
                        let text = read(&d)?;
                        Some((d, text))
                    }
                    None => None,
                };
                Ok(Migration {
                    version,
                    name: stem,
                    checksum: sha256(up_sql.as_bytes()),
                    online: is_online_file(&up),
                    up_file: up,
                    up_sql,
                    down,
                })
            },
        )
        .collect()
}

/// A migration as its file names describe it.
#[derive(Debug, Clone, PartialEq)]
struct Named {
    version: u64,
    /// `0002_add_points`.
    stem: String,
    up: String,
    down: Option<String>,
}

/// The migrations the file names describe, in order; every problem named at once.
fn check_names(names: &[String], dir: &str) -> Result<Vec<Named>, String> {
    let mut problems: Vec<String> = Vec::new();
    let mut ups: BTreeMap<u64, Vec<(&str, &str)>> = BTreeMap::new();
    let mut downs: BTreeMap<u64, Vec<(&str, &str)>> = BTreeMap::new();
    for file in names {
        match classify(file) {
            Ok(Some((v, stem, true))) => ups.entry(v).or_default().push((file, stem)),
            Ok(Some((v, stem, false))) => downs.entry(v).or_default().push((file, stem)),
            Ok(None) => {}
            Err(e) => problems.push(e),
        }
    }
    for (v, files) in ups.iter().chain(downs.iter()) {
        if files.len() > 1 {
            let files: Vec<String> = files.iter().map(|(f, _)| f.to_string()).collect();
            problems.push(format!("duplicate version {v}: {}", list(&files)));
        }
    }
    let mut expected = 1;
    let mut previous: Option<&str> = None;
    for (&v, files) in &ups {
        let file = files[0].0;
        if v != expected {
            let missing = if v == expected + 1 {
                format!("version {expected} is missing")
            } else {
                format!("versions {expected} to {} are missing", v - 1)
            };
            problems.push(match previous {
                None => {
                    format!("{file} is the first migration but versions start at 1 ({missing})")
                }
                Some(p) => format!("gap in the versions between {p} and {file} ({missing})"),
            });
        }
        expected = v + 1;
        previous = Some(file);
    }
    let mut out = Vec::new();
    for (&v, files) in &ups {
        let (file, stem) = files[0];
        let down = match downs.get(&v).map(|d| d[0]) {
            Some((d, down_stem)) if down_stem != stem => {
                problems.push(format!(
                    "{d} does not match {file} (same version, another name)"
                ));
                None
            }
            Some((d, _)) if is_online_file(file) => {
                problems.push(format!(
                    "{d}: an online migration ({file}) has no down file; `phase: abort` undoes it"
                ));
                None
            }
            Some((d, _)) => Some(d.to_owned()),
            None => None,
        };
        out.push(Named {
            version: v,
            stem: stem.to_owned(),
            up: file.to_owned(),
            down,
        });
    }
    for (v, files) in &downs {
        if !ups.contains_key(v) {
            problems.push(format!(
                "{} has no up file ({}.up.sql)",
                files[0].0, files[0].1
            ));
        }
    }
    if problems.is_empty() && out.is_empty() {
        problems.push(format!(
            "the migrations directory `{dir}` holds no migrations (files named NNNN_name.up.sql)"
        ));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(format!(
            "the migrations in `{dir}` are not in order: {}",
            problems.join("; ")
        ))
    }
}

/// `a`, `a and b`, `a, b and c`.
pub fn list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_file_names() {
        assert_eq!(
            classify("0002_add_points.up.sql"),
            Ok(Some((2, "0002_add_points", true)))
        );
        assert_eq!(classify("10_x.down.sql"), Ok(Some((10, "10_x", false))));
        assert_eq!(classify("README.md"), Ok(None));
        assert!(
            classify("0002_x.sql")
                .unwrap_err()
                .contains("NNNN_name.up.sql")
        );
        assert!(classify("abc_x.up.sql").is_err());
        assert!(classify("0002.up.sql").is_err());
        assert!(
            classify("0000_x.up.sql")
                .unwrap_err()
                .contains("start at 1")
        );
    }

    fn names(files: &[&str]) -> Result<Vec<Named>, String> {
        let v: Vec<String> = files.iter().map(|s| s.to_string()).collect();
        check_names(&v, "m")
    }

    #[test]
    fn checks_versions_for_gaps_duplicates_and_strays() {
        let ok = names(&["0001_a.up.sql", "0001_a.down.sql", "0002_b.up.sql"]).unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].down.as_deref(), Some("0001_a.down.sql"));
        assert_eq!(ok[1].down, None);
        let gap = names(&["0001_a.up.sql", "0003_c.up.sql"]).unwrap_err();
        assert!(
            gap.contains("gap in the versions between 0001_a.up.sql and 0003_c.up.sql"),
            "{gap}"
        );
        assert!(gap.contains("version 2 is missing"), "{gap}");
        let dup = names(&["0001_a.up.sql", "0001_b.up.sql"]).unwrap_err();
        assert!(
            dup.contains("duplicate version 1: 0001_a.up.sql and 0001_b.up.sql"),
            "{dup}"
        );
        let first = names(&["0002_b.up.sql"]).unwrap_err();
        assert!(first.contains("versions start at 1"), "{first}");
        let stray = names(&["0001_a.up.sql", "0002_b.down.sql"]).unwrap_err();
        assert!(stray.contains("0002_b.down.sql has no up file"), "{stray}");
        let other = names(&["0001_a.up.sql", "0001_b.down.sql"]).unwrap_err();
        assert!(
            other.contains("0001_b.down.sql does not match 0001_a.up.sql"),
            "{other}"
        );
        assert!(
            names(&["notes.txt"])
                .unwrap_err()
                .contains("holds no migrations")
        );
    }
}
