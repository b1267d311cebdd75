//! The `roster` binary.

fn main() -> std::process::ExitCode {
    api::cli::main()
}
