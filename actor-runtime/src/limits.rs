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
