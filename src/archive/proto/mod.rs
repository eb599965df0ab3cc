//! The archive's pure core: no sockets, no database client, no runtime and
//! no clock. Time comes in as `now` (a [`std::time::Duration`] since the
//! driver's origin) and work goes out as values, so exactly-once is decided
//! here and tested in milliseconds against a simulated consumer
//! (`batcher/sim.rs`), with the real-server tests on top.
//!
//! - [`rows`]: message bodies to rows (telemetry back to its exact frame,
//!   tags, display commands, other operator events), or a typed reject;
//! - [`copy`]: PostgreSQL's binary `COPY` format and the telemetry row in it;
//! - [`minutes`]: a batch's tracks per sensor per minute (the aggregate
//!   the writer appends with the rows);
//! - [`batch`]: what one transaction writes, and what it wrote;
//! - [`commit`]: how a failed write is retried (transient or permanent),
//!   from its SQLSTATE;
//! - [`batcher`]: the state machine: deliveries in, batches to write, ack
//!   plans and consumer rewinds out.
//!
//! **Architecture invariant:** nothing under `proto/` names a network,
//! runtime, NATS or PostgreSQL client crate, or reads a clock; a test in
//! `archive/mod.rs` reads these files and fails if one does.

pub mod batch;
pub mod batcher;
pub mod commit;
pub mod copy;
pub mod minutes;
pub mod rows;

pub use batch::{Batch, OpsRow, Origin, RejectRow, Written};
pub use batcher::{AckMode, AckPlan, Action, Batcher, BatcherConfig, Delivery, Kind, Outcome};
pub use commit::{CommitFailure, Retry};
pub use minutes::Minute;
