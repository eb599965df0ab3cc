//! Which senders a listen address takes datagrams from.
//!
//! TSPI has no authentication: anyone who can reach the port can send a
//! datagram that looks like a radar's. A range therefore filters by source
//! address: each listen address may carry an allow-list of networks
//! (`10.1.0.0/16`, `192.168.5.7`, `fd00::/8`), and a datagram from any other
//! sender is counted as rejected with reason `source` before it is parsed
//! (`sink.rs`). An empty list allows every sender.
//!
//! Pure (`src/purity.rs`): the networks and the matching, no I/O; the
//! receive threads read the sender's address from the kernel and ask
//! [`AllowSources::allows`]. Addresses are `core::net`'s, which are plain
//! values.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are the IPv4 address they
//! carry, on both sides: a sender `::ffff:10.1.2.3` matches `10.1.0.0/16`,
//! and a network written `::ffff:10.1.0.0/112` is `10.1.0.0/16`.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

/// A network: an address and how many leading bits of it a sender must
/// share. Host bits (those past the prefix) are zero; IPv4-mapped IPv6
/// networks are kept as IPv4 (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

/// Why a text is not a [`Network`]. Each message quotes the text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error(
        "{text:?} is not an IP address or network (write a.b.c.d, a.b.c.d/n, x:y::z or x:y::/n)"
    )]
    Syntax { text: String },
    #[error("{text:?}: prefix {prefix} is longer than the address's {bits} bits")]
    PrefixTooLong { text: String, prefix: u32, bits: u8 },
    #[error("{text:?} has bits set past its prefix: the network is {network}")]
    HostBits { text: String, network: Network },
}

/// IPv4 inside an IPv4-mapped IPv6 address, else the address itself.
#[inline]
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl Network {
    /// `addr/prefix`, or why not (the message quotes `text`).
    fn with_prefix(addr: IpAddr, prefix: u32, text: &str) -> Result<Network, NetworkError> {
        let bits: u8 = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > u32::from(bits) {
            return Err(NetworkError::PrefixTooLong {
                text: text.to_owned(),
                prefix,
                bits,
            });
        }
        let prefix = prefix as u8;
        // An IPv4-mapped network whose prefix covers the ::ffff:0:0/96
        // part is that IPv4 network.
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 && v6.to_ipv4_mapped().is_some() => {
                (canonical(addr), prefix - 96)
            }
            _ => (addr, prefix),
        };
        let network = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask_v4(prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask_v6(prefix))),
        };
        let net = Network {
            addr: network,
            prefix,
        };
        if network != addr {
            return Err(NetworkError::HostBits {
                text: text.to_owned(),
                network: net,
            });
        }
        Ok(net)
    }

    /// The network's address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// Leading bits a sender must share with [`Network::addr`].
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 read as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => u32::from(a) & mask_v4(self.prefix) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(a)) => u128::from(a) & mask_v6(self.prefix) == u128::from(n),
            _ => false,
        }
    }
}

impl FromStr for Network {
    type Err = NetworkError;

    /// `a.b.c.d` (a /32), `a.b.c.d/n`, `x:y::z` (a /128) or `x:y::/n`.
    fn from_str(text: &str) -> Result<Network, NetworkError> {
        let syntax = || NetworkError::Syntax {
            text: text.to_owned(),
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => {
                // Digits only: no sign, no spaces.
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(syntax());
                }
                let addr: IpAddr = a.parse().map_err(|_| syntax())?;
                (addr, p.parse::<u32>().map_err(|_| syntax())?)
            }
            None => {
                let addr: IpAddr = text.parse().map_err(|_| syntax())?;
                (addr, if addr.is_ipv4() { 32 } else { 128 })
            }
        };
        Network::with_prefix(addr, prefix, text)
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> serde::Deserialize<'de> for Network {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Network, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A listen address's allow-list, laid out for the receive path: one
/// masked compare per network of the sender's family, checked in order.
/// Lists are short (a range's subnets; at most
/// `config::limits::INGEST_SOURCE_NETS_MAX`), so a linear scan beats any
/// tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowSources {
    /// `(network, mask)` of each IPv4 network.
    v4: Box<[(u32, u32)]>,
    /// `(network, mask)` of each IPv6 network.
    v6: Box<[(u128, u128)]>,
}

impl AllowSources {
    /// The list for `networks`; `None` when it is empty (every sender is
    /// allowed, and the receive path need not read sender addresses).
    pub fn new(networks: &[Network]) -> Option<AllowSources> {
        if networks.is_empty() {
            return None;
        }
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for n in networks {
            match n.addr {
                IpAddr::V4(a) => v4.push((u32::from(a), mask_v4(n.prefix))),
                IpAddr::V6(a) => v6.push((u128::from(a), mask_v6(n.prefix))),
            }
        }
        Some(AllowSources {
            v4: v4.into_boxed_slice(),
            v6: v6.into_boxed_slice(),
        })
    }

    /// Whether a datagram from `ip` may pass.
    #[inline]
    pub fn allows(&self, ip: IpAddr) -> bool {
        match canonical(ip) {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().any(|&(n, m)| a & m == n)
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().any(|&(n, m)| a & m == n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> Network {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_addresses_and_networks() {
        assert_eq!(net("10.1.0.0/16").to_string(), "10.1.0.0/16");
        assert_eq!(net("192.168.5.7").to_string(), "192.168.5.7/32");
        assert_eq!(net("fd00::/8").to_string(), "fd00::/8");
        assert_eq!(net("2001:db8::1").to_string(), "2001:db8::1/128");
        assert_eq!(net("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(net("::/0").to_string(), "::/0");
        // IPv4-mapped networks are IPv4 networks.
        assert_eq!(net("::ffff:10.1.0.0/112"), net("10.1.0.0/16"));
        assert_eq!(net("::ffff:10.1.2.3"), net("10.1.2.3"));
        // A prefix shorter than the mapping prefix stays IPv6.
        assert_eq!(net("::/80").addr(), ip("::"));
    }

    #[test]
    fn refuses_what_is_not_a_network() {
        for bad in [
            "",
            "10.1.0.0/",
            "10.1.0/16",
            "10.1.0.0/+8",
            "10.1.0.0/ 8",
            "10.1.0.0/16/2",
            "10.1.0.0/0016",
            "host.example",
            "10.1.0.0:5000",
            "fd00::/-1",
        ] {
            let e = bad.parse::<Network>().unwrap_err();
            assert!(matches!(e, NetworkError::Syntax { .. }), "{bad}: {e}");
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        let e = "10.1.0.0/33".parse::<Network>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"10.1.0.0/33\": prefix 33 is longer than the address's 32 bits"
        );
        assert!(matches!(
            "fd00::/129".parse::<Network>(),
            Err(NetworkError::PrefixTooLong { bits: 128, .. })
        ));
        let e = "10.1.2.3/16".parse::<Network>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"10.1.2.3/16\" has bits set past its prefix: the network is 10.1.0.0/16"
        );
        assert!(matches!(
            "fd00::1/8".parse::<Network>(),
            Err(NetworkError::HostBits { .. })
        ));
    }

    #[test]
    fn matching() {
        let n = net("10.1.0.0/16");
        assert!(n.contains(ip("10.1.0.0")));
        assert!(n.contains(ip("10.1.255.255")));
        assert!(!n.contains(ip("10.2.0.1")));
        assert!(!n.contains(ip("::1")));
        assert!(n.contains(ip("::ffff:10.1.2.3")), "v4-mapped sender");
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!net("0.0.0.0/0").contains(ip("fd00::1")));
        assert!(net("fd00::/8").contains(ip("fd12:3456::1")));
        assert!(!net("fd00::/8").contains(ip("fe80::1")));

        let allow = AllowSources::new(&[net("127.0.0.1"), net("fd00::/8")]).unwrap();
        assert!(allow.allows(ip("127.0.0.1")));
        assert!(allow.allows(ip("::ffff:127.0.0.1")));
        assert!(!allow.allows(ip("127.0.0.2")));
        assert!(allow.allows(ip("fd00::7")));
        assert!(!allow.allows(ip("::1")));
        assert_eq!(AllowSources::new(&[]), None);
    }

    fn any_network() -> impl Strategy<Value = Network> {
        prop_oneof![
            (any::<u32>(), 0u8..=32).prop_map(|(a, p)| Network {
                addr: IpAddr::V4(Ipv4Addr::from(a & mask_v4(p))),
                prefix: p,
            }),
            // Not IPv4-mapped (those are kept as IPv4).
            (any::<u128>(), 0u8..=128)
                .prop_filter("not v4-mapped", |(a, p)| {
                    Ipv6Addr::from(a & mask_v6(*p)).to_ipv4_mapped().is_none()
                })
                .prop_map(|(a, p)| Network {
                    addr: IpAddr::V6(Ipv6Addr::from(a & mask_v6(p))),
                    prefix: p,
                }),
        ]
    }

    proptest! {
        /// Any address inside a network matches it (and the allow-list
        /// holding it), written plainly or, for IPv4, IPv4-mapped; flipping
        /// a prefix bit takes it outside.
        #[test]
        fn inside_matches_outside_does_not(n in any_network(), host in any::<u128>(), flip in any::<u8>()) {
            let allow = AllowSources::new(&[n]).unwrap();
            prop_assert_eq!(n.to_string().parse::<Network>().unwrap(), n);
            let (inside, outside) = match n.addr {
                IpAddr::V4(a) => {
                    let m = mask_v4(n.prefix);
                    let inside = u32::from(a) | (host as u32 & !m);
                    let outside = (n.prefix > 0)
                        .then(|| inside ^ (1u32 << (31 - u32::from(flip % n.prefix))));
                    (IpAddr::V4(inside.into()), outside.map(|o| IpAddr::V4(o.into())))
                }
                IpAddr::V6(a) => {
                    let m = mask_v6(n.prefix);
                    let inside = u128::from(a) | (host & !m);
                    let outside = (n.prefix > 0)
                        .then(|| inside ^ (1u128 << (127 - u32::from(flip % n.prefix))));
                    (IpAddr::V6(inside.into()), outside.map(|o| IpAddr::V6(o.into())))
                }
            };
            // Read as IPv4 (module docs): not this network's family.
            prop_assume!(!matches!(inside, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()));
            prop_assert!(n.contains(inside));
            prop_assert!(allow.allows(inside));
            if let IpAddr::V4(v4) = inside {
                let mapped = IpAddr::V6(v4.to_ipv6_mapped());
                prop_assert!(n.contains(mapped));
                prop_assert!(allow.allows(mapped));
            }
            if let Some(out) = outside {
                // A v6 address made v4-mapped by the flip is another
                // family's address: outside either way.
                prop_assert!(!n.contains(out), "{} in {}", out, n);
                prop_assert!(!allow.allows(out));
            }
        }

        /// An address of the other family never matches.
        #[test]
        fn families_do_not_mix(n in any_network(), a in any::<u32>()) {
            let allow = AllowSources::new(&[n]).unwrap();
            let v4 = IpAddr::V4(a.into());
            let v6 = IpAddr::V6(Ipv6Addr::from(u128::from(a) | (1u128 << 127)));
            match n.addr {
                IpAddr::V4(_) => prop_assert!(!allow.allows(v6)),
                IpAddr::V6(_) => prop_assert!(!allow.allows(v4)),
            }
        }
    }
}
