//! The fleet generator end to end: determinism by seed, every datagram
//! valid and inside the contract's ranges, exact counts over UDP, and a
//! measured run through the ingest appliance and a real nats-server.

use std::collections::HashSet;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tspi::codec::{self, Payload};
use tspi::config::Config;
use tspi::message::{utc_day_ticks, write_msg_id};
use tspi_loadgen::drive::{self, Clock, SendStats, Source};
use tspi_loadgen::{Fleet, FleetConfig, Generator, Output, Schedule, Style};
use tspi_testkit::harness::NatsServer;

const START: u64 = 1_700_000_000_000_000_000;

fn all_bytes(cfg: FleetConfig, rate_hz: f64, duration_s: f64) -> Vec<[u8; 37]> {
    let f = Fleet::new(cfg).unwrap();
    let s = Schedule::new(START, f.tracks(), rate_hz, duration_s).unwrap();
    Generator::new(f, s).map(|(_, d)| d).collect()
}

#[test]
fn same_seed_same_datagrams_byte_for_byte() {
    for style in [Style::Airshow, Style::Normal] {
        let mut c = FleetConfig::new(style, 60, 42);
        c.output = Output::Mixed;
        let a = all_bytes(c.clone(), 10.0, 3.0);
        let b = all_bytes(c.clone(), 10.0, 3.0);
        assert_eq!(a.len(), 1800);
        assert!(a == b, "{style:?}: same seed gave different bytes");
        c.seed = 43;
        let other = all_bytes(c, 10.0, 3.0);
        let differing = a.iter().zip(&other).filter(|(x, y)| x != y).count();
        assert!(
            differing > 1700,
            "{style:?}: another seed changed only {differing}"
        );
    }
}

/// Seeking gives the same datagram as walking there.
#[test]
fn random_access_matches_the_walk() {
    let f = Fleet::new(FleetConfig::new(Style::Airshow, 30, 1)).unwrap();
    let s = Schedule::new(START, 30, 25.0, 4.0).unwrap();
    let walk: Vec<(u64, [u8; 37])> = Generator::new(f.clone(), s).collect();
    let mut g = Generator::new(f, s);
    for i in [0u64, 1, 29, 30, 1234, 2999] {
        g.seek(i);
        assert_eq!(g.next(), Some(walk[i as usize]));
    }
    assert_eq!(g.next(), None);
}

/// Every datagram of every style and output decodes, re-encodes to the same
/// bytes, carries its intended send time, and stays inside the contract's
/// ranges with room to spare (no value near an integer limit, where a
/// saturated value would sit). The run spans whole circuits: low rate, long
/// duration.
#[test]
fn every_datagram_is_valid_and_inside_the_ranges() {
    for style in [Style::Airshow, Style::Normal] {
        for output in [Output::Geocentric, Output::Spherical, Output::Mixed] {
            let mut c = FleetConfig::new(style, 80, 7);
            c.output = output;
            let f = Fleet::new(c).unwrap();
            let s = Schedule::new(START, 80, 0.5, 2_400.0).unwrap();
            let mut g = Generator::new(f.clone(), s);
            let mut ids = HashSet::new();
            let mut id = String::new();
            for (t, d) in g.by_ref() {
                let fr = codec::parse(&d).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(fr.encode(), d);
                assert_eq!((fr.day, fr.time_ticks), utc_day_ticks(t));
                assert_eq!(fr.validity(), [true; 9]);
                id.clear();
                write_msg_id(&fr, &mut id);
                assert!(ids.insert(id.clone()), "id {id} twice");
                let k = f.track_of(fr.sensor_id).unwrap();
                assert_eq!(fr.frame_type(), f.frame_type(k));
                match fr.payload {
                    Payload::Geocentric(p) => {
                        let r =
                            ((p.x as f64).powi(2) + (p.y as f64).powi(2) + (p.z as f64).powi(2))
                                .sqrt()
                                / 100.0;
                        assert!((6_350_000.0..6_420_000.0).contains(&r), "radius {r}");
                        for v in [p.vx, p.vy, p.vz, p.ax, p.ay, p.az] {
                            assert!(v.unsigned_abs() < 30_000, "{v}");
                        }
                    }
                    Payload::Spherical(p) => {
                        assert!(
                            p.range > 0 && p.azimuth < 360_000_000 && p.elevation <= 90_000_000
                        );
                        assert!(p.elevation >= 500_000, "below 0.5°: {}", p.elevation);
                        for v in [
                            p.azimuth_rate,
                            p.elevation_rate,
                            p.range_rate,
                            p.azimuth_accel,
                            p.elevation_accel,
                            p.range_accel,
                        ] {
                            assert!(v.unsigned_abs() < 30_000, "{v}");
                        }
                    }
                }
            }
            assert_eq!(ids.len(), 80 * 1200);
            assert_eq!(g.out_of_range, 0, "{style:?} {output:?}");
        }
    }
}

/// The decoded integers still obey the kinematics: the position change over
/// one update matches the mean of the two velocities (trapezoid rule) to
/// within the wire's rounding plus the rule's error.
#[test]
fn decoded_positions_and_velocities_agree() {
    let f = Fleet::new(FleetConfig::new(Style::Airshow, 6, 3)).unwrap();
    let s = Schedule::new(START, 6, 50.0, 60.0).unwrap();
    let frames: Vec<codec::Frame> = Generator::new(f, s)
        .map(|(_, d)| codec::parse(&d).unwrap())
        .collect();
    let dt = 0.02;
    for k in 0..6 {
        let track: Vec<[f64; 9]> = frames
            .iter()
            .skip(k)
            .step_by(6)
            .map(|f| f.values())
            .collect();
        for w in track.windows(2) {
            for j in 0..3 {
                let dp = w[1][j] - w[0][j];
                let mean_v = (w[1][3 + j] + w[0][3 + j]) / 2.0;
                // Rounding: 0.01 m per position, 0.005 m/s × dt; trapezoid
                // error ≤ dt³/12 × jerk (pull onset steps accel by ≤ 60 m/s²:
                // ≤ dt × 60 × dt / 4 = 6 mm).
                assert!(
                    (dp - mean_v * dt).abs() < 0.03,
                    "track {k}: {dp} vs {}",
                    mean_v * dt
                );
            }
        }
    }
}

#[test]
fn a_udp_run_delivers_exactly_rate_x_tracks_x_duration() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let to = rx.local_addr().unwrap();
    let counter = std::thread::spawn(move || {
        let mut ids = HashSet::new();
        let mut buf = [0u8; 64];
        while let Ok(n) = rx.recv(&mut buf) {
            let f = codec::parse(&buf[..n]).unwrap();
            let mut id = String::new();
            write_msg_id(&f, &mut id);
            ids.insert(id);
            if ids.len() > 1_000_000 {
                break; // bounded
            }
        }
        ids.len()
    });
    let f = Fleet::new(FleetConfig::new(Style::Airshow, 50, 2)).unwrap();
    let clock = Clock::now();
    let s = Schedule::new(clock.unix_ns() + 20_000_000, 50, 20.0, 1.5).unwrap();
    let mut g = Generator::new(f, s);
    let stats = SendStats::default();
    let mut batches = 0;
    drive::send_udp(
        &mut g,
        &[to],
        Default::default(),
        &clock,
        0,
        &stats,
        &AtomicBool::new(false),
        |_, _, _| batches += 1,
    )
    .unwrap();
    assert_eq!(stats.sent.load(std::sync::atomic::Ordering::Relaxed), 1_500);
    assert!(batches > 0);
    assert_eq!(
        counter.join().unwrap(),
        50 * 20 * 3 / 2,
        "every datagram once"
    );
}

#[test]
fn pcap_and_raw_files_hold_the_schedule() {
    let f = Fleet::new(FleetConfig::new(Style::Normal, 10, 2)).unwrap();
    let s = Schedule::new(START, 10, 10.0, 2.0).unwrap();
    let want: Vec<[u8; 37]> = Generator::new(f.clone(), s).map(|(_, d)| d).collect();
    let mut raw = Vec::new();
    assert_eq!(
        drive::write_raw(&mut Generator::new(f.clone(), s), &mut raw).unwrap(),
        200
    );
    assert_eq!(raw, want.concat());
    let mut pcap = Vec::new();
    let (src, dst) = (
        "127.0.0.1:4000".parse().unwrap(),
        "127.0.0.1:5000".parse().unwrap(),
    );
    assert_eq!(
        drive::write_pcap(&mut Generator::new(f, s), &mut pcap, src, dst).unwrap(),
        200
    );
    // 24-byte header, then per packet 16 + 14 + 20 + 8 + 37 bytes.
    assert_eq!(pcap.len(), 24 + 200 * (16 + 14 + 20 + 8 + 37));
    let first_payload = 24 + 16 + 14 + 20 + 8;
    assert_eq!(&pcap[first_payload..first_payload + 37], &want[0]);
    // The first record's timestamp is the intended send time.
    assert_eq!(
        u32::from_le_bytes(pcap[24..28].try_into().unwrap()),
        1_700_000_000
    );
}

fn ingest_config(url: &str) -> Config {
    let mut c = Config::default();
    c.nats.servers = vec![url.to_owned()];
    c.ingest.udp = vec!["127.0.0.1:0".parse().unwrap()];
    c.ingest.workers = 1;
    c.metrics.interval_s = 1;
    c
}

/// `--measure` through the ingest appliance (UDP in, JetStream out) and
/// straight into JetStream: nothing lost, nothing duplicated, every arrival
/// matched and timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measured_runs_through_ingest_and_straight_to_jetstream_lose_nothing() {
    let server = NatsServer::start().expect("nats-server");
    let ingest = tspi::ingest::Handle::spawn(ingest_config(&server.url()), Duration::from_secs(30))
        .await
        .expect("ingest");
    let client = async_nats::connect(server.url()).await.unwrap();
    let fleet = Fleet::new(FleetConfig::new(Style::Airshow, 100, 4)).unwrap();
    let mut lines = 0;
    let res = drive::measured_run(
        fleet.clone(),
        10.0,
        2.0,
        drive::Output::Udp {
            targets: vec![ingest.addrs[0]],
            coalesce_ns: 0,
            multicast: Default::default(),
        },
        &client,
        &Source::Stream("TSPI".into()),
        Duration::from_secs(10),
        Duration::from_millis(500),
        Arc::new(AtomicBool::new(false)),
        |p| {
            lines += 1;
            assert!(p.line().contains("offered 1000/s"));
        },
    )
    .await
    .unwrap();
    let s = &res.summary;
    assert_eq!(
        (s.sent, s.received, s.lost, s.duplicated, s.unknown),
        (2000, 2000, 0, 0, 0),
        "{}",
        s.table()
    );
    assert_eq!(s.latency.count, 2000);
    assert!(
        s.latency.p50_ms > 0.0 && s.latency.max_ms < 10_000.0,
        "{s:?}"
    );
    assert!(lines >= 2, "progress lines: {lines}");
    assert_eq!(res.out_of_range, 0);
    let account = ingest.stop().await.unwrap();
    assert!(account.balanced());
    assert_eq!(account.counters.acked, 2000);

    // Straight to JetStream (the stream exists now), measured the same way.
    let res = drive::measured_run(
        fleet,
        20.0,
        1.0,
        drive::Output::Nats {
            prefix: "tspi".into(),
            window: 256,
        },
        &client,
        &Source::Stream("TSPI".into()),
        Duration::from_secs(10),
        Duration::from_secs(1),
        Arc::new(AtomicBool::new(false)),
        |_| {},
    )
    .await
    .unwrap();
    let s = &res.summary;
    assert_eq!(
        (s.sent, s.received, s.lost, s.duplicated),
        (2000, 2000, 0, 0),
        "{}",
        s.table()
    );
    assert_eq!(res.failed_publishes, 0);
}
