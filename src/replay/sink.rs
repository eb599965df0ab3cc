//! Where paced messages go: a channel subject (published into
//! `TSPI_REPLAY` with pipelined acks), or UDP datagrams to a target.

use super::channels::ChannelId;
use super::record::frame_from_body;
use super::source::HEADER_REPLAY_CHANNEL;
use super::{Item, ItemKind, ReplayError};
use crate::codec::DATAGRAM_LEN;
use crate::send::DatagramSender;
use async_nats::HeaderMap;
use async_nats::jetstream;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Header with the subject a replayed message was first published on (the
/// channel subject replaces it; the body is unchanged).
pub const HEADER_ORIGINAL_SUBJECT: &str = "Tspi-Subject";

/// Takes each message at its time. `emit` must not block for long: the
/// pacing thread calls it.
pub trait Sink: Send {
    fn emit(&mut self, item: &Item, epoch: u32) -> Result<(), ReplayError>;
    /// Wait (at most `wait`) for what is in flight; the final counts.
    fn finish(&mut self, wait: Duration) -> SinkStats;
}

/// What a sink did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SinkStats {
    pub sent: u64,
    /// Stored by JetStream (channel sink).
    pub acked: u64,
    /// Publishes that failed or were not acked.
    pub failed: u64,
    /// Tags re-emitted (channel sink) or left out (UDP sink).
    pub tags: u64,
    /// Bodies that could not be turned back into a datagram (UDP sink).
    pub unconvertible: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
    tags: AtomicU64,
    unconvertible: AtomicU64,
}

impl Counters {
    fn stats(&self) -> SinkStats {
        SinkStats {
            sent: self.sent.load(Relaxed),
            acked: self.acked.load(Relaxed),
            failed: self.failed.load(Relaxed),
            tags: self.tags.load(Relaxed),
            unconvertible: self.unconvertible.load(Relaxed),
        }
    }
}

/// Publishes into a channel: telemetry on `tspi.channel.<channel>` with
/// the body unchanged and `Nats-Msg-Id` `<original>:replay:<channel>`; tags
/// on `tag_subject` with `<tag id>:replay:<channel>` and a
/// `Tspi-Replay-Channel` header. Each publish is a JetStream publish whose
/// ack is awaited on the runtime, at most `acks_in_flight_max` at once; the
/// pacing thread only waits when that many are outstanding.
pub struct ChannelSink {
    handle: tokio::runtime::Handle,
    js: jetstream::Context,
    channel: ChannelId,
    channel_text: String,
    subject: String,
    tag_subject: String,
    permits: Arc<Semaphore>,
    permits_max: u32,
    counters: Arc<Counters>,
    id: String,
}

impl ChannelSink {
    pub fn new(
        handle: tokio::runtime::Handle,
        js: jetstream::Context,
        channel: ChannelId,
        tag_subject: String,
        acks_in_flight_max: usize,
    ) -> ChannelSink {
        let permits_max = acks_in_flight_max.clamp(1, 65_536) as u32;
        ChannelSink {
            handle,
            js,
            subject: channel.subject(),
            channel_text: channel.to_string(),
            channel,
            tag_subject,
            permits: Arc::new(Semaphore::new(permits_max as usize)),
            permits_max,
            counters: Arc::default(),
            id: String::with_capacity(96),
        }
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }
}

impl Sink for ChannelSink {
    fn emit(&mut self, item: &Item, epoch: u32) -> Result<(), ReplayError> {
        let mut headers = HeaderMap::new();
        let (subject, body) = match &item.kind {
            ItemKind::Telemetry {
                subject,
                msg_id,
                body,
                ..
            } => {
                self.channel.replay_msg_id(msg_id, epoch, &mut self.id);
                headers.insert(HEADER_ORIGINAL_SUBJECT, subject.as_str());
                (self.subject.clone(), body.clone())
            }
            ItemKind::Tag { id, body } => {
                self.channel.replay_msg_id(id, epoch, &mut self.id);
                self.counters.tags.fetch_add(1, Relaxed);
                (self.tag_subject.clone(), body.clone())
            }
        };
        headers.insert("Nats-Msg-Id", self.id.as_str());
        headers.insert(HEADER_REPLAY_CHANNEL, self.channel_text.as_str());
        let permits = self.permits.clone();
        let Ok(permit) = self.handle.block_on(permits.acquire_owned()) else {
            return Err(ReplayError::Sink("publisher closed".into()));
        };
        let publish = self
            .handle
            .block_on(self.js.publish_with_headers(subject, headers, body));
        self.counters.sent.fetch_add(1, Relaxed);
        match publish {
            Ok(ack) => {
                let counters = self.counters.clone();
                self.handle.spawn(async move {
                    match ack.await {
                        Ok(_) => counters.acked.fetch_add(1, Relaxed),
                        Err(e) => {
                            tracing::debug!(error = %e, "replay publish not acked");
                            counters.failed.fetch_add(1, Relaxed)
                        }
                    };
                    drop(permit);
                });
                Ok(())
            }
            Err(e) => {
                self.counters.failed.fetch_add(1, Relaxed);
                tracing::debug!(error = %e, "replay publish failed");
                Ok(())
            }
        }
    }

    fn finish(&mut self, wait: Duration) -> SinkStats {
        let permits = self.permits.clone();
        let n = self.permits_max;
        let _ = self.handle.block_on(async move {
            tokio::time::timeout(wait, permits.acquire_many_owned(n)).await
        });
        self.counters.stats()
    }
}

/// Sends each telemetry message as its 37-byte datagram to a UDP target,
/// like tcpreplay would. Tags have no datagram and are left out (counted).
pub struct UdpSink {
    sender: DatagramSender,
    counters: Counters,
}

impl UdpSink {
    pub fn connect(to: SocketAddr) -> Result<UdpSink, ReplayError> {
        let sender = DatagramSender::connect(to)
            .map_err(|e| ReplayError::Sink(format!("cannot open a UDP socket to {to}: {e}")))?;
        Ok(UdpSink {
            sender,
            counters: Counters::default(),
        })
    }
}

impl Sink for UdpSink {
    fn emit(&mut self, item: &Item, _epoch: u32) -> Result<(), ReplayError> {
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
        self.counters.stats()
    }
}

/// Collects what it is given with the time it came (tests, benches).
#[derive(Debug, Default)]
pub struct MemorySink {
    pub got: Vec<(u64, Item, u32)>,
}

impl Sink for MemorySink {
    fn emit(&mut self, item: &Item, epoch: u32) -> Result<(), ReplayError> {
        self.got
            .push((crate::clock::mono_ns(), item.clone(), epoch));
        Ok(())
    }

    fn finish(&mut self, _wait: Duration) -> SinkStats {
        SinkStats {
            sent: self.got.len() as u64,
            ..SinkStats::default()
        }
    }
}
