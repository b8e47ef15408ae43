//! What `/ready` reports after a store failure (`ServerState::phase`), without processes: an
//! engine whose runtime saw its store fail is `storage_failed` for as long as that runtime
//! serves, and ready again once another runtime is put in service (what a cluster node does
//! when it replaces a failed runtime); shutting down is final.

use futures::future::BoxFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use txn::runtime::{ConflictStats, StatsSnapshot};
use txn::{RecoveryReport, RequestId, TxnError};
use vmsdb::ServerLimits;
use vmsdb::api::{ApiError, QueryInfo, ServiceBody};
use vmsdb::apps::QueryFuture;
use vmsdb::engine::{Engine, EventRef, OutcomeFuture};
use vmsdb::state::{Phase, ServerState};

/// One runtime of [`SwappingEngine`]; not zero-sized, so two of them never share an address.
struct FakeRuntime {
    _number: u8,
}

/// An engine that serves through one of two runtimes at a time, like a cluster node's engine
/// lends its current runtime through `Engine::as_any`.
struct SwappingEngine {
    runtimes: [FakeRuntime; 2],
    in_service: AtomicUsize,
    recovery: RecoveryReport,
}

impl SwappingEngine {
    fn new() -> Self {
        SwappingEngine {
            runtimes: [FakeRuntime { _number: 0 }, FakeRuntime { _number: 1 }],
            in_service: AtomicUsize::new(0),
            recovery: RecoveryReport::default(),
        }
    }

    /// Puts the other runtime in service.
    fn replace_runtime(&self) {
        self.in_service.fetch_xor(1, Ordering::AcqRel);
    }
}

impl Engine for SwappingEngine {
    fn app_name(&self) -> &'static str {
        "fake"
    }
    fn new_request_id(&self) -> RequestId {
        RequestId { client: 1, seq: 1 }
    }
    fn submit(&self, _: EventRef<'_>, _: RequestId) -> Result<OutcomeFuture, ApiError> {
        Err(ApiError::not_ready())
    }
    fn services(&self) -> Vec<ServiceBody> {
        Vec::new()
    }
    fn queries(&self) -> &'static [QueryInfo] {
        &[]
    }
    fn query(&self, _: &str, _: &[u8]) -> Result<QueryFuture, ApiError> {
        Err(ApiError::not_ready())
    }
    fn stats(&self) -> Option<StatsSnapshot> {
        None
    }
    fn conflict_stats(&self) -> BoxFuture<'static, Option<ConflictStats>> {
        Box::pin(async { None })
    }
    fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }
    fn store(&self) -> &str {
        "fake"
    }
    fn shutdown(&self) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
    fn as_any(&self) -> &dyn std::any::Any {
        &self.runtimes[self.in_service.load(Ordering::Acquire)]
    }
    fn client_any(&self) -> Box<dyn std::any::Any + Send> {
        Box::new(())
    }
}

/// A server state serving `engine`, ready.
fn serving(engine: std::sync::Arc<SwappingEngine>) -> ServerState {
    let state = ServerState::new(None, ServerLimits::default());
    state.install(engine);
    assert_eq!(state.phase(), Phase::Ready);
    state
}

fn store_failed() -> ApiError {
    ApiError::from(TxnError::Storage("the disk is full".to_string()))
}

#[test]
fn a_store_failure_makes_the_server_unready_while_its_runtime_serves() {
    let engine = std::sync::Arc::new(SwappingEngine::new());
    let state = serving(engine.clone());
    state.note_error(&ApiError::not_ready());
    assert_eq!(state.phase(), Phase::Ready, "only a store failure counts");
    state.note_error(&store_failed());
    assert_eq!(state.phase(), Phase::StorageFailed);
    assert_eq!(
        state.phase(),
        Phase::StorageFailed,
        "it stays while it serves"
    );
    // An unknown outcome caused by the store counts too.
    engine.replace_runtime();
    let unknown = TxnError::OutcomeUnknown {
        id: RequestId { client: 1, seq: 2 },
        cause: Box::new(TxnError::Storage("the disk is full".to_string())),
    };
    state.note_error(&ApiError::from(unknown));
    assert_eq!(state.phase(), Phase::StorageFailed);
}

#[test]
fn a_replaced_runtime_takes_its_store_failure_with_it() {
    let engine = std::sync::Arc::new(SwappingEngine::new());
    let state = serving(engine.clone());
    state.note_error(&store_failed());
    assert_eq!(state.phase(), Phase::StorageFailed);
    engine.replace_runtime();
    assert_eq!(state.phase(), Phase::Ready, "the new runtime did not fail");
    state.note_error(&store_failed());
    assert_eq!(state.phase(), Phase::StorageFailed, "until it fails too");
    state.set_phase(Phase::ShuttingDown);
    engine.replace_runtime();
    assert_eq!(state.phase(), Phase::ShuttingDown, "shutting down is final");
    state.set_phase(Phase::Ready);
    assert_eq!(state.phase(), Phase::ShuttingDown);
}
