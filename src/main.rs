//! `tspi`: the range telemetry appliance. Subcommands live in `cli/`.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    cli::init_logging(args.log.as_deref());
    match cli::run(args.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tspi: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
