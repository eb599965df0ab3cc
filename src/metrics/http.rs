//! Edge: `GET /metrics` for Prometheus, on [`crate::http`] (hyper and
//! axum, with its connection limits and timeouts: [`HttpLimits::METRICS`]).
//!
//! `GET /metrics` (or `HEAD`) answers 200 with the text of every part of an
//! [`Exposition`] (one part per role: `tspi run` serves ingest, archive and
//! channels on one endpoint), **rendered at the scrape** from the live
//! counters, so a scrape is never an interval stale and the families of one
//! part come from one moment; any other path is 404, another method on
//! `/metrics` 405. The rendering runs on the blocking pool (ingest's waits
//! up to 50 ms for idle latency recorders). The endpoint shows its own
//! connection counts (`tspi_http_connections_*{server="metrics"}`).

use super::prometheus::PROMETHEUS_CONTENT_TYPE;
use crate::http::{HttpLimits, HttpStats};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

/// One part of an exposition: renders its role's families when scraped.
type Part = Box<dyn Fn() -> String + Send + Sync>;

/// What one `/metrics` endpoint serves: the parts registered so far, in
/// order of registration, rendered and concatenated at each scrape. Each
/// part must use metric names of its own (each role has its prefix:
/// `tspi_ingest_`, `tspi_archive_`, `tspi_channels_`), so their families
/// never repeat. Cloning shares the parts.
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

    /// Add a part rendered by `render` at each scrape, from live values
    /// (it runs on the blocking pool; it may block briefly).
    pub fn register(&self, render: impl Fn() -> String + Send + Sync + 'static) {
        self.parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(render));
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

/// Bind `addr` (port 0 picks a free port) and serve `exposition`, parts
/// registered later included, until the returned task is aborted. Returns
/// the bound address.
pub async fn serve_exposition(
    addr: SocketAddr,
    exposition: Exposition,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let stats = Arc::new(HttpStats::default());
    let router = Router::new()
        .route("/metrics", get(scrape))
        .with_state((exposition, stats.clone()));
    crate::http::serve(addr, router, HttpLimits::METRICS, stats).await
}

async fn scrape(
    State((exposition, stats)): State<(Exposition, Arc<HttpStats>)>,
) -> impl IntoResponse {
    let render = move || {
        let mut text = exposition.render();
        text.push_str(&crate::http::render_prometheus("metrics", &stats));
        text
    };
    match tokio::task::spawn_blocking(render).await {
        Ok(text) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE),
                (header::CACHE_CONTROL, "no-store"),
            ],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "/metrics: rendering failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exposition_concatenates_its_parts_in_order() {
        let e = Exposition::new();
        assert_eq!(e.render(), "");
        e.register(|| "tspi_ingest_y_total 1\n".into());
        e.register(|| "tspi_channels_x_total 3".into());
        let shared = e.clone();
        shared.register(String::new);
        shared.register(|| "tspi_archive_z_total 2\n".into());
        assert_eq!(
            e.render(),
            "tspi_ingest_y_total 1\ntspi_channels_x_total 3\ntspi_archive_z_total 2\n"
        );
    }
}
