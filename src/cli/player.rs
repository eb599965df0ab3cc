//! `tspi player`: the headless receiver of a channel (`docs/player.md`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tspi::channels::message::ChannelId;
use tspi::player::{self, PlayerOptions};

/// Where to reach NATS (the console commands share it).
#[derive(Debug, clap::Args)]
pub struct NatsArgs {
    /// Configuration file (its [nats] section: servers, credentials, TLS).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// NATS server URL (repeatable; replaces the file's list).
    #[arg(long = "nats", value_name = "URL")]
    pub nats: Vec<String>,
}

impl NatsArgs {
    /// The `[nats]` section, named `name` at the server.
    pub fn nats_config(&self, name: &str) -> anyhow::Result<tspi::nats::NatsConfig> {
        let mut cfg = super::load_config(self.config.as_deref())?;
        if !self.nats.is_empty() {
            cfg.nats.servers = self.nats.clone();
        }
        cfg.nats.name = name.into();
        Ok(cfg.nats)
    }
}

#[derive(Debug, clap::Args)]
pub struct PlayerArgs {
    #[command(flatten)]
    pub conn: NatsArgs,
    /// Channel to start on: `livestream`, `replay.<id>` or
    /// `client.<client_id>.<session_id>`. It starts at the channel's live
    /// edge (never its history) and follows group replays from
    /// tspi.ops.ctrl.
    #[arg(long, default_value = "livestream", value_name = "CHANNEL")]
    pub channel: ChannelId,
    /// Print every telemetry message as the contract's JSON record, one per
    /// line (and `{"channel": ..}`, `{"display": ..}` and a final
    /// `{"summary": ..}` line); without it, one summary line per second.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many seconds (default: at SIGINT/SIGTERM).
    #[arg(long, value_name = "S")]
    pub duration_s: Option<f64>,
    /// Client id in the status heartbeats on tspi.ops.status (1 to 64 of
    /// A-Z a-z 0-9 _ -; default player-<pid>-<random>).
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
}

pub fn run(a: PlayerArgs) -> anyhow::Result<ExitCode> {
    let nats = a.conn.nats_config("tspi-player")?;
    let client_id = a.client_id.unwrap_or_else(player::default_client_id);
    tspi::channels::message::check_id("--client-id", &client_id)?;
    let duration = match a.duration_s {
        Some(s) if s.is_finite() && s > 0.0 && s <= 1e9 => Some(Duration::from_secs_f64(s)),
        Some(s) => anyhow::bail!("--duration-s {s}: give a number of seconds above 0"),
        None => None,
    };
    let opts = PlayerOptions {
        client_id,
        channel: a.channel,
        json: a.json,
        heartbeat_every: player::HEARTBEAT_EVERY,
        summary_every: Duration::from_secs(1),
    };
    let rt = runtime()?;
    rt.block_on(async {
        let stop = stop(duration);
        let client = tspi::nats::connect(&nats).await?;
        player::play(client, opts, stop).await
    })?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tspi-player")
        .enable_all()
        .build()?)
}

/// SIGINT, SIGTERM, or `duration` passed. The handlers are installed at
/// the call (inside the runtime), before the future is first polled.
pub(super) fn stop(duration: Option<Duration>) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        let until = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
            _ = until => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{Args, Command};
    use clap::Parser;
    use tspi::channels::message::ChannelId;

    fn player(args: &[&str]) -> Result<super::PlayerArgs, clap::Error> {
        let mut v = vec!["tspi", "player", "--nats", "nats://127.0.0.1:4222"];
        v.extend_from_slice(args);
        match Args::try_parse_from(v)?.command {
            Command::Player(p) => Ok(p),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn channels_parse_to_their_kind_and_bad_ones_are_refused() {
        assert_eq!(player(&[]).unwrap().channel, ChannelId::Livestream);
        assert_eq!(
            player(&["--channel", "replay.sortie-12"]).unwrap().channel,
            ChannelId::Replay("sortie-12".into())
        );
        assert_eq!(
            player(&["--channel", "client.alice.s1"]).unwrap().channel,
            ChannelId::Client {
                client: "alice".into(),
                session: "s1".into()
            }
        );
        for bad in ["client.alice", "replay.a.b", "replay.a*", "x.y", ""] {
            assert!(player(&["--channel", bad]).is_err(), "{bad:?}");
        }
        let p = player(&["--json", "--duration-s", "2.5", "--client-id", "p-1"]).unwrap();
        assert!(p.json);
        assert_eq!(p.duration_s, Some(2.5));
        assert_eq!(p.client_id.as_deref(), Some("p-1"));
    }
}
