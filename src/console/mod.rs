//! The operators' console (`tspi console serve`): a WebSocket hub that
//! shows each channel's tracks on a map, live or replayed.
//!
//! - [`geodesy`] (PURE): WGS84, ECEF <-> geodetic (exact), ENU frames,
//!   spherical fixes from a sensor site, speed/heading/climb.
//!
//! Time is an argument everywhere here: the server owns the clock.

pub mod geodesy;
