//! Edge: what an operator's connection may do, carried out on NATS in the
//! contract's shapes (CONTRACT §4-5): display commands and tags with
//! `Nats-Msg-Id`, group replays through the channels service.

use super::Hub;
use super::protocol::Action;
use crate::channels::message::{self, GroupReplayRequest, PrivateReplayRequest, ReplayControl};
use crate::channels::service;
use crate::contract::message::ops;
use crate::contract::names;
use crate::message::RecvTime;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Display commands the contract names.
pub const DISPLAY_COMMANDS: [&str; 3] = ["units", "marker_color", "session_metadata"];
/// Longest tag label or note.
pub const TAG_TEXT_LEN_MAX: usize = 1024;
/// How long the channels service has to answer a replay request.
const SERVICE_WAIT: Duration = Duration::from_secs(10);

/// A short description of an action, for the operations log and errors.
pub fn describe(a: &Action) -> String {
    match a {
        Action::Display { name, .. } => format!("display command {name}"),
        Action::Tag { label, .. } => format!("tag {label:?}"),
        Action::GroupReplayStart { .. } => "group replay start".into(),
        Action::GroupReplayStop { channel_id } => format!("group replay stop {channel_id}"),
        Action::PrivateReplayStart { .. } => "private replay start".into(),
        Action::PrivateReplayStop { session_id } => format!("private replay stop {session_id}"),
        Action::ReplayControl {
            channel_id, action, ..
        } => format!("{} of {channel_id}", action.label()),
    }
}

/// An id no other action of this process has: the sender, the time, a
/// counter.
fn unique_id(sender: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{sender}-{:x}-{}",
        RecvTime::now().unix_ns,
        NEXT.fetch_add(1, Relaxed)
    )
}

fn iso_now() -> String {
    RecvTime::now().iso().as_str().to_owned()
}

/// Publish `body` on `subject` with `Nats-Msg-Id = id` (the `TSPI_OPS`
/// stream captures it once), and wait for the server to have it.
async fn publish(hub: &Hub, subject: String, id: &str, body: Vec<u8>) -> anyhow::Result<()> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    hub.nats
        .publish_with_headers(subject, headers, body.into())
        .await?;
    hub.nats.flush().await?;
    Ok(())
}

/// What an action did: a description, and the channel the connection now
/// follows (its own replay started or stopped).
#[derive(Debug)]
pub struct Done {
    pub what: String,
    pub follow: Option<Follow>,
}

/// A change of the connection's own private replay.
#[derive(Debug)]
pub enum Follow {
    Started(message::ChannelId),
    Ended,
}

impl From<String> for Done {
    fn from(what: String) -> Done {
        Done { what, follow: None }
    }
}

/// Carry out `a` for `sender` (a client id), whose operator token is
/// `token` (passed on to the channels service, which checks its own).
pub async fn carry_out(
    hub: &Hub,
    sender: &str,
    token: Option<&str>,
    a: Action,
) -> anyhow::Result<Done> {
    carry_out_inner(hub, sender, token, a).await
}

async fn carry_out_inner(
    hub: &Hub,
    sender: &str,
    token: Option<&str>,
    a: Action,
) -> anyhow::Result<Done> {
    match a {
        Action::Display { name, payload } => {
            anyhow::ensure!(
                DISPLAY_COMMANDS.contains(&name.as_str()),
                "unknown display command (one of {DISPLAY_COMMANDS:?})"
            );
            let cmd_id = unique_id(sender);
            let payload = ciborium::Value::serialized(&payload)?;
            let body = ops::encode_command(&cmd_id, &name, &iso_now(), sender, payload);
            publish(hub, format!("tspi.cmd.display.{name}"), &cmd_id, body).await?;
            Ok(format!("display command {name} ({cmd_id})").into())
        }
        Action::Tag { label, ts, notes } => {
            anyhow::ensure!(!label.is_empty(), "a tag needs a label");
            anyhow::ensure!(
                label.len() <= TAG_TEXT_LEN_MAX
                    && notes.as_ref().is_none_or(|n| n.len() <= TAG_TEXT_LEN_MAX),
                "label or notes over {TAG_TEXT_LEN_MAX} bytes"
            );
            let ts = match ts {
                Some(t) => {
                    crate::contract::message::rfc3339::parse_rfc3339_ns(&t)
                        .map_err(|e| anyhow::anyhow!("ts {t:?}: {e}"))?;
                    t
                }
                None => iso_now(),
            };
            let id = unique_id(sender);
            let body = ops::encode_tag(&ops::NewTag {
                id: id.clone(),
                ts,
                label: label.clone(),
                status: "active".into(),
                updated_ts: iso_now(),
                creator: Some(sender.to_owned()),
                notes,
                extra: None,
            });
            publish(hub, names::SUBJECT_TAGS.to_owned(), &id, body).await?;
            Ok(format!("tag {label:?} ({id})").into())
        }
        Action::GroupReplayStart {
            id,
            display_name,
            spec,
        } => {
            let channel =
                service::group_channel_id(id.as_deref(), &spec).map_err(|e| anyhow::anyhow!(e))?;
            let name = display_name.unwrap_or_else(|| channel.to_string());
            let mut req = GroupReplayRequest::new(&channel, name, spec);
            req.operator_token = token.map(str::to_owned);
            let started = service::request_group_replay(&hub.nats, &req, SERVICE_WAIT).await?;
            Ok(format!("group replay {} started", started.channel_id).into())
        }
        Action::GroupReplayStop { channel_id } => {
            message::ChannelId::parse(&channel_id).map_err(|e| anyhow::anyhow!("{e}"))?;
            service::stop_group_replay(
                &hub.nats,
                &channel_id,
                token.map(str::to_owned),
                SERVICE_WAIT,
            )
            .await?;
            Ok(format!("group replay {channel_id} stopped").into())
        }
        Action::PrivateReplayStart { session_id, spec } => {
            let session_id = session_id.unwrap_or_else(unique_session);
            let req = PrivateReplayRequest {
                kind: "PrivateReplayRequest".into(),
                client_id: sender.to_owned(),
                session_id,
                spec: Some(spec),
            };
            let reply = service::private_request(&hub.nats, &req, SERVICE_WAIT).await?;
            let channel = match (reply.ok, reply.channel_id) {
                (true, Some(c)) => {
                    message::ChannelId::parse(&c).map_err(|e| anyhow::anyhow!("{e}"))?
                }
                _ => anyhow::bail!(
                    "the channels service refused: {}",
                    reply.error.unwrap_or_else(|| "no reason given".into())
                ),
            };
            Ok(Done {
                what: format!("private replay {channel} started"),
                follow: Some(Follow::Started(channel)),
            })
        }
        Action::PrivateReplayStop { session_id } => {
            let req = PrivateReplayRequest {
                kind: "PrivateReplayStop".into(),
                client_id: sender.to_owned(),
                session_id: session_id.clone(),
                spec: None,
            };
            let reply = service::private_request(&hub.nats, &req, SERVICE_WAIT).await?;
            anyhow::ensure!(
                reply.ok,
                "the channels service refused: {}",
                reply.error.unwrap_or_else(|| "no reason given".into())
            );
            Ok(Done {
                what: format!("private replay {session_id} stopped"),
                follow: Some(Follow::Ended),
            })
        }
        Action::ReplayControl {
            channel_id,
            action,
            to,
            rate,
        } => {
            let channel =
                message::ChannelId::parse(&channel_id).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut req = ReplayControl::new(&channel, action);
            req.to = to;
            req.rate = rate;
            req.operator_token = token.map(str::to_owned);
            req.client_id = Some(sender.to_owned());
            let r = service::control_replay(&hub.nats, &req, SERVICE_WAIT).await?;
            anyhow::ensure!(
                r.ok,
                "the channels service refused: {}",
                r.error.unwrap_or_else(|| "no reason given".into())
            );
            Ok(format!("{} of {channel_id}", action.label()).into())
        }
    }
}

/// A session id for a private replay the client did not name.
fn unique_session() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "s{:x}{}",
        RecvTime::now().unix_ns % 1_000_000_007,
        NEXT.fetch_add(1, Relaxed)
    )
}
