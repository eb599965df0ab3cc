//! The main job stays runnable: a short `tspi demo` on one server and on a
//! three-node cluster ends with a balanced account and exit 0.

use std::process::Command;

fn demo(nodes: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args(["--log", "warn", "demo", "--tracks", "40", "--rate-hz", "10"])
        .args(["--duration-s", "2", "--nodes", nodes, "--interval-s", "1"])
        .output()
        .expect("run tspi demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("[balanced]"), "{stdout}");
    assert!(
        stdout.contains("stream TSPI holds 800 messages (expected 800"),
        "{stdout}"
    );
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
