//! The operator's web page in a real browser: Debian's Chromium, headless,
//! driven by Playwright (`web/e2e/console.e2e.mjs`) against the real
//! appliance: a nats-server with JetStream, `tspi run` with ingest, the
//! channels service and the console from one file, and an airshow fleet
//! flown into ingest over loopback UDP. The script checks the page loads
//! with no request leaving the machine and shows the fleet; an offline
//! PMTiles basemap is read by byte ranges and drawn; a viewer has no
//! operator controls and the hub refuses its actions; track details and
//! units; tags across browsers; the roster with pings; private and group
//! replays, the offer, back to live; and writes a screenshot.

use crate::kit::*;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::task::block_in_place;
use tspi_loadgen::{Fleet, FleetConfig, Style};
use tspi_testkit::harness::NatsServer;

const TOKEN: &str = "range-operator-token-0042";
/// The fleet flown into ingest.
const TRACKS: u32 = 40;
const RATE_HZ: u32 = 10;
/// The longest the fleet flies (the test stops it sooner).
const FLIGHT_MAX: Duration = Duration::from_secs(300);

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

/// What the browser test needs: Node.js, Chromium, the page built and
/// Playwright installed (`scripts/setup` does all four).
fn browser_probe() -> Result<(), String> {
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Err("no Node.js (`node`): scripts/setup installs it".into());
    }
    let chromium = std::env::var("TSPI_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Err(format!(
            "no Chromium at {chromium}: scripts/setup installs Debian's chromium"
        ));
    }
    let web = web_dir();
    for need in [
        "dist/index.html",
        "dist/vendor/maplibre-gl.mjs",
        "node_modules/playwright-core",
    ] {
        if !web.join(need).exists() {
            return Err(format!(
                "web/{need} is missing: run scripts/setup (npm ci and the page's build)"
            ));
        }
    }
    Ok(())
}

/// Flies `fleet` into `to` at [`RATE_HZ`] from a thread, stamped with the
/// wall clock, until `stop` or [`FLIGHT_MAX`].
fn fly(
    fleet: Arc<Fleet>,
    to: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let start = Instant::now();
        let mut sent = 0u64;
        let mut out_of_range = 0u64;
        let period = Duration::from_millis(1000 / u64::from(RATE_HZ));
        let mut step = 0u32;
        while !stop.load(Ordering::Relaxed) && start.elapsed() < FLIGHT_MAX {
            let now_ns = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            let (day, ticks) = tspi::message::utc_day_ticks(now_ns);
            let t_s = f64::from(step) / f64::from(RATE_HZ);
            for k in 0..fleet.tracks() {
                let frame = fleet.frame(k, t_s, day, ticks, &mut out_of_range);
                if sock.send_to(&frame.encode(), to).is_ok() {
                    sent += 1;
                }
            }
            step += 1;
            let next = period * step;
            if let Some(wait) = next.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        sent
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_a_real_browser() {
    const TEST: &str = "the_page_in_a_real_browser";
    if !tspi_testkit::skip::require(TEST, browser_probe()) {
        return;
    }
    let Some(cores) = run_cores(TEST) else {
        return;
    };
    let nats = block_in_place(NatsServer::start).expect("nats-server");
    let udp = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let udp_port = udp.port();
    let (metrics, console) = (free_tcp_port(), free_tcp_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tspi.toml");
    // An offline basemap: one PMTiles raster tile, written by the script.
    let basemap = dir.path().join("basemap.pmtiles");
    let made = Command::new("node")
        .arg(web_dir().join("e2e/pmtiles.mjs"))
        .arg(&basemap)
        .output()
        .expect("node runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    std::fs::write(
        &path,
        format!(
            "[nats]\nservers = [{nats:?}]\n\
             [ingest]\nudp = [\"127.0.0.1:{udp_port}\"]\nbackend = \"recvmmsg\"\ncores = [{core}]\n\
             [metrics]\ninterval_s = 1\naddr = \"127.0.0.1:{metrics}\"\n\
             [channels]\nenabled = true\noperator_tokens = [\"{TOKEN}\"]\n\
             [console]\nenabled = true\nlisten = \"127.0.0.1:{console}\"\nweb_dir = {web:?}\n\
             [console.map]\nrings_km = [2, 5, 10]\ntiles = {basemap:?}\n",
            nats = nats.url(),
            core = cores[0],
            web = web_dir().join("dist"),
        ),
    )
    .unwrap();
    let (_run, _stdout, stderr) = spawn_run(&path);
    // The console answers before the fleet flies.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", console)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the console never listened:\n{}",
            stderr.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fleet = Fleet::new(FleetConfig::new(Style::Airshow, TRACKS, 11)).expect("fleet");
    let stop = Arc::new(AtomicBool::new(false));
    let flight = fly(fleet, udp, stop.clone());

    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-e2e");
    let run = block_in_place(|| {
        Command::new("timeout")
            .args(["-k", "5", "240", "node"])
            .arg(web_dir().join("e2e/console.e2e.mjs"))
            .args(["--url", &format!("http://127.0.0.1:{console}")])
            .args([
                "--token",
                TOKEN,
                "--tracks",
                &TRACKS.to_string(),
                "--basemap",
                "1",
            ])
            .arg("--out")
            .arg(&out)
            .current_dir(web_dir())
            .output()
            .expect("node runs")
    });
    stop.store(true, Ordering::Relaxed);
    let sent = block_in_place(|| flight.join().unwrap());
    let text = String::from_utf8_lossy(&run.stdout);
    let err = String::from_utf8_lossy(&run.stderr);
    println!("{text}");
    assert!(
        run.status.success(),
        "the browser test failed ({}):\n{text}\n{err}\n--- tspi run:\n{}",
        run.status,
        tail(&stderr.lock().unwrap(), 40)
    );
    for step in [
        "ok page loads offline",
        "ok the offline basemap is drawn",
        "ok a viewer has no operator controls",
        "ok track details show every field; units switched",
        "ok a tag made in one browser",
        "ok both browsers are in the roster with a ping",
        "ok a private replay",
        "ok a group replay",
        "ok the playhead moves",
        "ok back to live works",
        "ok the offer joins the group replay",
        "ok no request left the machine",
        "ok screenshot",
    ] {
        assert!(text.contains(step), "no `{step}` in:\n{text}");
    }
    assert!(sent > 0);
    let shot = std::fs::metadata(out.join("console.png")).expect("a screenshot");
    assert!(shot.len() > 10_000, "a screenshot of a page, not a blank");
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}
