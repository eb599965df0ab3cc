//! Failures a load generator meets and must explain: publishing into a
//! server without a stream for its subjects, and a UDP receiver that is
//! restarted mid-run (the schedule is kept and the send errors counted).

use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tspi_loadgen::drive::{self, Clock, SendStats};
use tspi_loadgen::{Fleet, FleetConfig, Generator, Schedule, Style};
use tspi_testkit::harness::NatsServer;

#[test]
fn publishing_without_a_stream_says_why_and_how_to_fix_it() {
    let server = NatsServer::start().expect("nats-server");
    let out = Command::new(env!("CARGO_BIN_EXE_tspi-loadgen"))
        .args(["--tracks", "5", "--rate-hz", "10", "--duration-s", "1"])
        .args(["--nats", &server.url()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("50 failed publishes"), "{err}");
    assert!(err.contains("no stream captures subject tspi."), "{err}");
    assert!(err.contains("tspi ingest"), "{err}");
}

#[test]
fn a_restarted_udp_receiver_costs_counted_sends_not_the_run() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = rx.local_addr().unwrap();
    // The receiver: up, away for half a second (nothing bound: each send
    // then draws an ICMP port-unreachable), up again on the same port.
    let receiver = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let mut before = 0;
        rx.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(500) {
            if rx.recv(&mut buf).is_ok() {
                before += 1;
            }
        }
        drop(rx);
        std::thread::sleep(Duration::from_millis(500));
        let rx = UdpSocket::bind(to).unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut after = 0;
        while rx.recv(&mut buf).is_ok() {
            after += 1;
        }
        (before, after)
    });
    let f = Fleet::new(FleetConfig::new(Style::Normal, 20, 3)).unwrap();
    let clock = Clock::now();
    let s = Schedule::new(clock.unix_ns() + 20_000_000, 20, 50.0, 2.0).unwrap();
    let mut g = Generator::new(f, s);
    let stats = SendStats::default();
    drive::send_udp(
        &mut g,
        &[to],
        Default::default(),
        &clock,
        1_000_000,
        &stats,
        &AtomicBool::new(false),
        |_, _, _| {},
    )
    .expect("send errors of an absent receiver are counted, not fatal");
    assert_eq!(stats.sent.load(Relaxed), 2_000, "the whole schedule");
    let errors = stats.send_errors.load(Relaxed);
    assert!(errors > 0, "no send error while the receiver was away");
    let line = stats.failure_line();
    assert!(line.contains("UDP send errors"), "{line}");
    assert!(line.to_lowercase().contains("refused"), "{line}");
    let (before, after) = receiver.join().unwrap();
    assert!(before > 0 && after > 0, "before {before}, after {after}");
    assert!(stats.unsent.load(Relaxed) <= 2_000 - before - after);
}

#[test]
fn the_command_line_reports_send_errors_and_exits_zero() {
    // Nothing listens on this port.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_tspi-loadgen"))
        .args(["--tracks", "5", "--rate-hz", "20", "--duration-s", "1"])
        .args(["--udp", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("UDP send errors"), "{err}");
    assert!(err.contains("is the receiver running?"), "{err}");
}

#[test]
fn credentials_in_the_nats_url_are_used_and_not_shown() {
    use tspi_testkit::harness::ServerAuth;
    let server = NatsServer::start_with_auth(Some(ServerAuth::UserPassword {
        user: "load".into(),
        password: "Pa55wordInUrl".into(),
    }))
    .expect("nats-server");
    let run = |password: &str| {
        let url = format!("nats://load:{password}@127.0.0.1:{}", server.port());
        let out = Command::new(env!("CARGO_BIN_EXE_tspi-loadgen"))
            .args(["--tracks", "2", "--rate-hz", "10", "--duration-s", "1"])
            .args(["--nats", &url])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{err}");
        assert!(!err.contains(password), "{err}");
        err
    };
    // Accepted: the publishes reach JetStream (which has no stream here).
    let err = run("Pa55wordInUrl");
    assert!(err.contains("no stream captures subject"), "{err}");
    let err = run("Wr0ngInUrl");
    assert!(err.contains("authorization"), "{err}");
}
