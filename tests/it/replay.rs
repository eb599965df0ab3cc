//! `tspi replay` against real servers: the real-time pacer, the stream and
//! capture sources, the channel and UDP sinks, tags re-emitted at their
//! moment, the archive source (PostgreSQL), and the command line.
//!
//! Real-time tolerance: on this shared, loaded 2-core box a message may
//! arrive up to 60 ms away from its place in the recorded spacing (the
//! pacer's own error is microseconds, see bench/replay.rs; the slack covers
//! scheduling of the test's receiving side). It is never sent early.

use crate::kit::*;
use std::net::UdpSocket;
use std::time::Duration;
use tspi::replay::archive::{ArchiveSource, Window};
use tspi::replay::channels::ChannelId;
use tspi::replay::driver::{DriverConfig, Job};
use tspi::replay::pacer::{Control, Rate};
use tspi::replay::sink::{ChannelSink, MemorySink, Sink, SinkLimits, SinkStats, UdpSink};
use tspi::replay::source::{CaptureSource, Source, StartAt, StreamSource, VecSource};
use tspi::replay::{Item, ItemKind};
use tspi_testkit::harness::{NatsServer, PgCluster};

const TOLERANCE_NS: i64 = 60_000_000;

/// The JSON report `tspi replay` prints, from a run that must have succeeded.
fn json_report(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_spacing(label: &str, arrivals_ns: &[u64], recorded_ns: &[u64], rate: f64) {
    assert_eq!(arrivals_ns.len(), recorded_ns.len(), "{label}: count");
    for (i, (a, r)) in arrivals_ns.iter().zip(recorded_ns).enumerate() {
        let got = (a - arrivals_ns[0]) as i64;
        let want = ((r - recorded_ns[0]) as f64 / rate) as i64;
        assert!(
            (got - want).abs() <= TOLERANCE_NS,
            "{label}: message {i} at +{:.3} ms, recorded spacing says +{:.3} ms",
            got as f64 / 1e6,
            want as f64 / 1e6
        );
    }
}

/// Pace `source` into `channel` (tags to `tags.broadcast`) on a thread of
/// its own.
fn replay_into_channel(
    js: &async_nats::jetstream::Context,
    source: StreamSource,
    channel: ChannelId,
    cfg: DriverConfig,
) -> Job {
    let sink = ChannelSink::new(
        tokio::runtime::Handle::current(),
        js.clone(),
        channel,
        "tags.broadcast".into(),
        SinkLimits::acks(256),
    );
    Job::spawn("test", Box::new(source), Box::new(sink), cfg).unwrap()
}

fn telemetry_items(offsets: &[u64]) -> Vec<Item> {
    recording(offsets)
        .into_iter()
        .map(|(recv, m, f)| Item {
            rec_ns: recv.unix_ns,
            kind: ItemKind::Telemetry {
                subject: m.subject,
                msg_id: m.msg_id,
                body: m.body.into(),
                datagram: Some(f.encode()),
            },
        })
        .collect()
}

#[test]
fn real_time_pacing_keeps_order_and_spacing() {
    // Irregular gaps: bursts of equal times, 1 ms, 7 ms, 120 ms.
    let mut offsets = Vec::new();
    let mut t = 0u64;
    for i in 0..240u64 {
        t += match i % 6 {
            0 => 0,
            1 => 1_000_000,
            2 => 7_000_000,
            3 => 0,
            4 => 120_000,
            _ => {
                if i % 60 == 5 {
                    120_000_000
                } else {
                    2_000_000
                }
            }
        };
        offsets.push(t);
    }
    let items = telemetry_items(&offsets);
    let recorded: Vec<u64> = items.iter().map(|i| i.rec_ns).collect();
    let mut source = VecSource::new(items.clone());
    let mut sink = MemorySink::default();
    let (_tx, rx) = std::sync::mpsc::channel();
    let report =
        tspi::replay::driver::run(&mut source, &mut sink, DriverConfig::default(), &rx).unwrap();
    assert_eq!(report.telemetry, items.len() as u64);
    let got: Vec<&Item> = sink.got.iter().map(|(_, i, _)| i).collect();
    assert!(
        got.iter().zip(&items).all(|(a, b)| *a == b),
        "order and content kept"
    );
    let at: Vec<u64> = sink.got.iter().map(|(t, _, _)| *t).collect();
    assert_spacing("memory sink", &at, &recorded, 1.0);
    // Never early: the histogram holds actual minus scheduled, all >= 0 by
    // construction; the p50 must be far inside the tolerance.
    assert!(report.error_ns.value_at_quantile(0.5) < TOLERANCE_NS as u64);
    assert!(report.span >= Duration::from_nanos(offsets[offsets.len() - 1]));

    // At 4x the same recording takes a quarter of the time.
    let mut source = VecSource::new(items);
    let mut sink = MemorySink::default();
    let cfg = DriverConfig {
        rate: Rate::new(4.0).unwrap(),
        ..DriverConfig::default()
    };
    tspi::replay::driver::run(&mut source, &mut sink, cfg, &rx).unwrap();
    let at: Vec<u64> = sink.got.iter().map(|(t, _, _)| *t).collect();
    assert_spacing("memory sink 4x", &at, &recorded, 4.0);
}

/// Runs `f` on a fresh thread (placement changes the calling thread).
fn on_own_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().unwrap()
}

#[test]
fn pacing_thread_placement_is_applied_or_refused_by_name() {
    use tspi::replay::driver::place_current_thread;
    // Core 0 exists everywhere: the thread is then allowed there only.
    let cpus = on_own_thread(|| {
        place_current_thread(Some(0), None).unwrap();
        // SAFETY: cpu_set_t is plain bits; all-zero is a valid (empty) set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: sched_getaffinity(2) fills `set`, whose size it is given.
        let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
        assert_eq!(r, 0);
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: c is below CPU_SETSIZE, the set's size in bits.
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect::<Vec<_>>()
    });
    assert_eq!(cpus, vec![0]);
    let e = on_own_thread(|| place_current_thread(Some(100_000), None).unwrap_err());
    assert!(e.to_string().contains("core 100000"), "{e}");
    let e = on_own_thread(|| place_current_thread(None, Some(0)).unwrap_err());
    assert!(e.to_string().contains("outside 1..=99"), "{e}");
    // SCHED_FIFO: granted to root / CAP_SYS_NICE, else refused by name.
    let (r, policy) = on_own_thread(|| {
        let r = place_current_thread(None, Some(5));
        // SAFETY: sched_getscheduler(2) on the calling thread.
        (r, unsafe { libc::sched_getscheduler(0) })
    });
    match r {
        Ok(()) => assert_eq!(policy, libc::SCHED_FIFO),
        Err(e) => {
            // SAFETY: geteuid(2) cannot fail.
            assert_ne!(unsafe { libc::geteuid() }, 0, "root is refused: {e}");
            assert!(e.to_string().contains("CAP_SYS_NICE"), "{e}");
        }
    }
}

#[test]
fn the_channels_config_gives_each_replay_its_pacing_placement() {
    let mut c = tspi::replay::ChannelsConfig::default();
    let d = c.driver(Rate::ORIGINAL, 0);
    assert_eq!((d.core, d.realtime_priority), (None, None));
    c.pacing_cores = vec![2, 3];
    c.pacing_realtime_priority = 20;
    let cores: Vec<_> = (0..4).map(|n| c.driver(Rate::ORIGINAL, n).core).collect();
    assert_eq!(cores, [Some(2), Some(3), Some(2), Some(3)]);
    assert_eq!(c.driver(Rate::ORIGINAL, 0).realtime_priority, Some(20));
    assert_eq!(
        c.driver(Rate::ORIGINAL, 0).spin,
        Duration::from_micros(c.spin_us)
    );
    c.pacing_realtime_priority = 100;
    assert!(
        c.problems()
            .iter()
            .any(|p| p.contains("pacing_realtime_priority")),
        "{:?}",
        c.problems()
    );
}

#[test]
fn the_channels_config_sizes_each_replays_sink_queue() {
    let mut c = tspi::replay::ChannelsConfig::default();
    assert_eq!(
        c.sink_limits(),
        SinkLimits {
            acks_in_flight_max: 2048,
            queue_len: SinkLimits::DEFAULT_QUEUE_LEN
        }
    );
    c.sink_queue_len = 500;
    assert_eq!(c.sink_limits().queue_len, 500);
    assert!(c.problems().is_empty(), "{:?}", c.problems());
    c.sink_queue_len = 0;
    assert!(
        c.problems()
            .iter()
            .any(|p| p.contains("channels.sink_queue_len = 0")),
        "{:?}",
        c.problems()
    );
}

/// A sink that holds the pacer up once, for `pause`, on its `at`-th
/// message (as a full queue would).
struct SlowOnce {
    at: usize,
    pause: Duration,
    n: usize,
}

impl Sink for SlowOnce {
    fn emit(&mut self, _item: Item, _epoch: u32) -> Result<(), tspi::replay::ReplayError> {
        if self.n == self.at {
            std::thread::sleep(self.pause);
        }
        self.n += 1;
        Ok(())
    }

    fn finish(&mut self, _wait: Duration) -> SinkStats {
        SinkStats {
            sent: self.n as u64,
            ..SinkStats::default()
        }
    }
}

#[test]
fn a_sink_that_holds_the_pacer_up_shows_as_sink_wait_and_lateness() {
    // 1 ms apart; the sink takes 5 ms over message 10, so message 11 (due
    // 1 ms after it) leaves at least 4 ms late.
    let job = Job::spawn(
        "slow-sink",
        Box::new(VecSource::new(telemetry_items(&even(20, 1_000_000)))),
        Box::new(SlowOnce {
            at: 10,
            pause: Duration::from_millis(5),
            n: 0,
        }),
        DriverConfig::default(),
    )
    .unwrap();
    let out = job.wait_blocking().unwrap();
    assert_eq!(out.sink.sent, 20);
    assert!(out.pace.sink_wait_ns.max() >= 5_000_000, "{:?}", out.pace);
    assert!(out.pace.error_ns.max() >= 4_000_000, "{:?}", out.pace);
    assert_eq!(
        out.pace.source_wait_ns.len(),
        20,
        "one read timed per message"
    );
    let json = out.to_json();
    assert!(
        json["pace"]["sink_wait_us_max"].as_f64().unwrap() >= 5_000.0,
        "{json}"
    );
}

#[test]
fn a_stalled_server_fills_the_sink_queue_before_the_pacer_waits() {
    let mut nats = NatsServer::start().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _in_rt = rt.enter();
    let client = rt.block_on(async_nats::connect(nats.url())).unwrap();
    let js = async_nats::jetstream::new(client);
    rt.block_on(streams(&js));
    let limits = SinkLimits {
        acks_in_flight_max: 4,
        queue_len: 100,
    };
    let mut sink = ChannelSink::new(
        rt.handle().clone(),
        js,
        ChannelId::parse("replay.stall").unwrap(),
        "tags.broadcast".into(),
        limits,
    );
    let items = telemetry_items(&even(105, 1_000));
    nats.pause();
    let handed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = handed.clone();
    let pacer = std::thread::spawn(move || {
        for item in items {
            sink.emit(item, 0).unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        sink.finish(Duration::from_secs(30))
    });
    // 4 awaiting acks + 100 queued are taken without waiting...
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while handed.load(std::sync::atomic::Ordering::SeqCst) < 104 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pacer waited before the queue was full ({} handed over)",
            handed.load(std::sync::atomic::Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // ...the 105th waits for the server.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(handed.load(std::sync::atomic::Ordering::SeqCst), 104);
    nats.resume();
    let stats = pacer.join().unwrap();
    assert_eq!((stats.sent, stats.acked, stats.failed), (105, 105, 0));
}

#[test]
fn a_realtime_pacing_thread_keeps_the_spacing_too() {
    // Under SCHED_FIFO with no spin, the pacer only sleeps.
    let offsets = even(200, 2_000_000); // 0.4 s
    let items = telemetry_items(&offsets);
    let cfg = DriverConfig {
        realtime_priority: Some(5),
        spin: Duration::ZERO,
        ..DriverConfig::default()
    };
    let job = Job::spawn(
        "rt",
        Box::new(VecSource::new(items)),
        Box::new(MemorySink::default()),
        cfg,
    )
    .unwrap();
    let out = job
        .wait_blocking()
        .expect("SCHED_FIFO needs root or CAP_SYS_NICE (the test suite runs as root)");
    assert_eq!(out.pace.telemetry, 200);
    assert_eq!(out.sink.sent, 200);
    assert!(out.pace.drift_end_ns >= 0, "never early");
    assert!(
        out.pace.drift_end_ns < TOLERANCE_NS,
        "drift {} ns",
        out.pace.drift_end_ns
    );
}

#[test]
fn controls_pause_and_stop_a_running_replay() {
    let items = telemetry_items(&even(400, 5_000_000)); // 2 s
    let job = Job::spawn(
        "t",
        Box::new(VecSource::new(items)),
        Box::new(MemorySink::default()),
        DriverConfig::default(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(job.control(Control::Pause));
    std::thread::sleep(Duration::from_millis(400));
    assert!(job.control(Control::Stop));
    let out = job.wait_blocking().unwrap();
    assert!(out.pace.stopped);
    // About 300 ms played (60 messages); the pause held the rest.
    assert!(
        (20..=200).contains(&out.pace.telemetry),
        "{} messages before the pause",
        out.pace.telemetry
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_replay_into_a_channel_with_tags_at_their_moment() {
    let (_nats, client, js) = nats_with_streams().await;
    // 100 messages 10 ms apart (1 s), received an hour before they are
    // stored: the start time selects by receive time, not store time.
    let offsets = even(100, 10_000_000);
    let rec = recording(&offsets);
    publish_recording(&js, &rec).await;
    publish_tags(
        &js,
        &[
            ("tag-before", T0_NS - 5_000_000_000, "before the window"),
            ("tag-a", T0_NS + 250_000_000, "Merge"),
            ("tag-b", T0_NS + 755_000_000, "Break"),
            ("tag-after", T0_NS + 9_000_000_000, "after the window"),
        ],
    )
    .await;

    let channel = ChannelId::parse("replay.sortie-1").unwrap();
    let mut telemetry = client.subscribe(channel.subject()).await.unwrap();
    let mut tags = client.subscribe("tags.broadcast").await.unwrap();
    client.flush().await.unwrap();
    let source = StreamSource::new(
        tokio::runtime::Handle::current(),
        js.clone(),
        StartAt::Time(T0_NS),
        None,
    );
    let job = replay_into_channel(&js, source, channel.clone(), DriverConfig::default());
    let (got, got_tags) = tokio::join!(
        collect(&mut telemetry, 100, Duration::from_secs(30)),
        collect(&mut tags, 2, Duration::from_secs(30))
    );
    let out = job.wait().await.unwrap();

    assert_eq!(got.len(), 100, "every message replayed");
    for ((_, m), (_, orig, _)) in got.iter().zip(&rec) {
        assert_eq!(m.payload.as_ref(), orig.body.as_slice(), "body unchanged");
        assert_eq!(
            header(m, "Nats-Msg-Id").unwrap(),
            format!("{}:replay:replay.sortie-1", orig.msg_id)
        );
        assert_eq!(header(m, "Tspi-Subject").unwrap(), orig.subject);
    }
    let at: Vec<u64> = got.iter().map(|(t, _)| *t).collect();
    assert_spacing("stream → channel", &at, &offsets, 1.0);

    // Only the two tags inside the window, at their moment, with their own
    // ids, body unchanged.
    assert_eq!(got_tags.len(), 2, "two tags inside the window");
    for ((t, m), (id, off)) in got_tags
        .iter()
        .zip([("tag-a", 250_000_000i64), ("tag-b", 755_000_000)])
    {
        assert_eq!(
            header(m, "Nats-Msg-Id").unwrap(),
            format!("{id}:replay:replay.sortie-1")
        );
        assert_eq!(header(m, "Tspi-Replay-Channel").unwrap(), "replay.sortie-1");
        let tag = tspi::replay::source::parse_tag(&m.payload).unwrap();
        assert_eq!(tag.id, id);
        let late = (*t - at[0]) as i64 - off;
        assert!(
            late.abs() <= TOLERANCE_NS,
            "{id} {:.3} ms off its moment",
            late as f64 / 1e6
        );
    }
    assert_eq!(out.pace.telemetry, 100);
    assert_eq!(out.pace.tags, 2);
    assert_eq!(out.sink.acked, 102, "{:?}", out.sink);
    assert_eq!(stored(&js, "TSPI_REPLAY").await, 100);

    // A start sequence with an end time, at 10x: messages 50..=80.
    let channel = ChannelId::parse("replay.seq").unwrap();
    let mut sub = client.subscribe(channel.subject()).await.unwrap();
    client.flush().await.unwrap();
    let mut source = StreamSource::new(
        tokio::runtime::Handle::current(),
        js.clone(),
        StartAt::Sequence(51),
        Some(T0_NS + 800_000_000),
    );
    source.with_tags = false;
    let cfg = DriverConfig {
        rate: Rate::new(10.0).unwrap(),
        ..DriverConfig::default()
    };
    let job = replay_into_channel(&js, source, channel, cfg);
    let out = job.wait().await.unwrap();
    let got = collect(&mut sub, 31, Duration::from_secs(10)).await;
    assert_eq!(out.pace.telemetry, 31, "{:?}", out.source);
    let first: tspi::message::Record = ciborium::from_reader(got[0].1.payload.as_ref()).unwrap();
    assert_eq!(first.recv_epoch_ms, (T0_NS + 500_000_000) / 1_000_000);
    assert_eq!(got.len(), 31);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_past_the_end_replays_nothing() {
    let (_nats, _client, js) = nats_with_streams().await;
    publish_recording(&js, &recording(&even(5, 1_000_000))).await;
    let source = StreamSource::new(
        tokio::runtime::Handle::current(),
        js.clone(),
        StartAt::Sequence(1000),
        None,
    );
    let out = replay_into_channel(
        &js,
        source,
        ChannelId::parse("x").unwrap(),
        DriverConfig::default(),
    )
    .wait()
    .await
    .unwrap();
    assert_eq!(out.pace.telemetry, 0);
}

fn write_capture(path: &std::path::Path, offsets: &[u64], bad_at: usize) -> Vec<Vec<u8>> {
    let mut w = tspi::decode::pcap::PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    let src = "10.0.0.1:4000".parse().unwrap();
    let dst = "10.0.0.2:5000".parse().unwrap();
    let mut good = Vec::new();
    for (i, &o) in offsets.iter().enumerate() {
        let mut d = frame(i as u64).encode().to_vec();
        if i == bad_at {
            d[1] = 3; // version 3: rejected, counted, never sent
        } else {
            good.push(d.clone());
        }
        w.write_udp(T0_NS + o, src, dst, &d).unwrap();
    }
    w.finish().unwrap();
    good
}

#[test]
fn capture_replay_to_udp_like_tcpreplay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sortie.pcap");
    let offsets = even(60, 15_000_000); // 0.9 s
    let good = write_capture(&path, &offsets, 7);
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let source = CaptureSource::new(path, None);
    let sink = UdpSink::connect(rx.local_addr().unwrap()).unwrap();
    let job = Job::spawn(
        "pcap",
        Box::new(source),
        Box::new(sink),
        DriverConfig::default(),
    )
    .unwrap();
    let mut got = Vec::new();
    let mut at = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < good.len() {
        let n = rx.recv(&mut buf).expect("datagram in time");
        at.push(tspi::clock::mono_ns());
        got.push(buf[..n].to_vec());
    }
    let out = job.wait_blocking().unwrap();
    assert_eq!(got, good, "datagrams unchanged, in order");
    assert_eq!(out.source.rejected, 1);
    assert_eq!(out.sink.sent, 59);
    let recorded: Vec<u64> = offsets
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 7)
        .map(|(_, o)| *o)
        .collect();
    assert_spacing("pcap → udp", &at, &recorded, 1.0);
}

#[test]
fn a_raw_file_needs_a_spacing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sortie.raw");
    let raw: Vec<u8> = (0..10).flat_map(|i| frame(i).encode()).collect();
    std::fs::write(&path, raw).unwrap();
    let mut s = CaptureSource::new(path.clone(), None);
    s.open(None).unwrap();
    let e = s.next().unwrap_err().to_string();
    assert!(e.contains("--raw-rate-hz"), "{e}");
    let mut s = CaptureSource::new(path, Some(1_000_000));
    s.open(None).unwrap();
    let mut n = 0;
    let mut last = 0;
    while let Some(i) = s.next().unwrap() {
        assert!(i.rec_ns >= last);
        last = i.rec_ns;
        n += 1;
    }
    assert_eq!(n, 10);
}

#[test]
fn the_command_line_replays_a_capture_into_a_channel() {
    let nats = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sortie.pcap");
    let good = write_capture(&path, &even(20, 5_000_000), usize::MAX);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(async_nats::connect(nats.url())).unwrap();
    let mut sub = rt
        .block_on(client.subscribe("tspi.channel.replay.cli"))
        .unwrap();
    rt.block_on(client.flush()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args([
            "replay",
            "--nats",
            &nats.url(),
            "--channel",
            "cli",
            "--rate",
            "2",
            "--from-pcap",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let report = json_report(&out);
    assert_eq!(report["pace"]["telemetry"], 20, "{report}");
    assert_eq!(report["sink"]["acked"], 20, "{report}");
    let got = rt.block_on(collect(&mut sub, 20, Duration::from_secs(10)));
    assert_eq!(got.len(), 20);
    let first: tspi::message::Record = ciborium::from_reader(got[0].1.payload.as_ref()).unwrap();
    assert_eq!(
        first.sensor_id,
        tspi::codec::parse(&good[0]).unwrap().sensor_id
    );

    // Bad input: a clear error, no replay.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args([
            "replay",
            "--nats",
            &nats.url(),
            "--channel",
            "a b",
            "--from-pcap",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args([
            "replay",
            "--nats",
            &nats.url(),
            "--channel",
            "x",
            "--rate",
            "0",
            "--from-pcap",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("out of range"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_replay_rebuilds_every_body_and_its_tags() {
    let pg = tokio::task::spawn_blocking(PgCluster::start)
        .await
        .unwrap()
        .unwrap();
    let (mut db, conn) = tokio_postgres::connect(&pg.dsn(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    // The archive's own schema, as `tspi archive` creates it.
    tspi::archive::schema::migrate(&mut db, tspi::archive::Partitioning::Native)
        .await
        .unwrap();
    // 40 messages 10 ms apart, with odd nanoseconds so the rebuilt receive
    // time must satisfy both stored roundings; inserted out of order.
    let offsets: Vec<u64> = (0..40u64)
        .map(|i| i * 10_000_000 + 499_500 + i * 37)
        .collect();
    let rec = recording(&offsets);
    insert_telemetry_rows(&db, &rec, true).await;
    // Tags as the archiver keeps them: every version, keyed (id, updated_ts).
    // t-mid's first version sat at 300 ms; its latest moved it to 200 ms:
    // only the latest plays.
    let tag_rows = [
        ("t-mid", 300_000_000u64, 1i64, 1i64),
        ("t-mid", 200_000_000, 2, 3),
        ("t-late", 9_000_000_000, 1, 2),
    ];
    for (id, off, updated, seq) in tag_rows {
        let ts = T0_NS + off;
        db.execute(
            "INSERT INTO tspi_tags (id, ts, label, updated_ts, body, subject, stream_seq) \
             VALUES ($1, 'epoch'::timestamptz + $2::bigint * interval '1 microsecond', 'x', \
                     'epoch'::timestamptz + $3::bigint * interval '1 second', $4, 'tags.broadcast', $5)",
            &[&id, &((ts / 1000) as i64), &updated, &tag_body(id, ts, "x"), &seq],
        )
        .await
        .unwrap();
    }
    let handle = tokio::runtime::Handle::current();
    let fast = DriverConfig {
        rate: Rate::new(20.0).unwrap(),
        ..DriverConfig::default()
    };
    let run = |window: Window| {
        let mut sink = MemorySink::default();
        let mut source = ArchiveSource::new(handle.clone(), pg.dsn(), window);
        let (_tx, rx) = std::sync::mpsc::channel();
        let report = tspi::replay::driver::run(&mut source, &mut sink, fast, &rx).unwrap();
        (report, source.stats(), sink)
    };
    let (report, stats, sink) = tokio::task::block_in_place(|| {
        run(Window::Time {
            start_ns: T0_NS,
            end_ns: T0_NS + 1_000_000_000,
        })
    });
    assert_eq!(
        (report.telemetry, report.tags, stats.unreadable),
        (40, 1, 0)
    );
    let mut bodies = Vec::new();
    for (_, item, _) in &sink.got {
        match &item.kind {
            ItemKind::Telemetry { body, msg_id, .. } => {
                bodies.push((body.to_vec(), msg_id.clone()))
            }
            ItemKind::Tag { id, .. } => {
                assert_eq!(id, "t-mid");
                assert_eq!(
                    bodies.len(),
                    20,
                    "the tag comes at its moment, after message 19"
                );
            }
        }
    }
    let want: Vec<(Vec<u8>, String)> = rec
        .iter()
        .map(|(_, m, _)| (m.body.clone(), m.msg_id.clone()))
        .collect();
    assert_eq!(
        bodies, want,
        "every body rebuilt byte for byte, in receive order"
    );

    // A tag's window: 50 ms either side of t-mid (messages 15..=24).
    let (report, _, _) = tokio::task::block_in_place(|| {
        run(Window::Tag {
            id: "t-mid".into(),
            before_ns: 50_000_000,
            after_ns: 50_000_000,
        })
    });
    assert_eq!((report.telemetry, report.tags), (10, 1));
    let e = tokio::task::block_in_place(|| {
        let mut source = ArchiveSource::new(
            handle.clone(),
            pg.dsn(),
            Window::Tag {
                id: "nope".into(),
                before_ns: 1,
                after_ns: 1,
            },
        );
        let (_tx, rx) = std::sync::mpsc::channel();
        tspi::replay::driver::run(&mut source, &mut MemorySink::default(), fast, &rx).unwrap_err()
    });
    assert!(e.to_string().contains("no tag \"nope\""), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_replays_a_tag_window_from_the_stream() {
    let (nats, client, js) = nats_with_streams().await;
    publish_recording(&js, &recording(&even(30, 100_000_000))).await; // 3 s
    publish_tags(&js, &[("merge-1", T0_NS + 1_500_000_000, "Merge")]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tspi.toml");
    std::fs::write(&cfg, "[channels]\ntag_before_s = 1\ntag_after_s = 1\n").unwrap();
    let mut sub = client.subscribe("tspi.channel.replay.merge").await.unwrap();
    client.flush().await.unwrap();
    let url = nats.url();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tspi"))
            .args([
                "replay",
                "--nats",
                &url,
                "--channel",
                "merge",
                "--rate",
                "10",
            ])
            .args(["--from-stream", "TSPI", "--tag", "merge-1", "--config"])
            .arg(&cfg)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = json_report(&out);
    // 0.5 s ..= 2.5 s: messages 5..=25, and the tag itself.
    assert_eq!(report["pace"]["telemetry"], 21, "{report}");
    assert_eq!(report["pace"]["tags"], 1, "{report}");
    let got = collect(&mut sub, 21, WAIT).await;
    let first: tspi::message::Record = ciborium::from_reader(got[0].1.payload.as_ref()).unwrap();
    assert_eq!(first.recv_epoch_ms, (T0_NS + 500_000_000) / 1_000_000);
}
