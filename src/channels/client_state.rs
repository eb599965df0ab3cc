//! The client state machine of CONTRACT §4, for operator tools that follow
//! channels. Pure: events in, state out; the caller publishes the heartbeat
//! ([`ClientMachine::heartbeat`]) at every change and every 5 s.
//!
//! | state | on GroupReplayStart(g) | on GroupReplayStop(g) | BackToLive | JoinGroup | StartPrivate(p) | PrivateEnded |
//! |---|---|---|---|---|---|---|
//! | FOLLOWING_LIVESTREAM | group g | - | - | - | private p | - |
//! | FOLLOWING_GROUP_REPLAY g | group g' (newer) | live | LIVE_OVERRIDE g | - | private p | - |
//! | FOLLOWING_PRIVATE_REPLAY p | stays, offered g | offer withdrawn | live or override | group g (if offered) | private p' | live or override |
//! | LIVE_OVERRIDE g | group g' if g' ≠ g | live | - | group g | private p | - |
//!
//! "live or override": `LIVE_OVERRIDE` while a group replay runs, else
//! `FOLLOWING_LIVESTREAM`. A stop for a replay other than the running one
//! changes nothing.

use super::message::{ChannelId, Heartbeat};

/// Where a client is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    FollowingLivestream,
    FollowingGroupReplay(ChannelId),
    /// In its own replay; `offered` is a group replay it may join.
    FollowingPrivateReplay {
        channel: ChannelId,
        offered: Option<ChannelId>,
    },
    /// On live while group replay `group` runs.
    LiveOverride(ChannelId),
}

impl State {
    /// The contract's name of the state.
    pub fn name(&self) -> &'static str {
        match self {
            State::FollowingLivestream => "FOLLOWING_LIVESTREAM",
            State::FollowingGroupReplay(_) => "FOLLOWING_GROUP_REPLAY",
            State::FollowingPrivateReplay { .. } => "FOLLOWING_PRIVATE_REPLAY",
            State::LiveOverride(_) => "LIVE_OVERRIDE",
        }
    }

    /// The channel the client is watching.
    pub fn channel(&self) -> ChannelId {
        match self {
            State::FollowingLivestream | State::LiveOverride(_) => ChannelId::Livestream,
            State::FollowingGroupReplay(g) => g.clone(),
            State::FollowingPrivateReplay { channel, .. } => channel.clone(),
        }
    }
}

/// What happens to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    GroupReplayStart(ChannelId),
    GroupReplayStop(ChannelId),
    /// The user asks for live.
    BackToLive,
    /// The user accepts the running group replay.
    JoinGroup,
    /// The user starts a private replay on this channel.
    StartPrivate(ChannelId),
    /// The private replay ended (end of data, expired, stopped).
    PrivateEnded,
}

/// A client's state plus the group replay it knows to be running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientMachine {
    state: State,
    group: Option<ChannelId>,
}

impl Default for ClientMachine {
    fn default() -> Self {
        ClientMachine {
            state: State::FollowingLivestream,
            group: None,
        }
    }
}

impl ClientMachine {
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The group replay running, as far as this client knows.
    pub fn group(&self) -> Option<&ChannelId> {
        self.group.as_ref()
    }

    fn live_or_override(&self) -> State {
        match &self.group {
            Some(g) => State::LiveOverride(g.clone()),
            None => State::FollowingLivestream,
        }
    }

    /// Apply `event`; true when the watched channel or the state changed
    /// (publish a heartbeat).
    pub fn apply(&mut self, event: Event) -> bool {
        let before = self.state.clone();
        let next = match (event, &self.state) {
            (Event::GroupReplayStart(g), State::FollowingPrivateReplay { channel, .. }) => {
                self.group = Some(g.clone());
                State::FollowingPrivateReplay {
                    channel: channel.clone(),
                    offered: Some(g),
                }
            }
            (Event::GroupReplayStart(g), _) => {
                self.group = Some(g.clone());
                State::FollowingGroupReplay(g)
            }
            (Event::GroupReplayStop(g), s) => {
                if self.group.as_ref() != Some(&g) {
                    // Not the replay this client knows: nothing to do,
                    // unless it is following that very channel.
                    if s.channel() == g {
                        State::FollowingLivestream
                    } else {
                        s.clone()
                    }
                } else {
                    self.group = None;
                    match s {
                        State::FollowingPrivateReplay { channel, .. } => {
                            State::FollowingPrivateReplay {
                                channel: channel.clone(),
                                offered: None,
                            }
                        }
                        _ => State::FollowingLivestream,
                    }
                }
            }
            (Event::BackToLive, State::FollowingLivestream | State::LiveOverride(_)) => {
                self.state.clone()
            }
            (Event::BackToLive, _)
            | (Event::PrivateEnded, State::FollowingPrivateReplay { .. }) => {
                self.live_or_override()
            }
            (Event::PrivateEnded, s) => s.clone(),
            (Event::JoinGroup, s) => match (&self.group, s) {
                (Some(g), State::LiveOverride(_) | State::FollowingPrivateReplay { .. }) => {
                    State::FollowingGroupReplay(g.clone())
                }
                _ => s.clone(),
            },
            (Event::StartPrivate(p), _) => State::FollowingPrivateReplay {
                channel: p,
                offered: None,
            },
        };
        self.state = next;
        self.state != before
    }

    /// The heartbeat for this state (`ts` is the caller's RFC 3339 time).
    pub fn heartbeat(&self, client_id: &str, ts: String) -> Heartbeat {
        let channel = self.state.channel();
        Heartbeat {
            client_id: client_id.to_owned(),
            state: self.state.name().to_owned(),
            channel_id: channel.to_string(),
            subject: channel.subject(),
            live_override: matches!(self.state, State::LiveOverride(_)),
            ts,
            operator: None,
            source_ip: None,
            ping_ms: None,
        }
    }
}

#[cfg(test)]
mod tests;
