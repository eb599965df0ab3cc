//! `tspi player` and the operator's console commands (`tspi console ...`):
//! the headless receiver of a channel, and commands, tags, roster and the
//! operations log on NATS (`docs/player.md`).
//!
//! Pure (no I/O, time is an argument; `src/purity.rs` checks them):
//! - [`body`]: the strict check of a telemetry body against the contract
//!   (why a decoder and not the JSON schema: its module note);
//! - [`view`]: counts and the summary line, display settings, the bad-body
//!   report limit, control messages as client-state events, the roster and
//!   the operations log's lines.
//!
//! Drivers: [`play`] (here) follows the client state machine of
//! `channels::client_state`; [`ops`] publishes commands and tags and reads
//! `TSPI_OPS`.
//!
//! **The live edge, and nobody splits a stream.** The player reads its
//! channel with a *core* NATS subscription on the channel's subject, never
//! a JetStream consumer: it sees what is published from the moment it
//! subscribed (never the stream's start), and every player gets every
//! message (a subscription is its own; there is no durable or queue group
//! to share). This holds for replay channels too, although `TSPI_REPLAY`
//! keeps their history for late joiners: a player joining a running replay
//! starts at its live edge, as it does on the livestream. A switch of
//! channel subscribes to the new subject and drops the old subscription, so
//! only the current channel's messages are printed.

pub mod body;
pub mod ops;
pub mod view;

use crate::channels::client_state::{ClientMachine, Event};
use crate::channels::message::{ChannelId, Ctrl, SUBJECT_CTRL, SUBJECT_STATUS, to_cbor};
use crate::message::RecvTime;
use futures_util::StreamExt;
use std::io::Write as _;
use std::time::{Duration, Instant};
use view::{Display, Every, Tally, Totals};

/// Display commands the player follows.
pub const SUBJECT_DISPLAY_ALL: &str = "tspi.cmd.display.>";
/// How often a player announces itself (CONTRACT §4: every 5 s).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// How a player runs.
#[derive(Clone, Debug)]
pub struct PlayerOptions {
    /// Its id in heartbeats (1 to 64 of `[A-Za-z0-9_-]`).
    pub client_id: String,
    /// Where it starts.
    pub channel: ChannelId,
    /// Records as JSON lines (else a summary line per `summary_every`).
    pub json: bool,
    pub heartbeat_every: Duration,
    pub summary_every: Duration,
}

/// The client machine for a starting channel: live, a group replay, or a
/// private replay.
pub fn initial_machine(channel: &ChannelId) -> ClientMachine {
    let mut m = ClientMachine::default();
    match channel {
        ChannelId::Livestream => {}
        ChannelId::Replay(_) => {
            m.apply(Event::GroupReplayStart(channel.clone()));
        }
        ChannelId::Client { .. } => {
            m.apply(Event::StartPrivate(channel.clone()));
        }
    }
    m
}

/// A client id for a player started without one: `player-<pid>-<random>`.
pub fn default_client_id() -> String {
    format!("player-{}-{}", std::process::id(), ops::random_hex(4))
}

/// How often buffered output is flushed (records come in bursts; one write
/// per line would cost a system call per message).
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Stdout, buffered; flushed every [`FLUSH_EVERY`] and at the end.
struct Out(std::io::BufWriter<std::io::Stdout>);

impl Out {
    fn line(&mut self, line: &str) {
        // A closed stdout (a pipe whose reader left) ends nothing: the
        // player keeps counting and announcing.
        let _ = writeln!(self.0, "{line}");
    }

    fn flush(&mut self) {
        let _ = self.0.flush();
    }
}

async fn announce(client: &async_nats::Client, opts: &PlayerOptions, m: &ClientMachine) -> bool {
    let hb = m.heartbeat(&opts.client_id, RecvTime::now().iso().as_str().to_owned());
    match client.publish(SUBJECT_STATUS, to_cbor(&hb).into()).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "heartbeat not published");
            false
        }
    }
}

/// Receive `opts.channel` (and whatever the control messages move it to)
/// until `stop` completes; print records (`--json`) or a summary line per
/// `summary_every`, announce on `tspi.ops.status`, follow display commands.
/// Returns the final account (printed too: `{"summary": ..}` with `--json`,
/// a `total:` line without). Bad bodies are counted and reported on stderr
/// at most once a second; they never end the player.
pub async fn play(
    client: async_nats::Client,
    opts: PlayerOptions,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Totals> {
    crate::channels::message::check_id("client_id", &opts.client_id)?;
    let mut machine = initial_machine(&opts.channel);
    let mut ctrl = client.subscribe(SUBJECT_CTRL).await?;
    let mut cmds = client.subscribe(SUBJECT_DISPLAY_ALL).await?;
    let mut channel = machine.state().channel();
    let mut data = client.subscribe(channel.subject()).await?;
    // The subscriptions are in place at the server: the live edge is now.
    client.flush().await?;
    let mut out = Out(std::io::BufWriter::with_capacity(
        64 * 1024,
        std::io::stdout(),
    ));
    let mut tally = Tally::default();
    let mut display = Display::default();
    let mut bad_reports = Every::new(1_000_000_000);
    tracing::info!(client_id = %opts.client_id, %channel, "player started");
    if announce(&client, &opts, &machine).await {
        tally.heartbeats += 1;
    }
    let started = Instant::now();
    let mut window_start = started;
    let mut hb_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + opts.heartbeat_every,
        opts.heartbeat_every,
    );
    let mut sum_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + opts.summary_every,
        opts.summary_every,
    );
    let mut flush_tick = tokio::time::interval(FLUSH_EVERY);
    tokio::pin!(stop);
    // `biased`: stop, control, commands and the timers are polled before
    // the data, so a busy channel never starves heartbeats or summaries
    // (each timer is ready once per period, so the data is not starved
    // either).
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            m = ctrl.next() => {
                let Some(m) = m else { anyhow::bail!("NATS connection closed") };
                let Some(ev) = Ctrl::decode(&m.payload).ok().as_ref().and_then(view::ctrl_event)
                else {
                    continue;
                };
                if !machine.apply(ev) {
                    continue;
                }
                let next = machine.state().channel();
                if next != channel {
                    data = client.subscribe(next.subject()).await?;
                    if let Err(e) = client.flush().await {
                        tracing::warn!(error = %e, "flush after subscribing to {next}");
                    }
                    tally.channel_changes += 1;
                    channel = next;
                }
                tracing::info!(state = machine.state().name(), %channel, "channel");
                if announce(&client, &opts, &machine).await {
                    tally.heartbeats += 1;
                }
                if opts.json {
                    let hb = machine.heartbeat(&opts.client_id, RecvTime::now().iso().as_str().to_owned());
                    out.line(&serde_json::json!({ "channel": hb }).to_string());
                }
            }
            m = cmds.next() => {
                let Some(m) = m else { anyhow::bail!("NATS connection closed") };
                let name = m.subject.rsplit('.').next().unwrap_or("").to_owned();
                let read = crate::message::ops::decode_command(&m.payload)
                    .map_err(|e| e.to_string())
                    .and_then(|c| {
                        let payload: serde_json::Value =
                            serde_json::from_str(&c.payload_json).unwrap_or_default();
                        view::display_cmd(&name, &payload).map(|d| (c, d))
                    });
                match read {
                    Ok((c, d)) => {
                        display.apply(d);
                        tracing::info!(command = %name, cmd_id = %c.cmd_id, "display command");
                        if opts.json {
                            out.line(&serde_json::json!({ "display": {
                                "name": name,
                                "cmd_id": c.cmd_id,
                                "sender": c.sender,
                                "current": display,
                            }}).to_string());
                        }
                    }
                    Err(e) => tracing::warn!(subject = %m.subject, error = %e, "display command ignored"),
                }
            }
            _ = hb_tick.tick() => {
                if announce(&client, &opts, &machine).await {
                    tally.heartbeats += 1;
                }
            }
            _ = sum_tick.tick(), if !opts.json => {
                let now = Instant::now();
                let w = tally.take_window((now - window_start).as_secs_f64());
                window_start = now;
                out.line(&view::summary_line(&w, &tally, machine.state(), &display));
            }
            _ = flush_tick.tick() => out.flush(),
            m = data.next() => {
                let Some(m) = m else { anyhow::bail!("NATS connection closed") };
                match body::check(&m.payload) {
                    Ok(r) => {
                        tally.record(&r);
                        if opts.json {
                            out.line(&r.to_json());
                        }
                    }
                    Err(e) => {
                        tally.bad();
                        if let Some(held) = bad_reports.allow(crate::clock::mono_ns()) {
                            tracing::warn!(
                                subject = %m.subject,
                                error = %e,
                                held_back = held,
                                bad_total = tally.total.bad_bodies,
                                "bad body"
                            );
                        }
                    }
                }
            }
        }
    }
    let totals = tally.totals(started.elapsed().as_secs_f64());
    if opts.json {
        out.line(&serde_json::json!({ "summary": totals }).to_string());
    } else {
        out.line(&totals.line());
    }
    out.flush();
    Ok(totals)
}
