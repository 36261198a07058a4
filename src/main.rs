// Loading a large runbook is allocation-heavy (a node per YAML value); mimalloc makes
// `validate` and `plan` on a 10,000-step runbook markedly faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    runbook::cli::main()
}
