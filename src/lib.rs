//! `tspi`: the telemetry appliance for test and training ranges.
//!
//! The datagram's path (`ARCHITECTURE.md` has the whole map and the
//! invariants):
//!
//! ```text
//! UDP ─► receive (pinned threads, io_uring | recvmmsg) ─► contract::codec::parse
//!     ─► SPSC ring per receive core ─► publish (proto: the exactly-once decisions;
//!        driver: the async-nats client) ─► JetStream TSPI
//!     ─► archive (proto: batches and acks; driver: consumer + PostgreSQL COPY)
//!     ─► replay (pacer: the schedule; sources, sinks) ─► channels (directory; service)
//! ```
//!
//! Pure cores (no I/O, no clock; time and buffers are arguments; kept so by
//! a test that reads their sources): [`contract`] ([`codec`], [`message`],
//! [`contract::names`]), [`publish::proto`], [`archive::proto`],
//! [`replay::pacer`], the [`channels`] directory, messages and client state
//! machine, [`receive::sources`] (the source allow-lists), [`backoff`], the
//! [`console`]'s track tables and geodesy, [`player::body`] and
//! [`player::view`], [`spool::proto`] (the disk spool's format and ledger).
//!
//! Roles (each a subcommand, all of them in one process under `tspi run`):
//! [`ingest`] (receive + publish), [`archive`], [`replay`], [`channels`];
//! for operators, [`console`] (the WebSocket hub, `tspi console serve`) and
//! [`player`] (`tspi player`, the `tspi console` commands).
//! Around them: [`config`] (assembles the stages' own sections; every bound
//! in [`config::limits`]), [`nats`] and [`jetstream`] (the one way to reach
//! NATS and the contract's streams), [`pg`] (the one way to reach PostgreSQL),
//! [`spool`] (the disk spool), [`metrics`], [`decode`] (captures
//! behind `tspi decode`), [`clock`], [`logging`] (text or JSON lines on
//! stderr, coloured only on a terminal).

// Lets shared test helpers name this crate `tspi` from unit tests too.
#[cfg(test)]
extern crate self as tspi;

pub mod archive;
pub mod backoff;
pub mod channels;
pub mod clock;
pub mod config;
pub mod console;
pub mod contract;
pub use contract::{codec, message};
pub mod decode;
pub mod hex;
pub mod http;
pub mod ingest;
pub mod jetstream;
pub mod logging;
pub mod metrics;
pub mod nats;
pub mod pg;
pub mod player;
pub mod publish;
pub mod receive;
pub mod replay;
pub mod send;
pub mod spool;

#[cfg(test)]
mod purity;
