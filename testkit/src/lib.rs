//! Development only: what the tests, the benches, the load generator and
//! the demo share, kept out of the shipped `tspi` binary (`tspi` lists this
//! crate under `[dev-dependencies]` only).
//!
//! - [`harness`]: real nats-server (single, cluster) and PostgreSQL
//!   processes on loopback, each in a temporary directory;
//! - [`frames`]: one deterministic `frame(i)` and one seeded generator;
//! - [`arb`]: property-test strategies for frames;
//! - [`skip`]: probes for what a machine may lack, and loud skips;
//! - [`proc`]: what a bench reads of a process from `/proc`;
//! - [`load`]: a livestream of moving tracks for the console's benches.

pub mod arb;
pub mod frames;
pub mod harness;
pub mod load;
pub mod proc;
pub mod skip;
