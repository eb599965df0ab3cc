//! Property tests: the fast-batch state machine against the simulated
//! JetStream ([`super::sim`]), time under the test's control. Each case
//! runs seconds of simulated traffic in a few milliseconds.

use super::fast::{Event, FastBatcher, FastConfig, Transmit};
use super::sim::{Faults, Outage, PREFIX, Sim, SimFrame};
use super::wire::Op;
use super::{Backoff, Nanos};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

const MS: Nanos = 1_000_000;
/// The sim's duplicate window: longer than any run here, so "stored exactly
/// once" is the claim the appliance makes (within the window).
const DUP_WINDOW: Nanos = 600_000 * MS;
const STEPS_MAX: usize = 1_000_000;

#[derive(Clone, Debug)]
struct Case {
    cfg: FastConfig,
    backoff: Backoff,
    /// (gap before it, msg id) per frame; the body is a function of the id.
    frames: Vec<(Nanos, u64)>,
    faults: Faults,
}

fn body_of(id: u64) -> u64 {
    id.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0xdead_beef
}

/// How a run ended.
#[derive(Debug)]
struct End {
    /// Frames the machine handed back on fall-back.
    handed_back: Vec<SimFrame>,
    fell_back: bool,
    now: Nanos,
}

struct Run {
    m: FastBatcher<SimFrame>,
    sim: Sim,
    now: Nanos,
    ring: VecDeque<SimFrame>,
    arrivals: VecDeque<(Nanos, SimFrame)>,
    acked: HashSet<u64>,
    frames: u64,
}

impl Run {
    fn new(case: &Case) -> Self {
        let mut t = 0;
        let arrivals = case
            .frames
            .iter()
            .enumerate()
            .map(|(i, &(gap, id))| {
                t += gap;
                (
                    t,
                    SimFrame {
                        idx: i as u64,
                        id,
                        body: body_of(id),
                    },
                )
            })
            .collect();
        Run {
            m: FastBatcher::new(
                PREFIX.to_string(),
                case.cfg.clone(),
                case.backoff,
                Duration::from_secs(3_600),
                0,
            ),
            sim: Sim::new(case.faults.clone(), DUP_WINDOW),
            now: 0,
            ring: VecDeque::new(),
            arrivals,
            acked: HashSet::new(),
            frames: case.frames.len() as u64,
        }
    }

    /// The account balances, nothing is acked twice, and nothing is acked
    /// that the stream does not hold.
    fn check(&mut self) {
        assert!(self.m.balanced(), "{:?}", self.m.counts());
        while let Some(a) = self.m.poll_acked() {
            assert!(self.acked.insert(a.frame.idx), "acked twice: {:?}", a.frame);
            assert!(a.sent <= a.at && a.at == self.now);
            assert!(
                self.sim.stream.iter().any(|(id, _)| *id == a.frame.id),
                "acked but not stored: {:?}",
                a.frame
            );
        }
    }

    fn run(mut self) -> (Self, End) {
        let mut closed = false;
        for _ in 0..STEPS_MAX {
            while self.arrivals.front().is_some_and(|(t, _)| *t <= self.now) {
                let (_, f) = self.arrivals.pop_front().expect("front seen");
                self.ring.push_back(f);
            }
            while let Some(e) = self.m.poll_event() {
                match e {
                    Event::StreamPositionWanted => {
                        let p = self.sim.position(self.now);
                        self.m.handle_stream_position(p);
                    }
                    Event::FellBack { .. } => {
                        let handed_back = self.m.take_queued().map(|q| q.frame).collect();
                        let now = self.now;
                        self.check();
                        return (
                            self,
                            End {
                                handed_back,
                                fell_back: true,
                                now,
                            },
                        );
                    }
                    Event::Done => {
                        self.check();
                        let now = self.now;
                        return (
                            self,
                            End {
                                handed_back: Vec::new(),
                                fell_back: false,
                                now,
                            },
                        );
                    }
                    Event::Committed { .. } | Event::Ended { .. } | Event::DrainTimedOut { .. } => {
                    }
                }
            }
            while let Some((subject, payload)) = self.sim.poll_reply(self.now) {
                self.m.handle_reply(self.now, &subject, &payload);
                self.check();
            }
            if !closed && self.arrivals.is_empty() {
                self.m.close_input(self.now);
                closed = true;
            }
            self.m.handle_timeout(self.now, self.ring.len() as u64);
            self.check();
            loop {
                if self.m.wants_frame()
                    && let Some(f) = self.ring.pop_front()
                {
                    self.m.push(self.now, f);
                }
                let ring = self.ring.len() as u64;
                let Some(t) = self.m.poll_transmit(self.now, || ring) else {
                    break;
                };
                if let Transmit::Message { frame, .. } = &t {
                    assert!(frame.idx < self.frames);
                }
                let r = self.sim.receive(self.now, &t);
                self.m.handle_send_result(self.now, r);
                self.check();
            }
            if self.m.has_event() {
                continue;
            }
            let now = self.now;
            let next = [
                self.sim.next_change(now),
                self.m.poll_timeout(),
                self.arrivals.front().map(|(t, _)| *t),
            ]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min();
            self.now = next.unwrap_or(now + MS);
        }
        panic!("no end after {STEPS_MAX} steps: {:?}", self.m.counts());
    }
}

fn outage() -> impl Strategy<Value = Outage> {
    (0..3_000u64, 1..4_000u64, any::<bool>(), any::<bool>()).prop_map(
        |(from, len, restart, send_fails)| Outage {
            from: from * MS,
            until: (from + len) * MS,
            restart,
            send_fails,
        },
    )
}

fn faults(faulty: bool) -> impl Strategy<Value = Faults> {
    let per_mille = if faulty { 0..200u16 } else { 0..1u16 };
    let outages = proptest::collection::vec(outage(), 0..if faulty { 3 } else { 1 });
    (
        any::<u64>(),
        per_mille.clone(),
        per_mille.clone(),
        per_mille,
        (0..5u64, 0..if faulty { 60u64 } else { 5 }),
        proptest::option::of(1..10u16),
        outages,
    )
        .prop_map(
            |(seed, drop, dup, error, (lo, extra), flow_cap, outages)| Faults {
                seed,
                drop_per_mille: drop,
                dup_per_mille: dup,
                error_per_mille: error,
                latency: (lo * MS / 10, (lo + extra) * MS / 10 + MS / 10),
                flow_cap,
                outages,
                refuse_from: None,
            },
        )
}

fn case(faulty: bool) -> impl Strategy<Value = Case> {
    (
        1..=12u16,
        prop_oneof![Just(Duration::ZERO), Just(Duration::from_micros(250))],
        2..=3u16,
        1..=80u64,
        // Few distinct ids among many frames: redundant receive.
        proptest::collection::vec((0..3 * MS, 0..400u64), 0..300),
        faults(faulty),
    )
        .prop_map(
            |(flow, ack_interval, outstanding, batch_len_max, frames, faults)| Case {
                cfg: FastConfig {
                    flow,
                    ack_interval,
                    outstanding,
                    batch_len_max,
                    batch_age_max: Duration::from_millis(50),
                    idle_commit: Duration::from_millis(5),
                    ack_timeout: Duration::from_millis(200),
                    stream: "SIM".into(),
                },
                backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(200)),
                frames,
                faults,
            },
        )
}

/// After the drain: every frame acked once, every distinct id stored once.
fn assert_exactly_once(run: &Run, end: &End, case: &Case) {
    let c = run.m.counts();
    assert!(!end.fell_back);
    assert!(
        end.now < DUP_WINDOW,
        "the run outlasted the duplicate window"
    );
    assert_eq!(c.failed, 0, "{c:?}");
    assert_eq!(c.taken, run.frames, "{c:?}");
    assert_eq!(c.acked, run.frames, "{c:?}");
    assert_eq!(run.acked.len() as u64, run.frames);
    assert_eq!(run.m.in_flight() + run.m.queued(), 0);
    let mut stored: HashMap<u64, u64> = HashMap::new();
    for (id, body) in &run.sim.stream {
        assert_eq!(*body, body_of(*id));
        *stored.entry(*id).or_default() += 1;
    }
    let ids: HashSet<u64> = case.frames.iter().map(|(_, id)| *id).collect();
    assert_eq!(stored.len(), ids.len(), "some id never stored");
    assert!(stored.values().all(|n| *n == 1), "an id stored twice");
    assert!(
        c.duplicate <= run.sim.duplicates,
        "{c:?} vs {}",
        run.sim.duplicates
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Without faults: every frame is acked once and stored once, and the
    /// duplicate count is exact.
    #[test]
    fn clean_server_stores_each_id_once(case in case(false)) {
        let (run, end) = Run::new(&case).run();
        assert_exactly_once(&run, &end, &case);
        prop_assert_eq!(run.m.counts().duplicate, run.sim.duplicates);
        prop_assert_eq!(run.m.counts().retried, 0);
    }

    /// Acks dropped, duplicated, delayed and reordered; messages refused;
    /// the server gone (restarted or not) and back: the account balances at
    /// every step, and once it drains every frame is acked once and every
    /// id stored once.
    #[test]
    fn faulty_server_still_stores_each_id_once(case in case(true)) {
        let (run, end) = Run::new(&case).run();
        assert_exactly_once(&run, &end, &case);
    }

    /// A server that starts refusing fast batches: the machine falls back
    /// and hands back every frame taken and not acked, each once.
    #[test]
    fn fall_back_hands_back_every_unacked_frame(
        mut case in case(true),
        refuse_ms in 0..2_000u64,
    ) {
        case.faults.refuse_from = Some(refuse_ms * MS);
        let (run, end) = Run::new(&case).run();
        let c = run.m.counts();
        if end.fell_back {
            let back: HashSet<u64> = end.handed_back.iter().map(|f| f.idx).collect();
            prop_assert_eq!(back.len(), end.handed_back.len(), "handed back twice");
            prop_assert!(back.is_disjoint(&run.acked), "handed back and acked");
            prop_assert_eq!(c.taken, c.acked + back.len() as u64);
            prop_assert_eq!(c.handed_back, back.len() as u64);
            prop_assert_eq!(c.failed, 0);
            let mut all: Vec<u64> = back.union(&run.acked).copied().collect();
            all.sort_unstable();
            prop_assert_eq!(all, (0..c.taken).collect::<Vec<_>>());
        } else {
            // Done before the refusal.
            assert_exactly_once(&run, &end, &case);
        }
    }
}

/// A machine of flow `flow` (2 batches outstanding, up to 100 frames, a
/// 200 ms ack timeout) that drains for `drain`.
fn machine(flow: u16, drain: Duration) -> FastBatcher<SimFrame> {
    let cfg = FastConfig {
        flow,
        ack_interval: Duration::ZERO,
        outstanding: 2,
        batch_len_max: 100,
        batch_age_max: Duration::from_millis(50),
        idle_commit: Duration::from_millis(5),
        ack_timeout: Duration::from_millis(200),
        stream: "SIM".into(),
    };
    let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(200));
    FastBatcher::<SimFrame>::new(PREFIX.into(), cfg, backoff, drain, 0)
}

/// A drain that cannot finish (the server never answers) gives up at the
/// drain timeout and counts everything in hand and in the rings as failed.
#[test]
fn drain_timeout_fails_what_is_left() {
    let mut m = machine(4, Duration::from_secs(1));
    assert_eq!(m.poll_event(), Some(Event::StreamPositionWanted));
    m.handle_stream_position(None);
    assert!(m.wants_frame());
    m.push(
        0,
        SimFrame {
            idx: 0,
            id: 0,
            body: 0,
        },
    );
    let t = m.poll_transmit(0, || 10).expect("a message");
    assert!(matches!(
        t,
        Transmit::Message {
            first_attempt: true,
            ..
        }
    ));
    m.handle_send_result(0, Ok(()));
    // Unconfirmed: one message until the server answers.
    assert!(!m.wants_frame());
    m.close_input(0);
    let mut now = 0;
    loop {
        now += 50 * MS;
        m.handle_timeout(now, 10);
        while m.poll_transmit(now, || 10).is_some() {
            m.handle_send_result(now, Err("down".into()));
        }
        while let Some(e) = m.poll_event() {
            match e {
                Event::StreamPositionWanted => m.handle_stream_position(None),
                Event::DrainTimedOut { failed } => assert_eq!(failed, 11),
                Event::Done => {
                    let c = m.counts();
                    assert_eq!((c.taken, c.failed, c.acked), (11, 11, 0));
                    assert!(m.balanced());
                    return;
                }
                _ => {}
            }
        }
        assert!(now < 10_000 * MS, "no end");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// The server goes away (SIGSTOP) with frames in hand and in the
    /// rings: its sends vanish, or the client's buffer fills and one send
    /// never returns. The drain still ends by its deadline (plus the one
    /// check interval the driver polls at), with every frame not
    /// acknowledged counted failed, rings included, and the account
    /// balanced at every step.
    #[test]
    fn drain_with_the_server_gone_ends_by_the_deadline(
        frames in 0..400u64,
        ring in 0..20_000u64,
        up_ms in 0..150u64,
        hang_after in prop::option::of(0..40u32),
        drain_ms in 1..3_000u64,
        close_after_ms in 0..100u64,
        tick_ms in 1..60u64,
    ) {
        let cfg = FastConfig {
            flow: 4,
            ack_interval: Duration::ZERO,
            outstanding: 2,
            batch_len_max: 100,
            batch_age_max: Duration::from_millis(50),
            idle_commit: Duration::from_millis(5),
            ack_timeout: Duration::from_millis(200),
            stream: "SIM".into(),
        };
        let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(200));
        let mut m = FastBatcher::<SimFrame>::new(
            PREFIX.into(),
            cfg,
            backoff,
            Duration::from_millis(drain_ms),
            0,
        );
        let mut sim = Sim::new(Faults::default(), DUP_WINDOW);
        let total = frames + ring;
        let gone_at = up_ms * MS;
        let close_at = gone_at + close_after_ms * MS;
        let (mut now, mut next, mut gone_sends, mut acked) = (0, 0u64, 0u32, 0u64);
        let mut acked_ids = Vec::new();
        let mut hanging = false;
        let mut deadline = None;
        loop {
            let mut done = false;
            while let Some(e) = m.poll_event() {
                match e {
                    Event::StreamPositionWanted => {
                        let p = if now < gone_at { sim.position(now) } else { None };
                        m.handle_stream_position(p);
                    }
                    Event::FellBack { reason } => panic!("fell back: {reason}"),
                    Event::Done => done = true,
                    _ => {}
                }
            }
            if done {
                break;
            }
            if now < gone_at {
                while let Some((s, p)) = sim.poll_reply(now) {
                    m.handle_reply(now, &s, &p);
                }
            }
            if deadline.is_none() && now >= close_at {
                m.close_input(now);
                deadline = m.drain_deadline();
            }
            m.handle_timeout(now, total - next);
            if m.is_done() {
                // The driver drops the send it was waiting on.
                hanging = false;
            }
            while !hanging {
                if m.wants_frame() && next < total {
                    m.push(now, SimFrame { idx: next, id: next, body: body_of(next) });
                    next += 1;
                }
                let left = total - next;
                let Some(t) = m.poll_transmit(now, || left) else { break };
                if now < gone_at {
                    let r = sim.receive(now, &t);
                    m.handle_send_result(now, r);
                } else if hang_after.is_some_and(|k| gone_sends >= k) {
                    hanging = true;
                } else {
                    gone_sends += 1;
                    m.handle_send_result(now, Ok(()));
                }
            }
            while let Some(a) = m.poll_acked() {
                acked += 1;
                acked_ids.push(a.frame.idx);
            }
            prop_assert!(m.balanced(), "{:?}", m.counts());
            now += tick_ms * MS;
            if let Some(d) = deadline {
                prop_assert!(now <= d + 2 * tick_ms * MS, "not done by the deadline");
            }
        }
        let c = m.counts();
        prop_assert_eq!(c.acked, acked);
        // Every frame once: acked, given up (handed back for the spool),
        // or never taken from the rings.
        let mut all = acked_ids;
        all.extend(m.take_given_up().into_iter().map(|q| q.frame.idx));
        all.extend(next..total);
        all.sort_unstable();
        prop_assert_eq!(all, (0..total).collect::<Vec<_>>());
        prop_assert_eq!(c.acked + c.failed, total, "{:?}", c);
        prop_assert_eq!(c.taken, total);
        if let Some(d) = deadline {
            prop_assert!(now <= d + 2 * tick_ms * MS);
        }
    }
}

/// The parameters of a case `faulty_server_still_stores_each_id_once` once
/// failed on (flow 11, outstanding 3, batches of 42, fault seed
/// 13110581200220141680, replies dropped 194‰ and duplicated 70‰, messages
/// refused 175‰; its frames and outages were not kept), over a dozen
/// traffic patterns. A batch keeps only what a flow ack confirmed before it
/// ended, and at 17.5% refused a flow ack needs 11 messages in a row
/// stored; retried at the same flow, each batch kept next to nothing: these
/// runs took 85 to 602 simulated seconds, ~200 publishes per frame (one
/// past the 600 s duplicate window). Halving the flow after each failed
/// batch makes them take 1 to 3 s, ~1.6 publishes per frame.
#[test]
fn lossy_server_shrinks_the_flow_and_finishes_within_the_window() {
    let mut state: u64 = 1;
    let mut rnd = || {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for k in 0..12u64 {
        let n = 200 + rnd() % 100;
        let frames = (0..n).map(|_| (rnd() % (3 * MS), rnd() % 400)).collect();
        let case = Case {
            cfg: FastConfig {
                flow: 11,
                ack_interval: if k % 2 == 0 {
                    Duration::ZERO
                } else {
                    Duration::from_micros(250)
                },
                outstanding: 3,
                batch_len_max: 42,
                batch_age_max: Duration::from_millis(50),
                idle_commit: Duration::from_millis(5),
                ack_timeout: Duration::from_millis(200),
                stream: "SIM".into(),
            },
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(200)),
            frames,
            faults: Faults {
                seed: 13_110_581_200_220_141_680 ^ k,
                drop_per_mille: 194,
                dup_per_mille: 70,
                error_per_mille: 175,
                latency: (0, 3 * MS),
                flow_cap: None,
                outages: Vec::new(),
                refuse_from: None,
            },
        };
        let (run, end) = Run::new(&case).run();
        assert_exactly_once(&run, &end, &case);
    }
}

/// A batch that ends early halves the flow the next one opens with (to
/// half the failed batch's flow, at least 1); each commit doubles it back,
/// up to the configured flow.
#[test]
fn failed_batches_halve_the_flow_and_commits_restore_it() {
    let mut m = machine(8, Duration::from_secs(60));
    let (mut now, mut next_idx) = (0, 0);
    let mut opened = Vec::new();
    for i in 0..7 {
        // Open a batch: with the refused frame once its backoff is over,
        // else with a new one.
        let (reply, flow) = loop {
            now += MS;
            m.handle_timeout(now, 0);
            while let Some(e) = m.poll_event() {
                if e == Event::StreamPositionWanted {
                    m.handle_stream_position(Some(0));
                }
            }
            if m.wants_frame() && m.queued() == 0 {
                let body = body_of(next_idx);
                m.push(
                    now,
                    SimFrame {
                        idx: next_idx,
                        id: next_idx,
                        body,
                    },
                );
                next_idx += 1;
            }
            if let Some(t) = m.poll_transmit(now, || 0) {
                let Transmit::Message { reply, .. } = t else {
                    panic!("a batch opens with a message")
                };
                let reply = reply.to_string();
                m.handle_send_result(now, Ok(()));
                let flow: u16 = reply
                    .split('.')
                    .nth(2)
                    .expect("flow")
                    .parse()
                    .expect("flow");
                break (reply, flow);
            }
            assert!(now < 10_000 * MS, "no batch opened");
        };
        opened.push(flow);
        if i < 4 {
            let refused =
                r#"{"type":"err","seq":1,"error":{"code":400,"err_code":10077,"description":"x"}}"#;
            m.handle_reply(now, &reply, refused.as_bytes());
            continue;
        }
        m.handle_reply(
            now,
            &reply,
            format!(r#"{{"type":"ack","seq":0,"msgs":{flow}}}"#).as_bytes(),
        );
        if flow == 1 {
            m.handle_reply(now, &reply, br#"{"type":"ack","seq":1,"msgs":1}"#);
        }
        now += 10 * MS;
        let t = m.poll_transmit(now, || 0).expect("the commit");
        let Transmit::Control {
            reply,
            op: Op::CommitEob,
            ..
        } = t
        else {
            panic!("the commit is due")
        };
        let reply = reply.to_string();
        m.handle_send_result(now, Ok(()));
        let batch = reply.split('.').nth(1).expect("batch");
        let committed = format!(
            r#"{{"stream":"SIM","seq":{},"batch":"{batch}","count":1}}"#,
            i - 3
        );
        m.handle_reply(now, &reply, committed.as_bytes());
        assert_eq!(m.in_flight() + m.queued(), 0, "batch {i} committed");
    }
    assert_eq!(opened, vec![8, 4, 2, 1, 1, 2, 4]);
    assert_eq!(m.flow_ceiling(), 8);
}
