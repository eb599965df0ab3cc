//! Original-rate replay and karaoke channels (CONTRACT §4-6).
//!
//! Pure core (time and buffers are arguments; no I/O):
//! - [`config`]: the `[channels]` section, its defaults and its checks;
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
//!
#![doc = include_str!("../../docs/replay.md")]

pub mod archive;
pub mod config;
pub mod driver;
pub mod pacer;
pub mod record;
pub mod sink;
pub mod source;
pub mod time;

// Old paths of the channels service's modules (now in `crate::channels`).
pub use crate::channels::{client_state, message as channels, service};

use bytes::Bytes;

pub use config::ChannelsConfig;

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
