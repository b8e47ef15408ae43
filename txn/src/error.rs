//! Errors and abort reasons: every one names what was wrong.

use crate::ids::RequestId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a transaction was aborted. The client receives it with the outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AbortReason {
    /// A handler decided to abort (a business rule). `kind` is a stable identifier of the
    /// rule (`"insufficient_funds"`), from `BusinessError::kind` or `TxnCtx::abort_with`;
    /// `TxnCtx::abort` uses [`AbortReason::USER_KIND_DEFAULT`]. Reports group aborts by
    /// `service` and `kind`, so `message` is free to carry details.
    #[error("aborted by {service} ({kind}): {message}")]
    User {
        service: String,
        kind: String,
        message: String,
    },
    /// A declared constraint would be violated by the transaction's writes.
    #[error("constraint violated in {service}.{table}: {message}")]
    Constraint {
        service: String,
        table: String,
        message: String,
    },
    /// A handler touched a key that lives in another partition; it must emit an event instead.
    #[error(
        "{service} partition {running} accessed {table} key of partition {owner}: \
         emit an event to the owning partition instead"
    )]
    WrongPartition {
        service: String,
        table: String,
        running: u32,
        owner: u32,
    },
    /// A handler used a table of another service.
    #[error("a handler of {service} used table {table} of service {owner}")]
    ForeignTable {
        service: String,
        table: String,
        owner: String,
    },
    /// A handler scanned a table that was not declared ordered.
    #[error(
        "{service}.{table} is not an ordered table; declare it with `ordered_table` to scan it"
    )]
    NotOrdered { service: String, table: String },
    /// A handler panicked; the panic was contained and the transaction discarded.
    #[error("handler of {service} panicked: {message}")]
    HandlerPanicked { service: String, message: String },
    /// The event chain did not finish within the step limit.
    #[error("event chain exceeded {max_waves} steps (a cycle of events?)")]
    ChainTooLong { max_waves: usize },
    /// The transaction lost conflict resolution too many times in a row.
    #[error("gave up after {retries} conflict retries")]
    RetriesExhausted { retries: u32 },
    /// The transaction went past one of its per-transaction limits (`TxnLimits`), e.g. a
    /// handler that emits without bound; only this transaction is aborted.
    #[error("transaction exceeded its limit of {max} {limit}")]
    LimitExceeded { limit: LimitKind, max: u64 },
    /// A delta (`TxnCtx::add`) named a row that does not exist: deltas never create rows.
    #[error("delta on missing row {key} of {service}.{table}")]
    MissingRow {
        service: String,
        table: String,
        key: String,
    },
    /// A handler read a row with a personal field whose category the application allows for
    /// none of the purposes the handler serves (`docs/governance.md`). Boxed: it names much.
    #[error(transparent)]
    PurposeNotAllowed(Box<PurposeRefusal>),
}

/// What [`AbortReason::PurposeNotAllowed`] names: who read which personal field, and why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error(
    "handler {handler} of {service} (purposes: {purposes:?}) may not read {table}: its field \
     {field} is personal data of category {category}, allowed for none of them"
)]
pub struct PurposeRefusal {
    /// The service whose handler read.
    pub service: String,
    /// The event kind the handler takes.
    pub handler: String,
    /// The purposes the handler serves (empty: none declared).
    pub purposes: Vec<String>,
    /// `service.table` of the row read.
    pub table: String,
    pub field: String,
    pub category: String,
}

impl AbortReason {
    /// The `kind` of a business abort raised with `TxnCtx::abort(message)`, which names none.
    pub const USER_KIND_DEFAULT: &'static str = "abort";

    /// A stable name of this reason's category, for grouping aborts in reports: the business
    /// `kind` for `User`, the limit for `LimitExceeded` (`"limit_steps"`), else the variant.
    pub fn category(&self) -> &str {
        match self {
            AbortReason::User { kind, .. } => kind,
            AbortReason::Constraint { .. } => "constraint",
            AbortReason::WrongPartition { .. } => "wrong_partition",
            AbortReason::ForeignTable { .. } => "foreign_table",
            AbortReason::NotOrdered { .. } => "not_ordered",
            AbortReason::HandlerPanicked { .. } => "handler_panicked",
            AbortReason::ChainTooLong { .. } => "chain_too_long",
            AbortReason::RetriesExhausted { .. } => "retries_exhausted",
            AbortReason::LimitExceeded { limit, .. } => limit.category(),
            AbortReason::MissingRow { .. } => "missing_row",
            AbortReason::PurposeNotAllowed(_) => "purpose_not_allowed",
        }
    }

    /// The service the reason names, if it names one.
    pub fn service(&self) -> Option<&str> {
        match self {
            AbortReason::User { service, .. }
            | AbortReason::Constraint { service, .. }
            | AbortReason::WrongPartition { service, .. }
            | AbortReason::ForeignTable { service, .. }
            | AbortReason::NotOrdered { service, .. }
            | AbortReason::HandlerPanicked { service, .. }
            | AbortReason::MissingRow { service, .. } => Some(service),
            AbortReason::PurposeNotAllowed(refusal) => Some(&refusal.service),
            AbortReason::ChainTooLong { .. }
            | AbortReason::RetriesExhausted { .. }
            | AbortReason::LimitExceeded { .. } => None,
        }
    }

    /// Names `service` as the aborting service of a business abort that was converted from
    /// a [`BusinessError`] (which does not know its service); other reasons stay as they are.
    pub(crate) fn in_service(mut self, running: &str) -> Self {
        if let AbortReason::User { service, .. } = &mut self
            && service.is_empty()
        {
            running.clone_into(service);
        }
        self
    }
}

/// A service's own error type, whose values abort the transaction with a stable `kind`: a
/// handler returning `HandlerResult` (or `Result<(), E>` under `#[service]`) can use `?` on it.
///
/// ```
/// #[derive(Debug, thiserror::Error)]
/// enum BankError {
///     #[error("balance {balance} is below {amount}")]
///     InsufficientFunds { balance: u64, amount: u64 },
/// }
///
/// impl txn::BusinessError for BankError {
///     fn kind(&self) -> &'static str {
///         match self {
///             BankError::InsufficientFunds { .. } => "insufficient_funds",
///         }
///     }
/// }
///
/// let abort = txn::Abort::from(BankError::InsufficientFunds { balance: 1, amount: 5 });
/// assert_eq!(abort.0.category(), "insufficient_funds");
/// ```
pub trait BusinessError: std::error::Error {
    /// A stable identifier of this error's rule, `snake_case` by convention: reports group
    /// aborts by it, so it must not carry per-request details (those go in the message).
    fn kind(&self) -> &'static str;
}

/// The runtime names the service when the handler returns (`AbortReason::in_service`).
impl<E: BusinessError> From<E> for Abort {
    fn from(error: E) -> Self {
        Abort(AbortReason::User {
            service: String::new(),
            kind: error.kind().to_string(),
            message: error.to_string(),
        })
    }
}

/// Which per-transaction limit (`txn::limits::TxnLimits`) a transaction went past.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LimitKind {
    /// Steps run in total (`TxnLimits::steps_max`).
    Steps,
    /// Events emitted in total (`TxnLimits::emitted_events_max`).
    EmittedEvents,
    /// Bytes of rows, events and outbox messages written (`TxnLimits::bytes_written_max`).
    BytesWritten,
    /// Deterministic handler work units (`TxnLimits::work_max`).
    Work,
}

impl LimitKind {
    /// The report category of an abort past this limit.
    pub fn category(self) -> &'static str {
        match self {
            LimitKind::Steps => "limit_steps",
            LimitKind::EmittedEvents => "limit_emitted_events",
            LimitKind::BytesWritten => "limit_bytes_written",
            LimitKind::Work => "limit_work",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::Steps => "steps",
            LimitKind::EmittedEvents => "emitted events",
            LimitKind::BytesWritten => "bytes written",
            LimitKind::Work => "work units",
        })
    }
}

/// Returned by a handler (or a context call) to abort the whole transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Abort(pub AbortReason);

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Abort {}

impl From<AbortReason> for Abort {
    fn from(r: AbortReason) -> Self {
        Abort(r)
    }
}

/// What a handler returns.
pub type HandlerResult = Result<(), Abort>;

/// Errors of the runtime's client API (not transaction outcomes: an aborted transaction is an
/// `Ok` outcome with an abort reason).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TxnError {
    /// The runtime was shut down or never started.
    #[error("the runtime is stopped")]
    Stopped,
    /// Durable storage failed; the runtime stopped accepting writes. Nothing that was not
    /// persisted was acknowledged.
    #[error("storage failed, the runtime stopped accepting writes: {0}")]
    Storage(String),
    /// No service of that name is registered.
    #[error("unknown service {0:?}")]
    UnknownService(String),
    /// A request addressed a partition the service does not have.
    #[error(
        "service {service:?} has {n_partitions} partitions; partition {partition} does not exist"
    )]
    UnknownPartition {
        service: String,
        partition: u32,
        n_partitions: u32,
    },
    /// A query's closure panicked.
    #[error("query panicked on {service} partition {partition}: {message}")]
    QueryPanicked {
        service: String,
        partition: u32,
        message: String,
    },
    /// The application definition is invalid (reported at start-up, all problems at once).
    #[error("invalid application:\n  - {}", .0.join("\n  - "))]
    InvalidApp(Vec<String>),
    /// Recovery found the stored state unusable.
    #[error("recovery failed: {0}")]
    Recovery(String),
    /// The actor runtime failed to deliver a phase message.
    #[error("actor runtime: {0}")]
    Actor(String),
    /// The store was written by an application of another shape (services, partition counts,
    /// tables, types); each entry names one difference. Refused before recovery reads anything.
    #[error(
        "the store was written by a different application:\n  - {}\n{}",
        .0.join("\n  - "),
        STORE_REFUSED_INSTRUCTIONS
    )]
    StoreMismatch(Vec<String>),
    /// The store has another on-disk format version than this build, or predates the format
    /// version record; the message names both versions.
    #[error("unsupported store format: {0}")]
    StoreFormat(String),
    /// A request id was submitted again with a different request (another target partition or
    /// event): the first request's outcome stands, the second was not run.
    #[error(
        "request id {id} was already used for a different request (another target or event); \
         the second request was not run: give it a new id"
    )]
    RequestIdReused { id: RequestId },
    /// The request may or may not have been executed (the runtime stopped or storage failed
    /// after it was accepted). Resubmitting it with `Client::submit_with_id(id, ..)` and the same
    /// target and event returns its outcome and never runs it twice.
    #[error(
        "the outcome of request {id} is unknown ({cause}); resubmit it with submit_with_id and \
         this id to learn it without running it twice"
    )]
    OutcomeUnknown { id: RequestId, cause: Box<TxnError> },
    /// The event encodes to more bytes than `RuntimeConfig::request_bytes_max`; it was refused
    /// before it reached the log.
    #[error(
        "a request to {service} encodes to {size_bytes} bytes, over the limit of {limit_bytes} \
         bytes (RuntimeConfig::request_bytes_max)"
    )]
    RequestTooLarge {
        service: String,
        size_bytes: usize,
        limit_bytes: usize,
    },
    /// The event is declared internal (`App::is_internal`): only handlers may emit it.
    #[error(
        "event {kind:?} sent to {service} is internal: only handlers may emit it, clients \
         cannot submit it"
    )]
    InternalEvent { service: String, kind: String },
    /// The event could not be encoded for the log; it was refused before it reached it.
    #[error("a request to {service} does not encode: {message}")]
    UnencodableEvent { service: String, message: String },
    /// Another holder's lease on the store still runs, so this runtime did not start (it reads
    /// nothing before it holds the lease). Stop that holder, wait `remaining_ms`, or start with
    /// `LeaseConfig::wait_for_lease` to wait for the lease to end and take over.
    #[error(
        "the store's lease is held by {holder:?} (term {term}) for another {remaining_ms} ms, so \
         this runtime did not start: stop that holder, or set wait_for_lease to take over when \
         the lease ends"
    )]
    LeaseHeld {
        holder: String,
        term: u64,
        remaining_ms: u64,
    },
    /// A node holding partitions of a cluster runtime failed the batch of one phase (it did not
    /// answer in time, the link failed, or its answer was refused); the epoch fails and the
    /// runtime stops accepting writes, as for a storage failure.
    #[error("node {node:?} failed the {phase} batch of epoch {epoch}: {reason}")]
    NodeFailed {
        node: String,
        phase: String,
        epoch: u64,
        reason: String,
    },
    /// A closure query named a partition another node of the cluster holds: a closure cannot
    /// travel, so closure queries run only on the partitions of the node that asks (named
    /// queries, `AppBuilder::query`, travel by name).
    #[error(
        "partition {partition} of {service} is on node {node:?}: closure queries in a cluster \
         run only on this node's partitions (a query registered with AppBuilder::query reaches \
         every node's)"
    )]
    QueryNotLocal {
        service: String,
        partition: u32,
        node: String,
    },
    /// `Client::forget` cannot erase on this runtime (`why` says what is missing: a store that
    /// can rewrite its files, checkpoints, a runtime without a history base, one process);
    /// nothing was erased.
    #[error("live erasure refused, nothing was erased: {why}")]
    ForgetRefused { why: String },
    /// No query of that name is registered with the application (`AppBuilder::query`);
    /// refused before anything ran.
    #[error("no query named {name:?} is registered (there are: {})", .known.join(", "))]
    UnknownQuery { name: String, known: Vec<String> },
    /// A named query could not answer: its arguments or a partition's part did not encode or
    /// decode (`at` says where: a service's partition, or the client).
    #[error("query {query:?} failed on {at}: {message}")]
    QueryFailed {
        query: String,
        at: String,
        message: String,
    },
}

/// Turns a caught panic payload into a message.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// What to do about a refused store, repeated in every refusal.
pub(crate) const STORE_REFUSED_INSTRUCTIONS: &str = "vmsdb cannot migrate a store yet: start the application \
     exactly as it was declared when the store was written, or start the changed application \
     on a new, empty store and load its data again (see \"The store fingerprint\" in \
     docs/storage.md)";
