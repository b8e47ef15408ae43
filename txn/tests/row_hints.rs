//! Row hints (`App::row_hint`, `App::row_hints`) are a performance hint only: a partition
//! prefetches the rows they name before running a wave's steps, the serial pass those of the
//! transactions a few ahead of the one it runs, and the handlers still look their rows up
//! themselves. A
//! correct, a wrong (another key, or a key of another type), a missing and a panicking hint must
//! give the same outcomes and the same state, live and when the same log is replayed.

use crate::common::{Recorded, assert_matches_serial_replay, copy_of_log, rng, seed, start_on};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use txn::storage::{MemoryStorage, Storage};
use txn::{App, AppBuilder, AppDef, RowHint, ServiceRef, Table};

/// Moves `amount` from row `from` to row `to` of one hashed table: the first step (routed by
/// `from`) debits, opening a missing row with 100, or deletes the row when `amount` is 0; the
/// second (routed by `to`) credits and returns both balances.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Move {
    from: u64,
    to: u64,
    amount: i64,
    credit: bool,
}

impl Move {
    /// The row the step reads.
    fn key(&self) -> u64 {
        if self.credit { self.to } else { self.from }
    }
}

const CORRECT: u8 = 0;
const OTHER_KEY: u8 = 1;
const OTHER_TYPE: u8 = 2;
const MISSING: u8 = 3;
const PANICS: u8 = 4;

/// The application, with hints given as `MODE` says.
struct HintApp<const MODE: u8>;

impl<const MODE: u8> App for HintApp<MODE> {
    type Event = Move;
    type Output = (i64, i64);

    fn row_hint(event: &Move) -> Option<RowHint> {
        let key = event.key();
        match MODE {
            CORRECT => Some(RowHint::of(&key)),
            // Another row's key, which may exist or not.
            OTHER_KEY => Some(RowHint::of(&(key.wrapping_mul(7) + 1))),
            // The same number as another key type: no table is keyed by it.
            OTHER_TYPE => Some(RowHint::of(&(key as u32))),
            // Application code that fails for some events (one key in five).
            PANICS if key.is_multiple_of(5) => panic!("no hint for key {key}"),
            PANICS => Some(RowHint::of(&key)),
            _ => None,
        }
    }

    /// Both rows of the move, for the serial pass's prefetches: the first as `row_hint` gives
    /// it (so a panic there panics here too), the second, routed to its own partition, right
    /// or wrong as `MODE` says.
    fn row_hints(event: &Move, hints: &mut Vec<RowHint>) {
        hints.extend(Self::row_hint(event));
        match MODE {
            CORRECT | PANICS => hints.push(RowHint::routed(&event.to)),
            OTHER_KEY => hints.push(RowHint::routed(&(event.to.wrapping_mul(7) + 1))),
            OTHER_TYPE => hints.push(RowHint::routed(&(event.to as u32))),
            _ => {}
        }
    }
}

/// Keys drawn from `0..N_KEYS`: few enough for conflicts, deletes and re-inserts.
const N_KEYS: u64 = 400;

fn build<const MODE: u8>() -> (Arc<AppDef<HintApp<MODE>>>, ServiceRef) {
    let mut b = AppBuilder::<HintApp<MODE>>::new();
    let svc = b.service("accounts", 2);
    let table: Table<u64, i64> = b.table(svc, "balances");
    b.handler(svc, move |ctx, ev| {
        let balance = ctx.get(table, &ev.key())?;
        if ev.credit {
            let to = balance.unwrap_or(0) + ev.amount;
            ctx.put(table, ev.to, to)?;
            let from = ctx.get(table, &ev.from)?.unwrap_or(-1);
            ctx.set_output((from, to));
            return Ok(());
        }
        let balance = balance.unwrap_or(100);
        if ev.amount == 0 {
            ctx.delete(table, &ev.from)?;
            ctx.set_output((balance, 0));
            return Ok(());
        }
        if balance < ev.amount {
            return Err(ctx.abort(format!("{} holds {balance} < {}", ev.from, ev.amount)));
        }
        ctx.put(table, ev.from, balance - ev.amount)?;
        let next = Move {
            credit: true,
            ..ev.clone()
        };
        ctx.emit_raw(svc, &ev.to, next);
        Ok(())
    });
    (b.build().expect("valid test app"), svc)
}

/// Clients each submitting their moves one at a time, many at once so that a wave holds more
/// steps than the prefetch distance; every outcome recorded, and the final state hash.
async fn live_run<const MODE: u8>(
    app: Arc<AppDef<HintApp<MODE>>>,
    svc: ServiceRef,
    storage: MemoryStorage,
    seed: u64,
) -> (Vec<Recorded<HintApp<MODE>>>, u64) {
    let rt = start_on(app, storage).await;
    let mut tasks = Vec::new();
    for c in 0..48u64 {
        let client = rt.client();
        tasks.push(tokio::spawn(async move {
            let mut rng = rng(seed.wrapping_add(c));
            let mut records = Vec::new();
            for _ in 0..25 {
                let ev = Move {
                    from: rng.random_range(0..N_KEYS),
                    to: rng.random_range(0..N_KEYS),
                    // 0 (a delete) about one time in twenty.
                    amount: rng.random_range(0..20),
                    credit: false,
                };
                let outcome = client.submit_raw(svc, &ev.from, ev.clone()).await.unwrap();
                records.push(Recorded::<HintApp<MODE>> {
                    pos: outcome.serial_pos.expect("no move exhausts its retries"),
                    service: svc,
                    partition: svc.partition_of(&ev.from),
                    event: ev,
                    result: outcome.result,
                });
            }
            records
        }));
    }
    let mut history = Vec::new();
    for t in tasks {
        history.extend(t.await.unwrap());
    }
    let hash = rt.client().state_hash().await.unwrap();
    rt.shutdown().await;
    (history, hash)
}

/// The state hash after replaying `storage`'s log (a copy of it) with hints given as `MODE` says.
async fn replayed_hash<const MODE: u8>(storage: &MemoryStorage) -> u64 {
    let (app, _) = build::<MODE>();
    let rt = start_on(app, copy_of_log(storage)).await;
    let hash = rt.client().state_hash().await.unwrap();
    rt.shutdown().await;
    hash
}

/// A live run with hints given as `MODE` says: every outcome and the final state match the
/// serial replay of the same requests in the reported order. Returns the log and the hash.
async fn check_live<const MODE: u8>(seed: u64) -> (MemoryStorage, u64) {
    let (app, svc) = build::<MODE>();
    let storage = MemoryStorage::new();
    let (history, hash) = live_run(app.clone(), svc, storage.clone(), seed).await;
    let committed = assert_matches_serial_replay(app, history, hash, seed);
    assert!(
        committed > 100,
        "seed {seed}: only {committed} moves committed"
    );
    (storage, hash)
}

// Goal: a wrong, missing or panicking row hint changes no outcome and no state: live runs with
// correct, wrong-key, wrong-type, missing and panicking hints each match the serial replay of
// their requests, and the log of the correct-hint run replays to the same state hash under every
// kind of hint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_and_missing_hints_change_nothing() {
    let seed = seed("row-hints");
    let (storage, original) = check_live::<CORRECT>(seed).await;
    check_live::<OTHER_KEY>(seed).await;
    check_live::<OTHER_TYPE>(seed).await;
    check_live::<MISSING>(seed).await;
    check_live::<PANICS>(seed).await;
    let n_epochs = storage.last_epoch().unwrap().unwrap_or(0);
    assert!(n_epochs > 3, "the run should span epochs, got {n_epochs}");
    let replays = [
        replayed_hash::<CORRECT>(&storage).await,
        replayed_hash::<OTHER_KEY>(&storage).await,
        replayed_hash::<OTHER_TYPE>(&storage).await,
        replayed_hash::<MISSING>(&storage).await,
        replayed_hash::<PANICS>(&storage).await,
    ];
    assert_eq!(
        replays, [original; 5],
        "seed {seed}: replaying {n_epochs} epochs with correct, other-key, other-type, \
         missing and panicking hints"
    );
}

/// A `#[service]` application: one keyed event type and one without a key (never run: only
/// its generated hints are looked at).
#[allow(dead_code)]
mod typed {
    use serde::{Deserialize, Serialize};
    use txn::{HandlerResult, TxnCtx};

    #[txn::app(services(Stock), output = i64, event = ShopLog)]
    pub struct Shop;

    #[derive(Clone, Debug, Serialize, Deserialize, txn::Event)]
    pub struct Restock {
        #[key]
        pub product: u64,
        pub qty: i64,
    }

    /// No routing key: sent to a named partition.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct Recount {
        pub partition: u32,
    }

    /// Routed by `from`, and lists both rows it touches (`RowKeys`).
    #[derive(Clone, Debug, Serialize, Deserialize, txn::Event)]
    pub struct Swap {
        #[key]
        pub from: u64,
        pub to: u64,
    }

    impl txn::RowKeys<u64> for Swap {
        fn row_keys(&self, each: &mut dyn FnMut(&u64)) {
            each(&self.from);
            each(&self.to);
        }
    }

    pub struct Stock;

    #[txn::service(key = u64)]
    impl Stock {
        #[txn::handler]
        fn restock(&self, ctx: &mut TxnCtx<'_, Shop>, ev: &Restock) -> HandlerResult {
            ctx.set_output(ev.qty);
            Ok(())
        }

        #[txn::handler]
        fn recount(&self, _ctx: &mut TxnCtx<'_, Shop>, _ev: &Recount) -> HandlerResult {
            Ok(())
        }

        #[txn::handler]
        fn swap(&self, _ctx: &mut TxnCtx<'_, Shop>, _ev: &Swap) -> HandlerResult {
            Ok(())
        }
    }
}

// Goal: `#[service]` and `#[app]` give an event's routing key as its row hint, and no hint for an
// event type without a key.
#[test]
fn service_events_hint_their_routing_key() {
    use typed::{Recount, Restock, Shop, ShopLog, StockEvent};
    let restock = ShopLog::Stock(StockEvent::Restock(Restock { product: 7, qty: 1 }));
    assert_eq!(Shop::row_hint(&restock), Some(RowHint::of(&7u64)));
    assert_ne!(Shop::row_hint(&restock), Some(RowHint::of(&8u64)));
    assert_ne!(Shop::row_hint(&restock), Some(RowHint::of(&7u32)));
    let recount = ShopLog::Stock(StockEvent::Recount(Recount { partition: 0 }));
    assert_eq!(Shop::row_hint(&recount), None);
}

// Goal: `#[service]` and `#[app]` give every key an event type lists (`RowKeys`) as its row
// hints, in order, and otherwise the routing key's hint, or none.
#[test]
fn service_events_hint_every_listed_row() {
    use typed::{Recount, Restock, Shop, ShopLog, StockEvent, Swap};
    let hints = |event: &ShopLog| {
        let mut hints = Vec::new();
        Shop::row_hints(event, &mut hints);
        hints
    };
    let swap = ShopLog::Stock(StockEvent::Swap(Swap { from: 3, to: 9 }));
    // Routed: the second row may be in another partition than the event's.
    assert_eq!(
        hints(&swap),
        [RowHint::routed(&3u64), RowHint::routed(&9u64)]
    );
    assert_ne!(RowHint::routed(&3u64), RowHint::of(&3u64));
    // The routing key alone is still `row_hint`'s.
    assert_eq!(Shop::row_hint(&swap), Some(RowHint::of(&3u64)));
    let restock = ShopLog::Stock(StockEvent::Restock(Restock { product: 7, qty: 1 }));
    assert_eq!(hints(&restock), [RowHint::of(&7u64)]);
    let recount = ShopLog::Stock(StockEvent::Recount(Recount { partition: 0 }));
    assert_eq!(hints(&recount), []);
}
