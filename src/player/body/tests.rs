use super::*;
use crate::codec::{self, vectors};
use crate::message::{Message, RecvTime};

fn body(hex: &str) -> Vec<u8> {
    let f = codec::parse(&vectors::bytes(hex)).unwrap();
    Message::encode(
        "tspi",
        &f,
        RecvTime::from_unix_ns(vectors::RECV_EXAMPLE_UNIX_NS),
    )
    .body
}

fn cbor(v: &serde_json::Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

#[test]
fn contract_vectors_pass() {
    for hex in vectors::ACCEPTED {
        let r = check(&body(hex)).unwrap();
        assert!(r.frame_type == "geocentric" || r.frame_type == "spherical");
    }
}

#[test]
fn what_the_contract_forbids_is_refused_with_its_field() {
    let good: serde_json::Value =
        serde_json::from_str(&check(&body(vectors::GEOCENTRIC_1)).unwrap().to_json()).unwrap();
    type Mutation = fn(&mut serde_json::Value);
    let cases: [(&str, Mutation); 11] = [
        // CBOR item types JSON cannot tell apart (see the module note).
        ("time_s", |r| r["time_s"] = 5.into()),
        ("payload", |r| r["payload"]["x_m"] = (-1).into()),
        ("decode", |r| r["day"] = 5.0.into()),
        ("day", |r| r["day"] = 0.into()),
        ("time_s", |r| r["time_s"] = 86_401.0.into()),
        ("recv_iso", |r| {
            r["recv_iso"] = "2023-11-14T22:13:20Z".into()
        }),
        ("type", |r| r["type"] = "polar".into()),
        ("vx_mps", |r| r["payload"]["vx_mps"] = 327.68.into()),
        ("payload", |r| {
            r["type"] = "spherical".into();
        }),
        ("decode", |r| r["extra"] = 1.into()),
        ("decode", |r| r["sensor_id"] = 65_536.into()),
    ];
    for (want, mutate) in cases {
        let mut r = good.clone();
        mutate(&mut r);
        let e = check(&cbor(&r)).unwrap_err();
        let got = match &e {
            BodyError::Decode(_) => "decode",
            BodyError::Field { field, .. } => field,
        };
        assert_eq!(got, want, "{e}");
    }
    assert!(check(b"\xff\x00junk").is_err());
    assert!(check(b"").is_err());
}

#[test]
fn recv_iso_shapes() {
    assert!(recv_iso_ok("2023-11-14T22:13:20.123400+00:00"));
    assert!(recv_iso_ok("2023-11-14T22:13:20+00:00"));
    for bad in [
        "2023-11-14T22:13:20.1234+00:00",
        "2023-11-14T22:13:20.123400Z",
        "2023-11-14 22:13:20+00:00",
        "2023-11-14T22:13:20+01:00",
        "２023-11-14T22:13:20+00:00",
    ] {
        assert!(!recv_iso_ok(bad), "{bad}");
    }
}
