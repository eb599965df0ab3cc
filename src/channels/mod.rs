//! Channels (CONTRACT §4): the live stage, group and private replays, and
//! the directory that lists them.
//!
//! - [`message`]: channel ids, control messages, directory, heartbeat;
//! - [`client_state`]: the client state machine operator tools follow;
//! - [`service`]: `tspi channels serve` (livestream, group and private
//!   replays, directory).

pub mod client_state;
pub mod directory;
pub mod message;
pub mod service;
