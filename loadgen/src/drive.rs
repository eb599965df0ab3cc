//! The edge: sending a fleet's schedule over UDP, to JetStream or into a
//! file, and measuring what arrives at a NATS subscriber. Used by the
//! `tspi-loadgen` and `tspi-demo` binaries; everything decided here comes
//! from the pure modules (schedule, ledger, report).

use crate::ledger::Ledger;
use crate::report::Summary;
use crate::{Fleet, Generator, Schedule};
use anyhow::Context as _;
use futures_util::StreamExt;
use futures_util::stream::{BoxStream, FuturesUnordered};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tspi::codec::{DATAGRAM_LEN, FrameType};
use tspi::message::{Message, RecvTime};
use tspi::send::{DatagramSender, GSO_SEGMENTS_MAX, MulticastOut};

/// A wall clock read through the monotonic clock: one wall reading at the
/// start, then monotonic time added, so the schedule never jumps.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    mono0: Instant,
    wall0_unix_ns: u64,
}

impl Clock {
    pub fn now() -> Self {
        let mono0 = Instant::now();
        Clock {
            mono0,
            wall0_unix_ns: RecvTime::now().unix_ns,
        }
    }

    #[inline]
    pub fn unix_ns(&self) -> u64 {
        self.wall0_unix_ns + self.mono0.elapsed().as_nanos() as u64
    }
}

/// A sender more than this late behind the schedule is reported "behind".
pub const BEHIND_NS: u64 = 5_000_000;

/// What a sender has done so far; read by the progress line at any time.
#[derive(Debug, Default)]
pub struct SendStats {
    /// Datagrams handed to the output (the first `sent` of the schedule).
    pub sent: AtomicU64,
    /// Lag of the latest batch behind its intended time.
    pub lag_ns: AtomicU64,
    pub lag_max_ns: AtomicU64,
    /// Batches that went out more than [`BEHIND_NS`] late.
    pub behind_batches: AtomicU64,
    /// Publishes JetStream refused or did not ack (direct NATS output).
    pub failed: AtomicU64,
    /// UDP sends that failed with an error a restarting receiver causes
    /// (`connection refused` after an ICMP port-unreachable, host or network
    /// unreachable): counted, the schedule kept.
    pub send_errors: AtomicU64,
    /// Datagrams in those failed sends (not sent).
    pub unsent: AtomicU64,
    /// Why the first failed publish or send failed, and what to do about it.
    pub first_failure: OnceLock<String>,
    /// The sender has finished (or stopped).
    pub done: AtomicBool,
}

impl SendStats {
    /// Keep `why` if it is the first failure.
    pub fn note_failure(&self, why: impl FnOnce() -> String) {
        if self.first_failure.get().is_none() {
            let _ = self.first_failure.set(why());
        }
    }

    /// The end-of-run account of failures: empty when there were none.
    pub fn failure_line(&self) -> String {
        let (failed, errors) = (self.failed.load(Relaxed), self.send_errors.load(Relaxed));
        if failed == 0 && errors == 0 {
            return String::new();
        }
        let mut s = String::new();
        if failed > 0 {
            s.push_str(&format!("{failed} failed publishes"));
        }
        if errors > 0 {
            if !s.is_empty() {
                s.push_str(", ");
            }
            s.push_str(&format!(
                "{errors} UDP send errors ({} datagrams not sent)",
                self.unsent.load(Relaxed)
            ));
        }
        if let Some(why) = self.first_failure.get() {
            s.push_str(&format!("; the first: {why}"));
        }
        s
    }

    fn note_lag(&self, lag_ns: u64) {
        self.lag_ns.store(lag_ns, Relaxed);
        self.lag_max_ns.fetch_max(lag_ns, Relaxed);
        if lag_ns > BEHIND_NS {
            self.behind_batches.fetch_add(1, Relaxed);
        }
    }
}

/// Wait until `t_unix_ns`, or until `stop`. With `spin`, sleep coarsely
/// and then spin, so the wait ends within a microsecond or two of the time
/// (and a short gap keeps the core busy); without, only sleep: the wait
/// ends up to the kernel's timer slack (~50-100 µs) late, and the core is
/// free for others in between.
fn wait_until(clock: &Clock, t_unix_ns: u64, stop: &AtomicBool, spin: bool) {
    loop {
        let now = clock.unix_ns();
        if now >= t_unix_ns || stop.load(Relaxed) {
            return;
        }
        let left = t_unix_ns - now;
        if !spin {
            std::thread::sleep(Duration::from_nanos(left.min(50_000_000)));
        } else if left > 400_000 {
            // Linux sleeps overshoot by ~50-100 µs: wake early, then spin.
            std::thread::sleep(Duration::from_nanos(left.min(50_000_000) - 250_000));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Send `generator`'s schedule to every target (each gets every datagram), on
/// time: datagrams due are sent at once in batches of up to 64 (one UDP GSO
/// send each); when nothing is due the sender waits for the next due time
/// plus `coalesce_ns` (0: send each datagram on its due time, spinning
/// when the gap is short, which keeps a core busy; more: sleep only, never
/// spin, so each datagram goes up to `coalesce_ns` plus the kernel's timer
/// slack late, which the latency then shows, and the core stays free for
/// the system under test). A sender that falls behind
/// never skips and never slows the schedule: it sends what is due as fast
/// as it can and reports the lag.
///
/// `on_batch(send_unix_ns, first_index, len)` sees every batch just before
/// it is sent (benchmarks record the send-time error there).
#[allow(clippy::too_many_arguments)]
pub fn send_udp(
    generator: &mut Generator,
    targets: &[SocketAddr],
    multicast: MulticastOut,
    clock: &Clock,
    coalesce_ns: u64,
    stats: &SendStats,
    stop: &AtomicBool,
    mut on_batch: impl FnMut(u64, u64, usize),
) -> io::Result<()> {
    let mut senders = targets
        .iter()
        .map(|t| {
            DatagramSender::connect_with(*t, multicast)
                .with_context_io(|| format!("UDP socket to {t}"))
        })
        .collect::<io::Result<Vec<_>>>()?;
    let result = (|| {
        let mut buf = [[0u8; DATAGRAM_LEN]; GSO_SEGMENTS_MAX];
        while generator.remaining() > 0 && !stop.load(Relaxed) {
            let now = clock.unix_ns();
            let first = generator.next_index();
            let n = generator.fill_due(now, &mut buf);
            if n == 0 {
                let next = generator.schedule().intended_unix_ns(first);
                wait_until(clock, next + coalesce_ns, stop, coalesce_ns == 0);
                continue;
            }
            stats.note_lag(now.saturating_sub(generator.schedule().intended_unix_ns(first)));
            on_batch(now, first, n);
            for (s, target) in senders.iter_mut().zip(targets) {
                if let Err(e) = s.send(&buf[..n]) {
                    if !is_transient_send_error(&e) {
                        return Err(e);
                    }
                    // A receiver being restarted: keep the schedule, count.
                    stats.send_errors.fetch_add(1, Relaxed);
                    stats.unsent.fetch_add(n as u64, Relaxed);
                    stats.note_failure(|| {
                        format!("UDP send to {target}: {e} (is the receiver running?)")
                    });
                }
            }
            stats.sent.fetch_add(n as u64, Relaxed);
        }
        Ok(())
    })();
    stats.done.store(true, Relaxed);
    result
}

/// Errors a UDP send meets while the receiver (or its host, or the route)
/// is away for a while: on a connected socket an ICMP port-unreachable for
/// an earlier datagram comes back as `ECONNREFUSED` on the next send.
fn is_transient_send_error(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | HostUnreachable | NetworkUnreachable
    )
}

/// Why a JetStream publish failed, and what to do about it.
pub fn publish_failure(subject: &str, e: &async_nats::jetstream::context::PublishError) -> String {
    use async_nats::jetstream::context::PublishErrorKind;
    match e.kind() {
        PublishErrorKind::StreamNotFound => format!(
            "no stream captures subject {subject} (JetStream answered \"no responders\"): \
             start `tspi ingest` against this server once (it creates the TSPI stream), or \
             create a stream whose subjects include {subject}"
        ),
        PublishErrorKind::TimedOut => format!(
            "publish to {subject}: {e} (the stream's leader is slow or away; a smaller \
             --window or a lower rate may help)"
        ),
        _ => format!("publish to {subject}: {e}"),
    }
}

trait IoContext<T> {
    fn with_context_io(self, f: impl FnOnce() -> String) -> io::Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn with_context_io(self, f: impl FnOnce() -> String) -> io::Result<T> {
        self.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", f())))
    }
}

/// Write the whole schedule into a pcap (Wireshark, tcpreplay): each
/// datagram a UDP packet from `src` to `dst`, stamped with its intended
/// send time. Not paced: a file has no clock.
pub fn write_pcap<W: Write>(
    generator: &mut Generator,
    out: W,
    src: SocketAddr,
    dst: SocketAddr,
) -> io::Result<u64> {
    let mut w = tspi::decode::pcap::PcapWriter::new(out)?;
    let mut n = 0;
    let mut d = [0u8; DATAGRAM_LEN];
    while let Some(t) = generator.next_into(&mut d) {
        w.write_udp(t, src, dst, &d)?;
        n += 1;
    }
    w.finish()?;
    Ok(n)
}

/// Write the whole schedule as a raw file: the datagrams back to back,
/// 37 bytes each (what `tspi decode` reads as raw).
pub fn write_raw<W: Write>(generator: &mut Generator, mut out: W) -> io::Result<u64> {
    let mut n = 0;
    let mut d = [0u8; DATAGRAM_LEN];
    while generator.next_into(&mut d).is_some() {
        out.write_all(&d)?;
        n += 1;
    }
    out.flush()?;
    Ok(n)
}

/// Publish the schedule straight to JetStream as contract messages
/// (subject, `Nats-Msg-Id`, CBOR body; `recv` is the publish time), on
/// time, with up to `window` acks in flight. Failed publishes are counted,
/// not retried (a retry would hide a failure the measurement should show).
pub async fn publish_jetstream(
    mut generator: Generator,
    js: async_nats::jetstream::Context,
    prefix: String,
    clock: Clock,
    window: usize,
    stats: Arc<SendStats>,
    stop: Arc<AtomicBool>,
) {
    let mut in_flight = FuturesUnordered::new();
    let mut buf = [[0u8; DATAGRAM_LEN]; 256];
    while generator.remaining() > 0 && !stop.load(Relaxed) {
        let now = clock.unix_ns();
        let first = generator.next_index();
        let n = generator.fill_due(now, &mut buf);
        if n == 0 {
            let next = generator.schedule().intended_unix_ns(first);
            let wait = Duration::from_nanos(next.saturating_sub(now));
            // Acks land while we wait.
            let _ = tokio::time::timeout(wait, async {
                while let Some(r) = in_flight.next().await {
                    note_ack(&stats, r);
                }
                std::future::pending::<()>().await;
            })
            .await;
            continue;
        }
        stats.note_lag(now.saturating_sub(generator.schedule().intended_unix_ns(first)));
        let recv = RecvTime::from_unix_ns(now);
        for d in &buf[..n] {
            let Ok(frame) = tspi::codec::parse(d) else {
                stats.failed.fetch_add(1, Relaxed);
                continue;
            };
            let m = Message::encode(&prefix, &frame, recv);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", m.msg_id.as_str());
            let subject = m.subject.clone();
            match js
                .publish_with_headers(m.subject, headers, m.body.into())
                .await
            {
                Ok(ack) => in_flight.push(async move { (subject, ack.into_future().await) }),
                Err(e) => {
                    stats.failed.fetch_add(1, Relaxed);
                    stats.note_failure(|| publish_failure(&subject, &e));
                }
            }
            while in_flight.len() >= window {
                if let Some(r) = in_flight.next().await {
                    note_ack(&stats, r);
                }
            }
        }
        stats.sent.fetch_add(n as u64, Relaxed);
    }
    while let Some(r) = in_flight.next().await {
        note_ack(&stats, r);
    }
    stats.done.store(true, Relaxed);
}

fn note_ack<T>(
    stats: &SendStats,
    (subject, r): (
        String,
        Result<T, async_nats::jetstream::context::PublishError>,
    ),
) {
    if let Err(e) = r {
        stats.failed.fetch_add(1, Relaxed);
        stats.note_failure(|| publish_failure(&subject, &e));
    }
}

/// Where the measurement listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// New messages of a JetStream stream (ordered push consumer): what is
    /// stored, as a consumer of the stream sees it.
    Stream(String),
    /// A core NATS subject (a channel such as `tspi.channel.livestream`).
    Subject(String),
}

/// One arrival: its subject and `Nats-Msg-Id`.
pub type Arrival = (String, Option<String>);

/// Subscribe to `source`; arrivals are timed when they are taken from the
/// returned stream.
pub async fn subscribe(
    client: &async_nats::Client,
    source: &Source,
) -> anyhow::Result<BoxStream<'static, Arrival>> {
    match source {
        Source::Stream(name) => {
            let js = async_nats::jetstream::new(client.clone());
            let stream = js
                .get_stream(name)
                .await
                .with_context(|| format!("stream {name}"))?;
            let msgs = stream
                .create_consumer(async_nats::jetstream::consumer::push::OrderedConfig {
                    deliver_subject: client.new_inbox(),
                    deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::New,
                    ..Default::default()
                })
                .await?
                .messages()
                .await?;
            Ok(msgs
                .filter_map(|m| async move {
                    let m = m.ok()?;
                    let id = msg_id(m.headers.as_ref());
                    Some((m.subject.to_string(), id))
                })
                .boxed())
        }
        Source::Subject(s) => {
            let sub = client.subscribe(s.clone()).await?;
            Ok(sub
                .map(|m| {
                    let id = msg_id(m.headers.as_ref());
                    (m.subject.to_string(), id)
                })
                .boxed())
        }
    }
}

fn msg_id(h: Option<&async_nats::HeaderMap>) -> Option<String> {
    Some(h?.get("Nats-Msg-Id")?.as_str().to_owned())
}

/// The datagram type a contract subject names (`<prefix>.<type>.<id>`).
pub fn subject_type(subject: &str) -> Option<FrameType> {
    let mut it = subject.rsplitn(3, '.');
    let _id = it.next()?;
    match it.next()? {
        "geocentric" => Some(FrameType::Geocentric),
        "spherical" => Some(FrameType::Spherical),
        _ => None,
    }
}

/// A snapshot for the progress line.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub elapsed_s: f64,
    pub offered_per_s: f64,
    pub sent: u64,
    pub scheduled: u64,
    pub send_rate_per_s: f64,
    pub lag_ms: f64,
    pub lag_max_ms: f64,
    pub behind_batches: u64,
    /// Distinct arrivals so far (None when not measuring).
    pub received: Option<u64>,
}

impl Progress {
    /// One line for the operator.
    pub fn line(&self) -> String {
        let mut s = format!(
            "[{:6.1} s] offered {:.0}/s  sent {}/{} ({:.0}/s)  lag {:.3} ms (max {:.3})",
            self.elapsed_s,
            self.offered_per_s,
            self.sent,
            self.scheduled,
            self.send_rate_per_s,
            self.lag_ms,
            self.lag_max_ms
        );
        if self.behind_batches > 0 {
            s.push_str(&format!(
                "  BEHIND SCHEDULE ({} late batches)",
                self.behind_batches
            ));
        }
        if let Some(r) = self.received {
            s.push_str(&format!(
                "  received {r} (not yet {})",
                self.sent.saturating_sub(r)
            ));
        }
        s
    }
}

/// How to send a measured run.
#[derive(Clone, Debug)]
pub enum Output {
    /// UDP to these targets (each gets every datagram).
    Udp {
        targets: Vec<SocketAddr>,
        coalesce_ns: u64,
        multicast: MulticastOut,
    },
    /// Straight to JetStream as contract messages.
    Nats { prefix: String, window: usize },
}

/// A measured run's results.
#[derive(Debug)]
pub struct RunResult {
    pub summary: Summary,
    pub ledger: Ledger,
    pub lag_max_ms: f64,
    pub behind_batches: u64,
    pub failed_publishes: u64,
    /// UDP sends that failed (receiver away) and were skipped.
    pub send_errors: u64,
    /// The failures, with the first one's reason (empty: none).
    pub failures: String,
    pub out_of_range: u64,
}

/// Run `fleet` at `rate_hz` per track for `duration_s`, sending through
/// `output` and measuring at `source` on `client`; print progress with
/// `on_progress` every `progress_every`; after the sender is done, wait up
/// to `drain` for the last arrivals (less if all have come). `stop` ends
/// the run early (Ctrl-C): the account then covers what was sent.
#[allow(clippy::too_many_arguments)]
pub async fn measured_run(
    fleet: Arc<Fleet>,
    rate_hz: f64,
    duration_s: f64,
    output: Output,
    client: &async_nats::Client,
    source: &Source,
    drain: Duration,
    progress_every: Duration,
    stop: Arc<AtomicBool>,
    mut on_progress: impl FnMut(&Progress),
) -> anyhow::Result<RunResult> {
    let clock = Clock::now();
    // Start a little ahead so the subscription is in place first.
    let schedule = Schedule::new(
        clock.unix_ns() + 200_000_000,
        fleet.tracks(),
        rate_hz,
        duration_s,
    )?;
    let mut ledger = Ledger::new(fleet.clone(), schedule, 1_000_000_000)?;
    let mut arrivals = subscribe(client, source).await?;
    client.flush().await?;
    let stats = Arc::new(SendStats::default());
    let generator = Generator::new(fleet, schedule);
    let (sender, oor_rx) = match output {
        Output::Udp {
            targets,
            coalesce_ns,
            multicast,
        } => {
            let (stats, stop) = (stats.clone(), stop.clone());
            let (tx, rx) = tokio::sync::oneshot::channel();
            let h = std::thread::Builder::new()
                .name("tspi-loadgen-send".into())
                .spawn(move || {
                    let mut generator = generator;
                    let r = send_udp(
                        &mut generator,
                        &targets,
                        multicast,
                        &clock,
                        coalesce_ns,
                        &stats,
                        &stop,
                        |_, _, _| {},
                    );
                    let _ = tx.send(generator.out_of_range);
                    r
                })?;
            (Some(h), rx)
        }
        Output::Nats { prefix, window } => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let js = async_nats::jetstream::new(client.clone());
            let (stats, stop) = (stats.clone(), stop.clone());
            tokio::spawn(async move {
                publish_jetstream(generator, js, prefix, clock, window, stats, stop).await;
                let _ = tx.send(0);
            });
            (None, rx)
        }
    };
    let mut tick = tokio::time::interval(progress_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let t0 = Instant::now();
    let mut last = (Instant::now(), 0u64);
    let mut drain_from: Option<(Instant, u64)> = None;
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            a = arrivals.next() => {
                let Some((subject, id)) = a else { anyhow::bail!("the subscription at {source:?} ended") };
                let now = clock.unix_ns();
                match id {
                    Some(id) => { ledger.record_id(subject_type(&subject), &id, now); }
                    None => { ledger.record(None, 0, 0, u32::MAX, now); }
                }
            }
            _ = tick.tick() => {
                let sent = stats.sent.load(Relaxed);
                let dt = last.0.elapsed().as_secs_f64().max(1e-9);
                on_progress(&Progress {
                    elapsed_s: t0.elapsed().as_secs_f64(),
                    offered_per_s: schedule.rate_per_s(),
                    sent,
                    scheduled: schedule.total,
                    send_rate_per_s: (sent - last.1) as f64 / dt,
                    lag_ms: stats.lag_ns.load(Relaxed) as f64 / 1e6,
                    lag_max_ms: stats.lag_max_ns.load(Relaxed) as f64 / 1e6,
                    behind_batches: stats.behind_batches.load(Relaxed),
                    received: Some(ledger.received()),
                });
                last = (Instant::now(), sent);
            }
            _ = poll.tick() => {
                if stats.done.load(Relaxed) {
                    let sent = stats.sent.load(Relaxed);
                    let received = ledger.summary(sent).sent - ledger.summary(sent).lost;
                    let (since, seen) = *drain_from.get_or_insert((Instant::now(), received));
                    if received >= sent {
                        break;
                    }
                    // Wait while arrivals still come; give up `drain` after the last.
                    if received > seen {
                        drain_from = Some((Instant::now(), received));
                    } else if since.elapsed() >= drain || (stop.load(Relaxed) && since.elapsed() >= drain.min(Duration::from_secs(2))) {
                        break;
                    }
                }
            }
        }
    }
    if let Some(h) = sender {
        h.join()
            .map_err(|_| anyhow::anyhow!("the UDP sender panicked"))??;
    }
    let out_of_range = oor_rx.await.unwrap_or(0);
    let sent = stats.sent.load(Relaxed);
    Ok(RunResult {
        summary: ledger.summary(sent),
        ledger,
        lag_max_ms: stats.lag_max_ns.load(Relaxed) as f64 / 1e6,
        behind_batches: stats.behind_batches.load(Relaxed),
        failed_publishes: stats.failed.load(Relaxed),
        send_errors: stats.send_errors.load(Relaxed),
        failures: stats.failure_line(),
        out_of_range,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_types() {
        assert_eq!(
            subject_type("tspi.geocentric.12"),
            Some(FrameType::Geocentric)
        );
        assert_eq!(subject_type("a.b.spherical.12"), Some(FrameType::Spherical));
        assert_eq!(subject_type("tspi.channel.livestream"), None);
        assert_eq!(subject_type("x"), None);
    }

    #[test]
    fn progress_line_says_when_behind() {
        let mut p = Progress {
            elapsed_s: 1.0,
            offered_per_s: 1000.0,
            sent: 900,
            scheduled: 5000,
            send_rate_per_s: 900.0,
            lag_ms: 0.01,
            lag_max_ms: 0.2,
            behind_batches: 0,
            received: None,
        };
        assert!(!p.line().contains("BEHIND"), "{}", p.line());
        p.behind_batches = 3;
        p.received = Some(850);
        let l = p.line();
        assert!(
            l.contains("BEHIND SCHEDULE (3 late batches)") && l.contains("received 850"),
            "{l}"
        );
    }
}
