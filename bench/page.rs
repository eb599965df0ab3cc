//! The operator's page in a real browser (issue 15): the page's own work
//! per frame and its memory, with 1,000 tracks at 10 Hz for 5 minutes.
//!
//! `cargo bench --bench page` (about 6 minutes); `cargo test --benches`
//! runs a smoke form (50 tracks, 5 s) that checks the page kept up.
//!
//! One real nats-server; the hub is the `tspi console serve` binary,
//! serving the built page (`web/dist`); a publisher in this process puts
//! 1,000 geocentric tracks at 10 Hz each on `tspi.channel.livestream`
//! (10,000 bodies/s, `tspi_testkit::load`). Debian's Chromium, headless,
//! driven by `web/bench/page.bench.mjs`, loads the page, waits for every
//! track and a 10 s warm-up, then measures for the run: each frame's work
//! (receive, decode, update: `performance.now()` around the message
//! handler, kept by the page in `window.tspi.perf`) p50/p99/max, and the JS
//! heap after a forced garbage collection at the start and the end (flat
//! memory: the end within a few MiB of the start). Target: p99 under 8 ms.
//! Everything shares the box's cores with the browser's renderer.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tspi_testkit::harness::NatsServer;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let (tracks, seconds): (u16, u64) = if bench_mode { (1000, 300) } else { (50, 5) };
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let probe = if !web.join("dist/index.html").exists()
        || !web.join("node_modules/playwright-core").exists()
    {
        Err("the page is not built (run scripts/setup)".to_string())
    } else if !Path::new("/usr/bin/chromium").exists()
        && std::env::var_os("TSPI_CHROMIUM").is_none()
    {
        Err("no Chromium (run scripts/setup)".to_string())
    } else {
        Ok(())
    };
    if !tspi_testkit::skip::require("bench page", probe) {
        return;
    }
    println!(
        "== the page in a browser ({}): {tracks} tracks at 10 Hz, {seconds} s ==",
        if bench_mode { "full" } else { "smoke" }
    );
    let server = NatsServer::start().expect("nats-server (run ./scripts/setup)");
    let port = free_port();
    let config = tempfile::NamedTempFile::new().expect("config file");
    std::fs::write(
        config.path(),
        format!("[console]\nweb_dir = {:?}\n", web.join("dist")),
    )
    .expect("config");
    let mut hub = Command::new(env!("CARGO_BIN_EXE_tspi"))
        .args(["console", "serve", "--nats", &server.url()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(config.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tspi console serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the hub never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let limit = Duration::from_secs(seconds + 180);
    let publisher = rt.spawn(tspi_testkit::load::publish_livestream(
        server.url(),
        tracks,
        stop.clone(),
        limit,
    ));
    let out = Command::new("timeout")
        .args(["-k", "5", &(seconds + 150).to_string(), "node"])
        .arg(web.join("bench/page.bench.mjs"))
        .args(["--url", &format!("http://127.0.0.1:{port}")])
        .args([
            "--tracks",
            &tracks.to_string(),
            "--seconds",
            &seconds.to_string(),
        ])
        .args(["--warmup", if bench_mode { "10" } else { "2" }])
        .current_dir(&web)
        .output()
        .expect("node runs");
    stop.store(true, Relaxed);
    let (sent, secs) = rt.block_on(publisher).expect("publisher");
    let _ = hub.kill();
    let _ = hub.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the page bench failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON");
    println!(
        "published {sent} bodies in {secs:.1} s ({:.0}/s)",
        sent as f64 / secs
    );
    println!(
        "page: {} frames applied in {seconds} s, {:.1} MiB received, {} tracks shown",
        v["frames"],
        v["mib_received"].as_f64().unwrap_or(0.0),
        v["tracks_shown"]
    );
    println!(
        "page's work per frame (receive, decode, update): p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms (target: p99 < 8 ms)",
        v["frame_ms_p50"].as_f64().unwrap_or(f64::NAN),
        v["frame_ms_p99"].as_f64().unwrap_or(f64::NAN),
        v["frame_ms_max"].as_f64().unwrap_or(f64::NAN),
    );
    println!(
        "JS heap after GC: start {:.2} MiB, end {:.2} MiB; during: {}; labels drawn p99 {:.2} ms",
        v["heap_start"]["js_heap_used_mib"]
            .as_f64()
            .unwrap_or(f64::NAN),
        v["heap_end"]["js_heap_used_mib"]
            .as_f64()
            .unwrap_or(f64::NAN),
        v["heap_samples_mib"],
        v["label_ms_p99"].as_f64().unwrap_or(f64::NAN),
    );
    // What must hold in any run, smoke or full: the page showed every
    // track, kept applying frames, and nothing left the machine.
    assert_eq!(
        v["tracks_shown"].as_u64(),
        Some(u64::from(tracks)),
        "{line}"
    );
    assert!(
        v["frames"].as_u64().unwrap_or(0) >= seconds * 5,
        "too few frames: {line}"
    );
    assert_eq!(v["foreign"], serde_json::json!([]), "{line}");
    assert_eq!(v["errors"], serde_json::json!([]), "{line}");
}
