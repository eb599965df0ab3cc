//! The operators' console (`tspi console serve`): a WebSocket hub that
//! shows each channel's tracks on a map, live or replayed.
//!
//! - [`tracks`] (PURE): one channel's track table, telemetry bodies in,
//!   the protocol's `snapshot` and `frame` messages out
//!   (`docs/console.md`);
//! - [`geodesy`] (PURE): WGS84, ECEF <-> geodetic (exact), ENU frames,
//!   spherical fixes from a sensor site, speed/heading/climb;
//! - [`config`]: the `[console]` section;
//! - [`hub`]: the server (edge): NATS in, WebSocket out, one task per
//!   client; its protocol's client messages and events are pure
//!   ([`hub::protocol`]).
//!
//! Time is an argument everywhere here: the server owns the clock.
//!
#![doc = include_str!("../../docs/console.md")]

pub mod config;
pub mod geodesy;
pub mod hub;
pub mod tracks;
