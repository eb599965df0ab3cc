//! `tspi`: the telemetry data plane for test and training ranges.
//!
//! Pure core (no I/O, no clock; time and buffers are arguments):
//! - [`codec`]: the 37-byte TSPI v4 datagram (CONTRACT §1);
//! - [`message`]: subject, `Nats-Msg-Id` and CBOR/JSON body (CONTRACT §2).
//!
//! Edges:
//! - [`decode`]: the operator's capture reader behind `tspi decode`;
//! - [`jetstream`]: stream definitions of CONTRACT §3.

// Lets shared test helpers name this crate `tspi` from unit tests too.
#[cfg(test)]
extern crate self as tspi;

pub mod archive;
pub mod clock;
pub mod codec;
pub mod config;
pub mod decode;
pub mod hex;
pub mod ingest;
pub mod jetstream;
pub mod message;
pub mod metrics;
pub mod publish;
pub mod receive;
pub mod replay;
pub mod send;
