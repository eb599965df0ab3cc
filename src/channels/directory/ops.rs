//! The directory's operator side beyond start and stop: controls of a
//! running replay (pause, resume, seek, rate) and foreign
//! `GroupReplayStart`s (published by another tool without a request).
//! Pure, like the rest of the directory: time is an argument.
//!
//! **Controls** (`ReplayControl` on `tspi.ops.ctrl`): a group replay's need
//! an operator token (the rule of its start and stop), a private replay's
//! its owner's `client_id`; the replay must be running (not starting or
//! stopping); the arguments are checked here (a rate in 0.01..=1000, a seek
//! target that is an RFC 3339 time or else a tag id); each replay's
//! controls pass a token bucket of their own (`controls_burst`,
//! `controls_per_min`). An admitted control becomes [`Action::Control`]; the
//! driver carries it out (a tag is looked up there) and reports
//! [`Directory::control_done`]; every outcome is announced as a
//! `ReplayControlResult`, every refusal counted by its reason.
//!
//! **Foreign starts**: the range toolkit's console publishes
//! `GroupReplayStart` itself (the contract's map: no token, no spec). With
//! `honour_foreign_starts` the directory starts that replay: `identifier`
//! an RFC 3339 time (to the end of the recording) or else a tag id (the
//! tag's window), at 1x, from `foreign_start_source`, within `group_max`.
//! Exactly once: a start for a channel that is starting, running or
//! stopping is ignored (our own announcement, or a duplicate), and so is
//! one repeating the channel and identifier of a start queued or announced
//! within [`FOREIGN_DUPLICATE_WINDOW`] (a duplicate, or the echo of our own
//! announcement of a replay that already ended). The driver also leaves out
//! every announcement carrying its header, so only foreign ones come here.

use super::{Action, Announcement, Directory, Phase, Refusal, STOPPING, StartReplay};
use crate::channels::message::{
    ChannelId, ControlAction, GroupReplayStart, ID_LEN_MAX, Kind, ReplayControl,
    ReplayControlResult, ReplaySpec, clip,
};
use crate::replay::pacer::{Control, Rate};
use std::time::{Duration, Instant};

/// A foreign `GroupReplayStart` repeating a start of the same channel and
/// identifier within this long is taken for a duplicate.
pub const FOREIGN_DUPLICATE_WINDOW: Duration = Duration::from_secs(10);

/// Recent starts remembered at most (the window bounds them too).
const RECENT_STARTS_MAX: usize = 256;

/// The longest seek target or foreign identifier taken (a tag id is not a
/// subject token, but is bounded all the same).
const TARGET_LEN_MAX: usize = 4 * ID_LEN_MAX;

/// What the driver does for an admitted control.
#[derive(Clone, Debug, PartialEq)]
pub enum ControlOp {
    /// Hand this to the replay's pacer.
    Apply(Control),
    /// Look up this tag's moment (where the replay reads its tags), then
    /// seek there.
    SeekTag(String),
}

impl Directory {
    /// A `ReplayControl`: admitted (queued as [`Action::Control`]) or
    /// refused (announced).
    pub(super) fn control(&mut self, now: Instant, c: ReplayControl) {
        match self.admit_control(now, &c) {
            Ok((id, op)) => self
                .actions
                .push_back(Action::Control { id, op, request: c }),
            Err(e) => self.control_done(c, Err(e)),
        }
    }

    fn admit_control(
        &mut self,
        now: Instant,
        c: &ReplayControl,
    ) -> Result<(super::ReplayId, ControlOp), (Refusal, String)> {
        let channel =
            ChannelId::parse(&c.channel_id).map_err(|e| (Refusal::Identifier, e.to_string()))?;
        match channel.kind() {
            Kind::Livestream => {
                return Err((Refusal::NotGroup, "the livestream takes no controls".into()));
            }
            Kind::GroupReplay if !self.config.is_operator(c.operator_token.as_deref()) => {
                let why = if c.operator_token.is_some() {
                    "is not valid"
                } else {
                    "is missing"
                };
                return Err((
                    Refusal::NotOperator,
                    format!("group replays are controlled by operators: the operator token {why}"),
                ));
            }
            _ => {}
        }
        let name = channel.to_string();
        let not_running = || (Refusal::NotRunning, format!("{name} is not running"));
        let Some(r) = self.replays.get_mut(&name) else {
            return Err(not_running());
        };
        if channel.kind() == Kind::PrivateReplay && r.owner.as_deref() != c.client_id.as_deref() {
            return Err((
                Refusal::NotOwner,
                format!("{name} is controlled only by its owner (client_id)"),
            ));
        }
        match r.phase {
            Phase::Running => {}
            Phase::Starting { .. } => {
                return Err((
                    Refusal::NotRunning,
                    format!("{name} is still starting; retry"),
                ));
            }
            Phase::Stopping => return Err(not_running()),
        }
        let op = control_op(c)?;
        if !r.controls.admit(self.config.rate_control, now) {
            let l = self.config.rate_control;
            return Err((
                Refusal::RateControl,
                format!(
                    "too many controls of {name}: {} at once, then {} a minute; retry later",
                    l.burst, l.per_min
                ),
            ));
        }
        Ok((r.id, op))
    }

    /// The driver carried out control `request` (or could not: the reason
    /// and the error); announced as a `ReplayControlResult`.
    pub fn control_done(&mut self, request: ReplayControl, result: Result<(), (Refusal, String)>) {
        let (ok, error, reason) = match result {
            Ok(()) => {
                self.counts.controls_applied += 1;
                (true, None, None)
            }
            Err((why, error)) => {
                self.count_refusal(why);
                (false, Some(error), Some(why.label().to_owned()))
            }
        };
        self.actions
            .push_back(Action::Announce(Announcement::ControlResult(
                ReplayControlResult {
                    kind: "ReplayControlResult".into(),
                    channel_id: clip(&request.channel_id, 3 * ID_LEN_MAX),
                    action: request.action,
                    ok,
                    error,
                    reason,
                },
            )));
    }

    /// A `GroupReplayStart` that is not our own (see the module docs).
    pub(super) fn foreign_start(&mut self, now: Instant, s: GroupReplayStart) {
        // Running, starting or stopping: our own announcement or a
        // duplicate (checked first: our echo is never counted).
        if self.replays.contains_key(&s.channel_id) || self.recently_started(now, &s) {
            return;
        }
        if !self.config.honour_foreign_starts {
            tracing::debug!(channel = %clip(&s.channel_id, 3 * ID_LEN_MAX),
                "foreign GroupReplayStart ignored (honour_foreign_starts = false)");
            self.count_refusal(Refusal::ForeignOff);
            return;
        }
        let admitted = self.admit_foreign(&s);
        let (channel, spec) = match admitted {
            Ok(x) => x,
            Err((why, error)) => {
                self.count_refusal(why);
                return self.announce_error(s.channel_id, why, error);
            }
        };
        self.remember_start(now, &s.channel_id, &s.identifier);
        self.counts.foreign_starts += 1;
        let display_name = if s.display_name.is_empty() {
            s.channel_id.clone()
        } else {
            clip(&s.display_name, TARGET_LEN_MAX)
        };
        let id = self.reserve(now, &channel, display_name, None);
        self.actions.push_back(Action::Start(StartReplay {
            id,
            channel,
            spec,
            tag_subject: self.config.group_tag_subject.clone(),
        }));
    }

    fn admit_foreign(
        &self,
        s: &GroupReplayStart,
    ) -> Result<(ChannelId, ReplaySpec), (Refusal, String)> {
        let channel =
            ChannelId::parse(&s.channel_id).map_err(|e| (Refusal::Identifier, e.to_string()))?;
        if channel.kind() != Kind::GroupReplay {
            return Err((
                Refusal::NotGroup,
                format!("{channel} is not a group replay channel (replay.<id>)"),
            ));
        }
        if self.closing {
            return Err((Refusal::Stopping, STOPPING.into()));
        }
        let groups = self.slots_taken(Kind::GroupReplay);
        if groups >= self.config.group_max {
            return Err((
                Refusal::GroupMax,
                format!("{groups} group replays are running (channels.group_max)"),
            ));
        }
        let ident = s.identifier.trim();
        if ident.is_empty() || ident.len() > TARGET_LEN_MAX {
            return Err((
                Refusal::Malformed,
                format!(
                    "identifier must be an RFC 3339 time or a tag id of 1 to {TARGET_LEN_MAX} bytes"
                ),
            ));
        }
        let mut spec = ReplaySpec {
            rate: 1.0,
            source: self.config.foreign_start_source,
            ..ReplaySpec::default()
        };
        if crate::message::rfc3339::parse_rfc3339_ns(ident).is_ok() {
            spec.start = Some(ident.to_owned());
        } else {
            spec.tag = Some(ident.to_owned());
        }
        self.check_source(&spec)?;
        Ok((channel, spec))
    }

    /// Note a group start (queued or announced) for duplicate detection.
    pub(super) fn remember_start(&mut self, now: Instant, channel: &str, identifier: &str) {
        self.prune_recent(now);
        if self.recent_starts.len() >= RECENT_STARTS_MAX {
            self.recent_starts.pop_front();
        }
        self.recent_starts
            .push_back((channel.to_owned(), identifier.to_owned(), now));
    }

    fn recently_started(&mut self, now: Instant, s: &GroupReplayStart) -> bool {
        self.prune_recent(now);
        self.recent_starts
            .iter()
            .any(|(c, i, _)| *c == s.channel_id && *i == s.identifier)
    }

    fn prune_recent(&mut self, now: Instant) {
        while let Some((_, _, t)) = self.recent_starts.front() {
            if now.saturating_duration_since(*t) < FOREIGN_DUPLICATE_WINDOW {
                break;
            }
            self.recent_starts.pop_front();
        }
    }
}

/// The pacer's control a request asks for, its arguments checked.
fn control_op(c: &ReplayControl) -> Result<ControlOp, (Refusal, String)> {
    let bad = |e: String| (Refusal::BadControl, e);
    Ok(match c.action {
        ControlAction::Pause => ControlOp::Apply(Control::Pause),
        ControlAction::Resume => ControlOp::Apply(Control::Resume),
        ControlAction::Rate => {
            let v = c.rate.ok_or_else(|| bad("rate: give `rate`".into()))?;
            ControlOp::Apply(Control::Rate(Rate::new(v).map_err(|e| bad(e.to_string()))?))
        }
        ControlAction::Seek => {
            let to = c.to.as_deref().map(str::trim).unwrap_or_default();
            if to.is_empty() || to.len() > TARGET_LEN_MAX {
                return Err(bad(format!(
                    "seek: give `to`, an RFC 3339 time or a tag id of 1 to {TARGET_LEN_MAX} bytes"
                )));
            }
            match crate::message::rfc3339::parse_rfc3339_ns(to) {
                Ok(ns) => ControlOp::Apply(Control::Seek(
                    u64::try_from(ns).map_err(|_| bad(format!("seek: {to} is before 1970")))?,
                )),
                Err(_) => ControlOp::SeekTag(to.to_owned()),
            }
        }
    })
}

#[cfg(test)]
mod tests;
