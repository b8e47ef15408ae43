//! The reply stage: releases each epoch's replies once the durable watermark reaches the epoch,
//! and hands the epoch's outbox messages to the [`OutboxSink`] first.

use crate::app::App;
use crate::error::TxnError;
use crate::ids::Tid;
use crate::outcome::Outcome;
use crate::partition::OutboxMsg;
use crate::query::QueryResult;
use crate::runtime::client::{QueryReply, TxnReply};
use crate::runtime::stats::RuntimeStats;
use crate::sync::DurableWatermark;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::sync::mpsc;

/// Where transactional-outbox messages go (see `TxnCtx::outbox`).
///
/// `deliver` is called for every message of a committed transaction, after its epoch is
/// durable, in serial order, from the runtime's reply stage: it must not block for long (hand
/// the message to a queue). After a restart, messages of the epochs replayed from the log are
/// delivered again with the same TIDs: delivery is at-least-once, and a sink that ignores
/// `(tid, index)` pairs it has already seen gets each message exactly once.
pub trait OutboxSink: Send + Sync + 'static {
    /// Delivers message number `index` (within its transaction) of transaction `tid`.
    fn deliver(&self, tid: Tid, index: u32, topic: &str, payload: &[u8]);
}

pub(super) struct ReplyBatch<A: App> {
    pub(super) epoch: u64,
    pub(super) outbox: Vec<OutboxMsg>,
    pub(super) txns: Vec<(TxnReply<A>, Outcome<A::Output>)>,
    pub(super) queries: Vec<(QueryReply, QueryResult)>,
}

/// The sequencer's end of the reply stage. It counts the replies it hands over as waiting
/// (`RuntimeStats::replies_waiting`) until their epoch is durable and the reply stage is about
/// to release them, so the sequencer knows how many requests of earlier epochs are still
/// outstanding (the epoch split).
pub(super) struct ReplySender<A: App> {
    tx: mpsc::UnboundedSender<ReplyBatch<A>>,
    stats: Arc<RuntimeStats>,
}

impl<A: App> ReplySender<A> {
    pub(super) fn new(tx: mpsc::UnboundedSender<ReplyBatch<A>>, stats: Arc<RuntimeStats>) -> Self {
        ReplySender { tx, stats }
    }

    /// Hands `batch` to the reply stage (dropped, with its replies, once the stage is gone).
    pub(super) fn send(&self, batch: ReplyBatch<A>) {
        let replies = batch.txns.len();
        self.stats
            .replies_waiting
            .fetch_add(replies, Ordering::Relaxed);
        if self.tx.send(batch).is_err() {
            self.stats
                .replies_waiting
                .fetch_sub(replies, Ordering::Relaxed);
        }
    }
}

/// Hands an epoch's outbox messages (of committed transactions, in serial order) to the sink.
pub(super) fn deliver_outbox(sink: &dyn OutboxSink, epoch: u64, messages: &[OutboxMsg]) {
    let mut index = 0u32;
    for (i, m) in messages.iter().enumerate() {
        index = if i > 0 && messages[i - 1].seq == m.seq {
            index + 1
        } else {
            0
        };
        sink.deliver(Tid::new(epoch, m.seq), index, &m.topic, &m.payload);
    }
}

/// Releases each epoch's replies once the durable watermark reaches it (the reply hand-off),
/// counting how long each batch waited for it in `stats` (two clock reads per epoch).
pub(super) async fn reply_loop<A: App>(
    mut rx: mpsc::UnboundedReceiver<ReplyBatch<A>>,
    durable: Arc<DurableWatermark>,
    outbox: Option<Arc<dyn OutboxSink>>,
    stats: Arc<RuntimeStats>,
) {
    while let Some(batch) = rx.recv().await {
        let replies = batch.txns.len();
        let waiting = Instant::now();
        let durable_or_failed = durable.wait(batch.epoch).await;
        // No longer waiting: counted off before they go, so a client that already has its
        // reply and comes back is never counted twice by the epoch split. (Until it comes back
        // it is counted nowhere, which can only make a split come a little earlier; the floor
        // on the requests elsewhere bounds that.)
        stats.replies_waiting.fetch_sub(replies, Ordering::Relaxed);
        let waited = waiting.elapsed().as_nanos() as u64;
        stats.reply_batches.fetch_add(1, Ordering::Relaxed);
        stats
            .reply_durable_wait_nanos
            .fetch_add(waited, Ordering::Relaxed);
        match durable_or_failed {
            Ok(()) => {
                // The reply hand-off's one promise: nothing of epoch e leaves before e is durable.
                debug_assert!(durable.durable_epoch() >= batch.epoch);
                if let Some(sink) = &outbox {
                    deliver_outbox(sink.as_ref(), batch.epoch, &batch.outbox);
                }
                for (reply, outcome) in batch.txns {
                    reply.send(Ok(outcome));
                }
                for (reply, result) in batch.queries {
                    let _ = reply.send(result);
                }
            }
            Err(failed) => {
                let why = failed.message().to_string();
                for (reply, _) in batch.txns {
                    reply.send(Err(TxnError::Storage(why.clone())));
                }
                for (reply, _) in batch.queries {
                    let _ = reply.send(Err(TxnError::Storage(why.clone())));
                }
            }
        }
    }
}
