//! The request status table: where each fire-and-forget submission (`?wait=false`) stands, for
//! `GET /v1/requests/{client}/{seq}`. A `DashMap` (sharded locks, so concurrent submissions
//! and lookups rarely wait on each other), bounded: pending entries are bounded by
//! `pending_submissions_max` (a submission past it is refused), settled ones by
//! `status_table_settled_max`, the oldest settled forgotten first.

use crate::api::{ErrorBody, OutcomeBody, RequestState, RequestStatusBody, request_id_text};
use dashmap::DashMap;
use parking_lot::Mutex;
use std::collections::VecDeque;
use txn::RequestId;

/// Where one request stands.
#[derive(Clone, Debug)]
enum Entry {
    Pending,
    Settled(Result<OutcomeBody, ErrorBody>),
}

/// The table (see the module doc).
pub struct StatusTable {
    entries: DashMap<RequestId, Entry>,
    /// Settled ids in the order they settled: the eviction order.
    settled_order: Mutex<VecDeque<RequestId>>,
    settled_max: usize,
}

impl StatusTable {
    pub fn new(settled_max: usize) -> Self {
        StatusTable {
            entries: DashMap::new(),
            settled_order: Mutex::new(VecDeque::new()),
            settled_max,
        }
    }

    /// Records that `id` was submitted and waits for its outcome.
    pub fn pending(&self, id: RequestId) {
        self.entries.insert(id, Entry::Pending);
    }

    /// Records `id`'s outcome (or why it has none) and forgets the oldest settled entries
    /// beyond the bound.
    pub fn settle(&self, id: RequestId, result: Result<OutcomeBody, ErrorBody>) {
        self.entries.insert(id, Entry::Settled(result));
        let mut order = self.settled_order.lock();
        order.push_back(id);
        while order.len() > self.settled_max {
            let Some(oldest) = order.pop_front() else {
                break;
            };
            // An id resubmitted since it settled is pending again: it stays.
            self.entries
                .remove_if(&oldest, |_, entry| matches!(entry, Entry::Settled(_)));
        }
    }

    /// Where `id` stands, if the table knows it.
    pub fn get(&self, id: RequestId) -> Option<RequestStatusBody> {
        let entry = self.entries.get(&id)?.clone();
        let request_id = request_id_text(id);
        Some(match entry {
            Entry::Pending => RequestStatusBody {
                request_id,
                state: RequestState::Pending,
                outcome: None,
                error: None,
            },
            Entry::Settled(Ok(outcome)) => RequestStatusBody {
                request_id,
                state: if outcome.committed {
                    RequestState::Committed
                } else {
                    RequestState::Aborted
                },
                outcome: Some(outcome),
                error: None,
            },
            Entry::Settled(Err(error)) => RequestStatusBody {
                request_id,
                state: RequestState::Failed,
                outcome: None,
                error: Some(error),
            },
        })
    }

    /// Entries in the table (pending and settled).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
