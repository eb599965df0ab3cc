//! Channel names, control messages, directory entries and the status
//! heartbeat of CONTRACT §4, as plain data. Pure: encoding and decoding
//! only; the service that acts on them is [`super::service`], its
//! decisions in [`super::directory`].

use serde::{Deserialize, Serialize};

/// The contract's channel subjects (spelled in [`crate::contract::names`]):
/// the live stage; the prefix of every channel subject
/// (`tspi.channel.<channel_id>`); operator control (group replay
/// announcements and start/stop requests); directory and private replay
/// requests (request/reply, no stream captures them); client status
/// heartbeats; live tags.
pub use crate::contract::names::{
    SUBJECT_CHANNEL_PREFIX, SUBJECT_CTRL, SUBJECT_LIST_REQ, SUBJECT_LIVESTREAM,
    SUBJECT_PRIVATE_REQ, SUBJECT_STATUS, SUBJECT_TAGS,
};
/// Channel id of the live stage.
pub const LIVESTREAM: &str = "livestream";

/// What a channel is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Livestream,
    GroupReplay,
    PrivateReplay,
}

/// The longest identifier that becomes a subject token (a group replay's
/// id, a client id, a session id), in bytes. The longest channel subject is
/// then `tspi.channel.client.` + 64 + `.` + 64 = 149 bytes, and the longest
/// tag subject about as long: far below nats-server's control line (4 KiB
/// by default), which a 10,023-byte subject once exceeded, failing the
/// service's only connection in a loop.
pub const ID_LEN_MAX: usize = 64;

/// Whether `c` may appear in an identifier: `[A-Za-z0-9_-]`.
///
/// Why this set and not "anything NATS allows in a token": an identifier
/// becomes a subject token (`tspi.channel.client.<client>.<session>`,
/// `tags.client.<client>.<session>`), part of a JetStream consumer name
/// (`REPLAY_<channel>`, where `.`, `*`, `>`, `/`, `\` and whitespace are
/// refused too) and of every replayed `Nats-Msg-Id`. ASCII letters, digits,
/// `_` and `-` are safe in all three; keeping to ASCII also makes the byte
/// bound exact and rules out ids that look alike but differ in bytes
/// (Unicode normalisation, look-alike letters, invisible characters).
pub fn id_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Why an identifier cannot become a subject token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} bytes long: at most {ID_LEN_MAX}")]
    TooLong { what: &'static str, len: usize },
    #[error("{what} contains {bad:?}: use only A-Z, a-z, 0-9, `_` and `-`")]
    BadChar { what: &'static str, bad: char },
}

/// Check one identifier (`what` names it in the error); the length is
/// checked first, so a huge id costs one comparison.
pub fn check_id(what: &'static str, id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty { what });
    }
    if id.len() > ID_LEN_MAX {
        return Err(IdError::TooLong {
            what,
            len: id.len(),
        });
    }
    match id.chars().find(|&c| !id_char_ok(c)) {
        Some(bad) => Err(IdError::BadChar { what, bad }),
        None => Ok(()),
    }
}

/// The longest subject the service publishes to, in bytes: a reply inbox
/// (`_INBOX.` + 22 + `.` + 22 with async-nats) or a channel subject fits
/// many times over; nats-server's control line (4 KiB by default) holds
/// the whole `PUB` line.
pub const SUBJECT_LEN_MAX: usize = 512;

/// Whether the service may publish to `subject`: 1 to [`SUBJECT_LEN_MAX`]
/// bytes, tokens non-empty, no wildcard, whitespace or control character.
/// A last guard in the driver; every subject built from a request's ids is
/// valid by [`check_id`] already.
pub fn publishable(subject: &str) -> bool {
    !subject.is_empty()
        && subject.len() <= SUBJECT_LEN_MAX
        && subject.split('.').all(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| !c.is_whitespace() && !c.is_control() && c != '*' && c != '>')
        })
}

/// A channel id that cannot be used. Holds at most the first
/// [`ID_LEN_MAX`] * 3 bytes of what was given, so an error never carries
/// (or echoes into a reply) a huge input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "channel {0:?} is not valid: use `replay.<id>`, `client.<client>.<session>` or `livestream`; \
     each id 1 to 64 of A-Z, a-z, 0-9, `_`, `-`"
)]
pub struct ChannelIdError(pub String);

/// At most `max` bytes of `s`, cut at a character boundary, `…` marking a
/// cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A channel: `livestream`, `replay.<id>` or `client.<client>.<session>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChannelId {
    Livestream,
    Replay(String),
    Client { client: String, session: String },
}

fn token_ok(t: &str) -> bool {
    check_id("id", t).is_ok()
}

impl ChannelId {
    /// Parse a channel id; a single bare token `<id>` means `replay.<id>`.
    pub fn parse(s: &str) -> Result<ChannelId, ChannelIdError> {
        let bad = || ChannelIdError(clip(s, 3 * ID_LEN_MAX));
        // Longer than any valid id: refused before it is split.
        if s.len() > "client..".len() + 2 * ID_LEN_MAX {
            return Err(bad());
        }
        let parts: Vec<&str> = s.split('.').collect();
        let id = match parts.as_slice() {
            ["livestream"] => ChannelId::Livestream,
            ["replay", id] => ChannelId::Replay((*id).to_owned()),
            ["client", c, sess] => ChannelId::Client {
                client: (*c).to_owned(),
                session: (*sess).to_owned(),
            },
            [id] => ChannelId::Replay((*id).to_owned()),
            _ => return Err(bad()),
        };
        let ok = match &id {
            ChannelId::Livestream => true,
            ChannelId::Replay(i) => token_ok(i),
            ChannelId::Client { client, session } => token_ok(client) && token_ok(session),
        };
        if ok { Ok(id) } else { Err(bad()) }
    }

    /// The NATS subject the channel is delivered on.
    pub fn subject(&self) -> String {
        format!("{SUBJECT_CHANNEL_PREFIX}{self}")
    }

    pub fn kind(&self) -> Kind {
        match self {
            ChannelId::Livestream => Kind::Livestream,
            ChannelId::Replay(_) => Kind::GroupReplay,
            ChannelId::Client { .. } => Kind::PrivateReplay,
        }
    }

    /// The JetStream stream holding the channel's messages.
    pub fn stream(&self) -> &'static str {
        match self {
            ChannelId::Livestream => crate::contract::names::STREAM_TELEMETRY,
            _ => crate::contract::names::STREAM_REPLAY,
        }
    }

    /// The `Nats-Msg-Id` of a replayed message: the original id with
    /// `:replay:<channel>` (CONTRACT §6), and `:<epoch>` after a seek or a
    /// loop sent it again (so the replay stream stores the repeat too).
    pub fn replay_msg_id(&self, original: &str, epoch: u32, out: &mut String) {
        use std::fmt::Write as _;
        out.clear();
        out.push_str(original);
        out.push_str(":replay:");
        let _ = write!(out, "{self}");
        if epoch > 0 {
            let _ = write!(out, ":{epoch}");
        }
    }
}

impl std::fmt::Display for ChannelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChannelId::Livestream => f.write_str(LIVESTREAM),
            ChannelId::Replay(id) => write!(f, "replay.{id}"),
            ChannelId::Client { client, session } => write!(f, "client.{client}.{session}"),
        }
    }
}

impl std::str::FromStr for ChannelId {
    type Err = ChannelIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChannelId::parse(s)
    }
}

/// A group replay's id for a tag or label: ASCII lower case, every run of
/// other characters one `-`, none at the ends, at most [`ID_LEN_MAX`]
/// bytes. `None` when nothing is left. Always a valid id ([`check_id`]).
pub fn slug(label: &str) -> Option<String> {
    let mut out = String::with_capacity(label.len().min(ID_LEN_MAX));
    for c in label.chars() {
        if out.len() >= ID_LEN_MAX {
            break;
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    (!out.is_empty()).then_some(out)
}

/// `{type: "GroupReplayStart", channel_id, display_name, identifier, stream}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupReplayStart {
    #[serde(rename = "type")]
    pub kind: String,
    pub channel_id: String,
    pub display_name: String,
    /// What the replay starts from: the RFC 3339 start time, the start
    /// sequence, or the tag id.
    pub identifier: String,
    /// Where late joiners find the channel's history: `TSPI_REPLAY`.
    pub stream: String,
}

/// `{type: "GroupReplayStop", channel_id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupReplayStop {
    #[serde(rename = "type")]
    pub kind: String,
    pub channel_id: String,
}

/// Which recording a replay reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplaySource {
    /// The `TSPI` stream's history.
    #[default]
    Stream,
    /// The PostgreSQL archive (`tspi_telemetry`, `tspi_tags`).
    Archive,
}

impl ReplaySource {
    pub fn is_stream(&self) -> bool {
        *self == ReplaySource::Stream
    }

    pub fn label(self) -> &'static str {
        match self {
            ReplaySource::Stream => "stream",
            ReplaySource::Archive => "archive",
        }
    }
}

/// Where a requested replay takes its data from (our request messages, not
/// in the contract; on `tspi.ops.ctrl` and [`SUBJECT_PRIVATE_REQ`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySpec {
    /// RFC 3339 start time, or a `TSPI` stream sequence (the stream only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// RFC 3339 end time (none: up to what the stream held at the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// A tag id: replay a window around its moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Speed, 1.0 the original pace.
    pub rate: f64,
    /// Use the server's `ReplayPolicy::Original` push consumer instead of
    /// our pacer.
    #[serde(default)]
    pub jetstream_native: bool,
    /// The recording: the `TSPI` stream (the default, and what a message
    /// without the key means: it was added after the first release, and is
    /// left out when it is the default so older services still read the
    /// map) or the archive.
    #[serde(default, skip_serializing_if = "ReplaySource::is_stream")]
    pub source: ReplaySource,
}

/// An operator's request to start a group replay (`tspi channels
/// start-replay` publishes it on `tspi.ops.ctrl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupReplayRequest {
    #[serde(rename = "type")]
    pub kind: String,
    /// `replay.<id>`; the requester computes it so it can wait for the
    /// matching `GroupReplayStart`.
    pub channel_id: String,
    pub display_name: String,
    pub spec: ReplaySpec,
    /// The operator's credential, checked against `[channels]
    /// operator_tokens` (added after the first release: absent when none is
    /// given, so the map is the old one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_token: Option<String>,
}

impl GroupReplayRequest {
    /// A request to replay `spec` into `channel`, shown as `display_name`.
    pub fn new(channel: &ChannelId, display_name: String, spec: ReplaySpec) -> Self {
        GroupReplayRequest {
            kind: "GroupReplayRequest".into(),
            channel_id: channel.to_string(),
            display_name,
            spec,
            operator_token: None,
        }
    }
}

/// An operator's request to stop a group replay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupReplayStopRequest {
    #[serde(rename = "type")]
    pub kind: String,
    pub channel_id: String,
    /// As in [`GroupReplayRequest::operator_token`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_token: Option<String>,
}

/// What a [`ReplayControl`] asks of a running replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlAction {
    Pause,
    Resume,
    /// Jump to `to`: an RFC 3339 time or a tag id (the tag's moment).
    Seek,
    /// Play on at `rate` (1 = the original pace).
    Rate,
}

impl ControlAction {
    pub fn label(self) -> &'static str {
        match self {
            ControlAction::Pause => "pause",
            ControlAction::Resume => "resume",
            ControlAction::Seek => "seek",
            ControlAction::Rate => "rate",
        }
    }
}

/// An operator's (or a private replay's owner's) control of a running
/// replay, on `tspi.ops.ctrl` (ours, not the contract's): `{type:
/// "ReplayControl", channel_id, action, to?, rate?, operator_token?,
/// client_id?}`. A group replay needs an operator token (as its start and
/// stop); a private one its owner's `client_id`. Answered on
/// `tspi.ops.ctrl` by a [`ReplayControlResult`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayControl {
    #[serde(rename = "type")]
    pub kind: String,
    pub channel_id: String,
    pub action: ControlAction,
    /// `seek`: an RFC 3339 time, or a tag id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// `rate`: the new speed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_token: Option<String>,
    /// A private replay's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl ReplayControl {
    pub fn new(channel: &ChannelId, action: ControlAction) -> ReplayControl {
        ReplayControl {
            kind: "ReplayControl".into(),
            channel_id: channel.to_string(),
            action,
            to: None,
            rate: None,
            operator_token: None,
            client_id: None,
        }
    }
}

/// The outcome of a [`ReplayControl`], announced on `tspi.ops.ctrl`:
/// `{type: "ReplayControlResult", channel_id, action, ok, error?, reason?}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplayControlResult {
    #[serde(rename = "type")]
    pub kind: String,
    pub channel_id: String,
    pub action: ControlAction,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With a refusal: its reason as counted (`directory::Refusal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A request the service could not carry out, announced on `tspi.ops.ctrl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupReplayError {
    #[serde(rename = "type")]
    pub kind: String,
    pub channel_id: String,
    pub error: String,
    /// The refusal's reason as counted (added after the first release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A client's private replay request on [`SUBJECT_PRIVATE_REQ`]:
/// `type` `PrivateReplayRequest` (with `spec`) or `PrivateReplayStop`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateReplayRequest {
    #[serde(rename = "type")]
    pub kind: String,
    pub client_id: String,
    pub session_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ReplaySpec>,
}

/// The answer to a private replay request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrivateReplayReply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With a refusal: its reason as counted (`identifier`, `rate_client`,
    /// `not_owner`, ...; see `directory::Refusal`), for programs to act on.
    /// Added after the first release, absent on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One directory entry: `{channel_id, subject, display_name, kind, stream,
/// identifier?}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    pub channel_id: String,
    pub subject: String,
    pub display_name: String,
    pub kind: Kind,
    pub stream: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
}

impl DirectoryEntry {
    pub fn livestream() -> DirectoryEntry {
        DirectoryEntry {
            channel_id: LIVESTREAM.into(),
            subject: SUBJECT_LIVESTREAM.into(),
            display_name: "Live".into(),
            kind: Kind::Livestream,
            stream: crate::contract::names::STREAM_TELEMETRY.into(),
            identifier: None,
        }
    }
}

/// The directory answer: livestream first, then the other entries in the
/// order given (the service passes group replays by start, then private
/// ones).
pub fn directory(others: impl IntoIterator<Item = DirectoryEntry>) -> Vec<DirectoryEntry> {
    let mut v = vec![DirectoryEntry::livestream()];
    v.extend(others.into_iter().filter(|e| e.kind != Kind::Livestream));
    v
}

/// Any message on `tspi.ops.ctrl`, by its `type`.
#[derive(Clone, Debug, PartialEq)]
pub enum Ctrl {
    Start(GroupReplayStart),
    Stop(GroupReplayStop),
    Request(GroupReplayRequest),
    StopRequest(GroupReplayStopRequest),
    Error(GroupReplayError),
    Control(ReplayControl),
    ControlResult(ReplayControlResult),
    /// A type this appliance does not handle (other tools share the subject).
    Other(String),
}

/// A control message that cannot be read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("control message is not usable: {0}")]
pub struct CtrlError(pub String);

/// CBOR bytes of any serialisable message.
pub fn to_cbor<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    // Writing plain structs of strings and numbers into a Vec cannot fail.
    ciborium::into_writer(v, &mut out).expect("CBOR into a Vec");
    out
}

/// Decode a CBOR message into `T`, with a readable error.
pub fn from_cbor<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, CtrlError> {
    ciborium::from_reader(b).map_err(|e| CtrlError(e.to_string()))
}

impl Ctrl {
    pub fn decode(b: &[u8]) -> Result<Ctrl, CtrlError> {
        let v: ciborium::Value = from_cbor(b)?;
        let kind = v
            .as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some("type")))
            .and_then(|(_, v)| v.as_text())
            .ok_or_else(|| CtrlError("no text `type`".into()))?
            .to_owned();
        Ok(match kind.as_str() {
            "GroupReplayStart" => Ctrl::Start(from_cbor(b)?),
            "GroupReplayStop" => Ctrl::Stop(from_cbor(b)?),
            "GroupReplayRequest" => Ctrl::Request(from_cbor(b)?),
            "GroupReplayStopRequest" => Ctrl::StopRequest(from_cbor(b)?),
            "GroupReplayError" => Ctrl::Error(from_cbor(b)?),
            "ReplayControl" => Ctrl::Control(from_cbor(b)?),
            "ReplayControlResult" => Ctrl::ControlResult(from_cbor(b)?),
            _ => Ctrl::Other(kind),
        })
    }
}

/// The status heartbeat: `{client_id, state, channel_id, subject, override,
/// ts, operator?, source_ip?, ping_ms?}` (`ts` RFC 3339 UTC, microseconds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub client_id: String,
    pub state: String,
    pub channel_id: String,
    pub subject: String,
    #[serde(rename = "override")]
    pub live_override: bool,
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_ids() {
        assert_eq!(
            ChannelId::parse("replay.20260430T140500Z")
                .unwrap()
                .subject(),
            "tspi.channel.replay.20260430T140500Z"
        );
        assert_eq!(
            ChannelId::parse("sortie-12").unwrap().to_string(),
            "replay.sortie-12"
        );
        let c = ChannelId::parse("client.alice.s1").unwrap();
        assert_eq!(c.subject(), "tspi.channel.client.alice.s1");
        assert_eq!(c.kind(), Kind::PrivateReplay);
        assert_eq!(c.stream(), "TSPI_REPLAY");
        assert_eq!(
            ChannelId::parse("livestream").unwrap().subject(),
            SUBJECT_LIVESTREAM
        );
        for bad in [
            "",
            "replay.",
            "replay.a.b",
            "client.a",
            "x.y",
            "replay.a*",
            "replay.a b",
            "client..s",
            "replay.über",
            "client.a\u{0}.s",
            "client.a\t.s",
        ] {
            assert!(ChannelId::parse(bad).is_err(), "{bad:?} accepted");
        }
        let mut id = String::new();
        c.replay_msg_id("10042:120:3600.0000", 0, &mut id);
        assert_eq!(id, "10042:120:3600.0000:replay:client.alice.s1");
        c.replay_msg_id("10042:120:3600.0000", 2, &mut id);
        assert_eq!(id, "10042:120:3600.0000:replay:client.alice.s1:2");
    }

    #[test]
    fn ids_and_subjects_are_bounded() {
        assert_eq!(check_id("client_id", &"a".repeat(ID_LEN_MAX)), Ok(()));
        assert_eq!(
            check_id("client_id", &"a".repeat(10_000)),
            Err(IdError::TooLong {
                what: "client_id",
                len: 10_000
            })
        );
        assert!(matches!(
            check_id("session_id", "a.b"),
            Err(IdError::BadChar { bad: '.', .. })
        ));
        assert!(matches!(check_id("x", ""), Err(IdError::Empty { .. })));
        let huge = format!("client.{}.s", "a".repeat(10_000));
        let e = ChannelId::parse(&huge).unwrap_err();
        assert!(e.to_string().len() < 400, "{e}");
        assert!(publishable("tspi.channel.client.a.b"));
        assert!(publishable("_INBOX.abc.def"));
        for bad in ["", "a..b", "a.*", "a.>", "a b", "a.\u{0}", ".a", "a."] {
            assert!(!publishable(bad), "{bad:?}");
        }
        assert!(!publishable(&"a".repeat(SUBJECT_LEN_MAX + 1)));
        assert_eq!(clip("abcé", 4), "abc…");
    }

    #[test]
    fn slugs() {
        assert_eq!(
            slug("Sortie 12: Merge!").as_deref(),
            Some("sortie-12-merge")
        );
        assert_eq!(slug("  --A__b--  ").as_deref(), Some("a-b"));
        // ASCII only (see `id_char_ok`).
        assert_eq!(slug("Überflug #3").as_deref(), Some("berflug-3"));
        assert_eq!(slug(&"x".repeat(10_000)).unwrap().len(), ID_LEN_MAX);
        assert_eq!(slug("***"), None);
        let s = slug("a.b*c>d e").unwrap();
        assert!(ChannelId::parse(&format!("replay.{s}")).is_ok());
    }

    /// The keys of a CBOR map, in wire order.
    fn keys_of(cbor: &[u8]) -> Vec<String> {
        let v: ciborium::Value = from_cbor(cbor).unwrap();
        v.as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_text().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn start_and_stop_are_the_contract_maps() {
        let start = GroupReplayStart {
            kind: "GroupReplayStart".into(),
            channel_id: "replay.x".into(),
            display_name: "X".into(),
            identifier: "2026-04-30T14:05:00Z".into(),
            stream: "TSPI_REPLAY".into(),
        };
        assert_eq!(
            keys_of(&to_cbor(&start)),
            ["type", "channel_id", "display_name", "identifier", "stream"]
        );
        assert_eq!(Ctrl::decode(&to_cbor(&start)).unwrap(), Ctrl::Start(start));
        let stop = GroupReplayStop {
            kind: "GroupReplayStop".into(),
            channel_id: "replay.x".into(),
        };
        assert_eq!(Ctrl::decode(&to_cbor(&stop)).unwrap(), Ctrl::Stop(stop));
        let other = to_cbor(&std::collections::BTreeMap::from([("type", "Something")]));
        assert_eq!(
            Ctrl::decode(&other).unwrap(),
            Ctrl::Other("Something".into())
        );
        assert!(Ctrl::decode(b"\xff").is_err());
        assert!(Ctrl::decode(&to_cbor(&1u8)).is_err());
    }

    #[test]
    fn directory_puts_livestream_first() {
        let e = DirectoryEntry {
            channel_id: "replay.a".into(),
            subject: "tspi.channel.replay.a".into(),
            display_name: "A".into(),
            kind: Kind::GroupReplay,
            stream: "TSPI_REPLAY".into(),
            identifier: Some("t".into()),
        };
        let d = directory([e.clone(), DirectoryEntry::livestream()]);
        assert_eq!(d, [DirectoryEntry::livestream(), e]);
        assert_eq!(
            keys_of(&to_cbor(&d[0])),
            ["channel_id", "subject", "display_name", "kind", "stream"]
        );
    }
}
