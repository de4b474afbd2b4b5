//! The `costlake` binary: parses the command line and hands over to [`costlake::cli::run`].
//!
//! Exit codes: 0 success; 1 the command failed (the error chain is printed on stderr); 2 bad usage
//! (printed by clap).

fn main() -> std::process::ExitCode {
    costlake::cli::main()
}
