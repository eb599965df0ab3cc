//! Shared by the replay and channels tests: a recorded session published
//! into a real nats-server.

#![allow(dead_code)]

use async_nats::HeaderMap;
use async_nats::jetstream;
use std::time::Duration;
use tspi::codec::{self, Frame, vectors};
use tspi::jetstream::{StreamSettings, ensure_stream, ops_stream, replay_stream, telemetry_stream};
use tspi::message::{Message, RecvTime};

pub const WAIT: Duration = Duration::from_secs(20);

/// 2023-11-14T22:13:20Z: the recording's first receive time.
pub const T0_NS: u64 = 1_700_000_000_000_000_000;

/// Frame `i`: alternating types, distinct sensors and times.
pub fn frame(i: u64) -> Frame {
    let mut f = codec::parse(&vectors::bytes(if i.is_multiple_of(2) {
        vectors::GEOCENTRIC_1
    } else {
        vectors::SPHERICAL_2
    }))
    .unwrap();
    f.sensor_id = 100 + (i % 7) as u16;
    f.time_ticks = 10_000 + i as u32;
    f
}

/// Messages received at `T0_NS + offsets[i]`.
pub fn recording(offsets_ns: &[u64]) -> Vec<(RecvTime, Message, Frame)> {
    offsets_ns
        .iter()
        .enumerate()
        .map(|(i, &o)| {
            let f = frame(i as u64);
            let recv = RecvTime::from_unix_ns(T0_NS + o);
            (recv, Message::encode("tspi", &f, recv), f)
        })
        .collect()
}

/// `n` offsets `step_ns` apart.
pub fn even(n: u64, step_ns: u64) -> Vec<u64> {
    (0..n).map(|i| i * step_ns).collect()
}

/// A real nats-server with the contract's streams, and a client on it.
pub async fn nats_with_streams() -> (
    tspi::harness::NatsServer,
    async_nats::Client,
    jetstream::Context,
) {
    let nats = tspi::harness::NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    streams(&js).await;
    (nats, client, js)
}

pub async fn streams(js: &jetstream::Context) {
    let s = StreamSettings::default();
    for cfg in [
        telemetry_stream("tspi", &s),
        replay_stream(&s),
        ops_stream(&s),
    ] {
        ensure_stream(js, cfg, WAIT).await.expect("stream");
    }
}

/// Publish with `Nats-Msg-Id`, pipelined, every ack awaited.
pub async fn publish(js: &jetstream::Context, msgs: &[(String, String, Vec<u8>)]) {
    let mut acks = Vec::new();
    for (subject, id, body) in msgs {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", id.as_str());
        acks.push(
            js.publish_with_headers(subject.clone(), h, body.clone().into())
                .await
                .expect("publish"),
        );
    }
    for a in acks {
        a.await.expect("ack");
    }
}

pub async fn publish_recording(js: &jetstream::Context, rec: &[(RecvTime, Message, Frame)]) {
    let msgs: Vec<_> = rec
        .iter()
        .map(|(_, m, _)| (m.subject.clone(), m.msg_id.clone(), m.body.clone()))
        .collect();
    publish(js, &msgs).await;
}

/// A tag body as the toolkit sends it: `{id, ts, label, status, updated_ts}`.
pub fn tag_body(id: &str, ts_ns: u64, label: &str) -> Vec<u8> {
    use ciborium::Value as V;
    let iso = String::from_utf8(RecvTime::from_unix_ns(ts_ns).iso().to_vec()).unwrap();
    let v = V::Map(vec![
        (V::Text("id".into()), V::Text(id.into())),
        (V::Text("ts".into()), V::Text(iso.clone())),
        (V::Text("label".into()), V::Text(label.into())),
        (V::Text("status".into()), V::Text("active".into())),
        (V::Text("updated_ts".into()), V::Text(iso)),
    ]);
    let mut out = Vec::new();
    ciborium::into_writer(&v, &mut out).unwrap();
    out
}

pub async fn publish_tags(js: &jetstream::Context, tags: &[(&str, u64, &str)]) {
    let msgs: Vec<_> = tags
        .iter()
        .map(|(id, ts, label)| {
            (
                "tags.broadcast".to_owned(),
                (*id).to_owned(),
                tag_body(id, *ts, label),
            )
        })
        .collect();
    publish(js, &msgs).await;
}

/// Messages on a subscription until `n` arrived or `within` passed, with
/// their arrival time (monotonic ns).
pub async fn collect(
    sub: &mut async_nats::Subscriber,
    n: usize,
    within: Duration,
) -> Vec<(u64, async_nats::Message)> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(m)) => out.push((tspi::clock::mono_ns(), m)),
            _ => break,
        }
    }
    out
}

pub fn header(m: &async_nats::Message, name: &str) -> Option<String> {
    m.headers.as_ref()?.get(name).map(|v| v.to_string())
}

/// Messages stored in a stream.
pub async fn stored(js: &jetstream::Context, stream: &str) -> u64 {
    let mut s = js.get_stream(stream).await.expect("stream");
    s.info().await.expect("info").state.messages
}
