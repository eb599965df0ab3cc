//! The metrics edges for real: `/metrics` over TCP from `serve_exposition`
//! (and the bounds of [`tspi::http`] against idle, slow and greedy clients),
//! and the HdrHistogram snapshot published to a real nats-server and decoded
//! by a subscriber, as an operator tool would.

use futures_util::StreamExt as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tspi::http::{HttpLimits, HttpStats};
use tspi::metrics::{
    self, Gauges, IngestCounts, Latencies, METRICS_SUBJECT_ALL, ReportTime, Reporter, Snapshot,
};
use tspi_testkit::harness::NatsServer;

const WAIT: Duration = Duration::from_secs(10);

/// One request on a fresh connection; the whole response (the server
/// closes after it).
pub(crate) async fn http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect to /metrics server");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("server answers and closes")
        .unwrap();
    String::from_utf8(out).expect("utf-8 response")
}

/// A reporter with some latencies and counters recorded, and its report
/// handed to `f`.
fn with_report<T>(f: impl FnOnce(&metrics::Report<'_>) -> T) -> T {
    let t0 = ReportTime {
        unix_ms: 1_700_000_000_000,
        mono_ns: 0,
    };
    let mut reporter = Reporter::with_latencies(Latencies::new(), t0);
    let mut rec = reporter.recorder();
    let worker = std::thread::spawn(move || {
        for i in 0..500u64 {
            rec.record_receive_to_publish(20_000 + i);
            rec.record_publish_to_ack(300_000 + i * 100);
            rec.record_receive_to_ack(320_000 + i * 100);
        }
    });
    worker.join().unwrap();
    let counters = IngestCounts {
        received: 510,
        rejected: [0, 0, 2, 0, 0, 0],
        published: 500,
        acked: 500,
        ..IngestCounts::default()
    };
    let now = ReportTime {
        unix_ms: t0.unix_ms + 10_000,
        mono_ns: 10_000_000_000,
    };
    let report = reporter.report_at(
        now,
        counters,
        Gauges {
            ring_frames: 1,
            acks_in_flight: 2,
        },
    );
    f(&report)
}

/// `exposition` served on a free loopback port.
async fn serve(exposition: metrics::Exposition) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let (addr, server) = metrics::serve_exposition("127.0.0.1:0".parse().unwrap(), exposition)
        .await
        .expect("bind 127.0.0.1:0");
    assert_ne!(addr.port(), 0);
    (addr, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_endpoint_serves_metrics_and_404s_the_rest() {
    let text = with_report(metrics::render_prometheus);
    let exposition = metrics::Exposition::new();
    let (addr, server) = serve(exposition.clone()).await;

    // Nothing registered yet: 200 with only the endpoint's own families.
    let r = http(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(
        r.contains("\ntspi_http_connections_open{server=\"metrics\"} 1\n"),
        "{r}"
    );

    let shown = text.clone();
    exposition.register(move || shown.clone());
    let r = http(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: test\r\nAccept: */*\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = r.split_once("\r\n\r\n").expect("head and body");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(
        head.contains("\r\ncontent-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(head.contains("\r\ncache-control: no-store"), "{head}");
    assert!(
        head.contains(&format!("\r\ncontent-length: {}", body.len())),
        "{head}"
    );
    assert!(body.starts_with(&text), "{body}");
    assert!(body.contains("\ntspi_ingest_received_total 510\n"));
    assert!(body.contains("\ntspi_ingest_rejected_total{reason=\"version\"} 2\n"));
    assert!(body.contains("\ntspi_ingest_receive_to_ack_seconds_count 500\n"));
    assert!(body.contains("\ntspi_ingest_receive_to_ack_seconds_bucket{le=\"+Inf\"} 500\n"));

    let head_only = http(addr, "HEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(head_only.starts_with("HTTP/1.1 200 OK\r\n"), "{head_only}");
    assert!(head_only.ends_with("\r\n\r\n"), "no body: {head_only}");

    let r = http(
        addr,
        "GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
    let r = http(
        addr,
        "GET /metrics/extra HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
    let r = http(
        addr,
        "DELETE /metrics HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
    assert!(
        r.to_ascii_lowercase().contains("\r\nallow: get,head"),
        "{r}"
    );

    // An oversized request head is refused, not buffered without end.
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may close while we are still writing; only the answer counts.
    let _ = s.write_all(huge.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("answered");
    let out = String::from_utf8_lossy(&out);
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 431 "), "{out}");

    // Two requests on one kept-alive connection.
    let mut s = TcpStream::connect(addr).await.unwrap();
    for close in ["", "Connection: close\r\n"] {
        s.write_all(format!("GET /metrics HTTP/1.1\r\n{close}\r\n").as_bytes())
            .await
            .unwrap();
        let r = read_response(&mut s).await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.contains(&text),
            "{r}"
        );
    }

    // Many clients at once all get answers.
    let answers = futures_util::future::join_all(
        (0..40).map(|_| http(addr, "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")),
    )
    .await;
    assert!(
        answers
            .iter()
            .all(|r| r.starts_with("HTTP/1.1 200 OK\r\n") && r.contains(&text))
    );

    server.abort();
}

/// One response with a `Content-Length` from a kept-alive connection.
async fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .expect("content-length");
            if body.len() >= len {
                return text;
            }
        }
        let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
            .await
            .expect("response within 10 s")
            .unwrap();
        assert_ne!(n, 0, "closed mid-response: {text}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A connection from `local` (a loopback address of its own) to `addr`.
async fn connect_from(local: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{local}:0").parse().unwrap())?;
    socket.connect(addr).await
}

/// The issue: about 145 idle connections filled the hand-written server's
/// backlog, and 500 slow clients made it unreachable. Now 300 idle and 300
/// trickling connections from one host take at most that host's share of
/// the slots (the rest are answered 503 at once), and a scraper elsewhere
/// is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_do_not_starve_a_scrape() {
    tspi::http::raise_open_files_limit().expect("raise the open files limit");
    let exposition = metrics::Exposition::new();
    exposition.register(|| "tspi_ingest_received_total 7\n".into());
    let (addr, server) = serve(exposition).await;

    let mut held = Vec::new();
    for i in 0..600 {
        let mut s = connect_from("127.0.0.1", addr).await.expect("connect");
        if i % 2 == 1 {
            // A request head that never ends.
            s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
                .await
                .unwrap();
        }
        held.push(s);
    }
    let scrape = async {
        let mut s = connect_from("127.0.0.2", addr)
            .await
            .expect("connect from 127.0.0.2");
        s.write_all(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    };
    let r = tokio::time::timeout(Duration::from_secs(2), scrape)
        .await
        .expect("a scrape from another host is answered within 2 s");
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(r.contains("\ntspi_ingest_received_total 7\n"), "{r}");
    let open = HttpLimits::METRICS.connections_per_peer_max;
    assert!(
        r.contains(&format!(
            "\ntspi_http_connections_refused_total{{server=\"metrics\"}} {}\n",
            600 - open
        )),
        "all but one host's share refused: {r}"
    );
    // A refused client was told so, not left hanging.
    let mut last = held.pop().unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, last.read_to_end(&mut out))
        .await
        .expect("a refused connection is closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 503 "));
    drop(held);
    server.abort();
}

/// A request head trickled byte by byte is cut off by the header timeout,
/// and a kept-alive connection that goes quiet by the idle timeout: each
/// slot comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_and_idle_connections_are_closed() {
    let limits = HttpLimits {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
        ..HttpLimits::METRICS
    };
    let stats = Arc::new(HttpStats::default());
    let router = axum::Router::new()
        .route("/metrics", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/large",
            axum::routing::get(|| async { vec![b'x'; 64 << 20] }),
        );
    let (addr, server) = tspi::http::serve(
        "127.0.0.1:0".parse().unwrap(),
        router,
        limits,
        stats.clone(),
    )
    .await
    .unwrap();

    // Trickling: one byte every 100 ms, never the end of the head.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let trickle = async {
        for b in b"GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if slow.write_all(&[*b]).await.is_err() {
                return true; // cut off
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    let cut = tokio::time::timeout(WAIT, trickle).await.expect("bounded");
    let mut rest = Vec::new();
    let closed = cut
        || tokio::time::timeout(WAIT, slow.read_to_end(&mut rest))
            .await
            .is_ok();
    assert!(
        closed,
        "a head trickled for 8 s outlived a 300 ms header timeout"
    );

    // Quiet after one answered request on a kept-alive connection: the
    // header timeout (hyper waits for the next head) closes it.
    let mut quiet = TcpStream::connect(addr).await.unwrap();
    quiet
        .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut quiet).await.ends_with("ok\n"));
    let t = std::time::Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, quiet.read_to_end(&mut rest))
        .await
        .expect("a quiet kept-alive connection is closed by the server")
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "closed too early: {:?}",
        t.elapsed()
    );

    // A client that asks for a large body and never reads it: the server's
    // writes stall, nothing moves, the idle timeout closes it.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"GET /large HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while stats.idle_closed.load(Relaxed) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a stalled reader was not cut off"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(stalled);
    let deadline = std::time::Instant::now() + WAIT;
    while stats.open.load(Relaxed) > 0 {
        assert!(std::time::Instant::now() < deadline, "slots given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_reaches_a_subscriber_and_decodes() {
    let server = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap()
        .expect("nats-server starts (run ./scripts/setup if it is missing)");
    let client = async_nats::connect(server.url())
        .await
        .expect("connect to nats-server");
    let mut sub = client.subscribe(METRICS_SUBJECT_ALL).await.unwrap();
    client.flush().await.unwrap();

    let host = "rx-01.range.example";
    let (subject, body_sent, interval) = {
        let t0 = ReportTime {
            unix_ms: 1_700_000_000_000,
            mono_ns: 0,
        };
        let mut reporter = Reporter::with_latencies(Latencies::new(), t0);
        let mut rec = reporter.recorder();
        for i in 0..1000u64 {
            rec.record_receive_to_publish(15_000 + i);
            rec.record_publish_to_ack(250_000 + i * 50);
            rec.record_receive_to_ack(265_000 + i * 50);
        }
        drop(rec);
        let counters = IngestCounts {
            received: 1000,
            published: 1000,
            acked: 999,
            ..IngestCounts::default()
        };
        let now = ReportTime {
            unix_ms: t0.unix_ms + 10_000,
            mono_ns: 10_000_000_000,
        };
        let report = reporter.report_at(now, counters, Gauges::default());
        metrics::publish_snapshot(&client, &report, host)
            .await
            .expect("publish");
        let (subject, body) = metrics::snapshot_message(&report, host);
        let interval = (
            report.interval.receive_to_publish.clone(),
            report.interval.publish_to_ack.clone(),
            report.interval.receive_to_ack.clone(),
        );
        (subject, body, interval)
    };
    client.flush().await.unwrap();

    let msg = tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("snapshot arrives within 10 s")
        .expect("subscription open");
    assert_eq!(
        msg.subject.as_str(),
        "tspi.ops.metrics.ingest.rx-01_range_example"
    );
    assert_eq!(msg.subject.as_str(), subject);
    assert_eq!(&msg.payload[..], &body_sent[..]);

    let snap = Snapshot::from_json(&msg.payload).expect("snapshot JSON");
    assert_eq!(snap.host, host);
    assert_eq!(snap.component, "ingest");
    assert_eq!(snap.start_unix_ms, 1_700_000_000_000);
    assert_eq!(snap.end_unix_ms, 1_700_000_010_000);
    assert_eq!(snap.histogram_encoding, "hdrhistogram-v2-deflate-base64");
    assert_eq!(snap.counters.acked, 999);
    let h = snap.histograms.decode().expect("histograms decode");
    assert_eq!(h.receive_to_publish, interval.0);
    assert_eq!(h.publish_to_ack, interval.1);
    assert_eq!(h.receive_to_ack, interval.2);
    assert_eq!(h.receive_to_ack.len(), 1000);
    for q in [0.5, 0.99, 0.999] {
        assert_eq!(
            h.receive_to_ack.value_at_quantile(q),
            interval.2.value_at_quantile(q)
        );
    }
    // The raw field decodes on its own too, as any HdrHistogram tool would.
    let raw = metrics::decode_hdr_snapshot(&snap.histograms.publish_to_ack).unwrap();
    assert_eq!(raw.len(), 1000);
    assert!((raw.value_at_quantile(0.5) as i64 - 275_000).abs() < 500);
}

/// The value of the unlabelled sample `name` in an exposition.
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
}

/// `/metrics` of a running ingest is rendered at the scrape from the live
/// counters: with reports an hour apart, a scrape shows every datagram as
/// soon as it is acknowledged; and no scrape taken during the traffic shows
/// a latency histogram counting more than `acked_total` (the issue saw a
/// histogram `_count` above it: one report's histograms and counters were
/// not taken together).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_metrics_are_live_and_consistent_at_each_scrape() {
    const N: u64 = 4_000;
    let server = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap()
        .expect("nats-server");
    let port = crate::kit::free_tcp_port();
    let metrics_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cfg = tspi::config::Config::default();
    cfg.nats.servers = vec![server.url()];
    cfg.ingest.udp = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.ingest.workers = 1;
    cfg.metrics.interval_s = 3600;
    cfg.metrics.addr = Some(metrics_addr);
    let ingest = tspi::ingest::Handle::spawn(cfg, Duration::from_secs(30))
        .await
        .expect("ingest started");
    let to = ingest.addrs[0];
    let sender = std::thread::spawn(move || {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..N {
            s.send_to(&tspi_testkit::frames::frame(i).encode(), to)
                .unwrap();
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
    let latencies = [
        "tspi_ingest_publish_to_ack_seconds_count",
        "tspi_ingest_receive_to_ack_seconds_count",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut scrapes = 0;
    loop {
        let r = http(
            metrics_addr,
            "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        scrapes += 1;
        let acked = sample(&r, "tspi_ingest_acked_total");
        for name in latencies {
            assert!(
                sample(&r, name) <= acked,
                "{name} above acked_total {acked}:\n{r}"
            );
        }
        if acked == N && latencies.iter().all(|n| sample(&r, n) == N) {
            assert_eq!(sample(&r, "tspi_ingest_received_total"), N);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every datagram acked and shown within 60 s:\n{r}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sender.join().unwrap();
    assert!(scrapes > 1, "scraped during the traffic too");
    let account = ingest.stop().await.expect("ingest ran");
    assert_eq!(account.counters.acked, N, "{account:?}");
}
