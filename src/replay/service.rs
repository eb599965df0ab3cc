//! `tspi channels serve`: the live stage, group and private replays, and
//! the channel directory (CONTRACT §4).
//!
//! - **Livestream**: a push consumer `LIVE_MAIN` on `TSPI` (deliver new,
//!   no acks) delivering to `tspi.channel.livestream`, recreated at start.
//!   Chosen over a forwarder of our own because the server delivers only
//!   what it *stored*, once: a duplicate from a redundant ingest box, which
//!   a core subscription on `tspi.<type>.>` would forward twice, never
//!   reaches the stage, and no extra client hop or client CPU per message is
//!   spent. A push consumer holds back while nobody listens and would then
//!   flush the backlog, so the service keeps one subscription of its own on
//!   the subject (which also counts what went out). Not measured against a
//!   forwarder.
//! - **Group replays**: an operator's `GroupReplayRequest` on
//!   `tspi.ops.ctrl` (`tspi channels start-replay`) starts a paced replay of
//!   `TSPI` into `tspi.channel.replay.<id>`; the service announces
//!   `GroupReplayStart`, and `GroupReplayStop` when it is stopped
//!   (`GroupReplayStopRequest`) or its data ends. Optionally the
//!   JetStream-native mode: a push consumer with `ReplayPolicy::Original`
//!   delivering to the channel subject (the server paces by store time,
//!   keeps the original `Nats-Msg-Id`, re-emits no tags).
//! - **Private replays**: a client's request on `tspi.channel.private.req`
//!   starts `tspi.channel.client.<client>.<session>`; it is stopped and
//!   removed once no status heartbeat naming it came for
//!   `private_idle_s`, or at its end.
//! - **Directory**: requests on `tspi.channel.list.req` get a CBOR array of
//!   entries, livestream first, then group replays, then private ones, each
//!   in order of start.

use super::ChannelsConfig;
use super::channels::{
    self, ChannelId, Ctrl, DirectoryEntry, GroupReplayError, GroupReplayRequest, GroupReplayStart,
    GroupReplayStop, GroupReplayStopRequest, Kind, PrivateReplayReply, PrivateReplayRequest,
    ReplaySpec, SUBJECT_CTRL, SUBJECT_LIST_REQ, SUBJECT_LIVESTREAM, SUBJECT_PRIVATE_REQ,
    SUBJECT_STATUS, from_cbor, to_cbor,
};
use super::driver::Job;
use super::pacer::{Control, Rate};
use super::sink::ChannelSink;
use super::source::{ReadAhead, StartAt, StreamSource, load_tags};
use super::time::parse_rfc3339_ns;
use crate::jetstream::{StreamSettings, ensure_stream, ops_stream, replay_stream};
use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Name of the livestream consumer on `TSPI`.
pub const LIVE_CONSUMER: &str = "LIVE_MAIN";

/// How the service runs.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    pub channels: ChannelsConfig,
    /// Replicas and duplicate window of the streams it creates.
    pub streams: StreamSettings,
}

crate::counter_set! {
    /// What the channels service did (`tspi_channels_<name>_total`).
    #[derive(serde::Serialize)]
    pub struct ChannelsCounts {
        livestream_messages => "Messages seen on the livestream subject",
        groups_started => "Group replays started",
        privates_started => "Private replays started",
        privates_expired => "Private replays stopped for want of a heartbeat",
        requests_refused => "Replay requests refused",
    }
    /// Counts the service keeps, live ([`ServiceStats::load`] reads them).
    live pub struct ServiceStats;
}

enum Runner {
    Paced(std::sync::mpsc::Sender<Control>),
    /// JetStream-native: the push consumer's name, and the task that
    /// watches for its end.
    Native(String, tokio::task::JoinHandle<()>),
}

struct Active {
    entry: DirectoryEntry,
    runner: Runner,
    started: u64,
    last_seen: Instant,
}

/// A replay that ended (data over, stopped, expired, failed).
struct Ended {
    channel: String,
    error: Option<String>,
}

/// The running service's state.
struct State {
    client: async_nats::Client,
    js: jetstream::Context,
    opts: ServiceOptions,
    active: BTreeMap<String, Active>,
    next_start: u64,
    /// Replays started so far (picks each one's pacing core in turn).
    started: std::sync::atomic::AtomicUsize,
    ended_tx: mpsc::UnboundedSender<Ended>,
    stats: Arc<ServiceStats>,
}

/// Run until `shutdown` resolves. Stops every replay on the way out
/// (announcing `GroupReplayStop` for group replays).
pub async fn serve(
    client: async_nats::Client,
    opts: ServiceOptions,
    stats: Arc<ServiceStats>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let problems = opts.channels.problems();
    anyhow::ensure!(
        problems.is_empty(),
        "invalid [channels]: {}",
        problems.join("; ")
    );
    let js = jetstream::new(client.clone());
    if opts.channels.create_streams {
        let mut s = opts.streams.clone();
        s.max_age = Duration::from_secs(opts.channels.replay_max_age_h * 3600);
        ensure_stream(&js, replay_stream(&s), Duration::from_secs(30)).await?;
        let mut o = opts.streams.clone();
        o.max_age = Duration::ZERO;
        ensure_stream(&js, ops_stream(&o), Duration::from_secs(30)).await?;
    }
    let mut ctrl = client.subscribe(SUBJECT_CTRL).await?;
    let mut list = client.subscribe(SUBJECT_LIST_REQ).await?;
    let mut private = client.subscribe(SUBJECT_PRIVATE_REQ).await?;
    let mut status = client.subscribe(SUBJECT_STATUS).await?;
    let live = if opts.channels.livestream {
        Some(tokio::spawn(livestream(
            client.clone(),
            js.clone(),
            stats.clone(),
        )))
    } else {
        None
    };
    client.flush().await?;
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel();
    let mut st = State {
        client: client.clone(),
        js,
        opts,
        active: BTreeMap::new(),
        next_start: 0,
        started: Default::default(),
        ended_tx,
        stats,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tracing::info!("channels service ready");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(m) = ctrl.next() => st.on_ctrl(&m.payload).await,
            Some(m) = list.next() => {
                if let Some(reply) = m.reply {
                    let _ = st.client.publish(reply, to_cbor(&st.directory()).into()).await;
                }
            }
            Some(m) = private.next() => {
                let answer = st.on_private(&m.payload).await;
                if !answer.ok {
                    st.stats.requests_refused.fetch_add(1, Relaxed);
                }
                if let Some(reply) = m.reply {
                    let _ = st.client.publish(reply, to_cbor(&answer).into()).await;
                }
            }
            Some(m) = status.next() => st.on_status(&m.payload),
            Some(e) = ended_rx.recv() => st.on_ended(e).await,
            _ = tick.tick() => st.expire(),
        }
    }
    let names: Vec<String> = st.active.keys().cloned().collect();
    for name in names {
        st.stop(&name).await;
    }
    // Wait (bounded) for the replays to wind down and announce their stop.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !st.active.is_empty() {
        match tokio::time::timeout_at(deadline, ended_rx.recv()).await {
            Ok(Some(e)) => st.on_ended(e).await,
            _ => break,
        }
    }
    if let Some(l) = live {
        l.abort();
    }
    let _ = st.client.flush().await;
    Ok(())
}

/// `LIVE_MAIN`: recreate the push consumer (deliver new) and keep a
/// subscription on the stage so it never holds a backlog. Retries while
/// `TSPI` does not exist yet.
async fn livestream(client: async_nats::Client, js: jetstream::Context, stats: Arc<ServiceStats>) {
    let Ok(mut sub) = client.subscribe(SUBJECT_LIVESTREAM).await else {
        tracing::error!("cannot subscribe to the livestream subject");
        return;
    };
    loop {
        match js.get_stream(crate::jetstream::STREAM_TELEMETRY).await {
            Ok(stream) => {
                let _ = stream.delete_consumer(LIVE_CONSUMER).await;
                let cfg = consumer::push::Config {
                    durable_name: Some(LIVE_CONSUMER.into()),
                    deliver_subject: SUBJECT_LIVESTREAM.into(),
                    deliver_policy: consumer::DeliverPolicy::New,
                    ack_policy: consumer::AckPolicy::None,
                    description: Some("tspi channels: the live stage".into()),
                    ..Default::default()
                };
                match stream.create_consumer(cfg).await {
                    Ok(_) => {
                        tracing::info!(
                            subject = SUBJECT_LIVESTREAM,
                            "livestream consumer LIVE_MAIN ready"
                        );
                        break;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot create LIVE_MAIN; retrying"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "no TSPI stream yet for the livestream; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    while sub.next().await.is_some() {
        stats.livestream_messages.fetch_add(1, Relaxed);
    }
}

impl State {
    fn directory(&self) -> Vec<DirectoryEntry> {
        let mut v: Vec<&Active> = self.active.values().collect();
        v.sort_by_key(|a| (a.entry.kind == Kind::PrivateReplay, a.started));
        channels::directory(v.into_iter().map(|a| a.entry.clone()))
    }

    async fn announce<T: serde::Serialize>(&self, msg: &T) {
        if let Err(e) = self.client.publish(SUBJECT_CTRL, to_cbor(msg).into()).await {
            tracing::warn!(error = %e, "cannot publish on tspi.ops.ctrl");
        }
        let _ = self.client.flush().await;
    }

    async fn on_ctrl(&mut self, payload: &[u8]) {
        match Ctrl::decode(payload) {
            Ok(Ctrl::Request(r)) => {
                let channel = r.channel_id.clone();
                if let Err(error) = self.start_group(r).await {
                    self.stats.requests_refused.fetch_add(1, Relaxed);
                    tracing::warn!(%channel, %error, "group replay refused");
                    self.announce(&GroupReplayError {
                        kind: "GroupReplayError".into(),
                        channel_id: channel,
                        error,
                    })
                    .await;
                }
            }
            Ok(Ctrl::StopRequest(GroupReplayStopRequest { channel_id, .. })) => {
                if self.active.contains_key(&channel_id) {
                    self.stop(&channel_id).await;
                } else {
                    tracing::info!(channel = %channel_id, "stop for a replay that is not running");
                }
            }
            // Our own announcements and other tools' traffic.
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "unreadable control message"),
        }
    }

    fn on_status(&mut self, payload: &[u8]) {
        // Only the channel matters here; other fields may vary by tool.
        let Ok(v) = from_cbor::<ciborium::Value>(payload) else {
            return;
        };
        let channel = v
            .as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some("channel_id")))
            .and_then(|(_, v)| v.as_text());
        if let Some(c) = channel
            && let Some(a) = self.active.get_mut(c)
        {
            a.last_seen = Instant::now();
        }
    }

    fn expire(&mut self) {
        let idle = Duration::from_secs(self.opts.channels.private_idle_s);
        let expired: Vec<String> = self
            .active
            .iter()
            .filter(|(_, a)| a.entry.kind == Kind::PrivateReplay && a.last_seen.elapsed() > idle)
            .map(|(k, _)| k.clone())
            .collect();
        for name in expired {
            tracing::info!(channel = %name, "private replay idle: removed");
            self.stats.privates_expired.fetch_add(1, Relaxed);
            if let Some(a) = self.active.remove(&name) {
                self.halt(a.runner, &name);
            }
        }
    }

    /// Stop a replay; its end is announced by [`State::on_ended`].
    async fn stop(&mut self, name: &str) {
        let Some(a) = self.active.get(name) else {
            return;
        };
        match &a.runner {
            Runner::Paced(c) => {
                let _ = c.send(Control::Stop);
            }
            Runner::Native(consumer, watcher) => {
                watcher.abort();
                let consumer = consumer.clone();
                if let Ok(s) = self.js.get_stream(crate::jetstream::STREAM_TELEMETRY).await {
                    let _ = s.delete_consumer(&consumer).await;
                }
                let _ = self.ended_tx.send(Ended {
                    channel: name.to_owned(),
                    error: None,
                });
            }
        }
    }

    /// Stop without announcing (a removed private replay).
    fn halt(&self, runner: Runner, name: &str) {
        match runner {
            Runner::Paced(c) => {
                let _ = c.send(Control::Stop);
            }
            Runner::Native(consumer, watcher) => {
                watcher.abort();
                let js = self.js.clone();
                let name = name.to_owned();
                tokio::spawn(async move {
                    if let Ok(s) = js.get_stream(crate::jetstream::STREAM_TELEMETRY).await {
                        let _ = s.delete_consumer(&consumer).await;
                    }
                    tracing::debug!(channel = %name, "native replay consumer removed");
                });
            }
        }
    }

    async fn on_ended(&mut self, e: Ended) {
        let Some(a) = self.active.remove(&e.channel) else {
            return; // already removed (expired private replay)
        };
        if let Some(err) = &e.error {
            tracing::warn!(channel = %e.channel, error = %err, "replay failed");
        }
        if a.entry.kind == Kind::GroupReplay {
            tracing::info!(channel = %e.channel, "group replay over");
            self.announce(&GroupReplayStop {
                kind: "GroupReplayStop".into(),
                channel_id: e.channel,
            })
            .await;
        }
    }

    /// The window a spec asks for: (start, end, identifier).
    async fn window(&self, spec: &ReplaySpec) -> Result<(StartAt, Option<u64>, String), String> {
        let end = spec
            .end
            .as_deref()
            .map(parse_rfc3339_ns)
            .transpose()
            .map_err(|e| e.to_string())?;
        match (&spec.start, &spec.tag) {
            (Some(s), None) => Ok((
                s.parse()
                    .map_err(|e: super::time::TimeError| e.to_string())?,
                end,
                s.clone(),
            )),
            (None, Some(tag)) => {
                let tags = load_tags(&self.js).await.map_err(|e| e.to_string())?;
                let t = tags
                    .iter()
                    .find(|t| &t.id == tag)
                    .ok_or_else(|| format!("no tag {tag:?} in TSPI_OPS"))?;
                let c = &self.opts.channels;
                let from = t.ts_ns.saturating_sub(c.tag_before_s * 1_000_000_000);
                let to = end.unwrap_or(t.ts_ns + c.tag_after_s * 1_000_000_000);
                Ok((StartAt::Time(from), Some(to), tag.clone()))
            }
            _ => Err("give exactly one of start and tag".into()),
        }
    }

    /// Start a replay of `spec` into `channel`; its end is reported on
    /// `ended_tx`.
    async fn start_replay(
        &self,
        channel: &ChannelId,
        spec: &ReplaySpec,
        tag_subject: String,
    ) -> Result<(Runner, String), String> {
        let rate = Rate::new(spec.rate).map_err(|e| e.to_string())?;
        let (start, end, identifier) = self.window(spec).await?;
        let c = &self.opts.channels;
        let name = channel.to_string();
        if spec.jetstream_native {
            return self
                .start_native(channel, start, end, rate)
                .await
                .map(|r| (r, identifier));
        }
        let handle = tokio::runtime::Handle::current();
        let mut source = StreamSource::new(handle.clone(), self.js.clone(), start, end);
        source.read_ahead = ReadAhead {
            batch_len: c.read_batch_len,
            batches_max: c.read_batches_max,
        };
        let sink = ChannelSink::new(
            handle,
            self.js.clone(),
            channel.clone(),
            tag_subject,
            c.sink_limits(),
        );
        let driver = c.driver(
            rate,
            self.started
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        let job = Job::spawn(&name, Box::new(source), Box::new(sink), driver)
            .map_err(|e| e.to_string())?;
        let controls = job.controller();
        let ended = self.ended_tx.clone();
        tokio::spawn(async move {
            let r = job.wait().await;
            if let Ok(o) = &r {
                tracing::info!(channel = %name, report = %o.to_json(), "replay finished");
            }
            let _ = ended.send(Ended {
                channel: name,
                error: r.err().map(|e| e.to_string()),
            });
        });
        Ok((Runner::Paced(controls), identifier))
    }

    /// The JetStream-native mode: the server paces a push consumer by the
    /// original store times. Rates other than 1 are not available there.
    async fn start_native(
        &self,
        channel: &ChannelId,
        start: StartAt,
        end: Option<u64>,
        rate: Rate,
    ) -> Result<Runner, String> {
        if rate.get() != 1.0 {
            return Err("the JetStream-native mode replays at the original rate only".into());
        }
        if end.is_some() {
            return Err("the JetStream-native mode replays to the end of the stream only".into());
        }
        let mut stream = self
            .js
            .get_stream(crate::jetstream::STREAM_TELEMETRY)
            .await
            .map_err(|e| e.to_string())?;
        let last_seq = stream
            .info()
            .await
            .map_err(|e| e.to_string())?
            .state
            .last_sequence;
        let deliver_policy = match start {
            StartAt::Time(t) => consumer::DeliverPolicy::ByStartTime {
                start_time: async_nats::datetime::from_nanos(i128::from(t))
                    .map_err(|e| e.to_string())?,
            },
            StartAt::Sequence(s) => consumer::DeliverPolicy::ByStartSequence {
                start_sequence: s.max(1),
            },
        };
        let name = format!("REPLAY_{}", channel.to_string().replace('.', "_"));
        let cfg = consumer::push::Config {
            name: Some(name.clone()),
            deliver_subject: channel.subject(),
            deliver_policy,
            ack_policy: consumer::AckPolicy::None,
            replay_policy: consumer::ReplayPolicy::Original,
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        };
        let consumer: consumer::Consumer<consumer::push::Config> = stream
            .create_consumer(cfg)
            .await
            .map_err(|e| e.to_string())?;
        let ended = self.ended_tx.clone();
        let channel_name = channel.to_string();
        let js = self.js.clone();
        let consumer_name = name.clone();
        let watcher = tokio::spawn(async move {
            let mut consumer = consumer;
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                match consumer.info().await {
                    Ok(i) if i.delivered.stream_sequence >= last_seq || i.num_pending == 0 => break,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "native replay consumer gone");
                        break;
                    }
                }
            }
            if let Ok(s) = js.get_stream(crate::jetstream::STREAM_TELEMETRY).await {
                let _ = s.delete_consumer(&consumer_name).await;
            }
            let _ = ended.send(Ended {
                channel: channel_name,
                error: None,
            });
        });
        Ok(Runner::Native(name, watcher))
    }

    async fn start_group(&mut self, r: GroupReplayRequest) -> Result<(), String> {
        let channel = ChannelId::parse(&r.channel_id).map_err(|e| e.to_string())?;
        if channel.kind() != Kind::GroupReplay {
            return Err(format!(
                "{} is not a group replay channel (replay.<id>)",
                r.channel_id
            ));
        }
        let name = channel.to_string();
        if self.active.contains_key(&name) {
            return Err(format!("{name} is already running"));
        }
        let groups = self
            .active
            .values()
            .filter(|a| a.entry.kind == Kind::GroupReplay)
            .count();
        if groups >= self.opts.channels.group_max {
            return Err(format!(
                "{groups} group replays are running (channels.group_max)"
            ));
        }
        let tag_subject = self.opts.channels.tag_subject.clone();
        let (runner, identifier) = self.start_replay(&channel, &r.spec, tag_subject).await?;
        let entry = DirectoryEntry {
            channel_id: name.clone(),
            subject: channel.subject(),
            display_name: r.display_name.clone(),
            kind: Kind::GroupReplay,
            stream: channel.stream().into(),
            identifier: Some(identifier.clone()),
        };
        self.insert(name.clone(), entry, runner);
        self.stats.groups_started.fetch_add(1, Relaxed);
        tracing::info!(channel = %name, %identifier, "group replay started");
        self.announce(&GroupReplayStart {
            kind: "GroupReplayStart".into(),
            channel_id: name,
            display_name: r.display_name,
            identifier,
            stream: channel.stream().into(),
        })
        .await;
        Ok(())
    }

    fn insert(&mut self, name: String, entry: DirectoryEntry, runner: Runner) {
        self.next_start += 1;
        self.active.insert(
            name,
            Active {
                entry,
                runner,
                started: self.next_start,
                last_seen: Instant::now(),
            },
        );
    }

    async fn on_private(&mut self, payload: &[u8]) -> PrivateReplayReply {
        let refuse = |error: String| PrivateReplayReply {
            ok: false,
            channel_id: None,
            subject: None,
            error: Some(error),
        };
        let req: PrivateReplayRequest = match from_cbor(payload) {
            Ok(r) => r,
            Err(e) => return refuse(e.to_string()),
        };
        let channel =
            match ChannelId::parse(&format!("client.{}.{}", req.client_id, req.session_id)) {
                Ok(c) => c,
                Err(e) => return refuse(e.to_string()),
            };
        let name = channel.to_string();
        match req.kind.as_str() {
            "PrivateReplayStop" => {
                if let Some(a) = self.active.remove(&name) {
                    self.halt(a.runner, &name);
                }
                PrivateReplayReply {
                    ok: true,
                    channel_id: Some(name),
                    subject: Some(channel.subject()),
                    error: None,
                }
            }
            "PrivateReplayRequest" => {
                let Some(spec) = req.spec else {
                    return refuse("a PrivateReplayRequest needs a spec".into());
                };
                if self.active.contains_key(&name) {
                    return refuse(format!("{name} is already running"));
                }
                let n = self
                    .active
                    .values()
                    .filter(|a| a.entry.kind == Kind::PrivateReplay)
                    .count();
                if n >= self.opts.channels.private_max {
                    return refuse(format!(
                        "{n} private replays are running (channels.private_max)"
                    ));
                }
                let tag_subject = format!("tags.client.{}.{}", req.client_id, req.session_id);
                match self.start_replay(&channel, &spec, tag_subject).await {
                    Ok((runner, identifier)) => {
                        let entry = DirectoryEntry {
                            channel_id: name.clone(),
                            subject: channel.subject(),
                            display_name: format!("{} (private)", req.client_id),
                            kind: Kind::PrivateReplay,
                            stream: channel.stream().into(),
                            identifier: Some(identifier),
                        };
                        self.insert(name.clone(), entry, runner);
                        self.stats.privates_started.fetch_add(1, Relaxed);
                        PrivateReplayReply {
                            ok: true,
                            channel_id: Some(name),
                            subject: Some(channel.subject()),
                            error: None,
                        }
                    }
                    Err(e) => refuse(e),
                }
            }
            other => refuse(format!("unknown request type {other:?}")),
        }
    }
}

// --- the operator's side -------------------------------------------------------

/// Ask the service for a group replay and wait for its `GroupReplayStart`
/// (or its `GroupReplayError`).
pub async fn request_group_replay(
    client: &async_nats::Client,
    req: &GroupReplayRequest,
    wait: Duration,
) -> anyhow::Result<GroupReplayStart> {
    let mut ctrl = client.subscribe(SUBJECT_CTRL).await?;
    client.flush().await?;
    client.publish(SUBJECT_CTRL, to_cbor(req).into()).await?;
    client.flush().await?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let m = tokio::time::timeout_at(deadline, ctrl.next())
            .await
            .map_err(|_| anyhow::anyhow!("no answer from a channels service within {wait:?} (is `tspi channels serve` running?)"))?
            .ok_or_else(|| anyhow::anyhow!("subscription closed"))?;
        match Ctrl::decode(&m.payload) {
            Ok(Ctrl::Start(s)) if s.channel_id == req.channel_id => return Ok(s),
            Ok(Ctrl::Error(e)) if e.channel_id == req.channel_id => {
                anyhow::bail!("the channels service refused {}: {}", e.channel_id, e.error)
            }
            _ => {}
        }
    }
}

/// Ask the service to stop a group replay and wait for its `GroupReplayStop`.
pub async fn stop_group_replay(
    client: &async_nats::Client,
    channel_id: &str,
    wait: Duration,
) -> anyhow::Result<GroupReplayStop> {
    let mut ctrl = client.subscribe(SUBJECT_CTRL).await?;
    client.flush().await?;
    let req = GroupReplayStopRequest {
        kind: "GroupReplayStopRequest".into(),
        channel_id: channel_id.to_owned(),
    };
    client.publish(SUBJECT_CTRL, to_cbor(&req).into()).await?;
    client.flush().await?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let m = tokio::time::timeout_at(deadline, ctrl.next())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "no GroupReplayStop for {channel_id} within {wait:?} (is it running?)"
                )
            })?
            .ok_or_else(|| anyhow::anyhow!("subscription closed"))?;
        if let Ok(Ctrl::Stop(s)) = Ctrl::decode(&m.payload)
            && s.channel_id == channel_id
        {
            return Ok(s);
        }
    }
}

/// The directory, as the service answers it.
pub async fn list_channels(
    client: &async_nats::Client,
    wait: Duration,
) -> anyhow::Result<Vec<DirectoryEntry>> {
    let m = tokio::time::timeout(wait, client.request(SUBJECT_LIST_REQ, bytes::Bytes::new()))
        .await
        .map_err(|_| anyhow::anyhow!("no directory answer within {wait:?}"))??;
    Ok(from_cbor(&m.payload)?)
}

/// Send a private replay request (or stop) and return the answer.
pub async fn private_request(
    client: &async_nats::Client,
    req: &PrivateReplayRequest,
    wait: Duration,
) -> anyhow::Result<PrivateReplayReply> {
    let m = tokio::time::timeout(
        wait,
        client.request(SUBJECT_PRIVATE_REQ, to_cbor(req).into()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer to the private replay request within {wait:?}"))??;
    Ok(from_cbor(&m.payload)?)
}

/// The channel id `tspi channels start-replay` uses: `--id` slugged, else
/// the tag id slugged, else `YYYYMMDDTHHMMSSZ` of the start time (or
/// `seq-<n>` for a sequence).
pub fn group_channel_id(id: Option<&str>, spec: &ReplaySpec) -> Result<ChannelId, String> {
    let token = if let Some(id) = id {
        channels::slug(id).ok_or_else(|| format!("--id {id:?} has no letters or digits"))?
    } else if let Some(tag) = &spec.tag {
        channels::slug(tag).ok_or_else(|| format!("tag {tag:?} has no letters or digits"))?
    } else if let Some(start) = &spec.start {
        match start.parse::<StartAt>().map_err(|e| e.to_string())? {
            StartAt::Time(ns) => super::time::compact_utc(ns),
            StartAt::Sequence(n) => format!("seq-{n}"),
        }
    } else {
        return Err("give a start or a tag".into());
    };
    ChannelId::parse(&format!("replay.{token}")).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_ids_for_requests() {
        let spec = |start: Option<&str>, tag: Option<&str>| ReplaySpec {
            start: start.map(str::to_owned),
            tag: tag.map(str::to_owned),
            rate: 1.0,
            ..ReplaySpec::default()
        };
        assert_eq!(
            group_channel_id(None, &spec(Some("2026-04-30T14:05:00.5+02:00"), None))
                .unwrap()
                .to_string(),
            "replay.20260430T120500Z"
        );
        assert_eq!(
            group_channel_id(None, &spec(Some("17"), None))
                .unwrap()
                .to_string(),
            "replay.seq-17"
        );
        assert_eq!(
            group_channel_id(None, &spec(None, Some("Merge #2")))
                .unwrap()
                .to_string(),
            "replay.merge-2"
        );
        assert_eq!(
            group_channel_id(Some("Sortie 12"), &spec(Some("1"), None))
                .unwrap()
                .to_string(),
            "replay.sortie-12"
        );
        assert!(group_channel_id(Some("!!"), &spec(Some("1"), None)).is_err());
        assert!(group_channel_id(None, &spec(None, None)).is_err());
    }
}
