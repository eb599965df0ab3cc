//! Receive rate of one worker on loopback: io_uring against recvmmsg, side
//! by side, at two batch lengths, next to the sender's own ceiling.
//!
//! `cargo bench --bench receive` measures; `cargo test --benches` runs each
//! benchmark once as a smoke test (one round of 64 Ki datagrams each).
//!
//! Set-up per benchmark: [`Receivers`] with one worker pinned to the second
//! core and a ring large enough for a whole round. Per iteration a sender
//! thread pinned to the first core sends [`ROUND_LEN`] valid 37-byte
//! datagrams with UDP GSO (one `send` of 64 × 37 bytes with `UDP_SEGMENT` =
//! 37; on loopback the sender's core also does the receive softirq work,
//! bench/README.md, machine facts), keeping at most [`WINDOW_LEN`] in flight (sent, not yet counted
//! `received` by the worker; well inside the socket buffer, so the kernel
//! drops nothing), and stops the clock when the worker has counted them
//! all or [`ROUND_TIME_MAX`] passed. The ring is emptied between
//! iterations, untimed. On a machine where the sender is slower than the
//! worker, the figure is the sender's: `gso_sender_only` measures that
//! ceiling (the same sends into a socket nobody reads). So each backend
//! is also timed by the worker thread's CPU time over the same rounds
//! (`*_worker_cpu`, from `/proc/self/task/<tid>/schedstat`): datagrams per
//! second of one fully busy core, measured while the worker is not
//! saturated (smaller batches than at full load), so a lower bound on its
//! capacity. Drops and timeouts are reported on stderr, never hidden.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rtrb::Consumer;
use tspi::codec::{self, DATAGRAM_LEN, vectors};
use tspi::receive::{Backend, ReceiveConfig, Received, ReceiverStats, Receivers};

/// Datagrams per GSO send (the kernel's UDP_MAX_SEGMENTS is 64 or more).
const SEGMENTS: usize = 64;
/// Datagrams per iteration.
const ROUND_LEN: u64 = 64 * 1024;
/// Datagrams sent but not yet read, at most: a 4 MiB socket buffer holds
/// ~5000 (bench/README.md, machine facts: ~830 bytes each).
const WINDOW_LEN: u64 = 2048;
/// Longest one iteration may take.
const ROUND_TIME_MAX: Duration = Duration::from_secs(2);
const BATCH_LENS: [usize; 2] = [64, 256];
/// Ring slots per worker: a round and a window.
const RING_CAPACITY: usize = 1 << 17;
const _: () = assert!(RING_CAPACITY as u64 >= ROUND_LEN + WINDOW_LEN);

struct Sender {
    socket: UdpSocket,
    burst: Vec<u8>,
    gso: bool,
}

impl Sender {
    fn new(to: SocketAddr) -> io::Result<Sender> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.connect(to)?;
        let burst: Vec<u8> = (0..SEGMENTS as u32)
            .flat_map(|i| {
                let hex = vectors::ACCEPTED[i as usize % vectors::ACCEPTED.len()];
                let mut f = codec::parse(&vectors::bytes(hex)).unwrap();
                f.time_ticks = i;
                f.encode()
            })
            .collect();
        let mut s = Sender {
            socket,
            burst,
            gso: false,
        };
        s.gso = s.set_gso(DATAGRAM_LEN as libc::c_int).is_ok() && s.socket.send(&s.burst).is_ok();
        if !s.gso {
            eprintln!("UDP GSO unavailable: sending datagrams one by one");
        }
        Ok(s)
    }

    fn set_gso(&self, segment_len: libc::c_int) -> io::Result<()> {
        // SAFETY: a valid socket fd and a pointer to a live c_int of the
        // size passed.
        let rc = unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_UDP,
                libc::UDP_SEGMENT,
                (&segment_len as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Send [`SEGMENTS`] datagrams.
    fn send_burst(&self) {
        if self.gso {
            self.socket.send(&self.burst).expect("GSO send");
        } else {
            for d in self.burst.chunks(DATAGRAM_LEN) {
                self.socket.send(d).expect("send");
            }
        }
    }
}

/// Empty the ring; how many there were.
fn pop_all(consumer: &mut Consumer<Received>) -> u64 {
    let n = consumer.slots();
    if n == 0 {
        return 0;
    }
    let chunk = consumer.read_chunk(n).expect("slots are readable");
    let (a, _) = chunk.as_slices();
    std::hint::black_box(a.first());
    chunk.commit_all();
    n as u64
}

fn pin_to(core: Option<usize>) {
    if let Some(id) = core {
        core_affinity::set_for_current(core_affinity::CoreId { id });
    }
}

/// One iteration, on a sender thread pinned to `core`: [`ROUND_LEN`]
/// datagrams sent and, when `stats` is given, counted by the worker.
/// Returns the time it took and how many were counted (sent, without
/// `stats`).
fn round(tx: &Sender, stats: Option<&ReceiverStats>, core: Option<usize>) -> (Duration, u64) {
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to(core);
            let read = || stats.map(|s| s.snapshot().received);
            let base = read();
            let t = Instant::now();
            // The clock is read once per 64 turns: it is not free.
            let in_time = |turn: u32| !turn.is_multiple_of(64) || t.elapsed() < ROUND_TIME_MAX;
            let (mut sent, mut got, mut turn) = (0u64, 0u64, 0u32);
            while sent < ROUND_LEN && in_time(turn) {
                turn = turn.wrapping_add(1);
                if let (Some(b), Some(now)) = (base, read()) {
                    got = now - b;
                    if sent.saturating_sub(got) + SEGMENTS as u64 > WINDOW_LEN {
                        std::hint::spin_loop();
                        continue;
                    }
                }
                tx.send_burst();
                sent += SEGMENTS as u64;
            }
            let Some(base) = base else {
                return (t.elapsed(), sent);
            };
            while got < ROUND_LEN && in_time(turn) {
                turn = turn.wrapping_add(1);
                got = read().unwrap_or(base) - base;
                std::hint::spin_loop();
            }
            (t.elapsed(), got)
        })
        .join()
        .expect("sender thread")
    })
}

/// The Linux thread id of the thread named `name` in this process.
fn thread_id(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc/self/task").ok()?.find_map(|e| {
        let e = e.ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim_end() == name).then(|| e.file_name().to_str()?.parse().ok())?
    })
}

/// CPU time thread `tid` has used, in ns (first field of its schedstat).
fn thread_cpu_ns(tid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_ascii_whitespace().next()?.parse().ok())
        .expect("schedstat of the worker thread")
}

fn bench_receive(c: &mut Criterion) {
    let cores: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let (sender_core, worker_core) = match cores[..] {
        [a, b, ..] => (Some(a), Some(b)),
        _ => (None, None),
    };
    let io_uring = tspi::receive::probe_io_uring();
    if let Err(e) = &io_uring {
        eprintln!("io_uring benchmarks skipped: {e}");
    }
    let mut group = c.benchmark_group("receive");
    group.throughput(Throughput::Elements(ROUND_LEN));

    // The sender's ceiling: the same sends into a socket nobody reads (the
    // kernel drops what does not fit).
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let tx = Sender::new(sink.local_addr().unwrap()).expect("sender");
    group.bench_function("gso_sender_only", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| round(&tx, None, sender_core).0).sum())
    });
    drop((tx, sink));

    for batch_len in BATCH_LENS {
        for backend in [Backend::IoUring, Backend::Recvmmsg] {
            if backend == Backend::IoUring && io_uring.is_err() {
                continue;
            }
            let mut cfg = ReceiveConfig::new(vec!["127.0.0.1:0".parse().unwrap()]);
            cfg.backend = backend;
            cfg.batch_len = batch_len;
            cfg.rcvbuf_bytes = 4 << 20;
            cfg.ring_capacity = RING_CAPACITY;
            cfg.cores = worker_core.into_iter().collect();
            let mut rx = Receivers::start(&cfg).expect("start receivers");
            let mut consumer = rx.take_consumers().pop().expect("one worker");
            let stats = rx.stats().pop().expect("one worker");
            let tx = Sender::new(rx.local_addrs()[0]).expect("sender");
            let worker = thread_id("tspi-rx-0").expect("worker thread");
            let mut short_rounds = 0u32;
            // Two clocks over the same kind of round: the wall clock (the
            // end-to-end rate) and the worker thread's CPU time (datagrams
            // per second of one busy core: its capacity, measured below
            // saturation, so a lower bound).
            for (clock, cpu) in [("wall", false), ("worker_cpu", true)] {
                let id = BenchmarkId::new(format!("{}_{clock}", backend.name()), batch_len);
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            // Untimed: whatever a previous round left behind.
                            std::thread::sleep(Duration::from_millis(1));
                            pop_all(&mut consumer);
                            let cpu0 = thread_cpu_ns(worker);
                            let (took, got) = round(&tx, Some(&stats), sender_core);
                            let cpu1 = thread_cpu_ns(worker);
                            total += if cpu {
                                Duration::from_nanos(cpu1 - cpu0)
                            } else {
                                took
                            };
                            short_rounds += u32::from(got < ROUND_LEN);
                        }
                        total
                    })
                });
            }
            let drops = rx.kernel_drops();
            let counts = rx.stop();
            if drops > 0 || counts.ring_dropped > 0 || short_rounds > 0 {
                eprintln!(
                    "receive/{}/{batch_len}: {drops} kernel drops, {} ring drops, {short_rounds} \
                     rounds hit the {ROUND_TIME_MAX:?} bound: the figure above is not a clean rate",
                    backend.name(),
                    counts.ring_dropped
                );
            }
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    targets = bench_receive
}
criterion_main!(benches);
