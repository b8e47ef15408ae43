//! Cluster membership: nodes (processes) that join each other over ractor_cluster, authenticate
//! with a shared cookie, check that they run the same application, detect failed members by
//! heartbeats, and place partitions over the live members with the rendezvous `Directory`.
//!
//! Members exchange requests over the link (`link.rs`: `Cluster::request`, `Cluster::serve`),
//! one frame per request and one per reply, opaque bytes to this crate.
//!
//! What this does not do yet: run anything across nodes. The transaction layer still runs every
//! partition in one process; this is the membership and transport layer its multi-node epochs
//! will use.
//!
//! One node per process: ractor's process groups, through which peers find each other's member
//! actors, are global to the process.

mod link;
mod member;
mod placement;
mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorRef};
use ractor_cluster::node::{
    NodeConnectionMode, NodeEventSubscription, NodeServerSessionInformation,
};
use ractor_cluster::{NodeServer, NodeServerMessage};
use tokio::sync::broadcast;
use tracing::Instrument;

use crate::limits::{
    CLUSTER_EVENTS_CAPACITY, CLUSTER_FAILURE_TIMEOUT_DEFAULT_MS,
    CLUSTER_FAILURE_TIMEOUT_HEARTBEATS_MIN, CLUSTER_FRAME_BYTES_MAX,
    CLUSTER_HEARTBEAT_INTERVAL_DEFAULT_MS, CLUSTER_HEARTBEAT_INTERVAL_MIN_MS,
    CLUSTER_IDENTITY_BYTES_MAX, CLUSTER_JOIN_TIMEOUT_DEFAULT_MS, CLUSTER_NODE_NAME_LEN_MAX_BYTES,
    CLUSTER_REQUEST_TIMEOUT_DEFAULT_MS,
};
use link::Link;
use member::{MemberActor, MemberSettings};
use wire::{MemberMsg, SessionEvent};

pub use link::{LinkHandler, LinkReply, PeerLinkStats};
pub use placement::{node_id_of, place_partitions};

/// Compares this node's application identity (first) with a peer's (second) and names every
/// difference; empty when the peer may join. Opaque bytes to this crate: the transaction layer
/// passes its encoded store fingerprint and its difference list.
pub type IdentityCompare = Arc<dyn Fn(&[u8], &[u8]) -> Vec<String> + Send + Sync>;

/// The identity check for callers without a richer one: the bytes must be equal.
pub fn identical_bytes() -> IdentityCompare {
    Arc::new(|ours: &[u8], theirs: &[u8]| {
        if ours == theirs {
            Vec::new()
        } else {
            vec![format!(
                "application identity: {} bytes on this node, {} different bytes on the peer",
                ours.len(),
                theirs.len()
            )]
        }
    })
}

/// How a node joins a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Unique among the members; also the node's name in placement.
    pub node_name: String,
    /// Where this node accepts peers (an IP address and a port other than 0, since peers are
    /// told this address).
    pub listen: SocketAddr,
    /// Nodes to join; empty for the first node. Members the seeds know are joined too.
    pub seeds: Vec<SocketAddr>,
    /// The shared secret every member authenticates with; a peer with another is refused.
    pub cookie: String,
    /// Time between two heartbeats to each member.
    pub heartbeat_interval: Duration,
    /// A member silent this long is declared dead (`NodeDown`), even if its session stays open.
    pub failure_timeout: Duration,
    /// How long `Cluster::start` waits to be admitted through a seed.
    pub join_timeout: Duration,
    /// How long `Cluster::request` waits for a reply. A peer declared dead fails its requests
    /// at once; this bounds a live peer that is slow to answer.
    pub request_timeout: Duration,
    /// What this node runs, presented at join and compared by the peers' `IdentityCompare`.
    pub app_identity: Vec<u8>,
}

impl ClusterConfig {
    /// A first node (no seeds) with the default timings.
    pub fn new(
        node_name: impl Into<String>,
        listen: SocketAddr,
        cookie: impl Into<String>,
        app_identity: Vec<u8>,
    ) -> Self {
        ClusterConfig {
            node_name: node_name.into(),
            listen,
            seeds: Vec::new(),
            cookie: cookie.into(),
            heartbeat_interval: Duration::from_millis(CLUSTER_HEARTBEAT_INTERVAL_DEFAULT_MS),
            failure_timeout: Duration::from_millis(CLUSTER_FAILURE_TIMEOUT_DEFAULT_MS),
            join_timeout: Duration::from_millis(CLUSTER_JOIN_TIMEOUT_DEFAULT_MS),
            request_timeout: Duration::from_millis(CLUSTER_REQUEST_TIMEOUT_DEFAULT_MS),
            app_identity,
        }
    }

    /// Refuses settings the membership protocol cannot work with, naming the first one.
    pub fn validate(&self) -> Result<(), ClusterError> {
        let invalid = |why: String| Err(ClusterError::InvalidConfig(why));
        if self.node_name.is_empty() || self.node_name.len() > CLUSTER_NODE_NAME_LEN_MAX_BYTES {
            return invalid(format!(
                "node name must be 1 to {CLUSTER_NODE_NAME_LEN_MAX_BYTES} bytes, got {}",
                self.node_name.len()
            ));
        }
        if self.cookie.is_empty() {
            return invalid("the cookie is empty".into());
        }
        if self.listen.port() == 0 {
            return invalid("the listen port is 0: peers must be told a fixed port".into());
        }
        let heartbeat_min = Duration::from_millis(CLUSTER_HEARTBEAT_INTERVAL_MIN_MS);
        if self.heartbeat_interval < heartbeat_min {
            return invalid(format!(
                "heartbeat interval {:?} is below the minimum {heartbeat_min:?}",
                self.heartbeat_interval
            ));
        }
        if self.failure_timeout < self.heartbeat_interval * CLUSTER_FAILURE_TIMEOUT_HEARTBEATS_MIN {
            return invalid(format!(
                "failure timeout {:?} must be at least {CLUSTER_FAILURE_TIMEOUT_HEARTBEATS_MIN} \
                 heartbeat intervals ({:?})",
                self.failure_timeout, self.heartbeat_interval
            ));
        }
        if self.request_timeout.is_zero() {
            return invalid("the request timeout is zero: no reply could ever arrive".into());
        }
        if self.app_identity.len() > CLUSTER_IDENTITY_BYTES_MAX {
            return invalid(format!(
                "application identity is {} bytes, more than {CLUSTER_IDENTITY_BYTES_MAX}",
                self.app_identity.len()
            ));
        }
        Ok(())
    }
}

/// A live member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    /// The address it accepts peers on, as it announced it.
    pub listen: String,
}

/// Why a member was declared dead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DownReason {
    #[error("no heartbeat for {silent_for:?}")]
    HeartbeatTimeout { silent_for: Duration },
    #[error("its session closed")]
    Disconnected,
    #[error("it refused this node's application")]
    Refused,
}

/// A membership change, as seen by this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    /// `member` was admitted (or heard from again after being declared dead).
    NodeUp { member: Member },
    /// `node` is no longer a member.
    NodeDown { node: String, reason: DownReason },
    /// `node` runs another application: each difference is named. Sent on both sides.
    Refused {
        node: String,
        differences: Vec<String>,
    },
    /// A session to or from `peer_addr` closed before passing the cookie challenge (the cookies
    /// differ, or the peer is not a cluster node).
    Unauthenticated { peer_addr: String, outgoing: bool },
}

/// Why a node could not start or join.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid cluster configuration: {0}")]
    InvalidConfig(String),
    #[error("a cluster node is already running in this process (one node per process)")]
    AlreadyRunning,
    #[error("cannot listen for cluster peers on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting the cluster's {what} actor: {reason}")]
    Spawn { what: &'static str, reason: String },
    #[error("refused by node `{node}`, which runs another application: {}", differences.join("; "))]
    IdentityMismatch {
        node: String,
        differences: Vec<String>,
    },
    #[error("seed {seed} closed the session before it authenticated: the cluster cookies differ")]
    Unauthenticated { seed: String },
    #[error("not admitted by any seed ({seeds}) within {waited:?}")]
    JoinTimeout { seeds: String, waited: Duration },
    #[error("no link to node `{node}`: it is not a live member (never admitted, or declared dead)")]
    PeerUnavailable { node: String },
    #[error("node `{node}` was declared dead while a request to it waited: {reason}")]
    PeerDown { node: String, reason: DownReason },
    #[error("node `{node}` did not answer a request within {waited:?}")]
    RequestTimeout { node: String, waited: Duration },
    #[error("a request to node `{node}` of {bytes} bytes exceeds the link's limit of {max} bytes")]
    PayloadTooLarge {
        node: String,
        bytes: usize,
        max: usize,
    },
    #[error("node `{node}` could not answer the request: {reason}")]
    RemoteFailed { node: String, reason: String },
    #[error("`{node}` is this node: a request must go to another member")]
    RequestToSelf { node: String },
    #[error("this node stopped while a request to node `{node}` waited")]
    Stopped { node: String },
}

/// What the member actor and the handle share.
pub(crate) struct Shared {
    /// The live members, this node included, by name.
    pub members: DashMap<String, Member>,
    pub events: broadcast::Sender<ClusterEvent>,
    /// Requests and replies to and from the peers.
    pub link: Arc<Link>,
    /// The peers that told this node they refuse it (`PeerMessage::Refuse`), by name: a node
    /// whose join was refused waits for its seed's own refusal before it leaves, so the seed
    /// has seen (and reported) it, rather than leaving with its messages still unsent.
    pub refused_by: tokio::sync::watch::Sender<BTreeSet<String>>,
}

/// Set while a cluster node runs in this process.
static NODE_RUNNING: AtomicBool = AtomicBool::new(false);

/// A running cluster node. Dropping it stops the node without waiting.
pub struct Cluster {
    node_name: String,
    shared: Arc<Shared>,
    member: ActorRef<MemberMsg>,
    server: ActorRef<NodeServerMessage>,
    ticker: JoinHandle<()>,
    actor_tasks: Vec<JoinHandle<()>>,
}

/// Forwards the node server's session events to the member actor.
struct SessionForwarder {
    member: ActorRef<MemberMsg>,
}

impl NodeEventSubscription for SessionForwarder {
    fn node_session_opened(&self, _session: NodeServerSessionInformation) {}

    fn node_session_authenticated(&self, session: NodeServerSessionInformation) {
        let (peer, listen) = match session.peer_name {
            Some(name) => (member_name(name.name), name.connection_string),
            None => Default::default(),
        };
        let event = SessionEvent::Authenticated {
            session: session.node_id,
            peer,
            listen,
        };
        let _ = self.member.cast(MemberMsg::Session(event));
    }

    fn node_session_disconnected(&self, session: NodeServerSessionInformation) {
        let event = SessionEvent::Closed {
            session: session.node_id,
            peer_addr: session.peer_addr,
            outgoing: !session.is_server,
            peer: session.peer_name.map(|n| member_name(n.name)),
        };
        let _ = self.member.cast(MemberMsg::Session(event));
    }
}

/// ractor_cluster names a node `name@hostname`; members know each other by `name`.
fn member_name(full_name: String) -> String {
    match full_name.rsplit_once('@') {
        Some((name, _host)) => name.to_string(),
        None => full_name,
    }
}

fn spawn_error(what: &'static str) -> impl FnOnce(ractor::SpawnErr) -> ClusterError {
    move |e| ClusterError::Spawn {
        what,
        reason: e.to_string(),
    }
}

impl Cluster {
    /// Starts this node: listens on `config.listen`, joins the seeds (returning once a seed
    /// admitted it, or with the reason none did), and keeps the membership up to date until
    /// `shutdown`. `compare` decides which peers run the same application.
    pub async fn start(
        config: ClusterConfig,
        compare: IdentityCompare,
    ) -> Result<Cluster, ClusterError> {
        config.validate()?;
        if NODE_RUNNING.swap(true, Ordering::SeqCst) {
            return Err(ClusterError::AlreadyRunning);
        }
        let started = Self::start_node(&config, compare).await;
        let cluster = match started {
            Ok(cluster) => cluster,
            Err(e) => {
                NODE_RUNNING.store(false, Ordering::SeqCst);
                return Err(e);
            }
        };
        let mut events = cluster.subscribe();
        if let Err(e) = cluster.join_seeds(&config, &mut events).await {
            cluster.shutdown().await;
            return Err(e);
        }
        Ok(cluster)
    }

    async fn start_node(
        config: &ClusterConfig,
        compare: IdentityCompare,
    ) -> Result<Cluster, ClusterError> {
        // ractor_cluster's listener panics on a port it cannot bind; name the problem instead.
        drop(
            std::net::TcpListener::bind(config.listen).map_err(|source| ClusterError::Listen {
                addr: config.listen,
                source,
            })?,
        );
        let (events, _) = broadcast::channel(CLUSTER_EVENTS_CAPACITY);
        let link = Link::new(config.node_name.clone(), config.request_timeout);
        let shared = Arc::new(Shared {
            members: DashMap::new(),
            events,
            link: Arc::new(link),
            refused_by: tokio::sync::watch::Sender::new(Default::default()),
        });
        let this_node = Member {
            name: config.node_name.clone(),
            listen: config.listen.to_string(),
        };
        shared.members.insert(config.node_name.clone(), this_node);
        let settings = Arc::new(MemberSettings {
            node_name: config.node_name.clone(),
            listen: config.listen.to_string(),
            identity: config.app_identity.clone(),
            heartbeat_interval: config.heartbeat_interval,
            failure_timeout: config.failure_timeout,
            compare,
        });
        let actor = MemberActor {
            settings,
            shared: shared.clone(),
        };
        let (member, member_task) = Actor::spawn(None, actor, ())
            .await
            .map_err(spawn_error("member"))?;
        let server = NodeServer::new(
            config.listen.port(),
            config.cookie.clone(),
            config.node_name.clone(),
            config.listen.ip().to_string(),
            None,
            Some(NodeConnectionMode::Transitive),
        )
        .with_listen_addr(config.listen.ip())
        .with_max_inbound_frame_size(CLUSTER_FRAME_BYTES_MAX);
        let (server, server_task) = match Actor::spawn(None, server, ()).await {
            Ok(spawned) => spawned,
            Err(e) => {
                member.stop(None);
                return Err(spawn_error("node server")(e));
            }
        };
        let forwarder = SessionForwarder {
            member: member.clone(),
        };
        let _ = server.cast(NodeServerMessage::SubscribeToEvents {
            id: "vmsdb.cluster.members".into(),
            subscription: Box::new(forwarder),
        });
        let ticker =
            ractor::time::send_interval(config.heartbeat_interval, member.get_cell(), || {
                MemberMsg::Tick
            });
        Ok(Cluster {
            node_name: config.node_name.clone(),
            shared,
            member,
            server,
            ticker,
            actor_tasks: vec![member_task, server_task],
        })
    }

    /// Connects to the seeds and waits until one admits this node, refuses it, or the join
    /// timeout passes. Returns at once without seeds.
    async fn join_seeds(
        &self,
        config: &ClusterConfig,
        events: &mut broadcast::Receiver<ClusterEvent>,
    ) -> Result<(), ClusterError> {
        if config.seeds.is_empty() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + config.join_timeout;
        let timed_out = || ClusterError::JoinTimeout {
            seeds: seeds_text(&config.seeds),
            waited: config.join_timeout,
        };
        let n_connected = self
            .connect_seeds(config, deadline)
            .await
            .ok_or_else(timed_out)?;
        // Seeds whose session closed before authenticating. One such close is no proof of a
        // wrong cookie (a seed's member connecting back at the same moment makes one of the two
        // sessions close), so the join fails for it only once every seed connected did so.
        let mut unauthenticated = std::collections::BTreeSet::new();
        loop {
            let event = tokio::time::timeout_at(deadline, events.recv()).await;
            match event {
                Err(_) => return Err(timed_out()),
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(broadcast::error::RecvError::Closed)) => return Err(timed_out()),
                Ok(Ok(event)) => match join_outcome(event, &config.seeds) {
                    Some(Err(ClusterError::IdentityMismatch { node, differences })) => {
                        self.wait_refused_by(&node, deadline).await;
                        return Err(ClusterError::IdentityMismatch { node, differences });
                    }
                    Some(Err(ClusterError::Unauthenticated { seed })) => {
                        unauthenticated.insert(seed.clone());
                        if unauthenticated.len() >= n_connected {
                            return Err(ClusterError::Unauthenticated { seed });
                        }
                    }
                    Some(result) => return result,
                    None => {}
                },
            }
        }
    }

    /// Waits until `node` told this node it refuses it too, or `deadline`. A node that refused
    /// its seed first would otherwise leave at once, and shutting its sessions down drops the
    /// messages still queued on them, its greeting included: the seed would never learn (nor
    /// report) whom it refused.
    async fn wait_refused_by(&self, node: &str, deadline: tokio::time::Instant) {
        let mut refused_by = self.shared.refused_by.subscribe();
        let refused = refused_by.wait_for(|names| names.contains(node));
        if tokio::time::timeout_at(deadline, refused).await.is_err() {
            tracing::warn!(%node, "the refused node never answered with its own refusal");
        }
    }

    /// Opens a session to every seed that accepts a connection, retrying every heartbeat
    /// interval while none does: how many did; `None` if none did before `deadline`.
    async fn connect_seeds(
        &self,
        config: &ClusterConfig,
        deadline: tokio::time::Instant,
    ) -> Option<usize> {
        loop {
            let mut connected = 0;
            for seed in &config.seeds {
                let result = ractor_cluster::client_connect(&self.server, seed.to_string()).await;
                match result {
                    Ok(()) => connected += 1,
                    Err(e) => tracing::info!(%seed, error = %e, "cluster seed not reachable yet"),
                }
            }
            if connected > 0 {
                return Some(connected);
            }
            if tokio::time::Instant::now() + config.heartbeat_interval > deadline {
                return None;
            }
            // A retry interval for seeds that are not up yet, not a synchronization.
            tokio::time::sleep(config.heartbeat_interval).await;
        }
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The live members, this node included, sorted by name.
    pub fn members(&self) -> Vec<Member> {
        let mut members: Vec<Member> = self
            .shared
            .members
            .iter()
            .map(|m| m.value().clone())
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        members
    }

    /// The owner (node name) of each partition `0..n_partitions` over the live members; every
    /// node with the same members computes the same owners.
    pub fn placement(&self, n_partitions: u32) -> Vec<String> {
        let names: Vec<String> = self.members().into_iter().map(|m| m.name).collect();
        place_partitions(n_partitions, &names)
    }

    /// Sends `payload` to the live member `node` as one frame and returns its reply (what its
    /// handler, installed with [`Cluster::serve`], returned), waiting at most the configured
    /// `request_timeout`. Fails at once, naming the node, if `node` is not a live member or is
    /// declared dead while the request waits.
    pub async fn request(&self, node: &str, payload: Vec<u8>) -> Result<Vec<u8>, ClusterError> {
        let timeout = self.shared.link.timeout;
        self.request_with_timeout(node, payload, timeout).await
    }

    /// Like [`Cluster::request`], waiting at most `timeout` for this request.
    pub async fn request_with_timeout(
        &self,
        node: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, ClusterError> {
        let span = tracing::debug_span!("link_request", node = %node, bytes = payload.len());
        let started = Instant::now();
        let result = self
            .shared
            .link
            .request(node, payload, timeout)
            .instrument(span.clone())
            .await;
        let elapsed_us = started.elapsed().as_micros() as u64;
        span.in_scope(|| match &result {
            Ok(reply) => tracing::debug!(reply_bytes = reply.len(), elapsed_us, "link reply"),
            Err(error) => tracing::debug!(%error, elapsed_us, "link request failed"),
        });
        result
    }

    /// Installs the handler that answers the requests of other nodes (replacing any previous
    /// one): called with the requesting node's name and the payload, each request on a task of
    /// its own, so requests may be answered in any order. Until one is installed, requests are
    /// answered with `ClusterError::RemoteFailed`; so is a request whose handler panics.
    pub fn serve<F, Fut>(&self, handler: F)
    where
        F: Fn(String, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<u8>> + Send + 'static,
    {
        let handler: LinkHandler = Arc::new(move |from, payload| Box::pin(handler(from, payload)));
        self.shared.link.set_handler(handler);
    }

    /// The link traffic with each peer this node exchanged frames with, by node name.
    pub fn link_stats(&self) -> BTreeMap<String, PeerLinkStats> {
        self.shared.link.stats()
    }

    /// Membership events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.shared.events.subscribe()
    }

    /// Leaves the cluster: stops heartbeats, closes every session and the listener, and waits
    /// for the actors to stop. Peers see this node's sessions close (`NodeDown`, disconnected).
    pub async fn shutdown(mut self) {
        self.ticker.abort();
        self.server.stop(None);
        self.member.stop(None);
        for task in self.actor_tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.ticker.abort();
        self.server.stop(None);
        self.member.stop(None);
        NODE_RUNNING.store(false, Ordering::SeqCst);
    }
}

/// What an event means for a node waiting to join; `None` while it means nothing yet.
fn join_outcome(event: ClusterEvent, seeds: &[SocketAddr]) -> Option<Result<(), ClusterError>> {
    match event {
        ClusterEvent::NodeUp { .. } => Some(Ok(())),
        ClusterEvent::Refused { node, differences } => {
            Some(Err(ClusterError::IdentityMismatch { node, differences }))
        }
        ClusterEvent::Unauthenticated {
            peer_addr,
            outgoing: true,
        } if seeds.iter().any(|s| s.to_string() == peer_addr) => {
            Some(Err(ClusterError::Unauthenticated { seed: peer_addr }))
        }
        _ => None,
    }
}

fn seeds_text(seeds: &[SocketAddr]) -> String {
    seeds
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
