//! `tspi console`: the operator's commands on NATS (`docs/player.md`):
//! display commands, tags, the roster of clients and the operations log.
//!
//! Commands and tags are published straight to JetStream (`TSPI_OPS`
//! captures `tspi.cmd.>` and `tags.>`); NATS permissions decide who may
//! publish them (see `tspi::player::ops`). Group replays are started and
//! stopped through the channels service, which checks operator tokens:
//! `tspi channels start-replay|stop-replay`.

use super::player::{NatsArgs, runtime, stop};
use std::process::ExitCode;
use std::time::Duration;
use tspi::message::RecvTime;
use tspi::message::ops::NewTag;
use tspi::player::ops;
use tspi::player::view::{CMD_MARKER_COLOR, CMD_SESSION, CMD_UNITS, color_ok};

#[derive(Debug, clap::Args)]
pub struct ConsoleArgs {
    #[command(subcommand)]
    pub command: ConsoleCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ConsoleCommand {
    /// The operators' hub: HTTP on --listen with `/` (the page), `/ws`
    /// (the WebSocket protocol, docs/console.md) and `/metrics`, fed from
    /// NATS, until SIGINT/SIGTERM (or --duration-s).
    Serve {
        #[command(flatten)]
        conn: NatsArgs,
        /// Where to listen (default `[console] listen`, 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<std::net::SocketAddr>,
        /// Stop after this many seconds.
        #[arg(long, value_name = "S")]
        duration_s: Option<u64>,
    },
    /// Send a display command to every console and player
    /// (tspi.cmd.display.<name>, Nats-Msg-Id = cmd_id); prints what was sent.
    Display {
        #[command(flatten)]
        conn: NatsArgs,
        /// Who sends it (the command's `sender`).
        #[arg(long, default_value = "tspi-console", value_name = "NAME")]
        sender: String,
        #[command(subcommand)]
        what: DisplayCommand,
    },
    /// Mark a moment on tags.broadcast (Nats-Msg-Id = the tag id); prints
    /// the tag.
    Tag {
        #[command(flatten)]
        conn: NatsArgs,
        /// What the moment is.
        label: String,
        /// The moment (RFC 3339, e.g. 2026-04-30T14:05:00Z); default now.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Free text kept with the tag.
        #[arg(long, value_name = "TEXT")]
        notes: Option<String>,
        /// Who made it.
        #[arg(long, value_name = "NAME")]
        creator: Option<String>,
        /// The tag's status.
        #[arg(long, default_value = "active", value_name = "TEXT")]
        status: String,
        /// The tag id (default: a new unique one); the same id again is a
        /// duplicate JetStream drops inside its window.
        #[arg(long, value_name = "ID")]
        id: Option<String>,
    },
    /// List the clients (players, consoles) whose status heartbeat came
    /// within --stale-s, one JSON line each; stale ones are left out.
    Roster {
        #[command(flatten)]
        conn: NatsArgs,
        /// A client silent this long is gone.
        #[arg(long, default_value = "15", value_name = "S")]
        stale_s: u64,
        /// Also listen this long for heartbeats not stored in TSPI_OPS.
        #[arg(long, default_value = "0", value_name = "S")]
        listen_s: u64,
    },
    /// The operations log from TSPI_OPS: control messages, display
    /// commands, tags, and clients appearing, changing channel or state, or
    /// (with --follow) falling silent; one line each.
    OpsLog {
        #[command(flatten)]
        conn: NatsArgs,
        /// Keep following until SIGINT/SIGTERM (or --duration-s).
        #[arg(long)]
        follow: bool,
        /// History from this many seconds ago (0: none, only what comes).
        #[arg(long, default_value = "300", value_name = "S")]
        since_s: u64,
        /// JSON lines {ts, kind, subject, body} instead of text.
        #[arg(long)]
        json: bool,
        /// With --follow: stop after this many seconds.
        #[arg(long, value_name = "S")]
        duration_s: Option<u64>,
        /// With --follow: a client silent this long is reported gone.
        #[arg(long, default_value = "15", value_name = "S")]
        stale_s: u64,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum DisplayCommand {
    /// Units shown: metric or imperial.
    Units {
        #[arg(value_parser = ["metric", "imperial"])]
        units: String,
    },
    /// Marker colour, #rrggbb.
    MarkerColor {
        #[arg(value_parser = parse_color)]
        color: String,
    },
    /// The session shown: its name and id.
    Session {
        #[arg(long)]
        name: String,
        #[arg(long)]
        id: String,
    },
}

fn parse_color(s: &str) -> Result<String, String> {
    if color_ok(s) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("{s:?} is not a #rrggbb colour"))
    }
}

/// The command's name and payload (the value itself; `{name, id}` for a
/// session).
pub fn display_payload(d: &DisplayCommand) -> (&'static str, ciborium::Value) {
    use ciborium::Value as V;
    match d {
        DisplayCommand::Units { units } => (CMD_UNITS, V::Text(units.clone())),
        DisplayCommand::MarkerColor { color } => (CMD_MARKER_COLOR, V::Text(color.clone())),
        DisplayCommand::Session { name, id } => (
            CMD_SESSION,
            V::Map(vec![
                (V::Text("name".into()), V::Text(name.clone())),
                (V::Text("id".into()), V::Text(id.clone())),
            ]),
        ),
    }
}

/// The hub of `cfg`: connected to NATS, its readers and ticker started,
/// served on `[console] listen` (`/`, `/ws`, `/metrics`). What `tspi console
/// serve` and `tspi run`'s console role both run; abort the tasks to stop it
/// (the server's task is among them).
pub(crate) async fn start_hub(
    cfg: &tspi::config::Config,
) -> anyhow::Result<(
    std::sync::Arc<tspi::console::hub::Hub>,
    Vec<tokio::task::JoinHandle<()>>,
)> {
    use tspi::console::hub;
    let client = tspi::nats::connect(&cfg.nats).await?;
    let opts = hub::HubOptions::from_config(cfg);
    if opts.operator_tokens.is_empty() {
        tracing::warn!(
            "no operator tokens ([console] or [channels] operator_tokens): every client is a viewer"
        );
    }
    let hub = hub::Hub::new(client, opts, hub::track_tables(&cfg.console));
    let mut tasks = hub.start().await?;
    let (bound, server) = match hub::serve(hub.clone(), cfg.console.listen).await {
        Ok(s) => s,
        Err(e) => {
            for t in tasks {
                t.abort();
            }
            anyhow::bail!("listening on {}: {e}", cfg.console.listen);
        }
    };
    tasks.push(server);
    tracing::info!(%bound, "console: serving / , /ws and /metrics");
    Ok((hub, tasks))
}

/// Run the hub until the stop.
async fn serve(cfg: tspi::config::Config, duration: Option<Duration>) -> anyhow::Result<()> {
    let (hub, tasks) = start_hub(&cfg).await?;
    stop(duration).await;
    for t in tasks {
        t.abort();
    }
    tracing::info!(counts = ?hub.stats.load(), "console: stopped");
    Ok(())
}

/// `--at` as a wall-clock time.
fn parse_at(at: &str) -> anyhow::Result<RecvTime> {
    let ns = tspi::message::rfc3339::parse_rfc3339_ns(at)
        .map_err(|e| anyhow::anyhow!("--at {at:?}: {e} (e.g. 2026-04-30T14:05:00Z)"))?;
    let ns = u64::try_from(ns).map_err(|_| anyhow::anyhow!("--at {at:?}: before 1970"))?;
    Ok(RecvTime::from_unix_ns(ns))
}

pub fn run(a: ConsoleArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    match a.command {
        ConsoleCommand::Serve {
            conn,
            listen,
            duration_s,
        } => {
            let mut cfg = super::load_config(conn.config.as_deref())?;
            if !conn.nats.is_empty() {
                cfg.nats.servers = conn.nats.clone();
            }
            if cfg.nats.name == "tspi-ingest" {
                cfg.nats.name = "tspi-console".into();
            }
            if let Some(l) = listen {
                cfg.console.listen = l;
            }
            let problems = cfg.console.problems();
            anyhow::ensure!(problems.is_empty(), "[console]: {}", problems.join("; "));
            rt.block_on(serve(cfg, duration_s.map(Duration::from_secs)))?;
        }
        ConsoleCommand::Display { conn, sender, what } => {
            let nats = conn.nats_config("tspi-console")?;
            let (name, payload) = display_payload(&what);
            let sent = rt.block_on(async {
                let client = tspi::nats::connect(&nats).await?;
                let js = async_nats::jetstream::new(client);
                ops::send_display(&js, name, payload, &sender).await
            })?;
            println!("{sent}");
        }
        ConsoleCommand::Tag {
            conn,
            label,
            at,
            notes,
            creator,
            status,
            id,
        } => {
            let nats = conn.nats_config("tspi-console")?;
            let now = RecvTime::now();
            let ts = match at.as_deref() {
                Some(at) => parse_at(at)?,
                None => now,
            };
            let id = id.unwrap_or_else(|| ops::new_id("tag"));
            tspi::channels::message::check_id("--id", &id)?;
            let tag = NewTag {
                id,
                ts: ops::iso(ts),
                label,
                status,
                updated_ts: ops::iso(now),
                creator,
                notes,
                extra: None,
            };
            rt.block_on(async {
                let client = tspi::nats::connect(&nats).await?;
                let js = async_nats::jetstream::new(client);
                ops::send_tag(&js, &tag).await
            })?;
            println!(
                "{}",
                serde_json::json!({
                    "id": tag.id, "ts": tag.ts, "label": tag.label, "status": tag.status,
                    "updated_ts": tag.updated_ts, "creator": tag.creator, "notes": tag.notes,
                })
            );
        }
        ConsoleCommand::Roster {
            conn,
            stale_s,
            listen_s,
        } => {
            let nats = conn.nats_config("tspi-console")?;
            let (entries, bad) = rt.block_on(async {
                let client = tspi::nats::connect(&nats).await?;
                ops::roster(
                    &client,
                    Duration::from_secs(stale_s),
                    Duration::from_secs(listen_s),
                )
                .await
            })?;
            if bad > 0 {
                tracing::warn!(bad, "heartbeats that are not the contract's map left out");
            }
            for e in entries {
                println!("{}", serde_json::to_string(&e)?);
            }
        }
        ConsoleCommand::OpsLog {
            conn,
            follow,
            since_s,
            json,
            duration_s,
            stale_s,
        } => {
            let nats = conn.nats_config("tspi-console")?;
            let o = ops::OpsLogOptions {
                since: Duration::from_secs(since_s),
                follow,
                json,
                stale: Duration::from_secs(stale_s),
            };
            rt.block_on(async {
                let stop = stop(duration_s.map(Duration::from_secs));
                let client = tspi::nats::connect(&nats).await?;
                ops::ops_log(&client, o, stop).await
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Args, Command};
    use clap::Parser;

    fn console(args: &[&str]) -> Result<ConsoleCommand, clap::Error> {
        let mut v = vec!["tspi", "console"];
        v.extend_from_slice(args);
        match Args::try_parse_from(v)?.command {
            Command::Console(c) => Ok(c.command),
            other => panic!("{other:?}"),
        }
    }

    fn display(args: &[&str]) -> Result<(&'static str, ciborium::Value), clap::Error> {
        let mut v = vec!["display", "--nats", "nats://h:4222"];
        v.extend_from_slice(args);
        match console(&v)? {
            ConsoleCommand::Display { what, .. } => Ok(display_payload(&what)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn display_commands_parse_to_their_name_and_payload() {
        use ciborium::Value as V;
        assert_eq!(
            display(&["units", "imperial"]).unwrap(),
            (CMD_UNITS, V::Text("imperial".into()))
        );
        assert!(display(&["units", "furlongs"]).is_err());
        assert_eq!(
            display(&["marker-color", "#FF8800"]).unwrap(),
            (CMD_MARKER_COLOR, V::Text("#ff8800".into()))
        );
        assert!(display(&["marker-color", "orange"]).is_err());
        let (name, payload) = display(&["session", "--name", "Sortie 12", "--id", "s12"]).unwrap();
        assert_eq!(name, CMD_SESSION);
        assert_eq!(
            tspi::message::ops::to_json(&payload),
            serde_json::json!({"name": "Sortie 12", "id": "s12"})
        );
    }

    #[test]
    fn tag_at_is_rfc3339() {
        assert_eq!(
            parse_at("2026-04-30T14:05:00.25Z").unwrap().unix_ns,
            1_777_557_900_250_000_000
        );
        assert!(parse_at("yesterday").is_err());
        assert!(parse_at("1960-01-01T00:00:00Z").is_err());
        assert!(matches!(
            console(&["tag", "Merge", "--at", "2026-04-30T14:05:00Z"]).unwrap(),
            ConsoleCommand::Tag { label, at: Some(_), .. } if label == "Merge"
        ));
    }
}
