//! Ingest capacity and latency, side by side in one run on one box.
//!
//! `cargo bench --bench ingest` (full: about 6 minutes) or
//! `cargo bench --bench ingest -- --quick` (about 30 s). `cargo test
//! --benches` runs the quick form with tiny counts as a smoke test.
//!
//! Against one real nats-server (file storage, `TSPI` stream with the
//! appliance's default settings: duplicate window 30 s, replicas 1):
//!
//! 1. **ceiling**: a bare async-nats pipelined publish loop of pre-encoded
//!    contract messages (same sizes, same `Nats-Msg-Id` scheme), 2048 acks in
//!    flight, into a fresh stream;
//! 2. **appliance**: the release `tspi ingest` binary as its own process, fed
//!    over loopback UDP on an open-loop schedule by a GSO sender, each run
//!    into a fresh stream. A rate is *sustained* when every datagram is
//!    acked (no kernel, ring or publish loss, stream count = sent) and the
//!    last ack comes within 2 s of the last send. The search steps up from
//!    half the ceiling, then bisects;
//! 3. **latency** at 20k and 50k datagrams/s: the appliance's receive→ack
//!    histogram (merged from its own HdrHistogram snapshots on
//!    `tspi.ops.metrics.ingest.<host>`) and end-to-end, scheduled send →
//!    delivered by an ordered consumer of the stream (no coordinated
//!    omission: from the *scheduled* time);
//!    Beside them, the floor: a bare async-nats client publishing at the
//!    same rate on the same schedule, scheduled publish → ack;
//! 4. **CPU per datagram** of the appliance process (utime + stime from
//!    /proc/<pid>/stat over the run, divided by datagrams received).
//!
//! The io_uring vs recvmmsg receive rate per core is `bench/receive.rs`.

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use std::future::IntoFuture;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tspi::codec::{DATAGRAM_LEN, Frame};
use tspi::jetstream::{StreamSettings, ensure_stream, telemetry_stream};
use tspi::message::{self, RecvTime};
use tspi::send::DatagramSender;
use tspi_loadgen::Pacer;
use tspi_testkit::harness::NatsServer;
use tspi_testkit::proc::cpu_seconds;
// Datagram i is sensor `i % SENSORS` at tick `i / SENSORS`; `index_of`
// inverts a message id.
use tspi_testkit::frames::{frame, index_of};

const DUPLICATE_WINDOW: Duration = Duration::from_secs(30);

/// Publish `f`'s contract message (subject, `Nats-Msg-Id`, CBOR body) as a
/// bare client would.
async fn publish_contract(
    js: &async_nats::jetstream::Context,
    f: &Frame,
    recv: RecvTime,
) -> async_nats::jetstream::context::PublishAckFuture {
    let m = message::Message::encode("tspi", f, recv);
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", m.msg_id.as_str());
    js.publish_with_headers(m.subject, h, Bytes::from(m.body))
        .await
        .expect("publish")
}

/// Run `pacer`'s open-loop schedule on this thread: sleep (at most 200 µs
/// at a time) until something is due, then hand `f` the due indices (at
/// most `max_batch` at once) and how far the first of them is behind its
/// time.
fn paced(pacer: &Pacer, max_batch: u64, mut f: impl FnMut(std::ops::Range<u64>, Duration)) {
    let mut next = 0u64;
    while next < pacer.total() {
        let now = Instant::now();
        let due = pacer.due(now);
        if due <= next {
            std::thread::sleep(
                pacer
                    .due_at(next)
                    .saturating_duration_since(now)
                    .min(Duration::from_micros(200)),
            );
            continue;
        }
        let upto = due.min(next.saturating_add(max_batch));
        f(
            next..upto,
            now.saturating_duration_since(pacer.due_at(next)),
        );
        next = upto;
    }
}

struct Bench {
    quick: bool,
    /// `--appliance-config FILE`: passed to every appliance run.
    appliance_config: Option<String>,
    smoke: bool,
    server: NatsServer,
    rt: tokio::runtime::Runtime,
}

#[derive(Clone, Debug, Default)]
struct RunResult {
    rate: f64,
    sent: u64,
    acked: u64,
    stored: u64,
    kernel_dropped: u64,
    ring_dropped: u64,
    failed: u64,
    backend: String,
    drain_s: f64,
    cpu_s: f64,
    sender_lag_max_ms: f64,
    /// CPU seconds by thread name, whole process life.
    threads: Vec<(String, f64)>,
    recv_to_ack: Option<Histogram<u64>>,
    e2e: Option<Histogram<u64>>,
}

impl RunResult {
    fn sustained(&self) -> bool {
        self.acked == self.sent
            && self.stored == self.sent
            && self.kernel_dropped == 0
            && self.ring_dropped == 0
            && self.failed == 0
            && self.drain_s <= 2.0
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e6
}

fn latency_line(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  (n={})",
        ms(h, 0.5),
        ms(h, 0.99),
        ms(h, 0.999),
        h.max() as f64 / 1e6,
        h.len()
    )
}

/// CPU seconds per thread name of a process (threads of one name summed).
fn cpu_by_thread(pid: u32) -> Vec<(String, f64)> {
    let mut by: std::collections::BTreeMap<String, f64> = Default::default();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let (Some(open), Some((name_part, rest))) = (stat.find('('), stat.rsplit_once(')')) else {
            continue;
        };
        let name = name_part[open + 1..].to_owned();
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        *by.entry(name).or_default() += ticks / hz;
    }
    by.into_iter().filter(|(_, s)| *s > 0.0).collect()
}

impl Bench {
    async fn fresh_stream(&self) -> async_nats::jetstream::Context {
        let client = async_nats::connect(self.server.url())
            .await
            .expect("connect");
        let js = async_nats::jetstream::new(client);
        let _ = js.delete_stream("TSPI").await;
        js
    }

    /// A fresh `TSPI` stream with the appliance's default settings.
    async fn fresh_telemetry_stream(&self) -> async_nats::jetstream::Context {
        let js = self.fresh_stream().await;
        let settings = StreamSettings {
            duplicate_window: DUPLICATE_WINDOW,
            ..StreamSettings::default()
        };
        ensure_stream(
            &js,
            telemetry_stream("tspi", &settings),
            Duration::from_secs(10),
        )
        .await
        .expect("stream");
        js
    }

    /// Step 1, the bare async-nats pipelined publish loop into a fresh stream.
    /// Returns (acked msgs/s, this process's CPU µs per message).
    fn ceiling(&self, duration: Duration) -> (f64, f64) {
        let cpu0 = cpu_seconds(std::process::id());
        let (rate, n) = self.rt.block_on(async {
            let js = self.fresh_telemetry_stream().await;
            // Pre-encode one second's worth at the machine facts' ceiling (bench/README.md), reused
            // with fresh ids.
            let recv = RecvTime::now();
            let window = 2048;
            let mut in_flight = FuturesUnordered::new();
            let start = Instant::now();
            let mut i = 0u64;
            let mut acked = 0u64;
            while start.elapsed() < duration {
                let f = frame(i);
                let ack = publish_contract(&js, &f, recv).await;
                in_flight.push(ack.into_future());
                i += 1;
                while in_flight.len() >= window {
                    if let Some(r) = in_flight.next().await {
                        r.expect("ack");
                        acked += 1;
                    }
                }
            }
            while let Some(r) = in_flight.next().await {
                r.expect("ack");
                acked += 1;
            }
            (acked as f64 / start.elapsed().as_secs_f64(), acked)
        });
        let cpu = cpu_seconds(std::process::id()) - cpu0;
        (rate, cpu * 1e6 / n.max(1) as f64)
    }

    /// Floor under the latency targets: a bare async-nats client publishing
    /// pre-encoded contract messages open-loop at `rate` (paced like the
    /// appliance's UDP sender: a thread that sleeps at most 200 µs) into a
    /// fresh stream, each message's ack timed from its *scheduled* publish
    /// time. No UDP, no rings, no receive thread: what any JetStream client
    /// sees from this server at this rate on this box.
    fn bare_latency(&self, rate: f64, duration: Duration) -> Histogram<u64> {
        let js = self.rt.block_on(self.fresh_telemetry_stream());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(
            async_nats::jetstream::context::PublishAckFuture,
            Instant,
        )>();
        let collector = self.rt.spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("h");
            let mut in_flight = FuturesUnordered::new();
            let mut open = true;
            while open || !in_flight.is_empty() {
                tokio::select! {
                    m = rx.recv(), if open => match m {
                        Some((ack, at)) => in_flight.push(async move {
                            (ack.await, at)
                        }),
                        None => open = false,
                    },
                    Some((r, at)) = in_flight.next(), if !in_flight.is_empty() => {
                        r.expect("ack");
                        h.saturating_record(Instant::now().saturating_duration_since(at).as_nanos() as u64);
                    }
                }
            }
            h
        });
        let total = (rate * duration.as_secs_f64()) as u64;
        let pacer = Pacer::new(Instant::now() + Duration::from_millis(100), rate, total);
        let recv = RecvTime::now();
        paced(&pacer, u64::MAX, |due, _| {
            for i in due {
                let ack = self.rt.block_on(publish_contract(&js, &frame(i), recv));
                tx.send((ack, pacer.due_at(i))).expect("collector");
            }
        });
        drop(tx);
        self.rt.block_on(collector).expect("collector")
    }

    /// The same floor with the client shaped like the appliance: the
    /// pacing thread only hands the due indices to one async task (a wake
    /// per batch, as a receive thread wakes the publisher), which publishes
    /// them and times the acks; no `block_on` per message.
    fn bare_latency_task(&self, rate: f64, duration: Duration) -> Histogram<u64> {
        let js = self.rt.block_on(self.fresh_telemetry_stream());
        let total = (rate * duration.as_secs_f64()) as u64;
        let pacer = Pacer::new(Instant::now() + Duration::from_millis(100), rate, total);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<std::ops::Range<u64>>();
        let publisher = self.rt.spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("h");
            let mut in_flight = FuturesUnordered::new();
            let recv = RecvTime::now();
            let mut open = true;
            while open || !in_flight.is_empty() {
                tokio::select! {
                    biased;
                    Some((r, at)) = in_flight.next(), if !in_flight.is_empty() => {
                        let r: Result<_, _> = r;
                        r.expect("ack");
                        h.saturating_record(Instant::now().saturating_duration_since(at).as_nanos() as u64);
                    }
                    due = rx.recv(), if open => match due {
                        Some(range) => {
                            for i in range {
                                let ack = publish_contract(&js, &frame(i), recv).await;
                                let at = pacer.due_at(i);
                                in_flight.push(async move { (ack.await, at) });
                            }
                        }
                        None => open = false,
                    },
                }
            }
            h
        });
        paced(&pacer, u64::MAX, |due, _| tx.send(due).expect("publisher"));
        drop(tx);
        self.rt.block_on(publisher).expect("publisher")
    }

    /// 2-4. The appliance as its own process at `rate` for `duration`.
    /// `latency`: collect the appliance's receive→ack histograms; `e2e`:
    /// also consume the stream to time delivery (the consumer competes for
    /// the same 2 cores, so receive→ack is also measured without it).
    fn appliance(
        &self,
        mode: &str,
        rate: f64,
        duration: Duration,
        latency: bool,
        e2e: bool,
    ) -> RunResult {
        let total = (rate * duration.as_secs_f64()) as u64;
        let port = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("port");
            s.local_addr().expect("addr").port()
        };
        let udp = format!("127.0.0.1:{port}");
        let js = self.rt.block_on(self.fresh_stream());
        let mut child: Child = Command::new(env!("CARGO_BIN_EXE_tspi"))
            .args([
                "--log",
                "warn",
                "ingest",
                "--udp",
                &udp,
                "--nats",
                &self.server.url(),
                "--publish-mode",
                mode,
            ])
            .args(["--json", "--interval-s", "1"])
            .args(
                self.appliance_config
                    .iter()
                    .flat_map(|c| ["--config".to_owned(), c.clone()]),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tspi ingest");
        let pid = child.id();
        // Ready when the stream exists and a report line has appeared.
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("first report");

        let sent_at: Arc<Vec<AtomicU64>> =
            Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
        let delivered = Arc::new(AtomicU64::new(0));
        let last_delivery = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let t0 = Instant::now() + Duration::from_millis(200);
        let mono = move |t: Instant| t.saturating_duration_since(t0).as_nanos() as u64;

        // End-to-end and the appliance's own histograms, collected by a task.
        let collector = self.rt.spawn({
            let js = js.clone();
            let sent_at = sent_at.clone();
            let delivered = delivered.clone();
            let last_delivery = last_delivery.clone();
            let stop = stop.clone();
            let server = self.server.url();
            async move {
                let mut e2e_hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("h");
                let mut r2a = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("h");
                let client = async_nats::connect(server).await.expect("connect");
                let mut snaps = client.subscribe("tspi.ops.metrics.ingest.>").await.expect("sub");
                let stream = loop {
                    match js.get_stream("TSPI").await {
                        Ok(s) => break s,
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                };
                let consumer = stream
                    .create_consumer(async_nats::jetstream::consumer::push::OrderedConfig {
                        deliver_subject: js.client().new_inbox(),
                        ..Default::default()
                    })
                    .await
                    .expect("consumer");
                let mut msgs = consumer.messages().await.expect("messages");
                loop {
                    tokio::select! {
                        Some(Ok(m)) = msgs.next(), if e2e => {
                            let now = mono(Instant::now());
                            if let Some(i) = m.headers.as_ref()
                                .and_then(|h| h.get("Nats-Msg-Id"))
                                .and_then(|v| index_of(v.as_str()))
                                && let Some(at) = sent_at.get(i as usize)
                            {
                                e2e_hist.saturating_record(now.saturating_sub(at.load(Relaxed)).max(1));
                            }
                            delivered.fetch_add(1, Relaxed);
                            last_delivery.store(now, Relaxed);
                        }
                        Some(s) = snaps.next() => {
                            if let Ok(snap) = serde_json::from_slice::<tspi::metrics::Snapshot>(&s.payload)
                                && let Ok(h) = tspi::metrics::decode_hdr_snapshot(&snap.histograms.receive_to_ack)
                            {
                                let _ = r2a.add(&h);
                            }
                        }
                        () = tokio::time::sleep(Duration::from_millis(100)) => {
                            if stop.load(Relaxed) { break; }
                        }
                    }
                }
                (e2e_hist, r2a)
            }
        });

        // The open-loop sender.
        let cpu0 = cpu_seconds(pid);
        let pacer = Pacer::new(t0, rate, total);
        let mut tx = DatagramSender::connect(udp.parse().expect("addr")).expect("sender");
        let mut batch: Vec<[u8; DATAGRAM_LEN]> = Vec::with_capacity(256);
        let mut lag_max = Duration::ZERO;
        paced(&pacer, 256, |due, lag| {
            lag_max = lag_max.max(lag);
            batch.clear();
            for i in due {
                // Scheduled time, not actual: no coordinated omission.
                sent_at[i as usize].store(mono(pacer.due_at(i)), Relaxed);
                batch.push(frame(i).encode());
            }
            tx.send(&batch).expect("send");
        });
        let sent_done = Instant::now();

        // Wait (bounded) for the stream to hold everything, then stop.
        let deadline = sent_done + Duration::from_secs(30);
        let mut stored = 0;
        let mut drained_at = None;
        while Instant::now() < deadline {
            stored = self.rt.block_on(async {
                match js.get_stream("TSPI").await {
                    Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
                    Err(_) => 0,
                }
            });
            if stored >= total {
                drained_at = Some(Instant::now());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let cpu = cpu_seconds(pid) - cpu0;
        let threads = cpu_by_thread(pid);
        // SAFETY: kill(2) on our own child's pid with a valid signal.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let mut last = String::new();
        for l in stdout.lines() {
            last = l.expect("stdout line");
        }
        child.wait().expect("ingest exits");
        stop.store(true, Relaxed);
        let (e2e_h, r2a) = self.rt.block_on(collector).expect("collector");
        let account: serde_json::Value = serde_json::from_str(&last).expect("final account line");
        let c = &account["final_account"]["counters"];
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        RunResult {
            rate,
            sent: total,
            acked: n("acked"),
            stored,
            kernel_dropped: n("kernel_dropped"),
            ring_dropped: n("ring_dropped"),
            failed: n("failed"),
            backend: account["final_account"]["backend"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
            drain_s: drained_at
                .map_or(f64::INFINITY, |t| t.duration_since(sent_done).as_secs_f64()),
            cpu_s: cpu,
            sender_lag_max_ms: lag_max.as_secs_f64() * 1e3,
            threads,
            recv_to_ack: latency.then_some(r2a),
            e2e: e2e.then_some(e2e_h),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench_mode = args.iter().any(|a| a == "--bench");
    let quick = args.iter().any(|a| a == "--quick");
    let smoke = !bench_mode; // `cargo test --benches`
    let server = NatsServer::start().expect("nats-server (run ./scripts/setup)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let b = Bench {
        quick,
        appliance_config: args
            .iter()
            .position(|a| a == "--appliance-config")
            .and_then(|i| args.get(i + 1).cloned()),
        smoke,
        server,
        rt,
    };
    let (ceiling_s, step_s, lat_s) = if b.smoke {
        (1, 1, 1)
    } else if b.quick {
        (5, 5, 5)
    } else {
        (30, 30, 20)
    };
    println!(
        "== ingest bench ({}) ==",
        if b.smoke {
            "smoke"
        } else if b.quick {
            "quick"
        } else {
            "full"
        }
    );

    let (ceiling, ceiling_cpu_us) = b.ceiling(Duration::from_secs(ceiling_s));
    println!(
        "ceiling (bare async-nats pipelined publish, 2048 in flight): {ceiling:.0} msg/s, client CPU {ceiling_cpu_us:.2} us/msg (encode included)"
    );

    let report = |r: &RunResult| {
        println!(
            "  {:>8.0}/s x {}: sent {} acked {} stored {} kernel_dropped {} ring_dropped {} failed {} | drain {:.2} s | sender lag max {:.1} ms | CPU {:.2} us/datagram ({}) => {}",
            r.rate,
            if r.sent > 0 {
                format!("{:.0} s", r.sent as f64 / r.rate)
            } else {
                "-".into()
            },
            r.sent,
            r.acked,
            r.stored,
            r.kernel_dropped,
            r.ring_dropped,
            r.failed,
            r.drain_s,
            r.sender_lag_max_ms,
            r.cpu_s * 1e6 / r.sent.max(1) as f64,
            r.backend,
            if r.sustained() {
                "sustained"
            } else {
                "NOT sustained"
            }
        );
        let threads: Vec<String> = r
            .threads
            .iter()
            .map(|(n, s)| format!("{n} {s:.2}s"))
            .collect();
        println!("     appliance CPU by thread: {}", threads.join(", "));
        if let Some(h) = &r.recv_to_ack {
            println!(
                "     receive->ack (appliance HdrHistogram): {}",
                latency_line(h)
            );
        }
        if let Some(h) = &r.e2e {
            println!(
                "     scheduled send->delivered from stream:  {}",
                latency_line(h)
            );
        }
    };

    if b.smoke {
        let floor = b.bare_latency(2_000.0, Duration::from_secs(1));
        println!("bare client at 2000/s: {}", latency_line(&floor));
        assert_eq!(floor.len(), 2_000, "every bare publish acked");
        let floor = b.bare_latency_task(2_000.0, Duration::from_secs(1));
        println!("bare client, one task, at 2000/s: {}", latency_line(&floor));
        assert_eq!(floor.len(), 2_000, "every bare publish acked (task)");
        for mode in MODES {
            println!("{mode}:");
            let r = b.appliance(mode, 2_000.0, Duration::from_secs(1), true, true);
            report(&r);
            assert!(r.sustained(), "smoke run lost datagrams ({mode}): {r:?}");
        }
        return;
    }

    println!("latency (open-loop, {lat_s} s each):");
    for rate in [20_000.0, 50_000.0] {
        let floor = b.bare_latency(rate, Duration::from_secs(lat_s));
        println!(
            "  {rate:.0}/s, bare async-nats client (scheduled publish -> ack, no UDP): {}",
            latency_line(&floor)
        );
        let floor = b.bare_latency_task(rate, Duration::from_secs(lat_s));
        println!(
            "  {rate:.0}/s, bare async-nats client, one publishing task (scheduled publish -> ack, no UDP): {}",
            latency_line(&floor)
        );
        for mode in MODES {
            println!("  {mode}, appliance alone:");
            report(&b.appliance(mode, rate, Duration::from_secs(lat_s), true, false));
            println!("  {mode}, with a stream consumer timing end-to-end delivery:");
            report(&b.appliance(mode, rate, Duration::from_secs(lat_s), true, true));
        }
    }

    if args.iter().any(|a| a == "--latency-only") {
        return;
    }
    println!(
        "capacity search ({step_s} s per step; sustained = zero loss and drained within 2 s):"
    );
    let mut summary = Vec::new();
    for mode in MODES {
        println!("  {mode}:");
        let best = b.capacity(mode, ceiling, Duration::from_secs(step_s), &report);
        match best {
            Some(r) => {
                let line = format!(
                    "{mode}: highest sustained rate {:.0}/s = {:.2}x the ceiling of {:.0}/s; appliance CPU {:.2} us/datagram",
                    r.rate,
                    r.rate / ceiling,
                    ceiling,
                    r.cpu_s * 1e6 / r.sent as f64
                );
                println!("  {line}");
                summary.push(line);
            }
            None => summary.push(format!(
                "{mode}: no rate sustained (ceiling {ceiling:.0}/s)"
            )),
        }
    }
    println!("summary:");
    for l in summary {
        println!("  {l}");
    }
}

/// The publish modes compared side by side.
const MODES: [&str; 2] = ["fast", "pipelined"];

impl Bench {
    /// Step the offered rate up from half the ceiling, then bisect; returns
    /// the highest sustained run.
    fn capacity(
        &self,
        mode: &str,
        ceiling: f64,
        step: Duration,
        report: &dyn Fn(&RunResult),
    ) -> Option<RunResult> {
        let mut lo = 0.0f64; // highest sustained
        let mut hi = f64::INFINITY; // lowest not sustained
        let mut best: Option<RunResult> = None;
        let mut rate = (ceiling * 0.5 / 1000.0).round() * 1000.0;
        for _ in 0..5 {
            let r = self.appliance(mode, rate, step, false, false);
            report(&r);
            if r.sustained() {
                lo = rate;
                best = Some(r);
                rate += (ceiling * 0.15 / 1000.0).round() * 1000.0;
            } else {
                hi = rate;
                break;
            }
        }
        for _ in 0..if self.quick { 1 } else { 2 } {
            if !hi.is_finite() {
                break;
            }
            let mid = ((lo + hi) / 2.0 / 1000.0).round() * 1000.0;
            if mid <= lo || mid >= hi {
                break;
            }
            let r = self.appliance(mode, mid, step, false, false);
            report(&r);
            if r.sustained() {
                lo = mid;
                best = Some(r);
            } else {
                hi = mid;
            }
        }
        best
    }
}
