//! The marketplace's served queries (`dashboard`, `product`, `audit`) with its partitions on two
//! "nodes": a runtime on node "a" drives the epochs, every other global partition lives on node
//! "b" (a `PartitionHost` behind a `LoopbackLink`, every batch and reply encoded), as
//! `vmsdb node --spread-partitions` places them.
//!
//! Checked: while checkouts, deliveries and price updates run, every audit taken through the
//! served query reports no violation; at the end the served answers (JSON) equal those of the
//! same log replayed in one process; a closure query over the same partitions is still refused
//! (`QueryNotLocal`), which is what the served queries were before they were registered. The
//! operations print their seed; `TXN_TEST_SEED=<n>` replays them.

use crate::common::seed;
use serde_json::Value;
use services::load::submit_all;
use services::marketplace::data::MarketOp;
use services::marketplace::{MarketApp, MarketConfig, Marketplace, Mix};
use std::sync::Arc;
use std::time::Duration;
use txn::storage::{MemoryStorage, Storage};
use txn::{
    Client, ClusterPlacement, LoopbackLink, PartitionHost, RecoverFrom, Runtime, RuntimeConfig,
    TxnError,
};
use vmsdb::ServedApp;
use vmsdb::apps::{AppOptions, MarketServed};

const NODES: [&str; 2] = ["a", "b"];
/// Partitions per service (eight services).
const N_PARTITIONS: u32 = 2;
const N_WRITERS: u64 = 3;
const OPS_PER_WRITER: usize = 40;

fn options() -> AppOptions {
    AppOptions {
        partitions: Some(N_PARTITIONS),
        ycsb_keys: 0,
    }
}

/// The marketplace `MarketServed::build` serves, to make requests for it.
fn market() -> Marketplace {
    Marketplace::new(MarketConfig {
        n_partitions: N_PARTITIONS,
        payment_failure_pct: 0,
        ..MarketConfig::default()
    })
    .unwrap()
}

/// Global partition `gp` lives on node `gp % 2`.
fn owners() -> Vec<String> {
    (0..8 * N_PARTITIONS)
        .map(|gp| NODES[gp as usize % NODES.len()].to_string())
        .collect()
}

/// A runtime on "a" over `storage`, with "b"'s partitions on a host behind a loopback link; each
/// node builds the served application itself, as a node process does.
async fn start_two(
    storage: Arc<MemoryStorage>,
) -> (
    MarketServed,
    Runtime<MarketApp>,
    Arc<PartitionHost<MarketApp>>,
) {
    let link = LoopbackLink::new();
    let on_b = MarketServed::build(options()).unwrap();
    let host = Arc::new(PartitionHost::start(on_b.app_def().clone(), "b", &owners()).unwrap());
    let serving = host.clone();
    link.add_node("b", move |bytes| {
        let host = serving.clone();
        async move { host.handle(bytes).await }
    });
    let placement = ClusterPlacement {
        phase_timeout: Duration::from_secs(30),
        ..ClusterPlacement::new("a", owners(), Arc::new(link))
    };
    let config = RuntimeConfig {
        checkpoint_every_epochs: 0,
        ..RuntimeConfig::with_storage(storage)
    };
    let served = MarketServed::build(options()).unwrap();
    let rt = Runtime::start(served.app_def().clone(), config.cluster(placement))
        .await
        .unwrap();
    (served, rt, host)
}

/// The served query `name`'s JSON answer to `body`.
async fn ask(served: &MarketServed, client: &Client<MarketApp>, name: &str, body: &str) -> Value {
    match served.query(client, name, body.as_bytes()) {
        Ok(answer) => answer
            .await
            .unwrap_or_else(|e| panic!("query {name} {body} failed: {e:?}")),
        Err(e) => panic!("query {name} {body} was refused: {e:?}"),
    }
}

/// One writer's operations; returns its committed checkouts. Every fifth operation it asks the
/// served audit, which must find no violation at any snapshot.
async fn write(served: Arc<MarketServed>, client: Client<MarketApp>, seed: u64) -> u64 {
    let market = market();
    let mut ops = market.op_gen(seed, Mix::DEFAULT, 0.0).unwrap();
    let mut committed_checkouts = 0;
    for i in 0..OPS_PER_WRITER {
        let op = ops.next_op();
        let is_checkout = matches!(op, MarketOp::Checkout { .. });
        if let Some(request) = market.request(op) {
            let outcome = client.submit_request(request).await.unwrap();
            committed_checkouts += u64::from(is_checkout && outcome.committed());
        }
        if i % 5 == 0 {
            let audit = ask(&served, &client, "audit", "{}").await;
            assert_eq!(audit["violations"], 0, "seed {seed}: {audit:#}");
        }
    }
    committed_checkouts
}

/// The answers compared between the two runs: the audit (criterion 8 included), every seller's
/// dashboard and a few products.
async fn final_answers(
    served: &MarketServed,
    client: &Client<MarketApp>,
    committed_checkouts: u64,
) -> Vec<Value> {
    let market = market();
    let body = format!("{{\"committed_checkouts\": {committed_checkouts}}}");
    let mut answers = vec![ask(served, client, "audit", &body).await];
    for seller_id in 0..market.config.n_sellers {
        let body = format!("{{\"seller_id\": {seller_id}}}");
        answers.push(ask(served, client, "dashboard", &body).await);
    }
    for product_id in [0, 7, 10, 555, 999, 1000] {
        let seller_id = market.seller_of(product_id);
        let body = format!("{{\"seller_id\": {seller_id}, \"product_id\": {product_id}}}");
        answers.push(ask(served, client, "product", &body).await);
    }
    answers
}

/// A copy of `storage`'s log and store info record, for a replay that must not append to it.
fn copy_of_log(storage: &MemoryStorage) -> MemoryStorage {
    let copy = MemoryStorage::new();
    storage
        .read_epochs(0, &mut |e, bytes| copy.append_epoch(e, bytes))
        .unwrap();
    let info = storage.read_store_info().unwrap().expect("a store info");
    copy.write_store_info(&info).unwrap();
    copy
}

// Goal: the marketplace's served queries answer with half of its partitions on another node,
// see one consistent snapshot there while transactions run, and answer exactly as the same log
// in one process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn served_queries_across_two_nodes_answer_as_one_process() {
    let seed = seed("marketplace-named-queries");
    let storage = Arc::new(MemoryStorage::new());
    let (served, rt, host) = start_two(storage.clone()).await;
    let served = Arc::new(served);
    let client = rt.client();
    let load = market().load_requests();
    let n = load.len();
    let report = submit_all(&client, n, 16, move |i| load[i].clone())
        .await
        .unwrap();
    assert_eq!(report.n_committed, n as u64, "{:?}", report.first_abort);
    let writers: Vec<_> = (0..N_WRITERS)
        .map(|w| tokio::spawn(write(served.clone(), rt.client(), seed + w)))
        .collect();
    let mut committed_checkouts = 0;
    for w in writers {
        committed_checkouts += w.await.unwrap();
    }
    assert!(
        committed_checkouts > 0,
        "seed {seed}: no checkout committed"
    );
    // A closure cannot reach "b"'s partitions: the served queries were refused so before.
    let market = market();
    let error = client
        .query(&market.services.all(), market.snapshot_fn())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, TxnError::QueryNotLocal { node, .. } if node == "b"),
        "{error}"
    );
    let cluster = final_answers(&served, &client, committed_checkouts).await;
    assert_eq!(cluster[0]["violations"], 0, "seed {seed}: {:#}", cluster[0]);
    let with_entries = cluster
        .iter()
        .filter(|a| a["entries"].as_array().is_some_and(|e| !e.is_empty()));
    assert!(
        with_entries.count() > 0,
        "seed {seed}: no dashboard shows an order"
    );
    rt.shutdown().await;
    host.stop().await;

    let replay = RuntimeConfig {
        recover_from: RecoverFrom::LogStart,
        ..RuntimeConfig::with_storage(Arc::new(copy_of_log(&storage)))
    };
    let one = MarketServed::build(options()).unwrap();
    let rt = Runtime::start(one.app_def().clone(), replay).await.unwrap();
    let one_process = final_answers(&one, &rt.client(), committed_checkouts).await;
    rt.shutdown().await;
    assert_eq!(
        cluster, one_process,
        "seed {seed}: the same log in one process answers otherwise"
    );
    eprintln!("marketplace-named-queries: seed {seed}: {committed_checkouts} checkouts committed");
}
