use super::*;
use crate::codec::tests::arb_frame;
use crate::codec::vectors::{self, RECV_EXAMPLE_UNIX_NS};
use crate::codec::{Frame, parse};
use proptest::prelude::*;

fn frame(hex: &str) -> Frame {
    parse(&vectors::bytes(hex)).unwrap()
}

fn ids(f: &Frame) -> (String, String) {
    let (mut s, mut i) = (String::new(), String::new());
    write_subject(DEFAULT_PREFIX, f, &mut s);
    write_msg_id(f, &mut i);
    (s, i)
}

#[test]
fn contract_subjects_and_ids() {
    let want = [
        ("tspi.geocentric.501", "501:123:1.5340"),
        ("tspi.spherical.2048", "2048:42:92.3400"),
        ("tspi.geocentric.65535", "65535:366:86399.9999"),
        ("tspi.spherical.0", "0:1:0.0001"),
    ];
    for (hex, (subject, id)) in vectors::ACCEPTED.iter().zip(want) {
        assert_eq!(ids(&frame(hex)), (subject.to_owned(), id.to_owned()));
    }
}

#[test]
fn msg_id_uses_integer_ticks() {
    let mut f = frame(vectors::GEOCENTRIC_1);
    // 0.1 + 0.2 style float trouble cannot happen: every tick renders exactly.
    for (ticks, want) in [
        (0, "501:123:0.0000"),
        (3, "501:123:0.0003"),
        (864_009_999, "501:123:86400.9999"),
        (12_345_678, "501:123:1234.5678"),
    ] {
        f.time_ticks = ticks;
        assert_eq!(ids(&f).1, want);
    }
    let (mut s, mut i) = (String::from("x"), String::from("y"));
    write_subject("range7.tspi", &f, &mut s);
    write_msg_id(&f, &mut i);
    assert_eq!(s, "xrange7.tspi.geocentric.501", "appends to what is there");
    assert_eq!(i, "y501:123:1234.5678");
}

#[test]
fn contract_receive_time_rendering() {
    let t = RecvTime::from_unix_ns(RECV_EXAMPLE_UNIX_NS);
    assert_eq!(t.epoch_ms(), 1_700_000_000_123);
    assert_eq!(t.iso().as_str(), vectors::RECV_EXAMPLE_ISO);
    // A zero microsecond part has no fraction, as the toolkit writes it.
    let whole = RecvTime::from_unix_ns(vectors::RECV_WHOLE_UNIX_NS);
    assert_eq!(whole.epoch_ms(), 1_700_000_000_000);
    assert_eq!(whole.iso().as_str(), vectors::RECV_WHOLE_ISO);
    assert_eq!(whole.iso().len(), ISO_LEN_WHOLE);
    // Sub-microsecond rounding down to a whole second drops the fraction;
    // one microsecond past keeps all six digits.
    assert_eq!(
        RecvTime::from_unix_ns(1_700_000_000_000_000_499)
            .iso()
            .as_str(),
        "2023-11-14T22:13:20+00:00"
    );
    assert_eq!(
        RecvTime::from_unix_ns(1_700_000_000_000_001_000)
            .iso()
            .as_str(),
        "2023-11-14T22:13:20.000001+00:00"
    );
}

#[test]
fn receive_time_rounds_half_even() {
    let ms = |ns: u64| RecvTime::from_unix_ns(ns).epoch_ms();
    assert_eq!(ms(1_499_999), 1);
    assert_eq!(ms(1_500_000), 2);
    assert_eq!(ms(2_500_000), 2);
    assert_eq!(ms(2_500_001), 3);
    // Microsecond rounding carries into the seconds and the date.
    let t = RecvTime::from_unix_ns(86_400_000_000_000 - 1);
    assert_eq!(t.iso().as_str(), "1970-01-02T00:00:00+00:00");
    assert_eq!(
        RecvTime::from_unix_ns(0).iso().as_str(),
        "1970-01-01T00:00:00+00:00"
    );
}

#[test]
fn calendar_matches_day_counting() {
    // Walk day by day from 1970 to 2200 and compare with the fast formula.
    let mut date = (1970i64, 1u32, 1u32);
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    for z in 0..(230 * 366) {
        assert_eq!(civil_from_days(z), date, "day {z}");
        let len = match date.1 {
            2 if leap(date.0) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        date.2 += 1;
        if date.2 > len {
            date = if date.1 == 12 {
                (date.0 + 1, 1, 1)
            } else {
                (date.0, date.1 + 1, 1)
            };
        }
    }
}

#[test]
fn utc_day_and_ticks() {
    // 2023-11-14T22:13:20.1234Z is day 318 of 2023.
    assert_eq!(
        utc_day_ticks(RECV_EXAMPLE_UNIX_NS),
        (318, 22 * 36_000_000 + 13 * 600_000 + 200_000 + 1_234)
    );
    // 2024-12-31 is day 366 of a leap year; 2025-01-01 is day 1.
    let dec31 = days_from_civil(2024, 12, 31) as u64 * 86_400_000_000_000;
    assert_eq!(utc_day_ticks(dec31), (366, 0));
    assert_eq!(
        utc_day_ticks(dec31 + 86_400_000_000_000 - 1),
        (366, 863_999_999)
    );
    assert_eq!(utc_day_ticks(dec31 + 86_400_000_000_000), (1, 0));
    for z in [0i64, 59, 365, 11_000, 20_000, 80_000] {
        let (y, m, d) = civil_from_days(z);
        assert_eq!(days_from_civil(y, m, d), z);
    }
}

/// A strict reader of exactly the CBOR subset the body may use. It returns
/// the items in order, so key order and float widths are checked, which a
/// general decoder (that widens floats and may reorder maps) cannot show.
#[derive(Debug, PartialEq)]
enum Item {
    Uint(u64),
    Text(String),
    Bool(bool),
    F64(f64),
    Map(Vec<(String, Item)>),
}

fn read_item(b: &[u8], at: &mut usize) -> Item {
    let head = b[*at];
    *at += 1;
    let (major, info) = (head >> 5, head & 31);
    if major == 7 {
        return match head {
            0xF4 => Item::Bool(false),
            0xF5 => Item::Bool(true),
            0xFB => {
                let v = f64::from_bits(u64::from_be_bytes(b[*at..*at + 8].try_into().unwrap()));
                *at += 8;
                Item::F64(v)
            }
            other => panic!("simple/float item 0x{other:02X} is not a float64 or bool"),
        };
    }
    let width = match info {
        0..=23 => 0,
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        _ => panic!("indefinite or reserved length"),
    };
    let mut arg = u64::from(info);
    if width > 0 {
        arg = b[*at..*at + width]
            .iter()
            .fold(0, |a, &x| a << 8 | u64::from(x));
        *at += width;
        // Shortest form only.
        let min_needed = match arg {
            0..=23 => 0,
            24..=0xFF => 1,
            0x100..=0xFFFF => 2,
            0x1_0000..=0xFFFF_FFFF => 4,
            _ => 8,
        };
        assert_eq!(width, min_needed, "non-minimal head for {arg}");
    }
    match major {
        0 => Item::Uint(arg),
        3 => {
            let s = std::str::from_utf8(&b[*at..*at + arg as usize])
                .unwrap()
                .to_owned();
            *at += arg as usize;
            Item::Text(s)
        }
        5 => Item::Map(
            (0..arg)
                .map(|_| match read_item(b, at) {
                    Item::Text(k) => (k, read_item(b, at)),
                    other => panic!("non-text key {other:?}"),
                })
                .collect(),
        ),
        other => panic!("major type {other} not allowed in the body"),
    }
}

fn read_body(b: &[u8]) -> Vec<(String, Item)> {
    let mut at = 0;
    let Item::Map(m) = read_item(b, &mut at) else {
        panic!("body is not a map")
    };
    assert_eq!(at, b.len(), "trailing bytes after the body");
    m
}

fn keys(m: &[(String, Item)]) -> Vec<&str> {
    m.iter().map(|(k, _)| k.as_str()).collect()
}

#[test]
fn body_of_vector_1_exactly() {
    let f = frame(vectors::GEOCENTRIC_1);
    let recv = RecvTime::from_unix_ns(RECV_EXAMPLE_UNIX_NS);
    let msg = Message::encode(DEFAULT_PREFIX, &f, recv);
    let body = read_body(&msg.body);
    assert_eq!(
        keys(&body),
        [
            "type",
            "sensor_id",
            "day",
            "time_s",
            "status",
            "status_flags",
            "recv_epoch_ms",
            "recv_iso",
            "payload"
        ]
    );
    assert_eq!(body[0].1, Item::Text("geocentric".into()));
    assert_eq!(body[1].1, Item::Uint(501));
    assert_eq!(body[2].1, Item::Uint(123));
    assert_eq!(body[3].1, Item::F64(1.534));
    assert_eq!(body[4].1, Item::Uint(255));
    let Item::Map(flags) = &body[5].1 else {
        panic!()
    };
    assert_eq!(keys(flags), crate::codec::VALIDITY_NAMES);
    assert!(flags.iter().all(|(_, v)| *v == Item::Bool(true)));
    assert_eq!(body[6].1, Item::Uint(1_700_000_000_123));
    assert_eq!(
        body[7].1,
        Item::Text("2023-11-14T22:13:20.123400+00:00".into())
    );
    let Item::Map(payload) = &body[8].1 else {
        panic!()
    };
    assert_eq!(keys(payload), crate::codec::GEOCENTRIC_NAMES);
    let vals: Vec<_> = payload
        .iter()
        .map(|(_, v)| match v {
            Item::F64(x) => *x,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        vals,
        [5123.25, -15.5, 1200.0, 12.34, -5.67, 0.0, 0.12, -0.34, 0.56]
    );
    // "about 460 bytes"
    assert_eq!(msg.body.len(), 462);
}

#[test]
fn body_sizes_match_the_contract() {
    let recv = RecvTime::from_unix_ns(RECV_EXAMPLE_UNIX_NS);
    for hex in vectors::ACCEPTED {
        let f = frame(hex);
        let m = Message::encode(DEFAULT_PREFIX, &f, recv);
        let want = match f.frame_type() {
            crate::codec::FrameType::Geocentric => 455..=470,
            crate::codec::FrameType::Spherical => 535..=550,
        };
        assert!(
            want.contains(&m.body.len()),
            "{hex}: {} bytes",
            m.body.len()
        );
        assert!(m.body.len() <= BODY_LEN_MAX);
        assert!(m.msg_id.len() <= MSG_ID_LEN_MAX);
    }
}

#[test]
fn contract_json_of_vector_2() {
    let f = frame(vectors::SPHERICAL_2);
    let json = Record::new(&f, RecvTime::from_unix_ns(RECV_EXAMPLE_UNIX_NS)).to_json();
    assert_eq!(
        json,
        concat!(
            r#"{"type":"spherical","sensor_id":2048,"day":42,"time_s":92.34,"status":14,"#,
            r#""status_flags":{"position_x_valid":false,"position_y_valid":true,"position_z_valid":true,"#,
            r#""velocity_x_valid":true,"velocity_y_valid":false,"velocity_z_valid":false,"#,
            r#""acceleration_x_valid":false,"acceleration_y_valid":false,"acceleration_z_valid":true},"#,
            r#""recv_epoch_ms":1700000000123,"recv_iso":"2023-11-14T22:13:20.123400+00:00","#,
            r#""payload":{"range_m":3800.0,"azimuth_deg":52.123456,"elevation_deg":10.654321,"#,
            r#""azimuth_rate_dps":1.23,"elevation_rate_dps":-4.56,"range_rate_mps":7.89,"#,
            r#""azimuth_accel_dps2":0.12,"elevation_accel_dps2":-0.34,"range_accel_mps2":0.56}}"#
        )
    );
}

fn arb_recv() -> impl Strategy<Value = RecvTime> {
    // 1970 to 2200; whole seconds too, whose `recv_iso` has no fraction.
    prop_oneof![
        (0u64..7_258_118_400_000_000_000).prop_map(RecvTime::from_unix_ns),
        (0u64..7_258_118_400).prop_map(|s| RecvTime::from_unix_ns(s * 1_000_000_000)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// ciborium, an independent decoder, reads our body back into the same
    /// record the JSON form is made of.
    #[test]
    fn cbor_decodes_to_the_json_record(f in arb_frame(), recv in arb_recv()) {
        let msg = Message::encode(DEFAULT_PREFIX, &f, recv);
        let via_cbor: Record = ciborium::from_reader(msg.body.as_slice()).unwrap();
        let direct = Record::new(&f, recv);
        prop_assert_eq!(&via_cbor, &direct);
        // And the JSON text round-trips to the same record.
        let via_json: Record = serde_json::from_str(&direct.to_json()).unwrap();
        prop_assert_eq!(via_json, direct);
        // The strict reader accepts it: shortest heads, float64 only, keys in order.
        let body = read_body(&msg.body);
        prop_assert_eq!(body.len(), 9);
        prop_assert!(msg.body.len() <= BODY_LEN_MAX);
    }

    #[test]
    fn subject_and_id_parse_back(f in arb_frame()) {
        let (s, i) = ids(&f);
        prop_assert_eq!(s, format!("tspi.{}.{}", f.frame_type().name(), f.sensor_id));
        let parts: Vec<&str> = i.split(':').collect();
        prop_assert_eq!(parts.len(), 3);
        prop_assert_eq!(parts[0].parse::<u16>().unwrap(), f.sensor_id);
        prop_assert_eq!(parts[1].parse::<u16>().unwrap(), f.day);
        let (sec, frac) = parts[2].split_once('.').unwrap();
        prop_assert_eq!(frac.len(), 4);
        let ticks = sec.parse::<u32>().unwrap() * 10_000 + frac.parse::<u32>().unwrap();
        prop_assert_eq!(ticks, f.time_ticks);
    }
}
