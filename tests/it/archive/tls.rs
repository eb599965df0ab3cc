//! TLS to PostgreSQL with the server's certificate verified
//! (`archive.ca_file`), against a server that refuses TCP without TLS.

use crate::kit::*;
use std::time::{Duration, Instant};
use tokio::task::block_in_place;
use tspi::archive::db::Db;
use tspi::archive::{ArchiveConfig, Handle};
use tspi::pg::Tls;
use tspi_testkit::harness::{NatsServer, PgCluster, make_ca};

fn with_ca(ca: Option<&std::path::Path>) -> ArchiveConfig {
    ArchiveConfig {
        ca_file: ca.map(std::path::Path::to_path_buf),
        ..Default::default()
    }
}

async fn refusal(dsn: &str, cfg: &ArchiveConfig) -> String {
    match Db::connect(dsn, cfg).await {
        Ok(_) => panic!("connecting to {dsn} with {:?} must fail", cfg.ca_file),
        Err(e) => format!("{e:#}"),
    }
}

/// The archive over TLS: every message exactly once, on a session that is
/// encrypted (`pg_stat_ssl`); the same server refuses the archive without
/// TLS; `host=localhost` verifies too (the certificate names both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_over_tls_with_the_server_verified() {
    const N: u64 = 2_000;
    let (nats, pg) = block_in_place(|| (NatsServer::start(), PgCluster::start_requiring_tls()));
    let (nats, pg) = (nats.expect("nats-server"), pg.expect("postgres with TLS"));
    let role = block_in_place(|| pg.ordinary_database("tspi_archive")).expect("role");
    let ca = pg.tls_ca().expect("a CA").to_path_buf();

    // Without TLS: pg_hba refuses, and says why.
    let text = refusal(&role.dsn, &with_ca(None)).await;
    assert!(text.contains("no encryption"), "{text}");

    let js = js(&nats.url()).await;
    publish_all(&js, &telemetry(0, N, 41)).await;
    let mut cfg = config(&nats.url());
    cfg.archive.ca_file = Some(ca.clone());
    let archiver = Handle::spawn(cfg, role.dsn.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while archiver.stats.counters().acked < N {
        assert!(
            Instant::now() < deadline && !archiver.is_finished(),
            "{:?}",
            archiver.stats.counters()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let account = archiver.stop().await.expect("archiver ran");
    assert_eq!(account.counters.telemetry_rows, N);
    assert_eq!(account.counters.db_errors, 0);

    let tls = Tls::from_ca_file(&ca).unwrap();
    let localhost = role.dsn.replace("host=127.0.0.1", "host=localhost");
    for dsn in [&role.dsn, &localhost] {
        let (client, _conn) = tspi::pg::connect(dsn, Some(&tls)).await.expect("TLS");
        let row = client
            .query_one(
                "SELECT (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()),
                        (SELECT count(*) FROM tspi_telemetry),
                        (SELECT count(DISTINCT msg_id) FROM tspi_telemetry)",
                &[],
            )
            .await
            .unwrap();
        assert!(row.get::<_, bool>(0), "the session is encrypted");
        assert_eq!(row.get::<_, i64>(1), N as i64);
        assert_eq!(row.get::<_, i64>(2), N as i64);
    }

    // Replay reads the archive over TLS too (`--archive-ca-file`), at
    // 1,000x: the 2,000 messages span 50 minutes.
    let (client, _conn) = tspi::pg::connect(&role.dsn, Some(&tls)).await.unwrap();
    let span = client
        .query_one(
            "SELECT (extract(epoch FROM min(recv_time)) * 1e9)::bigint,
                    (extract(epoch FROM max(recv_time)) * 1e9)::bigint FROM tspi_telemetry",
            &[],
        )
        .await
        .unwrap();
    let (lo, hi): (i64, i64) = (span.get(0), span.get(1));
    let mut source = tspi::replay::archive::ArchiveSource::new(
        tokio::runtime::Handle::current(),
        role.dsn.clone(),
        tspi::replay::archive::Window::Time {
            start_ns: lo as u64 - 1_000,
            end_ns: hi as u64 + 1_000,
        },
    );
    source.tls = Some(tls);
    let read = block_in_place(|| {
        let mut sink = tspi::replay::sink::MemorySink::default();
        let (_tx, rx) = std::sync::mpsc::channel();
        let fast = tspi::replay::driver::DriverConfig {
            rate: tspi::replay::pacer::Rate::new(1_000.0).unwrap(),
            ..Default::default()
        };
        tspi::replay::driver::run(&mut source, &mut sink, fast, &rx).unwrap()
    });
    assert_eq!(read.telemetry, N);
}

/// A CA that did not sign the server's certificate: the connection fails,
/// and the error names the cause. A CA file with sslmode=disable, or one
/// that cannot be read, is refused before any connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_fails_and_says_why() {
    let pg = block_in_place(PgCluster::start_requiring_tls).expect("postgres with TLS");
    let dir = tempfile::tempdir().unwrap();
    let wrong = block_in_place(|| make_ca(dir.path(), "stranger")).expect("a CA");
    let text = refusal(&pg.dsn(), &with_ca(Some(&wrong))).await;
    assert!(
        text.contains("TLS") && text.contains("invalid peer certificate: UnknownIssuer"),
        "{text}"
    );

    let right = pg.tls_ca().unwrap();
    let text = refusal(
        &format!("{} sslmode=disable", pg.dsn()),
        &with_ca(Some(right)),
    )
    .await;
    assert!(
        text.contains("sslmode=disable") && text.contains("TLS is required"),
        "{text}"
    );

    let missing = dir.path().join("missing.pem");
    let text = refusal(&pg.dsn(), &with_ca(Some(&missing))).await;
    assert!(text.contains("missing.pem"), "{text}");
    std::fs::write(dir.path().join("empty.pem"), "not a certificate\n").unwrap();
    let text = refusal(&pg.dsn(), &with_ca(Some(&dir.path().join("empty.pem")))).await;
    assert!(text.contains("no PEM certificate"), "{text}");

    // The right CA: connected and encrypted.
    let db = Db::connect(&pg.dsn(), &with_ca(Some(right)))
        .await
        .expect("verified");
    assert_eq!(db.partitioning().await.unwrap(), "native");
}
