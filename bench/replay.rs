//! Original-rate replay: how closely messages keep their recorded spacing,
//! our pacer against JetStream's own `ReplayPolicy::Original` consumer,
//! side by side in one run against one real nats-server.
//!
//! `cargo bench --bench replay` (full: a 60 s recording at 20k msgs/s,
//! about 4 minutes) or `cargo bench --bench replay -- --quick` (10 s).
//! `cargo test --benches` runs a 1 s smoke form.
//!
//! 1. **record**: 20k msgs/s for the duration published into `TSPI` in
//!    real time (our own pacer drives the publisher), so both the receive
//!    times in the bodies and the server's store times are spaced 50 µs;
//! 2. **ours**: `tspi replay`'s pipeline in-process: `TSPI` from sequence 1
//!    → pacer (sleep then spin) → JetStream publish into
//!    `tspi.channel.replay.bench<k>` (`TSPI_REPLAY`), three times: ordinary
//!    scheduling (the default), and the pacing thread under `SCHED_FIFO`
//!    spinning the last 30 µs before each message or only sleeping;
//! 3. **native**: a push consumer on `TSPI` with `ReplayPolicy::Original`
//!    delivering to `tspi.channel.replay.native` (the server paces by store
//!    time; it sleeps only for gaps over 1 ms, measured from the previous
//!    message).
//!
//! Both are measured the same way, at a subscriber on its own connection:
//! message `i`'s error is `(arrival_i - arrival_0) - (t_i - t_0)` with
//! `t` the recorded time it is paced by (receive time for ours, store time
//! for native); reported as |error| p50/p99/max, and the drift of the last
//! message. Ours also reports its pacing thread's own histogram (send time
//! minus scheduled time), before the network.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tspi::jetstream::{StreamSettings, ensure_stream, replay_stream, telemetry_stream};
use tspi::message::{Message, RecvTime};
use tspi::replay::channels::ChannelId;
use tspi::replay::driver::{DriverConfig, Job};
use tspi::replay::sink::{ChannelSink, Sink, SinkLimits, SinkStats};
use tspi::replay::source::{Source, SourceStats, StartAt, StreamSource};
use tspi::replay::time::body_recv_ns;
use tspi::replay::{Item, ItemKind, ReplayError};
use tspi_testkit::frames::frame;
use tspi_testkit::harness::NatsServer;

const RATE_PER_S: u64 = 20_000;
const STEP_NS: u64 = 1_000_000_000 / RATE_PER_S;

/// The recording, generated as it is played (no 1.2M-item list in memory):
/// message `i` received at `t0 + i × 50 µs`.
struct Generator {
    t0_ns: u64,
    n: u64,
    at: u64,
}

impl Source for Generator {
    fn open(&mut self, from_ns: Option<u64>) -> Result<(), ReplayError> {
        self.at = from_ns.map_or(0, |f| f.saturating_sub(self.t0_ns).div_ceil(STEP_NS));
        Ok(())
    }

    fn next(&mut self) -> Result<Option<Item>, ReplayError> {
        if self.at >= self.n {
            return Ok(None);
        }
        let i = self.at;
        self.at += 1;
        let recv = RecvTime::from_unix_ns(self.t0_ns + i * STEP_NS);
        let m = Message::encode("tspi", &frame(i), recv);
        Ok(Some(Item {
            rec_ns: recv.unix_ns,
            kind: ItemKind::Telemetry {
                subject: m.subject,
                msg_id: m.msg_id,
                body: Bytes::from(m.body),
                datagram: None,
            },
        }))
    }

    fn stats(&self) -> SourceStats {
        SourceStats {
            telemetry: self.at,
            ..SourceStats::default()
        }
    }
}

/// Publishes each item to its own subject (the recording phase stands in
/// for ingest).
struct Recorder {
    handle: tokio::runtime::Handle,
    js: jetstream::Context,
    permits: Arc<tokio::sync::Semaphore>,
    acked: Arc<AtomicU64>,
    sent: u64,
}

impl Sink for Recorder {
    fn emit(&mut self, item: Item, _epoch: u32) -> Result<(), ReplayError> {
        let ItemKind::Telemetry {
            subject,
            msg_id,
            body,
            ..
        } = &item.kind
        else {
            return Ok(());
        };
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", msg_id.as_str());
        let permit = self
            .handle
            .block_on(self.permits.clone().acquire_owned())
            .expect("semaphore");
        let ack = self
            .handle
            .block_on(
                self.js
                    .publish_with_headers(subject.clone(), h, body.clone()),
            )
            .map_err(|e| ReplayError::Sink(e.to_string()))?;
        let acked = self.acked.clone();
        self.handle.spawn(async move {
            if ack.await.is_ok() {
                acked.fetch_add(1, Relaxed);
            }
            drop(permit);
        });
        self.sent += 1;
        Ok(())
    }

    fn finish(&mut self, wait: Duration) -> SinkStats {
        let p = self.permits.clone();
        let _ = self
            .handle
            .block_on(async move { tokio::time::timeout(wait, p.acquire_many_owned(4096)).await });
        SinkStats {
            sent: self.sent,
            acked: self.acked.load(Relaxed),
            ..SinkStats::default()
        }
    }
}

/// Counts and drops (the pacer measured alone).
#[derive(Default)]
struct Discard {
    n: u64,
}

impl Sink for Discard {
    fn emit(&mut self, item: Item, _epoch: u32) -> Result<(), ReplayError> {
        std::hint::black_box(item);
        self.n += 1;
        Ok(())
    }

    fn finish(&mut self, _wait: Duration) -> SinkStats {
        SinkStats {
            sent: self.n,
            ..SinkStats::default()
        }
    }
}

/// Arrivals on a subject: (monotonic arrival ns, the recorded ns it is
/// paced by).
async fn arrivals(
    mut sub: async_nats::Subscriber,
    n: u64,
    store_time: bool,
    within: Duration,
) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(n as usize);
    let deadline = tokio::time::Instant::now() + within;
    while (out.len() as u64) < n {
        let Ok(Some(m)) = tokio::time::timeout_at(deadline, sub.next()).await else {
            break;
        };
        let at = tspi::clock::mono_ns();
        let t = if store_time {
            // $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
            m.reply
                .as_ref()
                .and_then(|r| r.split('.').nth(7))
                .and_then(|t| t.parse::<u64>().ok())
        } else {
            body_recv_ns(&m.payload)
        };
        out.push((at, t.unwrap_or(0)));
    }
    out
}

struct Spacing {
    n: usize,
    abs_error: Histogram<u64>,
    /// Delay variation: each message's delay over the least delayed
    /// message's (RFC 5481 PDV), so one late first arrival shifts nothing.
    pdv: Histogram<u64>,
    drift_end_ns: i64,
    min_ns: i64,
    max_ns: i64,
}

fn spacing(a: &[(u64, u64)]) -> Option<Spacing> {
    let (a0, t0) = *a.first()?;
    let mut h = Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("bounds");
    let (mut min, mut max, mut last) = (i64::MAX, i64::MIN, 0i64);
    let error = |&(at, t): &(u64, u64)| (at - a0) as i64 - (t as i64 - t0 as i64);
    for e in a.iter().map(error) {
        h.saturating_record(e.unsigned_abs());
        min = min.min(e);
        max = max.max(e);
        last = e;
    }
    let mut pdv = Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("bounds");
    for e in a.iter().map(error) {
        pdv.saturating_record((e - min) as u64);
    }
    Some(Spacing {
        n: a.len(),
        abs_error: h,
        pdv,
        drift_end_ns: last,
        min_ns: min,
        max_ns: max,
    })
}

fn line(label: &str, s: &Option<Spacing>, expected: u64) -> String {
    match s {
        None => format!("{label}: nothing arrived"),
        Some(s) => format!(
            "{label}: {} of {expected} arrived | |error| p50 {:.1} us  p99 {:.1} us  p99.9 {:.1} us  max {:.1} us | delay over the least delayed p50 {:.1} us  p99 {:.1} us | signed min {:.1} us max {:.1} us | drift at end {:+.1} us",
            s.n,
            s.abs_error.value_at_quantile(0.5) as f64 / 1e3,
            s.abs_error.value_at_quantile(0.99) as f64 / 1e3,
            s.abs_error.value_at_quantile(0.999) as f64 / 1e3,
            s.abs_error.max() as f64 / 1e3,
            s.pdv.value_at_quantile(0.5) as f64 / 1e3,
            s.pdv.value_at_quantile(0.99) as f64 / 1e3,
            s.min_ns as f64 / 1e3,
            s.max_ns as f64 / 1e3,
            s.drift_end_ns as f64 / 1e3,
        ),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench_mode = args.iter().any(|a| a == "--bench");
    let quick = args.iter().any(|a| a == "--quick");
    let smoke = !bench_mode;
    let secs: u64 = if smoke {
        1
    } else if quick {
        10
    } else {
        60
    };
    let n = secs * RATE_PER_S;
    println!(
        "== replay bench ({}): {secs} s at {RATE_PER_S} msgs/s = {n} messages, 1x ==",
        if smoke {
            "smoke"
        } else if quick {
            "quick"
        } else {
            "full"
        }
    );
    let server = NatsServer::start().expect("nats-server (run ./scripts/setup)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let handle = rt.handle().clone();
    let _guard = rt.enter();
    let client = rt
        .block_on(async_nats::connect(server.url()))
        .expect("connect");
    let js = jetstream::new(client.clone());
    let settings = StreamSettings {
        duplicate_window: Duration::from_secs(30),
        ..StreamSettings::default()
    };
    rt.block_on(async {
        ensure_stream(
            &js,
            telemetry_stream("tspi", &settings),
            Duration::from_secs(20),
        )
        .await?;
        ensure_stream(&js, replay_stream(&settings), Duration::from_secs(20)).await
    })
    .expect("streams");

    // 0. The pacer alone (no NATS): its own precision on this box.
    let alone = Job::spawn(
        "alone",
        Box::new(Generator {
            t0_ns: RecvTime::now().unix_ns,
            n,
            at: 0,
        }),
        Box::new(Discard::default()),
        DriverConfig::default(),
    )
    .expect("pacer")
    .wait_blocking()
    .expect("pacer ran");
    println!(
        "pacer alone (generated items, discarding sink): p50 {:.1} us  p99 {:.1} us  p99.9 {:.1} us  max {:.1} us  drift at end {:+.1} us",
        alone.pace.error_ns.value_at_quantile(0.5) as f64 / 1e3,
        alone.pace.error_ns.value_at_quantile(0.99) as f64 / 1e3,
        alone.pace.error_ns.value_at_quantile(0.999) as f64 / 1e3,
        alone.pace.error_ns.max() as f64 / 1e3,
        alone.pace.drift_end_ns as f64 / 1e3,
    );

    // 1. Record in real time.
    let t0 = RecvTime::now().unix_ns;
    let rec = Job::spawn(
        "record",
        Box::new(Generator {
            t0_ns: t0,
            n,
            at: 0,
        }),
        Box::new(Recorder {
            handle: handle.clone(),
            js: js.clone(),
            permits: Arc::new(tokio::sync::Semaphore::new(4096)),
            acked: Arc::default(),
            sent: 0,
        }),
        DriverConfig::default(),
    )
    .expect("recorder")
    .wait_blocking()
    .expect("recording");
    println!(
        "record: {} published, {} acked; publisher pacing error p99 {:.1} us",
        rec.sink.sent,
        rec.sink.acked,
        rec.pace.error_ns.value_at_quantile(0.99) as f64 / 1e3
    );
    assert_eq!(rec.sink.acked, n, "recording incomplete");

    // Ceilings: how fast the stream source reads, and the whole pipeline
    // goes, unpaced (rate 1000), on this box, now.
    let unpaced = DriverConfig {
        rate: tspi::replay::pacer::Rate::new(1000.0).expect("rate"),
        ..DriverConfig::default()
    };
    let mut source = StreamSource::new(handle.clone(), js.clone(), StartAt::Sequence(1), None);
    source.with_tags = false;
    let t = std::time::Instant::now();
    let read = Job::spawn(
        "read",
        Box::new(source),
        Box::new(Discard::default()),
        unpaced,
    )
    .expect("read")
    .wait_blocking()
    .expect("read ran");
    println!(
        "ceiling, stream source alone: {:.0} msgs/s ({} read)",
        read.pace.telemetry as f64 / t.elapsed().as_secs_f64(),
        read.pace.telemetry
    );
    let mut source = StreamSource::new(handle.clone(), js.clone(), StartAt::Sequence(1), None);
    source.with_tags = false;
    let sink = ChannelSink::new(
        handle.clone(),
        js.clone(),
        ChannelId::parse("replay.ceiling").expect("channel"),
        "tags.broadcast".into(),
        SinkLimits::acks(2048),
    );
    let t = std::time::Instant::now();
    let piped = Job::spawn("ceiling", Box::new(source), Box::new(sink), unpaced)
        .expect("pipeline")
        .wait_blocking()
        .expect("pipeline ran");
    println!(
        "ceiling, stream -> channel (JetStream publish, acked): {:.0} msgs/s ({} acked)",
        piped.sink.acked as f64 / t.elapsed().as_secs_f64(),
        piped.sink.acked
    );

    // 2. Ours, with ordinary scheduling (the default) and with the pacing
    //    thread under SCHED_FIFO (`channels.pacing_realtime_priority`),
    //    spinning the last 30 µs or only sleeping, one after the other.
    let sub_client = rt
        .block_on(async_nats::connect(server.url()))
        .expect("connect");
    let within = Duration::from_secs(secs * 2 + 30);
    let variants = [
        ("ours, ordinary scheduling", DriverConfig::default()),
        (
            "ours, SCHED_FIFO 10, spin 30 us",
            DriverConfig {
                realtime_priority: Some(10),
                spin: Duration::from_micros(30),
                ..DriverConfig::default()
            },
        ),
        (
            "ours, SCHED_FIFO 10, no spin",
            DriverConfig {
                realtime_priority: Some(10),
                spin: Duration::ZERO,
                ..DriverConfig::default()
            },
        ),
    ];
    let mut ours_lines = Vec::new();
    for (k, (label, cfg)) in variants.into_iter().enumerate() {
        // The harness's server holds 2 GB of file store: make room.
        rt.block_on(async {
            js.get_stream("TSPI_REPLAY").await?.purge().await?;
            Ok::<_, anyhow::Error>(())
        })
        .expect("purge TSPI_REPLAY");
        let channel = ChannelId::parse(&format!("replay.bench{k}")).expect("channel");
        let sub = rt
            .block_on(async {
                let s = sub_client.subscribe(channel.subject()).await?;
                sub_client.flush().await?;
                Ok::<_, anyhow::Error>(s)
            })
            .expect("subscribe");
        let collector = rt.spawn(arrivals(sub, n, false, within));
        let mut source = StreamSource::new(handle.clone(), js.clone(), StartAt::Sequence(1), None);
        source.with_tags = false;
        let sink = ChannelSink::new(
            handle.clone(),
            js.clone(),
            channel,
            "tags.broadcast".into(),
            SinkLimits::acks(2048),
        );
        let ours = match Job::spawn("ours", Box::new(source), Box::new(sink), cfg)
            .expect("replay")
            .wait_blocking()
        {
            Ok(o) => o,
            Err(e) => {
                // SCHED_FIFO refused (no CAP_SYS_NICE): say so, go on.
                collector.abort();
                ours_lines.push(format!("{label}: not run: {e}"));
                continue;
            }
        };
        let got = rt.block_on(collector).expect("collector");
        ours_lines.push(format!(
            "{label}, pacing thread (send minus scheduled): p50 {:.1} us  p99 {:.1} us  p99.9 {:.1} us  max {:.1} us  drift at end {:+.1} us | waits: source p99.9 {:.1} us max {:.1} us, sink p99.9 {:.1} us max {:.1} us ({} sent, {} acked, {} failed)",
            ours.pace.error_ns.value_at_quantile(0.5) as f64 / 1e3,
            ours.pace.error_ns.value_at_quantile(0.99) as f64 / 1e3,
            ours.pace.error_ns.value_at_quantile(0.999) as f64 / 1e3,
            ours.pace.error_ns.max() as f64 / 1e3,
            ours.pace.drift_end_ns as f64 / 1e3,
            ours.pace.source_wait_ns.value_at_quantile(0.999) as f64 / 1e3,
            ours.pace.source_wait_ns.max() as f64 / 1e3,
            ours.pace.sink_wait_ns.value_at_quantile(0.999) as f64 / 1e3,
            ours.pace.sink_wait_ns.max() as f64 / 1e3,
            ours.sink.sent,
            ours.sink.acked,
            ours.sink.failed,
        ));
        ours_lines.push(line(
            &format!("{label}, at a subscriber"),
            &spacing(&got),
            n,
        ));
        if smoke && k == 0 {
            assert_eq!(ours.pace.telemetry, n, "ours replayed everything");
            assert_eq!(got.len() as u64, n, "ours: every message arrived");
        }
    }

    // 3. JetStream-native ReplayPolicy::Original.
    let native_subject = "tspi.channel.replay.native";
    let sub = rt
        .block_on(async {
            let s = sub_client.subscribe(native_subject).await?;
            sub_client.flush().await?;
            Ok::<_, anyhow::Error>(s)
        })
        .expect("subscribe");
    let collector = rt.spawn(arrivals(sub, n, true, within));
    rt.block_on(async {
        let stream = js.get_stream("TSPI").await?;
        stream
            .create_consumer(consumer::push::Config {
                name: Some("BENCH_NATIVE".into()),
                deliver_subject: native_subject.into(),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::None,
                replay_policy: consumer::ReplayPolicy::Original,
                ..Default::default()
            })
            .await?;
        Ok::<_, anyhow::Error>(())
    })
    .expect("native consumer");
    let native_arrivals = rt.block_on(collector).expect("collector");
    let native_spacing = spacing(&native_arrivals);

    for l in &ours_lines {
        println!("{l}");
    }
    println!(
        "{}",
        line("native Original, at a subscriber", &native_spacing, n)
    );
    if smoke {
        assert_eq!(
            native_arrivals.len() as u64,
            n,
            "native: every message arrived"
        );
    }
}
