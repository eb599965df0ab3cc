use super::*;
use proptest::prelude::*;

const REC: u64 = RECORD_LEN as u64;
const HDR: u64 = HEADER_LEN as u64;

fn limits(max_records: u64, seg_records: u64, policy: FullPolicy) -> Limits {
    Limits {
        max_bytes: 4 * HDR + max_records * REC,
        segment_bytes: HDR + seg_records * REC,
        policy,
        seal_age_ns: 0,
    }
}

/// Steps written and dropped add up to the batch.
fn accounted(steps: &[Step]) -> u64 {
    steps
        .iter()
        .map(|s| match s {
            Step::Write { records, .. } | Step::DropNewest { records } => *records,
            _ => 0,
        })
        .sum()
}

#[test]
fn fills_segments_in_order_and_rotates() {
    let mut l = Ledger::new(limits(100, 4, FullPolicy::DropNewest));
    let steps = l.append(0, 10, 5);
    assert_eq!(
        steps,
        vec![
            Step::Open { seq: 0 },
            Step::Write { seq: 0, records: 4 },
            Step::Open { seq: 1 },
            Step::Write { seq: 1, records: 4 },
            Step::Open { seq: 2 },
            Step::Write { seq: 2, records: 2 },
        ]
    );
    assert_eq!(l.held(), 10);
    assert_eq!(l.bytes(), 3 * HDR + 10 * REC);
    assert_eq!(l.oldest_recv_ns(), Some(5));
}

#[test]
fn drop_newest_refuses_what_does_not_fit() {
    let mut l = Ledger::new(Limits {
        max_bytes: HDR + 3 * REC,
        ..limits(0, 10, FullPolicy::DropNewest)
    });
    let steps = l.append(0, 5, 0);
    assert_eq!(
        steps,
        vec![
            Step::Open { seq: 0 },
            Step::Write { seq: 0, records: 3 },
            Step::DropNewest { records: 2 }
        ]
    );
    assert_eq!(l.counts().dropped, 2);
    assert_eq!(l.held(), 3);
}

#[test]
fn drop_oldest_deletes_a_segment_not_out_with_the_publisher() {
    let mut l = Ledger::new(Limits {
        max_bytes: 3 * (HDR + 2 * REC),
        ..limits(0, 2, FullPolicy::DropOldest)
    });
    l.append(0, 6, 0);
    // Segment 0 is being drained: one frame out.
    assert_eq!(l.next_drain(0), Some((0, false)));
    l.handed(0, 0);
    let steps = l.append(0, 1, 0);
    assert_eq!(steps[0], Step::Delete { seq: 1, dropped: 2 });
    assert_eq!(accounted(&steps), 1);
    assert_eq!(l.segments(), vec![0, 2, 3]);
    assert_eq!(l.counts().dropped, 2);
}

#[test]
fn drained_segments_are_deleted_once_every_frame_is_acked() {
    let mut l = Ledger::new(limits(100, 3, FullPolicy::DropNewest));
    l.append(0, 4, 0);
    assert_eq!(l.next_drain(0), Some((0, false)));
    for slot in 0..3 {
        l.handed(0, slot);
    }
    assert_eq!(l.all_handed(0), None);
    assert_eq!(l.acked(0, 2), None);
    assert_eq!(l.cursor(), Some((0, 0)));
    assert_eq!(l.acked(0, 0), None);
    assert_eq!(l.cursor(), Some((0, 1)));
    assert_eq!(l.acked(0, 1), Some(Step::Delete { seq: 0, dropped: 0 }));
    // The open segment is sealed for the drain.
    assert_eq!(l.next_drain(0), Some((1, true)));
    l.handed(1, 0);
    assert_eq!(l.all_handed(1), None);
    assert_eq!(l.acked(1, 0), Some(Step::Delete { seq: 1, dropped: 0 }));
    assert_eq!(l.held(), 0);
    assert_eq!(l.counts().drained, 4);
    // Writing again opens a fresh segment.
    assert_eq!(l.append(0, 1, 0)[0], Step::Open { seq: 2 });
}

#[test]
fn the_open_segment_is_sealed_for_draining_only_when_old_enough() {
    let mut l = Ledger::new(Limits {
        seal_age_ns: 100,
        ..limits(100, 10, FullPolicy::DropNewest)
    });
    l.append(1000, 2, 0);
    assert_eq!(l.next_drain(1050), None);
    assert_eq!(l.next_drain(1100), Some((0, true)));
}

#[test]
fn recovery_skips_torn_slots_and_the_delivered_prefix() {
    let mut l = Ledger::new(limits(100, 10, FullPolicy::DropNewest));
    assert_eq!(l.recover(4, 6, &[5], Some(9), 2), 3);
    assert_eq!(l.recover(7, 2, &[0, 1], None, 0), 0);
    assert_eq!(l.take_finished(), vec![7]);
    assert_eq!(l.counts().torn, 3);
    assert_eq!(l.counts().recovered, 3);
    assert!(!l.is_pending(4, 1) && l.is_pending(4, 2) && !l.is_pending(4, 5));
    assert_eq!(l.cursor(), Some((4, 2)));
    // New segments continue after the highest found.
    assert_eq!(l.append(0, 1, 0)[0], Step::Open { seq: 8 });
}

#[derive(Clone, Debug)]
enum Op {
    Append(u64),
    Drain(u64),
    Ack(usize),
    Torn(usize),
    Return(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u64..30).prop_map(Op::Append),
        (1u64..20).prop_map(Op::Drain),
        any::<usize>().prop_map(Op::Ack),
        any::<usize>().prop_map(Op::Torn),
        any::<usize>().prop_map(Op::Return),
    ]
}

proptest! {
    /// Whatever happens, every frame is accounted for exactly once
    /// (`offered = drained + dropped + torn + held`), the files never
    /// exceed `max_bytes`, and each frame is handed out at most once per
    /// time it is in the spool.
    #[test]
    fn every_frame_accounted(ops in proptest::collection::vec(op(), 1..200),
                            max in 5u64..80, seg in 1u64..12, oldest in any::<bool>()) {
        let policy = if oldest { FullPolicy::DropOldest } else { FullPolicy::DropNewest };
        let lim = Limits { max_bytes: HDR + max * REC, ..limits(0, seg, policy) };
        let mut l = Ledger::new(lim);
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut loaded: Option<(u64, u64)> = None; // (seq, next slot)
        let mut files: std::collections::BTreeMap<u64, u64> = Default::default();
        let mut now = 0;
        let mut offered = 0;
        for op in ops {
            now += 1;
            let mut steps = Vec::new();
            match op {
                Op::Append(n) => {
                    let s = l.append(now, n, now);
                    prop_assert_eq!(accounted(&s), n);
                    offered += n;
                    steps = s;
                }
                Op::Drain(k) => {
                    for _ in 0..k {
                        if loaded.is_none() {
                            loaded = l.next_drain(now).map(|(seq, _)| (seq, 0));
                        }
                        let Some((seq, slot)) = loaded else { break };
                        let slots = files.get(&seq).copied().unwrap_or(0);
                        if slot >= slots {
                            steps.extend(l.all_handed(seq));
                            loaded = None;
                            continue;
                        }
                        if l.is_pending(seq, slot) {
                            prop_assert!(!out.contains(&(seq, slot)));
                            l.handed(seq, slot);
                            out.push((seq, slot));
                        }
                        loaded = Some((seq, slot + 1));
                    }
                }
                Op::Ack(i) if !out.is_empty() => {
                    let (seq, slot) = out.swap_remove(i % out.len());
                    steps.extend(l.acked(seq, slot));
                }
                Op::Torn(i) if !out.is_empty() => {
                    let (seq, slot) = out.swap_remove(i % out.len());
                    steps.extend(l.torn(seq, slot));
                }
                Op::Return(i) if !out.is_empty() => {
                    let (seq, slot) = out.swap_remove(i % out.len());
                    l.returned(seq, slot);
                }
                _ => {}
            }
            for s in steps {
                match s {
                    Step::Open { seq } => { files.insert(seq, 0); }
                    Step::Write { seq, records } => *files.get_mut(&seq).unwrap() += records,
                    Step::Delete { seq, .. } => {
                        prop_assert!(files.remove(&seq).is_some());
                        prop_assert!(out.iter().all(|o| o.0 != seq), "deleted with frames out");
                        if loaded.is_some_and(|(s, _)| s == seq) { loaded = None; }
                    }
                    Step::DropNewest { .. } => {}
                }
            }
            let c = l.counts();
            prop_assert_eq!(offered, c.drained + c.dropped + c.torn + l.held());
            prop_assert!(c.spooled <= offered);
            prop_assert!(l.bytes() <= lim.max_bytes);
            let bytes: u64 = files.values().map(|n| HDR + n * REC).sum();
            prop_assert_eq!(bytes, l.bytes());
            prop_assert_eq!(files.keys().copied().collect::<Vec<_>>(), l.segments());
        }
    }
}
