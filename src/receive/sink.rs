//! What a receive thread does with each datagram, whichever backend read
//! it: check the sender against the socket's source allow-list, parse,
//! filter by sensor, push into the ring, count. No allocation, no logging,
//! no system call.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rtrb::{Producer, PushError};

use super::Received;
use super::config::OverflowPolicy;
use super::sources::AllowSources;
use super::stats::{ReceiverCounts, ReceiverStats};
use crate::codec::{self, RejectReason};
use crate::message::RecvTime;

/// Sensor ids a worker passes on: one bit per possible `u16`, 8 KiB, one
/// load and a shift per datagram.
#[derive(Clone)]
pub(crate) struct AllowList {
    words: Box<[u64; Self::WORDS]>,
}

impl AllowList {
    const WORDS: usize = (u16::MAX as usize + 1) / 64;

    pub(crate) fn new(ids: &[u16]) -> Self {
        let mut words = Box::new([0u64; Self::WORDS]);
        for &id in ids {
            words[usize::from(id) >> 6] |= 1 << (id & 63);
        }
        AllowList { words }
    }

    #[inline]
    pub(crate) fn contains(&self, id: u16) -> bool {
        (self.words[usize::from(id) >> 6] >> (id & 63)) & 1 == 1
    }
}

/// The sender's IP address from the `sockaddr` the kernel wrote for a
/// datagram (`AF_INET` or `AF_INET6`, as many bytes as it wrote); `None`
/// for anything else, or too short.
#[inline]
pub(crate) fn sender_ip(name: &[u8]) -> Option<IpAddr> {
    let family = u16::from_ne_bytes([*name.first()?, *name.get(1)?]);
    if family == libc::AF_INET as u16 {
        // sockaddr_in: family, port, then the address in network order.
        let a: [u8; 4] = name.get(4..8)?.try_into().ok()?;
        Some(IpAddr::V4(Ipv4Addr::from(a)))
    } else if family == libc::AF_INET6 as u16 {
        // sockaddr_in6: family, port, flow info, then the address.
        let a: [u8; 16] = name.get(8..24)?.try_into().ok()?;
        Some(IpAddr::V6(Ipv6Addr::from(a)))
    } else {
        None
    }
}

/// Bytes a backend reserves for a sender's address: a `sockaddr_in6`,
/// which an IPv4 `sockaddr_in` fits in too.
pub(crate) const NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();

/// The moment a batch came out of the kernel: every datagram of the batch
/// carries it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp {
    pub(crate) recv: RecvTime,
    pub(crate) mono_ns: u64,
}

impl Stamp {
    #[inline]
    pub(crate) fn now() -> Self {
        Stamp {
            recv: RecvTime::now(),
            mono_ns: crate::clock::mono_ns(),
        }
    }
}

/// One worker's end of the path: its ring producer, its allow list and its
/// running totals.
pub(crate) struct Sink {
    producer: Producer<Received>,
    /// Where a frame goes when the ring is full (the disk spool's thread
    /// takes it from there); none: it is dropped.
    spill: Option<Producer<Received>>,
    allow: Option<AllowList>,
    /// Per socket of the worker (in its order), the senders allowed;
    /// `None` (or no entry): every sender.
    sources: Box<[Option<AllowSources>]>,
    overflow: OverflowPolicy,
    totals: ReceiverCounts,
    published: u64,
    stats: Arc<ReceiverStats>,
    /// Accepted count at the last wake, and whom to wake.
    woken_at: u64,
    wake: Option<Arc<tokio::sync::Notify>>,
}

impl Sink {
    pub(crate) fn new(
        producer: Producer<Received>,
        allow: Option<AllowList>,
        overflow: OverflowPolicy,
        stats: Arc<ReceiverStats>,
    ) -> Self {
        Sink {
            producer,
            spill: None,
            allow,
            sources: Box::new([]),
            overflow,
            totals: ReceiverCounts::default(),
            published: 0,
            stats,
            woken_at: 0,
            wake: None,
        }
    }

    /// Wake `wake` after each batch that accepted frames.
    pub(crate) fn with_wake(mut self, wake: Option<Arc<tokio::sync::Notify>>) -> Self {
        self.wake = wake;
        self
    }

    /// Frames the ring cannot hold go to `spill` (counted `spilled`), and
    /// only when that is full too are they dropped.
    pub(crate) fn with_spill(mut self, spill: Option<Producer<Received>>) -> Self {
        self.spill = spill;
        self
    }

    /// Check senders: `sources[i]` for the worker's socket `i`.
    pub(crate) fn with_sources(mut self, sources: Vec<Option<AllowSources>>) -> Self {
        self.sources = sources.into_boxed_slice();
        self
    }

    /// Whether any socket of this worker has a source allow-list: then the
    /// backend must ask the kernel for each datagram's sender.
    pub(crate) fn filters_sources(&self) -> bool {
        self.sources.iter().any(Option::is_some)
    }

    /// One datagram from the worker's socket `sock`, whose sender's
    /// `sockaddr` is `name` (ignored, and may be empty, when that socket
    /// has no allow-list). A sender not allowed, or one whose address the
    /// kernel did not give, is counted as rejected (`source`) before the
    /// bytes are looked at; otherwise [`Sink::datagram`].
    #[inline]
    pub(crate) fn datagram_from(
        &mut self,
        sock: usize,
        name: &[u8],
        bytes: &[u8],
        truncated: bool,
        stamp: Stamp,
    ) {
        if let Some(Some(allow)) = self.sources.get(sock)
            && !sender_ip(name).is_some_and(|ip| allow.allows(ip))
        {
            self.totals.received += 1;
            self.totals.rejected[RejectReason::Source.index()] += 1;
            return;
        }
        self.datagram(bytes, truncated, stamp);
    }

    /// One datagram as the kernel delivered it. `truncated`: the datagram
    /// was longer than the buffer (`MSG_TRUNC`), so it is too long whatever
    /// `bytes` holds.
    #[inline]
    pub(crate) fn datagram(&mut self, bytes: &[u8], truncated: bool, stamp: Stamp) {
        self.totals.received += 1;
        if truncated {
            self.totals.rejected[RejectReason::Length.index()] += 1;
            return;
        }
        let frame = match codec::parse(bytes) {
            Ok(frame) => frame,
            Err(e) => {
                self.totals.rejected[e.reason().index()] += 1;
                return;
            }
        };
        if let Some(allow) = &self.allow
            && !allow.contains(frame.sensor_id)
        {
            self.totals.filtered += 1;
            return;
        }
        let item = Received {
            frame,
            recv: stamp.recv,
            recv_mono_ns: stamp.mono_ns,
        };
        match self.producer.push(item) {
            Ok(()) => self.totals.accepted += 1,
            Err(PushError::Full(item)) => {
                let spilled = self.spill.as_mut().is_some_and(|s| s.push(item).is_ok());
                if spilled {
                    self.totals.spilled += 1;
                } else {
                    match self.overflow {
                        OverflowPolicy::DropNewest => self.totals.ring_dropped += 1,
                    }
                }
            }
        }
    }

    /// End of a batch: make the totals visible to readers (skipped when the
    /// batch was empty).
    #[inline]
    pub(crate) fn publish(&mut self) {
        if self.totals.received != self.published {
            self.stats.publish(&self.totals);
            self.published = self.totals.received;
        }
        if self.totals.accepted != self.woken_at {
            self.woken_at = self.totals.accepted;
            if let Some(w) = &self.wake {
                w.notify_one();
            }
        }
    }

    /// Datagrams seen so far.
    pub(crate) fn received(&self) -> u64 {
        self.totals.received
    }

    #[cfg(test)]
    pub(crate) fn totals(&self) -> ReceiverCounts {
        self.totals
    }
}

/// At most one log line per interval for a repeating error on the receive
/// path; the lines in between are counted and reported with the next one.
pub(crate) struct LogLimiter {
    interval_ns: u64,
    next_ns: u64,
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) const fn new(interval_ns: u64) -> Self {
        LogLimiter {
            interval_ns,
            next_ns: 0,
            suppressed: 0,
        }
    }

    /// `Some(lines suppressed since the last one)` when a line may be logged.
    pub(crate) fn allow(&mut self, now_ns: u64) -> Option<u64> {
        if now_ns >= self.next_ns {
            self.next_ns = now_ns.saturating_add(self.interval_ns);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::vectors;

    fn stamp() -> Stamp {
        Stamp {
            recv: RecvTime::from_unix_ns(vectors::RECV_EXAMPLE_UNIX_NS),
            mono_ns: 7,
        }
    }

    #[test]
    fn allow_list_is_a_bitmap_over_every_id() {
        let a = AllowList::new(&[0, 63, 64, 501, 65535]);
        for id in [0, 63, 64, 501, 65535] {
            assert!(a.contains(id), "{id}");
        }
        for id in [1, 62, 65, 500, 502, 65534] {
            assert!(!a.contains(id), "{id}");
        }
        let all: Vec<u16> = (0..=u16::MAX).collect();
        let a = AllowList::new(&all);
        assert!((0..=u16::MAX).all(|id| a.contains(id)));
    }

    #[test]
    fn sink_classifies_and_counts() {
        let (producer, mut consumer) = rtrb::RingBuffer::new(2);
        let stats = Arc::new(ReceiverStats::new());
        let mut sink = Sink::new(
            producer,
            Some(AllowList::new(&[501, 2048])),
            OverflowPolicy::DropNewest,
            stats.clone(),
        );
        let g1 = vectors::bytes(vectors::GEOCENTRIC_1); // sensor 501
        let s2 = vectors::bytes(vectors::SPHERICAL_2); // sensor 2048
        let g3 = vectors::bytes(vectors::GEOCENTRIC_3); // sensor 65535
        let mut bad_version = g1.clone();
        bad_version[1] = 3;
        let mut long = g1.clone();
        long.push(0);
        sink.datagram(&g1, false, stamp());
        sink.datagram(&g3, false, stamp()); // filtered
        sink.datagram(&g1[..36], false, stamp()); // length
        sink.datagram(&long, false, stamp()); // length
        sink.datagram(&g1, true, stamp()); // truncated: length, whatever the bytes
        sink.datagram(&bad_version, false, stamp());
        sink.datagram(&s2, false, stamp());
        sink.datagram(&s2, false, stamp()); // ring of 2 is full
        assert_eq!(
            stats.snapshot(),
            ReceiverCounts::default(),
            "not yet published"
        );
        sink.publish();
        let c = stats.snapshot();
        assert_eq!(c, sink.totals());
        assert_eq!(c.received, 8);
        assert_eq!(c.rejected_for(RejectReason::Length), 3);
        assert_eq!(c.rejected_for(RejectReason::Version), 1);
        assert_eq!((c.filtered, c.ring_dropped, c.accepted), (1, 1, 2));
        assert!(c.is_consistent());
        let a = consumer.pop().unwrap();
        assert_eq!(a.frame, codec::parse(&g1).unwrap());
        assert_eq!(a.recv.unix_ns, vectors::RECV_EXAMPLE_UNIX_NS);
        assert_eq!(a.recv_mono_ns, 7);
        assert_eq!(consumer.pop().unwrap().frame.sensor_id, 2048);
        assert!(consumer.pop().is_err());
    }

    #[test]
    fn a_full_ring_spills_then_drops() {
        let (producer, mut ring) = rtrb::RingBuffer::new(1);
        let (spill, mut spilled) = rtrb::RingBuffer::new(2);
        let stats = Arc::new(ReceiverStats::new());
        let mut sink = Sink::new(producer, None, OverflowPolicy::DropNewest, stats.clone())
            .with_spill(Some(spill));
        let g1 = vectors::bytes(vectors::GEOCENTRIC_1);
        for _ in 0..5 {
            sink.datagram(&g1, false, stamp());
        }
        sink.publish();
        let c = stats.snapshot();
        assert_eq!((c.accepted, c.spilled, c.ring_dropped), (1, 2, 2));
        assert!(c.is_consistent());
        assert!(ring.pop().is_ok());
        assert!(spilled.pop().is_ok() && spilled.pop().is_ok() && spilled.pop().is_err());
    }

    fn sockaddr_v4(ip: [u8; 4]) -> Vec<u8> {
        let mut a = vec![0u8; 16];
        a[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        a[2..4].copy_from_slice(&5000u16.to_be_bytes());
        a[4..8].copy_from_slice(&ip);
        a
    }

    #[test]
    fn sender_addresses_are_read_from_sockaddrs() {
        assert_eq!(
            sender_ip(&sockaddr_v4([10, 1, 2, 3])),
            Some("10.1.2.3".parse().unwrap())
        );
        let mut v6 = vec![0u8; NAME_LEN];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        let ip: Ipv6Addr = "fd00::7".parse().unwrap();
        v6[8..24].copy_from_slice(&ip.octets());
        assert_eq!(sender_ip(&v6), Some(IpAddr::V6(ip)));
        assert_eq!(sender_ip(&v6[..20]), None, "short");
        assert_eq!(sender_ip(&[]), None);
        let mut unix = sockaddr_v4([1, 2, 3, 4]);
        unix[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(sender_ip(&unix), None);
    }

    #[test]
    fn sources_are_checked_per_socket_before_parsing() {
        let (producer, mut consumer) = rtrb::RingBuffer::new(8);
        let stats = Arc::new(ReceiverStats::new());
        let only_127_0_0_1 = AllowSources::new(&["127.0.0.1".parse().unwrap()]);
        let mut sink = Sink::new(producer, None, OverflowPolicy::DropNewest, stats.clone())
            .with_sources(vec![only_127_0_0_1, None]);
        assert!(sink.filters_sources());
        let g1 = vectors::bytes(vectors::GEOCENTRIC_1);
        let genuine = sockaddr_v4([127, 0, 0, 1]);
        let forged = sockaddr_v4([127, 0, 0, 2]);
        sink.datagram_from(0, &genuine, &g1, false, stamp());
        sink.datagram_from(0, &forged, &g1, false, stamp());
        // Forged and malformed: the source is checked first.
        sink.datagram_from(0, &forged, &g1[..3], false, stamp());
        // No address from the kernel: not allowed.
        sink.datagram_from(0, &[], &g1, false, stamp());
        // Socket 1 has no list; one past the list neither.
        sink.datagram_from(1, &forged, &g1, false, stamp());
        sink.datagram_from(2, &[], &g1, false, stamp());
        sink.publish();
        let c = stats.snapshot();
        assert_eq!(c.received, 6);
        assert_eq!(c.rejected_for(RejectReason::Source), 3);
        assert_eq!(c.rejected_total(), 3);
        assert_eq!(c.accepted, 3);
        assert!(c.is_consistent());
        assert_eq!(std::iter::from_fn(|| consumer.pop().ok()).count(), 3);

        let (producer, _consumer) = rtrb::RingBuffer::new(1);
        let open =
            Sink::new(producer, None, OverflowPolicy::DropNewest, stats).with_sources(vec![None]);
        assert!(!open.filters_sources());
    }

    #[test]
    fn log_limiter_lets_one_line_per_interval_through() {
        let mut l = LogLimiter::new(1000);
        assert_eq!(l.allow(5), Some(0));
        assert_eq!(l.allow(6), None);
        assert_eq!(l.allow(1004), None);
        assert_eq!(l.allow(1005), Some(2));
    }
}
