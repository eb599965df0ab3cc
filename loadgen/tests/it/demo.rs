//! The main job stays runnable: a short `tspi-demo` (what `./demo` runs) on
//! one server and on a three-node cluster flies an airshow fleet through
//! ingest, measures every datagram, and ends with zero loss, a balanced
//! account and exit 0; Ctrl-C stops it cleanly with an account of what was
//! sent.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn demo(nodes: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_tspi-demo"))
        .args(["--log", "warn", "--tracks", "40", "--rate-hz", "10"])
        .args(["--duration-s", "2", "--nodes", nodes, "--interval-s", "1"])
        .output()
        .expect("run tspi-demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("flying an airshow fleet of 40 tracks"),
        "{stdout}"
    );
    assert!(
        stdout.contains("] offered 400/s  sent "),
        "progress line: {stdout}"
    );
    assert!(stdout.contains("[balanced]"), "{stdout}");
    assert!(
        stdout.contains("stream TSPI holds 800 messages (expected 800"),
        "{stdout}"
    );
    assert!(
        stdout.contains("sent 800  received 800  lost 0  duplicated 0  unknown 0"),
        "{stdout}"
    );
    assert!(stdout.contains("p99.99"), "{stdout}");
    assert!(stdout.contains("duplicate acks 40"), "{stdout}");
    assert!(
        stdout.contains("receive -> JetStream ack (ingest HdrHistogram)   p50"),
        "{stdout}"
    );
}

#[test]
fn demo_single_server() {
    demo("1");
}

#[test]
fn demo_three_node_cluster() {
    demo("3");
}

#[test]
fn ctrl_c_stops_the_demo_cleanly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tspi-demo"))
        .args(["--log", "warn", "--tracks", "50", "--rate-hz", "10"])
        .args(["--duration-s", "600", "--nodes", "1", "--interval-s", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run tspi-demo");
    // Wait for the fleet to fly (bounded), then interrupt.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    std::thread::sleep(Duration::from_secs(6));
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("demo did not stop within 60 s of Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = reader.join().unwrap();
    assert_eq!(status.code(), Some(130), "{out}");
    assert!(out.contains("interrupted: stopping the fleet"), "{out}");
    assert!(out.contains("[balanced]"), "{out}");
    assert!(out.contains("stopped early by Ctrl-C"), "{out}");
}
