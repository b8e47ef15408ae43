//! The application's partitions spread over the nodes of `vmsdb node --spread-partitions`: the
//! sequencer's runtime drives the epochs over a placement of the live members
//! (`RuntimeConfig::cluster`), and every node answers the phase batches of its partitions with
//! a `PartitionHost`. Both kinds of link request, the forwarding messages (`forward.rs`) and
//! the phase batches, reach the node's one link handler, told apart by a trailing tag byte
//! (appended and removed in place, so a batch's bytes are never copied for it).
//!
//! Each runtime the sequencer starts is a new **generation** (a number that only grows): its
//! link sends a node `LinkMessage::Place` before its first batch there, and tags every batch
//! with the generation. A node drops the partitions of an older generation when a newer one is
//! placed, and refuses a batch of any other generation than the one it hosts, so a replaced
//! runtime's late batches are never applied to the new runtime's partitions.
//!
//! A placement may **keep** state: the partitions the older generation placed on a node and
//! the new one leaves there keep theirs (`PartitionHost::re_place`), so a take-over reloads
//! only the partitions that move; the new runtime's recovery checks each kept partition
//! against its replay of the log and refuses to start if one differs, and the sequencer then
//! places the partitions again keeping none.

use crate::forward::{LinkAnswer, LinkMessage, decode, encode_message};
use std::collections::BTreeSet;
use std::sync::Arc;
use txn::cluster::Cluster;
use txn::node_link::LinkFuture;
use txn::{App, AppDef, LinkError, NodeLink, PartitionHost};

/// Trailing tag of a forwarding message (`LinkMessage`).
pub const TAG_FORWARD: u8 = 1;
/// Trailing tag of a phase batch, which is followed by its generation (8 bytes, little end).
pub const TAG_PHASE: u8 = 2;

/// A link request, told apart by its trailing tag (removed, with the generation).
pub enum Incoming {
    Forward(Vec<u8>),
    Phase {
        generation: u64,
        batch: Vec<u8>,
    },
    /// No known tag: the sender runs another version.
    Unknown,
}

/// Splits a request received on the link: drops the tag (and a batch's generation) from the
/// end of `bytes`, in place.
pub fn split(mut bytes: Vec<u8>) -> Incoming {
    match bytes.pop() {
        Some(TAG_FORWARD) => Incoming::Forward(bytes),
        Some(TAG_PHASE) if bytes.len() >= 8 => {
            let at = bytes.len() - 8;
            let mut generation = [0; 8];
            generation.copy_from_slice(&bytes[at..]);
            bytes.truncate(at);
            Incoming::Phase {
                generation: u64::from_le_bytes(generation),
                batch: bytes,
            }
        }
        _ => Incoming::Unknown,
    }
}

/// A new generation number: the wall clock in nanoseconds, so a runtime started after another
/// (on any node whose clock is roughly right) has a higher one.
pub fn new_generation() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(1, |d| d.as_nanos() as u64)
}

/// The sequencer runtime's link to the other nodes' hosts: places its partitions on a node
/// before the first batch it sends there, and tags every batch with its generation.
pub struct HostLink {
    cluster: Arc<Cluster>,
    generation: u64,
    owners: Vec<String>,
    /// Whether the nodes keep the state of the partitions they go on holding.
    keep: bool,
    /// The nodes that took this generation's placement.
    placed: parking_lot::Mutex<BTreeSet<String>>,
}

impl HostLink {
    pub fn new(cluster: Arc<Cluster>, generation: u64, owners: Vec<String>, keep: bool) -> Self {
        HostLink {
            cluster,
            generation,
            owners,
            keep,
            placed: parking_lot::Mutex::new(BTreeSet::new()),
        }
    }

    /// Tells `node` the placement, once per generation.
    async fn place(&self, node: &str) -> Result<(), LinkError> {
        if self.placed.lock().contains(node) {
            return Ok(());
        }
        let failed = |reason: String| LinkError::Failed {
            node: node.to_string(),
            reason,
        };
        let message = encode_message(&LinkMessage::Place {
            generation: self.generation,
            owners: self.owners.clone(),
            keep: self.keep,
        });
        let reply = self.cluster.request(node, message).await;
        let reply = reply.map_err(|e| failed(e.to_string()))?;
        match decode::<LinkAnswer>(&reply).map_err(failed)? {
            LinkAnswer::Placed => {
                self.placed.lock().insert(node.to_string());
                Ok(())
            }
            other => Err(failed(format!("the placement was refused: {other:?}"))),
        }
    }
}

impl NodeLink for HostLink {
    fn request<'a>(&'a self, node: &'a str, mut bytes: Vec<u8>) -> LinkFuture<'a> {
        Box::pin(async move {
            self.place(node).await?;
            bytes.extend_from_slice(&self.generation.to_le_bytes());
            bytes.push(TAG_PHASE);
            NodeLink::request(&*self.cluster, node, bytes).await
        })
    }
}

/// This node's partitions of the current generation, if any.
pub struct Hosts<A: App> {
    app: Arc<AppDef<A>>,
    node: String,
    current: tokio::sync::Mutex<Option<(u64, Arc<PartitionHost<A>>)>>,
}

impl<A: App> Hosts<A> {
    pub fn new(app: Arc<AppDef<A>>, node: &str) -> Self {
        Hosts {
            app,
            node: node.to_string(),
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// Hosts the partitions `owners` gives this node for `generation`, dropping an older
    /// generation's (with `keep`, the partitions both give this node keep their state);
    /// refuses a generation older than the one hosted.
    pub async fn place(&self, generation: u64, owners: &[String], keep: bool) -> LinkAnswer {
        let mut current = self.current.lock().await;
        match &*current {
            Some((hosted, _)) if *hosted > generation => {
                return LinkAnswer::StalePlacement { current: *hosted };
            }
            Some((hosted, _)) if *hosted == generation => return LinkAnswer::Placed,
            _ => {}
        }
        let started = match current.take() {
            Some((_, old)) => {
                let host = match keep {
                    true => old.re_place(owners).await,
                    false => PartitionHost::start(self.app.clone(), &self.node, owners),
                };
                old.stop().await;
                host
            }
            None => PartitionHost::start(self.app.clone(), &self.node, owners),
        };
        match started {
            Ok(host) => {
                *current = Some((generation, Arc::new(host)));
                LinkAnswer::Placed
            }
            Err(e) => LinkAnswer::Undecodable(format!("cannot host the placement: {e}")),
        }
    }

    /// Answers a phase batch of `generation`; a batch of another generation than the hosted
    /// one gets an empty reply, which its driver refuses as undecodable (it fails its epoch).
    pub async fn handle(&self, generation: u64, batch: Vec<u8>) -> Vec<u8> {
        let host = match &*self.current.lock().await {
            Some((hosted, host)) if *hosted == generation => host.clone(),
            other => {
                let hosted = other.as_ref().map(|(g, _)| *g);
                tracing::warn!(
                    generation,
                    ?hosted,
                    "refused a phase batch of another runtime"
                );
                return Vec::new();
            }
        };
        host.handle(batch).await
    }

    /// Drops every hosted partition (this node now runs the runtime itself).
    pub async fn drop_all(&self) {
        if let Some((_, old)) = self.current.lock().await.take() {
            old.stop().await;
        }
    }
}
