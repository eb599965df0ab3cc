//! Edge: one WebSocket client of the hub, and the hub's routes.
//!
//! A connection gets `hello`, the roster, the operations log, the latest
//! display commands and latencies, its `state` and a `snapshot` of its
//! channel; then `frame`s of that channel (latest wins: after a gap, a new
//! snapshot), events from its bounded queue, and pings. It follows the
//! karaoke state machine on the control messages the hub hands it, and is
//! announced on `tspi.ops.status` at every change and every
//! [`HubOptions::heartbeat_interval`](super::HubOptions) with the ping the
//! hub measured.

use super::protocol::{self, ClientMsg, Event};
use super::{Channel, ClientEvent, Encoded, Hub, now_ms};
use crate::channels::client_state::{ClientMachine, Event as MachineEvent};
use crate::channels::message::{self, ChannelId, Ctrl};
use crate::message::RecvTime;
use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt as _, StreamExt as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// How long a goodbye may take to write before the connection is dropped.
const BYE_TIMEOUT: Duration = Duration::from_millis(500);

/// `/ws` and `/metrics` (the page's routes are [`super::web`]'s).
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/ws", get(upgrade))
        .route("/metrics", get(metrics))
        .with_state(hub)
}

async fn metrics(State(hub): State<Arc<Hub>>) -> impl IntoResponse {
    let mut text = hub.render_prometheus();
    text.push_str(&crate::nats::render_prometheus());
    (
        [(
            header::CONTENT_TYPE,
            crate::metrics::PROMETHEUS_CONTENT_TYPE,
        )],
        text,
    )
}

#[derive(Debug, serde::Deserialize)]
struct Params {
    client_id: Option<String>,
    token: Option<String>,
}

async fn upgrade(
    State(hub): State<Arc<Hub>>,
    Query(p): Query<Params>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let text = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    if !protocol::origin_allowed(
        text(header::ORIGIN),
        text(header::HOST),
        &hub.opts.allowed_origins,
    ) {
        hub.stats.refused.fetch_add(1, Relaxed);
        return (
            StatusCode::FORBIDDEN,
            "origin not allowed (console.allowed_origins)\n",
        )
            .into_response();
    }
    if hub.clients_connected() >= hub.opts.clients_max {
        hub.stats.refused.fetch_add(1, Relaxed);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many clients (console.clients_max = {})\n",
                hub.opts.clients_max
            ),
        )
            .into_response();
    }
    let client_id = match p.client_id {
        Some(id) => match message::check_id("client_id", &id) {
            Ok(()) => id,
            Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        },
        None => format!("web-{}", hub.next_client.load(Relaxed)),
    };
    let token = p
        .token
        .filter(|t| protocol::token_ok(t, &hub.opts.operator_tokens));
    let peer = Some(peer);
    ws.max_message_size(protocol::CLIENT_MSG_LEN_MAX * 2)
        .on_upgrade(move |socket| run(hub, socket, client_id, token, peer))
}

/// Why a connection ended early.
struct Cut(&'static str);

/// The writing half and what writing needs.
struct Conn {
    hub: Arc<Hub>,
    tx: futures_util::stream::SplitSink<WebSocket, Message>,
}

impl Conn {
    async fn send(&mut self, m: Message) -> Result<(), Cut> {
        match tokio::time::timeout(self.hub.opts.write_timeout, self.tx.send(m)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Cut("gone")),
            Err(_) => {
                self.hub.stats.slow_disconnects.fetch_add(1, Relaxed);
                Err(Cut("write timeout"))
            }
        }
    }

    async fn text(&mut self, t: impl Into<Utf8Bytes>) -> Result<(), Cut> {
        self.send(Message::Text(t.into())).await
    }

    async fn event(&mut self, e: &Event) -> Result<(), Cut> {
        self.hub.stats.events_sent.fetch_add(1, Relaxed);
        self.text(e.to_json()).await
    }

    /// Say why, and close (bounded: the client may be the reason).
    async fn bye(&mut self, reason: &str) {
        let _ = tokio::time::timeout(BYE_TIMEOUT, async {
            let _ = self
                .tx
                .send(Message::Text(
                    Event::Bye {
                        reason: reason.into(),
                    }
                    .to_json()
                    .into(),
                ))
                .await;
            let _ = self
                .tx
                .send(Message::Close(Some(CloseFrame {
                    code: 1008,
                    reason: Utf8Bytes::from(reason.chars().take(120).collect::<String>()),
                })))
                .await;
        })
        .await;
    }
}

/// The client's channel and where it is in its frames.
struct Watching {
    channel: Arc<Channel>,
    frames: tokio::sync::watch::Receiver<Option<Arc<Encoded>>>,
    seq: u64,
}

impl Watching {
    fn new(hub: &Hub, id: &ChannelId) -> Watching {
        let channel = hub.channel(id);
        let frames = channel.frames.subscribe();
        Watching {
            channel,
            frames,
            seq: 0,
        }
    }

    /// A snapshot of the channel (with its trails when `trails`); later
    /// frames continue from it.
    async fn snapshot(&mut self, conn: &mut Conn, trails: bool) -> Result<(), Cut> {
        let (seq, text, trails) = self.channel.snapshot(now_ms(), trails);
        self.seq = seq;
        conn.hub.stats.snapshots_sent.fetch_add(1, Relaxed);
        conn.text(text).await?;
        for t in trails.iter() {
            conn.text(t.clone()).await?;
        }
        Ok(())
    }

    /// The newest frame: sent if it follows the last one, else a snapshot.
    async fn newest(&mut self, conn: &mut Conn) -> Result<(), Cut> {
        let Some(f) = self.frames.borrow_and_update().clone() else {
            return Ok(());
        };
        if f.seq <= self.seq {
            return Ok(()); // already in the snapshot
        }
        if f.seq == self.seq + 1 {
            self.seq = f.seq;
            conn.hub.stats.frames_sent.fetch_add(1, Relaxed);
            return conn.text(f.text.clone()).await;
        }
        conn.hub
            .stats
            .frames_skipped
            .fetch_add(f.seq - self.seq - 1, Relaxed);
        // Without trails: the client has them up to where it fell behind,
        // and a snapshot the size of a frame does not make a slow client
        // slower (with trails, a storm of them fed itself).
        self.snapshot(conn, false).await
    }
}

/// One connection, until it closes or is cut off.
async fn run(
    hub: Arc<Hub>,
    socket: WebSocket,
    client_id: String,
    token: Option<String>,
    peer: Option<SocketAddr>,
) {
    let (tx, mut rx) = socket.split();
    let mut conn = Conn {
        hub: hub.clone(),
        tx,
    };
    let Some((id, mut events, kill)) = hub.join(&ChannelId::Livestream) else {
        hub.stats.refused.fetch_add(1, Relaxed);
        conn.bye("too many clients").await;
        return;
    };
    hub.log(format!(
        "client {client_id} connected{}",
        if token.is_some() {
            " as an operator"
        } else {
            ""
        }
    ));
    let mut c = Client {
        hub: hub.clone(),
        id,
        client_id,
        operator: token.is_some(),
        token,
        peer,
        machine: ClientMachine::default(),
        ping_ms: None,
    };
    let mut watching = Watching::new(&hub, &ChannelId::Livestream);
    let end = c
        .serve(&mut conn, &mut watching, &mut rx, &mut events, &kill)
        .await;
    if let Err(Cut(why)) = end {
        if why != "gone" {
            conn.bye(why).await;
        }
        hub.log(format!("client {} cut off: {why}", c.client_id));
    } else {
        hub.log(format!("client {} left", c.client_id));
    }
    hub.leave(id);
}

struct Client {
    hub: Arc<Hub>,
    id: u64,
    client_id: String,
    operator: bool,
    /// The operator token this connection presented.
    token: Option<String>,
    peer: Option<SocketAddr>,
    machine: ClientMachine,
    ping_ms: Option<f64>,
}

impl Client {
    async fn serve(
        &mut self,
        conn: &mut Conn,
        watching: &mut Watching,
        rx: &mut futures_util::stream::SplitStream<WebSocket>,
        events: &mut tokio::sync::mpsc::Receiver<ClientEvent>,
        kill: &tokio::sync::Notify,
    ) -> Result<(), Cut> {
        conn.event(&Event::Hello {
            protocol: protocol::PROTOCOL_VERSION,
            client_id: self.client_id.clone(),
            operator: self.operator,
        })
        .await?;
        for text in self.hub.welcome() {
            conn.text(text).await?;
        }
        self.state_changed(conn, watching).await?;
        let mut ping = tokio::time::interval(self.hub.opts.ping_interval);
        let mut heartbeat = tokio::time::interval(self.hub.opts.heartbeat_interval);
        heartbeat.tick().await; // state_changed just announced it
        let started = tokio::time::Instant::now();
        loop {
            tokio::select! {
                biased;
                () = kill.notified() => {
                    self.hub.stats.slow_disconnects.fetch_add(1, Relaxed);
                    return Err(Cut("too slow: event queue full"));
                }
                m = rx.next() => match m {
                    Some(Ok(Message::Text(t))) => self.on_text(conn, watching, t.as_str()).await?,
                    Some(Ok(Message::Pong(p))) => {
                        if let Ok(b) = <[u8; 8]>::try_from(&p[..]) {
                            let sent_us = u64::from_be_bytes(b);
                            let now_us = started.elapsed().as_micros() as u64;
                            self.ping_ms = Some(now_us.saturating_sub(sent_us) as f64 / 1e3);
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                    Some(Ok(_)) => {}
                },
                e = events.recv() => match e {
                    Some(ClientEvent::Json(t)) => {
                        self.hub.stats.events_sent.fetch_add(1, Relaxed);
                        conn.text(t.to_string()).await?;
                    }
                    Some(ClientEvent::Ctrl(ctrl)) => self.on_ctrl(conn, watching, ctrl).await?,
                    None => return Ok(()),
                },
                r = watching.frames.changed() => {
                    if r.is_err() {
                        // The channel was dropped: follow its successor.
                        let id = watching.channel.id.clone();
                        *watching = Watching::new(&self.hub, &id);
                        watching.snapshot(conn, true).await?;
                    } else {
                        watching.newest(conn).await?;
                    }
                }
                _ = ping.tick() => {
                    let us = started.elapsed().as_micros() as u64;
                    conn.send(Message::Ping(us.to_be_bytes().to_vec().into())).await?;
                }
                _ = heartbeat.tick() => self.announce().await,
            }
        }
    }

    /// Tell the client its state and give it its channel's snapshot;
    /// announce it.
    async fn state_changed(&mut self, conn: &mut Conn, watching: &mut Watching) -> Result<(), Cut> {
        let state = self.machine.state().clone();
        let channel = state.channel();
        let offered = match &state {
            crate::channels::client_state::State::FollowingPrivateReplay { offered, .. } => {
                offered.as_ref().map(|g| g.to_string())
            }
            _ => None,
        };
        conn.event(&Event::State {
            state: state.name().into(),
            channel_id: channel.to_string(),
            offered,
            live_override: matches!(state, crate::channels::client_state::State::LiveOverride(_)),
        })
        .await?;
        if channel != watching.channel.id || watching.seq == 0 {
            *watching = Watching::new(&self.hub, &channel);
            self.hub.moved(self.id, &channel);
            watching.snapshot(conn, true).await?;
        }
        self.announce().await;
        Ok(())
    }

    async fn apply(
        &mut self,
        conn: &mut Conn,
        watching: &mut Watching,
        e: MachineEvent,
    ) -> Result<(), Cut> {
        if self.machine.apply(e) {
            self.state_changed(conn, watching).await?;
        }
        Ok(())
    }

    async fn on_ctrl(
        &mut self,
        conn: &mut Conn,
        watching: &mut Watching,
        ctrl: Ctrl,
    ) -> Result<(), Cut> {
        let e = match ctrl {
            Ctrl::Start(s) => ChannelId::parse(&s.channel_id)
                .ok()
                .map(MachineEvent::GroupReplayStart),
            Ctrl::Stop(s) => ChannelId::parse(&s.channel_id)
                .ok()
                .map(MachineEvent::GroupReplayStop),
            _ => None,
        };
        match e {
            Some(e) => self.apply(conn, watching, e).await,
            None => Ok(()),
        }
    }

    /// The heartbeat on `tspi.ops.status` (fire and forget: a missed one
    /// is replaced by the next).
    async fn announce(&self) {
        let ts = RecvTime::now().iso().as_str().to_owned();
        let mut h = self.machine.heartbeat(&self.client_id, ts);
        h.ping_ms = self.ping_ms;
        h.source_ip = self.peer.map(|p| p.ip().to_string());
        h.operator = self.operator.then(|| self.client_id.clone());
        let _ = self
            .hub
            .nats
            .publish(
                crate::contract::names::SUBJECT_STATUS,
                message::to_cbor(&h).into(),
            )
            .await;
    }

    async fn on_text(
        &mut self,
        conn: &mut Conn,
        watching: &mut Watching,
        text: &str,
    ) -> Result<(), Cut> {
        let msg = match ClientMsg::parse(text) {
            Ok(m) => m,
            Err(reason) => {
                self.hub.stats.actions_refused.fetch_add(1, Relaxed);
                return conn.event(&Event::Error { reason }).await;
            }
        };
        match msg {
            ClientMsg::Auth { token } => {
                self.operator = protocol::token_ok(&token, &self.hub.opts.operator_tokens);
                self.token = self.operator.then_some(token);
                conn.event(&Event::Hello {
                    protocol: protocol::PROTOCOL_VERSION,
                    client_id: self.client_id.clone(),
                    operator: self.operator,
                })
                .await?;
                self.announce().await;
                Ok(())
            }
            ClientMsg::BackToLive => {
                let before = self.machine.state().clone();
                self.apply(conn, watching, MachineEvent::BackToLive).await?;
                if before != *self.machine.state() {
                    self.hub
                        .log(format!("client {} went back to live", self.client_id));
                }
                Ok(())
            }
            ClientMsg::JoinGroup => self.apply(conn, watching, MachineEvent::JoinGroup).await,
            ClientMsg::FollowPrivate { channel_id } => match ChannelId::parse(&channel_id) {
                Ok(id @ ChannelId::Client { .. }) => {
                    self.apply(conn, watching, MachineEvent::StartPrivate(id))
                        .await
                }
                _ => {
                    conn.event(&Event::Error {
                        reason: format!("{channel_id:?} is not a private replay channel"),
                    })
                    .await
                }
            },
            ClientMsg::TrackDetail { id } => {
                let channel = watching.channel.clone();
                let detail = channel
                    .table
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .detail_json(&id, now_ms());
                match detail {
                    Some(text) => conn.text(text).await,
                    None => {
                        conn.event(&Event::Error {
                            reason: format!("no track {id:?} on channel {}", channel.id),
                        })
                        .await
                    }
                }
            }
            ClientMsg::Action(a) => {
                if !self.operator {
                    self.hub.stats.actions_refused.fetch_add(1, Relaxed);
                    return conn
                        .event(&Event::Error {
                            reason: "viewers cannot act: present an operator token (auth)".into(),
                        })
                        .await;
                }
                let what = super::actions::describe(&a);
                let token = self.token.clone();
                match super::actions::carry_out(&self.hub, &self.client_id, token.as_deref(), a)
                    .await
                {
                    Ok(done) => {
                        self.hub.stats.actions.fetch_add(1, Relaxed);
                        self.hub.log(format!("{} by {}", done.what, self.client_id));
                        conn.event(&Event::Done { what: done.what }).await?;
                        match done.follow {
                            Some(super::actions::Follow::Started(c)) => {
                                self.apply(conn, watching, MachineEvent::StartPrivate(c))
                                    .await
                            }
                            Some(super::actions::Follow::Ended) => {
                                self.apply(conn, watching, MachineEvent::PrivateEnded).await
                            }
                            None => Ok(()),
                        }
                    }
                    Err(e) => {
                        self.hub.stats.actions_refused.fetch_add(1, Relaxed);
                        conn.event(&Event::Error {
                            reason: format!("{what}: {e:#}"),
                        })
                        .await
                    }
                }
            }
        }
    }
}
