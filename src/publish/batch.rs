//! The fast-ingest driver: [`super::Publisher`]'s batch mode.
//!
//! One batch is open at a time. Frames are published into it as core
//! publishes (no per-message ack future: half the client CPU of the
//! pipelined mode, NOTES.md) while the flow window allows; every frame
//! stays owned here until a flow ack or the commit covers it. A batch is
//! committed when it is long (`batch_len_max`), old (`batch_age_max`), the
//! input has been idle for `idle_commit`, or on stop. Any gap, error or
//! timeout ends the batch; its unacknowledged frames go back to the retry
//! queue and are published again, same `Nats-Msg-Id`, in the next batch.

use super::fast::{self, Op, Reply, Window};
use super::{Pending, Publisher};
use async_nats::{Message, Subject, Subscriber};
use futures_util::{FutureExt as _, StreamExt as _};
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// Fast-ingest settings (from `[publish]`).
#[derive(Clone, Debug)]
pub struct FastConfig {
    /// Largest flow asked for: a flow ack at most every this many messages
    /// (1..=500).
    pub flow: u16,
    /// Target time between flow acks: each batch opens with the flow that
    /// gives this at the recent rate ([`fast::choose_flow`]); zero always
    /// asks for `flow`.
    pub ack_interval: Duration,
    /// Flow periods that may be unacknowledged at once (2 or 3).
    pub outstanding: u16,
    /// Commit and start a new batch after this many messages.
    pub batch_len_max: u64,
    /// ... or after this long.
    pub batch_age_max: Duration,
    /// ... or when no frame has arrived for this long (acks the tail that
    /// has not filled a flow period).
    pub idle_commit: Duration,
    /// No flow ack for this long while waiting for one: the batch is over.
    pub ack_timeout: Duration,
    /// The stream written to (for the duplicate count).
    pub stream: String,
}

/// How the batch mode ended.
pub(super) enum Outcome {
    /// Input closed and drained (or the drain timeout passed).
    Done,
    /// The server cannot do fast batches: continue pipelined with these.
    Fallback(VecDeque<(Instant, Pending)>),
}

/// One frame published into the open batch, not yet acknowledged.
struct Sent {
    pending: Pending,
    sent_ns: u64,
}

struct Batch {
    id: u64,
    window: Window,
    first_subject: Subject,
    /// `unacked[i]` has batch sequence `window.acked + 1 + i`.
    unacked: VecDeque<Sent>,
    opened: Instant,
    /// Last time the server said anything about this batch (or it opened).
    heard: Instant,
    last_ping: Instant,
    committing: bool,
    /// Stream's last sequence before this batch, when known.
    stream_before: Option<u64>,
}

impl Batch {
    /// Hand the unacknowledged frames back, oldest first, ahead of any
    /// other retries, due at `due`.
    fn requeue(self, due: Instant, retries: &mut VecDeque<(Instant, Pending)>) {
        for s in self.unacked.into_iter().rev() {
            retries.push_front((due, s.pending));
        }
    }
}

enum Failure {
    /// The batch is over; republish its unacknowledged frames.
    Batch(String),
    /// The server refuses fast batches altogether.
    Unsupported(String),
}

/// Error codes meaning "this server/stream will not do fast batches".
fn unsupported(code: u64) -> bool {
    // 10205: not enabled on the stream; 10206: reply pattern refused
    // (server older than the protocol).
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

impl Publisher {
    pub(super) async fn run_fast(&mut self, fc: &FastConfig) -> Outcome {
        let client = self.js.client();
        let version = client.server_info().version;
        if !server_supports_fast_batches(&version) {
            tracing::warn!(
                server = %version,
                "nats-server older than 2.14 has no fast-ingest batches: publishing pipelined"
            );
            return Outcome::Fallback(VecDeque::new());
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
        let mut stream_last = self.stream_last_sequence(&fc.stream).await;
        let mut retries: VecDeque<(Instant, Pending)> = VecDeque::new();
        let mut batch: Option<Batch> = None;
        let mut next_id = 1u64;
        let mut cbor = Vec::with_capacity(crate::message::BODY_LEN_MAX);
        let mut scratch = String::with_capacity(64);
        let mut reply = String::with_capacity(96);
        let mut ring_index = 0usize;
        let mut last_frame = Instant::now();
        let mut drain_deadline: Option<Instant> = None;
        let mut warned: Option<Instant> = None;
        // Frames taken since this instant: the rate the next flow is for.
        let mut rate_mark = (Instant::now(), self.stats.taken.load(Relaxed));
        let mut flow = fc.flow;

        loop {
            self.settle(&fc.stream, &mut stream_last).await;
            let mut failure: Option<Failure> = None;
            // 1. Replies that have arrived.
            while failure.is_none() {
                let Some(Some(msg)) = sub.next().now_or_never() else {
                    break;
                };
                failure = self.on_reply(&prefix, &msg, &mut batch, &mut stream_last);
            }

            // 2. Send while the window allows.
            let mut progressed = false;
            while failure.is_none() {
                if let Some(b) = &batch
                    && (b.committing || b.window.stalled() || b.window.sent >= fc.batch_len_max)
                {
                    break;
                }
                // Due retries first (they are oldest), then the rings.
                let now = Instant::now();
                let p = if retries.front().is_some_and(|(due, _)| *due <= now) {
                    retries.pop_front().map(|(_, p)| p)
                } else {
                    self.pop_ring(&mut ring_index, &mut cbor, &mut scratch)
                };
                let Some(mut p) = p else { break };
                progressed = true;
                last_frame = now;
                if batch.is_none() {
                    let taken = self.stats.taken.load(Relaxed);
                    let secs = now.duration_since(rate_mark.0).as_secs_f64();
                    let rate = if secs > 0.0 {
                        (taken - rate_mark.1) as f64 / secs
                    } else {
                        0.0
                    };
                    rate_mark = (now, taken);
                    let backlog = Self::ring_frames(&self.rings) + retries.len() as u64;
                    flow =
                        fast::choose_flow(rate, backlog, fc.outstanding, fc.ack_interval, fc.flow);
                }
                let b = batch.get_or_insert_with(|| {
                    let id = next_id;
                    next_id += 1;
                    Batch {
                        id,
                        window: Window::new(flow, fc.outstanding),
                        first_subject: p.subject.clone(),
                        unacked: VecDeque::new(),
                        opened: now,
                        heard: now,
                        last_ping: now,
                        committing: false,
                        stream_before: stream_last,
                    }
                });
                let (seq, op) = b.window.advance();
                fast::reply_subject(&prefix, b.id, b.window.flow_requested, seq, op, &mut reply);
                p.attempts += 1;
                let sent_ns = crate::clock::mono_ns();
                let r = client
                    .publish_with_reply_and_headers(
                        p.subject.clone(),
                        Subject::from(reply.as_str()),
                        p.headers.clone(),
                        p.body.clone(),
                    )
                    .await;
                if p.attempts == 1 {
                    self.latency
                        .record_receive_to_publish(sent_ns.saturating_sub(p.recv_mono_ns));
                }
                b.unacked.push_back(Sent {
                    pending: p,
                    sent_ns,
                });
                match r {
                    Ok(()) => {
                        self.stats.published.fetch_add(1, Relaxed);
                    }
                    Err(e) => {
                        failure = Some(Failure::Batch(format!("publish not sent: {e}")));
                        break;
                    }
                }
                if op == Op::Start {
                    failure = self
                        .await_confirmation(&prefix, &mut sub, &mut batch, &mut stream_last, fc)
                        .await;
                }
            }
            self.stats.in_flight.store(
                batch.as_ref().map_or(0, |b| b.unacked.len() as u64),
                Relaxed,
            );

            let closed = self.input_closed.load(Relaxed);
            let rings_empty = self.rings.iter().all(|r| r.is_empty());
            // 3. Commit when due.
            if failure.is_none()
                && let Some(b) = &mut batch
                && !b.committing
            {
                let now = Instant::now();
                let age = now.duration_since(b.opened);
                let backlog = Self::ring_frames(&self.rings);
                // A commit is one more message against the window, except
                // when the window is what is too small.
                let outgrown = fast::outgrown(&b.window, backlog, fc.flow, age);
                let due = outgrown
                    || (!b.window.stalled()
                        && (b.window.sent >= fc.batch_len_max
                            || age >= fc.batch_age_max
                            || (rings_empty && now.duration_since(last_frame) >= fc.idle_commit)
                            || (closed && rings_empty && retries.is_empty())));
                if due {
                    fast::reply_subject(
                        &prefix,
                        b.id,
                        b.window.flow_requested,
                        b.window.sent + 1,
                        Op::CommitEob,
                        &mut reply,
                    );
                    match client
                        .publish_with_reply(
                            b.first_subject.clone(),
                            Subject::from(reply.as_str()),
                            bytes::Bytes::new(),
                        )
                        .await
                    {
                        Ok(()) => {
                            b.committing = true;
                            b.heard = now;
                        }
                        Err(e) => failure = Some(Failure::Batch(format!("commit not sent: {e}"))),
                    }
                }
            }

            // 4. A batch the server has gone quiet on.
            if failure.is_none()
                && let Some(b) = &mut batch
                && (b.committing || !b.unacked.is_empty())
            {
                let quiet = b.heard.elapsed();
                if quiet >= fc.ack_timeout {
                    failure = Some(Failure::Batch(format!(
                        "no reply for {} ms",
                        quiet.as_millis()
                    )));
                } else if b.window.stalled()
                    && b.last_ping.elapsed() >= fc.ack_timeout / 3
                    && quiet >= fc.ack_timeout / 3
                {
                    // A lost flow ack: ask for it again.
                    b.last_ping = Instant::now();
                    fast::reply_subject(
                        &prefix,
                        b.id,
                        b.window.flow_requested,
                        b.window.sent,
                        Op::Ping,
                        &mut reply,
                    );
                    let _ = client
                        .publish_with_reply(
                            b.first_subject.clone(),
                            Subject::from(reply.as_str()),
                            bytes::Bytes::new(),
                        )
                        .await;
                }
            }

            // 5. Failures: the batch is over; its frames go round again.
            match failure {
                None => {}
                Some(Failure::Unsupported(why)) => {
                    tracing::error!(
                        reason = %why,
                        "the server refused fast-ingest batches: publishing pipelined"
                    );
                    if let Some(b) = batch.take() {
                        b.requeue(Instant::now(), &mut retries);
                    }
                    return Outcome::Fallback(retries);
                }
                Some(f @ Failure::Batch(_)) => {
                    self.fail_batch(
                        f,
                        &mut batch,
                        &mut retries,
                        &mut stream_last,
                        &fc.stream,
                        &mut warned,
                    )
                    .await;
                    continue;
                }
            }

            // 6. Done?
            if closed {
                if rings_empty && retries.is_empty() && batch.is_none() {
                    self.settle(&fc.stream, &mut stream_last).await;
                    return Outcome::Done;
                }
                let deadline =
                    *drain_deadline.get_or_insert_with(|| Instant::now() + self.cfg.drain_timeout);
                if Instant::now() >= deadline {
                    let unacked = batch.as_ref().map_or(0, |b| b.unacked.len());
                    let ring = Self::ring_frames(&self.rings);
                    let left = unacked as u64 + retries.len() as u64 + ring;
                    tracing::error!(
                        frames = left,
                        "drain timeout: frames not acknowledged by JetStream are counted as failed"
                    );
                    self.stats.failed.fetch_add(left, Relaxed);
                    self.stats.taken.fetch_add(ring, Relaxed);
                    return Outcome::Done;
                }
            }

            // 7. Wait for a reply, new frames, or a tick.
            if !progressed {
                self.latency.flush();
                let tick = tokio::time::sleep(super::IDLE_TICK.min(fc.idle_commit));
                tokio::pin!(tick);
                let wake = self.wake.clone();
                tokio::select! {
                    biased;
                    m = sub.next() => match m {
                        Some(msg) => {
                            if let Some(f) = self.on_reply(&prefix, &msg, &mut batch, &mut stream_last) {
                                self.fail_batch(f, &mut batch, &mut retries, &mut stream_last, &fc.stream, &mut warned)
                                    .await;
                            }
                        }
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

    /// End the open batch: its unacknowledged frames go back to the retry
    /// queue, to be published again with the same ids after a backoff.
    async fn fail_batch(
        &mut self,
        f: Failure,
        batch: &mut Option<Batch>,
        retries: &mut VecDeque<(Instant, Pending)>,
        stream_last: &mut Option<u64>,
        stream: &str,
        warned: &mut Option<Instant>,
    ) {
        let why = match f {
            Failure::Batch(w) | Failure::Unsupported(w) => w,
        };
        if let Some(b) = batch.take() {
            // Rate-limited: one line per 5 s however often it happens.
            if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                tracing::warn!(
                    reason = %why,
                    batch = b.id,
                    unacked = b.unacked.len(),
                    "fast batch ended early; republishing its unacknowledged frames with the same Nats-Msg-Id"
                );
                *warned = Some(Instant::now());
            }
            self.stats
                .retried
                .fetch_add(b.unacked.len() as u64, Relaxed);
            let attempts = b.unacked.front().map_or(1, |s| s.pending.attempts);
            b.requeue(Instant::now() + self.backoff(attempts), retries);
            // The failed batch may have stored some: the stream position
            // is unknown until asked again.
            *stream_last = self.stream_last_sequence(stream).await;
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
                self.stats.taken.fetch_add(1, Relaxed);
                return Some(self.encode(&r, cbor, scratch));
            }
            *ring_index = ring_index.wrapping_add(1);
        }
        None
    }

    /// After a batch's first message: wait for the server to confirm it
    /// (first flow ack) or refuse it.
    async fn await_confirmation(
        &mut self,
        prefix: &str,
        sub: &mut Subscriber,
        batch: &mut Option<Batch>,
        stream_last: &mut Option<u64>,
        fc: &FastConfig,
    ) -> Option<Failure> {
        let deadline = tokio::time::Instant::now() + fc.ack_timeout;
        loop {
            match batch {
                Some(b) if b.window.confirmed => return None,
                Some(_) => {}
                // Committed (or ended) while we waited.
                None => return None,
            }
            match tokio::time::timeout_at(deadline, sub.next()).await {
                Ok(Some(msg)) => {
                    if let Some(f) = self.on_reply(prefix, &msg, batch, stream_last) {
                        return Some(f);
                    }
                }
                Ok(None) => return Some(Failure::Batch("inbox subscription closed".into())),
                Err(_) => {
                    return Some(Failure::Batch(format!(
                        "batch not confirmed within {} ms",
                        fc.ack_timeout.as_millis()
                    )));
                }
            }
        }
    }

    /// Apply one server reply. Returns a failure that ends the batch.
    fn on_reply(
        &mut self,
        prefix: &str,
        msg: &Message,
        batch: &mut Option<Batch>,
        stream_last: &mut Option<u64>,
    ) -> Option<Failure> {
        let id = batch.as_ref()?.id;
        if fast::batch_of(prefix, msg.subject.as_str()) != Some(id) {
            // A late reply to a batch already given up.
            return None;
        }
        let reply = match fast::classify(&msg.payload) {
            Ok(r) => r,
            Err(e) => return Some(Failure::Batch(e)),
        };
        match reply {
            Reply::FlowAck { seq, flow } => {
                let b = batch.as_mut()?;
                b.heard = Instant::now();
                let newly = b.window.on_ack(seq, flow);
                let now = crate::clock::mono_ns();
                for _ in 0..newly {
                    let Some(s) = b.unacked.pop_front() else {
                        break;
                    };
                    self.ack_one(&s, now);
                }
                None
            }
            Reply::Gap { last_seq, seq } => Some(Failure::Batch(format!(
                "server missed batch messages {}..{seq}",
                last_seq + 1
            ))),
            Reply::Error {
                seq,
                code,
                description,
            } => {
                let what = format!("server error {code} at {seq:?}: {description}");
                if unsupported(code) {
                    Some(Failure::Unsupported(what))
                } else {
                    Some(Failure::Batch(what))
                }
            }
            Reply::Committed { stream_seq, count } => {
                let b = batch.take()?;
                self.stats.batches.fetch_add(1, Relaxed);
                let now = crate::clock::mono_ns();
                for s in &b.unacked {
                    self.ack_one(s, now);
                }
                match (b.stream_before, stream_seq) {
                    // The server did not say where the stream is (the
                    // batch ended on a duplicate): ask before the next one.
                    (Some(before), 0) => {
                        self.unsettled = Some((before, count));
                        *stream_last = None;
                        return None;
                    }
                    (Some(before), _) => {
                        let dups = fast::duplicates_in_batch(before, stream_seq, count);
                        self.stats.duplicate.fetch_add(dups, Relaxed);
                    }
                    (None, _) => {}
                }
                tracing::debug!(
                    batch = b.id,
                    stream_seq,
                    count,
                    before = ?b.stream_before,
                    "fast batch committed"
                );
                if count != b.window.sent {
                    tracing::debug!(
                        count,
                        sent = b.window.sent,
                        "commit count differs from messages sent"
                    );
                }
                *stream_last = Some(stream_seq.max(stream_last.unwrap_or(0)));
                None
            }
        }
    }

    fn ack_one(&mut self, s: &Sent, now_ns: u64) {
        self.stats.acked.fetch_add(1, Relaxed);
        self.latency
            .record_publish_to_ack(now_ns.saturating_sub(s.sent_ns));
        self.latency
            .record_receive_to_ack(now_ns.saturating_sub(s.pending.recv_mono_ns));
    }

    /// Count the duplicates of a committed batch the server gave no stream
    /// sequence for, from the stream's last sequence now.
    async fn settle(&mut self, stream: &str, stream_last: &mut Option<u64>) {
        if let Some((before, count)) = self.unsettled.take() {
            *stream_last = self.stream_last_sequence(stream).await;
            if let Some(now) = *stream_last {
                let dups = fast::duplicates_in_batch(before, now, count);
                self.stats.duplicate.fetch_add(dups, Relaxed);
            }
        }
    }

    /// The stream's last sequence now (for the duplicate count), if the
    /// server answers.
    async fn stream_last_sequence(&mut self, stream: &str) -> Option<u64> {
        let js = self.js.clone();
        let mut s = js.get_stream(stream).await.ok()?;
        let info = s.info().await.ok()?;
        Some(info.state.last_sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::server_supports_fast_batches;

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
