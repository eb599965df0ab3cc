//! Pure: the operator bodies of CONTRACT §5 (tags, display commands) and
//! their timestamps: one decoder each, used by every stage that reads them
//! (the archive's rows, the replay's re-emission of tags), so a body means
//! one thing everywhere.
//!
//! **Timestamps** (`ts`, `updated_ts`): §5 does not say the unit, so this is
//! the one meaning: a number is **seconds** since the Unix epoch (an integer,
//! or a float with a fraction), text is RFC 3339 with any offset. A number is
//! never read as milliseconds: the contract names its one millisecond field
//! (`recv_epoch_ms`), and guessing by size would make some seconds (years
//! 5138..=9999) mean a 1970s moment. A time outside 1900..=9999 is refused
//! with a reason; one that would fit as milliseconds says so.

use super::rfc3339::parse_rfc3339_ns;

/// Why an operator body was not read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BodyError {
    #[error("body is not the contract's CBOR map: {0}")]
    Cbor(String),
    #[error("{field}: {why}")]
    Field { field: &'static str, why: String },
}

/// A CBOR map with text keys, as `(key, value)` pairs in body order.
type Map = Vec<(String, ciborium::Value)>;

fn cbor_map(body: &[u8]) -> Result<Map, BodyError> {
    let v: ciborium::Value =
        ciborium::from_reader(body).map_err(|e| BodyError::Cbor(e.to_string()))?;
    let ciborium::Value::Map(entries) = v else {
        return Err(BodyError::Cbor("top level is not a map".into()));
    };
    entries
        .into_iter()
        .map(|(k, v)| match k {
            ciborium::Value::Text(k) => Ok((k, v)),
            other => Err(BodyError::Cbor(format!("non-text key {other:?}"))),
        })
        .collect()
}

fn take(map: &mut Map, key: &str) -> Option<ciborium::Value> {
    let i = map.iter().position(|(k, _)| k == key)?;
    Some(map.swap_remove(i).1)
}

fn text(
    field: &'static str,
    v: Option<ciborium::Value>,
    required: bool,
) -> Result<Option<String>, BodyError> {
    match v {
        None | Some(ciborium::Value::Null) if !required => Ok(None),
        None | Some(ciborium::Value::Null) => Err(BodyError::Field {
            field,
            why: "missing".into(),
        }),
        Some(ciborium::Value::Text(s)) => Ok(Some(s)),
        Some(other) => Err(BodyError::Field {
            field,
            why: format!("expected text, found {}", kind(&other)),
        }),
    }
}

/// `status` of a tag: text as is; a number or boolean as its JSON text.
fn status_text(v: Option<ciborium::Value>) -> Result<Option<String>, BodyError> {
    match v {
        None | Some(ciborium::Value::Null) => Ok(None),
        Some(ciborium::Value::Text(s)) => Ok(Some(s)),
        Some(
            v
            @ (ciborium::Value::Integer(_) | ciborium::Value::Float(_) | ciborium::Value::Bool(_)),
        ) => Ok(Some(to_json(&v).to_string())),
        Some(other) => Err(BodyError::Field {
            field: "status",
            why: format!("expected text, found {}", kind(&other)),
        }),
    }
}

fn kind(v: &ciborium::Value) -> &'static str {
    use ciborium::Value as V;
    match v {
        V::Integer(_) => "an integer",
        V::Bytes(_) => "bytes",
        V::Float(_) => "a float",
        V::Text(_) => "text",
        V::Bool(_) => "a boolean",
        V::Null => "null",
        V::Tag(..) => "a tagged item",
        V::Array(_) => "an array",
        V::Map(_) => "a map",
        _ => "an unknown item",
    }
}

/// Earliest and latest accepted timestamps: 1900-01-01 and 9999-12-31
/// (well inside PostgreSQL's timestamptz range).
pub const TS_UNIX_US_MIN: i64 = -2_208_988_800_000_000;
pub const TS_UNIX_US_MAX: i64 = 253_402_214_400_000_000;

/// A §5 timestamp as µs since the Unix epoch (see the module note for the
/// one meaning); anything else is an error that says why.
pub fn timestamp_us(field: &'static str, v: Option<ciborium::Value>) -> Result<i64, BodyError> {
    let bad = |why: String| BodyError::Field { field, why };
    let range = |us: i64| (TS_UNIX_US_MIN..=TS_UNIX_US_MAX).contains(&us);
    let us = match v {
        None | Some(ciborium::Value::Null) => return Err(bad("missing".into())),
        Some(ciborium::Value::Integer(i)) => {
            let s = i128::from(i);
            match s
                .checked_mul(1_000_000)
                .and_then(|us| i64::try_from(us).ok())
            {
                Some(us) if range(us) => us,
                _ => {
                    let hint = if i64::try_from(s.saturating_mul(1_000)).is_ok_and(range) {
                        " (it looks like milliseconds: send seconds, or RFC 3339 text)"
                    } else {
                        ""
                    };
                    return Err(bad(format!(
                        "{s} epoch seconds is outside 1900..=9999{hint}"
                    )));
                }
            }
        }
        Some(ciborium::Value::Float(f)) => {
            if !f.is_finite() {
                return Err(bad(format!("{f} is not a time")));
            }
            let us = (f * 1e6).round();
            if us.abs() > 9.0e18 {
                return Err(bad(format!("{f} epoch seconds is out of range")));
            }
            us as i64
        }
        Some(ciborium::Value::Text(s)) => match parse_rfc3339_ns(&s) {
            Ok(ns) => i64::try_from(ns.div_euclid(1000))
                .map_err(|_| bad(format!("{s:?} is out of range")))?,
            Err(_) => {
                return Err(bad(format!(
                    "{s:?} is neither epoch seconds nor RFC 3339 text (e.g. 2024-05-01T12:00:00Z)"
                )));
            }
        },
        Some(other) => {
            return Err(bad(format!(
                "expected epoch seconds or RFC 3339 text, found {}",
                kind(&other)
            )));
        }
    };
    if !range(us) {
        return Err(bad(format!("{us} µs since 1970 is outside 1900..=9999")));
    }
    Ok(us)
}

/// CBOR to JSON for `jsonb` columns: byte strings become base64 text, tags
/// are dropped (their content kept), non-finite floats become null.
pub fn to_json(v: &ciborium::Value) -> serde_json::Value {
    use base64::Engine as _;
    use ciborium::Value as V;
    use serde_json::Value as J;
    match v {
        V::Integer(i) => {
            let n = i128::from(*i);
            if let Ok(n) = i64::try_from(n) {
                J::from(n)
            } else if let Ok(n) = u64::try_from(n) {
                J::from(n)
            } else {
                J::String(n.to_string())
            }
        }
        V::Bytes(b) => J::String(base64::engine::general_purpose::STANDARD.encode(b)),
        V::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        V::Text(s) => J::String(s.clone()),
        V::Bool(b) => J::Bool(*b),
        V::Null => J::Null,
        V::Tag(_, inner) => to_json(inner),
        V::Array(a) => J::Array(a.iter().map(to_json).collect()),
        V::Map(m) => J::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        V::Text(s) => s.clone(),
                        other => to_json(other).to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        _ => J::Null,
    }
}

/// A tag on `tags.broadcast`: `{id, ts, label, status, updated_ts, creator?,
/// notes?, extra?}`. Keys beyond these are ignored here (stages that keep
/// the body keep them).
#[derive(Clone, Debug, PartialEq)]
pub struct TagBody {
    pub id: String,
    pub ts_unix_us: i64,
    pub label: String,
    pub status: Option<String>,
    pub updated_unix_us: i64,
    pub creator: Option<String>,
    pub notes: Option<String>,
    /// JSON text of `extra`, if present.
    pub extra_json: Option<String>,
}

/// The one tag decoder.
pub fn decode_tag(body: &[u8]) -> Result<TagBody, BodyError> {
    let mut m = cbor_map(body)?;
    let id = text("id", take(&mut m, "id"), true)?.unwrap_or_default();
    if id.is_empty() {
        return Err(BodyError::Field {
            field: "id",
            why: "empty".into(),
        });
    }
    Ok(TagBody {
        id,
        ts_unix_us: timestamp_us("ts", take(&mut m, "ts"))?,
        label: text("label", take(&mut m, "label"), true)?.unwrap_or_default(),
        status: status_text(take(&mut m, "status"))?,
        updated_unix_us: timestamp_us("updated_ts", take(&mut m, "updated_ts"))?,
        creator: text("creator", take(&mut m, "creator"), false)?,
        notes: text("notes", take(&mut m, "notes"), false)?,
        extra_json: take(&mut m, "extra")
            .filter(|v| !v.is_null())
            .map(|v| to_json(&v).to_string()),
    })
}

/// A display command on `tspi.cmd.display.<name>`: `{cmd_id, name, ts,
/// sender, payload}`.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandBody {
    pub cmd_id: String,
    pub name: String,
    pub ts_unix_us: i64,
    pub sender: Option<String>,
    /// JSON text of `payload` (`null` if absent).
    pub payload_json: String,
}

/// The one display-command decoder.
pub fn decode_command(body: &[u8]) -> Result<CommandBody, BodyError> {
    let mut m = cbor_map(body)?;
    let cmd_id = text("cmd_id", take(&mut m, "cmd_id"), true)?.unwrap_or_default();
    if cmd_id.is_empty() {
        return Err(BodyError::Field {
            field: "cmd_id",
            why: "empty".into(),
        });
    }
    Ok(CommandBody {
        cmd_id,
        name: text("name", take(&mut m, "name"), true)?.unwrap_or_default(),
        ts_unix_us: timestamp_us("ts", take(&mut m, "ts"))?,
        sender: text("sender", take(&mut m, "sender"), false)?,
        payload_json: take(&mut m, "payload")
            .map_or(serde_json::Value::Null, |v| to_json(&v))
            .to_string(),
    })
}

/// A CBOR map with text keys in the order given; `None` values left out.
fn encode_map(entries: Vec<(&str, Option<ciborium::Value>)>) -> Vec<u8> {
    let map = ciborium::Value::Map(
        entries
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (ciborium::Value::Text(k.to_owned()), v)))
            .collect(),
    );
    let mut out = Vec::with_capacity(128);
    // A map of text, numbers and maps always encodes into a Vec.
    ciborium::into_writer(&map, &mut out).expect("CBOR into a Vec");
    out
}

/// The display-command body `{cmd_id, name, ts, sender, payload}` that
/// [`decode_command`] reads (`ts` RFC 3339 text, e.g. from
/// `RecvTime::iso`).
pub fn encode_command(
    cmd_id: &str,
    name: &str,
    ts: &str,
    sender: &str,
    payload: ciborium::Value,
) -> Vec<u8> {
    use ciborium::Value as V;
    encode_map(vec![
        ("cmd_id", Some(V::Text(cmd_id.into()))),
        ("name", Some(V::Text(name.into()))),
        ("ts", Some(V::Text(ts.into()))),
        ("sender", Some(V::Text(sender.into()))),
        ("payload", Some(payload)),
    ])
}

/// A tag to send: `ts` and `updated_ts` as RFC 3339 text (the form the
/// range toolkit sends and [`decode_tag`] reads).
#[derive(Clone, Debug, PartialEq)]
pub struct NewTag {
    pub id: String,
    pub ts: String,
    pub label: String,
    pub status: String,
    pub updated_ts: String,
    pub creator: Option<String>,
    pub notes: Option<String>,
    pub extra: Option<ciborium::Value>,
}

/// The tag body `{id, ts, label, status, updated_ts, creator?, notes?,
/// extra?}`, in that order, absent options left out.
pub fn encode_tag(t: &NewTag) -> Vec<u8> {
    use ciborium::Value as V;
    encode_map(vec![
        ("id", Some(V::Text(t.id.clone()))),
        ("ts", Some(V::Text(t.ts.clone()))),
        ("label", Some(V::Text(t.label.clone()))),
        ("status", Some(V::Text(t.status.clone()))),
        ("updated_ts", Some(V::Text(t.updated_ts.clone()))),
        ("creator", t.creator.clone().map(V::Text)),
        ("notes", t.notes.clone().map(V::Text)),
        ("extra", t.extra.clone()),
    ])
}

/// Any other operator message (control, status): the body as JSON when it
/// is CBOR, else none.
pub fn event_json(body: &[u8]) -> Option<String> {
    let v: ciborium::Value = ciborium::from_reader(body).ok()?;
    Some(to_json(&v).to_string())
}

#[cfg(test)]
mod encode_tests {
    use super::*;

    #[test]
    fn encoded_tags_and_commands_read_back_with_the_one_decoder() {
        let t = NewTag {
            id: "tag-1".into(),
            ts: "2026-04-30T14:05:00.250000+00:00".into(),
            label: "merge".into(),
            status: "active".into(),
            updated_ts: "2026-04-30T14:06:00+00:00".into(),
            creator: None,
            notes: Some("two ship".into()),
            extra: None,
        };
        let body = encode_tag(&t);
        let d = decode_tag(&body).unwrap();
        assert_eq!(d.id, "tag-1");
        assert_eq!(d.ts_unix_us, 1_777_557_900_250_000);
        assert_eq!(d.updated_unix_us, 1_777_557_960_000_000);
        assert_eq!(d.notes.as_deref(), Some("two ship"));
        assert_eq!((d.creator, d.extra_json), (None, None));
        let v: ciborium::Value = ciborium::from_reader(body.as_slice()).unwrap();
        let keys: Vec<_> = v
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_text().unwrap().to_owned())
            .collect();
        assert_eq!(keys, ["id", "ts", "label", "status", "updated_ts", "notes"]);

        let c = encode_command(
            "c1",
            "units",
            "2026-04-30T14:05:00+00:00",
            "op",
            ciborium::Value::Text("metric".into()),
        );
        let d = decode_command(&c).unwrap();
        assert_eq!((d.cmd_id.as_str(), d.name.as_str()), ("c1", "units"));
        assert_eq!(d.sender.as_deref(), Some("op"));
        assert_eq!(d.payload_json, "\"metric\"");
    }
}
