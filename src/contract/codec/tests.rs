use super::vectors::{self, bytes};
use super::*;
use proptest::prelude::*;

#[path = "../../../testkit/src/arb.rs"]
pub(crate) mod arb;
pub(crate) use arb::arb_frame;

fn parse_hex(hex: &str) -> Frame {
    parse(&bytes(hex)).expect("contract vector parses")
}

#[test]
fn vector_1_geocentric() {
    let f = parse_hex(vectors::GEOCENTRIC_1);
    assert_eq!(f.frame_type(), FrameType::Geocentric);
    assert_eq!(
        (f.sensor_id, f.day, f.time_s(), f.status),
        (501, 123, 1.534, 255)
    );
    assert_eq!(f.validity(), [true; 9]);
    assert_eq!(
        f.values(),
        [5123.25, -15.5, 1200.0, 12.34, -5.67, 0.0, 0.12, -0.34, 0.56]
    );
    assert_eq!(f.encode().as_slice(), bytes(vectors::GEOCENTRIC_1));
}

#[test]
fn vector_2_spherical() {
    let f = parse_hex(vectors::SPHERICAL_2);
    assert_eq!(f.frame_type(), FrameType::Spherical);
    assert_eq!(
        (f.sensor_id, f.day, f.time_s(), f.status),
        (2048, 42, 92.34, 14)
    );
    assert_eq!(
        f.validity(),
        [false, true, true, true, false, false, false, false, true]
    );
    assert_eq!(
        f.values(),
        [
            3800.0, 52.123456, 10.654321, 1.23, -4.56, 7.89, 0.12, -0.34, 0.56
        ]
    );
    assert_eq!(f.encode().as_slice(), bytes(vectors::SPHERICAL_2));
}

#[test]
fn vector_3_geocentric_extremes() {
    let f = parse_hex(vectors::GEOCENTRIC_3);
    assert_eq!(f.frame_type(), FrameType::Geocentric);
    assert_eq!(
        (f.sensor_id, f.day, f.time_s(), f.status),
        (65535, 366, 86399.9999, 0)
    );
    assert_eq!(f.status_flags, 0xFF00);
    assert_eq!(f.validity(), [false; 9]);
    assert_eq!(
        f.values(),
        [
            -21474836.48,
            21474836.47,
            -0.01,
            -327.68,
            327.67,
            -0.01,
            0.01,
            -0.01,
            0.0
        ]
    );
    assert_eq!(f.encode().as_slice(), bytes(vectors::GEOCENTRIC_3));
}

#[test]
fn vector_4_spherical_extremes() {
    let f = parse_hex(vectors::SPHERICAL_4);
    assert_eq!(f.frame_type(), FrameType::Spherical);
    assert_eq!((f.sensor_id, f.day, f.time_s()), (0, 1, 0.0001));
    let mut want = [false; 9];
    want[0] = true;
    assert_eq!(f.validity(), want);
    assert_eq!(
        f.values(),
        [
            -0.01,
            4294.967295,
            0.0,
            -327.68,
            327.67,
            -0.01,
            0.0,
            0.0,
            0.0
        ]
    );
    assert_eq!(f.encode().as_slice(), bytes(vectors::SPHERICAL_4));
}

#[test]
fn vector_5_rejections() {
    let good = bytes(vectors::GEOCENTRIC_1);
    assert_eq!(parse(&good[..36]), Err(ParseError::Length { len: 36 }));
    let mut v = good.clone();
    v[1] = 3;
    assert_eq!(parse(&v), Err(ParseError::Version { byte: 3 }));
    let mut t = good.clone();
    t[0] = 0xC3;
    assert_eq!(parse(&t), Err(ParseError::Type { byte: 0xC3 }));
    let mut d = good.clone();
    d[4] = 0;
    d[5] = 0;
    assert_eq!(parse(&d), Err(ParseError::Day { day: 0 }));
}

#[test]
fn range_edges() {
    let mut b = bytes(vectors::GEOCENTRIC_1);
    // Day 366 and 1 accepted, 367 rejected.
    for (day, ok) in [(1u16, true), (366, true), (367, false), (u16::MAX, false)] {
        b[4..6].copy_from_slice(&day.to_be_bytes());
        assert_eq!(parse(&b).is_ok(), ok, "day {day}");
    }
    b[4..6].copy_from_slice(&1u16.to_be_bytes());
    // The last tick of a day with a leap second is accepted; one more is not.
    for (ticks, ok) in [
        (TIME_TICKS_END - 1, true),
        (TIME_TICKS_END, false),
        (u32::MAX, false),
    ] {
        b[6..10].copy_from_slice(&ticks.to_be_bytes());
        assert_eq!(parse(&b).is_ok(), ok, "ticks {ticks}");
        if !ok {
            assert_eq!(parse(&b), Err(ParseError::Time { ticks }));
        }
    }
    assert_eq!(parse(&[]), Err(ParseError::Length { len: 0 }));
    assert_eq!(parse(&[0; 38]), Err(ParseError::Length { len: 38 }));
}

#[test]
fn checks_run_in_documented_order() {
    // Wrong type and version and day at once: type is reported first.
    let mut b = [0u8; DATAGRAM_LEN];
    assert_eq!(parse(&b), Err(ParseError::Type { byte: 0 }));
    b[0] = TYPE_SPHERICAL;
    assert_eq!(parse(&b), Err(ParseError::Version { byte: 0 }));
    b[1] = VERSION;
    assert_eq!(parse(&b), Err(ParseError::Day { day: 0 }));
}

#[test]
fn reasons_index_their_counters() {
    for (i, r) in RejectReason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
    }
    let labels: Vec<_> = RejectReason::ALL.iter().map(|r| r.label()).collect();
    assert_eq!(
        labels,
        ["length", "type", "version", "day", "time", "source"]
    );
}

#[test]
fn errors_read_well() {
    assert_eq!(
        ParseError::Type { byte: 0xC3 }.to_string(),
        "message type 0xC3, expected 0xC1 (geocentric) or 0xC2 (spherical)"
    );
    assert_eq!(
        ParseError::Length { len: 36 }.to_string(),
        "length 36 bytes, a TSPI v4 datagram is exactly 37"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn encode_then_parse_round_trips(f in arb_frame()) {
        let wire = f.encode();
        prop_assert_eq!(parse(&wire), Ok(f));
        // And the other way: the bytes survive a parse and re-encode.
        prop_assert_eq!(parse(&wire).unwrap().encode(), wire);
    }

    #[test]
    fn parse_any_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..80)) {
        match parse(&b) {
            Ok(f) => prop_assert_eq!(f.encode().to_vec(), b),
            Err(ParseError::Length { len }) => prop_assert!(len != DATAGRAM_LEN),
            Err(_) => prop_assert_eq!(b.len(), DATAGRAM_LEN),
        }
    }

    #[test]
    fn parse_valid_header_random_body(mut b in any::<[u8; 37]>(), geo in any::<bool>()) {
        // Force a valid header so the payload paths are exercised often.
        b[0] = if geo { TYPE_GEOCENTRIC } else { TYPE_SPHERICAL };
        b[1] = VERSION;
        let day = u16::from_be_bytes([b[4], b[5]]) % DAY_MAX + 1;
        b[4..6].copy_from_slice(&day.to_be_bytes());
        let ticks = u32::from_be_bytes([b[6], b[7], b[8], b[9]]) % TIME_TICKS_END;
        b[6..10].copy_from_slice(&ticks.to_be_bytes());
        let f = parse(&b).unwrap();
        prop_assert_eq!(f.encode(), b);
        prop_assert_eq!(f.time_s(), f64::from(ticks) / 10000.0);
        let combined = u32::from(b[10]) | u32::from(u16::from_be_bytes([b[11], b[12]])) << 8;
        for (i, v) in f.validity().iter().enumerate() {
            prop_assert_eq!(*v, combined >> i & 1 == 1);
        }
    }
}
