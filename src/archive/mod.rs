//! `tspi archive`: the `TSPI` and `TSPI_OPS` streams into PostgreSQL, exactly
//! once, in batches.
//!
//! Pure core, [`proto`] (no I/O, no clock; see its docs), and the section:
//! - [`config`]: the `[archive]` section, its defaults and its checks;
//! - [`rows`]: message bodies to rows (telemetry back to its exact frame,
//!   tags, display commands, other operator events), or a typed reject;
//! - [`copy`]: PostgreSQL's binary `COPY` format and the telemetry row in it;
//! - [`proto::batcher`]: deliveries in; batches to write, ack plans and
//!   consumer rewinds out; retries and the bisection of refused batches.
//!
//! Edges:
//! - [`schema`]: the ordered SQL migrations of `schema/migrations/`, applied
//!   at start and recorded in `tspi_schema_migrations`;
//! - [`db`]: one PostgreSQL session that writes a batch in one transaction
//!   (binary `COPY` into a temporary staging table, then `INSERT ... SELECT
//!   ... ON CONFLICT DO NOTHING` into place), keeps partitions, sets the
//!   compression policy, and says whether a failed write is transient or
//!   permanent; it connects through [`crate::pg`] (TLS with `ca_file`, the
//!   primary among several hosts);
//! - [`driver`]: per stream, a task that owns the durable pull consumer and
//!   the clock and drives a batcher, and a writer task (`writer.rs`) that
//!   owns the database session; `consumer.rs` opens the durable consumers
//!   (ack policy, rewinds); `stats.rs` holds the live state;
//! - [`report`]: counters, deltas and their renderings (log line, JSON line,
//!   Prometheus, NATS snapshot).
//!
//! Why exactly once: a message is acked only after the transaction holding
//! its row committed, so a crash before the commit leaves it unacked (JetStream
//! redelivers it after `ack_wait`), and a crash between commit and ack
//! redelivers a message whose row exists: the unique key skips it. A batch
//! PostgreSQL refuses for good (a value out of range, a constraint) is
//! bisected down to the refused messages, which go to `tspi_rejects` with the
//! server's reason; the stream never stalls on them.
//!
#![doc = include_str!("../../docs/archive.md")]

pub mod config;
mod consumer;
pub mod db;
pub mod driver;
pub mod proto;
pub mod report;
mod reporting;
pub mod schema;
mod stats;
mod writer;

pub use driver::{Account, ArchiveError, Handle, Stats, run, run_reporting};
/// The pure decoders and the COPY writer, where they always were.
pub use proto::{copy, rows};
pub use reporting::LAG_POLL_INTERVAL;

pub use config::{
    AckMode, AckSetting, ArchiveConfig, BATCH_LEN_LIMIT, BATCHES_IN_FLIGHT_LIMIT, Partitioning,
};
