//! Codec and encoder throughput: the per-datagram work of the ingest path.
//!
//! `cargo bench --bench codec` measures; `cargo test --benches` runs each
//! benchmark once as a smoke test (CI does that).
//!
//! Groups, each over a batch of 1024 mixed datagrams (3 geocentric : 1
//! spherical, varying sensors and times), reported per datagram:
//! - `parse`: bytes → frame;
//! - `message`: frame → subject + `Nats-Msg-Id` + CBOR body into reused
//!   buffers (what the publisher does per datagram);
//! - `cbor_body`: our body writer vs. serde + ciborium serialising the same
//!   record, side by side (ciborium also shrinks floats to f16/f32 where
//!   lossless, which the contract forbids, so it is a cost baseline only);
//! - `json`: the JSON record (used by `tspi decode`).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tspi::codec::{self, DATAGRAM_LEN, Frame};
use tspi::message::{self, Record, RecvTime};

const BATCH_LEN: usize = 1024;
const RECV: RecvTime = RecvTime::from_unix_ns(1_700_000_000_123_456_789);

fn frames() -> Vec<Frame> {
    tspi_testkit::frames::codec_batch(BATCH_LEN)
}

fn bench_parse(c: &mut Criterion) {
    let wire: Vec<[u8; DATAGRAM_LEN]> = frames().iter().map(Frame::encode).collect();
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(BATCH_LEN as u64));
    g.bench_function("tspi_v4", |b| {
        b.iter(|| {
            for d in &wire {
                black_box(codec::parse(black_box(d.as_slice())).ok());
            }
        })
    });
    g.finish();
}

fn bench_message(c: &mut Criterion) {
    let frames = frames();
    let mut g = c.benchmark_group("message");
    g.throughput(Throughput::Elements(BATCH_LEN as u64));
    let (mut subject, mut id, mut body) = (String::new(), String::new(), Vec::new());
    g.bench_function("subject_id_cbor_reused_buffers", |b| {
        b.iter(|| {
            for f in &frames {
                subject.clear();
                id.clear();
                body.clear();
                message::write_subject("tspi", f, &mut subject);
                message::write_msg_id(f, &mut id);
                message::encode_cbor(f, RECV, &mut body);
                black_box((&subject, &id, &body));
            }
        })
    });
    g.bench_function("owned_message", |b| {
        b.iter(|| {
            for f in &frames {
                black_box(message::Message::encode("tspi", f, RECV));
            }
        })
    });
    g.finish();
}

fn bench_cbor(c: &mut Criterion) {
    let frames = frames();
    let records: Vec<Record> = frames.iter().map(|f| Record::new(f, RECV)).collect();
    let mut g = c.benchmark_group("cbor_body");
    g.throughput(Throughput::Elements(BATCH_LEN as u64));
    let mut body = Vec::with_capacity(message::BODY_LEN_MAX);
    g.bench_function("tspi_writer", |b| {
        b.iter(|| {
            for f in &frames {
                body.clear();
                message::encode_cbor(f, RECV, &mut body);
                black_box(&body);
            }
        })
    });
    g.bench_function("ciborium_serde_from_record", |b| {
        b.iter_batched_ref(
            || Vec::with_capacity(message::BODY_LEN_MAX),
            |out: &mut Vec<u8>| {
                for r in &records {
                    out.clear();
                    ciborium::into_writer(r, &mut *out).expect("serialises");
                    black_box(&out);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn bench_json(c: &mut Criterion) {
    let frames = frames();
    let mut g = c.benchmark_group("json");
    g.throughput(Throughput::Elements(BATCH_LEN as u64));
    let mut out = Vec::with_capacity(700);
    g.bench_function("record_to_json", |b| {
        b.iter(|| {
            for f in &frames {
                out.clear();
                serde_json::to_writer(&mut out, &Record::new(f, RECV)).expect("serialises");
                black_box(&out);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench_parse, bench_message, bench_cbor, bench_json);
criterion_main!(benches);
