//! `tspi run --config FILE`: the appliance in one process.
//!
//! Starts every role the file enables, side by side, and stops them
//! together:
//!
//! | role       | enabled when                        | alone                  |
//! |------------|-------------------------------------|------------------------|
//! | `ingest`   | `[ingest] udp` lists an address     | `tspi ingest`          |
//! | `archive`  | `[archive] postgres` is given       | `tspi archive`         |
//! | `channels` | `[channels] enabled = true`         | `tspi channels serve`  |
//! | `console`  | `[console] enabled = true`          | `tspi console serve`   |
//!
//! A file that enables none is an error naming those four keys. The first
//! two are what the role cannot run without; the channels service and the
//! console's hub need nothing but NATS, so they are switched on by name
//! (`enabled` is read by `tspi run` and `tspi validate` only). The
//! documented example, `config/tspi.toml`, enables ingest alone.
//!
//! Threads, so that nothing else ever runs on a receive core:
//! - the receive threads, one per `ingest.cores` entry, pinned there (as
//!   `tspi ingest` does);
//! - the publisher's runtime: up to [`PUBLISH_THREADS_MAX`] threads, each
//!   pinned to one of the other cores in turn (as `tspi ingest` does);
//! - the service pool, for archiving, the channels service, the console's
//!   hub and the metrics endpoint: a second runtime of [`SERVICE_THREADS`] workers and at most
//!   [`SERVICE_BLOCKING_THREADS_MAX`] blocking threads, each allowed on
//!   every core not given to a receive thread (and only those);
//! - replay pacing threads (started by the channels service): on
//!   `channels.pacing_cores` in turn; when that list is empty, `tspi run`
//!   fills it with the cores not given to a receive thread; a listed
//!   receive core is an error.
//!
//! When ingest is off nothing is pinned. When every core has a receive
//! thread, ingest alone runs with its publisher unpinned (with a warning,
//! as `tspi ingest` does), and archive, channels or console next to it is
//! an error: they would have to share the receive cores.
//!
//! One Prometheus endpoint, `[metrics] addr` (or `--metrics-addr`), serves
//! every role's families (`tspi_ingest_*`, `tspi_archive_*`,
//! `tspi_channels_*`, `tspi_console_*`); reports, JSON lines and NATS
//! snapshots are each role's, as when it runs alone. The console's hub
//! also serves its own `/metrics` on `[console] listen`, as `tspi console
//! serve` does (there with its HTTP server's `tspi_http_*` families).
//!
//! Stop: SIGTERM, SIGINT or `--duration-s` stops every role at once; each
//! drains as it does alone (ingest: receive threads, then the rings, then the
//! acks; archive: the batches in flight; channels: every replay, announcing
//! its stop; console: its listener, NATS readers and ticker, then its
//! WebSocket clients as the process ends). Then every role's account is printed on stderr (and with
//! `--json` one `{"final_accounts": {...}}` line on stdout). A role that
//! stops by itself (its error at start, for instance) stops the others. The
//! exit status is 0 when every role stopped cleanly and ingest's account
//! balances, 1 otherwise, 2 when the file is refused before anything
//! starts.

use anyhow::Context as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tspi::config::{Config, Machine, Role};
use tspi::logging::Level;
use tspi::metrics::Exposition;
use tspi::replay::service::{self, ServiceStats};
use tspi::{archive, ingest};

/// Workers of the service pool (archiving, the channels service, the
/// console's hub, the metrics endpoint). Each ran on a runtime of two in its own process.
pub const SERVICE_THREADS: usize = 2;
/// Blocking threads of the service pool (name lookups, for instance).
pub const SERVICE_BLOCKING_THREADS_MAX: usize = 8;
/// Publisher runtime threads at most (as `tspi ingest`).
pub const PUBLISH_THREADS_MAX: usize = 4;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Configuration file (see config/tspi.toml): its sections say which
    /// roles run.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    #[command(flatten)]
    pub metrics: super::MetricsArgs,
    /// Stop by itself after this many seconds (as on SIGTERM).
    #[arg(long, value_name = "S")]
    pub duration_s: Option<u64>,
}

/// The roles a configuration file enables (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Roles {
    pub ingest: bool,
    pub archive: bool,
    pub channels: bool,
    pub console: bool,
}

impl Roles {
    /// The roles the file enables: [`Config::roles_enabled`], the rule
    /// `tspi validate` checks by too.
    pub fn of(cfg: &Config) -> Roles {
        let on = cfg.roles_enabled();
        Roles {
            ingest: on.contains(&Role::Ingest),
            archive: on.contains(&Role::Archive),
            channels: on.contains(&Role::Channels),
            console: on.contains(&Role::Console),
        }
    }

    /// The roles enabled, in the order they start.
    pub fn names(self) -> Vec<&'static str> {
        [
            ("ingest", self.ingest),
            ("archive", self.archive),
            ("channels", self.channels),
            ("console", self.console),
        ]
        .into_iter()
        .filter_map(|(n, on)| on.then_some(n))
        .collect()
    }

    /// [`Roles::of`], or an error naming what would enable each role.
    pub fn require(cfg: &Config) -> anyhow::Result<Roles> {
        let r = Roles::of(cfg);
        anyhow::ensure!(
            r != Roles::default(),
            "the file enables no role: give [ingest] udp (ingest), [archive] postgres \
             (archive), [channels] enabled = true (channels) or [console] enabled = true \
             (console)"
        );
        Ok(r)
    }
}

/// Check what the enabled roles need, before anything starts: the same
/// check `tspi validate` and each role alone make.
fn validate(cfg: &Config, roles: Roles) -> anyhow::Result<()> {
    let mut on = Vec::new();
    for (role, yes) in [
        (Role::Ingest, roles.ingest),
        (Role::Archive, roles.archive),
        (Role::Channels, roles.channels),
        (Role::Console, roles.console),
    ] {
        if yes {
            on.push(role);
        }
    }
    cfg.validate_for(&on, &Machine::current())?;
    Ok(())
}

/// Where each kind of thread may run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Placement {
    /// Cores of the receive threads (empty: ingest is off).
    receive: Vec<usize>,
    /// The process's other cores: publisher, service pool, pacing. Empty:
    /// nothing is pinned.
    others: Vec<usize>,
}

/// `allowed`: the cores this process may use.
fn placement(cfg: &mut Config, roles: Roles, allowed: &[usize]) -> anyhow::Result<Placement> {
    if !roles.ingest {
        return Ok(Placement::default());
    }
    let receive = cfg.receive_cores();
    if let Some(c) = receive.iter().find(|c| !allowed.contains(c)) {
        anyhow::bail!("ingest.cores: core {c} is not one this process may use ({allowed:?})");
    }
    let others: Vec<usize> = allowed
        .iter()
        .copied()
        .filter(|c| !receive.contains(c))
        .collect();
    if others.is_empty() {
        anyhow::ensure!(
            !roles.archive && !roles.channels && !roles.console,
            "every core this process may use ({allowed:?}) has a receive thread: archive, \
             channels and console need one left (fewer ingest.workers, or other ingest.cores)"
        );
        tracing::warn!(
            "every core has a receive thread: the publisher runs unpinned, sharing them"
        );
    }
    if roles.channels && !others.is_empty() {
        let pacing = &mut cfg.channels.pacing_cores;
        if pacing.is_empty() {
            pacing.clone_from(&others);
        } else if let Some(c) = pacing.iter().find(|c| receive.contains(c)) {
            anyhow::bail!(
                "channels.pacing_cores: core {c} has a receive thread; the other cores are \
                 {others:?}"
            );
        }
    }
    Ok(Placement { receive, others })
}

/// Allow the calling thread on `cores` only (an empty list: leave it).
fn pin_current_to(cores: &[usize]) {
    if cores.is_empty() {
        return;
    }
    // SAFETY: `set` is a plain bit set that CPU_ZERO initialises; every core
    // came from the process's own affinity mask, so below CPU_SETSIZE;
    // sched_setaffinity(0, ..) applies to the calling thread.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &c in cores {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    if !ok {
        tracing::warn!(
            ?cores,
            error = %std::io::Error::last_os_error(),
            "cannot restrict a thread to the cores without receive threads"
        );
    }
}

/// The publisher's runtime: pinned one core each, in turn, to the cores
/// without receive threads (exactly as `tspi ingest`).
fn publish_runtime(others: &[usize]) -> anyhow::Result<tokio::runtime::Runtime> {
    let cores: Vec<core_affinity::CoreId> = others
        .iter()
        .map(|&id| core_affinity::CoreId { id })
        .collect();
    let next = Arc::new(AtomicUsize::new(0));
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(others.len().clamp(1, PUBLISH_THREADS_MAX))
        .thread_name("tspi-publish")
        .on_thread_start(move || {
            if !cores.is_empty() {
                let k = next.fetch_add(1, Ordering::Relaxed) % cores.len();
                core_affinity::set_for_current(cores[k]);
            }
        })
        .enable_all()
        .build()?)
}

/// The bounded pool of archiving, channels, the console and the metrics
/// endpoint: every
/// thread allowed on `others` only. (The set, not one core each: pacing
/// threads start from these and move to their own core of `others`.)
fn service_runtime(others: &[usize]) -> anyhow::Result<tokio::runtime::Runtime> {
    let others = others.to_vec();
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(SERVICE_THREADS)
        .max_blocking_threads(SERVICE_BLOCKING_THREADS_MAX)
        .thread_name("tspi-service")
        .on_thread_start(move || pin_current_to(&others))
        .enable_all()
        .build()?)
}

/// How a role ended.
enum Ended {
    Ingest(anyhow::Result<ingest::Account>),
    Archive(anyhow::Result<archive::Account>),
    Channels(anyhow::Result<()>),
    /// The hub's counters at its stop.
    Console(anyhow::Result<tspi::console::hub::HubCounts>),
}

impl Ended {
    fn role(&self) -> &'static str {
        match self {
            Ended::Ingest(_) => "ingest",
            Ended::Archive(_) => "archive",
            Ended::Channels(_) => "channels",
            Ended::Console(_) => "console",
        }
    }
}

/// The channels service's counters, active replays and each running
/// replay's pacing errors as Prometheus text (read at scrape).
fn render_channels(s: &ServiceStats) -> String {
    s.render_prometheus()
}

pub fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = Config::load(&a.config)?;
    a.metrics.apply(&mut cfg.metrics);
    let roles = Roles::require(&cfg).with_context(|| format!("{}", a.config.display()))?;
    validate(&cfg, roles).with_context(|| format!("{}", a.config.display()))?;
    // Read before any thread of this process is pinned: a pinned thread
    // sees only its own cores.
    let allowed: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let place = placement(&mut cfg, roles, &allowed)?;
    tracing::info!(
        roles = ?roles.names(),
        receive_cores = ?place.receive,
        other_cores = ?place.others,
        "tspi run: starting"
    );
    pin_current_to(&place.others);

    let publish_rt = roles
        .ingest
        .then(|| publish_runtime(&place.others))
        .transpose()?;
    let service_rt = (roles.archive || roles.channels || roles.console)
        .then(|| service_runtime(&place.others))
        .transpose()?;
    let home = service_rt
        .as_ref()
        .or(publish_rt.as_ref())
        .expect("a role is enabled")
        .handle()
        .clone();

    let exposition = Exposition::new();
    exposition.register(tspi::nats::render_prometheus);
    if let Some(addr) = cfg.metrics.addr {
        let (bound, _task) = home
            .block_on(tspi::metrics::serve_exposition(addr, exposition.clone()))
            .with_context(|| format!("serving /metrics on {addr}"))?;
        tracing::info!(%bound, roles = ?roles.names(), "prometheus /metrics");
    }
    let prometheus = |e: &Exposition| cfg.metrics.addr.map(|_| e.clone());

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<Ended>();
    let json = cfg.metrics.json;

    if let Some(rt) = &publish_rt {
        let hooks = ingest::Hooks {
            json,
            prometheus: prometheus(&exposition),
            ..ingest::Hooks::default()
        };
        let (cfg, stop, tx) = (cfg.clone(), stop(), ended_tx.clone());
        rt.spawn(async move {
            let _ = tx.send(Ended::Ingest(ingest::run(cfg, hooks, stop).await));
        });
    }
    let channel_stats = Arc::new(ServiceStats::default());
    if let Some(rt) = &service_rt {
        if roles.archive {
            let mut cfg = cfg.clone();
            if cfg.nats.name == "tspi-ingest" {
                cfg.nats.name = "tspi-archive".into();
            }
            let dsn = cfg
                .archive
                .postgres
                .clone()
                .expect("the archive role has a DSN");
            let prom = prometheus(&exposition);
            let (stop, tx) = (stop(), ended_tx.clone());
            rt.spawn(async move {
                let stats = Arc::new(archive::Stats::default());
                let r = archive::run_reporting(cfg, dsn, stats, json, prom, stop).await;
                let _ = tx.send(Ended::Archive(r.map_err(anyhow::Error::from)));
            });
        }
        if roles.channels {
            let mut cfg = cfg.clone();
            if cfg.nats.name == "tspi-ingest" {
                cfg.nats.name = "tspi-channels".into();
            }
            let stats = channel_stats.clone();
            if cfg.metrics.addr.is_some() {
                let s = stats.clone();
                exposition.register(move || render_channels(&s));
            }
            let opts = super::channels::service_options(&cfg);
            let (stop, tx) = (stop(), ended_tx.clone());
            rt.spawn(async move {
                let r = async {
                    let client = ingest::connect(&cfg.nats).await?;
                    service::serve(client, opts, stats, stop).await
                }
                .await;
                let _ = tx.send(Ended::Channels(r));
            });
        }
        if roles.console {
            let mut cfg = cfg.clone();
            if cfg.nats.name == "tspi-ingest" {
                cfg.nats.name = "tspi-console".into();
            }
            let prom = prometheus(&exposition);
            let (stop, tx) = (stop(), ended_tx.clone());
            rt.spawn(async move {
                let r = async {
                    let (hub, tasks) = super::console::start_hub(&cfg).await?;
                    if let Some(e) = prom {
                        let h = hub.clone();
                        e.register(move || h.render_console_prometheus());
                    }
                    stop.await;
                    for t in tasks {
                        t.abort();
                    }
                    anyhow::Ok(hub.stats.load())
                }
                .await;
                let _ = tx.send(Ended::Console(r));
            });
        }
    }
    drop(ended_tx);

    let expected = roles.names();
    let duration = a.duration_s.map(Duration::from_secs);
    let mut ended: Vec<Ended> = home.block_on(async {
        let mut ended = Vec::new();
        tokio::select! {
            () = super::ingest::shutdown(duration) => {}
            Some(e) = ended_rx.recv() => {
                tracing::error!(role = e.role(), "a role stopped by itself: stopping every role");
                ended.push(e);
            }
        }
        stop_tx.send_replace(true);
        while let Some(e) = ended_rx.recv().await {
            ended.push(e);
        }
        ended
    });

    ended.sort_by_key(|e| expected.iter().position(|r| *r == e.role()));
    let mut ok = true;
    let mut accounts = serde_json::Map::new();
    for role in &expected {
        if !ended.iter().any(|e| e.role() == *role) {
            ok = false;
            tspi::notice!(
                Error,
                "tspi run: {role}: ended without an account (panicked)"
            );
        }
    }
    for e in &ended {
        match e {
            Ended::Ingest(Ok(account)) => {
                super::ingest::print_account(account);
                ok &= account.balanced();
                accounts.insert(
                    "ingest".into(),
                    serde_json::json!({ "account": account, "balanced": account.balanced() }),
                );
            }
            Ended::Archive(Ok(account)) => {
                super::archive::print_account(account);
                accounts.insert("archive".into(), serde_json::json!({ "account": account }));
            }
            Ended::Channels(Ok(())) => {
                let counts = channel_stats.load();
                tspi::notice!(
                    Info,
                    "tspi channels: final account: {}",
                    tspi::metrics::all_counts_fragment(&counts, ", ")
                );
                accounts.insert("channels".into(), serde_json::json!({ "account": counts }));
            }
            Ended::Console(Ok(counts)) => {
                tspi::notice!(
                    Info,
                    "tspi console: final account: {}",
                    tspi::metrics::all_counts_fragment(counts, ", ")
                );
                accounts.insert("console".into(), serde_json::json!({ "account": counts }));
            }
            Ended::Ingest(Err(err))
            | Ended::Archive(Err(err))
            | Ended::Channels(Err(err))
            | Ended::Console(Err(err)) => {
                ok = false;
                tspi::notice!(Error, "tspi {}: failed: {err:#}", e.role());
                accounts.insert(
                    e.role().into(),
                    serde_json::json!({ "error": format!("{err:#}") }),
                );
            }
        }
    }
    if json {
        println!("{}", serde_json::json!({ "final_accounts": accounts }));
    }
    tspi::logging::notice(
        if ok { Level::Info } else { Level::Error },
        &format!(
            "tspi run: stopped {} ({})",
            expected.join(", "),
            if ok { "every role cleanly" } else { "FAILED" }
        ),
    );
    drop(service_rt);
    drop(publish_rt);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(text: &str) -> Config {
        Config::from_toml(text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn each_role_by_its_key() {
        assert_eq!(Roles::of(&cfg("")), Roles::default());
        let e = Roles::require(&cfg("[channels]\nlivestream = false\n"))
            .unwrap_err()
            .to_string();
        for key in [
            "[ingest] udp",
            "[archive] postgres",
            "[channels] enabled",
            "[console] enabled",
        ] {
            assert!(e.contains(key), "{key} in {e}");
        }
        let all = cfg(
            "[ingest]\nudp = [\"127.0.0.1:5000\"]\n[archive]\npostgres = \"host=db\"\n\
             [channels]\nenabled = true\n[console]\nenabled = true\n",
        );
        assert_eq!(
            Roles::require(&all).unwrap().names(),
            ["ingest", "archive", "channels", "console"]
        );
        let console = cfg("[console]\nenabled = true\nlisten = \"127.0.0.1:9000\"\n");
        assert_eq!(Roles::require(&console).unwrap().names(), ["console"]);
        let archive = cfg("[archive]\npostgres = \"host=db\"\n");
        assert_eq!(Roles::of(&archive).names(), ["archive"]);
        // The documented example: ingest alone.
        let example =
            Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tspi.toml")).unwrap();
        assert_eq!(Roles::of(&example).names(), ["ingest"]);
    }

    #[test]
    fn a_role_alone_is_validated_without_the_others() {
        let archive = cfg("[archive]\npostgres = \"host=db\"\n");
        validate(&archive, Roles::of(&archive)).unwrap();
        let bad = cfg("[archive]\npostgres = \"host=db\"\nbatch_len_max = 0\n");
        let e = validate(&bad, Roles::of(&bad)).unwrap_err().to_string();
        assert!(e.contains("archive.batch_len_max"), "{e}");
        let channels = cfg("[channels]\nenabled = true\nprivate_idle_s = 0\n");
        let e = validate(&channels, Roles::of(&channels))
            .unwrap_err()
            .to_string();
        assert!(e.contains("channels.private_idle_s"), "{e}");
    }

    #[test]
    fn nothing_else_runs_on_a_receive_core() {
        let roles = Roles {
            ingest: true,
            archive: true,
            channels: true,
            console: true,
        };
        let mut c = cfg("[ingest]\nudp = [\"127.0.0.1:5000\"]\nworkers = 2\ncores = [1, 3]\n");
        let p = placement(&mut c, roles, &[0, 1, 2, 3]).unwrap();
        assert_eq!(p.receive, [1, 3]);
        assert_eq!(p.others, [0, 2]);
        assert_eq!(c.channels.pacing_cores, [0, 2], "pacing on the other cores");

        let mut c = cfg(
            "[ingest]\nudp = [\"127.0.0.1:5000\"]\ncores = [1]\n[channels]\npacing_cores = [1]\n",
        );
        let e = placement(&mut c, roles, &[0, 1]).unwrap_err().to_string();
        assert!(e.contains("channels.pacing_cores: core 1"), "{e}");

        let mut c = cfg("[ingest]\nudp = [\"127.0.0.1:5000\"]\nworkers = 2\n");
        let e = placement(&mut c, roles, &[0, 1]).unwrap_err().to_string();
        assert!(e.contains("every core"), "{e}");
        let ingest_alone = Roles {
            ingest: true,
            ..Roles::default()
        };
        assert!(
            placement(&mut c, ingest_alone, &[0, 1])
                .unwrap()
                .others
                .is_empty()
        );

        let mut c = cfg("[ingest]\nudp = [\"127.0.0.1:5000\"]\ncores = [7]\n");
        assert!(placement(&mut c, roles, &[0, 1]).is_err(), "core 7 missing");

        let mut c = cfg("[archive]\npostgres = \"x\"\n");
        let archive = Roles {
            archive: true,
            ..Roles::default()
        };
        assert_eq!(
            placement(&mut c, archive, &[0, 1]).unwrap(),
            Placement::default()
        );
    }

    #[test]
    fn channels_counters_render_as_prometheus() {
        let s = ServiceStats::default();
        s.groups_started.store(3, Ordering::Relaxed);
        let text = render_channels(&s);
        assert!(text.contains("# TYPE tspi_channels_groups_started_total counter\n"));
        assert!(text.contains("\ntspi_channels_groups_started_total 3\n"));
        // HELP and TYPE per family; one line per scalar, one per reason,
        // one per kind of replay; no replay running: no pacing series.
        let reasons = tspi::channels::directory::REFUSALS_LEN;
        assert_eq!(text.lines().count(), 7 * 2 + 6 + reasons + 2 + 2 + 2);
        assert!(text.contains("\ntspi_channels_replays_active{kind=\"group\"} 0\n"));
        // A running replay's pacing errors, labelled by its channel.
        s.groups_active.store(1, Ordering::Relaxed);
        let live = std::sync::Arc::new(tspi::replay::driver::LivePace::default());
        s.pacing.lock().unwrap().insert(
            tspi::channels::directory::ReplayId::for_tests(7),
            ("replay.a".into(), live),
        );
        let text = render_channels(&s);
        assert!(text.contains("\ntspi_channels_replays_active{kind=\"group\"} 1\n"));
        assert!(text.contains(
            "\ntspi_channels_replay_pacing_error_seconds_bucket{channel=\"replay.a\",le=\"+Inf\"} 0\n"
        ));
        assert!(text.contains(
            "\ntspi_channels_replay_pacing_error_seconds_count{channel=\"replay.a\"} 0\n"
        ));
    }
}
