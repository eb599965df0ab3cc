//! `tspi-demo`'s view for the person at the keyboard: one readable screen
//! instead of the live progress interleaved with the embedded ingest's log.
//!
//! [`plan`] decides, from whether stdout and stderr are terminals (pure):
//! - **live** (stdout is a terminal): the progress line is redrawn in place;
//!   otherwise each progress line is appended, plain, as before;
//! - **the log** (ingest, the NATS client, the servers' harness): on stderr
//!   as `tspi` writes it, unless both stdout and stderr are the terminal (or
//!   `--log-file` names a file): then every event goes to the log file
//!   (plain text, never coloured), whose path is printed at the start and
//!   the end, and **warnings and errors still reach the person**: above the
//!   live line on the terminal (or on stderr when it is not the terminal),
//!   with their count at the end.
//!
//! [`Screen`] is the terminal's one writer: the live line, the lines above
//! it and the log events shown there go through it under one lock, so
//! nothing lands in the middle of the live line.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// Erase the terminal's current line and return to its start.
const CLEAR_LINE: &str = "\r\x1b[2K";

/// Where the demo's log goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTo {
    /// Every event on stderr (as `tspi` writes its log).
    Stderr,
    /// Every event into `path`; warnings and errors also on the screen
    /// (`on_screen`, when stderr is the terminal the view is on) or on
    /// stderr.
    File { path: PathBuf, on_screen: bool },
}

/// How the demo shows itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Redraw the progress line in place (stdout is a terminal).
    pub live: bool,
    pub log_to: LogTo,
}

/// The plan for a run whose stdout and stderr are (or are not) terminals;
/// `log_file` is `--log-file`, `default_file` the file used when both are
/// terminals and none was named.
pub fn plan(
    stdout_terminal: bool,
    stderr_terminal: bool,
    log_file: Option<PathBuf>,
    default_file: impl FnOnce() -> PathBuf,
) -> Plan {
    let shared_terminal = stdout_terminal && stderr_terminal;
    let path = match log_file {
        Some(p) => Some(p),
        None if shared_terminal => Some(default_file()),
        None => None,
    };
    Plan {
        live: stdout_terminal,
        log_to: match path {
            Some(path) => LogTo::File {
                path,
                on_screen: shared_terminal,
            },
            None => LogTo::Stderr,
        },
    }
}

/// The terminal (or stdout when it is not one): the live progress line and
/// the lines written above it.
pub struct Screen<W> {
    out: W,
    live: bool,
    /// The live line now drawn (without its newline), if any.
    status: Option<String>,
    /// Log events shown on the screen (warnings and errors).
    shown: u64,
}

impl<W: Write> Screen<W> {
    pub fn new(out: W, live: bool) -> Self {
        Screen {
            out,
            live,
            status: None,
            shown: 0,
        }
    }

    /// A progress line: redrawn in place when live, else appended.
    pub fn progress(&mut self, line: &str) {
        if self.live {
            let _ = write!(self.out, "{CLEAR_LINE}{line}");
            self.status = Some(line.to_owned());
        } else {
            let _ = writeln!(self.out, "{line}");
        }
        let _ = self.out.flush();
    }

    /// A line above the live line (which is redrawn below it).
    pub fn println(&mut self, line: &str) {
        self.above(format!("{line}\n").as_bytes());
    }

    /// Bytes (whole lines) above the live line.
    fn above(&mut self, text: &[u8]) {
        if self.status.is_some() {
            let _ = self.out.write_all(CLEAR_LINE.as_bytes());
        }
        let _ = self.out.write_all(text);
        if let Some(s) = &self.status {
            let _ = self.out.write_all(s.as_bytes());
        }
        let _ = self.out.flush();
    }

    /// The live part is over: the last progress line stays, and what
    /// follows starts on a line of its own.
    pub fn end_live(&mut self) {
        if self.status.take().is_some() {
            let _ = writeln!(self.out);
            let _ = self.out.flush();
        }
    }

    /// Log events shown so far.
    pub fn shown(&self) -> u64 {
        self.shown
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// A [`Screen`] shared by the demo and the log: also the `MakeWriter` of
/// the log events shown on it.
pub struct Shared<W>(Arc<Mutex<Screen<W>>>);

impl<W> Clone for Shared<W> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<W: Write> Shared<W> {
    pub fn new(screen: Screen<W>) -> Self {
        Shared(Arc::new(Mutex::new(screen)))
    }

    pub fn lock(&self) -> MutexGuard<'_, Screen<W>> {
        // A panic elsewhere while holding it leaves a usable screen.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One log event on its way to the screen, written there whole on drop.
pub struct EventWriter<W: Write> {
    screen: Shared<W>,
    buf: Vec<u8>,
}

impl<W: Write> Write for EventWriter<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for EventWriter<W> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if !self.buf.ends_with(b"\n") {
            self.buf.push(b'\n');
        }
        let mut s = self.screen.lock();
        s.shown += 1;
        s.above(&self.buf);
    }
}

impl<'a, W: Write + 'a> tracing_subscriber::fmt::MakeWriter<'a> for Shared<W> {
    type Writer = EventWriter<W>;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            screen: self.clone(),
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn default() -> PathBuf {
        PathBuf::from("/tmp/tspi-demo-1.log")
    }

    #[test]
    fn on_a_terminal_the_log_goes_to_a_file_and_warnings_to_the_screen() {
        let p = plan(true, true, None, default);
        assert!(p.live);
        assert_eq!(
            p.log_to,
            LogTo::File {
                path: default(),
                on_screen: true
            }
        );
    }

    #[test]
    fn without_a_terminal_nothing_changes_unless_a_file_is_named() {
        // Piped (tests, CI, `| tee`): plain lines, the log on stderr.
        let p = plan(false, false, None, || unreachable!());
        assert!(!p.live);
        assert_eq!(p.log_to, LogTo::Stderr);
        // stderr redirected by the person: the log goes where they sent it.
        let p = plan(true, false, None, || unreachable!());
        assert!(p.live);
        assert_eq!(p.log_to, LogTo::Stderr);
        // stdout piped, stderr on the terminal: no shared screen.
        let p = plan(false, true, None, || unreachable!());
        assert!(!p.live);
        assert_eq!(p.log_to, LogTo::Stderr);
        // --log-file: the file, warnings on stderr.
        let named = Path::new("demo.log").to_path_buf();
        let p = plan(false, false, Some(named.clone()), || unreachable!());
        assert_eq!(
            p.log_to,
            LogTo::File {
                path: named.clone(),
                on_screen: false
            }
        );
        let p = plan(true, true, Some(named.clone()), || unreachable!());
        assert_eq!(
            p.log_to,
            LogTo::File {
                path: named,
                on_screen: true
            }
        );
    }

    fn text(s: Screen<Vec<u8>>) -> String {
        String::from_utf8(s.into_inner()).unwrap()
    }

    #[test]
    fn live_progress_is_redrawn_in_place_and_lines_go_above_it() {
        let mut s = Screen::new(Vec::new(), true);
        s.println("== live ==");
        s.progress("[ 1.0 s] sent 10");
        s.progress("[ 2.0 s] sent 20");
        s.println("interrupted");
        s.end_live();
        s.println("== report ==");
        assert_eq!(
            text(s),
            "== live ==\n\
             \r\x1b[2K[ 1.0 s] sent 10\
             \r\x1b[2K[ 2.0 s] sent 20\
             \r\x1b[2Kinterrupted\n[ 2.0 s] sent 20\
             \n== report ==\n"
        );
    }

    #[test]
    fn without_a_terminal_progress_lines_are_appended_plain() {
        let mut s = Screen::new(Vec::new(), false);
        s.progress("[ 1.0 s] sent 10");
        s.println("interrupted");
        s.progress("[ 2.0 s] sent 20");
        s.end_live();
        let t = text(s);
        assert_eq!(t, "[ 1.0 s] sent 10\ninterrupted\n[ 2.0 s] sent 20\n");
        assert!(!t.contains('\x1b') && !t.contains('\r'));
    }

    #[test]
    fn a_log_event_lands_whole_above_the_live_line_and_is_counted() {
        let shared = Shared::new(Screen::new(Vec::new(), true));
        shared.lock().progress("[ 1.0 s] sent 10");
        {
            use tracing_subscriber::fmt::MakeWriter as _;
            let mut w = shared.make_writer();
            // The formatter may write an event in pieces.
            w.write_all(b"WARN tspi::ingest: ").unwrap();
            w.write_all(b"stream differs\n").unwrap();
            // Nothing reaches the screen before the event is whole.
            assert_eq!(shared.lock().shown(), 0);
        }
        assert_eq!(shared.lock().shown(), 1);
        shared.lock().end_live();
        let s = Arc::try_unwrap(shared.0)
            .ok()
            .unwrap()
            .into_inner()
            .unwrap();
        assert_eq!(
            text(s),
            "\r\x1b[2K[ 1.0 s] sent 10\
             \r\x1b[2KWARN tspi::ingest: stream differs\n[ 1.0 s] sent 10\n"
        );
    }
}
