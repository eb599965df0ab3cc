//! `tspi-demo` (what `./demo` runs): the main job, end to end on this
//! machine.
//!
//! Starts a three-node JetStream cluster on loopback, runs `tspi ingest` on
//! it (in this process: the same receive threads, publisher and reporter),
//! flies an airshow fleet (`tspi_loadgen`, the same generator as
//! `tspi-loadgen`) at it as real UDP datagrams on an open-loop schedule
//! while measuring every arrival at a consumer of the stream, repeats the
//! first update of every track as a redundant sender would, and shows the
//! operator's view: live progress, then the latency report (end-to-end from
//! each datagram's intended send time, and receive→ack from the ingest's
//! HdrHistogram snapshots) and the account of every datagram. Ctrl-C stops
//! the fleet, drains ingest and stops the servers.
//!
//! One readable view (`tspi_loadgen::screen`): on a terminal the progress
//! line is redrawn in place and the embedded ingest's log goes to a file
//! (its path printed at the start and the end), with its warnings and errors
//! shown above the line and counted at the end; piped, progress lines are
//! appended and the log is on stderr, plain, as `tspi` writes it.
//!
//! A binary of its own rather than a `tspi-loadgen demo` subcommand: the
//! load generator's fleet flags are global (`--tracks`, `--seed`, ...) with
//! other ranges and meanings, and the demo keeps exactly the flags
//! `./demo` has always passed through. It is tooling (it starts servers
//! through `tspi-testkit`), so the appliance binary does not carry it.

use anyhow::{Context as _, bail};
use clap::Parser;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tspi::codec;
use tspi::config::Config;
use tspi::ingest;
use tspi::send::DatagramSender;
use tspi_loadgen::screen::{self, LogTo, Screen, Shared};
use tspi_loadgen::{Fleet, FleetConfig, Generator, Style, drive};
use tspi_testkit::harness::{HarnessError, NatsCluster, NatsServer};

#[path = "demo/appliance.rs"]
mod appliance;

/// Start a local JetStream cluster, run `tspi ingest` on it, fly a
/// generated airshow fleet at it over UDP, and show the latency report and
/// the account of every datagram.
#[derive(Debug, Parser)]
#[command(name = "tspi-demo", version, about)]
struct DemoArgs {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `tspi=debug`.
    /// Defaults to `$RUST_LOG`, else `info`.
    #[arg(long)]
    log: Option<String>,
    /// Write the log here (warnings and errors are still shown). Default:
    /// when stdout and stderr are a terminal, `tspi-demo-<pid>.log` in the
    /// temporary directory; otherwise stderr.
    #[arg(long, value_name = "PATH")]
    log_file: Option<PathBuf>,
    /// Tracks in the generated fleet.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u16).range(1..=5000))]
    tracks: u16,
    /// Updates per second per track.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
    rate_hz: u32,
    /// How long to fly the fleet. Default: 10 s headless; 300 s for a person
    /// at the keyboard watching the appliance's page.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=600))]
    duration_s: Option<u32>,
    /// No one is watching (CI): fly for 10 s by default, report and stop.
    /// Also the default when stdout is not a terminal.
    #[arg(long)]
    headless: bool,
    /// The ingest path alone, in this process (no archive, channels or
    /// console): the latency demo of the receive and publish path.
    #[arg(long)]
    ingest_only: bool,
    /// The console's port for the page (0: a free one). Default 8080 when
    /// it is free, else a free one.
    #[arg(long, value_name = "PORT")]
    console_port: Option<u16>,
    /// JetStream nodes to start (3: a cluster with replicated stream; 1: single server).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=5))]
    nodes: u8,
    /// Seconds between progress lines (and the ingest's report lines).
    #[arg(long, default_value_t = 2)]
    interval_s: u64,
    /// Fleet seed: same seed, same datagrams.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// One server, or a cluster of several.
enum Servers {
    One(Box<NatsServer>),
    Cluster(NatsCluster),
}

impl Servers {
    fn start(nodes: usize) -> Result<Self, HarnessError> {
        Ok(if nodes == 1 {
            Servers::One(Box::new(NatsServer::start()?))
        } else {
            Servers::Cluster(NatsCluster::start(nodes)?)
        })
    }

    fn urls(&self) -> Vec<String> {
        match self {
            Servers::One(s) => vec![s.url()],
            Servers::Cluster(c) => c.urls(),
        }
    }
}

/// The terminal (or stdout) the demo writes its view to.
type View = Shared<std::io::Stdout>;

fn main() -> ExitCode {
    let args = DemoArgs::parse();
    let plan = screen::plan(
        std::io::stdout().is_terminal(),
        std::io::stderr().is_terminal(),
        args.log_file.clone(),
        || std::env::temp_dir().join(format!("tspi-demo-{}.log", std::process::id())),
    );
    let view = Shared::new(Screen::new(std::io::stdout(), plan.live));
    if let Err(e) = init_logging(args.log.as_deref(), &plan.log_to, &view) {
        eprintln!("tspi-demo: error: {e:#}");
        return ExitCode::from(2);
    }
    if let LogTo::File { path, .. } = &plan.log_to {
        view.lock()
            .println(&format!("log (ingest, NATS client): {}", path.display()));
    }
    let result = run(args, view.clone());
    view.lock().end_live();
    if let LogTo::File { path, on_screen } = &plan.log_to {
        let shown = if *on_screen {
            format!(
                " (warnings and errors shown above: {})",
                view.lock().shown()
            )
        } else {
            String::new()
        };
        view.lock().println(&format!(
            "log (ingest, NATS client): {}{shown}",
            path.display()
        ));
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tspi-demo: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `tspi`'s logging (`tspi::logging`: colour only on a terminal without
/// `NO_COLOR`), on stderr or, per the plan, into a file with warnings and
/// errors also on the view (or stderr).
fn init_logging(filter: Option<&str>, log_to: &LogTo, view: &View) -> anyhow::Result<()> {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::prelude::*;
    let filter = tspi::logging::filter(filter);
    let (path, on_screen) = match log_to {
        LogTo::Stderr => {
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(tspi::logging::stderr_colour())
                .init();
            return Ok(());
        }
        LogTo::File { path, on_screen } => (path, *on_screen),
    };
    let file = std::fs::File::create(path)
        .with_context(|| format!("creating the log file {}", path.display()))?;
    let to_file = tracing_subscriber::fmt::layer()
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false);
    // Warnings and errors still reach the person.
    let shown = tracing_subscriber::fmt::layer().with_ansi(tspi::logging::stderr_colour());
    let registry = tracing_subscriber::registry().with(filter).with(to_file);
    if on_screen {
        registry
            .with(
                shown
                    .with_writer(view.clone())
                    .with_filter(LevelFilter::WARN),
            )
            .init();
    } else {
        registry
            .with(
                shown
                    .with_writer(std::io::stderr)
                    .with_filter(LevelFilter::WARN),
            )
            .init();
    }
    Ok(())
}

/// No person at the keyboard: `--headless`, or stdout is not a terminal.
fn headless(a: &DemoArgs) -> bool {
    a.headless || !std::io::stdout().is_terminal()
}

fn run(a: DemoArgs, view: View) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(demo(a, view))
}

/// Fly `fleet` at `target` for `duration_s` on an open-loop schedule while
/// measuring every arrival at stream `TSPI` (progress on the view); then,
/// unless `stop` was set (Ctrl-C), repeat the first update of every track
/// as a redundant sender would (JetStream drops the copies by
/// `Nats-Msg-Id`). Returns the run, the repeated datagrams, and whether it
/// was interrupted.
pub(crate) async fn fly(
    a: &DemoArgs,
    fleet: Arc<Fleet>,
    duration_s: f64,
    target: std::net::SocketAddr,
    client: &async_nats::Client,
    view: &View,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<(drive::RunResult, Vec<[u8; codec::DATAGRAM_LEN]>, bool)> {
    let run = drive::measured_run(
        fleet.clone(),
        f64::from(a.rate_hz),
        duration_s,
        drive::Output::Udp {
            targets: vec![target],
            // Wake at most every 0.2 ms: the demo shares two cores with
            // the servers and the appliance; the latency includes this.
            coalesce_ns: 200_000,
            multicast: Default::default(),
        },
        client,
        &drive::Source::Stream("TSPI".into()),
        Duration::from_secs(10),
        Duration::from_secs(a.interval_s.max(1)),
        stop.clone(),
        |p| view.lock().progress(&p.line()),
    )
    .await;
    view.lock().end_live();
    let interrupted = stop.load(Relaxed);
    let run = run.context("measured run")?;
    let mut first_tick = Vec::new();
    if !interrupted {
        let mut g = Generator::new(fleet, *run.ledger.schedule());
        first_tick = g
            .by_ref()
            .take(usize::from(a.tracks))
            .map(|(_, d)| d)
            .collect();
        DatagramSender::connect(target)?.send(&first_tick)?;
    }
    Ok((run, first_tick, interrupted))
}

/// The ingest boxes' HdrHistogram snapshots (`tspi.ops.metrics.ingest.>`),
/// merged into one receive→ack histogram until told to stop.
pub(crate) async fn collect_snapshots(
    client: &async_nats::Client,
) -> anyhow::Result<(oneshot::Sender<()>, tokio::task::JoinHandle<Histogram<u64>>)> {
    let mut snapshots = client.subscribe("tspi.ops.metrics.ingest.>").await?;
    let (stop, mut stopped) = oneshot::channel::<()>();
    let collector = tokio::spawn(async move {
        let mut recv_to_ack =
            Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3).expect("bounds");
        loop {
            tokio::select! {
                Some(s) = snapshots.next() => {
                    if let Ok(snap) = serde_json::from_slice::<tspi::metrics::Snapshot>(&s.payload)
                        && let Ok(h) = tspi::metrics::decode_hdr_snapshot(&snap.histograms.receive_to_ack)
                    {
                        let _ = recv_to_ack.add(&h);
                    }
                }
                _ = &mut stopped => break,
            }
        }
        recv_to_ack
    });
    Ok((stop, collector))
}

pub(crate) fn percentiles(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".into();
    }
    let ms = |v: u64| v as f64 / 1e6;
    format!(
        "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  (n={})",
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.90)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
        h.len()
    )
}

async fn demo(a: DemoArgs, view: View) -> anyhow::Result<ExitCode> {
    println!("== tspi demo ==");
    println!(
        "starting {} JetStream node(s) on loopback (temporary directories)...",
        a.nodes
    );
    let started = Instant::now();
    let servers = tokio::task::spawn_blocking({
        let nodes = usize::from(a.nodes);
        move || Servers::start(nodes)
    })
    .await??;
    let urls = servers.urls();
    println!(
        "  up in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        urls.join(", ")
    );

    let duration_s = a.duration_s.unwrap_or(if headless(&a) { 10 } else { 300 });
    if !a.ingest_only {
        return appliance::run(&a, duration_s, &view, &urls).await;
    }
    let duration_s = u64::from(duration_s);

    // tspi ingest, in this process, on a free loopback port.
    let mut cfg = Config::default();
    cfg.nats.servers = urls.clone();
    cfg.nats.name = "tspi-demo-ingest".into();
    cfg.ingest.udp = vec!["127.0.0.1:0".parse()?];
    cfg.stream.replicas = usize::from(a.nodes);
    cfg.metrics.interval_s = a.interval_s;
    let ingest = ingest::Handle::spawn(cfg, Duration::from_secs(60))
        .await
        .context("starting tspi ingest")?;
    let udp = ingest.addrs[0];
    println!(
        "tspi ingest listening on udp://{udp}, publishing to stream TSPI (replicas {})",
        a.nodes
    );

    // The operator's tools: the measurement (in drive::measured_run), and
    // the ingest's HdrHistogram snapshots merged into one histogram.
    let client = async_nats::ConnectOptions::new()
        .name("tspi-demo-operator")
        .connect(urls.as_slice())
        .await?;
    let js = async_nats::jetstream::new(client.clone());
    js.get_stream("TSPI").await.context("stream TSPI")?;
    let (collector_stop, collector) = collect_snapshots(&client).await?;

    let fleet = Fleet::new(FleetConfig::new(
        Style::Airshow,
        u32::from(a.tracks),
        a.seed,
    ))?;
    let total = u64::from(a.tracks) * u64::from(a.rate_hz) * duration_s;
    println!(
        "flying an airshow fleet of {} tracks (formation teams over {} show box(es): loops, rolls, opposing passes, vertical climbs) x {} Hz x {} s = {} datagrams at it over UDP",
        a.tracks,
        u32::from(a.tracks).div_ceil(44),
        a.rate_hz,
        duration_s,
        total
    );
    println!(
        "  open-loop schedule; each datagram's time is its intended send time; measuring at stream TSPI (Ctrl-C stops cleanly)"
    );
    println!();
    println!("== live ==");
    let stop = Arc::new(AtomicBool::new(false));
    let ctrl_c = tokio::spawn({
        let stop = stop.clone();
        let view = view.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                view.lock().println(
                    "interrupted: stopping the fleet, draining ingest, stopping the servers",
                );
                stop.store(true, Relaxed);
            }
        }
    });
    let (run, first_tick, interrupted) =
        match fly(&a, fleet, duration_s as f64, udp, &client, &view, &stop).await {
            Ok(r) => r,
            Err(e) => {
                let _ = ingest.stop().await;
                return Err(e);
            }
        };
    let expected = run.summary.sent;

    // Let the last acks land, then stop ingest the way SIGTERM does.
    let deadline = Instant::now() + Duration::from_secs(if interrupted { 3 } else { 30 });
    let mut stored = 0;
    while Instant::now() < deadline {
        stored = js.get_stream("TSPI").await?.info().await?.state.messages;
        if stored >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The repeated datagrams are in flight through ingest: give them a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let account = ingest.stop().await.context("tspi ingest")?;
    // The final snapshot is in flight: let it land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = collector_stop.send(());
    let recv_to_ack = collector.await?;
    ctrl_c.abort();
    let c = &account.counters;

    println!();
    println!("== latency report ==");
    println!("end to end: intended send time -> delivered by a consumer of stream TSPI");
    print!("{}", run.summary.table());
    println!(
        "receive -> JetStream ack (ingest HdrHistogram)   {}",
        percentiles(&recv_to_ack)
    );
    println!(
        "sender: worst lag behind schedule {:.3} ms, {} batches more than 5 ms late",
        run.lag_max_ms, run.behind_batches
    );
    println!();
    println!(
        "== account of every datagram ({} backend) ==",
        account.backend
    );
    println!(
        "sent {} + {} repeated = ingest received {}",
        run.summary.sent,
        first_tick.len(),
        c.received
    );
    println!(
        "received {} = rejected {} + filtered {} + ring_dropped {} + acked {} + failed {}  [{}]",
        c.received,
        c.rejected_total(),
        c.filtered,
        c.ring_dropped,
        c.acked,
        c.failed,
        if account.balanced() {
            "balanced"
        } else {
            "UNBALANCED"
        }
    );
    println!(
        "duplicate acks {} (the {} repeated datagrams), retried {}, kernel_dropped {}",
        c.duplicate,
        first_tick.len(),
        c.retried,
        c.kernel_dropped
    );
    println!(
        "stream TSPI holds {stored} messages (expected {expected}: one per unique datagram); the measurement matched {} of them, lost {}, duplicated {}",
        run.summary.received, run.summary.lost, run.summary.duplicated
    );
    drop(servers);
    if interrupted {
        println!("stopped early by Ctrl-C; everything sent is accounted for above");
        return Ok(ExitCode::from(130));
    }
    if !account.balanced()
        || stored != expected
        || expected != total
        || run.summary.lost != 0
        || run.out_of_range != 0
        || c.failed > 0
        || c.duplicate != first_tick.len() as u64
        || c.received != total + first_tick.len() as u64
    {
        bail!(
            "demo check failed: {account:?}, stored {stored} of {total}, {:?}",
            run.summary
        );
    }
    Ok(ExitCode::SUCCESS)
}
