//! Command-line interface: argument types and dispatch.

mod archive;
mod channels;
mod console;
mod decode;
mod ingest;
mod player;
mod replay;
mod run;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::process::ExitCode;
use tspi::logging::LogFormat;

/// The reporting flags `tspi ingest`, `tspi archive` and `tspi run` share; each
/// overrides `[metrics]` when given.
#[derive(Debug, clap::Args)]
pub struct MetricsArgs {
    /// Serve Prometheus /metrics on this address.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<SocketAddr>,
    /// Print each report as a JSON line on stdout (and the final account).
    #[arg(long)]
    pub json: bool,
    /// Seconds between reports.
    #[arg(long, value_name = "S")]
    pub interval_s: Option<u64>,
}

impl MetricsArgs {
    pub fn apply(&self, m: &mut tspi::config::MetricsConfig) {
        if let Some(a) = self.metrics_addr {
            m.addr = Some(a);
        }
        if self.json {
            m.json = true;
        }
        if let Some(i) = self.interval_s {
            m.interval_s = i;
        }
    }
}

/// Load `path` (or the defaults) and log the file's warnings (renamed keys)
/// as the role starts.
pub fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<tspi::config::Config> {
    let cfg = match path {
        Some(p) => tspi::config::Config::load(p)?,
        None => tspi::config::Config::default(),
    };
    for w in cfg.warnings() {
        tracing::warn!("{w}");
    }
    Ok(cfg)
}

/// The telemetry data plane for test and training ranges: TSPI v4 datagrams
/// over UDP into NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "tspi", version, about, propagate_version = true)]
pub struct Args {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `tspi=debug`.
    /// Defaults to `$RUST_LOG`, else `info`.
    #[arg(long, global = true)]
    pub log: Option<String>,

    /// How the log on stderr looks: `text` (coloured only when stderr is a
    /// terminal and `NO_COLOR` is unset or empty) or `json` (one object per
    /// line: timestamp, level, target, fields.message; never coloured). The
    /// final accounts and errors on stderr follow it.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "TSPI_LOG_FORMAT",
        default_value_t = LogFormat::Text,
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode datagrams from a capture, a raw file or hex lines into JSON
    /// records, one per line.
    Decode(decode::DecodeArgs),
    /// Receive TSPI datagrams over UDP and publish them to JetStream until
    /// SIGINT/SIGTERM (or --duration-s), then drain and print the account.
    Ingest(ingest::IngestArgs),
    /// Check a configuration file: unknown keys and bad values name their line.
    Validate(ingest::ValidateArgs),
    /// Archive the TSPI and TSPI_OPS streams into PostgreSQL.
    Archive(archive::ArchiveArgs),
    /// Replay recorded telemetry at its original pace into a channel or UDP.
    Replay(replay::ReplayArgs),
    /// The channels service and the operator's channel commands.
    Channels(channels::ChannelsArgs),
    /// The appliance in one process: every role the file enables (ingest,
    /// archive, channels), one /metrics endpoint, one drained stop on
    /// SIGINT/SIGTERM (or --duration-s) with every role's account.
    Run(run::RunArgs),
    /// Receive a channel headless: JSON records (--json) or a summary line
    /// per second; follows group replays, announces itself on
    /// tspi.ops.status, shows display commands.
    Player(player::PlayerArgs),
    /// Operator commands: display settings, tags, the roster of clients,
    /// the operations log.
    Console(console::ConsoleArgs),
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Decode(a) => decode::run(a),
        Command::Ingest(a) => ingest::run(a),
        Command::Validate(a) => ingest::validate(a),
        Command::Archive(a) => archive::run(a),
        Command::Replay(a) => replay::run(a),
        Command::Channels(a) => channels::run(a),
        Command::Run(a) => run::run(a),
        Command::Player(a) => player::run(a),
        Command::Console(a) => console::run(a),
    }
}
