//! Store URLs, parsed once: the store, the directory of the step logs beside it and
//! every message use the same reading of a URL.
//!
//! `sqlite://PATH[?mode=ro|rw|rwc]`: PATH is percent-decoded (`%2e` is `.`, `%3f` a
//! `?`), as SQLite's URL rules say, and relative to the current directory.
//! `postgres://...` and `postgresql://...` go to the server as written, but for
//! `mode=ro`, which this program reads and takes out.

use std::path::{Path, PathBuf};

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// How a store may be used, from the URL's `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `mode=ro`: read only; every write is refused, nothing is created or migrated.
    ReadOnly,
    /// `mode=rw`: the store must exist.
    ReadWrite,
    /// `mode=rwc` (the default): created if missing.
    Create,
}

/// Where the store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The database file (decoded).
    Sqlite(PathBuf),
    /// The URL to connect with (`mode` taken out).
    Postgres(String),
}

/// A store URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    /// As the user wrote it (for messages).
    pub raw: String,
    pub location: Location,
    pub mode: Mode,
}

/// What `%` decoding must not change back: a connect URL holds the decoded path with
/// these encoded again.
const PATH_RESERVED: &AsciiSet = &CONTROLS.add(b'%').add(b'?').add(b'#');

/// The path and the query of a `sqlite://PATH[?QUERY]` URL, the path decoded: the one
/// reading of a SQLite URL (the store's and a step's database's).
pub fn sqlite_path(url: &str) -> Result<(PathBuf, &str), String> {
    let rest = url
        .strip_prefix("sqlite://")
        .ok_or_else(|| format!("`{url}` is not a sqlite:// URL"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let decoded = percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| format!("the path of `{url}` is not UTF-8 once decoded"))?;
    Ok((PathBuf::from(decoded.as_ref()), query))
}

/// A SQLite URL of `path` that means `path` again once decoded, with `query`.
pub fn sqlite_url_of(path: &Path, query: &str) -> String {
    let path = utf8_percent_encode(&path.to_string_lossy(), PATH_RESERVED).to_string();
    if query.is_empty() {
        format!("sqlite://{path}")
    } else {
        format!("sqlite://{path}?{query}")
    }
}

fn mode_of(value: &str) -> Result<Mode, String> {
    match value {
        "ro" => Ok(Mode::ReadOnly),
        "rw" => Ok(Mode::ReadWrite),
        "rwc" => Ok(Mode::Create),
        other => Err(format!("`mode={other}` is none of ro, rw, rwc")),
    }
}

impl StoreUrl {
    /// Parses a store URL; the error says what is wrong with it.
    pub fn parse(url: &str) -> Result<StoreUrl, String> {
        if url.starts_with("sqlite://") {
            let (path, query) = sqlite_path(url)?;
            if path.as_os_str().is_empty() {
                return Err("no file name".into());
            }
            if path == Path::new(":memory:") {
                return Err("a store in memory keeps nothing: name a file".into());
            }
            let mut mode = Mode::Create;
            for (key, value) in form_urlencoded::parse(query.as_bytes()) {
                match &*key {
                    "mode" => mode = mode_of(&value)?,
                    other => {
                        return Err(format!(
                            "unknown parameter `{other}` (a SQLite store takes only mode=ro|rw|rwc)"
                        ));
                    }
                }
            }
            return Ok(StoreUrl {
                raw: url.to_owned(),
                location: Location::Sqlite(path),
                mode,
            });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (base, query) = url.split_once('?').unwrap_or((url, ""));
            let mut mode = Mode::Create;
            let mut kept = Vec::new();
            for part in query.split('&').filter(|p| !p.is_empty()) {
                match part.strip_prefix("mode=") {
                    Some(value) => mode = mode_of(value)?,
                    None => kept.push(part),
                }
            }
            let connect = if kept.is_empty() {
                base.to_owned()
            } else {
                format!("{base}?{}", kept.join("&"))
            };
            return Ok(StoreUrl {
                raw: url.to_owned(),
                location: Location::Postgres(connect),
                mode,
            });
        }
        Err("use sqlite://PATH or postgres://USER@HOST/DB".into())
    }

    pub fn read_only(&self) -> bool {
        self.mode == Mode::ReadOnly
    }

    /// The SQLite file, if the store is one.
    pub fn sqlite_file(&self) -> Option<&Path> {
        match &self.location {
            Location::Sqlite(p) => Some(p),
            Location::Postgres(_) => None,
        }
    }

    /// The URL the driver connects with.
    pub fn connect_url(&self) -> String {
        match &self.location {
            Location::Sqlite(path) => sqlite_url_of(
                path,
                match self.mode {
                    Mode::ReadOnly => "mode=ro",
                    Mode::ReadWrite => "mode=rw",
                    Mode::Create => "mode=rwc",
                },
            ),
            Location::Postgres(url) => url.clone(),
        }
    }

    /// Where step logs go: the directory of a SQLite store's file, else `.runbook/`.
    pub fn state_dir(&self) -> PathBuf {
        match &self.location {
            Location::Sqlite(path) => path.parent().map(Path::to_path_buf).unwrap_or_default(),
            Location::Postgres(_) => PathBuf::from(".runbook"),
        }
    }
}

/// The log directory of run `run_id` of the store at `url`: `logs/RUN` beside a SQLite
/// store (its file's directory), or under `.runbook/` for PostgreSQL.
pub fn log_dir(url: &str, run_id: &str) -> PathBuf {
    StoreUrl::parse(url)
        .map_or_else(|_| PathBuf::from(".runbook"), |u| u.state_dir())
        .join("logs")
        .join(run_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_reading_of_a_sqlite_url() {
        let u = StoreUrl::parse("sqlite://%2e%2e/x/state.db").unwrap();
        assert_eq!(u.sqlite_file(), Some(Path::new("../x/state.db")));
        assert_eq!(u.state_dir(), PathBuf::from("../x"));
        assert_eq!(u.connect_url(), "sqlite://../x/state.db?mode=rwc");
        let odd = StoreUrl::parse("sqlite://a%25b%3Fc.db?mode=ro").unwrap();
        assert_eq!(odd.sqlite_file(), Some(Path::new("a%b?c.db")));
        assert!(odd.read_only());
        assert_eq!(odd.connect_url(), "sqlite://a%25b%3Fc.db?mode=ro");
        assert!(
            StoreUrl::parse("sqlite://x.db?cache=shared")
                .unwrap_err()
                .contains("unknown parameter `cache`")
        );
        assert!(StoreUrl::parse("sqlite://x.db?mode=wat").is_err());
        let pg = StoreUrl::parse("postgres://u@h/db?sslmode=disable&mode=ro").unwrap();
        assert!(pg.read_only());
        assert_eq!(pg.connect_url(), "postgres://u@h/db?sslmode=disable");
        assert_eq!(pg.state_dir(), PathBuf::from(".runbook"));
    }
}
