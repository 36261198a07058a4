// Loading a large runbook is allocation-heavy (a node per YAML value); mimalloc makes
// `validate` and `plan` on a 10,000-step runbook markedly faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe extern "C" {
    /// mimalloc's own setter of its options (linked in with the allocator).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_arena_eager_commit` in mimalloc 3's `mi_option_e`.
const MI_OPTION_ARENA_EAGER_COMMIT: std::ffi::c_int = 4;

/// Commits memory as it is used, not a whole arena at once: `plan` of a 10,000-step
/// runbook then peaks at 45 MB resident rather than 60. It must run before the first
/// allocation (which reserves the first arena), so it is a constructor that runs before
/// the others (priority 101, the first the toolchain leaves to programs).
extern "C" fn allocator_options() {
    // SAFETY: sets an integer option of the allocator, before anything allocates.
    unsafe { mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

#[used]
#[unsafe(link_section = ".init_array.00101")]
static ALLOCATOR_OPTIONS: extern "C" fn() = allocator_options;

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
