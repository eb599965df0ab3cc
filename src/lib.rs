//! `tspi`: the telemetry data plane for test and training ranges.
//!
//! Pure core (no I/O, no clock; time and buffers are arguments):
//! - [`codec`]: the 37-byte TSPI v4 datagram (CONTRACT §1);
//! - [`message`]: subject, `Nats-Msg-Id` and CBOR/JSON body (CONTRACT §2);
//! - [`contract::names`]: every stream name and subject, spelled once;
//! - [`config`]: assembles the file from the stages' own sections; every
//!   bound in [`config::limits`].
//!
//! Edges:
//! - [`decode`]: the operator's capture reader behind `tspi decode`;
//! - [`jetstream`]: stream definitions of CONTRACT §3;
//! - [`nats`]: the `[nats]` section and the one way every role connects.

// Lets shared test helpers name this crate `tspi` from unit tests too.
#[cfg(test)]
extern crate self as tspi;

pub mod archive;
pub mod backoff;
pub mod channels;
pub mod clock;
pub mod codec;
pub mod config;
pub mod contract;
pub mod decode;
pub mod hex;
pub mod ingest;
pub mod jetstream;
pub mod message;
pub mod metrics;
pub mod nats;
pub mod publish;
pub mod receive;
pub mod replay;
pub mod send;

#[cfg(test)]
mod purity;
