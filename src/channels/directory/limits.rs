//! The directory's rate limits (a token bucket) and its refusals. Pure:
//! time is an argument.

use std::time::{Duration, Instant};

/// A rate: `burst` requests at once, then one every `60 s / per_min`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub burst: u32,
    pub per_min: u32,
}

impl RateLimit {
    /// The time one request's token takes to come back.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(60) / self.per_min.max(1)
    }
}

/// A token bucket as the generic cell rate algorithm: one instant, the
/// theoretical arrival time (`tat`) of the next request if the bucket were
/// empty. Over any window of length `w`, at most `burst + w / interval`
/// requests are admitted (exact integer time, no float drift); a bucket
/// whose `tat` has passed is full, like a new one. Pure: time is an
/// argument.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    tat: Option<Instant>,
}

impl Bucket {
    /// The bucket's state if a request at `now` is admitted; `None`: refuse.
    /// `self` is unchanged: the caller keeps the result to commit it.
    pub fn check(&self, limit: RateLimit, now: Instant) -> Option<Bucket> {
        let t = limit.interval();
        let tolerance = t * limit.burst.max(1).saturating_sub(1);
        let tat = self.tat.filter(|&x| x > now).unwrap_or(now);
        if tat.duration_since(now) > tolerance {
            return None;
        }
        Some(Bucket { tat: Some(tat + t) })
    }

    /// Admit a request at `now` if the rate allows.
    pub fn admit(&mut self, limit: RateLimit, now: Instant) -> bool {
        match self.check(limit, now) {
            Some(b) => {
                *self = b;
                true
            }
            None => false,
        }
    }

    /// Full at `now`: the same as a new bucket.
    pub fn is_full(&self, now: Instant) -> bool {
        self.tat.is_none_or(|t| t <= now)
    }
}

/// Client buckets kept at most; full ones are dropped first (they equal a
/// new one). The overall rate bounds how many can be non-full at once.
pub const CLIENT_BUCKETS_MAX: usize = 4096;

/// Why a request was refused; counted by [`Refusal::label`] and named in
/// the answer (`reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refusal {
    /// Not a readable request (CBOR, fields).
    Malformed,
    /// A client, session or replay id that cannot be a subject token.
    Identifier,
    /// A request `type` this service does not handle.
    UnknownType,
    /// A `PrivateReplayRequest` without a spec.
    NoSpec,
    /// The service is stopping.
    Stopping,
    /// That channel is already running.
    AlreadyRunning,
    /// `group_max` group replays hold their slots.
    GroupMax,
    /// `private_max` private replays hold their slots.
    PrivateMax,
    /// This client id holds `private_per_client_max` private replays.
    ClientMax,
    /// This client id's start rate is spent.
    RateClient,
    /// The start rate of all clients together is spent.
    RateOverall,
    /// A stop from someone other than the replay's owner.
    NotOwner,
    /// Group control without a valid operator token.
    NotOperator,
    /// A group request naming a channel that is no group replay.
    NotGroup,
    /// The driver could not start it (a bad rate, an unknown tag, ...).
    StartFailed,
    /// A control for a channel with no running replay (or one still
    /// starting).
    NotRunning,
    /// A control that cannot be carried out: a bad rate or seek target, a
    /// missing argument, a JetStream-native replay (no controls there).
    BadControl,
    /// The controls' rate on this replay is spent.
    RateControl,
    /// A replay from the archive, and no archive DSN is configured.
    NoArchive,
    /// A foreign `GroupReplayStart` (no request), and `[channels]
    /// honour_foreign_starts` is off: not answered (it may be another
    /// service's own announcement), only counted.
    ForeignOff,
}

/// How many [`Refusal`]s there are.
pub const REFUSALS_LEN: usize = 20;

/// [`Refusal::label`] of each, in declaration order (the metric's `reason`).
pub const REFUSAL_LABELS: [&str; REFUSALS_LEN] = [
    "malformed",
    "identifier",
    "unknown_type",
    "no_spec",
    "stopping",
    "already_running",
    "group_max",
    "private_max",
    "client_max",
    "rate_client",
    "rate_overall",
    "not_owner",
    "not_operator",
    "not_group",
    "start_failed",
    "not_running",
    "bad_control",
    "rate_control",
    "no_archive",
    "foreign_off",
];

impl Refusal {
    /// Every refusal, in declaration order.
    pub const ALL: [Refusal; REFUSALS_LEN] = [
        Refusal::Malformed,
        Refusal::Identifier,
        Refusal::UnknownType,
        Refusal::NoSpec,
        Refusal::Stopping,
        Refusal::AlreadyRunning,
        Refusal::GroupMax,
        Refusal::PrivateMax,
        Refusal::ClientMax,
        Refusal::RateClient,
        Refusal::RateOverall,
        Refusal::NotOwner,
        Refusal::NotOperator,
        Refusal::NotGroup,
        Refusal::StartFailed,
        Refusal::NotRunning,
        Refusal::BadControl,
        Refusal::RateControl,
        Refusal::NoArchive,
        Refusal::ForeignOff,
    ];

    /// Its name in metrics and answers.
    pub fn label(self) -> &'static str {
        REFUSAL_LABELS[self as usize]
    }
}
