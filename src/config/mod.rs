//! Typed configuration: `config/tspi.toml` is the documented example.
//!
//! Every section and key is a field below; its doc comment is the
//! reference. Unknown keys are errors that name the key and its line, never
//! silently ignored. Command-line flags override file values.

use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// The whole file. Every section is optional; defaults are documented on
/// each field.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub nats: NatsConfig,
    pub stream: StreamConfig,
    pub ingest: IngestConfig,
    pub publish: PublishConfig,
    pub metrics: MetricsConfig,
    pub archive: crate::archive::ArchiveConfig,
    pub channels: crate::replay::ChannelsConfig,
}

/// How to reach NATS.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URLs; the client fails over between them.
    pub servers: Vec<String>,
    /// Connection name shown by the server's monitoring.
    pub name: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// NATS credentials file (JWT + NKey seed).
    pub credentials_file: Option<PathBuf>,
    pub tls: Option<TlsConfig>,
    /// First subject token of telemetry messages (`<prefix>.<type>.<sensor>`).
    pub subject_prefix: String,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            name: "tspi-ingest".into(),
            user: None,
            password: None,
            token: None,
            credentials_file: None,
            tls: None,
            subject_prefix: crate::message::DEFAULT_PREFIX.into(),
        }
    }
}

/// TLS to the NATS servers.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Refuse plain-text connections.
    pub required: bool,
    /// PEM file of CA certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, with `key_file`, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// The `TSPI` stream (CONTRACT §3).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Create or update the stream at start (idempotent). Off when an
    /// administrator manages streams.
    pub create: bool,
    /// 1 on a single server, 3 on a cluster.
    pub replicas: usize,
    /// How long JetStream remembers a `Nats-Msg-Id`. The server holds about
    /// 180 bytes per message in the window: 30 s at 100k msgs/s is ~540 MB;
    /// the contract's 120 s at that rate is ~2 GB. Must exceed the publish
    /// retry horizon (`publish.ack_timeout_ms` + `publish.retry_backoff_max_ms`).
    pub duplicate_window_s: u64,
    /// Retention by age; 0 keeps messages until other limits apply.
    pub max_age_s: u64,
}

impl StreamConfig {
    /// The `TSPI` stream's settings. Fast-ingest batches stay allowed
    /// whatever part (ingest in either mode, the archiver) creates or
    /// updates the stream: switching them off would push running ingest
    /// boxes back to pipelined publishing.
    pub fn telemetry_settings(&self) -> crate::jetstream::StreamSettings {
        crate::jetstream::StreamSettings {
            replicas: self.replicas,
            duplicate_window: std::time::Duration::from_secs(self.duplicate_window_s),
            max_age: std::time::Duration::from_secs(self.max_age_s),
            allow_batch_publish: true,
        }
    }
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            create: true,
            replicas: 1,
            duplicate_window_s: 30,
            max_age_s: 0,
        }
    }
}

/// Receiving datagrams.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// UDP addresses to listen on (IPv4 or IPv6). A multicast group's port is
    /// listened on by binding `0.0.0.0:<port>` (or `[::]:<port>`).
    pub udp: Vec<SocketAddr>,
    /// Multicast groups to join.
    pub multicast: Vec<MulticastConfig>,
    /// Receive threads, each with its own `SO_REUSEPORT` socket per address.
    pub workers: usize,
    /// Core per receive thread (same length as `workers`); empty: cores
    /// 0..workers. Publishing runs on the other cores.
    pub cores: Vec<usize>,
    /// `auto` (io_uring when the kernel allows it, else recvmmsg),
    /// `io-uring` or `recvmmsg`.
    pub backend: crate::receive::Backend,
    /// `SO_RCVBUF` per socket. The kernel caps it at `net.core.rmem_max`
    /// and charges ~830 bytes per queued 37-byte datagram (NOTES.md), so
    /// 64 MiB holds ~80k datagrams.
    pub rcvbuf_bytes: usize,
    /// Datagrams read per system call / buffers per io_uring buffer ring.
    pub batch_len: usize,
    /// Frames each receive thread's ring holds while JetStream is slow or
    /// away (about 48 bytes each).
    pub ring_capacity: usize,
    /// What happens to a datagram when its ring is full.
    pub overflow: crate::receive::OverflowPolicy,
    /// Only these sensor ids are published (empty: all). Others are counted
    /// as `filtered`.
    pub allow_sensors: Vec<u16>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            udp: Vec::new(),
            multicast: Vec::new(),
            workers: 1,
            cores: Vec::new(),
            backend: crate::receive::Backend::Auto,
            rcvbuf_bytes: 32 << 20,
            batch_len: 64,
            ring_capacity: 1 << 18,
            overflow: crate::receive::OverflowPolicy::DropNewest,
            allow_sensors: Vec::new(),
        }
    }
}

/// One multicast group.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MulticastConfig {
    /// Group address, IPv4 or IPv6.
    pub group: IpAddr,
    /// IPv4: the address of the interface to join on (default: the kernel's
    /// choice).
    pub interface: Option<IpAddr>,
    /// IPv6: the index of the interface to join on (default 0: the kernel's
    /// choice).
    pub interface_index: Option<u32>,
}

/// How frames are published to JetStream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PublishMode {
    /// Fast-ingest batches (nats-server 2.14+): core publishes with flow
    /// acks every `fast_flow` messages. Falls back to `pipelined` (with a
    /// warning) when the server cannot do them.
    Fast,
    /// One JetStream publish per message, many acks in flight.
    Pipelined,
}

/// Publishing.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PublishConfig {
    pub mode: PublishMode,
    /// Publishes awaiting their ack at once. NOTES.md: 1024-4096 reach the
    /// server's ceiling on this kind of box.
    pub acks_in_flight_max: usize,
    /// Frames taken from one ring before looking at the next.
    pub batch_len_max: usize,
    /// A publish without an ack after this long is retried (same id).
    pub ack_timeout_ms: u64,
    /// Retry backoff: doubles from the initial value up to the maximum.
    pub retry_backoff_initial_ms: u64,
    pub retry_backoff_max_ms: u64,
    /// On stop: how long to wait for outstanding acks before counting the
    /// rest as failed.
    pub drain_timeout_s: u64,
    /// Fast mode: the largest flow asked for, i.e. a flow ack at most every
    /// this many messages (1..=500; the server may lower it).
    pub fast_flow: u16,
    /// Fast mode: target time between flow acks. Each batch opens with the
    /// flow that gives this at the recent rate (plus what waits in the
    /// rings), so acks come soon at low rates and cheaply at high ones.
    /// 0 always asks for `fast_flow`.
    pub fast_ack_interval_us: u64,
    /// Fast mode: flow periods unacknowledged at once (2 or 3; 1 stalls).
    pub fast_outstanding_acks: u16,
    /// Fast mode: commit and open a new batch after this many messages...
    pub fast_batch_len_max: u64,
    /// ... or this many milliseconds (the server gives up on a batch idle
    /// for 10 s) ...
    pub fast_batch_age_max_ms: u64,
    /// ... or when no frame arrived for this long, so the tail of a burst
    /// that has not filled a flow period is acknowledged too.
    pub fast_idle_commit_ms: u64,
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            mode: PublishMode::Fast,
            acks_in_flight_max: 2048,
            batch_len_max: 256,
            ack_timeout_ms: 5_000,
            retry_backoff_initial_ms: 50,
            retry_backoff_max_ms: 2_000,
            drain_timeout_s: 10,
            fast_flow: 500,
            fast_ack_interval_us: 250,
            fast_outstanding_acks: 2,
            fast_batch_len_max: 100_000,
            fast_batch_age_max_ms: 2_000,
            fast_idle_commit_ms: 5,
        }
    }
}

/// Operator reports.
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
            interval_s: 10,
            addr: None,
            json: false,
            nats_snapshot: true,
        }
    }
}

/// A configuration that cannot be used. The message names the file, the
/// line and the key where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Parse TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: describe_toml_error(text, &e),
        })
    }

    /// Read and parse a file (not yet validated: flags may still override).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Check what types alone cannot. Every problem is listed, not just the
    /// first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let i = &self.ingest;
        if i.udp.is_empty() {
            problems.push("ingest.udp: no UDP address to listen on".to_owned());
        }
        if i.workers == 0 || i.workers > 256 {
            problems.push(format!("ingest.workers = {}: must be 1..=256", i.workers));
        }
        if !i.cores.is_empty() && i.cores.len() != i.workers {
            problems.push(format!(
                "ingest.cores has {} entries for {} workers: give one core per worker, or none",
                i.cores.len(),
                i.workers
            ));
        }
        if !(1..=1024).contains(&i.batch_len) {
            problems.push(format!(
                "ingest.batch_len = {}: must be 1..=1024",
                i.batch_len
            ));
        }
        if !(16..=1 << 26).contains(&i.ring_capacity) {
            problems.push(format!(
                "ingest.ring_capacity = {}: must be 16..=67108864",
                i.ring_capacity
            ));
        }
        for m in &i.multicast {
            if !m.group.is_multicast() {
                problems.push(format!(
                    "ingest.multicast: {} is not a multicast group",
                    m.group
                ));
            }
        }
        let n = &self.nats;
        if n.servers.is_empty() {
            problems.push("nats.servers: no server URL".to_owned());
        }
        if n.subject_prefix.is_empty()
            || n.subject_prefix.contains(['*', '>', ' '])
            || n.subject_prefix.starts_with('.')
            || n.subject_prefix.ends_with('.')
        {
            problems.push(format!(
                "nats.subject_prefix = {:?}: must be non-empty subject tokens without wildcards",
                n.subject_prefix
            ));
        }
        if n.password.is_some() != n.user.is_some() {
            problems.push("nats.user and nats.password go together".to_owned());
        }
        if let Some(t) = &n.tls
            && t.cert_file.is_some() != t.key_file.is_some()
        {
            problems.push("nats.tls.cert_file and nats.tls.key_file go together".to_owned());
        }
        let p = &self.publish;
        if !(1..=65_536).contains(&p.acks_in_flight_max) {
            problems.push(format!(
                "publish.acks_in_flight_max = {}: must be 1..=65536",
                p.acks_in_flight_max
            ));
        }
        if p.batch_len_max == 0 {
            problems.push("publish.batch_len_max must be at least 1".to_owned());
        }
        if p.ack_timeout_ms == 0 || p.retry_backoff_initial_ms == 0 {
            problems.push("publish.ack_timeout_ms and retry_backoff_initial_ms must be > 0".into());
        }
        if p.retry_backoff_max_ms < p.retry_backoff_initial_ms {
            problems.push("publish.retry_backoff_max_ms is below retry_backoff_initial_ms".into());
        }
        if !(1..=crate::publish::fast::FLOW_MAX).contains(&p.fast_flow) {
            problems.push(format!(
                "publish.fast_flow = {}: must be 1..={} (the server's cap)",
                p.fast_flow,
                crate::publish::fast::FLOW_MAX
            ));
        }
        if !(2..=3).contains(&p.fast_outstanding_acks) {
            problems.push(format!(
                "publish.fast_outstanding_acks = {}: must be 2 or 3 (1 stalls against nats-server 2.15)",
                p.fast_outstanding_acks
            ));
        }
        if p.fast_batch_len_max == 0 || p.fast_idle_commit_ms == 0 {
            problems.push("publish.fast_batch_len_max and fast_idle_commit_ms must be > 0".into());
        }
        if !(1..10_000).contains(&p.fast_batch_age_max_ms) {
            problems.push(format!(
                "publish.fast_batch_age_max_ms = {}: must be 1..10000 (the server abandons a batch idle for 10 s)",
                p.fast_batch_age_max_ms
            ));
        }
        let horizon_ms = p.ack_timeout_ms + p.retry_backoff_max_ms;
        if self.stream.duplicate_window_s * 1000 <= horizon_ms {
            problems.push(format!(
                "stream.duplicate_window_s = {} s does not cover the retry horizon of {} ms \
                 (publish.ack_timeout_ms + publish.retry_backoff_max_ms): a retried message \
                 could be stored twice",
                self.stream.duplicate_window_s, horizon_ms
            ));
        }
        if self.stream.replicas == 0 || self.stream.replicas > 5 {
            problems.push(format!(
                "stream.replicas = {}: must be 1..=5",
                self.stream.replicas
            ));
        }
        if self.metrics.interval_s == 0 {
            problems.push("metrics.interval_s must be at least 1".to_owned());
        }
        problems.extend(self.archive.problems());
        problems.extend(self.channels.problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems.join("; ")))
        }
    }

    /// Cores for the receive threads: as configured, else 0..workers.
    pub fn receive_cores(&self) -> Vec<usize> {
        if self.ingest.cores.is_empty() {
            (0..self.ingest.workers).collect()
        } else {
            self.ingest.cores.clone()
        }
    }
}

/// toml's message already says "TOML parse error at line L, column C" with
/// the offending line quoted; keep it, and make sure the line is named even
/// when the error carries only a byte span.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.to_string();
    if msg.contains("line ") {
        return msg.trim_end().to_owned();
    }
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {}", msg.trim_end())
        }
        None => msg.trim_end().to_owned(),
    }
}

#[cfg(test)]
mod tests;
