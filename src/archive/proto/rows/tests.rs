use super::*;
use crate::codec::vectors;
use crate::message::{Message, RecvTime};
use ciborium::Value;
use proptest::prelude::*;

pub(super) use crate::codec::tests::arb;

const RECV: RecvTime = RecvTime::from_unix_ns(1_700_000_000_123_400_000);

/// What the body can carry of `status_flags`: bit 0.
fn carried(mut f: Frame) -> Frame {
    f.status_flags &= 1;
    f
}

fn body(f: &Frame, recv: RecvTime) -> Vec<u8> {
    Message::encode("tspi", f, recv).body
}

#[test]
fn contract_vectors_come_back_exactly() {
    for hex in [
        vectors::GEOCENTRIC_1,
        vectors::SPHERICAL_2,
        vectors::GEOCENTRIC_3,
        vectors::SPHERICAL_4,
    ] {
        let wire = vectors::bytes(hex);
        let f = codec::parse(&wire).unwrap();
        let m = Message::encode("tspi", &f, RECV);
        let row = decode_telemetry(&m.body, Some(&m.subject)).unwrap();
        assert_eq!(row.recv_unix_us, 1_700_000_000_123_400);
        assert_eq!(row.recv_epoch_ms, 1_700_000_000_123);
        assert_eq!(row.frame, carried(f));
        if f.status_flags <= 1 {
            assert_eq!(row.frame.encode().to_vec(), wire, "raw is the datagram");
        } else {
            // Vectors 2 (status_flags 0x0007) and 3 (0xFF00): bits 1..=15
            // of status_flags are in no body; only they differ.
            let raw = row.frame.encode();
            assert_eq!(raw[..11], wire[..11]);
            assert_eq!(u16::from_be_bytes([raw[11], raw[12]]), f.status_flags & 1);
            assert_eq!(raw[13..], wire[13..]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Encode (codec, message), decode (archive): the frame, hence the raw
    /// datagram and every value, comes back bit for bit.
    #[test]
    fn every_frame_round_trips(f in arb::arb_frame(), ns in 0u64..4_102_444_800_000_000_000) {
        let recv = RecvTime::from_unix_ns(ns);
        let row = decode_telemetry(&body(&f, recv), None).unwrap();
        let want = carried(f);
        prop_assert_eq!(row.frame, want);
        prop_assert_eq!(row.frame.encode(), want.encode());
        prop_assert_eq!(row.recv_unix_us, recv.epoch_us() as i64);
        prop_assert_eq!(row.recv_epoch_ms, recv.epoch_ms() as i64);
        for (a, b) in row.frame.values().iter().zip(f.values()) {
            prop_assert_eq!(a.to_bits(), b.to_bits());
        }
    }

    #[test]
    fn edge_frames_round_trip(f in arb::edge_frame()) {
        let row = decode_telemetry(&body(&f, RECV), None).unwrap();
        prop_assert_eq!(row.frame, carried(f));
    }

    /// Arbitrary bytes never panic; they decode or are rejected.
    #[test]
    fn garbage_is_rejected_not_panicked(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode_telemetry(&bytes, Some("tspi.geocentric.1"));
        let _ = decode_tag(&bytes);
        let _ = decode_command(&bytes);
    }
}

fn record(f: &Frame) -> Record {
    Record::new(f, RECV)
}

fn cbor_of<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

#[test]
fn values_that_no_datagram_makes_are_rejected() {
    let f = codec::parse(&vectors::bytes(vectors::GEOCENTRIC_1)).unwrap();
    let mut r = record(&f);
    if let PayloadValues::Geocentric(g) = &mut r.payload {
        g.x_m = 5123.255; // not a multiple of 0.01
    }
    let e = decode_telemetry(&cbor_of(&r), None).unwrap_err();
    assert_eq!(e.label(), "value");
    assert!(e.to_string().contains("x_m"), "{e}");

    let mut r = record(&f);
    if let PayloadValues::Geocentric(g) = &mut r.payload {
        g.vx_mps = 400.0; // beyond i16 / 100
    }
    assert!(
        decode_telemetry(&cbor_of(&r), None)
            .unwrap_err()
            .to_string()
            .contains("range")
    );

    let mut r = record(&f);
    r.time_s = 1.53401;
    assert!(
        decode_telemetry(&cbor_of(&r), None)
            .unwrap_err()
            .to_string()
            .contains("time_s")
    );

    let mut r = record(&f);
    r.status = 3; // flags say 0xFF
    assert_eq!(
        decode_telemetry(&cbor_of(&r), None).unwrap_err().label(),
        "status"
    );

    let mut r = record(&f);
    r.day = 0;
    assert_eq!(
        decode_telemetry(&cbor_of(&r), None).unwrap_err().label(),
        "datagram"
    );

    let mut r = record(&f);
    r.frame_type = "spherical".into(); // geocentric payload
    assert_eq!(
        decode_telemetry(&cbor_of(&r), None).unwrap_err().label(),
        "payload_type"
    );

    let mut r = record(&f);
    r.frame_type = "polar".into();
    assert_eq!(
        decode_telemetry(&cbor_of(&r), None).unwrap_err().label(),
        "type"
    );

    let mut r = record(&f);
    r.recv_iso = "14/11/2023".into();
    assert_eq!(
        decode_telemetry(&cbor_of(&r), None).unwrap_err().label(),
        "recv_iso"
    );

    let good = cbor_of(&record(&f));
    assert_eq!(
        decode_telemetry(&good, Some("tspi.geocentric.502"))
            .unwrap_err()
            .label(),
        "subject"
    );
    assert!(decode_telemetry(&good, Some("range7.geocentric.501")).is_ok());
    assert_eq!(decode_telemetry(b"\xa0", None).unwrap_err().label(), "cbor");
}

#[test]
fn non_finite_values_are_rejected() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(wire_int("x_m", bad, 100.0, -10, 10).is_err());
    }
    assert_eq!(wire_int("x_m", -0.01, 100.0, -10, 10), Ok(-1));
}

fn map(entries: Vec<(&str, Value)>) -> Vec<u8> {
    cbor_of(&Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::Text(k.into()), v))
            .collect(),
    ))
}

#[test]
fn timestamps_epoch_seconds_or_rfc3339() {
    let t = |v: Value| timestamp_us("ts", Some(v));
    assert_eq!(
        t(Value::Integer(1_700_000_000.into())),
        Ok(1_700_000_000_000_000)
    );
    assert_eq!(t(Value::Float(1_700_000_000.25)), Ok(1_700_000_000_250_000));
    assert_eq!(t(Value::Integer((-1).into())), Ok(-1_000_000));
    assert_eq!(
        t(Value::Text("2023-11-14T22:13:20.123456Z".into())),
        Ok(1_700_000_000_123_456)
    );
    assert_eq!(
        t(Value::Text("2023-11-15T00:13:20+02:00".into())),
        Ok(1_700_000_000_000_000)
    );
    for bad in [
        Value::Text("yesterday".into()),
        Value::Text("2023-11-14".into()),
        Value::Bool(true),
        Value::Float(f64::NAN),
        Value::Integer(i64::MAX.into()),
        Value::Float(1e300),
        Value::Null,
    ] {
        let e = t(bad.clone()).unwrap_err();
        assert!(e.to_string().starts_with("ts: "), "{bad:?}: {e}");
    }
    assert!(
        timestamp_us("ts", None)
            .unwrap_err()
            .to_string()
            .contains("missing")
    );
    // 9999-12-31 is fine, year 10000 is not.
    assert!(t(Value::Integer(253_402_214_399i64.into())).is_ok());
    assert!(t(Value::Integer(253_402_300_800i64.into())).is_err());
}

#[test]
fn tags_and_commands() {
    let tag = decode_tag(&map(vec![
        ("id", Value::Text("t1".into())),
        ("ts", Value::Integer(100.into())),
        ("label", Value::Text("Launch".into())),
        ("status", Value::Integer(2.into())),
        ("updated_ts", Value::Text("1970-01-01T00:01:41Z".into())),
        ("notes", Value::Null),
        (
            "extra",
            Value::Array(vec![Value::Bytes(vec![1, 2]), Value::Float(0.5)]),
        ),
        ("future_key", Value::Bool(true)),
    ]))
    .unwrap();
    assert_eq!(
        tag,
        TagBody {
            id: "t1".into(),
            ts_unix_us: 100_000_000,
            label: "Launch".into(),
            status: Some("2".into()),
            updated_unix_us: 101_000_000,
            creator: None,
            notes: None,
            extra_json: Some(r#"["AQI=",0.5]"#.into()),
        }
    );
    let missing = decode_tag(&map(vec![("id", Value::Text("t".into()))])).unwrap_err();
    assert_eq!(missing.to_string(), "ts: missing");
    let empty = decode_tag(&map(vec![("id", Value::Text("".into()))])).unwrap_err();
    assert_eq!(empty.to_string(), "id: empty");
    let typed = decode_tag(&map(vec![
        ("id", Value::Text("t".into())),
        ("ts", Value::Integer(1.into())),
        ("label", Value::Integer(1.into())),
    ]))
    .unwrap_err();
    assert_eq!(typed.to_string(), "label: expected text, found an integer");
    assert_eq!(
        Reject::from(decode_tag(&cbor_of(&Value::Array(vec![]))).unwrap_err()).label(),
        "cbor"
    );

    let cmd = decode_command(&map(vec![
        ("cmd_id", Value::Text("c1".into())),
        ("name", Value::Text("marker_color".into())),
        ("ts", Value::Float(1.5)),
        ("sender", Value::Text("op".into())),
        ("payload", Value::Text("#ff0000".into())),
    ]))
    .unwrap();
    assert_eq!(cmd.ts_unix_us, 1_500_000);
    assert_eq!(cmd.payload_json, r##""#ff0000""##);
    assert_eq!(cmd.sender.as_deref(), Some("op"));
    assert!(decode_command(&map(vec![("name", Value::Text("x".into()))])).is_err());

    assert_eq!(ops_kind("tags.broadcast"), OpsKind::Tag);
    assert_eq!(ops_kind("tspi.cmd.display.units"), OpsKind::Command);
    assert_eq!(ops_kind("tspi.cmd.other"), OpsKind::Event);
    assert_eq!(ops_kind("tspi.ops.status"), OpsKind::Event);
    assert_eq!(event_json(b"not cbor \xff"), None);
    assert_eq!(
        event_json(&map(vec![("a", Value::Integer(1.into()))])).as_deref(),
        Some(r#"{"a":1}"#)
    );
}

#[test]
fn day_index_is_utc_day() {
    let f = codec::parse(&vectors::bytes(vectors::GEOCENTRIC_1)).unwrap();
    let row = |us| TelemetryRow {
        recv_unix_us: us,
        recv_epoch_ms: 0,
        frame: f,
    };
    assert_eq!(row(0).day_index(), 0);
    assert_eq!(row(DAY_US - 1).day_index(), 0);
    assert_eq!(row(DAY_US).day_index(), 1);
    assert_eq!(row(-1).day_index(), -1);
}
