//! The integration tests' kit: contract traffic published straight into
//! JetStream (archive, replay and channels tests), a recorded session, tags,
//! and checks of what the database holds. Frames come from
//! `tspi_testkit::frames`, servers from `tspi_testkit::harness`.

#![allow(dead_code)] // each stage's tests use their own subset

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};
use tspi::codec::{self, Frame, Payload};
use tspi::config::Config;
use tspi::jetstream::{StreamSettings, ensure_stream, ops_stream, replay_stream, telemetry_stream};
use tspi::message::{Message, RecvTime};
pub use tspi_testkit::frames::{BASE_NS, frame, random_frame};
use tspi_testkit::harness::NatsServer;

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
            let (f, recv) = random_frame(i, seed);
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
        let (f, recv) = random_frame(i, seed);
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
    c.archive.fold_interval_ms = 200;
    c.archive.ack_wait_s = 3;
    c.archive.retry_backoff_initial_ms = 50;
    c.archive.retry_backoff_max_ms = 500;
    c.archive.partitioning = tspi::archive::Partitioning::Native;
    c
}

pub const WAIT: Duration = Duration::from_secs(20);

/// 2023-11-14T22:13:20Z: the recording's first receive time.
pub const T0_NS: u64 = BASE_NS;

/// Messages received at `T0_NS + offsets[i]`.
pub fn recording(offsets_ns: &[u64]) -> Vec<(RecvTime, Message, Frame)> {
    offsets_ns
        .iter()
        .enumerate()
        .map(|(i, &o)| {
            let f = frame(i as u64);
            let recv = RecvTime::from_unix_ns(T0_NS + o);
            (recv, Message::encode("tspi", &f, recv), f)
        })
        .collect()
}

/// `n` offsets `step_ns` apart.
pub fn even(n: u64, step_ns: u64) -> Vec<u64> {
    (0..n).map(|i| i * step_ns).collect()
}

/// A real nats-server with the contract's streams, and a client on it.
pub async fn nats_with_streams() -> (NatsServer, async_nats::Client, jetstream::Context) {
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    streams(&js).await;
    (nats, client, js)
}

pub async fn streams(js: &jetstream::Context) {
    let s = StreamSettings::default();
    for cfg in [
        telemetry_stream("tspi", &s),
        replay_stream(&s),
        ops_stream(&s),
    ] {
        ensure_stream(js, cfg, WAIT).await.expect("stream");
    }
}

/// Publish with `Nats-Msg-Id`, pipelined, every ack awaited.
pub async fn publish(js: &jetstream::Context, msgs: &[(String, String, Vec<u8>)]) {
    let mut acks = Vec::new();
    for (subject, id, body) in msgs {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", id.as_str());
        acks.push(
            js.publish_with_headers(subject.clone(), h, body.clone().into())
                .await
                .expect("publish"),
        );
    }
    for a in acks {
        a.await.expect("ack");
    }
}

pub async fn publish_recording(js: &jetstream::Context, rec: &[(RecvTime, Message, Frame)]) {
    let msgs: Vec<_> = rec
        .iter()
        .map(|(_, m, _)| (m.subject.clone(), m.msg_id.clone(), m.body.clone()))
        .collect();
    publish(js, &msgs).await;
}

/// A tag body as the toolkit sends it: `{id, ts, label, status, updated_ts}`.
pub fn tag_body(id: &str, ts_ns: u64, label: &str) -> Vec<u8> {
    use ciborium::Value as V;
    let iso = String::from_utf8(RecvTime::from_unix_ns(ts_ns).iso().to_vec()).unwrap();
    let v = V::Map(vec![
        (V::Text("id".into()), V::Text(id.into())),
        (V::Text("ts".into()), V::Text(iso.clone())),
        (V::Text("label".into()), V::Text(label.into())),
        (V::Text("status".into()), V::Text("active".into())),
        (V::Text("updated_ts".into()), V::Text(iso)),
    ]);
    let mut out = Vec::new();
    ciborium::into_writer(&v, &mut out).unwrap();
    out
}

pub async fn publish_tags(js: &jetstream::Context, tags: &[(&str, u64, &str)]) {
    let msgs: Vec<_> = tags
        .iter()
        .map(|(id, ts, label)| {
            (
                "tags.broadcast".to_owned(),
                (*id).to_owned(),
                tag_body(id, *ts, label),
            )
        })
        .collect();
    publish(js, &msgs).await;
}

/// Messages on a subscription until `n` arrived or `within` passed, with
/// their arrival time (monotonic ns).
pub async fn collect(
    sub: &mut async_nats::Subscriber,
    n: usize,
    within: Duration,
) -> Vec<(u64, async_nats::Message)> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(m)) => out.push((tspi::clock::mono_ns(), m)),
            _ => break,
        }
    }
    out
}

pub fn header(m: &async_nats::Message, name: &str) -> Option<String> {
    m.headers.as_ref()?.get(name).map(|v| v.to_string())
}

/// Messages stored in a stream.
pub async fn stored(js: &jetstream::Context, stream: &str) -> u64 {
    let mut s = js.get_stream(stream).await.expect("stream");
    s.info().await.expect("info").state.messages
}

/// `systemd-analyze verify` of a shipped unit (`text`, written as `name`),
/// with its `/usr/local/bin/tspi` pointed at the binary this build made: it
/// must pass with no warning about the unit. Skips loudly (a failure under
/// `TSPI_TEST_NO_SKIP`) where systemd-analyze is not installed.
pub fn verify_unit(test: &str, name: &str, text: &str) {
    use std::process::Command;
    let probe = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .map_err(|e| format!("systemd-analyze is not installed ({e}); unit file not verified"))
        .and_then(|o| {
            o.status
                .success()
                .then_some(())
                .ok_or_else(|| format!("systemd-analyze --version: {}", o.status))
        });
    if !tspi_testkit::skip::require(test, probe) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(
        &path,
        text.replace("/usr/local/bin/tspi", env!("CARGO_BIN_EXE_tspi")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify {name} failed:\n{stderr}"
    );
    assert!(!stderr.contains(name), "warnings about the unit:\n{stderr}");
}

/// Block until stream `name` exists on the server at `url` (a process under
/// test creates it at start); at most 30 s.
pub fn wait_for_stream(url: &str, name: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let deadline = Instant::now() + Duration::from_secs(30);
        while js.get_stream(name).await.is_err() {
            assert!(Instant::now() < deadline, "stream {name} never created");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// `rec` as archive rows, as the archiver's decoder makes them, their day
/// partitions first; inserted in reverse order when `reverse` (the archive
/// must not depend on insertion order). The schema must exist.
pub async fn insert_telemetry_rows(db: &Client, rec: &[(RecvTime, Message, Frame)], reverse: bool) {
    let rows: Vec<_> = rec
        .iter()
        .map(|(_, m, _)| tspi::archive::rows::decode_telemetry(&m.body, Some(&m.subject)).unwrap())
        .collect();
    let days: Vec<i32> = rows.iter().map(|r| r.day_index()).collect();
    db.execute("SELECT tspi_archive_ensure_partitions($1)", &[&days])
        .await
        .unwrap();
    let mut order: Vec<usize> = (0..rec.len()).collect();
    if reverse {
        order.reverse();
    }
    // (The body does not carry every status bit, so the archiver's frame,
    // not the sender's, is what is stored and what the body is rebuilt from.)
    for k in order {
        let (m, row) = (&rec[k].1, &rows[k]);
        let f = &row.frame;
        db.execute(
            "INSERT INTO tspi_telemetry (recv_time, recv_epoch_ms, sensor_id, msg_type, day, time_s, \
             status, status_flags, raw, msg_id, stream_seq) \
             VALUES ('epoch'::timestamptz + $1::bigint * interval '1 microsecond', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &row.recv_unix_us,
                &row.recv_epoch_ms,
                &i32::from(f.sensor_id),
                &f.frame_type().name(),
                &(f.day as i16),
                &(f64::from(f.time_ticks) / 10_000.0),
                &i16::from(f.status),
                &i32::from(f.status_flags),
                &f.encode().to_vec(),
                &m.msg_id,
                &(k as i64 + 1),
            ],
        )
        .await
        .unwrap();
    }
}

/// A TCP port free on loopback now (bound and released: a server started
/// next takes it).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Collects what a child writes on a pipe, so it never blocks on a full one.
pub fn collect_pipe(
    mut r: impl std::io::Read + Send + 'static,
) -> std::sync::Arc<std::sync::Mutex<String>> {
    let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let o = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            o.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    out
}

/// Kills the child if the test fails before it stops it.
pub struct Running(pub Option<std::process::Child>);

/// `tspi run --json --config <path>`, its stdout and stderr collected as
/// they come.
pub fn spawn_run(
    path: &std::path::Path,
) -> (
    Running,
    std::sync::Arc<std::sync::Mutex<String>>,
    std::sync::Arc<std::sync::Mutex<String>>,
) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args(["run", "--json", "--config"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = collect_pipe(child.stdout.take().unwrap());
    let stderr = collect_pipe(child.stderr.take().unwrap());
    (Running(Some(child)), stdout, stderr)
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The cores this process may use, when `tspi run` can be tested here (it
/// needs a core beside the receive core); else `test` is skipped loudly
/// and `None`.
pub fn run_cores(test: &str) -> Option<Vec<usize>> {
    let cores: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    tspi_testkit::skip::require(
        test,
        (cores.len() >= 2).then_some(()).ok_or_else(|| {
            format!("tspi run needs a core beside the receive core; this process may use {cores:?}")
        }),
    )
    .then_some(cores)
}
