//! `tspi archive`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tspi::archive::{self, AckSetting};
use tspi::config::{Config, Machine, Role};

#[derive(Debug, clap::Args)]
pub struct ArchiveArgs {
    /// Configuration file (see config/tspi.toml); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// NATS server URL (repeatable; replaces the file's list).
    #[arg(long = "nats", value_name = "URL")]
    pub nats: Vec<String>,
    /// PostgreSQL connection string (libpq key/value or URL); replaces
    /// archive.postgres.
    #[arg(long, value_name = "DSN")]
    pub postgres: Option<String>,
    /// Messages per batch (archive.batch_len_max).
    #[arg(long, value_name = "N")]
    pub batch_len_max: Option<usize>,
    /// Write a partial batch after this long (archive.flush_interval_ms).
    #[arg(long, value_name = "MS")]
    pub flush_interval_ms: Option<u64>,
    /// How batches are acked (archive.ack).
    #[arg(long, value_enum)]
    pub ack: Option<AckSetting>,
    /// Redelivery time of an unacked message (archive.ack_wait_s).
    #[arg(long, value_name = "S")]
    pub ack_wait_s: Option<u64>,
    #[command(flatten)]
    pub metrics: super::MetricsArgs,
    /// Stop by itself after this many seconds (as on SIGTERM).
    #[arg(long, value_name = "S")]
    pub duration_s: Option<u64>,
    /// Do not create or update the TSPI and TSPI_OPS streams at start.
    #[arg(long)]
    pub no_create_stream: bool,
    /// Update a stream that exists and differs to this appliance's settings
    /// (`stream.update = true`); without it, it is left as it is and each
    /// difference logged.
    #[arg(long)]
    pub update_stream: bool,
}

fn apply(a: &ArchiveArgs, cfg: &mut Config) {
    if !a.nats.is_empty() {
        cfg.nats.servers = a.nats.clone();
    }
    if a.postgres.is_some() {
        cfg.archive.postgres = a.postgres.clone();
    }
    if let Some(n) = a.batch_len_max {
        cfg.archive.batch_len_max = n;
    }
    if let Some(ms) = a.flush_interval_ms {
        cfg.archive.flush_interval_ms = ms;
    }
    if let Some(ack) = a.ack {
        cfg.archive.ack = ack;
    }
    if let Some(s) = a.ack_wait_s {
        cfg.archive.ack_wait_s = s;
    }
    a.metrics.apply(&mut cfg.metrics);
    if a.no_create_stream {
        cfg.stream.create = false;
    }
    if a.update_stream {
        cfg.stream.update = true;
    }
    if cfg.nats.name == "tspi-ingest" {
        cfg.nats.name = "tspi-archive".into();
    }
}

pub fn run(a: ArchiveArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = super::load_config(a.config.as_deref())?;
    apply(&a, &mut cfg);
    cfg.validate_for(&[Role::Archive], &Machine::current())?;
    let Some(dsn) = cfg.archive.postgres.clone() else {
        anyhow::bail!("no database: give --postgres DSN or archive.postgres in the config file");
    };
    // Its own small pool: `tspi archive` is a process of its own, so it
    // never shares threads with the receive cores of `tspi ingest`.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tspi-archive")
        .enable_all()
        .build()?;
    let json = cfg.metrics.json;
    let stats = Arc::new(archive::Stats::default());
    let duration = a.duration_s.map(Duration::from_secs);
    let account = rt.block_on(archive::run(
        cfg,
        dsn,
        stats,
        json,
        super::ingest::shutdown(duration),
    ))?;
    print_account(&account);
    if json {
        println!("{}", serde_json::json!({ "final_account": &account }));
    }
    Ok(ExitCode::SUCCESS)
}

/// The final account on stderr, one line.
pub(super) fn print_account(account: &archive::Account) {
    let c = &account.counters;
    tspi::notice!(
        Info,
        "tspi archive: final account: {} messages, {} telemetry rows added ({} already there), \
         {} operator rows ({} already there), {} rejected, {} batches, {} acked, {} db errors{}",
        c.messages,
        c.telemetry_rows,
        c.telemetry_duplicate,
        c.ops_rows,
        c.ops_duplicate,
        c.rejected,
        c.batches,
        c.acked,
        c.db_errors,
        if account.abandoned_batches > 0 {
            " (drain timed out: the rest is redelivered on the next start)"
        } else {
            ""
        }
    );
}
