//! Edge: the operators' web page, served by the hub itself.
//!
//! - `GET /` and the page's files: a build of `web/` (our modules and the
//!   pinned libraries' own builds, `web/build.mjs`), read from the web
//!   directory once at start and served from memory. Nothing is loaded from
//!   anywhere else: a range network has no internet, and the page's
//!   Content-Security-Policy says so to the browser (`'self'` only).
//! - `GET /config.json`: what the page needs to know before its first
//!   message (the map's origin, rings and basemap, the hub's tick).
//! - `GET /tiles.pmtiles`: the `[console.map] tiles` file, with HTTP range
//!   requests (the PMTiles protocol reads a file by byte ranges).
//!
//! The web directory is `[console] web_dir`, or the first of
//! `$TSPI_WEB_DIR`, `<executable>/../share/tspi/web`,
//! `/usr/share/tspi/web` and this source tree's `web/dist` that holds an
//! `index.html`. Without one the hub still serves `/ws` and `/metrics`, and
//! `/` says where it looked and how to build the page.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use crate::console::config::ConsoleConfig;

/// Files of the page at most, and their bytes together: a build is a few
/// files of about 2 MB; a directory far beyond that is the wrong one.
pub const WEB_FILES_MAX: usize = 256;
pub const WEB_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// The page's Content-Security-Policy: everything from the hub itself.
/// Styles inline because the map library sets element styles; workers from
/// blobs because the map library may start its worker from one.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data: blob:; worker-src 'self' blob:; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// What the page is served from, and what `/config.json` says.
#[derive(Clone, Debug)]
pub struct PageOptions {
    /// `[console] web_dir`; empty: searched (module docs).
    pub web_dir: String,
    /// `[console.map] tiles`; empty: no basemap.
    pub tiles: String,
    /// The body of `/config.json`.
    pub config_json: String,
}

impl Default for PageOptions {
    fn default() -> Self {
        PageOptions::from_console(&ConsoleConfig::default())
    }
}

impl PageOptions {
    /// From a validated `[console]` section.
    pub fn from_console(c: &ConsoleConfig) -> PageOptions {
        let origin = c
            .map
            .origin(&c.sites)
            .map(|(lat, lon)| serde_json::json!({"lat_deg": lat, "lon_deg": lon}));
        let config_json = serde_json::json!({
            "protocol": super::protocol::PROTOCOL_VERSION,
            "tick_hz": c.tick_hz,
            "stale_s": c.stale_s,
            "expire_s": c.expire_s,
            "trail_s": c.trail_s,
            "map": {
                "origin": origin,
                "rings_km": c.map.rings_km,
                "tiles": if c.map.tiles.is_empty() { None } else { Some("/tiles.pmtiles") },
            },
        })
        .to_string();
        PageOptions {
            web_dir: c.web_dir.clone(),
            tiles: c.map.tiles.clone(),
            config_json,
        }
    }
}

/// The page's files, in memory.
#[derive(Debug, Default)]
pub struct WebAssets {
    /// Where they came from (`None`: no web directory was found).
    pub dir: Option<PathBuf>,
    files: HashMap<String, (&'static str, Bytes)>,
    /// Where the search looked, for the page that says it found nothing.
    looked: Vec<PathBuf>,
}

/// Where to look for the page when `[console] web_dir` is empty, in order.
pub fn web_dir_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(d) = std::env::var_os("TSPI_WEB_DIR").filter(|d| !d.is_empty()) {
        out.push(PathBuf::from(d));
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(FsPath::to_path_buf))
    {
        out.push(exe_dir.join("../share/tspi/web"));
    }
    out.push(PathBuf::from("/usr/share/tspi/web"));
    out.push(PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/web/dist"
    )));
    out
}

/// The content type of a page file, by its extension.
pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map_or("", |(_, ext)| ext) {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

impl WebAssets {
    /// Read the page from `configured` (an error if it is not a page), or
    /// when empty from the first candidate that holds an `index.html`
    /// (none: an empty set that explains itself at `/`).
    pub fn load(configured: &str) -> std::io::Result<WebAssets> {
        if !configured.is_empty() {
            let dir = PathBuf::from(configured);
            if !dir.join("index.html").is_file() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "console.web_dir = {configured:?} has no index.html (build the page \
                         with `npm --prefix web ci && npm --prefix web run build`)"
                    ),
                ));
            }
            return WebAssets::read(dir);
        }
        let looked = web_dir_candidates();
        match looked.iter().find(|d| d.join("index.html").is_file()) {
            Some(d) => WebAssets::read(d.clone()),
            None => Ok(WebAssets {
                looked,
                ..WebAssets::default()
            }),
        }
    }

    /// Every file under `dir` (bounded by [`WEB_FILES_MAX`] and
    /// [`WEB_BYTES_MAX`]).
    pub fn read(dir: PathBuf) -> std::io::Result<WebAssets> {
        let mut files = HashMap::new();
        let mut total = 0u64;
        let mut todo = vec![dir.clone()];
        while let Some(d) = todo.pop() {
            for entry in std::fs::read_dir(&d)? {
                let entry = entry?;
                let path = entry.path();
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    todo.push(path);
                    continue;
                }
                if !kind.is_file() {
                    continue;
                }
                let rel = path
                    .strip_prefix(&dir)
                    .expect("under the directory")
                    .to_string_lossy()
                    .replace('\\', "/");
                let bytes = std::fs::read(&path)?;
                total += bytes.len() as u64;
                if files.len() >= WEB_FILES_MAX || total > WEB_BYTES_MAX {
                    return Err(std::io::Error::other(format!(
                        "{}: more than {WEB_FILES_MAX} files or {WEB_BYTES_MAX} bytes: not a \
                         build of the page",
                        dir.display()
                    )));
                }
                files.insert(rel.clone(), (content_type(&rel), Bytes::from(bytes)));
            }
        }
        Ok(WebAssets {
            dir: Some(dir),
            files,
            looked: Vec::new(),
        })
    }

    /// Files served.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    fn get(&self, path: &str) -> Option<&(&'static str, Bytes)> {
        self.files.get(path)
    }

    /// The page shown when no build of the page was found.
    fn missing_page(&self) -> String {
        let looked: Vec<String> = self
            .looked
            .iter()
            .map(|p| format!("<li><code>{}</code>", html_escape(&p.display().to_string())))
            .collect();
        format!(
            "<!doctype html><meta charset=utf-8><title>tspi console</title>\
             <h1>tspi console</h1><p>The web page's files were not found. Looked in:<ul>{}</ul>\
             <p>Build them with <code>npm --prefix web ci &amp;&amp; npm --prefix web run \
             build</code> (or <code>./scripts/setup</code>), or set <code>[console] \
             web_dir</code>. The WebSocket protocol is at <code>/ws</code>; metrics at \
             <a href=/metrics>/metrics</a>.",
            looked.join("")
        )
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

struct Web {
    assets: WebAssets,
    opts: PageOptions,
}

/// `/`, `/config.json`, `/tiles.pmtiles` and the page's files.
pub fn routes<S: Clone + Send + Sync + 'static>(assets: WebAssets, opts: PageOptions) -> Router<S> {
    let web = Arc::new(Web { assets, opts });
    Router::new()
        .route("/", get(index))
        .route("/config.json", get(config))
        .route("/tiles.pmtiles", get(tiles))
        .route("/{*path}", get(file))
        .with_state(web)
}

fn no_cache(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn index(State(web): State<Arc<Web>>) -> Response {
    let Some((ctype, bytes)) = web.assets.get("index.html") else {
        return no_cache(
            (
                [(header::CONTENT_TYPE, content_type("x.html"))],
                web.assets.missing_page(),
            )
                .into_response(),
        );
    };
    let mut r = no_cache(([(header::CONTENT_TYPE, *ctype)], bytes.clone()).into_response());
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    r
}

async fn config(State(web): State<Arc<Web>>) -> Response {
    no_cache(
        (
            [(header::CONTENT_TYPE, "application/json")],
            web.opts.config_json.clone(),
        )
            .into_response(),
    )
}

async fn file(State(web): State<Arc<Web>>, Path(path): Path<String>) -> Response {
    match web.assets.get(&path) {
        Some((ctype, bytes)) => {
            no_cache(([(header::CONTENT_TYPE, *ctype)], bytes.clone()).into_response())
        }
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// A byte range of a file of `len` bytes: `bytes=a-b`, `bytes=a-` or
/// `bytes=-n` (one range; the PMTiles reader asks for one at a time).
/// `None`: not a range this serves (the whole file is sent);
/// `Some(Err(()))`: unsatisfiable.
pub fn parse_range(h: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let r = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || len == 0 {
            return Some(Err(()));
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start: u64 = a.parse().ok()?;
        let end: u64 = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            b.parse::<u64>().ok()?.min(len.saturating_sub(1))
        };
        if start >= len || end < start {
            return Some(Err(()));
        }
        (start, end)
    };
    Some(Ok(r))
}

/// Bytes of one range answer at most (PMTiles asks for 16 KiB headers and
/// tiles of tens of KiB; a whole-file request of a large basemap is refused
/// rather than read into memory).
pub const RANGE_BYTES_MAX: u64 = 32 * 1024 * 1024;

async fn tiles(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    if web.opts.tiles.is_empty() {
        return (StatusCode::NOT_FOUND, "no basemap (console.map.tiles)\n").into_response();
    }
    let fail = |e: std::io::Error| {
        tracing::warn!(path = %web.opts.tiles, error = %e, "console: basemap tiles unreadable");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("console.map.tiles: {e}\n"),
        )
            .into_response()
    };
    let mut f = match tokio::fs::File::open(&web.opts.tiles).await {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let len = match f.metadata().await {
        Ok(m) => m.len(),
        Err(e) => return fail(e),
    };
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| parse_range(h, len));
    let (start, end, partial) = match range {
        Some(Ok((a, b))) => (a, b, true),
        Some(Err(())) => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response();
        }
        None => (0, len.saturating_sub(1), false),
    };
    let n = if len == 0 { 0 } else { end - start + 1 };
    if n > RANGE_BYTES_MAX {
        return (
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!("ask for at most {RANGE_BYTES_MAX} bytes at a time\n"),
        )
            .into_response();
    }
    let mut buf = vec![0u8; n as usize];
    if let Err(e) = f.seek(std::io::SeekFrom::Start(start)).await {
        return fail(e);
    }
    if let Err(e) = f.read_exact(&mut buf).await {
        return fail(e);
    }
    let mut r = Response::new(Body::from(buf));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if partial {
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
            r.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some(Ok((0, 99))));
        assert_eq!(parse_range("bytes=900-", 1000), Some(Ok((900, 999))));
        assert_eq!(parse_range("bytes=-100", 1000), Some(Ok((900, 999))));
        assert_eq!(parse_range("bytes=-5000", 1000), Some(Ok((0, 999))));
        assert_eq!(parse_range("bytes=990-2000", 1000), Some(Ok((990, 999))));
        assert_eq!(parse_range("bytes=1000-", 1000), Some(Err(())));
        assert_eq!(parse_range("bytes=5-4", 1000), Some(Err(())));
        assert_eq!(parse_range("bytes=-0", 1000), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
        assert_eq!(parse_range("bytes=x-1", 1000), None);
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(
            content_type("vendor/maplibre-gl.mjs"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("a.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("LICENSE"), "application/octet-stream");
    }

    #[test]
    fn a_configured_directory_without_a_page_is_an_error_naming_it() {
        let d = std::env::temp_dir().join(format!("tspi-web-test-{}", std::process::id()));
        std::fs::create_dir_all(d.join("vendor")).unwrap();
        let e = WebAssets::load(d.to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("web_dir") && e.to_string().contains("index.html"));
        std::fs::write(d.join("index.html"), "<!doctype html>").unwrap();
        std::fs::write(d.join("vendor/x.mjs"), "export {}").unwrap();
        let a = WebAssets::load(d.to_str().unwrap()).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a.get("vendor/x.mjs").unwrap().0, content_type("x.mjs"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn config_json_carries_the_map() {
        let mut c = ConsoleConfig::default();
        c.map.origin_lat_deg = Some(32.0);
        c.map.origin_lon_deg = Some(-106.0);
        c.map.tiles = "/srv/x.pmtiles".into();
        let v: serde_json::Value =
            serde_json::from_str(&PageOptions::from_console(&c).config_json).unwrap();
        assert_eq!(v["map"]["origin"]["lat_deg"], 32.0);
        assert_eq!(v["map"]["tiles"], "/tiles.pmtiles");
        assert_eq!(v["tick_hz"], 10);
        let v: serde_json::Value =
            serde_json::from_str(&PageOptions::default().config_json).unwrap();
        assert!(v["map"]["origin"].is_null() && v["map"]["tiles"].is_null());
    }
}
