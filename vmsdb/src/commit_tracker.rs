//! Commit tracking for clients that learn of commits from a stream instead of from their
//! answers (the Online Marketplace benchmark's driver): counts of tracked transactions accepted
//! and settled, `GET /status/committed` and `GET /status/submitted`, and the rule that makes each
//! `data:` event of the `text/event-stream` form mean "everything acknowledged before me is
//! settled".
//!
//! # The rule: acknowledgements are held in batches
//!
//! Tracked transactions are grouped into numbered batches. When none is in flight, an accepted
//! transaction starts batch *k*, which is in flight at once, and is acknowledged at once.
//! Transactions accepted while batch *k* is in flight join batch *k + 1*; their
//! acknowledgements are held until the event of batch *k* was sent. Batch *k*'s event is sent
//! as soon as every member of it is durably settled (committed or aborted) and acknowledged (or
//! its client left); then batch *k + 1*'s acknowledgements are released and it is in flight.
//! So every acknowledgement is sent after the previous batch's event and before its own
//! batch's event, and that event is sent only once everything acknowledged before it settled:
//! a client that assigns each acknowledged transaction to the next event it will see gets its
//! true completion time. Events are never sent on connect or as heartbeats (keep-alives are
//! `:` comment lines), and after a quiet period `committed == submitted`.

use crate::limits::{COMMIT_EVENTS_BUFFERED_MAX, SSE_KEEP_ALIVE_INTERVAL_MS};
use crate::state::ServerState;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use parking_lot::Mutex;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Counts of tracked transactions, their batches, and the committed-count events.
pub struct CommitTracker {
    batches: Mutex<Batches>,
    submitted: AtomicI64,
    committed: AtomicI64,
    /// The committed count at each batch's event, for the event streams.
    events: broadcast::Sender<i64>,
    /// The number of the last batch whose event was sent (held acknowledgements wait on it).
    events_sent: watch::Sender<u64>,
    /// Set at shutdown: the event streams end, so the connections can close.
    closed: watch::Sender<bool>,
}

/// The batch in flight and the one filling behind it. A member owes two units to its batch:
/// one when it settles, one when its acknowledgement was released (or its client left).
#[derive(Default)]
struct Batches {
    in_flight: Option<u64>,
    in_flight_units: u64,
    open_units: u64,
    /// Members that joined the open batch (done or not).
    open_members: u64,
    last_batch: u64,
}

/// One tracked transaction's place in its batch: settle it with [`settle`](Self::settle)
/// once its outcome is durable, and hold its acknowledgement with [`AckHold`].
pub struct Ticket {
    tracker: Arc<ServerState>,
    batch: u64,
}

/// The acknowledgement half of a [`Ticket`]: [`released`](Self::released) waits until the
/// acknowledgement may be sent. Dropped (sent, or the client left), it counts as released.
pub struct AckHold {
    tracker: Arc<ServerState>,
    batch: u64,
    /// The batch whose event must be sent first, if any.
    after: Option<u64>,
}

impl Default for CommitTracker {
    fn default() -> Self {
        CommitTracker {
            batches: Mutex::new(Batches::default()),
            submitted: AtomicI64::new(0),
            committed: AtomicI64::new(0),
            events: broadcast::channel(COMMIT_EVENTS_BUFFERED_MAX).0,
            events_sent: watch::channel(0).0,
            closed: watch::channel(false).0,
        }
    }
}

impl CommitTracker {
    /// Tracked transactions accepted so far.
    pub fn submitted(&self) -> i64 {
        self.submitted.load(Ordering::Acquire)
    }

    /// Tracked transactions settled (committed or aborted) so far.
    pub fn committed(&self) -> i64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Accepts a tracked transaction into a batch (call it before the transaction is queued,
    /// so the counts never show it settled before it was submitted).
    pub fn accept(state: &Arc<ServerState>) -> (Ticket, AckHold) {
        let tracker = &state.commits;
        let mut batches = tracker.batches.lock();
        tracker.submitted.fetch_add(1, Ordering::AcqRel);
        let (batch, after) = match batches.in_flight {
            None => {
                batches.last_batch += 1;
                batches.in_flight = Some(batches.last_batch);
                batches.in_flight_units = 2;
                (batches.last_batch, None)
            }
            Some(in_flight) => {
                batches.open_units += 2;
                batches.open_members += 1;
                (in_flight + 1, Some(in_flight))
            }
        };
        let ticket = Ticket {
            tracker: state.clone(),
            batch,
        };
        let hold = AckHold {
            tracker: state.clone(),
            batch,
            after,
        };
        (ticket, hold)
    }

    /// One unit of `batch` is done; the last unit of the batch in flight sends its event and
    /// puts the next batch in flight.
    fn unit_done(&self, batch: u64) {
        let mut batches = self.batches.lock();
        if batches.in_flight != Some(batch) {
            batches.open_units -= 1;
            return;
        }
        batches.in_flight_units -= 1;
        let mut finished = batch;
        while batches.in_flight_units == 0 {
            // No receiver is fine: the event marks the batch for whoever listens.
            let _ = self.events.send(self.committed());
            self.events_sent.send_replace(finished);
            if batches.open_members == 0 {
                batches.in_flight = None;
                return;
            }
            // The next batch is in flight now. If every unit of it is done already (its
            // members settled and their clients left), its event is due at once too.
            finished += 1;
            batches.last_batch = finished;
            batches.in_flight = Some(finished);
            batches.in_flight_units = std::mem::take(&mut batches.open_units);
            batches.open_members = 0;
        }
    }

    /// The committed count at each batch's event, from now on.
    pub fn events(&self) -> broadcast::Receiver<i64> {
        self.events.subscribe()
    }

    /// Ends every event stream (at shutdown).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }
}

impl Ticket {
    /// The transaction's outcome is durable (or will never be known): count it as settled.
    pub fn settle(self) {
        let tracker = &self.tracker.commits;
        tracker.committed.fetch_add(1, Ordering::AcqRel);
        tracker.unit_done(self.batch);
    }
}

impl AckHold {
    /// Waits until the acknowledgement may be sent (the previous batch's event was sent).
    pub async fn released(mut self) {
        if let Some(after) = self.after {
            let mut sent = self.tracker.commits.events_sent.subscribe();
            // The sender lives as long as the tracker, which `self` keeps alive.
            let _ = sent.wait_for(|sent| *sent >= after).await;
            self.after = None;
        }
    }
}

impl Drop for AckHold {
    fn drop(&mut self) {
        self.tracker.commits.unit_done(self.batch);
    }
}

/// `GET /status/committed` and `GET /status/submitted`: the counts as 8 little-endian bytes
/// (`Accept: application/octet-stream`), JSON otherwise; `committed` with
/// `Accept: text/event-stream` streams an event per settled batch.
pub fn status_routes(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/status/committed", get(committed))
        .route("/status/submitted", get(submitted))
        .with_state(state)
}

async fn committed(State(state): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    if accepts(&headers, "text/event-stream") {
        return event_stream(&state).into_response();
    }
    count_response(&headers, state.commits.committed())
}

async fn submitted(State(state): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    count_response(&headers, state.commits.submitted())
}

/// Whether the request's `Accept` header names `media_type`.
fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().starts_with(media_type)))
}

fn count_response(headers: &HeaderMap, count: i64) -> Response {
    if accepts(headers, "application/octet-stream") {
        let bytes = count.to_le_bytes().to_vec();
        return ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response();
    }
    axum::Json(count).into_response()
}

/// The committed count at each batch's event, from now on, until the client leaves or the
/// server shuts down.
fn event_stream(
    state: &Arc<ServerState>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>> + use<>> {
    let events = state.commits.events();
    let closed = state.commits.closed.subscribe();
    let stream = futures::stream::unfold((events, closed), |(mut events, mut closed)| async move {
        loop {
            let received = tokio::select! {
                received = events.recv() => received,
                _ = closed.wait_for(|closed| *closed) => return None,
            };
            match received {
                Ok(count) => {
                    let event = Event::default().data(count.to_string());
                    return Some((Ok(event), (events, closed)));
                }
                // A reader too slow for the buffer loses events rather than the server holding
                // them; it still gets every later one.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let keep_alive = Duration::from_millis(SSE_KEEP_ALIVE_INTERVAL_MS);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(keep_alive).text("keep-alive"))
}
