//! The channels service under abuse, against a real nats-server (issue 13,
//! items 2 and 3): an over-long client id is refused and the service's
//! connection stays up; a private replay is stopped by its owner only; a
//! flood of invented client ids is rate-limited and a real client still
//! gets a slot; group control needs the operator token when one is
//! configured.

use crate::channels::Running;
use crate::kit::*;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tspi::replay::ChannelsConfig;
use tspi::replay::channels::{
    DirectoryEntry, GroupReplayRequest, Kind, PrivateReplayRequest, ReplaySpec,
    SUBJECT_PRIVATE_REQ, to_cbor,
};
use tspi::replay::service;

/// An operator token as a test configures it.
const TOKEN: &str = "operator-token-for-tests-0001";

/// Connections the service's client has made (a reconnect loop shows here).
fn connections(svc: &Running) -> u64 {
    svc.client.statistics().connects.load(Relaxed)
}

fn iso(ns: u64) -> String {
    String::from_utf8(tspi::message::RecvTime::from_unix_ns(ns).iso().to_vec()).unwrap()
}

fn spec() -> ReplaySpec {
    ReplaySpec {
        start: Some(iso(T0_NS)),
        rate: 1.0,
        ..ReplaySpec::default()
    }
}

fn private(client_id: &str, session_id: &str) -> PrivateReplayRequest {
    PrivateReplayRequest {
        kind: "PrivateReplayRequest".into(),
        client_id: client_id.into(),
        session_id: session_id.into(),
        spec: Some(spec()),
    }
}

/// A NATS server with a 30 s recording in `TSPI`, so replays keep running.
async fn server() -> (
    tspi_testkit::harness::NatsServer,
    async_nats::Client,
    async_nats::jetstream::Context,
) {
    let (nats, client, js) = nats_with_streams().await;
    publish_recording(&js, &recording(&even(300, 100_000_000))).await;
    (nats, client, js)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_character_client_id_is_refused_and_the_service_keeps_serving() {
    let (nats, client, _js) = server().await;
    let svc = Running::start(&nats.url(), ChannelsConfig::default()).await;
    let connects = connections(&svc);

    let long = "x".repeat(10_000);
    let answer = service::private_request(&client, &private(&long, "s1"), WAIT)
        .await
        .unwrap();
    assert!(!answer.ok, "{answer:?}");
    assert_eq!(answer.reason.as_deref(), Some("identifier"));
    let error = answer.error.unwrap();
    assert!(error.contains("10000 bytes"), "{error}");
    assert!(error.len() < 200, "the refusal echoes the id: {error}");
    // Other shapes that must never become a subject.
    for (c, s) in [
        ("alice", "a.b"),
        ("a>", "s1"),
        ("alice", "s 1"),
        ("alice", &long),
    ] {
        let a = service::private_request(&client, &private(c, s), WAIT)
            .await
            .unwrap();
        assert_eq!(a.reason.as_deref(), Some("identifier"), "{c:?} {s:?}");
    }

    // The service still serves others, on the connection it started with.
    let a = service::private_request(&client, &private("alice", "s1"), WAIT)
        .await
        .unwrap();
    assert!(a.ok, "{a:?}");
    let dir = service::list_channels(&client, WAIT).await.unwrap();
    assert_eq!(dir.len(), 2, "{dir:?}");
    assert_eq!(dir[1].channel_id, "client.alice.s1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(connections(&svc), connects, "the service reconnected");
    assert_eq!(svc.stats.refused("identifier"), 5);
    assert_eq!(svc.stats.refused_total(), 5);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_from_another_client_is_refused() {
    let (nats, client, _js) = server().await;
    let svc = Running::start(&nats.url(), ChannelsConfig::default()).await;
    let a = service::private_request(&client, &private("alice", "s1"), WAIT)
        .await
        .unwrap();
    assert!(a.ok, "{a:?}");

    // Bob through the operator's stop: refused, with a reason.
    let e = service::stop_group_replay(&client, "client.alice.s1", None, WAIT)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("refused"), "{e}");
    // Bob's own stop names his channel only.
    let mut stop = private("bob", "s1");
    stop.kind = "PrivateReplayStop".into();
    stop.spec = None;
    assert!(
        service::private_request(&client, &stop, WAIT)
            .await
            .unwrap()
            .ok
    );
    let dir = service::list_channels(&client, WAIT).await.unwrap();
    assert_eq!(dir.len(), 2, "alice's replay was stopped: {dir:?}");
    assert_eq!(dir[1].channel_id, "client.alice.s1");
    assert_eq!(svc.stats.refused("not_owner"), 1);

    // Alice stops hers.
    let mut stop = private("alice", "s1");
    stop.kind = "PrivateReplayStop".into();
    stop.spec = None;
    assert!(
        service::private_request(&client, &stop, WAIT)
            .await
            .unwrap()
            .ok
    );
    let dir = service::list_channels(&client, WAIT).await.unwrap();
    assert_eq!(dir, [DirectoryEntry::livestream()]);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_client_ids_is_rate_limited_and_a_real_client_gets_a_slot() {
    let (nats, client, _js) = server().await;
    let cfg = ChannelsConfig {
        requests_burst: 4,
        requests_per_min: 120,
        ..ChannelsConfig::default()
    };
    let svc = Running::start(&nats.url(), cfg).await;

    // 2,000 requests with distinct client ids, as fast as one connection
    // sends them, not waiting for answers.
    let t = std::time::Instant::now();
    for i in 0..2_000 {
        let req = private(&format!("flood{i}"), "s1");
        client
            .publish(SUBJECT_PRIVATE_REQ, to_cbor(&req).into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    // The service read them all (each refused or started).
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let s = svc.stats.load();
        if svc.stats.refused_total() + s.privates_started >= 2_000 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = t.elapsed().as_secs_f64();
    let started = svc.stats.load().privates_started;
    // The burst, then 2 a second.
    assert!(
        (started as f64) <= 4.0 + 2.0 * elapsed + 1.0,
        "{started} started in {elapsed:.1} s"
    );
    assert!(svc.stats.refused("rate_overall") >= 2_000 - started);

    // A real client retries and gets a slot within seconds.
    let mut answer = None;
    for _ in 0..40 {
        let a = service::private_request(&client, &private("alice", "s1"), WAIT)
            .await
            .unwrap();
        if a.ok {
            answer = Some(a);
            break;
        }
        assert_eq!(a.reason.as_deref(), Some("rate_overall"), "{a:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(answer.is_some(), "alice never got a slot");
    let dir = service::list_channels(&client, WAIT).await.unwrap();
    assert!(dir.iter().any(|e| e.channel_id == "client.alice.s1"));
    assert!(dir.iter().filter(|e| e.kind == Kind::PrivateReplay).count() < 32);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_control_needs_the_operator_token_when_one_is_configured() {
    let (nats, client, _js) = server().await;
    let cfg = ChannelsConfig {
        operator_tokens: vec![TOKEN.into()],
        ..ChannelsConfig::default()
    };
    let svc = Running::start(&nats.url(), cfg).await;
    let channel = service::group_channel_id(Some("sortie"), &spec()).unwrap();
    let mut req = GroupReplayRequest::new(&channel, "Sortie".into(), spec());

    let e = service::request_group_replay(&client, &req, WAIT)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("operator token is missing"), "{e}");
    req.operator_token = Some("operator-token-wrong-00000".into());
    let e = service::request_group_replay(&client, &req, WAIT)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not valid"), "{e}");
    assert!(!e.to_string().contains("wrong"), "the token is echoed: {e}");
    assert_eq!(svc.stats.refused("not_operator"), 2);

    // The command line with --operator-token starts it...
    let url = nats.url();
    let tspi = env!("CARGO_BIN_EXE_tspi");
    let run = move |args: Vec<String>| {
        std::process::Command::new(tspi)
            .args(&args)
            .output()
            .unwrap()
    };
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "channels",
            "start-replay",
            "--nats",
            &url,
            "--start",
            &iso(T0_NS),
            "--id",
            "cli",
            "--wait-s",
            "10",
        ]
        .map(String::from)
        .to_vec();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let no_token = args(&[]);
    let out = tokio::task::spawn_blocking(move || run(no_token))
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("operator token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let with_token = args(&["--operator-token", TOKEN]);
    let out = tokio::task::spawn_blocking(move || run(with_token))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ...a stop without the token is refused, with it the replay stops.
    let e = service::stop_group_replay(&client, "replay.cli", None, WAIT)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("operator token"), "{e}");
    let stop = service::stop_group_replay(&client, "replay.cli", Some(TOKEN.into()), WAIT)
        .await
        .unwrap();
    assert_eq!(stop.channel_id, "replay.cli");
    svc.stop().await;
}
