//! The spool's pure core: the record format and segment scan
//! ([`record`]), the bookkeeping of segments, limits and drain progress
//! ([`ledger`]), and the drain's pace ([`pacer`]). No I/O, no clock.

pub mod ledger;
pub mod pacer;
pub mod record;
