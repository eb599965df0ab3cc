//! Two ingest boxes active-active on one multicast group (issue 16): two
//! `tspi ingest` processes, each in a network namespace of its own (two
//! hosts, as far as the kernel is concerned), joined by a bridge to the
//! test's namespace where nats-server and the sender are; both receive
//! every datagram and publish it to one stream, whose duplicate window
//! keeps one copy. One box is SIGKILLed mid-stream: nothing is lost.
//!
//! The test re-runs itself inside a private network namespace (`unshare
//! --net`, root), so nothing it sets up (bridge, veths, routes) touches the
//! machine's own network.

use crate::spool::{Chaos, ids, stop_for_account, stored_ids_counting, wait_stored};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tspi_testkit::frames::frame;
use tspi_testkit::harness::NatsServer;
use tspi_testkit::skip;

const INNER: &str = "TSPI_TEST_INSIDE_NETNS_BOXES";
const NAME: &str = "spool_boxes::two_ingest_boxes_active_active_each_datagram_stored_once";
const GROUP: Ipv4Addr = Ipv4Addr::new(239, 7, 7, 7);
const PORT: u16 = 5077;
const HOST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

fn sh(cmd: &str) {
    let st = Command::new("sh").args(["-c", cmd]).status().unwrap();
    assert!(st.success(), "{cmd}");
}

/// A box: `tspi ingest` in a namespace of its own, waiting for its
/// network before it starts.
fn start_box(name: &str, ip: Ipv4Addr, nats: &str, dir: &std::path::Path) -> std::process::Child {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[nats]\nservers = [\"{nats}\"]\n[stream]\nduplicate_window_s = 30\n\
             [ingest]\nudp = [\"{GROUP}:{PORT}\"]\n\
             [[ingest.multicast]]\ngroup = \"{GROUP}\"\ninterface = \"{ip}\"\n"
        ),
    )
    .unwrap();
    let ready = dir.join(format!("{name}.ready"));
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.05; done; exec '{}' --log warn ingest --config '{}' --json --interval-s 1",
        ready.display(),
        env!("CARGO_BIN_EXE_tspi"),
        cfg.display()
    );
    let child = Command::new("unshare")
        .args(["--net", "--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    sh(&format!(
        "ip link add v{name}0 type veth peer name v{name}1 && ip link set v{name}0 master br0 \
         && ip link set v{name}0 up && ip link set v{name}1 netns {pid}"
    ));
    sh(&format!(
        "nsenter -t {pid} -n sh -c 'ip link set lo up && ip addr add {ip}/24 dev v{name}1 \
         && ip link set v{name}1 up && ip route add 224.0.0.0/4 dev v{name}1'"
    ));
    std::fs::write(&ready, b"").unwrap();
    child
}

#[test]
fn two_ingest_boxes_active_active_each_datagram_stored_once() {
    if std::env::var_os(INNER).is_none() {
        if !skip::require(NAME, skip::netns()) {
            return;
        }
        let out = Command::new("unshare")
            .args(["--net", "--"])
            .arg(std::env::current_exe().unwrap())
            .args([NAME, "--exact", "--test-threads=1", "--nocapture"])
            .env(INNER, "1")
            .output()
            .expect("run unshare");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("1 passed"),
            "inside the namespace:\n{text}"
        );
        for line in text.lines().filter(|l| {
            l.contains("CHAOS|") || l.starts_with("box b: ") || l.starts_with("SKIPPED: ")
        }) {
            eprintln!("{line}");
        }
        return;
    }
    sh(
        "ip link set lo up && ip link add br0 type bridge && ip link set br0 type bridge mcast_snooping 0 \
        && ip addr add 10.77.0.1/24 dev br0 && ip link set br0 up && ip route add 224.0.0.0/4 dev br0",
    );
    let mut server = NatsServer::start_on(HOST.into()).expect("nats-server on the bridge");
    let dir = tempfile::tempdir().unwrap();
    let a = start_box("a", Ipv4Addr::new(10, 77, 0, 11), &server.url(), dir.path());
    let b = start_box("b", Ipv4Addr::new(10, 77, 0, 12), &server.url(), dir.path());
    crate::kit::wait_for_stream(&server.url(), "TSPI");
    // Both boxes receiving (each logs nothing at warn when it starts well).
    std::thread::sleep(Duration::from_secs(2));
    let total = 30_000u64;
    let sock = UdpSocket::bind((HOST, 0)).unwrap();
    sock.set_multicast_loop_v4(false).unwrap();
    let to = SocketAddr::from((GROUP, PORT));
    let mut a = Some(a);
    let t0 = Instant::now();
    for i in 0..total {
        sock.send_to(&frame(i).encode(), to).unwrap();
        if (i + 1).is_multiple_of(100) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if i == total / 2 {
            // Box a dies mid-stream.
            let mut a = a.take().unwrap();
            a.kill().unwrap();
            a.wait().unwrap();
        }
    }
    let fed = t0.elapsed();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stored = rt.block_on(wait_stored(&server.url(), total, Duration::from_secs(60)));
    let v = stop_for_account(b);
    let (got, dups) = rt.block_on(stored_ids_counting(&server.url()));
    let c = &v["final_account"]["counters"];
    Chaos {
        scenario: "two ingest boxes active-active (namespaces), box a SIGKILLed mid-stream",
        rate_per_s: total as f64 / fed.as_secs_f64(),
        sent: total,
        stored: got.len() as u64,
        duplicated: dups,
        lost: total - got.intersection(&ids(0..total)).count() as u64,
        counted_drops: c["ring_dropped"].as_u64().unwrap_or(0) + c["failed"].as_u64().unwrap_or(0),
        stall: Duration::ZERO,
        catch_up: None,
    }
    .print();
    eprintln!("box b: {v}");
    assert_eq!(v["balanced"], true, "{v}");
    assert_eq!(c["received"], total, "box b received every datagram: {v}");
    assert_eq!(stored, total, "{v}");
    assert_eq!(dups, 0, "each once");
    assert_eq!(got, ids(0..total), "none lost");
    server.stop();
}
