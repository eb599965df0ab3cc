//! Controls and foreign starts, in virtual time.

use super::super::tests::{TOKEN, config, drain, group, group_as, private, started};
use super::super::*;
use crate::channels::message::{ControlAction, ReplayControl, ReplayControlResult};
use crate::replay::pacer::{Control, Rate};

fn control(channel: &str, action: ControlAction) -> ReplayControl {
    let mut c = ReplayControl::new(&ChannelId::parse(channel).unwrap(), action);
    c.operator_token = Some(TOKEN.into());
    c
}

/// The one action a control queued: its op, or its announced refusal.
fn outcome(
    d: &mut Directory,
    now: Instant,
    c: ReplayControl,
) -> Result<ControlOp, (String, String)> {
    d.handle_ctrl(now, Ctrl::Control(c));
    match drain(d).as_slice() {
        [Action::Control { op, .. }] => Ok(op.clone()),
        [
            Action::Announce(Announcement::ControlResult(ReplayControlResult {
                ok: false,
                error: Some(e),
                reason: Some(r),
                ..
            })),
        ] => Err((r.clone(), e.clone())),
        other => panic!("{other:?}"),
    }
}

/// The id of the one start queued, not reported yet.
fn started_later(d: &mut Directory) -> ReplayId {
    let actions = drain(d);
    starts(&actions)[0].id
}

fn reason(r: Result<ControlOp, (String, String)>) -> String {
    r.unwrap_err().0
}

#[test]
fn controls_are_checked_then_handed_to_the_driver() {
    let t0 = Instant::now();
    let mut d = Directory::new(config(4, 4));
    d.handle_ctrl(t0, group("a"));
    let id = started_later(&mut d);
    // Still starting: not yet.
    assert_eq!(
        reason(outcome(
            &mut d,
            t0,
            control("replay.a", ControlAction::Pause)
        )),
        "not_running"
    );
    d.replay_started(t0, id, "from".into());
    drain(&mut d);
    assert_eq!(
        outcome(&mut d, t0, control("replay.a", ControlAction::Pause)),
        Ok(ControlOp::Apply(Control::Pause))
    );
    assert_eq!(
        outcome(&mut d, t0, control("replay.a", ControlAction::Resume)),
        Ok(ControlOp::Apply(Control::Resume))
    );
    let mut rate = control("replay.a", ControlAction::Rate);
    rate.rate = Some(2.0);
    assert_eq!(
        outcome(&mut d, t0, rate.clone()),
        Ok(ControlOp::Apply(Control::Rate(Rate::new(2.0).unwrap())))
    );
    rate.rate = Some(0.0);
    assert_eq!(reason(outcome(&mut d, t0, rate.clone())), "bad_control");
    rate.rate = None;
    assert_eq!(reason(outcome(&mut d, t0, rate)), "bad_control");
    let mut seek = control("replay.a", ControlAction::Seek);
    seek.to = Some("2026-04-30T14:05:01Z".into());
    assert_eq!(
        outcome(&mut d, t0, seek.clone()),
        Ok(ControlOp::Apply(Control::Seek(1_777_557_901_000_000_000)))
    );
    seek.to = Some("merge-2".into());
    assert_eq!(
        outcome(&mut d, t0, seek.clone()),
        Ok(ControlOp::SeekTag("merge-2".into()))
    );
    seek.to = None;
    assert_eq!(reason(outcome(&mut d, t0, seek)), "bad_control");
    // Group control is for operators; the livestream and unknown channels
    // take none.
    let mut c = control("replay.a", ControlAction::Pause);
    c.operator_token = None;
    assert_eq!(reason(outcome(&mut d, t0, c.clone())), "not_operator");
    c.operator_token = Some("wrong-token-wrong-token".into());
    assert_eq!(reason(outcome(&mut d, t0, c)), "not_operator");
    assert_eq!(
        reason(outcome(
            &mut d,
            t0,
            control("livestream", ControlAction::Pause)
        )),
        "not_group"
    );
    assert_eq!(
        reason(outcome(
            &mut d,
            t0,
            control("replay.zz", ControlAction::Pause)
        )),
        "not_running"
    );
    let mut bad = control("replay.a", ControlAction::Pause);
    bad.channel_id = "replay.a b".into();
    assert_eq!(reason(outcome(&mut d, t0, bad)), "identifier");
    let refused = d.counts().refused;
    assert_eq!(refused[Refusal::BadControl as usize], 3);
    assert_eq!(refused[Refusal::NotOperator as usize], 2);
    assert_eq!(refused[Refusal::NotRunning as usize], 2);

    // The driver reports back: announced, counted.
    let c = control("replay.a", ControlAction::Pause);
    d.control_done(c.clone(), Ok(()));
    match drain(&mut d).as_slice() {
        [Action::Announce(Announcement::ControlResult(r))] => {
            assert!(
                r.ok && r.error.is_none() && r.action == ControlAction::Pause,
                "{r:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.counts().controls_applied, 1);
    d.control_done(c, Err((Refusal::BadControl, "no tag".into())));
    let actions = drain(&mut d);
    let [Action::Announce(Announcement::ControlResult(r))] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert_eq!((r.ok, r.reason.as_deref()), (false, Some("bad_control")));
}

#[test]
fn a_private_replay_is_controlled_by_its_owner_only() {
    let t0 = Instant::now();
    let mut d = Directory::new(config(4, 4));
    d.handle_private_request(
        t0,
        &private("alice", "s1", Some(super::super::tests::spec(1.0))),
        None,
    );
    started(&mut d, t0);
    drain(&mut d);
    let mut c = ReplayControl::new(
        &ChannelId::parse("client.alice.s1").unwrap(),
        ControlAction::Pause,
    );
    // An operator token is no owner.
    c.operator_token = Some(TOKEN.into());
    assert_eq!(reason(outcome(&mut d, t0, c.clone())), "not_owner");
    c.client_id = Some("mallory".into());
    assert_eq!(reason(outcome(&mut d, t0, c.clone())), "not_owner");
    c.client_id = Some("alice".into());
    c.operator_token = None;
    assert_eq!(outcome(&mut d, t0, c), Ok(ControlOp::Apply(Control::Pause)));
}

#[test]
fn controls_of_one_replay_are_rate_limited() {
    let t0 = Instant::now();
    let mut cfg = config(4, 4);
    cfg.rate_control = RateLimit {
        burst: 2,
        per_min: 60,
    };
    let mut d = Directory::new(cfg);
    d.handle_ctrl(t0, group("a"));
    d.handle_ctrl(t0, group("b"));
    let actions = drain(&mut d);
    for a in &actions {
        if let Action::Start(s) = a {
            d.replay_started(t0, s.id, "from".into());
        }
    }
    drain(&mut d);
    let pause = |ch: &str| control(ch, ControlAction::Pause);
    assert!(outcome(&mut d, t0, pause("replay.a")).is_ok());
    assert!(outcome(&mut d, t0, pause("replay.a")).is_ok());
    assert_eq!(
        reason(outcome(&mut d, t0, pause("replay.a"))),
        "rate_control"
    );
    // Another replay has its own budget; one second later one more.
    assert!(outcome(&mut d, t0, pause("replay.b")).is_ok());
    assert!(outcome(&mut d, t0 + Duration::from_secs(1), pause("replay.a")).is_ok());
    // A refused control (not an operator) takes no token.
    let mut c = pause("replay.b");
    c.operator_token = None;
    for _ in 0..5 {
        assert_eq!(reason(outcome(&mut d, t0, c.clone())), "not_operator");
    }
    assert!(outcome(&mut d, t0, pause("replay.b")).is_ok());
}

fn foreign(channel: &str, identifier: &str) -> Ctrl {
    Ctrl::Start(GroupReplayStart {
        kind: "GroupReplayStart".into(),
        channel_id: channel.into(),
        display_name: "From the console".into(),
        identifier: identifier.into(),
        stream: "TSPI_REPLAY".into(),
    })
}

fn starts(actions: &[Action]) -> Vec<&StartReplay> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Start(s) => Some(s),
            _ => None,
        })
        .collect()
}

#[test]
fn a_foreign_start_starts_its_replay_once() {
    let t0 = Instant::now();
    let mut d = Directory::new(config(4, 4));
    d.handle_ctrl(t0, foreign("replay.console-1", "2026-04-30T14:05:00Z"));
    let actions = drain(&mut d);
    let [s] = starts(&actions)[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(s.channel.to_string(), "replay.console-1");
    assert_eq!(s.spec.start.as_deref(), Some("2026-04-30T14:05:00Z"));
    assert_eq!((s.spec.tag.as_deref(), s.spec.rate), (None, 1.0));
    assert_eq!(s.spec.source, ReplaySource::Stream);
    let id = s.id;
    // A duplicate while it starts, then our own announcement once it runs:
    // nothing.
    d.handle_ctrl(t0, foreign("replay.console-1", "2026-04-30T14:05:00Z"));
    assert!(drain(&mut d).is_empty());
    d.replay_started(t0, id, "2026-04-30T14:05:00Z".into());
    let actions = drain(&mut d);
    let [Action::Announce(Announcement::Start(own))] = &actions[..] else {
        panic!("{actions:?}")
    };
    d.handle_ctrl(t0, Ctrl::Start(own.clone()));
    assert!(drain(&mut d).is_empty());
    // It ends; its echo (or a duplicate) arriving late starts nothing...
    d.replay_ended(id);
    drain(&mut d);
    d.handle_ctrl(t0 + Duration::from_secs(1), Ctrl::Start(own.clone()));
    assert!(drain(&mut d).is_empty());
    assert_eq!(d.counts().foreign_starts, 1);
    assert_eq!(d.counts().requests_refused, 0, "echoes are not refusals");
    // ...but the same start later on is a new one.
    d.handle_ctrl(t0 + FOREIGN_DUPLICATE_WINDOW, Ctrl::Start(own.clone()));
    assert_eq!(starts(&drain(&mut d)).len(), 1);
    assert_eq!(d.counts().foreign_starts, 2);
}

#[test]
fn a_foreign_start_names_a_tag_or_is_refused_with_a_reason() {
    let t0 = Instant::now();
    let mut cfg = config(1, 4);
    cfg.foreign_start_source = ReplaySource::Archive;
    let mut d = Directory::new(cfg);
    d.handle_ctrl(t0, foreign("replay.merge-2", "Merge #2"));
    let actions = drain(&mut d);
    let [s] = starts(&actions)[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(s.spec.tag.as_deref(), Some("Merge #2"));
    assert_eq!(s.spec.source, ReplaySource::Archive);
    let error = |d: &mut Directory, c: Ctrl| match drain_after(d, t0, c).as_slice() {
        [Action::Announce(Announcement::Error(e))] => e.reason.clone().unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(error(&mut d, foreign("replay.other", "x")), "group_max");
    assert_eq!(error(&mut d, foreign("client.a.b", "x")), "not_group");
    assert_eq!(error(&mut d, foreign("replay.a b", "x")), "identifier");
    // No archive configured: refused.
    let mut cfg = config(4, 4);
    cfg.foreign_start_source = ReplaySource::Archive;
    cfg.archive = false;
    let mut d = Directory::new(cfg);
    assert_eq!(error(&mut d, foreign("replay.x", "t")), "no_archive");
    // Off: counted, not answered (it may be another service's own).
    let mut cfg = config(4, 4);
    cfg.honour_foreign_starts = false;
    let mut d = Directory::new(cfg);
    assert!(drain_after(&mut d, t0, foreign("replay.x", "t")).is_empty());
    assert_eq!(d.counts().refused[Refusal::ForeignOff as usize], 1);
}

fn drain_after(d: &mut Directory, now: Instant, c: Ctrl) -> Vec<Action> {
    d.handle_ctrl(now, c);
    drain(d)
}

#[test]
fn archive_replays_need_an_archive() {
    let t0 = Instant::now();
    let mut cfg = config(4, 4);
    cfg.archive = false;
    let mut d = Directory::new(cfg);
    let mut req = match group("a") {
        Ctrl::Request(r) => r,
        _ => unreachable!(),
    };
    req.spec.source = ReplaySource::Archive;
    let actions = drain_after(&mut d, t0, Ctrl::Request(req.clone()));
    let [Action::Announce(Announcement::Error(e))] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(e.reason.as_deref(), Some("no_archive"));
    let mut spec = req.spec.clone();
    d.handle_private_request(
        t0,
        &private("alice", "s1", Some(spec.clone())),
        Some("r".into()),
    );
    let actions = drain(&mut d);
    let [Action::ReplyPrivate { reply, .. }] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(reply.reason.as_deref(), Some("no_archive"));
    // With one: started as asked.
    let mut d = Directory::new(config(4, 4));
    spec.source = ReplaySource::Archive;
    let actions = drain_after(&mut d, t0, Ctrl::Request(req));
    assert_eq!(starts(&actions)[0].spec.source, ReplaySource::Archive);
    let _ = group_as;
}
