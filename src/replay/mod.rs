//! Original-rate replay and karaoke channels (CONTRACT §4-6).
//!
//! Pure core (time and buffers are arguments; no I/O):
//! - [`pacer`]: the absolute schedule `start + (t_i - t_0) / rate`, with
//!   pause, resume, rate change, seek and loop, tested in virtual time;
//! - [`time`], [`record`]: RFC 3339, receive-time rebuilding, body → datagram.
//!
//! Edges:
//! - [`driver`]: the real-time pacing thread (sleep, then spin on the
//!   monotonic clock) with its pacing-error histogram;
//! - [`source`]: the `TSPI` stream, a capture file, the archive;
//! - [`sink`]: a channel subject in `TSPI_REPLAY`, or UDP datagrams;
//!
//! The channels service (livestream, group and private replays, the
//! directory) and its message types live in [`crate::channels`];
//! `replay::channels`, `replay::client_state` and `replay::service` are
//! re-exports of `channels::message`, `channels::client_state` and
//! `channels::service` kept for existing callers.

pub mod archive;
pub mod driver;
pub mod pacer;
pub mod record;
pub mod sink;
pub mod source;
pub mod time;

// Old paths of the channels service's modules (now in `crate::channels`).
pub use crate::channels::{client_state, message as channels, service};

use bytes::Bytes;
use serde::Deserialize;

/// `[channels]` section of the configuration file: the channels service
/// (`tspi channels serve`) and the defaults of `tspi replay`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    /// `tspi run` starts the channels service only when this is true;
    /// `tspi channels serve` runs it whatever this says.
    pub enabled: bool,
    /// Run the live stage: a push consumer `LIVE_MAIN` on `TSPI` delivering
    /// to `tspi.channel.livestream`.
    pub livestream: bool,
    /// Create or update `TSPI_REPLAY` and `TSPI_OPS` at start (idempotent).
    pub create_streams: bool,
    /// Retention of `TSPI_REPLAY` in hours (the contract says 1 to 6).
    pub replay_max_age_h: u64,
    /// A private replay without a status heartbeat naming its channel for
    /// this long is stopped and removed.
    pub private_idle_s: u64,
    /// Private replays at once (a request beyond it is refused).
    pub private_max: usize,
    /// Group replays at once.
    pub group_max: usize,
    /// A tag replay covers this long before the tag's moment...
    pub tag_before_s: u64,
    /// ...and this long after it.
    pub tag_after_s: u64,
    /// Where replayed tags of group replays are emitted again (CONTRACT §5:
    /// existing tools show tags from `tags.broadcast`). Private replays send
    /// theirs to `tags.client.<client>.<session>`, seen only by their owner.
    pub tag_subject: String,
    /// Messages read ahead of the pacer per batch, and batches queued:
    /// memory is bounded by their product (about 600 bytes a message).
    pub read_batch_len: usize,
    pub read_batches_max: usize,
    /// Publishes awaiting their JetStream ack at once per replay.
    pub acks_in_flight_max: usize,
    /// Messages the pacer may hand to its publisher beyond those awaiting
    /// acks, so a brief stall downstream does not hold up the schedule
    /// (about 0.5 KB each, only while queued).
    pub sink_queue_len: usize,
    /// The pacer sleeps until this long before a message is due, then spins
    /// on the monotonic clock.
    pub spin_us: u64,
    /// Cores for the pacing threads, taken in turn by successive replays;
    /// empty: not pinned. Keep them off the receive cores.
    pub pacing_cores: Vec<usize>,
    /// Run pacing threads under `SCHED_FIFO` at this priority (1-99; needs
    /// `CAP_SYS_NICE`); 0: ordinary scheduling.
    pub pacing_realtime_priority: u8,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        ChannelsConfig {
            enabled: false,
            livestream: true,
            create_streams: true,
            replay_max_age_h: 6,
            private_idle_s: 60,
            private_max: 32,
            group_max: 4,
            tag_before_s: 60,
            tag_after_s: 600,
            tag_subject: channels::SUBJECT_TAGS.into(),
            read_batch_len: 1024,
            read_batches_max: 8,
            acks_in_flight_max: 2048,
            sink_queue_len: sink::SinkLimits::DEFAULT_QUEUE_LEN,
            spin_us: 200,
            pacing_cores: Vec::new(),
            pacing_realtime_priority: 0,
        }
    }
}

impl ChannelsConfig {
    /// What types alone cannot check; every problem listed.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(1..=168).contains(&self.replay_max_age_h) {
            p.push(format!(
                "channels.replay_max_age_h = {}: must be 1..=168",
                self.replay_max_age_h
            ));
        }
        if self.private_idle_s == 0 {
            p.push("channels.private_idle_s must be at least 1".into());
        }
        if !(1..=65_536).contains(&self.read_batch_len)
            || !(1..=1024).contains(&self.read_batches_max)
        {
            p.push(
                "channels.read_batch_len must be 1..=65536 and read_batches_max 1..=1024".into(),
            );
        }
        if !(1..=65_536).contains(&self.acks_in_flight_max) {
            p.push("channels.acks_in_flight_max must be 1..=65536".into());
        }
        if !(1..=1_048_576).contains(&self.sink_queue_len) {
            p.push(format!(
                "channels.sink_queue_len = {}: must be 1..=1048576",
                self.sink_queue_len
            ));
        }
        if self.spin_us > 10_000 {
            p.push("channels.spin_us must be at most 10000".into());
        }
        if self.pacing_realtime_priority > 99 {
            p.push(format!(
                "channels.pacing_realtime_priority = {}: must be 0 (off) or 1..=99",
                self.pacing_realtime_priority
            ));
        }
        if self.tag_subject.is_empty() || self.tag_subject.contains(['*', '>', ' ']) {
            p.push(format!(
                "channels.tag_subject = {:?}: not a subject",
                self.tag_subject
            ));
        }
        p
    }
}

impl ChannelsConfig {
    /// How the `n`-th replay started by this process is paced.
    pub fn driver(&self, rate: pacer::Rate, n: usize) -> driver::DriverConfig {
        driver::DriverConfig {
            rate,
            spin: std::time::Duration::from_micros(self.spin_us),
            core: (!self.pacing_cores.is_empty())
                .then(|| self.pacing_cores[n % self.pacing_cores.len()]),
            realtime_priority: (self.pacing_realtime_priority > 0)
                .then_some(self.pacing_realtime_priority),
            ..driver::DriverConfig::default()
        }
    }

    /// How far each replay's channel publishing may fall behind its pacer.
    pub fn sink_limits(&self) -> sink::SinkLimits {
        sink::SinkLimits {
            acks_in_flight_max: self.acks_in_flight_max,
            queue_len: self.sink_queue_len,
        }
    }
}

/// One recorded message, in the order and at the time it was received.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// Original receive time, ns since the Unix epoch (a tag: its moment).
    pub rec_ns: u64,
    pub kind: ItemKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ItemKind {
    Telemetry {
        /// The original subject (`tspi.<type>.<sensor>`).
        subject: String,
        /// The original `Nats-Msg-Id`.
        msg_id: String,
        /// The body, unchanged.
        body: Bytes,
        /// The original datagram, when the source kept it (captures, the
        /// archive); else the UDP sink rebuilds it from the body.
        datagram: Option<[u8; crate::codec::DATAGRAM_LEN]>,
    },
    /// A tag whose moment falls inside the window.
    Tag { id: String, body: Bytes },
}

/// Anything that ends a replay early.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("source: {0}")]
    Source(String),
    #[error("sink: {0}")]
    Sink(String),
    #[error("nothing to replay: {0}")]
    Empty(String),
    #[error("pacing thread: {0}")]
    Placement(String),
}
