use super::*;

fn g(n: &str) -> ChannelId {
    ChannelId::Replay(n.into())
}

fn p(n: &str) -> ChannelId {
    ChannelId::Client {
        client: "c".into(),
        session: n.into(),
    }
}

fn run(events: &[Event]) -> ClientMachine {
    let mut m = ClientMachine::default();
    for e in events {
        m.apply(e.clone());
    }
    m
}

#[test]
fn contract_walkthrough() {
    let mut m = ClientMachine::default();
    assert_eq!(m.state(), &State::FollowingLivestream);
    // On GroupReplayStart a client on live switches to the replay.
    assert!(m.apply(Event::GroupReplayStart(g("a"))));
    assert_eq!(m.state(), &State::FollowingGroupReplay(g("a")));
    // Back to live while it runs: override.
    assert!(m.apply(Event::BackToLive));
    assert_eq!(m.state(), &State::LiveOverride(g("a")));
    let hb = m.heartbeat("c1", "t".into());
    assert_eq!(
        (hb.state.as_str(), hb.channel_id.as_str(), hb.live_override),
        ("LIVE_OVERRIDE", "livestream", true)
    );
    // Join again, then the stop returns followers to live.
    assert!(m.apply(Event::JoinGroup));
    assert_eq!(m.state(), &State::FollowingGroupReplay(g("a")));
    assert!(m.apply(Event::GroupReplayStop(g("a"))));
    assert_eq!(m.state(), &State::FollowingLivestream);
    assert_eq!(m.group(), None);
}

#[test]
fn private_replays_stay_and_are_offered() {
    let mut m = run(&[Event::StartPrivate(p("s1"))]);
    assert!(m.apply(Event::GroupReplayStart(g("a"))));
    assert_eq!(
        m.state(),
        &State::FollowingPrivateReplay {
            channel: p("s1"),
            offered: Some(g("a"))
        }
    );
    assert_eq!(m.state().channel(), p("s1"));
    // A stop withdraws the offer; the private replay is untouched.
    m.apply(Event::GroupReplayStop(g("a")));
    assert_eq!(
        m.state(),
        &State::FollowingPrivateReplay {
            channel: p("s1"),
            offered: None
        }
    );
    // Accepting the offer joins the group.
    let mut m = run(&[
        Event::StartPrivate(p("s1")),
        Event::GroupReplayStart(g("b")),
    ]);
    m.apply(Event::JoinGroup);
    assert_eq!(m.state(), &State::FollowingGroupReplay(g("b")));
    // Back to live from a private replay while a group runs: override.
    let m = run(&[
        Event::StartPrivate(p("s1")),
        Event::GroupReplayStart(g("b")),
        Event::BackToLive,
    ]);
    assert_eq!(m.state(), &State::LiveOverride(g("b")));
    let m = run(&[Event::StartPrivate(p("s1")), Event::PrivateEnded]);
    assert_eq!(m.state(), &State::FollowingLivestream);
}

#[test]
fn a_stop_for_another_replay_changes_nothing() {
    let mut m = run(&[Event::GroupReplayStart(g("a"))]);
    assert!(!m.apply(Event::GroupReplayStop(g("zzz"))));
    assert_eq!(m.state(), &State::FollowingGroupReplay(g("a")));
    let mut m = ClientMachine::default();
    assert!(!m.apply(Event::JoinGroup));
    assert!(!m.apply(Event::BackToLive));
    assert!(!m.apply(Event::PrivateEnded));
}

/// Every sequence of up to 6 events over a small alphabet keeps the
/// invariants: the state agrees with the known group, live never carries an
/// override without a group, a group follower follows the known group.
#[test]
fn exhaustive_invariants() {
    let alphabet = [
        Event::GroupReplayStart(g("a")),
        Event::GroupReplayStart(g("b")),
        Event::GroupReplayStop(g("a")),
        Event::GroupReplayStop(g("b")),
        Event::BackToLive,
        Event::JoinGroup,
        Event::StartPrivate(p("s1")),
        Event::PrivateEnded,
    ];
    let n = alphabet.len();
    let mut checked = 0u64;
    for len in 0..=6u32 {
        for code in 0..n.pow(len) {
            let mut m = ClientMachine::default();
            let mut c = code;
            let mut private_active = false;
            for _ in 0..len {
                let e = alphabet[c % n].clone();
                c /= n;
                let before = m.clone();
                let changed = m.apply(e.clone());
                assert_eq!(changed, before.state() != m.state());
                match &e {
                    Event::StartPrivate(_) => private_active = true,
                    Event::PrivateEnded | Event::BackToLive | Event::JoinGroup => {
                        if !matches!(m.state(), State::FollowingPrivateReplay { .. }) {
                            private_active = false;
                        }
                    }
                    Event::GroupReplayStart(x) if !private_active => {
                        assert_eq!(m.state(), &State::FollowingGroupReplay(x.clone()));
                    }
                    Event::GroupReplayStart(_) => {
                        // A private replay stays.
                        assert!(matches!(m.state(), State::FollowingPrivateReplay { .. }));
                    }
                    Event::GroupReplayStop(x) => {
                        assert_ne!(m.state(), &State::FollowingGroupReplay(x.clone()));
                        assert_ne!(m.state(), &State::LiveOverride(x.clone()));
                        // Private replays are untouched by a stop.
                        assert_eq!(
                            matches!(m.state(), State::FollowingPrivateReplay { .. }),
                            matches!(before.state(), State::FollowingPrivateReplay { .. })
                        );
                    }
                }
                match m.state() {
                    State::LiveOverride(x) | State::FollowingGroupReplay(x) => {
                        assert_eq!(m.group(), Some(x), "{m:?}");
                    }
                    State::FollowingPrivateReplay {
                        offered: Some(x), ..
                    } => assert_eq!(m.group(), Some(x)),
                    _ => {}
                }
                if matches!(m.state(), State::FollowingLivestream) {
                    assert_eq!(
                        m.group(),
                        None,
                        "live without override while a group runs: {m:?}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 300_000);
}
