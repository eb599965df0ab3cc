//! `tspi decode`.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::PathBuf;
use std::process::ExitCode;
use tspi::decode::{CaptureFilter, Decoder, Format, Summary};
use tspi::message::RecvTime;

#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// Input file; `-` or nothing reads standard input.
    pub input: Option<PathBuf>,

    /// Input layout.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,

    /// Input is hex lines (same as `--format hex`).
    #[arg(long, conflicts_with = "format")]
    pub hex: bool,

    /// Receive time to use for inputs without one (raw, hex), in ms since the
    /// Unix epoch. Default: now. Captures always use each packet's time.
    #[arg(long, value_name = "MS")]
    pub recv_epoch_ms: Option<u64>,

    /// Captures only: every UDP packet to this destination port is a
    /// datagram (wrong lengths are rejected); other packets are skipped.
    /// Without it, UDP payloads of exactly 37 bytes are datagrams. Payloads
    /// of several datagrams glued together (a GSO send captured on the
    /// sending host) are split into their datagrams either way.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Also print a line for each skipped capture packet.
    #[arg(long, short)]
    pub verbose: bool,
}

pub fn run(a: DecodeArgs) -> anyhow::Result<ExitCode> {
    let format = if a.hex { Format::Hex } else { a.format };
    let recv = match a.recv_epoch_ms {
        Some(ms) => RecvTime::from_unix_ns(ms.saturating_mul(1_000_000)),
        None => RecvTime::now(),
    };
    let stdout = io::stdout().lock();
    let mut decoder = Decoder::new(recv, BufWriter::new(stdout), io::stderr().lock());
    decoder.verbose = a.verbose;
    let filter = CaptureFilter { udp_port: a.port };
    let result = match a.input.as_deref() {
        None => decoder.run(io::stdin(), format, filter),
        Some(p) if p.as_os_str() == "-" => decoder.run(io::stdin(), format, filter),
        Some(p) => match File::open(p) {
            Ok(f) => decoder.run(f, format, filter),
            Err(e) => {
                tspi::notice!(Error, "tspi decode: cannot open {}: {e}", p.display());
                return Ok(ExitCode::from(2));
            }
        },
    };
    let summary = decoder.summary.clone();
    drop(decoder);
    match result {
        Ok(()) => {
            tspi::notice!(Info, "tspi decode: {summary}");
            Ok(ExitCode::from(summary.exit_code()))
        }
        Err(e) if summary == Summary::default() => {
            tspi::notice!(Error, "tspi decode: {e}");
            Ok(ExitCode::from(2))
        }
        Err(e) => {
            tspi::notice!(Error, "tspi decode: {e} (so far: {summary})");
            Ok(ExitCode::from(2))
        }
    }
}
