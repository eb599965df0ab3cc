//! recvmmsg backend: up to `batch_len` datagrams per system call into
//! buffers allocated once; `poll` across the sockets only when every one
//! of them came back empty.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socket2::Socket;

use super::sink::{LogLimiter, NAME_LEN, Sink, Stamp};
use crate::codec::DATAGRAM_LEN;

/// Bytes per datagram buffer: room for a datagram longer than 37 bytes, so
/// one is seen as too long rather than cut to size; longer still is
/// reported by the kernel (`MSG_TRUNC`, real length in `msg_len`).
pub(crate) const BUF_LEN: usize = 64;
const _: () = assert!(BUF_LEN > DATAGRAM_LEN);

/// Longest `poll` before looking at the stop flag again.
pub(crate) const WAIT: Duration = Duration::from_millis(50);
const ERROR_LOG_INTERVAL_NS: u64 = 1_000_000_000;

/// One worker's sockets and batch buffers.
///
/// The headers point into `iovecs`, which point into `bufs`, and (when
/// senders are checked) into `names`. The vectors are allocated once and
/// never resized, and are only handed to the kernel or read through
/// `as_ptr`/`as_mut_ptr` (which, as `Vec` documents, do not materialise a
/// reference to the elements, so the stored pointers stay valid).
pub(crate) struct MmsgRx {
    sockets: Vec<Socket>,
    pollfds: Vec<libc::pollfd>,
    hdrs: Vec<libc::mmsghdr>,
    _iovecs: Vec<libc::iovec>,
    bufs: Vec<[u8; BUF_LEN]>,
    /// A sender address per header when some socket has a source
    /// allow-list; empty otherwise (the kernel is then given no name).
    names: Vec<[u8; NAME_LEN]>,
}

impl MmsgRx {
    /// `names`: ask the kernel for each datagram's sender (for the source
    /// allow-lists).
    pub(crate) fn new(sockets: Vec<Socket>, batch_len: usize, names: bool) -> Self {
        assert!(batch_len > 0 && u32::try_from(batch_len).is_ok());
        let mut bufs = vec![[0u8; BUF_LEN]; batch_len];
        let mut names = if names {
            vec![[0u8; NAME_LEN]; batch_len]
        } else {
            Vec::new()
        };
        let mut iovecs: Vec<libc::iovec> = (0..batch_len)
            .map(|i| libc::iovec {
                // SAFETY: i < batch_len = bufs.len(): in bounds.
                iov_base: unsafe { bufs.as_mut_ptr().add(i) }.cast(),
                iov_len: BUF_LEN,
            })
            .collect();
        let hdrs = (0..batch_len)
            .map(|i| {
                // SAFETY: all-zero is a valid msghdr/mmsghdr (null pointers,
                // zero lengths).
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                // SAFETY: i < batch_len = iovecs.len(): in bounds.
                h.msg_hdr.msg_iov = unsafe { iovecs.as_mut_ptr().add(i) };
                h.msg_hdr.msg_iovlen = 1;
                if !names.is_empty() {
                    // SAFETY: i < batch_len = names.len(): in bounds.
                    h.msg_hdr.msg_name = unsafe { names.as_mut_ptr().add(i) }.cast();
                    h.msg_hdr.msg_namelen = NAME_LEN as libc::socklen_t;
                }
                h
            })
            .collect();
        let pollfds = sockets
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        MmsgRx {
            sockets,
            pollfds,
            hdrs,
            _iovecs: iovecs,
            bufs,
            names,
        }
    }

    /// Receive until `stop` is set (noticed within [`WAIT`]).
    pub(crate) fn run(&mut self, sink: &mut Sink, stop: &AtomicBool) -> io::Result<()> {
        let mut log = LogLimiter::new(ERROR_LOG_INTERVAL_NS);
        while !stop.load(Ordering::Relaxed) {
            let mut got = 0;
            for i in 0..self.sockets.len() {
                match self.read_batch(i, sink) {
                    Ok(n) => got += n,
                    Err(e) => {
                        if let Some(suppressed) = log.allow(crate::clock::mono_ns()) {
                            tracing::warn!(error = %e, suppressed, "recvmmsg failed");
                        }
                    }
                }
            }
            if got == 0 {
                self.wait()?;
            }
        }
        Ok(())
    }

    /// One `recvmmsg` on socket `i`, without blocking; the datagrams go to
    /// `sink`. Returns how many there were.
    fn read_batch(&mut self, i: usize, sink: &mut Sink) -> io::Result<usize> {
        let fd = self.sockets[i].as_raw_fd();
        if !self.names.is_empty() {
            // In and out: the kernel left the last sender's length here.
            for h in &mut self.hdrs {
                h.msg_hdr.msg_namelen = NAME_LEN as libc::socklen_t;
            }
        }
        // SAFETY: `hdrs` holds `hdrs.len()` initialised headers, each naming
        // one iovec of `BUF_LEN` bytes inside `bufs` and, when `names` is
        // not empty, `NAME_LEN` bytes of it (see `new`); the vectors live in
        // `self` and are not resized, so the kernel writes only memory we
        // own, and only during this call. A null timeout is allowed;
        // MSG_DONTWAIT makes the call return at once.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as u32,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(0),
                _ => Err(e),
            };
        }
        let stamp = Stamp::now();
        let n = n as usize;
        for k in 0..n {
            let h = &self.hdrs[k];
            // With MSG_TRUNC, msg_len is the datagram's real length.
            let len = h.msg_len as usize;
            let truncated = len > BUF_LEN || h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            // SAFETY: k < n <= bufs.len(); the kernel filled `len.min(BUF_LEN)`
            // bytes of buffer k during the call that just returned and does
            // not write it again before the next call.
            let bytes = unsafe {
                std::slice::from_raw_parts(self.bufs.as_ptr().add(k).cast::<u8>(), len.min(BUF_LEN))
            };
            let name: &[u8] = if self.names.is_empty() {
                &[]
            } else {
                let name_len = (h.msg_hdr.msg_namelen as usize).min(NAME_LEN);
                // SAFETY: k < n <= names.len(); the kernel wrote `name_len`
                // bytes of name k during the call that just returned.
                unsafe {
                    std::slice::from_raw_parts(self.names.as_ptr().add(k).cast::<u8>(), name_len)
                }
            };
            sink.datagram_from(i, name, bytes, truncated, stamp);
        }
        sink.publish();
        Ok(n)
    }

    /// Sleep until a socket is readable or [`WAIT`] has passed.
    fn wait(&mut self) -> io::Result<()> {
        for p in &mut self.pollfds {
            p.revents = 0;
        }
        // SAFETY: `pollfds` is a live, initialised array of that length
        // whose descriptors are owned by `self.sockets`.
        let rc = unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                WAIT.as_millis() as libc::c_int,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
        Ok(())
    }
}
