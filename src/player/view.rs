//! Pure: what the player and the console commands keep and print. Counts and
//! the per-second summary line, the display settings operators command, the
//! rate limit of bad-body reports, control messages as client-state events,
//! the roster of clients from their heartbeats, and the operations log's
//! lines. Time (`now_ns`, wall-clock ns since the Unix epoch, or monotonic
//! where said) is an argument.

use crate::channels::client_state::{Event, State};
use crate::channels::message::{ChannelId, Ctrl, Heartbeat, Kind};
use crate::message::Record;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Messages of one kind of count, by type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub geocentric: u64,
    pub spherical: u64,
    pub bad_bodies: u64,
}

impl Counts {
    pub fn messages(&self) -> u64 {
        self.geocentric + self.spherical
    }
}

/// The player's counts: over the whole run and over the current summary
/// window (reset by [`Tally::take_window`]).
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub total: Counts,
    pub window: Counts,
    sensors_total: BTreeSet<u16>,
    sensors_window: BTreeSet<u16>,
    /// Channel changes followed (each one re-subscribed).
    pub channel_changes: u64,
    /// Heartbeats published.
    pub heartbeats: u64,
}

/// One summary window's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub counts: Counts,
    pub sensors: usize,
    pub seconds: f64,
}

impl Tally {
    /// A valid record arrived.
    pub fn record(&mut self, r: &Record) {
        for c in [&mut self.total, &mut self.window] {
            if r.frame_type == "spherical" {
                c.spherical += 1;
            } else {
                c.geocentric += 1;
            }
        }
        self.sensors_total.insert(r.sensor_id);
        self.sensors_window.insert(r.sensor_id);
    }

    /// A body failed the contract check.
    pub fn bad(&mut self) {
        self.total.bad_bodies += 1;
        self.window.bad_bodies += 1;
    }

    /// Distinct sensors seen over the run.
    pub fn sensors(&self) -> usize {
        self.sensors_total.len()
    }

    /// The window's figures (it lasted `seconds`), and a new window.
    pub fn take_window(&mut self, seconds: f64) -> Window {
        let w = Window {
            counts: std::mem::take(&mut self.window),
            sensors: self.sensors_window.len(),
            seconds,
        };
        self.sensors_window.clear();
        w
    }

    /// The final account.
    pub fn totals(&self, seconds: f64) -> Totals {
        Totals {
            messages: self.total.messages(),
            geocentric: self.total.geocentric,
            spherical: self.total.spherical,
            bad_bodies: self.total.bad_bodies,
            sensors: self.sensors(),
            channel_changes: self.channel_changes,
            heartbeats: self.heartbeats,
            seconds: (seconds * 1000.0).round() / 1000.0,
        }
    }
}

/// The player's final account (`{"summary": ...}` with `--json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Totals {
    pub messages: u64,
    pub geocentric: u64,
    pub spherical: u64,
    pub bad_bodies: u64,
    pub sensors: usize,
    pub channel_changes: u64,
    pub heartbeats: u64,
    pub seconds: f64,
}

impl Totals {
    /// One line of text.
    pub fn line(&self) -> String {
        format!(
            "total: {} messages (geocentric {}, spherical {}), {} sensors, {} bad bodies, \
             {} channel changes, {} heartbeats in {:.1} s",
            self.messages,
            self.geocentric,
            self.spherical,
            self.sensors,
            self.bad_bodies,
            self.channel_changes,
            self.heartbeats,
            self.seconds
        )
    }
}

/// The display settings operators command (`tspi.cmd.display.*`), as the
/// player last heard them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Display {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub units: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marker_color: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
}

/// `session_metadata`'s payload: `{name, id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Session {
    pub name: String,
    pub id: String,
}

/// A display command, read from its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisplayCmd {
    Units(String),
    MarkerColor(String),
    Session(Session),
}

/// Command names (the last token of `tspi.cmd.display.<name>`, and the
/// body's `name`).
pub const CMD_UNITS: &str = "units";
pub const CMD_MARKER_COLOR: &str = "marker_color";
pub const CMD_SESSION: &str = "session_metadata";

/// Whether `s` is a `#rrggbb` colour.
pub fn color_ok(s: &str) -> bool {
    s.len() == 7 && s.starts_with('#') && s[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Read a display command `name` from its payload (JSON form of the CBOR).
/// The payload is the value itself (`"metric"`, `"#ff8800"`, `{name, id}`,
/// as `tspi console display` sends it); a one-key map naming the value
/// (`{"units": "metric"}`, `{"color": ..}`/`{"marker_color": ..}`) is read
/// too, for senders that wrap it.
pub fn display_cmd(name: &str, payload: &serde_json::Value) -> Result<DisplayCmd, String> {
    use serde_json::Value as J;
    let inner = |keys: &[&str]| -> Option<String> {
        match payload {
            J::String(s) => Some(s.clone()),
            J::Object(m) => keys
                .iter()
                .find_map(|k| m.get(*k).and_then(|v| v.as_str()).map(str::to_owned)),
            _ => None,
        }
    };
    match name {
        CMD_UNITS => match inner(&["units", "value"]).as_deref() {
            Some(u @ ("metric" | "imperial")) => Ok(DisplayCmd::Units(u.to_owned())),
            other => Err(format!("units: {other:?} is neither metric nor imperial")),
        },
        CMD_MARKER_COLOR => match inner(&["marker_color", "color", "value"]) {
            Some(c) if color_ok(&c) => Ok(DisplayCmd::MarkerColor(c.to_ascii_lowercase())),
            other => Err(format!("marker_color: {other:?} is not #rrggbb")),
        },
        CMD_SESSION => serde_json::from_value::<Session>(payload.clone())
            .map(DisplayCmd::Session)
            .map_err(|e| format!("session_metadata: {e}")),
        other => Err(format!("unknown display command {other:?}")),
    }
}

impl Display {
    pub fn apply(&mut self, c: DisplayCmd) {
        match c {
            DisplayCmd::Units(u) => self.units = Some(u),
            DisplayCmd::MarkerColor(c) => self.marker_color = Some(c),
            DisplayCmd::Session(s) => self.session = Some(s),
        }
    }
}

fn rate(n: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

/// The per-second summary line: channel and state, messages/s by type,
/// sensors in the window (and over the run), bad bodies, display settings.
pub fn summary_line(w: &Window, t: &Tally, state: &State, d: &Display) -> String {
    let mut s = format!(
        "{} {} | geocentric {:.0}/s spherical {:.0}/s | sensors {} ({} seen) | bad {} ({} total)",
        state.channel(),
        state.name(),
        rate(w.counts.geocentric, w.seconds),
        rate(w.counts.spherical, w.seconds),
        w.sensors,
        t.sensors(),
        w.counts.bad_bodies,
        t.total.bad_bodies,
    );
    if let Some(u) = &d.units {
        let _ = write!(s, " | units {u}");
    }
    if let Some(c) = &d.marker_color {
        let _ = write!(s, " | marker {c}");
    }
    if let Some(sess) = &d.session {
        let _ = write!(s, " | session {:?} ({})", sess.name, sess.id);
    }
    s
}

/// At most one report per `period_ns`; what was held back is counted and
/// handed to the next report.
#[derive(Clone, Debug)]
pub struct Every {
    period_ns: u64,
    next_ns: Option<u64>,
    suppressed: u64,
}

impl Every {
    pub fn new(period_ns: u64) -> Self {
        Every {
            period_ns,
            next_ns: None,
            suppressed: 0,
        }
    }

    /// `Some(held back since the last report)` when a report may go out at
    /// `now_ns` (monotonic); `None` (counted) otherwise.
    pub fn allow(&mut self, now_ns: u64) -> Option<u64> {
        match self.next_ns {
            Some(next) if now_ns < next => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.next_ns = Some(now_ns.saturating_add(self.period_ns));
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// The client-state event a control message means (`GroupReplayStart`,
/// `GroupReplayStop` of a `replay.<id>` channel); `None` for every other
/// message on `tspi.ops.ctrl` and for a channel id that is not a group
/// replay's.
pub fn ctrl_event(c: &Ctrl) -> Option<Event> {
    let group = |id: &str| {
        ChannelId::parse(id)
            .ok()
            .filter(|c| c.kind() == Kind::GroupReplay)
    };
    match c {
        Ctrl::Start(s) => group(&s.channel_id).map(Event::GroupReplayStart),
        Ctrl::Stop(s) => group(&s.channel_id).map(Event::GroupReplayStop),
        _ => None,
    }
}

/// Most clients a roster or the operations log keeps; heartbeats of more
/// are counted and left out.
pub const CLIENTS_MAX: usize = 10_000;

/// One client in the roster.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RosterEntry {
    #[serde(flatten)]
    pub heartbeat: Heartbeat,
    /// Seconds since its last heartbeat was seen (stored, for history).
    pub age_s: f64,
}

/// Clients from their status heartbeats, each kept until no heartbeat came
/// for `stale_ns`.
#[derive(Clone, Debug)]
pub struct Roster {
    stale_ns: u64,
    clients: BTreeMap<String, (Heartbeat, u64)>,
    /// Heartbeats of clients beyond [`CLIENTS_MAX`].
    pub left_out: u64,
}

/// What a heartbeat changed in the roster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    New,
    /// State or channel changed.
    Changed,
    Same,
    LeftOut,
}

impl Roster {
    pub fn new(stale_ns: u64) -> Self {
        Roster {
            stale_ns,
            clients: BTreeMap::new(),
            left_out: 0,
        }
    }

    /// A heartbeat seen at `seen_ns` (wall clock).
    pub fn see(&mut self, seen_ns: u64, hb: Heartbeat) -> Seen {
        let full = self.clients.len() >= CLIENTS_MAX;
        match self.clients.get_mut(&hb.client_id) {
            Some((old, at)) => {
                let changed = old.state != hb.state
                    || old.channel_id != hb.channel_id
                    || old.live_override != hb.live_override;
                *at = (*at).max(seen_ns);
                *old = hb;
                if changed { Seen::Changed } else { Seen::Same }
            }
            None if full => {
                self.left_out += 1;
                Seen::LeftOut
            }
            None => {
                self.clients.insert(hb.client_id.clone(), (hb, seen_ns));
                Seen::New
            }
        }
    }

    /// Drop the clients silent for longer than the stale time at `now_ns`;
    /// their ids.
    pub fn expire(&mut self, now_ns: u64) -> Vec<String> {
        let stale: Vec<String> = self
            .clients
            .iter()
            .filter(|(_, (_, at))| now_ns.saturating_sub(*at) > self.stale_ns)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &stale {
            self.clients.remove(id);
        }
        stale
    }

    /// The live clients by id, with their age at `now_ns`.
    pub fn entries(&self, now_ns: u64) -> Vec<RosterEntry> {
        self.clients
            .values()
            .map(|(hb, at)| RosterEntry {
                heartbeat: hb.clone(),
                age_s: (now_ns.saturating_sub(*at) / 1_000_000) as f64 / 1000.0,
            })
            .collect()
    }
}

/// What an operations-log line is about, by subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpsKind {
    Ctrl,
    Status,
    Command,
    Tag,
    Other,
}

impl OpsKind {
    pub fn of(subject: &str) -> OpsKind {
        use crate::contract::names::{SUBJECT_CTRL, SUBJECT_STATUS};
        if subject == SUBJECT_CTRL {
            OpsKind::Ctrl
        } else if subject == SUBJECT_STATUS {
            OpsKind::Status
        } else if subject.starts_with("tspi.cmd.") {
            OpsKind::Command
        } else if subject.starts_with("tags.") {
            OpsKind::Tag
        } else {
            OpsKind::Other
        }
    }
}

/// One operations-log line (`--json`: this object).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpsLine {
    /// When the stream stored it (RFC 3339).
    pub ts: String,
    pub kind: OpsKind,
    pub subject: String,
    /// The body as JSON (`null` when it is not CBOR).
    pub body: serde_json::Value,
}

impl OpsLine {
    /// `<ts> <kind> <subject> <body JSON>`.
    pub fn text(&self) -> String {
        let kind = match self.kind {
            OpsKind::Ctrl => "ctrl",
            OpsKind::Status => "status",
            OpsKind::Command => "command",
            OpsKind::Tag => "tag",
            OpsKind::Other => "other",
        };
        format!("{} {kind:<7} {} {}", self.ts, self.subject, self.body)
    }
}

#[cfg(test)]
mod tests;
