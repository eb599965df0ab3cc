//! The TimescaleDB part of the archive bench: the archive rate into a
//! hypertable beside native partitions on the same server, and the
//! "what was flying when", timeline and sensor-window queries on the raw
//! rows beside the per-minute aggregate (`tspi_track_minutes`).

use std::time::Instant;
use tokio_postgres::NoTls;

/// Median wall time of `runs` runs of `sql` (with `params`), and the rows
/// of the last run as text (to compare the two sides).
async fn timed(
    c: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    runs: usize,
) -> (f64, Vec<String>) {
    let stmt = c.prepare(sql).await.unwrap();
    let mut times = Vec::new();
    let mut out = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        let rows = c.query(&stmt, params).await.unwrap();
        times.push(t0.elapsed());
        out = rows
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| {
                        r.try_get::<_, i64>(i)
                            .map(|v| v.to_string())
                            .or_else(|_| r.try_get::<_, i32>(i).map(|v| v.to_string()))
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
    }
    times.sort();
    (times[runs / 2].as_secs_f64() * 1e3, out)
}

/// One query, raw and aggregate: median ms each, rows each (must agree).
#[derive(Debug)]
pub struct QueryPair {
    pub name: &'static str,
    pub raw_ms: f64,
    pub agg_ms: f64,
    pub rows: usize,
}

const US: &str = "'epoch'::timestamptz + $1::bigint * interval '1 microsecond'";
const US2: &str = "'epoch'::timestamptz + $2::bigint * interval '1 microsecond'";

/// An airshow day, 2024-05-02 UTC: 24 aircraft, each flying two
/// 40-minute sorties (08:00 + 10 min x aircraft, and 5 h later) and
/// reporting at `hz`: 24 x 2 x 2,400 x `hz` rows, inserted in one statement
/// (the aggregate's trigger sees them all at once) into a fresh database
/// `name` migrated with `partitioning`. Returns its DSN.
pub async fn airshow_day(
    pg: &tspi_testkit::harness::PgCluster,
    name: &str,
    partitioning: tspi::archive::Partitioning,
    hz: u32,
) -> (String, u64, f64) {
    let (c, conn) = tokio_postgres::connect(&pg.dsn(), NoTls).await.unwrap();
    tokio::spawn(conn);
    c.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let dsn = format!("host=127.0.0.1 port={} user=tspi dbname={name}", pg.port());
    let cfg = tspi::archive::ArchiveConfig {
        partitioning,
        ..Default::default()
    };
    let mut db = tspi::archive::db::Db::connect(&dsn, &cfg).await.unwrap();
    db.ensure_days(&[DAY]).await.unwrap();
    drop(db);
    let (c, conn) = tokio_postgres::connect(&dsn, NoTls).await.unwrap();
    tokio::spawn(conn);
    let per_sortie = 2_400 * i64::from(hz);
    let step_us = 1_000_000 / i64::from(hz);
    let t0 = Instant::now();
    let n = c
        .execute(
            "INSERT INTO tspi_telemetry (recv_time, recv_epoch_ms, sensor_id, msg_type, day,
                 time_s, status, status_flags, x_m, y_m, z_m, raw, msg_id, stream_seq)
             SELECT t, (extract(epoch FROM t) * 1000)::bigint, s, 'geocentric', 123, 0, 0, 0,
                    s * 1000.0, i * 2.0, 1500.0, decode(repeat('00', 37), 'hex'),
                    s || '-' || k || '-' || i, 0
             FROM generate_series(0, 23) s, generate_series(0, 1) k,
                  generate_series(0, $1::bigint - 1) i,
                  LATERAL (SELECT timestamptz '2024-05-02 08:00+00'
                                  + (s * 10 + k * 300) * interval '1 minute'
                                  + i * $2::bigint * interval '1 microsecond') x(t)",
            &[&per_sortie, &step_us],
        )
        .await
        .unwrap();
    // Not the archiver's rows: the aggregate gains them by hand (migration
    // 4), then folded as the archiver's fold task would (migration 5).
    c.batch_execute(
        "SELECT tspi_track_minutes_add_rows('-infinity', 'infinity');
         SELECT tspi_track_minutes_fold();",
    )
    .await
    .unwrap();
    let took = t0.elapsed().as_secs_f64();
    c.batch_execute("ANALYZE").await.unwrap();
    (dsn, n, took)
}

/// Migration 3's per-row aggregate trigger, which migration 4 dropped (the
/// archiver appends each batch's minutes now): put back for a run side by
/// side, to measure what it cost.
pub const OLD_TRIGGER: &str = "
CREATE FUNCTION tspi_track_minutes_add() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tspi_track_minutes_folded AS t (minute, sensor_id, rows, first_recv, last_recv)
    SELECT date_bin('1 minute', recv_time, timestamptz '2000-01-01 00:00+00'), sensor_id,
           count(*), min(recv_time), max(recv_time)
    FROM tspi_new_rows
    GROUP BY 1, 2
    ON CONFLICT (minute, sensor_id) DO UPDATE
        SET rows = t.rows + excluded.rows,
            first_recv = least(t.first_recv, excluded.first_recv),
            last_recv = greatest(t.last_recv, excluded.last_recv);
    RETURN NULL;
END
$$;
CREATE TRIGGER tspi_track_minutes_add
    AFTER INSERT ON tspi_telemetry
    REFERENCING NEW TABLE AS tspi_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tspi_track_minutes_add();
";

/// 2024-05-02 in days since 1970-01-01, and its 00:00 UTC in µs.
const DAY: i32 = 19_845;
const DAY_US: i64 = DAY as i64 * 86_400_000_000;
const HOUR_US: i64 = 3_600_000_000;

/// The three queries on an [`airshow_day`] archive.
pub async fn queries(dsn: &str) -> Vec<QueryPair> {
    let (c, conn) = tokio_postgres::connect(dsn, NoTls).await.unwrap();
    tokio::spawn(conn);
    let epoch_us = |col: &str| format!("(extract(epoch FROM {col}) * 1000000)::bigint");
    // One hour, ragged ends: 12:00:17 to 13:00:17.
    let lo = DAY_US + 12 * HOUR_US + 17_000_000;
    let hi = lo + HOUR_US;
    let mut out = Vec::new();
    let raw_flying = format!(
        "SELECT sensor_id, {}, {}, count(*) FROM tspi_telemetry
         WHERE recv_time >= {US} AND recv_time < {US2} GROUP BY sensor_id ORDER BY sensor_id",
        epoch_us("min(recv_time)"),
        epoch_us("max(recv_time)")
    );
    let agg_flying = format!(
        "SELECT sensor_id, {}, {}, rows FROM tspi_tracks_between({US}, {US2})",
        epoch_us("first_recv"),
        epoch_us("last_recv")
    );
    // The whole day, per minute: sensors and rows.
    let (tlo, thi) = (DAY_US, DAY_US + 24 * HOUR_US);
    let raw_timeline = format!(
        "SELECT {}, count(DISTINCT sensor_id), count(*) FROM tspi_telemetry
         WHERE recv_time >= {US} AND recv_time < {US2}
         GROUP BY date_bin('1 minute', recv_time, timestamptz '2000-01-01 00:00+00') ORDER BY 1",
        epoch_us("date_bin('1 minute', recv_time, timestamptz '2000-01-01 00:00+00')")
    );
    let agg_timeline = format!(
        "SELECT {}, sensors, rows FROM tspi_timeline({US}, {US2})",
        epoch_us("minute")
    );
    // One aircraft over four whole hours (09:00 to 13:00).
    let (slo, shi) = (DAY_US + 9 * HOUR_US, DAY_US + 13 * HOUR_US);
    let raw_sensor = format!(
        "SELECT {}, {}, count(*) FROM tspi_telemetry
         WHERE sensor_id = 7 AND recv_time >= {US} AND recv_time < {US2}",
        epoch_us("min(recv_time)"),
        epoch_us("max(recv_time)")
    );
    let agg_sensor = format!(
        "SELECT {}, {}, sum(rows)::bigint FROM tspi_track_minutes
         WHERE sensor_id = 7 AND minute >= {US} AND minute < {US2}",
        epoch_us("min(first_recv)"),
        epoch_us("max(last_recv)")
    );
    for (name, raw, agg, a, z) in [
        (
            "what was flying when (1 h, ragged ends)",
            &raw_flying,
            &agg_flying,
            lo,
            hi,
        ),
        (
            "timeline per minute (the day)",
            &raw_timeline,
            &agg_timeline,
            tlo,
            thi,
        ),
        (
            "one sensor over 4 whole hours",
            &raw_sensor,
            &agg_sensor,
            slo,
            shi,
        ),
    ] {
        let (raw_ms, raw_rows) = timed(&c, raw, &[&a, &z], 5).await;
        let (agg_ms, agg_rows) = timed(&c, agg, &[&a, &z], 5).await;
        assert_eq!(
            agg_rows, raw_rows,
            "{name}: the aggregate agrees with the raw rows"
        );
        assert!(!raw_rows.is_empty(), "{name}");
        out.push(QueryPair {
            name,
            raw_ms,
            agg_ms,
            rows: raw_rows.len(),
        });
    }
    out
}

/// Bytes on disk of the telemetry (heap, indexes, every partition or
/// chunk) and of the aggregate (folded first, as it is once the archiver's
/// fold has run), per row.
pub async fn bytes_per_row(dsn: &str) -> (f64, f64) {
    let (c, conn) = tokio_postgres::connect(dsn, NoTls).await.unwrap();
    tokio::spawn(conn);
    c.batch_execute("SELECT tspi_track_minutes_fold()")
        .await
        .unwrap();
    c.batch_execute("VACUUM tspi_track_minutes_recent")
        .await
        .unwrap();
    let r = c
        .query_one(
            "SELECT (SELECT sum(pg_total_relation_size(c.oid))::float8
                     FROM pg_class c
                     WHERE c.oid IN (SELECT inhrelid FROM pg_inherits
                                     WHERE inhparent = 'tspi_telemetry'::regclass)),
                    (SELECT count(*)::float8 FROM tspi_telemetry),
                    (pg_total_relation_size('tspi_track_minutes_folded')
                     + pg_total_relation_size('tspi_track_minutes_recent'))::float8",
            &[],
        )
        .await
        .unwrap();
    let (bytes, rows, agg): (Option<f64>, f64, f64) = (r.get(0), r.get(1), r.get(2));
    (bytes.unwrap_or(0.0) / rows.max(1.0), agg / rows.max(1.0))
}
