//! The `tspi-loadgen` command line: files are reproducible by seed, bad
//! requests fail with a clear message, and `--measure` through the ingest
//! appliance and a real nats-server reports zero loss in its JSON.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tspi-loadgen"))
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tspi-loadgen-{}-{name}", std::process::id()))
}

fn raw(seed: &str, path: &PathBuf) -> Vec<u8> {
    let out = bin()
        .args([
            "--tracks",
            "30",
            "--rate-hz",
            "10",
            "--duration-s",
            "2",
            "--seed",
            seed,
        ])
        .args(["--datagrams", "mixed", "--start-unix-s", "1700000000"])
        .arg("--raw")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(path).unwrap()
}

#[test]
fn raw_files_are_reproducible_by_seed() {
    let (a, b) = (tmp("a.raw"), tmp("b.raw"));
    let first = raw("9", &a);
    assert_eq!(first.len(), 30 * 10 * 2 * 37);
    assert_eq!(first, raw("9", &b), "same seed, same bytes");
    assert_ne!(first, raw("10", &b), "another seed, other bytes");
    let _ = std::fs::remove_file(a);
    let _ = std::fs::remove_file(b);
}

#[test]
fn bad_requests_fail_clearly() {
    let out = bin()
        .args(["--tracks", "100000", "--raw", "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("16 bits") && err.contains("--rate-hz"),
        "{err}"
    );
    let out = bin()
        .args(["--measure", "--udp", "127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--measure needs --nats"));
    let out = bin()
        .args(["--udp", "127.0.0.1:9", "--raw", "/dev/null"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("choose one output"));
    let out = bin()
        .args(["--rate-hz", "5000", "--raw", "/dev/null"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("1000 Hz"));
}

#[test]
fn measure_through_ingest_reports_zero_loss() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = tspi_testkit::harness::NatsServer::start().expect("nats-server");
    let mut cfg = tspi::config::Config::default();
    cfg.nats.servers = vec![server.url()];
    cfg.ingest.udp = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.ingest.workers = 1;
    let ingest = rt
        .block_on(tspi::ingest::Handle::spawn(cfg, Duration::from_secs(30)))
        .expect("ingest");
    let (json, hgrm, svg) = (tmp("m.json"), tmp("m.hgrm"), tmp("m.svg"));
    let out = bin()
        .args([
            "--tracks",
            "60",
            "--rate-hz",
            "20",
            "--duration-s",
            "2",
            "--measure",
        ])
        .args([
            "--udp",
            &ingest.addrs[0].to_string(),
            "--nats",
            &server.url(),
        ])
        .args(["--progress-s", "0.5"])
        .arg("--json")
        .arg(&json)
        .arg("--hgrm")
        .arg(&hgrm)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("] offered 1200/s"), "{stderr}");
    assert!(
        stdout.contains("sent 2400  received 2400  lost 0  duplicated 0  unknown 0"),
        "{stdout}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(summary["lost"], 0);
    assert_eq!(summary["received"], 2400);
    assert_eq!(summary["latency"]["count"], 2400);
    let h = std::fs::read_to_string(&hgrm).unwrap();
    assert!(h.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
    let s = std::fs::read_to_string(&svg).unwrap();
    assert!(s.starts_with("<?xml") && s.trim_end().ends_with("</svg>"));
    let account = rt.block_on(ingest.stop()).unwrap();
    assert!(account.balanced());
    assert_eq!(account.counters.acked, 2400);
    for p in [json, hgrm, svg] {
        let _ = std::fs::remove_file(p);
    }
}

/// A multicast group as the target: every datagram reaches a listener that
/// joined the group on loopback, once, when `--multicast-if` names the
/// loopback address (there is no route for the group otherwise).
#[test]
fn a_multicast_group_gets_every_datagram() {
    use std::net::{Ipv4Addr, UdpSocket};
    let group = Ipv4Addr::new(239, 255, 78, 1);
    let rx = UdpSocket::bind((group, 0)).unwrap();
    rx.join_multicast_v4(&group, &Ipv4Addr::LOCALHOST).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let port = rx.local_addr().unwrap().port();
    let counter = std::thread::spawn(move || {
        let mut n = 0u64;
        let mut buf = [0u8; 64];
        while let Ok(len) = rx.recv(&mut buf) {
            assert_eq!(len, 37);
            n += 1;
            if n > 100_000 {
                break; // bounded
            }
        }
        n
    });
    let out = bin()
        .args(["--tracks", "20", "--rate-hz", "10", "--duration-s", "1"])
        .args(["--udp", &format!("{group}:{port}")])
        .args(["--multicast-if", "127.0.0.1", "--multicast-ttl", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(counter.join().unwrap(), 20 * 10, "every datagram once");

    let out = bin()
        .args(["--duration-s", "1", "--udp", &format!("{group}:{port}")])
        .args(["--multicast-if", "no-such-if0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--multicast-if") && err.contains("no-such-if0"),
        "{err}"
    );
}
