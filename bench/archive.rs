//! Archive rate, side by side in one run on one box.
//!
//! `cargo bench --bench archive` (full: 1,000,000 messages, a few minutes),
//! `cargo bench --bench archive -- --quick` (100,000). `cargo test
//! --benches` runs a smoke form (3,000 messages) that checks every row
//! arrived.
//!
//! Against one real nats-server (file storage) and one real PostgreSQL
//! twice: the harness's (fsync, synchronous_commit, full_page_writes off:
//! the CPU-bound best case, for the baseline too) and a durable one (all
//! three on, as in production, where every commit waits for the disk):
//!
//! 1. the `TSPI` stream is pre-filled with N contract messages (both types,
//!    500 sensors each at 10 Hz, as a range sends them: 1,000,000 messages
//!    are 200 s of flying, across UTC midnight so two day partitions fill);
//! 2. **archive, explicit acks**: the archiver (in this process, its own
//!    tokio runtime of 2 workers, the shipped defaults but `ack =
//!    "explicit"`: batches of 5,000, 2 in flight, the per-minute aggregate
//!    appended and folded) on a fresh database and a fresh durable consumer, timed
//!    from the first message taken from the consumer to the last row
//!    committed (sustained rate), and from start (with connect, migrations
//!    and consumer creation);
//! 3. **archive, ack policy all** (what `ack = "auto"`, the default, gives
//!    a new durable): the same on another fresh database and consumer,
//!    acking once per batch;
//! 4. **row-at-a-time baseline**, as the existing toolkit archives: one
//!    pull, CBOR decode, JSON rendering, autocommitted `INSERT ... ON
//!    CONFLICT DO NOTHING` of a JSON row, and ack per message; for up to
//!    the first 100,000 messages or 20 s.
//!
//! Printed, per server: rows/s of each, the ratio archive/baseline and
//! explicit/all.
//!
//! Then, where TimescaleDB is installed (`scripts/setup`), on a third
//! server with it preloaded (fsync off, as the harness's): the same stream
//! archived (ack policy all, the default) into native partitions and into a hypertable,
//! each on its own database, side by side, then into native partitions
//! with migration 3's per-row aggregate trigger put back (its cost); bytes per row; and three
//! queries on each, raw rows beside the per-minute aggregate
//! (`bench/archive_tsdb.rs`). `-- --only tsdb` runs this part alone.
//!
//! Last, the stream of the runs up to 2026-12-02 beside the live one: the
//! same N messages spread over 8 hours (each sensor every 14 s at
//! 1,000,000), archived with the defaults into the durable server. And at
//! the start and the end, a yardstick of the box's single-threaded speed
//! (ns per `Message::encode`, against the day of the 109,757 rows/s run),
//! since CPU per row on these machines moves with it from day to day.

use async_nats::HeaderMap;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::future::IntoFuture;
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;
use tspi::archive::{AckMode, Handle, Partitioning};

use tspi::codec::Frame;
use tspi::config::Config;
use tspi::jetstream::{StreamSettings, ensure_stream, telemetry_stream};
use tspi::message::{Message, Record, RecvTime, utc_day_ticks};
use tspi_testkit::harness::{NatsServer, PgCluster};

use tspi_testkit::frames::frame;

#[path = "archive_tsdb.rs"]
mod tsdb;

/// How the pre-filled stream's receive times are laid out.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    /// As a range sends: the 500 sensors of the shared test frames each
    /// reporting at 10 Hz, 5,000 messages a second (1,000,000 messages are
    /// 200 s of flying), centred on midnight 2024-05-02 UTC so two day
    /// partitions fill. A batch of 5,000 rows is one second of the range:
    /// each sensor once in the per-minute aggregate.
    Live,
    /// The stream of the runs up to 2026-12-02: N messages spread evenly
    /// over 8 h from 2024-05-01T20:00Z, each sensor every 14 s at
    /// 1,000,000 (every 48 s at 300,000). A batch then spans minutes, so
    /// the aggregate gets several times more (minute, sensor) rows per
    /// telemetry row than a range's stream gives it.
    Sparse,
}

/// 2024-05-02T00:00:00Z.
const MIDNIGHT_NS: u64 = 1_714_608_000_000_000_000;
/// Live: every sensor at 10 Hz, one message every 200 µs at 500 sensors.
const LIVE_STEP_NS: u64 = 1_000_000_000 / (10 * tspi_testkit::frames::SENSORS);
const _: () = assert!(LIVE_STEP_NS == 200_000);
/// Sparse: 2024-05-01T20:00:00Z, over 8 h.
const SPARSE_BASE_NS: u64 = 1_714_593_600_000_000_000;
const SPARSE_SPREAD_NS: u64 = 8 * 3600 * 1_000_000_000;

fn message(i: u64, n: u64, shape: Shape) -> Message {
    let unix_ns = match shape {
        Shape::Live => MIDNIGHT_NS - n / 2 * LIVE_STEP_NS + i * LIVE_STEP_NS,
        Shape::Sparse => SPARSE_BASE_NS + i * (SPARSE_SPREAD_NS / n.max(1)),
    };
    let recv = RecvTime::from_unix_ns(unix_ns);
    let (day, time_ticks) = utc_day_ticks(recv.unix_ns);
    // The shared test frame, at its receive time (so days cross midnight).
    let f = Frame {
        day,
        time_ticks,
        ..frame(i)
    };
    Message::encode("tspi", &f, recv)
}

/// `message/owned_message` of `cargo bench --bench codec` on 2026-11-21,
/// the day of the 109,757 rows/s run: ns per message.
const YARDSTICK_REF_NS: f64 = 246.0;

/// The box's single-threaded speed now: ns per `Message::encode` over the
/// codec bench's batch of 1,024 frames, exactly its `message/owned_message`
/// loop, 100 times; the best of 3 rounds. Printed beside the rates: the
/// same code on this kind of machine has run 1.4-3.7x slower on some days,
/// and within one run, than on others, and CPU per row moves with it.
fn yardstick_ns() -> f64 {
    const RECV: RecvTime = RecvTime::from_unix_ns(1_700_000_000_123_456_789);
    let frames = tspi_testkit::frames::codec_batch(1024);
    // An unoptimised build (`cargo test --benches`) only checks it runs.
    let reps = if cfg!(debug_assertions) { 2 } else { 100 };
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t0 = Instant::now();
        for _ in 0..reps {
            for f in &frames {
                std::hint::black_box(Message::encode("tspi", f, RECV));
            }
        }
        best = best.min(t0.elapsed().as_secs_f64() * 1e9 / (reps as f64 * 1024.0));
    }
    best
}

fn print_yardstick(when: &str) {
    let ns = yardstick_ns();
    println!(
        "box yardstick ({when}): Message::encode {ns:.0} ns/message ({YARDSTICK_REF_NS:.0} on \
         2026-11-21, the 109,757 rows/s run): this box runs {:.2}x that day's time",
        ns / YARDSTICK_REF_NS
    );
}

async fn prefill(js: &async_nats::jetstream::Context, n: u64, shape: Shape) -> Duration {
    let t0 = Instant::now();
    let mut acks = FuturesUnordered::new();
    for i in 0..n {
        let m = message(i, n, shape);
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", m.msg_id.as_str());
        acks.push(
            js.publish_with_headers(m.subject, h, m.body.into())
                .await
                .expect("publish")
                .into_future(),
        );
        while acks.len() >= 2048 {
            acks.next().await.unwrap().expect("ack");
        }
    }
    while let Some(a) = acks.next().await {
        a.expect("ack");
    }
    t0.elapsed()
}

/// utime + stime of a `/proc/.../stat` file, seconds.
fn stat_cpu_s(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // utime and stime are fields 14 and 15; count after the `(comm)`.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// The box's (steal, all) CPU ticks from `/proc/stat`: time the hypervisor
/// gave to other guests while this one wanted to run.
fn steal_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    (f.get(7).copied().unwrap_or(0), f.iter().take(8).sum())
}

/// CPU seconds of every process whose command line contains `needle`.
fn cpu_of_processes(needle: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .map(|e| stat_cpu_s(&e.path().join("stat").to_string_lossy()))
        .sum()
}

/// CPU seconds of this process's threads named `tspi-archive*`.
fn cpu_of_archive_threads() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.starts_with("tspi-archive"))
        })
        .map(|t| stat_cpu_s(&t.path().join("stat").to_string_lossy()))
        .sum()
}

async fn create_db(pg: &PgCluster, name: &str) -> String {
    let (c, conn) = tokio_postgres::connect(&pg.dsn(), NoTls).await.unwrap();
    tokio::spawn(conn);
    c.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    format!("host=127.0.0.1 port={} user=tspi dbname={name}", pg.port())
}

#[derive(Debug)]
struct Run {
    rows: u64,
    sustained_rows_per_s: f64,
    total_s: f64,
    batches: u64,
    commit_p50_ms: f64,
    commit_p99_ms: f64,
    /// CPU µs per row: the archiver's threads, nats-server, the database
    /// backends of this run.
    archiver_us: f64,
    nats_us: f64,
    pg_us: f64,
    /// The yardstick just before the run: its ns per message against
    /// 2026-11-21's (2.0: the box ran single-threaded code half as fast).
    box_x: f64,
    /// Percent of the box's CPU time stolen by the hypervisor in the run.
    steal_pct: f64,
}

async fn archive_run(nats: &NatsServer, pg: &PgCluster, n: u64, ack: AckMode, name: &str) -> Run {
    archive_run_into(nats, pg, n, ack, name, Partitioning::Native, None).await
}

async fn archive_run_into(
    nats: &NatsServer,
    pg: &PgCluster,
    n: u64,
    ack: AckMode,
    name: &str,
    partitioning: Partitioning,
    // SQL run on the migrated database before the archiver starts.
    before: Option<&str>,
) -> Run {
    let nats_needle = nats_needle(nats);
    let nats = &nats.url();
    let dsn = create_db(pg, name).await;
    if let Some(sql) = before {
        let migrate = tspi::archive::ArchiveConfig {
            partitioning,
            ..Default::default()
        };
        drop(
            tspi::archive::db::Db::connect(&dsn, &migrate)
                .await
                .unwrap(),
        );
        let (c, conn) = tokio_postgres::connect(&dsn, NoTls).await.unwrap();
        tokio::spawn(conn);
        c.batch_execute(sql).await.unwrap();
    }
    let mut cfg = Config::default();
    cfg.nats.servers = vec![nats.to_owned()];
    cfg.metrics.nats_snapshot = false;
    cfg.metrics.interval_s = 3600;
    cfg.stream.create = false;
    cfg.archive.ops = false;
    cfg.archive.ack = ack.into();
    cfg.archive.durable = format!("bench-{name}");
    cfg.archive.partitioning = partitioning;
    // Its own runtime, as `tspi archive` has.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tspi-archive")
        .enable_all()
        .build()
        .unwrap();
    let box_x = yardstick_ns() / YARDSTICK_REF_NS;
    let nats_cpu0 = cpu_of_processes(&nats_needle);
    let steal0 = steal_ticks();
    let t0 = Instant::now();
    let handle = {
        let _g = rt.enter();
        Handle::spawn(cfg, dsn)
    };
    let mut first: Option<(Instant, u64)> = None;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let rows = handle
            .stats
            .telemetry_rows
            .load(std::sync::atomic::Ordering::Relaxed);
        let taken = handle
            .stats
            .messages
            .load(std::sync::atomic::Ordering::Relaxed);
        if taken > 0 && first.is_none() {
            first = Some((Instant::now(), 0));
        }
        if rows >= n {
            break;
        }
        assert!(!handle.is_finished(), "archiver stopped early");
        assert!(
            Instant::now() < deadline,
            "archive run {name} stalled at {rows} rows"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let end = Instant::now();
    let steal1 = steal_ticks();
    let pg_cpu = cpu_of_processes(&format!("postgres: tspi {name} "));
    let nats_cpu = cpu_of_processes(&nats_needle) - nats_cpu0;
    let archiver_cpu = cpu_of_archive_threads();
    let (t_first, rows_first) = first.unwrap();
    let commit = handle.stats.commit.lock().unwrap().cumulative.clone();
    let account = {
        let _g = rt.enter();
        let stop = tokio::spawn(handle.stop());
        stop.await.unwrap().unwrap()
    };
    rt.shutdown_background();
    Run {
        rows: account.counters.telemetry_rows,
        sustained_rows_per_s: (n - rows_first) as f64 / (end - t_first).as_secs_f64(),
        total_s: (end - t0).as_secs_f64(),
        batches: account.counters.batches,
        commit_p50_ms: commit.value_at_quantile(0.5) as f64 / 1e6,
        commit_p99_ms: commit.value_at_quantile(0.99) as f64 / 1e6,
        archiver_us: archiver_cpu * 1e6 / n as f64,
        nats_us: nats_cpu * 1e6 / n as f64,
        pg_us: pg_cpu * 1e6 / n as f64,
        box_x,
        steal_pct: 100.0 * (steal1.0 - steal0.0) as f64 / (steal1.1 - steal0.1).max(1) as f64,
    }
}

/// What nats-server's command line contains: its temporary directory.
fn nats_needle(nats: &NatsServer) -> String {
    let dir = nats.store_dir().to_string_lossy().into_owned();
    dir.split('/').take(3).collect::<Vec<_>>().join("/")
}

/// One message at a time: pull, decode, INSERT (autocommit), ack.
async fn baseline_run(
    nats: &str,
    pg: &PgCluster,
    tag: &str,
    limit: u64,
    budget: Duration,
) -> (u64, f64) {
    let dsn = create_db(pg, &format!("baseline_{tag}")).await;
    let (db, conn) = tokio_postgres::connect(&dsn, NoTls).await.unwrap();
    tokio::spawn(conn);
    db.batch_execute(
        "CREATE TABLE telemetry_json (
             msg_id text NOT NULL, recv_time timestamptz NOT NULL, subject text NOT NULL,
             record jsonb NOT NULL, PRIMARY KEY (msg_id, recv_time))",
    )
    .await
    .unwrap();
    let insert = db
        .prepare(
            "INSERT INTO telemetry_json (msg_id, recv_time, subject, record)
             VALUES ($1, $2::text::timestamptz, $3, $4::text::jsonb) ON CONFLICT DO NOTHING",
        )
        .await
        .unwrap();
    let client = async_nats::connect(nats).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("TSPI").await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some(format!("bench-baseline-{tag}")),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut msgs = consumer.messages().await.unwrap();
    let t0 = Instant::now();
    let mut done = 0u64;
    while done < limit && t0.elapsed() < budget {
        let m = msgs.next().await.unwrap().unwrap();
        let r: Record = ciborium::from_reader(&m.payload[..]).unwrap();
        let id = m
            .headers
            .as_ref()
            .unwrap()
            .get("Nats-Msg-Id")
            .unwrap()
            .as_str()
            .to_owned();
        db.execute(
            &insert,
            &[&id, &r.recv_iso, &m.subject.as_str(), &r.to_json()],
        )
        .await
        .unwrap();
        m.ack().await.unwrap();
        done += 1;
    }
    (done, done as f64 / t0.elapsed().as_secs_f64())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench_mode = args.iter().any(|a| a == "--bench");
    let quick = args.iter().any(|a| a == "--quick");
    let smoke = !bench_mode; // `cargo test --benches`
    let tsdb_only = args.windows(2).any(|w| w[0] == "--only" && w[1] == "tsdb");
    let n: u64 = if smoke {
        3_000
    } else if quick {
        100_000
    } else {
        1_000_000
    };
    let (base_limit, base_budget) = if smoke {
        (500, Duration::from_secs(10))
    } else {
        (100_000, Duration::from_secs(20))
    };
    let nats = NatsServer::start().expect("nats-server");
    // Two servers: the harness's (fsync, synchronous_commit and
    // full_page_writes off: the CPU-bound best case for everyone) and a
    // durable one, as a production archive runs (every commit waits for
    // its WAL to reach the disk).
    let fast = PgCluster::start().expect("postgres");
    let durable = PgCluster::start_with_settings(&[
        "fsync=on",
        "synchronous_commit=on",
        "full_page_writes=on",
    ])
    .expect("durable postgres");
    let timescale = tspi_testkit::skip::require(
        "bench archive: hypertable vs native partitions",
        tspi_testkit::skip::timescaledb(),
    )
    .then(|| PgCluster::start_timescaledb().expect("postgres + timescaledb"));
    // The bench's own driver runtime: publishing, polling, the baseline.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let settings = StreamSettings {
            duplicate_window: Duration::from_secs(30),
            ..StreamSettings::default()
        };
        ensure_stream(&js, telemetry_stream("tspi", &settings), Duration::from_secs(10))
            .await
            .unwrap();
        print_yardstick("start");
        let took = prefill(&js, n, Shape::Live).await;
        let info = js.get_stream("TSPI").await.unwrap().info().await.unwrap().clone();
        assert_eq!(info.state.messages, n);
        println!(
            "archive bench ({}): pre-filled TSPI with {n} messages ({} MB; 500 sensors at 10 Hz) in {:.1} s",
            if smoke { "smoke" } else if quick { "quick" } else { "full" },
            info.state.bytes / 1_000_000,
            took.as_secs_f64()
        );
        let mut table = Vec::new();
        let servers: &[(&str, &PgCluster)] = if tsdb_only {
            &[]
        } else {
            &[("durable", &durable), ("fsync off", &fast)]
        };
        for &(server, pg) in servers {
            let (c, conn) = tokio_postgres::connect(&pg.dsn(), NoTls).await.unwrap();
            tokio::spawn(conn);
            let fsync: String = c.query_one("SHOW fsync", &[]).await.unwrap().get(0);
            assert_eq!(fsync == "on", server == "durable");
            let tag = server.replace(' ', "_");
            let explicit =
                archive_run(&nats, pg, n, AckMode::Explicit, &format!("explicit_{tag}")).await;
            println!("{server}: archive, explicit acks: {explicit:?}");
            let all = archive_run(&nats, pg, n, AckMode::All, &format!("ackall_{tag}")).await;
            println!("{server}: archive, ack policy all: {all:?}");
            let (base_rows, base_rate) =
                baseline_run(&nats.url(), pg, &tag, base_limit.min(n), base_budget).await;
            println!("{server}: baseline, row-at-a-time INSERT: {base_rows} rows, {base_rate:.0} rows/s");
            assert_eq!(explicit.rows, n, "every message archived (explicit)");
            assert_eq!(all.rows, n, "every message archived (ack all)");
            assert!(base_rows > 0);
            table.push((server, explicit, all, base_rows, base_rate));
        }
        println!();
        println!(
            "box x: the yardstick just before each run, against 2026-11-21's (1.00: that day's \
             single-threaded speed; 2.00: half of it); steal %: the box's CPU time the \
             hypervisor gave to other guests during the run"
        );
        println!("| PostgreSQL | run | rows | sustained rows/s | total s (with start) | batches | commit p50 ms | commit p99 ms | CPU µs/row: archiver / nats-server / PostgreSQL backends | box x / steal % |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for (server, explicit, all, base_rows, base_rate) in &table {
            for (name, r) in [("archive, explicit acks", explicit), ("archive, ack policy all (default)", all)] {
                println!(
                    "| {server} | {name} | {} | {:.0} | {:.1} | {} | {:.1} | {:.1} | {:.1} / {:.1} / {:.1} | {:.2} / {:.0} |",
                    r.rows,
                    r.sustained_rows_per_s,
                    r.total_s,
                    r.batches,
                    r.commit_p50_ms,
                    r.commit_p99_ms,
                    r.archiver_us,
                    r.nats_us,
                    r.pg_us,
                    r.box_x,
                    r.steal_pct
                );
            }
            println!("| {server} | row-at-a-time INSERT baseline | {base_rows} | {base_rate:.0} | | | | | | |");
        }
        println!();
        for (server, explicit, all, _, base_rate) in &table {
            println!(
                "{server}: archive (ack all, the default) / baseline = {:.1}x (target >= 20x); explicit / all = {:.2}; \
                 target >= 100,000 rows/s: {}",
                all.sustained_rows_per_s / base_rate,
                explicit.sustained_rows_per_s / all.sustained_rows_per_s,
                if all.sustained_rows_per_s >= 100_000.0 { "met" } else { "NOT met" }
            );
        }
        if let Some(ts) = &timescale {
            tsdb_part(&nats, ts, n).await;
        }
        if !tsdb_only {
            // The earlier runs' stream beside this one: the default archive
            // into the durable server again. A new stream, so JetStream's
            // duplicate window holds nothing of the first.
            js.delete_stream("TSPI").await.unwrap();
            ensure_stream(&js, telemetry_stream("tspi", &settings), Duration::from_secs(10))
                .await
                .unwrap();
            prefill(&js, n, Shape::Sparse).await;
            let sparse = archive_run(&nats, &durable, n, AckMode::All, "ackall_sparse").await;
            println!("durable: archive, ack policy all, the sparse stream: {sparse:?}");
            assert_eq!(sparse.rows, n, "every message archived (sparse)");
            let live = table.first().map(|t| &t.2);
            println!();
            println!("| durable, ack policy all (default) | stream | rows | sustained rows/s | commit p50 ms | CPU µs/row: archiver / nats-server / PostgreSQL | box x / steal % |");
            println!("|---|---|---|---|---|---|---|");
            for (name, r) in [
                ("500 sensors at 10 Hz (the run above)", live),
                ("the same messages over 8 h (runs to 2026-12-02)", Some(&sparse)),
            ] {
                let Some(r) = r else { continue };
                println!(
                    "| | {name} | {} | {:.0} | {:.1} | {:.1} / {:.1} / {:.1} | {:.2} / {:.0} |",
                    r.rows,
                    r.sustained_rows_per_s,
                    r.commit_p50_ms,
                    r.archiver_us,
                    r.nats_us,
                    r.pg_us,
                    r.box_x,
                    r.steal_pct
                );
            }
        }
        print_yardstick("end");
    });
}

/// Hypertable beside native partitions on one TimescaleDB server; the
/// queries on raw rows beside the aggregate.
async fn tsdb_part(nats: &NatsServer, pg: &PgCluster, n: u64) {
    let mut runs = Vec::new();
    for (label, name, partitioning) in [
        ("native partitions", "tsdb_native", Partitioning::Native),
        ("hypertable", "tsdb_hyper", Partitioning::Timescaledb),
    ] {
        let r = archive_run_into(nats, pg, n, AckMode::All, name, partitioning, None).await;
        println!("timescaledb server: archive into {label}: {r:?}");
        assert_eq!(r.rows, n, "every message archived ({label})");
        let dsn = format!("host=127.0.0.1 port={} user=tspi dbname={name}", pg.port());
        let (bytes, agg_bytes) = tsdb::bytes_per_row(&dsn).await;
        // The queries, on an airshow day of their own (10 Hz; smoke: 1 Hz).
        let hz = if n >= 100_000 { 10 } else { 1 };
        let (day_dsn, day_rows, took) =
            tsdb::airshow_day(pg, &format!("{name}_day"), partitioning, hz).await;
        println!(
            "timescaledb server: airshow day into {label}: {day_rows} rows in {took:.1} s (one INSERT, then the aggregate)"
        );
        let queries = tsdb::queries(&day_dsn).await;
        runs.push((label, r, bytes, agg_bytes, queries));
    }
    // Side by side: the same native run with migration 3's per-row trigger
    // put back (on top of the archiver's own per-batch upsert): its cost.
    let bare = archive_run_into(
        nats,
        pg,
        n,
        AckMode::All,
        "tsdb_native_trigger",
        Partitioning::Native,
        Some(tsdb::OLD_TRIGGER),
    )
    .await;
    println!(
        "timescaledb server: archive into native partitions, with migration 3's trigger: {bare:?}"
    );
    assert_eq!(bare.rows, n);
    println!();
    println!(
        "| TimescaleDB server (fsync off) | rows | sustained rows/s | commit p50 ms | commit p99 ms | CPU µs/row: archiver / nats-server / PostgreSQL | bytes/row (with indexes) | aggregate bytes/row | box x / steal % |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (label, r, bytes, agg_bytes, _) in &runs {
        println!(
            "| {label} | {} | {:.0} | {:.1} | {:.1} | {:.1} / {:.1} / {:.1} | {bytes:.0} | {agg_bytes:.1} | {:.2} / {:.0} |",
            r.rows,
            r.sustained_rows_per_s,
            r.commit_p50_ms,
            r.commit_p99_ms,
            r.archiver_us,
            r.nats_us,
            r.pg_us,
            r.box_x,
            r.steal_pct
        );
    }
    let r = &bare;
    println!(
        "| native partitions, migration 3's trigger put back | {} | {:.0} | {:.1} | {:.1} | {:.1} / {:.1} / {:.1} | | | {:.2} / {:.0} |",
        r.rows,
        r.sustained_rows_per_s,
        r.commit_p50_ms,
        r.commit_p99_ms,
        r.archiver_us,
        r.nats_us,
        r.pg_us,
        r.box_x,
        r.steal_pct
    );
    println!();
    println!("| query (median of 5) | table | raw rows ms | aggregate ms | result rows |");
    println!("|---|---|---|---|---|");
    for (label, _, _, _, queries) in &runs {
        for q in queries {
            println!(
                "| {} | {label} | {:.2} | {:.2} | {} |",
                q.name, q.raw_ms, q.agg_ms, q.rows
            );
        }
    }
}
