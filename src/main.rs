// Loading a large runbook is allocation-heavy (a node per YAML value); mimalloc makes
// `validate` and `plan` on a 10,000-step runbook markedly faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // The program's own diagnostics (the status server's, the store's), one line each on
    // standard error; what a command says to its user is printed by the command itself.
    // `RUNBOOK_LOG=debug` shows more (the store's reconnects, refused connections).
    let level = std::env::var("RUNBOOK_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_level(false)
        .with_target(false)
        .with_max_level(level)
        .init();
    runbook::cli::main()
}
