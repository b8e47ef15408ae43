//! The commit tracker's batch rule, step by step: acknowledgements are held while an earlier
//! batch is in flight, and a batch's event waits until each of its members is settled and
//! acknowledged.

use futures::FutureExt;
use std::sync::Arc;
use tokio::sync::broadcast::error::TryRecvError;
use vmsdb::ServerLimits;
use vmsdb::commit_tracker::CommitTracker;
use vmsdb::state::ServerState;

#[test]
fn acknowledgements_wait_for_the_previous_batch_and_events_for_their_members() {
    // Goal: an acknowledgement is never released while an earlier batch's event is still to
    // come, and no event is sent while a member of its batch is unsettled or unacknowledged.
    let state = Arc::new(ServerState::new(None, ServerLimits::default()));
    let mut events = state.commits.events();

    // A finds nothing in flight: its batch (1) starts, and it is acknowledged at once.
    let (a, a_ack) = CommitTracker::accept(&state);
    assert!(a_ack.released().now_or_never().is_some());
    // B comes while batch 1 is in flight: it joins batch 2 and its acknowledgement waits.
    let (b, b_ack) = CommitTracker::accept(&state);
    let mut b_ack = Box::pin(b_ack.released());
    assert!((&mut b_ack).now_or_never().is_none());
    b.settle();
    assert_eq!(
        events.try_recv(),
        Err(TryRecvError::Empty),
        "A is not settled"
    );
    assert!((&mut b_ack).now_or_never().is_none());

    // A settles: batch 1's event counts both settled transactions, and B may be acknowledged.
    a.settle();
    assert_eq!(events.try_recv(), Ok(2));
    // C comes while batch 2 (B, settled but not yet acknowledged) is in flight.
    let (c, c_ack) = CommitTracker::accept(&state);
    let mut c_ack = Box::pin(c_ack.released());
    assert!((&mut c_ack).now_or_never().is_none());
    assert_eq!(
        events.try_recv(),
        Err(TryRecvError::Empty),
        "B not acknowledged yet"
    );
    assert!(b_ack.now_or_never().is_some());
    assert_eq!(
        events.try_recv(),
        Ok(2),
        "batch 2's event, once B was acknowledged"
    );

    // C's acknowledgement is released by batch 2's event; its own event waits for C.
    assert!((&mut c_ack).now_or_never().is_some());
    drop(c_ack);
    assert_eq!(events.try_recv(), Err(TryRecvError::Empty));
    c.settle();
    assert_eq!(events.try_recv(), Ok(3));
    assert_eq!(
        (state.commits.submitted(), state.commits.committed()),
        (3, 3)
    );

    // A client that leaves before its acknowledgement counts as acknowledged.
    let (d, d_ack) = CommitTracker::accept(&state);
    let (e, e_ack) = CommitTracker::accept(&state);
    drop(e_ack);
    d.settle();
    e.settle();
    assert_eq!(
        events.try_recv(),
        Err(TryRecvError::Empty),
        "D not acknowledged yet"
    );
    drop(d_ack);
    assert_eq!(events.try_recv(), Ok(5));
    assert_eq!(
        events.try_recv(),
        Ok(5),
        "E's batch: settled, its client gone"
    );
    assert_eq!(events.try_recv(), Err(TryRecvError::Empty));
}
