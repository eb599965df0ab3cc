//! Pure: a decoder for exactly the layout [`crate::message::encode_cbor`]
//! writes (keys in contract order, shortest integer heads, float64
//! everywhere), and for exactly the `recv_iso` shape
//! [`crate::message::RecvTime::iso`] writes. Anything else returns `None`
//! and the caller falls back to the general decoders, so this only ever
//! changes speed, never what is accepted (checked by the tests against
//! ciborium).
//!
//! Why: the archive decodes every message on one task; serde's generic map
//! matching was the larger part of that cost.

use crate::codec::{FrameType, GEOCENTRIC_NAMES, SPHERICAL_NAMES, VALIDITY_NAMES};
use crate::message::{PayloadValues, Record, StatusFlags};

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.at)?;
        self.at += 1;
        Some(v)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    /// An item head of `major`, returning its argument (shortest form only:
    /// that is what our encoder writes).
    fn head(&mut self, major: u8) -> Option<u64> {
        let h = self.byte()?;
        if h & 0xE0 != major {
            return None;
        }
        match h & 0x1F {
            n @ 0..=23 => Some(u64::from(n)),
            24 => Some(u64::from(self.byte()?)).filter(|&v| v >= 24),
            25 => Some(u64::from(u16::from_be_bytes(
                self.take(2)?.try_into().ok()?,
            )))
            .filter(|&v| v > 0xFF),
            26 => Some(u64::from(u32::from_be_bytes(
                self.take(4)?.try_into().ok()?,
            )))
            .filter(|&v| v > 0xFFFF),
            27 => Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
                .filter(|&v| v > 0xFFFF_FFFF),
            _ => None,
        }
    }

    fn text(&mut self) -> Option<&'a str> {
        let n = self.head(0x60)? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }

    fn key(&mut self, want: &str) -> Option<()> {
        (self.text()? == want).then_some(())
    }

    fn uint(&mut self) -> Option<u64> {
        self.head(0x00)
    }

    fn f64(&mut self) -> Option<f64> {
        if self.byte()? != 0xFB {
            return None;
        }
        Some(f64::from_bits(u64::from_be_bytes(
            self.take(8)?.try_into().ok()?,
        )))
    }

    fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            0xF4 => Some(false),
            0xF5 => Some(true),
            _ => None,
        }
    }
}

/// The record, if `body` is laid out exactly as our encoder writes it.
pub(super) fn record(body: &[u8]) -> Option<Record> {
    let mut c = Cursor { b: body, at: 0 };
    if c.head(0xA0)? != 9 {
        return None;
    }
    c.key("type")?;
    let frame_type = c.text()?;
    let (kind, names) = match frame_type {
        "geocentric" => (FrameType::Geocentric, &GEOCENTRIC_NAMES),
        "spherical" => (FrameType::Spherical, &SPHERICAL_NAMES),
        _ => return None,
    };
    c.key("sensor_id")?;
    let sensor_id = u16::try_from(c.uint()?).ok()?;
    c.key("day")?;
    let day = u16::try_from(c.uint()?).ok()?;
    c.key("time_s")?;
    let time_s = c.f64()?;
    c.key("status")?;
    let status = u8::try_from(c.uint()?).ok()?;
    c.key("status_flags")?;
    if c.head(0xA0)? != 9 {
        return None;
    }
    let mut f = [false; 9];
    for (slot, name) in f.iter_mut().zip(VALIDITY_NAMES) {
        c.key(name)?;
        *slot = c.bool()?;
    }
    c.key("recv_epoch_ms")?;
    let recv_epoch_ms = c.uint()?;
    c.key("recv_iso")?;
    let recv_iso = c.text()?.to_owned();
    c.key("payload")?;
    if c.head(0xA0)? != 9 {
        return None;
    }
    let mut v = [0.0; 9];
    for (slot, name) in v.iter_mut().zip(names) {
        c.key(name)?;
        *slot = c.f64()?;
    }
    if c.at != body.len() {
        return None;
    }
    let payload = PayloadValues::from_values(kind, v);
    Some(Record {
        frame_type: frame_type.to_owned(),
        sensor_id,
        day,
        time_s,
        status,
        status_flags: StatusFlags::from(f),
        recv_epoch_ms,
        recv_iso,
        payload,
    })
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff+00:00` or `YYYY-MM-DDTHH:MM:SS+00:00` (the
/// two shapes [`crate::message::RecvTime::iso`] and the toolkit write;
/// exactly; 1970..=9999, a valid date, seconds below 60) to µs since the
/// Unix epoch.
pub(super) fn iso_us(t: &[u8]) -> Option<i64> {
    let fraction = match t.len() {
        32 if t[19] == b'.' => true,
        25 => false,
        _ => return None,
    };
    if &t[t.len() - 6..] != b"+00:00" {
        return None;
    }
    let punct = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if punct.iter().any(|&(i, ch)| t[i] != ch) {
        return None;
    }
    let num = |a: usize, b: usize| -> Option<i64> {
        t[a..b].iter().try_fold(0i64, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let us = if fraction { num(20, 26)? } else { 0 };
    let (hh, mm, ss) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if y < 1970 || !(1..=12).contains(&m) || d < 1 || d > month_days[(m - 1) as usize] {
        return None;
    }
    if hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    // Days since 1970-01-01 (H. Hinnant's days_from_civil).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000) + us)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::message::{Message, RecvTime};
    use proptest::prelude::*;

    use super::super::tests::arb;

    fn slow(body: &[u8]) -> Record {
        ciborium::from_reader(body).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Same record as the general decoder, for everything our encoder writes.
        #[test]
        fn agrees_with_ciborium(f in arb::arb_frame(), ns in any::<u64>(), whole in any::<bool>()) {
            // Whole seconds too: their `recv_iso` has no fraction.
            let ns = if whole { ns - ns % 1_000_000_000 } else { ns };
            let body = Message::encode("tspi", &f, RecvTime::from_unix_ns(ns)).body;
            let fast = record(&body);
            prop_assert_eq!(fast.as_ref(), Some(&slow(&body)));
            let iso = fast.unwrap().recv_iso;
            prop_assert_eq!(iso_us(iso.as_bytes()), Some(RecvTime::from_unix_ns(ns).epoch_us() as i64));
            let t = time::OffsetDateTime::parse(&iso, &time::format_description::well_known::Rfc3339).unwrap();
            prop_assert_eq!(iso_us(iso.as_bytes()), Some((t.unix_timestamp_nanos() / 1000) as i64));
        }

        /// Truncated or altered bodies never panic; what it accepts the
        /// general decoder reads the same.
        #[test]
        fn never_disagrees(f in arb::arb_frame(), cut in 0usize..600, flip in 0usize..600, bit in 0u8..8) {
            let mut body = Message::encode("tspi", &f, RecvTime::from_unix_ns(1)).body;
            body.truncate(cut.max(1));
            if let Some(b) = body.get_mut(flip) {
                *b ^= 1 << bit;
            }
            if let Some(r) = record(&body) {
                let general: Result<Record, _> = ciborium::from_reader(&body[..]);
                prop_assert_eq!(Some(r), general.ok());
            }
        }
    }

    #[test]
    fn other_encodings_fall_back() {
        let f = codec::parse(&codec::vectors::bytes(codec::vectors::GEOCENTRIC_1)).unwrap();
        let r = Record::new(&f, RecvTime::from_unix_ns(1_700_000_000_123_400_000));
        // ciborium writes 0.0 as a half float: not our layout, same record.
        let mut other = Vec::new();
        ciborium::into_writer(&r, &mut other).unwrap();
        assert_ne!(
            other,
            Message::encode(
                "tspi",
                &f,
                RecvTime::from_unix_ns(1_700_000_000_123_400_000)
            )
            .body
        );
        assert_eq!(record(&other), None);
        assert_eq!(
            super::super::decode_telemetry(&other, None).unwrap().frame,
            f
        );
        // A non-shortest integer head is refused here (and read there).
        assert_eq!(
            Cursor {
                b: &[0x18, 5],
                at: 0
            }
            .uint(),
            None
        );
        assert_eq!(
            Cursor {
                b: &[0x18, 24],
                at: 0
            }
            .uint(),
            Some(24)
        );
    }

    #[test]
    fn iso_shapes() {
        assert_eq!(iso_us(b"1970-01-01T00:00:00.000000+00:00"), Some(0));
        assert_eq!(
            iso_us(b"2023-11-14T22:13:20.123400+00:00"),
            Some(1_700_000_000_123_400)
        );
        assert_eq!(
            iso_us(b"2024-02-29T00:00:00.000000+00:00"),
            Some(1_709_164_800_000_000)
        );
        // The toolkit's whole-second shape, and the same instant with zeros.
        assert_eq!(
            iso_us(b"2023-11-14T22:13:20+00:00"),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(
            iso_us(b"2023-11-14T22:13:20.000000+00:00"),
            Some(1_700_000_000_000_000)
        );
        for bad in [
            &b"2023-02-29T00:00:00.000000+00:00"[..],
            b"2023-13-01T00:00:00.000000+00:00",
            b"2023-11-14T24:00:00.000000+00:00",
            b"2023-11-14T22:13:60.000000+00:00",
            b"2023-11-14T22:13:20.123400+01:00",
            b"2023-11-14T22:13:20.123400Z",
            b"1969-12-31T23:59:59.000000+00:00",
            b"2023-11-14 22:13:20.123400+00:00",
            b"2023-1a-14T22:13:20.123400+00:00",
            b"2023-11-14T22:13:20x123400+00:00",
            b"2023-11-14T22:13:20+01:00",
            b"2023-11-14T22:13:2a+00:00",
            b"2023-11-14T22:13:20.123+00:00",
            b"2023-02-29T00:00:00+00:00",
        ] {
            assert_eq!(iso_us(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
