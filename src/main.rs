//! The `switchyard` binary: parse the command line, run, map errors to exit code 2.

use clap::Parser;

fn main() {
    let cli = switchyard::cli::Cli::parse();
    if let Err(e) = switchyard::run(cli) {
        eprintln!("switchyard: error: {e}");
        std::process::exit(2);
    }
}
