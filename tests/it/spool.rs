//! The disk spool against a real nats-server (issue 16): an outage longer
//! than the rings hold loses nothing and stores each datagram once; a
//! SIGKILLed ingest's spool is delivered after a restart, a torn tail
//! record skipped and counted.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use tspi::config::{Config, PublishMode};
use tspi::ingest::{self, Account};
use tspi::receive::Backend;
use tspi_testkit::frames::frame;
use tspi_testkit::harness::NatsServer;

/// Small rings, so a short outage overflows them.
const RING: usize = 2048;

pub fn config(nats_url: &str, spool: &std::path::Path, mode: PublishMode) -> Config {
    let mut c = Config::default();
    c.nats.servers = vec![nats_url.to_owned()];
    c.ingest.udp = vec!["127.0.0.1:0".parse().unwrap()];
    c.ingest.backend = Backend::Auto;
    c.ingest.workers = 1;
    c.ingest.ring_capacity = RING;
    c.metrics.interval_s = 1;
    c.publish.mode = mode;
    c.publish.drain_timeout_s = 20;
    c.publish.ack_timeout_ms = 1000;
    c.publish.retry_backoff_max_ms = 500;
    c.spool.dir = Some(spool.to_owned());
    c.spool.segment_bytes = 1 << 16;
    c.spool.drain_rate_per_s = 20_000;
    c
}

/// Frames `from..to` as datagrams to `to`, about 20k/s.
pub fn send_range(to: SocketAddr, from: u64, until: u64) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in from..until {
        s.send_to(&frame(i).encode(), to).unwrap();
        if (i + 1).is_multiple_of(100) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The stream's message ids, each once (a second copy fails the test).
pub async fn stored_ids(url: &str) -> BTreeSet<String> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("TSPI").await.unwrap();
    let info = stream.info().await.unwrap();
    let mut out = BTreeSet::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        let Ok(m) = stream.get_raw_message(seq).await else {
            continue;
        };
        let id = m.headers.get("Nats-Msg-Id").unwrap().to_string();
        assert!(out.insert(id.clone()), "id {id} stored twice");
    }
    out
}

/// Messages in `TSPI` now (0 when the server does not answer).
pub async fn stream_messages(url: &str) -> u64 {
    let Ok(client) = async_nats::connect(url).await else {
        return 0;
    };
    let js = async_nats::jetstream::new(client);
    match js.get_stream("TSPI").await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Wait (at most `within`) until the stream holds `n` messages.
pub async fn wait_stored(url: &str, n: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let m = stream_messages(url).await;
        if m >= n || Instant::now() > deadline {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn ids(range: std::ops::Range<u64>) -> BTreeSet<String> {
    range
        .map(|i| {
            let mut s = String::new();
            tspi::message::write_msg_id(&frame(i), &mut s);
            s
        })
        .collect()
}

async fn outage(mode: PublishMode) -> Account {
    let mut server = NatsServer::start().expect("nats-server");
    let dir = tempfile::tempdir().unwrap();
    let handle = ingest::Handle::spawn(
        config(&server.url(), dir.path(), mode),
        Duration::from_secs(30),
    )
    .await
    .expect("ingest started");
    let addr = handle.addrs[0];
    let total = 12_000u64;
    let send = |from, to| tokio::task::spawn_blocking(move || send_range(addr, from, to));
    send(0, 2_000).await.unwrap();
    server.kill();
    // Three times what the ring holds, during the outage.
    send(2_000, 8_000).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart().expect("restart nats-server");
    send(8_000, total).await.unwrap();
    let stored = wait_stored(&server.url(), total, Duration::from_secs(60)).await;
    let a = tokio::time::timeout(Duration::from_secs(60), handle.stop())
        .await
        .expect("stopped in time")
        .expect("ingest ran");
    assert_eq!(stored, total, "{a:?}");
    assert!(a.balanced(), "{a:?}");
    let c = &a.counters;
    assert_eq!(
        (c.received, c.ring_dropped, c.failed),
        (total, 0, 0),
        "{a:?}"
    );
    assert_eq!(c.acked, total, "{a:?}");
    let s = &a.spool;
    assert!(s.spooled > 0, "the outage overflowed the ring: {a:?}");
    assert_eq!((s.drained, s.held, s.dropped), (s.spooled, 0, 0), "{a:?}");
    assert_eq!(stored_ids(&server.url()).await, ids(0..total), "each once");
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_past_the_rings_loses_nothing_with_a_spool_fast() {
    outage(PublishMode::Fast).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_past_the_rings_loses_nothing_with_a_spool_pipelined() {
    outage(PublishMode::Pipelined).await;
}
