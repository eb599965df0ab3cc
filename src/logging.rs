//! The process's log: `tracing` events on stderr, as text or as JSON lines.
//!
//! - **Colour only for a person at a terminal.** ANSI colour codes are
//!   written only when the log's destination is a terminal and `NO_COLOR` is
//!   unset or empty (<https://no-color.org>: it disables colour "when present
//!   and not an empty string"). A file, a pipe or the journal gets plain text.
//! - **`--log-format json`** (or `TSPI_LOG_FORMAT=json`): one JSON object per
//!   line, `{"timestamp", "level", "fields": {"message", ...}, "target"}`
//!   (`tracing-subscriber`'s JSON format), never coloured. The lines the
//!   commands write beside their log (final accounts, the error that ends
//!   the process) go through [`notice`], so under JSON they are objects of
//!   the same shape and every stderr line parses.
//! - **Secrets are redacted where they are formatted** (`nats::redact_url`,
//!   the `Debug` of `[nats]`), so both formats show the same redacted text.
//!
//! `tspi` and `tspi-demo` both set their logging up here.

use std::ffi::OsStr;
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal without `NO_COLOR`).
    #[default]
    Text,
    /// One JSON object per line, for log shippers; never coloured.
    Json,
}

/// The severity of a [`notice`] (the JSON `level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

/// Whether to write ANSI colour: only to a terminal, and only when
/// `NO_COLOR` (its value passed here) is unset or empty.
pub fn use_colour(is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// [`use_colour`] for this process's stderr and environment.
pub fn stderr_colour() -> bool {
    use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// The filter: `spec` (tracing `EnvFilter` syntax), else `$RUST_LOG`, else
/// `info`.
pub fn filter(spec: Option<&str>) -> EnvFilter {
    match spec {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    }
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Install the process's subscriber: events passing `filter` (see
/// [`filter`]) on stderr in `format`.
pub fn init(filter_spec: Option<&str>, format: LogFormat) {
    let _ = FORMAT.set(format);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(filter_spec))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(stderr_colour()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

/// The format [`init`] installed (text when it was not called).
pub fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// A line for the operator on stderr that is not a log event and passes no
/// filter: a final account, the error that ends the process. As it is in
/// text; under JSON, an object shaped like the log's events (target
/// `tspi`), so a log shipper reads every line.
pub fn notice(level: Level, text: &str) {
    let line = render_notice(format(), level, text, &timestamp());
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(line.as_bytes());
}

/// The line [`notice`] writes (with its newline); pure, for the tests.
pub fn render_notice(format: LogFormat, level: Level, text: &str, timestamp: &str) -> String {
    match format {
        LogFormat::Text => format!("{text}\n"),
        LogFormat::Json => {
            // The keys in the order tracing-subscriber's JSON events have.
            #[derive(serde::Serialize)]
            struct Event<'a> {
                timestamp: &'a str,
                level: &'a str,
                fields: Fields<'a>,
                target: &'a str,
            }
            #[derive(serde::Serialize)]
            struct Fields<'a> {
                message: &'a str,
            }
            let event = Event {
                timestamp,
                level: level.as_str(),
                fields: Fields { message: text },
                target: "tspi",
            };
            let mut s = serde_json::to_string(&event).expect("strings serialize");
            s.push('\n');
            s
        }
    }
}

/// Now, as the JSON log's events show it (RFC 3339, UTC, microseconds).
fn timestamp() -> String {
    use tracing_subscriber::fmt::{format::Writer, time::FormatTime as _, time::SystemTime};
    let mut s = String::new();
    let _ = SystemTime.format_time(&mut Writer::new(&mut s));
    s
}

/// [`notice`] with `format!` arguments: `notice!(Info, "...", ...)`.
#[macro_export]
macro_rules! notice {
    ($level:ident, $($arg:tt)+) => {
        $crate::logging::notice($crate::logging::Level::$level, &format!($($arg)+))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        // no-color.org: an empty NO_COLOR does not disable colour.
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(true, Some(OsStr::new("0"))));
        assert!(!use_colour(false, None));
        assert!(!use_colour(false, Some(OsStr::new(""))));
        assert!(!use_colour(false, Some(OsStr::new("1"))));
    }

    #[test]
    fn a_notice_is_its_text_or_a_json_event() {
        let t = "2026-12-02T13:04:55.123456Z";
        assert_eq!(
            render_notice(LogFormat::Text, Level::Info, "tspi run: stopped", t),
            "tspi run: stopped\n"
        );
        let line = render_notice(LogFormat::Json, Level::Error, "tspi: error: \"x\"\n", t);
        assert!(
            line.ends_with('\n') && line.matches('\n').count() == 1,
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["timestamp"], t);
        assert_eq!(v["level"], "ERROR");
        assert_eq!(v["target"], "tspi");
        assert_eq!(v["fields"]["message"], "tspi: error: \"x\"\n");
    }

    #[test]
    fn the_timestamp_is_rfc_3339_utc() {
        let t = timestamp();
        assert!(
            t.len() >= 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{t}"
        );
    }
}
