//! The fast-ingest driver: [`super::Publisher`]'s batch mode.
//!
//! Every decision (when to open, commit or end a batch, what to publish
//! again, what is acknowledged) is the pure state machine's,
//! [`FastBatcher`] in [`super::proto::fast`]. This driver owns what the
//! machine may not: the async-nats client and its reply subscription, the
//! receive rings (it pops and encodes frames only when the machine wants
//! one), the clock (one [`mono_ns`] read per frame), the stream-info
//! request, the counters the reporter reads, and the logs. It shuttles:
//! events out of the machine, replies and send results into it, transmits
//! onto the client.

use super::proto::fast::{Event, FastBatcher, FastConfig, Frame, Queued, Transmit};
use super::proto::wire::server_supports_fast_batches;
use super::proto::{Backoff, Nanos};
use super::{Pending, Publisher};
use crate::clock::mono_ns;
use async_nats::{Client, Subject};
use futures_util::{FutureExt as _, StreamExt as _};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// How the batch mode ended.
pub(super) enum Outcome {
    /// Input closed and drained (or the drain timeout passed), with the
    /// frames given up at the deadline.
    Done(Vec<Queued<Pending>>),
    /// The server cannot do fast batches: continue pipelined with these.
    Fallback(Vec<Queued<Pending>>),
}

impl Frame for Pending {
    type Subject = Subject;
    fn subject(&self) -> &Subject {
        &self.subject
    }
}

/// Batch-failure warnings: at most one line per this long.
const WARN_INTERVAL_NS: Nanos = 5_000_000_000;

impl Publisher {
    pub(super) async fn run_fast(&mut self, fc: &FastConfig) -> Outcome {
        let client = self.js.client();
        let version = client.server_info().version;
        if !server_supports_fast_batches(&version) {
            tracing::warn!(
                server = %version,
                "nats-server older than 2.14 has no fast-ingest batches: publishing pipelined"
            );
            return Outcome::Fallback(Vec::new());
        }
        // One subscription for every batch of this publisher: `<prefix>.>`.
        let inbox = client.new_inbox();
        let prefix = format!("_FI{}", inbox.rsplit('.').next().unwrap_or(inbox.as_str()));
        let mut sub = loop {
            match client.subscribe(format!("{prefix}.>")).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(error = %e, "fast-batch inbox subscription failed; retrying");
                    tokio::time::sleep(self.cfg.retry_backoff_initial).await;
                }
            }
        };
        tracing::info!(
            flow = fc.flow,
            outstanding = fc.outstanding,
            batch_len_max = fc.batch_len_max,
            "publishing in fast-ingest batches"
        );
        let backoff = Backoff::new(self.cfg.retry_backoff_initial, self.cfg.retry_backoff_max);
        let mut m = FastBatcher::new(
            prefix,
            fc.clone(),
            backoff,
            self.cfg.drain_timeout,
            mono_ns(),
        );
        let mut cbor = Vec::with_capacity(crate::message::BODY_LEN_MAX);
        let mut scratch = String::with_capacity(64);
        let mut ring_index = 0usize;
        let mut warned: Option<Nanos> = None;
        let mut closed = false;
        let mut down: Option<Nanos> = None;

        loop {
            // 1. What the machine has to say.
            while let Some(e) = m.poll_event() {
                match e {
                    Event::StreamPositionWanted => {
                        // Bounded like a send: a request to a server that
                        // stopped reading waits on the client's buffer.
                        let ask = stream_last_sequence(self.js.clone(), &fc.stream);
                        let rings = &mut self.rings;
                        let machine = &mut m;
                        let input_closed = &self.input_closed;
                        let last = super::bounded_send(ask, move |now| {
                            if input_closed.load(Relaxed) {
                                machine.close_input(now);
                            }
                            machine.handle_timeout(now, Self::ring_frames(rings));
                            machine.is_done()
                        })
                        .await;
                        // None: given up at the drain deadline; its events follow.
                        if let Some(last) = last {
                            m.handle_stream_position(last);
                        }
                    }
                    Event::Committed {
                        batch,
                        stream_seq,
                        count,
                        sent,
                    } => {
                        tracing::debug!(batch, stream_seq, count, sent, "fast batch committed");
                    }
                    Event::Ended {
                        batch,
                        reason,
                        requeued,
                    } => {
                        let now = mono_ns();
                        if warned.is_none_or(|t| now.saturating_sub(t) > WARN_INTERVAL_NS) {
                            tracing::warn!(
                                reason = %reason,
                                batch,
                                unacked = requeued,
                                "fast batch ended early; republishing its unacknowledged frames with the same Nats-Msg-Id"
                            );
                            warned = Some(now);
                        }
                    }
                    Event::FellBack { reason } => {
                        tracing::error!(
                            reason = %reason,
                            "the server refused fast-ingest batches: publishing pipelined"
                        );
                        self.sync_stats(&m);
                        self.take_acks(&mut m);
                        let left = m.take_queued().collect();
                        self.sync_stats(&m);
                        return Outcome::Fallback(left);
                    }
                    Event::DrainTimedOut { failed } => {
                        tracing::error!(
                            frames = failed,
                            "drain timeout: frames not acknowledged by JetStream are counted as failed"
                        );
                    }
                    Event::Done => {
                        self.sync_stats(&m);
                        self.take_acks(&mut m);
                        return Outcome::Done(m.take_given_up());
                    }
                }
            }

            // 2. Replies that have arrived, the input's end, the timers.
            while let Some(Some(msg)) = sub.next().now_or_never() {
                m.handle_reply(mono_ns(), msg.subject.as_str(), &msg.payload);
            }
            let now = mono_ns();
            if !closed && self.input_closed.load(Relaxed) {
                m.close_input(now);
                closed = true;
            }
            m.handle_timeout(now, Self::ring_frames(&self.rings));

            // 3. Publish what the machine asks, taking frames as it wants
            // them; nothing while the connection is down (the client would
            // only buffer it, to send after the duplicate window perhaps).
            // When it is back, frames in doubt are checked first.
            self.resolve_spool_doubt(&mut cbor, &mut scratch).await;
            let connected = client.connection_state() == async_nats::connection::State::Connected;
            if !connected {
                down.get_or_insert(now);
            } else if let Some(since) = down.take() {
                self.settle_after_outage(&mut m, now.saturating_sub(since))
                    .await;
            }
            let progressed = connected
                && self
                    .transmit(&client, &mut m, &mut ring_index, &mut cbor, &mut scratch)
                    .await;
            self.sync_stats(&m);
            self.take_acks(&mut m);

            // 4. Wait for a reply, new frames, or a timer.
            if !progressed && !m.has_event() {
                self.latency.flush();
                let mut tick = super::IDLE_TICK.min(fc.idle_commit);
                if let Some(t) = m.poll_timeout() {
                    let now = mono_ns();
                    if t > now {
                        tick = tick.min(Duration::from_nanos(t - now));
                    }
                }
                let tick = tokio::time::sleep(tick);
                tokio::pin!(tick);
                let wake = self.wake.clone();
                tokio::select! {
                    biased;
                    msg = sub.next() => match msg {
                        Some(msg) => m.handle_reply(mono_ns(), msg.subject.as_str(), &msg.payload),
                        // The client is closing: nothing will be acked.
                        None => tick.await,
                    },
                    () = wake.notified() => {}
                    () = &mut tick => {}
                }
            } else {
                tokio::task::yield_now().await;
            }
        }
    }

    /// Publish every transmit the machine has, pushing ring frames into it
    /// while it wants them. Returns whether anything was taken or sent.
    async fn transmit(
        &mut self,
        client: &Client,
        m: &mut FastBatcher<Pending>,
        ring_index: &mut usize,
        cbor: &mut Vec<u8>,
        scratch: &mut String,
    ) -> bool {
        let mut progressed = false;
        loop {
            let now = mono_ns();
            if m.wants_frame()
                && let Some(p) = self.pop_ring(ring_index, cbor, scratch)
            {
                m.push(now, p);
                progressed = true;
            }
            let rings = &self.rings;
            let Some(t) = m.poll_transmit(now, || Self::ring_frames(rings)) else {
                return progressed;
            };
            progressed = true;
            let send = match t {
                Transmit::Message {
                    frame,
                    reply,
                    first_attempt,
                } => {
                    if first_attempt {
                        self.latency
                            .record_receive_to_publish(now.saturating_sub(frame.recv_mono_ns));
                    }
                    client
                        .publish_with_reply_and_headers(
                            frame.subject.clone(),
                            Subject::from(reply),
                            frame.headers.clone(),
                            frame.body.clone(),
                        )
                        .left_future()
                }
                Transmit::Control { subject, reply, .. } => client
                    .publish_with_reply(subject.clone(), Subject::from(reply), bytes::Bytes::new())
                    .right_future(),
            };
            // Moved into the check as unique borrows: a shared borrow of
            // the rings (not `Sync`) would make the future not `Send`.
            let rings = &mut self.rings;
            let machine = &mut *m;
            let input_closed = &self.input_closed;
            let sent = super::bounded_send(send, move |now| {
                if input_closed.load(Relaxed) {
                    machine.close_input(now);
                }
                machine.handle_timeout(now, Self::ring_frames(rings));
                machine.is_done()
            })
            .await;
            let Some(sent) = sent else {
                // The drain deadline passed with the server not reading:
                // the machine has given the send up with the rest.
                return true;
            };
            m.handle_send_result(now, sent.map_err(|e| e.to_string()));
        }
    }

    /// Next frame from the rings (round-robin), encoded.
    fn pop_ring(
        &mut self,
        ring_index: &mut usize,
        cbor: &mut Vec<u8>,
        scratch: &mut String,
    ) -> Option<Pending> {
        let n = self.rings.len();
        for _ in 0..n {
            let k = *ring_index % n;
            if let Ok(r) = self.rings[k].pop() {
                return Some(self.encode(&r, cbor, scratch));
            }
            *ring_index = ring_index.wrapping_add(1);
        }
        // The rings are empty: the spool's drain, paced by the spool thread.
        self.pop_spool(cbor, scratch)
    }

    /// Record the latency of every frame the machine has seen acknowledged.
    /// After [`Self::sync_stats`]: an ack is counted before its latency is
    /// recorded, so a `/metrics` scrape (histograms first, then counters)
    /// never shows more latencies than acks.
    fn take_acks(&mut self, m: &mut FastBatcher<Pending>) {
        while let Some(a) = m.poll_acked() {
            self.latency
                .record_publish_to_ack(a.at.saturating_sub(a.sent));
            self.latency
                .record_receive_to_ack(a.at.saturating_sub(a.frame.recv_mono_ns));
            self.note_acked(&a.frame);
        }
        self.report_spool_acks();
    }

    /// Mirror the machine's counters into the ones the reporter reads.
    fn sync_stats(&self, m: &FastBatcher<Pending>) {
        let c = m.counts();
        let s = &self.stats;
        s.taken.store(c.taken, Relaxed);
        s.published.store(c.published, Relaxed);
        s.acked.store(c.acked, Relaxed);
        s.duplicate.store(c.duplicate, Relaxed);
        s.retried.store(c.retried, Relaxed);
        s.failed.store(c.failed, Relaxed);
        s.batches.store(c.batches, Relaxed);
        s.in_flight.store(m.in_flight(), Relaxed);
    }
}

/// The stream's last sequence now (for the duplicate count), if the server
/// answers.
async fn stream_last_sequence(js: async_nats::jetstream::Context, stream: &str) -> Option<u64> {
    let mut s = js.get_stream(stream).await.ok()?;
    let info = s.info().await.ok()?;
    Some(info.state.last_sequence)
}
