//! The channels service's directory as a state machine: which replays run,
//! the limits on them (`group_max`, `private_max`), and when a private
//! replay expires for want of heartbeats. Pure: the driver
//! ([`super::service`]) hands in each event with the time it read, carries
//! out the [`Action`]s it polls, and calls [`Directory::handle_timeout`] at
//! the moment [`Directory::poll_timeout`] names.
//!
//! A replay goes through three phases:
//! - *starting*: its slot is taken (it counts against the limits) and
//!   [`Action::Start`] asks the driver to start it; it is not listed yet. The
//!   driver answers [`Directory::replay_started`] or
//!   [`Directory::start_failed`].
//! - *running*: listed; announced (`GroupReplayStart` for a group replay,
//!   the request's reply for a private one).
//! - *stopping* (a group replay told to stop, or any replay at shutdown):
//!   still listed until the driver reports [`Directory::replay_ended`]; then
//!   removed, and a group replay's `GroupReplayStop` announced.
//!
//! A private replay that its owner stops, or that expires, leaves at once;
//! its runner is told to stop and nothing is announced.
//!
//! Each start gets a fresh [`ReplayId`], so a late report about a replay
//! already removed (an expired private replay whose runner ends later) never
//! touches a newer replay of the same channel.
//!
//! Who may do what (every refusal answered with a reason and counted by it,
//! [`Refusal`]):
//! - **Identifiers** are checked before anything else, before any subject
//!   is built: a client id, a session id and a group replay's id are 1 to
//!   [`ID_LEN_MAX`] bytes of `[A-Za-z0-9_-]` ([`check_id`]), so no request
//!   can make the driver publish to an over-long or malformed subject.
//! - **Private replays** belong to the request's `client_id`: only a
//!   `PrivateReplayStop` with that `client_id` stops one (a
//!   `GroupReplayStopRequest` naming a private channel is refused). A client
//!   id holds at most `private_per_client_max` replays, and private *starts*
//!   pass two token buckets ([`Bucket`], GCRA): one per client id and one
//!   for all clients, so a flood of invented client ids takes at most the
//!   overall budget of slots, and the slots it took expire without
//!   heartbeats. Stops are never rate-limited (they free slots).
//! - **Group replays** are started and stopped by operators: a request
//!   carries `operator_token`, checked against `operator_tokens`. With none
//!   configured, group control is open (the driver warns at start).
//!
//! The client id is what the client says it is: ownership keeps honest
//! clients from stopping each other's replays by mistake or by a buggy
//! tool, not a client that lies about its id; that needs NATS accounts or
//! permissions on `tspi.channel.private.req`. Likewise an operator token is
//! a bearer secret sent on `tspi.ops.ctrl`, which `TSPI_OPS` stores: whoever
//! may read that subject or stream may learn it (restrict them with NATS
//! permissions where that matters).

use super::message::{
    ChannelId, Ctrl, DirectoryEntry, GroupReplayError, GroupReplayRequest, GroupReplayStart,
    GroupReplayStop, GroupReplayStopRequest, ID_LEN_MAX, Kind, PrivateReplayReply,
    PrivateReplayRequest, ReplayControlResult, ReplaySource, ReplaySpec, check_id, clip, from_cbor,
    to_cbor,
};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// What the directory takes from `[channels]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryConfig {
    /// Group replays at once (starting ones included).
    pub group_max: usize,
    /// Private replays at once (starting ones included).
    pub private_max: usize,
    /// A private replay without a status heartbeat naming its channel for
    /// this long is stopped and removed.
    pub private_idle: Duration,
    /// Where group replays emit their tags again.
    pub group_tag_subject: String,
    /// Private replays one client id may hold at once (starting included).
    pub private_per_client_max: usize,
    /// Private replay starts, all clients together.
    pub rate_overall: RateLimit,
    /// Private replay starts, per client id.
    pub rate_client: RateLimit,
    /// Operator credentials for group replay control; empty: open.
    pub operator_tokens: Vec<String>,
    /// An archive DSN is configured: replays from the archive may start.
    pub archive: bool,
    /// Start the replay a foreign `GroupReplayStart` (one published without
    /// a request, by another tool) announces.
    pub honour_foreign_starts: bool,
    /// ...from this recording.
    pub foreign_start_source: ReplaySource,
    /// Controls (pause, resume, seek, rate) per running replay.
    pub rate_control: RateLimit,
}

impl DirectoryConfig {
    /// Whether `token` is an operator's (always, when none is configured).
    /// Compared without an early exit on the first differing byte.
    pub fn is_operator(&self, token: Option<&str>) -> bool {
        if self.operator_tokens.is_empty() {
            return true;
        }
        let Some(t) = token else {
            return false;
        };
        self.operator_tokens.iter().fold(false, |found, k| {
            found | same_secret(k.as_bytes(), t.as_bytes())
        })
    }
}

/// Equal byte strings, in time that depends on the lengths only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

mod limits;
mod ops;

pub use limits::{Bucket, CLIENT_BUCKETS_MAX, REFUSAL_LABELS, REFUSALS_LEN, RateLimit, Refusal};
pub use ops::{ControlOp, FOREIGN_DUPLICATE_WINDOW};

/// One replay this directory started, unique for the directory's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplayId(u64);

impl ReplayId {
    /// A made-up id (tests of what renders replays by id).
    #[doc(hidden)]
    pub fn for_tests(n: u64) -> ReplayId {
        ReplayId(n)
    }
}

impl std::fmt::Display for ReplayId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Start a replay of `spec` into `channel`.
#[derive(Clone, Debug, PartialEq)]
pub struct StartReplay {
    pub id: ReplayId,
    pub channel: ChannelId,
    pub spec: ReplaySpec,
    /// Where the replay emits its tags again: `[channels] tag_subject` for a
    /// group replay, `tags.client.<client>.<session>` for a private one
    /// (seen only by its owner).
    pub tag_subject: String,
}

/// Why a runner is told to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `GroupReplayStopRequest` on `tspi.ops.ctrl`, or the owner's
    /// `PrivateReplayStop`.
    Requested,
    /// A private replay heard no heartbeat for `private_idle`.
    Expired,
    /// The service is stopping.
    Shutdown,
    /// It started after it was stopped (while starting) or the service
    /// began to stop: nobody wants it.
    Unwanted,
}

/// A message the service publishes on `tspi.ops.ctrl`.
#[derive(Clone, Debug, PartialEq)]
pub enum Announcement {
    Start(GroupReplayStart),
    Stop(GroupReplayStop),
    Error(GroupReplayError),
    ControlResult(ReplayControlResult),
}

impl Announcement {
    /// The channel it is about.
    pub fn channel_id(&self) -> &str {
        match self {
            Announcement::Start(m) => &m.channel_id,
            Announcement::Stop(m) => &m.channel_id,
            Announcement::Error(m) => &m.channel_id,
            Announcement::ControlResult(m) => &m.channel_id,
        }
    }

    /// The CBOR map on the wire.
    pub fn to_cbor(&self) -> Vec<u8> {
        match self {
            Announcement::Start(m) => to_cbor(m),
            Announcement::Stop(m) => to_cbor(m),
            Announcement::Error(m) => to_cbor(m),
            Announcement::ControlResult(m) => to_cbor(m),
        }
    }
}

/// What the driver is asked to do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Start a runner; answer with [`Directory::replay_started`] or
    /// [`Directory::start_failed`], and report its end with
    /// [`Directory::replay_ended`].
    Start(StartReplay),
    /// Tell runner `id` to stop (it reports its end as usual). `channel`
    /// names it for the log.
    Stop {
        id: ReplayId,
        channel: String,
        reason: StopReason,
    },
    /// Publish on `tspi.ops.ctrl`.
    Announce(Announcement),
    /// Answer a directory request on its reply subject.
    ReplyDirectory {
        to: String,
        entries: Vec<DirectoryEntry>,
    },
    /// Answer a private replay request on its reply subject.
    ReplyPrivate {
        to: String,
        reply: PrivateReplayReply,
    },
    /// Carry out a control on runner `id`, then report with
    /// [`Directory::control_done`] (`request` as given here).
    Control {
        id: ReplayId,
        op: ControlOp,
        request: super::message::ReplayControl,
    },
}

/// What the directory counted so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectoryCounts {
    pub groups_started: u64,
    pub privates_started: u64,
    pub privates_expired: u64,
    /// Requests answered with a refusal (group: `GroupReplayError`), or
    /// refused without an answer (no reply subject).
    pub requests_refused: u64,
    /// The same, by [`Refusal`] (index: `Refusal as usize`).
    pub refused: [u64; REFUSALS_LEN],
    /// Controls carried out (pause, resume, seek, rate).
    pub controls_applied: u64,
    /// Foreign `GroupReplayStart`s honoured (a start queued).
    pub foreign_starts: u64,
}

/// The refusal of every request once [`Directory::shutdown`] was called.
const STOPPING: &str = "the channels service is stopping";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Its private request's reply subject waits for the outcome.
    Starting {
        reply: Option<String>,
    },
    Running,
    Stopping,
}

#[derive(Clone, Debug)]
struct Replay {
    id: ReplayId,
    phase: Phase,
    /// Its place among the listed replays of its kind: the order of start.
    started: u64,
    /// The last heartbeat naming its channel (or its start).
    last_seen: Instant,
    /// `identifier` is filled in when it starts.
    entry: DirectoryEntry,
    /// A private replay's owner: the request's `client_id`.
    owner: Option<String>,
    /// Its controls' rate.
    controls: Bucket,
}

impl Replay {
    fn listed(&self) -> bool {
        !matches!(self.phase, Phase::Starting { .. })
    }

    fn kind(&self) -> Kind {
        self.entry.kind
    }
}

/// The channels service's directory, limits and expiry (see the module
/// docs).
#[derive(Debug)]
pub struct Directory {
    config: DirectoryConfig,
    /// By channel name; one replay per channel.
    replays: BTreeMap<String, Replay>,
    /// Starts in flight whose replay was dropped while starting: their
    /// runner is stopped as soon as it is reported started.
    abandoned: BTreeMap<ReplayId, String>,
    next_id: u64,
    next_started: u64,
    closing: bool,
    actions: VecDeque<Action>,
    counts: DirectoryCounts,
    /// Private starts of all clients, and of each client id.
    bucket_overall: Bucket,
    buckets: BTreeMap<String, Bucket>,
    /// Group starts queued lately (channel, identifier, when): a foreign
    /// `GroupReplayStart` repeating one within
    /// [`FOREIGN_DUPLICATE_WINDOW`] is a duplicate or our own echo.
    recent_starts: VecDeque<(String, String, Instant)>,
}

impl Directory {
    pub fn new(config: DirectoryConfig) -> Directory {
        Directory {
            config,
            replays: BTreeMap::new(),
            abandoned: BTreeMap::new(),
            next_id: 0,
            next_started: 0,
            closing: false,
            actions: VecDeque::new(),
            counts: DirectoryCounts::default(),
            bucket_overall: Bucket::default(),
            buckets: BTreeMap::new(),
            recent_starts: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &DirectoryConfig {
        &self.config
    }

    pub fn counts(&self) -> &DirectoryCounts {
        &self.counts
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Directory::handle_timeout`] has something to do: the earliest
    /// moment a private replay expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.replays
            .values()
            .filter(|r| r.kind() == Kind::PrivateReplay && r.listed())
            .filter_map(|r| r.last_seen.checked_add(self.config.private_idle))
            .min()
    }

    /// No replay is starting, running or stopping.
    pub fn is_empty(&self) -> bool {
        self.replays.is_empty()
    }

    /// The directory answer: livestream first, then the group replays, then
    /// the private ones, each in order of start. Starting replays are not
    /// listed yet; stopping ones until their end.
    pub fn directory(&self) -> Vec<DirectoryEntry> {
        let mut listed: Vec<&Replay> = self.replays.values().filter(|r| r.listed()).collect();
        listed.sort_by_key(|r| (r.kind() == Kind::PrivateReplay, r.started));
        super::message::directory(listed.into_iter().map(|r| r.entry.clone()))
    }

    /// Replays of `kind` holding a slot (starting, running or stopping).
    pub fn slots_taken(&self, kind: Kind) -> usize {
        self.replays.values().filter(|r| r.kind() == kind).count()
    }

    /// A message on `tspi.ops.ctrl`.
    pub fn handle_ctrl(&mut self, now: Instant, ctrl: Ctrl) {
        match ctrl {
            Ctrl::Request(r) => self.group_request(now, r),
            Ctrl::StopRequest(r) => self.stop_request(r),
            Ctrl::Control(c) => self.control(now, c),
            // Not ours (the driver leaves out its own announcements, which
            // carry a header); ignored while its channel runs or when it
            // repeats a recent start.
            Ctrl::Start(s) => self.foreign_start(now, s),
            // Our own announcements and other tools' traffic.
            Ctrl::Stop(_) | Ctrl::Error(_) | Ctrl::ControlResult(_) | Ctrl::Other(_) => {}
        }
    }

    /// A status heartbeat (CBOR): only its `channel_id` matters here; the
    /// other fields may vary by tool, and an unreadable one is ignored.
    pub fn handle_status(&mut self, now: Instant, payload: &[u8]) {
        let Ok(v) = from_cbor::<ciborium::Value>(payload) else {
            return;
        };
        let channel = v
            .as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some("channel_id")))
            .and_then(|(_, v)| v.as_text());
        if let Some(c) = channel {
            self.touch(now, c);
        }
    }

    /// A heartbeat names `channel`: it is still watched.
    pub fn touch(&mut self, now: Instant, channel: &str) {
        if let Some(r) = self.replays.get_mut(channel) {
            r.last_seen = now;
        }
    }

    /// A directory request; answered only when it has a reply subject.
    pub fn handle_list_request(&mut self, reply: Option<String>) {
        if let Some(to) = reply {
            let entries = self.directory();
            self.actions
                .push_back(Action::ReplyDirectory { to, entries });
        }
    }

    /// A request on `tspi.channel.private.req` (CBOR): start or stop the
    /// client's private replay. The answer goes to `reply` when there is one.
    /// The ids are checked before any subject is built from them.
    pub fn handle_private_request(&mut self, now: Instant, payload: &[u8], reply: Option<String>) {
        let req: PrivateReplayRequest = match from_cbor(payload) {
            Ok(r) => r,
            Err(e) => {
                let why = clip(&e.to_string(), 4 * ID_LEN_MAX);
                return self.refuse_private(reply, Refusal::Malformed, why);
            }
        };
        if let Err(e) = check_id("client_id", &req.client_id)
            .and_then(|()| check_id("session_id", &req.session_id))
        {
            return self.refuse_private(reply, Refusal::Identifier, e.to_string());
        }
        let channel = ChannelId::Client {
            client: req.client_id.clone(),
            session: req.session_id.clone(),
        };
        let name = channel.to_string();
        match req.kind.as_str() {
            "PrivateReplayStop" => {
                if let Some(r) = self.replays.get(&name)
                    && r.owner.as_deref() != Some(req.client_id.as_str())
                {
                    // Unreachable while a channel's name holds its owner's
                    // id; kept so ownership never rests on naming alone.
                    return self.refuse_private(
                        reply,
                        Refusal::NotOwner,
                        format!("{name} belongs to another client"),
                    );
                }
                self.remove_private(&name, StopReason::Requested);
                self.answer_private(reply, accepted(&channel));
            }
            "PrivateReplayRequest" => {
                let Some(spec) = req.spec else {
                    return self.refuse_private(
                        reply,
                        Refusal::NoSpec,
                        "a PrivateReplayRequest needs a spec".into(),
                    );
                };
                if let Err((why, error)) = self
                    .check_source(&spec)
                    .and_then(|()| self.admit_private(now, &req.client_id, &name))
                {
                    return self.refuse_private(reply, why, error);
                }
                let tag_subject = format!("tags.client.{}.{}", req.client_id, req.session_id);
                let display_name = format!("{} (private)", req.client_id);
                let id = self.reserve(now, &channel, display_name, reply);
                self.replays.get_mut(&name).expect("just reserved").owner = Some(req.client_id);
                self.actions.push_back(Action::Start(StartReplay {
                    id,
                    channel,
                    spec,
                    tag_subject,
                }));
            }
            other => self.refuse_private(
                reply,
                Refusal::UnknownType,
                format!("unknown request type {:?}", clip(other, ID_LEN_MAX)),
            ),
        }
    }

    /// Whether `client` may start private replay `name` now; on success
    /// both rate buckets have taken the request.
    fn admit_private(
        &mut self,
        now: Instant,
        client: &str,
        name: &str,
    ) -> Result<(), (Refusal, String)> {
        if self.closing {
            return Err((Refusal::Stopping, STOPPING.into()));
        }
        if self.replays.contains_key(name) {
            return Err((
                Refusal::AlreadyRunning,
                format!("{name} is already running"),
            ));
        }
        let mine = self
            .replays
            .values()
            .filter(|r| r.owner.as_deref() == Some(client))
            .count();
        if mine >= self.config.private_per_client_max {
            return Err((
                Refusal::ClientMax,
                format!(
                    "client {client} holds {mine} private replays (channels.private_per_client_max)"
                ),
            ));
        }
        let n = self.slots_taken(Kind::PrivateReplay);
        if n >= self.config.private_max {
            return Err((
                Refusal::PrivateMax,
                format!("{n} private replays are running (channels.private_max)"),
            ));
        }
        // The client's bucket is only looked at until the overall one
        // admits, so refused requests of invented ids leave no entry.
        let rate_busy = |what: &str, limit: RateLimit| {
            format!(
                "too many requests {what}: {} at once, then {} a minute; retry later",
                limit.burst, limit.per_min
            )
        };
        let mine = self.buckets.get(client).copied().unwrap_or_default();
        let Some(mine) = mine.check(self.config.rate_client, now) else {
            return Err((
                Refusal::RateClient,
                rate_busy("from this client", self.config.rate_client),
            ));
        };
        if !self.buckets.contains_key(client) && self.buckets.len() >= CLIENT_BUCKETS_MAX {
            self.buckets.retain(|_, b| !b.is_full(now));
        }
        let full = !self.buckets.contains_key(client) && self.buckets.len() >= CLIENT_BUCKETS_MAX;
        if full || !self.bucket_overall.admit(self.config.rate_overall, now) {
            return Err((
                Refusal::RateOverall,
                rate_busy("from all clients", self.config.rate_overall),
            ));
        }
        self.buckets.insert(client.to_owned(), mine);
        Ok(())
    }

    /// The driver started replay `id`; `identifier` says what it starts
    /// from (the start time or sequence as given, or the tag id).
    pub fn replay_started(&mut self, now: Instant, id: ReplayId, identifier: String) {
        if let Some(channel) = self.abandoned.remove(&id) {
            self.actions.push_back(Action::Stop {
                id,
                channel,
                reason: StopReason::Unwanted,
            });
            return;
        }
        let Some(name) = self.name_of(id) else {
            return; // not ours, or reported twice
        };
        let r = self.replays.get_mut(&name).expect("name_of found it");
        let Phase::Starting { reply } = std::mem::replace(&mut r.phase, Phase::Running) else {
            return; // reported twice
        };
        self.next_started += 1;
        r.started = self.next_started;
        r.last_seen = now;
        r.entry.identifier = Some(identifier.clone());
        let entry = r.entry.clone();
        match entry.kind {
            Kind::GroupReplay => {
                self.counts.groups_started += 1;
                self.remember_start(now, &entry.channel_id, &identifier);
                self.actions
                    .push_back(Action::Announce(Announcement::Start(GroupReplayStart {
                        kind: "GroupReplayStart".into(),
                        channel_id: entry.channel_id,
                        display_name: entry.display_name,
                        identifier,
                        stream: entry.stream,
                    })));
            }
            Kind::PrivateReplay => {
                self.counts.privates_started += 1;
                let channel = ChannelId::parse(&name).expect("a parsed channel's name");
                self.answer_private(reply, accepted(&channel));
            }
            Kind::Livestream => unreachable!("the livestream is no replay"),
        }
    }

    /// The driver could not start replay `id`: its slot is freed and the
    /// request refused with `error`.
    pub fn start_failed(&mut self, id: ReplayId, error: String) {
        if self.abandoned.remove(&id).is_some() {
            return; // already answered when it was dropped
        }
        let Some(name) = self.name_of(id) else {
            return;
        };
        if !matches!(self.replays[&name].phase, Phase::Starting { .. }) {
            return;
        }
        let r = self.replays.remove(&name).expect("name_of found it");
        self.refuse_pending(r, Refusal::StartFailed, error);
    }

    /// Runner `id` ended (data over, stopped, failed). A group replay's end
    /// is announced.
    pub fn replay_ended(&mut self, id: ReplayId) {
        let Some(name) = self.name_of(id) else {
            return; // already removed (a private replay stopped or expired)
        };
        if !self.replays[&name].listed() {
            return; // not started yet: not its end
        }
        let r = self.replays.remove(&name).expect("name_of found it");
        if r.kind() == Kind::GroupReplay {
            self.actions
                .push_back(Action::Announce(Announcement::Stop(GroupReplayStop {
                    kind: "GroupReplayStop".into(),
                    channel_id: name,
                })));
        }
    }

    /// Expire every private replay whose last heartbeat is `private_idle`
    /// or more before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let idle = self.config.private_idle;
        let expired: Vec<String> = self
            .replays
            .iter()
            .filter(|(_, r)| r.kind() == Kind::PrivateReplay && r.listed())
            .filter(|(_, r)| r.last_seen.checked_add(idle).is_some_and(|t| t <= now))
            .map(|(name, _)| name.clone())
            .collect();
        for name in expired {
            self.counts.privates_expired += 1;
            self.remove_private(&name, StopReason::Expired);
        }
    }

    /// Stop everything: running replays are told to stop (and stay listed
    /// until their end), starting ones are dropped, and every later request
    /// is refused. Done when [`Directory::is_empty`].
    pub fn shutdown(&mut self) {
        self.closing = true;
        let names: Vec<String> = self.replays.keys().cloned().collect();
        for name in names {
            let r = self.replays.get_mut(&name).expect("listed key");
            match r.phase {
                Phase::Running => {
                    r.phase = Phase::Stopping;
                    let id = r.id;
                    self.actions.push_back(Action::Stop {
                        id,
                        channel: name,
                        reason: StopReason::Shutdown,
                    });
                }
                Phase::Stopping => {}
                Phase::Starting { .. } => self.abandon(&name, Refusal::Stopping, STOPPING),
            }
        }
    }

    // --- inside --------------------------------------------------------------

    fn name_of(&self, id: ReplayId) -> Option<String> {
        self.replays
            .iter()
            .find(|(_, r)| r.id == id)
            .map(|(name, _)| name.clone())
    }

    /// Take a slot for `channel` in the starting phase.
    fn reserve(
        &mut self,
        now: Instant,
        channel: &ChannelId,
        display_name: String,
        reply: Option<String>,
    ) -> ReplayId {
        self.next_id += 1;
        let id = ReplayId(self.next_id);
        let name = channel.to_string();
        let entry = DirectoryEntry {
            channel_id: name.clone(),
            subject: channel.subject(),
            display_name,
            kind: channel.kind(),
            stream: channel.stream().into(),
            identifier: None,
        };
        self.replays.insert(
            name,
            Replay {
                id,
                phase: Phase::Starting { reply },
                started: 0,
                last_seen: now,
                entry,
                owner: None,
                controls: Bucket::default(),
            },
        );
        id
    }

    fn group_request(&mut self, now: Instant, r: GroupReplayRequest) {
        match self.admit_group(&r) {
            Ok(channel) => {
                let id = self.reserve(now, &channel, r.display_name, None);
                self.actions.push_back(Action::Start(StartReplay {
                    id,
                    channel,
                    spec: r.spec,
                    tag_subject: self.config.group_tag_subject.clone(),
                }));
            }
            Err((why, error)) => {
                self.count_refusal(why);
                self.announce_error(r.channel_id, why, error);
            }
        }
    }

    /// A group request's channel, if it names a group replay and the
    /// request carries an operator's token.
    fn group_channel(
        &self,
        channel_id: &str,
        token: Option<&str>,
    ) -> Result<ChannelId, (Refusal, String)> {
        let channel =
            ChannelId::parse(channel_id).map_err(|e| (Refusal::Identifier, e.to_string()))?;
        if channel.kind() != Kind::GroupReplay {
            return Err((
                Refusal::NotGroup,
                format!("{channel} is not a group replay channel (replay.<id>)"),
            ));
        }
        if !self.config.is_operator(token) {
            let why = if token.is_some() {
                "is not valid"
            } else {
                "is missing"
            };
            return Err((
                Refusal::NotOperator,
                format!("group replays are for operators: the operator token {why}"),
            ));
        }
        Ok(channel)
    }

    fn admit_group(&self, r: &GroupReplayRequest) -> Result<ChannelId, (Refusal, String)> {
        let channel = self.group_channel(&r.channel_id, r.operator_token.as_deref())?;
        if self.closing {
            return Err((Refusal::Stopping, STOPPING.into()));
        }
        let name = channel.to_string();
        if self.replays.contains_key(&name) {
            return Err((
                Refusal::AlreadyRunning,
                format!("{name} is already running"),
            ));
        }
        let groups = self.slots_taken(Kind::GroupReplay);
        if groups >= self.config.group_max {
            return Err((
                Refusal::GroupMax,
                format!("{groups} group replays are running (channels.group_max)"),
            ));
        }
        self.check_source(&r.spec)?;
        Ok(channel)
    }

    /// A replay from the archive needs an archive DSN.
    fn check_source(&self, spec: &ReplaySpec) -> Result<(), (Refusal, String)> {
        if spec.source == ReplaySource::Archive && !self.config.archive {
            return Err((
                Refusal::NoArchive,
                "no archive is configured for replays: set [channels] archive_dsn (or the \
                 archive's DSN)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// `GroupReplayStopRequest` from an operator: stop the group replay on
    /// its channel, keeping it listed until its end. A private replay is
    /// stopped only by its owner (`PrivateReplayStop`): refused here.
    fn stop_request(&mut self, req: GroupReplayStopRequest) {
        let channel = match self.group_channel(&req.channel_id, req.operator_token.as_deref()) {
            Ok(c) => c,
            Err((why, error)) => {
                let (why, error) = if why == Refusal::NotGroup {
                    let owner = "a private replay is stopped only by its owner (PrivateReplayStop)";
                    (Refusal::NotOwner, format!("{error}: {owner}"))
                } else {
                    (why, error)
                };
                self.count_refusal(why);
                return self.announce_error(req.channel_id, why, error);
            }
        };
        let name = channel.to_string();
        let name = name.as_str();
        let Some(r) = self.replays.get_mut(name) else {
            tracing::info!(channel = %name, "stop for a replay that is not running");
            return;
        };
        match r.phase {
            Phase::Running => {
                r.phase = Phase::Stopping;
                let id = r.id;
                self.actions.push_back(Action::Stop {
                    id,
                    channel: name.to_owned(),
                    reason: StopReason::Requested,
                });
            }
            Phase::Stopping => {}
            Phase::Starting { .. } => {
                self.abandon(name, Refusal::Stopping, "stopped while starting");
                // The stop's requester waits for this.
                self.actions
                    .push_back(Action::Announce(Announcement::Stop(GroupReplayStop {
                        kind: "GroupReplayStop".into(),
                        channel_id: name.to_owned(),
                    })));
            }
        }
    }

    /// The owner stopped it or it expired: unlisted at once, runner stopped.
    fn remove_private(&mut self, name: &str, reason: StopReason) {
        let Some(r) = self.replays.get(name) else {
            return;
        };
        match r.phase {
            Phase::Running => {
                let r = self.replays.remove(name).expect("just found");
                self.actions.push_back(Action::Stop {
                    id: r.id,
                    channel: name.to_owned(),
                    reason,
                });
            }
            // Its runner was told already.
            Phase::Stopping => {
                self.replays.remove(name);
            }
            Phase::Starting { .. } => {
                self.abandon(name, Refusal::Stopping, "stopped while starting")
            }
        }
    }

    /// Drop a starting replay: its request is refused with `why`, and its
    /// runner stopped once it reports its start.
    fn abandon(&mut self, name: &str, why: Refusal, error: &str) {
        let r = self.replays.remove(name).expect("a starting replay");
        self.abandoned.insert(r.id, name.to_owned());
        self.refuse_pending(r, why, error.to_owned());
    }

    /// Refuse the request that asked for starting replay `r`.
    fn refuse_pending(&mut self, r: Replay, why: Refusal, error: String) {
        let Phase::Starting { reply } = r.phase else {
            unreachable!("only a starting replay has a pending request");
        };
        match r.entry.kind {
            Kind::GroupReplay => {
                self.count_refusal(why);
                self.announce_error(r.entry.channel_id, why, error);
            }
            _ => self.refuse_private(reply, why, error),
        }
    }

    fn count_refusal(&mut self, why: Refusal) {
        self.counts.requests_refused += 1;
        self.counts.refused[why as usize] += 1;
    }

    /// Announce a refused group request; the channel id as given, clipped
    /// (it is only payload, but a refusal never echoes a huge input).
    fn announce_error(&mut self, channel_id: String, why: Refusal, error: String) {
        self.actions
            .push_back(Action::Announce(Announcement::Error(GroupReplayError {
                kind: "GroupReplayError".into(),
                channel_id: clip(&channel_id, 3 * ID_LEN_MAX),
                error,
                reason: Some(why.label().into()),
            })));
    }

    fn refuse_private(&mut self, reply: Option<String>, why: Refusal, error: String) {
        self.count_refusal(why);
        self.answer_private(
            reply,
            PrivateReplayReply {
                ok: false,
                channel_id: None,
                subject: None,
                error: Some(error),
                reason: Some(why.label().into()),
            },
        );
    }

    fn answer_private(&mut self, reply: Option<String>, answer: PrivateReplayReply) {
        if let Some(to) = reply {
            self.actions
                .push_back(Action::ReplyPrivate { to, reply: answer });
        }
    }
}

fn accepted(channel: &ChannelId) -> PrivateReplayReply {
    PrivateReplayReply {
        ok: true,
        channel_id: Some(channel.to_string()),
        subject: Some(channel.subject()),
        error: None,
        reason: None,
    }
}

#[cfg(test)]
mod tests;
