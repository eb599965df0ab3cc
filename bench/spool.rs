//! The disk spool: how fast the spool thread writes frames to disk (by
//! fsync policy) and hands them back to a publisher that acknowledges at
//! once (the drain, unpaced), on this box's disk; and the CPU per frame
//! each costs, the figure that decides between spooling only overflow and
//! writing every frame ahead.
//!
//! Then `tspi ingest` itself with a spool: CPU per datagram at ~20k/s with
//! the spool idle, and per frame published while it drains a JetStream
//! outage beside the same live feed.
//!
//! `cargo bench --bench spool` (2M frames per case, 20 s phases, ~3 min)
//! or `cargo bench --bench spool -- --quick` (200k, 5 s phases). `cargo test --benches`
//! runs a small smoke form that checks the counts.

use std::time::{Duration, Instant};
use tspi::message::RecvTime;
use tspi::receive::Received;
use tspi::spool::proto::ledger::FullPolicy;
use tspi::spool::{FsyncPolicy, Spool, SpoolConfig, ToSpool};
use tspi_testkit::frames::frame;
use tspi_testkit::proc::cpu_seconds;

struct Case {
    fsync: FsyncPolicy,
    write_fps: f64,
    write_cpu_ns: f64,
    drain_fps: f64,
    drain_cpu_ns: f64,
}

fn run(n: u64, fsync: FsyncPolicy, dir: &std::path::Path) -> Case {
    let cfg = SpoolConfig {
        dir: Some(dir.to_owned()),
        max_bytes: 1 << 34,
        full: FullPolicy::DropNewest,
        segment_bytes: 8 << 20,
        fsync,
        fsync_interval_ms: 1000,
        drain_rate_per_s: 0,
        spill_capacity: 1 << 16,
    };
    let (mut tx, rx) = rtrb::RingBuffer::new(1 << 16);
    // Everything written first: the drain waits until the writing is done
    // (the spool's open segment is sealed for the drain only after 100 ms,
    // so the bench holds the drain ring until then by not reading it).
    let (spool, mut link) = Spool::start(&cfg, vec![rx]).expect("spool");
    let pid = std::process::id();
    let items: Vec<Received> = (0..4096)
        .map(|i| Received {
            frame: frame(i),
            recv: RecvTime::from_unix_ns(1_700_000_000_000_000_000 + i),
            recv_mono_ns: 0,
        })
        .collect();
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        let k = (sent % 4096) as usize;
        if tx.push(items[k]).is_ok() {
            sent += 1;
        } else {
            std::hint::spin_loop();
        }
    }
    let until = Instant::now() + Duration::from_secs(300);
    while spool.counts().spooled < n && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    let write_s = t0.elapsed().as_secs_f64();
    let write_cpu = cpu_seconds(pid) - cpu0;
    assert_eq!(spool.counts().spooled, n, "every frame written");

    let cpu1 = cpu_seconds(pid);
    let t1 = Instant::now();
    let mut got = 0u64;
    let mut acks = Vec::with_capacity(4096);
    while got < n && Instant::now() < until {
        while let Ok(d) = link.drain.pop() {
            acks.push(d.at);
            got += 1;
            if acks.len() == 4096 {
                link.tx
                    .send(ToSpool::Acked(std::mem::take(&mut acks)))
                    .unwrap();
            }
        }
        if !acks.is_empty() {
            link.tx
                .send(ToSpool::Acked(std::mem::take(&mut acks)))
                .unwrap();
        }
        std::thread::yield_now();
    }
    while spool.counts().held > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    let drain_s = t1.elapsed().as_secs_f64();
    let drain_cpu = cpu_seconds(pid) - cpu1;
    let c = spool.stop();
    assert_eq!(
        (c.drained, c.held, c.bytes),
        (n, 0, 0),
        "every frame drained, files gone"
    );
    Case {
        fsync,
        write_fps: n as f64 / write_s,
        write_cpu_ns: write_cpu * 1e9 / n as f64,
        drain_fps: n as f64 / drain_s,
        drain_cpu_ns: drain_cpu * 1e9 / n as f64,
    }
}

/// Datagrams `from..from+n` to `to` at about 20k/s (100 per 5 ms).
fn feed(to: std::net::SocketAddr, from: u64, n: u64) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    for i in from..from + n {
        s.send_to(&frame(i).encode(), to).expect("send");
        if (i + 1).is_multiple_of(100) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn stream_messages(rt: &tokio::runtime::Runtime, url: &str) -> u64 {
    rt.block_on(async {
        let Ok(c) = async_nats::connect(url).await else {
            return 0;
        };
        let js = async_nats::jetstream::new(c);
        match js.get_stream("TSPI").await {
            Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        }
    })
}

/// `tspi ingest` (this build) with a spool: CPU per datagram at ~20k/s
/// with the spool idle, then, after a JetStream outage of `secs` that
/// the spool took, CPU per frame published while it drains beside the
/// same live feed.
fn ingest_cpu(secs: u64, base: &std::path::Path) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut server = tspi_testkit::harness::NatsServer::start().expect("nats-server");
    let dir = tempfile::tempdir_in(base).expect("dir");
    let cfg = dir.path().join("tspi.toml");
    std::fs::write(
        &cfg,
        format!(
            "[ingest]\nring_capacity = 16384\n[spool]\ndir = \"{}\"\ndrain_rate_per_s = 20000\n",
            dir.path().join("spool").display()
        ),
    )
    .expect("config");
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("udp")
        .local_addr()
        .expect("addr")
        .port();
    let udp = format!("127.0.0.1:{port}");
    let to: std::net::SocketAddr = udp.parse().expect("addr");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args(["--log", "warn", "ingest", "--config"])
        .arg(&cfg)
        .args(["--udp", &udp, "--nats", &server.url()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("tspi ingest");
    let pid = child.id();
    let until = Instant::now() + Duration::from_secs(30);
    while rt
        .block_on(async {
            let c = async_nats::connect(server.url()).await.ok()?;
            async_nats::jetstream::new(c).get_stream("TSPI").await.ok()
        })
        .is_none()
    {
        assert!(Instant::now() < until, "no stream");
        std::thread::sleep(Duration::from_millis(100));
    }
    let n = 20_000 * secs;
    // 1. The spool idle.
    let c0 = cpu_seconds(pid);
    feed(to, 0, n);
    let wait = Instant::now() + Duration::from_secs(60);
    while stream_messages(&rt, &server.url()) < n && Instant::now() < wait {
        std::thread::sleep(Duration::from_millis(50));
    }
    let idle_ns = (cpu_seconds(pid) - c0) * 1e9 / n as f64;
    // 2. JetStream away: the ring fills, the spool takes the rest.
    server.kill();
    feed(to, n, n);
    server.restart().expect("restart");
    // 3. The drain, beside the same live feed.
    let c1 = cpu_seconds(pid);
    let t1 = Instant::now();
    feed(to, 2 * n, n);
    let wait = Instant::now() + Duration::from_secs(120 + 2 * secs);
    while stream_messages(&rt, &server.url()) < 3 * n && Instant::now() < wait {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stored = stream_messages(&rt, &server.url());
    let drain_s = t1.elapsed().as_secs_f64();
    let drain_ns = (cpu_seconds(pid) - c1) * 1e9 / (2 * n) as f64;
    // SAFETY: kill(2) on our own child's pid with a valid signal number.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();
    assert_eq!(stored, 3 * n, "every datagram stored");
    println!();
    println!("tspi ingest with a spool, ~20k datagrams/s, {secs} s phases:");
    println!("| phase | CPU ns per datagram published |");
    println!("|---|---|");
    println!("| spool idle | {idle_ns:.0} |");
    println!(
        "| draining a {secs} s outage beside live traffic ({drain_s:.1} s until all stored) | {drain_ns:.0} |"
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench_mode = args.iter().any(|a| a == "--bench");
    let quick = args.iter().any(|a| a == "--quick");
    let n: u64 = match (bench_mode, quick) {
        (false, _) => 20_000,
        (true, true) => 200_000,
        (true, false) => 2_000_000,
    };
    // On the target directory's disk (not a tmpfs /tmp).
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    println!("spool bench: {n} frames per case (56 bytes each on disk)");
    println!(
        "| fsync | write frames/s | write CPU ns/frame | drain frames/s | drain CPU ns/frame |"
    );
    println!("|---|---|---|---|---|");
    for fsync in [
        FsyncPolicy::Never,
        FsyncPolicy::Interval,
        FsyncPolicy::EveryBatch,
    ] {
        let dir = tempfile::tempdir_in(&base).expect("temp dir under target/");
        let c = run(n, fsync, dir.path());
        println!(
            "| {:?} | {:.0} | {:.0} | {:.0} | {:.0} |",
            c.fsync, c.write_fps, c.write_cpu_ns, c.drain_fps, c.drain_cpu_ns
        );
    }
    ingest_cpu(
        if bench_mode {
            if quick { 5 } else { 20 }
        } else {
            1
        },
        &base,
    );
}
