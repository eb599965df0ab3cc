//! Pure data: what one transaction writes, and what it wrote.

use super::minutes::Minute;
use super::rows::{CommandBody, TagBody};
use bytes::Bytes;

/// Where a message came from in its stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Origin {
    pub subject: String,
    pub msg_id: Option<String>,
    pub stream_seq: u64,
    /// When JetStream stored it, µs since the Unix epoch.
    pub stream_unix_us: i64,
}

/// A message that is not a row: why, and the body as it was.
#[derive(Clone, Debug, PartialEq)]
pub struct RejectRow {
    pub stream: &'static str,
    pub origin: Origin,
    /// Short label (`reason_kind` column): a decode reject's label, or
    /// `database` for a row PostgreSQL refused for good.
    pub kind: &'static str,
    pub reason: String,
    pub body: Bytes,
}

/// Operator rows of a batch.
#[derive(Clone, Debug, PartialEq)]
pub enum OpsRow {
    Tag(TagBody, Origin, Bytes),
    Command(CommandBody, Origin, Bytes),
    /// Any other archived operator message, and its JSON form if CBOR.
    Event(Origin, Bytes, Option<String>),
}

/// What one transaction writes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// The finished binary COPY stream of the telemetry rows (empty: none).
    pub copy: Bytes,
    pub copy_rows: usize,
    /// UTC days (since 1970-01-01) of the telemetry rows, sorted, distinct.
    pub days: Vec<i32>,
    /// The telemetry rows' tracks per sensor per minute, by (minute,
    /// sensor): what `tspi_track_minutes` gains when every row is new.
    pub minutes: Vec<Minute>,
    /// Some message was delivered before (JetStream's delivery count > 1):
    /// rows may exist, so skip the optimistic direct COPY.
    pub redelivered: bool,
    pub ops: Vec<OpsRow>,
    pub rejects: Vec<RejectRow>,
    /// Messages this batch stands for (each is one telemetry row, one
    /// operator row or one reject).
    pub messages: u64,
    /// Stream time (µs) of the last of them.
    pub last_stream_unix_us: i64,
}

/// Rows a committed batch added (the rest were already there).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub telemetry: u64,
    pub ops: u64,
    pub rejects: u64,
}
