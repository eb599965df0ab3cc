//! Console fan-out (issue 14): the hub's cost and latency per WebSocket
//! client, and what clients that never read do to the others.
//!
//! `cargo bench --bench console` (about 70 s); `cargo test --benches` runs
//! a smoke form (20 tracks, 5 clients, 0.7 s phases, about 5 s) that
//! checks counts: every client got its snapshot and frames and was not cut
//! off, and frames of phases A and B reached the clients.
//!
//! One real nats-server; the hub is the `tspi console serve` binary as its
//! own process (shipped defaults: the console's track tables, 10 Hz tick,
//! 2 runtime workers), so its CPU (utime + stime from `/proc/<pid>/stat`)
//! and RSS (`VmRSS`, peak `VmHWM`) are its alone, not the clients'; its
//! counters come from its `/metrics`. In this process: a publisher of
//! 1,000 geocentric tracks (sensor ids 1..=1000) at 10 Hz each, 10,000
//! contract bodies/s on `tspi.channel.livestream`, spread evenly over
//! 10 ms slots; and 200 tokio-tungstenite clients on loopback, all on one
//! 2-worker runtime. Everything shares the box's cores.
//!
//! Phases, one after the other in one run (the measured ones 8 s each):
//! - **0, no clients**: the hub ingests and ticks (its baseline CPU, RSS);
//! - **connect**: the 200 connect at once, each gets a snapshot (trails
//!   included); until no snapshot is sent and no frame skipped for 3 s;
//! - **A, 200 healthy clients** reading everything;
//! - **B**, the same 200 **plus 10 that never read** (receive buffer 4 KiB);
//! - **A'**, the healthy clients again (the never-reading ones are cut off by
//!   the hub's 10 s write timeout during it).
//!
//! Latency is tick → receipt: a frame's `server_time_ms` (the hub's wall
//! clock at the tick, truncated to the ms) against the client's wall clock
//! at receipt, so each value reads 0-1 ms high (0.5 ms on average); the
//! protocol is left as it is. Beside it, with µs resolution: each client's
//! receipt of a frame after the first client's receipt of the same frame
//! (the fan-out spread).
//!
//! `-- --trail-s N` runs the hub with `[console] trail_s = N` (default
//! 60): the trails make the snapshots, and the snapshots the memory.
//!
//! The hub limits connections per source address (64, `HttpLimits`); the
//! clients bind to 127.0.0.2, 127.0.0.3, ... (50 each) to stay under it.

use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tspi_testkit::harness::NatsServer;
use tspi_testkit::proc::cpu_seconds;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Plan {
    tracks: u16,
    clients: usize,
    slow: usize,
    phase: Duration,
    settle: Duration,
    /// How long the hub must send no snapshot to be steady, and the
    /// longest wait for that after the clients connect.
    steady_quiet: Duration,
    steady_max: Duration,
}

/// The hub process; killed when dropped (also on a panic).
struct HubProcess {
    child: Child,
    addr: SocketAddr,
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl HubProcess {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `/metrics` as name (with labels) → value; None while not serving.
    fn metrics(&self) -> Option<HashMap<String, f64>> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        if !text.starts_with("HTTP/1.1 200") {
            return None;
        }
        Some(
            text.lines()
                .filter(|l| l.starts_with("tspi_console"))
                .filter_map(|l| {
                    let (k, v) = l.rsplit_once(' ')?;
                    Some((k.to_owned(), v.parse().ok()?))
                })
                .collect(),
        )
    }
}

/// The hub's CPU, memory and counters at one moment.
#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    cpu_s: f64,
    rss_kib: u64,
    hwm_kib: u64,
    frames_sent: f64,
    frames_skipped: f64,
    snapshots_sent: f64,
    events_sent: f64,
    slow_disconnects: f64,
    connected: f64,
}

/// `VmRSS` (now) or `VmHWM` (peak) of a process, KiB.
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// This process's CPU (the clients and the publisher).
fn own_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id())
}

fn sample(hub: &HubProcess) -> Sample {
    let m = hub.metrics().expect("hub /metrics");
    let c = |k: &str| {
        m.get(&format!("tspi_console_{k}_total"))
            .copied()
            .unwrap_or(0.0)
    };
    Sample {
        at: Instant::now(),
        cpu_s: cpu_seconds(hub.pid()),
        rss_kib: status_kib(hub.pid(), "VmRSS:"),
        hwm_kib: status_kib(hub.pid(), "VmHWM:"),
        frames_sent: c("frames_sent"),
        frames_skipped: c("frames_skipped"),
        snapshots_sent: c("snapshots_sent"),
        events_sent: c("events_sent"),
        slow_disconnects: c("slow_disconnects"),
        connected: c("connected"),
    }
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Client `i`'s source address: 50 per address from 127.0.0.2 (the hub
/// accepts at most 64 connections per address).
fn source(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (i / 50) as u8)
}

async fn connect(addr: SocketAddr, i: usize, name: &str, rcvbuf: Option<u32>) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source(i).into(), 0))
        .expect("bind a loopback source");
    if let Some(b) = rcvbuf {
        socket.set_recv_buffer_size(b).expect("rcvbuf");
    }
    let stream = socket.connect(addr).await.expect("connect to the hub");
    stream.set_nodelay(true).expect("nodelay");
    // Snapshots grow with the trails: no message size limit.
    let cfg = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        format!("ws://{addr}/ws?client_id={name}"),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
        Some(cfg),
    )
    .await
    .expect("websocket upgrade");
    ws
}

/// What one healthy client saw.
#[derive(Default)]
struct Seen {
    /// (frame's server_time_ms, receipt in µs since the epoch).
    frames: Vec<(u64, u64)>,
    snapshots: u64,
    bytes: u64,
    frame_bytes: u64,
    bye: Option<String>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The `server_time_ms` of a `frame` message, without parsing the rest.
fn frame_time(text: &[u8]) -> Option<u64> {
    let head = &text[..text.len().min(160)];
    find(head, br#""type":"frame""#)?;
    let at = find(head, br#""server_time_ms":"#)? + br#""server_time_ms":"#.len();
    let digits = head[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&head[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

async fn read_all(mut ws: Ws, mut stop: tokio::sync::watch::Receiver<bool>) -> Seen {
    let mut seen = Seen::default();
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let at = unix_us();
                    seen.bytes += t.len() as u64;
                    let b = t.as_bytes();
                    if let Some(ms) = frame_time(b) {
                        seen.frames.push((ms, at));
                        seen.frame_bytes += t.len() as u64;
                    } else if find(&b[..b.len().min(40)], br#""type":"snapshot""#).is_some() {
                        seen.snapshots += 1;
                    } else if find(&b[..b.len().min(40)], br#""type":"bye""#).is_some() {
                        seen.bye = Some(t.to_string());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
            _ = stop.changed() => break,
        }
    }
    let _ = ws.close(None).await;
    seen
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram")
}

/// Tick → receipt (µs, ms-resolution tick) and spread after the first
/// receipt (µs) for frames ticked in `[from_ms, to_ms)`.
fn latencies(seen: &[Seen], from_ms: u64, to_ms: u64) -> (Histogram<u64>, Histogram<u64>, u64) {
    let mut first: HashMap<u64, u64> = HashMap::new();
    for s in seen {
        for &(ms, at) in &s.frames {
            if (from_ms..to_ms).contains(&ms) {
                let f = first.entry(ms).or_insert(at);
                *f = (*f).min(at);
            }
        }
    }
    let (mut lat, mut spread) = (hist(), hist());
    for s in seen {
        for &(ms, at) in &s.frames {
            if (from_ms..to_ms).contains(&ms) {
                lat.saturating_record(at.saturating_sub(ms * 1000).max(1));
                spread.saturating_record(at.saturating_sub(first[&ms]).max(1));
            }
        }
    }
    (lat, spread, first.len() as u64)
}

fn q(h: &Histogram<u64>, p: f64) -> f64 {
    h.value_at_quantile(p) as f64 / 1e3
}

fn line(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  (n={})",
        q(h, 0.5),
        q(h, 0.99),
        q(h, 0.999),
        h.max() as f64 / 1e3,
        h.len()
    )
}

/// A phase: the hub before and after, and the tick window it covers.
struct Phase {
    name: &'static str,
    before: Sample,
    after: Sample,
    from_ms: u64,
    to_ms: u64,
    own_cpu_s: f64,
}

impl Phase {
    fn secs(&self) -> f64 {
        self.after.at.duration_since(self.before.at).as_secs_f64()
    }
    fn cpu(&self) -> f64 {
        self.after.cpu_s - self.before.cpu_s
    }
    fn frames(&self) -> f64 {
        self.after.frames_sent - self.before.frames_sent
    }
}

fn run_phase(hub: &HubProcess, name: &'static str, len: Duration) -> Phase {
    let own0 = own_cpu_seconds();
    let before = sample(hub);
    let from_ms = unix_us() / 1000;
    std::thread::sleep(len);
    let to_ms = unix_us() / 1000;
    let after = sample(hub);
    Phase {
        name,
        before,
        after,
        from_ms,
        to_ms,
        own_cpu_s: own_cpu_seconds() - own0,
    }
}

/// From the clients' connecting until the hub is steady: no snapshot
/// sent and no frame skipped for `quiet` (sampled 6 times in it), at most
/// `max`.
fn until_steady(hub: &HubProcess, name: &'static str, quiet: Duration, max: Duration) -> Phase {
    let own0 = own_cpu_seconds();
    let before = sample(hub);
    let from_ms = unix_us() / 1000;
    let mut history = vec![before.clone()];
    while before.at.elapsed() < max {
        std::thread::sleep(quiet / 6);
        history.push(sample(hub));
        if let [.., a, _, _, _, _, _, z] = history.as_slice()
            && a.snapshots_sent == z.snapshots_sent
            && a.frames_skipped == z.frames_skipped
        {
            break;
        }
    }
    let after = history.pop().expect("a sample");
    Phase {
        name,
        before,
        after,
        from_ms,
        to_ms: unix_us() / 1000,
        own_cpu_s: own_cpu_seconds() - own0,
    }
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let plan = if bench_mode {
        Plan {
            tracks: 1000,
            clients: 200,
            slow: 10,
            phase: Duration::from_secs(8),
            settle: Duration::from_secs(3),
            steady_quiet: Duration::from_secs(3),
            steady_max: Duration::from_secs(30),
        }
    } else {
        // `cargo test --benches`: a smoke run.
        Plan {
            tracks: 20,
            clients: 5,
            slow: 2,
            phase: Duration::from_millis(700),
            settle: Duration::from_millis(300),
            steady_quiet: Duration::from_millis(600),
            steady_max: Duration::from_secs(3),
        }
    };
    println!(
        "== console fan-out ({}): {} tracks at 10 Hz, {} clients, +{} never reading, {} s phases ==",
        if bench_mode { "full" } else { "smoke" },
        plan.tracks,
        plan.clients,
        plan.slow,
        plan.phase.as_secs_f64()
    );
    // `--trail-s N`: the hub's `[console] trail_s` (default 60), which sets
    // the snapshots' size.
    let args: Vec<String> = std::env::args().collect();
    let trail_s: Option<u64> = args
        .iter()
        .position(|a| a == "--trail-s")
        .and_then(|i| args.get(i + 1)?.parse().ok());
    let config = tempfile::NamedTempFile::new().expect("config file");
    if let Some(t) = trail_s {
        std::fs::write(config.path(), format!("[console]\ntrail_s = {t}\n")).expect("config");
        println!("hub: [console] trail_s = {t}");
    }
    let server = NatsServer::start().expect("nats-server (run ./scripts/setup)");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let hub = HubProcess {
        child: Command::new(env!("CARGO_BIN_EXE_tspi"))
            .args(["--log", "error", "console", "serve", "--nats"])
            .arg(server.url())
            .arg("--listen")
            .arg(addr.to_string())
            .args(["--duration-s", "300"])
            .args(
                trail_s
                    .iter()
                    .flat_map(|_| ["--config".as_ref(), config.path().as_os_str()]),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tspi console serve"),
        addr,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while hub.metrics().is_none() {
        assert!(Instant::now() < deadline, "the hub did not serve /metrics");
        std::thread::sleep(Duration::from_millis(50));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let stop_pub = Arc::new(AtomicBool::new(false));
    let publisher = rt.spawn(tspi_testkit::load::publish_livestream(
        server.url(),
        plan.tracks,
        stop_pub.clone(),
        Duration::from_secs(120),
    ));
    // Every track in the table.
    let tracks_key = r#"tspi_console_tracks{channel="livestream"}"#;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = hub
            .metrics()
            .and_then(|m| m.get(tracks_key).copied())
            .unwrap_or(0.0);
        if n >= f64::from(plan.tracks) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hub has {n} of {} tracks",
            plan.tracks
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(plan.settle);

    let p0 = run_phase(&hub, "0: no clients", plan.phase);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let connected = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..plan.clients)
        .map(|i| {
            let stop = stop_rx.clone();
            let connected = connected.clone();
            rt.spawn(async move {
                let ws = connect(addr, i, &format!("bench-{i}"), None).await;
                connected.fetch_add(1, Relaxed);
                read_all(ws, stop).await
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while connected.load(Relaxed) < plan.clients as u64 {
        assert!(Instant::now() < deadline, "clients did not connect");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pc = until_steady(
        &hub,
        "connect: until steady",
        plan.steady_quiet,
        plan.steady_max,
    );
    let pa = run_phase(&hub, "A: healthy clients", plan.phase);

    // Clients that never read: 4 KiB receive buffers, never polled.
    let slow: Vec<Ws> = rt.block_on(async {
        let mut v = Vec::new();
        for i in 0..plan.slow {
            v.push(connect(addr, plan.clients + i, &format!("sloth-{i}"), Some(4096)).await);
        }
        v
    });
    let pb = run_phase(&hub, "B: + never reading", plan.phase);
    // The never-reading ones are cut off by now (write timeout 10 s) or
    // still stalled: the healthy clients again, for the A/B spread.
    let pa2 = run_phase(&hub, "A': healthy clients again", plan.phase);
    let end = sample(&hub);

    stop_tx.send(true).expect("stop clients");
    let seen: Vec<Seen> = rt.block_on(async {
        let mut out = Vec::new();
        for r in readers {
            out.push(r.await.expect("client task"));
        }
        out
    });
    drop(slow);
    stop_pub.store(true, Relaxed);
    let (published, published_s) = rt.block_on(publisher).expect("publisher");
    drop(hub);

    // The summary.
    println!(
        "publisher: {published} bodies in {published_s:.1} s ({:.0}/s)",
        published as f64 / published_s
    );
    println!(
        "| phase | s | hub CPU (cores) | frames sent/s | hub CPU per client-frame | snapshots sent | frames skipped | events sent | slow cut off | hub RSS at end / peak (MiB) | bench process CPU (cores) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for p in [&p0, &pc, &pa, &pb, &pa2] {
        let per = if p.frames() > 0.0 {
            format!("{:.2} µs", p.cpu() * 1e6 / p.frames())
        } else {
            "-".into()
        };
        println!(
            "| {} | {:.1} | {:.3} | {:.0} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} / {:.1} | {:.3} |",
            p.name,
            p.secs(),
            p.cpu() / p.secs(),
            p.frames() / p.secs(),
            per,
            p.after.snapshots_sent - p.before.snapshots_sent,
            p.after.frames_skipped - p.before.frames_skipped,
            p.after.events_sent - p.before.events_sent,
            p.after.slow_disconnects - p.before.slow_disconnects,
            p.after.rss_kib as f64 / 1024.0,
            p.after.hwm_kib as f64 / 1024.0,
            p.own_cpu_s / p.secs(),
        );
    }
    let base_rate = p0.cpu() / p0.secs();
    let marginal = (pa.cpu() - base_rate * pa.secs()) * 1e6 / pa.frames().max(1.0);
    println!(
        "hub CPU per client-frame, phase A: {:.2} µs all in, {:.2} µs over the no-client baseline ({:.3} cores ingesting and ticking {} tracks)",
        pa.cpu() * 1e6 / pa.frames().max(1.0),
        marginal,
        base_rate,
        plan.tracks
    );
    let per_client = |kib: u64| (kib as f64 - p0.after.rss_kib as f64) / plan.clients as f64;
    println!(
        "hub RSS: {:.1} MiB with no clients; with {}: {:.1} MiB after connecting ({:.1} KiB per client), {:.1} MiB after A ({:.1} KiB per client), peak {:.1} MiB ({:.1} KiB per client); {:.1} MiB after B. User space only (socket buffers are the kernel's); freed memory the allocator keeps counts",
        p0.after.rss_kib as f64 / 1024.0,
        plan.clients,
        pc.after.rss_kib as f64 / 1024.0,
        per_client(pc.after.rss_kib),
        pa.after.rss_kib as f64 / 1024.0,
        per_client(pa.after.rss_kib),
        pa.after.hwm_kib as f64 / 1024.0,
        per_client(pa.after.hwm_kib),
        pb.after.rss_kib as f64 / 1024.0
    );
    let (la, sa, fa) = latencies(&seen, pa.from_ms, pa.to_ms);
    let (lb, sb, fb) = latencies(&seen, pb.from_ms, pb.to_ms);
    let (la2, sa2, fa2) = latencies(&seen, pa2.from_ms, pa2.to_ms);
    println!("tick -> receipt, healthy clients (ms-resolution tick: each value 0-1 ms high):");
    println!("  A ({fa} ticks): {}", line(&la));
    println!("  B ({fb} ticks): {}", line(&lb));
    println!("  A' ({fa2} ticks): {}", line(&la2));
    println!("receipt after the first client's receipt of the same frame (µs resolution):");
    println!("  A: {}", line(&sa));
    println!("  B: {}", line(&sb));
    println!("  A': {}", line(&sa2));
    println!(
        "healthy p99 with / without the never-reading clients: B/A {:.3}, B/A' {:.3} (tick -> receipt); B/A {:.3}, B/A' {:.3} (spread); target <= 1.10",
        q(&lb, 0.99) / q(&la, 0.99).max(0.001),
        q(&lb, 0.99) / q(&la2, 0.99).max(0.001),
        q(&sb, 0.99) / q(&sa, 0.99).max(0.001),
        q(&sb, 0.99) / q(&sa2, 0.99).max(0.001),
    );
    println!(
        "never-reading clients cut off: {:.0} of {} during B, {:.0} by the end of A'; hub counters at the end: connected {:.0}, frames sent {:.0}, skipped {:.0}, snapshots {:.0}",
        pb.after.slow_disconnects - pb.before.slow_disconnects,
        plan.slow,
        end.slow_disconnects,
        end.connected,
        end.frames_sent,
        end.frames_skipped,
        end.snapshots_sent
    );
    let frames_per_client: Vec<usize> = seen.iter().map(|s| s.frames.len()).collect();
    let snaps: u64 = seen.iter().map(|s| s.snapshots).sum();
    let mib: f64 = seen.iter().map(|s| s.bytes as f64).sum::<f64>() / (1 << 20) as f64;
    let frame_bytes: u64 = seen.iter().map(|s| s.frame_bytes).sum();
    let frames: usize = frames_per_client.iter().sum();
    println!(
        "healthy clients: frames received min {} max {} (mean {:.0} bytes), snapshots {snaps} ({} on connect), {mib:.0} MiB received in all",
        frames_per_client.iter().min().unwrap_or(&0),
        frames_per_client.iter().max().unwrap_or(&0),
        frame_bytes as f64 / frames.max(1) as f64,
        plan.clients,
    );
    for s in &seen {
        if let Some(b) = &s.bye {
            println!("  a healthy client was told: {b}");
        }
    }

    // The smoke run's checks: counts, never timings (a client that fell
    // behind on a loaded runner may skip a phase's frames for a snapshot).
    assert!(published > 0);
    assert!(pa.frames() > 0.0, "frames were sent in phase A");
    for (name, from, to) in [("A", pa.from_ms, pa.to_ms), ("B", pb.from_ms, pb.to_ms)] {
        assert!(
            seen.iter()
                .any(|s| s.frames.iter().any(|(ms, _)| (from..to).contains(ms))),
            "frames of phase {name} reached the clients"
        );
    }
    for (i, s) in seen.iter().enumerate() {
        assert!(s.snapshots >= 1, "client {i} got its snapshot");
        assert!(!s.frames.is_empty(), "client {i} got frames");
        assert!(s.bye.is_none(), "client {i} was cut off: {:?}", s.bye);
    }
}
