//! The pacing schedule: when each recorded message is due. Pure: time is an
//! argument (nanoseconds on the caller's monotonic clock), nothing sleeps.
//!
//! Message `i`, received originally at `t_i`, is due at
//! `anchor_wall + (t_i - anchor_rec) / rate`. The anchor is set once at the
//! start and moved only by an operator's control (rate change, pause/resume,
//! seek, loop), never per message, so lateness of one message does not shift
//! the next: the schedule is absolute and no error accumulates (a relative
//! "sleep the gap" loop adds every overshoot to all later messages).

/// Lowest and highest replay rate accepted.
pub const RATE_MIN: f64 = 0.01;
pub const RATE_MAX: f64 = 1000.0;

/// A replay speed: 1.0 is the original pace, 2.0 twice as fast.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate(f64);

/// A rate outside [`RATE_MIN`]..=[`RATE_MAX`] or not a number.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("rate {0} is out of range: give a number from 0.01 to 1000 (1 = original pace)")]
pub struct RateError(pub String);

impl Rate {
    pub const ORIGINAL: Rate = Rate(1.0);

    pub fn new(v: f64) -> Result<Rate, RateError> {
        if v.is_finite() && (RATE_MIN..=RATE_MAX).contains(&v) {
            Ok(Rate(v))
        } else {
            Err(RateError(v.to_string()))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }

    /// Recorded nanoseconds to wall nanoseconds at this rate. Exact at 1x;
    /// otherwise rounded once per message from the anchor (f64 holds a
    /// recording of 100 days to the nanosecond), so rounding never adds up.
    fn wall(self, rec_ns: u64) -> u64 {
        if self.0 == 1.0 {
            rec_ns
        } else {
            (rec_ns as f64 / self.0).round() as u64
        }
    }

    /// Wall nanoseconds to recorded nanoseconds.
    fn rec(self, wall_ns: u64) -> u64 {
        if self.0 == 1.0 {
            wall_ns
        } else {
            (wall_ns as f64 * self.0).round() as u64
        }
    }
}

impl std::str::FromStr for Rate {
    type Err = RateError;
    fn from_str(s: &str) -> Result<Rate, RateError> {
        let v: f64 = s.trim().parse().map_err(|_| RateError(s.to_owned()))?;
        Rate::new(v)
    }
}

/// The absolute schedule: an anchor (a wall instant and the recorded instant
/// that plays at it) and a rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pacer {
    anchor_wall_ns: u64,
    anchor_rec_ns: u64,
    rate: Rate,
    paused: bool,
}

impl Pacer {
    /// Recorded instant `first_rec_ns` plays at wall instant `start_ns`.
    pub fn new(start_ns: u64, first_rec_ns: u64, rate: Rate) -> Pacer {
        Pacer {
            anchor_wall_ns: start_ns,
            anchor_rec_ns: first_rec_ns,
            rate,
            paused: false,
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// When the message recorded at `rec_ns` is due; `None` while paused.
    /// A message recorded before the anchor was due before the anchor.
    pub fn due_ns(&self, rec_ns: u64) -> Option<u64> {
        if self.paused {
            return None;
        }
        Some(if rec_ns >= self.anchor_rec_ns {
            self.anchor_wall_ns + self.rate.wall(rec_ns - self.anchor_rec_ns)
        } else {
            self.anchor_wall_ns
                .saturating_sub(self.rate.wall(self.anchor_rec_ns - rec_ns))
        })
    }

    /// The recorded instant playing at wall instant `now_ns` (the anchor's
    /// while paused, or before the anchor).
    pub fn position_ns(&self, now_ns: u64) -> u64 {
        if self.paused || now_ns <= self.anchor_wall_ns {
            return self.anchor_rec_ns;
        }
        self.anchor_rec_ns + self.rate.rec(now_ns - self.anchor_wall_ns)
    }

    /// Freeze at the current position.
    pub fn pause(&mut self, now_ns: u64) {
        if !self.paused {
            self.anchor_rec_ns = self.position_ns(now_ns);
            self.anchor_wall_ns = now_ns;
            self.paused = true;
        }
    }

    /// Play on from where the pause froze, starting now.
    pub fn resume(&mut self, now_ns: u64) {
        if self.paused {
            self.anchor_wall_ns = now_ns;
            self.paused = false;
        }
    }

    /// Change speed from now on; what already played keeps its times.
    pub fn set_rate(&mut self, now_ns: u64, rate: Rate) {
        self.anchor_rec_ns = self.position_ns(now_ns);
        self.anchor_wall_ns = now_ns.max(self.anchor_wall_ns);
        self.rate = rate;
    }

    /// Recorded instant `rec_ns` plays at wall instant `at_ns` (keeps a
    /// pause).
    pub fn seek(&mut self, at_ns: u64, rec_ns: u64) {
        self.anchor_wall_ns = at_ns;
        self.anchor_rec_ns = rec_ns;
    }
}

/// An operator's control of a running replay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Control {
    Pause,
    Resume,
    Rate(Rate),
    /// Jump to this recorded instant (nanoseconds since the Unix epoch).
    Seek(u64),
    Stop,
}

/// What the driver should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send the next message now; it was due at `scheduled_ns`.
    Emit { scheduled_ns: u64 },
    /// Nothing is due before `until_ns`.
    Wait { until_ns: u64 },
    /// Paused: wait for a control.
    Paused,
    /// Reopen the source at recorded instant `from_ns` (a seek or a loop)
    /// and poll again.
    Reopen { from_ns: u64 },
    /// End of data (or stopped).
    Finished,
}

/// The replay's state around a [`Pacer`]: the first recorded instant (for
/// loops), order repair, the id epoch and stop.
///
/// Input must be in order of recorded time; a message recorded before its
/// predecessor (two receive threads interleaving in the stream by a few
/// microseconds) is sent right after that predecessor, never before it, and
/// counted in `reordered`: the output order is the input order.
#[derive(Clone, Debug)]
pub struct Player {
    start_ns: u64,
    rate: Rate,
    looping: bool,
    pacer: Option<Pacer>,
    pause_pending: bool,
    first_rec_ns: Option<u64>,
    last_rec_ns: Option<u64>,
    last_scheduled_ns: u64,
    /// Bumped at every seek and loop: message ids sent again get a new
    /// suffix, so the replay stream stores them again.
    epoch: u32,
    stopped: bool,
    pub reordered: u64,
    pub emitted: u64,
}

impl Player {
    /// The first message plays at `start_ns`.
    pub fn new(start_ns: u64, rate: Rate, looping: bool) -> Player {
        Player {
            start_ns,
            rate,
            looping,
            pacer: None,
            pause_pending: false,
            first_rec_ns: None,
            last_rec_ns: None,
            last_scheduled_ns: start_ns,
            epoch: 0,
            stopped: false,
            reordered: 0,
            emitted: 0,
        }
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn pacer(&self) -> Option<&Pacer> {
        self.pacer.as_ref()
    }

    /// What to do at `now_ns` with the next message, recorded at `next_rec_ns`
    /// (`None`: the source has ended). After `Emit`, call [`Player::emitted`].
    pub fn poll(&mut self, now_ns: u64, next_rec_ns: Option<u64>) -> Action {
        if self.stopped {
            return Action::Finished;
        }
        let Some(rec) = next_rec_ns else {
            return match (self.looping, self.first_rec_ns) {
                (true, Some(first)) => {
                    // The first message of the next round plays where the
                    // last one was scheduled: absolute across rounds too.
                    let at = self.last_scheduled_ns;
                    if let Some(p) = self.pacer.as_mut() {
                        p.seek(at, first);
                    }
                    self.last_rec_ns = None;
                    self.epoch += 1;
                    Action::Reopen { from_ns: first }
                }
                _ => Action::Finished,
            };
        };
        let rec = match self.last_rec_ns {
            Some(last) if rec < last => {
                self.reordered += 1;
                last
            }
            _ => rec,
        };
        let pacer = self.pacer.get_or_insert_with(|| {
            let mut p = Pacer::new(self.start_ns, rec, self.rate);
            if self.pause_pending {
                p.pause(self.start_ns.min(now_ns));
            }
            p
        });
        self.first_rec_ns.get_or_insert(rec);
        match pacer.due_ns(rec) {
            None => Action::Paused,
            Some(due) if due <= now_ns => {
                self.last_rec_ns = Some(rec);
                self.last_scheduled_ns = due;
                self.emitted += 1;
                Action::Emit { scheduled_ns: due }
            }
            Some(due) => Action::Wait { until_ns: due },
        }
    }

    /// Apply an operator's control at `now_ns`. A seek answers
    /// `Some(Action::Reopen)`: the driver reopens the source there.
    pub fn control(&mut self, now_ns: u64, c: Control) -> Option<Action> {
        match c {
            Control::Stop => {
                self.stopped = true;
                Some(Action::Finished)
            }
            Control::Pause => {
                match self.pacer.as_mut() {
                    Some(p) => p.pause(now_ns),
                    None => self.pause_pending = true,
                }
                None
            }
            Control::Resume => {
                match self.pacer.as_mut() {
                    Some(p) => p.resume(now_ns),
                    None => {
                        self.pause_pending = false;
                        self.start_ns = self.start_ns.max(now_ns);
                    }
                }
                None
            }
            Control::Rate(r) => {
                self.rate = r;
                if let Some(p) = self.pacer.as_mut() {
                    p.set_rate(now_ns, r);
                }
                None
            }
            Control::Seek(rec) => {
                let paused = self.pacer.is_some_and(|p| p.is_paused()) || self.pause_pending;
                let mut p = Pacer::new(now_ns, rec, self.rate);
                if paused {
                    p.pause(now_ns);
                }
                self.pacer = Some(p);
                self.last_rec_ns = None;
                self.epoch += 1;
                Some(Action::Reopen { from_ns: rec })
            }
        }
    }
}

/// One emitted message of [`simulate`]: input index, wall time sent, due time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Emitted {
    pub index: usize,
    pub at_ns: u64,
    pub scheduled_ns: u64,
    pub epoch: u32,
}

/// Play `recorded` (recorded instants, in order) in virtual time with a
/// perfect clock, applying `controls` (wall instant, control; sorted) as
/// they come due. The driver does the same with a real clock. Stops after
/// `emit_max` messages (a loop never ends by itself).
pub fn simulate(
    recorded: &[u64],
    start_ns: u64,
    rate: Rate,
    looping: bool,
    controls: &[(u64, Control)],
    emit_max: usize,
) -> Vec<Emitted> {
    let mut player = Player::new(start_ns, rate, looping);
    let mut out = Vec::new();
    let mut now = start_ns;
    let mut next = 0usize;
    let mut ctl = controls.iter().peekable();
    while out.len() < emit_max {
        while let Some(&&(at, c)) = ctl.peek() {
            if at > now {
                break;
            }
            ctl.next();
            if let Some(Action::Reopen { from_ns }) = player.control(at.max(now), c) {
                next = recorded.partition_point(|&r| r < from_ns);
            }
        }
        let action = player.poll(now, recorded.get(next).copied());
        let next_control = ctl.peek().map(|c| c.0);
        match action {
            Action::Emit { scheduled_ns } => {
                out.push(Emitted {
                    index: next,
                    at_ns: now,
                    scheduled_ns,
                    epoch: player.epoch(),
                });
                next += 1;
            }
            Action::Wait { until_ns } => {
                now = next_control.map_or(until_ns, |c| c.min(until_ns));
            }
            Action::Paused => match next_control {
                Some(c) => now = now.max(c),
                None => break,
            },
            Action::Reopen { from_ns } => {
                next = recorded.partition_point(|&r| r < from_ns);
            }
            Action::Finished => break,
        }
    }
    out
}

#[cfg(test)]
mod tests;
