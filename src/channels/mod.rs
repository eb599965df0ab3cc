//! Channels (CONTRACT §4): the live stage, group replays an operator starts
//! for everyone, private replays a client starts for itself, and the
//! directory that lists them.
//!
//! The design is the quinn one: what the service *decides* is pure, and a
//! thin driver does the I/O.
//!
//! Pure (no sockets, no async runtime, no NATS or PostgreSQL client, no
//! clock: time is an argument):
//! - [`message`]: channel ids and subjects, the control messages on
//!   `tspi.ops.ctrl`, the private replay request and reply, directory
//!   entries, the status heartbeat; CBOR encoding and decoding.
//! - [`directory`]: the service's state machine. Events in
//!   (`handle_ctrl(now, ..)`, `handle_private_request(now, ..)`,
//!   `handle_status(now, ..)`, `handle_list_request`, `replay_started`,
//!   `start_failed`, `replay_ended`, `handle_timeout(now)`, `shutdown`),
//!   actions out (`poll_action`: start a replay, stop a runner, announce on
//!   `tspi.ops.ctrl`, answer a request) and `poll_timeout` (the next private
//!   replay to expire). It owns the limits (`group_max`, `private_max`,
//!   counting replays still starting) and the expiry of private replays
//!   without heartbeats, and who may do what: identifiers bounded before
//!   any subject is built (1 to 64 of `[A-Za-z0-9_-]`), private replays
//!   stopped only by their owner's `client_id`, group control for operator
//!   tokens (`[channels] operator_tokens`; open with a warning when none),
//!   a per-client limit and token-bucket rate limits (per client id and
//!   overall, time passed in), every refusal answered with and counted by
//!   its reason (`directory::Refusal`). `directory::limits` holds the token
//!   bucket and the refusals; `directory::ops` the controls of a running
//!   replay (pause, resume, seek, rate: who may, the arguments, a rate per
//!   replay) and foreign `GroupReplayStart`s (published by another tool
//!   without a request: started once, never for our own announcement or a
//!   duplicate). Its unit and property tests run in milliseconds.
//! - [`client_state`]: the client state machine operator tools follow
//!   (`FOLLOWING_LIVESTREAM`, `FOLLOWING_GROUP_REPLAY`,
//!   `FOLLOWING_PRIVATE_REPLAY`, `LIVE_OVERRIDE`).
//!
//! A test below reads these three files and fails if one names the network,
//! the async runtime, a server client or the clock.
//!
//! Driver:
//! - [`service`]: `tspi channels serve`. It owns the NATS client, decodes
//!   what arrives and hands it to the directory with the time it read,
//!   carries out the directory's actions (spawning paced replays via
//!   [`crate::replay::driver`] or JetStream-native consumers, stopping them,
//!   publishing, never to a subject [`message::publishable`] refuses: one
//!   bad subject would cost the service its only NATS connection), sleeps
//!   until the directory's next timeout, runs the
//!   `LIVE_MAIN` livestream consumer, and offers the operator's side
//!   (`request_group_replay`, `stop_group_replay`, `control_replay`,
//!   `list_channels`, `private_request`). Replays read the `TSPI` stream or
//!   the PostgreSQL archive (`ReplaySpec::source`); each paced replay's
//!   pacing errors are shown live on `/metrics`.
//!
//! A message's path: `tspi.channel.private.req` → the driver decodes nothing
//! but the NATS envelope → `Directory::handle_private_request` checks the
//! ids, the owner, the rates and the limits and queues `Start` (or the
//! refusal's reply) → the driver starts the runner
//! and reports `replay_started` → the directory lists the replay and queues
//! the reply → the driver publishes it.

pub mod client_state;
pub mod directory;
pub mod message;
pub mod service;
