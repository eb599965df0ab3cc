//! The disk spool: frames JetStream cannot take now, kept on local disk
//! and published later, oldest first, with their original `Nats-Msg-Id`.

pub mod config;
pub mod proto;

pub use config::{FsyncPolicy, SpoolConfig};
