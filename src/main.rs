//! `tspi`: the range telemetry appliance. Subcommands live in `cli/`.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    tspi::logging::init(args.log.as_deref(), args.log_format);
    match cli::run(args.command) {
        Ok(code) => code,
        Err(e) => {
            tspi::notice!(Error, "tspi: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
