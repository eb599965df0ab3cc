//! `tspi demo`: the main job, end to end on this machine.
//!
//! Today (foundation): starts a three-node JetStream cluster on loopback,
//! creates the `TSPI` stream, generates a small fleet of tracks, turns each
//! update into a real 37-byte datagram, parses it with the codec, encodes the
//! contract message and publishes it with its `Nats-Msg-Id` on an open-loop
//! schedule, many acks in flight. It then republishes a slice to show
//! JetStream dropping duplicates, checks the stream's count, and prints the
//! latency report. UDP ingest (`tspi ingest`) and the airshow generator
//! (`tspi-loadgen`) replace the in-process generator when they land.

use anyhow::{Context as _, bail};
use async_nats::HeaderMap;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tspi::codec::{self, Frame, Geocentric, Payload, Spherical};
use tspi::harness::{NatsCluster, NatsServer};
use tspi::jetstream::{StreamSettings, ensure_stream, telemetry_stream};
use tspi::message::{DEFAULT_PREFIX, Message, RecvTime};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Tracks in the generated fleet.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(1..=5000))]
    pub tracks: u16,
    /// Updates per second per track.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rate_hz: u32,
    /// How long to generate for.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=600))]
    pub duration_s: u32,
    /// JetStream nodes to start (3: a cluster with replicated stream; 1: single server).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nodes: u8,
    /// Publish acks allowed in flight.
    #[arg(long, default_value_t = 1024)]
    pub acks_in_flight_max: usize,
}

/// One server, or a cluster of several.
enum Servers {
    One(Box<NatsServer>),
    Cluster(NatsCluster),
}

impl Servers {
    fn start(nodes: usize) -> Result<Self, tspi::harness::HarnessError> {
        Ok(if nodes == 1 {
            Servers::One(Box::new(NatsServer::start()?))
        } else {
            Servers::Cluster(NatsCluster::start(nodes)?)
        })
    }

    fn urls(&self) -> Vec<String> {
        match self {
            Servers::One(s) => vec![s.url()],
            Servers::Cluster(c) => c.urls(),
        }
    }
}

/// A track flying a level circle around the range origin, in a local
/// east-north-up frame; converted to earth-centred coordinates for
/// geocentric datagrams, or seen from a sensor at the origin for spherical.
struct Orbit {
    sensor_id: u16,
    radius_m: f64,
    speed_mps: f64,
    alt_m: f64,
    phase: f64,
    spherical: bool,
}

/// Range origin: 32.5° N, 106.5° W, 1200 m (WGS-84).
const ORIGIN: (f64, f64, f64) = (32.5, -106.5, 1200.0);

fn ecef(lat_deg: f64, lon_deg: f64, h: f64) -> [f64; 3] {
    const A: f64 = 6_378_137.0;
    const E2: f64 = 6.694_379_990_14e-3;
    let (lat, lon) = (lat_deg.to_radians(), lon_deg.to_radians());
    let n = A / (1.0 - E2 * lat.sin().powi(2)).sqrt();
    [
        (n + h) * lat.cos() * lon.cos(),
        (n + h) * lat.cos() * lon.sin(),
        (n * (1.0 - E2) + h) * lat.sin(),
    ]
}

/// Columns: unit east, north, up vectors in ECEF at the origin.
fn enu_axes() -> [[f64; 3]; 3] {
    let (lat, lon) = (ORIGIN.0.to_radians(), ORIGIN.1.to_radians());
    [
        [-lon.sin(), lon.cos(), 0.0],
        [-lat.sin() * lon.cos(), -lat.sin() * lon.sin(), lat.cos()],
        [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()],
    ]
}

fn scaled_i32(v: f64, scale: f64) -> i32 {
    (v * scale)
        .round()
        .clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
}

fn scaled_i16(v: f64, scale: f64) -> i16 {
    (v * scale)
        .round()
        .clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
}

impl Orbit {
    /// The datagram for time `t_s` after the start; `ticks` is its UTC time.
    fn frame(
        &self,
        t_s: f64,
        day: u16,
        ticks: u32,
        origin: [f64; 3],
        axes: &[[f64; 3]; 3],
    ) -> Frame {
        let w = self.speed_mps / self.radius_m;
        let a = self.phase + w * t_s;
        let enu_p = [self.radius_m * a.cos(), self.radius_m * a.sin(), self.alt_m];
        let enu_v = [-self.speed_mps * a.sin(), self.speed_mps * a.cos(), 0.0];
        let enu_a = [
            -self.speed_mps * w * a.cos(),
            -self.speed_mps * w * a.sin(),
            0.0,
        ];
        let payload = if self.spherical {
            let r = (enu_p[0].powi(2) + enu_p[1].powi(2) + enu_p[2].powi(2)).sqrt();
            let az = enu_p[0].atan2(enu_p[1]).to_degrees().rem_euclid(360.0);
            let el = (enu_p[2] / r).asin().to_degrees();
            Payload::Spherical(Spherical {
                range: scaled_i32(r, 100.0),
                azimuth: (az * 1e6).round() as u32,
                elevation: (el * 1e6).round() as u32,
                ..Spherical::default()
            })
        } else {
            let to_ecef = |v: [f64; 3]| -> [f64; 3] {
                std::array::from_fn(|i| axes[0][i] * v[0] + axes[1][i] * v[1] + axes[2][i] * v[2])
            };
            let p = to_ecef(enu_p);
            let v = to_ecef(enu_v);
            let acc = to_ecef(enu_a);
            Payload::Geocentric(Geocentric {
                x: scaled_i32(origin[0] + p[0], 100.0),
                y: scaled_i32(origin[1] + p[1], 100.0),
                z: scaled_i32(origin[2] + p[2], 100.0),
                vx: scaled_i16(v[0], 100.0),
                vy: scaled_i16(v[1], 100.0),
                vz: scaled_i16(v[2], 100.0),
                ax: scaled_i16(acc[0], 100.0),
                ay: scaled_i16(acc[1], 100.0),
                az: scaled_i16(acc[2], 100.0),
            })
        };
        Frame {
            sensor_id: self.sensor_id,
            day,
            time_ticks: ticks,
            // Spherical tracks here carry position only.
            status: if self.spherical { 0x07 } else { 0xFF },
            status_flags: if self.spherical { 0 } else { 0x01 },
            payload,
        }
    }
}

fn percentiles(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".into();
    }
    let ms = |v: u64| v as f64 / 1000.0;
    format!(
        "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  (n={})",
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.90)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
        h.len()
    )
}

pub fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(demo(a))
}

async fn demo(a: DemoArgs) -> anyhow::Result<ExitCode> {
    println!("== tspi demo (foundation stage) ==");
    println!(
        "starting {} JetStream node(s) on loopback (temporary directories)...",
        a.nodes
    );
    let started = Instant::now();
    let servers = tokio::task::spawn_blocking({
        let nodes = usize::from(a.nodes);
        move || Servers::start(nodes)
    })
    .await??;
    let urls = servers.urls();
    println!(
        "  up in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        urls.join(", ")
    );

    let client = async_nats::ConnectOptions::new()
        .name("tspi-demo")
        .connect(urls.as_slice())
        .await
        .context("connecting to the demo cluster")?;
    let js = async_nats::jetstream::new(client);
    let settings = StreamSettings {
        replicas: usize::from(a.nodes),
        duplicate_window: Duration::from_secs(30),
        ..StreamSettings::default()
    };
    let info = ensure_stream(
        &js,
        telemetry_stream(DEFAULT_PREFIX, &settings),
        Duration::from_secs(30),
    )
    .await
    .context("creating the TSPI stream")?;
    println!(
        "stream {} ready: subjects {:?}, replicas {}, duplicate window {} s",
        info.config.name,
        info.config.subjects,
        info.config.num_replicas,
        info.config.duplicate_window.as_secs()
    );

    let origin = ecef(ORIGIN.0, ORIGIN.1, ORIGIN.2);
    let axes = enu_axes();
    let fleet: Vec<Orbit> = (0..a.tracks)
        .map(|k| {
            let k_f = f64::from(k);
            Orbit {
                sensor_id: 1000 + k,
                radius_m: 2_000.0 + 150.0 * (k_f % 20.0),
                speed_mps: 120.0 + 5.0 * (k_f % 16.0),
                alt_m: 1_500.0 + 100.0 * (k_f % 30.0),
                phase: k_f * 0.7,
                spherical: k % 4 == 3,
            }
        })
        .collect();
    let total = u64::from(a.tracks) * u64::from(a.rate_hz) * u64::from(a.duration_s);
    println!(
        "generating {} tracks x {} Hz x {} s = {} datagrams (open-loop schedule, {} acks in flight max)",
        a.tracks, a.rate_hz, a.duration_s, total, a.acks_in_flight_max
    );

    // Day and tick of the schedule's start, from the wall clock.
    let wall0 = RecvTime::now();
    let (day_of_year, ticks0) = tspi::message::utc_day_ticks(wall0.unix_ns);

    let period = Duration::from_secs(1) / a.rate_hz;
    let mut t = Tally::new()?;
    let mut in_flight = FuturesUnordered::new();
    let (mut published, mut behind_max) = (0u64, Duration::ZERO);
    let mut kept: Vec<Message> = Vec::new();
    let start = Instant::now();
    let mut last_progress = Instant::now();
    for step in 0..(a.rate_hz * a.duration_s) {
        let due = start + period * step;
        let now = Instant::now();
        if due > now {
            // Harvest acks while waiting for the next step, so each ack's
            // time is taken when it arrives, not when we next look.
            let sleep = tokio::time::sleep_until(due.into());
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    biased;
                    () = &mut sleep => break,
                    Some(r) = in_flight.next(), if !in_flight.is_empty() => {
                        t.record(r);
                    }
                }
            }
        } else {
            behind_max = behind_max.max(now - due);
        }
        let t_s = (period * step).as_secs_f64();
        let ticks = (ticks0 + (t_s * 10_000.0) as u32) % codec::TIME_TICKS_END;
        for orbit in &fleet {
            let wire = orbit.frame(t_s, day_of_year, ticks, origin, &axes).encode();
            // Through the codec exactly as a received datagram would go.
            let frame = codec::parse(&wire).context("generated datagram failed to parse")?;
            let msg = Message::encode(DEFAULT_PREFIX, &frame, RecvTime::now());
            if kept.len() < 100 {
                kept.push(msg.clone());
            }
            while in_flight.len() >= a.acks_in_flight_max {
                if let Some(r) = in_flight.next().await {
                    t.record(r);
                }
            }
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", msg.msg_id.as_str());
            let sent = Instant::now();
            let ack = js
                .publish_with_headers(msg.subject, headers, msg.body.into())
                .await
                .context("publishing")?;
            published += 1;
            in_flight.push(async move {
                let r = ack.await;
                (due, sent, Instant::now(), r)
            });
        }
        if last_progress.elapsed() >= Duration::from_secs(2) {
            last_progress = Instant::now();
            println!(
                "  t={:>5.1} s  published {published}  acked {}  in flight {}",
                start.elapsed().as_secs_f64(),
                t.acked,
                in_flight.len()
            );
        }
    }
    while let Some(r) = in_flight.next().await {
        t.record(r);
    }
    let elapsed = start.elapsed();

    // Dedup: publish the first messages again with the same ids.
    let mut redelivered_dupes = 0u64;
    for msg in &kept {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg.msg_id.as_str());
        let ack = js
            .publish_with_headers(msg.subject.clone(), headers, msg.body.clone().into())
            .await?
            .await?;
        redelivered_dupes += u64::from(ack.duplicate);
    }
    let mut stream = js.get_stream("TSPI").await?;
    let stored = stream.info().await?.state.messages;

    println!();
    println!("== report ==");
    println!(
        "published {published} in {:.2} s ({:.0} msg/s), acked {}, failed {}, duplicate acks {}",
        elapsed.as_secs_f64(),
        published as f64 / elapsed.as_secs_f64(),
        t.acked,
        t.failed,
        t.duplicates
    );
    println!(
        "schedule: worst lag behind the open-loop schedule {:.3} ms",
        behind_max.as_secs_f64() * 1e3
    );
    println!("publish -> ack           {}", percentiles(&t.to_ack));
    println!("scheduled send -> ack    {}", percentiles(&t.sched_to_ack));
    println!(
        "dedup: republished {} messages with their Nats-Msg-Id: {} acknowledged as duplicates",
        kept.len(),
        redelivered_dupes
    );
    println!("stream TSPI holds {stored} messages (expected {total})");
    println!();
    println!(
        "not yet in this demo: UDP ingest (`tspi ingest`, issue 3) and the airshow fleet \
         generator (`tspi-loadgen`, issue 4); datagrams here are generated in-process and go \
         through the codec and encoder, not through a socket."
    );
    drop(servers);
    if stored != total || t.failed > 0 || redelivered_dupes != kept.len() as u64 {
        bail!(
            "demo check failed: stored {stored} of {total}, failed {}, duplicates {redelivered_dupes}",
            t.failed
        );
    }
    Ok(ExitCode::SUCCESS)
}

type AckResult = (
    Instant,
    Instant,
    Instant,
    Result<
        async_nats::jetstream::publish::PublishAck,
        async_nats::jetstream::context::PublishError,
    >,
);

/// What the acks said, and how long they took.
struct Tally {
    /// Publish call → ack, µs.
    to_ack: Histogram<u64>,
    /// Scheduled send time → ack, µs (no coordinated omission).
    sched_to_ack: Histogram<u64>,
    acked: u64,
    duplicates: u64,
    failed: u64,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Tally {
            to_ack: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            sched_to_ack: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            acked: 0,
            duplicates: 0,
            failed: 0,
        })
    }

    fn record(&mut self, (due, sent, done, r): AckResult) {
        match r {
            Ok(ack) => {
                self.acked += 1;
                self.duplicates += u64::from(ack.duplicate);
                self.to_ack
                    .saturating_record((done - sent).as_micros() as u64);
                self.sched_to_ack
                    .saturating_record(done.saturating_duration_since(due).as_micros() as u64);
            }
            Err(e) => {
                self.failed += 1;
                tracing::warn!(error = %e, "publish failed");
            }
        }
    }
}
