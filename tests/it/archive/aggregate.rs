//! Tracks per sensor per minute (`tspi_track_minutes`, migration 3): kept
//! by the archiver in the batch's own transaction (migration 4; migration
//! 3's trigger did it before), appended and folded (migration 5), so it
//! counts each row once (duplicates and redeliveries add nothing), before
//! and after a fold, and `tspi_tracks_between` answers exactly what the raw
//! rows say, for any window.

use super::servers::{Flavor, archive_pg};
use crate::kit::*;
use tokio::task::block_in_place;
use tspi::archive::db::Db;
use tspi::archive::proto::Batch;
use tspi::archive::proto::minutes::Minutes;

type Track = (i32, i64, i64, i64);

async fn tracks(client: &tokio_postgres::Client, sql: &str, lo: i64, hi: i64) -> Vec<Track> {
    client
        .query(sql, &[&lo, &hi])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

const RAW: &str = "\
SELECT sensor_id, (extract(epoch FROM min(recv_time)) * 1e6)::bigint,
       (extract(epoch FROM max(recv_time)) * 1e6)::bigint, count(*)
FROM tspi_telemetry
WHERE recv_time >= ('epoch'::timestamptz + $1::bigint * interval '1 microsecond') AND recv_time < ('epoch'::timestamptz + $2::bigint * interval '1 microsecond')
GROUP BY sensor_id ORDER BY sensor_id";

const AGG: &str = "\
SELECT sensor_id, (extract(epoch FROM first_recv) * 1e6)::bigint,
       (extract(epoch FROM last_recv) * 1e6)::bigint, rows
FROM tspi_tracks_between(('epoch'::timestamptz + $1::bigint * interval '1 microsecond'), ('epoch'::timestamptz + $2::bigint * interval '1 microsecond'))";

/// The aggregate holds `rows` rows in all, and agrees with the raw rows on
/// windows with and without whole minutes, ragged and aligned ends.
pub async fn check_track_minutes(dsn: &str, rows: i64) {
    let client = pg_connect(dsn).await;
    let r = client
        .query_one(
            "SELECT (SELECT coalesce(sum(rows), 0)::bigint FROM tspi_track_minutes),
                    (SELECT (extract(epoch FROM min(recv_time)) * 1e6)::bigint FROM tspi_telemetry),
                    (SELECT (extract(epoch FROM max(recv_time)) * 1e6)::bigint FROM tspi_telemetry)",
            &[],
        )
        .await
        .unwrap();
    let (total, lo, hi): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
    assert_eq!(total, rows, "each row counted once in the aggregate");
    let minute = 60_000_000;
    let aligned = lo - lo.rem_euclid(minute) + minute;
    let windows = [
        (lo, hi + 1),
        (lo + 17_300_000, hi - 31_100_000),
        (lo + 5_000_000, lo + 20_000_000),
        (aligned, aligned + 3 * minute),
        (aligned - 1, aligned + minute + 1),
        (lo - 10 * minute, lo - minute),
    ];
    for (a, z) in windows {
        let raw = tracks(&client, RAW, a, z).await;
        let agg = tracks(&client, AGG, a, z).await;
        assert_eq!(agg, raw, "window [{a}, {z}) µs");
    }
    let timeline: i64 = client
        .query_one(
            "SELECT coalesce(sum(rows), 0)::bigint
             FROM tspi_timeline(('epoch'::timestamptz + $1::bigint * interval '1 microsecond'), ('epoch'::timestamptz + $2::bigint * interval '1 microsecond'))",
            &[&lo, &(hi + 1)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(timeline, rows);
}

/// A batch of recorded messages `from..to` (1 s apart: about 2.5 minutes
/// of several sensors), built as the batcher builds one.
fn batch(from: usize, to: usize, redelivered: bool) -> Batch {
    let rec = recording(&even(150, 1_000_000_000));
    let mut copy = tspi::archive::copy::CopyBuf::with_capacity(0);
    let mut minutes = Minutes::default();
    let mut days = Vec::new();
    for (k, (_, m, _)) in rec.iter().enumerate().take(to).skip(from) {
        let row = tspi::archive::rows::decode_telemetry(&m.body, Some(&m.subject)).unwrap();
        copy.telemetry(&row, &m.msg_id, k as u64 + 1);
        minutes.add(row.recv_unix_us, i32::from(row.frame.sensor_id));
        if !days.contains(&row.day_index()) {
            days.push(row.day_index());
        }
    }
    days.sort_unstable();
    Batch {
        copy: bytes::Bytes::from(copy.finish()),
        copy_rows: to - from,
        days,
        minutes: minutes.take(),
        redelivered,
        messages: (to - from) as u64,
        ..Batch::default()
    }
}

/// Each way a batch is written adds only the rows it inserted: a direct
/// COPY (all new: the batcher's minutes), a direct COPY that meets rows
/// already there (the staging path: only the new rows), a redelivered
/// batch of rows all there (nothing). Folds in between (into minutes
/// already folded) and at the end change nothing a reader sees, leave one
/// row per minute and sensor, and nothing appended.
async fn written_once(test: &str, flavor: Flavor) {
    let Some((_pg, role)) = block_in_place(|| archive_pg(test, flavor)) else {
        return;
    };
    let mut db = Db::connect(&role.dsn, &tspi::archive::ArchiveConfig::default())
        .await
        .expect("migrate");
    let w = db.write(&batch(0, 100, false)).await.unwrap();
    assert_eq!(w.telemetry, 100);
    check_track_minutes(&role.dsn, 100).await;
    assert!(db.fold_minutes().await.unwrap() > 0, "appended rows folded");
    check_track_minutes(&role.dsn, 100).await;
    let w = db.write(&batch(50, 150, false)).await.unwrap();
    assert_eq!(w.telemetry, 50, "rows 50..100 were there");
    assert_eq!(db.direct_conflicts, 1);
    let w = db.write(&batch(0, 150, true)).await.unwrap();
    assert_eq!(w.telemetry, 0);
    check_track_minutes(&role.dsn, 150).await;
    assert!(db.fold_minutes().await.unwrap() > 0);
    check_track_minutes(&role.dsn, 150).await;
    let client = pg_connect(&role.dsn).await;
    let r = client
        .query_one(
            "SELECT (SELECT count(*) FROM tspi_track_minutes_folded),
                    (SELECT count(*) FROM (SELECT DISTINCT minute, sensor_id
                                           FROM tspi_track_minutes_folded) k),
                    (SELECT count(*) FROM tspi_track_minutes_recent),
                    (SELECT count(*) FROM tspi_track_minutes)",
            &[],
        )
        .await
        .unwrap();
    let (folded, keys, recent, view): (i64, i64, i64, i64) =
        (r.get(0), r.get(1), r.get(2), r.get(3));
    assert!(folded > 1);
    assert_eq!(
        (folded, recent, view),
        (keys, 0, keys),
        "one row per minute and sensor"
    );
    assert_eq!(db.fold_minutes().await.unwrap(), 0, "nothing left to fold");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_write_path_adds_its_inserted_rows_once() {
    written_once(
        "archive::aggregate::each_write_path_adds_its_inserted_rows_once",
        Flavor::Native,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_write_path_adds_its_inserted_rows_once_timescaledb() {
    written_once(
        "archive::aggregate::each_write_path_adds_its_inserted_rows_once_timescaledb",
        Flavor::Timescaledb,
    )
    .await;
}
