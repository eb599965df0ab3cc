//! `tspi channels`: the channels service and the operator's commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tspi::channels::message::{
    ChannelId, ControlAction, GroupReplayRequest, ReplayControl, ReplaySource, ReplaySpec,
};
use tspi::channels::service::{self, ServiceOptions, ServiceStats};
use tspi::config::{Config, Machine, Role};

#[derive(Debug, clap::Args)]
pub struct ChannelsArgs {
    #[command(subcommand)]
    pub command: ChannelsCommand,
}

/// Where to reach NATS.
#[derive(Debug, clap::Args)]
pub struct Conn {
    /// Configuration file (its [nats], [stream] and [channels] sections).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// NATS server URL (repeatable; replaces the file's list).
    #[arg(long = "nats", value_name = "URL")]
    pub nats: Vec<String>,
    /// How long to wait for the service's answer.
    #[arg(long, default_value = "10", value_name = "S")]
    pub wait_s: u64,
}

/// The operator's credential for group replay control.
#[derive(Debug, clap::Args)]
pub struct Operator {
    /// Operator token, one of the service's `[channels] operator_tokens`
    /// (default: the file's `[channels] operator_token`, which keeps it out
    /// of the process list).
    #[arg(long, value_name = "TOKEN")]
    pub operator_token: Option<String>,
}

impl Operator {
    fn token(self, cfg: &Config) -> Option<String> {
        self.operator_token
            .or_else(|| cfg.channels.client_operator_token())
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum ChannelsCommand {
    /// Run the channels service: livestream, group and private replays,
    /// directory; until SIGINT/SIGTERM.
    Serve {
        #[command(flatten)]
        conn: Conn,
        /// Do not run the LIVE_MAIN livestream consumer.
        #[arg(long)]
        no_livestream: bool,
    },
    /// Start a group replay for everyone; prints its GroupReplayStart.
    StartReplay {
        #[command(flatten)]
        conn: Conn,
        /// Start: an RFC 3339 time or a TSPI stream sequence (a time only
        /// with --from-archive).
        #[arg(long, value_name = "TIME|SEQ", required_unless_present = "tag")]
        start: Option<String>,
        /// End: an RFC 3339 time (default: what the stream holds now).
        #[arg(long, value_name = "TIME")]
        end: Option<String>,
        /// Replay the window around this tag instead.
        #[arg(long, value_name = "TAG-ID", conflicts_with = "start")]
        tag: Option<String>,
        /// Channel id (slugged); default from the start time or the tag.
        #[arg(long, value_name = "ID")]
        id: Option<String>,
        /// Name shown to operators.
        #[arg(long, value_name = "TEXT")]
        name: Option<String>,
        /// Speed, 1 = original pace.
        #[arg(long, default_value = "1")]
        rate: f64,
        /// Let the server pace it (push consumer, ReplayPolicy::Original).
        #[arg(long, conflicts_with = "from_archive")]
        jetstream_native: bool,
        /// Replay from the PostgreSQL archive (the service's `[channels]
        /// archive_dsn`, else its `[archive] postgres`) instead of the TSPI
        /// stream; --start/--end/--tag work the same (tags from the
        /// archive's tspi_tags).
        #[arg(long)]
        from_archive: bool,
        #[command(flatten)]
        operator: Operator,
    },
    /// Control a running replay: pause, resume, seek or rate. Prints the
    /// service's ReplayControlResult; exit 1 when refused.
    Control {
        #[command(flatten)]
        conn: Conn,
        /// The channel: `replay.<id>` (or just `<id>`), or a private
        /// `client.<client>.<session>` (with --client-id).
        #[arg(long, value_name = "CHANNEL-ID")]
        channel: ChannelId,
        /// A private replay's owner (its client id).
        #[arg(long, value_name = "ID")]
        client_id: Option<String>,
        #[command(subcommand)]
        action: ControlCommand,
        #[command(flatten)]
        operator: Operator,
    },
    /// Stop a group replay; prints its GroupReplayStop.
    StopReplay {
        #[command(flatten)]
        conn: Conn,
        /// The channel id, `replay.<id>` (or just `<id>`).
        #[arg(long, value_name = "CHANNEL-ID")]
        channel: ChannelId,
        #[command(flatten)]
        operator: Operator,
    },
    /// List the active channels (livestream first), one JSON line each.
    List {
        #[command(flatten)]
        conn: Conn,
    },
}

/// What `tspi channels control` asks.
#[derive(Debug, clap::Subcommand)]
pub enum ControlCommand {
    /// Hold the replay where it is.
    Pause,
    /// Play on from where it was paused.
    Resume,
    /// Jump to a recorded moment: an RFC 3339 time, or a tag id (its
    /// moment); messages sent again carry a new Nats-Msg-Id suffix.
    Seek {
        #[arg(value_name = "TIME|TAG-ID")]
        to: String,
    },
    /// Play on at this speed (1 = original pace; 0.01 to 1000).
    Rate {
        #[arg(value_name = "X")]
        rate: f64,
    },
}

fn config(conn: &Conn) -> anyhow::Result<Config> {
    let mut cfg = super::load_config(conn.config.as_deref())?;
    if !conn.nats.is_empty() {
        cfg.nats.servers = conn.nats.clone();
    }
    cfg.nats.name = "tspi-channels".into();
    Ok(cfg)
}

/// How the service runs, from the file's `[stream]` and `[channels]`.
pub(super) fn service_options(cfg: &Config) -> ServiceOptions {
    ServiceOptions {
        streams: tspi::jetstream::StreamSettings {
            replicas: cfg.stream.replicas,
            duplicate_window: Duration::from_secs(cfg.stream.duplicate_window_s),
            update: cfg.stream.update,
            ..Default::default()
        },
        channels: tspi::config::ChannelsConfig {
            // The archive replays read: its own key, else the archiver's.
            archive_dsn: cfg
                .channels
                .archive_dsn
                .clone()
                .or_else(|| cfg.archive.postgres.clone()),
            // And its CA file: the archiver's goes with the archiver's DSN.
            archive_ca_file: match &cfg.channels.archive_dsn {
                Some(_) => cfg.channels.archive_ca_file.clone(),
                None => cfg
                    .channels
                    .archive_ca_file
                    .clone()
                    .or_else(|| cfg.archive.ca_file.clone()),
            },
            ..cfg.channels.clone()
        },
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tspi-channels")
        .enable_all()
        .build()?)
}

pub fn run(a: ChannelsArgs) -> anyhow::Result<ExitCode> {
    match a.command {
        ChannelsCommand::Serve {
            conn,
            no_livestream,
        } => {
            let mut cfg = config(&conn)?;
            if no_livestream {
                cfg.channels.livestream = false;
            }
            cfg.validate_for(&[Role::Channels], &Machine::current())?;
            let opts = service_options(&cfg);
            let rt = runtime()?;
            rt.block_on(async {
                let client = tspi::nats::connect(&cfg.nats).await?;
                service::serve(client, opts, Arc::new(ServiceStats::default()), shutdown()).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        ChannelsCommand::StartReplay {
            conn,
            start,
            end,
            tag,
            id,
            name,
            rate,
            jetstream_native,
            from_archive,
            operator,
        } => {
            let cfg = config(&conn)?;
            let spec = ReplaySpec {
                start,
                end,
                tag,
                rate,
                jetstream_native,
                source: if from_archive {
                    ReplaySource::Archive
                } else {
                    ReplaySource::Stream
                },
            };
            tspi::replay::pacer::Rate::new(rate)?;
            let channel =
                service::group_channel_id(id.as_deref(), &spec).map_err(anyhow::Error::msg)?;
            let display = name.unwrap_or_else(|| channel.to_string());
            let mut req = GroupReplayRequest::new(&channel, display, spec);
            req.operator_token = operator.token(&cfg);
            let rt = runtime()?;
            let start = rt.block_on(async {
                let client = tspi::nats::connect(&cfg.nats).await?;
                service::request_group_replay(&client, &req, Duration::from_secs(conn.wait_s)).await
            })?;
            println!("{}", serde_json::to_string(&start)?);
            Ok(ExitCode::SUCCESS)
        }
        ChannelsCommand::StopReplay {
            conn,
            channel,
            operator,
        } => {
            let cfg = config(&conn)?;
            let token = operator.token(&cfg);
            let rt = runtime()?;
            let stop = rt.block_on(async {
                let client = tspi::nats::connect(&cfg.nats).await?;
                service::stop_group_replay(
                    &client,
                    &channel.to_string(),
                    token,
                    Duration::from_secs(conn.wait_s),
                )
                .await
            })?;
            println!("{}", serde_json::to_string(&stop)?);
            Ok(ExitCode::SUCCESS)
        }
        ChannelsCommand::Control {
            conn,
            channel,
            client_id,
            action,
            operator,
        } => {
            let cfg = config(&conn)?;
            let (action, to, rate) = match action {
                ControlCommand::Pause => (ControlAction::Pause, None, None),
                ControlCommand::Resume => (ControlAction::Resume, None, None),
                ControlCommand::Seek { to } => (ControlAction::Seek, Some(to), None),
                ControlCommand::Rate { rate } => {
                    tspi::replay::pacer::Rate::new(rate)?;
                    (ControlAction::Rate, None, Some(rate))
                }
            };
            let mut req = ReplayControl::new(&channel, action);
            req.to = to;
            req.rate = rate;
            req.client_id = client_id;
            req.operator_token = operator.token(&cfg);
            let rt = runtime()?;
            let r = rt.block_on(async {
                let client = tspi::nats::connect(&cfg.nats).await?;
                service::control_replay(&client, &req, Duration::from_secs(conn.wait_s)).await
            })?;
            println!("{}", serde_json::to_string(&r)?);
            if !r.ok {
                anyhow::bail!(
                    "the channels service refused to {} {}: {}",
                    r.action.label(),
                    r.channel_id,
                    r.error.unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ChannelsCommand::List { conn } => {
            let cfg = config(&conn)?;
            let rt = runtime()?;
            let entries = rt.block_on(async {
                let client = tspi::nats::connect(&cfg.nats).await?;
                service::list_channels(&client, Duration::from_secs(conn.wait_s)).await
            })?;
            for e in entries {
                println!("{}", serde_json::to_string(&e)?);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}
