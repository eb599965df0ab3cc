//! Tracks per sensor per minute (`tspi_track_minutes`, migration 3): kept
//! by a trigger in the batch's own transaction, so it counts each row once
//! (duplicates and redeliveries add nothing), and `tspi_tracks_between`
//! answers exactly what the raw rows say, for any window.

use crate::kit::pg_connect;

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
