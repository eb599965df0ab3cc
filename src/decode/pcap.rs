//! pcap/pcapng reading (containers by `pcap-parser`, headers by
//! `etherparse`), and a small pcap writer for tests and the load generator.

use super::{CaptureFilter, Event, InputError, Position, SkipReason, quote};
use crate::codec::DATAGRAM_LEN;
use crate::message::RecvTime;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_parser::pcapng::Block;
use pcap_parser::{Linktype, PcapBlockOwned, PcapError};
use std::io::{self, Read, Write};
use std::net::SocketAddr;

/// Largest capture record (pcap record or pcapng block, its headers
/// included) that is read, in bytes: above the largest snap length in use
/// (256 KiB). A larger one ends the read with an error naming this limit.
pub const RECORD_LEN_MAX: usize = 1 << 20;

/// The reader's buffer. `pcap-parser` calls a record too large when the
/// record's length *equals* its buffer's capacity, so the buffer is one byte
/// longer than the largest record it must hold.
const READ_BUFFER_LEN: usize = RECORD_LEN_MAX + 1;

/// pcap (µs and ns, either byte order) and pcapng magic numbers.
pub(super) fn is_capture_magic(head: &[u8]) -> bool {
    matches!(
        head,
        [0xD4, 0xC3, 0xB2, 0xA1]
            | [0xA1, 0xB2, 0xC3, 0xD4]
            | [0x4D, 0x3C, 0xB2, 0xA1]
            | [0xA1, 0xB2, 0x3C, 0x4D]
            | [0x0A, 0x0D, 0x0D, 0x0A]
    )
}

/// One pcapng interface: its link type and timestamp units.
#[derive(Clone, Copy)]
struct Interface {
    linktype: Linktype,
    /// Timestamp units per second.
    resolution: u64,
    offset_s: i64,
}

pub(super) fn read<R: Read + Send>(
    input: R,
    filter: CaptureFilter,
    sink: &mut dyn FnMut(Event<'_>) -> Result<(), InputError>,
) -> Result<(), InputError> {
    let mut reader = match pcap_parser::create_reader(READ_BUFFER_LEN, input) {
        Ok(r) => r,
        Err(PcapError::Eof) => return Err(InputError::NotCapture("input is empty".into())),
        Err(PcapError::ReadError) => {
            return Err(InputError::NotCapture("read error at the start".into()));
        }
        Err(e) => return Err(InputError::NotCapture(describe(&e))),
    };
    let mut legacy: Option<(Linktype, bool)> = None;
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut number = 0u64;
    loop {
        match reader.next() {
            Ok((consumed, block)) => {
                let packet: Option<(Linktype, &[u8], Option<RecvTime>)> = match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        legacy = Some((h.network, h.is_nanosecond_precision()));
                        None
                    }
                    PcapBlockOwned::Legacy(b) => {
                        let (linktype, ns_precision) =
                            legacy.unwrap_or((Linktype::ETHERNET, false));
                        let frac_ns = if ns_precision {
                            u64::from(b.ts_usec)
                        } else {
                            u64::from(b.ts_usec) * 1_000
                        };
                        let ns = u64::from(b.ts_sec) * 1_000_000_000 + frac_ns;
                        let len = (b.caplen as usize).min(b.data.len());
                        Some((linktype, &b.data[..len], Some(RecvTime::from_unix_ns(ns))))
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                        interfaces.clear();
                        None
                    }
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        interfaces.push(Interface {
                            linktype: idb.linktype,
                            resolution: idb.ts_resolution().unwrap_or(1_000_000),
                            offset_s: idb.ts_offset(),
                        });
                        None
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        let len = (epb.caplen as usize).min(epb.data.len());
                        match interfaces.get(epb.if_id as usize) {
                            Some(i) => {
                                let ts = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                                Some((i.linktype, &epb.data[..len], ng_time(ts, i)))
                            }
                            // A packet naming an interface the file never
                            // described: its link type is unknown.
                            None => Some((Linktype(-1), &epb.data[..len], None)),
                        }
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        let len = (spb.origlen as usize).min(spb.data.len());
                        let linktype = interfaces.first().map_or(Linktype(-1), |i| i.linktype);
                        Some((linktype, &spb.data[..len], None))
                    }
                    PcapBlockOwned::NG(_) => None,
                };
                if let Some((linktype, data, recv)) = packet {
                    number += 1;
                    let at = Position::Packet(number);
                    match udp_payload(linktype, data, filter) {
                        Ok(bytes) if is_coalesced(bytes) => {
                            let chunks = bytes.chunks_exact(DATAGRAM_LEN);
                            sink(Event::Coalesced {
                                at,
                                datagrams: chunks.len() as u32,
                            })?;
                            for (i, chunk) in chunks.enumerate() {
                                sink(Event::Datagram {
                                    at: Position::Coalesced {
                                        packet: number,
                                        datagram: i as u32 + 1,
                                    },
                                    bytes: chunk,
                                    recv,
                                })?;
                            }
                        }
                        Ok(bytes) => sink(Event::Datagram { at, bytes, recv })?,
                        Err(reason) => sink(Event::Skipped { at, reason })?,
                    }
                }
                reader.consume(consumed);
            }
            Err(PcapError::Eof) => return Ok(()),
            Err(PcapError::UnexpectedEof) => return truncated(number, sink),
            Err(PcapError::Incomplete(_)) => {
                if reader.reader_exhausted() {
                    return truncated(number, sink);
                }
                reader.refill().map_err(|e| {
                    InputError::NotCapture(format!("refill failed: {}", describe(&e)))
                })?;
            }
            Err(PcapError::BufferTooSmall) => {
                return Err(InputError::NotCapture(format!(
                    "a record after packet {number} is larger than {RECORD_LEN_MAX} bytes"
                )));
            }
            Err(e) => {
                return Err(InputError::NotCapture(format!(
                    "corrupt capture after packet {number}: {}",
                    describe(&e)
                )));
            }
        }
    }
}

/// A `pcap-parser` error for a message. Its own `Display` quotes all of the
/// unparsed input (megabytes for a block of length zero); this quotes at
/// most [`super::QUOTE_MAX`] bytes.
fn describe<I: AsRef<[u8]>>(e: &PcapError<I>) -> String {
    match e {
        PcapError::NomError(input, kind) => {
            format!("parser error {kind:?} at {}", quote(input.as_ref()))
        }
        PcapError::OwnedNomError(input, kind) => {
            format!("parser error {kind:?} at {}", quote(input))
        }
        PcapError::Eof => "end of file".into(),
        PcapError::BufferTooSmall => {
            format!("a record is larger than {RECORD_LEN_MAX} bytes")
        }
        PcapError::UnexpectedEof => "unexpected end of file".into(),
        PcapError::ReadError => "read error".into(),
        PcapError::Incomplete(n) => format!("incomplete record ({n} more bytes needed)"),
        PcapError::HeaderNotRecognized => "header not recognized as pcap or pcapng".into(),
    }
}

/// A UDP payload of several datagrams glued together, as a capture on the
/// sending host sees a GSO send (before the kernel or NIC cuts it): an exact
/// multiple (2 or more) of 37 bytes whose every 37-byte chunk parses. A
/// payload with any chunk that does not parse stays one payload (skipped, or
/// rejected by its length with `--port`).
fn is_coalesced(payload: &[u8]) -> bool {
    payload.len() > DATAGRAM_LEN
        && payload.len().is_multiple_of(DATAGRAM_LEN)
        && payload
            .chunks_exact(DATAGRAM_LEN)
            .all(|c| crate::codec::parse(c).is_ok())
}

/// Input ended inside a record: a capture cut short (a killed tcpdump). What
/// came before is good; the cut record is reported as unreadable.
fn truncated(
    number: u64,
    sink: &mut dyn FnMut(Event<'_>) -> Result<(), InputError>,
) -> Result<(), InputError> {
    sink(Event::Unreadable {
        at: Position::Packet(number + 1),
        reason: "capture ends inside a record (file truncated?)".into(),
    })
}

fn ng_time(ts: u64, i: &Interface) -> Option<RecvTime> {
    let ns = u128::from(ts) * 1_000_000_000 / u128::from(i.resolution.max(1));
    let ns = i128::try_from(ns).ok()? + i128::from(i.offset_s) * 1_000_000_000;
    u64::try_from(ns).ok().map(RecvTime::from_unix_ns)
}

/// The UDP payload that carries a datagram, or why this packet has none.
fn udp_payload(
    linktype: Linktype,
    data: &[u8],
    filter: CaptureFilter,
) -> Result<&[u8], SkipReason> {
    let sliced = match linktype {
        Linktype::ETHERNET => SlicedPacket::from_ethernet(data),
        Linktype::LINUX_SLL => SlicedPacket::from_linux_sll(data),
        Linktype::RAW | Linktype::IPV4 | Linktype::IPV6 => SlicedPacket::from_ip(data),
        // BSD loopback: a 4-byte address family, then IP.
        Linktype::NULL | Linktype::LOOP => match data.get(4..) {
            Some(ip) => SlicedPacket::from_ip(ip),
            None => return Err(SkipReason::Malformed),
        },
        // Linux cooked v2: a 20-byte header, then the protocol's packet.
        Linktype::LINUX_SLL2 => match data.get(20..) {
            Some(ip) => SlicedPacket::from_ip(ip),
            None => return Err(SkipReason::Malformed),
        },
        _ => return Err(SkipReason::NotUdp),
    }
    .map_err(|_| SkipReason::Malformed)?;
    let fragmented = match &sliced.net {
        Some(NetSlice::Ipv4(s)) => s.is_payload_fragmented(),
        Some(NetSlice::Ipv6(s)) => s.is_payload_fragmented(),
        _ => false,
    };
    if fragmented {
        return Err(SkipReason::Fragment);
    }
    let Some(TransportSlice::Udp(udp)) = sliced.transport else {
        return Err(SkipReason::NotUdp);
    };
    let payload = udp.payload();
    match filter.udp_port {
        Some(port) if udp.destination_port() == port => Ok(payload),
        Some(_) => Err(SkipReason::OtherUdp),
        None if payload.len() == DATAGRAM_LEN || is_coalesced(payload) => Ok(payload),
        None => Err(SkipReason::OtherUdp),
    }
}

/// Writes a nanosecond-resolution pcap of Ethernet/IP/UDP packets, readable
/// by Wireshark, tcpdump and tcpreplay.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    frame: Vec<u8>,
}

/// Locally administered MAC addresses for written frames.
const MAC_SRC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const MAC_DST: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];

impl<W: Write> PcapWriter<W> {
    /// Write the file header (nanosecond magic, link type Ethernet).
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&0xA1B2_3C4Du32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&65_535u32.to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter {
            out,
            frame: Vec::with_capacity(128),
        })
    }

    /// Append one UDP packet from `src` to `dst` (both IPv4 or both IPv6)
    /// captured at `unix_ns`.
    pub fn write_udp(
        &mut self,
        unix_ns: u64,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) -> io::Result<()> {
        let eth = etherparse::PacketBuilder::ethernet2(MAC_SRC, MAC_DST);
        let udp = match (src, dst) {
            (SocketAddr::V4(s), SocketAddr::V4(d)) => eth
                .ipv4(s.ip().octets(), d.ip().octets(), 64)
                .udp(s.port(), d.port()),
            (SocketAddr::V6(s), SocketAddr::V6(d)) => eth
                .ipv6(s.ip().octets(), d.ip().octets(), 64)
                .udp(s.port(), d.port()),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "source and destination must both be IPv4 or both IPv6",
                ));
            }
        };
        self.frame.clear();
        udp.write(&mut self.frame, payload)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let frame = std::mem::take(&mut self.frame);
        let written = self.write_frame(unix_ns, &frame);
        self.frame = frame;
        written
    }

    /// Append one raw link-layer frame (Ethernet) captured at `unix_ns`.
    pub fn write_frame(&mut self, unix_ns: u64, frame: &[u8]) -> io::Result<()> {
        let sec = u32::try_from(unix_ns / 1_000_000_000)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "time past 2106"))?;
        let len = frame.len() as u32;
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&sec.to_le_bytes());
        rec[4..8].copy_from_slice(&((unix_ns % 1_000_000_000) as u32).to_le_bytes());
        rec[8..12].copy_from_slice(&len.to_le_bytes());
        rec[12..16].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&rec)?;
        self.out.write_all(frame)
    }

    /// Flush and hand back the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}
