//! The directory in virtual time: unit tests of each rule, and a property
//! test that drives it with a simulated driver (starts that succeed, fail
//! or stay pending; runners that end; heartbeats; time passing).

use super::*;
use crate::channels::client_state::{ClientMachine, Event};
use crate::channels::message::SUBJECT_TAGS;
use proptest::prelude::*;
use std::collections::BTreeSet;

pub(super) const IDLE: Duration = Duration::from_secs(1);

pub(super) const TOKEN: &str = "operator-secret-0001";

/// Limits that never bind in the rule tests (rate, per client, operator:
/// the token the helpers send).
pub(super) fn config(group_max: usize, private_max: usize) -> DirectoryConfig {
    DirectoryConfig {
        group_max,
        private_max,
        private_idle: IDLE,
        group_tag_subject: SUBJECT_TAGS.into(),
        private_per_client_max: 256,
        rate_overall: RateLimit {
            burst: 10_000,
            per_min: 600_000,
        },
        rate_client: RateLimit {
            burst: 10_000,
            per_min: 600_000,
        },
        operator_tokens: vec![TOKEN.into()],
        archive: true,
        honour_foreign_starts: true,
        foreign_start_source: ReplaySource::Stream,
        rate_control: RateLimit {
            burst: 10_000,
            per_min: 600_000,
        },
    }
}

pub(super) fn spec(rate: f64) -> ReplaySpec {
    ReplaySpec {
        start: Some("2026-04-30T14:05:00Z".into()),
        rate,
        ..ReplaySpec::default()
    }
}

pub(super) fn group_as(id: &str, token: Option<&str>) -> Ctrl {
    let mut r = GroupReplayRequest::new(
        &ChannelId::Replay(id.into()),
        format!("Group {id}"),
        spec(1.0),
    );
    r.operator_token = token.map(str::to_owned);
    Ctrl::Request(r)
}

pub(super) fn group(id: &str) -> Ctrl {
    group_as(id, Some(TOKEN))
}

fn stop_as(channel_id: &str, token: Option<&str>) -> Ctrl {
    Ctrl::StopRequest(GroupReplayStopRequest {
        kind: "GroupReplayStopRequest".into(),
        channel_id: channel_id.into(),
        operator_token: token.map(str::to_owned),
    })
}

pub(super) fn group_stop(id: &str) -> Ctrl {
    stop_as(&format!("replay.{id}"), Some(TOKEN))
}

pub(super) fn private(client: &str, session: &str, spec: Option<ReplaySpec>) -> Vec<u8> {
    to_cbor(&PrivateReplayRequest {
        kind: "PrivateReplayRequest".into(),
        client_id: client.into(),
        session_id: session.into(),
        spec,
    })
}

pub(super) fn private_stop(client: &str, session: &str) -> Vec<u8> {
    to_cbor(&PrivateReplayRequest {
        kind: "PrivateReplayStop".into(),
        client_id: client.into(),
        session_id: session.into(),
        spec: None,
    })
}

fn heartbeat(channel: &str) -> Vec<u8> {
    let mut m = ClientMachine::default();
    m.apply(Event::StartPrivate(ChannelId::parse(channel).unwrap()));
    to_cbor(&m.heartbeat("alice", "2026-04-30T14:05:00.000000Z".into()))
}

pub(super) fn drain(d: &mut Directory) -> Vec<Action> {
    std::iter::from_fn(|| d.poll_action()).collect()
}

/// Report the one start queued (other actions queued before it are
/// dropped) as done; returns its id.
pub(super) fn started(d: &mut Directory, now: Instant) -> ReplayId {
    let actions = drain(d);
    let starts: Vec<&StartReplay> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Start(s) => Some(s),
            _ => None,
        })
        .collect();
    let [s] = starts.as_slice() else {
        panic!("expected one start: {actions:?}");
    };
    d.replay_started(now, s.id, "from".into());
    s.id
}

pub(super) fn listed(d: &Directory) -> Vec<String> {
    d.directory().into_iter().map(|e| e.channel_id).collect()
}

#[test]
fn a_group_replay_starts_is_listed_and_announced() {
    let t0 = Instant::now();
    let mut d = Directory::new(config(4, 32));
    d.handle_ctrl(t0, group("a"));
    let actions = drain(&mut d);
    let [Action::Start(s)] = actions.as_slice() else {
        panic!("{actions:?}");
    };
    assert_eq!(s.channel, ChannelId::Replay("a".into()));
    assert_eq!(s.tag_subject, SUBJECT_TAGS);
    assert_eq!(s.spec, spec(1.0));
    // Starting: it takes a slot but is not listed.
    assert_eq!(listed(&d), ["livestream"]);
    assert_eq!(d.slots_taken(Kind::GroupReplay), 1);
    d.replay_started(t0, s.id, "2026-04-30T14:05:00Z".into());
    assert_eq!(
        drain(&mut d),
        [Action::Announce(Announcement::Start(GroupReplayStart {
            kind: "GroupReplayStart".into(),
            channel_id: "replay.a".into(),
            display_name: "Group a".into(),
            identifier: "2026-04-30T14:05:00Z".into(),
            stream: "TSPI_REPLAY".into(),
        }))]
    );
    let dir = d.directory();
    assert_eq!(dir[0], DirectoryEntry::livestream());
    assert_eq!(dir[1].channel_id, "replay.a");
    assert_eq!(dir[1].subject, "tspi.channel.replay.a");
    assert_eq!(dir[1].kind, Kind::GroupReplay);
    assert_eq!(dir[1].identifier.as_deref(), Some("2026-04-30T14:05:00Z"));
    assert_eq!(d.counts().groups_started, 1);
    // Group replays never expire.
    assert_eq!(d.poll_timeout(), None);
}

#[test]
fn group_requests_are_refused_with_a_reason() {
    let t0 = Instant::now();
    let mut d = Directory::new(config(1, 32));
    d.handle_ctrl(t0, group("a"));
    started(&mut d, t0);
    drain(&mut d);
    let error = |d: &mut Directory, ctrl: Ctrl| {
        d.handle_ctrl(t0, ctrl);
        match drain(d).as_slice() {
            [Action::Announce(Announcement::Error(e))] => e.error.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert!(error(&mut d, group("a")).contains("already running"));
    assert!(error(&mut d, group("b")).contains("channels.group_max"));
    let mut not_group = GroupReplayRequest::new(
        &ChannelId::Replay("x".into()),
        "X".into(),
        ReplaySpec::default(),
    );
    not_group.channel_id = "client.alice.s1".into();
    assert!(error(&mut d, Ctrl::Request(not_group)).contains("not a group replay"));
    not_group = GroupReplayRequest::new(&ChannelId::Livestream, "X".into(), spec(1.0));
    not_group.channel_id = "replay.a b".into();
    assert!(error(&mut d, Ctrl::Request(not_group)).contains("not valid"));
    assert_eq!(d.counts().requests_refused, 4);
    // Other tools' traffic and our own announcements change nothing.
    d.handle_ctrl(t0, Ctrl::Other("Something".into()));
    assert!(drain(&mut d).is_empty());
}

#[test]
fn a_stopped_group_replay_stays_listed_until_its_end() {
    let t0 = Instant::now();
    let mut d = Directory::new(config(4, 32));
    d.handle_ctrl(t0, group("a"));
    let a = started(&mut d, t0);
    d.handle_ctrl(t0, group("b"));
    let b = started(&mut d, t0);
    drain(&mut d);
    d.handle_ctrl(t0, group_stop("a"));
    assert_eq!(
        drain(&mut d),
        [Action::Stop {
            id: a,
            channel: "replay.a".into(),
            reason: StopReason::Requested
        }]
    );
    assert_eq!(listed(&d), ["livestream", "replay.a", "replay.b"]);
    // A second stop while it winds down asks nothing more.
    d.handle_ctrl(t0, group_stop("a"));
    assert!(drain(&mut d).is_empty());
    d.replay_ended(a);
    assert_eq!(
        drain(&mut d),
        [Action::Announce(Announcement::Stop(GroupReplayStop {
            kind: "GroupReplayStop".into(),
            channel_id: "replay.a".into(),
        }))]
    );
    assert_eq!(listed(&d), ["livestream", "replay.b"]);
    // Its end reported twice, or a stop for nothing: no effect.
    d.replay_ended(a);
    d.handle_ctrl(t0, group_stop("zzz"));
    assert!(drain(&mut d).is_empty());
    // The other one ends with its data: announced the same way.
    d.replay_ended(b);
    assert!(matches!(
        drain(&mut d).as_slice(),
        [Action::Announce(Announcement::Stop(s))] if s.channel_id == "replay.b"
    ));
    assert!(d.is_empty());
}

#[test]
fn private_requests_are_answered_and_limited() {
    let t0 = Instant::now();
    let mut d = Directory::new(config(4, 2));
    let reply = |d: &mut Directory, payload: &[u8]| {
        d.handle_private_request(t0, payload, Some("_INBOX.1".into()));
        let mut actions = drain(d);
        if let [Action::Start(s)] = actions.as_slice() {
            d.replay_started(t0, s.id, "from".into());
            actions = drain(d);
        }
        match actions.as_slice() {
            [Action::ReplyPrivate { to, reply }] if to == "_INBOX.1" => reply.clone(),
            other => panic!("{other:?}"),
        }
    };
    let r = reply(&mut d, &private("alice", "s1", Some(spec(2.0))));
    assert_eq!(
        r,
        PrivateReplayReply {
            ok: true,
            channel_id: Some("client.alice.s1".into()),
            subject: Some("tspi.channel.client.alice.s1".into()),
            error: None,
            reason: None,
        }
    );
    let refused = |r: PrivateReplayReply| {
        assert!(!r.ok && r.channel_id.is_none(), "{r:?}");
        r.error.unwrap()
    };
    assert!(refused(reply(&mut d, &private("alice", "s1", Some(spec(1.0))))).contains("already"));
    assert!(reply(&mut d, &private("bob", "s1", Some(spec(1.0)))).ok);
    assert!(
        refused(reply(&mut d, &private("carol", "s1", Some(spec(1.0)))))
            .contains("channels.private_max")
    );
    assert!(refused(reply(&mut d, &private("dave", "s1", None))).contains("needs a spec"));
    assert!(
        refused(reply(&mut d, &private("a.b", "s1", Some(spec(1.0)))))
            .contains("client_id contains")
    );
    assert!(!refused(reply(&mut d, b"\xff")).is_empty());
    let mut odd = private("erin", "s1", None);
    odd = {
        let mut r: PrivateReplayRequest = from_cbor(&odd).unwrap();
        r.kind = "Dance".into();
        to_cbor(&r)
    };
    assert!(refused(reply(&mut d, &odd)).contains("unknown request type"));
    assert_eq!(d.counts().privates_started, 2);
    assert_eq!(d.counts().requests_refused, 6);
    // The tags of a private replay go to its owner only.
    d.handle_private_request(t0, &private_stop("bob", "s1"), None);
    drain(&mut d);
    d.handle_private_request(t0, &private("carol", "s1", Some(spec(1.0))), None);
    match drain(&mut d).as_slice() {
        [Action::Start(s)] => assert_eq!(s.tag_subject, "tags.client.carol.s1"),
        other => panic!("{other:?}"),
    }
    // Without a reply subject nothing is answered, but it is counted.
    d.handle_private_request(t0, b"\xff", None);
    assert!(drain(&mut d).is_empty());
    assert_eq!(d.counts().requests_refused, 7);
}

#[test]
fn a_private_replay_without_heartbeats_is_stopped_and_leaves() {
    let t0 = Instant::now();
    let mut d = Directory::new(config(4, 32));
    d.handle_private_request(t0, &private("alice", "s1", Some(spec(1.0))), None);
    let id = started(&mut d, t0);
    d.handle_ctrl(t0, group("g"));
    started(&mut d, t0);
    drain(&mut d);
    assert_eq!(d.poll_timeout(), Some(t0 + IDLE));
    // A heartbeat naming it pushes its expiry back; others do not.
    let t1 = t0 + Duration::from_millis(600);
    d.handle_status(t1, &heartbeat("client.alice.s1"));
    d.handle_status(t1, &heartbeat("client.bob.s1"));
    d.handle_status(t1, b"\xff");
    d.handle_status(t1, &to_cbor(&1u8));
    assert_eq!(d.poll_timeout(), Some(t1 + IDLE));
    // Not a nanosecond early.
    d.handle_timeout(t1 + IDLE - Duration::from_nanos(1));
    assert!(drain(&mut d).is_empty());
    assert_eq!(listed(&d), ["livestream", "replay.g", "client.alice.s1"]);
    d.handle_timeout(t1 + IDLE);
    assert_eq!(
        drain(&mut d),
        [Action::Stop {
            id,
            channel: "client.alice.s1".into(),
            reason: StopReason::Expired
        }]
    );
    assert_eq!(listed(&d), ["livestream", "replay.g"]);
    assert_eq!(d.counts().privates_expired, 1);
    assert_eq!(d.poll_timeout(), None);
    // Its runner's end comes later and changes nothing.
    d.replay_ended(id);
    assert!(drain(&mut d).is_empty());
    assert_eq!(listed(&d), ["livestream", "replay.g"]);
}

#[test]
fn a_late_end_never_removes_a_newer_replay_of_the_same_channel() {
    let t0 = Instant::now();
    let mut d = Directory::new(config(4, 32));
    d.handle_private_request(t0, &private("alice", "s1", Some(spec(1.0))), None);
    let old = started(&mut d, t0);
    d.handle_timeout(t0 + IDLE);
    drain(&mut d);
    let t1 = t0 + IDLE;
    d.handle_private_request(t1, &private("alice", "s1", Some(spec(1.0))), None);
    let new = started(&mut d, t1);
    assert_ne!(old, new);
    d.replay_ended(old);
    assert_eq!(listed(&d), ["livestream", "client.alice.s1"]);
    d.replay_ended(new);
    assert_eq!(listed(&d), ["livestream"]);
}

#[test]
fn a_private_stop_removes_exactly_that_entry() {
    let t0 = Instant::now();
    let mut d = Directory::new(config(4, 32));
    let mut ids = Vec::new();
    for s in ["s1", "s2", "s3"] {
        d.handle_private_request(t0, &private("alice", s, Some(spec(1.0))), None);
        ids.push(started(&mut d, t0));
    }
    d.handle_ctrl(t0, group("g"));
    started(&mut d, t0);
    drain(&mut d);
    assert_eq!(
        listed(&d),
        [
            "livestream",
            "replay.g",
            "client.alice.s1",
            "client.alice.s2",
            "client.alice.s3"
        ]
    );
    d.handle_private_request(t0, &private_stop("alice", "s2"), Some("_INBOX.9".into()));
    let actions = drain(&mut d);
    assert_eq!(
        actions[0],
        Action::Stop {
            id: ids[1],
            channel: "client.alice.s2".into(),
            reason: StopReason::Requested
        }
    );
    assert!(
        matches!(&actions[1], Action::ReplyPrivate { to, reply } if to == "_INBOX.9" && reply.ok)
    );
    assert_eq!(actions.len(), 2);
    assert_eq!(
        listed(&d),
        [
            "livestream",
            "replay.g",
            "client.alice.s1",
            "client.alice.s3"
        ]
    );
    // Stopping what is not running is answered all the same.
    d.handle_private_request(t0, &private_stop("alice", "s2"), Some("_INBOX.9".into()));
    assert!(matches!(
        drain(&mut d).as_slice(),
        [Action::ReplyPrivate { reply, .. }] if reply.ok
    ));
}

#[test]
fn a_failed_start_frees_its_slot_and_refuses_the_request() {
    let t0 = Instant::now();
    let mut d = Directory::new(config(1, 1));
    d.handle_ctrl(t0, group("a"));
    let Some(Action::Start(s)) = d.poll_action() else {
        panic!()
    };
    d.start_failed(s.id, "bad window".into());
    assert_eq!(
        drain(&mut d),
        [Action::Announce(Announcement::Error(GroupReplayError {
            kind: "GroupReplayError".into(),
            channel_id: "replay.a".into(),
            error: "bad window".into(),
            reason: Some("start_failed".into()),
        }))]
    );
    d.handle_private_request(t0, &private("a", "b", Some(spec(1.0))), Some("_I".into()));
    let Some(Action::Start(s)) = d.poll_action() else {
        panic!()
    };
    d.start_failed(s.id, "no tag".into());
    assert!(matches!(
        drain(&mut d).as_slice(),
        [Action::ReplyPrivate { reply, .. }] if !reply.ok && reply.error.as_deref() == Some("no tag")
    ));
    assert!(d.is_empty());
    assert_eq!(d.counts().requests_refused, 2);
    // Both slots are free again.
    d.handle_ctrl(t0, group("a"));
    started(&mut d, t0);
    d.handle_private_request(t0, &private("a", "b", Some(spec(1.0))), None);
    started(&mut d, t0);
}

#[test]
fn a_replay_stopped_while_starting_is_stopped_once_it_starts() {
    let t0 = Instant::now();
    let mut d = Directory::new(config(4, 32));
    d.handle_ctrl(t0, group("a"));
    let Some(Action::Start(s)) = d.poll_action() else {
        panic!()
    };
    d.handle_ctrl(t0, group_stop("a"));
    // The start's requester and the stop's requester both get an answer.
    let actions = drain(&mut d);
    assert!(
        matches!(
            actions.as_slice(),
            [
                Action::Announce(Announcement::Error(e)),
                Action::Announce(Announcement::Stop(st)),
            ] if e.channel_id == "replay.a" && st.channel_id == "replay.a"
        ),
        "{actions:?}"
    );
    assert!(d.is_empty());
    d.replay_started(t0, s.id, "from".into());
    assert_eq!(
        drain(&mut d),
        [Action::Stop {
            id: s.id,
            channel: "replay.a".into(),
            reason: StopReason::Unwanted
        }]
    );
    assert_eq!(listed(&d), ["livestream"]);
    assert!(d.abandoned.is_empty());
    // A private one stopped while starting; its start then fails.
    d.handle_private_request(t0, &private("a", "b", Some(spec(1.0))), Some("_I".into()));
    let Some(Action::Start(s)) = d.poll_action() else {
        panic!()
    };
    d.handle_private_request(t0, &private_stop("a", "b"), Some("_J".into()));
    let actions = drain(&mut d);
    assert!(
        matches!(
            actions.as_slice(),
            [
                Action::ReplyPrivate { to: i, reply: r1 },
                Action::ReplyPrivate { to: j, reply: r2 },
            ] if i == "_I" && !r1.ok && j == "_J" && r2.ok
        ),
        "{actions:?}"
    );
    d.start_failed(s.id, "late".into());
    assert!(drain(&mut d).is_empty());
    assert!(d.abandoned.is_empty());
}

#[test]
fn shutdown_stops_every_replay_and_refuses_new_ones() {
    let t0 = Instant::now();
    let mut d = Directory::new(config(4, 32));
    d.handle_ctrl(t0, group("a"));
    let a = started(&mut d, t0);
    d.handle_private_request(t0, &private("c", "s", Some(spec(1.0))), None);
    let p = started(&mut d, t0);
    d.handle_ctrl(t0, group("b")); // still starting
    let Some(Action::Start(b)) = d.poll_action() else {
        panic!()
    };
    drain(&mut d);
    d.shutdown();
    let actions = drain(&mut d);
    assert!(actions.contains(&Action::Stop {
        id: a,
        channel: "replay.a".into(),
        reason: StopReason::Shutdown
    }));
    assert!(actions.contains(&Action::Stop {
        id: p,
        channel: "client.c.s".into(),
        reason: StopReason::Shutdown
    }));
    assert!(
        actions.iter().any(|a| matches!(a,
            Action::Announce(Announcement::Error(e)) if e.channel_id == "replay.b")),
        "{actions:?}"
    );
    assert_eq!(actions.len(), 3);
    // Listed until they end.
    assert_eq!(listed(&d), ["livestream", "replay.a", "client.c.s"]);
    d.handle_ctrl(t0, group("c"));
    assert!(matches!(
        drain(&mut d).as_slice(),
        [Action::Announce(Announcement::Error(e))] if e.error == STOPPING
    ));
    d.replay_started(t0, b.id, "from".into());
    assert!(matches!(
        drain(&mut d).as_slice(),
        [Action::Stop {
            reason: StopReason::Unwanted,
            ..
        }]
    ));
    d.replay_ended(p);
    assert!(drain(&mut d).is_empty(), "a private end is not announced");
    d.replay_ended(a);
    assert!(matches!(
        drain(&mut d).as_slice(),
        [Action::Announce(Announcement::Stop(s))] if s.channel_id == "replay.a"
    ));
    assert!(d.is_empty());
}

#[test]
fn the_directory_is_answered_only_with_a_reply_subject() {
    let t0 = Instant::now();
    let mut d = Directory::new(config(4, 32));
    d.handle_list_request(None);
    assert!(drain(&mut d).is_empty());
    d.handle_private_request(t0, &private("z", "1", Some(spec(1.0))), None);
    started(&mut d, t0);
    d.handle_ctrl(t0, group("y"));
    started(&mut d, t0);
    drain(&mut d);
    d.handle_list_request(Some("_INBOX.7".into()));
    assert_eq!(
        drain(&mut d),
        [Action::ReplyDirectory {
            to: "_INBOX.7".into(),
            entries: d.directory()
        }]
    );
    // Group replays before private ones, whatever the start order.
    assert_eq!(listed(&d), ["livestream", "replay.y", "client.z.1"]);
}

// --- property: a simulated driver ------------------------------------------------

const GROUPS: [&str; 4] = ["a", "b", "c", "d"];
const CLIENTS: [(&str, &str); 4] = [("al", "1"), ("al", "2"), ("bo", "1"), ("bo", "2")];

#[derive(Clone, Debug)]
enum Op {
    Group {
        name: usize,
        ok: bool,
    },
    GroupStop {
        name: usize,
    },
    Private {
        who: usize,
        ok: bool,
        reply: bool,
    },
    PrivateStop {
        who: usize,
    },
    /// Someone else tries to stop `who`'s private replay through the group
    /// stop, with or without an operator token.
    ForeignStop {
        who: usize,
        token: bool,
    },
    /// A group stop without the token.
    GroupStopNoToken {
        name: usize,
    },
    Heartbeat {
        who: usize,
    },
    /// The driver finishes the oldest start in flight.
    Resolve,
    /// The `k`-th runner alive ends (its data, or a stop took effect).
    End {
        k: usize,
    },
    Advance {
        ms: u64,
    },
    List,
    Shutdown,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..GROUPS.len(), prop::bool::weighted(0.8))
            .prop_map(|(name, ok)| Op::Group { name, ok }),
        1 => (0..GROUPS.len()).prop_map(|name| Op::GroupStop { name }),
        3 => (0..CLIENTS.len(), prop::bool::weighted(0.8), any::<bool>())
            .prop_map(|(who, ok, reply)| Op::Private { who, ok, reply }),
        1 => (0..CLIENTS.len()).prop_map(|who| Op::PrivateStop { who }),
        1 => (0..CLIENTS.len(), any::<bool>()).prop_map(|(who, token)| Op::ForeignStop { who, token }),
        1 => (0..GROUPS.len()).prop_map(|name| Op::GroupStopNoToken { name }),
        3 => (0..CLIENTS.len()).prop_map(|who| Op::Heartbeat { who }),
        4 => Just(Op::Resolve),
        2 => (0..8usize).prop_map(|k| Op::End { k }),
        3 => (0..1_500u64).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::List),
        1 => prop::bool::weighted(0.05).prop_map(|s| if s { Op::Shutdown } else { Op::List }),
    ]
}

#[derive(Debug)]
struct Runner {
    channel: String,
    stop: Option<StopReason>,
}

/// The driver as the property sees it.
struct Sim {
    d: Directory,
    now: Instant,
    pending: VecDeque<StartReplay>,
    alive: BTreeMap<ReplayId, Runner>,
    /// When each channel last showed it was watched (its start or a
    /// heartbeat).
    seen: BTreeMap<String, Instant>,
    /// Start order of what was reported started.
    order: Vec<ReplayId>,
    group_requests: u64,
    group_answers: u64,
    private_inboxes: u64,
    private_answers: BTreeMap<String, u32>,
    /// The channel a rightful stop of this step may stop (the owner's
    /// `PrivateReplayStop`, or an operator's group stop).
    may_stop: Option<String>,
    /// Refusals answered in this step.
    refusals_seen: u64,
    /// This step is a group stop request (its refusal answers no start).
    stop_op: bool,
}

impl Sim {
    fn new() -> Sim {
        Sim {
            d: Directory::new(DirectoryConfig {
                private_per_client_max: 2,
                rate_overall: RateLimit {
                    burst: 3,
                    per_min: 120,
                },
                rate_client: RateLimit {
                    burst: 2,
                    per_min: 60,
                },
                ..config(2, 3)
            }),
            now: Instant::now(),
            pending: VecDeque::new(),
            alive: BTreeMap::new(),
            seen: BTreeMap::new(),
            order: Vec::new(),
            group_requests: 0,
            group_answers: 0,
            private_inboxes: 0,
            private_answers: BTreeMap::new(),
            may_stop: None,
            refusals_seen: 0,
            stop_op: false,
        }
    }

    /// Carry out every queued action; starts wait in `pending`.
    fn act(&mut self) {
        while let Some(a) = self.d.poll_action() {
            match a {
                Action::Start(s) => self.pending.push_back(s),
                Action::Stop {
                    id,
                    channel,
                    reason,
                } => {
                    let r = self
                        .alive
                        .get_mut(&id)
                        .unwrap_or_else(|| panic!("stop for {id} {channel}: no such runner"));
                    assert_eq!(r.channel, channel);
                    assert_eq!(r.stop, None, "{channel} told to stop twice");
                    if reason == StopReason::Requested {
                        // Never a stop by someone other than the owner or
                        // an operator.
                        assert_eq!(self.may_stop.as_deref(), Some(channel.as_str()));
                    }
                    if reason == StopReason::Expired {
                        let idle = self.now - self.seen[&channel];
                        assert!(idle >= IDLE, "{channel} expired after {idle:?}");
                    }
                    r.stop = Some(reason);
                }
                Action::Announce(Announcement::Start(_)) => self.group_answers += 1,
                Action::Announce(Announcement::Error(e)) => {
                    // A refused stop is no answer to a start request.
                    let stop_refused = self.stop_op
                        && matches!(e.reason.as_deref(), Some("not_owner" | "not_operator"));
                    if !stop_refused {
                        self.group_answers += 1;
                    }
                    self.refusals_seen += 1;
                }
                Action::Announce(Announcement::Stop(_)) => {}
                Action::ReplyDirectory { entries, .. } => assert_eq!(entries, self.d.directory()),
                Action::ReplyPrivate { to, reply } => {
                    self.refusals_seen += u64::from(!reply.ok);
                    let n = self.private_answers.entry(to).or_default();
                    *n += 1;
                    assert_eq!(*n, 1, "a private request answered twice");
                }
                Action::Control { .. } | Action::Announce(Announcement::ControlResult(_)) => {
                    unreachable!("the simulation sends no controls")
                }
            }
        }
    }

    fn resolve(&mut self) {
        let Some(s) = self.pending.pop_front() else {
            return;
        };
        // The real driver refuses a rate it cannot pace.
        if s.spec.rate > 0.0 {
            self.alive.insert(
                s.id,
                Runner {
                    channel: s.channel.to_string(),
                    stop: None,
                },
            );
            self.order.push(s.id);
            self.seen.insert(s.channel.to_string(), self.now);
            self.d.replay_started(self.now, s.id, "from".into());
        } else {
            self.d.start_failed(s.id, "rate".into());
        }
    }

    fn step(&mut self, op: &Op) {
        let before = self.d.directory();
        let refused_before = self.d.counts().requests_refused;
        self.refusals_seen = 0;
        self.stop_op = matches!(
            op,
            Op::GroupStop { .. } | Op::ForeignStop { .. } | Op::GroupStopNoToken { .. }
        );
        self.may_stop = match *op {
            Op::GroupStop { name } => Some(format!("replay.{}", GROUPS[name])),
            Op::PrivateStop { who } => {
                Some(format!("client.{}.{}", CLIENTS[who].0, CLIENTS[who].1))
            }
            _ => None,
        };
        // Ops whose every refusal is answered (a private request without a
        // reply subject, or one refused later, may be counted unanswered).
        let mut answered = matches!(
            op,
            Op::Group { .. }
                | Op::GroupStop { .. }
                | Op::ForeignStop { .. }
                | Op::GroupStopNoToken { .. }
        );
        match *op {
            Op::Group { name, ok } => {
                self.group_requests += 1;
                let mut r = group(GROUPS[name]);
                if let Ctrl::Request(r) = &mut r {
                    r.spec.rate = if ok { 1.0 } else { 0.0 };
                }
                self.d.handle_ctrl(self.now, r);
            }
            Op::GroupStop { name } => self.d.handle_ctrl(self.now, group_stop(GROUPS[name])),
            Op::Private { who, ok, reply } => {
                let (c, s) = CLIENTS[who];
                answered = reply;
                let reply = reply.then(|| {
                    self.private_inboxes += 1;
                    format!("_INBOX.{}", self.private_inboxes)
                });
                let rate = if ok { 1.0 } else { 0.0 };
                self.d
                    .handle_private_request(self.now, &private(c, s, Some(spec(rate))), reply);
            }
            Op::PrivateStop { who } => {
                let (c, s) = CLIENTS[who];
                self.d
                    .handle_private_request(self.now, &private_stop(c, s), None);
                self.act();
                // Exactly that entry left the directory.
                let name = format!("client.{c}.{s}");
                let expect: Vec<_> = before
                    .iter()
                    .filter(|e| e.channel_id != name)
                    .cloned()
                    .collect();
                assert_eq!(self.d.directory(), expect);
            }
            Op::ForeignStop { who, token } => {
                let (c, s) = CLIENTS[who];
                let token = token.then_some(TOKEN);
                self.d
                    .handle_ctrl(self.now, stop_as(&format!("client.{c}.{s}"), token));
                self.act();
                assert_eq!(self.d.directory(), before);
            }
            Op::GroupStopNoToken { name } => {
                self.d
                    .handle_ctrl(self.now, stop_as(&format!("replay.{}", GROUPS[name]), None));
                self.act();
                assert_eq!(self.d.directory(), before);
            }
            Op::Heartbeat { who } => {
                let (c, s) = CLIENTS[who];
                let name = format!("client.{c}.{s}");
                self.d.handle_status(self.now, &heartbeat(&name));
                if self.d.replays.contains_key(&name) {
                    self.seen.insert(name, self.now);
                }
            }
            Op::Resolve => self.resolve(),
            Op::End { k } => {
                if let Some(&id) = self.alive.keys().nth(k % self.alive.len().max(1)) {
                    let r = self.alive.remove(&id).unwrap();
                    let was_listed = self.d.replays.get(&r.channel).is_some_and(|x| x.id == id);
                    self.d.replay_ended(id);
                    self.act();
                    // Exactly its entry left the directory, if it had one.
                    let expect: Vec<_> = before
                        .iter()
                        .filter(|e| !(was_listed && e.channel_id == r.channel))
                        .cloned()
                        .collect();
                    assert_eq!(self.d.directory(), expect);
                }
            }
            Op::Advance { ms } => {
                self.now += Duration::from_millis(ms);
                // As the driver does: wake at the directory's timeout.
                if self.d.poll_timeout().is_some_and(|t| t <= self.now) {
                    self.d.handle_timeout(self.now);
                }
            }
            Op::List => self.d.handle_list_request(Some("_INBOX.list".into())),
            Op::Shutdown => self.d.shutdown(),
        }
        self.act();
        // Every refusal is counted, by reason and in total; one without a
        // reply subject is counted unanswered.
        let c = self.d.counts();
        assert_eq!(c.refused.iter().sum::<u64>(), c.requests_refused);
        let counted = c.requests_refused - refused_before;
        assert!(
            counted >= self.refusals_seen && (!answered || counted == self.refusals_seen),
            "{op:?}: counted {counted}, answered {}",
            self.refusals_seen
        );
        self.check();
    }

    fn check(&self) {
        let d = &self.d;
        // Slots never exceed the limits.
        assert!(d.slots_taken(Kind::GroupReplay) <= d.config.group_max);
        assert!(d.slots_taken(Kind::PrivateReplay) <= d.config.private_max);
        // Livestream first, then group replays, then private ones, each in
        // order of start.
        let dir = d.directory();
        assert_eq!(dir[0], DirectoryEntry::livestream());
        let kinds: Vec<Kind> = dir.iter().map(|e| e.kind).collect();
        let mut sorted = kinds.clone();
        sorted.sort_by_key(|k| match k {
            Kind::Livestream => 0,
            Kind::GroupReplay => 1,
            Kind::PrivateReplay => 2,
        });
        assert_eq!(kinds, sorted);
        let pos = |name: &str| {
            let id = d.replays[name].id;
            self.order.iter().position(|&x| x == id).unwrap()
        };
        for w in dir[1..].windows(2) {
            if w[0].kind == w[1].kind {
                assert!(pos(&w[0].channel_id) < pos(&w[1].channel_id));
            }
        }
        // The directory is the set of running replays: every listed entry
        // has a live runner of its own, not told to go away; every runner
        // not told to stop is listed.
        let mut names = BTreeSet::new();
        for e in &dir[1..] {
            assert!(names.insert(e.channel_id.clone()), "listed twice");
            let id = d.replays[&e.channel_id].id;
            let r = self
                .alive
                .get(&id)
                .unwrap_or_else(|| panic!("{} listed without a runner", e.channel_id));
            assert_eq!(r.channel, e.channel_id);
            match r.stop {
                None | Some(StopReason::Shutdown) => {}
                Some(StopReason::Requested) => assert_eq!(e.kind, Kind::GroupReplay),
                Some(other) => panic!("{} listed after {other:?}", e.channel_id),
            }
        }
        for r in self.alive.values() {
            if r.stop.is_none() {
                assert!(names.contains(&r.channel), "{} runs unlisted", r.channel);
            }
        }
        // No private replay outlives its idle limit (the driver woke at the
        // directory's timeout).
        for e in dir.iter().filter(|e| e.kind == Kind::PrivateReplay) {
            assert!(
                self.now - self.seen[&e.channel_id] < IDLE,
                "{} kept",
                e.channel_id
            );
        }
    }

    /// Finish every start; then every request was answered exactly once.
    fn finish(&mut self) {
        while !self.pending.is_empty() {
            self.resolve();
            self.act();
            self.check();
        }
        assert_eq!(self.group_answers, self.group_requests);
        assert_eq!(self.private_answers.len() as u64, self.private_inboxes);
        assert!(self.d.abandoned.is_empty());
        // After a shutdown, once every runner ended, nothing is left.
        if self.d.closing {
            while let Some((&id, _)) = self.alive.iter().next() {
                self.alive.remove(&id);
                self.d.replay_ended(id);
                self.act();
            }
            assert!(self.d.is_empty());
        }
    }
}

proptest! {
    #[test]
    fn the_directory_keeps_its_invariants(ops in prop::collection::vec(op(), 1..120)) {
        let mut sim = Sim::new();
        for op in &ops {
            sim.step(op);
        }
        sim.finish();
    }
}

// --- hardening: identifiers, ownership, operators, rates ----------------------

fn answer(d: &mut Directory, now: Instant, payload: &[u8]) -> PrivateReplayReply {
    d.handle_private_request(now, payload, Some("_INBOX.h".into()));
    let mut actions = drain(d);
    if let [Action::Start(s)] = actions.as_slice() {
        d.replay_started(now, s.id, "from".into());
        actions = drain(d);
    }
    let replies: Vec<&PrivateReplayReply> = actions
        .iter()
        .filter_map(|a| match a {
            Action::ReplyPrivate { reply, .. } => Some(reply),
            _ => None,
        })
        .collect();
    match replies.as_slice() {
        [r] => (*r).clone(),
        _ => panic!("{actions:?}"),
    }
}

fn ctrl_error(d: &mut Directory, now: Instant, ctrl: Ctrl) -> GroupReplayError {
    d.handle_ctrl(now, ctrl);
    match drain(d).as_slice() {
        [Action::Announce(Announcement::Error(e))] => e.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_long_or_odd_client_id_is_refused_before_any_subject_is_built() {
    let t0 = Instant::now();
    let mut d = Directory::new(config(4, 32));
    let long = "x".repeat(10_000);
    let r = answer(&mut d, t0, &private(&long, "s1", Some(spec(1.0))));
    assert!(!r.ok);
    assert_eq!(r.reason.as_deref(), Some("identifier"));
    let e = r.error.unwrap();
    assert!(e.contains("10000 bytes") && e.len() < 200, "{e}");
    for bad in ["a b", "a*", "a>", "a\u{0}", "ü", "", "a.b"] {
        let r = answer(&mut d, t0, &private("alice", bad, Some(spec(1.0))));
        assert_eq!(r.reason.as_deref(), Some("identifier"), "{bad:?}");
    }
    assert!(
        answer(
            &mut d,
            t0,
            &private(&"a".repeat(64), "s_1-X", Some(spec(1.0)))
        )
        .ok
    );
    assert_eq!(d.counts().refused[Refusal::Identifier as usize], 8);
    assert_eq!(d.counts().requests_refused, 8);
    // A group id too.
    let e = ctrl_error(&mut d, t0, group(&long));
    assert_eq!(e.reason.as_deref(), Some("identifier"));
    assert!(e.channel_id.len() < 300);
}

#[test]
fn only_the_owner_stops_a_private_replay_and_operators_group_ones() {
    let t0 = Instant::now();
    let mut d = Directory::new(config(4, 32));
    assert!(answer(&mut d, t0, &private("alice", "s1", Some(spec(1.0)))).ok);
    // Another client, through the group stop, with or without a token.
    for token in [None, Some(TOKEN)] {
        let e = ctrl_error(&mut d, t0, stop_as("client.alice.s1", token));
        assert_eq!(e.reason.as_deref(), Some("not_owner"));
    }
    // Bob's own stop names his channel, not Alice's.
    assert!(answer(&mut d, t0, &private_stop("bob", "s1")).ok);
    assert_eq!(listed(&d), ["livestream", "client.alice.s1"]);
    // Group control needs the token.
    let e = ctrl_error(&mut d, t0, group_as("g", None));
    assert_eq!(e.reason.as_deref(), Some("not_operator"));
    assert!(e.error.contains("missing"));
    let e = ctrl_error(&mut d, t0, group_as("g", Some("operator-secret-0002")));
    assert!(e.error.contains("not valid") && !e.error.contains("0002"));
    d.handle_ctrl(t0, group("g"));
    started(&mut d, t0);
    drain(&mut d);
    let e = ctrl_error(&mut d, t0, stop_as("replay.g", None));
    assert_eq!(e.reason.as_deref(), Some("not_operator"));
    assert_eq!(d.counts().refused[Refusal::NotOwner as usize], 2);
    assert_eq!(d.counts().refused[Refusal::NotOperator as usize], 3);
    // The owner stops hers.
    assert!(answer(&mut d, t0, &private_stop("alice", "s1")).ok);
    assert_eq!(listed(&d), ["livestream", "replay.g"]);
    // Without configured tokens, group control is open.
    let mut open = config(4, 32);
    open.operator_tokens.clear();
    let mut d = Directory::new(open);
    d.handle_ctrl(t0, group_as("g", None));
    started(&mut d, t0);
}

#[test]
fn clients_are_limited_per_id_and_by_rate() {
    let t0 = Instant::now();
    let mut c = config(4, 32);
    c.private_per_client_max = 2;
    c.rate_client = RateLimit {
        burst: 3,
        per_min: 60,
    };
    c.rate_overall = RateLimit {
        burst: 5,
        per_min: 60,
    };
    let mut d = Directory::new(c);
    let ok = |d: &mut Directory, now, who: &str, s: &str| {
        answer(d, now, &private(who, s, Some(spec(1.0))))
            .reason
            .unwrap_or_else(|| "ok".into())
    };
    assert_eq!(ok(&mut d, t0, "al", "1"), "ok");
    assert_eq!(ok(&mut d, t0, "al", "2"), "ok");
    assert_eq!(ok(&mut d, t0, "al", "3"), "client_max");
    assert!(answer(&mut d, t0, &private_stop("al", "2")).ok);
    assert_eq!(ok(&mut d, t0, "al", "3"), "ok");
    assert!(answer(&mut d, t0, &private_stop("al", "3")).ok);
    // Al's burst of 3 is spent; the bucket refills one a second.
    assert_eq!(ok(&mut d, t0, "al", "4"), "rate_client");
    // A flood of invented ids takes what is left of the overall burst.
    let flood: Vec<String> = (0..100)
        .map(|i| ok(&mut d, t0, &format!("x{i}"), "1"))
        .collect();
    assert_eq!(flood.iter().filter(|r| *r == "ok").count(), 2);
    assert_eq!(flood.iter().filter(|r| *r == "rate_overall").count(), 98);
    // ...and leaves no bucket behind for the refused ones.
    assert_eq!(d.buckets.len(), 3);
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(ok(&mut d, t1, "bo", "1"), "ok");
    assert_eq!(d.counts().refused[Refusal::RateOverall as usize], 98);
    assert_eq!(d.counts().refused[Refusal::RateClient as usize], 1);
    assert_eq!(d.counts().refused[Refusal::ClientMax as usize], 1);
    assert_eq!(
        d.counts().refused.iter().sum::<u64>(),
        d.counts().requests_refused
    );
}

proptest! {
    /// Over any window between two requests, a bucket admits at most
    /// `burst + window / interval` of them.
    #[test]
    fn a_bucket_never_admits_more_than_its_budget(
        burst in 1u32..6,
        per_min in 1u32..600,
        gaps in prop::collection::vec(0u64..400, 1..200),
    ) {
        let limit = RateLimit { burst, per_min };
        let t0 = Instant::now();
        let mut b = Bucket::default();
        let mut now = t0;
        let mut admitted = Vec::new();
        for g in gaps {
            now += Duration::from_millis(g);
            if b.admit(limit, now) {
                admitted.push(now);
            }
        }
        let t = limit.interval();
        for i in 0..admitted.len() {
            for j in i..admitted.len() {
                let n = (j - i + 1) as u128;
                let w = (admitted[j] - admitted[i]).as_nanos();
                prop_assert!(n <= u128::from(burst) + w / t.as_nanos());
            }
        }
    }

    /// Whatever the ids, a request is refused for its identifier or starts
    /// a replay whose subjects are short and valid.
    #[test]
    fn no_id_makes_a_bad_subject(client in ".{0,80}", session in "\\PC{0,80}") {
        let t0 = Instant::now();
        let mut d = Directory::new(config(4, 32));
        d.handle_private_request(t0, &private(&client, &session, Some(spec(1.0))), Some("_I.1".into()));
        for a in drain(&mut d) {
            match a {
                Action::Start(s) => {
                    prop_assert!(crate::channels::message::publishable(&s.channel.subject()));
                    prop_assert!(crate::channels::message::publishable(&s.tag_subject));
                    prop_assert!(s.channel.subject().len() <= 20 + 2 * ID_LEN_MAX + 1);
                }
                Action::ReplyPrivate { reply, .. } => {
                    prop_assert_eq!(reply.reason.as_deref(), Some("identifier"));
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
