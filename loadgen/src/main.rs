//! `tspi-loadgen`: fly an airshow (or cruise) fleet at a TSPI ingest box,
//! or straight into JetStream, or into a capture file; measure end-to-end
//! latency from each datagram's intended send time; search for capacity.
//!
//! A thin command-line layer: the fleet, schedule, measurement and plots
//! live in the `tspi_loadgen` library (shared with `tspi-demo`).

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;
use tspi::send::MulticastOut;
use tspi_loadgen::capacity::{CapacitySearch, Objective, SearchConfig};
use tspi_loadgen::drive::{self, Clock, Output as DriveOutput, SendStats, Source};
use tspi_loadgen::{Fleet, FleetConfig, Generator, Geodetic, Output, Schedule, Style};

/// Airshow fleet generator for TSPI v4 ingest capacity tests.
#[derive(Debug, Parser)]
#[command(name = "tspi-loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    fleet: FleetArgs,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Step the offered rate up, then bisect, until loss appears or p99
    /// passes the limit; write the table, JSON and an SVG plot.
    Capacity(CapacityArgs),
}

#[derive(Debug, Args)]
struct FleetArgs {
    /// Fleet style.
    #[arg(long, value_enum, default_value_t = Style::Airshow, global = true)]
    style: Style,
    /// Number of tracks (1..=65535: each needs its own 16-bit sensor id).
    #[arg(long, default_value_t = 200, global = true)]
    tracks: u32,
    /// Updates per second per track.
    #[arg(long, default_value_t = 10.0)]
    rate_hz: f64,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Random seed: same seed, same fleet, same datagrams.
    #[arg(long, default_value_t = 1, global = true)]
    seed: u64,
    /// Datagram types to emit.
    #[arg(long, value_enum, default_value_t = Output::Geocentric, global = true)]
    datagrams: Output,
    /// With --datagrams mixed, every n-th track is spherical.
    #[arg(long, default_value_t = 4, global = true)]
    spherical_every: u32,
    /// Range origin LAT,LON,ALT_M (WGS-84).
    #[arg(long, value_parser = parse_geodetic, global = true)]
    origin: Option<Geodetic>,
    /// Sensor site LAT,LON,ALT_M for spherical datagrams (repeatable;
    /// default: one per show box, or a ring of four 45 km out).
    #[arg(long = "site", value_parser = parse_geodetic, global = true)]
    sites: Vec<Geodetic>,
    /// Sensor id of the first track.
    #[arg(long, default_value_t = 1, global = true)]
    sensor_id_base: u16,
}

/// How datagrams to a multicast `--udp` target leave.
#[derive(Debug, Args)]
struct MulticastArgs {
    /// For multicast targets: the interface to send from: an IPv4 address
    /// (IP_MULTICAST_IF), or an IPv6 interface name or index.
    #[arg(long)]
    multicast_if: Option<String>,
    /// For multicast targets: hops the datagrams may take (TTL; kernel
    /// default 1).
    #[arg(long)]
    multicast_ttl: Option<u32>,
    /// For multicast targets: do not loop datagrams back to this host.
    #[arg(long)]
    no_multicast_loop: bool,
}

impl MulticastArgs {
    fn out(&self) -> anyhow::Result<MulticastOut> {
        let mut m = MulticastOut {
            ttl: self.multicast_ttl,
            no_loop: self.no_multicast_loop,
            ..MulticastOut::default()
        };
        if let Some(i) = &self.multicast_if {
            m = m
                .with_interface(i)
                .map_err(|e| anyhow::anyhow!("--multicast-if {e}"))?;
        }
        Ok(m)
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Send over UDP to HOST:PORT (repeatable: each target gets every datagram;
    /// multicast groups work as targets, see --multicast-if).
    #[arg(long = "udp")]
    udp: Vec<SocketAddr>,
    #[command(flatten)]
    mcast: MulticastArgs,
    /// NATS URL: publish contract messages straight to JetStream, or with
    /// --measure, where to measure (and, without --udp, also publish).
    #[arg(long)]
    nats: Option<String>,
    /// Write a pcap (nanosecond, Ethernet/IPv4/UDP) instead of sending.
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// Write a raw file (37-byte datagrams back to back) instead of sending.
    #[arg(long)]
    raw: Option<PathBuf>,
    /// Destination address written into the pcap's packets.
    #[arg(long, default_value = "127.0.0.1:5000")]
    pcap_dst: SocketAddr,
    /// Start time (UTC seconds since the epoch) for files; default now.
    #[arg(long)]
    start_unix_s: Option<f64>,
    /// Measure end-to-end latency and loss at the --nats server.
    #[arg(long)]
    measure: bool,
    /// Measure on this core NATS subject (e.g. tspi.channel.livestream)
    /// instead of the stream.
    #[arg(long)]
    measure_subject: Option<String>,
    /// Stream to measure on.
    #[arg(long, default_value = "TSPI")]
    stream: String,
    /// Subject prefix for --nats output.
    #[arg(long, default_value = "tspi")]
    prefix: String,
    /// Acks in flight for --nats output.
    #[arg(long, default_value_t = 2048)]
    window: usize,
    /// After sending, wait up to this long after the last arrival.
    #[arg(long, default_value_t = 5.0)]
    drain_s: f64,
    /// Let datagrams go up to this late, sleeping instead of spinning between
    /// them (0: exactly on time, spinning on short gaps, which keeps a core
    /// busy).
    #[arg(long, default_value_t = 0)]
    coalesce_us: u64,
    /// Seconds between progress lines (stderr).
    #[arg(long, default_value_t = 1.0)]
    progress_s: f64,
    /// Write the summary as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the latency percentile distribution (.hgrm) here.
    #[arg(long)]
    hgrm: Option<PathBuf>,
    /// Write an SVG of latency percentiles against time here.
    #[arg(long)]
    svg: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CapacityArgs {
    /// Ingest box to load.
    #[arg(long = "udp", required = true)]
    udp: Vec<SocketAddr>,
    #[command(flatten)]
    mcast: MulticastArgs,
    /// Where to measure.
    #[arg(long)]
    nats: String,
    /// Stream to measure on.
    #[arg(long, default_value = "TSPI")]
    stream: String,
    /// First offered rate (datagrams/s).
    #[arg(long, default_value_t = 10_000.0)]
    start_rate: f64,
    /// Highest offered rate.
    #[arg(long, default_value_t = 400_000.0)]
    max_rate: f64,
    /// Lowest rate worth trying.
    #[arg(long, default_value_t = 1_000.0)]
    min_rate: f64,
    /// Ramp factor between steps.
    #[arg(long, default_value_t = 1.5)]
    step_factor: f64,
    /// Bisect until the bracket is this fraction of the failing rate.
    #[arg(long, default_value_t = 0.05)]
    resolution: f64,
    /// Seconds per step.
    #[arg(long, default_value_t = 10.0)]
    step_s: f64,
    /// Most steps.
    #[arg(long, default_value_t = 16)]
    steps_max: u32,
    /// p99 objective (ms).
    #[arg(long, default_value_t = 50.0)]
    p99_ms: f64,
    /// Largest lost fraction allowed.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Drain wait after each step (s).
    #[arg(long, default_value_t = 5.0)]
    drain_s: f64,
    /// Pause between steps (s), so one step's backlog does not spill into the next.
    #[arg(long, default_value_t = 2.0)]
    pause_s: f64,
    /// Unmeasured warm-up at the start rate before the first step (s; 0: none):
    /// a fresh stream's first seconds are slower than its steady state.
    #[arg(long, default_value_t = 5.0)]
    warmup_s: f64,
    /// Let datagrams go up to this late, sleeping instead of spinning between
    /// them (0: exactly on time, spinning on short gaps, which takes a whole
    /// core from the box under test when it shares the machine).
    #[arg(long, default_value_t = 100)]
    coalesce_us: u64,
    /// Directory for capacity.md, capacity.json, capacity.svg and step-N.hgrm.
    #[arg(long, default_value = "capacity")]
    out: PathBuf,
}

fn parse_geodetic(s: &str) -> Result<Geodetic, String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>().map_err(|e| format!("{x:?}: {e}")))
        .collect::<Result<_, _>>()?;
    match v[..] {
        [lat_deg, lon_deg, alt_m]
            if (-90.0..=90.0).contains(&lat_deg) && (-180.0..=180.0).contains(&lon_deg) =>
        {
            Ok(Geodetic {
                lat_deg,
                lon_deg,
                alt_m,
            })
        }
        _ => Err("expected LAT,LON,ALT_M with -90<=LAT<=90 and -180<=LON<=180".into()),
    }
}

fn fleet(a: &FleetArgs, tracks: u32) -> anyhow::Result<Arc<Fleet>> {
    let mut c = FleetConfig::new(a.style, tracks, a.seed);
    if let Some(o) = a.origin {
        c.origin = o;
    }
    c.output = a.datagrams;
    c.spherical_every = a.spherical_every;
    c.sites = a.sites.clone();
    c.sensor_id_base = a.sensor_id_base;
    Ok(Fleet::new(c)?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tspi-loadgen: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        rt.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("tspi-loadgen: interrupted; stopping the schedule and accounting for what was sent");
                stop.store(true, Relaxed);
            }
        });
    }
    match cli.command {
        Some(Command::Capacity(c)) => rt.block_on(capacity(&cli.fleet, c, stop)),
        None => {
            let f = fleet(&cli.fleet, cli.fleet.tracks)?;
            rt.block_on(single(&cli.fleet, &cli.run, f, stop))
        }
    }
}

/// Connect to `url`; credentials written in it (`nats://user:pass@host`,
/// `nats://token@host`) are used, and never shown.
async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    let shown = tspi::nats::redact_url(url);
    let cfg = tspi::nats::NatsConfig {
        servers: vec![url.to_owned()],
        ..Default::default()
    };
    let (servers, auth) = cfg.resolve().map_err(|e| anyhow::anyhow!("--nats: {e}"))?;
    let mut o = async_nats::ConnectOptions::new().name("tspi-loadgen");
    if let (Some(u), Some(p)) = (auth.user, auth.password) {
        o = o.user_and_password(u, p);
    }
    if let Some(t) = auth.token {
        o = o.token(t);
    }
    o.connect(servers.as_slice())
        .await
        .with_context(|| format!("connecting to NATS at {shown}"))
}

async fn single(
    a: &FleetArgs,
    r: &RunArgs,
    f: Arc<Fleet>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<ExitCode> {
    let outputs = [
        !r.udp.is_empty(),
        r.nats.is_some() && !r.measure,
        r.pcap.is_some(),
        r.raw.is_some(),
    ];
    if r.measure && r.nats.is_none() {
        bail!("--measure needs --nats URL (where to measure)");
    }
    if outputs.iter().filter(|o| **o).count() > 1 {
        bail!("choose one output: --udp (repeatable), --nats, --pcap or --raw");
    }
    let progress_every = Duration::from_secs_f64(r.progress_s.max(0.05));
    eprintln!(
        "tspi-loadgen: {:?} fleet of {} tracks x {} Hz for {} s (seed {}), {:.0} datagrams/s",
        a.style,
        f.tracks(),
        a.rate_hz,
        a.duration_s,
        a.seed,
        f64::from(f.tracks()) * a.rate_hz
    );
    if let Some(path) = r.pcap.as_ref().or(r.raw.as_ref()) {
        let start = match r.start_unix_s {
            Some(s) if s >= 0.0 => (s * 1e9) as u64,
            Some(s) => bail!("--start-unix-s {s} is before 1970"),
            None => Clock::now().unix_ns(),
        };
        let schedule = Schedule::new(start, f.tracks(), a.rate_hz, a.duration_s)?;
        let mut g = Generator::new(f, schedule);
        let file = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        let n = if r.pcap.is_some() {
            let src: SocketAddr = if r.pcap_dst.is_ipv4() {
                "127.0.0.1:40000"
            } else {
                "[::1]:40000"
            }
            .parse()?;
            drive::write_pcap(&mut g, file, src, r.pcap_dst)?
        } else {
            drive::write_raw(&mut g, file)?
        };
        eprintln!(
            "wrote {n} datagrams to {} (out of range: {})",
            path.display(),
            g.out_of_range
        );
        return Ok(ExitCode::SUCCESS);
    }
    if r.measure {
        let url = r.nats.as_deref().expect("checked");
        let client = connect(url).await?;
        let source = match &r.measure_subject {
            Some(s) => Source::Subject(s.clone()),
            None => Source::Stream(r.stream.clone()),
        };
        let output = if r.udp.is_empty() {
            DriveOutput::Nats {
                prefix: r.prefix.clone(),
                window: r.window,
            }
        } else {
            DriveOutput::Udp {
                targets: r.udp.clone(),
                coalesce_ns: r.coalesce_us * 1000,
                multicast: r.mcast.out()?,
            }
        };
        let res = drive::measured_run(
            f,
            a.rate_hz,
            a.duration_s,
            output,
            &client,
            &source,
            Duration::from_secs_f64(r.drain_s),
            progress_every,
            stop,
            |p| eprintln!("{}", p.line()),
        )
        .await?;
        print!("{}", res.summary.table());
        println!(
            "sender: worst lag behind schedule {:.3} ms, {} late batches, {} failed publishes, {} values out of range",
            res.lag_max_ms, res.behind_batches, res.failed_publishes, res.out_of_range
        );
        if !res.failures.is_empty() {
            eprintln!("tspi-loadgen: {}", res.failures);
        }
        write_reports(
            r,
            &res.summary,
            res.ledger.latency(),
            &res.ledger.timeline(),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let clock = Clock::now();
    let schedule = Schedule::new(
        clock.unix_ns() + 50_000_000,
        f.tracks(),
        a.rate_hz,
        a.duration_s,
    )?;
    let stats = Arc::new(SendStats::default());
    let generator = Generator::new(f, schedule);
    let send = if let Some(url) = &r.nats {
        let js = async_nats::jetstream::new(connect(url).await?);
        let (stats, stop, prefix, window) =
            (stats.clone(), stop.clone(), r.prefix.clone(), r.window);
        tokio::spawn(async move {
            drive::publish_jetstream(generator, js, prefix, clock, window, stats, stop).await;
            Ok::<u64, std::io::Error>(0)
        })
    } else if !r.udp.is_empty() {
        let (stats, stop, targets, coalesce, multicast) = (
            stats.clone(),
            stop.clone(),
            r.udp.clone(),
            r.coalesce_us * 1000,
            r.mcast.out()?,
        );
        tokio::task::spawn_blocking(move || {
            let mut g = generator;
            drive::send_udp(
                &mut g,
                &targets,
                multicast,
                &clock,
                coalesce,
                &stats,
                &stop,
                |_, _, _| {},
            )?;
            Ok(g.out_of_range)
        })
    } else {
        bail!("no output: give --udp HOST:PORT, --nats URL, --pcap FILE or --raw FILE");
    };
    let mut last = (std::time::Instant::now(), 0u64);
    let t0 = std::time::Instant::now();
    while !stats.done.load(Relaxed) {
        tokio::time::sleep(progress_every).await;
        let sent = stats.sent.load(Relaxed);
        let p = drive::Progress {
            elapsed_s: t0.elapsed().as_secs_f64(),
            offered_per_s: schedule.rate_per_s(),
            sent,
            scheduled: schedule.total,
            send_rate_per_s: (sent - last.1) as f64 / last.0.elapsed().as_secs_f64(),
            lag_ms: stats.lag_ns.load(Relaxed) as f64 / 1e6,
            lag_max_ms: stats.lag_max_ns.load(Relaxed) as f64 / 1e6,
            behind_batches: stats.behind_batches.load(Relaxed),
            received: None,
        };
        eprintln!("{}", p.line());
        last = (std::time::Instant::now(), sent);
    }
    let out_of_range = send.await??;
    let sent = stats.sent.load(Relaxed);
    println!(
        "sent {sent} of {} datagrams; worst lag behind schedule {:.3} ms; {} late batches; {} failed publishes; {out_of_range} values out of range",
        schedule.total,
        stats.lag_max_ns.load(Relaxed) as f64 / 1e6,
        stats.behind_batches.load(Relaxed),
        stats.failed.load(Relaxed)
    );
    let failures = stats.failure_line();
    if !failures.is_empty() {
        eprintln!("tspi-loadgen: {failures}");
    }
    if sent > 0 && stats.failed.load(Relaxed) >= sent {
        // JetStream stored nothing: the run measured nothing.
        eprintln!("tspi-loadgen: JetStream stored none of the {sent} messages");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn write_reports(
    r: &RunArgs,
    summary: &tspi_loadgen::report::Summary,
    h: &tspi_loadgen::ledger::LatencyHistogram,
    timeline: &[tspi_loadgen::ledger::TimePoint],
) -> anyhow::Result<()> {
    let write = |p: &PathBuf, s: &str| {
        std::fs::write(p, s).with_context(|| format!("writing {}", p.display()))
    };
    if let Some(p) = &r.json {
        write(p, &summary.json())?;
    }
    if let Some(p) = &r.hgrm {
        write(p, &tspi_loadgen::report::hgrm(h, 1e6))?;
    }
    if let Some(p) = &r.svg {
        write(
            p,
            &tspi_loadgen::svg::latency_vs_time(
                timeline,
                &format!(
                    "{:.0} datagrams/s offered: latency over time",
                    summary.offered_rate_per_s
                ),
            ),
        )?;
    }
    Ok(())
}

async fn capacity(
    a: &FleetArgs,
    c: CapacityArgs,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<ExitCode> {
    let mut search = CapacitySearch::new(SearchConfig {
        start_rate_per_s: c.start_rate,
        max_rate_per_s: c.max_rate,
        min_rate_per_s: c.min_rate,
        step_factor: c.step_factor,
        resolution: c.resolution,
        steps_max: c.steps_max,
        objective: Objective {
            p99_ms_max: c.p99_ms,
            loss_max: c.loss,
        },
    })?;
    let f = fleet(a, a.tracks)?;
    if c.max_rate / f64::from(f.tracks()) > tspi_loadgen::RATE_HZ_MAX {
        bail!(
            "--max-rate {} over {} tracks is above {} Hz per track: use more --tracks",
            c.max_rate,
            f.tracks(),
            tspi_loadgen::RATE_HZ_MAX
        );
    }
    std::fs::create_dir_all(&c.out).with_context(|| format!("creating {}", c.out.display()))?;
    let client = connect(&c.nats).await?;
    let source = Source::Stream(c.stream.clone());
    let output = DriveOutput::Udp {
        targets: c.udp.clone(),
        coalesce_ns: c.coalesce_us * 1000,
        multicast: c.mcast.out()?,
    };
    if c.warmup_s > 0.0 {
        eprintln!(
            "warm-up: {:.0} datagrams/s for {} s (not counted)",
            c.start_rate, c.warmup_s
        );
        drive::measured_run(
            f.clone(),
            c.start_rate / f64::from(f.tracks()),
            c.warmup_s,
            output.clone(),
            &client,
            &source,
            Duration::from_secs_f64(c.drain_s),
            Duration::from_secs(1),
            stop.clone(),
            |_| {},
        )
        .await?;
    }
    let mut n = 0;
    while let Some((phase, rate)) = search.next_step() {
        if stop.load(Relaxed) {
            break;
        }
        n += 1;
        let rate_hz = rate / f64::from(f.tracks());
        eprintln!(
            "step {n} ({phase:?}): {rate:.0} datagrams/s ({} tracks x {rate_hz:.3} Hz) for {} s",
            f.tracks(),
            c.step_s
        );
        let res = drive::measured_run(
            f.clone(),
            rate_hz,
            c.step_s,
            output.clone(),
            &client,
            &source,
            Duration::from_secs_f64(c.drain_s),
            Duration::from_secs(1),
            stop.clone(),
            |p| eprintln!("  {}", p.line()),
        )
        .await?;
        std::fs::write(
            c.out.join(format!("step-{n}.hgrm")),
            tspi_loadgen::report::hgrm(res.ledger.latency(), 1e6),
        )?;
        let step = search.record(res.summary);
        eprintln!(
            "  -> {} (lost {}, p99 {:.3} ms)",
            if step.passed { "pass" } else { "FAIL" },
            step.summary.lost,
            step.summary.latency.p99_ms
        );
        tokio::time::sleep(Duration::from_secs_f64(c.pause_s)).await;
    }
    let result = search.result();
    let table = result.table();
    print!("{table}");
    std::fs::write(c.out.join("capacity.md"), &table)?;
    std::fs::write(
        c.out.join("capacity.json"),
        serde_json::to_string_pretty(&result)?,
    )?;
    let title = format!(
        "tspi ingest capacity: {} tracks, {:?}, p99 objective {} ms",
        f.tracks(),
        a.style,
        c.p99_ms
    );
    std::fs::write(
        c.out.join("capacity.svg"),
        tspi_loadgen::svg::latency_vs_rate(&result, &title),
    )?;
    eprintln!(
        "wrote capacity.md, capacity.json, capacity.svg and step-N.hgrm to {}",
        c.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
