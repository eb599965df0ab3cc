//! io_uring backend: one multishot `RECVMSG` per socket, all drawing from
//! one provided buffer ring per worker.
//!
//! Buffer ownership, the part that must be right:
//! - A buffer whose id sits in the ring between the kernel's head and our
//!   published tail belongs to the kernel: it may write a datagram into it
//!   at any moment (from our thread's task work or an io-wq thread).
//! - A completion (CQE) carrying `IORING_CQE_F_BUFFER` hands that buffer to
//!   us: the kernel wrote it before posting the CQE and will not touch it
//!   again until we put its id back in the ring ([`BufRing::recycle`]) and
//!   publish the tail ([`BufRing::publish`]).
//! - The ring memory and the buffers must outlive every request that can
//!   select from them: [`UringRx`] frees them only after every multishot
//!   request has posted its final CQE (no `IORING_CQE_F_MORE`), and leaks
//!   them if the kernel does not confirm that in time.

use std::alloc::{self, Layout};
use std::io;
use std::mem::{ManuallyDrop, size_of};
use std::os::fd::AsRawFd;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::{IoUring, Probe, cqueue, opcode, types};
use socket2::Socket;

use super::sink::{LogLimiter, NAME_LEN, Sink, Stamp};
use crate::codec::DATAGRAM_LEN;

/// Bytes per provided buffer. The kernel writes a 16-byte
/// `io_uring_recvmsg_out` header, then the source address (`NAME_LEN`
/// bytes when a socket of the worker has a source allow-list, else none)
/// and control data (none), then the payload: at least 84 bytes of room,
/// so a 38-byte datagram is seen whole and a longer one as `MSG_TRUNC`.
pub(crate) const BUF_LEN: usize = 128;
/// `struct io_uring_recvmsg_out`: four `u32`.
const RECVMSG_OUT_LEN: usize = 16;
const _: () = assert!(BUF_LEN >= RECVMSG_OUT_LEN + NAME_LEN + 2 * DATAGRAM_LEN);

/// The one buffer group of each worker's ring.
const BGID: u16 = 0;
/// `user_data` of cancel requests; a socket's requests carry its index.
const CANCEL_UD: u64 = u64::MAX;
/// Longest wait for completions before looking at the stop flag again.
pub(crate) const WAIT: Duration = Duration::from_millis(50);
/// How long a wakeup waits for more of a burst, and how many completions end
/// that wait early. Bounds the latency it adds.
const COALESCE: Duration = Duration::from_micros(200);
const COALESCE_CQES: usize = 32;
/// Longest wait for the kernel to confirm cancellation at stop.
const CANCEL_WAIT: Duration = Duration::from_secs(1);
/// Interval between log lines for a repeating receive error.
const ERROR_LOG_INTERVAL_NS: u64 = 1_000_000_000;

/// How the ring is set up; the probe picks the best the kernel takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RingMode {
    /// `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` (Linux
    /// 6.1): receive work runs only when the worker waits, on its core, with
    /// no interrupting task work in between.
    DeferTaskrun,
    /// Default setup.
    Plain,
}

/// Why io_uring cannot be used here.
#[derive(Debug, thiserror::Error)]
pub enum IoUringUnavailable {
    #[error("io_uring_setup failed: {source} ({hint})")]
    Setup {
        source: io::Error,
        hint: &'static str,
    },
    #[error("cannot ask the kernel which io_uring operations it has: {0}")]
    Probe(io::Error),
    #[error("the kernel lacks io_uring operation {0} (Linux 6.0 or later is needed)")]
    Opcode(&'static str),
    #[error("the kernel lacks IORING_FEAT_EXT_ARG, needed to wait with a timeout (Linux 5.11)")]
    ExtArg,
    #[error("cannot register a provided buffer ring: {0} (Linux 5.19 or later is needed)")]
    BufRing(io::Error),
    #[error("multishot RECVMSG test on 127.0.0.1 failed: {0}")]
    Multishot(String),
}

fn setup_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) => {
            "refused: sysctl kernel.io_uring_disabled, or a seccomp/container policy blocks io_uring"
        }
        Some(libc::ENOSYS) => "the kernel has no io_uring, or a seccomp policy hides it",
        Some(libc::ENOMEM) => {
            "memory: check RLIMIT_MEMLOCK (kernels before 5.12 charge rings to it)"
        }
        _ => "unexpected",
    }
}

/// Check that this kernel and sandbox let a worker run: ring setup, the
/// operations used, waits with a timeout, a provided buffer ring, and a
/// real multishot `RECVMSG` of two datagrams on a loopback socket.
pub(crate) fn probe() -> Result<RingMode, IoUringUnavailable> {
    let (ring, mode) = match build_ring(RingMode::DeferTaskrun, 4, 8) {
        Ok(ring) => (ring, RingMode::DeferTaskrun),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let ring =
                build_ring(RingMode::Plain, 4, 8).map_err(|source| IoUringUnavailable::Setup {
                    hint: setup_hint(&source),
                    source,
                })?;
            (ring, RingMode::Plain)
        }
        Err(source) => {
            return Err(IoUringUnavailable::Setup {
                hint: setup_hint(&source),
                source,
            });
        }
    };
    let mut ops = Probe::new();
    ring.submitter()
        .register_probe(&mut ops)
        .map_err(IoUringUnavailable::Probe)?;
    for (code, name) in [
        (opcode::RecvMsg::CODE, "RECVMSG"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ] {
        if !ops.is_supported(code) {
            return Err(IoUringUnavailable::Opcode(name));
        }
    }
    if !ring.params().is_feature_ext_arg() {
        return Err(IoUringUnavailable::ExtArg);
    }
    drop(ring);
    multishot_selftest(mode)?;
    Ok(mode)
}

/// Two datagrams through a one-socket [`UringRx`]: both must arrive with
/// the multishot request still armed.
fn multishot_selftest(mode: RingMode) -> Result<(), IoUringUnavailable> {
    use super::{ReceiverStats, config::OverflowPolicy};
    let fail = |what: &str, e: io::Error| IoUringUnavailable::Multishot(format!("{what}: {e}"));
    let rx_socket = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| fail("bind", e))?;
    let to = rx_socket.local_addr().map_err(|e| fail("getsockname", e))?;
    // More buffers than datagrams: a multishot request whose next buffer
    // selection finds the ring empty ends (ENOBUFS), which is normal under
    // load but would look like missing multishot support here.
    let mut rx =
        UringRx::new(vec![Socket::from(rx_socket)], 8, mode, false).map_err(|e| match e {
            UringError::Setup(e) => fail("ring setup", e),
            UringError::BufRing(e) => IoUringUnavailable::BufRing(e),
        })?;
    let (producer, _consumer) = rtrb::RingBuffer::new(2);
    let stats = std::sync::Arc::new(ReceiverStats::new());
    let mut sink = Sink::new(producer, None, OverflowPolicy::DropNewest, stats);
    rx.arm_idle().map_err(|e| fail("arm", e))?;
    rx.wait_once(Duration::ZERO)
        .map_err(|e| fail("submit", e))?;
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| fail("bind sender", e))?;
    for _ in 0..2 {
        tx.send_to(&[0u8; DATAGRAM_LEN], to)
            .map_err(|e| fail("send", e))?;
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while sink.received() < 2 && Instant::now() < deadline {
        rx.wait_once(WAIT).map_err(|e| fail("wait", e))?;
        rx.reap(Some(&mut sink), Stamp::now());
        if let Some(errno) = rx.last_errno.take() {
            return Err(fail("completion", io::Error::from_raw_os_error(errno)));
        }
    }
    if sink.received() < 2 {
        return Err(IoUringUnavailable::Multishot(format!(
            "{} of 2 datagrams arrived within 1 s",
            sink.received()
        )));
    }
    if !rx.armed[0] {
        return Err(IoUringUnavailable::Multishot(
            "the request ended after one datagram (no IORING_CQE_F_MORE): multishot is not supported".into(),
        ));
    }
    Ok(())
}

fn build_ring(mode: RingMode, sq_entries: u32, cq_entries: u32) -> io::Result<IoUring> {
    let mut b = IoUring::builder();
    b.setup_cqsize(cq_entries);
    if mode == RingMode::DeferTaskrun {
        b.setup_single_issuer().setup_defer_taskrun();
    }
    b.build(sq_entries)
}

/// `struct io_uring_buf`: one slot of a provided buffer ring. The `resv`
/// field of slot 0 is the ring's tail, written by us, read by the kernel.
#[repr(C)]
struct BufSlot {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}
const _: () = assert!(size_of::<BufSlot>() == 16);

/// A provided buffer ring and its buffers, in memory we allocate.
struct BufRing {
    /// `len` slots, page-aligned as the kernel requires.
    slots: NonNull<BufSlot>,
    slots_layout: Layout,
    /// `len` buffers of [`BUF_LEN`] bytes.
    bufs: NonNull<u8>,
    bufs_layout: Layout,
    /// Slots and buffers, a power of two.
    len: u16,
    /// Our tail: slots before it are (or were) offered to the kernel; the
    /// kernel sees it at the next [`BufRing::publish`].
    tail: u16,
}

impl BufRing {
    const PAGE: usize = 4096;

    /// Allocate `len` buffers and offer all of them (tail = `len`).
    fn new(len: u16) -> Self {
        assert!(len.is_power_of_two(), "buffer ring length {len}");
        let n = usize::from(len);
        let slots_layout =
            Layout::from_size_align(n * size_of::<BufSlot>(), Self::PAGE).expect("slot layout");
        let bufs_layout = Layout::from_size_align(n * BUF_LEN, 64).expect("buffer layout");
        // SAFETY: both layouts have a non-zero size (len >= 1).
        let (slots, bufs) = unsafe {
            (
                alloc::alloc_zeroed(slots_layout),
                alloc::alloc_zeroed(bufs_layout),
            )
        };
        let Some(slots) = NonNull::new(slots.cast::<BufSlot>()) else {
            alloc::handle_alloc_error(slots_layout)
        };
        let Some(bufs) = NonNull::new(bufs) else {
            alloc::handle_alloc_error(bufs_layout)
        };
        let mut ring = BufRing {
            slots,
            slots_layout,
            bufs,
            bufs_layout,
            len,
            tail: 0,
        };
        for bid in 0..len {
            ring.recycle(bid);
        }
        ring.publish();
        ring
    }

    /// Register the ring as buffer group `bgid` of `ring`.
    ///
    /// # Safety
    ///
    /// This memory must stay allocated until no request of `ring` can select
    /// a buffer from the group any more (every multishot request using it
    /// has ended) — [`UringRx`]'s `Drop` keeps that promise.
    unsafe fn register(&self, ring: &IoUring, bgid: u16) -> io::Result<()> {
        // SAFETY: the slots are page-aligned, `len` long and initialised; the
        // caller keeps them (and the buffers they point to) alive as long as
        // the kernel may use them.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                self.slots.as_ptr() as u64,
                self.len,
                bgid,
                0,
            )
        }
    }

    /// Put buffer `bid` back at our tail (visible to the kernel after
    /// [`BufRing::publish`]). Only for a buffer the kernel handed us.
    #[inline]
    fn recycle(&mut self, bid: u16) {
        assert!(
            bid < self.len,
            "buffer id {bid} from the kernel is out of range"
        );
        let slot_index = usize::from(self.tail & (self.len - 1));
        // SAFETY: `slot_index < len`, inside the slot allocation, and
        // `bid < len`, inside the buffer allocation. The kernel reads only
        // slots between its head and our published tail. Before
        // registration (`new`) it reads none. After it, every buffer is
        // offered once and recycled only after the kernel consumed it
        // (advancing its head past it), so before this call at most
        // `len - 1` slots are offered and the slot at our tail is not one
        // of them. We write `addr`, `len` and `bid` field by field and never
        // `resv`, which in slot 0 is the tail the kernel may read
        // concurrently.
        unsafe {
            let slot = self.slots.as_ptr().add(slot_index);
            let addr = self.bufs.as_ptr().add(usize::from(bid) * BUF_LEN);
            ptr::addr_of_mut!((*slot).addr).write(addr as u64);
            ptr::addr_of_mut!((*slot).len).write(BUF_LEN as u32);
            ptr::addr_of_mut!((*slot).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Make every recycled buffer visible to the kernel (one release store).
    #[inline]
    fn publish(&mut self) {
        // SAFETY: slot 0's `resv` field is the ring tail: a valid, aligned
        // u16 inside our allocation that the kernel reads with an acquire
        // load and nobody writes non-atomically (it was zeroed before the
        // ring was shared). The release store orders the slot writes of
        // `recycle` before the kernel can see the new tail.
        let tail = unsafe { AtomicU16::from_ptr(ptr::addr_of_mut!((*self.slots.as_ptr()).resv)) };
        tail.store(self.tail, Ordering::Release);
    }

    /// The first `len` bytes of buffer `bid`.
    ///
    /// # Safety
    ///
    /// The kernel must have handed `bid` to us (a CQE with
    /// `IORING_CQE_F_BUFFER` naming it) and it must not have been recycled
    /// since: then the kernel does not write it while the slice lives.
    #[inline]
    unsafe fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        assert!(
            bid < self.len,
            "buffer id {bid} from the kernel is out of range"
        );
        // SAFETY: `bid < len`, so the range lies inside the buffer
        // allocation, which was zero-initialised; the caller guarantees
        // nothing writes it while the returned borrow lives.
        unsafe {
            std::slice::from_raw_parts(
                self.bufs.as_ptr().add(usize::from(bid) * BUF_LEN),
                len.min(BUF_LEN),
            )
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both pointers came from `alloc_zeroed` with these layouts.
        // Dropping is only reached when the kernel cannot use the memory
        // any more: never registered, or held in `ManuallyDrop` by
        // `UringRx` and dropped once every request has ended.
        unsafe {
            alloc::dealloc(self.slots.as_ptr().cast(), self.slots_layout);
            alloc::dealloc(self.bufs.as_ptr(), self.bufs_layout);
        }
    }
}

/// Why a worker's ring could not be set up.
#[derive(Debug)]
pub(crate) enum UringError {
    Setup(io::Error),
    BufRing(io::Error),
}

impl From<UringError> for io::Error {
    fn from(e: UringError) -> io::Error {
        match e {
            UringError::Setup(e) => io::Error::new(e.kind(), format!("io_uring setup: {e}")),
            UringError::BufRing(e) => {
                io::Error::new(e.kind(), format!("io_uring buffer ring registration: {e}"))
            }
        }
    }
}

/// One worker's ring, buffer ring and sockets.
pub(crate) struct UringRx {
    ring: IoUring,
    /// Freed in `Drop` only once the kernel is done with it.
    bufs: ManuallyDrop<BufRing>,
    /// The `msghdr` every RECVMSG SQE points at: room for the sender's
    /// address when senders are checked (else none), no control data.
    /// Boxed so its address is stable; the kernel reads its lengths at
    /// submission, `RecvMsgOut::parse` at completion.
    msghdr: Box<libc::msghdr>,
    sockets: Vec<Socket>,
    /// Whether socket `i` has a multishot request in the kernel.
    armed: Vec<bool>,
    /// Completions that found the buffer ring empty (the datagram stays
    /// queued in the socket; the request is re-armed).
    nobufs: u64,
    /// The last unexpected error a completion carried, not yet logged.
    last_errno: Option<i32>,
    errors: u64,
}

impl UringRx {
    /// A ring for `sockets` with `batch_len` buffers (rounded up to a power
    /// of two); `names`: ask the kernel for each datagram's sender (for the
    /// source allow-lists).
    pub(crate) fn new(
        sockets: Vec<Socket>,
        batch_len: usize,
        mode: RingMode,
        names: bool,
    ) -> Result<Self, UringError> {
        let buf_len = batch_len.next_power_of_two();
        let buf_len = u16::try_from(buf_len).expect("batch_len is validated <= 4096");
        // Every unreaped completion holds a buffer, except the one final
        // completion per request and the cancel completions: with this many
        // CQ entries the completion queue cannot overflow.
        let sq_entries = (sockets.len() + 1).next_power_of_two() as u32;
        let cq_entries = ((usize::from(buf_len) + 2 * sockets.len() + 2).next_power_of_two()
            as u32)
            .max(2 * sq_entries);
        let ring = build_ring(mode, sq_entries, cq_entries).map_err(UringError::Setup)?;
        let bufs = BufRing::new(buf_len);
        // SAFETY: `bufs` moves into the returned `UringRx`, whose `Drop`
        // frees it only after every request that could select from it has
        // ended (or leaks it). If registration fails, `bufs` is dropped
        // unregistered, which is fine.
        unsafe { bufs.register(&ring, BGID) }.map_err(UringError::BufRing)?;
        // SAFETY: all-zero is a valid `msghdr` (null pointers, zero lengths).
        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        if names {
            // Only the length matters: the kernel writes the name into each
            // provided buffer, after the header.
            msghdr.msg_namelen = NAME_LEN as libc::socklen_t;
        }
        let armed = vec![false; sockets.len()];
        Ok(UringRx {
            ring,
            bufs: ManuallyDrop::new(bufs),
            msghdr,
            sockets,
            armed,
            nobufs: 0,
            last_errno: None,
            errors: 0,
        })
    }

    /// Receive until `stop` is set (noticed within [`WAIT`]), then cancel
    /// the requests, counting what they still delivered.
    pub(crate) fn run(&mut self, sink: &mut Sink, stop: &AtomicBool) -> io::Result<()> {
        let mut log = LogLimiter::new(ERROR_LOG_INTERVAL_NS);
        while !stop.load(Ordering::Relaxed) {
            self.arm_idle()?;
            self.wait_once(WAIT)?;
            // Coalesce: once a datagram is in, let a burst land for up to
            // COALESCE so one wakeup serves many (each wakeup costs several
            // µs here; at 20k datagrams/s, waking per datagram was most of
            // this thread's CPU, bench/ingest.rs).
            if !self.ring.completion().is_empty() && self.ring.completion().len() < COALESCE_CQES {
                self.wait_for(COALESCE_CQES, COALESCE)?;
            }
            let stamp = Stamp::now();
            self.reap(Some(sink), stamp);
            sink.publish();
            if let Some(errno) = self.last_errno.take()
                && let Some(suppressed) = log.allow(stamp.mono_ns)
            {
                tracing::warn!(
                    error = %io::Error::from_raw_os_error(errno),
                    suppressed,
                    "io_uring RECVMSG completion failed; re-arming"
                );
            }
        }
        let quiet = self.cancel_all(Some(sink));
        sink.publish();
        tracing::debug!(
            nobufs = self.nobufs,
            errors = self.errors,
            "io_uring receive worker stopped"
        );
        if quiet {
            Ok(())
        } else {
            Err(io::Error::other(
                "io_uring requests not confirmed cancelled within 1 s",
            ))
        }
    }

    /// Queue a multishot RECVMSG for every socket without one (submitted by
    /// the next wait).
    fn arm_idle(&mut self) -> io::Result<()> {
        for i in 0..self.sockets.len() {
            if self.armed[i] {
                continue;
            }
            let sqe = opcode::RecvMsgMulti::new(
                types::Fd(self.sockets[i].as_raw_fd()),
                &*self.msghdr as *const libc::msghdr,
                BGID,
            )
            .build()
            .user_data(i as u64);
            self.push(&sqe)?;
            self.armed[i] = true;
        }
        Ok(())
    }

    fn push(&mut self, sqe: &io_uring::squeue::Entry) -> io::Result<()> {
        // SAFETY: what the SQE points at outlives the request: the msghdr is
        // boxed in `self`; the socket fd is owned by `self.sockets`, which
        // is dropped only after the requests ended (see `Drop`); the buffers
        // come from the registered ring, kept alive by `self` likewise. The
        // cancel SQE points at nothing.
        let pushed = unsafe { self.ring.submission().push(sqe) };
        if pushed.is_err() {
            // The SQ holds a slot per socket plus one and is emptied by every
            // wait, so this is a bookkeeping bug, not an operating error.
            return Err(io::Error::other("io_uring submission queue full"));
        }
        Ok(())
    }

    /// Submit what is queued and wait up to `timeout` for a completion.
    fn wait_once(&mut self, timeout: Duration) -> io::Result<()> {
        self.wait_for(usize::from(!timeout.is_zero()), timeout)
    }

    /// Submit what is queued and wait up to `timeout` for `want` completions.
    fn wait_for(&mut self, want: usize, timeout: Duration) -> io::Result<()> {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(want, &args) {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                // Timed out, interrupted, or completions waiting to be reaped.
                Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// Handle every completion posted so far; hand datagrams to `sink` (or
    /// discard them when `None`); recycle their buffers, then publish the
    /// buffer ring tail once.
    fn reap(&mut self, mut sink: Option<&mut Sink>, stamp: Stamp) {
        let UringRx {
            ring,
            bufs,
            msghdr,
            armed,
            nobufs,
            last_errno,
            errors,
            ..
        } = self;
        // The iterator covers the completions visible when it was created
        // (at most the CQ size); dropping it tells the kernel they are read.
        for cqe in ring.completion() {
            let user_data = cqe.user_data();
            if user_data == CANCEL_UD {
                continue;
            }
            let sock = user_data as usize;
            let (res, flags) = (cqe.result(), cqe.flags());
            if let Some(bid) = cqueue::buffer_select(flags) {
                if res >= 0
                    && let Some(sink) = sink.as_deref_mut()
                {
                    // SAFETY: this CQE hands buffer `bid` to us; it is
                    // recycled only below, after the slice's last use.
                    let buf = unsafe { bufs.buffer(bid, res as usize) };
                    match types::RecvMsgOut::parse(buf, msghdr) {
                        Ok(out) => sink.datagram_from(
                            sock,
                            out.name_data(),
                            out.payload_data(),
                            out.is_payload_truncated(),
                            stamp,
                        ),
                        // Shorter than the header: impossible with a
                        // 128-byte buffer; counted (as a length or source
                        // rejection) rather than lost.
                        Err(()) => sink.datagram_from(sock, &[], &[], true, stamp),
                    }
                }
                bufs.recycle(bid);
            }
            if res < 0 {
                match -res {
                    libc::ENOBUFS => *nobufs += 1,
                    libc::ECANCELED => {}
                    errno => {
                        *errors += 1;
                        *last_errno = Some(errno);
                    }
                }
            }
            if !cqueue::more(flags) && sock < armed.len() {
                armed[sock] = false;
            }
        }
        bufs.publish();
    }

    /// Cancel every armed request and reap until each has posted its final
    /// completion, for at most [`CANCEL_WAIT`]. True when none is left.
    fn cancel_all(&mut self, mut sink: Option<&mut Sink>) -> bool {
        for i in 0..self.armed.len() {
            if self.armed[i] {
                let sqe = opcode::AsyncCancel::new(i as u64)
                    .build()
                    .user_data(CANCEL_UD);
                if self.push(&sqe).is_err() {
                    break;
                }
            }
        }
        let deadline = Instant::now() + CANCEL_WAIT;
        while self.armed.iter().any(|&a| a) && Instant::now() < deadline {
            if self.wait_once(WAIT).is_err() {
                break;
            }
            self.reap(sink.as_deref_mut(), Stamp::now());
        }
        !self.armed.iter().any(|&a| a)
    }
}

impl Drop for UringRx {
    fn drop(&mut self) {
        let quiet = !self.armed.iter().any(|&a| a) || self.cancel_all(None);
        if quiet {
            // The group is gone with the ring anyway; unregistering first
            // just releases the pinned pages early.
            let _ = self.ring.submitter().unregister_buf_ring(BGID);
            // SAFETY: no request of this ring is in flight (every one posted
            // its final CQE), so the kernel selects no buffer from the ring
            // and writes none; the memory can go.
            unsafe { ManuallyDrop::drop(&mut self.bufs) };
        } else {
            tracing::error!(
                bytes = self.bufs.slots_layout.size() + self.bufs.bufs_layout.size(),
                "io_uring requests not confirmed cancelled; leaking the buffer ring rather than freeing memory the kernel may still write"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_passes_on_this_kernel() {
        // The development and CI kernels (6.18) have everything; a failure
        // here names the missing piece.
        let mode = probe().unwrap_or_else(|e| panic!("io_uring probe failed: {e}"));
        assert_eq!(mode, RingMode::DeferTaskrun);
    }

    #[test]
    fn buf_ring_offers_every_buffer_and_recycles_in_order() {
        let mut ring = BufRing::new(4);
        assert_eq!(ring.tail, 4);
        let slot = |r: &BufRing, i: usize| {
            assert!(i < usize::from(r.len));
            // SAFETY: in bounds (asserted), initialised by `new`, and never
            // registered, so nothing writes it while the borrow lives.
            unsafe { &*r.slots.as_ptr().add(i) }
        };
        for i in 0..4 {
            let s = slot(&ring, i);
            assert_eq!(s.bid, i as u16);
            assert_eq!(s.len, BUF_LEN as u32);
            assert_eq!(s.addr, ring.bufs.as_ptr() as u64 + (i * BUF_LEN) as u64);
        }
        assert_eq!(slot(&ring, 0).resv, 4, "tail published in slot 0");
        ring.recycle(2);
        ring.publish();
        assert_eq!(slot(&ring, 0).bid, 2);
        assert_eq!(slot(&ring, 0).resv, 5);
        assert_eq!(ring.slots.as_ptr() as usize % BufRing::PAGE, 0);
    }
}
