// Loading a large runbook is allocation-heavy (a node per YAML value); mimalloc makes
// `validate` and `plan` on a 10,000-step runbook markedly faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    diagnostics();
    runbook::cli::main()
}

/// Sets up `tracing` for the program's own diagnostics.
fn diagnostics() {
    // The program's own diagnostics (the status server's, the store's), one line each on
    // standard error; what a command says to its user is printed by the command itself.
    // `RUNBOOK_LOG=debug` shows more (the store's reconnects, refused connections).
    let level = std::env::var("RUNBOOK_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(tracing::Level::INFO);
    // Only this program's events: sqlx's (a PostgreSQL NOTICE, say) are not ours to show.
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .without_time()
                .with_level(false)
                .with_target(false),
        )
        .with(tracing_subscriber::filter::Targets::new().with_target("runbook", level))
        .init();
}
