//! `tspi ingest` and `tspi validate`.

use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tspi::config::{Config, Machine, Role};
use tspi::ingest::{self, Hooks};
use tspi::logging::Level;
use tspi::receive::Backend;

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Configuration file (see config/tspi.toml); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// UDP address to listen on (repeatable; replaces the file's list).
    #[arg(long = "udp", value_name = "ADDR:PORT")]
    pub udp: Vec<SocketAddr>,
    /// NATS server URL (repeatable; replaces the file's list).
    #[arg(long = "nats", value_name = "URL")]
    pub nats: Vec<String>,
    /// Receive threads.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Cores for the receive threads, comma-separated (one per worker).
    #[arg(long, value_delimiter = ',', value_name = "CORE,...")]
    pub cores: Option<Vec<usize>>,
    /// Receive backend (`iouring` and `io_uring` are read as `io-uring`,
    /// with a warning).
    #[arg(long, value_name = "BACKEND", value_parser = backend_names())]
    pub backend: Option<String>,
    /// How to publish: fast-ingest batches (default) or pipelined.
    #[arg(long, value_enum)]
    pub publish_mode: Option<tspi::config::PublishMode>,
    #[command(flatten)]
    pub metrics: super::MetricsArgs,
    /// Stop by itself after this many seconds (as on SIGTERM).
    #[arg(long, value_name = "S")]
    pub duration_s: Option<u64>,
    /// Stream replicas (1 single server, 3 cluster).
    #[arg(long)]
    pub replicas: Option<usize>,
    /// Do not create or update the TSPI stream at start.
    #[arg(long)]
    pub no_create_stream: bool,
    /// Update a stream that exists and differs to this appliance's settings
    /// (`stream.update = true`); without it, it is left as it is and each
    /// difference logged.
    #[arg(long)]
    pub update_stream: bool,
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Configuration file to check.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Check for this role (repeatable) instead of the roles whose section
    /// the file holds. A unit's ExecStartPre names the role its ExecStart
    /// runs, so a file without that section fails here, not at start.
    #[arg(long, value_enum, value_name = "ROLE")]
    pub role: Vec<Role>,
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

/// `tspi validate`: every value, every rule between sections, and what the
/// roles the file enables (or `--role` names) need of this machine.
pub fn validate(a: ValidateArgs) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&a.config)?;
    for w in cfg.warnings() {
        tspi::notice!(Warn, "warning: {w}");
    }
    let roles = if a.role.is_empty() {
        cfg.roles_enabled()
    } else {
        a.role.clone()
    };
    cfg.validate_for(&roles, &Machine::current())
        .with_context(|| format!("{}", a.config.display()))?;
    let names: Vec<&str> = roles.iter().map(|r| r.name()).collect();
    println!(
        "roles checked: {}",
        if names.is_empty() {
            "none (give [ingest] udp, [archive] postgres, [channels] enabled = true or \
             [console] enabled = true)"
                .to_owned()
        } else {
            names.join(", ")
        }
    );
    println!("{}: ok", a.config.display());
    Ok(ExitCode::SUCCESS)
}

/// `--backend`'s values: [`Backend::ALL`] by name, and the old spellings
/// (hidden from `--help`).
fn backend_names() -> clap::builder::PossibleValuesParser {
    use clap::builder::PossibleValue;
    let names = Backend::ALL.map(|b| PossibleValue::new(b.name()));
    let old = Backend::OLD_SPELLINGS.map(|(old, _)| PossibleValue::new(old).hide(true));
    clap::builder::PossibleValuesParser::new(names.into_iter().chain(old))
}

fn apply(a: &IngestArgs, cfg: &mut Config) {
    if !a.udp.is_empty() {
        cfg.ingest.udp = a.udp.clone();
    }
    if !a.nats.is_empty() {
        cfg.nats.servers = a.nats.clone();
    }
    if let Some(w) = a.workers {
        cfg.ingest.workers = w;
    }
    if let Some(c) = &a.cores {
        cfg.ingest.cores = c.clone();
    }
    if let Some(m) = a.publish_mode {
        cfg.publish.mode = m;
    }
    if let Some(b) = &a.backend {
        // Parsed here, not by clap, so that an old spelling's warning is
        // logged (logging starts after the arguments are read).
        cfg.ingest.backend = b.parse().expect("clap accepts backend names only");
    }
    a.metrics.apply(&mut cfg.metrics);
    if let Some(r) = a.replicas {
        cfg.stream.replicas = r;
    }
    if a.no_create_stream {
        cfg.stream.create = false;
    }
    if a.update_stream {
        cfg.stream.update = true;
    }
}

/// The cores the publisher runtime may use: those not given to receive
/// threads. None when there are none left (then it is not pinned).
fn publisher_cores(receive: &[usize]) -> Option<Vec<core_affinity::CoreId>> {
    let all = core_affinity::get_core_ids()?;
    let rest: Vec<_> = all
        .into_iter()
        .filter(|c| !receive.contains(&c.id))
        .collect();
    (!rest.is_empty()).then_some(rest)
}

pub fn run(a: IngestArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = load(a.config.as_ref())?;
    apply(&a, &mut cfg);
    // ingest::run checks again (it is also a library entry); this one comes
    // before the runtime pins its threads.
    cfg.validate_for(&[Role::Ingest], &Machine::current())?;
    let pub_cores = publisher_cores(&cfg.receive_cores());
    let threads = pub_cores.as_ref().map_or(1, |c| c.len().clamp(1, 4));
    if pub_cores.is_none() {
        tracing::warn!(
            "every core has a receive thread: the publisher runs unpinned, sharing them"
        );
    }
    let next = Arc::new(AtomicUsize::new(0));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("tspi-publish")
        .on_thread_start(move || {
            if let Some(cores) = &pub_cores {
                let k = next.fetch_add(1, Ordering::Relaxed) % cores.len();
                core_affinity::set_for_current(cores[k]);
            }
        })
        .enable_all()
        .build()?;
    let json = cfg.metrics.json;
    let duration = a.duration_s.map(Duration::from_secs);
    let account = rt.block_on(ingest::run(
        cfg,
        Hooks {
            json,
            ..Hooks::default()
        },
        shutdown(duration),
    ))?;
    print_account(&account);
    if json {
        println!(
            "{}",
            serde_json::json!({ "final_account": &account, "balanced": account.balanced() })
        );
    }
    Ok(if account.balanced() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The final account on stderr, one line; says UNBALANCED when the drained
/// stop's invariant does not hold.
pub(super) fn print_account(account: &ingest::Account) {
    let c = &account.counters;
    tspi::logging::notice(
        if account.balanced() {
            Level::Info
        } else {
            Level::Error
        },
        &format!(
            "tspi ingest: final account ({} backend, {} publish): received {} = rejected {} + filtered {} + ring_dropped {} + acked {} + failed {}{}; duplicate acks {}, retried {}, kernel_dropped {}",
            account.backend,
            account.publish_mode,
            c.received,
            c.rejected.iter().sum::<u64>(),
            c.filtered,
            c.ring_dropped,
            c.acked,
            c.failed,
            if account.balanced() {
                ""
            } else {
                " (UNBALANCED)"
            },
            c.duplicate,
            c.retried,
            c.kernel_dropped
        ),
    );
    let s = &account.spool;
    if *s != ingest::SpoolAccount::default() {
        tspi::logging::notice(
            Level::Info,
            &format!(
                "tspi ingest: with the spool: received {} + found in the spool {} = rejected {} + filtered {} + ring_dropped {} + acked {} + failed {} + spool dropped {} + spool held {}; spooled {}, drained {} (in acked), torn {}",
                c.received,
                s.recovered,
                c.rejected.iter().sum::<u64>(),
                c.filtered,
                c.ring_dropped,
                c.acked,
                c.failed,
                s.dropped,
                s.held,
                s.spooled,
                s.drained,
                s.torn
            ),
        );
    }
    if let Some(why) = &account.failed_reason {
        tspi::notice!(
            Warn,
            "tspi ingest: {} frames not published (counted as failed): {why}",
            c.failed
        );
    }
}

/// SIGINT, SIGTERM, or the duration.
pub(super) async fn shutdown(duration: Option<Duration>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let timer = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
        () = timer => tracing::info!("duration reached"),
    }
}
