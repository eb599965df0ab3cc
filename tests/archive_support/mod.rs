//! Shared by the archive tests: contract traffic published straight into
//! JetStream, and checks of what the database holds.

#![allow(dead_code)] // each test binary uses its own subset

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};
use tspi::codec::{self, Frame, Geocentric, Payload, Spherical};
use tspi::config::Config;
use tspi::jetstream::{StreamSettings, ensure_stream, ops_stream, telemetry_stream};
use tspi::message::{Message, RecvTime, utc_day_ticks};

/// 2023-11-14T22:13:20Z: sends spaced 1.5 s apart cross midnight after
/// ~4,270 messages, so two day partitions get rows in the bigger tests.
pub const BASE_NS: u64 = 1_700_000_000_000_000_000;

/// A deterministic pseudo-random stream of u64s (SplitMix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Message `i`: its frame (both types, every field varied; `status_flags`
/// 0 or 1, which is all the contract body carries) and receive time.
pub fn frame(i: u64, seed: u64) -> (Frame, RecvTime) {
    let mut r = Rng(seed ^ i.wrapping_mul(0x1234_5678_9ABC_DEF1));
    let recv = RecvTime::from_unix_ns(BASE_NS + i * 1_500_000_000 + r.next() % 1_000_000_000);
    let (day, time_ticks) = utc_day_ticks(recv.unix_ns);
    let payload = if i.is_multiple_of(3) {
        Payload::Spherical(Spherical {
            range: r.next() as i32,
            azimuth: r.next() as u32,
            elevation: r.next() as u32,
            azimuth_rate: r.next() as i16,
            elevation_rate: r.next() as i16,
            range_rate: r.next() as i16,
            azimuth_accel: r.next() as i16,
            elevation_accel: r.next() as i16,
            range_accel: r.next() as i16,
        })
    } else {
        Payload::Geocentric(Geocentric {
            x: r.next() as i32,
            y: r.next() as i32,
            z: r.next() as i32,
            vx: r.next() as i16,
            vy: r.next() as i16,
            vz: r.next() as i16,
            ax: r.next() as i16,
            ay: r.next() as i16,
            az: r.next() as i16,
        })
    };
    let f = Frame {
        sensor_id: 100 + (i % 37) as u16,
        day,
        time_ticks,
        status: r.next() as u8,
        status_flags: (r.next() % 2) as u16,
        payload,
    };
    assert_eq!(codec::parse(&f.encode()), Ok(f));
    (f, recv)
}

pub fn settings() -> StreamSettings {
    StreamSettings {
        duplicate_window: Duration::from_secs(30),
        ..StreamSettings::default()
    }
}

pub async fn js(url: &str) -> jetstream::Context {
    let client = async_nats::connect(url).await.expect("connect to nats");
    let js = jetstream::new(client);
    ensure_stream(
        &js,
        telemetry_stream("tspi", &settings()),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    ensure_stream(&js, ops_stream(&settings()), Duration::from_secs(10))
        .await
        .unwrap();
    js
}

/// Publish `(subject, msg_id, body)` messages, 512 acks in flight; returns
/// how many JetStream stored (not flagged duplicate).
pub async fn publish_all(
    js: &jetstream::Context,
    msgs: &[(String, Option<String>, Vec<u8>)],
) -> u64 {
    let mut stored = 0;
    for chunk in msgs.chunks(512) {
        let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(chunk.len());
        for (subject, id, body) in chunk {
            let mut h = HeaderMap::new();
            if let Some(id) = id {
                h.insert("Nats-Msg-Id", id.as_str());
            }
            acks.push(
                js.publish_with_headers(subject.clone(), h, body.clone().into())
                    .await
                    .expect("publish"),
            );
        }
        for a in acks {
            if !a.await.expect("publish ack").duplicate {
                stored += 1;
            }
        }
    }
    stored
}

/// Telemetry messages `from..to` as the ingest appliance publishes them.
pub fn telemetry(from: u64, to: u64, seed: u64) -> Vec<(String, Option<String>, Vec<u8>)> {
    (from..to)
        .map(|i| {
            let (f, recv) = frame(i, seed);
            let m = Message::encode("tspi", &f, recv);
            (m.subject, Some(m.msg_id), m.body)
        })
        .collect()
}

pub async fn pg_connect(dsn: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(dsn, NoTls)
        .await
        .expect("connect to postgres");
    tokio::spawn(conn);
    client
}

/// Rows in a table (0 if the table does not exist yet).
pub async fn count(dsn: &str, table: &str) -> i64 {
    let Ok((client, conn)) = tokio_postgres::connect(dsn, NoTls).await else {
        return -1;
    };
    tokio::spawn(conn);
    match client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
    {
        Ok(r) => r.get(0),
        Err(_) => 0,
    }
}

/// Poll until `table` has `want` rows (or panic after `within`).
pub async fn wait_rows(dsn: &str, table: &str, want: i64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let n = count(dsn, table).await;
        if n == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{table} has {n} rows after {within:?}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every telemetry row equals the codec's decode of its frame, its `raw`
/// equals the original datagram, and ids are unique: exactly `from..to`.
pub async fn check_telemetry(dsn: &str, from: u64, to: u64, seed: u64) {
    let client = pg_connect(dsn).await;
    let rows = client
        .query(
            "SELECT msg_id, raw, (extract(epoch FROM recv_time) * 1000000)::bigint, recv_epoch_ms,
                    sensor_id, msg_type, day, time_s, status, status_flags,
                    x_m, y_m, z_m, vx_mps, vy_mps, vz_mps, ax_mps2, ay_mps2, az_mps2,
                    range_m, azimuth_deg, elevation_deg, azimuth_rate_dps, elevation_rate_dps,
                    range_rate_mps, azimuth_accel_dps2, elevation_accel_dps2, range_accel_mps2,
                    stream_seq
             FROM tspi_telemetry",
            &[],
        )
        .await
        .unwrap();
    let mut want: BTreeMap<String, (Frame, RecvTime)> = BTreeMap::new();
    for i in from..to {
        let (f, recv) = frame(i, seed);
        let mut id = String::new();
        tspi::message::write_msg_id(&f, &mut id);
        want.insert(id, (f, recv));
    }
    assert_eq!(rows.len(), want.len(), "exactly one row per unique message");
    let mut seen = std::collections::HashSet::new();
    for row in &rows {
        let id: String = row.get(0);
        assert!(seen.insert(id.clone()), "{id} archived twice");
        let (f, recv) = want
            .get(&id)
            .unwrap_or_else(|| panic!("unexpected row {id}"));
        let raw: Vec<u8> = row.get(1);
        assert_eq!(
            raw,
            f.encode().to_vec(),
            "{id}: raw is the original datagram"
        );
        let decoded = codec::parse(&raw).unwrap();
        assert_eq!(&decoded, f);
        assert_eq!(
            row.get::<_, i64>(2),
            recv.epoch_us() as i64,
            "{id}: recv_time"
        );
        assert_eq!(row.get::<_, i64>(3), recv.epoch_ms() as i64);
        assert_eq!(row.get::<_, i32>(4), i32::from(f.sensor_id));
        assert_eq!(row.get::<_, String>(5), f.frame_type().name());
        assert_eq!(row.get::<_, i16>(6), f.day as i16);
        assert_eq!(row.get::<_, f64>(7).to_bits(), f.time_s().to_bits());
        assert_eq!(row.get::<_, i16>(8), i16::from(f.status));
        assert_eq!(row.get::<_, i32>(9), i32::from(f.status_flags));
        let values = f.values();
        let (mine, other) = match f.payload {
            Payload::Geocentric(_) => (10, 19),
            Payload::Spherical(_) => (19, 10),
        };
        for (k, want) in values.iter().enumerate() {
            let v: Option<f64> = row.get(mine + k);
            assert_eq!(
                v.map(f64::to_bits),
                Some(want.to_bits()),
                "{id}: {}",
                f.value_names()[k]
            );
            assert_eq!(row.get::<_, Option<f64>>(other + k), None);
        }
        assert!(row.get::<_, i64>(28) > 0);
    }
}

/// A config for an in-process archiver on these servers.
pub fn config(nats_url: &str) -> Config {
    let mut c = Config::default();
    c.nats.servers = vec![nats_url.to_owned()];
    c.metrics.interval_s = 1;
    c.stream.duplicate_window_s = 30;
    c.archive.batch_len_max = 500;
    c.archive.flush_interval_ms = 50;
    c.archive.ack_wait_s = 3;
    c.archive.retry_backoff_initial_ms = 50;
    c.archive.retry_backoff_max_ms = 500;
    c.archive.partitioning = tspi::archive::Partitioning::Native;
    c
}
