//! `tspi archive` (being built).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ArchiveArgs {}

pub fn run(_args: ArchiveArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("tspi archive is not implemented yet")
}
