//! UDP receive path: pinned per-core threads, io_uring multishot RECVMSG or
//! batched recvmmsg, parse on the receiving core, push into that core's SPSC
//! ring.
//!
//! ```text
//! UDP ─► worker k (core k): io_uring multishot RECVMSG + provided buffers
//!                           │ or recvmmsg × batch_len
//!                           ├ stamp once per batch (wall + monotonic)
//!                           ├ source allow-list   ─► rejected[source]
//!                           ├ codec::parse        ─► rejected[reason]
//!                           ├ sensor allow bitmap ─► filtered
//!                           └ rtrb push           ─► ring_dropped when full
//!                                 │
//!                                 ▼ Consumer<Received> (publisher)
//! ```
//!
//! Every number on the path is fixed at [`Receivers::start`]: buffers, ring
//! slots, sockets. Nothing is allocated, logged or locked per datagram;
//! counters are stored once per batch ([`ReceiverStats`]).
//!
//! Files: `config.rs` (what to do, checked before anything opens),
//! `socket.rs` (bind, `SO_REUSEPORT`, `SO_RCVBUF`, multicast joins, and
//! refusing a port another process holds), `sources.rs` (PURE: the source
//! allow-lists), `sink.rs` (per datagram: source, parse, filter, push,
//! count), `uring.rs` and `mmsg.rs` (the two ways datagrams leave the
//! kernel), `stats.rs`, `proc_net.rs` (the kernel's own drop counters, and
//! who holds a port).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rtrb::{Consumer, RingBuffer};
use socket2::Socket;

use crate::codec::Frame;
use crate::message::RecvTime;

pub mod config;
mod mmsg;
mod proc_net;
mod sink;
mod socket;
pub mod sources;
mod stats;
mod uring;

pub use config::{
    BATCH_LEN_MAX, Backend, CORE_ID_END, ConfigError, IngestConfig, LISTEN_LEN_MAX,
    MULTICAST_LEN_MAX, MulticastConfig, MulticastGroup, OverflowPolicy, RCVBUF_BYTES_MAX,
    RING_CAPACITY_MAX, ReceiveConfig, SOURCE_NETS_MAX, SourcesConfig, WORKERS_MAX,
};
pub use sources::{AllowSources, Network, NetworkError};
pub use stats::{ReceiverCounts, ReceiverStats};
pub use uring::IoUringUnavailable;

use sink::{AllowList, Sink};
use uring::RingMode;

/// One accepted datagram as a receive thread hands it to the publisher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    pub frame: Frame,
    /// Wall-clock receive time (goes into the message body).
    pub recv: RecvTime,
    /// Monotonic receive time, [`crate::clock::mono_ns`], for latency.
    pub recv_mono_ns: u64,
}

/// How long [`Receivers::start`] waits for every worker to report ready.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Receivers::stop`] waits for the workers to end (they look at
/// the stop flag at least every 50 ms).
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether io_uring can receive here: the check `Backend::Auto` makes at
/// start (ring setup, RECVMSG and cancel operations, waits with a timeout,
/// a provided buffer ring, and two datagrams through a multishot RECVMSG on
/// 127.0.0.1).
pub fn probe_io_uring() -> Result<(), IoUringUnavailable> {
    uring::probe().map(drop)
}

/// Why the receive threads did not start.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("receive configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(
        "io_uring was asked for but cannot run here: {0} (backend = \"auto\" falls back to recvmmsg)"
    )]
    IoUringUnavailable(#[source] IoUringUnavailable),
    #[error("UDP socket for {addr}: cannot {op}: {source}")]
    Socket {
        addr: SocketAddr,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "udp {addr} is already bound by {holder}; two ingests on one port would split the feed \
         (each datagram reaches only one of them): stop the other, or listen on another port"
    )]
    PortHeld { addr: SocketAddr, holder: String },
    #[error("cannot bind UDP {addr}: {source}{}", bind_hint(.source))]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot join multicast group {group} on {interface} (socket {addr}): {source}")]
    Join {
        group: IpAddr,
        interface: String,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot pin receive worker {worker} to core {core}: not a core this process may run on (allowed: {allowed:?})"
    )]
    Pin {
        worker: usize,
        core: usize,
        allowed: Vec<usize>,
    },
    #[error("cannot spawn receive thread {worker}: {source}")]
    Spawn {
        worker: usize,
        #[source]
        source: io::Error,
    },
    #[error("receive worker {worker} failed to start: {source}")]
    Worker {
        worker: usize,
        #[source]
        source: io::Error,
    },
    #[error("receive workers did not report ready within {}s", START_TIMEOUT.as_secs())]
    StartTimeout,
}

fn bind_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::AddrInUse => {
            " (another socket holds the port without SO_REUSEPORT, or one owned by another user)"
        }
        io::ErrorKind::AddrNotAvailable => {
            " (the address is not assigned to an interface of this host)"
        }
        io::ErrorKind::PermissionDenied => " (ports below 1024 need CAP_NET_BIND_SERVICE)",
        _ => "",
    }
}

/// What [`Receivers::probe`] hands out: [`Receivers::counts`] and
/// [`Receivers::kernel_drops`] without the receivers.
#[derive(Clone, Debug)]
pub struct ReceiverProbe {
    stats: Vec<Arc<ReceiverStats>>,
    inodes: Vec<u64>,
}

impl ReceiverProbe {
    /// [`Receivers::counts`].
    pub fn counts(&self) -> ReceiverCounts {
        self.stats.iter().map(|s| s.snapshot()).sum()
    }

    /// [`Receivers::kernel_drops`], 0 when `/proc/net/udp` cannot be read
    /// (the receivers warn about that).
    pub fn kernel_drops(&self) -> u64 {
        proc_net::read_drops(&self.inodes).unwrap_or(0)
    }
}

/// The running receive threads: their rings' consumer ends, their counters,
/// their sockets' addresses.
pub struct Receivers {
    /// One ring per worker, in worker order; the publisher takes them
    /// ([`Receivers::take_consumers`]) before [`Receivers::stop`], which
    /// would drop any left here.
    pub consumers: Vec<Consumer<Received>>,
    /// The spill rings' consumer ends (with `spill_capacity`), for the
    /// disk spool ([`Receivers::take_spills`]).
    spills: Vec<Consumer<Received>>,
    stats: Vec<Arc<ReceiverStats>>,
    backend: Backend,
    local_addrs: Vec<SocketAddr>,
    inodes: Vec<u64>,
    rcvbuf_granted_bytes: usize,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<io::Result<()>>>,
}

/// What a worker thread is given.
struct Worker {
    index: usize,
    core: Option<usize>,
    backend: Backend,
    ring_mode: Option<RingMode>,
    batch_len: usize,
    sockets: Vec<Socket>,
    sink: Sink,
    stop: Arc<AtomicBool>,
    ready: mpsc::SyncSender<Result<(), ReceiveError>>,
}

impl Receivers {
    /// Validate `cfg`, pick the backend, open and bind every socket, join
    /// the groups, and start one pinned thread per worker. Returns once
    /// every worker is receiving.
    pub fn start(cfg: &ReceiveConfig) -> Result<Receivers, ReceiveError> {
        cfg.validate()?;
        let (backend, ring_mode) = match cfg.backend {
            Backend::Recvmmsg => (Backend::Recvmmsg, None),
            Backend::IoUring => (
                Backend::IoUring,
                Some(uring::probe().map_err(ReceiveError::IoUringUnavailable)?),
            ),
            Backend::Auto => match uring::probe() {
                Ok(mode) => (Backend::IoUring, Some(mode)),
                Err(e) => {
                    tracing::warn!(reason = %e, "io_uring unavailable; receiving with recvmmsg");
                    (Backend::Recvmmsg, None)
                }
            },
        };
        let open = socket::open(cfg)?;
        if open.rcvbuf_granted_bytes < cfg.rcvbuf_bytes {
            tracing::warn!(
                requested = cfg.rcvbuf_bytes,
                granted = open.rcvbuf_granted_bytes,
                "SO_RCVBUF capped by net.core.rmem_max: bursts the workers cannot absorb at once \
                 will be dropped sooner; raise it with `sysctl -w net.core.rmem_max={}`",
                cfg.rcvbuf_bytes
            );
        }
        let allow = cfg.allow_sensors.as_deref().map(AllowList::new);
        // Per listen address, its source allow-list (None: every sender).
        let sources: Vec<Option<AllowSources>> = cfg
            .listen
            .iter()
            .map(|&addr| AllowSources::new(cfg.sources_for(addr)))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::sync_channel(cfg.workers);
        let mut rx = Receivers {
            consumers: Vec::with_capacity(cfg.workers),
            spills: Vec::new(),
            stats: Vec::with_capacity(cfg.workers),
            backend,
            local_addrs: open.local_addrs,
            inodes: open.inodes,
            rcvbuf_granted_bytes: open.rcvbuf_granted_bytes,
            stop: stop.clone(),
            handles: Vec::with_capacity(cfg.workers),
        };
        for (index, (sockets, listen)) in open
            .per_worker
            .into_iter()
            .zip(open.per_worker_listen)
            .enumerate()
        {
            let (producer, consumer) = RingBuffer::new(cfg.ring_capacity);
            let spill = cfg.spill_capacity.map(|n| {
                let (p, c) = RingBuffer::new(n);
                rx.spills.push(c);
                p
            });
            let stats = Arc::new(ReceiverStats::new());
            let worker_sources = listen.iter().map(|&i| sources[i].clone()).collect();
            let worker = Worker {
                index,
                core: cfg.cores.get(index).copied(),
                backend,
                ring_mode,
                batch_len: cfg.batch_len,
                sockets,
                sink: Sink::new(producer, allow.clone(), cfg.overflow, stats.clone())
                    .with_wake(cfg.wake.clone())
                    .with_spill(spill)
                    .with_sources(worker_sources),
                stop: stop.clone(),
                ready: ready_tx.clone(),
            };
            // On error `rx` drops, which stops the threads already started.
            let handle = std::thread::Builder::new()
                .name(format!("tspi-rx-{index}"))
                .spawn(move || {
                    let result = worker.run();
                    if let Err(e) = &result {
                        // Logged when it happens; `workers_running` drops.
                        tracing::error!(worker = index, error = %e, "receive worker stopped on an error");
                    }
                    result
                })
                .map_err(|source| ReceiveError::Spawn {
                    worker: index,
                    source,
                })?;
            rx.handles.push(handle);
            rx.consumers.push(consumer);
            rx.stats.push(stats);
        }
        drop(ready_tx);
        for _ in 0..cfg.workers {
            match ready_rx.recv_timeout(START_TIMEOUT) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(ReceiveError::StartTimeout),
            }
        }
        tracing::info!(
            backend = %backend,
            ring_mode = ?ring_mode,
            workers = cfg.workers,
            cores = ?cfg.cores,
            listen = ?rx.local_addrs,
            rcvbuf_bytes = rx.rcvbuf_granted_bytes,
            batch_len = cfg.batch_len,
            ring_capacity = cfg.ring_capacity,
            "receiving"
        );
        Ok(rx)
    }

    /// The rings' consumer ends, one per worker in worker order (empty on a
    /// second call).
    pub fn take_consumers(&mut self) -> Vec<Consumer<Received>> {
        std::mem::take(&mut self.consumers)
    }

    /// The spill rings' consumer ends, one per worker (empty without
    /// `spill_capacity`, or on a second call).
    pub fn take_spills(&mut self) -> Vec<Consumer<Received>> {
        std::mem::take(&mut self.spills)
    }

    /// The backend running: [`Backend::IoUring`] or [`Backend::Recvmmsg`].
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// What each listen address is bound to, in config order (port 0
    /// replaced by the port the kernel chose).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.local_addrs.clone()
    }

    /// The smallest receive buffer the kernel granted a socket, in bytes
    /// (below the request when `net.core.rmem_max` caps it).
    pub fn rcvbuf_granted_bytes(&self) -> usize {
        self.rcvbuf_granted_bytes
    }

    /// Counts summed over every worker, each as of its last batch.
    pub fn counts(&self) -> ReceiverCounts {
        self.stats.iter().map(|s| s.snapshot()).sum()
    }

    /// Counts of each worker, in worker order.
    pub fn worker_counts(&self) -> Vec<ReceiverCounts> {
        self.stats.iter().map(|s| s.snapshot()).collect()
    }

    /// The counters themselves, for a metrics reader that outlives `self`.
    pub fn stats(&self) -> Vec<Arc<ReceiverStats>> {
        self.stats.clone()
    }

    /// Workers still running (fewer than configured means one failed; see
    /// the log).
    pub fn workers_running(&self) -> usize {
        self.handles.iter().filter(|h| !h.is_finished()).count()
    }

    /// Datagrams the kernel dropped on our sockets before a worker read
    /// them: the `drops` column of `/proc/net/udp` and `/proc/net/udp6` for
    /// our sockets' inodes (see `proc_net.rs` for what it counts). 0 with a
    /// warning (once) when the files cannot be read. A worker that ended
    /// (see [`Receivers::workers_running`]) closed its sockets, and their
    /// drops leave the sum.
    pub fn kernel_drops(&self) -> u64 {
        static WARNED: AtomicBool = AtomicBool::new(false);
        match self.try_kernel_drops() {
            Ok(n) => n,
            Err(e) => {
                if !WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "cannot read the kernel's UDP drop counters");
                }
                0
            }
        }
    }

    /// [`Receivers::kernel_drops`], with the error when `/proc/net/udp`
    /// cannot be read.
    pub fn try_kernel_drops(&self) -> io::Result<u64> {
        proc_net::read_drops(&self.inodes)
    }

    /// The counters and the kernel's drop counts, readable beside the
    /// owner (a `/metrics` scrape) and after it stopped.
    pub fn probe(&self) -> ReceiverProbe {
        ReceiverProbe {
            stats: self.stats.clone(),
            inodes: self.inodes.clone(),
        }
    }

    /// Tell every worker to stop, wait for them (at most 5 s; they notice
    /// within 50 ms), and return the final counts. Everything accepted
    /// stays in the rings for the publisher to drain. Panics if a worker
    /// panicked (a bug), after stopping the others.
    pub fn stop(mut self) -> ReceiverCounts {
        if let Some(panic) = self.shutdown() {
            std::panic::resume_unwind(panic);
        }
        self.counts()
    }

    /// Stop and join the workers; a worker's panic payload is returned.
    fn shutdown(&mut self) -> Option<Box<dyn std::any::Any + Send>> {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + JOIN_TIMEOUT;
        let mut panic = None;
        for (worker, handle) in std::mem::take(&mut self.handles).into_iter().enumerate() {
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if !handle.is_finished() {
                tracing::error!(worker, "receive worker did not stop within 5 s; leaving it");
                continue;
            }
            match handle.join() {
                // An error was logged by the worker as it ended.
                Ok(_) => {}
                Err(p) => {
                    tracing::error!(worker, "receive worker panicked");
                    panic = Some(p);
                }
            }
        }
        panic
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        if !self.handles.is_empty() {
            // A panic payload is dropped here: `stop` is the way to see it.
            let _ = self.shutdown();
        }
    }
}

impl Worker {
    fn run(self) -> io::Result<()> {
        let Worker {
            index,
            core,
            backend,
            ring_mode,
            batch_len,
            sockets,
            mut sink,
            stop,
            ready,
        } = self;
        if let Some(core) = core
            && !core_affinity::set_for_current(core_affinity::CoreId { id: core })
        {
            let allowed = core_affinity::get_core_ids()
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.id)
                .collect();
            let _ = ready.send(Err(ReceiveError::Pin {
                worker: index,
                core,
                allowed,
            }));
            return Ok(());
        }
        if sockets.is_empty() {
            tracing::info!(
                worker = index,
                "receive worker has no socket (multicast addresses are served by one worker each)"
            );
        }
        match backend {
            Backend::IoUring => {
                let mode = ring_mode.expect("io_uring backend without a probed ring mode");
                let names = sink.filters_sources();
                let mut rx = match uring::UringRx::new(sockets, batch_len, mode, names) {
                    Ok(rx) => rx,
                    Err(e) => {
                        let _ = ready.send(Err(ReceiveError::Worker {
                            worker: index,
                            source: e.into(),
                        }));
                        return Ok(());
                    }
                };
                let _ = ready.send(Ok(()));
                rx.run(&mut sink, &stop)
            }
            Backend::Recvmmsg | Backend::Auto => {
                let mut rx = mmsg::MmsgRx::new(sockets, batch_len, sink.filters_sources());
                let _ = ready.send(Ok(()));
                rx.run(&mut sink, &stop)
            }
        }
    }
}
