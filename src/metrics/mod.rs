//! Ingest metrics for operators: counters, gauges and three latency
//! histograms, reported every interval (10 s by default) four ways.
//!
//! Pure core (no I/O, no clock unless asked):
//! - [`MetricsConfig`]: the `[metrics]` section and its checks;
//! - [`IngestCounts`], [`Gauges`]: plain values the reporter is handed,
//!   the counters declared once with [`counter_set!`](crate::counter_set)
//!   (as every stage's are: archive, replay, channels);
//! - [`Latencies`] / [`LatencyRecorder`]: HdrHistograms (1 ns .. 60 s, 3
//!   significant digits, saturating) with one recorder per publisher task,
//!   merged by the reporter;
//! - [`Reporter`] → [`Report`]: deltas since the last report, the interval's
//!   histograms and the cumulative ones (borrowed from the reporter);
//! - renderers: the shared Prometheus writers ([`write_counter_families`],
//!   [`write_gauge_family`], [`write_histogram_family`]) and log fragment
//!   ([`counts_fragment`]) every stage uses; [`render_log_line`] (for `tracing::info!`),
//!   [`render_json_line`] (`--json` on stdout), [`render_prometheus_at`]
//!   (a `/metrics` scrape, from live counters and [`Reporter::collect`]),
//!   [`snapshot_message`] (HdrHistogram V2 deflate, base64, on
//!   [`metrics_subject`]).
//!
//! Edges: [`serve_exposition`] (HTTP `GET /metrics` on [`crate::http`],
//! every part of an [`Exposition`] rendered at the scrape),
//! [`publish_snapshot`] (core NATS), [`hostname`].
//!
//! A reporter task with a live `/metrics`, sketched:
//!
//! ```no_run
//! # async fn demo(client: async_nats::Client, counters: impl Fn() -> tspi::metrics::IngestCounts + Send + Sync + Clone + 'static) -> std::io::Result<()> {
//! use std::sync::{Arc, Mutex};
//! use tspi::metrics::*;
//! let reporter = Arc::new(Mutex::new(Reporter::new()));
//! let _recorder = reporter.lock().unwrap().recorder(); // one per publisher task
//! let exposition = Exposition::new();
//! let (r, c) = (reporter.clone(), counters.clone());
//! exposition.register(move || {
//!     let mut r = r.lock().unwrap();
//!     let cumulative = r.collect(); // histograms first, then the counters
//!     render_prometheus_at(&c(), &Gauges::default(), cumulative)
//! });
//! let (_addr, _server) = serve_exposition("127.0.0.1:9100".parse().unwrap(), exposition).await?;
//! let host = hostname();
//! let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
//! loop {
//!     tick.tick().await;
//!     // Waits (bounded) for idle recorders: keep it off the async workers.
//!     let (subject, body) = tokio::task::block_in_place(|| {
//!         let mut r = reporter.lock().unwrap();
//!         let report = r.report(counters(), Gauges::default());
//!         tracing::info!("{}", render_log_line(&report));
//!         println!("{}", render_json_line(&report));
//!         snapshot_message(&report, &host)
//!     });
//!     if let Err(e) = client.publish(subject, body.into()).await {
//!         tracing::warn!("{e}");
//!     }
//! }
//! # }
//! ```

pub mod config;
mod counter_set;
mod counters;
mod host;
mod http;
mod latency;
mod nats;
mod prometheus;
mod render;
mod report;
mod snapshot;

pub use config::MetricsConfig;
pub use counter_set::{
    CounterCell, CounterField, CounterSet, CounterValue, all_counts_fragment, counts_fragment,
    render_counter_families, write_counter_families, write_family, write_gauge_family,
    write_histogram_family, write_histogram_samples,
};
pub use counters::{Gauges, IngestCounts, REJECT_REASON_LABELS, REJECT_REASONS_LEN};
pub use host::hostname;
pub use http::{Exposition, serve_exposition};
pub use latency::{
    LATENCY_NS_MAX, LATENCY_NS_MIN, LATENCY_SIGFIG, Latencies, Latency, LatencyHistograms,
    LatencyRecorder, LatencyView, REFRESH_TIMEOUT_DEFAULT, new_latency_histogram,
};
pub use nats::{SnapshotPublishError, publish_snapshot};
pub use prometheus::{
    BUCKET_BOUNDS, PROMETHEUS_CONTENT_TYPE, PROMETHEUS_PREFIX, bucket_counts, render_prometheus,
    render_prometheus_at,
};
pub use render::{render_json_line, render_log_line};
pub use report::{Report, ReportTime, Reporter};
pub use snapshot::{
    COMPONENT_INGEST, HISTOGRAM_ENCODING, HISTOGRAM_UNIT, METRICS_SUBJECT_ALL,
    METRICS_SUBJECT_PREFIX, Snapshot, SnapshotDecodeError, SnapshotHistograms, SpoolSnapshot,
    decode_hdr_snapshot, encode_hdr_snapshot, metrics_subject, metrics_subject_for,
    snapshot_message, snapshot_message_with,
};
