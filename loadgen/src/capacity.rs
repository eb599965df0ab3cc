//! Capacity search as a state machine: the caller runs each step it is
//! asked for (a measured run at an offered rate) and feeds the summary
//! back. The rate steps up geometrically until a step misses the objective
//! (loss, or p99 over the limit), then bisects between the best passing
//! and the lowest failing rate until they are within the resolution.

use crate::report::Summary;

/// What a step must meet to pass.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Objective {
    /// p99 end-to-end latency limit.
    pub p99_ms_max: f64,
    /// Largest lost fraction of sent datagrams (0: none may be lost).
    pub loss_max: f64,
}

impl Objective {
    pub fn met_by(&self, s: &Summary) -> bool {
        s.sent > 0
            && s.received > 0
            && (s.lost as f64) <= self.loss_max * s.sent as f64
            && s.latency.p99_ms <= self.p99_ms_max
    }
}

/// How to search.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SearchConfig {
    /// First offered rate (datagrams/s).
    pub start_rate_per_s: f64,
    /// Never offer more than this.
    pub max_rate_per_s: f64,
    /// Give up below this (nothing passes).
    pub min_rate_per_s: f64,
    /// Ramp factor between steps (> 1).
    pub step_factor: f64,
    /// Stop bisecting when the bracket is narrower than this fraction of
    /// the failing rate.
    pub resolution: f64,
    /// Most steps in one search.
    pub steps_max: u32,
    pub objective: Objective,
}

/// Why a search config is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("capacity search: {0}")]
pub struct SearchConfigError(&'static str);

impl SearchConfig {
    pub fn validate(&self) -> Result<(), SearchConfigError> {
        let e = |m| Err(SearchConfigError(m));
        if !(self.min_rate_per_s > 0.0 && self.min_rate_per_s <= self.start_rate_per_s) {
            return e("need 0 < min rate <= start rate");
        }
        if self.start_rate_per_s > self.max_rate_per_s {
            return e("start rate is above the max rate");
        }
        if !(self.step_factor > 1.0 && self.step_factor.is_finite()) {
            return e("step factor must be above 1");
        }
        if !(self.resolution > 0.0 && self.resolution < 1.0) {
            return e("resolution must be between 0 and 1");
        }
        if self.steps_max == 0 {
            return e("need at least one step");
        }
        if !(self.objective.p99_ms_max > 0.0 && (0.0..1.0).contains(&self.objective.loss_max)) {
            return e("objective: p99 limit > 0 and 0 <= loss < 1");
        }
        Ok(())
    }
}

/// The phase a step was taken in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Ramp,
    Bisect,
}

/// One measured step.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Step {
    pub phase: Phase,
    pub rate_per_s: f64,
    pub passed: bool,
    pub summary: Summary,
}

/// The search's state.
#[derive(Clone, Debug)]
pub struct CapacitySearch {
    cfg: SearchConfig,
    steps: Vec<Step>,
    best_pass: Option<f64>,
    lowest_fail: Option<f64>,
}

/// The answer.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SearchResult {
    /// Highest offered rate that met the objective (None: none did).
    pub capacity_per_s: Option<f64>,
    /// Lowest offered rate that missed it (None: the max rate passed).
    pub lowest_failing_per_s: Option<f64>,
    pub config: SearchConfig,
    pub steps: Vec<Step>,
}

impl CapacitySearch {
    pub fn new(cfg: SearchConfig) -> Result<Self, SearchConfigError> {
        cfg.validate()?;
        Ok(CapacitySearch {
            cfg,
            steps: Vec::new(),
            best_pass: None,
            lowest_fail: None,
        })
    }

    /// The rate to run next, and in which phase; `None` when done.
    pub fn next_step(&self) -> Option<(Phase, f64)> {
        if self.steps.len() >= self.cfg.steps_max as usize {
            return None;
        }
        match (self.best_pass, self.lowest_fail) {
            (_, None) => match self.steps.last() {
                None => Some((Phase::Ramp, self.cfg.start_rate_per_s)),
                Some(last) if last.rate_per_s >= self.cfg.max_rate_per_s => None,
                Some(last) => Some((
                    Phase::Ramp,
                    (last.rate_per_s * self.cfg.step_factor).min(self.cfg.max_rate_per_s),
                )),
            },
            (lo, Some(hi)) => {
                let lo = lo.unwrap_or(0.0);
                if hi - lo <= self.cfg.resolution * hi {
                    return None;
                }
                let mid = (lo + hi) / 2.0;
                (mid >= self.cfg.min_rate_per_s).then_some((Phase::Bisect, mid))
            }
        }
    }

    /// Feed back the summary of the step [`CapacitySearch::next_step`] asked for.
    ///
    /// # Panics
    /// If no step was due (a programming error).
    pub fn record(&mut self, summary: Summary) -> &Step {
        let (phase, rate) = self.next_step().expect("a step was due");
        let passed = self.cfg.objective.met_by(&summary);
        if passed {
            self.best_pass = Some(self.best_pass.map_or(rate, |b| b.max(rate)));
        } else {
            self.lowest_fail = Some(self.lowest_fail.map_or(rate, |f| f.min(rate)));
        }
        self.steps.push(Step {
            phase,
            rate_per_s: rate,
            passed,
            summary,
        });
        self.steps.last().expect("just pushed")
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    pub fn result(&self) -> SearchResult {
        SearchResult {
            capacity_per_s: self.best_pass,
            lowest_failing_per_s: self.lowest_fail,
            config: self.cfg,
            steps: self.steps.clone(),
        }
    }
}

impl SearchResult {
    /// The table of every step.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "| step | phase  | offered/s | sent | lost | dup | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | result |"
        );
        let _ = writeln!(
            s,
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        for (i, st) in self.steps.iter().enumerate() {
            let l = &st.summary.latency;
            let _ = writeln!(
                s,
                "| {} | {:?} | {:.0} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
                i + 1,
                st.phase,
                st.rate_per_s,
                st.summary.sent,
                st.summary.lost,
                st.summary.duplicated,
                l.p50_ms,
                l.p90_ms,
                l.p99_ms,
                l.p99_9_ms,
                l.max_ms,
                if st.passed { "pass" } else { "FAIL" }
            );
        }
        let _ = match self.capacity_per_s {
            Some(c) => writeln!(
                s,
                "\ncapacity: {c:.0} datagrams/s meet p99 <= {} ms with loss <= {}",
                self.config.objective.p99_ms_max, self.config.objective.loss_max
            ),
            None => writeln!(s, "\ncapacity: no offered rate met the objective"),
        };
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Percentiles;

    fn cfg() -> SearchConfig {
        SearchConfig {
            start_rate_per_s: 10_000.0,
            max_rate_per_s: 1_000_000.0,
            min_rate_per_s: 1_000.0,
            step_factor: 2.0,
            resolution: 0.05,
            steps_max: 40,
            objective: Objective {
                p99_ms_max: 10.0,
                loss_max: 0.0,
            },
        }
    }

    /// A system that holds `capacity` per second: above it, it loses.
    fn run(rate: f64, capacity: f64) -> Summary {
        let sent = rate as u64;
        Summary {
            offered_rate_per_s: rate,
            tracks: 1,
            rate_hz: rate,
            scheduled: sent,
            sent,
            received: sent.min(capacity as u64),
            lost: sent.saturating_sub(capacity as u64),
            duplicated: 0,
            unknown: 0,
            latency: Percentiles {
                count: sent,
                p99_ms: 1.0,
                ..Percentiles::default()
            },
        }
    }

    fn search(capacity: f64, c: SearchConfig) -> SearchResult {
        let mut s = CapacitySearch::new(c).unwrap();
        while let Some((_, rate)) = s.next_step() {
            s.record(run(rate, capacity));
        }
        s.result()
    }

    #[test]
    fn ramps_then_bisects_to_the_resolution() {
        let r = search(123_456.0, cfg());
        let rates: Vec<f64> = r.steps.iter().map(|s| s.rate_per_s).collect();
        assert_eq!(
            &rates[..5],
            &[10_000.0, 20_000.0, 40_000.0, 80_000.0, 160_000.0]
        );
        assert!(
            r.steps[..4]
                .iter()
                .all(|s| s.passed && s.phase == Phase::Ramp)
        );
        assert!(!r.steps[4].passed);
        assert!(r.steps[5..].iter().all(|s| s.phase == Phase::Bisect));
        let cap = r.capacity_per_s.unwrap();
        let fail = r.lowest_failing_per_s.unwrap();
        assert!(cap <= 123_456.0 && fail > 123_456.0, "{cap} {fail}");
        assert!(fail - cap <= 0.05 * fail);
        assert!(r.table().contains("capacity: "), "{}", r.table());
    }

    #[test]
    fn stops_at_the_max_and_below_the_min() {
        let r = search(1e9, cfg());
        assert_eq!(r.capacity_per_s, Some(1_000_000.0));
        assert_eq!(r.lowest_failing_per_s, None);
        let r = search(10.0, cfg());
        assert_eq!(r.capacity_per_s, None);
        assert!(r.steps.iter().all(|s| !s.passed && s.rate_per_s >= 1_000.0));
        assert!(r.table().contains("no offered rate"));
        let mut c = cfg();
        c.steps_max = 3;
        assert_eq!(search(123_456.0, c).steps.len(), 3);
    }

    #[test]
    fn latency_over_the_limit_fails_a_step() {
        let mut s = run(1000.0, 1e9);
        assert!(cfg().objective.met_by(&s));
        s.latency.p99_ms = 10.5;
        assert!(!cfg().objective.met_by(&s));
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut c = cfg();
        c.step_factor = 1.0;
        assert!(CapacitySearch::new(c).is_err());
        let mut c = cfg();
        c.start_rate_per_s = 2e6;
        assert!(CapacitySearch::new(c).is_err());
    }
}
