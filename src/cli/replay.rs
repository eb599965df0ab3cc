//! `tspi replay`: play a recording at its original pace (or a multiple)
//! into a channel subject or to a UDP target.

use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tspi::config::{Machine, Role};
use tspi::replay::channels::ChannelId;
use tspi::replay::driver::{DriverConfig, Job};
use tspi::replay::pacer::{Control, Rate};
use tspi::replay::sink::{ChannelSink, Sink, UdpSink};
use tspi::replay::source::{CaptureSource, ReadAhead, Source, StartAt, StreamSource};

#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("source").required(true).args(["from_stream", "from_pcap", "from_archive"])
))]
pub struct ReplayArgs {
    /// Configuration file (its [nats] and [channels] sections); flags
    /// override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// NATS server URL (repeatable; replaces the file's list).
    #[arg(long = "nats", value_name = "URL")]
    pub nats: Vec<String>,
    /// Channel to play into: `replay.<id>`, `client.<client>.<session>`, or
    /// a bare `<id>` (= `replay.<id>`). Required unless --udp.
    #[arg(long, value_name = "CHANNEL-ID")]
    pub channel: Option<ChannelId>,
    /// Speed: 1 is the original pace, 2 twice as fast (0.01 to 1000).
    #[arg(long, default_value = "1")]
    pub rate: Rate,
    /// Replay from this JetStream stream (normally TSPI).
    #[arg(long, value_name = "STREAM")]
    pub from_stream: Option<String>,
    /// Replay a pcap/pcapng capture (packet times are receive times) or a
    /// raw file of 37-byte records (give --raw-rate-hz).
    #[arg(long, value_name = "FILE")]
    pub from_pcap: Option<PathBuf>,
    /// Replay from the PostgreSQL archive (a DSN such as
    /// `host=/run/postgresql dbname=tspi` or `postgres://...`).
    #[arg(long, value_name = "DSN")]
    pub from_archive: Option<String>,
    /// With --from-archive: read from a hot standby among the DSN's hosts
    /// (`host=primary,standby`) when one answers, else from any of them.
    #[arg(long, requires = "from_archive")]
    pub from_standby: bool,
    /// With --from-archive: TLS to PostgreSQL, the server's certificate
    /// verified against this PEM CA file (as the archive's `ca_file`).
    #[arg(long, value_name = "FILE", requires = "from_archive")]
    pub archive_ca_file: Option<PathBuf>,
    /// Where to start: an RFC 3339 time, or (stream only) a sequence number.
    #[arg(long, value_name = "TIME|SEQ")]
    pub start: Option<StartAt>,
    /// Where to stop: an RFC 3339 time (default: the end of the data).
    #[arg(long, value_name = "TIME")]
    pub end: Option<String>,
    /// Replay the window around this tag's moment ([channels] tag_before_s
    /// / tag_after_s; the tag is looked up in TSPI_OPS for --from-stream, in
    /// tspi_tags for --from-archive).
    #[arg(long, value_name = "TAG-ID", conflicts_with = "start")]
    pub tag: Option<String>,
    /// Send datagrams to this UDP target instead of publishing to a channel.
    #[arg(long, value_name = "HOST:PORT")]
    pub udp: Option<SocketAddr>,
    /// Spacing of records in a raw capture file, in records per second.
    #[arg(long, value_name = "HZ")]
    pub raw_rate_hz: Option<f64>,
    /// Start again from the beginning at the end, until interrupted.
    #[arg(long = "loop")]
    pub looping: bool,
    /// Leave tags out.
    #[arg(long)]
    pub no_tags: bool,
    /// Subject for re-emitted tags (default [channels] tag_subject, which
    /// defaults to tags.broadcast).
    #[arg(long, value_name = "SUBJECT")]
    pub tag_subject: Option<String>,
    /// Do not create or update the TSPI_REPLAY stream.
    #[arg(long)]
    pub no_create_stream: bool,
}

pub fn run(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = super::load_config(a.config.as_deref())?;
    if !a.nats.is_empty() {
        cfg.nats.servers = a.nats.clone();
    }
    cfg.nats.name = "tspi-replay".into();
    cfg.validate_for(&[Role::Replay], &Machine::current())?;
    if a.udp.is_none() && a.channel.is_none() {
        anyhow::bail!("give --channel <channel-id> (or --udp HOST:PORT to send datagrams)");
    }
    if a.from_stream.is_some() && a.start.is_none() && a.tag.is_none() {
        anyhow::bail!("--from-stream needs --start <RFC 3339 time or sequence>, or --tag <id>");
    }
    let end_ns = a
        .end
        .as_deref()
        .map(tspi::replay::time::parse_rfc3339_ns)
        .transpose()?;
    let raw_interval_ns = match a.raw_rate_hz {
        Some(hz) if hz.is_finite() && hz > 0.0 && hz <= 10_000_000.0 => {
            Some((1e9 / hz).round() as u64)
        }
        Some(hz) => anyhow::bail!("--raw-rate-hz {hz}: give a rate from 0.1 to 10000000"),
        None => None,
    };
    let ch = &cfg.channels;
    let read_ahead = ReadAhead {
        batch_len: ch.read_batch_len,
        batches_max: ch.read_batches_max,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tspi-replay")
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    // The JetStream context spawns its acker on the runtime.
    let _guard = rt.enter();
    let needs_nats = a.udp.is_none() || a.from_stream.is_some();
    let js = if needs_nats {
        let client = rt.block_on(tspi::nats::connect(&cfg.nats))?;
        Some(async_nats::jetstream::new(client))
    } else {
        None
    };

    let source: Box<dyn Source> = if let Some(stream) = &a.from_stream {
        let js = js.clone().context("NATS connection")?;
        let (start, end_ns) = match (&a.tag, a.start) {
            (Some(id), _) => {
                // The window around the tag's moment, from TSPI_OPS.
                let tags = rt.block_on(tspi::replay::source::load_tags(&js))?;
                let t = tags
                    .iter()
                    .find(|t| &t.id == id)
                    .with_context(|| format!("no tag {id:?} in the TSPI_OPS stream"))?;
                (
                    StartAt::Time(t.ts_ns.saturating_sub(ch.tag_before_ns())),
                    Some(end_ns.unwrap_or(t.ts_ns.saturating_add(ch.tag_after_ns()))),
                )
            }
            (None, Some(start)) => (start, end_ns),
            (None, None) => unreachable!("checked above"),
        };
        let mut s = StreamSource::new(handle.clone(), js, start, end_ns);
        s.stream = stream.clone();
        s.with_tags = !a.no_tags;
        s.read_ahead = read_ahead;
        Box::new(s)
    } else if let Some(path) = &a.from_pcap {
        let mut s = CaptureSource::new(path.clone(), raw_interval_ns);
        s.subject_prefix = cfg.nats.subject_prefix.clone();
        s.read_ahead = read_ahead;
        Box::new(s)
    } else if let Some(dsn) = &a.from_archive {
        let window = match (&a.tag, a.start) {
            (Some(tag), _) => tspi::replay::archive::Window::Tag {
                id: tag.clone(),
                before_ns: ch.tag_before_ns(),
                after_ns: ch.tag_after_ns(),
            },
            (None, Some(StartAt::Time(start))) => tspi::replay::archive::Window::Time {
                start_ns: start,
                end_ns: end_ns.context("--from-archive --start needs --end")?,
            },
            (None, Some(StartAt::Sequence(_))) => {
                anyhow::bail!("--from-archive takes a --start time, not a sequence")
            }
            (None, None) => anyhow::bail!("--from-archive needs --start and --end, or --tag"),
        };
        let mut s = tspi::replay::archive::ArchiveSource::new(handle.clone(), dsn.clone(), window);
        s.with_tags = !a.no_tags;
        s.from_standby = a.from_standby;
        s.tls = tspi::pg::Tls::from_setting(a.archive_ca_file.as_deref())?;
        s.read_ahead = read_ahead;
        Box::new(s)
    } else {
        unreachable!("clap requires a source")
    };

    let (sink, target): (Box<dyn Sink>, String) = match (a.udp, &a.channel) {
        (Some(to), _) => (Box::new(UdpSink::connect(to)?), format!("udp {to}")),
        (None, Some(channel)) => {
            let js = js.clone().context("NATS connection")?;
            if !a.no_create_stream && ch.create_streams {
                let settings = tspi::jetstream::StreamSettings {
                    replicas: cfg.stream.replicas,
                    duplicate_window: Duration::from_secs(cfg.stream.duplicate_window_s),
                    max_age: ch.replay_age_max(),
                    allow_batch_publish: false,
                    update: cfg.stream.update,
                };
                rt.block_on(tspi::jetstream::ensure_stream_with(
                    &js,
                    tspi::jetstream::replay_stream(&settings),
                    &tspi::jetstream::Existing::update(settings.update),
                    Duration::from_secs(30),
                ))
                .context("creating the TSPI_REPLAY stream")?;
            }
            let tag_subject = a.tag_subject.clone().unwrap_or_else(|| match channel {
                ChannelId::Client { client, session } => format!("tags.client.{client}.{session}"),
                _ => ch.tag_subject.clone(),
            });
            let sink = ChannelSink::new(
                handle.clone(),
                js,
                channel.clone(),
                tag_subject,
                ch.sink_limits(),
            );
            let subject = sink.subject().to_owned();
            (Box::new(sink), subject)
        }
        (None, None) => unreachable!("checked above"),
    };
    let driver = DriverConfig {
        looping: a.looping,
        ..ch.driver(a.rate, 0)
    };
    tracing::info!(%target, rate = a.rate.get(), "replay starting");
    let job = Job::spawn("cli", source, sink, driver)?;
    let stop = job.controller();
    rt.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stopping the replay");
        let _ = stop.send(Control::Stop);
    });
    let outcome = job.wait_blocking()?;
    println!("{}", outcome.to_json());
    let failed = outcome.sink.failed > 0;
    if failed {
        tspi::notice!(
            Error,
            "tspi replay: {} publishes failed",
            outcome.sink.failed
        );
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
