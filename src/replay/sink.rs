//! Where paced messages go: a channel subject (published into
//! `TSPI_REPLAY` with pipelined acks), or UDP datagrams to a target.

use super::channels::ChannelId;
use super::record::frame_from_body;
use super::source::HEADER_REPLAY_CHANNEL;
use super::{Item, ItemKind, ReplayError};
use crate::codec::DATAGRAM_LEN;
use crate::send::DatagramSender;
use async_nats::jetstream;
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// Header with the subject a replayed message was first published on (the
/// channel subject replaces it; the body is unchanged).
pub const HEADER_ORIGINAL_SUBJECT: &str = "Tspi-Subject";

/// Takes each message at its time. `emit` must not block for long: the
/// pacing thread calls it. The item is the sink's to keep, so a sink can
/// pass it on without copying, allocating or freeing on the pacing thread.
pub trait Sink: Send {
    fn emit(&mut self, item: Item, epoch: u32) -> Result<(), ReplayError>;
    /// Wait (at most `wait`) for what is in flight; the final counts.
    fn finish(&mut self, wait: Duration) -> SinkStats;
}

crate::counter_set! {
    /// What a sink did.
    #[derive(serde::Serialize)]
    pub struct SinkStats {
        sent => "Items handed to the sink",
        /// Stored by JetStream (channel sink).
        acked => "Publishes stored by JetStream",
        /// Publishes that failed or were not acked.
        failed => "Publishes that failed or were not acked",
        /// Tags re-emitted (channel sink) or left out (UDP sink).
        tags => "Tags re-emitted (channel) or left out (UDP)",
        /// Bodies that could not be turned back into a datagram (UDP sink).
        unconvertible => "Bodies that could not be turned back into a datagram",
    }
    /// A sink's counts, shared with its publisher task.
    live struct SinkCounts;
}

/// Publishes into a channel: telemetry on `tspi.channel.<channel>` with
/// the body unchanged and `Nats-Msg-Id` `<original>:replay:<channel>`; tags
/// on `tag_subject` with `<tag id>:replay:<channel>` and a
/// `Tspi-Replay-Channel` header.
///
/// The pacing thread only hands each item over a bounded queue (no
/// `block_on`, no task per message, and no allocation: the message, its
/// `Nats-Msg-Id` and headers are built on the publisher's side): one
/// publisher task on the runtime takes what is queued, publishes each as a
/// JetStream publish and keeps up to [`SinkLimits::acks_in_flight_max`]
/// acks outstanding. The pacing thread waits only when the queue is full
/// as well, that is when JetStream is `acks_in_flight_max + queue_len`
/// messages behind; that wait shows as pacing error (and in the pacer's
/// `sink_wait`). The queue is what keeps a stall downstream (a server
/// pause, a busy core) from moving the schedule: in the replay bench on 2
/// cores under `SCHED_FIFO`, deliveries fell up to 0.36 s behind, past
/// what 2048 in flight plus 2048 queued hold at 20k msgs/s.
///
/// Nothing is allocated or freed on the pacing thread: when it built the
/// headers (and dropped the item) itself, a `SCHED_FIFO` pacer waited up to
/// 3.5 ms inside the allocator for the threads it had preempted (replay
/// bench, sink wait max; 0.1-0.6 ms since).
pub struct ChannelSink {
    handle: tokio::runtime::Handle,
    queue: Option<tokio::sync::mpsc::Sender<Outgoing>>,
    publisher: Option<tokio::task::JoinHandle<()>>,
    subject: Subject,
    counters: Arc<SinkCounts>,
}

/// How far a [`ChannelSink`]'s publishing may fall behind its pacer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinkLimits {
    /// Publishes awaiting their JetStream ack at once.
    pub acks_in_flight_max: usize,
    /// Items handed over by the pacer and not yet published (about 0.5 KB
    /// each while queued).
    pub queue_len: usize,
}

impl SinkLimits {
    /// Queue length unless configured (`channels.sink_queue_len`'s
    /// default): 0.8 s at 20k msgs/s.
    pub const DEFAULT_QUEUE_LEN: usize =
        crate::config::limits::CHANNELS_SINK_QUEUE_LEN.default as usize;

    /// `acks_in_flight_max` acks, the default queue.
    pub fn acks(acks_in_flight_max: usize) -> SinkLimits {
        SinkLimits {
            acks_in_flight_max,
            queue_len: Self::DEFAULT_QUEUE_LEN,
        }
    }
}

/// One item on its way from the pacing thread to the publisher task.
struct Outgoing {
    item: Item,
    epoch: u32,
}

/// How the publisher task names what it publishes into a channel.
struct Naming {
    channel: ChannelId,
    channel_text: String,
    subject: Subject,
    tag_subject: Subject,
    /// Reused for each `Nats-Msg-Id`.
    id: String,
}

impl Naming {
    /// Subject, headers and body of `item` replayed in `epoch`.
    fn message(&mut self, item: Item, epoch: u32) -> (Subject, HeaderMap, Bytes) {
        let mut headers = HeaderMap::new();
        let (subject, body) = match item.kind {
            ItemKind::Telemetry {
                subject,
                msg_id,
                body,
                ..
            } => {
                self.channel.replay_msg_id(&msg_id, epoch, &mut self.id);
                headers.insert(HEADER_ORIGINAL_SUBJECT, subject.as_str());
                (self.subject.clone(), body)
            }
            ItemKind::Tag { id, body } => {
                self.channel.replay_msg_id(&id, epoch, &mut self.id);
                (self.tag_subject.clone(), body)
            }
        };
        headers.insert("Nats-Msg-Id", self.id.as_str());
        headers.insert(HEADER_REPLAY_CHANNEL, self.channel_text.as_str());
        (subject, headers, body)
    }
}

impl ChannelSink {
    /// Start the sink's publisher task on `handle`'s runtime.
    pub fn new(
        handle: tokio::runtime::Handle,
        js: jetstream::Context,
        channel: ChannelId,
        tag_subject: String,
        limits: SinkLimits,
    ) -> ChannelSink {
        let max = limits.acks_in_flight_max.clamp(1, 65_536);
        let (tx, rx) = tokio::sync::mpsc::channel(limits.queue_len.clamp(1, 1 << 20));
        let counters = Arc::<SinkCounts>::default();
        let subject = Subject::from(channel.subject());
        let naming = Naming {
            subject: subject.clone(),
            channel_text: channel.to_string(),
            channel,
            tag_subject: Subject::from(tag_subject),
            id: String::with_capacity(96),
        };
        let publisher = handle.spawn(publish_queued(js, rx, naming, counters.clone(), max));
        ChannelSink {
            handle,
            queue: Some(tx),
            publisher: Some(publisher),
            subject,
            counters,
        }
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }
}

/// The publisher task: publish what the pacing thread queued, in order,
/// with up to `max` acks outstanding; count acks and failures. Ends when
/// the queue is closed and every ack has come (or failed).
async fn publish_queued(
    js: jetstream::Context,
    mut rx: tokio::sync::mpsc::Receiver<Outgoing>,
    mut naming: Naming,
    counters: Arc<SinkCounts>,
    max: usize,
) {
    type Ack = std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<
                        jetstream::publish::PublishAck,
                        jetstream::context::PublishError,
                    >,
                > + Send,
        >,
    >;
    let mut in_flight: FuturesUnordered<Ack> = FuturesUnordered::new();
    let mut batch = Vec::with_capacity(256);
    let mut open = true;
    let count =
        |r: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>| match r {
            Ok(_) => {
                counters.acked.fetch_add(1, Relaxed);
            }
            Err(e) => {
                tracing::debug!(error = %e, "replay publish not acked");
                counters.failed.fetch_add(1, Relaxed);
            }
        };
    while open || !in_flight.is_empty() {
        let room = max.saturating_sub(in_flight.len()).min(256);
        tokio::select! {
            biased;
            Some(r) = in_flight.next(), if !in_flight.is_empty() => count(r),
            n = rx.recv_many(&mut batch, room), if open && room > 0 => {
                if n == 0 {
                    open = false;
                }
                for m in batch.drain(..) {
                    let (subject, headers, body) = naming.message(m.item, m.epoch);
                    match js.publish_with_headers(subject, headers, body).await {
                        Ok(ack) => in_flight.push(Box::pin(ack.into_future())),
                        Err(e) => {
                            tracing::debug!(error = %e, "replay publish failed");
                            counters.failed.fetch_add(1, Relaxed);
                        }
                    }
                }
            }
        }
    }
}

impl Sink for ChannelSink {
    fn emit(&mut self, item: Item, epoch: u32) -> Result<(), ReplayError> {
        let Some(queue) = &self.queue else {
            return Err(ReplayError::Sink("sink already finished".into()));
        };
        if matches!(item.kind, ItemKind::Tag { .. }) {
            self.counters.tags.fetch_add(1, Relaxed);
        }
        let m = Outgoing { item, epoch };
        let sent = match queue.try_send(m) {
            Ok(()) => Ok(()),
            // JetStream is `acks_in_flight_max + queue_len` behind: wait.
            Err(tokio::sync::mpsc::error::TrySendError::Full(m)) => {
                queue.blocking_send(m).map_err(|_| ())
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => Err(()),
        };
        sent.map_err(|()| ReplayError::Sink("the publisher task has ended".into()))?;
        self.counters.sent.fetch_add(1, Relaxed);
        Ok(())
    }

    fn finish(&mut self, wait: Duration) -> SinkStats {
        // Closing the queue lets the publisher task end once every ack is in.
        self.queue = None;
        if let Some(mut publisher) = self.publisher.take() {
            let done = self
                .handle
                .block_on(async { tokio::time::timeout(wait, &mut publisher).await.is_ok() });
            if !done {
                // What is still unacknowledged now counts as failed.
                publisher.abort();
                let s = self.counters.load();
                let left = s.sent.saturating_sub(s.acked + s.failed);
                tracing::warn!(
                    left,
                    "replay acks still missing at the end: counted as failed"
                );
                self.counters.failed.fetch_add(left, Relaxed);
            }
        }
        self.counters.load()
    }
}

/// Sends each telemetry message as its 37-byte datagram to a UDP target,
/// like tcpreplay would. Tags have no datagram and are left out (counted).
pub struct UdpSink {
    sender: DatagramSender,
    counters: SinkCounts,
}

impl UdpSink {
    pub fn connect(to: SocketAddr) -> Result<UdpSink, ReplayError> {
        let sender = DatagramSender::connect(to)
            .map_err(|e| ReplayError::Sink(format!("cannot open a UDP socket to {to}: {e}")))?;
        Ok(UdpSink {
            sender,
            counters: SinkCounts::default(),
        })
    }
}

impl Sink for UdpSink {
    fn emit(&mut self, item: Item, _epoch: u32) -> Result<(), ReplayError> {
        let ItemKind::Telemetry { body, datagram, .. } = &item.kind else {
            self.counters.tags.fetch_add(1, Relaxed);
            return Ok(());
        };
        let d: [u8; DATAGRAM_LEN] = match datagram {
            Some(d) => *d,
            None => match frame_from_body(body) {
                Ok(f) => f.encode(),
                Err(e) => {
                    self.counters.unconvertible.fetch_add(1, Relaxed);
                    tracing::debug!(error = %e, "body left out of the UDP replay");
                    return Ok(());
                }
            },
        };
        match self.sender.send(&[d]) {
            Ok(_) => self.counters.sent.fetch_add(1, Relaxed),
            // A refused send (nobody listening on loopback) loses only that
            // datagram, as on the wire.
            Err(_) => self.counters.failed.fetch_add(1, Relaxed),
        };
        Ok(())
    }

    fn finish(&mut self, _wait: Duration) -> SinkStats {
        self.counters.load()
    }
}

/// Collects what it is given with the time it came (tests, benches).
#[derive(Debug, Default)]
pub struct MemorySink {
    pub got: Vec<(u64, Item, u32)>,
}

impl Sink for MemorySink {
    fn emit(&mut self, item: Item, epoch: u32) -> Result<(), ReplayError> {
        self.got.push((crate::clock::mono_ns(), item, epoch));
        Ok(())
    }

    fn finish(&mut self, _wait: Duration) -> SinkStats {
        SinkStats {
            sent: self.got.len() as u64,
            ..SinkStats::default()
        }
    }
}
