//! `tspi decode`: the operator's look inside a capture.
//!
//! Reads datagrams from a pcap/pcapng capture, a raw file of concatenated
//! 37-byte records, or hex lines, and reports each as the contract's JSON
//! record, or as a rejection with its reason and position. Reading is split
//! from reporting: [`read`] turns any input into [`Event`]s, [`Decoder`]
//! counts and renders them.
//!
//! What an operator needs to know (limits, coalesced packets, exit
//! statuses) follows, from `docs/decode.md`.
//!
#![doc = include_str!("../../docs/decode.md")]

pub mod pcap;

use crate::codec::{self, DATAGRAM_LEN, RejectReason};
use crate::message::{Record, RecvTime};
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};

/// How the input is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// pcap or pcapng magic → capture; text starting with a hex digit → hex
    /// lines; anything else → raw records.
    Auto,
    /// Concatenated 37-byte datagrams.
    Raw,
    /// A pcap or pcapng capture.
    Pcap,
    /// One hex datagram per line; blank lines and `#` comments are ignored.
    Hex,
}

/// Where in the input a datagram was found, as an operator would look for
/// it: Wireshark's packet number, a line number, or a record number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// 1-based record of a raw file, with its byte offset.
    Record { number: u64, offset: u64 },
    /// 1-based line of a hex file.
    Line(u64),
    /// 1-based packet of a capture (Wireshark's frame number).
    Packet(u64),
    /// The `datagram`-th (1-based) of the datagrams glued together in one
    /// capture packet (see [`Event::Coalesced`]).
    Coalesced { packet: u64, datagram: u32 },
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Record { number, offset } => write!(f, "record {number} (byte {offset})"),
            Position::Line(n) => write!(f, "line {n}"),
            Position::Packet(n) => write!(f, "packet {n}"),
            Position::Coalesced { packet, datagram } => {
                write!(f, "packet {packet} datagram {datagram}")
            }
        }
    }
}

/// One thing found in the input.
#[derive(Debug)]
pub enum Event<'a> {
    /// Bytes that should be a datagram, with the capture's time if it has one.
    Datagram {
        at: Position,
        bytes: &'a [u8],
        recv: Option<RecvTime>,
    },
    /// Something that should have been a datagram but could not be read as
    /// bytes at all (bad hex, a capture record cut short).
    Unreadable { at: Position, reason: String },
    /// A packet of a capture that carries no TSPI datagram (not UDP, another
    /// port, another length).
    Skipped { at: Position, reason: SkipReason },
    /// A capture packet whose UDP payload is `datagrams` (2 or more)
    /// datagrams glued together: a capture on the sending host sees a GSO
    /// send before it is cut into datagrams. Its datagrams follow as
    /// [`Event::Datagram`]s at [`Position::Coalesced`].
    Coalesced { at: Position, datagrams: u32 },
}

/// Why a capture packet is not a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// Not IPv4/IPv6 UDP (ARP, TCP, ICMP, ...), or an unsupported link type.
    NotUdp,
    /// A non-first IP fragment, or a fragmented datagram.
    Fragment,
    /// UDP whose payload is neither 37 bytes nor datagrams glued together
    /// (without `--port`), or to another port (with `--port`).
    OtherUdp,
    /// Headers that do not parse (cut by the snap length, corrupt).
    Malformed,
}

impl SkipReason {
    pub const ALL: [SkipReason; 4] = [
        SkipReason::NotUdp,
        SkipReason::Fragment,
        SkipReason::OtherUdp,
        SkipReason::Malformed,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            SkipReason::NotUdp => "not UDP",
            SkipReason::Fragment => "IP fragment",
            SkipReason::OtherUdp => "other UDP",
            SkipReason::Malformed => "malformed headers",
        }
    }
}

/// Longest line of hex input, in bytes, line ending (`\n` or `\r\n`)
/// excluded. A datagram is 74 hex digits, so this leaves ample room for
/// spacing and comments. A longer line is rejected as unreadable with its
/// line number, and reading resumes at the next line: the reader never
/// holds more than this much of one line.
pub const HEX_LINE_MAX: usize = 4096;

/// Most bytes of input quoted in any message; longer input is cut with an
/// ellipsis (`…`), so a message stays short whatever the input holds.
pub const QUOTE_MAX: usize = 64;

/// `bytes` as hex for a message: at most [`QUOTE_MAX`] bytes, then `…` and
/// the full length.
pub fn quote(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(QUOTE_MAX)];
    let mut s = crate::hex::encode(shown);
    if bytes.len() > QUOTE_MAX {
        s.push_str(&format!("… ({} bytes)", bytes.len()));
    }
    s
}

/// Input that cannot be used at all (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read input: {0}")]
    Io(#[from] io::Error),
    #[error("input is empty (0 bytes): nothing to decode")]
    Empty,
    #[error("not a pcap or pcapng capture: {0}")]
    NotCapture(String),
    #[error("cannot write output: {0}")]
    Output(io::Error),
}

/// What a capture filter keeps.
#[derive(Clone, Copy, Debug, Default)]
pub struct CaptureFilter {
    /// Only UDP to this destination port carries datagrams; every payload to
    /// it is a datagram (wrong lengths are rejected, not skipped). Without a
    /// port, UDP payloads of exactly 37 bytes are datagrams. Either way a
    /// payload that is an exact multiple of 37 bytes whose every chunk
    /// parses is split into its datagrams (see [`Event::Coalesced`]).
    pub udp_port: Option<u16>,
}

/// Read `input` in `format`, calling `sink` for each event in input order.
/// The sink's error stops the read and is returned.
pub fn read<R: Read + Send>(
    input: R,
    format: Format,
    filter: CaptureFilter,
    sink: &mut dyn FnMut(Event<'_>) -> Result<(), InputError>,
) -> Result<(), InputError> {
    let mut input = BufReader::with_capacity(1 << 16, input);
    if fill_buf(&mut input)?.is_empty() {
        return Err(InputError::Empty);
    }
    let format = match format {
        Format::Auto => sniff(&mut input)?,
        f => f,
    };
    match format {
        Format::Raw => read_raw(input, sink),
        Format::Hex => read_hex(input, sink),
        Format::Pcap => pcap::read(input, filter, sink),
        Format::Auto => unreachable!("resolved above"),
    }
}

/// Guess the format from the first bytes without consuming them.
fn sniff<R: Read>(input: &mut BufReader<R>) -> Result<Format, InputError> {
    let head = fill_buf(input)?;
    if head.len() >= 4 && pcap::is_capture_magic(&head[..4]) {
        return Ok(Format::Pcap);
    }
    Ok(match head.first() {
        Some(b) if b.is_ascii_hexdigit() || b.is_ascii_whitespace() || *b == b'#' => Format::Hex,
        _ => Format::Raw,
    })
}

fn read_raw<R: Read>(
    mut input: R,
    sink: &mut dyn FnMut(Event<'_>) -> Result<(), InputError>,
) -> Result<(), InputError> {
    let mut buf = [0u8; DATAGRAM_LEN];
    let mut number = 0u64;
    loop {
        // Fill one record; a short read at the end leaves a partial record,
        // which the codec rejects by its length.
        let mut len = 0;
        while len < DATAGRAM_LEN {
            match input.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if len == 0 {
            return Ok(());
        }
        number += 1;
        let at = Position::Record {
            number,
            offset: (number - 1) * DATAGRAM_LEN as u64,
        };
        sink(Event::Datagram {
            at,
            bytes: &buf[..len],
            recv: None,
        })?;
        if len < DATAGRAM_LEN {
            return Ok(());
        }
    }
}

/// `fill_buf`, retried when interrupted.
fn fill_buf<R: BufRead>(input: &mut R) -> io::Result<&[u8]> {
    loop {
        match input.fill_buf() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Reborrow through a second call: the borrow checker does not
            // let the first call's borrow out of the loop.
            Ok(_) => return input.fill_buf(),
            Err(e) => return Err(e),
        }
    }
}

/// One line of input into `line`, holding at most `HEX_LINE_MAX + 1` bytes
/// of it (the `+ 1` for a `\r`). Returns `None` at the end of input, else
/// the line's length without its ending; `line` then holds the line
/// without its ending when that length is at most [`HEX_LINE_MAX`].
fn next_line<R: BufRead>(input: &mut R, line: &mut Vec<u8>) -> io::Result<Option<u64>> {
    line.clear();
    let mut len = 0u64;
    let mut last = None;
    let mut any = false;
    loop {
        let buf = fill_buf(input)?;
        if buf.is_empty() {
            break;
        }
        any = true;
        let (content, used, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = (HEX_LINE_MAX + 1).saturating_sub(line.len());
        line.extend_from_slice(&content[..content.len().min(room)]);
        len += content.len() as u64;
        if let Some(&b) = content.last() {
            last = Some(b);
        }
        input.consume(used);
        if done {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    if last == Some(b'\r') {
        len -= 1;
    }
    if len <= HEX_LINE_MAX as u64 {
        line.truncate(len as usize);
    }
    Ok(Some(len))
}

fn read_hex<R: BufRead>(
    mut input: R,
    sink: &mut dyn FnMut(Event<'_>) -> Result<(), InputError>,
) -> Result<(), InputError> {
    let mut line = Vec::with_capacity(HEX_LINE_MAX + 1);
    let mut number = 0u64;
    while let Some(len) = next_line(&mut input, &mut line)? {
        number += 1;
        let at = Position::Line(number);
        if len > HEX_LINE_MAX as u64 {
            sink(Event::Unreadable {
                at,
                reason: format!("line of {len} bytes is longer than {HEX_LINE_MAX}"),
            })?;
            continue;
        }
        let text = match std::str::from_utf8(&line) {
            Ok(t) => t.trim(),
            Err(_) => {
                sink(Event::Unreadable {
                    at,
                    reason: "line is not UTF-8 text".into(),
                })?;
                continue;
            }
        };
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        match crate::hex::decode(text) {
            Ok(bytes) => sink(Event::Datagram {
                at,
                bytes: &bytes,
                recv: None,
            })?,
            Err(e) => sink(Event::Unreadable {
                at,
                reason: format!("not hex: {e}"),
            })?,
        }
    }
    Ok(())
}

/// Counts of one decode run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub decoded: u64,
    /// Datagrams the codec rejected, by reason.
    pub rejected: [u64; RejectReason::ALL.len()],
    /// Datagrams that could not be read as bytes.
    pub unreadable: u64,
    /// Capture packets carrying no datagram, by reason.
    pub skipped: [u64; SkipReason::ALL.len()],
    /// Capture packets that carried several datagrams glued together (a
    /// GSO send captured on the sender).
    pub coalesced_packets: u64,
    /// Datagrams split out of those packets (counted in `decoded` too).
    pub split_datagrams: u64,
}

impl Summary {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum::<u64>() + self.unreadable
    }

    pub fn skipped_total(&self) -> u64 {
        self.skipped.iter().sum()
    }

    /// 0 when every datagram decoded, 1 when some were rejected.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.rejected_total() > 0)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} decoded, {} rejected",
            self.decoded,
            self.rejected_total()
        )?;
        let mut parts: Vec<String> = RejectReason::ALL
            .iter()
            .zip(self.rejected)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{} {n}", r.label()))
            .collect();
        if self.unreadable > 0 {
            parts.push(format!("unreadable {}", self.unreadable));
        }
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        write!(f, ", {} skipped", self.skipped_total())?;
        let skipped: Vec<String> = SkipReason::ALL
            .iter()
            .zip(self.skipped)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{} {n}", r.label()))
            .collect();
        if !skipped.is_empty() {
            write!(f, " ({})", skipped.join(", "))?;
        }
        if self.coalesced_packets > 0 {
            write!(
                f,
                ", {} split from {} coalesced packets",
                self.split_datagrams, self.coalesced_packets
            )?;
        }
        Ok(())
    }
}

/// Turns events into JSON lines on `out` and rejection lines on `diag`.
pub struct Decoder<O: Write, D: Write> {
    /// Receive time for inputs that carry none (raw, hex).
    pub recv_default: RecvTime,
    pub out: O,
    pub diag: D,
    pub summary: Summary,
    /// Report each skipped packet too (normally only counted).
    pub verbose: bool,
}

impl<O: Write, D: Write> Decoder<O, D> {
    pub fn new(recv_default: RecvTime, out: O, diag: D) -> Self {
        Decoder {
            recv_default,
            out,
            diag,
            summary: Summary::default(),
            verbose: false,
        }
    }

    /// Handle one event.
    pub fn event(&mut self, event: Event<'_>) -> Result<(), InputError> {
        match event {
            Event::Datagram { at, bytes, recv } => match codec::parse(bytes) {
                Ok(frame) => {
                    let record = Record::new(&frame, recv.unwrap_or(self.recv_default));
                    serde_json::to_writer(&mut self.out, &record)
                        .map_err(|e| InputError::Output(e.into()))?;
                    self.out.write_all(b"\n").map_err(InputError::Output)?;
                    self.summary.decoded += 1;
                }
                Err(e) => {
                    self.summary.rejected[e.reason().index()] += 1;
                    writeln!(self.diag, "{at}: rejected ({}): {e}", e.reason().label())
                        .map_err(InputError::Output)?;
                }
            },
            Event::Unreadable { at, reason } => {
                self.summary.unreadable += 1;
                writeln!(self.diag, "{at}: rejected (unreadable): {reason}")
                    .map_err(InputError::Output)?;
            }
            Event::Skipped { at, reason } => {
                self.summary.skipped[reason as usize] += 1;
                if self.verbose {
                    writeln!(self.diag, "{at}: skipped ({})", reason.label())
                        .map_err(InputError::Output)?;
                }
            }
            Event::Coalesced { at, datagrams } => {
                self.summary.coalesced_packets += 1;
                self.summary.split_datagrams += u64::from(datagrams);
                if self.verbose {
                    writeln!(self.diag, "{at}: split into {datagrams} datagrams")
                        .map_err(InputError::Output)?;
                }
            }
        }
        Ok(())
    }

    /// Read all of `input` and flush the output.
    pub fn run<R: Read + Send>(
        &mut self,
        input: R,
        format: Format,
        filter: CaptureFilter,
    ) -> Result<(), InputError> {
        read(input, format, filter, &mut |e| self.event(e))?;
        self.out.flush().map_err(InputError::Output)
    }
}

#[cfg(test)]
mod tests;
