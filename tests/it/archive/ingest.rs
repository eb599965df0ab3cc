//! The whole path with the real appliance: datagrams over loopback UDP into
//! `tspi ingest` (in-process), JetStream, `tspi archive`, PostgreSQL. Every
//! unique datagram is one row whose `raw` is the datagram as sent.

use super::servers::plain;
use crate::kit::*;
use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::block_in_place;
use tspi::archive::Handle;
use tspi::codec;
use tspi_testkit::harness::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_through_ingest_into_the_archive() {
    const N: u64 = 3_000;
    let (nats, (_pg, role)) = block_in_place(|| (NatsServer::start(), plain()));
    let nats = nats.expect("nats-server");
    let mut icfg = tspi::config::Config::default();
    icfg.nats.servers = vec![nats.url()];
    icfg.ingest.udp = vec!["127.0.0.1:0".parse().unwrap()];
    icfg.ingest.backend = tspi::receive::Backend::Recvmmsg;
    icfg.metrics.interval_s = 1;
    let ingest = tspi::ingest::Handle::spawn(icfg, Duration::from_secs(30))
        .await
        .expect("ingest started");
    let to = ingest.addrs[0];
    let t0 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;

    // Unique frames (status_flags 0 or 1, all a body carries), by msg id;
    // every 50th sent twice, as a redundant sender would.
    let mut sent: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..N {
        let (f, _) = random_frame(i, 99);
        let d = f.encode().to_vec();
        let mut id = String::new();
        tspi::message::write_msg_id(&f, &mut id);
        sock.send_to(&d, to).unwrap();
        if i % 50 == 0 {
            sock.send_to(&d, to).unwrap();
        }
        assert!(sent.insert(id, d).is_none());
        if i % 200 == 199 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let archiver = Handle::spawn(config(&nats.url()), role.dsn.clone());
    wait_rows(
        &role.dsn,
        "tspi_telemetry",
        N as i64,
        Duration::from_secs(120),
    )
    .await;
    let account = ingest.stop().await.expect("ingest ran");
    assert_eq!(account.counters.acked, N + N / 50);
    assert_eq!(account.counters.duplicate, N / 50);
    let t1 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let a = archiver.stop().await.expect("archiver ran");
    assert_eq!(a.counters.telemetry_rows, N);

    let client = pg_connect(&role.dsn).await;
    let rows = client
        .query(
            "SELECT msg_id, raw, (extract(epoch FROM recv_time) * 1000000)::bigint, recv_epoch_ms,
                    time_s, coalesce(x_m, range_m)
             FROM tspi_telemetry",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len() as u64, N);
    for r in &rows {
        let id: String = r.get(0);
        let raw: Vec<u8> = r.get(1);
        assert_eq!(Some(&raw), sent.get(&id), "{id}: raw is the datagram sent");
        let f = codec::parse(&raw).unwrap();
        assert_eq!(r.get::<_, f64>(4).to_bits(), f.time_s().to_bits());
        assert_eq!(r.get::<_, f64>(5).to_bits(), f.values()[0].to_bits());
        let recv_us: i64 = r.get(2);
        assert!(
            (t0..=t1).contains(&recv_us),
            "{id}: received during the test"
        );
        assert!((recv_us / 1000 - r.get::<_, i64>(3)).abs() <= 1);
    }
}
