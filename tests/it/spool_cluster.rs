//! Leader loss in a three-node JetStream cluster (issue 16): `TSPI` with
//! three replicas, the stream leader's server killed mid-feed and brought
//! back later: every datagram stored once, none lost; how long publishing
//! stalled is printed (the chaos report's figure).

use crate::spool::{Chaos, config, ids, send_range, stored_ids_counting, wait_stored, watch_stall};
use std::time::{Duration, Instant};
use tokio::task::block_in_place;
use tspi::config::PublishMode;
use tspi::ingest;
use tspi_testkit::harness::NatsCluster;

/// The stream leader's server name.
async fn leader(url: &[String]) -> Option<String> {
    let client = async_nats::connect(url.to_vec()).await.ok()?;
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream("TSPI").await.ok()?;
    s.info().await.ok()?.cluster.as_ref()?.leader.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_leader_killed_mid_feed_loses_nothing_and_stores_each_once() {
    leader_killed(PublishMode::Fast).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_leader_killed_mid_feed_loses_nothing_and_stores_each_once_pipelined() {
    leader_killed(PublishMode::Pipelined).await;
}

async fn leader_killed(mode: PublishMode) {
    let mut cluster = block_in_place(|| NatsCluster::start(3)).expect("start cluster");
    let urls = cluster.urls();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&urls[0], dir.path(), mode);
    cfg.nats.servers = urls.clone();
    cfg.stream.replicas = 3;
    let handle = ingest::Handle::spawn(cfg, Duration::from_secs(60))
        .await
        .expect("ingest started");
    let addr = handle.addrs[0];
    // 2 s at about 20k/s.
    let total = 40_000u64;
    let t0 = Instant::now();
    let feed = tokio::task::spawn_blocking(move || {
        send_range(addr, 0, total);
        t0.elapsed()
    });
    let stall = watch_stall(urls.clone(), total);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let victim = leader(&urls).await.and_then(|l| cluster.index_of(&l));
    let victim = victim.expect("the stream has a leader among our nodes");
    block_in_place(|| cluster.node_mut(victim).kill());
    let fed = feed.await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    block_in_place(|| cluster.node_mut(victim).restart()).expect("restart node");
    let live = &urls[(victim + 1) % urls.len()];
    let stored = wait_stored(live, total, Duration::from_secs(60)).await;
    let stall = stall.await.unwrap();
    let a = tokio::time::timeout(Duration::from_secs(60), handle.stop())
        .await
        .expect("stopped in time")
        .expect("ingest ran");
    eprintln!(
        "leader loss: n{victim} killed; stored {stored} of {total}; longest stall {:.1} s; spooled {}",
        stall.as_secs_f64(),
        a.spool.spooled
    );
    let (got, dups) = stored_ids_counting(live).await;
    let c = &a.counters;
    Chaos {
        scenario: &format!(
            "stream leader killed, three-node cluster, R3 ({})",
            a.publish_mode
        ),
        rate_per_s: total as f64 / fed.as_secs_f64(),
        sent: total,
        stored: got.len() as u64,
        duplicated: dups,
        lost: total - got.intersection(&ids(0..total)).count() as u64,
        counted_drops: c.ring_dropped + c.failed + a.spool.dropped,
        stall,
        catch_up: None,
    }
    .print();
    assert!(a.balanced(), "{a:?}");
    assert_eq!((c.received, c.failed), (total, 0), "{a:?}");
    assert_eq!(c.ring_dropped, 0, "{a:?}");
    assert_eq!(dups, 0, "each once: {a:?}");
    assert_eq!(got, ids(0..total), "none lost: {a:?}");
}
