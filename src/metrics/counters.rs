//! The ingest counters and gauges, as plain values the reporter samples.
//!
//! Whoever owns the live counts (atomics on the receive cores, fields in the
//! publisher) copies them into a [`Counters`] once per interval; the metrics
//! module never touches the hot path's storage.

use crate::codec::RejectReason;
use serde::de::Deserializer;
use serde::ser::{SerializeMap, Serializer};
use std::collections::BTreeMap;

/// Number of rejection reasons, one counter each.
pub const REJECT_REASONS_LEN: usize = RejectReason::ALL.len();
const _: () = assert!(REJECT_REASONS_LEN == 5);

/// Monotonic ingest counters since the process started.
///
/// In JSON, `rejected` is an object keyed by [`RejectReason::label`]
/// (`{"length":0,"type":0,"version":0,"day":0,"time":0}`), in
/// [`RejectReason::ALL`] order. Reading JSON is lenient so that an older
/// tool reads a newer box's snapshot: a missing counter is zero, an unknown
/// field or reason label is ignored.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(default)]
pub struct Counters {
    /// Datagrams read from the sockets (accepted or not).
    pub received: u64,
    /// Datagrams the codec rejected, indexed by [`RejectReason::index`].
    #[serde(serialize_with = "ser_rejected", deserialize_with = "de_rejected")]
    pub rejected: [u64; REJECT_REASONS_LEN],
    /// Accepted datagrams dropped by a source/type filter.
    pub filtered: u64,
    /// Accepted datagrams dropped because a receive core's ring was full.
    pub ring_dropped: u64,
    /// Messages handed to JetStream publish.
    pub published: u64,
    /// Publish acks received (including duplicates).
    pub acked: u64,
    /// Acks that JetStream flagged as duplicates (`Nats-Msg-Id` seen before).
    pub duplicate: u64,
    /// Publishes retried after a timeout or error.
    pub retried: u64,
    /// Messages given up on after the last retry.
    pub failed: u64,
    /// Datagrams the kernel dropped before we read them (`SO_RXQ_OVFL`).
    pub kernel_dropped: u64,
}

impl Counters {
    /// Rejections of every reason together.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().fold(0u64, |a, &b| a.saturating_add(b))
    }

    /// The count for one rejection reason.
    pub fn rejected_for(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()]
    }

    /// What each counter gained since `earlier`. A counter that went backwards
    /// (it cannot, unless the caller mixed up sources) counts as zero rather
    /// than wrapping into a huge rate.
    pub fn delta_since(&self, earlier: &Counters) -> Counters {
        let d = |now: u64, then: u64| now.saturating_sub(then);
        let mut rejected = [0; REJECT_REASONS_LEN];
        for (i, r) in rejected.iter_mut().enumerate() {
            *r = d(self.rejected[i], earlier.rejected[i]);
        }
        Counters {
            received: d(self.received, earlier.received),
            rejected,
            filtered: d(self.filtered, earlier.filtered),
            ring_dropped: d(self.ring_dropped, earlier.ring_dropped),
            published: d(self.published, earlier.published),
            acked: d(self.acked, earlier.acked),
            duplicate: d(self.duplicate, earlier.duplicate),
            retried: d(self.retried, earlier.retried),
            failed: d(self.failed, earlier.failed),
            kernel_dropped: d(self.kernel_dropped, earlier.kernel_dropped),
        }
    }

    /// Every scalar counter with its metric name, in a fixed order (rejected
    /// is separate: it carries a label). Renderers iterate this so a new
    /// counter cannot be forgotten in one output and present in another.
    pub(crate) fn scalars(&self) -> [(&'static str, &'static str, u64); 9] {
        [
            (
                "received",
                "Datagrams read from the sockets, accepted or not.",
                self.received,
            ),
            (
                "filtered",
                "Accepted datagrams dropped by a source or type filter.",
                self.filtered,
            ),
            (
                "ring_dropped",
                "Accepted datagrams dropped because a receive ring was full.",
                self.ring_dropped,
            ),
            (
                "published",
                "Messages handed to JetStream publish.",
                self.published,
            ),
            (
                "acked",
                "JetStream publish acks received, duplicates included.",
                self.acked,
            ),
            (
                "duplicate",
                "Publish acks flagged as duplicates by JetStream.",
                self.duplicate,
            ),
            (
                "retried",
                "Publishes retried after a timeout or error.",
                self.retried,
            ),
            (
                "failed",
                "Messages given up on after the last retry.",
                self.failed,
            ),
            (
                "kernel_dropped",
                "Datagrams the kernel dropped before they were read.",
                self.kernel_dropped,
            ),
        ]
    }
}

fn ser_rejected<S: Serializer>(
    rejected: &[u64; REJECT_REASONS_LEN],
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(REJECT_REASONS_LEN))?;
    for reason in RejectReason::ALL {
        map.serialize_entry(reason.label(), &rejected[reason.index()])?;
    }
    map.end()
}

fn de_rejected<'de, D: Deserializer<'de>>(d: D) -> Result<[u64; REJECT_REASONS_LEN], D::Error> {
    let map: BTreeMap<String, u64> = serde::Deserialize::deserialize(d)?;
    let mut out = [0; REJECT_REASONS_LEN];
    for reason in RejectReason::ALL {
        out[reason.index()] = map.get(reason.label()).copied().unwrap_or(0);
    }
    Ok(out)
}

/// Point-in-time levels, sampled when the report is made.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Gauges {
    /// Frames waiting in the receive rings, all cores together.
    pub ring_frames: u64,
    /// Publishes sent and not yet acked.
    pub acks_in_flight: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Counters {
        Counters {
            received: 100,
            rejected: [1, 2, 3, 4, 5],
            filtered: 6,
            ring_dropped: 7,
            published: 80,
            acked: 79,
            duplicate: 1,
            retried: 2,
            failed: 0,
            kernel_dropped: 9,
        }
    }

    #[test]
    fn delta_subtracts_every_field() {
        let before = sample();
        let mut after = before;
        after.received += 10;
        after.rejected[RejectReason::Day.index()] += 3;
        after.acked += 9;
        after.kernel_dropped += 1;
        let d = after.delta_since(&before);
        assert_eq!(
            d,
            Counters {
                received: 10,
                rejected: [0, 0, 0, 3, 0],
                acked: 9,
                kernel_dropped: 1,
                ..Counters::default()
            }
        );
        assert_eq!(before.delta_since(&before), Counters::default());
        // Backwards never wraps.
        assert_eq!(before.delta_since(&after).received, 0);
    }

    #[test]
    fn rejected_serialises_as_a_map_by_label() {
        let json = serde_json::to_string(&sample()).unwrap();
        assert_eq!(
            json,
            r#"{"received":100,"rejected":{"length":1,"type":2,"version":3,"day":4,"time":5},"filtered":6,"ring_dropped":7,"published":80,"acked":79,"duplicate":1,"retried":2,"failed":0,"kernel_dropped":9}"#
        );
        let back: Counters = serde_json::from_str(&json).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn reading_is_lenient() {
        let c: Counters = serde_json::from_str(
            r#"{"received":1,"rejected":{"day":2,"newer":7},"newer_counter":3}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            Counters {
                received: 1,
                rejected: [0, 0, 0, 2, 0],
                ..Counters::default()
            }
        );
    }

    #[test]
    fn totals() {
        let c = sample();
        assert_eq!(c.rejected_total(), 15);
        assert_eq!(c.rejected_for(RejectReason::Time), 5);
        assert_eq!(c.scalars().len(), 9);
    }
}
