//! The JSON record validates against `schema/tspi.schema.json`, and the
//! schema rejects what the contract forbids.

use proptest::prelude::*;
use serde_json::{Value, json};
use tspi::codec::{self, Frame, vectors};
use tspi::message::{Record, RecvTime};
use tspi_testkit::arb::{arb_frame, edge_frame};

fn schema() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/tspi.schema.json"
    ))
    .expect("schema file");
    serde_json::from_str(&text).expect("schema is JSON")
}

fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::new(&schema()).expect("schema compiles")
}

fn record_json(f: &Frame, recv: RecvTime) -> Value {
    serde_json::from_str(&Record::new(f, recv).to_json()).unwrap()
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance).map(|e| e.to_string()).collect()
}

#[test]
fn every_object_level_forbids_additional_properties() {
    fn walk(v: &Value, path: &str, bad: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if m.get("type") == Some(&json!("object"))
                    && m.get("additionalProperties") != Some(&json!(false))
                {
                    bad.push(path.to_owned());
                }
                for (k, child) in m {
                    walk(child, &format!("{path}/{k}"), bad);
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    walk(child, &format!("{path}/{i}"), bad);
                }
            }
            _ => {}
        }
    }
    let mut bad = Vec::new();
    walk(&schema(), "#", &mut bad);
    assert!(
        bad.is_empty(),
        "object schemas without additionalProperties: false: {bad:?}"
    );
}

#[test]
fn contract_vectors_validate() {
    let v = validator();
    for hex in vectors::ACCEPTED {
        let f = codec::parse(&vectors::bytes(hex)).unwrap();
        let rec = record_json(&f, RecvTime::from_unix_ns(vectors::RECV_EXAMPLE_UNIX_NS));
        assert_eq!(errors(&v, &rec), Vec::<String>::new(), "{hex}");
    }
}

/// A whole-second receive time has no fraction (CONTRACT §2, as the
/// toolkit's `datetime.isoformat()` writes it); the six-zero form still
/// validates, since readers accept both.
#[test]
fn whole_second_recv_iso_validates_in_both_forms() {
    let v = validator();
    let f = codec::parse(&vectors::bytes(vectors::GEOCENTRIC_1)).unwrap();
    let mut rec = record_json(&f, RecvTime::from_unix_ns(vectors::RECV_WHOLE_UNIX_NS));
    assert_eq!(rec["recv_iso"], json!(vectors::RECV_WHOLE_ISO));
    assert_eq!(errors(&v, &rec), Vec::<String>::new());
    rec["recv_iso"] = json!("2023-11-14T22:13:20.000000+00:00");
    assert_eq!(errors(&v, &rec), Vec::<String>::new());
}

#[test]
fn schema_rejects_what_the_contract_forbids() {
    let v = validator();
    let f = codec::parse(&vectors::bytes(vectors::GEOCENTRIC_1)).unwrap();
    let good = record_json(&f, RecvTime::from_unix_ns(vectors::RECV_EXAMPLE_UNIX_NS));
    type Mutation = Box<dyn Fn(&mut Value)>;
    let mutations: Vec<(&str, Mutation)> = vec![
        (
            "extra top-level key",
            Box::new(|r| {
                r["extra"] = json!(1);
            }),
        ),
        (
            "extra flag",
            Box::new(|r| {
                r["status_flags"]["extra_valid"] = json!(true);
            }),
        ),
        (
            "extra payload value",
            Box::new(|r| {
                r["payload"]["w_m"] = json!(1.0);
            }),
        ),
        (
            "missing key",
            Box::new(|r| {
                r.as_object_mut().unwrap().remove("recv_iso");
            }),
        ),
        (
            "missing flag",
            Box::new(|r| {
                r["status_flags"]
                    .as_object_mut()
                    .unwrap()
                    .remove("position_x_valid");
            }),
        ),
        (
            "unknown type",
            Box::new(|r| {
                r["type"] = json!("polar");
            }),
        ),
        (
            "day 0",
            Box::new(|r| {
                r["day"] = json!(0);
            }),
        ),
        (
            "day 367",
            Box::new(|r| {
                r["day"] = json!(367);
            }),
        ),
        (
            "status 256",
            Box::new(|r| {
                r["status"] = json!(256);
            }),
        ),
        (
            "sensor as text",
            Box::new(|r| {
                r["sensor_id"] = json!("501");
            }),
        ),
        (
            "iso with milliseconds only",
            Box::new(|r| {
                r["recv_iso"] = json!("2023-11-14T22:13:20.123+00:00");
            }),
        ),
        (
            "iso in another zone",
            Box::new(|r| {
                r["recv_iso"] = json!("2023-11-14T22:13:20Z");
            }),
        ),
        (
            "x out of i32/100",
            Box::new(|r| {
                r["payload"]["x_m"] = json!(21474836.48);
            }),
        ),
        (
            "spherical payload on geocentric",
            Box::new(|r| {
                r["payload"] = json!({
                    "range_m": 1.0, "azimuth_deg": 1.0, "elevation_deg": 1.0,
                    "azimuth_rate_dps": 0.0, "elevation_rate_dps": 0.0, "range_rate_mps": 0.0,
                    "azimuth_accel_dps2": 0.0, "elevation_accel_dps2": 0.0, "range_accel_mps2": 0.0
                });
            }),
        ),
    ];
    assert!(v.is_valid(&good));
    for (what, mutate) in mutations {
        let mut r = good.clone();
        mutate(&mut r);
        assert!(!v.is_valid(&r), "schema accepted: {what}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encoded_records_validate(f in arb_frame(), ns in 0u64..4_102_444_800_000_000_000) {
        let v = validator();
        let rec = record_json(&f, RecvTime::from_unix_ns(ns));
        prop_assert_eq!(errors(&v, &rec), Vec::<String>::new());
    }

    #[test]
    fn edge_records_validate(f in edge_frame()) {
        let v = validator();
        let rec = record_json(&f, RecvTime::from_unix_ns(0));
        prop_assert_eq!(errors(&v, &rec), Vec::<String>::new());
    }
}
