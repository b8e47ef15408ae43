//! Placement: which node hosts each actor, by rendezvous (highest-random-weight) hashing.
//!
//! Every node gets a pseudo-random weight for every actor; the actor lives on the live node with
//! the highest weight. When a node joins, it takes exactly the actors for which it now has the
//! top weight (about `1/n` of them) and nothing else moves; when a node leaves, only its actors
//! move, each to its second-best node. No coordination or stored table is needed: every process
//! that knows the same node set computes the same placement.
//!
//! In this crate every actor still runs in the local process, whatever the directory says. The
//! directory is the piece multi-node mode uses later to route a partition's batch to its node and
//! to reassign partitions when nodes join or die.

use std::hash::Hasher;

use parking_lot::RwLock;

use crate::id::{ActorId, NodeId, StableHasher};
use crate::limits::N_NODES_MAX;

/// The live node set and the placement function over it.
///
/// Reads take a shared lock on the node list (membership changes are rare); sending a message to
/// a local actor never consults the directory.
#[derive(Debug)]
pub struct Directory {
    /// Sorted, without duplicates, never empty.
    nodes: RwLock<Vec<NodeId>>,
}

impl Directory {
    /// A directory over `local` plus `others` (duplicates are ignored; the set is never empty).
    pub fn new(local: NodeId, others: impl IntoIterator<Item = NodeId>) -> Self {
        let mut nodes: Vec<NodeId> = std::iter::once(local).chain(others).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes.truncate(N_NODES_MAX);
        Self {
            nodes: RwLock::new(nodes),
        }
    }

    /// The node that hosts `id` under the current node set.
    pub fn node_of(&self, id: ActorId) -> NodeId {
        let nodes = self.nodes.read();
        nodes
            .iter()
            .copied()
            .max_by_key(|&node| (rendezvous_weight(node, id), node))
            .expect("the directory's node set is never empty")
    }

    /// Adds a live node. Returns whether the set changed (false if it was already present or the
    /// set is at `N_NODES_MAX`).
    pub fn add_node(&self, node: NodeId) -> bool {
        let mut nodes = self.nodes.write();
        match nodes.binary_search(&node) {
            Ok(_) => false,
            Err(_) if nodes.len() >= N_NODES_MAX => {
                tracing::warn!(%node, limit = N_NODES_MAX, "node set is full; node not added");
                false
            }
            Err(idx) => {
                nodes.insert(idx, node);
                tracing::info!(%node, n_nodes = nodes.len(), "node joined the placement directory");
                true
            }
        }
    }

    /// Removes a node (it left or died); its actors move to their next-best nodes. Returns whether
    /// the set changed. The last node is never removed, because every actor must live somewhere.
    pub fn remove_node(&self, node: NodeId) -> bool {
        let mut nodes = self.nodes.write();
        match nodes.binary_search(&node) {
            Err(_) => false,
            Ok(_) if nodes.len() == 1 => {
                tracing::warn!(%node, "refusing to remove the last node of the placement directory");
                false
            }
            Ok(idx) => {
                nodes.remove(idx);
                tracing::info!(%node, n_nodes = nodes.len(), "node left the placement directory");
                true
            }
        }
    }

    /// The live nodes, in ascending order.
    pub fn nodes(&self) -> Vec<NodeId> {
        self.nodes.read().clone()
    }

    /// Whether `node` is in the live set.
    pub fn contains(&self, node: NodeId) -> bool {
        self.nodes.read().binary_search(&node).is_ok()
    }
}

/// The weight node `node` has for actor `id`; the highest weight wins. Seedless (see
/// `StableHasher`), so every process agrees.
fn rendezvous_weight(node: NodeId, id: ActorId) -> u64 {
    let mut hasher = StableHasher::new();
    hasher.write_u32(node.0);
    hasher.write_u32(id.service.0);
    hasher.write_u32(id.partition);
    hasher.finish()
}
