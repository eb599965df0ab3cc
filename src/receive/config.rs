//! What a set of receive threads is told to do, and the checks that turn a
//! mistaken configuration into a typed error before any socket exists; and
//! the `[ingest]` section of the configuration file that it comes from.
//!
//! The bounds are those of [`crate::config::limits`]; the constants below
//! are their `usize` forms.

use super::sources::Network;
use crate::config::limits;
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Receive threads at most (a named bound; one rtrb ring and one thread each).
pub const WORKERS_MAX: usize = limits::INGEST_WORKERS.max as usize;
/// Listen addresses at most.
pub const LISTEN_LEN_MAX: usize = limits::INGEST_LISTEN_LEN_MAX;
/// Multicast groups at most.
pub const MULTICAST_LEN_MAX: usize = limits::INGEST_MULTICAST_LEN_MAX;
/// Largest `batch_len`: datagrams per `recvmmsg` call, buffers per io_uring
/// buffer ring (the kernel allows 32768 ring entries; the completion queue is
/// sized from this, see `uring.rs`).
pub const BATCH_LEN_MAX: usize = limits::INGEST_BATCH_LEN.max as usize;
/// Largest `ring_capacity` per worker (about 56 bytes per slot: 3.7 GiB).
pub const RING_CAPACITY_MAX: usize = limits::INGEST_RING_CAPACITY.max as usize;
/// Networks at most in one source allow-list.
pub const SOURCE_NETS_MAX: usize = limits::INGEST_SOURCE_NETS_MAX;
/// Largest `SO_RCVBUF` request (the kernel takes an `int` and doubles it).
pub const RCVBUF_BYTES_MAX: usize = limits::INGEST_RCVBUF_BYTES.max as usize;

/// Core ids are below this (`CPU_SETSIZE`, the size of the affinity mask).
pub const CORE_ID_END: usize = limits::CORE_ID_END;

const _: () = assert!(CORE_ID_END == libc::CPU_SETSIZE as usize);

/// `[ingest]`: receiving datagrams.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// UDP addresses to listen on (IPv4 or IPv6). A multicast group's port is
    /// listened on by binding `0.0.0.0:<port>` (or `[::]:<port>`).
    pub udp: Vec<SocketAddr>,
    /// Multicast groups to join.
    pub multicast: Vec<MulticastConfig>,
    /// Receive threads, each with its own `SO_REUSEPORT` socket per address.
    pub workers: usize,
    /// Core per receive thread (same length as `workers`); empty: cores
    /// 0..workers. Publishing runs on the other cores.
    pub cores: Vec<usize>,
    /// `auto` (io_uring when the kernel allows it, else recvmmsg),
    /// `io-uring` or `recvmmsg`.
    pub backend: Backend,
    /// `SO_RCVBUF` per socket. The kernel caps it at `net.core.rmem_max`
    /// and charges ~830 bytes per queued 37-byte datagram, so 64 MiB holds
    /// ~80k datagrams.
    pub rcvbuf_bytes: usize,
    /// Datagrams read per system call / buffers per io_uring buffer ring.
    pub batch_len: usize,
    /// Frames each receive thread's ring holds while JetStream is slow or
    /// away (about 48 bytes each).
    pub ring_capacity: usize,
    /// What happens to a datagram when its ring is full.
    pub overflow: OverflowPolicy,
    /// Only these sensor ids are published (empty: all). Others are counted
    /// as `filtered`.
    pub allow_sensors: Vec<u16>,
    /// Senders every listen address takes datagrams from: addresses and
    /// networks (`10.1.0.0/16`, `192.168.5.7`, `fd00::/8`); empty: every
    /// sender. Datagrams from others are counted as rejected, reason
    /// `source`. A `sources` entry replaces this list for its address.
    pub allow_sources: Vec<Network>,
    /// Allow-lists of single listen addresses (`[[ingest.sources]]`).
    pub sources: Vec<SourcesConfig>,
}

/// One `[[ingest.sources]]` entry: the senders one listen address takes
/// datagrams from, instead of `ingest.allow_sources`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SourcesConfig {
    /// The listen address, exactly as `ingest.udp` lists it.
    pub listen: SocketAddr,
    /// Addresses and networks; not empty.
    pub allow: Vec<Network>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            udp: Vec::new(),
            multicast: Vec::new(),
            workers: limits::INGEST_WORKERS.default as usize,
            cores: Vec::new(),
            backend: Backend::Auto,
            rcvbuf_bytes: limits::INGEST_RCVBUF_BYTES.default as usize,
            batch_len: limits::INGEST_BATCH_LEN.default as usize,
            ring_capacity: limits::INGEST_RING_CAPACITY.default as usize,
            overflow: OverflowPolicy::DropNewest,
            allow_sensors: Vec::new(),
            allow_sources: Vec::new(),
            sources: Vec::new(),
        }
    }
}

/// One multicast group of `[ingest]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MulticastConfig {
    /// Group address, IPv4 or IPv6.
    pub group: IpAddr,
    /// IPv4: the address of the interface to join on (default: the kernel's
    /// choice).
    pub interface: Option<IpAddr>,
    /// IPv6: the index of the interface to join on (default 0: the kernel's
    /// choice).
    pub interface_index: Option<u32>,
}

impl IngestConfig {
    /// Cores for the receive threads: as configured, else 0..workers (none
    /// for a `workers` beyond [`WORKERS_MAX`], which validation refuses:
    /// never a list as long as a wrong number).
    pub fn receive_cores(&self) -> Vec<usize> {
        if self.cores.is_empty() {
            if self.workers > WORKERS_MAX {
                return Vec::new();
            }
            (0..self.workers).collect()
        } else {
            self.cores.clone()
        }
    }

    /// The receive threads' settings (not yet validated; `wake` unset).
    pub fn receive_config(&self) -> ReceiveConfig {
        ReceiveConfig {
            listen: self.udp.clone(),
            multicast: self
                .multicast
                .iter()
                .map(|m| MulticastGroup {
                    group: m.group,
                    interface: m.interface,
                    interface_index: m.interface_index,
                })
                .collect(),
            workers: self.workers,
            cores: self.receive_cores(),
            backend: self.backend,
            rcvbuf_bytes: self.rcvbuf_bytes,
            batch_len: self.batch_len,
            ring_capacity: self.ring_capacity,
            allow_sensors: (!self.allow_sensors.is_empty()).then(|| self.allow_sensors.clone()),
            allow_sources: self.allow_sources.clone(),
            sources: self.sources.clone(),
            overflow: self.overflow,
            spill_capacity: None,
            wake: None,
        }
    }

    /// Every problem with these values (empty: fine), each naming its key:
    /// exactly [`ReceiveConfig::problems`] of the receive threads this
    /// section makes, so the file and the threads cannot disagree. An empty
    /// `udp` is a problem only for the ingest role (`Config` checks it).
    pub fn problems(&self) -> Vec<String> {
        let mut p: Vec<String> = self
            .receive_config()
            .problems()
            .into_iter()
            .filter(|e| *e != ConfigError::NoListen)
            .map(|e| e.in_ingest_section())
            .collect();
        let mut seen = HashSet::new();
        if let Some(c) = self.cores.iter().find(|&&c| !seen.insert(c)) {
            p.push(format!(
                "ingest.cores lists core {c} twice: give each receive thread its own core"
            ));
        }
        p
    }
}

/// How datagrams come out of the kernel.
///
/// Named one way wherever a user sees it: `auto`, `io-uring`, `recvmmsg`
/// ([`Backend::name`]) in config files, on the command line, in logs and in
/// the final account. The older spellings `iouring` and `io_uring` are still
/// read, with a warning naming `io-uring` ([`Backend::OLD_SPELLINGS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// io_uring when [`super::probe_io_uring`] passes, else recvmmsg (the
    /// reason is logged).
    Auto,
    /// Multishot `RECVMSG` with a provided buffer ring: one system call per
    /// wake-up for any number of sockets and datagrams (bench/README.md, machine facts: 1.31 Mpps
    /// per core on loopback). Starting fails if the kernel or a sandbox
    /// refuses io_uring.
    IoUring,
    /// Batched `recvmmsg` over pre-allocated buffers, `poll` across sockets
    /// when idle. Works everywhere (bench/README.md, machine facts: 1.18 Mpps per core).
    Recvmmsg,
}

/// A backend name that is none of [`Backend::ALL`]'s (nor an old spelling).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown receive backend {0:?}: expected auto, io-uring or recvmmsg")]
pub struct UnknownBackend(pub String);

impl Backend {
    /// Every backend, in the order help texts list them.
    pub const ALL: [Backend; 3] = [Backend::Auto, Backend::IoUring, Backend::Recvmmsg];

    /// Spellings read before the backend was named one way, and what each
    /// means. Read with a warning; drop after one release.
    pub const OLD_SPELLINGS: [(&'static str, Backend); 2] = [
        ("iouring", Backend::IoUring),
        ("io_uring", Backend::IoUring),
    ];

    /// The one name: in config files, on the command line, in logs, metrics
    /// and the final account.
    pub const fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::IoUring => "io-uring",
            Backend::Recvmmsg => "recvmmsg",
        }
    }

    /// Pure: the backend `text` names, and whether it is an old spelling.
    pub fn lookup(text: &str) -> Result<(Backend, bool), UnknownBackend> {
        if let Some(b) = Backend::ALL.into_iter().find(|b| b.name() == text) {
            return Ok((b, false));
        }
        Backend::OLD_SPELLINGS
            .into_iter()
            .find(|(old, _)| *old == text)
            .map(|(_, b)| (b, true))
            .ok_or_else(|| UnknownBackend(text.to_owned()))
    }
}

impl std::str::FromStr for Backend {
    type Err = UnknownBackend;

    /// [`Backend::lookup`], warning when `text` is an old spelling.
    fn from_str(text: &str) -> Result<Backend, UnknownBackend> {
        let (b, old) = Backend::lookup(text)?;
        if old {
            tracing::warn!(
                "receive backend {text:?} is an old spelling: write \"{}\"",
                b.name()
            );
        }
        Ok(b)
    }
}

impl<'de> serde::Deserialize<'de> for Backend {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Backend, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a receive thread does with an accepted datagram when its ring to the
/// publisher is full. A receive thread never blocks: a blocked reader lets
/// the kernel drop datagrams silently (visible only as
/// [`super::Receivers::kernel_drops`]), which is worse than a counted drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OverflowPolicy {
    /// Drop the incoming datagram and count it as `ring_dropped`. Costs: no
    /// memory beyond the ring and no latency for the frames already queued;
    /// data is lost while the publisher is slower than the input. The ring's
    /// size is the only buffer, so size `ring_capacity` for the longest
    /// publisher stall to ride out (capacity / input rate).
    DropNewest,
}

/// One multicast group to join.
///
/// The group is joined on every socket of its family whose listen address is
/// the group itself (`239.1.2.3:5000`, which then receives only that group)
/// or the unspecified address (`0.0.0.0:5000`, which also receives unicast to
/// the port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MulticastGroup {
    /// A multicast address, IPv4 (`224.0.0.0/4`) or IPv6 (`ff00::/8`).
    pub group: IpAddr,
    /// IPv4 only: the address of the interface to join on, e.g. `127.0.0.1`
    /// (default: the kernel's choice by route).
    pub interface: Option<IpAddr>,
    /// The interface index to join on: IPv6 joins take only an index; for
    /// IPv4 it is an alternative to `interface` (default: the kernel's
    /// choice).
    pub interface_index: Option<u32>,
}

/// Everything the receive threads need, validated by [`ReceiveConfig::validate`]
/// (which [`super::Receivers::start`] calls).
#[derive(Clone, Debug)]
pub struct ReceiveConfig {
    /// Bind addresses, IPv4 and IPv6. Port 0 binds a free port (the same one
    /// for every worker; see [`super::Receivers::local_addrs`]). A multicast
    /// group address binds the group's port and receives only that group.
    pub listen: Vec<SocketAddr>,
    /// Groups to join, see [`MulticastGroup`].
    pub multicast: Vec<MulticastGroup>,
    /// Receive threads. Each has its own `SO_REUSEPORT` socket per unicast
    /// listen address, so the kernel spreads sources over workers by a hash
    /// of the addresses and ports (one source stays on one worker). A listen
    /// address that receives multicast is served by one worker only
    /// (address `i` by worker `i % workers`): the kernel hands every
    /// multicast datagram to every socket bound to the port, so sockets on
    /// several workers would each get a copy.
    pub workers: usize,
    /// Core per worker (`core_affinity`); empty: threads are not pinned.
    pub cores: Vec<usize>,
    pub backend: Backend,
    /// `SO_RCVBUF` requested per socket. The kernel caps it at
    /// `net.core.rmem_max` (start-up warns when it does) and charges ~830
    /// bytes per queued 37-byte datagram.
    pub rcvbuf_bytes: usize,
    /// Datagrams per `recvmmsg` call; buffers in each io_uring buffer ring
    /// (rounded up to a power of two).
    pub batch_len: usize,
    /// Frames each worker's ring to the publisher holds.
    pub ring_capacity: usize,
    /// `None`: every sensor; else only these sensor ids (others are counted
    /// as `filtered`).
    pub allow_sensors: Option<Vec<u16>>,
    /// Senders every listen address takes datagrams from (empty: all),
    /// except those with an entry in `sources`. Checked on the receiving
    /// core before parsing; others are counted as rejected, reason
    /// [`crate::codec::RejectReason::Source`].
    pub allow_sources: Vec<Network>,
    /// Per listen address allow-lists, replacing `allow_sources` for that
    /// address; each names an address of `listen`.
    pub sources: Vec<SourcesConfig>,
    pub overflow: OverflowPolicy,
    /// Per worker, a ring of this many frames that takes what the main
    /// ring cannot hold (the disk spool's thread empties it); `None`: no
    /// spill, a full ring drops.
    pub spill_capacity: Option<usize>,
    /// Notified after every batch that put frames into a ring, so a parked
    /// consumer wakes at once instead of on its next timer tick. One
    /// notification per batch, never per datagram.
    pub wake: Option<std::sync::Arc<tokio::sync::Notify>>,
}

impl ReceiveConfig {
    /// A single-worker configuration with the appliance's defaults for the
    /// numbers (`rcvbuf_bytes` 32 MiB, `batch_len` 64, `ring_capacity`
    /// 2^18), `Backend::Auto` and no filtering.
    pub fn new(listen: Vec<SocketAddr>) -> Self {
        ReceiveConfig {
            listen,
            multicast: Vec::new(),
            workers: 1,
            cores: Vec::new(),
            backend: Backend::Auto,
            rcvbuf_bytes: 32 << 20,
            batch_len: 64,
            ring_capacity: 1 << 18,
            allow_sensors: None,
            allow_sources: Vec::new(),
            sources: Vec::new(),
            overflow: OverflowPolicy::DropNewest,
            spill_capacity: None,
            wake: None,
        }
    }

    /// The senders listen address `addr` (as configured) takes datagrams
    /// from: its `sources` entry, else `allow_sources`; empty: every
    /// sender.
    pub fn sources_for(&self, addr: SocketAddr) -> &[Network] {
        self.sources
            .iter()
            .find(|s| s.listen == addr)
            .map_or(&self.allow_sources, |s| &s.allow)
    }

    /// Check every field and their combinations. Does not touch the network
    /// (binding and joining happen in [`super::Receivers::start`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every problem [`ReceiveConfig::validate`] would report, in order.
    pub fn problems(&self) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        self.number_problems(&mut problems);
        if let Err(e) = self.check_addresses() {
            problems.push(e);
        }
        problems
    }

    fn number_problems(&self, problems: &mut Vec<ConfigError>) {
        if self.listen.len() > LISTEN_LEN_MAX {
            problems.push(ConfigError::TooMany {
                what: "listen addresses",
                len: self.listen.len(),
                max: LISTEN_LEN_MAX,
            });
        }
        if self.multicast.len() > MULTICAST_LEN_MAX {
            problems.push(ConfigError::TooMany {
                what: "multicast groups",
                len: self.multicast.len(),
                max: MULTICAST_LEN_MAX,
            });
        }
        if !(1..=WORKERS_MAX).contains(&self.workers) {
            problems.push(ConfigError::OutOfRange {
                field: "workers",
                value: self.workers,
                min: 1,
                max: WORKERS_MAX,
            });
        }
        if !self.cores.is_empty() && self.cores.len() != self.workers {
            problems.push(ConfigError::CoresLen {
                workers: self.workers,
                cores: self.cores.len(),
            });
        }
        if let Some(&core) = self.cores.iter().find(|&&c| c >= CORE_ID_END) {
            problems.push(ConfigError::OutOfRange {
                field: "cores",
                value: core,
                min: 0,
                max: CORE_ID_END - 1,
            });
        }
        if !(1..=BATCH_LEN_MAX).contains(&self.batch_len) {
            problems.push(ConfigError::OutOfRange {
                field: "batch_len",
                value: self.batch_len,
                min: 1,
                max: BATCH_LEN_MAX,
            });
        }
        if !(1..=RING_CAPACITY_MAX).contains(&self.ring_capacity) {
            problems.push(ConfigError::OutOfRange {
                field: "ring_capacity",
                value: self.ring_capacity,
                min: 1,
                max: RING_CAPACITY_MAX,
            });
        }
        if !(1..=RCVBUF_BYTES_MAX).contains(&self.rcvbuf_bytes) {
            problems.push(ConfigError::OutOfRange {
                field: "rcvbuf_bytes",
                value: self.rcvbuf_bytes,
                min: 1,
                max: RCVBUF_BYTES_MAX,
            });
        }
        if let Some(allow) = &self.allow_sensors
            && allow.is_empty()
        {
            problems.push(ConfigError::EmptyAllowList);
        }
        if self.allow_sources.len() > SOURCE_NETS_MAX {
            problems.push(ConfigError::TooMany {
                what: "allow_sources networks",
                len: self.allow_sources.len(),
                max: SOURCE_NETS_MAX,
            });
        }
        if let Some(s) = self
            .sources
            .iter()
            .find(|s| s.allow.len() > SOURCE_NETS_MAX)
        {
            problems.push(ConfigError::TooMany {
                what: "sources networks for one address",
                len: s.allow.len(),
                max: SOURCE_NETS_MAX,
            });
        }
    }

    fn check_addresses(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Err(ConfigError::NoListen);
        }
        let mut seen = HashSet::new();
        for &addr in &self.listen {
            if addr.port() != 0 && !seen.insert(addr) {
                return Err(ConfigError::DuplicateListen { addr });
            }
        }
        for g in &self.multicast {
            if !g.group.is_multicast() {
                return Err(ConfigError::NotMulticast { group: g.group });
            }
            match g.group {
                IpAddr::V4(_) => {
                    if let Some(iface) = g.interface
                        && !iface.is_ipv4()
                    {
                        return Err(ConfigError::InterfaceFamily {
                            group: g.group,
                            interface: iface,
                        });
                    }
                    if g.interface.is_some() && g.interface_index.is_some() {
                        return Err(ConfigError::InterfaceTwice { group: g.group });
                    }
                }
                IpAddr::V6(_) => {
                    if let Some(iface) = g.interface {
                        return Err(ConfigError::InterfaceFamily {
                            group: g.group,
                            interface: iface,
                        });
                    }
                }
            }
            let matching: Vec<SocketAddr> = self
                .listen
                .iter()
                .copied()
                .filter(|a| group_matches(g.group, *a))
                .collect();
            if matching.is_empty() {
                return Err(ConfigError::GroupWithoutListen { group: g.group });
            }
            for (i, a) in matching.iter().enumerate() {
                if a.port() != 0 && matching[..i].iter().any(|b| b.port() == a.port()) {
                    return Err(ConfigError::GroupListenedTwice {
                        group: g.group,
                        port: a.port(),
                    });
                }
            }
        }
        for &addr in &self.listen {
            if addr.ip().is_multicast() && !self.multicast.iter().any(|g| g.group == addr.ip()) {
                return Err(ConfigError::ListenGroupNotJoined { addr });
            }
        }
        for (i, s) in self.sources.iter().enumerate() {
            if !self.listen.contains(&s.listen) {
                return Err(ConfigError::SourcesNotListened { addr: s.listen });
            }
            if self.sources[..i].iter().any(|o| o.listen == s.listen) {
                return Err(ConfigError::SourcesTwice { addr: s.listen });
            }
            if s.allow.is_empty() {
                return Err(ConfigError::EmptySources { addr: s.listen });
            }
        }
        Ok(())
    }

    /// Whether the socket for listen address `addr` joins any group (and is
    /// therefore served by a single worker).
    pub(crate) fn receives_multicast(&self, addr: SocketAddr) -> bool {
        self.multicast.iter().any(|g| group_matches(g.group, addr))
    }
}

/// A group is joined on sockets of its family bound to it or to the
/// unspecified address.
pub(crate) fn group_matches(group: IpAddr, listen: SocketAddr) -> bool {
    group.is_ipv4() == listen.is_ipv4() && (listen.ip() == group || listen.ip().is_unspecified())
}

/// A configuration mistake, found before any socket is opened. The operator
/// fixes the configuration; retrying does not help.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("no listen address: give at least one UDP address to receive on")]
    NoListen,
    #[error("{len} {what}, at most {max} are supported")]
    TooMany {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} = {value}, must be within {min}..={max}")]
    OutOfRange {
        field: &'static str,
        value: usize,
        min: usize,
        max: usize,
    },
    #[error("{cores} cores for {workers} workers: give one core per worker, or none to not pin")]
    CoresLen { workers: usize, cores: usize },
    #[error(
        "allow_sensors is empty, which would filter every datagram; leave it unset to allow all sensors"
    )]
    EmptyAllowList,
    #[error("listen address {addr} appears twice")]
    DuplicateListen { addr: SocketAddr },
    #[error("multicast group {group} is not a multicast address")]
    NotMulticast { group: IpAddr },
    #[error(
        "multicast group {group}: interface {interface} does not fit (IPv4 groups take an IPv4 interface address, IPv6 groups only interface_index)"
    )]
    InterfaceFamily { group: IpAddr, interface: IpAddr },
    #[error("multicast group {group}: give interface or interface_index, not both")]
    InterfaceTwice { group: IpAddr },
    #[error(
        "multicast group {group}: no listen address can receive it; listen on the group itself (group:port) or on the unspecified address of its family (0.0.0.0:port or [::]:port)"
    )]
    GroupWithoutListen { group: IpAddr },
    #[error(
        "multicast group {group} matches two listen addresses on port {port}; each datagram would be received twice"
    )]
    GroupListenedTwice { group: IpAddr, port: u16 },
    #[error("listen address {addr} is a multicast group that no multicast entry joins")]
    ListenGroupNotJoined { addr: SocketAddr },
    #[error(
        "an allow-list is given for {addr}, which is not a listen address (udp); write the address exactly as udp lists it"
    )]
    SourcesNotListened { addr: SocketAddr },
    #[error("two allow-lists are given for {addr}; merge them into one")]
    SourcesTwice { addr: SocketAddr },
    #[error(
        "the allow-list for {addr} is empty, which would reject every datagram; remove the entry to use allow_sources"
    )]
    EmptySources { addr: SocketAddr },
}

impl ConfigError {
    /// The `[ingest]` key this problem is about.
    pub fn ingest_key(&self) -> &'static str {
        match self {
            ConfigError::NoListen
            | ConfigError::DuplicateListen { .. }
            | ConfigError::ListenGroupNotJoined { .. }
            | ConfigError::TooMany {
                what: "listen addresses",
                ..
            } => "udp",
            ConfigError::TooMany {
                what: "allow_sources networks",
                ..
            } => "allow_sources",
            ConfigError::TooMany {
                what: "sources networks for one address",
                ..
            }
            | ConfigError::SourcesNotListened { .. }
            | ConfigError::SourcesTwice { .. }
            | ConfigError::EmptySources { .. } => "sources",
            ConfigError::TooMany { .. }
            | ConfigError::NotMulticast { .. }
            | ConfigError::InterfaceFamily { .. }
            | ConfigError::InterfaceTwice { .. }
            | ConfigError::GroupWithoutListen { .. }
            | ConfigError::GroupListenedTwice { .. } => "multicast",
            ConfigError::OutOfRange { field, .. } => field,
            ConfigError::CoresLen { .. } => "cores",
            ConfigError::EmptyAllowList => "allow_sensors",
        }
    }

    /// The problem as a line of `tspi validate`, naming its key.
    pub fn in_ingest_section(&self) -> String {
        match self {
            ConfigError::OutOfRange {
                field,
                value,
                min,
                max,
            } => format!("ingest.{field} = {value}: must be {min}..={max}"),
            e => format!("ingest.{}: {e}", e.ingest_key()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(listen: &[&str]) -> ReceiveConfig {
        ReceiveConfig::new(listen.iter().map(|a| a.parse().unwrap()).collect())
    }

    fn group(g: &str) -> MulticastGroup {
        MulticastGroup {
            group: g.parse().unwrap(),
            interface: None,
            interface_index: None,
        }
    }

    #[test]
    fn backend_names_match_between_config_files_and_the_command_line() {
        use clap::ValueEnum;
        use std::str::FromStr;
        for (text, backend, old) in [
            ("auto", Backend::Auto, false),
            ("io-uring", Backend::IoUring, false),
            ("iouring", Backend::IoUring, true),
            ("io_uring", Backend::IoUring, true),
            ("recvmmsg", Backend::Recvmmsg, false),
        ] {
            let json = format!("\"{text}\"");
            assert_eq!(
                serde_json::from_str::<Backend>(&json).unwrap(),
                backend,
                "{text}"
            );
            assert_eq!(Backend::from_str(text).unwrap(), backend, "{text}");
            assert_eq!(Backend::lookup(text).unwrap(), (backend, old), "{text}");
        }
        for b in Backend::ALL {
            assert_eq!(Backend::lookup(b.name()).unwrap(), (b, false));
            assert_eq!(b.to_string(), b.name());
        }
        assert_eq!(Backend::IoUring.name(), "io-uring");
        assert!(serde_json::from_str::<Backend>("\"dpdk\"").is_err());
        assert_eq!(
            Backend::from_str("dpdk"),
            Err(UnknownBackend("dpdk".into()))
        );
        let p: OverflowPolicy = serde_json::from_str("\"drop-newest\"").unwrap();
        assert_eq!(p, OverflowPolicy::DropNewest);
        assert_eq!(
            OverflowPolicy::from_str("drop-newest", false).unwrap(),
            OverflowPolicy::DropNewest
        );
    }

    #[test]
    fn defaults_validate() {
        cfg(&["127.0.0.1:5000", "[::]:5000"]).validate().unwrap();
    }

    #[test]
    fn multicast_rules() {
        // Joined on the group's own address and on the unspecified one.
        let mut c = cfg(&["239.1.1.1:5000", "0.0.0.0:6000", "127.0.0.1:7000"]);
        c.multicast = vec![group("239.1.1.1")];
        c.validate().unwrap();
        assert!(c.receives_multicast(c.listen[0]));
        assert!(c.receives_multicast(c.listen[1]));
        assert!(!c.receives_multicast(c.listen[2]));

        // The same group reaching one port twice.
        let mut c = cfg(&["239.1.1.1:5000", "0.0.0.0:5000"]);
        c.multicast = vec![group("239.1.1.1")];
        assert!(matches!(
            c.validate(),
            Err(ConfigError::GroupListenedTwice { port: 5000, .. })
        ));

        // Families must agree.
        let mut c = cfg(&["[::]:5000"]);
        c.multicast = vec![group("239.1.1.1")];
        assert!(matches!(
            c.validate(),
            Err(ConfigError::GroupWithoutListen { .. })
        ));
        c.multicast = vec![MulticastGroup {
            interface: Some("127.0.0.1".parse().unwrap()),
            ..group("ff15::1")
        }];
        assert!(matches!(
            c.validate(),
            Err(ConfigError::InterfaceFamily { .. })
        ));
        c.multicast = vec![MulticastGroup {
            interface_index: Some(1),
            ..group("ff15::1")
        }];
        c.validate().unwrap();

        let mut c = cfg(&["0.0.0.0:5000"]);
        c.multicast = vec![MulticastGroup {
            interface: Some("127.0.0.1".parse().unwrap()),
            interface_index: Some(1),
            ..group("239.1.1.1")
        }];
        assert!(matches!(
            c.validate(),
            Err(ConfigError::InterfaceTwice { .. })
        ));
    }

    #[test]
    fn bounds_and_duplicates() {
        let base = cfg(&["127.0.0.1:5000"]);
        let check = |f: &dyn Fn(&mut ReceiveConfig), field: &str| {
            let mut c = base.clone();
            f(&mut c);
            match c.validate() {
                Err(ConfigError::OutOfRange { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: {other:?}"),
            }
        };
        check(&|c| c.batch_len = 0, "batch_len");
        check(&|c| c.batch_len = BATCH_LEN_MAX + 1, "batch_len");
        check(&|c| c.ring_capacity = 0, "ring_capacity");
        check(&|c| c.rcvbuf_bytes = 0, "rcvbuf_bytes");
        check(&|c| c.workers = WORKERS_MAX + 1, "workers");
        check(&|c| c.cores = vec![CORE_ID_END], "cores");
        let mut c = cfg(&["127.0.0.1:5000", "127.0.0.1:5000"]);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::DuplicateListen { .. })
        ));
        // Port 0 twice is two different free ports.
        c.listen = vec!["127.0.0.1:0".parse().unwrap(); 2];
        c.validate().unwrap();
        c.listen.clear();
        assert_eq!(c.validate(), Err(ConfigError::NoListen));
    }
}
