//! The store records what application wrote it: a restart with other partition counts, other
//! tables or another on-disk format is refused before recovery reads a single epoch, and keys
//! are routed by one pinned function.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use txn::fingerprint::{STORE_FORMAT_VERSION, accept_renamed_types};
use txn::storage::{FaultOp, FaultyStorage, MemoryStorage, Storage};
use txn::{App, AppBuilder, AppDef, Runtime, RuntimeConfig, ServiceRef, Table, TxnError};

struct Shop;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Put(u64);

impl App for Shop {
    type Event = Put;
    type Output = ();
}

/// A service `stock` with `n_partitions` partitions and the tables `tables`, in that order; the
/// handler writes the event's key into the first table.
fn shop(n_partitions: u32, tables: &[&str]) -> (Arc<AppDef<Shop>>, ServiceRef) {
    let mut b = AppBuilder::<Shop>::new();
    let stock = b.service("stock", n_partitions);
    let handles: Vec<_> = tables
        .iter()
        .map(|name| b.table::<u64, i64>(stock, name))
        .collect();
    let first = handles[0];
    b.handler(stock, move |ctx, Put(key)| ctx.put(first, *key, 1));
    (b.build().expect("valid test app"), stock)
}

fn config(storage: impl Storage) -> RuntimeConfig {
    RuntimeConfig {
        storage: Arc::new(storage),
        ..RuntimeConfig::in_memory()
    }
}

/// Runs `shop(n_partitions, tables)` once on `storage`, committing a few requests.
async fn write_store(storage: &MemoryStorage, n_partitions: u32, tables: &[&str]) {
    let (app, stock) = shop(n_partitions, tables);
    let rt = Runtime::start(app, config(storage.clone())).await.unwrap();
    for key in 0..10u64 {
        let outcome = rt.client().submit_raw(stock, &key, Put(key)).await.unwrap();
        assert!(outcome.committed());
    }
    rt.shutdown().await;
}

/// Starts `shop(n_partitions, tables)` on `storage` with every read of the log and the
/// checkpoints failing: a refusal must come before recovery reads anything.
async fn start_refused(storage: &MemoryStorage, n_partitions: u32, tables: &[&str]) -> TxnError {
    let guarded = FaultyStorage::new(storage.clone());
    guarded.fail_always(FaultOp::ReadEpochs);
    guarded.fail_always(FaultOp::ReadCheckpoint);
    let (app, _) = shop(n_partitions, tables);
    match Runtime::start(app, config(guarded.clone())).await {
        Ok(rt) => {
            rt.shutdown().await;
            panic!("a runtime started on a store written by another application");
        }
        Err(err) => {
            assert_eq!(
                guarded.n_injected(FaultOp::ReadEpochs),
                0,
                "the log was read"
            );
            assert_eq!(
                guarded.n_injected(FaultOp::ReadCheckpoint),
                0,
                "a checkpoint was read"
            );
            err
        }
    }
}

// Goal: 8 partitions on a store written with 4 is refused, naming both counts and saying what to
// do, before recovery reads the log; the original application still starts afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_partition_count_is_refused_before_recovery() {
    let storage = MemoryStorage::new();
    write_store(&storage, 4, &["items"]).await;
    let err = start_refused(&storage, 8, &["items"]).await;
    let TxnError::StoreMismatch(differences) = &err else {
        panic!("expected StoreMismatch, got {err:?}");
    };
    assert_eq!(
        differences,
        &["service `stock`: 4 partitions in the store, 8 in the application".to_string()]
    );
    let message = err.to_string();
    assert!(message.contains("docs/storage.md"), "{message}");
    assert!(message.contains("new, empty store"), "{message}");

    let (app, _) = shop(4, &["items"]);
    let rt = Runtime::start(app, config(storage.clone())).await.unwrap();
    assert_eq!(rt.recovery_report().epochs_replayed, 10);
    rt.shutdown().await;
}

// Goal: a table declared before an existing one is refused by name (it would shift the stored
// table index of every later table), as are a removed table and another key type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_changes_are_refused_by_name() {
    let storage = MemoryStorage::new();
    write_store(&storage, 4, &["items", "prices"]).await;
    let err = start_refused(&storage, 4, &["orders", "items", "prices"]).await;
    let TxnError::StoreMismatch(differences) = &err else {
        panic!("expected StoreMismatch, got {err:?}");
    };
    assert_eq!(
        differences,
        &["table `orders` added before `items` in service `stock`".to_string()]
    );
    let err = start_refused(&storage, 4, &["items"]).await;
    assert!(
        err.to_string()
            .contains("table `prices` is in the store but not in the application"),
        "{err}"
    );
    let err = start_refused(&storage, 4, &["prices", "items"]).await;
    assert!(err.to_string().contains("another order"), "{err}");
}

// Goal: a store of another format version is refused with both versions named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_format_version_is_refused_naming_both() {
    let storage = MemoryStorage::new();
    let mut record = (STORE_FORMAT_VERSION + 7).to_le_bytes().to_vec();
    record.extend_from_slice(b"a fingerprint of a future format");
    storage.write_store_info(&record).unwrap();
    let err = start_refused(&storage, 4, &["items"]).await;
    let TxnError::StoreFormat(message) = &err else {
        panic!("expected StoreFormat, got {err:?}");
    };
    let theirs = format!("version {}", STORE_FORMAT_VERSION + 7);
    let ours = format!("version {STORE_FORMAT_VERSION}");
    assert!(
        message.contains(&theirs) && message.contains(&ours),
        "{message}"
    );
}

// Goal: a store holding data but no record (written before the record existed) is refused;
// a new, empty store gets the record at its first start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_without_a_record_is_adopted_only_when_empty() {
    let legacy = MemoryStorage::new();
    legacy
        .append_epoch(1, b"an epoch of an old format")
        .unwrap();
    let err = start_refused(&legacy, 4, &["items"]).await;
    assert!(
        matches!(&err, TxnError::StoreFormat(m) if m.contains("no store info record")),
        "{err:?}"
    );

    let fresh = MemoryStorage::new();
    let (app, _) = shop(4, &["items"]);
    let rt = Runtime::start(app, config(fresh.clone())).await.unwrap();
    rt.shutdown().await;
    let record = fresh
        .read_store_info()
        .unwrap()
        .expect("a record was written");
    assert_eq!(record[..4], STORE_FORMAT_VERSION.to_le_bytes());
}

// Goal: key routing is one fixed function whose answers never change (partitions are persisted):
// known keys go to known partitions through `route::partition_of` and `ServiceRef`, the same as
// actor-runtime's, and an integer routes the same whatever its width (platform independence).
#[test]
fn routing_is_pinned_by_golden_values() {
    let observed = [
        txn::route::partition_of(&0u64, 1024),
        txn::route::partition_of(&42u64, 1024),
        txn::route::partition_of(&u64::MAX, 1024),
        txn::route::partition_of("customer-17", 1024),
        txn::route::partition_of(&(3u32, 9u32), 1024),
        txn::route::partition_of(&[1u8, 2, 3][..], 1024),
    ];
    assert_eq!(observed, [989, 232, 993, 355, 851, 67]);
    let (_, stock) = shop(8, &["items"]);
    let keys: Vec<u32> = (0..12u64).map(|k| stock.partition_of(&k)).collect();
    assert_eq!(keys, GOLDEN_STOCK);
    for key in [0u64, 7, 1 << 40] {
        assert_eq!(
            stock.partition_of(&key),
            actor_runtime_partition(key, 8),
            "ServiceRef::partition_of and actor-runtime disagree on {key}"
        );
    }
    assert_eq!(stock.partition_of(&7u32), stock.partition_of(&7u64));
    assert_eq!(stock.partition_of(&7usize), stock.partition_of(&7u64));
}

/// Partitions of keys 0..12 of an 8-partition service.
const GOLDEN_STOCK: [u32; 12] = [7, 3, 3, 0, 6, 7, 1, 4, 4, 3, 4, 6];

fn actor_runtime_partition(key: u64, n: u32) -> u32 {
    actor_runtime::partition_of(&key, n)
}

/// A key type that encodes and hashes exactly like `u64`: a rename as far as the store goes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
struct Sku(u64);

/// `shop(n_partitions, &["items"])` with `Sku` keys.
fn sku_shop(n_partitions: u32) -> (Arc<AppDef<Shop>>, ServiceRef, Table<Sku, i64>) {
    let mut b = AppBuilder::<Shop>::new();
    let stock = b.service("stock", n_partitions);
    let items = b.table::<Sku, i64>(stock, "items");
    b.handler(stock, move |ctx, Put(key)| ctx.put(items, Sku(*key), 1));
    (b.build().expect("valid test app"), stock, items)
}

// Goal: another key type name is refused by name; `accept_renamed_types` records the new names
// only when nothing but type names differ, after which the renamed application recovers the
// store's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_renames_are_refused_then_accepted_explicitly() {
    let storage = MemoryStorage::new();
    write_store(&storage, 4, &["items"]).await;
    let (app, stock, items) = sku_shop(4);
    let err = Runtime::start(app.clone(), config(storage.clone()))
        .await
        .err()
        .expect("a store written with u64 keys was opened with Sku keys");
    let renamed = format!(
        "table `stock.items`: key type `u64` in the store, `{}` in the application",
        std::any::type_name::<Sku>()
    );
    assert!(err.to_string().contains(&renamed), "{err}");

    let (wider, _, _) = sku_shop(8);
    let refused = accept_renamed_types(&wider, &storage)
        .expect_err("a partition count change was accepted as a rename");
    assert!(
        refused.to_string().contains("4 partitions in the store"),
        "{refused}"
    );

    let accepted = accept_renamed_types(&app, &storage).unwrap();
    assert_eq!(accepted, vec![renamed.to_string()]);
    let rt = Runtime::start(app, config(storage.clone())).await.unwrap();
    let rows = rt
        .client()
        .query(&[stock], move |view| {
            (0..10)
                .filter(|k| view.get(items, &Sku(*k)).is_some())
                .count()
        })
        .await
        .unwrap();
    assert_eq!(
        rows.iter().sum::<usize>(),
        10,
        "the rows written with u64 keys"
    );
    rt.shutdown().await;
}

/// Two versions of one typed application: the second renamed its event type `Put` to `Store`.
mod typed {
    use serde::{Deserialize, Serialize};
    use txn::{HandlerResult, Svc, Table, TxnCtx, handler, service};

    pub mod v1 {
        use super::*;

        #[derive(Clone, Debug, Serialize, Deserialize, txn::Event)]
        pub struct Put {
            #[key]
            pub key: u64,
        }

        #[txn::app(services(Stock), output = ())]
        pub struct Shop;

        pub struct Stock {
            pub items: Table<u64, i64>,
        }

        #[service(key = u64)]
        impl Stock {
            #[handler]
            fn put(&self, ctx: &mut TxnCtx<'_, Shop>, ev: &Put) -> HandlerResult {
                ctx.put(self.items, ev.key, 1)
            }
        }

        pub fn app() -> (std::sync::Arc<txn::AppDef<Shop>>, Svc<Stock>) {
            let mut b = txn::AppBuilder::<Shop>::new();
            let stock = b.add_service::<Stock>("stock", 4);
            let items = b.table(*stock, "items");
            Stock { items }.register(&mut b, stock);
            (b.build().unwrap(), stock)
        }
    }

    pub mod v2 {
        use super::*;

        #[derive(Clone, Debug, Serialize, Deserialize, txn::Event)]
        pub struct Store {
            #[key]
            pub key: u64,
        }

        #[txn::app(services(Stock), output = ())]
        pub struct Shop;

        pub struct Stock {
            pub items: Table<u64, i64>,
        }

        #[service(key = u64)]
        impl Stock {
            #[handler]
            fn store(&self, ctx: &mut TxnCtx<'_, Shop>, ev: &Store) -> HandlerResult {
                ctx.put(self.items, ev.key, 1)
            }
        }

        pub fn app() -> std::sync::Arc<txn::AppDef<Shop>> {
            let mut b = txn::AppBuilder::<Shop>::new();
            let stock = b.add_service::<Stock>("stock", 4);
            let items = b.table(*stock, "items");
            Stock { items }.register(&mut b, stock);
            b.build().unwrap()
        }
    }
}

// Goal: the log spells typed events by their type names, so a store whose log holds `Put`
// events is refused to an application that renamed `Put` — even through
// `accept_renamed_types`, which only papers over Rust type names the data does not spell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_event_type_is_refused_even_as_a_rename() {
    let storage = MemoryStorage::new();
    let (app, stock) = typed::v1::app();
    let rt = Runtime::start(app, config(storage.clone())).await.unwrap();
    let put = typed::v1::Put { key: 7 };
    assert!(rt.client().submit(stock, put).await.unwrap().committed());
    rt.shutdown().await;

    let renamed = typed::v2::app();
    let err = Runtime::start(renamed.clone(), config(storage.clone()))
        .await
        .err()
        .expect("a store of `Put` events was opened by an application without `Put`");
    let lost = "service `stock`: event type `Put` is in the store's log format but not in the \
                application";
    assert!(err.to_string().contains(lost), "{err}");
    let refused = accept_renamed_types(&renamed, &storage).expect_err("accepted as a rename");
    assert!(refused.to_string().contains(lost), "{refused}");
}
