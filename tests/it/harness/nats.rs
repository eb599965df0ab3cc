//! The harness against a real nats-server (2.14+, from `./scripts/setup`):
//! the `TSPI` stream, the contract vectors published and read back, JetStream
//! de-duplication, a three-node cluster losing a node, and a restart keeping
//! the store.

use async_nats::HeaderMap;
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::{self, stream};
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::task::block_in_place;
use tspi::codec::{self, Frame, vectors};
use tspi::jetstream::{STREAM_TELEMETRY, StreamSettings, ensure_stream, telemetry_stream};
use tspi::message::{Message, Record, RecvTime};
use tspi_testkit::harness::{NatsCluster, NatsServer, nats_server_binary, parse_nats_version};

const STREAM_WAIT: Duration = Duration::from_secs(20);

fn recv() -> RecvTime {
    RecvTime::from_unix_ns(vectors::RECV_EXAMPLE_UNIX_NS)
}

/// The four accepted contract vectors, parsed and encoded.
fn vector_messages() -> Vec<(Frame, Message)> {
    vectors::ACCEPTED
        .iter()
        .map(|hex| {
            let frame = codec::parse(&vectors::bytes(hex)).expect("accepted vector parses");
            let msg = Message::encode("tspi", &frame, recv());
            (frame, msg)
        })
        .collect()
}

fn msg_id_headers(msg: &Message) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(NATS_MESSAGE_ID, msg.msg_id.as_str());
    headers
}

/// Publish each message with its `Nats-Msg-Id`, pipelined, then await the
/// acks; returns them in order.
async fn publish_all(
    js: &jetstream::Context,
    msgs: &[&Message],
) -> Vec<jetstream::publish::PublishAck> {
    let mut pending = Vec::new();
    for msg in msgs {
        let fut = js
            .publish_with_headers(
                msg.subject.clone(),
                msg_id_headers(msg),
                msg.body.clone().into(),
            )
            .await
            .expect("publish");
        pending.push(fut);
    }
    let mut acks = Vec::new();
    for (msg, fut) in msgs.iter().zip(pending) {
        let ack = match fut.await {
            Ok(ack) => ack,
            // Right after a replicated stream is created, the stream's
            // subject interest may not have reached this server yet ("no
            // responders"): publish again with the same id, bounded.
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound => {
                eventually(
                    "stream answers publishes",
                    Duration::from_secs(10),
                    || async {
                        js.publish_with_headers(
                            msg.subject.clone(),
                            msg_id_headers(msg),
                            msg.body.clone().into(),
                        )
                        .await
                        .map_err(|e| e.to_string())?
                        .await
                        .map_err(|e| e.to_string())
                    },
                )
                .await
            }
            Err(e) => panic!("publish ack: {e}"),
        };
        acks.push(ack);
    }
    acks
}

/// Retry `f` until it returns `Some`, or panic with `what` after `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match f().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "{what}: not done after {timeout:?}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stream_info(js: &jetstream::Context) -> Result<stream::Info, String> {
    let mut s = js
        .get_stream(STREAM_TELEMETRY)
        .await
        .map_err(|e| e.to_string())?;
    s.info().await.cloned().map_err(|e| e.to_string())
}

/// Wait until the stream reports `n` messages.
async fn wait_messages(js: &jetstream::Context, n: u64) -> stream::Info {
    eventually(
        &format!("stream holds {n} messages"),
        STREAM_WAIT,
        || async {
            let info = stream_info(js).await?;
            if info.state.messages == n {
                Ok(info)
            } else {
                Err(format!("{} messages", info.state.messages))
            }
        },
    )
    .await
}

/// Read message `seq` back and check it is `msg`, body and all.
async fn check_stored(js: &jetstream::Context, seq: u64, frame: &Frame, msg: &Message) {
    let stream = js.get_stream(STREAM_TELEMETRY).await.expect("get stream");
    let stored = stream.get_raw_message(seq).await.expect("get message");
    assert_eq!(stored.sequence, seq);
    assert_eq!(stored.subject.as_str(), msg.subject);
    assert_eq!(
        stored.headers.get(NATS_MESSAGE_ID).map(|v| v.as_str()),
        Some(msg.msg_id.as_str()),
        "Nats-Msg-Id header of seq {seq}"
    );
    assert_eq!(&stored.payload[..], &msg.body[..], "body of seq {seq}");
    let record: Record =
        ciborium::from_reader(&stored.payload[..]).expect("CBOR body decodes as Record");
    assert_eq!(record, Record::new(frame, recv()), "record of seq {seq}");
}

#[test]
fn binary_is_new_enough() {
    let bin = nats_server_binary().expect("nats-server resolves");
    let out = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap();
    let version = parse_nats_version(&String::from_utf8_lossy(&out.stdout)).expect("version");
    assert!(version >= (2, 14, 0), "{} is {version:?}", bin.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn single_node_vectors_roundtrip_and_dedup() {
    let server = block_in_place(NatsServer::start).expect("start nats-server");
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client);

    let config = telemetry_stream("tspi", &StreamSettings::default());
    let info = ensure_stream(&js, config.clone(), STREAM_WAIT)
        .await
        .expect("create stream");
    assert_eq!(info.config.name, STREAM_TELEMETRY);
    assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
    let again = ensure_stream(&js, config, STREAM_WAIT)
        .await
        .expect("second ensure_stream is idempotent");
    assert_eq!(again.config.subjects, info.config.subjects);

    let msgs = vector_messages();
    let acks = publish_all(&js, &msgs.iter().map(|(_, m)| m).collect::<Vec<_>>()).await;
    for (i, ack) in acks.iter().enumerate() {
        assert_eq!(ack.stream, STREAM_TELEMETRY);
        assert_eq!(ack.sequence, i as u64 + 1);
        assert!(!ack.duplicate, "vector {i} is new");
    }
    for ((frame, msg), ack) in msgs.iter().zip(&acks) {
        check_stored(&js, ack.sequence, frame, msg).await;
    }

    // The same message again, same Nats-Msg-Id: JetStream drops it.
    let (_, first) = &msgs[0];
    let dup = publish_all(&js, &[first]).await.remove(0);
    assert!(
        dup.duplicate,
        "republished vector 1 is a duplicate: {dup:?}"
    );
    assert_eq!(dup.sequence, 1, "a duplicate's ack names the original");
    let info = wait_messages(&js, 4).await;
    assert_eq!(info.state.last_sequence, 4);

    assert!(
        server.log_tail(200).contains("Server is ready"),
        "{}",
        server.log_tail(50)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_of_three_survives_a_node_loss() {
    let mut cluster = block_in_place(|| NatsCluster::start(3)).expect("start cluster");
    assert_eq!(cluster.urls().len(), 3);
    let client = async_nats::connect(cluster.urls()).await.expect("connect");
    let js = jetstream::new(client);

    let settings = StreamSettings {
        replicas: 3,
        ..StreamSettings::default()
    };
    let started = Instant::now();
    let info = ensure_stream(&js, telemetry_stream("tspi", &settings), STREAM_WAIT)
        .await
        .expect("create R3 stream");
    eprintln!(
        "R3 stream created {:?} after the cluster was ready",
        started.elapsed()
    );
    assert_eq!(info.config.num_replicas, 3);

    let msgs = vector_messages();
    let acks = publish_all(&js, &msgs.iter().map(|(_, m)| m).collect::<Vec<_>>()).await;
    assert!(acks.iter().all(|a| !a.duplicate));
    let info = wait_messages(&js, 4).await;
    for ((frame, msg), ack) in msgs.iter().zip(&acks) {
        check_stored(&js, ack.sequence, frame, msg).await;
    }

    // Kill the stream's leader: the worst node to lose.
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("stream has a leader");
    let victim = cluster.index_of(&leader).expect("leader is one of ours");
    eprintln!("killing n{victim}, leader of {STREAM_TELEMETRY}");
    block_in_place(|| cluster.node_mut(victim).kill());
    assert!(!cluster.node_mut(victim).is_running());

    // One more unique message: the two survivors elect a new leader and
    // accept it. Retries reuse the msg id, so a retry after a lost ack
    // cannot store it twice.
    let (frame, _) = &msgs[0];
    let mut fresh = *frame;
    fresh.time_ticks += 1;
    let msg = Message::encode("tspi", &fresh, recv());
    assert_ne!(msg.msg_id, msgs[0].1.msg_id);
    let failover = Instant::now();
    let ack = eventually(
        "publish after losing the leader",
        Duration::from_secs(30),
        || async {
            let fut = js
                .publish_with_headers(
                    msg.subject.clone(),
                    msg_id_headers(&msg),
                    msg.body.clone().into(),
                )
                .await
                .map_err(|e| e.to_string())?;
            fut.await.map_err(|e| e.to_string())
        },
    )
    .await;
    eprintln!(
        "published after {:?} without the leader",
        failover.elapsed()
    );
    assert_eq!(ack.sequence, 5);
    let info = wait_messages(&js, 5).await;
    let new_leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
    assert_ne!(new_leader.as_deref(), Some(leader.as_str()));
    check_stored(&js, 5, &fresh, &msg).await;

    // The node comes back and catches up.
    block_in_place(|| cluster.node_mut(victim).restart()).expect("restart node");
    block_in_place(|| cluster.wait_healthy(Duration::from_secs(30)))
        .expect("cluster healthy again");
    eventually(
        "restarted node is a current replica",
        Duration::from_secs(30),
        || async {
            let info = stream_info(&js).await?;
            let c = info.cluster.ok_or("no cluster info")?;
            let all_current =
                c.replicas.len() == 2 && c.replicas.iter().all(|p| p.current && !p.offline);
            if all_current && info.state.messages == 5 {
                Ok(())
            } else {
                Err(format!("leader {:?}, replicas {:?}", c.leader, c.replicas))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_after_kill_keeps_the_store() {
    let mut server = block_in_place(NatsServer::start).expect("start nats-server");
    let port = server.port();
    let js = jetstream::new(async_nats::connect(server.url()).await.expect("connect"));
    ensure_stream(
        &js,
        telemetry_stream("tspi", &StreamSettings::default()),
        STREAM_WAIT,
    )
    .await
    .expect("create stream");
    let msgs = vector_messages();
    publish_all(&js, &msgs.iter().map(|(_, m)| m).collect::<Vec<_>>()).await;
    wait_messages(&js, 4).await;
    drop(js);

    block_in_place(|| server.kill());
    assert!(!server.is_running());
    server.kill(); // idempotent
    block_in_place(|| server.restart()).expect("restart");
    assert_eq!(server.port(), port, "same port after restart");

    let js = jetstream::new(async_nats::connect(server.url()).await.expect("reconnect"));
    wait_messages(&js, 4).await;
    for (i, (frame, msg)) in msgs.iter().enumerate() {
        check_stored(&js, i as u64 + 1, frame, msg).await;
    }
    // The duplicate window is rebuilt from the store: still a duplicate.
    let dup = publish_all(&js, &[&msgs[3].1]).await.remove(0);
    assert!(
        dup.duplicate,
        "duplicate detected across a restart: {dup:?}"
    );
    wait_messages(&js, 4).await;

    // A graceful stop and start keeps it too.
    block_in_place(|| server.stop());
    server.stop(); // idempotent
    block_in_place(|| server.restart()).expect("restart after stop");
    let js = jetstream::new(async_nats::connect(server.url()).await.expect("reconnect"));
    wait_messages(&js, 4).await;
}
