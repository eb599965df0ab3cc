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

use super::message::{
    ChannelId, Ctrl, DirectoryEntry, GroupReplayError, GroupReplayRequest, GroupReplayStart,
    GroupReplayStop, GroupReplayStopRequest, Kind, PrivateReplayReply, PrivateReplayRequest,
    ReplaySpec, from_cbor, to_cbor,
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
}

/// One replay this directory started, unique for the directory's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplayId(u64);

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
}

impl Announcement {
    /// The channel it is about.
    pub fn channel_id(&self) -> &str {
        match self {
            Announcement::Start(m) => &m.channel_id,
            Announcement::Stop(m) => &m.channel_id,
            Announcement::Error(m) => &m.channel_id,
        }
    }

    /// The CBOR map on the wire.
    pub fn to_cbor(&self) -> Vec<u8> {
        match self {
            Announcement::Start(m) => to_cbor(m),
            Announcement::Stop(m) => to_cbor(m),
            Announcement::Error(m) => to_cbor(m),
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
}

/// What the directory counted so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectoryCounts {
    pub groups_started: u64,
    pub privates_started: u64,
    pub privates_expired: u64,
    /// Requests answered with a refusal (group: `GroupReplayError`).
    pub requests_refused: u64,
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
            Ctrl::StopRequest(GroupReplayStopRequest { channel_id, .. }) => {
                self.stop_request(&channel_id)
            }
            // Our own announcements and other tools' traffic.
            Ctrl::Start(_) | Ctrl::Stop(_) | Ctrl::Error(_) | Ctrl::Other(_) => {}
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
    pub fn handle_private_request(&mut self, now: Instant, payload: &[u8], reply: Option<String>) {
        let req: PrivateReplayRequest = match from_cbor(payload) {
            Ok(r) => r,
            Err(e) => return self.refuse_private(reply, e.to_string()),
        };
        let channel =
            match ChannelId::parse(&format!("client.{}.{}", req.client_id, req.session_id)) {
                Ok(c) => c,
                Err(e) => return self.refuse_private(reply, e.to_string()),
            };
        let name = channel.to_string();
        match req.kind.as_str() {
            "PrivateReplayStop" => {
                self.remove_private(&name, StopReason::Requested);
                self.answer_private(reply, accepted(&channel));
            }
            "PrivateReplayRequest" => {
                let Some(spec) = req.spec else {
                    return self
                        .refuse_private(reply, "a PrivateReplayRequest needs a spec".into());
                };
                if self.closing {
                    return self.refuse_private(reply, STOPPING.into());
                }
                if self.replays.contains_key(&name) {
                    return self.refuse_private(reply, format!("{name} is already running"));
                }
                let n = self.slots_taken(Kind::PrivateReplay);
                if n >= self.config.private_max {
                    return self.refuse_private(
                        reply,
                        format!("{n} private replays are running (channels.private_max)"),
                    );
                }
                let tag_subject = format!("tags.client.{}.{}", req.client_id, req.session_id);
                let display_name = format!("{} (private)", req.client_id);
                let id = self.reserve(now, &channel, display_name, reply);
                self.actions.push_back(Action::Start(StartReplay {
                    id,
                    channel,
                    spec,
                    tag_subject,
                }));
            }
            other => self.refuse_private(reply, format!("unknown request type {other:?}")),
        }
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
        self.refuse_pending(r, error);
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
                Phase::Starting { .. } => self.abandon(&name, STOPPING),
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
            Err(error) => {
                self.counts.requests_refused += 1;
                self.announce_error(r.channel_id, error);
            }
        }
    }

    fn admit_group(&self, r: &GroupReplayRequest) -> Result<ChannelId, String> {
        if self.closing {
            return Err(STOPPING.into());
        }
        let channel = ChannelId::parse(&r.channel_id).map_err(|e| e.to_string())?;
        if channel.kind() != Kind::GroupReplay {
            return Err(format!(
                "{} is not a group replay channel (replay.<id>)",
                r.channel_id
            ));
        }
        let name = channel.to_string();
        if self.replays.contains_key(&name) {
            return Err(format!("{name} is already running"));
        }
        let groups = self.slots_taken(Kind::GroupReplay);
        if groups >= self.config.group_max {
            return Err(format!(
                "{groups} group replays are running (channels.group_max)"
            ));
        }
        Ok(channel)
    }

    /// `GroupReplayStopRequest`: stop the replay on `name` (whatever its
    /// kind, as before), keeping it listed until its end.
    fn stop_request(&mut self, name: &str) {
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
                let group = r.kind() == Kind::GroupReplay;
                self.abandon(name, "stopped while starting");
                if group {
                    // The stop's requester waits for this.
                    self.actions
                        .push_back(Action::Announce(Announcement::Stop(GroupReplayStop {
                            kind: "GroupReplayStop".into(),
                            channel_id: name.to_owned(),
                        })));
                }
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
            Phase::Starting { .. } => self.abandon(name, "stopped while starting"),
        }
    }

    /// Drop a starting replay: its request is refused with `why`, and its
    /// runner stopped once it reports its start.
    fn abandon(&mut self, name: &str, why: &str) {
        let r = self.replays.remove(name).expect("a starting replay");
        self.abandoned.insert(r.id, name.to_owned());
        self.refuse_pending(r, why.to_owned());
    }

    /// Refuse the request that asked for starting replay `r`.
    fn refuse_pending(&mut self, r: Replay, error: String) {
        let Phase::Starting { reply } = r.phase else {
            unreachable!("only a starting replay has a pending request");
        };
        match r.entry.kind {
            Kind::GroupReplay => {
                self.counts.requests_refused += 1;
                self.announce_error(r.entry.channel_id, error);
            }
            _ => self.refuse_private(reply, error),
        }
    }

    fn announce_error(&mut self, channel_id: String, error: String) {
        self.actions
            .push_back(Action::Announce(Announcement::Error(GroupReplayError {
                kind: "GroupReplayError".into(),
                channel_id,
                error,
            })));
    }

    fn refuse_private(&mut self, reply: Option<String>, error: String) {
        self.counts.requests_refused += 1;
        self.answer_private(
            reply,
            PrivateReplayReply {
                ok: false,
                channel_id: None,
                subject: None,
                error: Some(error),
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
    }
}

#[cfg(test)]
mod tests;
