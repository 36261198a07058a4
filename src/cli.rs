//! The command line: parses arguments, calls the library, maps outcomes to exit codes.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::engine::terminal::LogFormat;
use crate::exit::{Exit, Failure, Outcome};
use crate::runbook;

#[derive(Debug, Parser)]
#[command(
    name = "runbook",
    version,
    about = "Runs planned database maintenance safely and tells everyone what is happening."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check runbook files and report every problem with its file:line:col.
    Validate {
        /// Runbook files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show the planned timeline: step times, checkpoints, window fit, rollback paths.
    Plan {
        /// The runbook file.
        file: PathBuf,
        /// Plan from this start instead of the window's (RFC 3339, or local time in the
        /// window's time zone).
        #[arg(long)]
        start: Option<String>,
        /// Override a variable: `--var NAME=VALUE` (repeatable).
        #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Show, step by step, the runbook's `expected` next to what earlier runs took.
        #[arg(long)]
        history: bool,
        /// Journal store whose earlier runs teach the durations (default: RUNBOOK_STORE,
        /// else sqlite://.runbook/state.db; nothing is created).
        #[arg(long)]
        store: Option<String>,
    },
    /// Print the runbook's resolved inventory: groups, hosts, addresses, ports, users,
    /// and where each host was defined.
    Hosts {
        /// The runbook file.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print the JSON Schema of the runbook format (for editors).
    Schema,
    /// Run a runbook to the end; prints the run id first. Exit 0 completed, 1 invalid
    /// input, 3 rolled back, 4 failed, aborted or waiting for a person.
    Execute {
        /// The runbook file.
        file: PathBuf,
        /// Override a variable: `--var NAME=VALUE` (repeatable).
        #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        /// The run's id (default: RUNBOOK-YYYYMMDD-HHMMSS-mmm).
        #[arg(long)]
        run_id: Option<String>,
        /// Start now instead of waiting for the window's start.
        #[arg(long)]
        now: bool,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Validate, evaluate read-only preconditions and show the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Journal store: sqlite://PATH or postgres://... (default: RUNBOOK_STORE, else
        /// sqlite://.runbook/state.db).
        #[arg(long)]
        store: Option<String>,
        /// Progress output.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// What the window guard does when a step and the rollback of what is done would
        /// pass the window's end: `pause` for a person, or `strict`: roll back.
        #[arg(long, value_enum, default_value_t = Guard::Pause)]
        guard: Guard,
        /// Also serve the status page on ADDR (like `runbook serve`) while the run goes on.
        #[arg(long, value_name = "ADDR")]
        serve: Option<String>,
        /// Run for real (journaled, learned from, reported as a rehearsal) but tell
        /// customers nothing: no public update, no incident, no component changed.
        #[arg(long, conflicts_with = "maintenance")]
        rehearsal: bool,
        /// Carry out the scheduled maintenance ID (`runbook schedule`) even outside its
        /// window; by default a run carries out the one whose window it starts in.
        #[arg(long, value_name = "ID")]
        maintenance: Option<String>,
        /// Run host steps (`on:`) only on these hosts and groups: `--limit web1,db`.
        #[arg(long, value_name = "HOST,GROUP", value_delimiter = ',')]
        limit: Vec<String>,
        #[command(flatten)]
        page: crate::status::command::PageArgs,
    },
    /// Serve the public status page (and the admin API) from the journal.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        /// Journal store: sqlite://PATH or postgres://... (default: RUNBOOK_STORE, else
        /// sqlite://.runbook/state.db).
        #[arg(long)]
        store: Option<String>,
        #[command(flatten)]
        page: crate::status::command::PageArgs,
    },
    /// Publish a runbook's maintenance on the status page as scheduled, before it runs.
    Schedule {
        /// The runbook file.
        file: PathBuf,
        /// Override a variable: `--var NAME=VALUE` (repeatable).
        #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
        vars: Vec<(String, String)>,
        #[arg(long)]
        store: Option<String>,
    },
    /// Continue a run that stopped: after a crash, a pause or a step in doubt.
    Resume {
        /// The run id.
        run: String,
        /// Run the step in doubt (or the failed one) again.
        #[arg(long, group = "decision")]
        retry: bool,
        /// With `--retry`: run again only these failed hosts of the host step that
        /// stopped (`--only web2,web3`); its other failed hosts stay failed.
        #[arg(
            long,
            value_name = "HOST,...",
            value_delimiter = ',',
            requires = "retry"
        )]
        only: Vec<String>,
        /// Mark it skipped and go on.
        #[arg(long, group = "decision")]
        skip: bool,
        /// Roll back to the last checkpoint.
        #[arg(long, group = "decision")]
        rollback: bool,
        /// Who decides (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// Why: recorded with the decision and shown in the report.
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        store: Option<String>,
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Stop a run for good, undoing nothing.
    Abort {
        run: String,
        /// Who aborts (default: $USER).
        #[arg(long)]
        by: Option<String>,
        #[arg(long)]
        store: Option<String>,
    },
    /// Stop learning durations from an ended run (its times were not typical).
    Forget {
        run: String,
        /// Who forgets it (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// Why: recorded in the journal.
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        store: Option<String>,
    },
    /// Approve a step that waits for approval.
    Approve {
        run: String,
        step: String,
        /// Who approves (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// What the approver says with it: recorded and shown in the report.
        #[arg(long)]
        comment: Option<String>,
        #[arg(long)]
        store: Option<String>,
    },
    /// Publish a person's update of the maintenance a run carries out (as the admin API's
    /// POST /api/v1/admin/updates does).
    Update {
        run: String,
        /// The text customers read.
        text: String,
        /// When the work is now expected to end (RFC 3339); automatic updates never say
        /// earlier.
        #[arg(long, value_name = "TIME")]
        eta: Option<String>,
        /// The status it says: the maintenance's current one (the run decides that), or
        /// an incident status (investigating, identified, monitoring, resolved).
        #[arg(long, value_name = "S")]
        status: Option<String>,
        /// Mute automatic step and overrun texts for this long (`30m`; changes of status
        /// are still published).
        #[arg(long, value_name = "FOR")]
        quiet: Option<String>,
        /// Who says it (default: $USER).
        #[arg(long)]
        by: Option<String>,
        #[arg(long)]
        store: Option<String>,
    },
    /// Reject a step that waits for approval (the step fails).
    Reject {
        run: String,
        step: String,
        #[arg(long)]
        by: Option<String>,
        /// Why: recorded and shown in the report.
        #[arg(long)]
        comment: Option<String>,
        #[arg(long)]
        store: Option<String>,
    },
    /// The state of a run (default: the latest): every step, attempts, durations, output.
    Status {
        run: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[arg(long)]
        store: Option<String>,
    },
    /// The post-run report of a run (from its journal alone): planned versus actual for
    /// every step, the window, closed time, rollbacks, approvals, public updates, a Gantt
    /// chart, and a postmortem draft for runs that did not complete.
    Report {
        /// The run id.
        run: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = crate::report::Format::Md)]
        format: crate::report::Format,
        /// Write the report to FILE (atomically) instead of standard output.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
        #[arg(long)]
        store: Option<String>,
    },
    /// The status page's subscribers: list, add, remove, export.
    Subscribers {
        #[command(subcommand)]
        action: SubscribersAction,
    },
    /// Notifications waiting to be sent, failing or given up, and the latest sent.
    Deliveries {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[arg(long)]
        store: Option<String>,
    },
    /// The runs in the store, newest first.
    Runs {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[arg(long)]
        store: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum SubscribersAction {
    /// Every subscriber: id, channel, state, address, components.
    List {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[arg(long)]
        store: Option<String>,
    },
    /// Subscribe an email address or a webhook URL (taken as confirmed unless
    /// --confirm).
    Add {
        /// An email address, or a webhook URL (http:// or https://).
        address: String,
        /// Only updates about this component (repeatable; default: all).
        #[arg(long = "component", value_name = "NAME")]
        components: Vec<String>,
        /// Send a confirmation mail first (double opt-in), as the page's form does.
        #[arg(long)]
        confirm: bool,
        /// Accept a webhook on a loopback or private address.
        #[arg(long)]
        allow_private_webhooks: bool,
        /// The page's public URL, for the confirmation mail's links.
        #[arg(long, value_name = "URL")]
        public_url: Option<String>,
        /// The page's name, for the confirmation mail.
        #[arg(long, default_value = "Service status")]
        page_name: String,
        #[arg(long)]
        store: Option<String>,
    },
    /// Remove a subscriber (by id or address); what was still to be sent to it is
    /// cancelled.
    Remove {
        subscriber: String,
        #[arg(long)]
        store: Option<String>,
    },
    /// Every subscriber as CSV (or JSON).
    Export {
        #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
        format: ExportFormat,
        #[arg(long)]
        store: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ExportFormat {
    Csv,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum Guard {
    Pause,
    Strict,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got `{s}`")),
    }
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Validate { files } => validate(&files),
        Command::Plan {
            file,
            start,
            vars,
            format,
            history,
            store,
        } => plan(
            &file,
            start.as_deref(),
            &vars,
            format,
            history,
            store.as_deref(),
        ),
        Command::Hosts { file, format } => hosts(&file, format),
        Command::Schema => {
            print(&format!(
                "{}\n",
                serde_json::to_string_pretty(&runbook::schema()).expect("schema serializes")
            ));
            Ok(Exit::Ok)
        }
        run_command => block_on(run(run_command)),
    };
    ExitCode::from(crate::exit::finish(outcome))
}

/// `execute --serve ADDR`: the address is taken before the run starts, so a page that
/// cannot be served is a reason not to begin.
fn page_starter(
    addr: String,
    page: crate::status::command::PageArgs,
) -> crate::commands::PageStarter {
    Box::new(move |url: String| {
        Box::pin(async move {
            let listener = crate::status::command::bind(&addr).await?;
            crate::commands::serve::spawn(listener, &url, &page).await
        })
    })
}

fn block_on(work: impl std::future::Future<Output = Outcome>) -> Outcome {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(work),
        Err(e) => Err(Failure::invalid(format!("cannot start the runtime: {e}"))),
    }
}

async fn run(command: Command) -> Outcome {
    use crate::commands;
    use crate::engine::event::Decision;
    match command {
        Command::Execute {
            file,
            vars,
            run_id,
            now,
            yes,
            dry_run,
            store,
            log_format,
            serve,
            page,
            guard,
            rehearsal,
            maintenance,
            limit,
        } => {
            commands::execute(commands::ExecuteArgs {
                limit,
                guard_strict: guard == Guard::Strict,
                rehearsal,
                maintenance,
                file,
                vars,
                run_id,
                now,
                yes,
                dry_run,
                store,
                log_format,
                serve: serve.map(|addr| page_starter(addr, page)),
            })
            .await
        }
        Command::Serve { addr, store, page } => {
            let url = crate::store::chosen_url(store.as_deref());
            match crate::commands::serve::serve(&addr, &url, &page).await {
                Ok(()) => Ok(Exit::Ok),
                Err(e) => Err(Failure::invalid(e)),
            }
        }
        Command::Schedule { file, vars, store } => {
            let mut rb = runbook::load_file(&file).map_err(|e| Failure::rendered(e.render()))?;
            let url = crate::store::chosen_url(store.as_deref());
            let done = match crate::engine::vars::apply_vars(&mut rb, &vars) {
                Ok(()) => crate::status::command::schedule(&rb, &url).await,
                Err(e) => Err(e),
            };
            match done {
                Ok(said) => {
                    print(&format!("{said}\n"));
                    Ok(Exit::Ok)
                }
                Err(e) => Err(Failure::invalid(e)),
            }
        }
        Command::Resume {
            run,
            retry,
            only,
            skip,
            rollback,
            by,
            reason,
            store,
            log_format,
        } => {
            let decision = match (retry, skip, rollback) {
                (true, _, _) => Some(Decision::Retry),
                (_, true, _) => Some(Decision::Skip),
                (_, _, true) => Some(Decision::Rollback),
                _ => None,
            };
            let who = commands::Who {
                by: by.as_deref(),
                reason: reason.as_deref(),
            };
            commands::resume(&run, decision, &only, who, store.as_deref(), log_format).await
        }
        Command::Abort { run, by, store } => {
            commands::abort(&run, by.as_deref(), store.as_deref()).await
        }
        Command::Forget {
            run,
            by,
            reason,
            store,
        } => {
            let who = commands::Who {
                by: by.as_deref(),
                reason: reason.as_deref(),
            };
            commands::forget(&run, who, store.as_deref()).await
        }
        Command::Approve {
            run,
            step,
            by,
            comment,
            store,
        } => {
            let who = commands::Who {
                by: by.as_deref(),
                reason: comment.as_deref(),
            };
            commands::decide_approval(&run, &step, who, true, store.as_deref()).await
        }
        Command::Reject {
            run,
            step,
            by,
            comment,
            store,
        } => {
            let who = commands::Who {
                by: by.as_deref(),
                reason: comment.as_deref(),
            };
            commands::decide_approval(&run, &step, who, false, store.as_deref()).await
        }
        Command::Update {
            run,
            text,
            eta,
            status,
            quiet,
            by,
            store,
        } => {
            commands::update(commands::UpdateArgs {
                run: &run,
                text: &text,
                eta: eta.as_deref(),
                status: status.as_deref(),
                quiet: quiet.as_deref(),
                by: by.as_deref(),
                store: store.as_deref(),
            })
            .await
        }
        Command::Status { run, format, store } => {
            commands::status(
                run.as_deref(),
                matches!(format, Format::Json),
                store.as_deref(),
            )
            .await
        }
        Command::Subscribers { action } => {
            use commands::subscribers::{Action, AddArgs};
            let (action, store) = match action {
                SubscribersAction::List { format, store } => (
                    Action::List {
                        json: matches!(format, Format::Json),
                    },
                    store,
                ),
                SubscribersAction::Add {
                    address,
                    components,
                    confirm,
                    allow_private_webhooks,
                    public_url,
                    page_name,
                    store,
                } => (
                    Action::Add(AddArgs {
                        address,
                        components,
                        confirm,
                        allow_private: allow_private_webhooks,
                        public_url,
                        page_name,
                    }),
                    store,
                ),
                SubscribersAction::Remove { subscriber, store } => {
                    (Action::Remove { subscriber }, store)
                }
                SubscribersAction::Export { format, store } => (
                    Action::Export {
                        json: matches!(format, ExportFormat::Json),
                    },
                    store,
                ),
            };
            commands::subscribers::subscribers(action, store.as_deref()).await
        }
        Command::Deliveries { format, store } => {
            commands::subscribers::deliveries(matches!(format, Format::Json), store.as_deref())
                .await
        }
        Command::Runs { format, store } => {
            commands::runs(matches!(format, Format::Json), store.as_deref()).await
        }
        Command::Report {
            run,
            format,
            output,
            store,
        } => crate::report::command(&run, format, output.as_deref(), store.as_deref()).await,
        Command::Validate { .. }
        | Command::Plan { .. }
        | Command::Schema
        | Command::Hosts { .. } => {
            unreachable!("handled above")
        }
    }
}

/// Prints to standard output, control characters escaped ([`crate::terminal::safe`]).
fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`runbook plan x | head`) is not an error worth a panic.
    let _ = out.write_all(crate::terminal::safe(text).as_bytes());
    let _ = out.flush();
}

/// Prints to standard error, control characters escaped.
fn eprint(text: &str) {
    let _ = std::io::stderr()
        .lock()
        .write_all(crate::terminal::safe(text).as_bytes());
}

fn validate(files: &[PathBuf]) -> Outcome {
    let mut code = Exit::Ok;
    for (i, file) in files.iter().enumerate() {
        match runbook::load_file(file) {
            Ok(rb) => print(&format!(
                "{}: ok (runbook `{}`, {} step{})\n",
                file.display(),
                rb.id,
                rb.steps.len(),
                if rb.steps.len() == 1 { "" } else { "s" }
            )),
            Err(invalid) => {
                if i > 0 {
                    eprint("\n");
                }
                let n = invalid.diagnostics.len();
                eprint(&format!(
                    "{}\n{}: invalid ({n} problem{})\n",
                    invalid.render(),
                    file.display(),
                    if n == 1 { "" } else { "s" }
                ));
                code = Exit::Invalid;
            }
        }
    }
    Ok(code)
}

/// `runbook hosts FILE`: the inventory as host steps see it.
fn hosts(file: &std::path::Path, format: Format) -> Outcome {
    let rb = runbook::load_file(file).map_err(|e| Failure::rendered(e.render()))?;
    let shown = file.display().to_string();
    let rows: Vec<serde_json::Value> = rb
        .inventory
        .hosts
        .iter()
        .map(|h| {
            let from = match h.origin.strip_prefix("line ") {
                Some(line) => format!("{shown}:{line}"),
                None => h.origin.clone(),
            };
            serde_json::json!({
                "name": h.name,
                "address": h.address,
                "port": h.port.or(rb.ssh.port).unwrap_or(22),
                "user": h.user.as_deref().or(rb.ssh.user.as_deref()),
                "groups": h.groups,
                "vars": h.vars,
                "from": from,
            })
        })
        .collect();
    let groups: serde_json::Map<String, serde_json::Value> = rb
        .inventory
        .groups
        .iter()
        .map(|(g, members)| {
            let names: Vec<&str> = members
                .iter()
                .map(|&m| rb.inventory.hosts[m].name.as_str())
                .collect();
            (g.clone(), serde_json::json!(names))
        })
        .collect();
    match format {
        Format::Json => {
            let doc = serde_json::json!({ "runbook": rb.id, "groups": groups, "hosts": rows });
            print(&format!(
                "{}\n",
                serde_json::to_string_pretty(&doc).expect("serializes")
            ));
        }
        Format::Text => {
            let mut out = String::new();
            if rows.is_empty() {
                out.push_str(&format!(
                    "{shown}: no hosts (add `hosts:` or `inventory:`)\n"
                ));
            }
            for (g, names) in &groups {
                let names: Vec<&str> = names
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n.as_str())
                    .collect();
                out.push_str(&format!("group {g}: {}\n", names.join(", ")));
            }
            if !rows.is_empty() {
                let cell = |v: &serde_json::Value| match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => "-".to_owned(),
                    serde_json::Value::Array(a) => a
                        .iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    other => other.to_string(),
                };
                let table: Vec<[String; 6]> = std::iter::once(
                    ["HOST", "ADDRESS", "PORT", "USER", "GROUPS", "FROM"].map(str::to_owned),
                )
                .chain(rows.iter().map(|r| {
                    ["name", "address", "port", "user", "groups", "from"].map(|k| cell(&r[k]))
                }))
                .collect();
                let widths: Vec<usize> = (0..6)
                    .map(|c| {
                        table
                            .iter()
                            .map(|r| r[c].chars().count())
                            .max()
                            .unwrap_or(0)
                    })
                    .collect();
                out.push('\n');
                for r in &table {
                    let line: Vec<String> = r
                        .iter()
                        .zip(&widths)
                        .map(|(c, w)| format!("{c:<w$}"))
                        .collect();
                    out.push_str(line.join("  ").trim_end());
                    out.push('\n');
                }
            }
            print(&out);
        }
    }
    Ok(Exit::Ok)
}

fn plan(
    file: &std::path::Path,
    start: Option<&str>,
    vars: &[(String, String)],
    format: Format,
    history: bool,
    store: Option<&str>,
) -> Outcome {
    let mut rb = runbook::load_file(file).map_err(|e| Failure::rendered(e.render()))?;
    crate::engine::vars::apply_vars(&mut rb, vars).map_err(Failure::invalid)?;
    let start = start
        .map(|s| runbook::parse_timestamp(s, rb.window.timezone))
        .transpose()
        .map_err(|e| Failure::error(Exit::Usage, format!("--start: {e}")))?;
    // What earlier runs of this runbook took, from the store if there is one.
    let url = crate::store::chosen_url(store);
    let learned = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(async {
            match crate::store::Store::open_existing(&url).await {
                Ok(Some(store)) => crate::commands::learned(&store, &rb.id, "").await,
                _ => Default::default(),
            }
        }),
        Err(_) => Default::default(),
    };
    let p = crate::plan::plan_learned(&rb, start, chrono::Utc::now(), &learned);
    // Streamed; a closed pipe (`| head`) is not an error worth reporting.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let _ = match format {
        Format::Text => p
            .write_text(&mut out)
            .and_then(|_| match history {
                true => out.write_all(crate::terminal::safe(&p.history_text()).as_bytes()),
                false => Ok(()),
            })
            .and_then(|_| out.flush()),
        Format::Json => p.write_json(&mut out).and_then(|_| out.flush()),
    };
    Ok(Exit::Ok)
}
