//! A simulated JetStream for the fast-batch state machine's tests: it takes
//! [`Transmit`]s and answers the way nats-server 2.15 answers fast-ingest
//! batches, on a clock the test owns.
//!
//! Test-only (`#[cfg(test)]`) rather than a `sim` feature: only this
//! crate's unit tests drive it, and a feature would be one more build for
//! CI to run and a public API to keep. Promote it when a bench or another
//! crate needs it.
//!
//! What it does, per batch (`gap = fail`):
//! - the first message (op 0) opens the batch and is answered with the
//!   confirming flow ack `{"type":"ack","seq":0,"msgs":F}`;
//! - every message is stored unless its `Nats-Msg-Id` is already stored
//!   within the duplicate window (then it is counted, silently, as the
//!   server does); a flow ack follows every `F`-th message;
//! - a message out of sequence ends the batch with a gap reply; a message,
//!   ping or commit for a batch it does not know gets an error reply;
//! - a ping repeats the latest flow ack; the commit (op 3) is answered with
//!   `{"stream":..,"seq":S,"batch":..,"count":C}`, `S` 0 when the batch's
//!   last message was a duplicate (as 2.15 does).
//!
//! Faults, from a seeded generator: replies dropped, duplicated, delayed
//! by a random latency (so reordered); a message refused with an error;
//! a lower flow than asked; the server gone for a while (messages sent then
//! are lost or fail to send, replies due then are lost; a restart also
//! forgets the open batches), and a server that refuses fast batches
//! (error 10205) from some time on.

use super::Nanos;
use super::fast::{Frame, Transmit};
use super::wire::Op;
use std::collections::{BTreeMap, HashMap};

/// A frame in the tests: `idx` is its identity (the order it was taken),
/// `id` its `Nats-Msg-Id` (repeated ids model redundant receive), `body`
/// its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimFrame {
    pub idx: u64,
    pub id: u64,
    pub body: u64,
}

impl Frame for SimFrame {
    type Subject = u64;
    fn subject(&self) -> &u64 {
        &self.id
    }
}

/// The server gone from `from` until `until`.
#[derive(Clone, Debug)]
pub struct Outage {
    pub from: Nanos,
    pub until: Nanos,
    /// A restart: the open batches are forgotten.
    pub restart: bool,
    /// Publishes fail to send (a closed connection) rather than vanish (a
    /// client buffering for a server that never gets them).
    pub send_fails: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Faults {
    pub seed: u64,
    /// Replies lost, per thousand.
    pub drop_per_mille: u16,
    /// Replies delivered twice, per thousand.
    pub dup_per_mille: u16,
    /// Messages refused with an error (not stored), per thousand.
    pub error_per_mille: u16,
    /// Reply latency, drawn uniformly from `latency.0..=latency.1`.
    pub latency: (Nanos, Nanos),
    /// The server lowers every batch's flow to at most this.
    pub flow_cap: Option<u16>,
    pub outages: Vec<Outage>,
    /// From this time on, fast batches are refused (error 10205).
    pub refuse_from: Option<Nanos>,
}

/// The prefix the tests' reply subjects use.
pub const PREFIX: &str = "_FIsim";

/// Stands in for the server's "batch unknown" error (not one of the codes
/// that end the fast mode).
const UNKNOWN_BATCH: u64 = 10_999;
/// Stands in for a storage error on one message.
const STORE_FAILED: u64 = 10_077;

#[derive(Debug)]
struct SimBatch {
    flow: u16,
    /// The next sequence expected.
    next: u64,
    /// Messages received (stored or duplicate).
    count: u64,
    last_ack: u64,
    last_was_duplicate: bool,
}

#[derive(Debug)]
pub struct Sim {
    faults: Faults,
    rng: u64,
    dup_window: Nanos,
    /// Stored messages `(id, body)`; stream sequence = index + 1.
    pub stream: Vec<(u64, u64)>,
    stored_at: HashMap<u64, Nanos>,
    /// Messages found duplicate (not stored).
    pub duplicates: u64,
    /// Every id published, with its body.
    pub bodies: HashMap<u64, u64>,
    batches: HashMap<u64, SimBatch>,
    restarts_seen: usize,
    replies: BTreeMap<(Nanos, u64), (String, Vec<u8>)>,
    order: u64,
}

impl Sim {
    pub fn new(faults: Faults, dup_window: Nanos) -> Self {
        Sim {
            rng: faults.seed ^ 0x9e37_79b9_7f4a_7c15,
            faults,
            dup_window,
            stream: Vec::new(),
            stored_at: HashMap::new(),
            duplicates: 0,
            bodies: HashMap::new(),
            batches: HashMap::new(),
            restarts_seen: 0,
            replies: BTreeMap::new(),
            order: 0,
        }
    }

    /// splitmix64.
    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn chance(&mut self, per_mille: u16) -> bool {
        per_mille > 0 && self.next_u64() % 1000 < u64::from(per_mille)
    }

    fn outage(&self, now: Nanos) -> Option<&Outage> {
        self.faults
            .outages
            .iter()
            .find(|o| o.from <= now && now < o.until)
    }

    /// Apply restarts whose time has come: the open batches are forgotten.
    fn restarts(&mut self, now: Nanos) {
        let n = self
            .faults
            .outages
            .iter()
            .filter(|o| o.restart && o.from <= now)
            .count();
        if n > self.restarts_seen {
            self.restarts_seen = n;
            self.batches.clear();
        }
    }

    /// The times at which the server's state changes by itself.
    pub fn next_change(&self, now: Nanos) -> Option<Nanos> {
        let replies = self.replies.keys().next().map(|k| k.0);
        let outages = self
            .faults
            .outages
            .iter()
            .flat_map(|o| [o.from, o.until])
            .chain(self.faults.refuse_from)
            .filter(|t| *t > now)
            .min();
        [replies, outages].into_iter().flatten().min()
    }

    /// The stream's last sequence, if the server is there to say.
    pub fn position(&self, now: Nanos) -> Option<u64> {
        self.outage(now)
            .is_none()
            .then_some(self.stream.len() as u64)
    }

    /// The next reply due by `now`, if the server is there to send it.
    pub fn poll_reply(&mut self, now: Nanos) -> Option<(String, Vec<u8>)> {
        loop {
            let (&key, _) = self.replies.iter().next()?;
            if key.0 > now {
                return None;
            }
            let r = self.replies.remove(&key).expect("key just seen");
            if self.outage(key.0).is_none() {
                return Some(r);
            }
        }
    }

    fn reply(&mut self, now: Nanos, subject: &str, payload: String) {
        if self.chance(self.faults.drop_per_mille) {
            return;
        }
        let copies = if self.chance(self.faults.dup_per_mille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let (lo, hi) = self.faults.latency;
            let latency = lo + self.next_u64() % (hi.saturating_sub(lo) + 1);
            self.order += 1;
            self.replies.insert(
                (now + latency, self.order),
                (subject.to_string(), payload.clone().into_bytes()),
            );
        }
    }

    fn error(&mut self, now: Nanos, subject: &str, seq: Option<u64>, code: u64, what: &str) {
        let seq = seq.map_or(String::new(), |s| format!(r#""seq":{s},"#));
        self.reply(
            now,
            subject,
            format!(
                r#"{{"type":"err",{seq}"error":{{"code":400,"err_code":{code},"description":"{what}"}}}}"#
            ),
        );
    }

    /// A publish from the client. `Err` when it could not be sent.
    pub fn receive(&mut self, now: Nanos, t: &Transmit<'_, SimFrame>) -> Result<(), String> {
        self.restarts(now);
        if let Some(o) = self.outage(now) {
            return if o.send_fails {
                Err("disconnected".into())
            } else {
                Ok(())
            };
        }
        let (reply, frame) = match t {
            Transmit::Message { frame, reply, .. } => (*reply, Some(*frame)),
            Transmit::Control { reply, .. } => (*reply, None),
        };
        if let Some(f) = frame {
            let body = *self.bodies.entry(f.id).or_insert(f.body);
            assert_eq!(
                body, f.body,
                "Nats-Msg-Id {} published with two bodies",
                f.id
            );
        }
        // <prefix>.b<batch>.<flow>.fail.<seq>.<op>.$FI
        let tokens: Vec<&str> = reply.split('.').collect();
        assert_eq!(tokens.len(), 7, "reply subject {reply}");
        assert_eq!(tokens[0], PREFIX);
        assert_eq!(tokens[3], "fail");
        assert_eq!(tokens[6], "$FI");
        let batch: u64 = tokens[1][1..].parse().expect("batch id");
        let flow: u16 = tokens[2].parse().expect("flow");
        let seq: u64 = tokens[4].parse().expect("seq");
        let op: u8 = tokens[5].parse().expect("op");
        let op = [Op::Start, Op::Append, Op::Commit, Op::CommitEob, Op::Ping][usize::from(op)];
        if self.faults.refuse_from.is_some_and(|t| t <= now) {
            if op == Op::Start {
                self.reply(
                    now,
                    reply,
                    r#"{"error":{"code":400,"err_code":10205,"description":"batch publish not enabled"}}"#
                        .into(),
                );
            }
            return Ok(());
        }
        if op == Op::Start {
            assert!(frame.is_some() && seq == 1, "a start is message 1");
            assert!(!self.batches.contains_key(&batch), "batch id reused");
            let flow = self.faults.flow_cap.map_or(flow, |c| flow.min(c)).max(1);
            self.batches.insert(
                batch,
                SimBatch {
                    flow,
                    next: 1,
                    count: 0,
                    last_ack: 0,
                    last_was_duplicate: false,
                },
            );
            self.reply(
                now,
                reply,
                format!(r#"{{"type":"ack","seq":0,"msgs":{flow}}}"#),
            );
        }
        let Some(b) = self.batches.get(&batch) else {
            self.error(now, reply, Some(seq), UNKNOWN_BATCH, "sim: batch unknown");
            return Ok(());
        };
        let (flow, last_ack) = (b.flow, b.last_ack);
        if op == Op::Ping {
            self.reply(
                now,
                reply,
                format!(r#"{{"type":"ack","seq":{last_ack},"msgs":{flow}}}"#),
            );
            return Ok(());
        }
        if seq != b.next {
            let last = b.next - 1;
            self.batches.remove(&batch);
            self.reply(
                now,
                reply,
                format!(r#"{{"type":"gap","last_seq":{last},"seq":{seq}}}"#),
            );
            return Ok(());
        }
        if op == Op::CommitEob {
            let b = self.batches.remove(&batch).expect("looked up above");
            let stream_seq = if b.last_was_duplicate {
                0
            } else {
                self.stream.len() as u64
            };
            self.reply(
                now,
                reply,
                format!(
                    r#"{{"stream":"SIM","seq":{stream_seq},"batch":"b{batch}","count":{}}}"#,
                    b.count
                ),
            );
            return Ok(());
        }
        let f = frame.expect("a message op carries a frame");
        if self.chance(self.faults.error_per_mille) {
            self.batches.remove(&batch);
            self.error(now, reply, Some(seq), STORE_FAILED, "sim: store failed");
            return Ok(());
        }
        let duplicate = self
            .stored_at
            .get(&f.id)
            .is_some_and(|t| now.saturating_sub(*t) < self.dup_window);
        if duplicate {
            self.duplicates += 1;
        } else {
            self.stream.push((f.id, f.body));
            self.stored_at.insert(f.id, now);
        }
        let b = self.batches.get_mut(&batch).expect("looked up above");
        b.next += 1;
        b.count += 1;
        b.last_was_duplicate = duplicate;
        if seq.is_multiple_of(u64::from(b.flow)) {
            b.last_ack = seq;
            self.reply(
                now,
                reply,
                format!(r#"{{"type":"ack","seq":{seq},"msgs":{flow}}}"#),
            );
        }
        Ok(())
    }
}
