//! The `master-process` command: see `master-process --help` and the crate documentation.

fn main() -> std::process::ExitCode {
    master_process::cli::main()
}
