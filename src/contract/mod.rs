//! PURE. The wire contract (`docs/contract.md`): what crosses the
//! appliance's boundaries, apart from the code that moves it.
//!
//! - [`codec`]: the 37-byte TSPI v4 datagram (CONTRACT §1);
//! - [`message`]: subject, `Nats-Msg-Id`, CBOR body and JSON record
//!   (CONTRACT §2), the operator bodies (tags, display commands) and the one
//!   RFC 3339 parser;
//! - [`names`]: stream names and subjects, the one place they are spelled.
//!
//! No I/O and no clock: receive times and buffers are arguments
//! (`crate::clock` reads the clock). `crate::codec` and `crate::message` are
//! these modules under their first names.

pub mod codec;
pub mod message;
pub mod names;
