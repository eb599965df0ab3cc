//! The metrics edges for real: `/metrics` over TCP from `serve_prometheus`,
//! and the HdrHistogram snapshot published to a real nats-server and decoded
//! by a subscriber, as an operator tool would.

use futures_util::StreamExt as _;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tspi::metrics::{
    self, Gauges, IngestCounts, Latencies, METRICS_SUBJECT_ALL, ReportTime, Reporter, Snapshot,
};
use tspi_testkit::harness::NatsServer;

const WAIT: Duration = Duration::from_secs(10);

/// One request on a fresh connection; the whole response (the server
/// closes after it).
async fn http(addr: std::net::SocketAddr, request: &str) -> String {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_endpoint_serves_metrics_and_404s_the_rest() {
    let text = with_report(metrics::render_prometheus);
    let (tx, rx) = tokio::sync::watch::channel(String::new());
    let (addr, server) = metrics::serve_prometheus("127.0.0.1:0".parse().unwrap(), rx)
        .await
        .expect("bind 127.0.0.1:0");
    assert_ne!(addr.port(), 0);

    // Before the first report: 200 with an empty body.
    let r = http(addr, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(
        r.ends_with("Content-Length: 0\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"),
        "{r}"
    );

    tx.send_replace(text.clone());
    let r = http(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: test\r\nAccept: */*\r\n\r\n",
    )
    .await;
    let (head, body) = r.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nContent-Length: {}", text.len())),
        "{head}"
    );
    assert_eq!(body, text);
    assert!(body.contains("\ntspi_ingest_received_total 510\n"));
    assert!(body.contains("\ntspi_ingest_rejected_total{reason=\"version\"} 2\n"));
    assert!(body.contains("\ntspi_ingest_receive_to_ack_seconds_count 500\n"));
    assert!(body.contains("\ntspi_ingest_receive_to_ack_seconds_bucket{le=\"+Inf\"} 500\n"));

    let r = http(addr, "GET / HTTP/1.1\r\nHost: test\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
    let r = http(addr, "GET /metrics/extra HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
    let r = http(addr, "DELETE /metrics HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 405 "), "{r}");

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

    // Many clients at once all get answers.
    let answers = futures_util::future::join_all(
        (0..40).map(|_| http(addr, "GET /metrics HTTP/1.1\r\n\r\n")),
    )
    .await;
    assert!(
        answers
            .iter()
            .all(|r| r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with(&text))
    );

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
