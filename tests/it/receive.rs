//! The receive path on loopback, for both backends: every valid datagram
//! comes out of the rings exactly once, every other one is counted by
//! reason, and the counts always add up.
//!
//! Where the kernel lacks io_uring, the io_uring half of each test is
//! skipped loudly with the probe's reason (`SKIPPED: ...` on stderr; a
//! failure under `TSPI_TEST_NO_SKIP=1`, as CI runs); the development and CI
//! kernels have it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use tspi::codec::{self, DATAGRAM_LEN, Frame, RejectReason, vectors};
use tspi::message::RecvTime;
use tspi::receive::{
    Backend, ConfigError, MulticastGroup, ReceiveConfig, ReceiveError, Received, ReceiverCounts,
    Receivers,
};
use tspi_testkit::skip;

/// The backends to test here: both, or recvmmsg alone after a loud skip
/// of the io_uring half when the kernel lacks it.
fn backends(test: &str) -> Vec<Backend> {
    let mut b = vec![Backend::Recvmmsg];
    if skip::require(
        &format!("receive::{test} (io_uring backend)"),
        skip::io_uring(),
    ) {
        b.insert(0, Backend::IoUring);
    }
    b
}
/// Longest any wait in these tests lasts.
const WAIT_MAX: Duration = Duration::from_secs(10);
/// Datagrams sent before waiting for the workers to catch up: far below
/// what a 4 MiB receive buffer holds (~5000), so the kernel drops nothing.
const SEND_CHUNK_LEN: usize = 200;

fn config(listen: &str, backend: Backend) -> ReceiveConfig {
    let mut cfg = ReceiveConfig::new(vec![listen.parse().unwrap()]);
    cfg.backend = backend;
    cfg.rcvbuf_bytes = 4 << 20;
    cfg.ring_capacity = 1 << 16;
    cfg
}

fn start(cfg: &ReceiveConfig) -> Receivers {
    match Receivers::start(cfg) {
        Ok(rx) => rx,
        Err(e) => panic!("start {:?}: {e}", cfg.backend),
    }
}

/// A valid datagram, unique per `i`: the contract's vectors in turn (both
/// types), with `time_ticks = i`.
fn valid(i: u32) -> [u8; DATAGRAM_LEN] {
    let hex = vectors::ACCEPTED[i as usize % vectors::ACCEPTED.len()];
    let mut frame = codec::parse(&vectors::bytes(hex)).unwrap();
    frame.time_ticks = i;
    frame.encode()
}

fn valid_with_sensor(i: u32, sensor_id: u16) -> [u8; DATAGRAM_LEN] {
    let mut frame = codec::parse(&valid(i)).unwrap();
    frame.sensor_id = sensor_id;
    frame.encode()
}

/// One of each malformation, with the reason it must be counted under.
fn malformed() -> Vec<(Vec<u8>, RejectReason)> {
    let g = vectors::bytes(vectors::GEOCENTRIC_1);
    let with = |at: usize, bytes: &[u8]| {
        let mut v = g.clone();
        v[at..at + bytes.len()].copy_from_slice(bytes);
        v
    };
    let longer = |len: usize| {
        let mut v = g.clone();
        v.resize(len, 0xAB);
        v
    };
    vec![
        (g[..36].to_vec(), RejectReason::Length),
        (longer(38), RejectReason::Length),
        // Longer than the recvmmsg buffer (64): seen through MSG_TRUNC.
        (longer(100), RejectReason::Length),
        // Longer than either backend's buffer.
        (longer(2000), RejectReason::Length),
        (Vec::new(), RejectReason::Length),
        (with(0, &[0xC3]), RejectReason::Type),
        (with(1, &[3]), RejectReason::Version),
        (with(4, &0u16.to_be_bytes()), RejectReason::Day),
        (with(4, &367u16.to_be_bytes()), RejectReason::Day),
        (with(6, &864_010_000u32.to_be_bytes()), RejectReason::Time),
    ]
}

/// Wait until `done(counts)` or [`WAIT_MAX`]; the last counts either way.
fn wait_counts(rx: &Receivers, done: impl Fn(&ReceiverCounts) -> bool) -> ReceiverCounts {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let c = rx.counts();
        assert!(c.is_consistent(), "invariant broken: {c:?}");
        if done(&c) || Instant::now() >= deadline {
            return c;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Send every datagram to `to`, in chunks the kernel can buffer, waiting
/// for the workers to read each chunk.
fn send_paced(rx: &Receivers, from: &UdpSocket, to: SocketAddr, datagrams: &[Vec<u8>]) {
    let base = rx.counts().received;
    for (k, chunk) in datagrams.chunks(SEND_CHUNK_LEN).enumerate() {
        for d in chunk {
            from.send_to(d, to).unwrap();
        }
        let want = base + (k * SEND_CHUNK_LEN + chunk.len()) as u64;
        let got = wait_counts(rx, |c| c.received >= want).received;
        assert!(
            got >= want,
            "{got} of {want} datagrams read within {WAIT_MAX:?}"
        );
    }
}

fn drain(consumers: &mut [rtrb::Consumer<Received>]) -> Vec<Vec<Received>> {
    consumers
        .iter_mut()
        .map(|c| std::iter::from_fn(|| c.pop().ok()).collect())
        .collect()
}

fn sender_v4() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

#[test]
fn io_uring_probe_passes_here() {
    if !skip::require("receive::io_uring_probe_passes_here", skip::io_uring()) {
        return;
    }
    let rx = start(&config("127.0.0.1:0", Backend::Auto));
    assert_eq!(
        rx.backend(),
        Backend::IoUring,
        "auto picks io_uring when the probe passes"
    );
    rx.stop();
}

fn mixed_datagrams(backend: Backend) {
    let mut rx = start(&config("127.0.0.1:0", backend));
    assert_eq!(rx.backend(), backend);
    let to = rx.local_addrs()[0];
    assert_ne!(to.port(), 0);
    let mut consumers = rx.take_consumers();
    let bad = malformed();
    let mut datagrams = Vec::new();
    let mut expected_rejected = [0u64; RejectReason::ALL.len()];
    let valid_len = 400u32;
    for i in 0..valid_len {
        datagrams.push(valid(i).to_vec());
        if i % 8 == 0 {
            let (d, reason) = &bad[(i as usize / 8) % bad.len()];
            datagrams.push(d.clone());
            expected_rejected[reason.index()] += 1;
        }
    }
    let t0 = RecvTime::now();
    send_paced(&rx, &sender_v4(), to, &datagrams);
    let t1 = RecvTime::now();
    let c = rx.counts();
    assert_eq!(rx.kernel_drops(), 0);
    assert_eq!(c.received, datagrams.len() as u64);
    assert_eq!(c.rejected, expected_rejected);
    assert_eq!(
        (c.filtered, c.ring_dropped, c.accepted),
        (0, 0, valid_len as u64)
    );
    assert!(c.is_consistent());

    let out = drain(&mut consumers);
    let mut seen: HashMap<Frame, u32> = HashMap::new();
    let mut last_mono = 0;
    for r in &out[0] {
        *seen.entry(r.frame).or_default() += 1;
        assert!(
            t0 <= r.recv && r.recv <= t1,
            "receive time {r:?} outside the test"
        );
        assert!(
            r.recv_mono_ns >= last_mono,
            "stamps go forward within a worker"
        );
        last_mono = r.recv_mono_ns;
    }
    assert_eq!(seen.len(), valid_len as usize);
    for i in 0..valid_len {
        let f = codec::parse(&valid(i)).unwrap();
        assert_eq!(seen.get(&f), Some(&1), "frame {i} exactly once");
    }
    let last = rx.stop();
    assert_eq!(last, c);
}

#[test]
fn mixed_datagrams_io_uring() {
    if !skip::require("receive::mixed_datagrams_io_uring", skip::io_uring()) {
        return;
    }
    mixed_datagrams(Backend::IoUring);
}

#[test]
fn mixed_datagrams_recvmmsg() {
    mixed_datagrams(Backend::Recvmmsg);
}

#[test]
fn allow_list_filters_other_sensors() {
    for backend in backends("allow_list_filters_other_sensors") {
        let mut cfg = config("127.0.0.1:0", backend);
        // Vectors 1 and 2 (sensors 501, 2048) pass; 3 and 4 (65535, 0) do not.
        cfg.allow_sensors = Some(vec![501, 2048, 7]);
        let mut rx = start(&cfg);
        let to = rx.local_addrs()[0];
        let datagrams: Vec<Vec<u8>> = (0..200).map(|i| valid(i).to_vec()).collect();
        send_paced(&rx, &sender_v4(), to, &datagrams);
        let c = rx.counts();
        assert_eq!(
            (c.received, c.filtered, c.accepted),
            (200, 100, 100),
            "{backend:?}"
        );
        let out = drain(&mut rx.consumers);
        assert!(
            out[0]
                .iter()
                .all(|r| [501, 2048].contains(&r.frame.sensor_id))
        );
        assert_eq!(out[0].len(), 100);
        rx.stop();
    }
}

/// Issue 13, item 6: datagrams from senders off a listen address's
/// allow-list are counted as rejected (`source`) and never reach the ring,
/// whatever they hold; one worker's sockets each use their own list.
#[test]
fn source_allow_lists_reject_forged_senders_before_parsing() {
    for backend in backends("source_allow_lists_reject_forged_senders_before_parsing") {
        let mut cfg = config("127.0.0.1:0", backend);
        cfg.listen.push("[::1]:0".parse().unwrap());
        cfg.allow_sources = vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.1".parse().unwrap()];
        cfg.sources = vec![tspi::receive::SourcesConfig {
            listen: "[::1]:0".parse().unwrap(),
            allow: vec!["fd00::/8".parse().unwrap()],
        }];
        let mut rx = start(&cfg);
        let (to_v4, to_v6) = (rx.local_addrs()[0], rx.local_addrs()[1]);
        let short = || vectors::bytes(vectors::GEOCENTRIC_1)[..36].to_vec();
        // Genuine: 127.0.0.1, allowed; 100 valid and 5 malformed.
        let mut genuine: Vec<Vec<u8>> = (0..100).map(|i| valid(i).to_vec()).collect();
        genuine.extend((0..5).map(|_| short()));
        send_paced(&rx, &sender_v4(), to_v4, &genuine);
        // Forged: 127.0.0.2 (loopback, but not on the list), valid or not.
        let forger = UdpSocket::bind("127.0.0.2:0").unwrap();
        let mut forged: Vec<Vec<u8>> = (1000..1050).map(|i| valid(i).to_vec()).collect();
        forged.extend((0..5).map(|_| short()));
        send_paced(&rx, &forger, to_v4, &forged);
        // ::1 is not in fd00::/8, the list of the v6 address.
        let v6: Vec<Vec<u8>> = (2000..2020).map(|i| valid(i).to_vec()).collect();
        send_paced(&rx, &UdpSocket::bind("[::1]:0").unwrap(), to_v6, &v6);

        let c = rx.counts();
        assert!(c.is_consistent(), "{c:?}");
        assert_eq!(c.received, 180, "{backend:?}");
        assert_eq!(
            c.rejected_for(RejectReason::Source),
            75,
            "{backend:?} {c:?}"
        );
        assert_eq!(c.rejected_for(RejectReason::Length), 5, "{backend:?} {c:?}");
        assert_eq!((c.filtered, c.accepted), (0, 100), "{backend:?}");
        let out = drain(&mut rx.consumers);
        let mut ticks: Vec<u32> = out[0].iter().map(|r| r.frame.time_ticks).collect();
        ticks.sort_unstable();
        assert_eq!(ticks, (0..100).collect::<Vec<_>>(), "only the genuine ones");
        rx.stop();
    }
}

/// Issue 13, item 5: a port another process holds is refused, naming the
/// holder, instead of being joined through `SO_REUSEPORT` (which would
/// split the feed between the two). The holder here is this process, with
/// a socket just like a running ingest's.
#[test]
fn a_port_another_socket_holds_is_refused_naming_the_holder() {
    let reuseport_socket = |addr: SocketAddr| {
        let s = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .unwrap();
        s.set_reuse_port(true).unwrap();
        s.bind(&addr.into()).unwrap();
        s
    };
    let holder = reuseport_socket("127.0.0.1:0".parse().unwrap());
    let port = holder.local_addr().unwrap().as_socket().unwrap().port();
    for listen in [format!("127.0.0.1:{port}"), format!("0.0.0.0:{port}")] {
        let e = Receivers::start(&config(&listen, Backend::Recvmmsg))
            .err()
            .unwrap_or_else(|| panic!("{listen}: a second socket joined a held port"));
        assert!(matches!(e, ReceiveError::PortHeld { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!(
                "udp {listen} is already bound by pid {} (",
                std::process::id()
            )) && msg.contains("split the feed"),
            "{msg}"
        );
    }
    // Another address on the same port does not overlap.
    start(&config(&format!("127.0.0.2:{port}"), Backend::Recvmmsg)).stop();
    // Port 0 is a fresh port: never probed, never refused.
    start(&config("127.0.0.1:0", Backend::Recvmmsg)).stop();

    // A multicast group's own address: every socket gets its own copy, so
    // a holder on the port takes nothing away; allowed.
    let wildcard = reuseport_socket("0.0.0.0:0".parse().unwrap());
    let port = wildcard.local_addr().unwrap().as_socket().unwrap().port();
    let group = Ipv4Addr::new(239, 255, 77, 99);
    let mut cfg = config(&format!("{group}:{port}"), Backend::Recvmmsg);
    cfg.multicast = vec![MulticastGroup {
        group: IpAddr::V4(group),
        interface: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        interface_index: None,
    }];
    start(&cfg).stop();
    drop(holder);
}

#[test]
fn full_ring_drops_newest_and_counts_it() {
    for backend in backends("full_ring_drops_newest_and_counts_it") {
        let mut cfg = config("127.0.0.1:0", backend);
        cfg.ring_capacity = 8;
        let mut rx = start(&cfg);
        let to = rx.local_addrs()[0];
        let datagrams: Vec<Vec<u8>> = (0..300).map(|i| valid(i).to_vec()).collect();
        send_paced(&rx, &sender_v4(), to, &datagrams);
        let c = rx.counts();
        assert_eq!(
            (c.received, c.accepted, c.ring_dropped),
            (300, 8, 292),
            "{backend:?}"
        );
        let out = drain(&mut rx.consumers);
        let kept: Vec<u32> = out[0].iter().map(|r| r.frame.time_ticks).collect();
        assert_eq!(
            kept,
            (0..8).collect::<Vec<_>>(),
            "the oldest stay, the newest go"
        );
        rx.stop();
    }
}

#[test]
fn ipv6_listen() {
    for backend in backends("ipv6_listen") {
        let mut rx = start(&config("[::1]:0", backend));
        let to = rx.local_addrs()[0];
        assert!(to.is_ipv6() && to.port() != 0);
        let from = UdpSocket::bind("[::1]:0").unwrap();
        let mut datagrams: Vec<Vec<u8>> = (0..50).map(|i| valid(i).to_vec()).collect();
        datagrams.push(vec![0xC1; 36]);
        send_paced(&rx, &from, to, &datagrams);
        let c = rx.counts();
        assert_eq!((c.received, c.accepted), (51, 50), "{backend:?}");
        assert_eq!(c.rejected_for(RejectReason::Length), 1);
        assert_eq!(drain(&mut rx.consumers)[0].len(), 50);
        rx.stop();
    }
}

/// v4 and v6 addresses on one worker: one multishot (or poll entry) each.
#[test]
fn several_addresses_on_one_worker() {
    for backend in backends("several_addresses_on_one_worker") {
        let mut cfg = config("127.0.0.1:0", backend);
        cfg.listen.push("[::1]:0".parse().unwrap());
        cfg.listen.push("127.0.0.1:0".parse().unwrap());
        let mut rx = start(&cfg);
        let addrs = rx.local_addrs();
        assert_eq!(addrs.len(), 3);
        let v4 = sender_v4();
        let v6 = UdpSocket::bind("[::1]:0").unwrap();
        for (k, &to) in addrs.iter().enumerate() {
            let from = if to.is_ipv6() { &v6 } else { &v4 };
            let datagrams: Vec<Vec<u8>> = (0..30)
                .map(|i| valid(k as u32 * 100 + i).to_vec())
                .collect();
            send_paced(&rx, from, to, &datagrams);
        }
        assert_eq!(rx.counts().accepted, 90, "{backend:?}");
        assert_eq!(drain(&mut rx.consumers)[0].len(), 90);
        rx.stop();
    }
}

#[test]
fn two_workers_share_a_port_by_source() {
    let cores: Vec<usize> = core_affinity::get_core_ids()
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let pin = vec![cores[0], *cores.get(1).unwrap_or(&cores[0])];
    for backend in backends("two_workers_share_a_port_by_source") {
        let mut cfg = config("127.0.0.1:0", backend);
        cfg.workers = 2;
        cfg.cores = pin.clone();
        let mut rx = start(&cfg);
        let to = rx.local_addrs()[0];
        let mut consumers = rx.take_consumers();
        assert_eq!(consumers.len(), 2);
        // 32 sources: the chance that the kernel's hash puts them all on
        // one worker is 2^-31.
        let sources: Vec<UdpSocket> = (0..32).map(|_| sender_v4()).collect();
        for (s, from) in sources.iter().enumerate() {
            let datagrams: Vec<Vec<u8>> = (0..20)
                .map(|i| valid_with_sensor(i, s as u16).to_vec())
                .collect();
            send_paced(&rx, from, to, &datagrams);
        }
        let per_worker = rx.worker_counts();
        assert!(
            per_worker.iter().all(|c| c.received > 0),
            "{backend:?}: {per_worker:?}"
        );
        assert_eq!(rx.counts().accepted, 640);
        let out = drain(&mut consumers);
        let mut worker_of = HashMap::new();
        for (w, items) in out.iter().enumerate() {
            assert_eq!(items.len() as u64, per_worker[w].accepted);
            for r in items {
                let prev = worker_of.insert(r.frame.sensor_id, w);
                assert!(prev.is_none() || prev == Some(w), "one source, one worker");
            }
        }
        assert_eq!(worker_of.len(), 32);
        rx.stop();
    }
}

/// Send 60 datagrams to the group and check each was read once: with two
/// workers the group's socket lives on one of them only, not once per worker.
fn multicast_delivers_each_once(mut rx: Receivers, from: &UdpSocket, to: SocketAddr, what: &str) {
    let datagrams: Vec<Vec<u8>> = (0..60).map(|i| valid(i).to_vec()).collect();
    send_paced(&rx, from, to, &datagrams);
    std::thread::sleep(Duration::from_millis(50));
    let c = rx.counts();
    assert_eq!((c.received, c.accepted), (60, 60), "{what}");
    let total: usize = drain(&mut rx.consumers).iter().map(Vec::len).sum();
    assert_eq!(total, 60, "{what}");
    rx.stop();
}

/// IPv4 multicast on loopback: group 239.255.77.x joined on 127.0.0.1,
/// the sender looping its datagrams back through 127.0.0.1.
#[test]
fn multicast_v4_on_loopback() {
    for (k, backend) in backends("multicast_v4_on_loopback").into_iter().enumerate() {
        for workers in [1, 2] {
            let group = Ipv4Addr::new(239, 255, 77, (10 * k + workers) as u8);
            let mut cfg = config(&format!("{group}:0"), backend);
            cfg.workers = workers;
            cfg.multicast = vec![MulticastGroup {
                group: IpAddr::V4(group),
                interface: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                interface_index: None,
            }];
            let rx = start(&cfg);
            let to = rx.local_addrs()[0];
            assert_eq!(to.ip(), IpAddr::V4(group));
            let from = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )
            .unwrap();
            from.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
            from.set_multicast_loop_v4(true).unwrap();
            from.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
                .unwrap();
            let from: UdpSocket = from.into();
            multicast_delivers_each_once(rx, &from, to, &format!("{backend:?} x{workers}"));
        }
    }
}

/// IPv6 multicast delivery, both backends, one and two workers. `lo` cannot
/// carry IPv6 multicast here (no MULTICAST flag, so no `ff00::/8` route), so
/// the test re-runs itself inside a network namespace of its own (`unshare
/// --net`, root; `scripts/setup` installs util-linux and iproute2) with a
/// veth pair: nothing it sends can leave that namespace.
#[test]
fn multicast_v6_delivery_in_a_private_netns() {
    const INNER: &str = "TSPI_TEST_INSIDE_NETNS";
    const NAME: &str = "receive::multicast_v6_delivery_in_a_private_netns";
    if std::env::var_os(INNER).is_none() {
        if !skip::require(NAME, skip::netns()) {
            return;
        }
        let out = std::process::Command::new("unshare")
            .args(["--net", "--"])
            .arg(std::env::current_exe().unwrap())
            .args([NAME, "--exact", "--test-threads=1", "--nocapture"])
            .env(INNER, "1")
            .output()
            .expect("run unshare (util-linux; scripts/setup installs it)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("1 passed"),
            "inside the namespace (needs root for unshare --net):\n{text}"
        );
        // A skip inside the namespace is as loud as one outside.
        for line in text.lines().filter(|l| l.starts_with("SKIPPED: ")) {
            eprintln!("{line}");
        }
        return;
    }
    let sh = |cmd: &str| {
        let st = std::process::Command::new("sh")
            .args(["-c", cmd])
            .status()
            .unwrap();
        assert!(st.success(), "{cmd}");
    };
    // No duplicate address detection: the link-local address is usable at once.
    sh("echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad");
    sh(
        "ip link set lo up && ip link add tspi0 type veth peer name tspi1 \
        && ip link set tspi0 up && ip link set tspi1 up",
    );
    let name = std::ffi::CString::new("tspi0").unwrap();
    // SAFETY: `name` is a valid NUL-terminated string for the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(index, 0);
    let deadline = Instant::now() + WAIT_MAX;
    while !String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["-6", "addr", "show", "dev", "tspi0"])
            .output()
            .unwrap()
            .stdout,
    )
    .contains("fe80::")
    {
        assert!(Instant::now() < deadline, "no link-local address on tspi0");
        std::thread::sleep(Duration::from_millis(20));
    }
    for (k, backend) in backends("multicast_v6_delivery_in_a_private_netns")
        .into_iter()
        .enumerate()
    {
        for workers in [1, 2] {
            let group: std::net::Ipv6Addr = format!("ff15::77{k}{workers}").parse().unwrap();
            let mut cfg = config(&format!("[{group}]:0"), backend);
            cfg.workers = workers;
            cfg.multicast = vec![MulticastGroup {
                group: IpAddr::V6(group),
                interface: None,
                interface_index: Some(index),
            }];
            let rx = start(&cfg);
            let port = rx.local_addrs()[0].port();
            let from = socket2::Socket::new(
                socket2::Domain::IPV6,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )
            .unwrap();
            from.set_multicast_if_v6(index).unwrap();
            from.set_multicast_loop_v6(true).unwrap();
            let from: UdpSocket = from.into();
            let to = SocketAddr::V6(std::net::SocketAddrV6::new(group, port, 0, index));
            multicast_delivers_each_once(rx, &from, to, &format!("{backend:?} x{workers}"));
        }
    }
}

/// IPv6 groups are joined on an interface index (on `lo` too, where
/// delivery cannot happen: see the namespace test above).
#[test]
fn multicast_v6_join_on_loopback() {
    let lo = std::ffi::CString::new("lo").unwrap();
    // SAFETY: `lo` is a valid NUL-terminated string for the call.
    let index = unsafe { libc::if_nametoindex(lo.as_ptr()) };
    assert_ne!(index, 0, "no loopback interface");
    let mut cfg = config("[::]:0", Backend::Recvmmsg);
    cfg.multicast = vec![MulticastGroup {
        group: "ff15::7701".parse().unwrap(),
        interface: None,
        interface_index: Some(index),
    }];
    let rx = start(&cfg);
    assert!(rx.local_addrs()[0].is_ipv6());
    rx.stop();
}

#[test]
fn stop_is_prompt_and_leaves_the_rings_full() {
    for backend in backends("stop_is_prompt_and_leaves_the_rings_full") {
        let mut cfg = config("127.0.0.1:0", backend);
        cfg.workers = 2;
        let mut rx = start(&cfg);
        let mut consumers = rx.take_consumers();
        let to = rx.local_addrs()[0];
        let datagrams: Vec<Vec<u8>> = (0..20).map(|i| valid(i).to_vec()).collect();
        send_paced(&rx, &sender_v4(), to, &datagrams);
        // Idle long enough for both workers to be waiting in the kernel.
        std::thread::sleep(Duration::from_millis(120));
        let t = Instant::now();
        let c = rx.stop();
        let took = t.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "{backend:?}: stop took {took:?}"
        );
        assert_eq!(c.accepted, 20);
        let total: usize = drain(&mut consumers).iter().map(Vec::len).sum();
        assert_eq!(total, 20, "accepted frames stay in the rings after stop");
    }
}

/// `UDP_SEGMENT`: one `send` of `segments × 37` bytes becomes that many
/// datagrams, all delivered within the sender's system call.
fn set_udp_gso(socket: &UdpSocket, segment_len: u16) {
    let value = libc::c_int::from(segment_len);
    // SAFETY: a valid socket fd and a pointer to a live c_int of the size
    // passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
}

/// Bursts far larger than a minimal receive buffer: the kernel drops some
/// before the worker sees them, and `kernel_drops` accounts for exactly
/// those.
#[test]
fn kernel_drops_account_for_overflowed_socket_buffers() {
    for backend in backends("kernel_drops_account_for_overflowed_socket_buffers") {
        let mut cfg = config("127.0.0.1:0", backend);
        cfg.rcvbuf_bytes = 1024; // the kernel's minimum (~4.6 KB) applies
        let rx = start(&cfg);
        let to = rx.local_addrs()[0];
        assert_eq!(rx.kernel_drops(), 0);
        let from = sender_v4();
        set_udp_gso(&from, DATAGRAM_LEN as u16);
        let burst: Vec<u8> = (0..64).flat_map(valid).collect();
        let bursts = 50u64;
        for _ in 0..bursts {
            assert_eq!(from.send_to(&burst, to).unwrap(), burst.len());
        }
        let sent = bursts * 64;
        let deadline = Instant::now() + WAIT_MAX;
        let (c, drops) = loop {
            let (c, drops) = (rx.counts(), rx.kernel_drops());
            if c.received + drops >= sent || Instant::now() >= deadline {
                break (c, drops);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(
            drops > 0,
            "{backend:?}: a ~4.6 KB buffer took {sent} datagrams in bursts of 64"
        );
        assert_eq!(
            c.received + drops,
            sent,
            "{backend:?}: every datagram read or counted dropped"
        );
        assert!(c.is_consistent());
        rx.stop();
    }
}

#[test]
fn rcvbuf_shortfall_is_reported() {
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut cfg = config("127.0.0.1:0", Backend::Recvmmsg);
    cfg.rcvbuf_bytes = 4 << 20;
    let rx = start(&cfg);
    assert_eq!(rx.rcvbuf_granted_bytes(), (4 << 20).min(rmem_max));
    rx.stop();
    if rmem_max < 1 << 30 {
        cfg.rcvbuf_bytes = 1 << 30;
        let rx = start(&cfg);
        assert_eq!(
            rx.rcvbuf_granted_bytes(),
            rmem_max,
            "capped, and start warns"
        );
        rx.stop();
    }
}

#[test]
fn bad_configs_are_typed_errors() {
    let err = |cfg: &ReceiveConfig| Receivers::start(cfg).err().expect("start must fail");
    let base = config("127.0.0.1:0", Backend::Recvmmsg);

    let mut c = base.clone();
    c.workers = 0;
    assert!(matches!(
        err(&c),
        ReceiveError::Config(ConfigError::OutOfRange {
            field: "workers",
            ..
        })
    ));

    let mut c = base.clone();
    c.workers = 2;
    c.cores = vec![0];
    assert!(matches!(
        err(&c),
        ReceiveError::Config(ConfigError::CoresLen {
            workers: 2,
            cores: 1
        })
    ));

    let mut c = base.clone();
    c.allow_sensors = Some(vec![]);
    assert!(matches!(
        err(&c),
        ReceiveError::Config(ConfigError::EmptyAllowList)
    ));

    let mut c = base.clone();
    c.multicast = vec![MulticastGroup {
        group: "10.1.2.3".parse().unwrap(),
        interface: None,
        interface_index: None,
    }];
    assert!(matches!(
        err(&c),
        ReceiveError::Config(ConfigError::NotMulticast { .. })
    ));

    // A group no listen address can receive (127.0.0.1 is neither the
    // group nor 0.0.0.0).
    c.multicast[0].group = "239.1.2.3".parse().unwrap();
    let e = err(&c);
    assert!(
        matches!(
            e,
            ReceiveError::Config(ConfigError::GroupWithoutListen { .. })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("0.0.0.0:port"), "{e}");

    let c = config("239.1.2.3:0", Backend::Recvmmsg);
    assert!(matches!(
        err(&c),
        ReceiveError::Config(ConfigError::ListenGroupNotJoined { .. })
    ));

    // Not an address of this host.
    let e = err(&config("192.0.2.123:0", Backend::Recvmmsg));
    assert!(matches!(e, ReceiveError::Bind { .. }), "{e}");
    assert!(e.to_string().contains("not assigned"), "{e}");

    // A port held by a socket without SO_REUSEPORT: refused before binding,
    // naming the holder (this process).
    let holder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let e = err(&config(&format!("127.0.0.1:{port}"), Backend::Recvmmsg));
    assert!(matches!(e, ReceiveError::PortHeld { .. }), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("by pid {} (", std::process::id())),
        "{e}"
    );

    let mut c = base.clone();
    c.cores = vec![100_000];
    let e = err(&c);
    assert!(
        matches!(
            e,
            ReceiveError::Config(ConfigError::OutOfRange { field: "cores", .. })
        ),
        "{e}"
    );

    // A possible core id this machine does not have.
    c.cores = vec![1000];
    let e = err(&c);
    assert!(matches!(e, ReceiveError::Pin { core: 1000, .. }), "{e}");
}
