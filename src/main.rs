//! The `costlake` binary: parses the command line and hands over to [`costlake::cli::run`].
//!
//! Exit codes: 0 success; 1 the command failed (the error chain is printed on stderr); 2 bad usage
//! (printed by clap).

/// mimalloc: the transform allocates millions of short strings from several threads; glibc's
/// allocator spent ~10 % of a 1 M-row transform in malloc/free (perf, see the README's benchmarks).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    costlake::cli::main()
}
