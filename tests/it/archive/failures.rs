//! `tspi archive` through failures, against real servers: the archiver
//! process SIGKILLed mid-stream and restarted, and PostgreSQL stopped for a
//! while and restarted. Either way the table ends with exactly one row per
//! unique message.

use super::servers::{Flavor, archive_pg, plain};
use crate::kit::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::task::block_in_place;
use tspi::archive::Handle;
use tspi_testkit::harness::NatsServer;

fn spawn_archiver(nats: &str, dsn: &str, ack: &str, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args(["archive", "--nats", nats, "--postgres", dsn])
        .args(["--batch-len-max", "500", "--flush-interval-ms", "50"])
        .args(["--ack-wait-s", "2", "--interval-s", "1", "--ack", ack])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start tspi archive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiver_killed_mid_stream_and_restarted_still_exactly_once_explicit_acks() {
    killed_and_restarted("explicit", 11).await;
}

/// Under ack policy all, the restarted archiver's first ack would cover what
/// the killed one held; the rewind at start is what keeps this exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiver_killed_mid_stream_and_restarted_still_exactly_once_ack_all() {
    killed_and_restarted("all", 12).await;
}

async fn killed_and_restarted(ack: &str, seed: u64) {
    const N: u64 = 30_000;
    let (nats, (_pg, role)) = block_in_place(|| (NatsServer::start(), plain()));
    let nats = nats.expect("nats-server");
    let js = js(&nats.url()).await;
    assert_eq!(publish_all(&js, &telemetry(0, N, seed)).await, N);
    let dsn = role.dsn.clone();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("archive.log");

    // Kill it twice while it is writing, each time once it passed a mark.
    for mark in [N as i64 / 5, N as i64 / 2] {
        let mut child = spawn_archiver(&nats.url(), &dsn, ack, &log);
        let deadline = Instant::now() + Duration::from_secs(120);
        let at_kill = loop {
            let n = count(&dsn, "tspi_telemetry").await;
            if n >= mark {
                break n;
            }
            assert!(
                Instant::now() < deadline && child.try_wait().unwrap().is_none(),
                "archiver did not reach {mark} rows: log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let after = count(&dsn, "tspi_telemetry").await;
        assert!(
            after < N as i64,
            "killed at {at_kill} rows, {after} after: the kill must land mid-stream"
        );
    }

    // Restarted: messages delivered to the killed process and never acked
    // come back after ack_wait (2 s); the rows already there are skipped.
    let mut child = spawn_archiver(&nats.url(), &dsn, ack, &log);
    wait_rows(&dsn, "tspi_telemetry", N as i64, Duration::from_secs(180)).await;
    // SIGTERM: drains and exits 0 with its final account.
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status:?}\n{text}");
    assert!(text.contains("final account"), "{text}");
    assert!(text.contains("archive: "), "reports were logged:\n{text}");
    check_telemetry(&dsn, 0, N, seed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_restarted_catches_up_exactly_once() {
    postgres_stopped_and_restarted(
        "archive::failures::postgres_stopped_and_restarted_catches_up_exactly_once",
        Flavor::Native,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_restarted_catches_up_exactly_once_timescaledb() {
    postgres_stopped_and_restarted(
        "archive::failures::postgres_stopped_and_restarted_catches_up_exactly_once_timescaledb",
        Flavor::Timescaledb,
    )
    .await;
}

async fn postgres_stopped_and_restarted(test: &str, flavor: Flavor) {
    const N: u64 = 8_000;
    const MORE: u64 = 3_000;
    const SEED: u64 = 23;
    let (nats, pg) = block_in_place(|| (NatsServer::start(), archive_pg(test, flavor)));
    let nats = nats.expect("nats-server");
    let Some((mut pg, role)) = pg else { return };
    let js = js(&nats.url()).await;
    let dsn = role.dsn.clone();
    let mut cfg = config(&nats.url());
    // TimescaleDB where the server has it.
    cfg.archive.partitioning = tspi::archive::Partitioning::Auto;
    let archiver = Handle::spawn(cfg, dsn.clone());

    publish_all(&js, &telemetry(0, N / 2, SEED)).await;
    wait_rows(
        &dsn,
        "tspi_telemetry",
        (N / 2) as i64,
        Duration::from_secs(120),
    )
    .await;

    block_in_place(|| pg.stop());
    let errors_before = archiver.stats.counters().db_errors;
    publish_all(&js, &telemetry(N / 2, N, SEED)).await;
    // Down for a while: longer than ack_wait (3 s), so JetStream redelivers
    // what the writer holds while it retries.
    let deadline = Instant::now() + Duration::from_secs(60);
    while archiver.stats.counters().db_errors < errors_before + 3 {
        assert!(Instant::now() < deadline, "{:?}", archiver.stats.counters());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let held = archiver.stats.counters();
    assert_eq!(
        held.telemetry_rows,
        N / 2,
        "nothing committed while down: {held:?}"
    );
    assert!(
        held.messages > N / 2,
        "the second half was taken and held: {held:?}"
    );

    // More arrives while the archive holds its batch and pulls nothing:
    // the lag is the server's count of what is not archived, not the
    // pending count of the last delivery (the issue saw "lag 1613 msgs"
    // with about 40,000 pending).
    publish_all(&js, &telemetry(N, N + MORE, SEED)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        let lag = archiver.stats.telemetry.lag(now_us);
        if lag.messages == N / 2 + MORE {
            assert!(lag.seconds > 0.0, "{lag:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lag {lag:?}, want {} messages",
            N / 2 + MORE
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    block_in_place(|| pg.restart()).expect("restart postgres");
    let total = N + MORE;
    wait_rows(
        &dsn,
        "tspi_telemetry",
        total as i64,
        Duration::from_secs(120),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while archiver.stats.telemetry.lag(0).messages > 0 {
        assert!(Instant::now() < deadline, "{:?}", archiver.stats.counters());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let account = archiver.stop().await.expect("archiver ran");
    assert_eq!(account.counters.telemetry_rows, total, "{account:?}");
    assert!(account.counters.db_errors > 0);
    check_telemetry(&dsn, 0, total, SEED).await;
    let mode: String = pg_connect(&dsn)
        .await
        .query_one("SELECT tspi_archive_partitioning()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode, flavor.mode());
}

/// Under ack policy all, a delivery that never reaches the archiver (here:
/// taken by another client of the same durable and never acked, as a
/// reconnect can lose one) would be covered by the archiver's next ack. The
/// consumer-sequence gap gives it away: the batch is committed without an
/// ack and the consumer rewinds to its ack floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_all_rewinds_when_a_delivery_goes_missing() {
    const N: u64 = 40_000;
    const SEED: u64 = 31;
    let (nats, (_pg, role)) = block_in_place(|| (NatsServer::start(), plain()));
    let nats = nats.expect("nats-server");
    let js = js(&nats.url()).await;
    assert_eq!(publish_all(&js, &telemetry(0, N, SEED)).await, N);
    let dsn = role.dsn.clone();
    let mut cfg = config(&nats.url());
    cfg.archive.ack = tspi::archive::AckSetting::All;
    cfg.archive.ack_wait_s = 30; // the stolen message must not come back by itself
    let archiver = Handle::spawn(cfg, dsn.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while archiver.stats.counters().telemetry_rows < 2_000 {
        assert!(Instant::now() < deadline, "{:?}", archiver.stats.counters());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The thief: one delivery from the same durable, never acked.
    let consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream("TSPI")
        .await
        .unwrap()
        .get_consumer("tspi-archive")
        .await
        .unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(10))
        .messages()
        .await
        .unwrap();
    let stolen = futures_util::StreamExt::next(&mut batch)
        .await
        .expect("a delivery")
        .expect("a message");
    let stolen_seq = stolen.info().unwrap().stream_sequence;
    drop(stolen);
    assert!(stolen_seq < N, "stole from mid-stream");
    wait_rows(&dsn, "tspi_telemetry", N as i64, Duration::from_secs(120)).await;
    let rewinds = archiver
        .stats
        .rewinds
        .load(std::sync::atomic::Ordering::Relaxed);
    let account = archiver.stop().await.expect("archiver ran");
    assert!(rewinds >= 1, "{account:?}");
    check_telemetry(&dsn, 0, N, SEED).await;
}

/// nats-server restarted under the archiver (both ack modes): the client
/// reconnects, the pull resumes, deliveries lost in the restart come back
/// (redelivery, or the rewind under ack policy all), exactly N rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_mid_stream_still_exactly_once() {
    const N: u64 = 30_000;
    for (ack, seed) in [
        (tspi::archive::AckMode::Explicit, 41),
        (tspi::archive::AckMode::All, 42),
    ] {
        let (nats, (_pg, role)) = block_in_place(|| (NatsServer::start(), plain()));
        let mut nats = nats.expect("nats-server");
        {
            let js = js(&nats.url()).await;
            assert_eq!(publish_all(&js, &telemetry(0, N, seed)).await, N);
        }
        let dsn = role.dsn.clone();
        let mut cfg = config(&nats.url());
        cfg.archive.ack = ack.into();
        let archiver = Handle::spawn(cfg, dsn.clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        while archiver.stats.counters().telemetry_rows < N / 5 {
            assert!(Instant::now() < deadline, "{:?}", archiver.stats.counters());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        block_in_place(|| nats.restart()).expect("restart nats-server");
        assert!(
            count(&dsn, "tspi_telemetry").await < N as i64,
            "restarted mid-stream"
        );
        wait_rows(&dsn, "tspi_telemetry", N as i64, Duration::from_secs(120)).await;
        let account = archiver.stop().await.expect("archiver ran");
        assert_eq!(account.counters.telemetry_rows, N, "{ack:?}: {account:?}");
        check_telemetry(&dsn, 0, N, seed).await;
    }
}

/// A stop while PostgreSQL is down says at once what it waits for and that
/// what is not committed will be redelivered (it used to wait in silence
/// for `drain_timeout_s`, then say "drain timed out"); it then exits 0, and
/// the next archiver gets those messages again: exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_while_postgres_is_down_says_what_it_waits_for() {
    const N: u64 = 1_000;
    const SEED: u64 = 29;
    let (nats, (mut pg, role)) = block_in_place(|| (NatsServer::start(), plain()));
    let nats = nats.expect("nats-server");
    let js = js(&nats.url()).await;
    let dsn = role.dsn.clone();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("archive.log");
    let conf = dir.path().join("tspi.toml");
    std::fs::write(&conf, "[archive]\ndrain_timeout_s = 4\n").unwrap();
    let spawn = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tspi"));
        cmd.args(["archive", "--nats", &nats.url(), "--postgres", &dsn])
            .arg("--config")
            .arg(&conf)
            .args(["--batch-len-max", "200", "--flush-interval-ms", "50"])
            .args(["--ack-wait-s", "2", "--interval-s", "1"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            );
        cmd.spawn().expect("start tspi archive")
    };
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    publish_all(&js, &telemetry(0, N / 2, SEED)).await;
    let mut child = spawn();
    wait_rows(
        &dsn,
        "tspi_telemetry",
        (N / 2) as i64,
        Duration::from_secs(60),
    )
    .await;
    block_in_place(|| pg.stop());
    publish_all(&js, &telemetry(N / 2, N, SEED)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !read().contains("retrying") {
        assert!(Instant::now() < deadline, "no retry logged:\n{}", read());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let asked = Instant::now();
    let said = loop {
        let text = read();
        if let Some(at) = text.find("stopping while PostgreSQL cannot be reached") {
            break text[at..].lines().next().unwrap_or_default().to_owned();
        }
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "the stop did not say at once what it waits for:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(said.contains("waiting up to 4 s"), "{said}");
    assert!(said.contains("redelivers"), "{said}");
    assert!(said.contains("last_error"), "names the cause: {said}");
    let status = block_in_place(|| child.wait()).unwrap();
    assert!(status.success(), "{status:?}\n{}", read());
    assert!(read().contains("drain timed out"), "{}", read());

    // Nothing was acked uncommitted: the next archiver gets it all.
    block_in_place(|| pg.restart()).expect("restart postgres");
    let mut child = spawn();
    wait_rows(&dsn, "tspi_telemetry", N as i64, Duration::from_secs(60)).await;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert!(block_in_place(|| child.wait()).unwrap().success());
    check_telemetry(&dsn, 0, N, SEED).await;
}
