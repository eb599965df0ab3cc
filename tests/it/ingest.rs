//! `tspi ingest` end to end against a real nats-server: UDP in, JetStream
//! out, every datagram accounted for.

use crate::kit::wait_for_stream;
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use tspi::codec::{self, Frame, RejectReason, vectors};
use tspi::config::{Config, PublishMode};
use tspi::ingest::{self, Account};
use tspi::message::{self, Record, RecvTime};
use tspi::receive::Backend;
use tspi_testkit::frames::frame;
use tspi_testkit::harness::NatsServer;
use tspi_testkit::skip;

fn config(nats_url: &str, backend: Backend) -> Config {
    let mut c = Config::default();
    c.nats.servers = vec![nats_url.to_owned()];
    c.ingest.udp = vec!["127.0.0.1:0".parse().unwrap()];
    c.ingest.backend = backend;
    c.ingest.workers = 1;
    c.ingest.ring_capacity = 1 << 16;
    c.metrics.interval_s = 1;
    c.metrics.nats_snapshot = true;
    c.publish.drain_timeout_s = 20;
    c
}

/// Ingest running in this process; `stop` drains it and returns the account.
struct Running {
    addr: SocketAddr,
    handle: ingest::Handle,
}

impl Running {
    async fn start(cfg: Config) -> Running {
        let handle = ingest::Handle::spawn(cfg, Duration::from_secs(30))
            .await
            .expect("ingest started");
        Running {
            addr: handle.addrs[0],
            handle,
        }
    }

    async fn stop(self) -> Account {
        tokio::time::timeout(Duration::from_secs(60), self.handle.stop())
            .await
            .expect("ingest stopped in time")
            .expect("ingest ran")
    }
}

fn send_all(to: SocketAddr, datagrams: &[Vec<u8>]) {
    send_all_from("127.0.0.1", to, datagrams);
}

/// [`send_all`] from a socket bound to `from` (any address of 127.0.0.0/8
/// is this host's on Linux).
fn send_all_from(from: &str, to: SocketAddr, datagrams: &[Vec<u8>]) {
    let s = UdpSocket::bind((from, 0)).unwrap();
    for (i, d) in datagrams.iter().enumerate() {
        s.send_to(d, to).unwrap();
        // Bounded pacing: a short pause every 200 datagrams keeps the test
        // far from the socket buffer's limit.
        if (i + 1).is_multiple_of(200) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Malformed datagrams, one per reason (twice for length), with the reason.
fn malformed() -> Vec<(Vec<u8>, RejectReason)> {
    let good = vectors::bytes(vectors::GEOCENTRIC_1);
    let mut v = vec![
        (good[..36].to_vec(), RejectReason::Length),
        ([good.as_slice(), &[0]].concat(), RejectReason::Length),
    ];
    let mut t = good.clone();
    t[0] = 0xC3;
    v.push((t, RejectReason::Type));
    let mut ver = good.clone();
    ver[1] = 3;
    v.push((ver, RejectReason::Version));
    let mut d = good.clone();
    d[4..6].copy_from_slice(&0u16.to_be_bytes());
    v.push((d, RejectReason::Day));
    let mut tm = good.clone();
    tm[6..10].copy_from_slice(&codec::TIME_TICKS_END.to_be_bytes());
    v.push((tm, RejectReason::Time));
    v
}

/// Every message of the stream, by Nats-Msg-Id: (subject, body).
async fn stream_contents(url: &str) -> BTreeMap<String, (String, Vec<u8>)> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("TSPI").await.unwrap();
    let n = stream.info().await.unwrap().state.messages;
    let mut out = BTreeMap::new();
    let first = stream.info().await.unwrap().state.first_sequence;
    for seq in first..first + n {
        let m = stream.get_raw_message(seq).await.unwrap();
        let id = m.headers.get("Nats-Msg-Id").unwrap().to_string();
        let prev = out.insert(id.clone(), (m.subject.to_string(), m.payload.to_vec()));
        assert!(prev.is_none(), "id {id} stored twice");
    }
    out
}

/// The stored body is the encoder's output for this frame at the receive
/// time the body carries.
fn assert_body_is_encoders(f: &Frame, body: &[u8]) {
    let stored: Record = ciborium::from_reader(body).expect("body is CBOR");
    // recv_iso carries the receive time to the microsecond.
    let iso = &stored.recv_iso;
    let us: u64 = {
        let secs = chrono_like_secs(iso);
        // A whole second has no fraction (CONTRACT §2).
        let micros = iso.get(19..20) == Some(".");
        secs * 1_000_000
            + if micros {
                iso[20..26].parse::<u64>().unwrap()
            } else {
                0
            }
    };
    let recv = RecvTime::from_unix_ns(us * 1000);
    let mut want = Vec::new();
    message::encode_cbor(f, recv, &mut want);
    if recv.epoch_ms() == stored.recv_epoch_ms {
        assert_eq!(body, want.as_slice(), "body differs from the encoder's");
    } else {
        // Rounding the ns time to µs first can move a half-ms tie by one.
        assert!(recv.epoch_ms().abs_diff(stored.recv_epoch_ms) <= 1);
        let mut rec = Record::new(f, recv);
        rec.recv_epoch_ms = stored.recv_epoch_ms;
        assert_eq!(rec, stored);
    }
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS...` (UTC).
fn chrono_like_secs(iso: &str) -> u64 {
    let n = |a: usize, b: usize| iso[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    (days * 86_400 + n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19)) as u64
}

async fn mixed_traffic(backend: Backend, mode: PublishMode) {
    let server = NatsServer::start().expect("nats-server");
    let mut cfg = config(&server.url(), backend);
    cfg.publish.mode = mode;
    let ing = Running::start(cfg).await;
    let valid: Vec<Frame> = (0..400).map(frame).collect();
    let mut datagrams: Vec<Vec<u8>> = valid.iter().map(|f| f.encode().to_vec()).collect();
    let bad = malformed();
    datagrams.extend(bad.iter().map(|(d, _)| d.clone()));
    // Duplicates: the first 25 valid datagrams again (a redundant sender).
    datagrams.extend(valid[..25].iter().map(|f| f.encode().to_vec()));
    send_all(ing.addr, &datagrams);
    // Let the receive path see everything before stopping.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let account = ing.stop().await;
    let c = account.counters;
    assert!(account.balanced(), "{account:?}");
    assert_eq!(c.received, datagrams.len() as u64);
    let mut want_rejected = [0u64; RejectReason::ALL.len()];
    for (_, r) in &bad {
        want_rejected[r.index()] += 1;
    }
    assert_eq!(c.rejected, want_rejected);
    assert_eq!((c.filtered, c.ring_dropped, c.failed), (0, 0, 0));
    assert_eq!(c.acked, 425);
    assert_eq!(c.duplicate, 25);
    assert_eq!(c.kernel_dropped, 0);
    match mode {
        PublishMode::Fast => {
            assert_eq!(account.publish_mode, "fast");
            assert!(account.batches >= 1, "{account:?}");
        }
        PublishMode::Pipelined => {
            assert_eq!(account.publish_mode, "pipelined");
            assert_eq!(account.batches, 0);
        }
    }

    let stored = stream_contents(&server.url()).await;
    assert_eq!(stored.len(), 400, "exactly the valid unique datagrams");
    for f in &valid {
        let mut id = String::new();
        message::write_msg_id(f, &mut id);
        let (subject, body) = stored.get(&id).unwrap_or_else(|| panic!("{id} missing"));
        let mut want_subject = String::new();
        message::write_subject("tspi", f, &mut want_subject);
        assert_eq!(subject, &want_subject);
        assert_body_is_encoders(f, body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_valid_malformed_duplicate_io_uring_fast_batches() {
    if !skip::require(
        "ingest::mixed_valid_malformed_duplicate_io_uring_fast_batches",
        skip::io_uring(),
    ) {
        return;
    }
    mixed_traffic(Backend::IoUring, PublishMode::Fast).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_valid_malformed_duplicate_io_uring_pipelined() {
    if !skip::require(
        "ingest::mixed_valid_malformed_duplicate_io_uring_pipelined",
        skip::io_uring(),
    ) {
        return;
    }
    mixed_traffic(Backend::IoUring, PublishMode::Pipelined).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_valid_malformed_duplicate_recvmmsg_fast_batches() {
    mixed_traffic(Backend::Recvmmsg, PublishMode::Fast).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_filters() {
    let server = NatsServer::start().expect("nats-server");
    let mut cfg = config(&server.url(), Backend::Auto);
    cfg.ingest.allow_sensors = vec![0, 1];
    let ing = Running::start(cfg).await;
    let frames: Vec<Frame> = (0..20).map(frame).collect(); // sensors 0..20
    let datagrams: Vec<Vec<u8>> = frames.iter().map(|f| f.encode().to_vec()).collect();
    send_all(ing.addr, &datagrams);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = ing.stop().await;
    assert!(a.balanced(), "{a:?}");
    assert_eq!((a.counters.acked, a.counters.filtered), (2, 18));
    assert_eq!(stream_contents(&server.url()).await.len(), 2);
}

/// Issue 13, item 6: TSPI has no authentication, so a forged datagram sent
/// before the radar's, with the same sensor, day and time (the same
/// `Nats-Msg-Id`), would be stored and the genuine one dropped as its
/// duplicate. With the listen address's allow-list naming the radar
/// (127.0.0.1), the forger's datagrams (from 127.0.0.2) are counted as
/// rejected (`source`) and never published; the account still balances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_senders_are_rejected_and_never_published() {
    let server = NatsServer::start().expect("nats-server");
    let mut cfg = config(&server.url(), Backend::Auto);
    cfg.ingest.sources = vec![tspi::receive::SourcesConfig {
        listen: cfg.ingest.udp[0],
        allow: vec!["127.0.0.1".parse().unwrap()],
    }];
    let ing = Running::start(cfg).await;
    let genuine: Vec<Frame> = (0..100).map(frame).collect();
    // Forgeries of every other genuine frame (same id, another status),
    // and 20 frames of the forger's own.
    let mut forged: Vec<Frame> = genuine
        .iter()
        .step_by(2)
        .map(|f| Frame {
            status: f.status ^ 0x55,
            ..*f
        })
        .collect();
    forged.extend((100..120).map(frame));
    let wire = |fs: &[Frame]| fs.iter().map(|f| f.encode().to_vec()).collect::<Vec<_>>();
    send_all_from("127.0.0.2", ing.addr, &wire(&forged));
    tokio::time::sleep(Duration::from_millis(200)).await;
    send_all(ing.addr, &wire(&genuine));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = ing.stop().await;
    let c = a.counters;
    assert!(a.balanced(), "{a:?}");
    assert_eq!(c.received, 170, "{a:?}");
    assert_eq!(c.rejected_for(RejectReason::Source), 70, "{a:?}");
    assert_eq!(c.rejected_total(), 70, "{a:?}");
    assert_eq!((c.acked, c.duplicate, c.failed), (100, 0, 0), "{a:?}");
    let stored = stream_contents(&server.url()).await;
    assert_eq!(stored.len(), 100, "only the genuine frames");
    for f in &genuine {
        let mut id = String::new();
        message::write_msg_id(f, &mut id);
        let (_, body) = stored.get(&id).unwrap_or_else(|| panic!("{id} missing"));
        assert_body_is_encoders(f, body);
    }
}

/// Issue 13, item 5: a second `tspi ingest` on the port of a running one
/// (same user) is refused, naming the first one's pid, instead of joining
/// the port through `SO_REUSEPORT` and taking most of the feed; the first
/// still receives every datagram sent afterwards.
#[test]
fn a_second_ingest_on_the_port_is_refused_and_the_first_keeps_the_feed() {
    use std::io::Read as _;
    let server = NatsServer::start().expect("nats-server");
    let port = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let udp = format!("127.0.0.1:{port}");
    let first = crate::stream_settings::start_on(&server.url(), &udp, &[]);
    let first_pid = first.child.id();
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args([
            "--log",
            "warn",
            "ingest",
            "--udp",
            &udp,
            "--nats",
            &server.url(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = second.kill();
            let _ = second.wait();
            let _ = first.stop();
            panic!("the second ingest joined port {port} and kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("udp {udp} is already bound by pid {first_pid} ("))
            && stderr.contains("ingest --udp")
            && stderr.contains("split the feed"),
        "{stderr}"
    );

    let datagrams: Vec<Vec<u8>> = (0..200).map(|i| frame(i).encode().to_vec()).collect();
    send_all(udp.parse().unwrap(), &datagrams);
    std::thread::sleep(Duration::from_millis(300));
    let (account, log) = first.stop();
    let c = &account["final_account"]["counters"];
    assert_eq!(c["received"], 200, "{log}");
    assert_eq!(c["acked"], 200, "{log}");
    assert_eq!(c["rejected"]["source"], 0, "{log}");
    assert_eq!(account["balanced"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_and_restarted_mid_stream_loses_nothing_fast_batches() {
    killed_and_restarted(PublishMode::Fast).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_and_restarted_mid_stream_loses_nothing_pipelined() {
    killed_and_restarted(PublishMode::Pipelined).await;
}

async fn killed_and_restarted(mode: PublishMode) {
    let mut server = NatsServer::start().expect("nats-server");
    let mut cfg = config(&server.url(), Backend::Auto);
    cfg.publish.mode = mode;
    cfg.publish.ack_timeout_ms = 1000;
    cfg.publish.retry_backoff_max_ms = 500;
    let ing = Running::start(cfg).await;
    let all: Vec<Frame> = (0..1500).map(frame).collect();
    let wire = |fs: &[Frame]| fs.iter().map(|f| f.encode().to_vec()).collect::<Vec<_>>();

    send_all(ing.addr, &wire(&all[..500]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    // During the outage: accepted into the rings, waiting.
    send_all(ing.addr, &wire(&all[500..1000]));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.restart().expect("restart nats-server");
    send_all(ing.addr, &wire(&all[1000..]));
    // Wait (bounded) until everything is acked before stopping.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        if let Ok(mut s) = js.get_stream("TSPI").await
            && s.info().await.map(|i| i.state.messages).unwrap_or(0) >= 1500
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let a = ing.stop().await;
    assert!(a.balanced(), "{a:?}");
    assert_eq!(a.counters.received, 1500);
    assert_eq!(a.counters.failed, 0, "{a:?}");
    assert_eq!(a.counters.ring_dropped, 0);
    assert_eq!(a.counters.acked, 1500);
    assert_eq!(
        a.publish_mode,
        if mode == PublishMode::Fast {
            "fast"
        } else {
            "pipelined"
        }
    );
    let stored = stream_contents(&server.url()).await;
    assert_eq!(
        stored.len(),
        1500,
        "everything accepted before, during and after, once"
    );
}

#[test]
fn binary_drains_on_sigterm_and_prints_the_account() {
    let server = NatsServer::start().expect("nats-server");
    let port = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let udp = format!("127.0.0.1:{port}");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args([
            "--log",
            "warn",
            "ingest",
            "--udp",
            &udp,
            "--nats",
            &server.url(),
            "--json",
        ])
        .args(["--interval-s", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the stream exists (the appliance creates it at start).
    wait_for_stream(&server.url(), "TSPI");
    std::thread::sleep(Duration::from_millis(300));
    let datagrams: Vec<Vec<u8>> = (0..100).map(|i| frame(i).encode().to_vec()).collect();
    send_all(udp.parse().unwrap(), &datagrams);
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on our own child's pid with a valid signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    let v: serde_json::Value = serde_json::from_str(&last).expect("final account JSON line");
    assert_eq!(v["balanced"], true);
    assert_eq!(v["final_account"]["counters"]["received"], 100);
    assert_eq!(v["final_account"]["counters"]["acked"], 100);
    assert!(stderr.contains("final account"), "{stderr}");
}

/// A stream made without `allow_batched` (an operator's own, ingest told
/// not to touch it) refuses fast batches: ingest says so, goes pipelined,
/// and loses nothing that was already taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_batches_refused_fall_back_to_pipelined() {
    let server = NatsServer::start().expect("nats-server");
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let settings = tspi::jetstream::StreamSettings {
        allow_batch_publish: false,
        ..Default::default()
    };
    js.create_stream(tspi::jetstream::telemetry_stream("tspi", &settings))
        .await
        .expect("stream");
    let mut cfg = config(&server.url(), Backend::Auto);
    cfg.publish.mode = PublishMode::Fast;
    cfg.stream.create = false;
    let ing = Running::start(cfg).await;
    let frames: Vec<Frame> = (0..300).map(frame).collect();
    send_all(
        ing.addr,
        &frames
            .iter()
            .map(|f| f.encode().to_vec())
            .collect::<Vec<_>>(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = ing.stop().await;
    assert!(a.balanced(), "{a:?}");
    assert_eq!(a.publish_mode, "pipelined");
    assert_eq!((a.counters.acked, a.counters.failed), (300, 0), "{a:?}");
    assert_eq!(stream_contents(&server.url()).await.len(), 300);
}
