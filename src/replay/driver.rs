//! The real-time pacing thread: asks the [`Player`] what is due, waits for
//! it on the monotonic clock, hands it to the sink, and records how late it
//! was (actual minus scheduled) in an HdrHistogram.
//!
//! Waiting is sleep-then-spin: `thread::sleep` until `spin` before the due
//! time (the kernel wakes a sleeper 50-100 µs late, more on a loaded box),
//! then a busy loop on the clock, so a message leaves within microseconds of
//! its time. The loop yields the core (`sched_yield`) until the last 20 µs:
//! on a 2-core box the publisher's ack task and nats-server need that core
//! (a pure spin fell seconds behind in one 60 s run on the loaded shared
//! box; not a side-by-side measurement, see the README, Replay pacing). The cost is a core kept busy while messages are
//! closer together than `spin` (at 20k msgs/s, always): the replay runs on
//! its own thread, away from the receive cores.

use super::pacer::{Action, Control, Player, Rate};
use super::sink::Sink;
use super::source::Source;
use super::{ItemKind, ReplayError};
use crate::clock::mono_ns;
use hdrhistogram::Histogram;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest single sleep, so controls are seen within this.
const SLEEP_SLICE: Duration = Duration::from_millis(10);

/// How a replay is paced.
#[derive(Clone, Copy, Debug)]
pub struct DriverConfig {
    pub rate: Rate,
    /// Start again from the beginning at the end.
    pub looping: bool,
    /// Sleep until this long before the due time, then spin.
    pub spin: Duration,
    /// The first message plays this long after the start (lets subscribers
    /// and the read-ahead settle).
    pub start_delay: Duration,
    /// Pin the pacing thread to this core (`core_affinity`); `None`: not
    /// pinned.
    pub core: Option<usize>,
    /// Run the pacing thread under `SCHED_FIFO` at this priority (1-99;
    /// needs `CAP_SYS_NICE`). It then preempts ordinary threads the moment
    /// a message is due instead of waiting for the scheduler's next turn,
    /// and its sleeps end without timer slack. `None`: ordinary scheduling.
    pub realtime_priority: Option<u8>,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            rate: Rate::ORIGINAL,
            looping: false,
            spin: Duration::from_micros(200),
            start_delay: Duration::from_millis(50),
            core: None,
            realtime_priority: None,
        }
    }
}

/// What a replay did.
#[derive(Clone, Debug)]
pub struct PaceReport {
    pub telemetry: u64,
    pub tags: u64,
    /// Messages received before their predecessor, sent right after it.
    pub reordered: u64,
    /// Actual minus scheduled send time, ns.
    pub error_ns: Histogram<u64>,
    /// How long each read from the source took, ns: a read that waits for
    /// the read-ahead shows here, and makes the next message late.
    pub source_wait_ns: Histogram<u64>,
    /// How long each hand-off to the sink took, ns: a sink whose queue is
    /// full (JetStream behind) shows here.
    pub sink_wait_ns: Histogram<u64>,
    /// Actual minus scheduled time of the last message, ns.
    pub drift_end_ns: i64,
    /// Wall time from the first message's schedule to the last send.
    pub span: Duration,
    pub stopped: bool,
}

impl PaceReport {
    /// One JSON object for logs and the CLI.
    pub fn to_json(&self) -> serde_json::Value {
        let us = |q: f64| self.error_ns.value_at_quantile(q) as f64 / 1e3;
        serde_json::json!({
            "telemetry": self.telemetry,
            "tags": self.tags,
            "reordered": self.reordered,
            "pacing_error_us_p50": us(0.5),
            "pacing_error_us_p99": us(0.99),
            "pacing_error_us_p999": us(0.999),
            "pacing_error_us_max": self.error_ns.max() as f64 / 1e3,
            "source_wait_us_p999": self.source_wait_ns.value_at_quantile(0.999) as f64 / 1e3,
            "source_wait_us_max": self.source_wait_ns.max() as f64 / 1e3,
            "sink_wait_us_p999": self.sink_wait_ns.value_at_quantile(0.999) as f64 / 1e3,
            "sink_wait_us_max": self.sink_wait_ns.max() as f64 / 1e3,
            "drift_end_us": self.drift_end_ns as f64 / 1e3,
            "span_s": self.span.as_secs_f64(),
            "stopped": self.stopped,
        })
    }
}

/// A histogram for pacing errors: 1 ns to 1 h, 3 significant digits.
pub fn error_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// A running replay's pacing errors so far, for whoever shows them live
/// (the channels service's `/metrics`). The pacing thread records into a
/// histogram of its own and merges it in here at most every
/// [`LIVE_MERGE_NS`], only when the lock is free (`try_lock`): a scrape
/// never holds the pacer up, and the pacer takes no lock per message.
#[derive(Debug)]
pub struct LivePace {
    error_ns: Mutex<Histogram<u64>>,
}

impl Default for LivePace {
    fn default() -> Self {
        LivePace {
            error_ns: Mutex::new(error_histogram()),
        }
    }
}

impl LivePace {
    /// The pacing errors merged in so far (ns).
    pub fn error_ns(&self) -> Histogram<u64> {
        self.error_ns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Merge `pending` in (and empty it) if the lock is free, or always
    /// when `wait`.
    fn merge(&self, pending: &mut Histogram<u64>, wait: bool) {
        let guard = if wait {
            Some(self.error_ns.lock().unwrap_or_else(|e| e.into_inner()))
        } else {
            self.error_ns.try_lock().ok()
        };
        if let Some(mut h) = guard {
            // Same bounds: adding cannot fail.
            let _ = h.add(&*pending);
            pending.reset();
        }
    }
}

/// How often the pacing thread merges its errors into a [`LivePace`].
pub const LIVE_MERGE_NS: u64 = 100_000_000;

/// Wait until `due_ns` on [`mono_ns`]: sleep to `spin_ns` before, then spin.
/// Returns early (false) after at most one sleep slice so the caller can
/// look at its controls; true once the time has come.
pub fn wait_until(due_ns: u64, spin_ns: u64) -> bool {
    let now = mono_ns();
    if now >= due_ns {
        return true;
    }
    let left = due_ns - now;
    if left > spin_ns {
        let nap = Duration::from_nanos(left - spin_ns).min(SLEEP_SLICE);
        std::thread::sleep(nap);
        return mono_ns() >= due_ns;
    }
    // Spin, but give the core away while more than YIELD_NS remain: on a
    // small box the ack and read tasks this replay depends on may be
    // waiting for this very core.
    loop {
        let now = mono_ns();
        if now >= due_ns {
            return true;
        }
        if due_ns - now > YIELD_NS {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// In the last this-many nanoseconds before a message is due the pacer spins
/// without yielding.
const YIELD_NS: u64 = 20_000;

/// Play `source` into `sink` on the schedule, obeying `controls`, until the
/// data ends (not when looping) or a [`Control::Stop`]. Blocks the calling
/// thread: run it on a thread of its own.
pub fn run(
    source: &mut dyn Source,
    sink: &mut dyn Sink,
    cfg: DriverConfig,
    controls: &Receiver<Control>,
) -> Result<PaceReport, ReplayError> {
    run_live(source, sink, cfg, controls, None)
}

/// [`run`], also merging the pacing errors into `live` as it goes.
pub fn run_live(
    source: &mut dyn Source,
    sink: &mut dyn Sink,
    cfg: DriverConfig,
    controls: &Receiver<Control>,
    live: Option<&LivePace>,
) -> Result<PaceReport, ReplayError> {
    let mut pending = error_histogram();
    let mut merged_at = 0u64;
    let r = pace(source, sink, cfg, controls, &mut |error_ns, now| {
        if let Some(l) = live {
            pending.saturating_record(error_ns);
            if now.saturating_sub(merged_at) >= LIVE_MERGE_NS {
                l.merge(&mut pending, false);
                merged_at = now;
            }
        }
    });
    if let Some(l) = live {
        l.merge(&mut pending, true);
    }
    r
}

fn pace(
    source: &mut dyn Source,
    sink: &mut dyn Sink,
    cfg: DriverConfig,
    controls: &Receiver<Control>,
    on_error: &mut dyn FnMut(u64, u64),
) -> Result<PaceReport, ReplayError> {
    let spin_ns = cfg.spin.as_nanos() as u64;
    source.open(None)?;
    let mut next = source.next()?;
    let start = mono_ns() + cfg.start_delay.as_nanos() as u64;
    let mut player = Player::new(start, cfg.rate, cfg.looping);
    let mut report = PaceReport {
        telemetry: 0,
        tags: 0,
        reordered: 0,
        error_ns: error_histogram(),
        source_wait_ns: error_histogram(),
        sink_wait_ns: error_histogram(),
        drift_end_ns: 0,
        span: Duration::ZERO,
        stopped: false,
    };
    let mut first_scheduled = None;
    loop {
        while let Ok(c) = controls.try_recv() {
            match player.control(mono_ns(), c) {
                Some(Action::Reopen { from_ns }) => {
                    source.open(Some(from_ns))?;
                    next = source.next()?;
                }
                Some(Action::Finished) => report.stopped = true,
                _ => {}
            }
        }
        let now = mono_ns();
        match player.poll(now, next.as_ref().map(|i| i.rec_ns)) {
            Action::Emit { scheduled_ns } => {
                let actual = mono_ns();
                let item = next.take().expect("Emit only with an item");
                report
                    .error_ns
                    .saturating_record(actual.saturating_sub(scheduled_ns));
                on_error(actual.saturating_sub(scheduled_ns), actual);
                report.drift_end_ns = actual as i64 - scheduled_ns as i64;
                first_scheduled.get_or_insert(scheduled_ns);
                report.span = Duration::from_nanos(actual - first_scheduled.unwrap_or(actual));
                match item.kind {
                    ItemKind::Telemetry { .. } => report.telemetry += 1,
                    ItemKind::Tag { .. } => report.tags += 1,
                }
                sink.emit(item, player.epoch())?;
                let emitted = mono_ns();
                report.sink_wait_ns.saturating_record(emitted - actual);
                next = source.next()?;
                report.source_wait_ns.saturating_record(mono_ns() - emitted);
            }
            Action::Wait { until_ns } => {
                wait_until(until_ns, spin_ns);
            }
            Action::Paused => std::thread::sleep(SLEEP_SLICE),
            Action::Reopen { from_ns } => {
                source.open(Some(from_ns))?;
                next = source.next()?;
                if next.is_none() {
                    break;
                }
            }
            Action::Finished => break,
        }
    }
    report.reordered = player.reordered;
    Ok(report)
}

/// Put the calling thread on `core` and under `SCHED_FIFO` at
/// `realtime_priority`, as asked; an error names what was refused and why.
pub fn place_current_thread(
    core: Option<usize>,
    realtime_priority: Option<u8>,
) -> Result<(), ReplayError> {
    if let Some(core) = core {
        // Checked first: core_affinity panics on a core past CPU_SETSIZE.
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        if !cores.iter().any(|c| c.id == core)
            || !core_affinity::set_for_current(core_affinity::CoreId { id: core })
        {
            return Err(ReplayError::Placement(format!(
                "cannot pin the pacing thread to core {core} (this process may use cores {:?})",
                cores.iter().map(|c| c.id).collect::<Vec<_>>()
            )));
        }
    }
    if let Some(priority) = realtime_priority {
        if !(1..=99).contains(&priority) {
            return Err(ReplayError::Placement(format!(
                "realtime priority {priority} is outside 1..=99"
            )));
        }
        let param = libc::sched_param {
            sched_priority: i32::from(priority),
        };
        // SAFETY: sched_setscheduler(2) on the calling thread (pid 0) with
        // a valid policy and an initialised parameter.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(ReplayError::Placement(format!(
                "cannot run the pacing thread under SCHED_FIFO priority {priority}: {e} \
                 (needs CAP_SYS_NICE, or root; or leave realtime_priority unset)"
            )));
        }
    }
    Ok(())
}

/// Everything a finished replay reports.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub pace: PaceReport,
    pub source: super::source::SourceStats,
    pub sink: super::sink::SinkStats,
}

impl Outcome {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "pace": self.pace.to_json(),
            "source": self.source,
            "sink": self.sink,
        })
    }
}

/// A replay running on its own thread.
pub struct Job {
    controls: std::sync::mpsc::Sender<Control>,
    done: tokio::sync::oneshot::Receiver<Result<Outcome, ReplayError>>,
}

/// How long a finished replay waits for its last acks.
pub const FINISH_WAIT: Duration = Duration::from_secs(10);

impl Job {
    /// Start pacing `source` into `sink` on a new thread named `name`.
    pub fn spawn(
        name: &str,
        source: Box<dyn Source>,
        sink: Box<dyn Sink>,
        cfg: DriverConfig,
    ) -> Result<Job, ReplayError> {
        Job::spawn_live(name, source, sink, cfg, None)
    }

    /// [`Job::spawn`], its pacing errors merged into `live` as it goes.
    pub fn spawn_live(
        name: &str,
        mut source: Box<dyn Source>,
        mut sink: Box<dyn Sink>,
        cfg: DriverConfig,
        live: Option<Arc<LivePace>>,
    ) -> Result<Job, ReplayError> {
        let (controls, rx) = std::sync::mpsc::channel();
        let (tx, done) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("replay-{name}"))
            .spawn(move || {
                if let Err(e) = place_current_thread(cfg.core, cfg.realtime_priority) {
                    let _ = tx.send(Err(e));
                    return;
                }
                let r = run_live(source.as_mut(), sink.as_mut(), cfg, &rx, live.as_deref()).map(
                    |pace| Outcome {
                        pace,
                        source: source.stats(),
                        sink: sink.finish(FINISH_WAIT),
                    },
                );
                let _ = tx.send(r);
            })
            .map_err(|e| ReplayError::Source(format!("cannot start the pacing thread: {e}")))?;
        Ok(Job { controls, done })
    }

    /// Send a control; false when the replay has already ended.
    pub fn control(&self, c: Control) -> bool {
        self.controls.send(c).is_ok()
    }

    /// A sender for controls, for whoever else needs one.
    pub fn controller(&self) -> std::sync::mpsc::Sender<Control> {
        self.controls.clone()
    }

    /// Wait for the end (async).
    pub async fn wait(self) -> Result<Outcome, ReplayError> {
        self.done
            .await
            .unwrap_or_else(|_| Err(ReplayError::Source("pacing thread panicked".into())))
    }

    /// Wait for the end from a plain thread.
    pub fn wait_blocking(self) -> Result<Outcome, ReplayError> {
        self.done
            .blocking_recv()
            .unwrap_or_else(|_| Err(ReplayError::Source("pacing thread panicked".into())))
    }
}
