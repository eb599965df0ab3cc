//! `[metrics]`: how often and where operator reports go.

use crate::config::limits;
use serde::Deserialize;
use std::net::SocketAddr;

/// `[metrics]`: operator reports.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Seconds between reports (log line, JSON line, NATS snapshot).
    pub interval_s: u64,
    /// Serve Prometheus `/metrics` here (e.g. `127.0.0.1:9464`); none: off.
    pub addr: Option<SocketAddr>,
    /// Print a JSON line per report on stdout.
    pub json: bool,
    /// Publish HdrHistogram snapshots on `tspi.ops.metrics.ingest.<host>`.
    pub nats_snapshot: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            interval_s: limits::METRICS_INTERVAL_S.default,
            addr: None,
            json: false,
            nats_snapshot: true,
        }
    }
}

impl MetricsConfig {
    /// Every problem with these values (empty: fine), each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        limits::METRICS_INTERVAL_S.check("metrics.interval_s", self.interval_s, &mut p);
        p
    }
}
