//! `tspi demo`: the main job, end to end on this machine.
//!
//! Starts a three-node JetStream cluster on loopback, runs `tspi ingest` on
//! it (in this process: the same receive threads, publisher and reporter),
//! flies a generated fleet of tracks at it as real UDP datagrams on an
//! open-loop schedule, sends a slice twice as a redundant sender would, and
//! shows the operator's view: the ingest's own report lines while it runs,
//! then the latency report (receive→ack from the ingest's HdrHistogram
//! snapshots, end-to-end from each datagram's own send time to delivery by a
//! stream consumer) and the account of every datagram. The airshow fleet
//! generator (`tspi-loadgen`, issue 4) replaces the simple orbits here when
//! it lands.

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tspi::codec::{self, Frame, Geocentric, Payload, Spherical};
use tspi::config::Config;
use tspi::harness::{NatsCluster, NatsServer};
use tspi::ingest;
use tspi::message::RecvTime;
use tspi::send::DatagramSender;

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
    /// Seconds between the ingest's report lines.
    #[arg(long, default_value_t = 2)]
    pub interval_s: u64,
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

pub fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(demo(a))
}

fn percentiles(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".into();
    }
    let ms = |v: u64| v as f64 / 1e6;
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

/// UTC instant (ns since the epoch) a datagram's day and ticks name, in the
/// year of `near_unix_ns`.
fn intended_unix_ns(day: u16, time_ticks: u32, near_unix_ns: u64) -> u64 {
    let (day_now, _) = tspi::message::utc_day_ticks(near_unix_ns);
    let midnight = near_unix_ns - near_unix_ns % 86_400_000_000_000;
    let day_start = midnight as i128 + (i128::from(day) - i128::from(day_now)) * 86_400_000_000_000;
    (day_start + i128::from(time_ticks) * 100_000) as u64
}

async fn demo(a: DemoArgs) -> anyhow::Result<ExitCode> {
    println!("== tspi demo ==");
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

    // tspi ingest, in this process, on a free loopback port.
    let mut cfg = Config::default();
    cfg.nats.servers = urls.clone();
    cfg.nats.name = "tspi-demo-ingest".into();
    cfg.ingest.udp = vec!["127.0.0.1:0".parse()?];
    cfg.stream.replicas = usize::from(a.nodes);
    cfg.metrics.interval_s = a.interval_s;
    let ingest = ingest::Handle::spawn(cfg, Duration::from_secs(60))
        .await
        .context("starting tspi ingest")?;
    let udp = ingest.addrs[0];
    println!(
        "tspi ingest listening on udp://{udp}, publishing to stream TSPI (replicas {})",
        a.nodes
    );

    // The operator's tools: end-to-end delivery from the stream, and the
    // ingest's HdrHistogram snapshots merged into one histogram.
    let client = async_nats::ConnectOptions::new()
        .name("tspi-demo-operator")
        .connect(urls.as_slice())
        .await?;
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream("TSPI").await.context("stream TSPI")?;
    let mut delivered = stream
        .create_consumer(async_nats::jetstream::consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await?
        .messages()
        .await?;
    let mut snapshots = client.subscribe("tspi.ops.metrics.ingest.>").await?;
    let (collector_stop, mut collector_stopped) = oneshot::channel::<()>();
    let collector = tokio::spawn(async move {
        let mut e2e = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3).expect("bounds");
        let mut recv_to_ack =
            Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3).expect("bounds");
        let mut seen = 0u64;
        loop {
            tokio::select! {
                Some(Ok(m)) = delivered.next() => {
                    let now = RecvTime::now().unix_ns;
                    if let Ok(r) = ciborium::from_reader::<tspi::message::Record, _>(m.payload.as_ref()) {
                        let ticks = (r.time_s * 10_000.0).round() as u32;
                        let intended = intended_unix_ns(r.day, ticks, now);
                        e2e.saturating_record(now.saturating_sub(intended).max(1));
                    }
                    seen += 1;
                }
                Some(s) = snapshots.next() => {
                    if let Ok(snap) = serde_json::from_slice::<tspi::metrics::Snapshot>(&s.payload)
                        && let Ok(h) = tspi::metrics::decode_hdr_snapshot(&snap.histograms.receive_to_ack)
                    {
                        let _ = recv_to_ack.add(&h);
                    }
                }
                _ = &mut collector_stopped => break,
            }
        }
        (e2e, recv_to_ack, seen)
    });

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
    let steps = a.rate_hz * a.duration_s;
    let total = u64::from(a.tracks) * u64::from(steps);
    println!(
        "flying {} tracks x {} Hz x {} s = {} datagrams at it over UDP (open-loop schedule; each datagram's time is its scheduled send time)",
        a.tracks, a.rate_hz, a.duration_s, total
    );
    let mut sender = DatagramSender::connect(udp)?;
    let period = Duration::from_secs(1) / a.rate_hz;
    let wall0 = RecvTime::now().unix_ns;
    let start = Instant::now();
    let mut first_tick: Vec<[u8; codec::DATAGRAM_LEN]> = Vec::new();
    let mut behind_max = Duration::ZERO;
    for step in 0..steps {
        let due = start + period * step;
        let now = Instant::now();
        if due > now {
            tokio::time::sleep_until(due.into()).await;
        } else {
            behind_max = behind_max.max(now - due);
        }
        let t_s = (period * step).as_secs_f64();
        let (day, ticks) = tspi::message::utc_day_ticks(wall0 + (period * step).as_nanos() as u64);
        let batch: Vec<[u8; codec::DATAGRAM_LEN]> = fleet
            .iter()
            .map(|o| o.frame(t_s, day, ticks, origin, &axes).encode())
            .collect();
        if step == 0 {
            first_tick = batch.clone();
        }
        sender.send(&batch)?;
    }
    // A redundant sender repeats the first tick: JetStream drops the copies.
    sender.send(&first_tick)?;
    println!(
        "sent {} datagrams + {} repeated; worst lag behind schedule {:.3} ms",
        total,
        first_tick.len(),
        behind_max.as_secs_f64() * 1e3
    );

    // Let the last acks land, then stop ingest the way SIGTERM does.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stored = 0;
    while Instant::now() < deadline {
        stored = js.get_stream("TSPI").await?.info().await?.state.messages;
        if stored >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let account = ingest.stop().await.context("tspi ingest")?;
    // The final snapshot and the last deliveries are in flight: let them land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = collector_stop.send(());
    let (e2e, recv_to_ack, seen) = collector.await?;
    let c = &account.counters;

    println!();
    println!("== latency report ==");
    println!(
        "receive -> JetStream ack (ingest HdrHistogram)   {}",
        percentiles(&recv_to_ack)
    );
    println!(
        "scheduled send -> delivered from stream          {}",
        percentiles(&e2e)
    );
    println!(
        "  (end-to-end uses the datagram's own time, 0.1 ms resolution; {seen} deliveries timed)"
    );
    println!();
    println!(
        "== account of every datagram ({} backend) ==",
        account.backend
    );
    println!(
        "received {} = rejected {} + filtered {} + ring_dropped {} + acked {} + failed {}  [{}]",
        c.received,
        c.rejected_total(),
        c.filtered,
        c.ring_dropped,
        c.acked,
        c.failed,
        if account.balanced() {
            "balanced"
        } else {
            "UNBALANCED"
        }
    );
    println!(
        "duplicate acks {} (the {} repeated datagrams), retried {}, kernel_dropped {}",
        c.duplicate,
        first_tick.len(),
        c.retried,
        c.kernel_dropped
    );
    println!("stream TSPI holds {stored} messages (expected {total}: one per unique datagram)");
    drop(servers);
    if !account.balanced()
        || stored != total
        || c.failed > 0
        || c.duplicate != first_tick.len() as u64
        || c.received != total + first_tick.len() as u64
    {
        bail!("demo check failed: {account:?}, stored {stored} of {total}");
    }
    Ok(ExitCode::SUCCESS)
}
