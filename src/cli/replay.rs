//! `tspi replay` (being built).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {}

pub fn run(_args: ReplayArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("tspi replay is not implemented yet")
}
