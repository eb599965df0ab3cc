//! What ops teams get besides the appliance: the Grafana dashboard
//! (`ops/grafana/tspi-dashboard.json`) and the Prometheus alert rules
//! (`ops/prometheus/tspi-alerts.yml`). The rules pass `promtool check
//! rules` and their own unit tests (`promtool test rules`); every metric the
//! dashboard and the rules name is one the appliance exports (checked
//! against a running `tspi run` with every role, in `run.rs`).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const DASHBOARD: &str = include_str!("../../ops/grafana/tspi-dashboard.json");
const RULES: &str = include_str!("../../ops/prometheus/tspi-alerts.yml");

fn ops_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ops")
}

/// Every `tspi_*` metric name in `text`.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("tspi_") {
        let start = i + at;
        let boundary =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        if boundary {
            out.insert(text[start..end].to_owned());
        }
        i = end;
    }
    out
}

/// The queries of the dashboard's panels.
fn dashboard_exprs() -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    if (k == "expr" || k == "query")
                        && let Some(s) = v.as_str()
                    {
                        out.push(s.to_owned());
                    }
                    walk(v, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let v: serde_json::Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut out = Vec::new();
    walk(&v, &mut out);
    out
}

/// The metric names the dashboard and the rules use that `exposition`
/// (a scrape of `/metrics`) lacks; a histogram family exports its
/// `_bucket`, `_count` and `_sum` series.
pub fn missing_from(exposition: &str) -> BTreeSet<String> {
    let mut exported = BTreeSet::new();
    for line in exposition.lines() {
        let mut w = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (w.next(), w.next(), w.next(), w.next())
        {
            exported.insert(name.to_owned());
            if kind == "histogram" {
                for s in ["_bucket", "_count", "_sum"] {
                    exported.insert(format!("{name}{s}"));
                }
            }
        }
    }
    let mut used = names_in(RULES);
    for e in dashboard_exprs() {
        used.extend(names_in(&e));
    }
    used.difference(&exported).cloned().collect()
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_of_this_appliance() {
    let v: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    assert_eq!(v["uid"], "tspi-appliance");
    let panels = v["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        if p["type"] != "row" {
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{}", p["title"]);
            assert_eq!(p["datasource"]["uid"], "${datasource}");
        }
    }
    let exprs = dashboard_exprs();
    let all: BTreeSet<String> = exprs.iter().flat_map(|e| names_in(e)).collect();
    for want in [
        "tspi_ingest_ring_dropped_total",
        "tspi_ingest_kernel_dropped_total",
        "tspi_ingest_failed_total",
        "tspi_ingest_rejected_total",
        "tspi_ingest_receive_to_ack_seconds_bucket",
        "tspi_archive_lag_messages",
    ] {
        assert!(all.contains(want), "the dashboard does not show {want}");
    }
    // The checker itself: an exposition without the names misses them all.
    let missing = missing_from("# TYPE tspi_ingest_received_total counter\n");
    assert!(missing.contains("tspi_archive_lag_messages"), "{missing:?}");
    assert!(!missing.contains("tspi_ingest_received_total"));
    assert_eq!(
        names_in("rate(tspi_a_b[1m]) + xtspi_c"),
        BTreeSet::from(["tspi_a_b".to_owned()])
    );
}

#[test]
fn promtool_checks_and_tests_the_alert_rules() {
    const TEST: &str = "promtool_checks_and_tests_the_alert_rules";
    let probe = Command::new("promtool")
        .arg("--version")
        .output()
        .map_err(|e| format!("no promtool ({e}): scripts/setup installs Debian's prometheus"));
    if !tspi_testkit::skip::require(TEST, probe.map(|_| ())) {
        return;
    }
    let dir = ops_dir().join("prometheus");
    for args in [
        ["check", "rules", "tspi-alerts.yml"],
        ["test", "rules", "tspi-alerts.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for alert in [
        "TspiDatagramsDropped",
        "TspiArchiveLagging",
        "TspiReceiveToAckSlow",
    ] {
        assert!(RULES.contains(&format!("alert: {alert}")));
    }
}
