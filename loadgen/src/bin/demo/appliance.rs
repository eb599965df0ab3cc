//! `./demo`'s default: the whole appliance. One configuration file enables
//! every role, `tspi run` (the shipped binary, a child process) runs them
//! against the demo's JetStream and a PostgreSQL of its own, and an airshow
//! fleet flies into its UDP port while the operator's page shows it: its
//! address is printed for the person at the keyboard. Headless (`--headless`,
//! or stdout not a terminal) the fleet flies 10 s; for a person, 300 s (or
//! `--duration-s`), and Ctrl-C stops early. At the end `tspi run` is stopped
//! as systemd stops it (SIGTERM) and its final accounts are checked: every
//! datagram accounted for, the stream holding each unique one once, the
//! archive holding every message of the stream.

use super::{DemoArgs, View, collect_snapshots, fly, percentiles};
use anyhow::{Context as _, bail};
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tspi_loadgen::{Fleet, FleetConfig, Style};
use tspi_testkit::harness::PgCluster;
use tspi_testkit::proc::{sample, scrape};

/// `tspi run`, stopped (SIGTERM, then SIGKILL) if the demo ends early.
struct Appliance {
    child: Option<Child>,
    log: PathBuf,
}

impl Appliance {
    /// SIGTERM, and the final `--json` line (`final_accounts`).
    fn stop(&mut self, within: Duration) -> anyhow::Result<serde_json::Value> {
        let mut child = self.child.take().context("already stopped")?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!(
                    "tspi run did not stop within {within:?} of SIGTERM (log: {})",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut out = String::new();
        child
            .stdout
            .take()
            .context("stdout")?
            .read_to_string(&mut out)?;
        let line = out
            .lines()
            .rev()
            .find(|l| l.contains("final_accounts"))
            .with_context(|| {
                format!(
                    "tspi run printed no final accounts (log: {})",
                    self.log.display()
                )
            })?;
        Ok(serde_json::from_str(line)?)
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_tcp() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_udp() -> std::io::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The shipped `tspi` beside this binary (`./demo` builds both).
fn tspi_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("tspi");
    anyhow::ensure!(
        bin.is_file(),
        "{} is missing: build it (`cargo build --release -p tspi --bin tspi`; ./demo does)",
        bin.display()
    );
    Ok(bin)
}

/// An operator token for the demo's page, fresh each run.
fn token() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("demo-{:x}{:x}", t, std::process::id())
}

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/dist")
}

pub async fn run(
    a: &DemoArgs,
    duration_s: u32,
    view: &View,
    urls: &[String],
) -> anyhow::Result<ExitCode> {
    println!("starting PostgreSQL on loopback (temporary directory)...");
    let pg = tokio::task::spawn_blocking(PgCluster::start)
        .await?
        .context("starting PostgreSQL")?;
    let udp = free_udp()?;
    let metrics = free_tcp()?;
    let console = match a.console_port {
        Some(0) => free_tcp()?,
        Some(p) => p,
        None if TcpListener::bind("127.0.0.1:8080").is_ok() => 8080,
        None => free_tcp()?,
    };
    let token = token();
    let dir = std::env::temp_dir().join(format!("tspi-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("tspi.toml");
    let servers: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    std::fs::write(
        &config,
        format!(
            "# ./demo: every role of the appliance from one file.\n\
             [nats]\nservers = [{servers}]\nname = \"tspi-demo\"\n\
             [stream]\nreplicas = {replicas}\n\
             [ingest]\nudp = [\"127.0.0.1:{udp}\"]\n\
             [metrics]\ninterval_s = {interval}\naddr = \"127.0.0.1:{metrics}\"\n\
             [archive]\npostgres = {dsn:?}\n\
             [channels]\nenabled = true\noperator_tokens = [{token:?}]\n\
             [console]\nenabled = true\nlisten = \"127.0.0.1:{console}\"\nweb_dir = {web:?}\n",
            servers = servers.join(", "),
            replicas = a.nodes,
            interval = a.interval_s.max(1),
            dsn = pg.dsn(),
            web = web_dir(),
        ),
    )?;
    let log = dir.join("tspi-run.log");
    let child = Command::new(tspi_binary()?)
        .args(["run", "--json", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting tspi run")?;
    let mut appliance = Appliance {
        child: Some(child),
        log: log.clone(),
    };
    println!(
        "tspi run --config {} (ingest, archive, channels, console); its log: {}",
        config.display(),
        log.display()
    );
    let started = Instant::now();
    loop {
        let up = scrape(metrics).is_some_and(|t| t.contains("tspi_ingest_received_total"))
            && TcpStream::connect(("127.0.0.1", console)).is_ok();
        if up {
            break;
        }
        if let Some(c) = appliance.child.as_mut()
            && let Some(status) = c.try_wait()?
        {
            bail!(
                "tspi run exited ({status}) before it was ready; its log: {}\n{}",
                log.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "tspi run not ready within 60 s; its log: {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("  ready in {:.1} s", started.elapsed().as_secs_f64());
    println!();
    println!("== the operator's page ==");
    println!("  operators: http://127.0.0.1:{console}/?token={token}");
    println!("  viewers:   http://127.0.0.1:{console}/");
    println!("  metrics:   http://127.0.0.1:{metrics}/metrics");
    println!();

    let client = async_nats::ConnectOptions::new()
        .name("tspi-demo-operator")
        .connect(urls)
        .await?;
    let js = async_nats::jetstream::new(client.clone());
    let (collector_stop, collector) = collect_snapshots(&client).await?;
    let fleet = Fleet::new(FleetConfig::new(
        Style::Airshow,
        u32::from(a.tracks),
        a.seed,
    ))?;
    let total = u64::from(a.tracks) * u64::from(a.rate_hz) * u64::from(duration_s);
    println!(
        "flying an airshow fleet of {} tracks x {} Hz x {} s = {} datagrams at udp://127.0.0.1:{udp} (Ctrl-C stops cleanly)",
        a.tracks, a.rate_hz, duration_s, total
    );
    println!();
    println!("== live ==");
    let stop = Arc::new(AtomicBool::new(false));
    let ctrl_c = tokio::spawn({
        let (stop, view) = (stop.clone(), view.clone());
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                view.lock()
                    .println("interrupted: stopping the fleet, then the appliance");
                stop.store(true, Relaxed);
            }
        }
    });
    let target: SocketAddr = format!("127.0.0.1:{udp}").parse()?;
    let (run, first_tick, interrupted) = fly(
        a,
        fleet,
        f64::from(duration_s),
        target,
        &client,
        view,
        &stop,
    )
    .await?;
    let expected = run.summary.sent;
    // The stream, then the archive, catch up.
    let deadline = Instant::now() + Duration::from_secs(if interrupted { 5 } else { 60 });
    let (mut stored, mut archived) = (0, 0);
    while Instant::now() < deadline {
        stored = js.get_stream("TSPI").await?.info().await?.state.messages;
        archived = scrape(metrics)
            .and_then(|t| sample(&t, "tspi_archive_telemetry_rows_total"))
            .unwrap_or(0);
        if stored >= expected && archived >= stored {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let finals = tokio::task::block_in_place(|| appliance.stop(Duration::from_secs(60)))?;
    let _ = collector_stop.send(());
    let recv_to_ack = collector.await?;
    ctrl_c.abort();
    drop(pg);

    let ingest = &finals["final_accounts"]["ingest"];
    let c = &ingest["account"]["counters"];
    let n = |k: &str| c[k].as_u64().unwrap_or(0);
    let rejected: u64 = c["rejected"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0);
    let balanced = ingest["balanced"].as_bool() == Some(true);
    println!();
    println!("== latency report ==");
    println!("end to end: intended send time -> delivered by a consumer of stream TSPI");
    print!("{}", run.summary.table());
    println!(
        "receive -> JetStream ack (ingest HdrHistogram)   {}",
        percentiles(&recv_to_ack)
    );
    println!();
    println!("== account of every datagram (tspi run's final account) ==");
    println!(
        "sent {} + {} repeated = ingest received {}",
        run.summary.sent,
        first_tick.len(),
        n("received")
    );
    println!(
        "received {} = rejected {rejected} + filtered {} + ring_dropped {} + acked {} + failed {}  [{}]",
        n("received"),
        n("filtered"),
        n("ring_dropped"),
        n("acked"),
        n("failed"),
        if balanced { "balanced" } else { "UNBALANCED" }
    );
    println!(
        "duplicate acks {} (the {} repeated datagrams)",
        n("duplicate"),
        first_tick.len()
    );
    println!(
        "stream TSPI holds {stored} messages (expected {expected}); the archive committed {archived} rows; the measurement lost {}, duplicated {}",
        run.summary.lost, run.summary.duplicated
    );
    if interrupted {
        println!("stopped early by Ctrl-C; everything sent is accounted for above");
        return Ok(ExitCode::from(130));
    }
    if !balanced
        || stored != expected
        || archived != stored
        || run.summary.lost != 0
        || n("failed") > 0
        || n("duplicate") != first_tick.len() as u64
    {
        bail!("demo check failed: {finals}, stored {stored} of {expected}, archived {archived}");
    }
    // Its config and log are no longer needed.
    std::fs::remove_dir_all(&dir).ok();
    Ok(ExitCode::SUCCESS)
}
