//! `restore`: puts a backup back in place of the target database (a checkpoint's
//! `restore:` action).
//!
//! PostgreSQL: the backup is restored into a new database beside the target, and only
//! once that has fully succeeded are the two swapped by renaming them in one
//! transaction; the old one is then dropped (or kept with `keep_old: true`). Unlike
//! `pg_restore --clean` into the target, this removes what was created after the backup
//! (a failed migration's new tables, views and functions, which `--clean` does not know
//! about and whose dependencies make it fail), and a restore that fails half-way leaves
//! the target as it was.
//!
//! SQLite: the backup is copied beside the target and renamed over it, after removing
//! the target's `-wal`, `-shm` and `-journal` files (they belong to the database being
//! replaced, and would otherwise be applied to the restored one).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use super::Env;
use super::artifact::{
    Artifact, Outputs, Scrap, absolute, artifact_kind, check_recorded_sha, copy_file, make_parent,
    recorded, source, sqlite_open, sqlite_path, sync_dir_of, temp_beside, took,
};
use super::pg::{
    OnDrop, ScratchDb, derived_name, ident, literal, pg_connect, pg_create_database,
    pg_database_name, pg_restore, pg_url_with_db, pg_version_num, sql_failed,
};
use crate::engine::action::{Outcome, StepLog};
use crate::engine::target::{Engine, describe};
use crate::runbook::with::RestoreWith;

pub async fn restore(p: &RestoreWith, mut env: Env<'_>) -> Outcome {
    match run(p, &mut env).await {
        Ok(o) => Outcome::Succeeded(o),
        Err(e) => Outcome::Failed(e),
    }
}

async fn run(p: &RestoreWith, env: &mut Env<'_>) -> Result<Outputs, String> {
    let started = Instant::now();
    let path = absolute(Path::new(&p.backup));
    if !path.exists() {
        return Err(format!("the backup `{}` does not exist", path.display()));
    }
    // A corrupted backup must not replace the database.
    if let Some(checked) = check_recorded_sha(&path, recorded(env.outputs, &path)).await? {
        env.log.line("note", &checked);
    }
    let kind = artifact_kind(&path)?;
    let mut out = Outputs::new();
    out.insert(
        "restored_from".into(),
        Value::from(path.display().to_string()),
    );
    match (source(&p.database)?, kind) {
        (Engine::Sqlite, Artifact::Sqlite) => {
            if p.jobs.is_some() || p.keep_old {
                return Err("`jobs` and `keep_old` apply to PostgreSQL only".into());
            }
            let target = sqlite_restore(&path, &p.database, env.log).await?;
            out.insert("database".into(), Value::from(target));
        }
        (Engine::Postgres, Artifact::PgCustom | Artifact::PgDirectory) => {
            let (name, old) = pg_swap_restore(&path, p, env.log).await?;
            out.insert("database".into(), Value::from(name));
            if let Some(old) = old {
                out.insert("old_database".into(), Value::from(old));
            }
        }
        (Engine::Sqlite, _) => {
            return Err(format!(
                "`{}` is a pg_dump archive; it cannot be restored into the SQLite database `{}`",
                path.display(),
                p.database
            ));
        }
        (Engine::Postgres, _) => {
            return Err(format!(
                "`{}` is a SQLite database; it cannot be restored into PostgreSQL",
                path.display()
            ));
        }
    }
    took(&mut out, started);
    Ok(out)
}

async fn sqlite_restore(path: &Path, url: &str, log: &mut StepLog) -> Result<String, String> {
    let target = absolute(&sqlite_path(url));
    make_parent(&target, "the restored database")?;
    let tmp = Scrap::new(temp_beside(&target, "restore"));
    let (from, to) = (path.to_path_buf(), tmp.path().to_path_buf());
    tokio::task::spawn_blocking(move || copy_file(&from, &to))
        .await
        .map_err(|e| e.to_string())??;
    // The target's journal mode (WAL, say) is the application's choice; the copy,
    // made by VACUUM INTO, has the default, so the mode is carried over.
    let mut journal_mode = None;
    if target.exists() {
        let mut conn = sqlite_open(&target, true).await?;
        let holds: Result<Option<i64>, _> = sqlx::query_scalar(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runbook_schema'",
        )
        .fetch_optional(&mut conn)
        .await;
        journal_mode = sqlx::query_scalar::<_, String>("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await
            .ok();
        let _ = conn.close().await;
        if holds
            .map_err(sql_failed("cannot look into the target"))?
            .is_some()
        {
            return Err(holds_the_journal(&target.display().to_string()));
        }
    }
    // Check the copy before it replaces anything.
    let mut conn = sqlite_open(tmp.path(), true).await?;
    let checked: Result<Vec<String>, _> = sqlx::query_scalar("PRAGMA quick_check")
        .fetch_all(&mut conn)
        .await;
    let _ = conn.close().await;
    match checked {
        Ok(rows) if rows == ["ok"] => {}
        Ok(rows) => {
            return Err(format!(
                "the backup `{}` fails PRAGMA quick_check ({}); `{}` was left as it was",
                path.display(),
                rows.join("; "),
                target.display()
            ));
        }
        Err(e) => {
            return Err(format!(
                "the backup `{}` cannot be read ({}); `{}` was left as it was",
                path.display(),
                describe(&e),
                target.display()
            ));
        }
    }
    if let Some(mode) = journal_mode.filter(|m| m.eq_ignore_ascii_case("wal")) {
        let mut conn = sqlite_open(tmp.path(), false).await?;
        let set = sqlx::raw_sql("PRAGMA journal_mode = WAL")
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
        set.map_err(sql_failed("cannot set the restored copy's journal mode"))?;
        log.line("note", &format!("journal mode {mode} kept"));
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut side = target.clone().into_os_string();
        side.push(suffix);
        let side = PathBuf::from(side);
        match std::fs::remove_file(&side) {
            Ok(()) => log.line("note", &format!("removed `{}`", side.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove `{}`: {e}", side.display())),
        }
    }
    std::fs::rename(tmp.path(), &target)
        .map_err(|e| format!("cannot replace `{}`: {e}", target.display()))?;
    tmp.keep();
    sync_dir_of(&target);
    log.line(
        "note",
        &format!("restored `{}` from `{}`", target.display(), path.display()),
    );
    Ok(target.display().to_string())
}

/// Connects to a database of the server other than the target: `postgres`, else
/// `template1`. Returns the connection and its URL.
async fn maintenance(url: &str) -> Result<(PgConnection, String), String> {
    let mut first = None;
    for db in ["postgres", "template1"] {
        match pg_connect(url, Some(db)).await {
            Ok(c) => return Ok((c, pg_url_with_db(url, db))),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.unwrap_or_default())
}

/// Restores into a new database and swaps it in; returns the target's name and the old
/// database's when it was kept.
async fn pg_swap_restore(
    path: &Path,
    p: &RestoreWith,
    log: &mut StepLog,
) -> Result<(String, Option<String>), String> {
    let target = pg_database_name(&p.database)?;
    let (mut admin, admin_url) = maintenance(&p.database).await?;
    let result = swap(path, p, &target, &mut admin, &admin_url, log).await;
    let _ = admin.close().await;
    result.map(|old| (target, old))
}

async fn swap(
    path: &Path,
    p: &RestoreWith,
    target: &str,
    admin: &mut PgConnection,
    admin_url: &str,
    log: &mut StepLog,
) -> Result<Option<String>, String> {
    let version = pg_version_num(admin).await?;
    let force = version >= 130_000;
    let exists: Option<i64> =
        sqlx::query_scalar("SELECT oid::int8 FROM pg_database WHERE datname = $1")
            .bind(target)
            .fetch_optional(&mut *admin)
            .await
            .map_err(sql_failed("cannot look the database up"))?;
    if exists.is_some() {
        refuse_the_journal(&p.database, target).await?;
    }
    let new = derived_name(target, "restore");
    let mut fresh = ScratchDb {
        admin_url: admin_url.to_owned(),
        name: new.clone(),
        force,
        armed: true,
    };
    let prepared = async {
        pg_create_database(admin, &new, exists.map(|_| target), true, log).await?;
        if let Some(oid) = exists {
            copy_database_settings(admin, oid, &new, log).await?;
        }
        pg_restore(
            path,
            &pg_url_with_db(&p.database, &new),
            p.jobs.unwrap_or(1),
            &[],
            log,
        )
        .await
        .map_err(|e| {
            format!(
                "the backup `{}` does not restore (into `{new}`, beside `{target}`); `{target}` was left as it was: {e}",
                path.display()
            )
        })
    }
    .await;
    if let Err(e) = prepared {
        if let Err(d) = fresh.drop_now(log).await {
            log.line("warning", &d);
        }
        return Err(e);
    }
    if exists.is_none() {
        let sql = format!("ALTER DATABASE {} RENAME TO {}", ident(&new), ident(target));
        log.line("sql", &sql);
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *admin)
            .await
            .map_err(sql_failed(&format!("cannot rename `{new}` to `{target}`")))?;
        fresh.armed = false;
        return Ok(None);
    }
    let old = old_name(target);
    if let Err(e) = swap_names(admin, admin_url, target, &new, &old, log).await? {
        if let Err(d) = fresh.drop_now(log).await {
            log.line("warning", &d);
        }
        return Err(e);
    }
    let exec = |sql: String| sqlx::raw_sql(sqlx::AssertSqlSafe(sql));
    fresh.armed = false;
    log.line(
        "note",
        &format!("`{target}` is now the restored backup; the replaced one is `{old}`"),
    );
    if p.keep_old {
        let reopen = format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", ident(&old));
        let _ = exec(reopen).execute(&mut *admin).await;
        return Ok(Some(old));
    }
    let mut replaced = ScratchDb {
        admin_url: admin_url.to_owned(),
        name: old.clone(),
        force,
        armed: true,
    };
    match replaced.drop_now(log).await {
        Ok(()) => Ok(None),
        Err(e) => {
            replaced.armed = false;
            log.line("warning", &format!("the replaced database is kept: {e}"));
            Ok(Some(old))
        }
    }
}

/// A database that holds this program's own journal is not replaced by a backup.
async fn refuse_the_journal(database: &str, target: &str) -> Result<(), String> {
    let mut conn = pg_connect(database, None).await?;
    let holds: Result<bool, _> = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = 'runbook_schema' AND relkind = 'r')",
    )
    .fetch_one(&mut conn)
    .await;
    let _ = conn.close().await;
    if holds.map_err(sql_failed("cannot look into the target"))? {
        return Err(holds_the_journal(target));
    }
    Ok(())
}

/// The name the replaced database is kept under: `<target>_old_<timestamp>`, within
/// PostgreSQL's 63 bytes.
fn old_name(target: &str) -> String {
    let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
    let suffix = format!("_old_{stamp}");
    let mut base = target.to_owned();
    while base.len() + suffix.len() > 63 {
        base.pop();
    }
    format!("{base}{suffix}")
}

/// Swaps the restored database `new` in for `target` (renamed `old`): no new sessions,
/// then none at all, then both renames in one transaction, tried again while sessions
/// go. When the renames cannot be made, `target` is opened again and left as it was, and
/// the inner result says why; the outer error is a failure before that.
async fn swap_names(
    admin: &mut PgConnection,
    admin_url: &str,
    target: &str,
    new: &str,
    old: &str,
    log: &mut StepLog,
) -> Result<Result<(), String>, String> {
    // No new sessions, then none at all, then the swap in one transaction.
    let exec = |sql: String| sqlx::raw_sql(sqlx::AssertSqlSafe(sql));
    let close = format!(
        "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false",
        ident(target)
    );
    log.line("sql", &close);
    exec(close)
        .execute(&mut *admin)
        .await
        .map_err(sql_failed(&format!(
            "cannot close `{target}` to new sessions"
        )))?;
    // Stopped before the swap (a timeout), the target opens again. After it, the same
    // statement names the restored database, which is open already.
    let mut reopen_guard = OnDrop {
        url: admin_url.to_owned(),
        sql: Some(format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true",
            ident(target)
        )),
    };
    let mut last = String::new();
    let mut swapped = false;
    for _ in 0..40 {
        let ended: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(target)
        .fetch_one(&mut *admin)
        .await
        .unwrap_or(0);
        if ended > 0 {
            log.line("note", &format!("ended {ended} sessions on `{target}`"));
        }
        let renames = format!(
            "BEGIN; ALTER DATABASE {} RENAME TO {}; ALTER DATABASE {} RENAME TO {}; COMMIT;",
            ident(target),
            ident(old),
            ident(new),
            ident(target)
        );
        match exec(renames.clone()).execute(&mut *admin).await {
            Ok(_) => {
                log.line("sql", &renames);
                swapped = true;
                break;
            }
            Err(e) => {
                last = describe(&e);
                let _ = exec("ROLLBACK".into()).execute(&mut *admin).await;
                // A terminated session takes a moment to go.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    reopen_guard.disarm();
    if !swapped {
        let reopen = format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true",
            ident(target)
        );
        let _ = exec(reopen).execute(&mut *admin).await;
        return Ok(Err(format!(
            "cannot swap the restored database in for `{target}` (left as it was): {last}"
        )));
    }
    Ok(Ok(()))
}

/// What a database has outside its contents, which a dump without `--create` does not
/// hold: its `ALTER DATABASE ... SET` and `ALTER ROLE ... IN DATABASE ... SET` settings,
/// connection limit, grants and comment.
async fn copy_database_settings(
    admin: &mut PgConnection,
    oid: i64,
    new: &str,
    log: &mut StepLog,
) -> Result<(), String> {
    let db = ident(new);
    let mut statements = Vec::new();
    let settings: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT CASE WHEN setrole = 0 THEN '' ELSE pg_get_userbyid(setrole)::text END, setconfig::text[]
         FROM pg_db_role_setting WHERE setdatabase = $1::int8::oid",
    )
    .bind(oid)
    .fetch_all(&mut *admin)
    .await
    .map_err(sql_failed("cannot read the database's settings"))?;
    for (role, config) in settings {
        for item in config {
            let Some((name, value)) = item.split_once('=') else {
                continue;
            };
            // List settings are stored in their own quoted list syntax.
            let list = matches!(
                name,
                "search_path"
                    | "temp_tablespaces"
                    | "session_preload_libraries"
                    | "local_preload_libraries"
            );
            let value = if list {
                value.to_owned()
            } else {
                literal(value)
            };
            statements.push(if role.is_empty() {
                format!("ALTER DATABASE {db} SET {} = {value}", ident(name))
            } else {
                format!(
                    "ALTER ROLE {} IN DATABASE {db} SET {} = {value}",
                    ident(&role),
                    ident(name)
                )
            });
        }
    }
    let (limit, has_acl, comment): (i32, bool, Option<String>) = sqlx::query_as(
        "SELECT datconnlimit, datacl IS NOT NULL, shobj_description(oid, 'pg_database')
         FROM pg_database WHERE oid = $1::int8::oid",
    )
    .bind(oid)
    .fetch_one(&mut *admin)
    .await
    .map_err(sql_failed("cannot read the database's settings"))?;
    if limit != -1 {
        statements.push(format!("ALTER DATABASE {db} CONNECTION LIMIT {limit}"));
    }
    if has_acl {
        statements.push(format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"));
        let grants: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)::text) END,
                    a.privilege_type::text, a.is_grantable
             FROM pg_database d, aclexplode(d.datacl) a WHERE d.oid = $1::int8::oid",
        )
        .bind(oid)
        .fetch_all(&mut *admin)
        .await
        .map_err(sql_failed("cannot read the database's grants"))?;
        for (grantee, privilege, grantable) in grants {
            statements.push(format!(
                "GRANT {privilege} ON DATABASE {db} TO {grantee}{}",
                if grantable { " WITH GRANT OPTION" } else { "" }
            ));
        }
    }
    if let Some(c) = comment {
        statements.push(format!("COMMENT ON DATABASE {db} IS {}", literal(&c)));
    }
    for s in statements {
        log.line("sql", &s);
        sqlx::raw_sql(sqlx::AssertSqlSafe(s.clone()))
            .execute(&mut *admin)
            .await
            .map_err(sql_failed(&format!("`{s}` failed")))?;
    }
    Ok(())
}

/// A target that holds runbook's own store: restoring it would rewind the journal of
/// the run doing the restore.
fn holds_the_journal(target: &str) -> String {
    format!(
        "`{target}` holds runbook's own journal (the store's `runbook_schema` table): restoring it would rewind this run's journal too; keep the store (--store) in another database"
    )
}
