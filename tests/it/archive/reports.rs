//! `tspi archive`'s reports on every channel, from the real binary: the JSON
//! lines on stdout (`--json`), Prometheus `/metrics` (`--metrics-addr`), and
//! the HdrHistogram snapshot on `tspi.ops.metrics.archive.<host>`.

use super::servers::plain;
use crate::kit::*;
use futures_util::StreamExt;

use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::task::block_in_place;
use tspi_testkit::harness::NatsServer;
use tspi_testkit::proc::scrape;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_prometheus_and_nats_snapshot() {
    const N: u64 = 2_000;
    let (nats, (_pg, role)) = block_in_place(|| (NatsServer::start(), plain()));
    let nats = nats.expect("nats-server");
    let js = js(&nats.url()).await;
    let watcher = async_nats::connect(nats.url()).await.unwrap();
    let mut snapshots = watcher
        .subscribe("tspi.ops.metrics.archive.>")
        .await
        .unwrap();
    watcher.flush().await.unwrap();
    assert_eq!(publish_all(&js, &telemetry(0, N, 5)).await, N);

    let port = crate::kit::free_tcp_port();
    let child = Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args(["archive", "--nats", &nats.url(), "--postgres", &role.dsn])
        // Long enough that /metrics is still up after the snapshot wait on
        // a loaded machine; it then stops by itself.
        .args(["--json", "--interval-s", "1", "--duration-s", "15"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // A snapshot that has seen every row, and the server's lag since (the
    // archive asks the server for the lag every second).
    let snap: serde_json::Value = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let m = snapshots.next().await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            if v["counters"]["telemetry_rows"] == N && v["lag"]["telemetry"]["messages"] == 0 {
                assert!(m.subject.starts_with("tspi.ops.metrics.archive."));
                return v;
            }
        }
    })
    .await
    .expect("a snapshot counting every row");
    assert_eq!(snap["component"], "archive");
    assert_eq!(snap["histogram_unit"], "ns");
    let commit =
        tspi::metrics::decode_hdr_snapshot(snap["histograms"]["batch_commit"].as_str().unwrap())
            .unwrap();
    let _ = commit.len(); // an interval may have had no batch; it decodes.
    assert_eq!(snap["lag"]["telemetry"]["messages"], 0);

    let prom = block_in_place(|| scrape(port)).expect("/metrics answers while running");
    assert!(prom.starts_with("HTTP/1.1 200"), "{prom}");
    assert!(
        prom.contains(&format!("tspi_archive_telemetry_rows_total {N}\n")),
        "{prom}"
    );
    assert!(
        prom.contains("tspi_archive_lag_messages{stream=\"TSPI\"} 0\n"),
        "{prom}"
    );
    assert!(
        prom.contains("tspi_archive_batch_commit_seconds_count "),
        "{prom}"
    );

    let out = block_in_place(|| child.wait_with_output()).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(lines.len() >= 2, "reports and the final account: {lines:?}");
    let reports: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["component"] == "archive")
        .collect();
    assert!(!reports.is_empty());
    let rows: u64 = reports
        .iter()
        .map(|r| r["delta"]["telemetry_rows"].as_u64().unwrap())
        .sum();
    assert!(rows <= N);
    let last = lines.last().unwrap();
    assert_eq!(
        last["final_account"]["counters"]["telemetry_rows"], N,
        "{last}"
    );
    assert_eq!(last["final_account"]["counters"]["acked"], N);
    assert!(
        stderr.contains("final account: 2000 messages, 2000 telemetry rows"),
        "{stderr}"
    );
}
