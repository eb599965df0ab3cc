//! `tspi archive`: the `TSPI` and `TSPI_OPS` streams into PostgreSQL, exactly
//! once, in batches.
//!
//! Pure core:
//! - [`config`]: the `[archive]` section, its defaults and its checks;
//! - [`rows`]: message bodies to rows (telemetry back to its exact frame,
//!   tags, display commands, other operator events), or a typed reject;
//! - [`copy`]: PostgreSQL's binary `COPY` format and the telemetry row in it;
//! - [`report`]: counters, deltas and their renderings (log line, JSON line,
//!   Prometheus, NATS snapshot).
//!
//! Edges:
//! - [`schema`]: the ordered SQL migrations of `schema/migrations/`, applied
//!   at start and recorded in `tspi_schema_migrations`;
//! - [`db`]: one PostgreSQL session that writes a batch in one transaction
//!   (binary `COPY` into a temporary staging table, then `INSERT ... SELECT
//!   ... ON CONFLICT DO NOTHING` into place) and keeps partitions;
//! - [`pipeline`]: per stream, a durable pull consumer feeding a decode task
//!   and a writer task that acks a batch only after its commit.
//!
//! Why exactly once: a message is acked only after the transaction holding
//! its row committed, so a crash before the commit leaves it unacked (JetStream
//! redelivers it after `ack_wait`), and a crash between commit and ack
//! redelivers a message whose row exists: the unique key skips it.

pub mod config;
pub mod copy;
pub mod db;
pub mod pipeline;
pub mod report;
pub mod rows;
pub mod schema;

pub use pipeline::{Account, Handle, Stats, run, run_reporting};

pub use config::{AckMode, ArchiveConfig, BATCH_LEN_LIMIT, BATCHES_IN_FLIGHT_LIMIT, Partitioning};
