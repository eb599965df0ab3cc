//! `tspi channels serve`: the driver of the channels service (CONTRACT §4).
//! It owns the NATS client, the runners and the clock; what runs, the
//! limits and expiry are decided by the pure [`Directory`].
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
//!   `private_idle_s`, at its end, or by its owner's `PrivateReplayStop`.
//! - **Who may**: the [`Directory`] refuses bad ids (before any subject
//!   exists), foreign stops, group control without an operator token,
//!   clients over their limit or rate; the driver publishes its answers and
//!   the refusal counts by reason (`requests_refused{reason}`), and warns at
//!   start when no operator token is configured.
//! - **From the archive**: a spec with `source: "archive"` reads the
//!   PostgreSQL archive (`[channels] archive_dsn`, which `tspi run` and the
//!   CLI fill from `[archive] postgres` when unset) with the archive
//!   source; connected once before the start is announced.
//! - **Controls**: `ReplayControl` (pause, resume, seek to a time or a tag,
//!   rate) is admitted by the [`Directory`] and handed to the replay's
//!   pacer here (a tag looked up where the replay reads); the outcome is
//!   announced as `ReplayControlResult`.
//! - **Foreign starts**: every announcement this service publishes carries
//!   [`SERVICE_HEADER`]; a `GroupReplayStart` without it (the toolkit's
//!   console) goes to the directory, which starts that replay once when
//!   `honour_foreign_starts` allows.
//! - **Metrics**: [`ServiceStats::render_prometheus`], at each scrape:
//!   counters, replays active by kind, each paced replay's pacing errors.
//! - **Directory**: requests on `tspi.channel.list.req` get a CBOR array of
//!   entries, livestream first, then group replays, then private ones, each
//!   in order of start.
//!
//! The loop: each message is decoded and handed to the [`Directory`] with
//! the time read here; then every [`Action`] it queued is carried out
//! (starting a replay is awaited in place, and its outcome handed back at
//! once, so no other request interleaves with a start); the loop sleeps
//! until [`Directory::poll_timeout`] when nothing else comes.

use super::directory::{
    Action, Announcement, ControlOp, Directory, DirectoryConfig, REFUSAL_LABELS, REFUSALS_LEN,
    RateLimit, Refusal, ReplayId, StartReplay, StopReason,
};
use super::message::{
    self, ChannelId, Ctrl, Kind, ReplayControl, ReplaySource, ReplaySpec, SUBJECT_CTRL,
    SUBJECT_LIST_REQ, SUBJECT_LIVESTREAM, SUBJECT_PRIVATE_REQ, SUBJECT_STATUS, to_cbor,
};
use crate::jetstream::{Existing, StreamSettings, ensure_stream_with, ops_stream, replay_stream};
use crate::replay::ChannelsConfig;
use crate::replay::archive::{self, ArchiveSource, Window};
use crate::replay::driver::{Job, LivePace};
use crate::replay::pacer::{Control, Rate};
use crate::replay::sink::ChannelSink;
use crate::replay::source::{ReadAhead, Source, StartAt, StreamSource, load_tags};
use crate::replay::time::parse_rfc3339_ns;
use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Name of the livestream consumer on `TSPI`.
pub const LIVE_CONSUMER: &str = "LIVE_MAIN";

/// The header this service puts on every announcement it publishes on
/// `tspi.ops.ctrl` (value: the service's NATS client name). A
/// `GroupReplayStart` without it is foreign (another tool's, such as the
/// range toolkit's console) and may start a replay; one with it is a
/// service's own announcement and never does. Headers leave the
/// contract's CBOR map as it is.
pub const SERVICE_HEADER: &str = "Tspi-Channels-Service";

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
        controls_applied => "Replay controls carried out (pause, resume, seek, rate)",
        foreign_starts => "Foreign GroupReplayStarts honoured (a replay started without a request)",
        requests_refused [by "reason": REFUSAL_LABELS] => "Replay requests refused, by reason",
    }
}

/// Counts the service keeps, live ([`ServiceStats::load`] reads them).
#[derive(Debug, Default)]
pub struct ServiceStats {
    pub livestream_messages: AtomicU64,
    pub groups_started: AtomicU64,
    pub privates_started: AtomicU64,
    pub privates_expired: AtomicU64,
    pub controls_applied: AtomicU64,
    pub foreign_starts: AtomicU64,
    /// By `directory::Refusal as usize`.
    pub requests_refused: [AtomicU64; REFUSALS_LEN],
    /// Group and private replays holding a slot (starting, running,
    /// stopping).
    pub groups_active: AtomicU64,
    pub privates_active: AtomicU64,
    /// Each paced replay's live pacing errors, by runner, with its channel:
    /// at most `group_max + private_max` (and those ending).
    pub pacing: Mutex<BTreeMap<ReplayId, (String, Arc<LivePace>)>>,
}

impl ServiceStats {
    /// Every count now (each read `Relaxed`, one after another).
    pub fn load(&self) -> ChannelsCounts {
        ChannelsCounts {
            livestream_messages: self.livestream_messages.load(Relaxed),
            groups_started: self.groups_started.load(Relaxed),
            privates_started: self.privates_started.load(Relaxed),
            privates_expired: self.privates_expired.load(Relaxed),
            controls_applied: self.controls_applied.load(Relaxed),
            foreign_starts: self.foreign_starts.load(Relaxed),
            requests_refused: std::array::from_fn(|i| self.requests_refused[i].load(Relaxed)),
        }
    }

    /// The channels part of `/metrics`, rendered at the scrape: the
    /// counters (`tspi_channels_<name>_total`), the replays holding a slot
    /// by kind (`tspi_channels_replays_active{kind}`) and each paced
    /// replay's pacing error so far
    /// (`tspi_channels_replay_pacing_error_seconds{channel}`, actual minus
    /// scheduled send time; one series per running replay, so the label's
    /// values are bounded by `group_max + private_max`).
    pub fn render_prometheus(&self) -> String {
        use crate::metrics::{write_family, write_gauge_family, write_histogram_samples};
        let mut s = crate::metrics::render_counter_families("tspi_channels", &self.load());
        write_gauge_family(
            &mut s,
            "tspi_channels_replays_active",
            "Replays holding a slot (starting, running or stopping), by kind",
            &[
                ("{kind=\"group\"}", self.groups_active.load(Relaxed)),
                ("{kind=\"private\"}", self.privates_active.load(Relaxed)),
            ],
        );
        // The newest runner of each channel (a private channel restarted
        // may overlap its predecessor's end for a moment).
        let by_channel: BTreeMap<String, Arc<LivePace>> = self
            .pacing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|(c, p)| (c.clone(), p.clone()))
            .collect();
        let name = "tspi_channels_replay_pacing_error_seconds";
        write_family(
            &mut s,
            name,
            "Each running paced replay's send time minus its scheduled time",
            "histogram",
        );
        for (channel, pace) in by_channel {
            // Channel ids are [A-Za-z0-9_.-] only: nothing to escape.
            let labels = format!("channel=\"{channel}\",");
            write_histogram_samples(&mut s, name, &labels, &pace.error_ns());
        }
        s
    }

    /// Refusals counted so far, all reasons together.
    pub fn refused_total(&self) -> u64 {
        self.requests_refused.iter().map(|a| a.load(Relaxed)).sum()
    }

    /// Refusals counted for `label` (a `directory::REFUSAL_LABELS` entry).
    pub fn refused(&self, label: &str) -> u64 {
        REFUSAL_LABELS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.requests_refused[i].load(Relaxed))
    }
}

impl DirectoryConfig {
    /// The directory's part of `[channels]`.
    pub fn from_channels(c: &ChannelsConfig) -> DirectoryConfig {
        DirectoryConfig {
            group_max: c.group_max,
            private_max: c.private_max,
            private_idle: Duration::from_secs(c.private_idle_s),
            group_tag_subject: c.tag_subject.clone(),
            private_per_client_max: c.private_per_client_max,
            rate_overall: RateLimit {
                burst: c.requests_burst,
                per_min: c.requests_per_min,
            },
            rate_client: RateLimit {
                burst: c.client_requests_burst,
                per_min: c.client_requests_per_min,
            },
            operator_tokens: c.all_operator_tokens(),
            archive: c.archive_dsn.is_some(),
            honour_foreign_starts: c.honour_foreign_starts,
            foreign_start_source: c.foreign_start_source,
            rate_control: RateLimit {
                burst: c.controls_burst,
                per_min: c.controls_per_min,
            },
        }
    }
}

/// What carries a running replay.
enum Runner {
    /// Its controls, and where it reads (to look a seek's tag up there).
    Paced(std::sync::mpsc::Sender<Control>, ReplaySource),
    /// JetStream-native: the push consumer's name, and the task that
    /// watches for its end.
    Native(String, tokio::task::JoinHandle<()>),
}

/// A runner that ended (data over, stopped, failed).
struct Ended {
    id: ReplayId,
    channel: String,
    error: Option<String>,
}

/// The driver: the client, the runners, and the pure directory.
struct Driver {
    client: async_nats::Client,
    js: jetstream::Context,
    opts: ServiceOptions,
    dir: Directory,
    runners: HashMap<ReplayId, Runner>,
    /// Paced replays started so far (picks each one's pacing core in turn).
    paced_started: usize,
    ended_tx: mpsc::UnboundedSender<Ended>,
    stats: Arc<ServiceStats>,
    /// The value of [`SERVICE_HEADER`] on our announcements.
    origin: String,
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
    if opts.channels.honour_foreign_starts {
        tracing::info!(
            "foreign GroupReplayStarts on tspi.ops.ctrl start their replay (honour_foreign_starts)"
        );
    }
    if opts.channels.all_operator_tokens().is_empty() {
        tracing::warn!(
            "no [channels] operator_tokens: anyone on NATS may start and stop group replays"
        );
    }
    let js = jetstream::new(client.clone());
    if opts.channels.create_streams {
        let mut s = opts.streams.clone();
        s.max_age = opts.channels.replay_age_max();
        let existing = Existing::update(s.update);
        ensure_stream_with(&js, replay_stream(&s), &existing, Duration::from_secs(30)).await?;
        let mut o = opts.streams.clone();
        o.max_age = Duration::ZERO;
        ensure_stream_with(&js, ops_stream(&o), &existing, Duration::from_secs(30)).await?;
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
    let mut d = Driver {
        client: client.clone(),
        js,
        dir: Directory::new(DirectoryConfig::from_channels(&opts.channels)),
        opts,
        runners: HashMap::new(),
        paced_started: 0,
        ended_tx,
        stats,
        origin: "tspi-channels".into(),
    };
    tracing::info!("channels service ready");
    tokio::pin!(shutdown);
    loop {
        let expiry = d.dir.poll_timeout();
        let expire = async move {
            match expiry {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => break,
            Some(m) = ctrl.next() => match Ctrl::decode(&m.payload) {
                // A service's own announcement (ours, or another tspi
                // service's): never a start request.
                Ok(Ctrl::Start(_))
                    if m.headers.as_ref().is_some_and(|h| h.get(SERVICE_HEADER).is_some()) => {}
                Ok(c) => d.dir.handle_ctrl(Instant::now(), c),
                Err(e) => tracing::warn!(error = %e, "unreadable control message"),
            },
            Some(m) = list.next() => d.dir.handle_list_request(m.reply.map(|r| r.to_string())),
            Some(m) = private.next() => d.dir.handle_private_request(
                Instant::now(),
                &m.payload,
                m.reply.map(|r| r.to_string()),
            ),
            Some(m) = status.next() => d.dir.handle_status(Instant::now(), &m.payload),
            Some(e) = ended_rx.recv() => d.on_ended(e),
            () = expire => d.dir.handle_timeout(Instant::now()),
        }
        d.act().await;
    }
    d.dir.shutdown();
    d.act().await;
    // Wait (bounded) for the replays to wind down and announce their stop.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !d.dir.is_empty() {
        match tokio::time::timeout_at(deadline, ended_rx.recv()).await {
            Ok(Some(e)) => {
                d.on_ended(e);
                d.act().await;
            }
            _ => break,
        }
    }
    if let Some(l) = live {
        l.abort();
    }
    let _ = d.client.flush().await;
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

impl Driver {
    /// Carry out everything the directory asked for, its counts published
    /// before (a requester told of a refusal finds it counted) and after.
    async fn act(&mut self) {
        self.publish_counts();
        while let Some(action) = self.dir.poll_action() {
            match action {
                Action::Start(s) => match self.start_replay(&s).await {
                    Ok((runner, identifier)) => {
                        self.runners.insert(s.id, runner);
                        self.dir.replay_started(Instant::now(), s.id, identifier);
                    }
                    Err(error) => self.dir.start_failed(s.id, error),
                },
                Action::Stop {
                    id,
                    channel,
                    reason,
                } => {
                    if reason == StopReason::Expired {
                        tracing::info!(%channel, "private replay idle: removed");
                    }
                    if let Some(runner) = self.runners.remove(&id) {
                        self.stop_runner(id, channel, runner);
                    }
                }
                Action::Announce(a) => self.announce(&a).await,
                Action::ReplyDirectory { to, entries } => {
                    self.reply(to, to_cbor(&entries)).await;
                }
                Action::ReplyPrivate { to, reply } => {
                    if let Some(reason) = &reply.reason {
                        tracing::debug!(%reason, error = ?reply.error, "private request refused");
                    }
                    self.reply(to, to_cbor(&reply)).await;
                }
                Action::Control { id, op, request } => {
                    let r = self.control(id, op, &request).await;
                    self.dir.control_done(request, r);
                }
            }
        }
        self.publish_counts();
    }

    /// The directory's counts into the stats the metrics read.
    fn publish_counts(&self) {
        let c = self.dir.counts();
        let s = &self.stats;
        s.groups_started.store(c.groups_started, Relaxed);
        s.privates_started.store(c.privates_started, Relaxed);
        s.privates_expired.store(c.privates_expired, Relaxed);
        s.controls_applied.store(c.controls_applied, Relaxed);
        s.foreign_starts.store(c.foreign_starts, Relaxed);
        let active = |k| self.dir.slots_taken(k) as u64;
        s.groups_active.store(active(Kind::GroupReplay), Relaxed);
        s.privates_active
            .store(active(Kind::PrivateReplay), Relaxed);
        for (a, &n) in s.requests_refused.iter().zip(&c.refused) {
            a.store(n, Relaxed);
        }
    }

    /// Answer on a requester's reply subject. The server accepted that
    /// subject from the requester, but it is checked once more: a subject
    /// the server refuses would cost this service its connection.
    async fn reply(&self, to: String, payload: Vec<u8>) {
        if !message::publishable(&to) {
            tracing::warn!(len = to.len(), "reply subject not usable: not answered");
            return;
        }
        let _ = self.client.publish(to, payload.into()).await;
    }

    fn on_ended(&mut self, e: Ended) {
        self.runners.remove(&e.id);
        self.stats
            .pacing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&e.id);
        if let Some(err) = &e.error {
            tracing::warn!(channel = %e.channel, error = %err, "replay failed");
        }
        self.dir.replay_ended(e.id);
    }

    async fn announce(&self, a: &Announcement) {
        let channel = a.channel_id();
        match a {
            Announcement::Start(s) => {
                tracing::info!(%channel, identifier = %s.identifier, "group replay started")
            }
            Announcement::Stop(_) => tracing::info!(%channel, "group replay over"),
            Announcement::Error(e) => {
                tracing::warn!(%channel, error = %e.error, "group replay refused")
            }
            Announcement::ControlResult(r) if r.ok => {
                tracing::info!(%channel, action = r.action.label(), "replay control carried out")
            }
            Announcement::ControlResult(r) => {
                tracing::info!(%channel, action = r.action.label(), error = ?r.error,
                    "replay control refused")
            }
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(SERVICE_HEADER, self.origin.as_str());
        if let Err(e) = self
            .client
            .publish_with_headers(SUBJECT_CTRL, headers, a.to_cbor().into())
            .await
        {
            tracing::warn!(error = %e, "cannot publish on tspi.ops.ctrl");
        }
        let _ = self.client.flush().await;
    }

    /// Tell a runner to stop; its end comes back on `ended_tx` (a native
    /// one's once its consumer is deleted).
    fn stop_runner(&self, id: ReplayId, channel: String, runner: Runner) {
        match runner {
            Runner::Paced(c, _) => {
                let _ = c.send(Control::Stop);
            }
            Runner::Native(consumer, watcher) => {
                watcher.abort();
                let js = self.js.clone();
                let ended = self.ended_tx.clone();
                tokio::spawn(async move {
                    if let Ok(s) = js.get_stream(crate::jetstream::STREAM_TELEMETRY).await {
                        let _ = s.delete_consumer(&consumer).await;
                    }
                    tracing::debug!(%channel, "native replay consumer removed");
                    let _ = ended.send(Ended {
                        id,
                        channel,
                        error: None,
                    });
                });
            }
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
                    .map_err(|e: crate::replay::time::TimeError| e.to_string())?,
                end,
                s.clone(),
            )),
            (None, Some(tag)) => {
                let ts_ns = self.tag_moment_ns(spec.source, tag).await?;
                let c = &self.opts.channels;
                let from = ts_ns.saturating_sub(c.tag_before_ns());
                let to = end.unwrap_or(ts_ns.saturating_add(c.tag_after_ns()));
                Ok((StartAt::Time(from), Some(to), tag.clone()))
            }
            _ => Err("give exactly one of start and tag".into()),
        }
    }

    /// The moment of tag `tag` where `source` keeps its tags: `TSPI_OPS`
    /// for the stream, `tspi_tags` for the archive.
    async fn tag_moment_ns(&self, source: ReplaySource, tag: &str) -> Result<u64, String> {
        match source {
            ReplaySource::Stream => {
                let tags = load_tags(&self.js).await.map_err(|e| e.to_string())?;
                tags.iter()
                    .find(|t| t.id == tag)
                    .map(|t| t.ts_ns)
                    .ok_or_else(|| format!("no tag {tag:?} in TSPI_OPS"))
            }
            ReplaySource::Archive => {
                let (dsn, tls) = self.archive_dsn()?;
                let client = archive::connect_with(dsn, tls.as_ref(), crate::pg::Target::AsGiven)
                    .await
                    .map_err(|e| e.to_string())?;
                archive::tag_moment_ns(&client, tag)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// The archive's DSN, and its TLS (`[channels] archive_ca_file`).
    fn archive_dsn(&self) -> Result<(&str, Option<crate::pg::Tls>), String> {
        let c = &self.opts.channels;
        let dsn = c
            .archive_dsn
            .as_deref()
            .ok_or_else(|| "no archive is configured for replays".to_owned())?;
        let tls = crate::pg::Tls::from_setting(c.archive_ca_file.as_deref())
            .map_err(|e| format!("channels.archive_ca_file: {e}"))?;
        Ok((dsn, tls))
    }

    /// The archive as a replay's source: the window by receive time (a
    /// stream sequence has no meaning there); up to what the archive holds
    /// when no end is given. Connects once first, so a wrong DSN or a
    /// missing schema refuses the start instead of ending the replay.
    async fn archive_source(
        &self,
        start: StartAt,
        end: Option<u64>,
    ) -> Result<ArchiveSource, String> {
        let StartAt::Time(start_ns) = start else {
            return Err(
                "the archive replays by time: give an RFC 3339 start (a stream \
                        sequence applies to the TSPI stream only)"
                    .into(),
            );
        };
        let (dsn, tls) = self.archive_dsn()?;
        let client = archive::connect_with(dsn, tls.as_ref(), crate::pg::Target::AsGiven)
            .await
            .map_err(|e| e.to_string())?;
        client
            .simple_query("SELECT 1 FROM tspi_telemetry LIMIT 0")
            .await
            .map_err(|e| format!("archive: {e}"))?;
        let mut source = ArchiveSource::new(
            tokio::runtime::Handle::current(),
            dsn.to_owned(),
            Window::Time {
                start_ns,
                end_ns: end.unwrap_or(u64::MAX),
            },
        );
        source.tls = tls;
        let c = &self.opts.channels;
        source.read_ahead = ReadAhead {
            batch_len: c.read_batch_len,
            batches_max: c.read_batches_max,
        };
        Ok(source)
    }

    /// Start the replay the directory asked for: its runner and its
    /// identifier. Its end is reported on `ended_tx`.
    async fn start_replay(&mut self, s: &StartReplay) -> Result<(Runner, String), String> {
        let rate = Rate::new(s.spec.rate).map_err(|e| e.to_string())?;
        let (start, end, identifier) = self.window(&s.spec).await?;
        if s.spec.jetstream_native {
            if s.spec.source != ReplaySource::Stream {
                return Err("the JetStream-native mode replays the TSPI stream only".into());
            }
            return self
                .start_native(s.id, &s.channel, start, end, rate)
                .await
                .map(|r| (r, identifier));
        }
        let c = &self.opts.channels;
        let name = s.channel.to_string();
        let handle = tokio::runtime::Handle::current();
        let source: Box<dyn Source> = match s.spec.source {
            ReplaySource::Stream => {
                let mut source = StreamSource::new(handle.clone(), self.js.clone(), start, end);
                source.read_ahead = ReadAhead {
                    batch_len: c.read_batch_len,
                    batches_max: c.read_batches_max,
                };
                Box::new(source)
            }
            ReplaySource::Archive => Box::new(self.archive_source(start, end).await?),
        };
        let c = &self.opts.channels;
        let sink = ChannelSink::new(
            handle,
            self.js.clone(),
            s.channel.clone(),
            s.tag_subject.clone(),
            c.sink_limits(),
        );
        let driver = c.driver(rate, self.paced_started);
        self.paced_started += 1;
        let live = Arc::new(LivePace::default());
        let job = Job::spawn_live(&name, source, Box::new(sink), driver, Some(live.clone()))
            .map_err(|e| e.to_string())?;
        self.stats
            .pacing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(s.id, (name.clone(), live));
        let controls = job.controller();
        let ended = self.ended_tx.clone();
        let id = s.id;
        tokio::spawn(async move {
            let r = job.wait().await;
            if let Ok(o) = &r {
                tracing::info!(channel = %name, report = %o.to_json(), "replay finished");
            }
            let _ = ended.send(Ended {
                id,
                channel: name,
                error: r.err().map(|e| e.to_string()),
            });
        });
        Ok((Runner::Paced(controls, s.spec.source), identifier))
    }

    /// Carry out an admitted control on runner `id` (a seek's tag looked up
    /// where the replay reads).
    async fn control(
        &self,
        id: ReplayId,
        op: ControlOp,
        request: &ReplayControl,
    ) -> Result<(), (Refusal, String)> {
        let ended = || {
            (
                Refusal::NotRunning,
                format!("{} has ended", request.channel_id),
            )
        };
        let (controls, source) = match self.runners.get(&id) {
            Some(Runner::Paced(c, s)) => (c.clone(), *s),
            Some(Runner::Native(..)) => {
                return Err((
                    Refusal::BadControl,
                    "a JetStream-native replay takes no controls (the server paces it)".into(),
                ));
            }
            None => return Err(ended()),
        };
        let control = match op {
            ControlOp::Apply(c) => c,
            ControlOp::SeekTag(tag) => {
                let ts = self.tag_moment_ns(source, &tag).await.map_err(|e| {
                    (
                        Refusal::BadControl,
                        format!("seek: not an RFC 3339 time, and {e}"),
                    )
                })?;
                Control::Seek(ts)
            }
        };
        controls.send(control).map_err(|_| ended())
    }

    /// The JetStream-native mode: the server paces a push consumer by the
    /// original store times. Rates other than 1 are not available there.
    async fn start_native(
        &self,
        id: ReplayId,
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
                id,
                channel: channel_name,
                error: None,
            });
        });
        Ok(Runner::Native(name, watcher))
    }
}

mod operator;
pub use operator::{
    control_replay, group_channel_id, list_channels, private_request, request_group_replay,
    stop_group_replay,
};
