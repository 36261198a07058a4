//! Database URLs: which database a URL is for, and the PostgreSQL URL rewritten (another
//! database name, no password) for connecting and for showing.

/// The kind of database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Sqlite,
}

/// Which database a URL is for, or why it is none this program speaks to.
pub fn engine(url: &str) -> Result<Engine, String> {
    if url.starts_with("sqlite://") {
        Ok(Engine::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Engine::Postgres)
    } else {
        Err(format!(
            "unsupported database URL `{url}`: use postgres://... or sqlite://PATH"
        ))
    }
}

/// Splits `postgres://AUTHORITY[/DB][?QUERY]` at the end of the authority and of the
/// path.
pub fn pg_url_bounds(url: &str) -> (usize, usize) {
    let start = url.find("://").map_or(0, |i| i + 3);
    let auth_end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let path_end = url[auth_end..]
        .find('?')
        .map_or(url.len(), |i| auth_end + i);
    (auth_end, path_end)
}

/// The URL with another database name.
pub fn pg_url_with_db(url: &str, name: &str) -> String {
    let (auth_end, path_end) = pg_url_bounds(url);
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{}/{encoded}{}", &url[..auth_end], &url[path_end..])
}

/// The URL without its password (recorded in outputs; the password then comes from
/// `PGPASSWORD` or `~/.pgpass`, as for the tools).
pub fn pg_url_without_password(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let (auth_end, _) = pg_url_bounds(url);
    let auth = &url[start..auth_end];
    match auth.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{}{user}@{host}{}", &url[..start], &url[auth_end..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = "postgres://u:p%40ss@h:5432/shop?sslmode=disable";
        assert_eq!(
            pg_url_with_db(u, "x_1"),
            "postgres://u:p%40ss@h:5432/x_1?sslmode=disable"
        );
        assert_eq!(
            pg_url_without_password(u),
            "postgres://u@h:5432/shop?sslmode=disable"
        );
        assert_eq!(pg_url_with_db("postgres://h", "a b"), "postgres://h/a%20b");
        assert_eq!(
            pg_url_with_db("postgres://h?x=1", "d"),
            "postgres://h/d?x=1"
        );
    }
}
