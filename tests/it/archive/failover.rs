//! A PostgreSQL primary with a streaming-replication standby: the primary
//! is stopped mid-archive and the standby promoted; the archiver, given
//! both hosts with `target_session_attrs=read-write`, finds the new primary,
//! writes again what was not committed, and the table holds every message
//! of the stream exactly once. Replay reads from the standby when told to.

use super::servers::ROLE;
use crate::kit::*;
use std::time::{Duration, Instant};
use tokio::task::block_in_place;
use tspi::archive::Handle;
use tspi::replay::archive::{ArchiveSource, Window};
use tspi::replay::driver::DriverConfig;
use tspi::replay::pacer::Rate;
use tspi::replay::sink::MemorySink;
use tspi_testkit::harness::{NatsServer, PgCluster};

/// The archive role's connection string to `hosts` (ports), in order.
fn dsn_for(ports: &[u16], extra: &str) -> String {
    let hosts = vec!["127.0.0.1"; ports.len()].join(",");
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(
        "host={hosts} port={} user={ROLE} dbname={ROLE} {extra}",
        ports.join(",")
    )
}

async fn in_recovery(dsn: &str) -> bool {
    pg_connect(dsn)
        .await
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_promoted_mid_archive_exactly_once() {
    const N: u64 = 20_000;
    const SEED: u64 = 43;
    let (nats, primary) = block_in_place(|| {
        (
            NatsServer::start(),
            // Commits wait for the standby once it is named below: what the
            // archiver acked is on the standby when the primary goes.
            PgCluster::start_with_settings(&["synchronous_commit=on"]),
        )
    });
    let (nats, mut primary) = (nats.expect("nats-server"), primary.expect("primary"));
    block_in_place(|| primary.ordinary_database(ROLE)).expect("role");
    let standby = block_in_place(|| primary.start_standby()).expect("standby");
    block_in_place(|| {
        primary.psql(
            "postgres",
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
        )?;
        primary.psql("postgres", "SELECT pg_reload_conf()")
    })
    .expect("synchronous standby");
    assert!(block_in_place(|| standby.is_standby()).unwrap());
    let both = dsn_for(
        &[primary.port(), standby.port()],
        "target_session_attrs=read-write connect_timeout=2",
    );
    let on_primary = dsn_for(&[primary.port()], "");
    let on_standby = dsn_for(&[standby.port()], "");

    let js = js(&nats.url()).await;
    assert_eq!(publish_all(&js, &telemetry(0, N, SEED)).await, N);
    let archiver = Handle::spawn(config(&nats.url()), both.clone());
    // Mid-archive: the primary goes once a fifth is in.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = count(&on_primary, "tspi_telemetry").await;
        if n >= N as i64 / 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} rows: {:?}",
            archiver.stats.counters()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    block_in_place(|| primary.stop());
    let at_stop = archiver.stats.counters();
    assert!(
        at_stop.telemetry_rows < N,
        "stopped mid-archive: {at_stop:?}"
    );
    // The standby does not take writes: the archiver waits, acks nothing.
    let errors = at_stop.db_errors;
    let deadline = Instant::now() + Duration::from_secs(60);
    while archiver.stats.counters().db_errors < errors + 2 {
        assert!(Instant::now() < deadline, "{:?}", archiver.stats.counters());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    block_in_place(|| standby.promote()).expect("promote");
    assert!(!in_recovery(&on_standby).await);

    wait_rows(
        &on_standby,
        "tspi_telemetry",
        N as i64,
        Duration::from_secs(120),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while archiver.stats.counters().acked < N {
        assert!(Instant::now() < deadline, "{:?}", archiver.stats.counters());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let account = archiver.stop().await.expect("archiver ran");
    assert!(account.counters.db_errors >= errors + 2, "{account:?}");
    // Every message once, each row equal to its frame.
    check_telemetry(&on_standby, 0, N, SEED).await;
}

/// Replay told to read from a standby does, given the primary first; told
/// nothing, it reads where the connection string leads (the primary); told
/// to with no standby among the hosts, it reads from the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reads_from_a_standby_when_told_to() {
    let primary = block_in_place(PgCluster::start).expect("primary");
    block_in_place(|| primary.ordinary_database(ROLE)).expect("role");
    let on_primary = dsn_for(&[primary.port()], "");
    let mut db = pg_connect(&on_primary).await;
    tspi::archive::schema::migrate(&mut db, tspi::archive::Partitioning::Native)
        .await
        .unwrap();
    let offsets: Vec<u64> = (0..30u64).map(|i| i * 10_000_000).collect();
    insert_telemetry_rows(&db, &recording(&offsets), false).await;
    let standby = block_in_place(|| primary.start_standby()).expect("standby");
    let both = dsn_for(&[primary.port(), standby.port()], "");
    // The rows reach the standby (asynchronous replication).
    wait_rows(
        &dsn_for(&[standby.port()], ""),
        "tspi_telemetry",
        30,
        Duration::from_secs(30),
    )
    .await;

    let handle = tokio::runtime::Handle::current();
    let read = |dsn: String, from_standby: bool| {
        let mut source = ArchiveSource::new(
            handle.clone(),
            dsn,
            Window::Time {
                start_ns: T0_NS,
                end_ns: T0_NS + 1_000_000_000,
            },
        );
        source.from_standby = from_standby;
        let mut sink = MemorySink::default();
        let (_tx, rx) = std::sync::mpsc::channel();
        let fast = DriverConfig {
            rate: Rate::new(1000.0).unwrap(),
            ..DriverConfig::default()
        };
        tspi::replay::driver::run(&mut source, &mut sink, fast, &rx)
            .unwrap()
            .telemetry
    };
    // Where the replay's connection lands, then what it reads there.
    for (dsn, from_standby, want_standby) in [
        (both.clone(), true, true),
        (both.clone(), false, false),
        (on_primary.clone(), true, false),
    ] {
        let target = if from_standby {
            tspi::pg::Target::PreferStandby
        } else {
            tspi::pg::Target::AsGiven
        };
        let client = tspi::replay::archive::connect_to(&dsn, target)
            .await
            .unwrap();
        let standby_session: bool = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            standby_session, want_standby,
            "{dsn} from_standby={from_standby}"
        );
        let n = block_in_place(|| read(dsn.clone(), from_standby));
        assert_eq!(n, 30, "{dsn}");
    }
}
