//! `tspi channels` (being built).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ChannelsArgs {}

pub fn run(_args: ChannelsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("tspi channels is not implemented yet")
}
