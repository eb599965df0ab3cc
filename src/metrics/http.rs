//! Edge: the smallest HTTP/1.1 server that Prometheus can scrape.
//!
//! `GET /metrics` (or `HEAD`) answers 200 with the latest text of every
//! part of an [`Exposition`] (one part per role: `tspi run` serves ingest,
//! archive and channels on one endpoint; a role run alone has one part, its
//! watch channel, through [`serve_prometheus`]); any other path is 404, another method on `/metrics` 405. One
//! request per connection (`Connection: close`). Everything is bounded: at
//! most [`HTTP_CONNECTIONS_MAX`] connections at once (further ones wait in
//! the kernel's accept queue), [`HTTP_REQUEST_HEAD_LEN_MAX`] bytes of request
//! head (431 beyond), and [`HTTP_CONNECTION_TIMEOUT`] for the whole exchange.

use super::prometheus::PROMETHEUS_CONTENT_TYPE;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

/// Connections served at once.
pub const HTTP_CONNECTIONS_MAX: usize = 16;
/// Longest request head (request line and headers) read.
pub const HTTP_REQUEST_HEAD_LEN_MAX: usize = 8 * 1024;
/// Time a connection may take from accept to the end of the response.
pub const HTTP_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop
/// does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// One part of an exposition: renders its role's families when scraped.
type Part = Box<dyn Fn() -> String + Send + Sync>;

/// What one `/metrics` endpoint serves: the parts registered so far, in
/// order of registration, concatenated at scrape time. Each part must use
/// metric names of its own (each role has its prefix: `tspi_ingest_`,
/// `tspi_archive_`, `tspi_channels_`), so their families never repeat.
/// Cloning shares the parts.
#[derive(Clone, Default)]
pub struct Exposition {
    parts: Arc<Mutex<Vec<Part>>>,
}

impl std::fmt::Debug for Exposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exposition")
            .field("parts", &self.parts.lock().map_or(0, |p| p.len()))
            .finish()
    }
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Add a part rendered by `render` at each scrape (keep it cheap: it
    /// runs on the endpoint's task).
    pub fn register(&self, render: impl Fn() -> String + Send + Sync + 'static) {
        self.parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(render));
    }

    /// Add a part whose text a role sends after each report (what the
    /// reporters of `tspi ingest` and `tspi archive` do); empty until the
    /// first report.
    pub fn register_text(&self) -> watch::Sender<String> {
        let (tx, rx) = watch::channel(String::new());
        self.register_watch(rx);
        tx
    }

    /// Add a part that serves the latest text of `text`.
    pub fn register_watch(&self, text: watch::Receiver<String>) {
        self.register(move || text.borrow().clone());
    }

    /// Every part's text, in order of registration.
    pub fn render(&self) -> String {
        let parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for part in parts.iter() {
            let text = part();
            out.push_str(&text);
            if !text.is_empty() && !text.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }
}

/// Bind `addr` (port 0 picks a free port) and serve the exposition in
/// `text` until the returned task is aborted. Returns the bound address.
/// Connections already accepted finish on their own, within
/// [`HTTP_CONNECTION_TIMEOUT`].
pub async fn serve_prometheus(
    addr: SocketAddr,
    text: watch::Receiver<String>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let exposition = Exposition::new();
    exposition.register_watch(text);
    serve_exposition(addr, exposition).await
}

/// [`serve_prometheus`] for every part of `exposition`, including parts
/// registered after it started.
pub async fn serve_exposition(
    addr: SocketAddr,
    exposition: Exposition,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(accept_loop(listener, exposition));
    Ok((local, task))
}

async fn accept_loop(listener: TcpListener, exposition: Exposition) {
    let slots = Arc::new(Semaphore::new(HTTP_CONNECTIONS_MAX));
    loop {
        let slot = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let exposition = exposition.clone();
                tokio::spawn(async move {
                    // A slow or silent client is cut off; nothing to report.
                    let _ = tokio::time::timeout(
                        HTTP_CONNECTION_TIMEOUT,
                        serve_one(stream, exposition),
                    )
                    .await;
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed; retrying");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

async fn serve_one(mut stream: TcpStream, exposition: Exposition) -> io::Result<()> {
    let mut buf = vec![0u8; HTTP_REQUEST_HEAD_LEN_MAX];
    let mut filled = 0;
    let head_len = loop {
        if let Some(end) = head_end(&buf[..filled]) {
            break Some(end);
        }
        if filled == buf.len() {
            break None;
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(()); // closed before a whole request head
        }
        filled += n;
    };
    let response = match head_len {
        Some(end) => respond(&buf[..end], || exposition.render()),
        None => status_only(431, "Request Header Fields Too Large"),
    };
    stream.write_all(&response).await?;
    stream.shutdown().await
}

/// Length of the request head through its blank line, if complete.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The whole response to one request head. `body` is only called for a
/// successful `GET` or `HEAD` of `/metrics`.
fn respond(head: &[u8], body: impl FnOnce() -> String) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line)
        .unwrap_or("")
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return status_only(400, "Bad Request");
    };
    if !version.starts_with("HTTP/1.") {
        return status_only(400, "Bad Request");
    }
    let path = target.split('?').next().unwrap_or(target);
    if path != "/metrics" {
        return status_only(404, "Not Found");
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return b"HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\n\
                     Connection: close\r\n\r\n"
                .to_vec();
        }
    };
    let body = body();
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {PROMETHEUS_CONTENT_TYPE}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

fn status_only(code: u16, reason: &str) -> Vec<u8> {
    let body = format!("{code} {reason}\n");
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: Vec<u8>) -> String {
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn routes() {
        let ok = text(respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", || {
            "a 1\n".into()
        }));
        assert_eq!(
            ok,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: 4\r\nCache-Control: no-store\r\nConnection: close\r\n\r\na 1\n"
        );
        let q = text(respond(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", || {
            "a 1\n".into()
        }));
        assert!(q.starts_with("HTTP/1.1 200 OK\r\n") && q.ends_with("a 1\n"));
        let head = text(respond(b"HEAD /metrics HTTP/1.1\r\n\r\n", || {
            "a 1\n".into()
        }));
        assert!(head.contains("Content-Length: 4\r\n") && head.ends_with("\r\n\r\n"));

        let never = || -> String { panic!("body only for /metrics") };
        assert!(text(respond(b"GET / HTTP/1.1\r\n\r\n", never)).starts_with("HTTP/1.1 404 "));
        assert!(
            text(respond(b"GET /metricsx HTTP/1.1\r\n\r\n", never)).starts_with("HTTP/1.1 404 ")
        );
        assert!(
            text(respond(b"POST /metrics HTTP/1.1\r\n\r\n", never)).starts_with("HTTP/1.1 405 ")
        );
        assert!(text(respond(b"GET /metrics\r\n\r\n", never)).starts_with("HTTP/1.1 400 "));
        assert!(text(respond(b"GET /metrics SPDY/3\r\n\r\n", never)).starts_with("HTTP/1.1 400 "));
        assert!(text(respond(b"\xff\xfe\r\n\r\n", never)).starts_with("HTTP/1.1 400 "));
    }

    #[test]
    fn an_exposition_concatenates_its_parts_in_order() {
        let e = Exposition::new();
        assert_eq!(e.render(), "");
        let ingest = e.register_text();
        e.register(|| "tspi_channels_x_total 3".into());
        assert_eq!(e.render(), "tspi_channels_x_total 3\n", "no report yet");
        ingest.send_replace("tspi_ingest_y_total 1\n".into());
        let shared = e.clone();
        shared.register_watch(watch::channel("tspi_archive_z_total 2\n".to_owned()).1);
        assert_eq!(
            e.render(),
            "tspi_ingest_y_total 1\ntspi_channels_x_total 3\ntspi_archive_z_total 2\n"
        );
    }

    #[test]
    fn head_end_finds_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
    }
}
