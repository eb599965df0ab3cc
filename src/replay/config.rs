//! `[channels]`: the channels service's and replay's section of the
//! configuration file.

use crate::config::limits;
use crate::contract::names;
use serde::Deserialize;
use std::time::Duration;

/// `[channels]` section of the configuration file: the channels service
/// (`tspi channels serve`) and the defaults of `tspi replay`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    /// `tspi run` starts the channels service only when this is true;
    /// `tspi channels serve` runs it whatever this says.
    pub enabled: bool,
    /// Run the live stage: a push consumer `LIVE_MAIN` on `TSPI` delivering
    /// to `tspi.channel.livestream`.
    pub livestream: bool,
    /// Create or update `TSPI_REPLAY` and `TSPI_OPS` at start (idempotent).
    pub create_streams: bool,
    /// Retention of `TSPI_REPLAY` in hours (the contract says 1 to 6). Was
    /// `replay_max_age_h`.
    #[serde(alias = "replay_max_age_h")]
    pub replay_age_max_h: u64,
    /// A private replay without a status heartbeat naming its channel for
    /// this long is stopped and removed.
    pub private_idle_s: u64,
    /// Private replays at once (a request beyond it is refused).
    pub private_max: usize,
    /// Group replays at once.
    pub group_max: usize,
    /// A tag replay covers this long before the tag's moment...
    pub tag_before_s: u64,
    /// ...and this long after it.
    pub tag_after_s: u64,
    /// Where replayed tags of group replays are emitted again (CONTRACT §5:
    /// existing tools show tags from `tags.broadcast`). Private replays send
    /// theirs to `tags.client.<client>.<session>`, seen only by their owner.
    pub tag_subject: String,
    /// Messages read ahead of the pacer per batch, and batches queued:
    /// memory is bounded by their product (about 600 bytes a message).
    pub read_batch_len: usize,
    pub read_batches_max: usize,
    /// Publishes awaiting their JetStream ack at once per replay.
    pub acks_in_flight_max: usize,
    /// Messages the pacer may hand to its publisher beyond those awaiting
    /// acks, so a brief stall downstream does not hold up the schedule
    /// (about 0.5 KB each, only while queued).
    pub sink_queue_len: usize,
    /// The pacer sleeps until this long before a message is due, then spins
    /// on the monotonic clock.
    pub spin_us: u64,
    /// Cores for the pacing threads, taken in turn by successive replays;
    /// empty: not pinned. Keep them off the receive cores.
    pub pacing_cores: Vec<usize>,
    /// Run pacing threads under `SCHED_FIFO` at this priority (1-99; needs
    /// `CAP_SYS_NICE`); 0: ordinary scheduling.
    pub pacing_realtime_priority: u8,
    /// Private replays one client id may hold at once.
    pub private_per_client_max: usize,
    /// Private replay starts of all clients together: `requests_burst` at
    /// once, then `requests_per_min`. Bounds how fast invented client ids
    /// can take private slots.
    pub requests_per_min: u32,
    pub requests_burst: u32,
    /// The same per client id.
    pub client_requests_per_min: u32,
    pub client_requests_burst: u32,
    /// Operator credentials: a group replay request or stop must carry one
    /// of these (`tspi channels start-replay --operator-token`). Empty (and
    /// no `operator_token`): group control is open to anyone, with a
    /// warning at start.
    pub operator_tokens: Vec<String>,
    /// A single operator token: added to `operator_tokens`, and the one
    /// `tspi channels start-replay`/`stop-replay` send when no
    /// `--operator-token` is given.
    pub operator_token: Option<String>,
    /// The archive replays read from (`source = "archive"` in a request,
    /// `tspi channels start-replay --from-archive`): a PostgreSQL DSN. Unset:
    /// `[archive] postgres` when the file has one; neither: replays from the
    /// archive are refused (`no_archive`). A key of its own because setting
    /// `[archive] postgres` also starts the archiver in `tspi run`, and a
    /// channels box may read an archive it does not write (or through a
    /// read-only role).
    pub archive_dsn: Option<String>,
    /// TLS to that archive, the server's certificate verified against this
    /// CA file (PEM), as `[archive] ca_file`; unset: plain. When
    /// `archive_dsn` is unset, `[archive] ca_file` goes with `[archive]
    /// postgres`.
    pub archive_ca_file: Option<std::path::PathBuf>,
    /// Start the replay that a `GroupReplayStart` published by another tool
    /// (not in answer to a request; the range toolkit's console does this)
    /// announces. The contract's message carries no token: anyone who may
    /// publish on `tspi.ops.ctrl` may start group replays this way (bounded
    /// by `group_max`). Turn it off where another replay service announces
    /// its own replays on the same NATS.
    pub honour_foreign_starts: bool,
    /// Where such a replay reads: "stream" (`TSPI`) or "archive".
    pub foreign_start_source: crate::channels::message::ReplaySource,
    /// Controls (pause, resume, seek, rate) of one running replay:
    /// `controls_burst` at once, then `controls_per_min`.
    pub controls_per_min: u32,
    pub controls_burst: u32,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        use limits::*;
        ChannelsConfig {
            enabled: false,
            livestream: true,
            create_streams: true,
            replay_age_max_h: CHANNELS_REPLAY_AGE_MAX_H.default,
            private_idle_s: CHANNELS_PRIVATE_IDLE_S.default,
            private_max: CHANNELS_PRIVATE_MAX.default as usize,
            group_max: CHANNELS_GROUP_MAX.default as usize,
            tag_before_s: CHANNELS_TAG_BEFORE_S.default,
            tag_after_s: CHANNELS_TAG_AFTER_S.default,
            tag_subject: names::SUBJECT_TAGS.into(),
            read_batch_len: CHANNELS_READ_BATCH_LEN.default as usize,
            read_batches_max: CHANNELS_READ_BATCHES_MAX.default as usize,
            acks_in_flight_max: CHANNELS_ACKS_IN_FLIGHT_MAX.default as usize,
            sink_queue_len: CHANNELS_SINK_QUEUE_LEN.default as usize,
            spin_us: CHANNELS_SPIN_US.default,
            pacing_cores: Vec::new(),
            pacing_realtime_priority: CHANNELS_PACING_REALTIME_PRIORITY.default as u8,
            private_per_client_max: CHANNELS_PRIVATE_PER_CLIENT_MAX.default as usize,
            requests_per_min: CHANNELS_REQUESTS_PER_MIN.default as u32,
            requests_burst: CHANNELS_REQUESTS_BURST.default as u32,
            client_requests_per_min: CHANNELS_CLIENT_REQUESTS_PER_MIN.default as u32,
            client_requests_burst: CHANNELS_CLIENT_REQUESTS_BURST.default as u32,
            operator_tokens: Vec::new(),
            operator_token: None,
            archive_dsn: None,
            archive_ca_file: None,
            honour_foreign_starts: true,
            foreign_start_source: Default::default(),
            controls_per_min: CHANNELS_CONTROLS_PER_MIN.default as u32,
            controls_burst: CHANNELS_CONTROLS_BURST.default as u32,
        }
    }
}

impl ChannelsConfig {
    /// Every problem with these values (empty: fine), each naming its key.
    pub fn problems(&self) -> Vec<String> {
        use limits::*;
        let mut p = Vec::new();
        let k = |key: &str| format!("channels.{key}");
        CHANNELS_REPLAY_AGE_MAX_H.check(&k("replay_age_max_h"), self.replay_age_max_h, &mut p);
        CHANNELS_PRIVATE_IDLE_S.check(&k("private_idle_s"), self.private_idle_s, &mut p);
        CHANNELS_PRIVATE_MAX.check(&k("private_max"), self.private_max, &mut p);
        CHANNELS_GROUP_MAX.check(&k("group_max"), self.group_max, &mut p);
        CHANNELS_TAG_BEFORE_S.check(&k("tag_before_s"), self.tag_before_s, &mut p);
        CHANNELS_TAG_AFTER_S.check(&k("tag_after_s"), self.tag_after_s, &mut p);
        CHANNELS_READ_BATCH_LEN.check(&k("read_batch_len"), self.read_batch_len, &mut p);
        CHANNELS_READ_BATCHES_MAX.check(&k("read_batches_max"), self.read_batches_max, &mut p);
        CHANNELS_ACKS_IN_FLIGHT_MAX.check(
            &k("acks_in_flight_max"),
            self.acks_in_flight_max,
            &mut p,
        );
        CHANNELS_SINK_QUEUE_LEN.check(&k("sink_queue_len"), self.sink_queue_len, &mut p);
        CHANNELS_SPIN_US.check(&k("spin_us"), self.spin_us, &mut p);
        if let Some(&core) = self.pacing_cores.iter().find(|&&c| c >= CORE_ID_END) {
            p.push(format!(
                "channels.pacing_cores: core {core} is not a core id (0..{CORE_ID_END})"
            ));
        }
        CHANNELS_PACING_REALTIME_PRIORITY.check(
            &k("pacing_realtime_priority"),
            self.pacing_realtime_priority,
            &mut p,
        );
        CHANNELS_PRIVATE_PER_CLIENT_MAX.check(
            &k("private_per_client_max"),
            self.private_per_client_max,
            &mut p,
        );
        CHANNELS_REQUESTS_PER_MIN.check(&k("requests_per_min"), self.requests_per_min, &mut p);
        CHANNELS_REQUESTS_BURST.check(&k("requests_burst"), self.requests_burst, &mut p);
        CHANNELS_CLIENT_REQUESTS_PER_MIN.check(
            &k("client_requests_per_min"),
            self.client_requests_per_min,
            &mut p,
        );
        CHANNELS_CLIENT_REQUESTS_BURST.check(
            &k("client_requests_burst"),
            self.client_requests_burst,
            &mut p,
        );
        CHANNELS_CONTROLS_PER_MIN.check(&k("controls_per_min"), self.controls_per_min, &mut p);
        CHANNELS_CONTROLS_BURST.check(&k("controls_burst"), self.controls_burst, &mut p);
        if self
            .archive_dsn
            .as_deref()
            .is_some_and(|d| d.trim().is_empty())
        {
            p.push("channels.archive_dsn: empty (leave it out instead)".into());
        }
        if self
            .archive_ca_file
            .as_ref()
            .is_some_and(|f| f.as_os_str().is_empty())
        {
            p.push(
                "channels.archive_ca_file: empty (give the CA file's path or leave it out)".into(),
            );
        }
        let tokens = self.all_operator_tokens();
        if tokens.len() > CHANNELS_OPERATOR_TOKENS_MAX {
            p.push(format!(
                "channels.operator_tokens: {} tokens: at most {CHANNELS_OPERATOR_TOKENS_MAX}",
                tokens.len()
            ));
        }
        let lens = CHANNELS_OPERATOR_TOKEN_LEN_MIN..=CHANNELS_OPERATOR_TOKEN_LEN_MAX;
        for (i, t) in tokens.iter().enumerate() {
            let len_ok = lens.contains(&t.len());
            if !len_ok || !t.chars().all(|c| c.is_ascii_graphic()) {
                // Never the token itself: it is a secret.
                p.push(format!(
                    "channels.operator_tokens: token {} of {}: must be {}..={} printable ASCII \
                     characters without spaces",
                    i + 1,
                    tokens.len(),
                    CHANNELS_OPERATOR_TOKEN_LEN_MIN,
                    CHANNELS_OPERATOR_TOKEN_LEN_MAX
                ));
            }
        }
        if self.tag_subject.is_empty()
            || self.tag_subject.contains(['*', '>', ' '])
            || self.tag_subject.starts_with('.')
            || self.tag_subject.ends_with('.')
        {
            p.push(format!(
                "channels.tag_subject = {:?}: not a subject",
                self.tag_subject
            ));
        }
        p
    }

    /// `operator_tokens` and `operator_token` together.
    pub fn all_operator_tokens(&self) -> Vec<String> {
        let mut t = self.operator_tokens.clone();
        t.extend(self.operator_token.iter().cloned());
        t
    }

    /// The token the operator's commands send when none is given on the
    /// command line: `operator_token`, else the first of `operator_tokens`.
    pub fn client_operator_token(&self) -> Option<String> {
        self.operator_token
            .clone()
            .or_else(|| self.operator_tokens.first().cloned())
    }

    /// `TSPI_REPLAY`'s retention.
    ///
    /// # Panics
    /// On a value [`ChannelsConfig::problems`] refuses (validate first).
    pub fn replay_age_max(&self) -> Duration {
        self.replay_age_max_h
            .checked_mul(limits::S_PER_H)
            .and_then(limits::jetstream_secs)
            .expect("channels.replay_age_max_h validated")
    }

    /// `tag_before_s` in nanoseconds (exact: bounded by validation).
    pub fn tag_before_ns(&self) -> u64 {
        self.tag_before_s
            .checked_mul(limits::NS_PER_S)
            .expect("channels.tag_before_s validated")
    }

    /// `tag_after_s` in nanoseconds (exact: bounded by validation).
    pub fn tag_after_ns(&self) -> u64 {
        self.tag_after_s
            .checked_mul(limits::NS_PER_S)
            .expect("channels.tag_after_s validated")
    }
}
