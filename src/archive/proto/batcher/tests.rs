use super::sim::{Fate, Faults, Sim, Token, copy_seqs, message};
use super::*;
use proptest::prelude::*;

const NONE: Faults = Faults {
    lose: 0,
    duplicate: 0,
    reorder: 0,
    write_fails: 0,
    crash: 0,
    stop: 0,
};

fn cfg(ack: AckMode, batch_len_max: usize) -> BatcherConfig {
    BatcherConfig {
        kind: Kind::Telemetry,
        stream: "TSPI",
        ack,
        batch_len_max,
        flush_interval: Duration::from_millis(200),
        batches_queued_max: 2,
        retry_backoff_initial: Duration::from_millis(100),
        retry_backoff_max: Duration::from_millis(400),
    }
}

fn deliver(b: &mut Batcher<Token>, now_ms: u64, seq: u64, cseq: u64, fate: Fate) -> bool {
    let (subject, msg_id, payload) = message(seq, fate);
    b.handle_delivery(
        Duration::from_millis(now_ms),
        Delivery {
            token: Token {
                stream_seq: seq,
                consumer_seq: cseq,
            },
            stream_seq: seq,
            consumer_seq: cseq,
            delivered: 1,
            stream_unix_us: seq as i64,
            subject: &subject,
            msg_id: Some(&msg_id),
            payload,
        },
    )
}

fn write(b: &mut Batcher<Token>) -> Arc<Batch> {
    match b.poll() {
        Some(Action::Write(batch)) => batch,
        other => panic!("expected a write, got {other:?}"),
    }
}

fn ack(b: &mut Batcher<Token>) -> AckPlan<Token> {
    match b.poll() {
        Some(Action::Ack(plan)) => plan,
        other => panic!("expected an ack, got {other:?}"),
    }
}

fn seqs(plan: &AckPlan<Token>) -> Vec<u64> {
    plan.tokens.iter().map(|t| t.stream_seq).collect()
}

#[test]
fn a_full_batch_is_written_then_acked_explicitly() {
    let mut b = Batcher::new(cfg(AckMode::Explicit, 3), 0);
    assert_eq!(b.poll_timeout(), None);
    for s in 1..=3 {
        assert!(deliver(&mut b, 10, s, s, Fate::Row));
    }
    assert_eq!(b.poll_timeout(), None, "closed by size, no deadline left");
    let batch = write(&mut b);
    assert_eq!(copy_seqs(&batch.copy), [1, 2, 3]);
    assert_eq!((batch.messages, batch.copy_rows), (3, 3));
    assert_eq!(b.poll(), None, "one write outstanding at a time");
    b.handle_committed(Duration::from_millis(20));
    let plan = ack(&mut b);
    assert_eq!((seqs(&plan), plan.messages), (vec![1, 2, 3], 3));
    assert!(b.is_idle());
}

#[test]
fn a_partial_batch_is_written_at_its_deadline() {
    let mut b = Batcher::new(cfg(AckMode::Explicit, 100), 0);
    deliver(&mut b, 10, 1, 1, Fate::Row);
    deliver(&mut b, 50, 2, 2, Fate::DecodeReject);
    assert_eq!(b.poll_timeout(), Some(Duration::from_millis(210)));
    b.handle_timeout(Duration::from_millis(209));
    assert_eq!(b.poll(), None);
    b.handle_timeout(Duration::from_millis(210));
    let batch = write(&mut b);
    assert_eq!(batch.copy_rows, 1);
    assert_eq!(batch.rejects.len(), 1);
    assert_eq!(batch.rejects[0].kind, "cbor");
    assert_eq!(batch.rejects[0].origin.stream_seq, 2);
}

#[test]
fn transient_failures_retry_the_same_batch_with_backoff() {
    let mut b = Batcher::new(cfg(AckMode::Explicit, 2), 0);
    deliver(&mut b, 0, 1, 1, Fate::Row);
    deliver(&mut b, 0, 2, 2, Fate::Row);
    let first = write(&mut b);
    let fail = || CommitFailure {
        retry: Retry::Transient,
        reason: "SQLSTATE 57P01".into(),
    };
    let mut now = Duration::from_millis(5);
    for want_ms in [100, 200, 400, 400] {
        assert_eq!(
            b.handle_failed(now, fail()),
            Outcome::RetryAt(now + Duration::from_millis(want_ms))
        );
        assert_eq!(b.poll(), None, "waits for the backoff");
        now += Duration::from_millis(want_ms);
        assert_eq!(b.poll_timeout(), Some(now));
        b.handle_timeout(now);
        assert_eq!(write(&mut b), first, "the same batch again");
    }
    b.handle_committed(now);
    assert_eq!(seqs(&ack(&mut b)), [1, 2]);
}

#[test]
fn a_refused_row_is_bisected_out_and_rejected_with_its_reason() {
    let mut b = Batcher::new(cfg(AckMode::All, 4), 0);
    for s in 1..=4 {
        deliver(&mut b, 0, s, s, Fate::Row);
    }
    let now = Duration::ZERO;
    let refused = |b: &mut Batcher<Token>| {
        b.handle_failed(
            now,
            CommitFailure {
                retry: Retry::Permanent,
                reason: "SQLSTATE 23514: new row violates check constraint \"c\"".into(),
            },
        )
    };
    assert_eq!(copy_seqs(&write(&mut b).copy), [1, 2, 3, 4]);
    assert_eq!(refused(&mut b), Outcome::Split { messages: 4 });
    assert_eq!(copy_seqs(&write(&mut b).copy), [1, 2]);
    b.handle_committed(now);
    // Ack policy all: seq 2's ack covers only what committed.
    assert_eq!(seqs(&ack(&mut b)), [2]);
    assert_eq!(copy_seqs(&write(&mut b).copy), [3, 4]);
    assert_eq!(refused(&mut b), Outcome::Split { messages: 2 });
    assert_eq!(copy_seqs(&write(&mut b).copy), [3]);
    assert_eq!(refused(&mut b), Outcome::Refused { stream_seq: 3 });
    let r = write(&mut b);
    assert_eq!((r.copy_rows, r.messages), (0, 1));
    let reject = &r.rejects[0];
    assert_eq!(reject.kind, REJECT_KIND_DATABASE);
    assert!(reject.reason.contains("23514"), "{}", reject.reason);
    assert_eq!(reject.origin.stream_seq, 3);
    assert_eq!(reject.origin.subject, message(3, Fate::Row).0);
    assert_eq!(
        reject.origin.msg_id.as_deref(),
        Some(&*message(3, Fate::Row).1)
    );
    assert_eq!(reject.body, message(3, Fate::Row).2);
    b.handle_committed(now);
    assert_eq!(seqs(&ack(&mut b)), [3]);
    assert_eq!(copy_seqs(&write(&mut b).copy), [4]);
    b.handle_committed(now);
    let last = ack(&mut b);
    assert_eq!((seqs(&last), last.messages), (vec![4], 1));
    assert!(b.is_idle());
}

#[test]
fn a_refused_reject_is_retried_not_lost() {
    let mut b = Batcher::new(cfg(AckMode::Explicit, 1), 0);
    deliver(&mut b, 0, 1, 1, Fate::Row);
    write(&mut b);
    let permanent = CommitFailure {
        retry: Retry::Permanent,
        reason: "refused".into(),
    };
    b.handle_failed(Duration::ZERO, permanent.clone());
    write(&mut b);
    assert!(matches!(
        b.handle_failed(Duration::ZERO, permanent),
        Outcome::RetryAt(_)
    ));
}

#[test]
fn ack_all_gap_stops_taking_commits_then_rewinds_without_acking() {
    let mut b = Batcher::new(cfg(AckMode::All, 10), 0);
    deliver(&mut b, 0, 1, 1, Fate::Row);
    deliver(&mut b, 0, 2, 2, Fate::Row);
    // Consumer sequence 3 never arrived.
    assert!(deliver(&mut b, 0, 4, 4, Fate::Row));
    assert!(!b.wants_deliveries());
    assert!(
        !deliver(&mut b, 0, 5, 5, Fate::Row),
        "nothing taken after a gap"
    );
    let batch = write(&mut b);
    assert_eq!(copy_seqs(&batch.copy), [1, 2, 4], "closed at the gap");
    b.handle_committed(Duration::ZERO);
    assert_eq!(b.poll(), Some(Action::Rewind), "committed, never acked");
    assert_eq!(b.poll(), None);
    b.handle_rewound(0);
    assert!(b.wants_deliveries());
    assert!(deliver(&mut b, 0, 3, 1, Fate::Row));
}

#[test]
fn ack_all_never_covers_a_held_lower_sequence() {
    let mut b = Batcher::new(cfg(AckMode::All, 2), 0);
    deliver(&mut b, 0, 10, 1, Fate::Row);
    deliver(&mut b, 0, 11, 2, Fate::Row);
    // A redelivery of 5 (ack wait ran out) while 10, 11 are written.
    let first = write(&mut b);
    deliver(&mut b, 0, 5, 3, Fate::Row);
    b.handle_committed(Duration::ZERO);
    assert_eq!(b.poll(), None, "acking 11 would cover the held 5");
    assert_eq!(copy_seqs(&first.copy), [10, 11]);
    b.handle_timeout(Duration::from_secs(1));
    assert_eq!(copy_seqs(&write(&mut b).copy), [5]);
    b.handle_committed(Duration::from_secs(1));
    let plan = ack(&mut b);
    assert_eq!((seqs(&plan), plan.messages), (vec![11], 3));
}

#[test]
fn stop_closes_the_open_batch_and_drains() {
    let mut b = Batcher::new(cfg(AckMode::Explicit, 10), 0);
    deliver(&mut b, 0, 1, 1, Fate::Row);
    b.handle_stop();
    assert!(!b.wants_deliveries());
    assert!(!deliver(&mut b, 0, 2, 2, Fate::Row));
    write(&mut b);
    assert!(!b.is_idle());
    b.handle_committed(Duration::ZERO);
    assert!(!b.is_idle(), "an ack still to send");
    ack(&mut b);
    assert!(b.is_idle());
}

#[test]
fn back_pressure_bounds_what_is_held() {
    let mut b = Batcher::new(cfg(AckMode::Explicit, 2), 0);
    let mut s = 0;
    while b.wants_deliveries() {
        s += 1;
        deliver(&mut b, 0, s, s, Fate::Row);
    }
    // batches_queued_max closed batches of batch_len_max.
    assert_eq!(b.held(), 4);
}

fn sim(ack: AckMode, fates: Vec<Fate>, seed: u64, faults: Faults, batch_len_max: usize) {
    let mut s = Sim::new(ack, fates, seed, faults, batch_len_max);
    s.run(200_000);
}

#[test]
fn sim_without_faults() {
    for ack in [AckMode::Explicit, AckMode::All] {
        sim(ack, vec![Fate::Row; 300], 1, NONE, 16);
    }
}

/// The simulation is not vacuous: with every fault on, each happens (and
/// the invariants still hold).
#[test]
fn sim_with_every_fault_exercises_them() {
    let faults = Faults {
        lose: 40,
        duplicate: 20,
        reorder: 40,
        write_fails: 200,
        crash: 2,
        stop: 3,
    };
    let mut fates = vec![Fate::Row; 400];
    for i in (7..400).step_by(53) {
        fates[i] = Fate::Refused;
    }
    fates[100] = Fate::DecodeReject;
    for ack in [AckMode::Explicit, AckMode::All] {
        let mut s = Sim::new(ack, fates.clone(), 3, faults, 16);
        s.run(200_000);
        assert!(
            s.crashes > 0 && s.stops > 0,
            "{ack:?}: {} crashes, {} stops",
            s.crashes,
            s.stops
        );
        if ack == AckMode::All {
            assert!(s.rewinds > 0);
        }
    }
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        20 => Just(Fate::Row),
        1 => Just(Fate::DecodeReject),
        1 => Just(Fate::Refused),
    ]
}

fn faults() -> impl Strategy<Value = Faults> {
    (0u32..80, 0u32..50, 0u32..80, 0u32..400, 0u32..3, 0u32..5).prop_map(
        |(lose, duplicate, reorder, write_fails, crash, stop)| Faults {
            lose,
            duplicate,
            reorder,
            write_fails,
            crash,
            stop,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Through lost, duplicated and reordered deliveries, redeliveries,
    /// transient write failures, refused rows, crashes and drained stops
    /// and restarts: nothing is
    /// acked before its row committed (checked at every ack), under ack
    /// policy all no ack covers a lost delivery, and in the end every
    /// message has exactly its row and is acked.
    #[test]
    fn every_message_ends_committed_once_and_acked(
        all in any::<bool>(),
        fates in proptest::collection::vec(fate(), 1..120),
        seed in any::<u64>(),
        faults in faults(),
        batch_len_max in 1usize..24,
    ) {
        let ack = if all { AckMode::All } else { AckMode::Explicit };
        sim(ack, fates, seed, faults, batch_len_max);
    }
}
