//! The spool thread against a real directory: spill, drain, acks,
//! deletion, restart, torn tails.

use super::proto::record::{HEADER_LEN, segment_name};
use super::*;
use crate::spool::proto::ledger::FullPolicy;
use std::time::Instant;

fn received(i: u64) -> Received {
    Received {
        frame: proto::record::tests::frame(i),
        recv: RecvTime {
            unix_ns: 1_700_000_000_000_000_000 + i,
        },
        recv_mono_ns: 0,
    }
}

fn cfg(dir: &std::path::Path) -> SpoolConfig {
    SpoolConfig {
        dir: Some(dir.to_owned()),
        segment_bytes: 1 << 16,
        drain_rate_per_s: 0,
        ..SpoolConfig::default()
    }
}

/// Take `n` frames from the drain ring within 10 s.
fn take(link: &mut SpoolLink, n: usize) -> Vec<Drained> {
    let until = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < until {
        match link.drain.pop() {
            Ok(d) => out.push(d),
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    out
}

fn wait_for(spool: &Spool, what: impl Fn(&SpoolCounts) -> bool) -> SpoolCounts {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let c = spool.counts();
        if what(&c) || Instant::now() > until {
            return c;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn segments(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".spool"))
        .collect();
    v.sort();
    v
}

#[test]
fn spilled_frames_drain_oldest_first_and_acked_segments_go() {
    let dir = tempfile::tempdir().unwrap();
    let (mut tx, rx) = rtrb::RingBuffer::new(4096);
    let (spool, mut link) = Spool::start(&cfg(dir.path()), vec![rx]).unwrap();
    let n = 3000u64; // several 64 KiB segments
    for i in 0..n {
        tx.push(received(i)).unwrap();
    }
    let got = take(&mut link, n as usize);
    assert_eq!(got.len() as u64, n);
    for (i, d) in got.iter().enumerate() {
        assert_eq!(d.received.frame, received(i as u64).frame, "oldest first");
        assert_eq!(d.received.recv, received(i as u64).recv);
        assert!(!d.in_doubt);
    }
    assert!(!segments(dir.path()).is_empty());
    link.tx
        .send(ToSpool::Acked(got.iter().map(|d| d.at).collect()))
        .unwrap();
    let c = wait_for(&spool, |c| c.drained == n && c.held == 0);
    assert_eq!((c.spooled, c.drained, c.held, c.dropped), (n, n, 0, 0));
    let c = spool.stop();
    assert_eq!(c.bytes, 0);
    assert_eq!(segments(dir.path()), Vec::<String>::new());
}

#[test]
fn a_restart_delivers_what_was_not_acked_and_skips_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut tx, rx) = rtrb::RingBuffer::new(4096);
        let (spool, mut link) = Spool::start(&cfg(dir.path()), vec![rx]).unwrap();
        for i in 0..100 {
            tx.push(received(i)).unwrap();
        }
        // Ten delivered and acked, the rest not.
        let got = take(&mut link, 10);
        link.tx
            .send(ToSpool::Acked(got.iter().map(|d| d.at).collect()))
            .unwrap();
        wait_for(&spool, |c| c.drained == 10);
        // Unacknowledged live frames at the stop are kept, in doubt.
        link.tx
            .send(ToSpool::Unacked {
                live: vec![(received(100), true)],
                returned: Vec::new(),
            })
            .unwrap();
        let c = spool.stop();
        assert_eq!((c.spooled, c.drained, c.held), (101, 10, 91));
    }
    // A crash cut the last record of the newest segment.
    let segs = segments(dir.path());
    let last = dir.path().join(segs.last().unwrap());
    let len = std::fs::metadata(&last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 20)
        .unwrap();
    let (_tx, rx) = rtrb::RingBuffer::<Received>::new(16);
    let (spool, mut link) = Spool::start(&cfg(dir.path()), vec![rx]).unwrap();
    let c = spool.counts();
    assert_eq!((c.recovered, c.torn), (90, 1), "{c:?}");
    let got = take(&mut link, 90);
    let ids: Vec<_> = got.iter().map(|d| d.received.frame).collect();
    let want: Vec<_> = (10..100).map(|i| received(i).frame).collect();
    assert_eq!(ids, want, "the cursor skipped the delivered ten");
    link.tx
        .send(ToSpool::Acked(got.iter().map(|d| d.at).collect()))
        .unwrap();
    let c = wait_for(&spool, |c| c.held == 0);
    assert_eq!((c.drained, c.held), (90, 0));
    spool.stop();
    assert_eq!(segments(dir.path()), Vec::<String>::new());
}

#[test]
fn full_spool_drops_by_policy_and_counts() {
    for policy in [FullPolicy::DropNewest, FullPolicy::DropOldest] {
        let dir = tempfile::tempdir().unwrap();
        let per_seg = ((1u64 << 16) - HEADER_LEN as u64) / RECORD_LEN as u64;
        let c = SpoolConfig {
            max_bytes: 1 << 20,
            full: policy,
            drain_rate_per_s: 1, // hardly drains: the spool fills
            ..cfg(dir.path())
        };
        let (mut tx, rx) = rtrb::RingBuffer::new(1 << 16);
        let (spool, _link) = Spool::start(&c, vec![rx]).unwrap();
        let n = 16 * per_seg + 500;
        for i in 0..n {
            tx.push(received(i)).unwrap();
        }
        let counts = wait_for(&spool, |c| c.spooled + c.dropped >= n);
        let counts2 = spool.stop();
        assert!(counts2.bytes <= 1 << 20);
        assert!(counts.dropped > 0, "{policy:?}: {counts:?}");
        // Offered = held + dropped (+ at most the one frame the pacer let out).
        assert!(counts2.held + counts2.dropped + 1 >= n, "{counts2:?}");
        let seqs: Vec<u64> = segments(dir.path())
            .iter()
            .map(|n| proto::record::parse_segment_name(n).unwrap())
            .collect();
        let contiguous = seqs.windows(2).all(|w| w[1] == w[0] + 1) && seqs[0] == 0;
        // Newest dropped: the first segments stay. Oldest dropped: the
        // newest stay, in one run; segment 0 stays only while the drain has
        // a frame of it out (then segment 1 went first). Whether the drain
        // took one before the spool filled depends on the machine's load.
        match policy {
            FullPolicy::DropNewest => assert!(contiguous, "{seqs:?}"),
            FullPolicy::DropOldest => {
                let run: &[u64] = if seqs[0] == 0 { &seqs[1..] } else { &seqs };
                assert!(run.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
                assert!(run.first().is_some_and(|&s| s > 0), "{seqs:?}");
                assert!(seqs[0] != 0 || !seqs.contains(&1), "{seqs:?}");
            }
        }
        assert_eq!(segment_name(seqs[0]), segments(dir.path())[0]);
    }
}
