//! The integration tests, one binary (each test binary relinks the whole
//! crate; one link instead of seventeen keeps the build short). One module
//! per stage, run against real nats-server and PostgreSQL processes from
//! `tspi_testkit::harness`; `cargo test --test it <stage>::` runs a stage.
//!
//! A test that needs what a machine may lack (io_uring, root for a network
//! namespace) says so: `SKIPPED: <test>: <reason>` on stderr, or a failure
//! under `TSPI_TEST_NO_SKIP=1` (`scripts/test` sets it).

mod archive;
mod channels;
mod channels_hardening;
mod channels_ops;
mod cli;
mod console;
mod harness;
mod hub;
mod ingest;
mod ingest_drain;
mod kit;
mod metrics;
mod nats_auth;
mod ops;
mod player;
mod receive;
mod replay;
mod run;
mod schema;
mod spool;
mod spool_boxes;
mod spool_cluster;
mod spool_doubt;
mod stream_settings;
mod web;
