//! Tunable limits and defaults of the actor runtime, in one place so they can be reviewed together.
//!
//! Every queue in the runtime is bounded by one of these. Units come last in each name; a name
//! without a unit is a count.

/// Default number of messages a partition's mailbox holds before `send` waits and `try_send`
/// fails. A message being handled still counts, so a mailbox of capacity `c` holds at most `c - 1`
/// queued messages behind the one in flight. The transaction layer sends about one batch per
/// partition per epoch phase, so this only fills when a partition falls far behind.
pub const MAILBOX_CAPACITY_DEFAULT: usize = 1024;

/// Largest mailbox capacity a service may configure. Keeps one slow partition from buffering an
/// unbounded amount of memory; also far below Tokio's semaphore permit limit.
pub const MAILBOX_CAPACITY_MAX: usize = 1 << 20;

/// Default number of partitions (virtual actors) per service.
pub const N_PARTITIONS_DEFAULT: u32 = 64;

/// Largest number of partitions a service may configure. Each partition costs one pre-allocated
/// slot (a lock and a semaphore, under 100 bytes) whether or not it is active.
pub const N_PARTITIONS_MAX: u32 = 1 << 20;

/// Largest number of services one actor system may register.
pub const N_SERVICES_MAX: usize = 1024;

/// Longest service name, in bytes. Names appear in every log line about the service.
pub const SERVICE_NAME_LEN_MAX_BYTES: usize = 128;

/// Largest number of nodes the placement directory tracks. Rendezvous hashing costs one hash per
/// node per lookup, so this also bounds the cost of `Directory::node_of`.
pub const N_NODES_MAX: usize = 4096;

/// Default time an actor may go without messages before it is passivated, in milliseconds.
pub const IDLE_TIMEOUT_DEFAULT_MS: u64 = 60_000;

/// Shortest idle timeout a service may configure, in milliseconds. Zero would passivate an actor
/// after every message and re-load its state for the next one.
pub const IDLE_TIMEOUT_MIN_MS: u64 = 1;

const _: () = assert!(MAILBOX_CAPACITY_DEFAULT >= 1);
const _: () = assert!(MAILBOX_CAPACITY_DEFAULT <= MAILBOX_CAPACITY_MAX);
const _: () = assert!(MAILBOX_CAPACITY_MAX <= tokio::sync::Semaphore::MAX_PERMITS);
const _: () = assert!(N_PARTITIONS_DEFAULT >= 1);
const _: () = assert!(N_PARTITIONS_DEFAULT <= N_PARTITIONS_MAX);
const _: () = assert!(IDLE_TIMEOUT_MIN_MS >= 1);
const _: () = assert!(IDLE_TIMEOUT_DEFAULT_MS >= IDLE_TIMEOUT_MIN_MS);
const _: () = assert!(N_NODES_MAX >= 1);

/// Default time between two heartbeats a cluster node sends each member, in milliseconds.
/// Membership traffic is one small message per member per interval.
pub const CLUSTER_HEARTBEAT_INTERVAL_DEFAULT_MS: u64 = 200;

/// Shortest heartbeat interval a cluster may configure, in milliseconds: below this the
/// heartbeats of a few dozen nodes would keep the two cores busy.
pub const CLUSTER_HEARTBEAT_INTERVAL_MIN_MS: u64 = 10;

/// Default time a member may stay silent (no heartbeat) before it is declared dead, in
/// milliseconds. Several heartbeat intervals, so one delayed heartbeat is not a death.
pub const CLUSTER_FAILURE_TIMEOUT_DEFAULT_MS: u64 = 1_500;

/// Smallest ratio of failure timeout to heartbeat interval a cluster accepts: a node must be
/// allowed to miss at least one heartbeat before it is declared dead.
pub const CLUSTER_FAILURE_TIMEOUT_HEARTBEATS_MIN: u32 = 2;

/// Default time `Cluster::start` waits to be admitted by a seed (connected, cookie accepted,
/// application identity matched), in milliseconds.
pub const CLUSTER_JOIN_TIMEOUT_DEFAULT_MS: u64 = 10_000;

/// Largest application identity a node may present at join, in bytes. The transaction layer's
/// encoded fingerprint is a few KiB even for large applications.
pub const CLUSTER_IDENTITY_BYTES_MAX: usize = 1 << 20;

/// Longest node name, in bytes. Names appear in every membership log line and event.
pub const CLUSTER_NODE_NAME_LEN_MAX_BYTES: usize = 255;

/// Largest payload of one link request or reply (`Cluster::request`), in bytes. One epoch
/// phase's work for one node travels as one request, so this bounds a phase batch; larger work
/// must be split by the caller. Refused before sending, so a peer never sees an oversized frame.
pub const CLUSTER_LINK_PAYLOAD_BYTES_MAX: usize = 16 << 20;

/// Bytes a link frame may add to its payload on the wire, at most: the link's trailer (the
/// node name and 11 bytes) and ractor_cluster's own message envelope.
pub const CLUSTER_LINK_FRAME_OVERHEAD_BYTES_MAX: usize = 64 << 10;

/// Largest frame a node accepts from a peer, in bytes; a peer sending a larger one is
/// disconnected before the frame is buffered. Sized for the largest link payload; membership
/// messages carry at most one identity.
pub const CLUSTER_FRAME_BYTES_MAX: u64 =
    (CLUSTER_LINK_PAYLOAD_BYTES_MAX + CLUSTER_LINK_FRAME_OVERHEAD_BYTES_MAX) as u64;

/// Default time `Cluster::request` waits for a reply, in milliseconds. Longer than the failure
/// timeout, so a dead peer's requests fail as `PeerDown` (fast, named) rather than by timeout.
pub const CLUSTER_REQUEST_TIMEOUT_DEFAULT_MS: u64 = 10_000;

/// Membership events buffered for each subscriber; a subscriber that falls further behind
/// loses the oldest ones (and is told how many it missed) instead of holding up the node.
pub const CLUSTER_EVENTS_CAPACITY: usize = 1024;

const _: () = assert!(CLUSTER_HEARTBEAT_INTERVAL_MIN_MS >= 1);
const _: () = assert!(CLUSTER_HEARTBEAT_INTERVAL_DEFAULT_MS >= CLUSTER_HEARTBEAT_INTERVAL_MIN_MS);
const _: () = assert!(CLUSTER_FAILURE_TIMEOUT_HEARTBEATS_MIN >= 2);
const _: () = assert!(
    CLUSTER_FAILURE_TIMEOUT_DEFAULT_MS
        >= CLUSTER_FAILURE_TIMEOUT_HEARTBEATS_MIN as u64 * CLUSTER_HEARTBEAT_INTERVAL_DEFAULT_MS
);
const _: () = assert!(CLUSTER_JOIN_TIMEOUT_DEFAULT_MS >= CLUSTER_FAILURE_TIMEOUT_DEFAULT_MS);
const _: () = assert!(CLUSTER_FRAME_BYTES_MAX as usize > CLUSTER_IDENTITY_BYTES_MAX);
const _: () = assert!(CLUSTER_LINK_FRAME_OVERHEAD_BYTES_MAX > CLUSTER_NODE_NAME_LEN_MAX_BYTES + 11);
const _: () = assert!(CLUSTER_REQUEST_TIMEOUT_DEFAULT_MS > CLUSTER_FAILURE_TIMEOUT_DEFAULT_MS);
const _: () = assert!(CLUSTER_EVENTS_CAPACITY >= 1);
