//! Frames in doubt (published, no ack seen) after an outage: ask the
//! stream which it holds before publishing them again, so an outage
//! longer than the duplicate window cannot store a second copy.
//!
//! Two kinds: frames the running publisher waits to retry when the
//! connection comes back (settled in the state machine,
//! [`super::proto::settle`]), and frames a previous run handed to the spool
//! unacknowledged (flagged in doubt in their record), checked before the
//! drain publishes them. Either way the stream is read from shortly before
//! the oldest such frame's receive time (an in-doubt frame, if stored, was
//! stored after it was received), headers only, by an ordered consumer;
//! the ids found are settled as stored (acknowledged and duplicate), the
//! rest published again with the same id. When the stream cannot be read
//! (bounded in time and count), they are published again as before.

use super::{Pending, Publisher};
use crate::clock::mono_ns;
use crate::message;
use crate::spool::Drained;
use async_nats::jetstream::consumer::{DeliverPolicy, push::OrderedConfig};
use futures_util::StreamExt as _;
use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// The scan starts this long before the oldest in-doubt frame's receive
/// time: clock skew between this box and the servers.
const MARGIN_NS: u64 = 5_000_000_000;
/// The most messages one scan reads.
const SCAN_MAX: u64 = 5_000_000;
/// The longest one scan takes.
const SCAN_TIME: Duration = Duration::from_secs(10);
/// In-doubt frames from the spool checked per scan.
pub(super) const SPOOL_DOUBT_MAX: usize = 4096;

/// The `Nats-Msg-Id` of a frame.
fn msg_id(p: &Pending) -> String {
    let mut s = String::with_capacity(32);
    message::write_msg_id(&p.raw.frame, &mut s);
    s
}

/// Which of `wanted` the stream holds among the messages stored since
/// `since_unix_ns` (`None`: the stream could not be read).
async fn stored_among(
    js: &async_nats::jetstream::Context,
    since_unix_ns: u64,
    wanted: &HashSet<String>,
) -> Option<HashSet<String>> {
    let scan = async {
        let stream = js
            .get_stream(crate::contract::names::STREAM_TELEMETRY)
            .await
            .ok()?;
        let start = since_unix_ns.saturating_sub(MARGIN_NS);
        let start_time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(start)).ok()?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_subject: js.client().new_inbox(),
                deliver_policy: DeliverPolicy::ByStartTime { start_time },
                headers_only: true,
                ..OrderedConfig::default()
            })
            .await
            .ok()?;
        let mut messages = consumer.messages().await.ok()?;
        let mut found = HashSet::new();
        let mut read = 0u64;
        while found.len() < wanted.len() && read < SCAN_MAX {
            // Nothing more after a quiet second: the stream's end.
            let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), messages.next()).await
            else {
                break;
            };
            let m = m.ok()?;
            read += 1;
            if let Some(id) = m.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id"))
                && wanted.contains(id.as_str())
            {
                found.insert(id.as_str().to_owned());
            }
            if m.info().is_ok_and(|i| i.pending == 0) {
                break;
            }
        }
        Some(found)
    };
    tokio::time::timeout(SCAN_TIME, scan).await.ok().flatten()
}

/// The ids and the oldest receive time of `frames`.
fn wanted<'a>(frames: impl Iterator<Item = &'a Pending>) -> (HashSet<String>, u64) {
    let mut ids = HashSet::new();
    let mut oldest = u64::MAX;
    for p in frames {
        ids.insert(msg_id(p));
        oldest = oldest.min(p.raw.recv.unix_ns);
    }
    (ids, oldest)
}

/// What a machine offers for settling (both have these).
pub(super) trait Doubtful {
    fn doubtful(&self) -> Vec<&Pending>;
    fn settle(&mut self, now: u64, stored: &HashSet<String>) -> u64;
}

impl Doubtful for super::proto::fast::FastBatcher<Pending> {
    fn doubtful(&self) -> Vec<&Pending> {
        self.in_doubt().collect()
    }
    fn settle(&mut self, now: u64, stored: &HashSet<String>) -> u64 {
        self.settle_stored(now, |p| stored.contains(&msg_id(p)))
    }
}

impl Doubtful for super::proto::pipelined::Pipeline<Pending> {
    fn doubtful(&self) -> Vec<&Pending> {
        self.in_doubt().collect()
    }
    fn settle(&mut self, now: u64, stored: &HashSet<String>) -> u64 {
        self.settle_stored(now, |p| stored.contains(&msg_id(p)))
    }
}

impl Publisher {
    /// The connection is back after `outage_ns`: settle the frames in
    /// doubt that the stream holds.
    pub(super) async fn settle_after_outage(&mut self, m: &mut impl Doubtful, outage_ns: u64) {
        let (ids, oldest) = wanted(m.doubtful().into_iter());
        if ids.is_empty() {
            return;
        }
        match stored_among(&self.js, oldest, &ids).await {
            Some(found) => {
                let settled = m.settle(mono_ns(), &found);
                tracing::info!(
                    in_doubt = ids.len(),
                    stored = settled,
                    outage_ms = outage_ns / 1_000_000,
                    "reconnected: frames published without an ack that the stream holds are settled, the rest published again"
                );
            }
            None => tracing::warn!(
                in_doubt = ids.len(),
                "reconnected: the stream could not be read; frames in doubt are published again (the duplicate window decides)"
            ),
        }
    }

    /// Frames from the spool marked in doubt: those the stream holds are
    /// reported delivered, the rest queued for publishing.
    pub(super) async fn resolve_spool_doubt(&mut self, cbor: &mut Vec<u8>, scratch: &mut String) {
        if self.spool_doubt.is_empty() {
            return;
        }
        let doubt: Vec<Drained> = std::mem::take(&mut self.spool_doubt);
        let pending: Vec<(Pending, Drained)> = doubt
            .into_iter()
            .map(|d| {
                let mut p = self.encode(&d.received, cbor, scratch);
                p.origin = Some(d.at);
                (p, d)
            })
            .collect();
        let (ids, oldest) = wanted(pending.iter().map(|(p, _)| p));
        let found = stored_among(&self.js, oldest, &ids)
            .await
            .unwrap_or_else(|| {
                tracing::warn!(
                    frames = ids.len(),
                    "spool: the stream could not be read; frames in doubt are published again"
                );
                HashSet::new()
            });
        let mut resolved = 0;
        for (p, d) in pending {
            if found.contains(&msg_id(&p)) {
                self.spool_acked.push(d.at);
                resolved += 1;
            } else {
                self.spool_ready.push_back(p);
            }
        }
        self.stats.resolved.fetch_add(resolved, Relaxed);
        self.report_spool_acks();
    }
}
