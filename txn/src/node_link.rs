//! The link between the node that drives epochs and the nodes that hold the other partitions:
//! one request (an encoded `PhaseBatch`) and one reply (an encoded `PhaseReply`) per node per
//! phase. [`NodeLink`] hides the transport: the cluster's link (`actor_runtime::cluster`, with
//! the `cluster` feature) between processes, or [`LoopbackLink`] between hosts of one process
//! (tests, one-process "clusters"), which still carries the encoded bytes so the wire form is
//! exercised.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The future of one request's reply.
pub type LinkFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, LinkError>> + Send + 'a>>;

/// What answers a node's requests on a [`LoopbackLink`]: the encoded request in, the encoded
/// reply out (e.g. `PartitionHost::handle`).
pub type LoopbackHandler =
    Arc<dyn Fn(Vec<u8>) -> Pin<Box<dyn Future<Output = Vec<u8>> + Send>> + Send + Sync>;

/// Why a request to a node got no reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The link has no such node (never added, or removed).
    #[error("no link to node {node:?}")]
    UnknownNode { node: String },
    /// The transport failed or the node did not answer in time; the message says which.
    #[error("request to node {node:?} failed: {reason}")]
    Failed { node: String, reason: String },
}

/// Request/response to other nodes by name. Each call is one request and one reply.
pub trait NodeLink: Send + Sync + 'static {
    /// Sends `bytes` to `node` and returns its reply. May wait forever if the node never
    /// answers: the caller bounds the wait.
    fn request<'a>(&'a self, node: &'a str, bytes: Vec<u8>) -> LinkFuture<'a>;
}

/// An in-process link: each node is a handler in this process, called with the request's bytes.
#[derive(Clone, Default)]
pub struct LoopbackLink {
    nodes: Arc<parking_lot::RwLock<BTreeMap<String, Node>>>,
}

#[derive(Clone)]
struct Node {
    handler: LoopbackHandler,
    /// A silenced node takes requests and never answers (a hung process, for tests).
    silent: bool,
}

impl LoopbackLink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets `node` answer requests with `handler` (replacing any previous one).
    pub fn add_node<F, Fut>(&self, node: &str, handler: F)
    where
        F: Fn(Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<u8>> + Send + 'static,
    {
        let handler: LoopbackHandler = Arc::new(move |bytes| Box::pin(handler(bytes)));
        let entry = Node {
            handler,
            silent: false,
        };
        self.nodes.write().insert(node.to_string(), entry);
    }

    /// From now on `node` takes requests and never answers them, like a hung process.
    pub fn silence(&self, node: &str) {
        if let Some(entry) = self.nodes.write().get_mut(node) {
            entry.silent = true;
        }
    }
}

impl NodeLink for LoopbackLink {
    fn request<'a>(&'a self, node: &'a str, bytes: Vec<u8>) -> LinkFuture<'a> {
        let entry = self.nodes.read().get(node).cloned();
        Box::pin(async move {
            let Some(entry) = entry else {
                return Err(LinkError::UnknownNode {
                    node: node.to_string(),
                });
            };
            if entry.silent {
                return std::future::pending().await;
            }
            Ok((entry.handler)(bytes).await)
        })
    }
}

#[cfg(feature = "cluster")]
impl NodeLink for actor_runtime::cluster::Cluster {
    fn request<'a>(&'a self, node: &'a str, bytes: Vec<u8>) -> LinkFuture<'a> {
        Box::pin(async move {
            actor_runtime::cluster::Cluster::request(self, node, bytes)
                .await
                .map_err(|e| LinkError::Failed {
                    node: node.to_string(),
                    reason: e.to_string(),
                })
        })
    }
}
