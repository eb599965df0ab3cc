//! `tspi-loadgen`: airshow and cruise fleets for TSPI ingest capacity tests,
//! the `tspi-loadgen` and `tspi-demo` binaries, and the open-loop [`pacer`].
//! Tooling: nothing here ships in the `tspi` appliance binary.
//!
//! Pure core (no I/O, no clock: the start time is an argument):
//! - [`rng`]: the seeded random numbers (byte-for-byte reproducible);
//! - [`geo`]: WGS-84, local east-north-up frames, the spherical view from a
//!   sensor site with exact rates and accelerations;
//! - [`motion`]: closed circuits of straight legs and arcs with exact
//!   derivatives, and formation rolls;
//! - [`fleet`]: the [`Fleet`], tracks laid out in `airshow` show boxes (formation teams:
//!   loops, rolls, opposing passes, vertical climbs and dives) or as `normal`
//!   traffic (orbits, racetracks, transits), each a sensor with its own id;
//! - [`schedule`]: the open-loop send schedule and the [`Generator`] that
//!   yields `(intended_send_unix_ns, datagram)` in schedule order without
//!   allocating;
//! - [`ledger`]: matching arrivals to intended send times by `Nats-Msg-Id`,
//!   latency into an HdrHistogram from the intended time;
//! - [`report`]: the percentile table, JSON and `.hgrm` text;
//! - [`capacity`]: the capacity search as a state machine;
//! - [`svg`]: the plots, drawn by hand;
//! - [`pacer`]: an open-loop schedule that reports lag, never hides it.
//!
//! Edge (threads, sockets, NATS): [`drive`], shared by the `tspi-loadgen`
//! and `tspi-demo` binaries; [`screen`], the demo's one view at the
//! terminal (live line, its log in a file, warnings above the line).
//!
#![doc = include_str!("../../docs/loadgen.md")]

pub mod capacity;
pub mod drive;
pub mod fleet;
pub mod geo;
pub mod ledger;
pub mod motion;
pub mod pacer;
pub mod report;
pub mod rng;
pub mod schedule;
pub mod screen;
pub mod svg;

mod layout;

pub use fleet::{Fleet, FleetConfig, FleetError, Output, RATE_HZ_MAX, Site, Style, TRACKS_MAX};
pub use geo::{Geodetic, LocalFrame, V3};
pub use ledger::{Ledger, Outcome};
pub use pacer::Pacer;
pub use schedule::{Generator, Schedule};
