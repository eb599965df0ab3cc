//! Exactly once across an outage longer than the stream's duplicate
//! window (issue 16): messages published just before nats-server went
//! away, whose acks never came, must not be stored a second time when
//! they are published again after the window has passed.

use crate::spool::{config, ids, send_range, stored_ids, wait_stored};
use std::time::Duration;
use tspi::config::PublishMode;
use tspi::ingest;
use tspi_testkit::harness::NatsServer;

async fn long_outage(mode: PublishMode) {
    let mut server = NatsServer::start().expect("nats-server");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&server.url(), dir.path(), mode);
    // A short window keeps the test short: the outage outlasts it.
    cfg.stream.duplicate_window_s = 2;
    cfg.publish.ack_timeout_ms = 500;
    cfg.publish.retry_backoff_max_ms = 200;
    let handle = ingest::Handle::spawn(cfg, Duration::from_secs(30))
        .await
        .expect("ingest started");
    let addr = handle.addrs[0];
    let total = 40_000u64;
    // About 2 s of traffic; the server goes away in the middle of it,
    // with publishes in flight.
    let feed = tokio::task::spawn_blocking(move || send_range(addr, 0, total));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    server.stop();
    feed.await.unwrap();
    // Away for more than twice the duplicate window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    server.restart().expect("restart nats-server");
    let stored = wait_stored(&server.url(), total, Duration::from_secs(60)).await;
    // Anything published twice would be stored by now too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = tokio::time::timeout(Duration::from_secs(60), handle.stop())
        .await
        .expect("stopped in time")
        .expect("ingest ran");
    assert!(a.balanced(), "{a:?}");
    assert!(stored >= total, "{stored} of {total}: {a:?}");
    // Each once (a second copy fails inside), none lost.
    assert_eq!(stored_ids(&server.url()).await, ids(0..total), "{a:?}");
    assert_eq!(a.counters.failed, 0, "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_past_the_duplicate_window_stores_each_once_fast() {
    long_outage(PublishMode::Fast).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_past_the_duplicate_window_stores_each_once_pipelined() {
    long_outage(PublishMode::Pipelined).await;
}
