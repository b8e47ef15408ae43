//! Every tunable limit and default of the server, in one place.
//!
//! Units come last in each name. Each one can be changed by a flag, an environment variable or
//! the TOML file (see `config.rs`); the const assertions at the bottom state how they relate.

/// Default address the server listens on: loopback, so a server without a token is reachable
/// only from this machine.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:8080";

/// Default largest request body; a larger one is answered 413 before it is read to the end.
pub const BODY_BYTES_MAX_DEFAULT: usize = 1024 * 1024;

/// Smallest body limit accepted: every event of the served applications fits in it.
pub const BODY_BYTES_MIN: usize = 1024;

/// Default number of requests handled at once; one more is answered 503 (`overloaded`) at once
/// instead of queueing, so a flood cannot build an unbounded backlog.
pub const CONCURRENT_REQUESTS_MAX_DEFAULT: usize = 1024;

/// Default number of open connections; the server stops accepting new ones (they wait in the
/// kernel's backlog) until one closes.
pub const CONNECTIONS_MAX_DEFAULT: usize = 4096;

/// Default time a client has to send a request's headers, so clients that trickle bytes cannot
/// hold connections forever, in milliseconds.
pub const HEADER_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Default time a client has to send a request's body once its headers arrived, in
/// milliseconds.
pub const BODY_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Default time one request may take from its headers to its answer (body read and the
/// durable outcome included); past it the answer is 503 `timeout`, in milliseconds.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// Default number of fire-and-forget submissions (`?wait=false`) whose outcome is still
/// pending; one more is answered 503 (`overloaded`).
pub const PENDING_SUBMISSIONS_MAX_DEFAULT: usize = 10_000;

/// Default number of settled fire-and-forget outcomes the request status table keeps; the
/// oldest settled ones are forgotten first.
pub const STATUS_TABLE_SETTLED_MAX_DEFAULT: usize = 100_000;

/// Default time a graceful shutdown waits for in-flight requests to be answered before it
/// closes their connections, in milliseconds.
pub const SHUTDOWN_GRACE_MS_DEFAULT: u64 = 30_000;

/// The ports the Online Marketplace benchmark's driver addresses in its default configuration
/// (cart, product, stock, order, payment, shipment, customer, seller, and 8091 for the
/// transactions and commit tracking); `--driver-ports` listens on each, on 127.0.0.1.
pub const DRIVER_PORTS: [u16; 9] = [8080, 8081, 8082, 8083, 8084, 8085, 8086, 8087, 8091];

/// Committed-count events (`GET /status/committed` as `text/event-stream`) buffered per
/// stream; a reader further behind skips the oldest (it still gets every later one).
pub const COMMIT_EVENTS_BUFFERED_MAX: usize = 4096;

/// How often an idle event stream sends a `:` comment line so proxies and clients keep the
/// connection open, in milliseconds.
pub const SSE_KEEP_ALIVE_INTERVAL_MS: u64 = 15_000;

/// Latency percentiles (`GET /v1/stats`, `/metrics`, the console) cover the submissions that
/// settled in the last one to two of these windows, in milliseconds.
pub const LATENCY_WINDOW_MS: u64 = 10_000;

/// The largest submit → outcome latency the histogram tells apart; longer ones count as this,
/// in microseconds (a minute, twice the default request timeout).
pub const TRACKED_LATENCY_MAX_US: u64 = 60_000_000;

/// How often the server samples the runtime's counters for the throughput history, in
/// milliseconds.
pub const THROUGHPUT_SAMPLE_INTERVAL_MS: u64 = 1_000;

/// Throughput samples kept for `GET /v1/stats` and the console's chart (one per sample
/// interval: two minutes).
pub const STATS_HISTORY_SECONDS_MAX: usize = 120;

/// Most events in one `POST /v1/batch`; more is 400 `batch_too_large`.
pub const BATCH_EVENTS_MAX: usize = 4096;

/// Most submissions a node that is not the sequencer forwards in one link request; a fuller
/// batch is sent at once.
pub const FORWARD_BATCH_REQUESTS_MAX: usize = 1024;

/// Most event bytes (JSON payloads) in one forwarded batch: gathering stops once a batch holds
/// this many, so a batch stays well within the link's payload limit.
pub const FORWARD_BATCH_BYTES_MAX: usize = 4 << 20;

/// How long a forwarding node gathers submissions into one batch when the node has no
/// `--epoch-duration` (then it waits one epoch), in microseconds: the runtime's default epoch.
pub const FORWARD_BATCH_WAIT_US_DEFAULT: u64 = txn::limits::EPOCH_DURATION_US_DEFAULT;

/// Submissions waiting to be gathered into a batch; one more is answered 503 (`overloaded`).
pub const FORWARD_QUEUE_MAX: usize = 16_384;

/// Times a new sequencer tries to announce itself to a member that does not answer yet (a
/// member in the first moments of its join), before leaving it to the member's next join.
pub const ANNOUNCE_ATTEMPTS_MAX: u32 = 50;

/// Time between two announcement attempts to one member, in milliseconds.
pub const ANNOUNCE_RETRY_MS: u64 = 100;

/// How long one round of a node's wait for the store's lease lasts before it starts another
/// (it waits for as many rounds as it takes), in milliseconds.
pub const LEASE_WAIT_ROUND_MS: u64 = 60_000;

/// Time a node waits before contending for the lease again after the store could not be
/// opened or the runtime failed to start, in milliseconds.
pub const CONTEND_RETRY_MS: u64 = 1_000;

/// Time a sequencer that spreads the partitions waits before starting its runtime again when
/// a member was not ready for its placement (a node in the first moments of its join), in
/// milliseconds: short, since every attempt renews the lease, which must not run out meanwhile.
pub const REPLACE_RETRY_MS: u64 = 50;

/// How much longer than the lease's remaining time a standby that is not first in line (by
/// name, among the live members) waits before it tries to take a dead sequencer's lease, in
/// milliseconds: the first in line has begun the take-over's replay before the lease was free
/// (`txn::PreparedTakeOver`) and should win it; if it does not come, the next one takes over
/// this much later.
pub const LEASE_NOT_FIRST_IN_LINE_WAIT_MS: u64 = 1_000;

/// How long a sequencer whose runtime recovered (a take-over) serves before it re-places the
/// partitions for a member that joined meanwhile (a killed node that came back), in
/// milliseconds: the first requests after a failure are not held up by a second stop.
pub const JOIN_AFTER_RECOVERY_MS: u64 = 2_000;

/// How often a sequencer node looks whether its runtime still holds the store's lease (it
/// stops, to rejoin as a standby, once another node took the lease over), in milliseconds.
pub const LEASE_CHECK_INTERVAL_MS: u64 = 100;

const _: () = assert!(BODY_BYTES_MAX_DEFAULT >= BODY_BYTES_MIN);
// A batch may pass its byte limit by one event before it is sent: the link must still carry
// it, with room for the ids, names and framing.
const _: () = assert!(
    FORWARD_BATCH_BYTES_MAX + 2 * BODY_BYTES_MAX_DEFAULT <= txn::limits::PHASE_MESSAGE_BYTES_MAX
);
const _: () =
    assert!(FORWARD_BATCH_REQUESTS_MAX > 0 && FORWARD_QUEUE_MAX >= FORWARD_BATCH_REQUESTS_MAX);
const _: () = assert!(ANNOUNCE_ATTEMPTS_MAX > 0 && ANNOUNCE_RETRY_MS > 0);
const _: () = assert!(CONTEND_RETRY_MS < LEASE_WAIT_ROUND_MS);
const _: () = assert!(REPLACE_RETRY_MS < CONTEND_RETRY_MS);
// A deposed sequencer must notice well within the lease's default length.
const _: () = assert!(
    LEASE_CHECK_INTERVAL_MS > 0 && LEASE_CHECK_INTERVAL_MS < txn::limits::LEASE_TTL_MS_DEFAULT
);
// A body the server admits must also be an event the runtime admits: the JSON form of an event
// is never smaller than its rmp encoding, so the runtime's limit is the tighter one only for
// bodies the server would refuse anyway.
const _: () = assert!(BODY_BYTES_MAX_DEFAULT <= txn::limits::REQUEST_BYTES_MAX_DEFAULT);
// Reading the body is part of a request, so its timeout must leave time to answer.
const _: () = assert!(BODY_READ_TIMEOUT_MS_DEFAULT < REQUEST_TIMEOUT_MS_DEFAULT);
// A graceful shutdown waits at least as long as one request may take.
const _: () = assert!(SHUTDOWN_GRACE_MS_DEFAULT >= REQUEST_TIMEOUT_MS_DEFAULT);
// Every pending submission has a status entry; keep room for settled ones beside them.
const _: () = assert!(PENDING_SUBMISSIONS_MAX_DEFAULT <= STATUS_TABLE_SETTLED_MAX_DEFAULT);
const _: () = assert!(CONCURRENT_REQUESTS_MAX_DEFAULT <= CONNECTIONS_MAX_DEFAULT);
// A keep-alive must come well within the time a client waits for the stream's next byte.
const _: () = assert!(SSE_KEEP_ALIVE_INTERVAL_MS < REQUEST_TIMEOUT_MS_DEFAULT);
const _: () = assert!(COMMIT_EVENTS_BUFFERED_MAX > 0);
// The histogram must tell apart every latency a request may have before it times out.
const _: () = assert!(TRACKED_LATENCY_MAX_US >= REQUEST_TIMEOUT_MS_DEFAULT * 1_000);
// A window must hold several samples' worth of outcomes.
const _: () = assert!(LATENCY_WINDOW_MS >= THROUGHPUT_SAMPLE_INTERVAL_MS);
const _: () = assert!(STATS_HISTORY_SECONDS_MAX > 0 && BATCH_EVENTS_MAX > 0);
