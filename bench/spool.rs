//! The disk spool: how fast the spool thread writes frames to disk (by
//! fsync policy) and hands them back to a publisher that acknowledges at
//! once (the drain, unpaced), on this box's disk; and the CPU per frame
//! each costs, the figure that decides between spooling only overflow and
//! writing every frame ahead.
//!
//! `cargo bench --bench spool` (2M frames per case, ~1 min) or
//! `cargo bench --bench spool -- --quick` (200k). `cargo test --benches`
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
}
