//! `[publish]`: how frames are published to JetStream.

use crate::config::limits;
use serde::Deserialize;

/// How frames are published to JetStream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PublishMode {
    /// Fast-ingest batches (nats-server 2.14+): core publishes with flow
    /// acks every `fast_flow_max` messages at most. Falls back to
    /// `pipelined` (with a warning) when the server cannot do them.
    Fast,
    /// One JetStream publish per message, many acks in flight.
    Pipelined,
}

/// `[publish]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PublishConfig {
    pub mode: PublishMode,
    /// Publishes awaiting their ack at once. 1024-4096 reach the server's
    /// ceiling on a small box.
    pub acks_in_flight_max: usize,
    /// Frames taken from one ring before looking at the next.
    pub batch_len_max: usize,
    /// A publish without an ack after this long is retried (same id).
    pub ack_timeout_ms: u64,
    /// Retry backoff: doubles from the initial value up to the maximum.
    pub retry_backoff_initial_ms: u64,
    pub retry_backoff_max_ms: u64,
    /// On stop: how long to wait for outstanding acks before counting the
    /// rest as failed.
    pub drain_timeout_s: u64,
    /// Fast mode: the largest flow asked for, i.e. a flow ack at most every
    /// this many messages (1..=500; the server may lower it). Was
    /// `fast_flow`.
    #[serde(alias = "fast_flow")]
    pub fast_flow_max: u16,
    /// Fast mode: target time between flow acks. Each batch opens with the
    /// flow that gives this at the recent rate (plus what waits in the
    /// rings), so acks come soon at low rates and cheaply at high ones.
    /// 0 always asks for `fast_flow_max`.
    pub fast_ack_interval_us: u64,
    /// Fast mode: flow periods unacknowledged at once (2 or 3; 1 stalls).
    /// Was `fast_outstanding_acks`.
    #[serde(alias = "fast_outstanding_acks")]
    pub fast_acks_outstanding: u16,
    /// Fast mode: commit and open a new batch after this many messages...
    pub fast_batch_len_max: u64,
    /// ... or this many milliseconds (the server gives up on a batch idle
    /// for 10 s) ...
    pub fast_batch_age_max_ms: u64,
    /// ... or when no frame arrived for this long, so the tail of a burst
    /// that has not filled a flow period is acknowledged too. Was
    /// `fast_idle_commit_ms`.
    #[serde(alias = "fast_idle_commit_ms")]
    pub fast_commit_idle_ms: u64,
}

impl Default for PublishConfig {
    fn default() -> Self {
        use limits::*;
        PublishConfig {
            mode: PublishMode::Fast,
            acks_in_flight_max: PUBLISH_ACKS_IN_FLIGHT_MAX.default as usize,
            batch_len_max: PUBLISH_BATCH_LEN_MAX.default as usize,
            ack_timeout_ms: PUBLISH_ACK_TIMEOUT_MS.default,
            retry_backoff_initial_ms: PUBLISH_RETRY_BACKOFF_INITIAL_MS.default,
            retry_backoff_max_ms: PUBLISH_RETRY_BACKOFF_MAX_MS.default,
            drain_timeout_s: PUBLISH_DRAIN_TIMEOUT_S.default,
            fast_flow_max: PUBLISH_FAST_FLOW_MAX.default as u16,
            fast_ack_interval_us: PUBLISH_FAST_ACK_INTERVAL_US.default,
            fast_acks_outstanding: PUBLISH_FAST_ACKS_OUTSTANDING.default as u16,
            fast_batch_len_max: PUBLISH_FAST_BATCH_LEN_MAX.default,
            fast_batch_age_max_ms: PUBLISH_FAST_BATCH_AGE_MAX_MS.default,
            fast_commit_idle_ms: PUBLISH_FAST_COMMIT_IDLE_MS.default,
        }
    }
}

// The flow bound is the fast-batch protocol's own.
const _: () = assert!(limits::PUBLISH_FAST_FLOW_MAX.max == super::fast::FLOW_MAX as u64);

impl PublishConfig {
    /// Every problem with these values alone (empty: fine), each naming its
    /// key. The duplicate window's cover of the retry horizon is checked by
    /// `Config::validate`, which sees both sections.
    pub fn problems(&self) -> Vec<String> {
        use limits::*;
        let mut p = Vec::new();
        let k = |key: &str| format!("publish.{key}");
        PUBLISH_ACKS_IN_FLIGHT_MAX.check(&k("acks_in_flight_max"), self.acks_in_flight_max, &mut p);
        PUBLISH_BATCH_LEN_MAX.check(&k("batch_len_max"), self.batch_len_max, &mut p);
        PUBLISH_ACK_TIMEOUT_MS.check(&k("ack_timeout_ms"), self.ack_timeout_ms, &mut p);
        PUBLISH_RETRY_BACKOFF_INITIAL_MS.check(
            &k("retry_backoff_initial_ms"),
            self.retry_backoff_initial_ms,
            &mut p,
        );
        PUBLISH_RETRY_BACKOFF_MAX_MS.check(
            &k("retry_backoff_max_ms"),
            self.retry_backoff_max_ms,
            &mut p,
        );
        if self.retry_backoff_max_ms < self.retry_backoff_initial_ms {
            p.push(format!(
                "publish.retry_backoff_max_ms = {} is below publish.retry_backoff_initial_ms = {}",
                self.retry_backoff_max_ms, self.retry_backoff_initial_ms
            ));
        }
        PUBLISH_DRAIN_TIMEOUT_S.check(&k("drain_timeout_s"), self.drain_timeout_s, &mut p);
        PUBLISH_FAST_FLOW_MAX.check(&k("fast_flow_max"), self.fast_flow_max, &mut p);
        PUBLISH_FAST_ACK_INTERVAL_US.check(
            &k("fast_ack_interval_us"),
            self.fast_ack_interval_us,
            &mut p,
        );
        PUBLISH_FAST_ACKS_OUTSTANDING.check(
            &k("fast_acks_outstanding"),
            self.fast_acks_outstanding,
            &mut p,
        );
        PUBLISH_FAST_BATCH_LEN_MAX.check(&k("fast_batch_len_max"), self.fast_batch_len_max, &mut p);
        PUBLISH_FAST_BATCH_AGE_MAX_MS.check(
            &k("fast_batch_age_max_ms"),
            self.fast_batch_age_max_ms,
            &mut p,
        );
        PUBLISH_FAST_COMMIT_IDLE_MS.check(
            &k("fast_commit_idle_ms"),
            self.fast_commit_idle_ms,
            &mut p,
        );
        p
    }

    /// `publish.ack_timeout_ms + publish.retry_backoff_max_ms`: how long
    /// after its first send a message may be sent again with the same id.
    pub fn retry_horizon_ms(&self) -> Option<u64> {
        limits::retry_horizon_ms(self.ack_timeout_ms, self.retry_backoff_max_ms)
    }
}
