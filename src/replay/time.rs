//! Time text and receive-time arithmetic for replay. Pure.

use crate::message::{ISO_LEN, ISO_LEN_WHOLE, RecvTime};

/// A time that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not an RFC 3339 time ({why}); write e.g. 2026-04-30T14:05:00Z or \
     2026-04-30T14:05:00.250+02:00"
)]
pub struct TimeError {
    pub text: String,
    pub why: &'static str,
}

fn err(text: &str, why: &'static str) -> TimeError {
    TimeError {
        text: text.to_owned(),
        why,
    }
}

/// Parse an RFC 3339 time (the one parser, [`crate::message::rfc3339`];
/// surrounding blanks ignored) to nanoseconds since the Unix epoch. Times
/// before 1970 are refused.
pub fn parse_rfc3339_ns(text: &str) -> Result<u64, TimeError> {
    let ns =
        crate::message::rfc3339::parse_rfc3339_ns(text.trim()).map_err(|e| err(text, e.why))?;
    u64::try_from(ns).map_err(|_| err(text, "before 1970"))
}

/// `YYYYMMDDTHHMMSSZ` (UTC) of an instant: a group replay's channel id for a
/// start time (CONTRACT §4).
pub fn compact_utc(unix_ns: u64) -> String {
    let iso = RecvTime::from_unix_ns(unix_ns - unix_ns % 1_000_000_000).iso();
    // iso is `YYYY-MM-DDTHH:MM:SS+00:00` (a whole second: no fraction).
    let i = |r: std::ops::Range<usize>| String::from_utf8_lossy(&iso[r]).into_owned();
    format!(
        "{}{}{}T{}{}{}Z",
        i(0..4),
        i(5..7),
        i(8..10),
        i(11..13),
        i(14..16),
        i(17..19)
    )
}

/// The inclusive range of nanoseconds that round half to even to `q` units
/// of `unit` nanoseconds.
fn rounding_interval(q: u64, unit: u64) -> (i128, i128) {
    let c = i128::from(q) * i128::from(unit);
    let half = i128::from(unit / 2);
    // A tie rounds to the even quotient: both ends belong to an even q.
    if q.is_multiple_of(2) {
        (c - half, c + half)
    } else {
        (c - half + 1, c + half - 1)
    }
}

/// A receive time that renders to both stored values: `recv_iso`'s
/// microseconds `epoch_us` and `recv_epoch_ms`. An archive row keeps only
/// those two; re-encoding with this time rebuilds the original body byte for
/// byte. The nanosecond nearest the microsecond is chosen. `None` when no
/// instant rounds to both (the two values disagree: a corrupt row).
pub fn recv_time_from_stored(epoch_us: u64, epoch_ms: u64) -> Option<RecvTime> {
    let (ulo, uhi) = rounding_interval(epoch_us, 1_000);
    let (mlo, mhi) = rounding_interval(epoch_ms, 1_000_000);
    let lo = ulo.max(mlo).max(0);
    let hi = uhi.min(mhi);
    if lo > hi {
        return None;
    }
    let want = i128::from(epoch_us) * 1_000;
    let ns = want.clamp(lo, hi);
    u64::try_from(ns).ok().map(RecvTime::from_unix_ns)
}

/// The receive time a telemetry body carries, in nanoseconds: `recv_iso`
/// (microseconds), else `recv_epoch_ms`. Looks for the key's bytes first
/// (the encoder's fixed layout: text key, then a 32-byte text, or 25 bytes
/// for a whole second), and falls back to decoding the CBOR map.
pub fn body_recv_ns(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\x68recv_iso\x78";
    if let Some(at) = body.windows(KEY.len()).position(|w| w == KEY) {
        let start = at + KEY.len() + 1;
        if let Some(&len) = body.get(start - 1)
            && (len == ISO_LEN as u8 || len == ISO_LEN_WHOLE as u8)
            && let Some(text) = body.get(start..start + usize::from(len))
            && let Ok(text) = std::str::from_utf8(text)
            && let Ok(ns) = parse_rfc3339_ns(text)
        {
            return Some(ns);
        }
    }
    let value: ciborium::Value = ciborium::from_reader(body).ok()?;
    let map = value.as_map()?;
    let get = |k: &str| {
        map.iter()
            .find(|(key, _)| key.as_text() == Some(k))
            .map(|(_, v)| v)
    };
    if let Some(t) = get("recv_iso").and_then(|v| v.as_text())
        && let Ok(ns) = parse_rfc3339_ns(t)
    {
        return Some(ns);
    }
    let ms = get("recv_epoch_ms")?.as_integer()?;
    u64::try_from(ms).ok().map(|ms| ms * 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_forms_operators_write() {
        let base = 1_700_000_000_000_000_000u64; // 2023-11-14T22:13:20Z
        assert_eq!(parse_rfc3339_ns("2023-11-14T22:13:20Z"), Ok(base));
        assert_eq!(parse_rfc3339_ns("2023-11-14t22:13:20z"), Ok(base));
        assert_eq!(parse_rfc3339_ns("2023-11-14 22:13:20Z"), Ok(base));
        assert_eq!(
            parse_rfc3339_ns("2023-11-14T22:13:20.123400+00:00"),
            Ok(base + 123_400_000)
        );
        assert_eq!(
            parse_rfc3339_ns("2023-11-15T00:13:20.000000001+02:00"),
            Ok(base + 1)
        );
        assert_eq!(parse_rfc3339_ns("2023-11-14T21:13:20-01:00"), Ok(base));
        assert!(parse_rfc3339_ns("2024-02-29T00:00:00Z").is_ok());
        for bad in [
            "",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:13:20.Z",
            "1969-12-31T23:59:59Z",
            "2023-11-14T22:13:20+2:00",
            "12345",
        ] {
            assert!(parse_rfc3339_ns(bad).is_err(), "{bad:?} accepted");
        }
        // Digits past nanoseconds are truncated.
        assert_eq!(
            parse_rfc3339_ns("2023-11-14T22:13:20.1234567891Z"),
            Ok(base + 123_456_789)
        );
        let e = parse_rfc3339_ns("yesterday").unwrap_err();
        assert!(e.to_string().contains("2026-04-30T14:05:00Z"), "{e}");
    }

    #[test]
    fn compact_channel_time() {
        assert_eq!(compact_utc(1_700_000_000_999_999_999), "20231114T221320Z");
    }

    #[test]
    fn contract_receive_time_rebuilds() {
        let r = recv_time_from_stored(1_700_000_000_123_400, 1_700_000_000_123).unwrap();
        assert_eq!(r.epoch_ms(), 1_700_000_000_123);
        assert_eq!(r.epoch_us(), 1_700_000_000_123_400);
        assert_eq!(r.unix_ns, 1_700_000_000_123_400_000);
        // µs ...500 rounds to ms ...000 or ...001 depending on the ns: both
        // stored pairs are rebuildable, with different ns.
        let even = recv_time_from_stored(1_000_500, 1_000).unwrap();
        assert_eq!((even.epoch_us(), even.epoch_ms()), (1_000_500, 1_000));
        let odd = recv_time_from_stored(1_000_500, 1_001).unwrap();
        assert_eq!((odd.epoch_us(), odd.epoch_ms()), (1_000_500, 1_001));
        assert!(recv_time_from_stored(1_000_500, 1_002).is_none());
        assert!(recv_time_from_stored(5, 7).is_none());
    }

    #[test]
    fn body_time_from_the_encoder() {
        let frame = crate::codec::parse(&crate::codec::vectors::bytes(
            crate::codec::vectors::GEOCENTRIC_1,
        ))
        .unwrap();
        let recv = RecvTime::from_unix_ns(1_700_000_000_123_456_789);
        let mut body = Vec::new();
        crate::message::encode_cbor(&frame, recv, &mut body);
        assert_eq!(body_recv_ns(&body), Some(1_700_000_000_123_457_000));
        assert_eq!(body_recv_ns(b"not cbor"), None);
        // A whole second: the 25-byte `recv_iso` without a fraction.
        let whole = RecvTime::from_unix_ns(1_700_000_000_000_000_000);
        let mut body = Vec::new();
        crate::message::encode_cbor(&frame, whole, &mut body);
        assert!(body.windows(25).any(|w| w == b"2023-11-14T22:13:20+00:00"));
        assert_eq!(body_recv_ns(&body), Some(whole.unix_ns));
        // Another encoder's layout (a map without the fast-path bytes).
        let mut other = Vec::new();
        ciborium::into_writer(
            &ciborium::Value::Map(vec![(
                ciborium::Value::Text("recv_epoch_ms".into()),
                ciborium::Value::Integer(1_700_000_000_123u64.into()),
            )]),
            &mut other,
        )
        .unwrap();
        assert_eq!(body_recv_ns(&other), Some(1_700_000_000_123_000_000));
    }

    proptest! {
        #[test]
        fn every_receive_time_rebuilds_from_its_stored_values(ns in 0u64..4_000_000_000_000_000_000) {
            let r = RecvTime::from_unix_ns(ns);
            let back = recv_time_from_stored(r.epoch_us(), r.epoch_ms()).expect("consistent pair");
            prop_assert_eq!(back.epoch_us(), r.epoch_us());
            prop_assert_eq!(back.epoch_ms(), r.epoch_ms());
            prop_assert_eq!(back.iso(), r.iso());
        }

        #[test]
        fn any_answer_renders_to_both(us in 0u64..4_000_000_000_000_000, dms in -2i64..3) {
            let ms = (us / 1000).saturating_add_signed(dms);
            if let Some(r) = recv_time_from_stored(us, ms) {
                prop_assert_eq!(r.epoch_us(), us);
                prop_assert_eq!(r.epoch_ms(), ms);
            } else {
                // No instant of the microsecond's interval rounds to both.
                let c = us * 1000;
                for ns in c.saturating_sub(500)..=c + 500 {
                    let t = RecvTime::from_unix_ns(ns);
                    prop_assert!(!(t.epoch_us() == us && t.epoch_ms() == ms), "missed {}", ns);
                }
            }
        }

        #[test]
        fn rfc3339_round_trips_the_encoders_text(ns in 0u64..4_000_000_000_000_000_000) {
            let r = RecvTime::from_unix_ns(ns);
            let text = r.iso().as_str().to_owned();
            prop_assert_eq!(parse_rfc3339_ns(&text).unwrap(), r.epoch_us() * 1000);
        }
    }
}
