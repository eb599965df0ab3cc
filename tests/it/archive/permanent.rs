//! `tspi archive` when PostgreSQL refuses rows for good, against real
//! servers: a CHECK constraint the archive does not know refuses one
//! telemetry row, and a trigger raises for one tag. The refused messages end
//! in `tspi_rejects` with the server's reason; every other message is
//! archived, everything is acked, and the consumer does not stall.

use super::servers::plain;
use crate::kit::*;
use ciborium::Value;
use std::time::{Duration, Instant};
use tokio::task::block_in_place;
use tspi::archive::{AckMode, Handle};
use tspi_testkit::harness::NatsServer;

const SEED: u64 = 21;
const N: u64 = 2_000;

fn tag(id: &str) -> (String, Option<String>, Vec<u8>) {
    let map = Value::Map(
        [
            ("id", Value::Text(id.into())),
            ("ts", Value::Integer(1_700_000_100.into())),
            ("label", Value::Text("Launch".into())),
            ("status", Value::Text("active".into())),
            ("updated_ts", Value::Integer(1_700_000_100.into())),
        ]
        .into_iter()
        .map(|(k, v)| (Value::Text(k.into()), v))
        .collect(),
    );
    let mut body = Vec::new();
    ciborium::into_writer(&map, &mut body).unwrap();
    ("tags.broadcast".into(), Some(id.into()), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_rows_go_to_rejects_and_the_stream_goes_on_explicit_acks() {
    refused_rows(AckMode::Explicit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_rows_go_to_rejects_and_the_stream_goes_on_ack_all() {
    refused_rows(AckMode::All).await;
}

async fn refused_rows(ack: AckMode) {
    let (nats, (_pg, role)) = block_in_place(|| (NatsServer::start(), plain()));
    let nats = nats.expect("nats-server");
    let js = js(&nats.url()).await;
    let dsn = role.dsn.clone();

    // The schema, then rules the archive knows nothing of.
    let mut db = pg_connect(&dsn).await;
    tspi::archive::schema::migrate(&mut db, tspi::archive::Partitioning::Native)
        .await
        .unwrap();
    db.batch_execute(
        "ALTER TABLE tspi_telemetry ADD CONSTRAINT no_sensor_13 CHECK (sensor_id <> 13);
         CREATE FUNCTION refuse_tag() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.id = 'forbidden' THEN
                 RAISE EXCEPTION 'tag % is forbidden here', NEW.id;
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_tag BEFORE INSERT ON tspi_tags
             FOR EACH ROW EXECUTE FUNCTION refuse_tag();",
    )
    .await
    .unwrap();

    // One telemetry message from sensor 13 in the middle of the stream.
    let mut msgs = telemetry(0, N, SEED);
    let (mut f, recv) = random_frame(N, SEED);
    f.sensor_id = 13;
    let bad = tspi::message::Message::encode("tspi", &f, recv);
    msgs.insert(
        N as usize / 2,
        (
            bad.subject.clone(),
            Some(bad.msg_id.clone()),
            bad.body.clone(),
        ),
    );
    let forbidden = tag("forbidden");
    msgs.extend([tag("fine"), forbidden.clone()]);
    let total = msgs.len() as u64;
    assert_eq!(publish_all(&js, &msgs).await, total);

    let mut cfg = config(&nats.url());
    cfg.archive.ack = ack.into();
    let h = Handle::spawn(cfg, dsn.clone());
    wait_rows(&dsn, "tspi_telemetry", N as i64, Duration::from_secs(90)).await;
    wait_rows(&dsn, "tspi_rejects", 2, Duration::from_secs(30)).await;
    wait_rows(&dsn, "tspi_tags", 1, Duration::from_secs(30)).await;
    // Nothing stalls: every message is acked, the consumers are drained.
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.stats.acked.load(std::sync::atomic::Ordering::Relaxed) < total {
        assert!(
            Instant::now() < deadline && !h.is_finished(),
            "acked {:?} of {total}",
            h.stats.counters()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (stream, durable) in [("TSPI", "tspi-archive"), ("TSPI_OPS", "tspi-archive-ops")] {
        let info = js
            .get_stream(stream)
            .await
            .unwrap()
            .consumer_info(durable)
            .await
            .unwrap();
        assert_eq!(
            (info.num_pending, info.num_ack_pending),
            (0, 0),
            "{stream}: consumer drained"
        );
    }
    let account = h.stop().await.unwrap();
    assert_eq!(account.counters.rejected, 2);
    assert!(account.counters.db_errors >= 2, "{:?}", account.counters);
    assert_eq!(account.abandoned_batches, 0);

    check_telemetry(&dsn, 0, N, SEED).await;
    let rows = db
        .query(
            "SELECT stream, subject, msg_id, reason_kind, reason, body FROM tspi_rejects
             ORDER BY stream",
            &[],
        )
        .await
        .unwrap();
    let get = |i: usize| {
        let r = &rows[i];
        (
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, Option<String>>(2),
            r.get::<_, String>(3),
            r.get::<_, String>(4),
            r.get::<_, Vec<u8>>(5),
        )
    };
    let (stream, subject, msg_id, kind, reason, body) = get(0);
    assert_eq!(stream, "TSPI");
    assert_eq!(subject, bad.subject);
    assert_eq!(msg_id.as_deref(), Some(bad.msg_id.as_str()));
    assert_eq!(kind, "database");
    assert!(
        reason.contains("23514") && reason.contains("no_sensor_13"),
        "{reason}"
    );
    assert_eq!(body, bad.body);
    let (stream, subject, msg_id, kind, reason, body) = get(1);
    assert_eq!(stream, "TSPI_OPS");
    assert_eq!(subject, "tags.broadcast");
    assert_eq!(msg_id.as_deref(), Some("forbidden"));
    assert_eq!(kind, "database");
    assert!(
        reason.contains("P0001") && reason.contains("tag forbidden is forbidden here"),
        "{reason}"
    );
    assert_eq!(body, forbidden.2);
}
