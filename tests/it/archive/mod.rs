//! `tspi archive` against a real nats-server and a real PostgreSQL: every
//! unique message becomes exactly one row whose values are the codec's and
//! whose `raw` is the original datagram; operator messages land in their
//! tables; what does not decode lands in `tspi_rejects`.

mod ack;
mod aggregate;
mod failover;
mod failures;
mod ingest;
mod permanent;
mod reports;
mod servers;
mod systemd;
mod timescaledb;
mod tls;

use crate::kit::*;
use ciborium::Value;
use servers::{Flavor, archive_pg};
use std::time::Duration;
use tokio::task::block_in_place;
use tspi::archive::Handle;
use tspi_testkit::harness::NatsServer;

fn cbor(entries: Vec<(&str, Value)>) -> Vec<u8> {
    let map = Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::Text(k.into()), v))
            .collect(),
    );
    let mut out = Vec::new();
    ciborium::into_writer(&map, &mut out).unwrap();
    out
}

const SEED: u64 = 7;
/// Crosses UTC midnight (see BASE_NS): rows land in two day partitions.
const N: u64 = 6_000;

/// Native day partitions, as an ordinary role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_with_duplicates_ops_and_rejects() {
    exactly_once(
        "archive::exactly_once_with_duplicates_ops_and_rejects",
        Flavor::Native,
    )
    .await;
}

/// The same into a TimescaleDB hypertable with day chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_with_duplicates_ops_and_rejects_timescaledb() {
    exactly_once(
        "archive::exactly_once_with_duplicates_ops_and_rejects_timescaledb",
        Flavor::Timescaledb,
    )
    .await;
}

async fn exactly_once(test: &str, flavor: Flavor) {
    let (nats, pg) = block_in_place(|| (NatsServer::start(), archive_pg(test, flavor)));
    let nats = nats.expect("nats-server");
    let Some((_pg, role)) = pg else { return };
    let js = js(&nats.url()).await;

    let mut msgs = telemetry(0, N, SEED);
    // Duplicates JetStream stores (no Nats-Msg-Id, as a second ingest box
    // outside the duplicate window would look): the archive must skip them.
    let mut dups: Vec<_> = msgs.iter().step_by(97).cloned().collect();
    for d in &mut dups {
        d.1 = None;
    }
    let dup_count = dups.len() as u64;
    // Duplicates JetStream itself drops (same Nats-Msg-Id in the window).
    let js_dups: Vec<_> = msgs.iter().step_by(101).cloned().collect();
    msgs.extend(dups);
    msgs.extend(js_dups);
    // Two telemetry messages that do not decode.
    msgs.push((
        "tspi.geocentric.1".into(),
        Some("1:1:0.0001".into()),
        b"not cbor".to_vec(),
    ));
    let (f, recv) = random_frame(0, SEED);
    let mut lying = tspi::message::Message::encode("tspi", &f, recv);
    lying.subject = "tspi.spherical.9".into(); // body says otherwise
    msgs.push((lying.subject, Some("lie".into()), lying.body));
    let stored = publish_all(&js, &msgs).await;
    assert_eq!(
        stored,
        N + dup_count + 2,
        "JetStream stored the header-less duplicates"
    );

    // Operator traffic: ts as epoch seconds (int and float) and RFC 3339.
    let ops = vec![
        (
            "tags.broadcast".to_owned(),
            Some("tag-1".to_owned()),
            cbor(vec![
                ("id", Value::Text("tag-1".into())),
                ("ts", Value::Integer(1_700_000_100.into())),
                ("label", Value::Text("Weapons release".into())),
                ("status", Value::Text("active".into())),
                ("updated_ts", Value::Float(1_700_000_100.25)),
                ("creator", Value::Text("range-control".into())),
                (
                    "extra",
                    Value::Map(vec![(Value::Text("pass".into()), Value::Integer(3.into()))]),
                ),
            ]),
        ),
        (
            "tags.broadcast".to_owned(),
            Some("tag-2".to_owned()),
            cbor(vec![
                ("id", Value::Text("tag-2".into())),
                ("ts", Value::Text("2023-11-14T22:15:00.5Z".into())),
                ("label", Value::Text("Splash".into())),
                ("status", Value::Text("final".into())),
                (
                    "updated_ts",
                    Value::Text("2023-11-14T22:15:01+00:00".into()),
                ),
            ]),
        ),
        // ts neither epoch seconds nor RFC 3339: a reject.
        (
            "tags.broadcast".to_owned(),
            Some("tag-3".to_owned()),
            cbor(vec![
                ("id", Value::Text("tag-3".into())),
                ("ts", Value::Text("yesterday".into())),
                ("label", Value::Text("x".into())),
                ("status", Value::Text("x".into())),
                ("updated_ts", Value::Integer(1.into())),
            ]),
        ),
        (
            "tspi.cmd.display.units".to_owned(),
            Some("cmd-1".to_owned()),
            cbor(vec![
                ("cmd_id", Value::Text("cmd-1".into())),
                ("name", Value::Text("units".into())),
                ("ts", Value::Float(1_700_000_200.5)),
                ("sender", Value::Text("op1".into())),
                ("payload", Value::Text("imperial".into())),
            ]),
        ),
        (
            "tspi.cmd.display.session_metadata".to_owned(),
            Some("cmd-2".to_owned()),
            cbor(vec![
                ("cmd_id", Value::Text("cmd-2".into())),
                ("name", Value::Text("session_metadata".into())),
                ("ts", Value::Text("2023-11-14T22:20:00Z".into())),
                ("sender", Value::Text("op1".into())),
                (
                    "payload",
                    Value::Map(vec![
                        (Value::Text("name".into()), Value::Text("Sortie 4".into())),
                        (Value::Text("id".into()), Value::Text("S4".into())),
                    ]),
                ),
            ]),
        ),
        (
            "tspi.ops.ctrl".to_owned(),
            None,
            cbor(vec![
                ("type", Value::Text("GroupReplayStop".into())),
                ("channel_id", Value::Text("replay.x".into())),
            ]),
        ),
        // Metrics snapshots are not archived.
        ("tspi.ops.metrics.ingest.h".to_owned(), None, b"{}".to_vec()),
    ];
    publish_all(&js, &ops).await;

    let dsn = role.dsn.clone();
    let mut cfg = config(&nats.url());
    // TimescaleDB where the server has it.
    cfg.archive.partitioning = tspi::archive::Partitioning::Auto;
    // No redelivery by timeout, however loaded the box: the duplicate and
    // reject counts below are exact.
    cfg.archive.ack_wait_s = 120;
    let archiver = Handle::spawn(cfg, dsn.clone());
    wait_rows(&dsn, "tspi_telemetry", N as i64, Duration::from_secs(120)).await;
    wait_rows(&dsn, "tspi_rejects", 3, Duration::from_secs(30)).await;
    wait_rows(&dsn, "tspi_ops_events", 1, Duration::from_secs(30)).await;
    // Everything delivered has been committed and acked.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while archiver.stats.counters().acked < stored + 6 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            archiver.stats.counters()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let account = archiver.stop().await.expect("archiver ran");
    let c = account.counters;
    assert_eq!(c.telemetry_rows, N);
    assert_eq!(c.telemetry_duplicate, dup_count);
    assert_eq!(c.rejected, 3);
    assert_eq!(c.ops_rows, 5);
    assert_eq!(c.db_errors, 0);
    assert_eq!(account.abandoned_batches, 0);

    check_telemetry(&dsn, 0, N, SEED).await;
    let client = pg_connect(&dsn).await;
    // Two day partitions (or chunks) got rows (plus partitions made ahead).
    let parts: i64 = client
        .query_one("SELECT count(DISTINCT tableoid) FROM tspi_telemetry", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(parts, 2);
    let mode: String = client
        .query_one("SELECT tspi_archive_partitioning()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode, flavor.mode());
    if flavor == Flavor::Timescaledb {
        // Exactly two chunks, each one UTC day.
        let days: Vec<(f64, bool)> = client
            .query(
                "SELECT extract(epoch FROM range_end - range_start)::float8,
                        extract(epoch FROM range_start)::bigint % 86400 = 0
                 FROM timescaledb_information.chunks
                 WHERE hypertable_name = 'tspi_telemetry' ORDER BY range_start",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(days, [(86_400.0, true), (86_400.0, true)]);
    }

    let rejects = client
        .query(
            "SELECT subject, reason_kind, reason, body FROM tspi_rejects ORDER BY subject",
            &[],
        )
        .await
        .unwrap();
    let kinds: Vec<(String, String)> = rejects.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        kinds,
        [
            ("tags.broadcast".into(), "field".into()),
            ("tspi.geocentric.1".into(), "cbor".into()),
            ("tspi.spherical.9".into(), "subject".into()),
        ]
    );
    assert!(rejects[0].get::<_, String>(2).contains("yesterday"));
    assert_eq!(rejects[1].get::<_, Vec<u8>>(3), b"not cbor");

    let tags = client
        .query(
            "SELECT id, extract(epoch FROM ts)::float8, label, status, extract(epoch FROM updated_ts)::float8,
                    creator, extra::text, body FROM tspi_tags ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(tags.len(), 2);
    assert_eq!(tags[0].get::<_, String>(0), "tag-1");
    assert_eq!(tags[0].get::<_, f64>(1), 1_700_000_100.0);
    assert_eq!(tags[0].get::<_, f64>(4), 1_700_000_100.25);
    assert_eq!(
        tags[0].get::<_, Option<String>>(5).as_deref(),
        Some("range-control")
    );
    assert_eq!(
        tags[0].get::<_, Option<String>>(6).as_deref(),
        Some(r#"{"pass": 3}"#)
    );
    assert_eq!(tags[0].get::<_, Vec<u8>>(7), ops[0].2, "body kept as sent");
    assert_eq!(tags[1].get::<_, f64>(1), 1_700_000_100.5);
    assert_eq!(tags[1].get::<_, f64>(4), 1_700_000_101.0);
    assert_eq!(tags[1].get::<_, Option<String>>(5), None);

    let cmds = client
        .query(
            "SELECT cmd_id, name, extract(epoch FROM ts)::float8, sender, payload::text, body, subject
             FROM tspi_display_commands ORDER BY cmd_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(cmds.len(), 2);
    assert_eq!(cmds[0].get::<_, f64>(2), 1_700_000_200.5);
    assert_eq!(
        cmds[0].get::<_, Option<String>>(4).as_deref(),
        Some(r#""imperial""#)
    );
    assert_eq!(cmds[0].get::<_, Vec<u8>>(5), ops[3].2);
    assert_eq!(cmds[1].get::<_, f64>(2), 1_700_000_400.0);
    assert_eq!(
        cmds[1].get::<_, Option<String>>(4).as_deref(),
        Some(r#"{"id": "S4", "name": "Sortie 4"}"#)
    );
    assert_eq!(
        cmds[1].get::<_, String>(6),
        "tspi.cmd.display.session_metadata"
    );
    let ev: (String, Option<String>) = {
        let r = client
            .query_one("SELECT subject, body_json::text FROM tspi_ops_events", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(ev.0, "tspi.ops.ctrl");
    assert!(ev.1.unwrap().contains("GroupReplayStop"));

    // A second archiver run on the same stream and database: the durable
    // consumer resumes after its acks, nothing new is written.
    let again = Handle::spawn(config(&nats.url()), dsn.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a2 = again.stop().await.unwrap();
    // (Only a delivery whose ack_wait ran out under load could come back;
    // it must then be skipped, never written twice.)
    assert_eq!(
        (a2.counters.telemetry_rows, a2.counters.ops_rows),
        (0, 0),
        "{a2:?}"
    );
    assert_eq!(count(&dsn, "tspi_telemetry").await, N as i64);
    aggregate::check_track_minutes(&dsn, N as i64).await;
    // The archivers' fold task (every 200 ms here) left nothing appended.
    assert_eq!(
        count(&dsn, "tspi_track_minutes_recent").await,
        0,
        "the per-minute aggregate folded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_recorded_once_and_retention_drops_old_days() {
    let test = "archive::migrations_are_recorded_once_and_retention_drops_old_days";
    let (_pg, role) = block_in_place(|| archive_pg(test, Flavor::Native)).expect("plain server");
    let dsn = role.dsn;
    let cfg = tspi::archive::ArchiveConfig {
        partitioning: tspi::archive::Partitioning::Native,
        ..Default::default()
    };
    let mut db = tspi::archive::db::Db::connect(&dsn, &cfg)
        .await
        .expect("migrate");
    drop(db);
    // Connecting again applies nothing twice.
    db = tspi::archive::db::Db::connect(&dsn, &cfg)
        .await
        .expect("again");
    let client = pg_client(&dsn).await;
    let versions: Vec<i32> = client
        .query("SELECT version FROM tspi_schema_migrations ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);

    // Upkeep at 2024-03-10 12:00 UTC: yesterday .. today + 3 exist.
    let day_us: i64 = 86_400_000_000;
    let now = 1_710_072_000_000_000;
    let (created, dropped) = db.maintain(now, 3, 0).await.unwrap();
    assert_eq!((created, dropped.len()), (5, 0));
    let names = partitions(&client).await;
    assert_eq!(
        names,
        [
            "tspi_telemetry_p20240309",
            "tspi_telemetry_p20240310",
            "tspi_telemetry_p20240311",
            "tspi_telemetry_p20240312",
            "tspi_telemetry_p20240313"
        ]
    );
    // The aggregate's minutes of the 10th and the 19th, folded and appended.
    client
        .batch_execute(
            "INSERT INTO tspi_track_minutes_recent VALUES
                 ('2024-03-10 12:00+00', 1, 5, '2024-03-10 12:00:01+00', '2024-03-10 12:00:09+00'),
                 ('2024-03-19 00:00+00', 1, 2, '2024-03-19 00:00:01+00', '2024-03-19 00:00:02+00');
             SELECT tspi_track_minutes_fold();
             INSERT INTO tspi_track_minutes_recent VALUES
                 ('2024-03-10 12:00+00', 1, 1, '2024-03-10 12:00:10+00', '2024-03-10 12:00:10+00'),
                 ('2024-03-19 00:00+00', 2, 3, '2024-03-19 00:00:01+00', '2024-03-19 00:00:03+00');",
        )
        .await
        .unwrap();
    let m = |d: &str, s: i32, n: i64| (d.to_owned(), s, n);
    assert_eq!(
        track_minutes(&client).await,
        [
            m("10 12:00", 1, 6),
            m("19 00:00", 1, 2),
            m("19 00:00", 2, 3)
        ]
    );
    // Ten days later with a 2-day retention: days ending at or before
    // 2024-03-18 12:00 go, i.e. everything up to and including the 17th.
    let later = now + 10 * day_us;
    let (created, dropped) = db.maintain(later, 1, 2).await.unwrap();
    assert_eq!(created, 3, "19th, 20th, 21st");
    assert_eq!(dropped.len(), 5, "{dropped:?}");
    assert_eq!(
        partitions(&client).await,
        [
            "tspi_telemetry_p20240319",
            "tspi_telemetry_p20240320",
            "tspi_telemetry_p20240321"
        ]
    );
    assert_eq!(
        track_minutes(&client).await,
        [m("19 00:00", 1, 2), m("19 00:00", 2, 3)],
        "the dropped days' minutes went from both of the aggregate's tables"
    );
}

/// The per-minute aggregate: (day and UTC time, sensor, rows).
async fn track_minutes(client: &tokio_postgres::Client) -> Vec<(String, i32, i64)> {
    client
        .query(
            "SELECT to_char(minute AT TIME ZONE 'UTC', 'DD HH24:MI'), sensor_id, rows
             FROM tspi_track_minutes ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn pg_client(dsn: &str) -> tokio_postgres::Client {
    pg_connect(dsn).await
}

async fn partitions(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'tspi_telemetry'::regclass ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}
