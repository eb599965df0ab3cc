//! The HdrHistogram snapshot that each box publishes every interval so that
//! operator tools can merge latencies across boxes: pure (encoding, subject,
//! message body, and the decoding tools need).
//!
//! Body (JSON, one object):
//!
//! ```text
//! {"host":"rx-01","component":"ingest","start_unix_ms":..,"end_unix_ms":..,
//!  "histogram_encoding":"hdrhistogram-v2-deflate-base64","histogram_unit":"ns",
//!  "histograms":{"receive_to_publish":"HISTFAAA..","publish_to_ack":"..","receive_to_ack":".."},
//!  "counters":{<cumulative IngestCounts>},"delta":{<interval IngestCounts>},"gauges":{..}}
//! ```
//!
//! The histograms are the interval's (start..end), in the standard
//! HdrHistogram V2 compressed ("deflate") encoding, base64 with padding, values
//! in nanoseconds: any HdrHistogram implementation decodes them, and
//! intervals from many boxes add up.

use super::counters::{Gauges, IngestCounts};
use super::latency::{Latency, LatencyHistograms, LatencyView};
use super::report::Report;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};

/// Subjects are `METRICS_SUBJECT_PREFIX`, a dot, and the sanitised host
/// name; operator tools subscribe to `METRICS_SUBJECT_ALL` for every box.
pub use crate::contract::names::{METRICS_SUBJECT_ALL, METRICS_SUBJECT_PREFIX};
/// The `histogram_encoding` field.
pub const HISTOGRAM_ENCODING: &str = "hdrhistogram-v2-deflate-base64";
/// The `histogram_unit` field.
pub const HISTOGRAM_UNIT: &str = "ns";
/// The `component` field of this appliance.
pub const COMPONENT_INGEST: &str = "ingest";

/// V2 compressed encoding, then standard base64 (with padding).
///
/// # Panics
/// If a count exceeds `i64::MAX`, which the V2 format cannot carry: 2^63
/// samples, three centuries at a billion a second.
pub fn encode_hdr_snapshot(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::with_capacity(1024);
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .expect("writing to a Vec cannot fail, and counts stay below i64::MAX");
    BASE64.encode(bytes)
}

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotDecodeError {
    #[error("histogram {which}: not standard base64 ({source}); is the sender a tspi ingest box?")]
    Base64 {
        which: &'static str,
        source: base64::DecodeError,
    },
    #[error("histogram {which}: not an HdrHistogram V2 encoding ({source})")]
    Hdr {
        which: &'static str,
        source: hdrhistogram::serialization::DeserializeError,
    },
    #[error("snapshot body is not the expected JSON ({0})")]
    Json(#[from] serde_json::Error),
}

/// The inverse of [`encode_hdr_snapshot`] (accepts compressed and plain V2).
pub fn decode_hdr_snapshot(base64: &str) -> Result<Histogram<u64>, SnapshotDecodeError> {
    decode_named("histogram", base64)
}

fn decode_named(which: &'static str, text: &str) -> Result<Histogram<u64>, SnapshotDecodeError> {
    let bytes = BASE64
        .decode(text.trim())
        .map_err(|source| SnapshotDecodeError::Base64 { which, source })?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|source| SnapshotDecodeError::Hdr { which, source })
}

/// `tspi.ops.metrics.ingest.<host>`, the host made one subject token: every
/// character other than ASCII letters, digits, `-` and `_` (so `.`, `*`,
/// `>`, whitespace, and anything non-ASCII) becomes `_`; an empty host is
/// `unknown`. The body keeps the host name as it was.
pub fn metrics_subject(host: &str) -> String {
    metrics_subject_for(COMPONENT_INGEST, host)
}

/// `tspi.ops.metrics.<component>.<host>`, the host sanitised as in
/// [`metrics_subject`] (which is this with `ingest`).
pub fn metrics_subject_for(component: &str, host: &str) -> String {
    let token: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let token = if token.is_empty() { "unknown" } else { &token };
    format!("tspi.ops.metrics.{component}.{token}")
}

/// The snapshot body, as sent and as a tool reads it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub host: String,
    pub component: String,
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
    pub histogram_encoding: String,
    pub histogram_unit: String,
    pub histograms: SnapshotHistograms,
    /// Cumulative since the box started.
    pub counters: IngestCounts,
    /// Gained during start..end.
    #[serde(default)]
    pub delta: IngestCounts,
    #[serde(default)]
    pub gauges: Gauges,
    /// The box's disk spool, when it has one (`[spool] dir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool: Option<SpoolSnapshot>,
}

/// A disk spool's state in a [`Snapshot`]: totals since start, what it
/// holds now, and its limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SpoolSnapshot {
    pub spooled: u64,
    pub drained: u64,
    pub dropped: u64,
    pub torn: u64,
    pub held: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    pub oldest_age_s: u64,
}

/// The three interval histograms, encoded by [`encode_hdr_snapshot`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotHistograms {
    pub receive_to_publish: String,
    pub publish_to_ack: String,
    pub receive_to_ack: String,
}

impl SnapshotHistograms {
    /// Encode the three histograms.
    pub fn encode(v: LatencyView<'_>) -> Self {
        SnapshotHistograms {
            receive_to_publish: encode_hdr_snapshot(v.get(Latency::ReceiveToPublish)),
            publish_to_ack: encode_hdr_snapshot(v.get(Latency::PublishToAck)),
            receive_to_ack: encode_hdr_snapshot(v.get(Latency::ReceiveToAck)),
        }
    }

    /// Decode the three histograms (each keeps the range and precision it was
    /// encoded with).
    pub fn decode(&self) -> Result<LatencyHistograms, SnapshotDecodeError> {
        Ok(LatencyHistograms {
            receive_to_publish: decode_named("receive_to_publish", &self.receive_to_publish)?,
            publish_to_ack: decode_named("publish_to_ack", &self.publish_to_ack)?,
            receive_to_ack: decode_named("receive_to_ack", &self.receive_to_ack)?,
        })
    }
}

impl Snapshot {
    /// The snapshot of one report from `host`.
    pub fn from_report(r: &Report<'_>, host: &str) -> Self {
        Snapshot {
            host: host.to_owned(),
            component: COMPONENT_INGEST.to_owned(),
            start_unix_ms: r.start_unix_ms,
            end_unix_ms: r.at_unix_ms,
            histogram_encoding: HISTOGRAM_ENCODING.to_owned(),
            histogram_unit: HISTOGRAM_UNIT.to_owned(),
            histograms: SnapshotHistograms::encode(r.interval),
            counters: r.counters,
            delta: r.delta,
            gauges: r.gauges,
            spool: None,
        }
    }

    /// Read a message body.
    pub fn from_json(body: &[u8]) -> Result<Self, SnapshotDecodeError> {
        Ok(serde_json::from_slice(body)?)
    }
}

/// Subject and JSON body of the snapshot message for `host`.
pub fn snapshot_message(r: &Report<'_>, host: &str) -> (String, Vec<u8>) {
    snapshot_message_with(r, host, None)
}

/// [`snapshot_message`] with the box's disk spool.
pub fn snapshot_message_with(
    r: &Report<'_>,
    host: &str,
    spool: Option<SpoolSnapshot>,
) -> (String, Vec<u8>) {
    let snap = Snapshot {
        spool,
        ..Snapshot::from_report(r, host)
    };
    let body =
        serde_json::to_vec(&snap).expect("plain structs of numbers and strings always serialise");
    (metrics_subject(host), body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::new_latency_histogram;
    use crate::metrics::render::tests::{fixture, fixture_histograms};
    use proptest::prelude::*;

    fn assert_same(a: &Histogram<u64>, b: &Histogram<u64>) {
        assert_eq!(a.len(), b.len());
        assert_eq!(a.max(), b.max());
        assert_eq!(a.min(), b.min());
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(a.value_at_quantile(q), b.value_at_quantile(q), "q {q}");
        }
        let av: Vec<_> = a
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        let bv: Vec<_> = b
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        assert_eq!(av, bv);
        assert_eq!(a, b);
    }

    #[test]
    fn round_trip_fixed() {
        let (i, _) = fixture_histograms();
        let text = encode_hdr_snapshot(&i.receive_to_ack);
        // Standard base64 of the V2 compressed cookie 0x1c849304.
        assert!(text.starts_with("HISTF"), "{text}");
        let back = decode_hdr_snapshot(&text).unwrap();
        assert_same(&i.receive_to_ack, &back);
        assert_eq!(
            back.value_at_quantile(0.99),
            i.receive_to_ack.value_at_quantile(0.99)
        );
    }

    #[test]
    fn empty_round_trips() {
        let h = new_latency_histogram();
        let back = decode_hdr_snapshot(&encode_hdr_snapshot(&h)).unwrap();
        assert!(back.is_empty());
        assert_same(&h, &back);
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        assert!(matches!(
            decode_hdr_snapshot("not base64!"),
            Err(SnapshotDecodeError::Base64 { .. })
        ));
        assert!(matches!(
            decode_hdr_snapshot("AAAAAAAA"),
            Err(SnapshotDecodeError::Hdr { .. })
        ));
    }

    #[test]
    fn subjects_are_one_token() {
        assert_eq!(metrics_subject("rx-01"), "tspi.ops.metrics.ingest.rx-01");
        assert_eq!(
            metrics_subject("rx01.range.example"),
            "tspi.ops.metrics.ingest.rx01_range_example"
        );
        assert_eq!(
            metrics_subject("a*b>c d\te"),
            "tspi.ops.metrics.ingest.a_b_c_d_e"
        );
        assert_eq!(metrics_subject("héte"), "tspi.ops.metrics.ingest.h_te");
        assert_eq!(metrics_subject(""), "tspi.ops.metrics.ingest.unknown");
    }

    #[test]
    fn message_body_round_trips() {
        let (i, c) = fixture_histograms();
        let r = fixture(&i, &c);
        let (subject, body) = snapshot_message(&r, "rx-01.range");
        assert_eq!(subject, "tspi.ops.metrics.ingest.rx-01_range");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["host"], "rx-01.range");
        assert_eq!(v["component"], "ingest");
        assert_eq!(v["start_unix_ms"], 1_700_000_000_000u64);
        assert_eq!(v["end_unix_ms"], 1_700_000_010_000u64);
        assert_eq!(v["counters"]["rejected"]["day"], 1);
        let snap = Snapshot::from_json(&body).unwrap();
        assert_eq!(snap.counters, r.counters);
        assert_eq!(snap.delta, r.delta);
        assert_eq!(snap.gauges, r.gauges);
        let h = snap.histograms.decode().unwrap();
        for which in Latency::ALL {
            // The interval histograms, not the cumulative ones.
            assert_same(r.interval.get(which), h.view().get(which));
        }
    }

    proptest! {
        #[test]
        fn round_trip_any(values in proptest::collection::vec((0u64..u64::MAX, 1u64..1000), 0..200)) {
            let mut h = new_latency_histogram();
            for (v, n) in values {
                // Spread over the whole range: small, medium and saturating.
                h.saturating_record_n(v >> (v % 64), n);
            }
            let back = decode_hdr_snapshot(&encode_hdr_snapshot(&h)).unwrap();
            prop_assert_eq!(h.len(), back.len());
            for q in [0.5, 0.99, 0.999, 1.0] {
                prop_assert_eq!(h.value_at_quantile(q), back.value_at_quantile(q));
            }
            prop_assert_eq!(&h, &back);
        }
    }
}
