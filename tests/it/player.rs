//! `tspi player` and `tspi console` against a real nats-server: a player
//! prints exactly its channel's records from the live edge, survives junk,
//! follows group replays, announces itself and shows display commands; two
//! players each get every message; display commands and tags carry their
//! `Nats-Msg-Id` into `TSPI_OPS`; the roster lists and expires clients; the
//! strict body check agrees with the JSON schema.

use crate::kit::*;
use futures_util::StreamExt;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tspi::channels::message::{
    GroupReplayStart, GroupReplayStop, Heartbeat, SUBJECT_CTRL, SUBJECT_STATUS, from_cbor, to_cbor,
};
use tspi::message::{Message, Record};
use tspi_testkit::arb::arb_frame;
use tspi_testkit::harness::NatsServer;

const LIVE: &str = "tspi.channel.livestream";

/// A running `tspi player --json`; its stdout lines arrive on a channel.
struct Player {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
    seen: Vec<Value>,
}

impl Player {
    fn spawn(url: &str, client_id: &str, extra: &[&str]) -> Player {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tspi"))
            .args([
                "player",
                "--nats",
                url,
                "--json",
                "--client-id",
                client_id,
                "--duration-s",
                "120",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tspi player");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                s.push_str(&l);
                s.push('\n');
            }
            s
        });
        Player {
            child,
            lines,
            stderr,
            seen: Vec::new(),
        }
    }

    /// Lines until `n` records (objects with a `type`) arrived since the
    /// start, or 20 s passed.
    fn records(&mut self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.record_lines().len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self
                    .seen
                    .push(serde_json::from_str(&l).unwrap_or_else(|e| panic!("{l:?}: {e}"))),
                Err(_) => break,
            }
        }
        self.record_lines()
    }

    fn record_lines(&self) -> Vec<Value> {
        self.seen
            .iter()
            .filter(|v| v.get("type").is_some())
            .cloned()
            .collect()
    }

    /// The first line with top-level key `key` matching `f`, within 20 s.
    fn wait_line(&mut self, key: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(v) = self.seen.iter().find(|v| v.get(key).is_some_and(&f)) {
                return v[key].clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let l = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {key} line; seen {:?}", self.seen));
            self.seen.push(serde_json::from_str(&l).unwrap());
        }
    }

    /// SIGTERM; the final summary and stderr.
    fn stop(mut self) -> (Value, String) {
        // SAFETY: kill(2) on the pid of a child this test spawned and has
        // not reaped, with a valid signal number.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0);
        let status = self.child.wait().unwrap();
        let stderr = self.stderr.join().unwrap();
        assert!(status.success(), "{status:?}\n{stderr}");
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(serde_json::from_str(&l).unwrap());
        }
        let summary = self
            .seen
            .iter()
            .find_map(|v| v.get("summary").cloned())
            .unwrap_or_else(|| panic!("no summary: {:?}\n{stderr}", self.seen));
        (summary, stderr)
    }
}

/// The heartbeat of `client_id` in `state` (and on `channel`), within 20 s.
async fn heartbeat(
    sub: &mut async_nats::Subscriber,
    client_id: &str,
    state: &str,
    channel: &str,
) -> Heartbeat {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = tokio::time::timeout_at(deadline, sub.next())
            .await
            .unwrap_or_else(|_| panic!("no heartbeat {client_id} {state} {channel}"))
            .unwrap();
        let hb: Heartbeat = from_cbor(&m.payload).expect("heartbeat is the contract's map");
        if hb.client_id == client_id && hb.state == state && hb.channel_id == channel {
            return hb;
        }
    }
}

/// Message `i` as ingest publishes it, and its JSON record.
fn msg(i: u64) -> (Vec<u8>, Value) {
    let (f, recv) = random_frame(i, 7);
    let m = Message::encode("tspi", &f, recv);
    let json: Value = serde_json::from_str(&Record::new(&f, recv).to_json()).unwrap();
    (m.body, json)
}

async fn publish(client: &async_nats::Client, subject: &str, body: Vec<u8>) {
    client
        .publish(subject.to_owned(), body.into())
        .await
        .unwrap();
}

fn tspi(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args(args)
        .output()
        .expect("run tspi");
    assert!(
        out.status.success(),
        "tspi {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_prints_exactly_its_channel_from_the_live_edge_and_survives_junk() {
    let (nats, client, js) = nats_with_streams().await;
    let url = nats.url();
    // History of the replay channel, stored in TSPI_REPLAY before the
    // player starts: a late joiner must not see it.
    let (early, early_json) = msg(1);
    publish_all(
        &js,
        &[("tspi.channel.replay.r1".into(), Some("early".into()), early)],
    )
    .await;
    let mut status = client.subscribe(SUBJECT_STATUS).await.unwrap();
    client.flush().await.unwrap();
    let mut p = Player::spawn(&url, "p1", &["--channel", "replay.r1"]);
    let hb = heartbeat(&mut status, "p1", "FOLLOWING_GROUP_REPLAY", "replay.r1").await;
    assert_eq!(hb.subject, "tspi.channel.replay.r1");
    assert!(!hb.live_override);

    let mut want = Vec::new();
    for i in 10..13 {
        let (b, j) = msg(i);
        publish(&client, "tspi.channel.replay.r1", b).await;
        want.push(j);
        // Another channel's traffic, and the livestream's, never appear.
        publish(&client, LIVE, msg(100 + i).0).await;
        publish(&client, "tspi.channel.replay.r2", msg(200 + i).0).await;
    }
    publish(&client, "tspi.channel.replay.r1", b"\xa1junk".to_vec()).await;
    publish(&client, "tspi.channel.replay.r1", vec![]).await;
    let (b, j) = msg(13);
    publish(&client, "tspi.channel.replay.r1", b).await;
    want.push(j);
    client.flush().await.unwrap();

    let got = p.records(want.len());
    assert_eq!(got, want);
    assert!(
        !got.contains(&early_json),
        "history before the start was printed"
    );
    let (summary, stderr) = p.stop();
    assert_eq!(summary["messages"], json!(4), "{summary}");
    assert_eq!(summary["bad_bodies"], json!(2), "{summary}");
    assert!(stderr.contains("bad body"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_players_each_get_every_message() {
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut status = client.subscribe(SUBJECT_STATUS).await.unwrap();
    client.flush().await.unwrap();
    let mut a = Player::spawn(&nats.url(), "pa", &[]);
    let mut b = Player::spawn(&nats.url(), "pb", &[]);
    heartbeat(&mut status, "pa", "FOLLOWING_LIVESTREAM", "livestream").await;
    heartbeat(&mut status, "pb", "FOLLOWING_LIVESTREAM", "livestream").await;
    let mut want = Vec::new();
    for i in 0..50 {
        let (body, j) = msg(i);
        publish(&client, LIVE, body).await;
        want.push(j);
    }
    client.flush().await.unwrap();
    assert_eq!(a.records(50), want);
    assert_eq!(b.records(50), want);
    assert_eq!(a.stop().0["messages"], json!(50));
    assert_eq!(b.stop().0["messages"], json!(50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_follows_a_group_replay_and_back_and_shows_display_commands() {
    let (nats, client, js) = nats_with_streams().await;
    let url = nats.url();
    let mut status = client.subscribe(SUBJECT_STATUS).await.unwrap();
    client.flush().await.unwrap();
    let mut p = Player::spawn(&url, "follower", &[]);
    heartbeat(
        &mut status,
        "follower",
        "FOLLOWING_LIVESTREAM",
        "livestream",
    )
    .await;

    let start = GroupReplayStart {
        kind: "GroupReplayStart".into(),
        channel_id: "replay.sortie-12".into(),
        display_name: "Sortie 12".into(),
        identifier: "2026-04-30T14:05:00Z".into(),
        stream: "TSPI_REPLAY".into(),
    };
    publish(&client, SUBJECT_CTRL, to_cbor(&start)).await;
    let hb = heartbeat(
        &mut status,
        "follower",
        "FOLLOWING_GROUP_REPLAY",
        "replay.sortie-12",
    )
    .await;
    assert_eq!(hb.subject, "tspi.channel.replay.sortie-12");
    let (a, a_json) = msg(1);
    publish(&client, "tspi.channel.replay.sortie-12", a).await;
    publish(&client, LIVE, msg(2).0).await;

    let stop = GroupReplayStop {
        kind: "GroupReplayStop".into(),
        channel_id: "replay.sortie-12".into(),
    };
    // Wait for the replay's record before the stop, so the order is known.
    client.flush().await.unwrap();
    assert_eq!(p.records(1), std::slice::from_ref(&a_json));
    publish(&client, SUBJECT_CTRL, to_cbor(&stop)).await;
    heartbeat(
        &mut status,
        "follower",
        "FOLLOWING_LIVESTREAM",
        "livestream",
    )
    .await;
    let (c, c_json) = msg(3);
    publish(&client, LIVE, c).await;
    publish(&client, "tspi.channel.replay.sortie-12", msg(4).0).await;
    client.flush().await.unwrap();
    assert_eq!(p.records(2), [a_json, c_json]);

    // A display command reaches the player and is shown as current.
    let sent: Value = serde_json::from_str(
        tspi(&["console", "display", "--nats", &url, "units", "imperial"]).trim(),
    )
    .unwrap();
    let d = p.wait_line("display", |d| d["current"]["units"] == json!("imperial"));
    assert_eq!(d["cmd_id"], sent["cmd_id"]);
    assert_eq!(d["name"], json!("units"));
    let ch = p.wait_line("channel", |c| c["channel_id"] == json!("replay.sortie-12"));
    assert_eq!(ch["state"], json!("FOLLOWING_GROUP_REPLAY"));
    let (summary, _) = p.stop();
    assert_eq!(summary["channel_changes"], json!(2), "{summary}");
    assert_eq!(summary["messages"], json!(2), "{summary}");
    drop(js);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn display_commands_and_tags_land_in_tspi_ops_with_their_msg_id() {
    let (nats, _client, js) = nats_with_streams().await;
    let url = nats.url();
    let sent: Value = serde_json::from_str(
        tspi(&[
            "console",
            "display",
            "--nats",
            &url,
            "--sender",
            "op-1",
            "session",
            "--name",
            "Sortie 12",
            "--id",
            "s12",
        ])
        .trim(),
    )
    .unwrap();
    let stream = js.get_stream("TSPI_OPS").await.unwrap();
    let m = stream
        .get_last_raw_message_by_subject("tspi.cmd.display.session_metadata")
        .await
        .unwrap();
    let cmd_id = sent["cmd_id"].as_str().unwrap();
    assert_eq!(m.headers.get("Nats-Msg-Id").unwrap().as_str(), cmd_id);
    let c = tspi::message::ops::decode_command(&m.payload).unwrap();
    assert_eq!(c.cmd_id, cmd_id);
    assert_eq!(c.name, "session_metadata");
    assert_eq!(c.sender.as_deref(), Some("op-1"));
    assert_eq!(
        serde_json::from_str::<Value>(&c.payload_json).unwrap(),
        json!({"name": "Sortie 12", "id": "s12"})
    );

    // A colour that is not #rrggbb is refused before anything is sent.
    let out = Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args([
            "console",
            "display",
            "--nats",
            &url,
            "marker-color",
            "orange",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());

    let tag: Value = serde_json::from_str(
        tspi(&[
            "console",
            "tag",
            "--nats",
            &url,
            "Merge",
            "--at",
            "2026-04-30T14:05:00.25Z",
            "--notes",
            "two ship",
        ])
        .trim(),
    )
    .unwrap();
    let m = stream
        .get_last_raw_message_by_subject("tags.broadcast")
        .await
        .unwrap();
    let id = tag["id"].as_str().unwrap();
    assert_eq!(m.headers.get("Nats-Msg-Id").unwrap().as_str(), id);
    let t = tspi::message::ops::decode_tag(&m.payload).unwrap();
    assert_eq!(t.id, id);
    assert_eq!(t.label, "Merge");
    assert_eq!(t.ts_unix_us, 1_777_557_900_250_000, "the frozen moment");
    assert!(t.updated_unix_us > t.ts_unix_us, "updated_ts is now");
    assert_eq!(t.notes.as_deref(), Some("two ship"));
    assert_eq!(t.status.as_deref(), Some("active"));

    // The operations log shows both, then stops (no --follow).
    let log = tspi(&["console", "ops-log", "--nats", &url, "--json"]);
    let kinds: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("command"), json!("tag")], "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roster_lists_a_heartbeat_and_expires_it() {
    let (nats, client, _js) = nats_with_streams().await;
    let url = nats.url();
    let hb = tspi::channels::client_state::ClientMachine::default()
        .heartbeat("console-7", "2026-04-30T14:05:00+00:00".into());
    // Twice: the operations log shows a client once until it changes.
    for _ in 0..2 {
        client
            .request(SUBJECT_STATUS.to_owned(), to_cbor(&hb).into())
            .await
            .expect("TSPI_OPS stored the heartbeat");
    }
    let roster = tspi(&["console", "roster", "--nats", &url, "--stale-s", "2"]);
    let lines: Vec<Value> = roster
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{roster}");
    assert_eq!(lines[0]["client_id"], json!("console-7"));
    assert_eq!(lines[0]["state"], json!("FOLLOWING_LIVESTREAM"));
    let log = tspi(&["console", "ops-log", "--nats", &url]);
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(log.contains(" status  tspi.ops.status "), "{log}");

    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let roster = tspi(&["console", "roster", "--nats", &url, "--stale-s", "2"]);
    assert_eq!(roster, "", "a silent client expired");
}

// --- the strict body check and the JSON schema agree ----------------------

fn validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/tspi.schema.json"
    ))
    .unwrap();
    jsonschema::draft202012::new(&serde_json::from_str(&text).unwrap()).unwrap()
}

/// Values a mutation writes: in and out of every field's range, of every
/// JSON type, integers and floats (CBOR tells 5.0 from 5, the schema does
/// not: see `tspi::player::body`).
fn pool() -> Vec<Value> {
    vec![
        json!(-1),
        json!(0),
        json!(1),
        json!(255),
        json!(256),
        json!(366),
        json!(367),
        json!(65535),
        json!(65536),
        json!(86400),
        json!(u64::MAX),
        json!(-0.01),
        json!(0.5),
        json!(86400.9999),
        json!(86401.0),
        json!(327.67),
        json!(327.68),
        json!(-327.69),
        json!(21474836.47),
        json!(21474836.49),
        json!(4294.967295),
        json!(4294.967296),
        json!(1e300),
        json!(-1e300),
        json!(5.0),
        json!(366.0),
        json!("geocentric"),
        json!("spherical"),
        json!("polar"),
        json!("2023-11-14T22:13:20+00:00"),
        json!("2023-11-14T22:13:20.123400+00:00"),
        json!("2023-11-14T22:13:20.1234+00:00"),
        json!("2023-11-14T22:13:20.123400Z"),
        json!(true),
        json!(null),
        json!({}),
        json!([1]),
    ]
}

/// Every field's path: top-level keys, then `status_flags.*`, `payload.*`.
fn paths(r: &Value) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (k, v) in r.as_object().unwrap() {
        out.push(vec![k.clone()]);
        if let Value::Object(m) = v {
            for k2 in m.keys() {
                out.push(vec![k.clone(), k2.clone()]);
            }
        }
    }
    out
}

/// Whether every number is the CBOR item type the contract writes: floats
/// for `time_s` and the payload, integers for the counts (what JSON cannot
/// tell and the schema leaves open).
fn item_types_ok(r: &Value) -> bool {
    let float = |v: Option<&Value>| !matches!(v, Some(Value::Number(n)) if !n.is_f64());
    let int = |v: Option<&Value>| !matches!(v, Some(Value::Number(n)) if n.is_f64());
    float(r.get("time_s"))
        && ["sensor_id", "day", "status", "recv_epoch_ms"]
            .iter()
            .all(|k| int(r.get(*k)))
        && r.get("payload")
            .and_then(Value::as_object)
            .is_none_or(|m| m.values().all(|v| float(Some(v))))
}

fn at<'a>(r: &'a mut Value, path: &[String]) -> &'a mut serde_json::Map<String, Value> {
    let mut v = r;
    for k in path {
        v = v.get_mut(k).unwrap();
    }
    v.as_object_mut().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn strict_body_check_agrees_with_the_json_schema(
        f in arb_frame(),
        ns in 0u64..4_102_444_800_000_000_000,
        op in 0usize..4,
        which in any::<prop::sample::Index>(),
        value in any::<prop::sample::Index>(),
    ) {
        let v = validator();
        let mut r: Value = serde_json::from_str(
            &Record::new(&f, tspi::message::RecvTime::from_unix_ns(ns)).to_json(),
        ).unwrap();
        let paths = paths(&r);
        let path = which.get(&paths).clone();
        let (parent, key) = path.split_at(path.len() - 1);
        match op {
            0 => {} // unchanged: valid
            1 => { at(&mut r, parent).insert(key[0].clone(), value.get(&pool()).clone()); }
            2 => { at(&mut r, parent).remove(&key[0]); }
            _ => { at(&mut r, parent).insert("extra_field".into(), json!(1)); }
        }
        let mut body = Vec::new();
        ciborium::into_writer(&r, &mut body).unwrap();
        let schema_ok = v.is_valid(&r) && item_types_ok(&r);
        let check = tspi::player::body::check(&body);
        prop_assert_eq!(
            schema_ok,
            check.is_ok(),
            "schema {} decoder {:?} on {}",
            schema_ok,
            check.as_ref().err(),
            r
        );
        if op == 0 {
            prop_assert!(schema_ok);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_json_the_player_prints_a_summary_line_a_second_and_a_total() {
    let nats = NatsServer::start().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args([
            "player",
            "--nats",
            &nats.url(),
            "--channel",
            "client.alice.s1",
            "--duration-s",
            "2.5",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "{text}");
    assert!(
        lines[0].starts_with(
            "client.alice.s1 FOLLOWING_PRIVATE_REPLAY | geocentric 0/s spherical 0/s | sensors 0"
        ),
        "{text}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("total: 0 messages (geocentric 0, spherical 0), 0 sensors, 0 bad bodies"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_log_follows_commands_tags_control_and_clients_coming_and_going() {
    let (nats, client, _js) = nats_with_streams().await;
    let url = nats.url();
    // Before it starts: in its history (--since-s).
    tspi(&["console", "display", "--nats", &url, "units", "metric"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args([
            "console",
            "ops-log",
            "--nats",
            &url,
            "--follow",
            "--json",
            "--since-s",
            "60",
            "--stale-s",
            "1",
            "--duration-s",
            "60",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<Value>();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str(&l).unwrap());
        }
    });
    let next = |kind: &str| -> Value {
        let v = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no {kind} line"));
        assert_eq!(v["kind"], json!(kind), "{v}");
        v
    };
    assert_eq!(next("command")["body"]["payload"], json!("metric"));
    // After: followed live.
    tspi(&["console", "tag", "--nats", &url, "Merge"]);
    assert_eq!(next("tag")["body"]["label"], json!("Merge"));
    let stop = GroupReplayStop {
        kind: "GroupReplayStop".into(),
        channel_id: "replay.x".into(),
    };
    client
        .request(SUBJECT_CTRL.to_owned(), to_cbor(&stop).into())
        .await
        .unwrap();
    assert_eq!(next("ctrl")["body"]["type"], json!("GroupReplayStop"));
    let hb = tspi::channels::client_state::ClientMachine::default()
        .heartbeat("console-9", "2026-04-30T14:05:00+00:00".into());
    for _ in 0..2 {
        client
            .request(SUBJECT_STATUS.to_owned(), to_cbor(&hb).into())
            .await
            .unwrap();
    }
    assert_eq!(next("status")["body"]["client_id"], json!("console-9"));
    // The repeat is not shown; silence for --stale-s is.
    let gone = next("status");
    assert_eq!(
        gone["body"],
        json!({"client_id": "console-9", "gone": true})
    );
    // SAFETY: kill(2) on the pid of a child this test spawned and has not
    // reaped, with a valid signal number.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    assert!(child.wait().unwrap().success());
}
