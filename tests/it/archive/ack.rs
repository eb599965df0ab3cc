//! `archive.ack = "auto"` (the default), against real servers: a new durable
//! gets ack policy all; one that exists keeps its policy (a policy cannot
//! change), so an archive upgraded from the explicit default goes on as it
//! was; an explicit setting that contradicts the consumer is refused with a
//! message that names the way out.

use super::servers::plain;
use crate::kit::*;
use async_nats::jetstream::consumer::AckPolicy;
use std::time::Duration;
use tokio::task::block_in_place;
use tspi::archive::{AckSetting, Handle};
use tspi_testkit::harness::NatsServer;

const SEED: u64 = 31;
const N: u64 = 600;

async fn info(
    js: &async_nats::jetstream::Context,
    stream: &str,
    durable: &str,
) -> async_nats::jetstream::consumer::Info {
    js.get_stream(stream)
        .await
        .unwrap()
        .consumer_info(durable)
        .await
        .unwrap()
        .clone()
}

async fn policy(js: &async_nats::jetstream::Context, stream: &str, durable: &str) -> AckPolicy {
    info(js, stream, durable).await.config.ack_policy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_gives_new_durables_ack_all_and_keeps_an_existing_policy() {
    let (nats, (_pg, role)) = block_in_place(|| (NatsServer::start(), plain()));
    let nats = nats.expect("nats-server");
    let js = js(&nats.url()).await;
    let dsn = role.dsn.clone();
    assert_eq!(publish_all(&js, &telemetry(0, N, SEED)).await, N);

    // A new durable, the default setting: ack policy all, every row once.
    let cfg = config(&nats.url());
    assert_eq!(cfg.archive.ack, AckSetting::Auto);
    let h = Handle::spawn(cfg.clone(), dsn.clone());
    wait_rows(&dsn, "tspi_telemetry", N as i64, Duration::from_secs(60)).await;
    let a = h.stop().await.unwrap();
    assert_eq!(a.counters.telemetry_rows, N);
    assert_eq!(policy(&js, "TSPI", "tspi-archive").await, AckPolicy::All);
    assert_eq!(
        policy(&js, "TSPI_OPS", "tspi-archive-ops").await,
        AckPolicy::All
    );

    // An archive that ran with the old default (explicit) on durables of
    // their own: auto keeps explicit, and archives what is new.
    let mut old = config(&nats.url());
    old.archive.durable = "old-archive".into();
    old.archive.durable_ops = "old-archive-ops".into();
    old.archive.ack = AckSetting::Explicit;
    let h = Handle::spawn(old.clone(), dsn.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a = h.stop().await.unwrap();
    assert_eq!(a.counters.telemetry_rows, 0, "all there already: skipped");
    assert_eq!(
        policy(&js, "TSPI", "old-archive").await,
        AckPolicy::Explicit
    );
    assert_eq!(publish_all(&js, &telemetry(N, N + 100, SEED)).await, 100);
    let mut upgraded = old.clone();
    upgraded.archive.ack = AckSetting::Auto;
    let h = Handle::spawn(upgraded, dsn.clone());
    wait_rows(
        &dsn,
        "tspi_telemetry",
        N as i64 + 100,
        Duration::from_secs(60),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while h.stats.counters().acked < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            h.stats.counters()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.stop().await.unwrap();
    assert_eq!(
        policy(&js, "TSPI", "old-archive").await,
        AckPolicy::Explicit
    );
    let drained = info(&js, "TSPI", "old-archive").await;
    assert_eq!((drained.num_pending, drained.num_ack_pending), (0, 0));

    // Asked for all on that explicit consumer: refused, saying how to go on.
    let mut wrong = old;
    wrong.archive.ack = AckSetting::All;
    let e = Handle::spawn(wrong, dsn.clone())
        .stop()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ack policy Explicit") && e.contains("\"auto\""),
        "{e}"
    );
    check_telemetry(&dsn, 0, N + 100, SEED).await;
}
