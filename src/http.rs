//! Edge: HTTP/1.1 serving that one slow, idle or greedy client cannot
//! starve.
//!
//! hyper does the protocol (request parsing, keep-alive, `HEAD`, upgrades)
//! and an axum [`Router`] the routing; this module adds what a server on an
//! operations network needs and neither gives by itself:
//!
//! - **A connection limit that never blocks the accept loop.** Connections
//!   over [`HttpLimits::connections_max`] in all, or over
//!   [`HttpLimits::connections_per_peer_max`] from one address, are accepted
//!   and at once answered `503` and closed (counted), so the kernel's accept
//!   queue never fills and a well-behaved client always gets an answer: the
//!   hand-written server this replaces stopped accepting at its limit, and
//!   about 145 idle connections filled its backlog.
//! - **A header timeout** ([`HttpLimits::header_read_timeout`], hyper's): a
//!   client that trickles its request head is cut off.
//!   hyper also applies it to a kept-alive connection waiting for its next
//!   request.
//! - **An idle timeout** ([`HttpLimits::idle_timeout`]): a connection that
//!   moves no byte either way for that long (a client that stopped reading
//!   its response) is shut down, and dropped if it does not finish within
//!   [`SHUTDOWN_GRACE`].
//!
//! The open file limit is the other bound on connections: [`raise_open_files_limit`]
//! lifts the soft limit to the hard one at start (`tspi` does), so the
//! connection limit, not the default soft limit of 1024 descriptors,
//! decides.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a connection being shut down for idleness may take to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// How long a refused connection is kept to read what its client sent.
const REFUSAL_LINGER: Duration = Duration::from_millis(250);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop
/// does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// hyper's smallest allowed read buffer: also the longest request head.
const REQUEST_BUF_MAX: usize = 8 * 1024;

/// What is written to a connection refused over a limit: a whole response,
/// small enough for one non-blocking write into a fresh socket's buffer.
const REFUSED: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 28\r\nConnection: close\r\nRetry-After: 1\r\n\r\ntoo many connections; retry\n";

/// The bounds of one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once, from everyone.
    pub connections_max: usize,
    /// Connections open at once from one IP address (so one host cannot
    /// take every slot).
    pub connections_per_peer_max: usize,
    /// Time to read a whole request head, counted from when hyper starts
    /// waiting for it: from accept, and on a kept-alive connection from the
    /// end of the previous response, so it also closes keep-alive
    /// connections that stay quiet this long.
    pub header_read_timeout: Duration,
    /// Time a connection may move no byte in either direction (a client
    /// that stopped reading its response, an upgraded connection gone
    /// quiet).
    pub idle_timeout: Duration,
}

impl HttpLimits {
    /// The `/metrics` endpoint's bounds: a scraper or two, an operator's
    /// curl; generous enough that hundreds of stuck clients from elsewhere
    /// leave room.
    pub const METRICS: HttpLimits = HttpLimits {
        connections_max: 1024,
        connections_per_peer_max: 64,
        header_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
    };
}

/// A server's connection counts, for its own metrics.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections accepted since start (refused ones included).
    pub accepted: AtomicU64,
    /// Connections refused over [`HttpLimits::connections_max`] or
    /// [`HttpLimits::connections_per_peer_max`].
    pub refused: AtomicU64,
    /// Connections shut down by [`HttpLimits::idle_timeout`].
    pub idle_closed: AtomicU64,
}

/// Bind `addr` (port 0 picks a free port) and serve `router` under
/// `limits` until the returned task is aborted. Returns the bound address.
/// Connections already open finish on their own, within the limits' timeouts.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(accept_loop(listener, router, limits, stats));
    Ok((local, task))
}

/// Open connections, in all and per peer address.
#[derive(Debug, Default)]
struct Slots {
    per_peer: HashMap<IpAddr, usize>,
    total: usize,
}

/// One open connection's place in [`Slots`], given back on drop.
struct Slot {
    slots: Arc<Mutex<Slots>>,
    stats: Arc<HttpStats>,
    peer: IpAddr,
}

impl Slot {
    /// A slot for `peer`, unless a limit is reached.
    fn take(
        slots: &Arc<Mutex<Slots>>,
        stats: &Arc<HttpStats>,
        limits: &HttpLimits,
        peer: IpAddr,
    ) -> Option<Slot> {
        let mut s = slots.lock().unwrap_or_else(|e| e.into_inner());
        let mine = s.per_peer.get(&peer).copied().unwrap_or(0);
        if s.total >= limits.connections_max || mine >= limits.connections_per_peer_max {
            return None;
        }
        s.total += 1;
        *s.per_peer.entry(peer).or_default() += 1;
        stats.open.fetch_add(1, Relaxed);
        Some(Slot {
            slots: slots.clone(),
            stats: stats.clone(),
            peer,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        s.total -= 1;
        if let Some(n) = s.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                s.per_peer.remove(&self.peer);
            }
        }
        self.stats.open.fetch_sub(1, Relaxed);
    }
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
) {
    let slots = Arc::new(Mutex::new(Slots::default()));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "http: accept failed; retrying");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        stats.accepted.fetch_add(1, Relaxed);
        let Some(slot) = Slot::take(&slots, &stats, &limits, peer.ip()) else {
            stats.refused.fetch_add(1, Relaxed);
            tokio::spawn(refuse(stream));
            continue;
        };
        // Handlers may ask for the peer (`ConnectInfo<SocketAddr>`).
        let router = router
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let stats = stats.clone();
        tokio::spawn(async move {
            serve_connection(stream, router, &limits, &stats).await;
            drop(slot);
        });
    }
}

/// Answer 503 and close, within [`REFUSAL_LINGER`]. What the client sent
/// is read and dropped first, so that the close is not a reset that
/// discards the answer before the client reads it.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Never waiting to write: a fresh socket's send buffer takes it whole.
    let _ = stream.try_write(REFUSED);
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 1024];
    let drain = async { while let Ok(1..) = stream.read(&mut sink).await {} };
    let _ = tokio::time::timeout(REFUSAL_LINGER, drain).await;
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: &HttpLimits,
    stats: &HttpStats,
) {
    let _ = stream.set_nodelay(true);
    let start = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Tracked {
        inner: stream,
        start,
        last_ms: activity.clone(),
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(REQUEST_BUF_MAX)
        .serve_connection(io, TowerToHyperService::new(router))
        .with_upgrades();
    tokio::pin!(conn);
    loop {
        let last = start + Duration::from_millis(activity.load(Relaxed));
        tokio::select! {
            // An error is the client's doing (reset, bad request, timeout):
            // nothing for the operator.
            _ = conn.as_mut() => return,
            () = tokio::time::sleep_until(last + limits.idle_timeout) => {
                let now_ms = start.elapsed().as_millis() as u64;
                if now_ms.saturating_sub(activity.load(Relaxed)) < limits.idle_timeout.as_millis() as u64 {
                    continue; // it moved since: wait again from then
                }
                stats.idle_closed.fetch_add(1, Relaxed);
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await;
                return;
            }
        }
    }
}

/// A stream that notes when it last moved a byte, in milliseconds since
/// `start`.
struct Tracked {
    inner: TcpStream,
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Tracked {
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Lift this process's soft limit on open files to its hard limit (what
/// Go's runtime does at start): the default soft limit, 1024, would refuse
/// connections long before [`HttpLimits::connections_max`]. Returns the
/// limit now in force.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// The Prometheus families of one server's [`HttpStats`], labelled
/// `server="<name>"`.
pub fn render_prometheus(name: &str, stats: &HttpStats) -> String {
    let mut s = String::new();
    let label = format!("{{server=\"{name}\"}}");
    crate::metrics::write_gauge_family(
        &mut s,
        "tspi_http_connections_open",
        "HTTP connections open now.",
        &[(label.as_str(), stats.open.load(Relaxed))],
    );
    for (family, help, v) in [
        (
            "tspi_http_connections_accepted_total",
            "HTTP connections accepted, refused ones included.",
            &stats.accepted,
        ),
        (
            "tspi_http_connections_refused_total",
            "HTTP connections refused over the connection limits (answered 503).",
            &stats.refused,
        ),
        (
            "tspi_http_connections_idle_closed_total",
            "HTTP connections closed after moving no byte for the idle timeout.",
            &stats.idle_closed,
        ),
    ] {
        crate::metrics::write_family(&mut s, family, help, "counter");
        let _ = writeln!(s, "{family}{label} {}", v.load(Relaxed));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_in_all_and_per_peer_and_given_back() {
        let slots = Arc::new(Mutex::new(Slots::default()));
        let stats = Arc::new(HttpStats::default());
        let limits = HttpLimits {
            connections_max: 3,
            connections_per_peer_max: 2,
            ..HttpLimits::METRICS
        };
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let a1 = Slot::take(&slots, &stats, &limits, a).unwrap();
        let a2 = Slot::take(&slots, &stats, &limits, a).unwrap();
        assert!(Slot::take(&slots, &stats, &limits, a).is_none(), "per peer");
        let b1 = Slot::take(&slots, &stats, &limits, b).unwrap();
        assert!(Slot::take(&slots, &stats, &limits, b).is_none(), "in all");
        assert_eq!(stats.open.load(Relaxed), 3);
        drop(a1);
        let b2 = Slot::take(&slots, &stats, &limits, b).unwrap();
        drop((a2, b1, b2));
        assert_eq!(stats.open.load(Relaxed), 0);
        let s = slots.lock().unwrap();
        assert_eq!((s.total, s.per_peer.len()), (0, 0));
    }

    #[test]
    fn the_refusal_is_one_whole_response() {
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
    }

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let now = raise_open_files_limit().unwrap();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!((lim.rlim_cur, lim.rlim_max), (now, now));
    }
}
