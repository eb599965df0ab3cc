//! Opening, binding and joining the receive sockets, before any thread runs;
//! and refusing a port another socket already holds.
//!
//! Every worker binds its own `SO_REUSEPORT` socket per listen address, so
//! the kernel would just as well let *another process* of the same user
//! join the port, and spread the datagrams over both: a second `tspi
//! ingest` started by mistake would silently take (nearly) the whole feed.
//! So before binding, each listen address with a fixed port is probed with
//! a plain socket (no `SO_REUSEPORT`, no `SO_REUSEADDR`), which the kernel
//! refuses (`EADDRINUSE`) exactly when some socket already holds an
//! overlapping address on that port (`0.0.0.0:p` and `127.0.0.1:p`
//! overlap; `127.0.0.1:p` and `127.0.0.2:p` do not; `[::]:p` is probed
//! IPv6-only, as it is bound). Start is then refused, naming the holder
//! (pid and command line, from `/proc/net/udp{,6}` and `/proc/*/fd`, see
//! `proc_net.rs`). The probe is closed before the workers bind.
//!
//! A listen address that is itself a multicast group (`239.1.2.3:5000`)
//! is the exception: the kernel gives every socket bound there its own
//! copy of each datagram, so another holder takes nothing away; it is
//! logged as a warning. A wildcard address that joins groups
//! (`0.0.0.0:5000`) is refused like any other, since unicast datagrams to
//! the port would be split.
//!
//! Port 0 (a fresh port) is not probed. Two ingests started within the
//! same few microseconds could both pass the probe before either binds;
//! that race is not closed (a lock file would have to be shared by every
//! user and sandbox the appliance may run as).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};

use super::ReceiveError;
use super::config::{ReceiveConfig, group_matches};
use super::proc_net;

/// The sockets of every worker, opened and bound.
pub(crate) struct OpenSockets {
    /// Per worker, its sockets (one per listen address it serves).
    pub(crate) per_worker: Vec<Vec<Socket>>,
    /// Per worker, the index in `cfg.listen` of each of its sockets.
    pub(crate) per_worker_listen: Vec<Vec<usize>>,
    /// Per listen address, in config order, what it is bound to (port 0
    /// replaced by the kernel's choice).
    pub(crate) local_addrs: Vec<SocketAddr>,
    /// Inode of every socket, for the kernel's drop counters.
    pub(crate) inodes: Vec<u64>,
    /// The smallest receive buffer the kernel granted, in bytes (half of
    /// what `SO_RCVBUF` reads back: the kernel doubles the value set to
    /// cover its bookkeeping).
    pub(crate) rcvbuf_granted_bytes: usize,
}

/// Open every socket of a validated config: one per worker per unicast
/// listen address (`SO_REUSEPORT`, same port), one on a single worker for
/// a listen address that receives multicast. Refuses a fixed port another
/// socket holds ([`check_port`]).
pub(crate) fn open(cfg: &ReceiveConfig) -> Result<OpenSockets, ReceiveError> {
    // Every address before any is bound: our own sockets are not holders.
    for &addr in &cfg.listen {
        check_port(addr)?;
    }
    let mut out = OpenSockets {
        per_worker: (0..cfg.workers).map(|_| Vec::new()).collect(),
        per_worker_listen: (0..cfg.workers).map(|_| Vec::new()).collect(),
        local_addrs: Vec::with_capacity(cfg.listen.len()),
        inodes: Vec::new(),
        rcvbuf_granted_bytes: usize::MAX,
    };
    for (i, &addr) in cfg.listen.iter().enumerate() {
        let owners = if cfg.receives_multicast(addr) {
            i % cfg.workers..i % cfg.workers + 1
        } else {
            0..cfg.workers
        };
        let mut bound = addr;
        for w in owners {
            let socket = open_one(cfg, bound)?;
            if bound.port() == 0 {
                let local = socket
                    .local_addr()
                    .and_then(|a| {
                        a.as_socket()
                            .ok_or_else(|| io::Error::other("not an IP socket address"))
                    })
                    .map_err(|source| ReceiveError::Socket {
                        addr,
                        op: "read the bound port (getsockname)",
                        source,
                    })?;
                bound.set_port(local.port());
            }
            let granted = socket
                .recv_buffer_size()
                .map_err(|source| ReceiveError::Socket {
                    addr,
                    op: "read SO_RCVBUF",
                    source,
                })?
                / 2;
            out.rcvbuf_granted_bytes = out.rcvbuf_granted_bytes.min(granted);
            out.inodes
                .push(inode(&socket).map_err(|source| ReceiveError::Socket {
                    addr,
                    op: "fstat",
                    source,
                })?);
            out.per_worker[w].push(socket);
            out.per_worker_listen[w].push(i);
        }
        out.local_addrs.push(bound);
    }
    Ok(out)
}

/// Refuse `addr` when another socket holds its port (see the module docs);
/// port 0 is not checked. Errors other than `EADDRINUSE` are left to the
/// real bind, which reports them with their hints.
pub(crate) fn check_port(addr: SocketAddr) -> Result<(), ReceiveError> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = || -> io::Result<()> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.bind(&addr.into())
    };
    match probe() {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let holder = proc_net::describe_holders(addr.port());
            if addr.ip().is_multicast() {
                tracing::warn!(
                    %addr,
                    holder,
                    "the multicast group's port is also bound by another socket; \
                     each receives its own copy of every datagram"
                );
                Ok(())
            } else {
                Err(ReceiveError::PortHeld { addr, holder })
            }
        }
        _ => Ok(()),
    }
}

fn open_one(cfg: &ReceiveConfig, addr: SocketAddr) -> Result<Socket, ReceiveError> {
    let err = |op: &'static str| move |source| ReceiveError::Socket { addr, op, source };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(err("create a UDP socket"))?;
    socket
        .set_reuse_port(true)
        .map_err(err("set SO_REUSEPORT"))?;
    if addr.is_ipv6() {
        // A v6 listener takes only v6, so `0.0.0.0:p` and `[::]:p` can both
        // be listened on.
        socket.set_only_v6(true).map_err(err("set IPV6_V6ONLY"))?;
        // Only groups this socket joined, not every group joined on the host
        // (Linux 4.20; older kernels deliver only joined groups to v6
        // sockets anyway).
        match socket.set_multicast_all_v6(false) {
            Err(e) if e.raw_os_error() != Some(libc::ENOPROTOOPT) => {
                return Err(err("clear IPV6_MULTICAST_ALL")(e));
            }
            _ => {}
        }
    } else {
        socket
            .set_multicast_all_v4(false)
            .map_err(err("clear IP_MULTICAST_ALL"))?;
    }
    socket
        .set_recv_buffer_size(cfg.rcvbuf_bytes)
        .map_err(err("set SO_RCVBUF"))?;
    socket
        .bind(&addr.into())
        .map_err(|source| ReceiveError::Bind { addr, source })?;
    for g in cfg
        .multicast
        .iter()
        .filter(|g| group_matches(g.group, addr))
    {
        let joined = match g.group {
            IpAddr::V4(group) => {
                let iface = match (g.interface, g.interface_index) {
                    (Some(IpAddr::V4(a)), _) => InterfaceIndexOrAddress::Address(a),
                    (_, Some(index)) => InterfaceIndexOrAddress::Index(index),
                    _ => InterfaceIndexOrAddress::Address(Ipv4Addr::UNSPECIFIED),
                };
                socket.join_multicast_v4_n(&group, &iface)
            }
            IpAddr::V6(group) => socket.join_multicast_v6(&group, g.interface_index.unwrap_or(0)),
        };
        joined.map_err(|source| ReceiveError::Join {
            group: g.group,
            interface: match (g.interface, g.interface_index) {
                (Some(a), _) => a.to_string(),
                (None, Some(i)) => format!("index {i}"),
                (None, None) => "the default interface".to_owned(),
            },
            addr,
            source,
        })?;
    }
    Ok(socket)
}

/// The socket's inode number, as `/proc/net/udp` lists it.
pub(crate) fn inode(socket: &impl AsRawFd) -> io::Result<u64> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: the fd is open for the duration of the call (borrowed from
    // `socket`), and `st` points to writable memory of the size fstat fills.
    let rc = unsafe { libc::fstat(socket.as_raw_fd(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat returned 0, so it initialised the whole struct.
    let st = unsafe { st.assume_init() };
    Ok(st.st_ino)
}
