//! Where the telemetry goes, TimescaleDB or native partitions, decided from
//! what the archive's role can see (never `shared_preload_libraries`, which
//! an ordinary role may not read), and retention on each.

use super::servers::{Flavor, ROLE, archive_pg};
use super::{partitions, pg_client};
use tokio::task::block_in_place;
use tspi::archive::db::Db;
use tspi::archive::{ArchiveConfig, Partitioning};
use tspi_testkit::harness::PgCluster;

fn wanting(partitioning: Partitioning) -> ArchiveConfig {
    ArchiveConfig {
        partitioning,
        ..Default::default()
    }
}

async fn refusal(dsn: &str, partitioning: Partitioning) -> String {
    match Db::connect(dsn, &wanting(partitioning)).await {
        Ok(_) => panic!("{partitioning:?} must be refused here"),
        Err(e) => format!("{e:#}"),
    }
}

async fn no_telemetry_table(client: &tokio_postgres::Client) {
    let telemetry: Option<String> = client
        .query_one("SELECT to_regclass('tspi_telemetry')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(telemetry, None, "the failed migration left no table");
}

/// Partitioning choice on a server started without TimescaleDB in
/// `shared_preload_libraries` (whether or not the machine has it
/// installed): `timescaledb` is refused with the reason and nothing is
/// half-created; `auto` falls back to native day partitions and records
/// that choice. As the superuser, and as an ordinary role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_timescaledb_auto_is_native_and_timescaledb_is_refused() {
    let pg = block_in_place(PgCluster::start).expect("postgres");
    let role = block_in_place(|| pg.ordinary_database(ROLE)).expect("role");
    for dsn in [pg.dsn(), role.dsn.clone()] {
        let client = pg_client(&dsn).await;
        let (loaded, created): (bool, bool) = {
            let r = client
                .query_one(
                    "SELECT current_setting('timescaledb.disable_load', true) IS NOT NULL,
                            EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
                    &[],
                )
                .await
                .unwrap();
            (r.get(0), r.get(1))
        };
        assert!(
            !loaded && !created,
            "this test is about a server without TimescaleDB"
        );
        let text = refusal(&dsn, Partitioning::Timescaledb).await;
        assert!(
            text.contains("timescaledb extension is not installed"),
            "{text}"
        );
        assert!(text.contains("CREATE EXTENSION timescaledb"), "{text}");
        no_telemetry_table(&client).await;

        let db = Db::connect(&dsn, &ArchiveConfig::default())
            .await
            .expect("auto migrates");
        assert_eq!(db.partitioning().await.unwrap(), "native");
    }
}

/// On a TimescaleDB server, a role that cannot read
/// `shared_preload_libraries` and may not create the extension, in a
/// database where the DBA did not create it: `auto` is native, `timescaledb`
/// is refused naming the DBA's steps. (The migration used to read that
/// setting and failed with "must be superuser or have privileges of
/// pg_read_all_settings", for ever.) The superuser, in a database without
/// the extension, creates it and gets the hypertable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_role_decides_from_what_it_can_see() {
    let test = "archive::timescaledb::ordinary_role_decides_from_what_it_can_see";
    let Some((pg, owner)) = block_in_place(|| archive_pg(test, Flavor::Timescaledb)) else {
        return;
    };
    // The owner of a database where the DBA created the extension: a
    // hypertable, without reading any superuser-only setting.
    let db = Db::connect(&owner.dsn, &wanting(Partitioning::Timescaledb))
        .await
        .expect("hypertable as an ordinary role");
    assert_eq!(db.partitioning().await.unwrap(), "timescaledb");
    drop(db);

    // A role that may create tables but not extensions, in a database
    // without the extension.
    block_in_place(|| {
        pg.psql("postgres", "CREATE ROLE restricted LOGIN NOSUPERUSER")?;
        pg.psql("postgres", "CREATE DATABASE plain")?;
        pg.psql("plain", "GRANT CREATE ON SCHEMA public TO restricted")
    })
    .expect("DBA steps");
    let dsn = format!(
        "host=127.0.0.1 port={} user=restricted dbname=plain",
        pg.port()
    );
    let client = pg_client(&dsn).await;
    let can_read: Result<_, _> = client
        .query_one("SELECT current_setting('shared_preload_libraries')", &[])
        .await;
    assert!(can_read.is_err(), "the role cannot read the preload list");
    let text = refusal(&dsn, Partitioning::Timescaledb).await;
    assert!(
        text.contains("timescaledb extension is not installed in this database"),
        "{text}"
    );
    assert!(text.contains("hint: a DBA"), "{text}");
    no_telemetry_table(&client).await;
    let db = Db::connect(&dsn, &wanting(Partitioning::Auto))
        .await
        .expect("auto migrates as an ordinary role");
    assert_eq!(db.partitioning().await.unwrap(), "native");

    // The superuser in the default database: auto creates the extension.
    let db = Db::connect(&pg.dsn(), &wanting(Partitioning::Auto))
        .await
        .expect("superuser migrates");
    assert_eq!(db.partitioning().await.unwrap(), "timescaledb");
}

/// Retention on a hypertable drops whole day chunks (the native partitions'
/// twin is `migrations_are_recorded_once_and_retention_drops_old_days`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_day_chunks_timescaledb() {
    let test = "archive::timescaledb::retention_drops_old_day_chunks_timescaledb";
    let Some((_pg, role)) = block_in_place(|| archive_pg(test, Flavor::Timescaledb)) else {
        return;
    };
    let mut db = Db::connect(&role.dsn, &ArchiveConfig::default())
        .await
        .expect("migrate");
    assert_eq!(db.partitioning().await.unwrap(), "timescaledb");
    let client = pg_client(&role.dsn).await;
    // One row a day, 2024-03-09 .. 2024-03-21 (noon UTC): 13 day chunks.
    client
        .batch_execute(
            "INSERT INTO tspi_telemetry (recv_time, recv_epoch_ms, sensor_id, msg_type, day,
                 time_s, status, status_flags, raw, msg_id, stream_seq)
             SELECT t, 0, 1, 'geocentric', 1, 0, 0, 0, decode(repeat('00', 37), 'hex'),
                    'm' || n, n
             FROM generate_series(1, 13) AS n,
                  LATERAL (SELECT timestamptz '2024-03-08 12:00+00' + n * interval '1 day') AS x(t);
             -- Rows not written by the archiver: added to the aggregate by hand.
             SELECT tspi_track_minutes_add_rows('-infinity', 'infinity');",
        )
        .await
        .unwrap();
    let chunks = || async {
        pg_client(&role.dsn)
            .await
            .query(
                "SELECT to_char(range_start AT TIME ZONE 'UTC', 'YYYYMMDD')
                 FROM timescaledb_information.chunks
                 WHERE hypertable_name = 'tspi_telemetry' ORDER BY range_start",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    assert_eq!(chunks().await.len(), 13);
    // Upkeep makes nothing ahead (chunks come with their rows) and, with
    // no retention, drops nothing.
    let day_us: i64 = 86_400_000_000;
    let now = 1_710_072_000_000_000; // 2024-03-10 12:00 UTC
    assert_eq!(db.maintain(now, 3, 0).await.unwrap(), (0, vec![]));
    assert!(partitions(&client).await.len() == 13, "chunks are children");
    // 2024-03-20 12:00 with a 2-day retention: days ending at or before
    // 2024-03-18 12:00 go, i.e. every chunk up to and including the 17th.
    let (created, dropped) = db.maintain(now + 10 * day_us, 1, 2).await.unwrap();
    assert_eq!(created, 0);
    assert_eq!(dropped.len(), 9, "{dropped:?}");
    assert!(dropped.iter().all(|d| d.contains("_hyper_")), "{dropped:?}");
    assert_eq!(
        chunks().await,
        ["20240318", "20240319", "20240320", "20240321"]
    );
    let rows: i64 = client
        .query_one("SELECT count(*) FROM tspi_telemetry", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 4);
    // The aggregate lost the same days.
    super::aggregate::check_track_minutes(&role.dsn, 4).await;
}

/// `archive.compress_after_days` sets a compression policy where the server
/// has compression; on the Apache-2 build (this machine's, built from
/// source) and on native partitions it says why not instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_policy_where_the_server_has_it() {
    use tspi::archive::db::Compression;
    let test = "archive::timescaledb::compression_policy_where_the_server_has_it";
    let Some((pg, role)) = block_in_place(|| archive_pg(test, Flavor::Timescaledb)) else {
        return;
    };
    let db = Db::connect(&role.dsn, &ArchiveConfig::default())
        .await
        .expect("migrate");
    assert_eq!(db.compression(0).await.unwrap(), Compression::Off);
    let license = block_in_place(|| pg.psql(ROLE, "SHOW timescaledb.license")).unwrap();
    match db.compression(7).await.unwrap() {
        Compression::Unavailable(why) => {
            assert_eq!(license, "apache");
            assert!(why.contains("Apache-2 build"), "{why}");
        }
        Compression::Policy { after_days } => {
            assert_eq!((license.as_str(), after_days), ("timescale", 7));
            let jobs = block_in_place(|| {
                pg.psql(
                    ROLE,
                    "SELECT count(*) FROM timescaledb_information.jobs \
                     WHERE proc_name = 'policy_compression'",
                )
            })
            .unwrap();
            assert_eq!(jobs, "1");
        }
        Compression::Off => panic!("asked for a policy"),
    }

    let (_plain, native) = block_in_place(|| archive_pg(test, Flavor::Native)).unwrap();
    let db = Db::connect(&native.dsn, &ArchiveConfig::default())
        .await
        .expect("migrate");
    match db.compression(7).await.unwrap() {
        Compression::Unavailable(why) => assert!(why.contains("native partitions"), "{why}"),
        other => panic!("{other:?}"),
    }
}
