//! `tspi console serve`: the operators' hub. NATS in, WebSocket out.
//!
//! ```text
//! tspi.channel.>  ──► per-channel track table ──tick──► latest frame (watch: latest wins)
//! tspi.ops.ctrl, tspi.cmd.display.>, tags.broadcast,      │
//! tspi.ops.status, tspi.ops.metrics.ingest.>  ──► events ─┼─► each client's bounded queue
//!                                                          ▼
//!                                   client task: snapshot on connect, then frames of its
//!                                   channel, events, pings; actions with an operator token
//! ```
//!
//! **A slow client never slows anyone else.** Frames are latest-wins: a
//! channel's newest frame sits in a `watch`; a client that falls behind
//! skips to it, and since frames carry only changes, a client that skipped
//! one gets a fresh snapshot instead (counted as skipped). Events go through
//! a bounded queue per client, filled with `try_send` only: a client whose
//! queue overflows is disconnected with a reason (counted), and so is one
//! whose socket takes a write for longer than the write timeout. Nothing a
//! client does blocks the NATS readers or the ticker.
//!
//! The track tables (positions, trails, staleness) are the pure
//! [`Table`]s; the protocol's messages and the roster are pure
//! ([`protocol`]). This module and [`client`] are the edges.

pub mod actions;
pub mod board;
pub mod client;
pub mod protocol;
pub mod web;

use crate::channels::message::{ChannelId, Ctrl, Heartbeat};
use crate::http::{HttpLimits, HttpStats};
use axum::extract::ws::Utf8Bytes;
use protocol::{Event, OpsLog, Roster, RosterEntry};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};

/// One channel's table of tracks, as the hub uses it (the console's pure
/// track table implements it).
pub trait Table: Send + 'static {
    /// Take one contract body (CBOR) received at `now_ms`.
    fn ingest(&mut self, now_ms: u64, body: &[u8]) -> Result<(), String>;
    /// The changes since the last tick as a `frame` message, if any.
    fn tick_json(&mut self, channel_id: &str, now_ms: u64) -> Option<String>;
    /// Every track as a `snapshot` message, without trails.
    fn snapshot_json(&self, channel_id: &str, now_ms: u64) -> String;
    /// The tracks' trails as `trails` messages of at most
    /// [`TRAIL_POINTS_PER_MESSAGE`] points each (a track's whole trail in
    /// one), sent after the snapshot on connecting and switching.
    fn trails_json(&self, _channel_id: &str, _now_ms: u64) -> Vec<String> {
        Vec::new()
    }
    /// Every field of track `id` as a `track_detail` message; `None`
    /// when the table has no such track.
    fn detail_json(&self, _id: &str, _now_ms: u64) -> Option<String> {
        None
    }
    /// Tracks in the table.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Trail points per `trails` message: about 100 KB of JSON, under a frame
/// of 1,000 tracks, so no message a client is sent is much larger than a
/// frame (a connection's write buffer grows to its largest message and
/// stays: one snapshot with every trail cost ~6 MiB per client).
pub const TRAIL_POINTS_PER_MESSAGE: usize = 1_500;

/// Makes the table of a channel the hub meets for the first time.
pub type TableFactory = Arc<dyn Fn(&ChannelId) -> Box<dyn Table> + Send + Sync>;

impl Table for super::tracks::TrackTable {
    fn ingest(&mut self, now_ms: u64, body: &[u8]) -> Result<(), String> {
        // An update older than the track's latest is ignored by the table,
        // not an error.
        super::tracks::TrackTable::ingest(self, now_ms, body)
            .map(|_| ())
            .map_err(|e| e.label().to_owned())
    }

    fn tick_json(&mut self, _channel_id: &str, now_ms: u64) -> Option<String> {
        let out = self.tick(now_ms);
        out.frame
            .map(|f| serde_json::to_string(&f).expect("frames serialize"))
    }

    fn snapshot_json(&self, _channel_id: &str, now_ms: u64) -> String {
        let mut snap = self.snapshot(now_ms);
        for t in &mut snap.tracks {
            t.trail = None;
        }
        serde_json::to_string(&snap).expect("snapshots serialize")
    }

    fn trails_json(&self, channel_id: &str, now_ms: u64) -> Vec<String> {
        let snap = self.snapshot(now_ms);
        let mut out = Vec::new();
        let mut chunk: Vec<serde_json::Value> = Vec::new();
        let mut points = 0;
        let flush = |chunk: &mut Vec<serde_json::Value>, out: &mut Vec<String>| {
            if !chunk.is_empty() {
                out.push(
                    serde_json::json!({"type": "trails", "channel_id": channel_id,
                        "server_time_ms": now_ms, "tracks": std::mem::take(chunk)})
                    .to_string(),
                );
            }
        };
        for t in snap.tracks {
            let Some(trail) = t.trail.filter(|tr| !tr.is_empty()) else {
                continue;
            };
            if points + trail.len() > TRAIL_POINTS_PER_MESSAGE {
                flush(&mut chunk, &mut out);
                points = 0;
            }
            points += trail.len();
            chunk.push(serde_json::json!({"id": t.id, "trail": trail}));
        }
        flush(&mut chunk, &mut out);
        out
    }

    fn detail_json(&self, id: &str, now_ms: u64) -> Option<String> {
        self.detail(id, now_ms)
            .map(|d| serde_json::to_string(&d).expect("details serialize"))
    }

    fn len(&self) -> usize {
        super::tracks::TrackTable::len(self)
    }
}

/// The console's track tables, with `cfg`'s trail, staleness and sites.
pub fn track_tables(cfg: &super::config::ConsoleConfig) -> TableFactory {
    let tracks = cfg.tracks_config();
    Arc::new(move |id: &ChannelId| {
        Box::new(super::tracks::TrackTable::new(id.to_string(), &tracks)) as Box<dyn Table>
    })
}

/// How the hub runs.
#[derive(Clone, Debug)]
pub struct HubOptions {
    /// Frames per second per channel.
    pub tick: Duration,
    /// Clients connected at once; more are refused with a reason.
    pub clients_max: usize,
    /// Events queued per client before it is cut off as too slow.
    pub events_queue_len: usize,
    /// Origins (besides the page's own host) whose pages may connect.
    pub allowed_origins: Vec<String>,
    /// Tokens that make a connection an operator's; none: every client is
    /// a viewer.
    pub operator_tokens: Vec<String>,
    /// A write that takes longer cuts the client off.
    pub write_timeout: Duration,
    /// WebSocket pings (the heartbeat's `ping_ms`).
    pub ping_interval: Duration,
    /// Heartbeats on `tspi.ops.status` (besides one at every change).
    pub heartbeat_interval: Duration,
    /// A roster entry without a heartbeat for this long is dropped.
    pub roster_stale: Duration,
    /// How long a replay channel's table is kept after the replay stopped
    /// and its last client left.
    pub channel_linger: Duration,
    /// The web page: where its files are, and its `/config.json`.
    pub page: web::PageOptions,
    /// The archive whose extent the replay timeline shows, if any.
    pub archive: Option<board::ArchiveSource>,
}

impl HubOptions {
    /// From the `[console]` section (validated) and the operator tokens
    /// the file gives the console.
    pub fn from_config(cfg: &crate::config::Config) -> HubOptions {
        let c = &cfg.console;
        HubOptions {
            tick: Duration::from_micros(1_000_000 / c.tick_hz.max(1)),
            clients_max: c.clients_max as usize,
            events_queue_len: c.events_queue_len as usize,
            allowed_origins: c.allowed_origins.clone(),
            operator_tokens: cfg.console_operator_tokens(),
            page: web::PageOptions::from_console(c),
            archive: board_archive(cfg),
            ..HubOptions::default()
        }
    }
}

/// The archive the timeline reads: the archive role's own connection
/// (`[archive] postgres`, with `ca_file`), else the channels service's
/// (`[channels] archive_dsn`).
fn board_archive(cfg: &crate::config::Config) -> Option<board::ArchiveSource> {
    match (&cfg.archive.postgres, &cfg.channels.archive_dsn) {
        (Some(dsn), _) => Some(board::ArchiveSource {
            dsn: dsn.clone(),
            ca_file: cfg.archive.ca_file.clone(),
        }),
        (None, Some(dsn)) => Some(board::ArchiveSource {
            dsn: dsn.clone(),
            ca_file: None,
        }),
        (None, None) => None,
    }
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            tick: Duration::from_millis(100),
            clients_max: 256,
            events_queue_len: 1024,
            allowed_origins: Vec::new(),
            operator_tokens: Vec::new(),
            write_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(2),
            heartbeat_interval: Duration::from_secs(5),
            roster_stale: Duration::from_secs(15),
            channel_linger: Duration::from_secs(60),
            page: web::PageOptions::default(),
            archive: None,
        }
    }
}

crate::counter_set! {
    /// The hub's counters.
    #[derive(serde::Serialize)]
    pub struct HubCounts {
        connected => "WebSocket clients connected.",
        refused => "WebSocket clients refused (over the client limit or from a foreign origin).",
        frames_sent => "Frames sent to clients.",
        frames_skipped => "Frames skipped by clients that fell behind (each given a snapshot instead).",
        snapshots_sent => "Snapshots sent to clients.",
        events_sent => "Events sent to clients.",
        slow_disconnects => "Clients disconnected as too slow (event queue full or write timeout).",
        bad_bodies => "Channel messages whose body could not be decoded into a track.",
        actions => "Operator actions carried out.",
        actions_refused => "Actions refused (no operator token, a bad request, or the server said no).",
    }
    /// [`HubCounts`], counted live.
    live pub struct HubLive;
}

/// One channel: its table and its latest frame.
pub struct Channel {
    pub id: ChannelId,
    table: Mutex<Box<dyn Table>>,
    frames: watch::Sender<Option<Arc<Encoded>>>,
    /// When the replay behind it stopped (ms since epoch), if it did.
    stopped_ms: AtomicU64,
    snapshots: Mutex<SnapshotCache>,
}

/// A frame serialized once for every client.
#[derive(Debug)]
pub struct Encoded {
    /// Frames of this channel so far; a client that sees a gap skipped one.
    pub seq: u64,
    pub text: Utf8Bytes,
}

impl Channel {
    /// The channel's snapshot (without trails) and the frame it is current
    /// to, and with `trails` its `trails` messages. Rendered at most once
    /// per frame, and shared: when many clients need one at once
    /// (connecting together, or falling behind together) the table is
    /// serialized once, not once each.
    fn snapshot(&self, now_ms: u64, trails: bool) -> (u64, Utf8Bytes, Arc<[Utf8Bytes]>) {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        // The sequence read under the table's lock: the snapshot holds
        // every frame up to it.
        let seq = self.frames.borrow().as_ref().map_or(0, |f| f.seq);
        let id = self.id.to_string();
        let mut cache = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        let snap = match &cache.snapshot {
            Some((at, text)) if *at == seq => text.clone(),
            _ => {
                let text: Utf8Bytes = table.snapshot_json(&id, now_ms).into();
                cache.snapshot = Some((seq, text.clone()));
                text
            }
        };
        if !trails {
            return (seq, snap, Arc::from(Vec::new()));
        }
        let trails = match &cache.trails {
            Some((at, t)) if *at == seq => t.clone(),
            _ => {
                let t: Arc<[Utf8Bytes]> = table
                    .trails_json(&id, now_ms)
                    .into_iter()
                    .map(Utf8Bytes::from)
                    .collect();
                cache.trails = Some((seq, t.clone()));
                t
            }
        };
        (seq, snap, trails)
    }
}

/// A channel's last snapshot and trails, and the frame each is current to.
#[derive(Default)]
struct SnapshotCache {
    snapshot: Option<(u64, Utf8Bytes)>,
    trails: Option<(u64, Arc<[Utf8Bytes]>)>,
}

/// A connected client as the hub sees it.
struct ClientEntry {
    events: mpsc::Sender<ClientEvent>,
    /// Told to close (its queue overflowed).
    kill: Arc<tokio::sync::Notify>,
    channel: String,
}

/// What reaches a client task through its queue.
#[derive(Clone, Debug)]
pub enum ClientEvent {
    /// JSON text for the client.
    Json(Arc<str>),
    /// A control message that moves the client's state machine.
    Ctrl(Ctrl),
}

/// The hub's shared state.
pub struct Hub {
    pub opts: HubOptions,
    pub nats: async_nats::Client,
    pub stats: HubLive,
    pub http: Arc<HttpStats>,
    channels: Mutex<HashMap<String, Arc<Channel>>>,
    make_table: TableFactory,
    clients: Mutex<HashMap<u64, ClientEntry>>,
    next_client: AtomicU64,
    roster: Mutex<Roster>,
    ops_log: Mutex<OpsLog>,
    /// Health, directory, timeline and tags ([`board`]).
    boards: board::Boards,
    /// The last display command of each name (sent to clients on connect).
    display: Mutex<BTreeMap<String, Arc<str>>>,
    /// Group replay channels read on a subscription of their own (see
    /// [`Hub::feed`]), and whether it is subscribed yet.
    feeds: Mutex<HashMap<String, Feed>>,
}

/// A channel's own subscription.
struct Feed {
    task: tokio::task::JoinHandle<()>,
    live: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("opts", &self.opts).finish()
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Hub {
    /// A hub on `nats`; call [`Hub::start`] to run its tasks.
    pub fn new(nats: async_nats::Client, opts: HubOptions, make_table: TableFactory) -> Arc<Hub> {
        Arc::new(Hub {
            opts,
            nats,
            stats: HubLive::default(),
            http: Arc::new(HttpStats::default()),
            channels: Mutex::new(HashMap::new()),
            make_table,
            clients: Mutex::new(HashMap::new()),
            next_client: AtomicU64::new(1),
            roster: Mutex::new(Roster::default()),
            ops_log: Mutex::new(OpsLog::default()),
            boards: board::Boards::default(),
            display: Mutex::new(BTreeMap::new()),
            feeds: Mutex::new(HashMap::new()),
        })
    }

    /// Subscribe and start the NATS readers and the ticker; they end when
    /// the returned tasks are aborted (or the connection closes).
    pub async fn start(self: &Arc<Hub>) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        use crate::contract::names;
        let telemetry = self.nats.subscribe("tspi.channel.>").await?;
        // The livestream on a subscription of its own: `LIVE_MAIN` is a
        // push consumer, whose messages arrive under their stored subject
        // (`tspi.<type>.<sensor>`), not the one they were delivered to.
        let livestream = self.nats.subscribe(names::SUBJECT_LIVESTREAM).await?;
        let ops = vec![
            self.nats.subscribe(names::SUBJECT_CTRL).await?,
            self.nats.subscribe("tspi.cmd.display.>").await?,
            self.nats.subscribe(names::SUBJECT_TAGS).await?,
            self.nats.subscribe(names::SUBJECT_STATUS).await?,
            self.nats.subscribe("tspi.ops.metrics.ingest.>").await?,
        ];
        self.nats.flush().await?;
        let mut tasks = vec![
            tokio::spawn(telemetry_loop(self.clone(), telemetry, None)),
            tokio::spawn(telemetry_loop(
                self.clone(),
                livestream,
                Some(ChannelId::Livestream),
            )),
            tokio::spawn(tick_loop(self.clone())),
        ];
        for sub in ops {
            tasks.push(tokio::spawn(ops_loop(self.clone(), sub)));
        }
        tasks.push(tokio::spawn(board::directory_loop(self.clone())));
        tasks.push(tokio::spawn(board::timeline_loop(self.clone())));
        if let Some(source) = self.opts.archive.clone() {
            tasks.push(tokio::spawn(board::archive_timeline_loop(
                self.clone(),
                source,
            )));
        }
        tasks.push(tokio::spawn(board::load_tags(self.clone())));
        Ok(tasks)
    }

    /// Read group replay `id` on a subscription of its own. A replay the
    /// channels service runs as a JetStream push consumer (`jetstream_native`)
    /// delivers its messages under their stored subjects
    /// (`tspi.<type>.<sensor>`), which the `tspi.channel.>` reader cannot
    /// place; on its own subscription every message is the channel's. The
    /// wildcard reader leaves the channel once this one is subscribed.
    pub fn feed(self: &Arc<Hub>, id: &ChannelId) {
        let key = id.to_string();
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        if feeds.contains_key(&key) {
            return;
        }
        let live = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (hub, subject, channel, flag) = (self.clone(), id.subject(), id.clone(), live.clone());
        let task = tokio::spawn(async move {
            let Ok(sub) = hub.nats.subscribe(subject).await else {
                return; // the connection is closing
            };
            let _ = hub.nats.flush().await;
            flag.store(true, Relaxed);
            telemetry_loop(hub, sub, Some(channel)).await;
        });
        feeds.insert(key, Feed { task, live });
    }

    /// Whether channel `key` is read on a subscription of its own.
    fn fed(&self, key: &str) -> bool {
        self.feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .is_some_and(|f| f.live.load(Relaxed))
    }

    /// The channel `id`, made on first use.
    pub fn channel(&self, id: &ChannelId) -> Arc<Channel> {
        let key = id.to_string();
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Channel {
                    id: id.clone(),
                    table: Mutex::new((self.make_table)(id)),
                    frames: watch::channel(None).0,
                    stopped_ms: AtomicU64::new(0),
                    snapshots: Mutex::new(SnapshotCache::default()),
                })
            })
            .clone()
    }

    /// The channels now (a copy: the lock is not held while they are used).
    fn channels_now(&self) -> Vec<Arc<Channel>> {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Tracks per channel, clients per channel (for metrics).
    pub fn channel_gauges(&self) -> Vec<(String, usize, usize)> {
        let channels = self.channels_now();
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, usize, usize)> = channels
            .iter()
            .map(|c| {
                let id = c.id.to_string();
                let n = clients.values().filter(|e| e.channel == id).count();
                let tracks = c.table.lock().unwrap_or_else(|e| e.into_inner()).len();
                (id, tracks, n)
            })
            .collect();
        out.sort();
        out
    }

    pub fn clients_connected(&self) -> usize {
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Register a client; `None` when the limit is reached.
    fn join(
        &self,
        channel: &ChannelId,
    ) -> Option<(u64, mpsc::Receiver<ClientEvent>, Arc<tokio::sync::Notify>)> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= self.opts.clients_max {
            return None;
        }
        let id = self.next_client.fetch_add(1, Relaxed);
        let (tx, rx) = mpsc::channel(self.opts.events_queue_len);
        let kill = Arc::new(tokio::sync::Notify::new());
        clients.insert(
            id,
            ClientEntry {
                events: tx,
                kill: kill.clone(),
                channel: channel.to_string(),
            },
        );
        self.stats.connected.fetch_add(1, Relaxed);
        Some((id, rx, kill))
    }

    fn leave(&self, id: u64) {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    fn moved(&self, id: u64, channel: &ChannelId) {
        if let Some(c) = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&id)
        {
            c.channel = channel.to_string();
        }
    }

    /// Queue `event` for every client, never waiting: a client whose queue
    /// is full is told to close.
    pub fn broadcast(&self, event: ClientEvent) {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        for c in clients.values() {
            if let Err(mpsc::error::TrySendError::Full(_)) = c.events.try_send(event.clone()) {
                c.kill.notify_one();
            }
        }
    }

    fn broadcast_event(&self, e: &Event) {
        self.broadcast(ClientEvent::Json(e.to_json().into()));
    }

    /// Add a line to the operations log and send it to everyone.
    pub fn log(&self, text: String) {
        let e = self
            .ops_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(now_ms(), text);
        self.broadcast_event(&e);
    }

    /// What a client gets after `hello`, before its snapshot: the roster,
    /// the operations log, the latest display commands and latencies.
    fn welcome(&self) -> Vec<String> {
        let mut out = vec![
            self.roster
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .event()
                .to_json(),
            self.ops_log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .event()
                .to_json(),
        ];
        out.extend(
            self.display
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .map(|s| s.to_string()),
        );
        {
            let latency = self
                .boards
                .latency
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            out.push(latency.event().to_json());
            out.push(latency.health_event().to_json());
        }
        let directory = self
            .boards
            .directory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| {
                Event::Directory {
                    channels: board::directory_view(&[
                        crate::channels::message::DirectoryEntry::livestream(),
                    ]),
                }
                .to_json()
            });
        out.push(directory);
        out.push(
            self.boards
                .timeline
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .event()
                .to_json(),
        );
        out.push(
            self.boards
                .tags
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .event()
                .to_json(),
        );
        out
    }

    /// The hub's Prometheus families, as its own `/metrics` serves them:
    /// [`Hub::render_console_prometheus`] and its HTTP server's
    /// `tspi_http_*{server="console"}`.
    pub fn render_prometheus(&self) -> String {
        let mut s = self.render_console_prometheus();
        s.push_str(&crate::http::render_prometheus("console", &self.http));
        s
    }

    /// The `tspi_console_*` families alone: the hub's part of `tspi run`'s
    /// shared `/metrics`, whose server renders its own `tspi_http_*`
    /// families (a second HELP and TYPE of one family is not Prometheus
    /// text).
    pub fn render_console_prometheus(&self) -> String {
        let mut s = String::new();
        crate::metrics::write_counter_families(&mut s, "tspi_console", &self.stats.load());
        let gauges = self.channel_gauges();
        let labels: Vec<String> = gauges
            .iter()
            .map(|(id, _, _)| format!("{{channel=\"{id}\"}}"))
            .collect();
        crate::metrics::write_gauge_family(
            &mut s,
            "tspi_console_clients",
            "WebSocket clients per channel.",
            &labels
                .iter()
                .zip(&gauges)
                .map(|(l, (_, _, n))| (l.as_str(), *n))
                .collect::<Vec<_>>(),
        );
        crate::metrics::write_gauge_family(
            &mut s,
            "tspi_console_tracks",
            "Tracks per channel.",
            &labels
                .iter()
                .zip(&gauges)
                .map(|(l, (_, t, _))| (l.as_str(), *t))
                .collect::<Vec<_>>(),
        );
        s
    }
}

/// Telemetry into its channel's table: every message of `sub` into
/// `channel`'s when given (the livestream); else each message on
/// `tspi.channel.<channel>` into that channel's, the livestream's left to
/// its own subscription.
async fn telemetry_loop(
    hub: Arc<Hub>,
    mut sub: async_nats::Subscriber,
    channel: Option<ChannelId>,
) {
    use futures_util::StreamExt as _;
    while let Some(msg) = sub.next().await {
        let id = match &channel {
            Some(id) => id.clone(),
            None => {
                // Messages a push consumer delivers carry their stored
                // subject (`tspi.<type>.<sensor>`): not a channel's.
                let Some(rest) = msg.subject.as_str().strip_prefix("tspi.channel.") else {
                    continue;
                };
                // Requests share the prefix (`list.req`, `private.req`):
                // only channel ids are channels.
                match ChannelId::parse(rest) {
                    Ok(ChannelId::Livestream) | Err(_) => continue,
                    Ok(_) if hub.fed(rest) => continue,
                    Ok(id) => id,
                }
            }
        };
        let channel = hub.channel(&id);
        let r = channel
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ingest(now_ms(), &msg.payload);
        if r.is_err() {
            hub.stats.bad_bodies.fetch_add(1, Relaxed);
        }
    }
}

/// Every tick, each channel's changes into its latest frame; replay
/// channels stopped long enough ago and left by every client are dropped.
async fn tick_loop(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(hub.opts.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut roster_every = 0u32;
    let mut roster_seconds = 0u32;
    loop {
        tick.tick().await;
        let now = now_ms();
        for c in &hub.channels_now() {
            let mut table = c.table.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(text) = table.tick_json(&c.id.to_string(), now) {
                let seq = c.frames.borrow().as_ref().map_or(0, |f| f.seq) + 1;
                c.frames.send_replace(Some(Arc::new(Encoded {
                    seq,
                    text: text.into(),
                })));
            }
        }
        let linger = hub.opts.channel_linger.as_millis() as u64;
        hub.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|key, c| {
                let stopped = c.stopped_ms.load(Relaxed);
                let keep = stopped == 0
                    || now.saturating_sub(stopped) < linger
                    || c.frames.receiver_count() > 0;
                if !keep
                    && let Some(f) = hub
                        .feeds
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(key)
                {
                    f.task.abort();
                }
                keep
            });
        // The roster's expiry, once a second.
        roster_every += 1;
        if Duration::from_millis(u64::from(roster_every) * hub.opts.tick.as_millis() as u64)
            >= Duration::from_secs(1)
        {
            roster_every = 0;
            let stale = hub.opts.roster_stale.as_millis() as u64;
            let expired = hub
                .roster
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .expire(now, stale);
            // Every 5 s the roster goes out anyway: its pings and last-seen
            // times move without a change of state.
            roster_seconds = (roster_seconds + 1) % 5;
            let refresh = roster_seconds == 0
                && !hub
                    .roster
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_empty();
            if expired || refresh {
                let e = hub.roster.lock().unwrap_or_else(|e| e.into_inner()).event();
                hub.broadcast_event(&e);
            }
        }
    }
}

/// Operator traffic into events.
async fn ops_loop(hub: Arc<Hub>, mut sub: async_nats::Subscriber) {
    use crate::contract::message::ops;
    use futures_util::StreamExt as _;
    while let Some(msg) = sub.next().await {
        let subject = msg.subject.as_str();
        if subject == crate::contract::names::SUBJECT_CTRL {
            let Ok(ctrl) = Ctrl::decode(&msg.payload) else {
                continue;
            };
            let event = match &ctrl {
                Ctrl::Start(s) => {
                    hub.log(format!(
                        "group replay started: {} ({})",
                        s.channel_id, s.identifier
                    ));
                    if let Ok(id) = ChannelId::parse(&s.channel_id) {
                        hub.channel(&id).stopped_ms.store(0, Relaxed);
                        hub.feed(&id);
                    }
                    Some(Event::Control {
                        action: "GroupReplayStart".into(),
                        channel_id: s.channel_id.clone(),
                        display_name: Some(s.display_name.clone()),
                        identifier: Some(s.identifier.clone()),
                    })
                }
                Ctrl::Stop(s) => {
                    hub.log(format!("group replay stopped: {}", s.channel_id));
                    if let Ok(id) = ChannelId::parse(&s.channel_id) {
                        hub.channel(&id).stopped_ms.store(now_ms(), Relaxed);
                    }
                    Some(Event::Control {
                        action: "GroupReplayStop".into(),
                        channel_id: s.channel_id.clone(),
                        display_name: None,
                        identifier: None,
                    })
                }
                _ => None,
            };
            if let Some(e) = event {
                hub.broadcast_event(&e);
                hub.broadcast(ClientEvent::Ctrl(ctrl));
            }
        } else if subject.starts_with("tspi.cmd.display.") {
            let Ok(c) = ops::decode_command(&msg.payload) else {
                continue;
            };
            hub.log(format!(
                "display command {} from {}",
                c.name,
                c.sender.as_deref().unwrap_or("?")
            ));
            let e = Event::Display {
                cmd_id: c.cmd_id,
                name: c.name.clone(),
                ts_unix_us: c.ts_unix_us,
                sender: c.sender,
                payload: serde_json::from_str(&c.payload_json).unwrap_or_default(),
            };
            let text: Arc<str> = e.to_json().into();
            hub.display
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(c.name, text.clone());
            hub.broadcast(ClientEvent::Json(text));
        } else if subject == crate::contract::names::SUBJECT_TAGS {
            let Ok(t) = ops::decode_tag(&msg.payload) else {
                continue;
            };
            hub.log(format!("tag \"{}\"", t.label));
            hub.boards
                .tags
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(protocol::TagView {
                    id: t.id.clone(),
                    label: t.label.clone(),
                    ts_unix_us: t.ts_unix_us,
                    notes: t.notes.clone(),
                    creator: t.creator.clone(),
                });
            hub.broadcast_event(&Event::Tag {
                id: t.id,
                label: t.label,
                ts_unix_us: t.ts_unix_us,
                notes: t.notes,
                creator: t.creator,
            });
        } else if subject == crate::contract::names::SUBJECT_STATUS {
            let Ok(h) = crate::channels::message::from_cbor::<Heartbeat>(&msg.payload) else {
                continue;
            };
            let entry = RosterEntry {
                client_id: h.client_id,
                state: h.state,
                channel_id: h.channel_id,
                live_override: h.live_override,
                operator: h.operator,
                ping_ms: h.ping_ms,
                seen_unix_ms: now_ms(),
                since_unix_ms: now_ms(),
            };
            let mut roster = hub.roster.lock().unwrap_or_else(|e| e.into_inner());
            if roster.heartbeat(entry) {
                let e = roster.event();
                drop(roster);
                hub.broadcast_event(&e);
            }
        } else if let Some(host) = subject.strip_prefix("tspi.ops.metrics.ingest.") {
            let events = {
                let mut board = hub.boards.latency.lock().unwrap_or_else(|e| e.into_inner());
                board
                    .update(host, &msg.payload)
                    .then(|| (board.event(), board.health_event()))
            };
            if let Some((latency, health)) = events {
                hub.broadcast_event(&latency);
                hub.broadcast_event(&health);
            }
        }
    }
}

/// Serve the hub on `addr`: `/` and the page's files ([`web`]), `/ws`
/// (the protocol), `/metrics`. A configured web directory that is not a
/// build of the page is an error; none found is a warning (the page then
/// says where it looked).
pub async fn serve(
    hub: Arc<Hub>,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let assets = web::WebAssets::load(&hub.opts.page.web_dir)?;
    match &assets.dir {
        Some(d) => tracing::info!(dir = %d.display(), files = assets.len(), "console: web page"),
        None => tracing::warn!(
            "console: the web page's files were not found (build: npm --prefix web ci && \
             npm --prefix web run build; or set [console] web_dir): / explains"
        ),
    }
    let router = client::router(hub.clone()).merge(web::routes(assets, hub.opts.page.clone()));
    // WebSocket connections live long: the idle timeout is longer than
    // the ping interval, which keeps a healthy connection busy.
    // No share per address below the client limit: behind a reverse
    // proxy every browser comes from one address.
    let limits = HttpLimits {
        connections_max: hub.opts.clients_max + 64,
        connections_per_peer_max: hub.opts.clients_max + 64,
        idle_timeout: Duration::from_secs(60).max(hub.opts.ping_interval * 4),
        ..HttpLimits::METRICS
    };
    crate::http::serve(addr, router, limits, hub.http.clone()).await
}
