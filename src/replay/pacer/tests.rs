use super::*;
use proptest::prelude::*;

const START: u64 = 1_000_000_000;

/// Sorted recorded instants with gaps from 0 to 50 ms, from a 2023 epoch.
fn arb_recording() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(0u64..50_000_000, 1..200).prop_map(|gaps| {
        let mut t = 1_700_000_000_000_000_000u64;
        gaps.into_iter()
            .map(|g| {
                t += g;
                t
            })
            .collect()
    })
}

fn rate(v: f64) -> Rate {
    Rate::new(v).unwrap()
}

#[test]
fn rate_bounds() {
    assert!(Rate::new(0.0).is_err());
    assert!(Rate::new(-1.0).is_err());
    assert!(Rate::new(f64::NAN).is_err());
    assert!(Rate::new(f64::INFINITY).is_err());
    assert!(Rate::new(1000.1).is_err());
    assert_eq!("2".parse::<Rate>().unwrap().get(), 2.0);
    assert!("fast".parse::<Rate>().is_err());
}

#[test]
fn recorded_sequence_keeps_its_spacing() {
    // 0, 10 ms, 10 ms (same instant), 1 s, 1.000001 s.
    let t0 = 1_700_000_000_123_456_000u64;
    let rec = [
        t0,
        t0 + 10_000_000,
        t0 + 10_000_000,
        t0 + 1_000_000_000,
        t0 + 1_000_001_000,
    ];
    let out = simulate(&rec, START, Rate::ORIGINAL, false, &[], 100);
    let at: Vec<u64> = out.iter().map(|e| e.at_ns - START).collect();
    assert_eq!(
        at,
        [0, 10_000_000, 10_000_000, 1_000_000_000, 1_000_001_000]
    );
    let out = simulate(&rec, START, rate(2.0), false, &[], 100);
    let at: Vec<u64> = out.iter().map(|e| e.at_ns - START).collect();
    assert_eq!(at, [0, 5_000_000, 5_000_000, 500_000_000, 500_000_500]);
}

#[test]
fn out_of_order_input_is_sent_after_its_predecessor() {
    let rec = [100, 300, 200, 400];
    let mut p = Player::new(START, Rate::ORIGINAL, false);
    let mut sent = Vec::new();
    let mut now = START;
    for &r in &rec {
        loop {
            match p.poll(now, Some(r)) {
                Action::Emit { scheduled_ns } => {
                    sent.push(scheduled_ns - START);
                    break;
                }
                Action::Wait { until_ns } => now = until_ns,
                a => panic!("unexpected {a:?}"),
            }
        }
    }
    assert_eq!(sent, [0, 200, 200, 300]);
    assert_eq!(p.reordered, 1);
    assert_eq!(p.poll(now, None), Action::Finished);
}

#[test]
fn pause_before_the_first_message_holds_it() {
    let rec = [5, 10];
    let out = simulate(
        &rec,
        START,
        Rate::ORIGINAL,
        false,
        &[(START, Control::Pause), (START + 1_000, Control::Resume)],
        10,
    );
    assert_eq!(out[0].at_ns, START + 1_000);
    assert_eq!(out[1].at_ns, START + 1_005);
}

#[test]
fn stop_finishes() {
    let rec = [0, 1_000, 2_000];
    let out = simulate(
        &rec,
        START,
        Rate::ORIGINAL,
        false,
        &[(START + 1_500, Control::Stop)],
        10,
    );
    assert_eq!(out.len(), 2);
}

#[test]
fn a_long_recording_at_an_odd_rate_does_not_drift() {
    // 1 million messages 50 µs apart (50 s) at 3x: each due time is computed
    // from the anchor, so the last is off by at most the one rounding.
    let t0 = 1_700_000_000_000_000_000u64;
    let mut p = Pacer::new(START, t0, rate(3.0));
    for i in 0..1_000_000u64 {
        let exact = START as f64 + (i * 50_000) as f64 / 3.0;
        let due = p.due_ns(t0 + i * 50_000).unwrap();
        assert!(
            (due as f64 - exact).abs() <= 1.0,
            "message {i}: {due} vs {exact}"
        );
    }
    p.set_rate(START + 10, rate(3.0));
    assert!(p.position_ns(START + 10) >= t0 + 29);
}

proptest! {
    #[test]
    fn original_pace_is_exact_and_in_order(rec in arb_recording(), r in prop::sample::select(vec![0.5, 1.0, 2.0, 3.0, 10.0])) {
        let out = simulate(&rec, START, rate(r), false, &[], usize::MAX);
        prop_assert_eq!(out.len(), rec.len());
        for (i, e) in out.iter().enumerate() {
            prop_assert_eq!(e.index, i);
            // A perfect clock sends exactly on time.
            prop_assert_eq!(e.at_ns, e.scheduled_ns);
            let exact = START as f64 + (rec[i] - rec[0]) as f64 / r;
            prop_assert!((e.scheduled_ns as f64 - exact).abs() <= 1.0);
        }
        prop_assert!(out.windows(2).all(|w| w[0].at_ns <= w[1].at_ns));
    }

    #[test]
    fn pause_shifts_what_follows_by_the_pause(rec in arb_recording(), at in 0u64..2_000_000_000, len in 1u64..5_000_000_000) {
        let controls = [(START + at, Control::Pause), (START + at + len, Control::Resume)];
        let out = simulate(&rec, START, Rate::ORIGINAL, false, &controls, usize::MAX);
        prop_assert_eq!(out.len(), rec.len());
        for e in &out {
            let offset = rec[e.index] - rec[0];
            let expected = if offset < at { START + offset } else { START + offset + len };
            prop_assert_eq!(e.at_ns, expected, "message {} recorded at +{}", e.index, offset);
        }
    }

    #[test]
    fn rate_change_applies_from_its_moment(rec in arb_recording(), at in 0u64..2_000_000_000, r in prop::sample::select(vec![0.5, 2.0, 4.0])) {
        let out = simulate(&rec, START, Rate::ORIGINAL, false, &[(START + at, Control::Rate(rate(r)))], usize::MAX);
        prop_assert_eq!(out.len(), rec.len());
        for e in &out {
            let offset = rec[e.index] - rec[0];
            if offset < at {
                prop_assert_eq!(e.at_ns, START + offset);
            } else {
                let exact = (START + at) as f64 + (offset - at) as f64 / r;
                prop_assert!((e.at_ns as f64 - exact).abs() <= 1.0);
            }
        }
    }

    #[test]
    fn seek_plays_from_the_target(rec in arb_recording(), at in 0u64..1_000_000_000, target_i in any::<prop::sample::Index>()) {
        let target = rec[target_i.index(rec.len())];
        let out = simulate(&rec, START, Rate::ORIGINAL, false, &[(START + at, Control::Seek(target))], usize::MAX);
        let split = out.iter().position(|e| e.epoch == 1).unwrap_or(out.len());
        // Before the seek: the original schedule.
        for e in &out[..split] {
            prop_assert_eq!(e.at_ns, START + rec[e.index] - rec[0]);
            prop_assert!(e.at_ns <= START + at);
        }
        // After: every message from the target on, timed from the seek
        // (unless the replay had ended before the seek came).
        let after = &out[split..];
        let first = if at <= rec[rec.len() - 1] - rec[0] {
            rec.partition_point(|&t| t < target)
        } else {
            rec.len()
        };
        prop_assert_eq!(after.len(), rec.len() - first);
        for (k, e) in after.iter().enumerate() {
            prop_assert_eq!(e.index, first + k);
            prop_assert_eq!(e.at_ns, START + at + rec[e.index] - target);
        }
    }

    #[test]
    fn loops_repeat_on_an_absolute_schedule(rec in arb_recording(), rounds in 1usize..4) {
        let n = rec.len();
        let out = simulate(&rec, START, Rate::ORIGINAL, true, &[], n * rounds);
        prop_assert_eq!(out.len(), n * rounds);
        let span = rec[n - 1] - rec[0];
        for (k, e) in out.iter().enumerate() {
            let round = (k / n) as u64;
            prop_assert_eq!(e.index, k % n);
            prop_assert_eq!(e.epoch as u64, round);
            prop_assert_eq!(e.at_ns, START + round * span + rec[e.index] - rec[0]);
        }
    }
}
