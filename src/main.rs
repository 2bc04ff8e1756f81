//! The `switchyard` binary: parse the command line, run, map errors to exit code 2.

use clap::Parser;

fn main() {
    let cli = switchyard::cli::Cli::parse();
    if let Err(e) = switchyard::run(cli) {
        eprintln!("switchyard: error: {e}");
        std::process::exit(2);
    }
}

/// mimalloc: fewer instructions per allocation than glibc's malloc on the request path
/// and it returns freed memory to the system (see bench/instructions_per_request.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
