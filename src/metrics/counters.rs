//! The ingest counters and gauges, as plain values the reporter samples.
//!
//! Whoever owns the live counts (atomics on the receive cores, fields in the
//! publisher) copies them into an [`IngestCounts`] once per interval; the metrics
//! module never touches the hot path's storage.

use crate::codec::RejectReason;
use serde::de::Deserializer;
use serde::ser::{SerializeMap, Serializer};
use std::collections::BTreeMap;

/// Number of rejection reasons, one counter each.
pub const REJECT_REASONS_LEN: usize = RejectReason::ALL.len();
const _: () = assert!(REJECT_REASONS_LEN == 6);

/// [`RejectReason::label`] of each reason, in [`RejectReason::ALL`] order:
/// the `reason` label of `tspi_ingest_rejected_total`.
pub const REJECT_REASON_LABELS: [&str; REJECT_REASONS_LEN] = {
    let mut out = [""; REJECT_REASONS_LEN];
    let mut i = 0;
    while i < REJECT_REASONS_LEN {
        out[i] = RejectReason::ALL[i].label();
        i += 1;
    }
    out
};

crate::counter_set! {
    /// Monotonic ingest counters since the process started.
    ///
    /// In JSON, `rejected` is an object keyed by [`RejectReason::label`]
    /// (`{"length":0,"type":0,"version":0,"day":0,"time":0,"source":0}`), in
    /// [`RejectReason::ALL`] order. Reading JSON is lenient so that an older
    /// tool reads a newer box's snapshot: a missing counter is zero, an unknown
    /// field or reason label is ignored.
    #[derive(Hash, serde::Serialize, serde::Deserialize)]
    #[serde(default)]
    pub struct IngestCounts {
        /// Datagrams read from the sockets (accepted or not).
        received => "Datagrams read from the sockets, accepted or not.",
        /// Datagrams rejected, indexed by [`RejectReason::index`]: by the
        /// codec, or (`source`) because the sender is not on the listen
        /// address's source allow-list.
        #[serde(serialize_with = "ser_rejected", deserialize_with = "de_rejected")]
        rejected [by "reason": REJECT_REASON_LABELS] => "Datagrams rejected, by reason: malformed (codec) or from a sender not on the source allow-list.",
        /// Accepted datagrams dropped by a source/type filter.
        filtered => "Accepted datagrams dropped by a source or type filter.",
        /// Accepted datagrams dropped because a receive core's ring was full.
        ring_dropped => "Accepted datagrams dropped because a receive ring was full.",
        /// Messages handed to JetStream publish.
        published => "Messages handed to JetStream publish.",
        /// Publish acks received (including duplicates).
        acked => "JetStream publish acks received, duplicates included.",
        /// Acks that JetStream flagged as duplicates (`Nats-Msg-Id` seen before).
        duplicate => "Publish acks flagged as duplicates by JetStream.",
        /// Publishes retried after a timeout or error.
        retried => "Publishes retried after a timeout or error.",
        /// Messages given up on after the last retry.
        failed => "Messages given up on after the last retry.",
        /// Datagrams the kernel dropped before we read them (`SO_RXQ_OVFL`).
        kernel_dropped => "Datagrams the kernel dropped before they were read.",
    }
}

impl IngestCounts {
    /// Rejections of every reason together.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().fold(0u64, |a, &b| a.saturating_add(b))
    }

    /// The count for one rejection reason.
    pub fn rejected_for(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()]
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
    use crate::metrics::CounterValue;

    fn sample() -> IngestCounts {
        IngestCounts {
            received: 100,
            rejected: [1, 2, 3, 4, 5, 6],
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
            IngestCounts {
                received: 10,
                rejected: [0, 0, 0, 3, 0, 0],
                acked: 9,
                kernel_dropped: 1,
                ..IngestCounts::default()
            }
        );
        assert_eq!(before.delta_since(&before), IngestCounts::default());
        // Backwards never wraps.
        assert_eq!(before.delta_since(&after).received, 0);
    }

    #[test]
    fn rejected_serialises_as_a_map_by_label() {
        let json = serde_json::to_string(&sample()).unwrap();
        assert_eq!(
            json,
            r#"{"received":100,"rejected":{"length":1,"type":2,"version":3,"day":4,"time":5,"source":6},"filtered":6,"ring_dropped":7,"published":80,"acked":79,"duplicate":1,"retried":2,"failed":0,"kernel_dropped":9}"#
        );
        let back: IngestCounts = serde_json::from_str(&json).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn reading_is_lenient() {
        let c: IngestCounts = serde_json::from_str(
            r#"{"received":1,"rejected":{"day":2,"newer":7},"newer_counter":3}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            IngestCounts {
                received: 1,
                rejected: [0, 0, 0, 2, 0, 0],
                ..IngestCounts::default()
            }
        );
    }

    #[test]
    fn json_and_prometheus_name_the_same_counters() {
        let v = serde_json::to_value(sample()).unwrap();
        let mut json: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut declared: Vec<&str> = sample().fields().iter().map(|f| f.name).collect();
        json.sort_unstable();
        declared.sort_unstable();
        assert_eq!(json, declared);
    }

    fn arbitrary() -> impl proptest::strategy::Strategy<Value = IngestCounts> {
        use proptest::prelude::*;
        (any::<[u64; 9]>(), any::<[u64; REJECT_REASONS_LEN]>()).prop_map(|(v, rejected)| {
            IngestCounts {
                received: v[0],
                rejected,
                filtered: v[1],
                ring_dropped: v[2],
                published: v[3],
                acked: v[4],
                duplicate: v[5],
                retried: v[6],
                failed: v[7],
                kernel_dropped: v[8],
            }
        })
    }

    proptest::proptest! {
        /// Every field of the delta is the saturating difference, so the
        /// delta never exceeds the later value and adds back when counts grew.
        #[test]
        fn delta_is_saturating_sub_per_field(a in arbitrary(), b in arbitrary()) {
            let d = a.delta_since(&b);
            for ((fa, fb), fd) in a.fields().iter().zip(b.fields()).zip(d.fields()) {
                let (CounterValue::One(x), CounterValue::One(y), CounterValue::One(z)) =
                    (fa.value, fb.value, fd.value)
                else {
                    let (CounterValue::ByLabel { counts: x, .. },
                         CounterValue::ByLabel { counts: y, .. },
                         CounterValue::ByLabel { counts: z, .. }) = (fa.value, fb.value, fd.value)
                    else {
                        panic!("{} changed kind", fa.name);
                    };
                    for ((x, y), z) in x.iter().zip(y).zip(z) {
                        proptest::prop_assert_eq!(*z, x.saturating_sub(*y));
                    }
                    continue;
                };
                proptest::prop_assert_eq!(z, x.saturating_sub(y));
            }
        }
    }

    #[test]
    fn totals() {
        let c = sample();
        assert_eq!(c.rejected_total(), 21);
        assert_eq!(c.rejected_for(RejectReason::Time), 5);
        assert_eq!(IngestCounts::FIELDS_LEN, 10);
        for (label, reason) in REJECT_REASON_LABELS.iter().zip(RejectReason::ALL) {
            assert_eq!(*label, reason.label());
        }
    }
}
