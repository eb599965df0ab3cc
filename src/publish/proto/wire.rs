//! Fast-ingest batch publish (ADR-50, nats-server 2.14+): the wire format.
//! No I/O; the driver in [`crate::publish`] owns the socket.
//!
//! Wire summary (measured against nats-server 2.15.1):
//! - every message of a batch is a core publish whose reply subject is
//!   `<prefix>.<batch>.<flow>.<gap>.<seq>.<op>.$FI`, where `<prefix>.<batch>`
//!   names the batch, `<flow>` asks for a flow ack every `flow` messages
//!   (the server may lower it, never raise it), `<gap>` is `fail` (the
//!   server ends the batch at the first missing sequence) or `ok`, `<seq>`
//!   counts from 1, and `<op>` is one of [`Op`];
//! - the server answers on subjects under `<prefix>.<batch>.`: JSON flow
//!   acks `{"type":"ack","seq":N,"msgs":F}` (all of `1..=N` persisted or
//!   found duplicate; send flow `F` from now on), gaps, per-message errors,
//!   and after a commit a pub ack `{"stream":..,"seq":S,"batch":..,"count":C}`;
//! - the client keeps at most `flow × outstanding` messages unacknowledged
//!   ([`super::flow::Window::stalled`]).
//!
//! The appliance uses one subscription `<prefix>.>` for all its batches and
//! `gap = fail`: any gap, error or timeout ends the batch, and every message
//! after the last flow ack is published again, with its same `Nats-Msg-Id`,
//! in a fresh batch. The stream's duplicate window makes that exactly-once.

use serde::Deserialize;
use std::fmt::Write as _;

/// The operation a fast-batch message carries (second-to-last reply token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// First message: opens the batch.
    Start = 0,
    /// Any later message.
    Append = 1,
    /// Last message, stored, closes the batch.
    Commit = 2,
    /// Closes the batch; this message itself is not stored.
    CommitEob = 3,
    /// Asks the server to repeat its latest flow ack; not stored.
    Ping = 4,
}

/// Write the reply subject of batch message `seq`.
///
/// ```
/// use tspi::publish::proto::wire::{reply_subject, Op};
/// let mut s = String::new();
/// reply_subject("_FIabc", 7, 100, 1, Op::Start, &mut s);
/// assert_eq!(s, "_FIabc.b7.100.fail.1.0.$FI");
/// ```
pub fn reply_subject(prefix: &str, batch: u64, flow: u16, seq: u64, op: Op, out: &mut String) {
    out.clear();
    // Writing to a String cannot fail.
    let _ = write!(out, "{prefix}.b{batch}.{flow}.fail.{seq}.{}.$FI", op as u8);
}

/// The batch a server reply belongs to: the second token of its subject
/// (`b<n>`), if the subject is one of ours.
///
/// ```
/// use tspi::publish::proto::wire::batch_of;
/// assert_eq!(batch_of("_FIabc", "_FIabc.b7.100.fail.3.1.$FI"), Some(7));
/// assert_eq!(batch_of("_FIabc", "_FIabc.b7"), Some(7));
/// assert_eq!(batch_of("_FIabc", "_FIxyz.b7.1"), None);
/// ```
pub fn batch_of(prefix: &str, subject: &str) -> Option<u64> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix(".b")?;
    let token = rest.split('.').next()?;
    token.parse().ok()
}

/// What the server said on a batch's reply subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Messages `1..=seq` are persisted (or were duplicates); acks now come
    /// every `flow` messages. The first one (`seq` 0) confirms the batch.
    FlowAck { seq: u64, flow: u16 },
    /// The server missed messages after `last_seq`; with `gap = fail` the
    /// batch is over.
    Gap { last_seq: u64, seq: u64 },
    /// A message (or the whole batch) was refused.
    Error {
        seq: Option<u64>,
        code: u64,
        description: String,
    },
    /// The batch is committed: `count` messages, the last stored at stream
    /// sequence `stream_seq` (duplicates are counted but not stored).
    Committed { stream_seq: u64, count: u64 },
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    code: u64,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "type")]
    kind: Option<String>,
    seq: Option<u64>,
    // ADR-50 names it `ack_msgs`; nats-server 2.14/2.15 send `msgs`.
    msgs: Option<u16>,
    ack_msgs: Option<u16>,
    last_seq: Option<u64>,
    error: Option<ApiError>,
    stream: Option<String>,
    batch: Option<String>,
    count: Option<u64>,
}

/// A reply payload this client does not understand: a protocol change
/// shows up in the log rather than as a silent stall. What it quotes of the
/// payload is bounded ([`QUOTE_LEN_MAX`] bytes).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("fast-batch reply is not JSON ({detail}): {quoted}")]
    NotJson { detail: String, quoted: String },
    #[error("fast-batch error reply without an error: {quoted}")]
    ErrorWithoutError { quoted: String },
    #[error("unknown fast-batch reply type {0:?}")]
    UnknownType(String),
    #[error("unrecognised fast-batch reply: {quoted}")]
    Unrecognised { quoted: String },
}

/// The most of a payload an error quotes.
pub const QUOTE_LEN_MAX: usize = 256;

fn quote(payload: &[u8]) -> String {
    let cut = &payload[..payload.len().min(QUOTE_LEN_MAX)];
    let mut q = String::from_utf8_lossy(cut).into_owned();
    if payload.len() > QUOTE_LEN_MAX {
        q.push('…');
    }
    q
}

/// Classify one reply payload.
pub fn classify(payload: &[u8]) -> Result<Reply, ReplyError> {
    let raw: Raw = serde_json::from_slice(payload).map_err(|e| ReplyError::NotJson {
        detail: e.to_string(),
        quoted: quote(payload),
    })?;
    let error = |seq, e: ApiError| Reply::Error {
        seq,
        code: if e.err_code != 0 { e.err_code } else { e.code },
        description: e.description,
    };
    match raw.kind.as_deref() {
        Some("ack") => Ok(Reply::FlowAck {
            seq: raw.seq.unwrap_or(0),
            flow: raw.msgs.or(raw.ack_msgs).unwrap_or(1).max(1),
        }),
        Some("gap") => Ok(Reply::Gap {
            last_seq: raw.last_seq.unwrap_or(0),
            seq: raw.seq.unwrap_or(0),
        }),
        Some("err") => match raw.error {
            Some(e) => Ok(error(raw.seq, e)),
            None => Err(ReplyError::ErrorWithoutError {
                quoted: quote(payload),
            }),
        },
        Some(other) => Err(ReplyError::UnknownType(other.chars().take(64).collect())),
        None => {
            if let Some(e) = raw.error {
                return Ok(error(raw.seq, e));
            }
            match (raw.stream, raw.batch, raw.seq, raw.count) {
                (Some(_), Some(_), Some(stream_seq), Some(count)) => {
                    Ok(Reply::Committed { stream_seq, count })
                }
                _ => Err(ReplyError::Unrecognised {
                    quoted: quote(payload),
                }),
            }
        }
    }
}

/// Error codes meaning "this server or stream will not do fast batches":
/// 10205, not enabled on the stream (`allow_batch_publish`); 10206, reply
/// pattern refused (a server older than the protocol).
pub fn refuses_fast_batches(code: u64) -> bool {
    matches!(code, 10205 | 10206)
}

/// nats-server 2.14 introduced fast-ingest batches.
pub fn server_supports_fast_batches(version: &str) -> bool {
    let mut it = version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    let major = it.next().unwrap_or(0);
    let minor = it.next().unwrap_or(0);
    (major, minor) >= (2, 14)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_subjects_carry_every_field() {
        let mut s = String::new();
        for (op, code) in [
            (Op::Start, 0),
            (Op::Append, 1),
            (Op::Commit, 2),
            (Op::CommitEob, 3),
            (Op::Ping, 4),
        ] {
            reply_subject("_FIx", 12, 250, 42, op, &mut s);
            assert_eq!(s, format!("_FIx.b12.250.fail.42.{code}.$FI"));
            assert_eq!(batch_of("_FIx", &s), Some(12));
        }
        assert_eq!(batch_of("_FIx", "_FIxy.b12.1"), None);
        assert_eq!(batch_of("_FIx", "_FIx.c12.1"), None);
        assert_eq!(batch_of("_FIx", "_FIx.b.1"), None);
    }

    #[test]
    fn classifies_every_reply_shape() {
        assert_eq!(
            classify(br#"{"type":"ack","seq":0,"msgs":100}"#),
            Ok(Reply::FlowAck { seq: 0, flow: 100 })
        );
        assert_eq!(
            classify(br#"{"type":"ack","seq":300,"ack_msgs":50}"#),
            Ok(Reply::FlowAck { seq: 300, flow: 50 })
        );
        assert_eq!(
            classify(br#"{"type":"gap","last_seq":10,"seq":15}"#),
            Ok(Reply::Gap {
                last_seq: 10,
                seq: 15
            })
        );
        assert_eq!(
            classify(
                br#"{"type":"err","seq":7,"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 1"}}"#
            ),
            Ok(Reply::Error {
                seq: Some(7),
                code: 10071,
                description: "wrong last sequence: 1".into()
            })
        );
        assert_eq!(
            classify(
                br#"{"error":{"code":400,"err_code":10205,"description":"batch publish not enabled"}}"#
            ),
            Ok(Reply::Error {
                seq: None,
                code: 10205,
                description: "batch publish not enabled".into()
            })
        );
        assert_eq!(
            classify(br#"{"stream":"TSPI","seq":4242,"batch":"b3","count":1000}"#),
            Ok(Reply::Committed {
                stream_seq: 4242,
                count: 1000
            })
        );
        for bad in [
            &b"not json"[..],
            br#"{"type":"nope"}"#,
            br#"{"type":"err","seq":1}"#,
            br#"{"stream":"TSPI","seq":1}"#,
        ] {
            assert!(classify(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn fast_batches_need_2_14() {
        for (v, ok) in [
            ("2.15.1", true),
            ("2.14.0", true),
            ("v2.14.0-beta.1", true),
            ("3.0.0", true),
            ("2.12.3", false),
            ("2.9.10", false),
            ("", false),
        ] {
            assert_eq!(server_supports_fast_batches(v), ok, "{v}");
        }
    }
}
