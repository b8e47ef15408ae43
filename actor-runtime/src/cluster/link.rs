//! The node-to-node link: request/response between cluster members over the same
//! ractor_cluster sessions as membership, with opaque byte payloads. One request is one frame
//! (a cast to the peer's member actor) and its reply is one frame back, matched by a
//! correlation id; a request to a member declared dead, pending or new, fails at once with an
//! error naming the node. Each peer's messages and bytes are counted both ways.
//!
//! What a frame carries: the payload, then a trailer (sender's node name, kind, correlation id,
//! name length), so encoding appends to the caller's buffer and decoding truncates it: the
//! payload is never copied by this layer.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::RwLock;
use ractor::ActorCell;
use tokio::sync::oneshot;

use super::wire::MemberMsg;
use super::{ClusterError, DownReason};
use crate::limits::CLUSTER_LINK_PAYLOAD_BYTES_MAX;

/// A boxed reply future of a [`LinkHandler`].
pub type LinkReply = Pin<Box<dyn Future<Output = Vec<u8>> + Send + 'static>>;

/// Answers one request: called with the requesting node's name and the request's payload, its
/// future's output is the reply's payload. Installed with `Cluster::serve`.
pub type LinkHandler = Arc<dyn Fn(String, Vec<u8>) -> LinkReply + Send + Sync>;

/// What one frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameKind {
    Request = 1,
    Reply = 2,
    /// The peer could not answer the request; the payload is the reason, as UTF-8 text.
    Failed = 3,
}

/// One link message between two nodes.
#[derive(Debug)]
pub(crate) struct LinkFrame {
    pub kind: FrameKind,
    /// Chosen by the requesting node, unique among its requests; a reply carries its request's.
    pub id: u64,
    /// The sending node's name.
    pub from: String,
    pub payload: Vec<u8>,
}

/// Bytes of the trailer besides the sender's name: kind (1), id (8), name length (2).
const TRAILER_FIXED_BYTES: usize = 11;

impl LinkFrame {
    /// The size of the encoded frame: what the link counts as sent and received.
    pub fn encoded_len(&self) -> usize {
        self.payload.len() + self.from.len() + TRAILER_FIXED_BYTES
    }

    /// The frame as bytes: the payload with the trailer appended in place.
    pub fn encode(self) -> Vec<u8> {
        let mut bytes = self.payload;
        bytes.reserve(self.from.len() + TRAILER_FIXED_BYTES);
        bytes.extend_from_slice(self.from.as_bytes());
        bytes.push(self.kind as u8);
        bytes.extend_from_slice(&self.id.to_be_bytes());
        // Node names are at most `CLUSTER_NODE_NAME_LEN_MAX_BYTES` (255), so they fit.
        bytes.extend_from_slice(&(self.from.len() as u16).to_be_bytes());
        bytes
    }

    /// Reads a frame back; `None` if the bytes are not one.
    pub fn decode(mut bytes: Vec<u8>) -> Option<LinkFrame> {
        let fixed_at = bytes.len().checked_sub(TRAILER_FIXED_BYTES)?;
        let trailer = &bytes[fixed_at..];
        let kind = match trailer[0] {
            1 => FrameKind::Request,
            2 => FrameKind::Reply,
            3 => FrameKind::Failed,
            _ => return None,
        };
        let id = u64::from_be_bytes(trailer[1..9].try_into().ok()?);
        let name_len = u16::from_be_bytes(trailer[9..11].try_into().ok()?) as usize;
        let name_at = fixed_at.checked_sub(name_len)?;
        let from = std::str::from_utf8(&bytes[name_at..fixed_at])
            .ok()?
            .to_string();
        bytes.truncate(name_at);
        Some(LinkFrame {
            kind,
            id,
            from,
            payload: bytes,
        })
    }
}

/// The link traffic exchanged with one peer since this node started. Bytes are whole link
/// frames (payload and trailer: the sender's name plus 11 bytes), requests and replies alike;
/// ractor_cluster's own framing and TCP are not counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerLinkStats {
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub messages_received: u64,
    pub bytes_received: u64,
}

#[derive(Default)]
struct PeerCounters {
    messages_sent: AtomicU64,
    bytes_sent: AtomicU64,
    messages_received: AtomicU64,
    bytes_received: AtomicU64,
}

/// A request waiting for its reply.
struct Pending {
    node: String,
    reply: oneshot::Sender<Result<Vec<u8>, ClusterError>>,
}

/// The link state of one node, shared by the member actor (which receives frames and learns
/// which peers are up) and the `Cluster` handle (which sends requests).
pub(crate) struct Link {
    node_name: String,
    pub timeout: Duration,
    next_id: AtomicU64,
    pending: DashMap<u64, Pending>,
    /// The member actor of every admitted, live peer: where its frames go.
    routes: DashMap<String, ActorCell>,
    handler: RwLock<Option<LinkHandler>>,
    stats: DashMap<String, PeerCounters>,
}

impl Link {
    pub fn new(node_name: String, timeout: Duration) -> Link {
        Link {
            node_name,
            timeout,
            next_id: AtomicU64::new(0),
            pending: DashMap::new(),
            routes: DashMap::new(),
            handler: RwLock::new(None),
            stats: DashMap::new(),
        }
    }

    pub fn set_handler(&self, handler: LinkHandler) {
        *self.handler.write() = Some(handler);
    }

    /// `node` was admitted (or heard from again): its frames go to `cell`. If it was admitted
    /// over another session (a restarted node whose old session has not closed yet), the
    /// requests sent to the old one are never answered: they fail now.
    pub fn peer_up(&self, node: &str, cell: ActorCell) {
        let new_id = cell.get_id();
        let old = self.routes.insert(node.to_string(), cell);
        if old.is_some_and(|old| old.get_id() != new_id) {
            self.fail_pending(node, &DownReason::Disconnected);
        }
    }

    /// `node` was declared dead: no new request goes to it, and every request waiting for it
    /// fails now with `reason`.
    pub fn peer_down(&self, node: &str, reason: &DownReason) {
        // Removing the route first: a request that registers after the scan below finds no
        // route, one that registered before it is failed by the scan.
        self.routes.remove(node);
        self.fail_pending(node, reason);
    }

    fn fail_pending(&self, node: &str, reason: &DownReason) {
        let waiting: Vec<u64> = self
            .pending
            .iter()
            .filter(|p| p.node == node)
            .map(|p| *p.key())
            .collect();
        for id in waiting {
            if let Some((_, pending)) = self.pending.remove(&id) {
                let error = ClusterError::PeerDown {
                    node: node.to_string(),
                    reason: reason.clone(),
                };
                let _ = pending.reply.send(Err(error));
            }
        }
    }

    fn count(&self, node: &str, bytes: usize, sent: bool) {
        let bytes = bytes as u64;
        let add = |counters: &PeerCounters| {
            let (messages, total) = if sent {
                (&counters.messages_sent, &counters.bytes_sent)
            } else {
                (&counters.messages_received, &counters.bytes_received)
            };
            messages.fetch_add(1, Ordering::Relaxed);
            total.fetch_add(bytes, Ordering::Relaxed);
        };
        match self.stats.get(node) {
            Some(counters) => add(&counters),
            None => add(&self.stats.entry(node.to_string()).or_default()),
        }
    }

    /// Every peer's counters, by node name.
    pub fn stats(&self) -> BTreeMap<String, PeerLinkStats> {
        self.stats
            .iter()
            .map(|entry| {
                let c = entry.value();
                let stats = PeerLinkStats {
                    messages_sent: c.messages_sent.load(Ordering::Relaxed),
                    bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
                    messages_received: c.messages_received.load(Ordering::Relaxed),
                    bytes_received: c.bytes_received.load(Ordering::Relaxed),
                };
                (entry.key().clone(), stats)
            })
            .collect()
    }

    /// Sends `payload` to `node` and waits for its reply, at most `timeout`.
    pub async fn request(
        &self,
        node: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, ClusterError> {
        if node == self.node_name {
            return Err(ClusterError::RequestToSelf {
                node: node.to_string(),
            });
        }
        if payload.len() > CLUSTER_LINK_PAYLOAD_BYTES_MAX {
            return Err(ClusterError::PayloadTooLarge {
                node: node.to_string(),
                bytes: payload.len(),
                max: CLUSTER_LINK_PAYLOAD_BYTES_MAX,
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            node: node.to_string(),
            reply,
        };
        // Registered before the route is looked up: see `peer_down`.
        self.pending.insert(id, pending);
        if let Err(e) = self.send_request(node, id, payload) {
            self.pending.remove(&id);
            return Err(e);
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClusterError::Stopped {
                node: node.to_string(),
            }),
            Err(_) => {
                self.pending.remove(&id);
                Err(ClusterError::RequestTimeout {
                    node: node.to_string(),
                    waited: timeout,
                })
            }
        }
    }

    fn send_request(&self, node: &str, id: u64, payload: Vec<u8>) -> Result<(), ClusterError> {
        let unavailable = || ClusterError::PeerUnavailable {
            node: node.to_string(),
        };
        let route = self.routes.get(node).map(|r| r.value().clone());
        let route = route.ok_or_else(unavailable)?;
        let frame = LinkFrame {
            kind: FrameKind::Request,
            id,
            from: self.node_name.clone(),
            payload,
        };
        self.count(node, frame.encoded_len(), true);
        route
            .send_message::<MemberMsg>(MemberMsg::Link(frame))
            .map_err(|_| unavailable())
    }

    /// Whether `frame` is a request from a node without a route, which `on_frame` answers over
    /// a fallback cell.
    pub fn needs_fallback(&self, frame: &LinkFrame) -> bool {
        frame.kind == FrameKind::Request && !self.routes.contains_key(&frame.from)
    }

    /// A frame arrived from a peer. `fallback` is where to answer a request from a node this
    /// one has not admitted (yet): it is told so.
    pub fn on_frame(self: &Arc<Self>, frame: LinkFrame, fallback: Option<ActorCell>) {
        self.count(&frame.from, frame.encoded_len(), false);
        match frame.kind {
            FrameKind::Request => self.serve(frame, fallback),
            FrameKind::Reply | FrameKind::Failed => self.on_reply(frame),
        }
    }

    fn on_reply(&self, frame: LinkFrame) {
        let Some((_, pending)) = self
            .pending
            .remove_if(&frame.id, |_, p| p.node == frame.from)
        else {
            // Its request timed out, or its node was declared dead, before it arrived.
            tracing::debug!(node = %frame.from, id = frame.id, "late link reply dropped");
            return;
        };
        let result = match frame.kind {
            FrameKind::Failed => Err(ClusterError::RemoteFailed {
                node: frame.from,
                reason: String::from_utf8_lossy(&frame.payload).into_owned(),
            }),
            _ => Ok(frame.payload),
        };
        let _ = pending.reply.send(result);
    }

    /// Runs the handler on its own task and sends the reply (or why there is none) back.
    fn serve(self: &Arc<Self>, frame: LinkFrame, fallback: Option<ActorCell>) {
        let route = self.routes.get(&frame.from).map(|r| r.value().clone());
        let handler = self.handler.read().clone();
        let link = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let (from, id, bytes) = (frame.from, frame.id, frame.payload.len());
            let outcome = match (&route, handler) {
                (None, _) => Err(format!(
                    "node `{}` has not admitted node `{from}` as a member (yet)",
                    link.node_name
                )),
                (Some(_), None) => Err(format!(
                    "node `{}` serves no link requests (no handler installed)",
                    link.node_name
                )),
                (Some(_), Some(handler)) => run_handler(handler, from.clone(), frame.payload).await,
            };
            let frame = link.reply_frame(id, outcome);
            tracing::debug!(
                node = %from, id, bytes, reply_bytes = frame.payload.len(),
                elapsed_us = started.elapsed().as_micros() as u64, "link request served"
            );
            let Some(cell) = route.or(fallback) else {
                return;
            };
            link.count(&from, frame.encoded_len(), true);
            // A requester that went away meanwhile no longer waits for this reply.
            let _ = cell.send_message::<MemberMsg>(MemberMsg::Link(frame));
        });
    }

    fn reply_frame(&self, id: u64, outcome: Result<Vec<u8>, String>) -> LinkFrame {
        let (kind, payload) = match outcome {
            Ok(reply) if reply.len() <= CLUSTER_LINK_PAYLOAD_BYTES_MAX => (FrameKind::Reply, reply),
            Ok(reply) => (
                FrameKind::Failed,
                format!(
                    "the reply of {} bytes exceeds the link's limit of \
                     {CLUSTER_LINK_PAYLOAD_BYTES_MAX} bytes",
                    reply.len()
                )
                .into_bytes(),
            ),
            Err(reason) => (FrameKind::Failed, reason.into_bytes()),
        };
        LinkFrame {
            kind,
            id,
            from: self.node_name.clone(),
            payload,
        }
    }
}

/// Runs `handler` on a task of its own, so a panic in it becomes an error reply instead of a
/// request that is never answered.
async fn run_handler(
    handler: LinkHandler,
    from: String,
    payload: Vec<u8>,
) -> Result<Vec<u8>, String> {
    tokio::spawn(handler(from, payload))
        .await
        .map_err(|e| format!("the link handler failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_decodes_to_what_was_encoded() {
        for (kind, from, payload) in [
            (FrameKind::Request, "n1", vec![1, 2, 3]),
            (FrameKind::Reply, "node-with-a-longer-name", Vec::new()),
            (FrameKind::Failed, "", b"why".to_vec()),
        ] {
            let frame = LinkFrame {
                kind,
                id: 0x0102_0304_0506_0708,
                from: from.to_string(),
                payload: payload.clone(),
            };
            let len = frame.encoded_len();
            let bytes = frame.encode();
            assert_eq!(bytes.len(), len);
            let back = LinkFrame::decode(bytes).expect("a frame");
            assert_eq!(
                (back.kind, back.id, back.from.as_str(), back.payload),
                (kind, 0x0102_0304_0506_0708, from, payload)
            );
        }
    }

    #[test]
    fn bytes_that_are_not_a_frame_are_refused() {
        assert!(LinkFrame::decode(vec![0; TRAILER_FIXED_BYTES - 1]).is_none());
        let mut bad_kind = vec![9];
        bad_kind.extend_from_slice(&[0; 10]);
        assert!(LinkFrame::decode(bad_kind).is_none());
        let mut name_too_long = vec![1];
        name_too_long.extend_from_slice(&[0; 8]);
        name_too_long.extend_from_slice(&200u16.to_be_bytes());
        assert!(LinkFrame::decode(name_too_long).is_none());
    }
}
