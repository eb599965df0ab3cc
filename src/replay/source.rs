//! Where recorded messages come from: the `TSPI` stream, a capture file, a
//! list in memory (the archive: [`super::archive`]). Each source reads ahead on
//! its own task or thread in bounded batches (`batch_len` messages,
//! `batches_max` queued), so memory stays bounded however long the
//! recording; the pacing thread takes items one at a time.

use super::time::{body_recv_ns, parse_rfc3339_ns};
use super::{Item, ItemKind, ReplayError};
use crate::codec;
use crate::message::ops::BodyError;
use crate::message::{self, RecvTime};
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::mpsc;

/// Most tags read from `TSPI_OPS` for one replay.
pub const TAGS_MAX: usize = 100_000;
/// Header marking a message this appliance re-emitted during a replay.
pub const HEADER_REPLAY_CHANNEL: &str = "Tspi-Replay-Channel";

/// A recording, read in time order.
pub trait Source: Send {
    /// (Re)start reading at recorded instant `from_ns` (`None`: the
    /// beginning). Drops what was read ahead.
    fn open(&mut self, from_ns: Option<u64>) -> Result<(), ReplayError>;
    /// The next item, waiting for the reader if needed; `None` at the end.
    /// Call from a plain thread (it blocks).
    fn next(&mut self) -> Result<Option<Item>, ReplayError>;
    /// Counts so far.
    fn stats(&self) -> SourceStats;
}

crate::counter_set! {
    /// What a source read and what it had to leave out.
    #[derive(serde::Serialize)]
    pub struct SourceStats {
        telemetry => "Telemetry items read",
        tags => "Tags read",
        /// Messages without a readable receive time or body (stream), or rows
        /// that do not rebuild (archive).
        unreadable => "Messages or rows that could not be read back",
        /// Capture datagrams the codec rejected.
        rejected => "Capture datagrams the codec rejected",
    }
    /// A source's counts, shared with its reader.
    live pub(super) struct SourceCounts;
}

pub(super) type Batch = Result<Vec<Item>, ReplayError>;

/// The pacing thread's end of a reader: batches in, items out.
#[derive(Debug, Default)]
pub(super) struct Feed {
    rx: Option<mpsc::Receiver<Batch>>,
    batch: VecDeque<Item>,
}

impl Feed {
    pub(super) fn replace(&mut self, rx: mpsc::Receiver<Batch>) {
        self.batch.clear();
        // Dropping the old receiver stops the old reader at its next send.
        self.rx = Some(rx);
    }

    pub(super) fn next(&mut self) -> Result<Option<Item>, ReplayError> {
        loop {
            if let Some(i) = self.batch.pop_front() {
                return Ok(Some(i));
            }
            let Some(rx) = self.rx.as_mut() else {
                return Ok(None);
            };
            match rx.blocking_recv() {
                Some(Ok(b)) => self.batch = b.into(),
                Some(Err(e)) => return Err(e),
                None => {
                    self.rx = None;
                    return Ok(None);
                }
            }
        }
    }
}

/// Batches items and sends them; false when the pacing side has gone.
struct Batcher {
    tx: mpsc::Sender<Batch>,
    batch: Vec<Item>,
    len: usize,
}

impl Batcher {
    fn new(tx: mpsc::Sender<Batch>, len: usize) -> Batcher {
        Batcher {
            tx,
            batch: Vec::with_capacity(len),
            len,
        }
    }

    async fn push(&mut self, item: Item) -> bool {
        self.batch.push(item);
        if self.batch.len() >= self.len {
            return self.flush().await;
        }
        true
    }

    async fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let b = std::mem::replace(&mut self.batch, Vec::with_capacity(self.len));
        self.tx.send(Ok(b)).await.is_ok()
    }

    fn push_blocking(&mut self, item: Item) -> bool {
        self.batch.push(item);
        if self.batch.len() >= self.len {
            return self.flush_blocking();
        }
        true
    }

    fn flush_blocking(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let b = std::mem::replace(&mut self.batch, Vec::with_capacity(self.len));
        self.tx.blocking_send(Ok(b)).is_ok()
    }
}

/// Read-ahead bounds.
#[derive(Clone, Copy, Debug)]
pub struct ReadAhead {
    pub batch_len: usize,
    pub batches_max: usize,
}

impl Default for ReadAhead {
    fn default() -> Self {
        ReadAhead {
            batch_len: 1024,
            batches_max: 8,
        }
    }
}

// --- in memory ----------------------------------------------------------------

/// A recording held in memory (tests, benches, and small captures).
#[derive(Debug)]
pub struct VecSource {
    items: Arc<Vec<Item>>,
    at: usize,
    counters: SourceCounts,
}

impl VecSource {
    /// `items` must be in order of `rec_ns`.
    pub fn new(items: Vec<Item>) -> VecSource {
        VecSource {
            items: Arc::new(items),
            at: 0,
            counters: SourceCounts::default(),
        }
    }
}

impl Source for VecSource {
    fn open(&mut self, from_ns: Option<u64>) -> Result<(), ReplayError> {
        self.at = from_ns.map_or(0, |f| self.items.partition_point(|i| i.rec_ns < f));
        Ok(())
    }

    fn next(&mut self) -> Result<Option<Item>, ReplayError> {
        let item = self.items.get(self.at).cloned();
        if let Some(i) = &item {
            self.at += 1;
            let c = match i.kind {
                ItemKind::Telemetry { .. } => &self.counters.telemetry,
                ItemKind::Tag { .. } => &self.counters.tags,
            };
            c.fetch_add(1, Relaxed);
        }
        Ok(item)
    }

    fn stats(&self) -> SourceStats {
        self.counters.load()
    }
}

// --- capture file -------------------------------------------------------------

/// A pcap/pcapng capture (each packet's timestamp is its receive time) or a
/// raw file of 37-byte records (spaced `raw_interval_ns` apart, since raw
/// files carry no time). Bodies are what ingest would have published for
/// each datagram at that receive time.
#[derive(Debug)]
pub struct CaptureSource {
    pub path: PathBuf,
    pub filter: crate::decode::CaptureFilter,
    /// Spacing of records in a raw or hex file; `None` refuses such files.
    pub raw_interval_ns: Option<u64>,
    pub subject_prefix: String,
    pub read_ahead: ReadAhead,
    feed: Feed,
    counters: Arc<SourceCounts>,
}

impl CaptureSource {
    pub fn new(path: PathBuf, raw_interval_ns: Option<u64>) -> CaptureSource {
        CaptureSource {
            path,
            filter: crate::decode::CaptureFilter::default(),
            raw_interval_ns,
            subject_prefix: message::DEFAULT_PREFIX.into(),
            read_ahead: ReadAhead::default(),
            feed: Feed::default(),
            counters: Arc::default(),
        }
    }
}

/// Telemetry item for a datagram received at `recv`.
pub fn capture_item(prefix: &str, bytes: &[u8], recv: RecvTime) -> Result<Item, codec::ParseError> {
    let frame = codec::parse(bytes)?;
    let m = message::Message::encode(prefix, &frame, recv);
    let mut datagram = [0u8; codec::DATAGRAM_LEN];
    datagram.copy_from_slice(bytes);
    Ok(Item {
        // The body's own time (microseconds), so every source agrees.
        rec_ns: recv.epoch_us() * 1_000,
        kind: ItemKind::Telemetry {
            subject: m.subject,
            msg_id: m.msg_id,
            body: Bytes::from(m.body),
            datagram: Some(datagram),
        },
    })
}

impl Source for CaptureSource {
    fn open(&mut self, from_ns: Option<u64>) -> Result<(), ReplayError> {
        let file = std::fs::File::open(&self.path).map_err(|e| {
            ReplayError::Source(format!("cannot open {}: {e}", self.path.display()))
        })?;
        let (tx, rx) = mpsc::channel(self.read_ahead.batches_max);
        self.feed.replace(rx);
        let filter = self.filter;
        let interval = self.raw_interval_ns;
        let prefix = self.subject_prefix.clone();
        let counters = self.counters.clone();
        let from = from_ns.unwrap_or(0);
        let path = self.path.clone();
        let mut out = Batcher::new(tx.clone(), self.read_ahead.batch_len);
        std::thread::Builder::new()
            .name("replay-capture".into())
            .spawn(move || {
                let mut index = 0u64;
                let mut gone = false;
                let r =
                    crate::decode::read(file, crate::decode::Format::Auto, filter, &mut |event| {
                        if gone {
                            return Ok(());
                        }
                        let crate::decode::Event::Datagram { bytes, recv, .. } = event else {
                            return Ok(());
                        };
                        let recv = match (recv, interval) {
                            (Some(r), _) => r,
                            (None, Some(step)) => {
                                RecvTime::from_unix_ns(1_000_000_000 + index * step)
                            }
                            (None, None) => {
                                return Err(crate::decode::InputError::NotCapture(
                                    "this file has no receive times (raw or hex records): give a \
                                     spacing (--raw-rate-hz) or use a pcap/pcapng capture"
                                        .into(),
                                ));
                            }
                        };
                        index += 1;
                        match capture_item(&prefix, bytes, recv) {
                            Ok(item) if item.rec_ns >= from => {
                                counters.telemetry.fetch_add(1, Relaxed);
                                gone = !out.push_blocking(item);
                            }
                            Ok(_) => {}
                            Err(_) => {
                                counters.rejected.fetch_add(1, Relaxed);
                            }
                        }
                        Ok(())
                    });
                match r {
                    Ok(()) => {
                        out.flush_blocking();
                    }
                    Err(e) => {
                        out.flush_blocking();
                        let _ = tx.blocking_send(Err(ReplayError::Source(format!(
                            "{}: {e}",
                            path.display()
                        ))));
                    }
                }
            })
            .map_err(|e| ReplayError::Source(format!("cannot start the capture reader: {e}")))?;
        Ok(())
    }

    fn next(&mut self) -> Result<Option<Item>, ReplayError> {
        self.feed.next()
    }

    fn stats(&self) -> SourceStats {
        self.counters.load()
    }
}

// --- the TSPI stream --------------------------------------------------------------

/// Where a stream replay starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// Recorded (receive) time, ns since the Unix epoch.
    Time(u64),
    /// A stream sequence number.
    Sequence(u64),
}

impl std::str::FromStr for StartAt {
    type Err = super::time::TimeError;
    /// An RFC 3339 time, or a plain number: a stream sequence.
    fn from_str(s: &str) -> Result<StartAt, Self::Err> {
        let t = s.trim();
        if !t.is_empty()
            && t.bytes().all(|b| b.is_ascii_digit())
            && let Ok(n) = t.parse()
        {
            return Ok(StartAt::Sequence(n));
        }
        parse_rfc3339_ns(t).map(StartAt::Time)
    }
}

/// A tag: its id, moment and original body.
#[derive(Clone, Debug, PartialEq)]
pub struct Tag {
    pub id: String,
    pub ts_ns: u64,
    pub label: Option<String>,
    pub body: Bytes,
}

/// Read a tag body with the one tag decoder ([`crate::message::ops`]), so
/// a replay re-emits a tag at the moment the archive stored for it. A tag
/// before 1970 or after 2554 (outside nanoseconds in a `u64`) cannot be
/// replayed and is an error.
pub fn parse_tag(body: &[u8]) -> Result<Tag, BodyError> {
    let t = crate::message::ops::decode_tag(body)?;
    let ts_ns = u64::try_from(t.ts_unix_us)
        .ok()
        .and_then(|us| us.checked_mul(1_000))
        .ok_or_else(|| BodyError::Field {
            field: "ts",
            why: format!(
                "{} µs since 1970 is outside what a replay reaches (1970..=2554)",
                t.ts_unix_us
            ),
        })?;
    Ok(Tag {
        id: t.id,
        ts_ns,
        label: Some(t.label),
        body: Bytes::copy_from_slice(body),
    })
}

/// Every tag in `TSPI_OPS` (`tags.>`), the latest version of each id, in
/// order of moment. Tags this appliance re-emitted in replays are left out.
/// No `TSPI_OPS` stream: no tags.
pub async fn load_tags(js: &jetstream::Context) -> Result<Vec<Tag>, ReplayError> {
    let Ok(mut stream) = js.get_stream(crate::jetstream::STREAM_OPS).await else {
        tracing::info!("no TSPI_OPS stream: replaying without tags");
        return Ok(Vec::new());
    };
    let src = |e: &dyn std::fmt::Display| ReplayError::Source(format!("reading tags: {e}"));
    let info = stream.info().await.map_err(|e| src(&e))?.clone();
    if info.state.messages == 0 {
        return Ok(Vec::new());
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: "tags.>".into(),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| src(&e))?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(Vec::new());
    }
    let mut msgs = consumer.messages().await.map_err(|e| src(&e))?;
    let mut by_id: std::collections::HashMap<String, Tag> = std::collections::HashMap::new();
    let mut read = 0usize;
    while let Some(m) = msgs.next().await {
        let m = m.map_err(|e| src(&e))?;
        read += 1;
        let pending = m.info().map(|i| i.pending).unwrap_or(0);
        let replayed = m
            .headers
            .as_ref()
            .is_some_and(|h| h.get(HEADER_REPLAY_CHANNEL).is_some());
        if !replayed {
            match parse_tag(&m.payload) {
                Ok(t) => {
                    by_id.insert(t.id.clone(), t);
                }
                Err(e) => tracing::warn!(subject = %m.subject, error = %e, "tag left out"),
            }
        }
        if pending == 0
            || info.state.last_sequence <= m.info().map(|i| i.stream_sequence).unwrap_or(0)
        {
            break;
        }
        if read >= TAGS_MAX {
            tracing::warn!(
                max = TAGS_MAX,
                "more tags than the limit; later ones left out"
            );
            break;
        }
    }
    let mut tags: Vec<Tag> = by_id.into_values().collect();
    tags.sort_by(|a, b| a.ts_ns.cmp(&b.ts_ns).then_with(|| a.id.cmp(&b.id)));
    Ok(tags)
}

/// The `TSPI` stream from a time or sequence, up to `end_ns` or to what the
/// stream held when the replay (re)opened. Tags from `TSPI_OPS` whose moment
/// falls inside the window are merged in at their moment.
pub struct StreamSource {
    handle: tokio::runtime::Handle,
    js: jetstream::Context,
    pub stream: String,
    pub start: StartAt,
    pub end_ns: Option<u64>,
    pub with_tags: bool,
    pub read_ahead: ReadAhead,
    /// How far out of receive-time order stored messages may be: the reader
    /// stops at the first message received this long after `end_ns`.
    pub reorder_ns: u64,
    tags: Option<Arc<Vec<Tag>>>,
    feed: Feed,
    counters: Arc<SourceCounts>,
}

impl StreamSource {
    pub fn new(
        handle: tokio::runtime::Handle,
        js: jetstream::Context,
        start: StartAt,
        end_ns: Option<u64>,
    ) -> StreamSource {
        StreamSource {
            handle,
            js,
            stream: crate::jetstream::STREAM_TELEMETRY.into(),
            start,
            end_ns,
            with_tags: true,
            read_ahead: ReadAhead::default(),
            reorder_ns: 2_000_000_000,
            tags: None,
            feed: Feed::default(),
            counters: Arc::default(),
        }
    }
}

impl Source for StreamSource {
    fn open(&mut self, from_ns: Option<u64>) -> Result<(), ReplayError> {
        if self.with_tags && self.tags.is_none() {
            let js = self.js.clone();
            self.tags = Some(Arc::new(self.handle.block_on(load_tags(&js))?));
        }
        let (tx, rx) = mpsc::channel(self.read_ahead.batches_max);
        self.feed.replace(rx);
        let job = StreamRead {
            js: self.js.clone(),
            stream: self.stream.clone(),
            deliver: match (from_ns, self.start) {
                (Some(t), _) | (None, StartAt::Time(t)) => consumer::DeliverPolicy::ByStartTime {
                    start_time: async_nats::datetime::from_nanos(i128::from(t))
                        .map_err(|e| ReplayError::Source(format!("start time: {e}")))?,
                },
                (None, StartAt::Sequence(s)) => consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: s.max(1),
                },
            },
            from_ns: from_ns.or(match self.start {
                StartAt::Time(t) => Some(t),
                StartAt::Sequence(_) => None,
            }),
            end_ns: self.end_ns,
            reorder_ns: self.reorder_ns,
            tags: self.tags.clone().unwrap_or_default(),
            counters: self.counters.clone(),
        };
        let out = Batcher::new(tx.clone(), self.read_ahead.batch_len);
        self.handle.spawn(async move {
            let mut out = out;
            if let Err(e) = job.run(&mut out).await {
                out.flush().await;
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(())
    }

    fn next(&mut self) -> Result<Option<Item>, ReplayError> {
        self.feed.next()
    }

    fn stats(&self) -> SourceStats {
        self.counters.load()
    }
}

struct StreamRead {
    js: jetstream::Context,
    stream: String,
    deliver: consumer::DeliverPolicy,
    from_ns: Option<u64>,
    end_ns: Option<u64>,
    reorder_ns: u64,
    tags: Arc<Vec<Tag>>,
    counters: Arc<SourceCounts>,
}

impl StreamRead {
    async fn run(self, out: &mut Batcher) -> Result<(), ReplayError> {
        let src =
            |e: &dyn std::fmt::Display| ReplayError::Source(format!("stream {}: {e}", self.stream));
        let mut stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| src(&e))?;
        let last_seq = stream
            .info()
            .await
            .map_err(|e| src(&e))?
            .state
            .last_sequence;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: self.deliver,
                ..Default::default()
            })
            .await
            .map_err(|e| src(&e))?;
        let mut tag_at = 0usize;
        let mut window_lo = self.from_ns;
        let mut last_rec = None;
        if consumer.cached_info().num_pending > 0 && last_seq > 0 {
            let mut msgs = consumer.messages().await.map_err(|e| src(&e))?;
            while let Some(m) = msgs.next().await {
                let m = m.map_err(|e| src(&e))?;
                let (seq, pending) = match m.info() {
                    Ok(i) => (i.stream_sequence, i.pending),
                    Err(e) => return Err(src(&e)),
                };
                if seq > last_seq {
                    break;
                }
                match self.item(&m) {
                    // Receive times are in order to within a few ms (several
                    // receive threads interleave): one this far past the end
                    // means the window is over.
                    Some(item)
                        if self
                            .end_ns
                            .is_some_and(|e| item.rec_ns > e.saturating_add(self.reorder_ns)) =>
                    {
                        break;
                    }
                    Some(item) => {
                        let inside = self.from_ns.is_none_or(|f| item.rec_ns >= f)
                            && self.end_ns.is_none_or(|e| item.rec_ns <= e);
                        if inside {
                            let lo = *window_lo.get_or_insert(item.rec_ns);
                            // Tags due before this message go first.
                            while let Some(t) = self.tags.get(tag_at) {
                                if t.ts_ns > item.rec_ns {
                                    break;
                                }
                                tag_at += 1;
                                if t.ts_ns >= lo && !out.push(self.tag_item(t)).await {
                                    return Ok(());
                                }
                            }
                            last_rec = Some(item.rec_ns);
                            self.counters.telemetry.fetch_add(1, Relaxed);
                            if !out.push(item).await {
                                return Ok(());
                            }
                        }
                    }
                    None => {
                        self.counters.unreadable.fetch_add(1, Relaxed);
                    }
                }
                if pending == 0 || seq >= last_seq {
                    break;
                }
            }
        }
        // Tags after the last message, up to the end of the window.
        if let (Some(lo), Some(hi)) = (window_lo, self.end_ns.or(last_rec)) {
            for t in &self.tags[tag_at..] {
                if t.ts_ns > hi {
                    break;
                }
                if t.ts_ns >= lo && !out.push(self.tag_item(t)).await {
                    return Ok(());
                }
            }
        }
        out.flush().await;
        Ok(())
    }

    fn tag_item(&self, t: &Tag) -> Item {
        self.counters.tags.fetch_add(1, Relaxed);
        Item {
            rec_ns: t.ts_ns,
            kind: ItemKind::Tag {
                id: t.id.clone(),
                body: t.body.clone(),
            },
        }
    }

    fn item(&self, m: &jetstream::Message) -> Option<Item> {
        let rec_ns = body_recv_ns(&m.payload)?;
        let msg_id = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string())?;
        Some(Item {
            rec_ns,
            kind: ItemKind::Telemetry {
                subject: m.subject.to_string(),
                msg_id,
                body: m.payload.clone(),
                datagram: None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_is_a_time_or_a_sequence() {
        assert_eq!("42".parse::<StartAt>().unwrap(), StartAt::Sequence(42));
        assert_eq!(
            "2023-11-14T22:13:20Z".parse::<StartAt>().unwrap(),
            StartAt::Time(1_700_000_000_000_000_000)
        );
        assert!("soon".parse::<StartAt>().is_err());
    }

    fn cbor(pairs: Vec<(&str, ciborium::Value)>) -> Vec<u8> {
        let v = ciborium::Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (ciborium::Value::Text(k.into()), v))
                .collect(),
        );
        let mut out = Vec::new();
        ciborium::into_writer(&v, &mut out).unwrap();
        out
    }

    #[test]
    fn tag_times_in_every_form() {
        use ciborium::Value as V;
        let tag = |ts: V| {
            parse_tag(&cbor(vec![
                ("id", V::Text("t1".into())),
                ("ts", ts),
                ("label", V::Text("Merge".into())),
                ("updated_ts", V::Integer(1_700_000_000u64.into())),
            ]))
        };
        let t = tag(V::Text("2023-11-14T22:13:20.5Z".into())).unwrap();
        assert_eq!(t.ts_ns, 1_700_000_000_500_000_000);
        assert_eq!(t.label.as_deref(), Some("Merge"));
        let t = tag(V::Float(1_700_000_000.25)).unwrap();
        assert_eq!(t.ts_ns, 1_700_000_000_250_000_000);
        let t = tag(V::Integer(1_700_000_000u64.into())).unwrap();
        assert_eq!(t.ts_ns, 1_700_000_000_000_000_000);
        // An integer is seconds, never milliseconds (one meaning, as the
        // archive reads it): this one is past 9999 and refused, saying why.
        let e = tag(V::Integer(1_700_000_000_123u64.into())).unwrap_err();
        assert!(e.to_string().contains("milliseconds"), "{e}");
        // Before 1970: the archive keeps it, a replay cannot reach it.
        assert!(tag(V::Integer((-5).into())).is_err());
        assert!(tag(V::Bool(true)).is_err());
        assert!(parse_tag(&cbor(vec![("ts", V::Float(1.0))])).is_err());
        assert!(parse_tag(b"\xff").is_err());
    }

    /// The archive's row and the replay's re-emission of the same tag body
    /// agree on its moment, in every form `ts` comes in, and refuse the
    /// same bodies.
    #[test]
    fn archive_and_replay_read_a_tag_alike() {
        use crate::archive::rows::decode_tag;
        use ciborium::Value as V;
        for ts in [
            V::Integer(1_700_000_000u64.into()),
            V::Integer(1_700_000_000_123u64.into()),
            V::Integer(100_000_000_001u64.into()),
            V::Integer(4_000_000_000u64.into()),
            V::Float(1_700_000_000.25),
            V::Float(1_700_000_000.000_123),
            V::Text("2023-11-14T22:13:20.123456Z".into()),
            V::Text("2023-11-15T00:13:20.5+02:00".into()),
            V::Text("2023-11-14 22:13:20Z".into()),
            V::Text("yesterday".into()),
            V::Null,
        ] {
            let body = cbor(vec![
                ("id", V::Text("t1".into())),
                ("ts", ts.clone()),
                ("label", V::Text("Merge".into())),
                ("status", V::Text("active".into())),
                ("updated_ts", V::Integer(1_700_000_000u64.into())),
            ]);
            match (decode_tag(&body), parse_tag(&body)) {
                (Ok(row), Ok(replayed)) => {
                    assert_eq!(replayed.ts_ns, row.ts_unix_us as u64 * 1_000, "{ts:?}");
                    assert_eq!(replayed.id, row.id);
                    assert_eq!(replayed.label.as_deref(), Some(row.label.as_str()));
                }
                (Err(a), Err(r)) => assert_eq!(a, r, "{ts:?}"),
                // Year 5138 as seconds: archived, but past what a replay's
                // u64 nanoseconds reach (2554); never read as milliseconds.
                (Ok(row), Err(r)) if row.ts_unix_us > (u64::MAX / 1_000) as i64 => {
                    assert!(r.to_string().contains("1970..=2554"), "{r}");
                }
                (a, r) => panic!("{ts:?}: archive {a:?}, replay {r:?}"),
            }
        }
    }

    #[test]
    fn capture_items_carry_the_ingest_body() {
        let bytes = codec::vectors::bytes(codec::vectors::GEOCENTRIC_1);
        let item = capture_item(
            "tspi",
            &bytes,
            RecvTime::from_unix_ns(1_700_000_000_123_400_000),
        )
        .unwrap();
        assert_eq!(item.rec_ns, 1_700_000_000_123_400_000);
        let ItemKind::Telemetry {
            subject,
            msg_id,
            body,
            datagram,
        } = item.kind
        else {
            panic!("telemetry")
        };
        assert_eq!(subject, "tspi.geocentric.501");
        assert_eq!(msg_id, "501:123:1.5340");
        assert_eq!(body_recv_ns(&body), Some(item.rec_ns));
        assert_eq!(datagram.unwrap().as_slice(), bytes.as_slice());
        assert!(capture_item("tspi", &bytes[..36], RecvTime::from_unix_ns(0)).is_err());
    }
}
