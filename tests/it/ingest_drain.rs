//! The stop is bounded by the drain timeout even when JetStream is away
//! (issue 13, item 1): nats-server paused with SIGSTOP (connected, reading
//! nothing), frames in the rings and in hand, SIGTERM to `tspi ingest` →
//! it exits within `publish.drain_timeout_s` and a margin, printing a
//! balanced account that names the frames not published.

use crate::kit::wait_for_stream;
use std::io::Read as _;
use std::net::UdpSocket;
use std::time::{Duration, Instant};
use tspi_testkit::frames::frame;
use tspi_testkit::harness::NatsServer;

const DRAIN_TIMEOUT_S: u64 = 2;
/// The stop's allowance past the drain timeout: the driver checks a
/// waiting send every 50 ms; the final snapshot and flush wait at most
/// 1 s each; the rest is the process starting to exit.
const MARGIN: Duration = Duration::from_secs(4);
/// How long the server has been paused when SIGTERM comes.
const OUTAGE_BEFORE_STOP: Duration = Duration::from_secs(15);

fn drain_bounded_with_the_server_paused(mode: &str) {
    let mut server = NatsServer::start().expect("nats-server");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tspi.toml");
    std::fs::write(
        &cfg,
        format!(
            "[publish]\ndrain_timeout_s = {DRAIN_TIMEOUT_S}\nmode = \"{mode}\"\n\
             [ingest]\nring_capacity = 65536\n"
        ),
    )
    .unwrap();
    let port = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let udp = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args(["--log", "warn", "ingest", "--config"])
        .arg(&cfg)
        .args(["--udp", &udp, "--nats", &server.url(), "--json"])
        .args(["--interval-s", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_stream(&server.url(), "TSPI");
    std::thread::sleep(Duration::from_millis(500));
    server.pause();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let n = 10_000u64;
    for i in 0..n {
        sock.send_to(&frame(i).encode(), &udp).unwrap();
        if (i + 1).is_multiple_of(200) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Long enough for retries to fill the client's buffer to the paused
    // server: its sends and requests then never return (with 0.5 s here
    // the stop ended in time even without the fix; with 15 s the
    // pipelined stop ran past 36 s and the fast one past its bound).
    std::thread::sleep(OUTAGE_BEFORE_STOP);
    let stopped = Instant::now();
    // SAFETY: kill(2) on our own child's pid with a valid signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let bound = Duration::from_secs(DRAIN_TIMEOUT_S) + MARGIN;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if stopped.elapsed() > bound + Duration::from_secs(30) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = stopped.elapsed();
    server.resume();
    let Some(status) = status else {
        child.kill().unwrap();
        let _ = child.wait();
        panic!("tspi ingest ({mode}) still running {took:?} after SIGTERM");
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        took <= bound,
        "{mode}: stopped in {took:?}, bound {bound:?}\n{stderr}"
    );
    assert_eq!(status.code(), Some(0), "{stderr}");
    // Ended by the publisher's own drain deadline, not by the stop's
    // last-resort bound on the publisher task.
    assert!(
        !stderr.contains("did not end by the drain deadline"),
        "{stderr}"
    );
    let last = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last).expect("final account JSON line");
    assert_eq!(v["balanced"], true, "{v}");
    let c = &v["final_account"]["counters"];
    assert_eq!(c["received"], n, "{v}");
    let failed = c["failed"].as_u64().unwrap();
    assert!(
        failed > 0,
        "nothing can be acked with the server paused: {v}"
    );
    assert_eq!(c["acked"].as_u64().unwrap() + failed, n, "{v}");
    let why = v["final_account"]["failed_reason"]
        .as_str()
        .expect("a reason");
    assert!(why.contains("drain_timeout_s = 2"), "{why}");
    assert!(
        stderr.contains(&format!("{failed} frames not published")),
        "{stderr}"
    );
}

#[test]
fn sigterm_with_jetstream_paused_ends_by_the_drain_timeout_fast() {
    drain_bounded_with_the_server_paused("fast");
}

#[test]
fn sigterm_with_jetstream_paused_ends_by_the_drain_timeout_pipelined() {
    drain_bounded_with_the_server_paused("pipelined");
}
