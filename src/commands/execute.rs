//! `runbook execute`: loads the runbook with its `--var`s, refuses before saying anything
//! about a run that will not exist (a taken id, a held lease), starts the status page if
//! asked, shows the plan and asks, waits for the window, takes the lease, records the
//! run's start with its public texts, and drives the run.

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use super::{fail, lease, log_dir, operator, say_run_id, secrets_set};
use crate::engine::control::sha256;
use crate::engine::event::Event;
use crate::engine::run::Runner;
use crate::engine::state::RunState;
use crate::engine::terminal::{LogFormat, Reporter};
use crate::exit::{Failure, Outcome};
use crate::runbook::{self, Runbook};
use crate::store::{Lease, Store, now_ms};

/// Starts the status page beside a run, given the store URL: the page's module is above
/// the engine (the admin API calls into it), so `execute --serve` is handed one.
pub type PageStarter = Box<
    dyn FnOnce(
            String,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<tokio::task::JoinHandle<()>, String>>
                    + Send,
            >,
        > + Send,
>;

/// Options of `runbook execute`.
pub struct ExecuteArgs {
    pub file: PathBuf,
    pub vars: Vec<(String, String)>,
    pub run_id: Option<String>,
    pub now: bool,
    pub yes: bool,
    pub dry_run: bool,
    pub store: Option<String>,
    pub log_format: LogFormat,
    /// Serve the status page while the run goes on: started (given the store URL) once
    /// the run may begin, and before it does.
    pub serve: Option<PageStarter>,
    /// `strict`: the window guard rolls back by itself instead of pausing.
    pub guard_strict: bool,
    /// `--rehearsal`: run for real, tell customers nothing.
    pub rehearsal: bool,
    /// `--maintenance ID`: the scheduled maintenance this run carries out.
    pub maintenance: Option<String>,
    /// `--limit`: host steps run only on these hosts and groups.
    pub limit: Vec<String>,
}

/// How long `execute --serve` keeps serving after the run ends.
const SERVE_LINGER: Duration = Duration::from_secs(2);

/// `runbook execute`.
pub async fn execute(args: ExecuteArgs) -> Outcome {
    let mut rb = runbook::load_file(&args.file).map_err(|e| Failure::rendered(e.render()))?;
    crate::engine::vars::apply_vars(&mut rb, &args.vars).map_err(Failure::invalid)?;
    rb.limit_to(&args.limit).map_err(Failure::invalid)?;
    secrets_set(&rb).map_err(Failure::invalid)?;
    let team = team_targets(&rb).map_err(Failure::invalid)?;
    let bytes = crate::input::read_limited(&args.file).unwrap_or_default();
    if args.dry_run {
        let file = args.file.display().to_string();
        return super::dry_run::dry_run(&rb, &file, Reporter::plain(args.log_format)).await;
    }
    let url = crate::store::chosen_url(args.store.as_deref());
    let store = match Store::open(&url)
        .await
        .and_then(|s| s.writable().map(|()| s))
    {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let run_id = run_id_for(&rb, args.run_id.as_deref())?;
    may_begin(&store, &rb, &run_id).await?;
    let scheduled = carried_out(&store, &rb, &args).await?;
    // The page is started before the run: a page that cannot be served is a reason not
    // to begin.
    let server = match args.serve {
        Some(start) => Some(start(url.clone()).await.map_err(Failure::invalid)?),
        None => None,
    };
    say_run_id(args.log_format, &run_id);
    if !args.yes && std::io::stdin().is_terminal() {
        confirm(&rb, &run_id)?;
    }
    let out = Reporter::new(args.log_format, &rb);
    if !team.is_empty() && server.is_none() {
        // Team notifications go through the store's outbox: a server sends them.
        out.note(&format!(
            "notify: {} target(s) hear of this run through a `runbook serve` on this store (or `--serve`)",
            team.len()
        ));
    }
    if !args.now {
        wait_for_window(&out, &rb).await;
    }
    let lease = lease::acquire(&store, &lease::ours(&rb.id, &run_id)).await?;
    let mut runner = Runner::new(
        &rb,
        store.holding(&lease),
        run_id.clone(),
        RunState::default(),
        0,
        log_dir(&url, &run_id),
        out,
    );
    runner.learned = super::learned(&store, &rb.id, &run_id).await;
    let start = Start {
        file: &args.file,
        bytes: &bytes,
        now: args.now,
        guard_strict: args.guard_strict,
        rehearsal: args.rehearsal,
        scheduled,
        team,
    };
    if let Err(e) = start.record(&mut runner, &store, &lease).await {
        let _ = store.release(&rb.id, &run_id).await;
        return fail(e);
    }
    let code = super::drive::finish(runner, &lease).await;
    if let Some(server) = server {
        // Long enough for the page and its live clients to show how the run ended.
        tokio::time::sleep(SERVE_LINGER).await;
        server.abort();
    }
    code
}

/// `--run-id`, or one made of the runbook's id and the time. The id names the run's log
/// directory: no `.`/`..`, nothing a file system refuses.
fn run_id_for(rb: &Runbook, given: Option<&str>) -> Result<String, Failure> {
    let run_id = given.map(str::to_owned).unwrap_or_else(|| {
        format!(
            "{}-{}",
            rb.id,
            chrono::Utc::now().format("%Y%m%d-%H%M%S-%3f")
        )
    });
    let well_formed = run_id.len() <= 128
        && run_id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !well_formed {
        return Err(Failure::invalid(format!(
            "--run-id `{run_id}`: start with a letter or digit, then letters, digits, `-`, `_` and `.`, at most 128 characters"
        )));
    }
    Ok(run_id)
}

/// Refuses before saying anything about a run that will not exist: its id is taken, or
/// another run holds the runbook's lease (one left by a run that ended is given back).
async fn may_begin(store: &Store, rb: &Runbook, run_id: &str) -> Result<(), Failure> {
    match store.run_exists(run_id).await {
        Ok(true) => {
            return Err(Failure::invalid(format!(
                "run `{run_id}` already exists; choose another --run-id"
            )));
        }
        Ok(false) => {}
        Err(e) => return Err(Failure::invalid(e)),
    }
    match store.lease(&rb.id).await {
        Ok(Some(holder)) if !lease::ended_run(store, &holder).await => Err(lease::refuse(&holder)),
        Ok(_) => Ok(()),
        Err(e) => Err(Failure::invalid(e)),
    }
}

/// Shows the plan and asks whether to start; anything but yes is "not started".
fn confirm(rb: &Runbook, run_id: &str) -> Result<(), Failure> {
    out!(
        "{}",
        crate::plan::plan(rb, None, chrono::Utc::now()).to_text()
    );
    out!("Start run `{run_id}` of `{}`? [y/N] ", rb.id);
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        return Err(Failure::rendered("not started\n"));
    }
    Ok(())
}

/// Waits for the runbook's window to open, saying so (without `--now`).
async fn wait_for_window(out: &Reporter, rb: &Runbook) {
    let Some(start) = rb.window.start else {
        return;
    };
    let wait = (start - chrono::Utc::now()).to_std().unwrap_or_default();
    if wait.is_zero() {
        return;
    }
    out.note(&format!(
        "waiting for the window to open at {} (use --now to start at once)",
        start
            .with_timezone(&rb.window.timezone)
            .format("%Y-%m-%d %H:%M %Z")
    ));
    tokio::time::sleep(wait).await;
}

/// The scheduled maintenance (`runbook schedule`) a run carries out: the one it names
/// with `--maintenance`, else the oldest one not carried out yet whose window the run
/// starts in; none for a rehearsal. A run outside every window (a drill, a preflight
/// the day before) leaves the announced maintenance as it is.
async fn carried_out(
    store: &Store,
    rb: &Runbook,
    args: &ExecuteArgs,
) -> Result<Option<crate::store::notice::Pending>, Failure> {
    if args.rehearsal {
        return Ok(None);
    }
    let pending = crate::store::notice::pending(store, &rb.id)
        .await
        .map_err(|e| Failure::invalid(e.to_string()))?;
    let Some(id) = &args.maintenance else {
        // The run starts when the window opens (or now with `--now`).
        let starts = if args.now {
            now_ms()
        } else {
            rb.window
                .start
                .map_or(now_ms(), |t| t.timestamp_millis())
                .max(now_ms())
        };
        return Ok(pending.into_iter().find(|p| {
            p.announcement.planned_start_ms <= starts && starts < p.announcement.planned_end_ms
        }));
    };
    match pending.into_iter().find(|p| &p.id == id) {
        Some(p) => Ok(Some(p)),
        None => Err(Failure::invalid(format!(
            "no scheduled maintenance `{id}` of runbook `{}` is waiting to be carried out (`runbook schedule` announces one; `runbook status` lists runs)",
            rb.id
        ))),
    }
}

/// What the run's first event records of how it was started.
struct Start<'a> {
    file: &'a std::path::Path,
    bytes: &'a [u8],
    /// `--now`: the window opens now, and lasts `window.duration` from here.
    now: bool,
    guard_strict: bool,
    rehearsal: bool,
    /// The scheduled maintenance (`runbook schedule`) the run carries out.
    scheduled: Option<crate::store::notice::Pending>,
    /// Where the team hears of the run (`notify:`, addresses rendered).
    team: Vec<crate::store::outbox::TeamTarget>,
}

impl Start<'_> {
    /// Records `RunStarted`, with the public texts rendered with the run's own values
    /// (its vars, its id), and marks the scheduled maintenance (`runbook schedule`) the
    /// run carries out, if any, as started.
    async fn record(
        &self,
        runner: &mut Runner<'_>,
        store: &Store,
        lease: &Lease,
    ) -> Result<(), crate::engine::run::EngineError> {
        let rb = runner.rb;
        let scheduled = self.scheduled.clone();
        let mut start = Event::RunStarted {
            runbook: rb.id.clone(),
            title: rb.title.clone(),
            file: std::fs::canonicalize(self.file)
                .unwrap_or(self.file.to_path_buf())
                .display()
                .to_string(),
            file_sha256: sha256(self.bytes),
            vars: rb.vars.clone(),
            operator: operator(),
            host: lease.host.clone(),
            pid: std::process::id(),
            window_start_ms: (self.now && rb.window.start.is_some()).then(now_ms),
            guard: self.guard_strict.then(|| "strict".to_owned()),
            rehearsal: self.rehearsal,
            public: None,
            limit: rb.limit.clone(),
        };
        let started_state = RunState::default()
            .fold(&start, now_ms())
            .unwrap_or_default();
        let plan = crate::engine::publish::plan(
            rb,
            scheduled.as_ref().map(|p| p.id.clone()),
            &runner.context_of(&started_state, None),
        );
        if let Event::RunStarted { public, title, .. } = &mut start {
            // The title as rendered with the run's values (`{{vars.version}}` ...).
            if let Some(t) = &plan.title {
                *title = t.clone();
            }
            *public = Some(Box::new(plan));
        }
        // Where the team hears of the run: recorded before its first event, which the
        // outbox's trigger may already pick up (`run_started`).
        if !self.team.is_empty() {
            store
                .set_team_targets(&runner.run_id, &self.team)
                .await
                .map_err(crate::engine::run::EngineError::from)?;
        }
        runner.record(start).await?;
        if let Some(p) = &scheduled {
            // Best effort: the run's own journal already names the maintenance.
            let _ = crate::store::notice::mark_started(store, p, &runner.run_id).await;
        }
        Ok(())
    }
}

/// The runbook's `notify:` targets with their addresses rendered (`{{vars.NAME}}`,
/// `{{secrets.NAME}}`): kept in the store's `notify_targets`, never in the journal. An
/// address that renders to no address refuses the run before it starts.
fn team_targets(rb: &Runbook) -> Result<Vec<crate::store::outbox::TeamTarget>, String> {
    let secrets: serde_json::Map<String, serde_json::Value> = rb
        .secrets
        .iter()
        .map(|name| (name.clone(), std::env::var(name).unwrap_or_default().into()))
        .collect();
    let ctx = serde_json::json!({ "vars": rb.vars, "secrets": secrets });
    rb.notify
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let address = crate::template::render_text(&n.address, &ctx)
                .map_err(|e| format!("notify[{i}]: {e}"))?
                .trim()
                .to_owned();
            let checked = match n.channel {
                crate::runbook::NotifyChannel::Email => crate::address::email(&address).map(|_| ()),
                _ => crate::address::webhook(&address).map(|_| ()),
            };
            // The rendered address may hold a secret: the error names the field only.
            checked.map_err(|_| {
                format!(
                    "notify[{i}].{}: `{}` does not render to a valid {} (check the values it uses)",
                    n.channel.as_str(),
                    n.address,
                    if n.channel == crate::runbook::NotifyChannel::Email {
                        "email address"
                    } else {
                        "URL"
                    }
                )
            })?;
            let mut kinds: Vec<String> = n
                .events
                .iter()
                .flat_map(|e| e.kinds().iter().map(|k| (*k).to_owned()))
                .collect();
            kinds.dedup();
            Ok(crate::store::outbox::TeamTarget {
                channel: n.channel.as_str().to_owned(),
                address,
                events: n.events.iter().map(|e| e.name().to_owned()).collect(),
                kinds,
            })
        })
        .collect()
}
