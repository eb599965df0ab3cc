//! What the page shows besides tracks: the data plane's health (from the
//! ingest boxes' metrics snapshots), the channel directory (asked of the
//! channels service), what can be replayed (the telemetry stream's extent)
//! and the tags seen before a client connected. [`LatencyBoard`] and
//! [`TagHistory`] are pure; the loops at the bottom are the edges.

use super::protocol::{
    ArchiveTimeline, BoxHealth, DISTRIBUTION_PERCENTILES, DirectoryView, Event, Percentiles,
    TagView, archive_bucket_minutes, is_drop_counter,
};
use super::{Hub, now_ms};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Boxes the board keeps at most (names come from subjects NATS accepted).
pub const BOXES_MAX: usize = 256;

/// The ingest boxes' latency histograms and counters: each box's last
/// interval (its snapshot), and their merge.
#[derive(Debug, Default)]
pub struct LatencyBoard {
    boxes: BTreeMap<String, BoxState>,
}

#[derive(Debug)]
struct BoxState {
    histograms: BTreeMap<String, hdrhistogram::Histogram<u64>>,
    health: BoxHealth,
}

/// A JSON object's numbers as `name -> value`, nested objects (the
/// `rejected` reasons) as `name.reason`.
fn flatten(v: &serde_json::Value, prefix: &str, out: &mut BTreeMap<String, u64>) {
    if let Some(map) = v.as_object() {
        for (k, v) in map {
            let name = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                serde_json::Value::Object(_) => flatten(v, &name, out),
                _ => {
                    if let Some(n) = v.as_u64() {
                        out.insert(name, n);
                    }
                }
            }
        }
    }
}

impl LatencyBoard {
    /// Take one box's snapshot; false if it did not decode.
    pub fn update(&mut self, host: &str, body: &[u8]) -> bool {
        let Ok(snap) = serde_json::from_slice::<crate::metrics::Snapshot>(body) else {
            return false;
        };
        let mut hs = BTreeMap::new();
        let h = &snap.histograms;
        for (name, b64) in [
            ("receive_to_publish", &h.receive_to_publish),
            ("publish_to_ack", &h.publish_to_ack),
            ("receive_to_ack", &h.receive_to_ack),
        ] {
            if let Ok(h) = crate::metrics::decode_hdr_snapshot(b64) {
                hs.insert(name.to_owned(), h);
            }
        }
        if hs.is_empty() {
            return false;
        }
        let interval_ms = snap.end_unix_ms.saturating_sub(snap.start_unix_ms);
        let per_s = |n: u64| {
            if interval_ms == 0 {
                0.0
            } else {
                n as f64 * 1000.0 / interval_ms as f64
            }
        };
        let counters = serde_json::to_value(snap.counters).unwrap_or_default();
        let delta = serde_json::to_value(snap.delta).unwrap_or_default();
        let mut gained = BTreeMap::new();
        flatten(&delta, "", &mut gained);
        let mut all = BTreeMap::new();
        flatten(&counters, "", &mut all);
        let mut drops: BTreeMap<String, u64> = all
            .keys()
            .filter(|k| is_drop_counter(k))
            .map(|k| (k.clone(), gained.get(k).copied().unwrap_or(0)))
            .collect();
        if let Some(sp) = &snap.spool {
            // Spool totals are cumulative: what moved since this box's
            // previous snapshot.
            let before = self
                .boxes
                .get(host)
                .and_then(|b| b.health.spool)
                .map_or(sp.dropped, |p| p.dropped);
            drops.insert("spool.dropped".into(), sp.dropped.saturating_sub(before));
        }
        let health = BoxHealth {
            end_unix_ms: snap.end_unix_ms,
            interval_ms,
            received_per_s: per_s(snap.delta.received),
            acked_per_s: per_s(snap.delta.acked),
            counters,
            delta,
            drops,
            spool: snap.spool,
        };
        if self.boxes.len() < BOXES_MAX || self.boxes.contains_key(host) {
            self.boxes.insert(
                host.to_owned(),
                BoxState {
                    histograms: hs,
                    health,
                },
            );
        }
        true
    }

    fn merged(&self) -> BTreeMap<String, hdrhistogram::Histogram<u64>> {
        let mut merged: BTreeMap<String, hdrhistogram::Histogram<u64>> = BTreeMap::new();
        for b in self.boxes.values() {
            for (name, h) in &b.histograms {
                match merged.get_mut(name) {
                    Some(m) => {
                        let _ = m.add(h);
                    }
                    None => {
                        merged.insert(name.clone(), h.clone());
                    }
                }
            }
        }
        merged
    }

    /// The `latency` event: percentiles per box and merged.
    pub fn event(&self) -> Event {
        let per_box = self
            .boxes
            .iter()
            .map(|(host, b)| {
                let mine = b
                    .histograms
                    .iter()
                    .map(|(name, h)| (name.clone(), Percentiles::of(h)))
                    .collect();
                (host.clone(), mine)
            })
            .collect();
        Event::Latency {
            merged: self
                .merged()
                .iter()
                .map(|(k, h)| (k.clone(), Percentiles::of(h)))
                .collect(),
            per_box,
        }
    }

    /// The `health` event: each box's rates and counters, and the merged
    /// receive-to-ack distribution.
    pub fn health_event(&self) -> Event {
        let distribution = self
            .merged()
            .get("receive_to_ack")
            .filter(|h| !h.is_empty())
            .map(|h| {
                DISTRIBUTION_PERCENTILES
                    .iter()
                    .map(|&p| [p, h.value_at_percentile(p) as f64 / 1e6])
                    .collect()
            })
            .unwrap_or_default();
        Event::Health {
            per_box: self
                .boxes
                .iter()
                .map(|(k, b)| (k.clone(), b.health.clone()))
                .collect(),
            distribution,
        }
    }
}

/// Tags the hub keeps for clients that connect later.
pub const TAGS_KEEP: usize = 500;

/// The last [`TAGS_KEEP`] tags, oldest first, each once (by id).
#[derive(Debug, Default)]
pub struct TagHistory {
    tags: VecDeque<TagView>,
}

impl TagHistory {
    pub fn push(&mut self, t: TagView) {
        if self.tags.iter().any(|old| old.id == t.id) {
            return;
        }
        if self.tags.len() >= TAGS_KEEP {
            self.tags.pop_front();
        }
        // Tags from the stream come in order; a live one may be older
        // than the newest (its moment was frozen earlier): keep by time.
        let at = self
            .tags
            .iter()
            .rposition(|old| old.ts_unix_us <= t.ts_unix_us)
            .map_or(0, |i| i + 1);
        self.tags.insert(at, t);
    }

    pub fn event(&self) -> Event {
        Event::Tags {
            tags: self.tags.iter().cloned().collect(),
        }
    }
}

/// The directory as the page shows it, livestream first.
pub fn directory_view(entries: &[crate::channels::message::DirectoryEntry]) -> Vec<DirectoryView> {
    use crate::channels::message::Kind;
    let mut out: Vec<DirectoryView> = entries
        .iter()
        .map(|e| DirectoryView {
            channel_id: e.channel_id.clone(),
            display_name: e.display_name.clone(),
            kind: match e.kind {
                Kind::Livestream => "livestream",
                Kind::GroupReplay => "group_replay",
                Kind::PrivateReplay => "private_replay",
            }
            .to_owned(),
            identifier: e.identifier.clone(),
        })
        .collect();
    out.sort_by_key(|d| (d.kind != "livestream", d.kind.clone(), d.channel_id.clone()));
    out
}

/// Every 2 s, the channels service's directory; sent to everyone when it
/// changes. Without a channels service the directory is the livestream
/// alone.
pub async fn directory_loop(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let entries = crate::channels::service::list_channels(&hub.nats, Duration::from_secs(1))
            .await
            .unwrap_or_else(|_| vec![crate::channels::message::DirectoryEntry::livestream()]);
        let text = Event::Directory {
            channels: directory_view(&entries),
        }
        .to_json();
        let changed = {
            let mut last = hub
                .boards
                .directory
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.as_deref() == Some(text.as_str()) {
                false
            } else {
                *last = Some(text.clone());
                true
            }
        };
        if changed {
            hub.broadcast(super::ClientEvent::Json(text.into()));
        }
    }
}

/// The stream's extent and the archive's, as the last `timeline` said.
#[derive(Debug, Default)]
pub struct TimelineState {
    stream: Option<(Option<u64>, Option<u64>, u64)>,
    archive: Option<ArchiveTimeline>,
}

impl TimelineState {
    pub fn event(&self) -> Event {
        let (first, last, messages) = self.stream.unwrap_or((None, None, 0));
        Event::Timeline {
            first_unix_ms: first,
            last_unix_ms: last,
            messages,
            archive: self.archive.clone(),
        }
    }
}

/// Note a change of the timeline and send it to everyone.
fn timeline_changed(hub: &Hub, change: impl FnOnce(&mut TimelineState)) {
    let text = {
        let mut t = hub
            .boards
            .timeline
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        change(&mut t);
        t.event().to_json()
    };
    hub.broadcast(super::ClientEvent::Json(text.into()));
}

/// Every 5 s, the telemetry stream's extent (what a replay can cover).
pub async fn timeline_loop(hub: Arc<Hub>) {
    let js = async_nats::jetstream::new(hub.nats.clone());
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(mut stream) = js.get_stream(crate::jetstream::STREAM_TELEMETRY).await else {
            continue;
        };
        let Ok(info) = stream.info().await else {
            continue;
        };
        let st = &info.state;
        let ms = |t: time::OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
        let some = st.messages > 0;
        let extent = (
            some.then(|| ms(st.first_timestamp)),
            some.then(|| ms(st.last_timestamp)),
            st.messages,
        );
        timeline_changed(&hub, |t| t.stream = Some(extent));
    }
}

/// Where the hub reads the archive's extent: a connection string and its
/// TLS CA file.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchiveSource {
    pub dsn: String,
    pub ca_file: Option<std::path::PathBuf>,
}

/// The archive's extent and density from its per-minute aggregate.
async fn archive_timeline(
    db: &tokio_postgres::Client,
) -> Result<Option<ArchiveTimeline>, tokio_postgres::Error> {
    let row = db
        .query_one(
            "SELECT (extract(epoch FROM min(minute)) * 1000)::bigint, \
                    (extract(epoch FROM max(minute)) * 1000)::bigint + 60000, \
                    coalesce(sum(rows), 0)::bigint \
             FROM tspi_track_minutes",
            &[],
        )
        .await?;
    let (Some(first), Some(last)) = (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1))
    else {
        return Ok(None);
    };
    let (first, last) = (first.max(0) as u64, last.max(0) as u64);
    let bucket_min = archive_bucket_minutes(first, last);
    // A whole number of minutes computed here: no text from outside.
    let sql = format!(
        "SELECT (extract(epoch FROM date_bin('{bucket_min} minutes', minute, \
                 timestamptz '2000-01-01 00:00+00')) * 1000)::bigint AS b, sum(rows)::bigint \
         FROM tspi_track_minutes GROUP BY b ORDER BY b"
    );
    let density = db
        .query(&sql, &[])
        .await?
        .iter()
        .map(|r| {
            [
                r.get::<_, i64>(0).max(0) as u64,
                r.get::<_, i64>(1).max(0) as u64,
            ]
        })
        .collect();
    Ok(Some(ArchiveTimeline {
        first_unix_ms: first,
        last_unix_ms: last,
        rows: row.get::<_, i64>(2).max(0) as u64,
        bucket_ms: bucket_min * 60_000,
        density,
    }))
}

/// How often the archive's extent is read (one query of its per-minute
/// aggregate, and one of its buckets).
pub const ARCHIVE_TIMELINE_EVERY: Duration = Duration::from_secs(10);

/// Every [`ARCHIVE_TIMELINE_EVERY`], the archive's extent and density (when
/// the hub was given an archive to read); a failure is logged once and
/// retried.
pub async fn archive_timeline_loop(hub: Arc<Hub>, source: ArchiveSource) {
    let tls = match crate::pg::Tls::from_setting(source.ca_file.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "console: the archive's timeline is off (its CA file)");
            return;
        }
    };
    let mut session: Option<crate::pg::Session> = None;
    let mut warned = false;
    let mut tick = tokio::time::interval(ARCHIVE_TIMELINE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if session.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            session = match crate::pg::connect(&source.dsn, tls.as_ref()).await {
                Ok(s) => Some(s),
                Err(e) => {
                    if !warned {
                        tracing::warn!(error = %e, "console: cannot read the archive's timeline; retrying");
                        warned = true;
                    }
                    continue;
                }
            };
        }
        let Some((db, _)) = &session else { continue };
        match tokio::time::timeout(Duration::from_secs(10), archive_timeline(db)).await {
            Ok(Ok(a)) => {
                warned = false;
                timeline_changed(&hub, |t| t.archive = a);
            }
            Ok(Err(e)) => {
                if !warned {
                    tracing::warn!(error = %e, "console: the archive's timeline query failed; retrying");
                    warned = true;
                }
                session = None;
            }
            Err(_) => session = None,
        }
    }
}

/// Tags read from the operations stream at start at most.
pub const TAGS_READ_MAX: u64 = 100_000;

/// The tags the operations stream holds (the last [`TAGS_KEEP`]), read
/// once at start; bounded in count and in time (10 s).
pub async fn load_tags(hub: Arc<Hub>) {
    use futures_util::StreamExt as _;
    let js = async_nats::jetstream::new(hub.nats.clone());
    let Ok(stream) = js.get_stream(crate::contract::names::STREAM_OPS).await else {
        return; // no operations stream: tags from now on only
    };
    let cfg = async_nats::jetstream::consumer::pull::OrderedConfig {
        filter_subject: crate::contract::names::SUBJECT_TAGS.into(),
        ..Default::default()
    };
    let Ok(mut consumer) = stream.create_consumer(cfg).await else {
        return;
    };
    let pending = consumer
        .info()
        .await
        .map(|i| i.num_pending)
        .unwrap_or(0)
        .min(TAGS_READ_MAX);
    if pending == 0 {
        return;
    }
    let Ok(mut messages) = consumer.messages().await else {
        return;
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut read = 0u64;
    while read < pending {
        let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, messages.next()).await else {
            break;
        };
        read += 1;
        if let Ok(t) = crate::contract::message::ops::decode_tag(&m.payload) {
            hub.boards
                .tags
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(TagView {
                    id: t.id,
                    label: t.label,
                    ts_unix_us: t.ts_unix_us,
                    notes: t.notes,
                    creator: t.creator,
                });
        }
    }
    let e = hub
        .boards
        .tags
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .event();
    hub.broadcast(super::ClientEvent::Json(e.to_json().into()));
    tracing::debug!(
        read,
        at_ms = now_ms(),
        "console: tags loaded from the operations stream"
    );
}

/// The boards of a hub.
#[derive(Debug, Default)]
pub struct Boards {
    pub latency: std::sync::Mutex<LatencyBoard>,
    pub tags: std::sync::Mutex<TagHistory>,
    /// The last `directory` and `timeline` messages.
    pub directory: std::sync::Mutex<Option<String>>,
    pub timeline: std::sync::Mutex<TimelineState>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(id: &str, ts: i64) -> TagView {
        TagView {
            id: id.into(),
            label: id.into(),
            ts_unix_us: ts,
            notes: None,
            creator: None,
        }
    }

    #[test]
    fn tag_history_is_bounded_ordered_and_once_each() {
        let mut h = TagHistory::default();
        h.push(tag("b", 20));
        h.push(tag("a", 10));
        h.push(tag("c", 30));
        h.push(tag("b", 20));
        let Event::Tags { tags } = h.event() else {
            unreachable!()
        };
        let ids: Vec<&str> = tags.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        for i in 0..(TAGS_KEEP as i64 + 10) {
            h.push(tag(&format!("t{i}"), 100 + i));
        }
        let Event::Tags { tags } = h.event() else {
            unreachable!()
        };
        assert_eq!(tags.len(), TAGS_KEEP);
        assert_eq!(tags.last().unwrap().id, format!("t{}", TAGS_KEEP + 9));
    }

    #[test]
    fn the_directory_puts_the_livestream_first() {
        use crate::channels::message::{DirectoryEntry, Kind};
        let mut g = DirectoryEntry::livestream();
        g.channel_id = "replay.a".into();
        g.kind = Kind::GroupReplay;
        let v = directory_view(&[g, DirectoryEntry::livestream()]);
        assert_eq!(v[0].kind, "livestream");
        assert_eq!(v[1].channel_id, "replay.a");
        assert_eq!(v[1].kind, "group_replay");
    }

    #[test]
    fn health_counts_rates_drops_and_the_distribution() {
        use crate::metrics::{IngestCounts, Snapshot, SnapshotHistograms};
        let mut h = crate::metrics::new_latency_histogram();
        for us in 1..=1000u64 {
            h.record(us * 1_000).unwrap();
        }
        let enc = crate::metrics::encode_hdr_snapshot(&h);
        let mut delta = IngestCounts {
            received: 2_000,
            acked: 1_500,
            ring_dropped: 3,
            ..IngestCounts::default()
        };
        delta.kernel_dropped = 0;
        let snap = Snapshot {
            host: "box-a".into(),
            component: "ingest".into(),
            start_unix_ms: 10_000,
            end_unix_ms: 12_000,
            histogram_encoding: "x".into(),
            histogram_unit: "ns".into(),
            histograms: SnapshotHistograms {
                receive_to_publish: enc.clone(),
                publish_to_ack: enc.clone(),
                receive_to_ack: enc,
            },
            counters: delta,
            delta,
            gauges: Default::default(),
            spool: None,
        };
        let mut b = LatencyBoard::default();
        assert!(!b.update("box-a", b"not json"));
        assert!(b.update("box-a", &serde_json::to_vec(&snap).unwrap()));
        let Event::Health {
            per_box,
            distribution,
        } = b.health_event()
        else {
            unreachable!()
        };
        let a = &per_box["box-a"];
        assert_eq!((a.received_per_s, a.acked_per_s), (1000.0, 750.0));
        assert_eq!(a.drops["ring_dropped"], 3);
        assert_eq!(a.drops["kernel_dropped"], 0);
        assert!(!a.drops.contains_key("received"));
        assert!(
            a.drops.keys().any(|k| k.starts_with("rejected")),
            "{:?}",
            a.drops
        );
        assert_eq!(distribution.len(), DISTRIBUTION_PERCENTILES.len());
        let p50 = distribution.iter().find(|p| p[0] == 50.0).unwrap()[1];
        assert!((p50 - 0.5).abs() < 0.01, "{p50}");
        assert!(distribution.windows(2).all(|w| w[0][1] <= w[1][1]));

        // A box with a spool: its drops since the previous snapshot count.
        let spool = |dropped| crate::metrics::SpoolSnapshot {
            dropped,
            held: 5,
            max_bytes: 1000,
            ..Default::default()
        };
        let mut with = snap.clone();
        with.spool = Some(spool(7));
        assert!(b.update("box-s", &serde_json::to_vec(&with).unwrap()));
        with.spool = Some(spool(10));
        assert!(b.update("box-s", &serde_json::to_vec(&with).unwrap()));
        let Event::Health { per_box, .. } = b.health_event() else {
            unreachable!()
        };
        assert_eq!(per_box["box-s"].drops["spool.dropped"], 3);
        assert_eq!(per_box["box-s"].spool.unwrap().held, 5);
        assert!(!per_box["box-a"].drops.contains_key("spool.dropped"));
    }
}
