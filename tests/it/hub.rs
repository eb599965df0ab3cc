//! `tspi console serve`, the operators' hub, against a real nats-server and
//! real WebSocket clients: snapshot then changes at the tick rate, a slow
//! client cut off without delaying the others, reconnects, the karaoke
//! state machine driven by real control messages, heartbeats with the ping
//! the server measured, operator actions and who may take them.

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tspi::channels::message::{self, GroupReplayStart, GroupReplayStop};
use tspi::codec::Frame;
use tspi::console::hub::{self, Hub, HubOptions, Table};
use tspi::message::RecvTime;
use tspi_testkit::harness::NatsServer;

const WAIT: Duration = Duration::from_secs(10);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A table the hub's tests can reason about: the latest time of each
/// sensor, frames of what changed.
#[derive(Default)]
struct Latest {
    tracks: BTreeMap<u16, u32>,
    changed: Vec<u16>,
}

impl Table for Latest {
    fn ingest(&mut self, _now_ms: u64, body: &[u8]) -> Result<(), String> {
        let row = tspi::archive::proto::rows::decode_telemetry(body, None)
            .map_err(|e| format!("{e:?}"))?;
        self.tracks
            .insert(row.frame.sensor_id, row.frame.time_ticks);
        self.changed.push(row.frame.sensor_id);
        Ok(())
    }

    fn tick_json(&mut self, channel_id: &str, now_ms: u64) -> Option<String> {
        if self.changed.is_empty() {
            return None;
        }
        self.changed.sort_unstable();
        self.changed.dedup();
        let tracks: Vec<Value> = self
            .changed
            .drain(..)
            .map(|s| serde_json::json!({"sensor_id": s, "time_ticks": self.tracks[&s]}))
            .collect();
        Some(
            serde_json::json!({"type": "frame", "channel_id": channel_id, "server_time_ms": now_ms, "tracks": tracks})
                .to_string(),
        )
    }

    fn snapshot_json(&self, channel_id: &str, now_ms: u64) -> String {
        let tracks: Vec<Value> = self
            .tracks
            .iter()
            .map(|(s, t)| serde_json::json!({"sensor_id": s, "time_ticks": t}))
            .collect();
        serde_json::json!({"type": "snapshot", "channel_id": channel_id, "server_time_ms": now_ms, "tracks": tracks})
            .to_string()
    }

    fn len(&self) -> usize {
        self.tracks.len()
    }
}

struct Running {
    nats: NatsServer,
    client: async_nats::Client,
    hub: Arc<Hub>,
    addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn start(opts: HubOptions) -> Running {
    let nats = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap()
        .expect("nats-server");
    start_on(nats, opts).await
}

async fn start_on(nats: NatsServer, opts: HubOptions) -> Running {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let hub = Hub::new(
        client.clone(),
        opts,
        Arc::new(|_: &message::ChannelId| Box::new(Latest::default()) as Box<dyn Table>),
    );
    let mut tasks = hub.start().await.expect("hub subscribes");
    let (addr, server) = hub::serve(hub.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    tasks.push(server);
    Running {
        nats,
        client,
        hub,
        addr,
        tasks,
    }
}

fn opts() -> HubOptions {
    HubOptions {
        operator_tokens: vec!["op-token".into()],
        ping_interval: Duration::from_millis(200),
        heartbeat_interval: Duration::from_millis(500),
        ..HubOptions::default()
    }
}

async fn connect(addr: SocketAddr, query: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?{query}"))
        .await
        .expect("websocket upgrade");
    ws
}

/// The next JSON message, whatever its type.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message within 10 s")
            .expect("open")
            .expect("no error");
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// The next message of type `ty`, skipping others.
async fn next_of(ws: &mut Ws, ty: &str) -> Value {
    loop {
        let v = next(ws).await;
        if v["type"] == ty {
            return v;
        }
    }
}

fn body(f: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    tspi::message::encode_cbor(f, RecvTime::now(), &mut out);
    out
}

async fn publish_frames(client: &async_nats::Client, subject: &str, frames: &[Frame]) {
    for f in frames {
        client
            .publish(subject.to_owned(), body(f).into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
}

fn frame(sensor: u16, i: u32) -> Frame {
    let mut f = tspi_testkit::frames::frame(u64::from(i));
    f.sensor_id = sensor;
    f.time_ticks = 10_000 * i;
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_first_then_only_changes_at_the_tick_rate() {
    let r = start(opts()).await;
    publish_frames(
        &r.client,
        "tspi.channel.livestream",
        &[frame(1, 1), frame(2, 1)],
    )
    .await;
    // The hub has seen them once a frame of them went out.
    let deadline = Instant::now() + WAIT;
    while r
        .hub
        .channel_gauges()
        .iter()
        .all(|(_, tracks, _)| *tracks < 2)
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Two ticks: their frame is out before alice connects.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ws = connect(r.addr, "client_id=alice").await;
    let hello = next(&mut ws).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    assert_eq!(hello["protocol"], 1);
    assert_eq!(hello["operator"], false);
    let state = next_of(&mut ws, "state").await;
    assert_eq!(state["state"], "FOLLOWING_LIVESTREAM");
    let snap = next(&mut ws).await;
    assert_eq!(
        snap["type"], "snapshot",
        "the snapshot right after the state: {snap}"
    );
    assert_eq!(snap["tracks"].as_array().unwrap().len(), 2, "{snap}");

    // Sensor 3 changes 100 times in about a second; sensor 1 once.
    let publisher = {
        let client = r.client.clone();
        tokio::spawn(async move {
            for i in 2..102u32 {
                publish_frames(&client, "tspi.channel.livestream", &[frame(3, i)]).await;
                if i == 50 {
                    publish_frames(&client, "tspi.channel.livestream", &[frame(1, i)]).await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let t0 = Instant::now();
    let mut frames = Vec::new();
    let mut last_ticks = 0;
    while last_ticks != 1_010_000 {
        let v = next_of(&mut ws, "frame").await;
        for t in v["tracks"].as_array().unwrap() {
            assert_ne!(t["sensor_id"], 2, "sensor 2 did not change: {v}");
            if t["sensor_id"] == 3 {
                last_ticks = t["time_ticks"].as_u64().unwrap();
            }
        }
        frames.push((Instant::now(), v));
    }
    publisher.await.unwrap();
    let took = t0.elapsed().as_secs_f64();
    // 10 Hz: about 10 frames a second whatever the message rate, never 100.
    let most = (took * 10.0 * 1.5).ceil() as usize + 2;
    assert!(
        frames.len() <= most,
        "{} frames in {took:.2} s",
        frames.len()
    );
    assert!(frames.len() >= 3, "{} frames in {took:.2} s", frames.len());
    assert!(
        frames.iter().any(|(_, v)| v["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["sensor_id"] == 1)),
        "sensor 1's one change was sent"
    );
    // Nothing changes: nothing is sent.
    let quiet = tokio::time::timeout(Duration::from_millis(500), next_of(&mut ws, "frame")).await;
    assert!(quiet.is_err(), "a frame without a change: {quiet:?}");

    // A client that reconnects is whole again after its snapshot.
    drop(ws);
    let mut ws = connect(r.addr, "client_id=alice").await;
    let snap = next_of(&mut ws, "snapshot").await;
    let got: BTreeMap<u64, u64> = snap["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["sensor_id"].as_u64().unwrap(),
                t["time_ticks"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        BTreeMap::from([(1, 500_000), (2, 10_000), (3, 1_010_000)])
    );
}

/// A connection with a receive buffer of a few kilobytes that never reads:
/// the hub's writes to it stall as soon as that fills.
async fn connect_never_reading(addr: SocketAddr) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(
        format!("ws://{addr}/ws?client_id=sloth"),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_delays_nobody_and_is_cut_off() {
    let r = start(HubOptions {
        events_queue_len: 16,
        ..opts()
    })
    .await;
    let _sloth = connect_never_reading(r.addr).await;
    let mut healthy = connect(r.addr, "client_id=bob").await;
    next_of(&mut healthy, "snapshot").await;

    // Traffic for two seconds: frames every tick, and tags (events) with
    // long notes (6 MB in all: more than the socket buffers between the
    // hub and the sloth hold) that fill the sloth's socket, then its queue.
    let traffic = {
        let client = r.client.clone();
        tokio::spawn(async move {
            for i in 1..=200u32 {
                publish_frames(&client, "tspi.channel.livestream", &[frame(7, i)]).await;
                let tag = tag_body(&format!("t{i}"), &"n".repeat(30_000));
                client.publish("tags.broadcast", tag.into()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            client.flush().await.unwrap();
        })
    };
    // The healthy client keeps getting frames, never a gap of a second.
    let mut last = Instant::now();
    let mut worst = Duration::ZERO;
    let mut ticks = 0;
    while ticks != 2_000_000 {
        let v = next(&mut healthy).await;
        if v["type"] == "frame" {
            worst = worst.max(last.elapsed());
            last = Instant::now();
            ticks = v["tracks"][0]["time_ticks"].as_u64().unwrap();
        }
    }
    traffic.await.unwrap();
    assert!(
        worst < Duration::from_secs(1),
        "a healthy client waited {worst:?} for a frame"
    );
    let deadline = Instant::now() + WAIT;
    while r.hub.stats.slow_disconnects.load(Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the sloth was not cut off");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + WAIT;
    while r.hub.clients_connected() != 1 {
        assert!(Instant::now() < deadline, "the sloth's slot was not freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn tag_body(id: &str, notes: &str) -> Vec<u8> {
    use ciborium::Value as V;
    let iso = RecvTime::now().iso().as_str().to_owned();
    let v = V::Map(vec![
        (V::Text("id".into()), V::Text(id.into())),
        (V::Text("ts".into()), V::Text(iso.clone())),
        (V::Text("label".into()), V::Text(format!("label {id}"))),
        (V::Text("status".into()), V::Text("active".into())),
        (V::Text("updated_ts".into()), V::Text(iso)),
        (V::Text("notes".into()), V::Text(notes.into())),
    ]);
    let mut out = Vec::new();
    ciborium::into_writer(&v, &mut out).unwrap();
    out
}

async fn ctrl(client: &async_nats::Client, body: Vec<u8>) {
    client.publish("tspi.ops.ctrl", body.into()).await.unwrap();
    client.flush().await.unwrap();
}

fn start_msg(channel: &str) -> Vec<u8> {
    message::to_cbor(&GroupReplayStart {
        kind: "GroupReplayStart".into(),
        channel_id: channel.into(),
        display_name: "Pass 3".into(),
        identifier: "2026-12-02T10:00:00Z".into(),
        stream: "TSPI_REPLAY".into(),
    })
}

fn stop_msg(channel: &str) -> Vec<u8> {
    message::to_cbor(&GroupReplayStop {
        kind: "GroupReplayStop".into(),
        channel_id: channel.into(),
    })
}

/// The client's next `state`, and the hub's heartbeat for it that says so.
async fn expect_state(
    ws: &mut Ws,
    status: &mut async_nats::Subscriber,
    who: &str,
    state: &str,
    channel: &str,
) {
    let v = next_of(ws, "state").await;
    assert_eq!(
        (v["state"].as_str(), v["channel_id"].as_str()),
        (Some(state), Some(channel)),
        "{who}: {v}"
    );
    loop {
        let m = tokio::time::timeout(WAIT, status.next())
            .await
            .unwrap()
            .unwrap();
        let h: message::Heartbeat = message::from_cbor(&m.payload).unwrap();
        if h.client_id == who && h.state == state {
            assert_eq!(h.channel_id, channel);
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_in_three_states_follow_real_control_messages() {
    let r = start(opts()).await;
    let watcher = async_nats::connect(r.nats.url()).await.unwrap();
    let mut status = watcher.subscribe("tspi.ops.status").await.unwrap();
    watcher.flush().await.unwrap();
    let mut live = connect(r.addr, "client_id=live").await;
    expect_state(
        &mut live,
        &mut status,
        "live",
        "FOLLOWING_LIVESTREAM",
        "livestream",
    )
    .await;
    let mut private = connect(r.addr, "client_id=priv").await;
    expect_state(
        &mut private,
        &mut status,
        "priv",
        "FOLLOWING_LIVESTREAM",
        "livestream",
    )
    .await;
    private
        .send(Message::Text(
            r#"{"type":"follow_private","channel_id":"client.priv.s1"}"#.into(),
        ))
        .await
        .unwrap();
    expect_state(
        &mut private,
        &mut status,
        "priv",
        "FOLLOWING_PRIVATE_REPLAY",
        "client.priv.s1",
    )
    .await;
    let mut over = connect(r.addr, "client_id=over").await;
    expect_state(
        &mut over,
        &mut status,
        "over",
        "FOLLOWING_LIVESTREAM",
        "livestream",
    )
    .await;

    ctrl(&r.client, start_msg("replay.pass-3")).await;
    expect_state(
        &mut live,
        &mut status,
        "live",
        "FOLLOWING_GROUP_REPLAY",
        "replay.pass-3",
    )
    .await;
    expect_state(
        &mut over,
        &mut status,
        "over",
        "FOLLOWING_GROUP_REPLAY",
        "replay.pass-3",
    )
    .await;
    let offered = next_of(&mut private, "state").await;
    assert_eq!(
        offered["state"], "FOLLOWING_PRIVATE_REPLAY",
        "stays: {offered}"
    );
    assert_eq!(
        offered["offered"], "replay.pass-3",
        "and is offered the group: {offered}"
    );
    over.send(Message::Text(r#"{"type":"back_to_live"}"#.into()))
        .await
        .unwrap();
    expect_state(
        &mut over,
        &mut status,
        "over",
        "LIVE_OVERRIDE",
        "livestream",
    )
    .await;

    ctrl(&r.client, stop_msg("replay.pass-3")).await;
    expect_state(
        &mut live,
        &mut status,
        "live",
        "FOLLOWING_LIVESTREAM",
        "livestream",
    )
    .await;
    expect_state(
        &mut over,
        &mut status,
        "over",
        "FOLLOWING_LIVESTREAM",
        "livestream",
    )
    .await;
    let withdrawn = next_of(&mut private, "state").await;
    assert_eq!(
        withdrawn["state"], "FOLLOWING_PRIVATE_REPLAY",
        "{withdrawn}"
    );
    assert!(
        withdrawn["offered"].is_null(),
        "offer withdrawn: {withdrawn}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_carry_the_ping_the_server_measured() {
    let r = start(opts()).await;
    let watcher = async_nats::connect(r.nats.url()).await.unwrap();
    let mut status = watcher.subscribe("tspi.ops.status").await.unwrap();
    watcher.flush().await.unwrap();
    let mut ws = connect(r.addr, "client_id=pinged").await;
    // The client must read for its pongs to go out (tungstenite answers
    // pings while reading).
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
    let deadline = Instant::now() + WAIT;
    let h = loop {
        assert!(Instant::now() < deadline, "no heartbeat with a ping");
        let m = tokio::time::timeout(WAIT, status.next())
            .await
            .unwrap()
            .unwrap();
        let h: message::Heartbeat = message::from_cbor(&m.payload).unwrap();
        if h.client_id == "pinged" && h.ping_ms.is_some() {
            break h;
        }
    };
    let ping = h.ping_ms.unwrap();
    assert!(ping > 0.0 && ping < 1_000.0, "{h:?}");
    assert_eq!(h.source_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(h.state, "FOLLOWING_LIVESTREAM");
    reader.abort();
    // The roster, as a client sees it, lists it.
    let mut other = connect(r.addr, "client_id=other").await;
    let deadline = Instant::now() + WAIT;
    loop {
        let v = next_of(&mut other, "roster").await;
        if v["clients"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["client_id"] == "pinged")
        {
            break;
        }
        assert!(Instant::now() < deadline);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_cannot_act_and_an_operator_tags_with_a_frozen_time() {
    let r = start(opts()).await;
    let watcher = async_nats::connect(r.nats.url()).await.unwrap();
    let mut tags = watcher.subscribe("tags.broadcast").await.unwrap();
    let mut units = watcher.subscribe("tspi.cmd.display.units").await.unwrap();
    watcher.flush().await.unwrap();

    let tag = r#"{"type":"tag","label":"pass 3 start","ts":"2026-12-02T10:00:00.250000+00:00","notes":"clean"}"#;
    let mut viewer = connect(r.addr, "client_id=viewer").await;
    next_of(&mut viewer, "snapshot").await;
    viewer.send(Message::Text(tag.into())).await.unwrap();
    let e = next_of(&mut viewer, "error").await;
    assert!(
        e["reason"].as_str().unwrap().contains("viewers cannot act"),
        "{e}"
    );
    let wrong = connect(r.addr, "client_id=guess&token=guess").await;
    drop(wrong);

    let mut op = connect(r.addr, "client_id=op1&token=op-token").await;
    assert_eq!(next(&mut op).await["operator"], true);
    op.send(Message::Text(tag.into())).await.unwrap();
    let done = next_of(&mut op, "done").await;
    assert!(done["what"].as_str().unwrap().starts_with("tag"), "{done}");
    let m = tokio::time::timeout(WAIT, tags.next())
        .await
        .unwrap()
        .unwrap();
    let t = tspi::contract::message::ops::decode_tag(&m.payload).unwrap();
    assert_eq!(t.label, "pass 3 start");
    assert_eq!(
        t.ts_unix_us, 1_796_205_600_250_000,
        "the frozen time, not now"
    );
    assert_eq!(t.creator.as_deref(), Some("op1"));
    assert_eq!(
        m.headers.unwrap().get("Nats-Msg-Id").unwrap().as_str(),
        t.id
    );
    // Every client sees the tag at once.
    let seen = next_of(&mut viewer, "tag").await;
    assert_eq!(seen["label"], "pass 3 start");

    op.send(Message::Text(
        r#"{"type":"display","name":"units","payload":"imperial"}"#.into(),
    ))
    .await
    .unwrap();
    let m = tokio::time::timeout(WAIT, units.next())
        .await
        .unwrap()
        .unwrap();
    let c = tspi::contract::message::ops::decode_command(&m.payload).unwrap();
    assert_eq!(
        (c.name.as_str(), c.payload_json.as_str()),
        ("units", "\"imperial\"")
    );
    assert_eq!(
        m.headers.unwrap().get("Nats-Msg-Id").unwrap().as_str(),
        c.cmd_id
    );
    let d = next_of(&mut viewer, "display").await;
    assert_eq!(d["payload"], "imperial");

    // A junk message is answered, never the end of the connection.
    op.send(Message::Text("{nope".into())).await.unwrap();
    assert_eq!(next_of(&mut op, "error").await["type"], "error");
    op.send(Message::Text(
        r#"{"type":"display","name":"volume","payload":11}"#.into(),
    ))
    .await
    .unwrap();
    let e = next_of(&mut op, "error").await;
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("unknown display command"),
        "{e}"
    );
    assert!(r.hub.stats.actions_refused.load(Relaxed) >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origins_and_clients_over_the_limit_are_refused() {
    let r = start(HubOptions {
        clients_max: 2,
        ..opts()
    })
    .await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut req = format!("ws://{}/ws", r.addr).into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "http://evil.example".parse().unwrap());
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    let mut req = format!("ws://{}/ws", r.addr).into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", format!("http://{}", r.addr).parse().unwrap());
    let _same_host = tokio_tungstenite::connect_async(req)
        .await
        .expect("the page's own origin");
    let _second = connect(r.addr, "client_id=b").await;
    let deadline = Instant::now() + WAIT;
    while r.hub.clients_connected() < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = tokio_tungstenite::connect_async(format!("ws://{}/ws", r.addr))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(r.hub.stats.refused.load(Relaxed), 2);
}

/// `tspi console serve`, the binary, with the console's own track tables:
/// a geocentric track lands at its WGS84 position (the exact conversion of
/// its ECEF fix: here a point given as latitude, longitude and height).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_tracks_at_their_wgs84_positions() {
    use tspi::codec::{Geocentric, Payload};
    use tspi::console::geodesy::Geodetic;
    let nats = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap()
        .expect("nats-server");
    let port = crate::kit::free_tcp_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args(["console", "serve", "--nats", &nats.url()])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--duration-s",
            "60",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + WAIT;
    let mut ws = loop {
        match tokio_tungstenite::connect_async(format!("ws://{addr}/ws?client_id=map")).await {
            Ok((ws, _)) => break ws,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("the console never served /ws: {e}"),
        }
    };
    next_of(&mut ws, "snapshot").await;

    let truth = Geodetic {
        lat_deg: 32.3832,
        lon_deg: -106.4794,
        alt_m: 4_572.0,
    };
    let [x, y, z] = truth.to_ecef();
    let mut f = frame(4242, 100);
    f.payload = Payload::Geocentric(Geocentric {
        x: (x * 100.0).round() as i32,
        y: (y * 100.0).round() as i32,
        z: (z * 100.0).round() as i32,
        vx: 10_000,
        ..Geocentric::default()
    });
    let client = async_nats::connect(nats.url()).await.unwrap();
    publish_frames(&client, "tspi.channel.livestream", &[f]).await;
    let v = next_of(&mut ws, "frame").await;
    let t = &v["tracks"][0];
    assert_eq!(t["sensor_id"], 4242, "{v}");
    assert_eq!(t["type"], "geocentric");
    let got = Geodetic {
        lat_deg: t["lat_deg"].as_f64().unwrap(),
        lon_deg: t["lon_deg"].as_f64().unwrap(),
        alt_m: t["alt_m"].as_f64().unwrap(),
    };
    let [gx, gy, gz] = got.to_ecef();
    let miss = ((gx - x).powi(2) + (gy - y).powi(2) + (gz - z).powi(2)).sqrt();
    assert!(miss < 0.02, "{miss} m from the fix: {v}");
    assert_eq!(t["time_s"], 1.0 * 100.0);
    // A client connecting now gets the track in its snapshot, without a
    // trail, and the trail in a `trails` message after it.
    let mut late = connect(addr, "client_id=late").await;
    let snap = next_of(&mut late, "snapshot").await;
    assert_eq!(snap["tracks"][0]["sensor_id"], 4242, "{snap}");
    assert!(snap["tracks"][0].get("trail").is_none(), "{snap}");
    let trails = next(&mut late).await;
    assert_eq!(
        trails["type"], "trails",
        "right after the snapshot: {trails}"
    );
    assert_eq!(trails["tracks"][0]["id"], "4242:geocentric");
    let p = &trails["tracks"][0]["trail"][0];
    assert_eq!(p[3], 100.0, "{trails}");
    assert!(
        (p[0].as_f64().unwrap() - truth.lat_deg).abs() < 1e-6,
        "{trails}"
    );
    drop(late);
    // The hub's own metrics, on its own port.
    let out =
        crate::metrics::http(addr, "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(
        out.contains("tspi_console_tracks{channel=\"livestream\"} 1\n"),
        "{out}"
    );
    // The late client may not have been seen leaving yet.
    assert!(
        out.contains("tspi_console_clients{channel=\"livestream\"} 1\n")
            || out.contains("tspi_console_clients{channel=\"livestream\"} 2\n"),
        "{out}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// An operator starts a private replay from the page, follows it, pauses
/// and resumes it, and stops it: every action through the real channels
/// service, the connection's state following.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_a_private_replay_from_the_page() {
    use crate::kit::{T0_NS, even, nats_with_streams, publish_recording, recording};
    let (nats, client, js) = nats_with_streams().await;
    // 200 messages 50 ms apart: 10 s of telemetry to replay.
    publish_recording(&js, &recording(&even(200, 50_000_000))).await;
    let url = nats.url();
    let _svc = crate::channels::Running::start(&url, tspi::replay::ChannelsConfig::default()).await;
    let r = start_on(nats, opts()).await;
    drop(client);
    let mut op = connect(r.addr, "client_id=op7&token=op-token").await;
    next_of(&mut op, "snapshot").await;
    let start = RecvTime::from_unix_ns(T0_NS).iso().as_str().to_owned();
    let req = serde_json::json!({"type": "private_replay_start", "session_id": "s1",
        "spec": {"start": start, "rate": 1.0}});
    op.send(Message::Text(req.to_string().into()))
        .await
        .unwrap();
    let done = next_of(&mut op, "done").await;
    assert!(
        done["what"].as_str().unwrap().contains("client.op7.s1"),
        "{done}"
    );
    let state = next_of(&mut op, "state").await;
    assert_eq!(state["state"], "FOLLOWING_PRIVATE_REPLAY", "{state}");
    assert_eq!(state["channel_id"], "client.op7.s1");
    let snap = next_of(&mut op, "snapshot").await;
    assert_eq!(snap["channel_id"], "client.op7.s1");
    let f = next_of(&mut op, "frame").await;
    assert_eq!(f["channel_id"], "client.op7.s1", "the replay's tracks: {f}");

    for action in ["pause", "resume"] {
        let c = serde_json::json!({"type": "replay_control", "channel_id": "client.op7.s1", "action": action});
        op.send(Message::Text(c.to_string().into())).await.unwrap();
        let done = next_of(&mut op, "done").await;
        assert!(done["what"].as_str().unwrap().starts_with(action), "{done}");
    }
    // Another client's replay is not this one's to control.
    let c = serde_json::json!({"type": "replay_control", "channel_id": "client.someone.s1", "action": "pause"});
    op.send(Message::Text(c.to_string().into())).await.unwrap();
    let e = next_of(&mut op, "error").await;
    assert!(e["reason"].as_str().unwrap().contains("refused"), "{e}");

    op.send(Message::Text(
        r#"{"type":"private_replay_stop","session_id":"s1"}"#.into(),
    ))
    .await
    .unwrap();
    next_of(&mut op, "done").await;
    let state = next_of(&mut op, "state").await;
    assert_eq!(state["state"], "FOLLOWING_LIVESTREAM", "{state}");
}

/// The ingest boxes' latency snapshots reach every client, per box and
/// merged across boxes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_latencies_are_shown_per_box_and_merged() {
    use tspi::metrics::{Gauges, IngestCounts, Latencies, ReportTime, Reporter};
    let r = start(opts()).await;
    let mut ws = connect(r.addr, "client_id=watcher").await;
    next_of(&mut ws, "snapshot").await;
    for (host, n, ns) in [("rx-01", 100u64, 1_000_000u64), ("rx-02", 300, 3_000_000)] {
        let t0 = ReportTime {
            unix_ms: 1_700_000_000_000,
            mono_ns: 0,
        };
        let mut reporter = Reporter::with_latencies(Latencies::new(), t0);
        let mut rec = reporter.recorder();
        for _ in 0..n {
            rec.record_receive_to_ack(ns);
        }
        drop(rec);
        let now = ReportTime {
            unix_ms: t0.unix_ms + 10_000,
            mono_ns: 10_000_000_000,
        };
        let report = reporter.report_at(now, IngestCounts::default(), Gauges::default());
        let (subject, body) = tspi::metrics::snapshot_message(&report, host);
        r.client.publish(subject, body.into()).await.unwrap();
    }
    r.client.flush().await.unwrap();
    let deadline = Instant::now() + WAIT;
    let v = loop {
        let v = next_of(&mut ws, "latency").await;
        if v["per_box"].as_object().unwrap().len() == 2 {
            break v;
        }
        assert!(Instant::now() < deadline);
    };
    let rta = |v: &Value| v["receive_to_ack"].clone();
    assert_eq!(rta(&v["per_box"]["rx-01"])["count"], 100, "{v}");
    assert_eq!(rta(&v["per_box"]["rx-02"])["count"], 300, "{v}");
    assert_eq!(rta(&v["merged"])["count"], 400, "{v}");
    let p50 = rta(&v["merged"])["p50"].as_f64().unwrap();
    assert!(
        (2.99..3.01).contains(&p50),
        "the merged median is rx-02's 3 ms: {v}"
    );
    let p50_01 = rta(&v["per_box"]["rx-01"])["p50"].as_f64().unwrap();
    assert!((0.99..1.01).contains(&p50_01), "{v}");
}

/// CONTRACT §5 end to end: a tag an operator makes on the console with a
/// frozen timestamp is captured by `TSPI_OPS`, kept by the archive in
/// `tspi_tags` at that moment (not when it was made), and emitted again
/// when a replay of the recorded window passes that moment: after the
/// telemetry received before it, before the telemetry received after it,
/// from the archive and from the streams alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_time_tag_is_archived_and_replayed_at_its_moment() {
    use crate::kit::{T0_NS, even, publish_recording, recording, wait_rows};
    use tspi::replay::archive::{ArchiveSource, Window};
    use tspi::replay::driver::DriverConfig;
    use tspi::replay::pacer::Rate;
    use tspi::replay::sink::MemorySink;
    use tspi::replay::source::{Source, StartAt, StreamSource};
    use tspi::replay::{Item, ItemKind};
    use tspi_testkit::harness::PgCluster;

    const BOUND: Duration = Duration::from_secs(120);
    let r = start(opts()).await;
    let pg = tokio::task::spawn_blocking(PgCluster::start)
        .await
        .unwrap()
        .expect("postgres");
    let dsn = pg.dsn();
    // TSPI and TSPI_OPS, as the archive's tests make them.
    let js = crate::kit::js(&r.nats.url()).await;
    // The recording: 40 messages 10 ms apart from T0 (2023-11-14T22:13:20Z).
    let rec = recording(&even(40, 10_000_000));
    publish_recording(&js, &rec).await;

    // The operator tags T0 + 205 ms: between message 20 (+200 ms) and
    // message 21 (+210 ms), years before now.
    let frozen_ns = T0_NS + 205_000_000;
    let frozen = String::from_utf8(RecvTime::from_unix_ns(frozen_ns).iso().to_vec()).unwrap();
    let mut op = connect(r.addr, "client_id=op1&token=op-token").await;
    assert_eq!(next(&mut op).await["operator"], true);
    let tag = serde_json::json!({"type": "tag", "label": "pass 3 start", "ts": frozen});
    op.send(Message::Text(tag.to_string().into()))
        .await
        .unwrap();
    let done = next_of(&mut op, "done").await;
    assert!(done["what"].as_str().unwrap().starts_with("tag"), "{done}");
    let deadline = Instant::now() + BOUND;
    while crate::kit::stored(&js, "TSPI_OPS").await < 1 {
        assert!(Instant::now() < deadline, "the tag never reached TSPI_OPS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The archiver keeps it, at the frozen moment.
    let archiver = tspi::archive::Handle::spawn(crate::kit::config(&r.nats.url()), dsn.clone());
    wait_rows(&dsn, "tspi_telemetry", 40, BOUND).await;
    wait_rows(&dsn, "tspi_tags", 1, BOUND).await;
    let account = archiver.stop().await.expect("archiver ran");
    assert_eq!(account.counters.telemetry_rows, 40);
    let db = crate::kit::pg_connect(&dsn).await;
    let row = db
        .query_one(
            "SELECT id, (extract(epoch FROM ts) * 1000000)::bigint, label, creator FROM tspi_tags",
            &[],
        )
        .await
        .unwrap();
    let id: String = row.get(0);
    assert_eq!(
        row.get::<_, i64>(1),
        (frozen_ns / 1_000) as i64,
        "ts frozen"
    );
    assert_eq!(row.get::<_, String>(2), "pass 3 start");
    assert_eq!(row.get::<_, Option<String>>(3).as_deref(), Some("op1"));

    // A replay of the recorded second, from the archive and from the
    // streams: the tag comes once, between messages 20 and 21, with its id
    // and its frozen time.
    let handle = tokio::runtime::Handle::current();
    let sources: Vec<(&str, Box<dyn Source>)> = vec![
        (
            "archive",
            Box::new(ArchiveSource::new(
                handle.clone(),
                dsn.clone(),
                Window::Time {
                    start_ns: T0_NS,
                    end_ns: T0_NS + 1_000_000_000,
                },
            )),
        ),
        (
            "stream",
            Box::new(StreamSource::new(
                handle.clone(),
                js.clone(),
                StartAt::Time(T0_NS),
                Some(T0_NS + 1_000_000_000),
            )),
        ),
    ];
    let want: Vec<String> = rec.iter().map(|(_, m, _)| m.msg_id.clone()).collect();
    for (name, mut source) in sources {
        let got: Vec<Item> = tokio::task::block_in_place(|| {
            let mut sink = MemorySink::default();
            let (_tx, rx) = std::sync::mpsc::channel();
            let cfg = DriverConfig {
                rate: Rate::new(20.0).unwrap(),
                ..DriverConfig::default()
            };
            let report = tspi::replay::driver::run(source.as_mut(), &mut sink, cfg, &rx)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((report.telemetry, report.tags), (40, 1), "{name}");
            sink.got.into_iter().map(|(_, item, _)| item).collect()
        });
        let mut telemetry = Vec::new();
        let mut tags = Vec::new();
        for item in &got {
            match &item.kind {
                ItemKind::Telemetry { msg_id, .. } => telemetry.push(msg_id.clone()),
                ItemKind::Tag { id: tag_id, body } => {
                    let t = tspi::replay::source::parse_tag(body).unwrap();
                    assert_eq!(&t.id, tag_id, "{name}");
                    tags.push((telemetry.len(), tag_id.clone(), t.ts_ns, item.rec_ns));
                }
            }
        }
        assert_eq!(telemetry, want, "{name}: every message, in receive order");
        assert_eq!(
            tags,
            [(21, id.clone(), frozen_ns, frozen_ns)],
            "{name}: the tag once, after messages 0..=20 (<= +200 ms), before 21 (+210 ms)"
        );
    }
}

/// Group replays reach the page however the channels service runs them:
/// paced by the appliance (published on the channel's subject) and
/// JetStream-native (a push consumer, whose messages carry their stored
/// subjects): clients on live follow each and get its tracks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_replays_paced_and_jetstream_native_reach_the_page() {
    use crate::kit::{T0_NS, even, nats_with_streams, publish_recording, recording};
    use tspi::channels::message::{GroupReplayRequest, ReplaySpec};
    let (nats, client, js) = nats_with_streams().await;
    publish_recording(&js, &recording(&even(100, 20_000_000))).await;
    let url = nats.url();
    let _svc = crate::channels::Running::start(&url, tspi::replay::ChannelsConfig::default()).await;
    let r = start_on(nats, opts()).await;
    let mut ws = connect(r.addr, "client_id=watch").await;
    next_of(&mut ws, "snapshot").await;
    for (id, native) in [("paced", false), ("native", true)] {
        let channel = message::ChannelId::parse(&format!("replay.{id}")).unwrap();
        let spec = ReplaySpec {
            start: Some(RecvTime::from_unix_ns(T0_NS).iso().as_str().to_owned()),
            rate: 1.0,
            jetstream_native: native,
            ..ReplaySpec::default()
        };
        let req = GroupReplayRequest::new(&channel, id.into(), spec);
        tspi::channels::service::request_group_replay(&client, &req, WAIT)
            .await
            .unwrap();
        let state = next_of(&mut ws, "state").await;
        assert_eq!(state["channel_id"], format!("replay.{id}"), "{state}");
        let deadline = Instant::now() + WAIT;
        loop {
            let v = next(&mut ws).await;
            if v["type"] == "frame" && v["channel_id"] == format!("replay.{id}") {
                assert!(!v["tracks"].as_array().unwrap().is_empty(), "{v}");
                break;
            }
            assert!(Instant::now() < deadline, "no frame of replay.{id}");
        }
        tspi::channels::service::stop_group_replay(&client, &format!("replay.{id}"), None, WAIT)
            .await
            .unwrap();
        let back = next_of(&mut ws, "state").await;
        assert_eq!(back["state"], "FOLLOWING_LIVESTREAM", "{back}");
    }
}
