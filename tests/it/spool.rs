//! The disk spool against a real nats-server (issue 16): an outage longer
//! than the rings hold loses nothing and stores each datagram once; a
//! SIGKILLed ingest's spool is delivered after a restart, a torn tail
//! record skipped and counted.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use tspi::config::{Config, PublishMode};
use tspi::ingest::{self, Account};
use tspi::receive::Backend;
use tspi_testkit::frames::frame;
use tspi_testkit::harness::NatsServer;

/// Small rings, so a short outage overflows them.
const RING: usize = 2048;

pub fn config(nats_url: &str, spool: &std::path::Path, mode: PublishMode) -> Config {
    let mut c = Config::default();
    c.nats.servers = vec![nats_url.to_owned()];
    c.ingest.udp = vec!["127.0.0.1:0".parse().unwrap()];
    c.ingest.backend = Backend::Auto;
    c.ingest.workers = 1;
    c.ingest.ring_capacity = RING;
    c.metrics.interval_s = 1;
    c.publish.mode = mode;
    c.publish.drain_timeout_s = 20;
    c.publish.ack_timeout_ms = 1000;
    c.publish.retry_backoff_max_ms = 500;
    c.spool.dir = Some(spool.to_owned());
    c.spool.segment_bytes = 1 << 16;
    c.spool.drain_rate_per_s = 20_000;
    c
}

/// Frames `from..to` as datagrams to `to`, about 20k/s.
pub fn send_range(to: SocketAddr, from: u64, until: u64) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in from..until {
        s.send_to(&frame(i).encode(), to).unwrap();
        if (i + 1).is_multiple_of(100) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The stream's message ids, each once (a second copy fails the test).
pub async fn stored_ids(url: &str) -> BTreeSet<String> {
    let (ids, dups) = stored_ids_counting(url).await;
    assert_eq!(dups, 0, "{dups} ids stored twice");
    ids
}

/// The stream's message ids, and how many were stored more than once
/// (read by an ordered consumer, headers only).
pub async fn stored_ids_counting(url: &str) -> (BTreeSet<String>, u64) {
    use async_nats::jetstream::consumer::push::OrderedConfig;
    use futures_util::StreamExt as _;
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream("TSPI").await.unwrap();
    let total = stream_messages(url).await;
    let mut out = BTreeSet::new();
    let mut dups = 0;
    if total == 0 {
        return (out, 0);
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_subject: client.new_inbox(),
            headers_only: true,
            ..OrderedConfig::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut read = 0;
    while read < total {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("the stream read in time")
            .unwrap()
            .unwrap();
        read += 1;
        let id = m.headers.as_ref().unwrap().get("Nats-Msg-Id").unwrap();
        if !out.insert(id.to_string()) {
            dups += 1;
        }
    }
    (out, dups)
}

/// Watch the stream grow (any of `urls`) until it holds `total`: the
/// longest time it did not (the stall).
pub fn watch_stall(urls: Vec<String>, total: u64) -> tokio::task::JoinHandle<Duration> {
    tokio::spawn(async move {
        let (mut last, mut since, mut stall) = (0u64, Instant::now(), Duration::ZERO);
        let until = Instant::now() + Duration::from_secs(300);
        while last < total && Instant::now() < until {
            // Every node at once, each given 300 ms: a node that cannot
            // answer (no stream leader yet) must not stretch the sample.
            let asks = urls
                .iter()
                .map(|u| tokio::time::timeout(Duration::from_millis(300), stream_messages(u)));
            let n = futures_util::future::join_all(asks)
                .await
                .into_iter()
                .filter_map(Result::ok)
                .max()
                .unwrap_or(0);
            if n > last {
                stall = stall.max(since.elapsed());
                last = n;
                since = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stall
    })
}

/// One row of the chaos report (`scripts/chaos` collects these lines).
pub struct Chaos<'a> {
    pub scenario: &'a str,
    pub rate_per_s: f64,
    pub sent: u64,
    pub stored: u64,
    pub duplicated: u64,
    pub lost: u64,
    pub counted_drops: u64,
    pub stall: Duration,
    /// From the end of the fault until the stream held every frame.
    pub catch_up: Option<Duration>,
}

impl Chaos<'_> {
    pub fn print(&self) {
        let catch_up = self
            .catch_up
            .map_or("-".to_owned(), |d| format!("{:.1}", d.as_secs_f64()));
        eprintln!(
            "CHAOS|{}|{:.0}|{}|{}|{}|{}|{}|{:.1}|{catch_up}",
            self.scenario,
            self.rate_per_s,
            self.sent,
            self.stored,
            self.duplicated,
            self.lost,
            self.counted_drops,
            self.stall.as_secs_f64()
        );
    }
}

/// Seconds of outage in the outage scenarios: `TSPI_CHAOS_OUTAGE_S`
/// (`scripts/chaos` sets it; 1 by default, to keep the tests short).
pub fn outage_s() -> u64 {
    std::env::var("TSPI_CHAOS_OUTAGE_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .clamp(1, 600)
}

/// Messages in `TSPI` now (0 when the server does not answer).
pub async fn stream_messages(url: &str) -> u64 {
    let Ok(client) = async_nats::connect(url).await else {
        return 0;
    };
    let js = async_nats::jetstream::new(client);
    match js.get_stream("TSPI").await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Wait (at most `within`) until the stream holds `n` messages.
pub async fn wait_stored(url: &str, n: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let m = stream_messages(url).await;
        if m >= n || Instant::now() > deadline {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn ids(range: std::ops::Range<u64>) -> BTreeSet<String> {
    range
        .map(|i| {
            let mut s = String::new();
            tspi::message::write_msg_id(&frame(i), &mut s);
            s
        })
        .collect()
}

async fn outage(mode: PublishMode) -> Account {
    let mut server = NatsServer::start().expect("nats-server");
    let dir = tempfile::tempdir().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{}", crate::kit::free_tcp_port())
        .parse()
        .unwrap();
    let mut cfg = config(&server.url(), dir.path(), mode);
    cfg.metrics.addr = Some(metrics);
    let handle = ingest::Handle::spawn(cfg, Duration::from_secs(30))
        .await
        .expect("ingest started");
    let addr = handle.addrs[0];
    // About 20k/s for 1 s, the outage, and 1 s after it.
    let outage = outage_s();
    let total = 20_000 * (2 + outage);
    let t0 = Instant::now();
    let feed = tokio::task::spawn_blocking(move || {
        send_range(addr, 0, total);
        t0.elapsed()
    });
    let stall = watch_stall(vec![server.url()], total);
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.kill();
    tokio::time::sleep(Duration::from_secs(outage)).await;
    server.restart().expect("restart nats-server");
    let back = Instant::now();
    let fed = feed.await.unwrap();
    let stored = wait_stored(&server.url(), total, Duration::from_secs(60 + 2 * outage)).await;
    let catch_up = back.elapsed();
    let stall = stall.await.unwrap();
    // The spool's figures at the scrape: drained (its last acks may still
    // be on their way to the spool thread: a few scrapes at most).
    let value = |page: &str, name: &str| -> u64 {
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics: {page}"))
    };
    let scrape = || {
        crate::metrics::http(
            metrics,
            "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
    };
    let mut page = scrape().await;
    for _ in 0..50 {
        if value(&page, "tspi_spool_frames") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        page = scrape().await;
    }
    let value = |name: &str| value(&page, name);
    let spooled = value("tspi_spool_spooled_total");
    assert!(spooled > 0, "{page}");
    assert_eq!(value("tspi_spool_spooled_bytes_total"), spooled * 56);
    assert_eq!(value("tspi_spool_drained_total"), spooled, "{page}");
    assert_eq!(value("tspi_spool_frames"), 0, "{page}");
    assert_eq!(value("tspi_spool_oldest_age_seconds"), 0, "{page}");
    let a = tokio::time::timeout(Duration::from_secs(60), handle.stop())
        .await
        .expect("stopped in time")
        .expect("ingest ran");
    let (ids_stored, dups) = stored_ids_counting(&server.url()).await;
    let c = &a.counters;
    Chaos {
        scenario: &format!("JetStream outage {outage} s ({})", a.publish_mode),
        rate_per_s: total as f64 / fed.as_secs_f64(),
        sent: total,
        stored: ids_stored.len() as u64,
        duplicated: dups,
        lost: total - ids_stored.intersection(&ids(0..total)).count() as u64,
        counted_drops: c.ring_dropped + c.failed + a.spool.dropped,
        stall,
        catch_up: Some(catch_up),
    }
    .print();
    assert_eq!(stored, total, "{a:?}");
    assert!(a.balanced(), "{a:?}");
    assert_eq!(
        (c.received, c.ring_dropped, c.failed),
        (total, 0, 0),
        "{a:?}"
    );
    assert_eq!(c.acked, total, "{a:?}");
    let s = &a.spool;
    assert!(s.spooled > 0, "the outage overflowed the ring: {a:?}");
    assert_eq!((s.drained, s.held, s.dropped), (s.spooled, 0, 0), "{a:?}");
    assert_eq!(dups, 0, "each once");
    assert_eq!(ids_stored, ids(0..total), "none lost");
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_past_the_rings_loses_nothing_with_a_spool_fast() {
    outage(PublishMode::Fast).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_past_the_rings_loses_nothing_with_a_spool_pipelined() {
    outage(PublishMode::Pipelined).await;
}

/// Intact records in the spool's segment files now.
fn spooled_records(dir: &std::path::Path) -> (u64, Vec<std::path::PathBuf>) {
    use tspi::spool::proto::record::{parse_segment_name, scan};
    let mut segs: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| Some((parse_segment_name(e.file_name().to_str()?)?, e.path())))
                .collect()
        })
        .unwrap_or_default();
    segs.sort();
    let n = segs
        .iter()
        .map(|(seq, p)| {
            scan(*seq, &std::fs::read(p).unwrap_or_default())
                .records
                .len() as u64
        })
        .sum();
    (n, segs.into_iter().map(|s| s.1).collect())
}

pub fn ingest_binary(cfg: &std::path::Path, udp: &str, url: &str) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args(["--log", "warn", "ingest", "--config"])
        .arg(cfg)
        .args(["--udp", udp, "--nats", url, "--json", "--interval-s", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// SIGTERM, wait (bounded), and the final account's JSON line.
pub fn stop_for_account(mut child: std::process::Child) -> serde_json::Value {
    use std::io::Read as _;
    // SAFETY: kill(2) on our own child's pid with a valid signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let until = Instant::now() + Duration::from_secs(40);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            child.kill().unwrap();
            panic!("tspi ingest did not stop within 40 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let last = out.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|_| panic!("no account: {out}\n{err}"))
}

/// SIGKILL of `tspi ingest` during an outage: what its spool thread had
/// written (fsync "never": the kernel holds it) is delivered by the next
/// run, once; the record a crash tore is found by its checksum, counted
/// and skipped. Lost: only what the ring and the publisher held in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_ingest_delivers_its_spool_after_a_restart_and_skips_a_torn_record() {
    let mut server = NatsServer::start().expect("nats-server");
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let cfg = dir.path().join("tspi.toml");
    std::fs::write(
        &cfg,
        format!(
            "[ingest]\nring_capacity = {RING}\n[publish]\ndrain_timeout_s = 10\n\
             [spool]\ndir = \"{}\"\nsegment_bytes = 65536\nfsync = \"never\"\n",
            spool.display()
        ),
    )
    .unwrap();
    let udp = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        format!("127.0.0.1:{}", s.local_addr().unwrap().port())
    };
    let to: SocketAddr = udp.parse().unwrap();
    let child = ingest_binary(&cfg, &udp, &server.url());
    let url = server.url();
    tokio::task::spawn_blocking(move || crate::kit::wait_for_stream(&url, "TSPI"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    let total = 8_000u64;
    tokio::task::spawn_blocking(move || send_range(to, 0, total))
        .await
        .unwrap();
    // Until the spool stops growing (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (n, _) = spooled_records(&spool);
        if (n == last && n > 0) || Instant::now() > deadline {
            break;
        }
        last = n;
    }
    let mut child = child;
    child.kill().unwrap();
    child.wait().unwrap();
    let (written, segs) = spooled_records(&spool);
    assert!(written > 0, "nothing spooled");
    // In memory when killed (ring + publisher), lost: at most the ring and
    // the publisher's window.
    assert!(
        written + RING as u64 + 4096 >= total,
        "spooled {written} of {total}"
    );
    // A crash cut the newest record short.
    let newest = segs.last().unwrap();
    let len = std::fs::metadata(newest).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(newest)
        .unwrap();
    f.set_len(len - 30).unwrap();
    drop(f);

    server.restart().expect("restart nats-server");
    let child = ingest_binary(&cfg, &udp, &server.url());
    let stored = wait_stored(&server.url(), written - 1, Duration::from_secs(60)).await;
    let v = tokio::task::spawn_blocking(move || stop_for_account(child))
        .await
        .unwrap();
    let (got, dups) = stored_ids_counting(&server.url()).await;
    Chaos {
        scenario: "tspi ingest SIGKILLed with a spool (JetStream away), restarted",
        rate_per_s: 20_000.0,
        sent: total,
        stored: got.len() as u64,
        duplicated: dups,
        lost: total - got.len() as u64,
        counted_drops: v["final_account"]["spool"]["torn"].as_u64().unwrap_or(0),
        stall: Duration::ZERO,
        catch_up: None,
    }
    .print();
    assert_eq!(v["balanced"], true, "{v}");
    let s = &v["final_account"]["spool"];
    assert_eq!(s["recovered"], written - 1, "{v}");
    assert_eq!(s["torn"], 1, "{v}");
    assert_eq!(s["drained"], written - 1, "{v}");
    assert_eq!(s["held"], 0, "{v}");
    assert_eq!(stored, written - 1, "{v}");
    let got = stored_ids(&server.url()).await;
    assert_eq!(got.len() as u64, written - 1);
    assert!(got.is_subset(&ids(0..total)));
    let (left, _) = spooled_records(&spool);
    assert_eq!(left, 0, "the spool is empty once delivered");
}
