//! `tspi`: the range telemetry appliance. Subcommands live in `cli/`.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    tspi::logging::init(args.log.as_deref(), args.log_format);
    // Connections, sockets and PostgreSQL sessions are bounded by our own
    // limits, not by the default soft limit of 1024 descriptors.
    if let Err(e) = tspi::http::raise_open_files_limit() {
        tracing::warn!(error = %e, "cannot raise the open files limit");
    }
    match cli::run(args.command) {
        Ok(code) => code,
        Err(e) => {
            tspi::notice!(Error, "tspi: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
