//! The fleet generator's own speed and timing, side by side in one run.
//!
//! `cargo bench --bench loadgen` (about 30 s). `cargo test --benches` runs
//! it with tiny counts as a smoke test.
//!
//! 1. **generate**: an airshow fleet of 10,000 tracks encoded into 37-byte
//!    datagrams, no I/O (the generator's ceiling);
//! 2. **generate + send**: the same, sent from one thread with UDP GSO
//!    batches of 64 to a loopback socket nobody reads (the kernel drops what
//!    overflows its buffer), on a schedule far faster than it can go, so it
//!    sends flat out: datagrams handed to the kernel per second. Target:
//!    at least 800k/s;
//! 3. **schedule accuracy** at 100k datagrams/s (10,000 tracks × 10 Hz):
//!    for every datagram, actual send time minus intended send time.
//!    Target: p99 under 50 µs.

use hdrhistogram::Histogram;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Instant;
use tspi_loadgen::drive::{self, Clock, SendStats};
use tspi_loadgen::{Fleet, FleetConfig, Generator, Schedule, Style};

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (n_gen, n_send, accuracy_s) = if bench {
        (4_000_000u64, 4_000_000u64, 5.0)
    } else {
        (20_000, 20_000, 0.2)
    };
    let tracks = 10_000;
    let fleet = Fleet::new(FleetConfig::new(Style::Airshow, tracks, 1)).expect("fleet");
    let start = Clock::now().unix_ns();

    // 1. Generation only.
    let per_track = n_gen as f64 / f64::from(tracks);
    let s = Schedule::new(start, tracks, 1000.0, per_track / 1000.0).expect("schedule");
    let mut g = Generator::new(fleet.clone(), s);
    let mut buf = [[0u8; 37]; 64];
    let t0 = Instant::now();
    let mut n = 0u64;
    let mut check = 0u8;
    loop {
        let k = g.fill_due(u64::MAX, &mut buf);
        if k == 0 {
            break;
        }
        n += k as u64;
        check ^= buf[k - 1][36];
    }
    let gen_rate = n as f64 / t0.elapsed().as_secs_f64();
    std::hint::black_box(check);
    println!(
        "generate:          {n} datagrams, {:.0} datagrams/s (no I/O)",
        gen_rate
    );

    // 2. Generation + send, flat out, to a socket that drops everything.
    let sink = UdpSocket::bind("127.0.0.1:0").expect("sink");
    let to = sink.local_addr().expect("addr");
    let clock = Clock::now();
    // 10,000 tracks × 1000 Hz = 10M/s offered: always behind, so always sending.
    let s = Schedule::new(
        clock.unix_ns(),
        tracks,
        1000.0,
        n_send as f64 / 10_000_000.0,
    )
    .expect("schedule");
    let mut g = Generator::new(fleet.clone(), s);
    let stats = SendStats::default();
    let t0 = Instant::now();
    drive::send_udp(
        &mut g,
        &[to],
        Default::default(),
        &clock,
        0,
        &stats,
        &AtomicBool::new(false),
        |_, _, _| {},
    )
    .expect("send");
    let sent = stats.sent.load(Relaxed);
    let send_rate = sent as f64 / t0.elapsed().as_secs_f64();
    println!(
        "generate + send:   {sent} datagrams, {send_rate:.0} datagrams/s from one thread (UDP GSO x64 to a loopback sink; target >= 800000) [{}]",
        if send_rate >= 800_000.0 {
            "met"
        } else {
            "MISSED"
        }
    );
    drop(sink);

    // 3. Schedule accuracy at 100k/s.
    let sink = UdpSocket::bind("127.0.0.1:0").expect("sink");
    let to = sink.local_addr().expect("addr");
    let clock = Clock::now();
    let s =
        Schedule::new(clock.unix_ns() + 50_000_000, tracks, 10.0, accuracy_s).expect("schedule");
    let mut g = Generator::new(fleet, s);
    let stats = SendStats::default();
    let mut err = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("bounds");
    drive::send_udp(
        &mut g,
        &[to],
        Default::default(),
        &clock,
        0,
        &stats,
        &AtomicBool::new(false),
        |now, first, len| {
            for i in first..first + len as u64 {
                err.saturating_record(now.saturating_sub(s.intended_unix_ns(i)).max(1));
            }
        },
    )
    .expect("send");
    let us = |q: f64| err.value_at_quantile(q) as f64 / 1e3;
    println!(
        "schedule accuracy: {} datagrams at {:.0}/s, actual - intended send time: p50 {:.1} µs  p90 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  max {:.1} µs (target p99 < 50 µs) [{}]",
        err.len(),
        s.rate_per_s(),
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        err.max() as f64 / 1e3,
        if us(0.99) < 50.0 { "met" } else { "MISSED" }
    );
    assert_eq!(err.len(), s.total, "every datagram timed");
    println!("(numbers from a shared 2-core box: other work on it makes them noisy)");
}
