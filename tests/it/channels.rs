//! `tspi channels` against a real nats-server: group replay start/stop
//! messages as the contract has them, the directory, private replays that
//! expire, the livestream, and the operator's command line.

use crate::kit::*;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tspi::replay::ChannelsConfig;
use tspi::replay::channels::{
    DirectoryEntry, GroupReplayRequest, Kind, PrivateReplayRequest, ReplaySpec, SUBJECT_CTRL,
};
use tspi::replay::service::{self, ServiceOptions, ServiceStats};
use tspi_testkit::harness::NatsServer;

/// The channels service on its own connection, which tests may watch
/// (`channels_hardening` counts its reconnects).
pub(crate) struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub(crate) stats: Arc<ServiceStats>,
    pub(crate) client: async_nats::Client,
}

impl Running {
    pub(crate) async fn start(url: &str, channels: ChannelsConfig) -> Running {
        let client = async_nats::connect(url).await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stats = Arc::new(ServiceStats::default());
        let opts = ServiceOptions {
            channels,
            streams: Default::default(),
        };
        let task = tokio::spawn(service::serve(client.clone(), opts, stats.clone(), async {
            let _ = rx.await;
        }));
        // Ready once the directory answers.
        for _ in 0..100 {
            if service::list_channels(&client, Duration::from_millis(200))
                .await
                .is_ok()
            {
                break;
            }
        }
        Running {
            stop: Some(tx),
            task,
            stats,
            client,
        }
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("service stopped in time")
            .unwrap()
            .unwrap();
    }
}

fn keys(v: &ciborium::Value) -> Vec<String> {
    v.as_map()
        .unwrap()
        .iter()
        .map(|(k, _)| k.as_text().unwrap().to_owned())
        .collect()
}

fn text(v: &ciborium::Value, key: &str) -> String {
    v.as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .and_then(|(_, v)| v.as_text())
        .unwrap_or_else(|| panic!("no text {key}"))
        .to_owned()
}

fn spec(start: &str) -> ReplaySpec {
    ReplaySpec {
        start: Some(start.into()),
        rate: 1.0,
        ..ReplaySpec::default()
    }
}

fn iso(ns: u64) -> String {
    String::from_utf8(tspi::message::RecvTime::from_unix_ns(ns).iso().to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_replay_start_stop_and_directory_follow_the_contract() {
    let (nats, client, js) = nats_with_streams().await;
    publish_recording(&js, &recording(&even(60, 10_000_000))).await; // 0.6 s
    let svc = Running::start(&nats.url(), ChannelsConfig::default()).await;

    let mut ctrl = client.subscribe(SUBJECT_CTRL).await.unwrap();
    let mut channel_sub = client
        .subscribe("tspi.channel.replay.sortie-7")
        .await
        .unwrap();
    client.flush().await.unwrap();
    let s = spec(&iso(T0_NS));
    let channel = service::group_channel_id(Some("Sortie 7"), &s).unwrap();
    let req = GroupReplayRequest::new(&channel, "Sortie 7".into(), s);
    let start = service::request_group_replay(&client, &req, WAIT)
        .await
        .unwrap();
    assert_eq!(start.channel_id, "replay.sortie-7");

    // The directory while it runs: livestream first, then the replay.
    let dir = service::list_channels(&client, WAIT).await.unwrap();
    assert_eq!(dir.len(), 2, "{dir:?}");
    assert_eq!(dir[0], DirectoryEntry::livestream());
    assert_eq!(dir[1].channel_id, "replay.sortie-7");
    assert_eq!(dir[1].subject, "tspi.channel.replay.sortie-7");
    assert_eq!(dir[1].kind, Kind::GroupReplay);
    assert_eq!(dir[1].stream, "TSPI_REPLAY");
    assert_eq!(dir[1].identifier.as_deref(), Some(iso(T0_NS).as_str()));

    let got = collect(&mut channel_sub, 60, WAIT).await;
    assert_eq!(got.len(), 60);

    // On the wire: the request, GroupReplayStart, then (end of data)
    // GroupReplayStop — exactly the contract's keys.
    let mut seen = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(WAIT, ctrl.next()).await {
        let v: ciborium::Value = ciborium::from_reader(m.payload.as_ref()).unwrap();
        let t = text(&v, "type");
        seen.push(v);
        if t == "GroupReplayStop" {
            break;
        }
    }
    let start_msg = seen
        .iter()
        .find(|v| text(v, "type") == "GroupReplayStart")
        .unwrap();
    assert_eq!(
        keys(start_msg),
        ["type", "channel_id", "display_name", "identifier", "stream"]
    );
    assert_eq!(text(start_msg, "channel_id"), "replay.sortie-7");
    assert_eq!(text(start_msg, "display_name"), "Sortie 7");
    assert_eq!(text(start_msg, "identifier"), iso(T0_NS));
    assert_eq!(text(start_msg, "stream"), "TSPI_REPLAY");
    let stop_msg = seen.last().unwrap();
    assert_eq!(keys(stop_msg), ["type", "channel_id"]);
    assert_eq!(text(stop_msg, "type"), "GroupReplayStop");
    assert_eq!(text(stop_msg, "channel_id"), "replay.sortie-7");

    // Cleaned up: only the livestream is left.
    let dir = service::list_channels(&client, WAIT).await.unwrap();
    assert_eq!(dir, [DirectoryEntry::livestream()]);

    // A second request for a bad window is refused with a reason.
    let mut bad = req.clone();
    bad.channel_id = "replay.bad".into();
    bad.spec.start = Some("yesterday".into());
    let e = service::request_group_replay(&client, &bad, WAIT)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("RFC 3339"), "{e}");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_stops_a_group_replay_from_the_command_line() {
    let (nats, client, js) = nats_with_streams().await;
    publish_recording(&js, &recording(&even(300, 100_000_000))).await; // 30 s
    let svc = Running::start(&nats.url(), ChannelsConfig::default()).await;
    let url = nats.url();
    let tspi = env!("CARGO_BIN_EXE_tspi");
    let run = move |args: Vec<String>| {
        let out = std::process::Command::new(tspi)
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let start_args: Vec<String> = [
        "channels",
        "start-replay",
        "--nats",
        &url,
        "--start",
        &iso(T0_NS),
        "--name",
        "Long",
    ]
    .map(String::from)
    .to_vec();
    let out = tokio::task::spawn_blocking(move || run(start_args))
        .await
        .unwrap();
    let start: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(start["type"], "GroupReplayStart");
    assert_eq!(start["channel_id"], "replay.20231114T221320Z");

    let list_args: Vec<String> = ["channels", "list", "--nats", &url]
        .map(String::from)
        .to_vec();
    let out = tokio::task::spawn_blocking(move || run(list_args))
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["channel_id"], "livestream");
    assert_eq!(lines[1]["channel_id"], "replay.20231114T221320Z");
    assert_eq!(lines[1]["kind"], "group_replay");

    let stop_args: Vec<String> = [
        "channels",
        "stop-replay",
        "--nats",
        &url,
        "--channel",
        "replay.20231114T221320Z",
    ]
    .map(String::from)
    .to_vec();
    let t = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || run(stop_args))
        .await
        .unwrap();
    let stop: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        stop,
        serde_json::json!({"type": "GroupReplayStop", "channel_id": "replay.20231114T221320Z"})
    );
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "stopped long before its 30 s end"
    );
    let dir = service::list_channels(&client, WAIT).await.unwrap();
    assert_eq!(dir, [DirectoryEntry::livestream()]);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_channel_expires_without_heartbeats() {
    let (nats, client, js) = nats_with_streams().await;
    publish_recording(&js, &recording(&even(200, 100_000_000))).await; // 20 s
    let cfg = ChannelsConfig {
        private_idle_s: 1,
        ..ChannelsConfig::default()
    };
    let svc = Running::start(&nats.url(), cfg).await;
    let req = PrivateReplayRequest {
        kind: "PrivateReplayRequest".into(),
        client_id: "alice".into(),
        session_id: "s1".into(),
        spec: Some(ReplaySpec {
            rate: 2.0,
            ..spec(&iso(T0_NS))
        }),
    };
    let mut sub = client
        .subscribe("tspi.channel.client.alice.s1")
        .await
        .unwrap();
    client.flush().await.unwrap();
    let answer = service::private_request(&client, &req, WAIT).await.unwrap();
    assert!(answer.ok, "{answer:?}");
    assert_eq!(
        answer.subject.as_deref(),
        Some("tspi.channel.client.alice.s1")
    );
    // The same session twice is refused.
    assert!(
        !service::private_request(&client, &req, WAIT)
            .await
            .unwrap()
            .ok
    );

    // Heartbeats keep it for 2.5 s (longer than the 1 s idle limit).
    let mut machine = tspi::replay::client_state::ClientMachine::default();
    machine.apply(tspi::replay::client_state::Event::StartPrivate(
        tspi::replay::channels::ChannelId::parse("client.alice.s1").unwrap(),
    ));
    for _ in 0..10 {
        let hb = machine.heartbeat("alice", iso(T0_NS));
        client
            .publish(
                "tspi.ops.status",
                tspi::replay::channels::to_cbor(&hb).into(),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let dir = service::list_channels(&client, WAIT).await.unwrap();
    assert_eq!(dir.len(), 2, "still there while heartbeats come: {dir:?}");
    assert_eq!(dir[0], DirectoryEntry::livestream());
    assert_eq!(dir[1].kind, Kind::PrivateReplay);
    assert_eq!(dir[1].channel_id, "client.alice.s1");
    // Then silence: gone within idle + the 250 ms check.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let dir = service::list_channels(&client, WAIT).await.unwrap();
    assert_eq!(dir, [DirectoryEntry::livestream()], "expired");
    assert_eq!(
        svc.stats
            .privates_expired
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The replay stopped: at 2x for ~5 s at most ~50 of 200 messages came,
    // and nothing more arrives.
    let got = collect(&mut sub, 200, Duration::from_millis(1_500)).await;
    assert!(
        got.len() < 120,
        "{} messages: the replay kept going",
        got.len()
    );
    let more = collect(&mut sub, 1, Duration::from_millis(800)).await;
    assert!(more.is_empty(), "still sending after expiry");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_livestream_carries_what_the_stream_stores_once() {
    let (nats, client, js) = nats_with_streams().await;
    let svc = Running::start(&nats.url(), ChannelsConfig::default()).await;
    let mut live = client.subscribe("tspi.channel.livestream").await.unwrap();
    client.flush().await.unwrap();
    // Wait for LIVE_MAIN.
    let stream = js.get_stream("TSPI").await.unwrap();
    for _ in 0..100 {
        if stream.consumer_info("LIVE_MAIN").await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rec = recording(&even(50, 1_000_000));
    publish_recording(&js, &rec).await;
    // A redundant ingest box sends the same messages again: stored once,
    // delivered once.
    publish_recording(&js, &rec).await;
    let got = collect(&mut live, 100, Duration::from_secs(3)).await;
    assert_eq!(got.len(), 50, "each stored message once on the stage");
    for ((_, m), (_, orig, _)) in got.iter().zip(&rec) {
        assert_eq!(m.payload.as_ref(), orig.body.as_slice());
        assert_eq!(header(m, "Nats-Msg-Id").unwrap(), orig.msg_id);
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_starts_a_group_replay_around_its_moment() {
    let (nats, client, js) = nats_with_streams().await;
    // 5 s of messages, 100 ms apart; the tag at 2.5 s.
    publish_recording(&js, &recording(&even(50, 100_000_000))).await;
    publish_tags(&js, &[("Merge Point", T0_NS + 2_500_000_000, "Merge")]).await;
    let cfg = ChannelsConfig {
        tag_before_s: 1,
        tag_after_s: 1,
        ..ChannelsConfig::default()
    };
    let svc = Running::start(&nats.url(), cfg).await;
    let s = ReplaySpec {
        tag: Some("Merge Point".into()),
        rate: 4.0,
        ..ReplaySpec::default()
    };
    let channel = service::group_channel_id(None, &s).unwrap();
    assert_eq!(channel.to_string(), "replay.merge-point");
    let mut sub = client.subscribe(channel.subject()).await.unwrap();
    let mut ctrl = client.subscribe(SUBJECT_CTRL).await.unwrap();
    client.flush().await.unwrap();
    let req = GroupReplayRequest::new(&channel, "Merge".into(), s);
    let start = service::request_group_replay(&client, &req, WAIT)
        .await
        .unwrap();
    assert_eq!(start.identifier, "Merge Point");
    // 1.5 s ..= 3.5 s: messages 15..=35.
    let got = collect(&mut sub, 21, WAIT).await;
    assert_eq!(got.len(), 21);
    let first: tspi::message::Record = ciborium::from_reader(got[0].1.payload.as_ref()).unwrap();
    assert_eq!(first.recv_epoch_ms, (T0_NS + 1_500_000_000) / 1_000_000);
    loop {
        let m = tokio::time::timeout(WAIT, ctrl.next())
            .await
            .unwrap()
            .unwrap();
        if let Ok(tspi::replay::channels::Ctrl::Stop(s)) =
            tspi::replay::channels::Ctrl::decode(&m.payload)
        {
            assert_eq!(s.channel_id, "replay.merge-point");
            break;
        }
    }
    assert!(
        collect(&mut sub, 1, Duration::from_millis(300))
            .await
            .is_empty()
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jetstream_native_mode_delivers_and_ends() {
    let (nats, client, js) = nats_with_streams().await;
    // Stored 20 ms apart: the server replays by store time.
    let rec = recording(&even(15, 20_000_000));
    for r in rec.chunks(1) {
        publish_recording(&js, r).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let svc = Running::start(&nats.url(), ChannelsConfig::default()).await;
    let mut sub = client
        .subscribe("tspi.channel.replay.native")
        .await
        .unwrap();
    let mut ctrl = client.subscribe(SUBJECT_CTRL).await.unwrap();
    client.flush().await.unwrap();
    let req = GroupReplayRequest {
        kind: "GroupReplayRequest".into(),
        channel_id: "replay.native".into(),
        display_name: "Native".into(),
        spec: ReplaySpec {
            jetstream_native: true,
            ..spec("1")
        },
        operator_token: None,
    };
    service::request_group_replay(&client, &req, WAIT)
        .await
        .unwrap();
    let got = collect(&mut sub, 15, WAIT).await;
    assert_eq!(got.len(), 15);
    for ((_, m), (_, orig, _)) in got.iter().zip(&rec) {
        assert_eq!(m.payload.as_ref(), orig.body.as_slice());
    }
    // Spread over about the stored 280 ms, not delivered at once.
    let span = got[14].0 - got[0].0;
    assert!(span > 150_000_000, "{} ms", span / 1_000_000);
    loop {
        let m = tokio::time::timeout(WAIT, ctrl.next())
            .await
            .unwrap()
            .unwrap();
        if let Ok(tspi::replay::channels::Ctrl::Stop(s)) =
            tspi::replay::channels::Ctrl::decode(&m.payload)
        {
            assert_eq!(s.channel_id, "replay.native");
            break;
        }
    }
    // A rate other than 1 is refused in this mode.
    let mut fast = req.clone();
    fast.channel_id = "replay.native2".into();
    fast.spec.rate = 2.0;
    let e = service::request_group_replay(&client, &fast, WAIT)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("original rate"), "{e}");
    svc.stop().await;
}

#[test]
fn the_channels_section_is_documented_typed_and_checked() {
    let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/tspi.toml"));
    let cfg = tspi::config::Config::load(path).unwrap();
    // The example shows the defaults.
    assert_eq!(cfg.channels, ChannelsConfig::default());
    let typo = "[channels]\nprivate_idle = 5\n";
    let e = tspi::config::Config::from_toml(typo, std::path::Path::new("x.toml")).unwrap_err();
    assert!(e.to_string().contains("private_idle"), "{e}");
    let mut bad = cfg.clone();
    bad.channels.private_idle_s = 0;
    bad.channels.tag_subject = "tags.*".into();
    let e = bad.validate().unwrap_err().to_string();
    assert!(
        e.contains("channels.private_idle_s") && e.contains("channels.tag_subject"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serve_command_answers_and_stops_on_sigterm() {
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args(["channels", "serve", "--nats", &nats.url()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Up to a minute (the old loop of 100 requests gave up after a
    // fraction of a second when each came back at once with "no
    // responders", as it does while the service starts on a loaded box).
    // A service that ended says why.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let dir = loop {
        if let Ok(d) = service::list_channels(&client, Duration::from_millis(200)).await {
            break d;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read as _;
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("tspi channels serve ended ({status}) before answering:\n{err}");
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the service did not answer within 60 s:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // "No responders" comes back at once while it starts.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dir, [DirectoryEntry::livestream()]);
    // It created the replay and ops streams.
    let js = async_nats::jetstream::new(client.clone());
    assert!(js.get_stream("TSPI_REPLAY").await.is_ok());
    assert!(js.get_stream("TSPI_OPS").await.is_ok());
    // SAFETY: kill(2) on the pid of a child this test spawned and has not
    // reaped, with a valid signal number.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}
