//! Pure: the hub's WebSocket protocol, version [`PROTOCOL_VERSION`]: what
//! clients send ([`ClientMsg`]) and the events the hub sends besides
//! snapshots and frames ([`Event`]), each a JSON text message with a `type`.
//! `docs/console.md` documents every message with examples.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// The protocol's version, in `hello` and in each snapshot.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest text message a client may send.
pub const CLIENT_MSG_LEN_MAX: usize = 16 * 1024;
/// Operations log lines kept for clients that connect later.
pub const OPS_LOG_KEEP: usize = 200;

/// A message from a client.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    /// Present an operator token: the connection may act from then on.
    Auth { token: String },
    /// Leave any replay for the livestream (`LIVE_OVERRIDE` while a group
    /// replay runs).
    BackToLive,
    /// Join the running group replay (offered while in a private replay,
    /// or after going back to live).
    JoinGroup,
    /// Follow this private replay (the client's own, started with
    /// `private_replay_start`).
    FollowPrivate { channel_id: String },
    /// Every field of track `id` of the client's channel (answered with a
    /// `track_detail`, or an `error` if the channel has no such track).
    TrackDetail { id: String },
    /// An operator action, carried out with the connection's credential
    /// (see [`Action`]).
    #[serde(untagged)]
    Action(Action),
}

/// What only an operator may do.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// A display command (CONTRACT §5): `name` is `units`, `marker_color`
    /// or `session_metadata`.
    Display {
        name: String,
        payload: serde_json::Value,
    },
    /// A tag at `ts` (RFC 3339; now when absent: the moment is frozen when
    /// the operator presses the button, not when the hub gets it).
    Tag {
        label: String,
        #[serde(default)]
        ts: Option<String>,
        #[serde(default)]
        notes: Option<String>,
    },
    /// Start a group replay for everyone.
    GroupReplayStart {
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        display_name: Option<String>,
        spec: crate::channels::message::ReplaySpec,
    },
    /// Stop a group replay.
    GroupReplayStop { channel_id: String },
    /// Start a replay of the connection's own (`client.<client_id>.<session>`)
    /// and follow it.
    PrivateReplayStart {
        #[serde(default)]
        session_id: Option<String>,
        spec: crate::channels::message::ReplaySpec,
    },
    /// Stop the connection's own replay (back to live, or to the override).
    PrivateReplayStop { session_id: String },
    /// Pause, resume, seek (`to`: an RFC 3339 time or a tag id) or change
    /// the rate of a running replay (a group replay, or the connection's
    /// own).
    ReplayControl {
        channel_id: String,
        action: crate::channels::message::ControlAction,
        #[serde(default)]
        to: Option<String>,
        #[serde(default)]
        rate: Option<f64>,
    },
}

impl ClientMsg {
    /// Parse one text message; the error is the reason sent back.
    pub fn parse(text: &str) -> Result<ClientMsg, String> {
        if text.len() > CLIENT_MSG_LEN_MAX {
            return Err(format!(
                "message of {} bytes is over the limit of {CLIENT_MSG_LEN_MAX}",
                text.len()
            ));
        }
        serde_json::from_str(text).map_err(|e| format!("not a message of this protocol: {e}"))
    }
}

/// An event for clients, serialized once and sent to each.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// First message on a connection, before the snapshot.
    Hello {
        protocol: u32,
        client_id: String,
        operator: bool,
    },
    /// The connection's client state changed (CONTRACT §4).
    State {
        state: String,
        channel_id: String,
        /// A group replay this client may join.
        offered: Option<String>,
        live_override: bool,
    },
    /// A display command seen on `tspi.cmd.display.*`.
    Display {
        cmd_id: String,
        name: String,
        ts_unix_us: i64,
        sender: Option<String>,
        payload: serde_json::Value,
    },
    /// A tag seen on `tags.broadcast` (shown at once).
    Tag {
        id: String,
        label: String,
        ts_unix_us: i64,
        notes: Option<String>,
        creator: Option<String>,
    },
    /// `GroupReplayStart` or `GroupReplayStop` on `tspi.ops.ctrl`.
    Control {
        action: String,
        channel_id: String,
        display_name: Option<String>,
        identifier: Option<String>,
    },
    /// The clients announced on `tspi.ops.status` (stale ones expired).
    Roster { clients: Vec<RosterEntry> },
    /// Operations log lines, oldest first.
    OpsLog { lines: Vec<OpsLine> },
    /// Latency percentiles (ms) from the ingest boxes' HdrHistogram
    /// snapshots: per box and merged across boxes.
    Latency {
        merged: BTreeMap<String, Percentiles>,
        per_box: BTreeMap<String, BTreeMap<String, Percentiles>>,
    },
    /// The data plane's health: each ingest box's last interval (rates,
    /// every counter, drops) and the merged receive-to-ack latency
    /// distribution, sent with each `latency`.
    Health {
        per_box: BTreeMap<String, BoxHealth>,
        /// `[percentile, ms]` of the merged receive-to-ack histogram, at
        /// [`DISTRIBUTION_PERCENTILES`].
        distribution: Vec<[f64; 2]>,
    },
    /// The channel directory (the channels service's answer to
    /// `tspi.channel.list.req`), livestream first; sent on connecting and
    /// when it changes.
    Directory { channels: Vec<DirectoryView> },
    /// What can be replayed: the telemetry stream's first and last
    /// message times (ms since the Unix epoch; null while it is empty or
    /// unknown), every 5 s.
    Timeline {
        first_unix_ms: Option<u64>,
        last_unix_ms: Option<u64>,
        messages: u64,
        /// The archive's extent and density, when the hub can read it.
        archive: Option<ArchiveTimeline>,
    },
    /// Tags seen before the client connected (from the operations stream,
    /// and since the hub started), oldest first; live ones come as `tag`.
    Tags { tags: Vec<TagView> },
    /// An action was refused or failed.
    Error { reason: String },
    /// An action was carried out.
    Done { what: String },
    /// The hub closes this connection, and why.
    Bye { reason: String },
}

impl Event {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("events serialize")
    }
}

/// Percentiles of the `distribution` in [`Event::Health`].
pub const DISTRIBUTION_PERCENTILES: [f64; 14] = [
    0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999, 100.0,
];

/// One ingest box's last interval, from its metrics snapshot.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BoxHealth {
    /// The interval's end (ms since the Unix epoch) and length (ms).
    pub end_unix_ms: u64,
    pub interval_ms: u64,
    /// Datagrams received and publishes acknowledged per second over it.
    pub received_per_s: f64,
    pub acked_per_s: f64,
    /// Every counter since the box started, and what each gained in the
    /// interval (the snapshot's `counters` and `delta`).
    pub counters: serde_json::Value,
    pub delta: serde_json::Value,
    /// The counters that lose data (`rejected.*`, `ring_dropped`,
    /// `failed`, `kernel_dropped`, and any counter named `*dropped*`),
    /// with what each gained in the interval: the page turns red when one
    /// moves. A box with a disk spool adds `spool.dropped` (frames its full
    /// spool dropped since the box's previous snapshot).
    pub drops: BTreeMap<String, u64>,
    /// The box's disk spool, if it has one.
    pub spool: Option<crate::metrics::SpoolSnapshot>,
}

/// Whether counter `name` (a snapshot's counter, or `rejected.<reason>`)
/// counts data lost.
pub fn is_drop_counter(name: &str) -> bool {
    name.starts_with("rejected") || name == "failed" || name.contains("dropped")
}

/// One channel of the directory, as the page shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DirectoryView {
    pub channel_id: String,
    pub display_name: String,
    /// `livestream`, `group_replay` or `private_replay`.
    pub kind: String,
    pub identifier: Option<String>,
}

/// What the archive holds, from its per-minute aggregate
/// (`tspi_track_minutes`): its first and last minute (ms since the Unix
/// epoch; the last minute's end), its rows, and rows per bucket of
/// `bucket_ms` (at most [`ARCHIVE_BUCKETS_MAX`] buckets, `[start_ms, rows]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ArchiveTimeline {
    pub first_unix_ms: u64,
    pub last_unix_ms: u64,
    pub rows: u64,
    pub bucket_ms: u64,
    pub density: Vec<[u64; 2]>,
}

/// Buckets of an [`ArchiveTimeline`]'s density at most.
pub const ARCHIVE_BUCKETS_MAX: u64 = 500;

/// The bucket (whole minutes) that spreads `first..last` over at most
/// [`ARCHIVE_BUCKETS_MAX`] buckets.
pub fn archive_bucket_minutes(first_ms: u64, last_ms: u64) -> u64 {
    let minutes = last_ms.saturating_sub(first_ms).div_ceil(60_000).max(1);
    minutes.div_ceil(ARCHIVE_BUCKETS_MAX).max(1)
}

/// A tag, as in [`Event::Tag`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TagView {
    pub id: String,
    pub label: String,
    pub ts_unix_us: i64,
    pub notes: Option<String>,
    pub creator: Option<String>,
}

/// One client of the roster.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RosterEntry {
    pub client_id: String,
    pub state: String,
    pub channel_id: String,
    pub live_override: bool,
    pub operator: Option<String>,
    pub ping_ms: Option<f64>,
    /// When its last heartbeat arrived (ms since the Unix epoch).
    pub seen_unix_ms: u64,
    /// When its first heartbeat in this roster arrived: connected since
    /// (ms since the Unix epoch).
    pub since_unix_ms: u64,
}

/// The roster: the latest heartbeat of each client, expired after
/// `stale_ms` without one.
#[derive(Debug, Default)]
pub struct Roster {
    entries: BTreeMap<String, RosterEntry>,
}

impl Roster {
    /// Note a heartbeat; true if the roster changed (other than its time).
    pub fn heartbeat(&mut self, mut e: RosterEntry) -> bool {
        if let Some(old) = self.entries.get(&e.client_id) {
            e.since_unix_ms = old.since_unix_ms;
        }
        let changed = match self.entries.get(&e.client_id) {
            Some(old) => {
                (
                    &old.state,
                    &old.channel_id,
                    old.live_override,
                    &old.operator,
                ) != (&e.state, &e.channel_id, e.live_override, &e.operator)
            }
            None => true,
        };
        self.entries.insert(e.client_id.clone(), e);
        changed
    }

    /// Drop entries not heard from since `now_ms - stale_ms`; true if any.
    pub fn expire(&mut self, now_ms: u64, stale_ms: u64) -> bool {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| now_ms.saturating_sub(e.seen_unix_ms) < stale_ms);
        self.entries.len() != before
    }

    pub fn event(&self) -> Event {
        Event::Roster {
            clients: self.entries.values().cloned().collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One line of the operations log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpsLine {
    pub unix_ms: u64,
    pub text: String,
}

/// The last [`OPS_LOG_KEEP`] lines.
#[derive(Debug, Default)]
pub struct OpsLog {
    lines: VecDeque<OpsLine>,
}

impl OpsLog {
    /// Add a line; returns the event that carries it.
    pub fn push(&mut self, unix_ms: u64, text: String) -> Event {
        let line = OpsLine { unix_ms, text };
        if self.lines.len() == OPS_LOG_KEEP {
            self.lines.pop_front();
        }
        self.lines.push_back(line.clone());
        Event::OpsLog { lines: vec![line] }
    }

    /// Every kept line, for a client that just connected.
    pub fn event(&self) -> Event {
        Event::OpsLog {
            lines: self.lines.iter().cloned().collect(),
        }
    }
}

/// Percentiles of one latency, milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// Of a histogram of nanoseconds.
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// Whether a WebSocket upgrade from `origin` may proceed: no `Origin`
/// header (a tool, not a browser), an origin in `allowed`, or the page's
/// own host (`Origin`'s host and port equal `Host`).
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    if allowed.iter().any(|a| a == origin) {
        return true;
    }
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Whether `token` is one of the operator tokens (compared in constant
/// time per candidate, so a guess learns nothing from timing).
pub fn token_ok(token: &str, tokens: &[String]) -> bool {
    tokens.iter().fold(false, |found, t| {
        let same = t.len() == token.len()
            && t.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        found | same
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse_and_junk_is_refused_with_a_reason() {
        assert_eq!(
            ClientMsg::parse(r#"{"type":"back_to_live"}"#),
            Ok(ClientMsg::BackToLive)
        );
        assert_eq!(
            ClientMsg::parse(r#"{"type":"auth","token":"t"}"#),
            Ok(ClientMsg::Auth { token: "t".into() })
        );
        assert_eq!(
            ClientMsg::parse(r#"{"type":"tag","label":"pass 1","ts":"2026-12-02T10:00:00Z"}"#),
            Ok(ClientMsg::Action(Action::Tag {
                label: "pass 1".into(),
                ts: Some("2026-12-02T10:00:00Z".into()),
                notes: None
            }))
        );
        assert!(matches!(
            ClientMsg::parse(
                r#"{"type":"group_replay_start","spec":{"rate":2.0,"start":"2026-12-02T10:00:00Z"}}"#
            ),
            Ok(ClientMsg::Action(Action::GroupReplayStart { .. }))
        ));
        for junk in ["", "{", "[]", r#"{"type":"nope"}"#, r#"{"type":"auth"}"#] {
            assert!(ClientMsg::parse(junk).is_err(), "{junk}");
        }
        let long = format!(
            r#"{{"type":"auth","token":"{}"}}"#,
            "a".repeat(CLIENT_MSG_LEN_MAX)
        );
        assert!(
            ClientMsg::parse(&long)
                .unwrap_err()
                .contains("over the limit")
        );
    }

    #[test]
    fn events_carry_their_type() {
        let e = Event::Bye {
            reason: "slow".into(),
        };
        assert_eq!(e.to_json(), r#"{"type":"bye","reason":"slow"}"#);
    }

    #[test]
    fn the_roster_notes_changes_and_expires() {
        let mut r = Roster::default();
        let e = |id: &str, state: &str, seen| RosterEntry {
            client_id: id.into(),
            state: state.into(),
            channel_id: "livestream".into(),
            live_override: false,
            operator: None,
            ping_ms: Some(1.0),
            seen_unix_ms: seen,
            since_unix_ms: seen,
        };
        assert!(r.heartbeat(e("a", "FOLLOWING_LIVESTREAM", 1_000)));
        assert!(
            !r.heartbeat(e("a", "FOLLOWING_LIVESTREAM", 6_000)),
            "only its time"
        );
        assert!(r.heartbeat(e("a", "LIVE_OVERRIDE", 7_000)));
        assert!(r.heartbeat(e("b", "FOLLOWING_LIVESTREAM", 2_000)));
        let Event::Roster { clients } = r.event() else {
            unreachable!()
        };
        assert_eq!(
            (clients[0].since_unix_ms, clients[0].seen_unix_ms),
            (1_000, 7_000),
            "connected since its first heartbeat"
        );
        assert!(r.expire(18_000, 15_000), "b is stale");
        assert_eq!(r.len(), 1);
        assert!(!r.expire(18_000, 15_000));
    }

    #[test]
    fn archive_buckets() {
        assert_eq!(archive_bucket_minutes(0, 60_000), 1);
        assert_eq!(archive_bucket_minutes(0, 500 * 60_000), 1);
        assert_eq!(archive_bucket_minutes(0, 501 * 60_000), 2);
        // A year: at most 500 buckets.
        let year = 365 * 86_400_000;
        let b = archive_bucket_minutes(0, year);
        assert!(year / (b * 60_000) <= ARCHIVE_BUCKETS_MAX, "{b}");
        assert_eq!(archive_bucket_minutes(5, 5), 1);
    }

    #[test]
    fn drop_counters() {
        for d in [
            "rejected",
            "rejected.malformed",
            "ring_dropped",
            "kernel_dropped",
            "failed",
        ] {
            assert!(is_drop_counter(d), "{d}");
        }
        for ok in [
            "received",
            "acked",
            "published",
            "duplicate",
            "retried",
            "filtered",
        ] {
            assert!(!is_drop_counter(ok), "{ok}");
        }
        assert_eq!(
            ClientMsg::parse(r#"{"type":"track_detail","id":"7:geocentric"}"#),
            Ok(ClientMsg::TrackDetail {
                id: "7:geocentric".into()
            })
        );
    }

    #[test]
    fn the_ops_log_keeps_the_last_lines() {
        let mut log = OpsLog::default();
        for i in 0..(OPS_LOG_KEEP as u64 + 5) {
            log.push(i, format!("line {i}"));
        }
        let Event::OpsLog { lines } = log.event() else {
            unreachable!()
        };
        assert_eq!(lines.len(), OPS_LOG_KEEP);
        assert_eq!(lines[0].text, "line 5");
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://ops.range.example".to_owned()];
        assert!(origin_allowed(None, Some("h:8080"), &allowed));
        assert!(origin_allowed(Some("http://h:8080"), Some("h:8080"), &[]));
        assert!(origin_allowed(
            Some("https://ops.range.example"),
            Some("h:8080"),
            &allowed
        ));
        assert!(!origin_allowed(
            Some("http://evil.example"),
            Some("h:8080"),
            &allowed
        ));
        assert!(!origin_allowed(Some("http://h:8081"), Some("h:8080"), &[]));
        assert!(!origin_allowed(Some("null"), Some("h:8080"), &[]));
    }

    #[test]
    fn tokens() {
        let tokens = vec!["s3cret".to_owned(), "other".to_owned()];
        assert!(token_ok("s3cret", &tokens));
        assert!(token_ok("other", &tokens));
        assert!(!token_ok("s3cre", &tokens));
        assert!(!token_ok("", &tokens));
        assert!(!token_ok("x", &[]));
    }
}
