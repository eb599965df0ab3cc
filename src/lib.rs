//! `tspi`: the telemetry data plane for test and training ranges.
//!
//! Pure core (no I/O, no clock; time and buffers are arguments):
//! - [`codec`]: the 37-byte TSPI v4 datagram (CONTRACT §1);
//! - [`message`]: subject, `Nats-Msg-Id` and CBOR/JSON body (CONTRACT §2).

pub mod codec;
pub mod hex;
pub mod message;
