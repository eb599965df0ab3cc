//! Sending datagrams fast: UDP generic segmentation offload (one `send` of
//! up to 64 × 37 bytes becomes 64 datagrams) with a plain-`send` fallback.
//! Used by the replay's UDP sink, and by the benchmarks and the load
//! generator (whose open-loop pacer lives in `tspi-loadgen`).
//!
//! Measured on the 2-core development box: on loopback the sender's core does the receive softirq work;
//! `sendmmsg` × 64 tops out near 0.3 Mpps per core, a GSO sender at
//! 0.8–1.5 Mpps, so the sender is not the bottleneck of a capacity test.

use crate::codec::DATAGRAM_LEN;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Segments per GSO send (the kernel's `UDP_MAX_SEGMENTS` is at least 64).
pub const GSO_SEGMENTS_MAX: usize = 64;

/// A connected UDP socket that sends 37-byte datagrams in batches.
#[derive(Debug)]
pub struct DatagramSender {
    sock: UdpSocket,
    gso: bool,
    buf: Vec<u8>,
}

/// How datagrams to a multicast group leave (ignored for unicast targets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MulticastOut {
    /// IPv4: the local interface address to send from (`IP_MULTICAST_IF`);
    /// `None`: the routing table decides (and with no route for the group,
    /// the send fails).
    pub interface_v4: Option<Ipv4Addr>,
    /// IPv6: the interface index to send from (`IPV6_MULTICAST_IF`).
    pub interface_v6: Option<u32>,
    /// Hops the datagrams may take (`IP_MULTICAST_TTL` /
    /// `IPV6_MULTICAST_HOPS`); `None`: the kernel's default, 1 (this subnet).
    pub ttl: Option<u32>,
    /// Do not loop datagrams back to listeners on this host
    /// (`IP_MULTICAST_LOOP` off; the kernel's default is on).
    pub no_loop: bool,
}

/// `--multicast-if` names no interface of this machine.
#[derive(Debug, thiserror::Error)]
#[error("{0:?}: not an IPv4 address, an interface index or the name of an interface here")]
pub struct InterfaceError(pub String);

impl MulticastOut {
    /// Parse an interface for `--multicast-if`: an IPv4 address, or an IPv6
    /// interface by index or name (`eth0`).
    pub fn with_interface(mut self, text: &str) -> Result<Self, InterfaceError> {
        if let Ok(a) = text.parse::<Ipv4Addr>() {
            self.interface_v4 = Some(a);
        } else if let Ok(i) = text.parse::<u32>() {
            self.interface_v6 = Some(i);
        } else {
            let name = std::ffi::CString::new(text).map_err(|_| InterfaceError(text.to_owned()))?;
            // SAFETY: if_nametoindex(3) reads a NUL-terminated string.
            let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if i == 0 {
                return Err(InterfaceError(text.to_owned()));
            }
            self.interface_v6 = Some(i);
        }
        Ok(self)
    }

    fn apply(&self, sock: &UdpSocket, to: SocketAddr) -> io::Result<()> {
        if !to.ip().is_multicast() {
            return Ok(());
        }
        let s = socket2::SockRef::from(sock);
        match to {
            SocketAddr::V4(_) => {
                if let Some(a) = self.interface_v4 {
                    s.set_multicast_if_v4(&a)?;
                }
                if let Some(t) = self.ttl {
                    s.set_multicast_ttl_v4(t)?;
                }
                s.set_multicast_loop_v4(!self.no_loop)?;
            }
            SocketAddr::V6(_) => {
                if let Some(i) = self.interface_v6 {
                    s.set_multicast_if_v6(i)?;
                }
                if let Some(t) = self.ttl {
                    s.set_multicast_hops_v6(t)?;
                }
                s.set_multicast_loop_v6(!self.no_loop)?;
            }
        }
        Ok(())
    }
}

impl DatagramSender {
    /// Connect to `to` from an ephemeral port; enables GSO when the kernel
    /// has it.
    pub fn connect(to: SocketAddr) -> io::Result<Self> {
        Self::connect_with(to, MulticastOut::default())
    }

    /// [`DatagramSender::connect`], sending to a multicast group as
    /// `multicast` says.
    pub fn connect_with(to: SocketAddr, multicast: MulticastOut) -> io::Result<Self> {
        let bind: SocketAddr = if to.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let sock = UdpSocket::bind(bind)?;
        multicast.apply(&sock, to)?;
        sock.connect(to)?;
        let seg = DATAGRAM_LEN as libc::c_int;
        // SAFETY: setsockopt on a valid fd we own, with a pointer to a live
        // c_int and its exact size.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_UDP,
                libc::UDP_SEGMENT,
                (&seg as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Ok(DatagramSender {
            sock,
            gso: rc == 0,
            buf: Vec::with_capacity(GSO_SEGMENTS_MAX * DATAGRAM_LEN),
        })
    }

    /// True when sends are segmented by the kernel.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Send every datagram, in order. Returns how many were handed to the
    /// kernel (all, unless an error stops it).
    pub fn send(&mut self, datagrams: &[[u8; DATAGRAM_LEN]]) -> io::Result<usize> {
        if !self.gso {
            for d in datagrams {
                self.sock.send(d)?;
            }
            return Ok(datagrams.len());
        }
        for chunk in datagrams.chunks(GSO_SEGMENTS_MAX) {
            self.buf.clear();
            for d in chunk {
                self.buf.extend_from_slice(d);
            }
            loop {
                match self.sock.send(&self.buf) {
                    Ok(_) => break,
                    // The socket's send buffer is full: wait for room.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::yield_now();
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(datagrams.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_every_datagram_over_loopback() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut tx = DatagramSender::connect(rx.local_addr().unwrap()).unwrap();
        let datagrams: Vec<[u8; DATAGRAM_LEN]> = (0..150u8).map(|i| [i; DATAGRAM_LEN]).collect();
        assert_eq!(tx.send(&datagrams).unwrap(), 150);
        let mut buf = [0u8; 128];
        for i in 0..150u8 {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(n, DATAGRAM_LEN, "datagram {i} kept its own boundary");
            assert_eq!(buf[0], i, "in order");
        }
    }
}
