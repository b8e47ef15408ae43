//! What a parent delete does to its children: `OnDelete::Restrict` refuses it (the whole
//! transaction aborts), `OnDelete::Cascade` deletes the children and grandchildren with it, and
//! a delete racing a child insert in the same epoch never leaves an orphan.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use txn::{
    AbortReason, App, AppBuilder, AppDef, LimitKind, OnDelete, Runtime, RuntimeConfig, ServiceRef,
    Table, TxnLimits,
};

struct Blog;

/// The tables of the test application, named in events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum T {
    /// `people` service. Parent of `Orders` (restrict).
    Customers,
    /// `shop` service. Parent of `Items` (restrict, same service).
    Orders,
    Items,
    /// `people` service. Parent of `Posts` (cascade, across services).
    Accounts,
    /// `shop` service. Parent of `Comments` (cascade, same service).
    Posts,
    Comments,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Op {
    Put { t: T, key: u64, parent: Option<u64> },
    Delete { t: T, key: u64 },
}

/// A transaction: its operations run one after the other, each in the partition owning its row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Ev(Vec<Op>);

impl App for Blog {
    type Event = Ev;
    type Output = ();
}

/// Every row names its parent, if its table has one.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Row {
    parent: Option<u64>,
}

#[derive(Clone, Copy)]
struct Fx {
    people: ServiceRef,
    shop: ServiceRef,
    tables: [Table<u64, Row>; 6],
}

impl Fx {
    fn table(&self, t: T) -> Table<u64, Row> {
        self.tables[t as usize]
    }

    fn service(&self, t: T) -> ServiceRef {
        match t {
            T::Customers | T::Accounts => self.people,
            _ => self.shop,
        }
    }

    fn target(&self, op: &Op) -> (ServiceRef, u32) {
        let (Op::Put { t, key, .. } | Op::Delete { t, key }) = op;
        let service = self.service(*t);
        (service, service.partition_of(key))
    }
}

fn build(limits: TxnLimits) -> (Arc<AppDef<Blog>>, Fx) {
    let mut b = AppBuilder::<Blog>::new();
    let people = b.service("people", 2);
    let shop = b.service("shop", 3);
    let tables = [
        b.table::<u64, Row>(people, "customers"),
        b.table::<u64, Row>(shop, "orders"),
        b.table::<u64, Row>(shop, "items"),
        b.table::<u64, Row>(people, "accounts"),
        b.table::<u64, Row>(shop, "posts"),
        b.table::<u64, Row>(shop, "comments"),
    ];
    let fx = Fx {
        people,
        shop,
        tables,
    };
    let parent = |r: &Row| r.parent;
    // Restrict is the default: these two say nothing.
    b.foreign_key(
        fx.table(T::Orders),
        "orders.customer",
        fx.table(T::Customers),
        parent,
    );
    b.foreign_key(
        fx.table(T::Items),
        "items.order",
        fx.table(T::Orders),
        parent,
    );
    b.foreign_key(
        fx.table(T::Posts),
        "posts.account",
        fx.table(T::Accounts),
        parent,
    )
    .on_delete(OnDelete::Cascade);
    b.foreign_key(
        fx.table(T::Comments),
        "comments.post",
        fx.table(T::Posts),
        parent,
    )
    .on_delete(OnDelete::Cascade);
    b.txn_limits(limits);
    for service in [people, shop] {
        b.handler(service, move |ctx, Ev(ops)| {
            match &ops[0] {
                Op::Put { t, key, parent } => {
                    ctx.put(fx.table(*t), *key, Row { parent: *parent })?
                }
                Op::Delete { t, key } => ctx.delete(fx.table(*t), key)?,
            }
            if let Some(next) = ops.get(1) {
                let (service, partition) = fx.target(next);
                ctx.emit_to_partition_raw(service, partition, Ev(ops[1..].to_vec()));
            }
            Ok(())
        });
    }
    (b.build().expect("valid app"), fx)
}

async fn start(app: Arc<AppDef<Blog>>, config: RuntimeConfig) -> Runtime<Blog> {
    Runtime::start(app, config).await.expect("runtime starts")
}

/// Runs `ops` as one transaction; whether it committed, or why not.
async fn run(rt: &Runtime<Blog>, fx: &Fx, ops: Vec<Op>) -> Result<(), AbortReason> {
    let (service, partition) = fx.target(&ops[0]);
    let out = rt.client().submit_to_raw(service, partition, Ev(ops)).await;
    out.expect("submitted").result.map(|_| ())
}

fn put(t: T, key: u64, parent: Option<u64>) -> Op {
    Op::Put { t, key, parent }
}

fn delete(t: T, key: u64) -> Op {
    Op::Delete { t, key }
}

/// Every row of every table as `(table, key, parent)`, at one snapshot.
async fn rows(rt: &Runtime<Blog>, fx: &Fx) -> BTreeSet<(usize, u64, Option<u64>)> {
    let fx = *fx;
    let parts = rt
        .client()
        .query(&[fx.people, fx.shop], move |v| {
            let mut out = Vec::new();
            for (i, table) in fx.tables.iter().enumerate() {
                if v.is(fx.service(TABLES[i])) {
                    out.extend(v.iter(*table).map(|(k, r)| (i, *k, r.parent)));
                }
            }
            out
        })
        .await
        .expect("query");
    parts.into_iter().flatten().collect()
}

const TABLES: [T; 6] = [
    T::Customers,
    T::Orders,
    T::Items,
    T::Accounts,
    T::Posts,
    T::Comments,
];

/// The child rows whose parent row does not exist.
fn orphans(rows: &BTreeSet<(usize, u64, Option<u64>)>) -> Vec<(usize, u64)> {
    let parent_of = |child: T| match child {
        T::Orders => Some(T::Customers),
        T::Items => Some(T::Orders),
        T::Posts => Some(T::Accounts),
        T::Comments => Some(T::Posts),
        _ => None,
    };
    let exists = |t: T, key: u64| rows.iter().any(|(i, k, _)| *i == t as usize && *k == key);
    rows.iter()
        .filter(|(i, _, p)| match (parent_of(TABLES[*i]), p) {
            (Some(pt), Some(pk)) => !exists(pt, *pk),
            _ => false,
        })
        .map(|(i, k, _)| (*i, *k))
        .collect()
}

fn has(rows: &BTreeSet<(usize, u64, Option<u64>)>, t: T, key: u64) -> bool {
    rows.iter().any(|(i, k, _)| *i == t as usize && *k == key)
}

fn constraint_message(result: Result<(), AbortReason>) -> String {
    match result {
        Err(AbortReason::Constraint {
            service,
            table,
            message,
        }) => format!("{service}.{table}: {message}"),
        other => panic!("expected a constraint violation, got {other:?}"),
    }
}

// Goal: restrict refuses deleting a parent that still has children, within a service and
// across services, and discards the deleting transaction's other writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restrict_refuses_a_parent_delete_and_discards_the_whole_transaction() {
    let (app, fx) = build(TxnLimits::default());
    let rt = start(app, RuntimeConfig::in_memory()).await;
    let setup = vec![
        put(T::Customers, 1, None),
        put(T::Orders, 10, Some(1)),
        put(T::Items, 100, Some(10)),
    ];
    run(&rt, &fx, setup).await.expect("setup commits");

    // Same service: items.order refers to order 10. The new customer 2 must not survive.
    let same_service = vec![put(T::Customers, 2, None), delete(T::Orders, 10)];
    let msg = constraint_message(run(&rt, &fx, same_service).await);
    assert!(
        msg.starts_with("shop.items:") && msg.contains("\"items.order\"") && msg.contains("100"),
        "{msg}"
    );

    // Across services: orders.customer refers to customer 1.
    let across = vec![put(T::Orders, 11, None), delete(T::Customers, 1)];
    let msg = constraint_message(run(&rt, &fx, across).await);
    assert!(
        msg.starts_with("shop.orders:") && msg.contains("\"orders.customer\""),
        "{msg}"
    );

    let after = rows(&rt, &fx).await;
    let expected: BTreeSet<_> = [
        (T::Customers as usize, 1, None),
        (T::Orders as usize, 10, Some(1)),
        (T::Items as usize, 100, Some(10)),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        after, expected,
        "the refused transactions left writes behind"
    );
    rt.shutdown().await;
}

// Goal: a parent with no children (never had any, or lost them earlier in the same
// transaction or before) is deleted normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_parent_without_children_succeeds() {
    let (app, fx) = build(TxnLimits::default());
    let rt = start(app, RuntimeConfig::in_memory()).await;
    let setup = vec![
        put(T::Customers, 1, None),
        put(T::Customers, 2, None),
        put(T::Orders, 10, Some(1)),
        put(T::Items, 100, Some(10)),
        put(T::Orders, 11, Some(2)),
        put(T::Items, 101, Some(11)),
    ];
    run(&rt, &fx, setup).await.expect("setup commits");
    // Never had children; children of another parent do not count.
    run(&rt, &fx, vec![put(T::Customers, 3, None)])
        .await
        .unwrap();
    run(&rt, &fx, vec![delete(T::Customers, 3)])
        .await
        .expect("a childless parent is deleted");
    // Its children deleted by an earlier transaction.
    run(&rt, &fx, vec![delete(T::Items, 100)]).await.unwrap();
    run(&rt, &fx, vec![delete(T::Orders, 10)])
        .await
        .expect("a parent whose children were deleted earlier is deleted");
    // Its children deleted earlier in the same transaction, down two levels.
    let same_txn = vec![
        delete(T::Items, 101),
        delete(T::Orders, 11),
        delete(T::Customers, 2),
    ];
    run(&rt, &fx, same_txn)
        .await
        .expect("children deleted first in the same transaction do not restrict");
    let after = rows(&rt, &fx).await;
    let expected: BTreeSet<_> = [(T::Customers as usize, 1, None)].into_iter().collect();
    assert_eq!(after, expected);
    rt.shutdown().await;
}

// Goal: cascade deletes the children (across services) and the grandchildren in the deleting
// transaction, leaves other parents' children alone, and a query afterwards sees no orphan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascade_deletes_children_and_grandchildren() {
    let (app, fx) = build(TxnLimits::default());
    let rt = start(app, RuntimeConfig::in_memory()).await;
    let setup = vec![
        put(T::Accounts, 1, None),
        put(T::Accounts, 2, None),
        put(T::Posts, 10, Some(1)),
        put(T::Posts, 11, Some(1)),
        put(T::Posts, 12, Some(2)),
        put(T::Comments, 100, Some(10)),
        put(T::Comments, 101, Some(10)),
        put(T::Comments, 102, Some(11)),
        put(T::Comments, 103, Some(12)),
    ];
    run(&rt, &fx, setup).await.expect("setup commits");
    run(&rt, &fx, vec![delete(T::Accounts, 1)])
        .await
        .expect("cascade commits");
    let after = rows(&rt, &fx).await;
    assert!(orphans(&after).is_empty(), "orphans: {:?}", orphans(&after));
    let expected: BTreeSet<_> = [
        (T::Accounts as usize, 2, None),
        (T::Posts as usize, 12, Some(2)),
        (T::Comments as usize, 103, Some(12)),
    ]
    .into_iter()
    .collect();
    assert_eq!(after, expected);
    rt.shutdown().await;
}

// Goal: a cascade is one transaction: when it goes past the transaction's work limit nothing
// is deleted, neither the parent nor any child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascade_past_the_limits_deletes_nothing() {
    let limits = TxnLimits {
        work_max: 40,
        ..TxnLimits::default()
    };
    let (app, fx) = build(limits);
    let rt = start(app, RuntimeConfig::in_memory()).await;
    run(&rt, &fx, vec![put(T::Accounts, 1, None)])
        .await
        .unwrap();
    for post in 0..30 {
        run(&rt, &fx, vec![put(T::Posts, post, Some(1))])
            .await
            .unwrap();
        run(&rt, &fx, vec![put(T::Comments, 1000 + post, Some(post))])
            .await
            .unwrap();
    }
    let before = rows(&rt, &fx).await;
    let result = run(&rt, &fx, vec![delete(T::Accounts, 1)]).await;
    assert!(
        matches!(
            result,
            Err(AbortReason::LimitExceeded {
                limit: LimitKind::Work,
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(rows(&rt, &fx).await, before, "a partial cascade was kept");
    rt.shutdown().await;
}

// Goal: a parent delete and a child insert in the same epoch are serializable in either TID
// order: the child insert's probe or the delete's child lookup conflicts, so the final state
// never has an orphan, and whichever order ran, the outcome is that of a serial order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_delete_racing_a_child_insert_leaves_no_orphan() {
    let (app, fx) = build(TxnLimits::default());
    // Epochs close when two requests are in, so each pair (sent together) shares an epoch
    // unless the sequencer's longest epoch runs out between the two sends.
    let config = RuntimeConfig {
        epoch_txns_max: 2,
        epoch_duration: Duration::from_millis(10),
        ..RuntimeConfig::in_memory()
    };
    let rt = start(app, config).await;
    let c = rt.client();
    let mut insert_first_rounds = 0;
    // Not random: the rounds alternate the tables (restrict, cascade) and the submit order.
    for round in 0..16u64 {
        let (customer, account) = (round, 100 + round);
        let setup_a = run(&rt, &fx, vec![put(T::Customers, customer, None)]);
        let setup_b = run(&rt, &fx, vec![put(T::Accounts, account, None)]);
        let (a, b) = tokio::join!(setup_a, setup_b);
        a.and(b).expect("setup commits");
        // Even rounds: the insert is submitted first (lower TID); odd rounds: the delete.
        let (t_parent, t_child, parent) = if round % 4 < 2 {
            (T::Customers, T::Orders, customer)
        } else {
            (T::Accounts, T::Posts, account)
        };
        let insert = Ev(vec![put(t_child, 1000 + round, Some(parent))]);
        let remove = Ev(vec![delete(t_parent, parent)]);
        let insert_at = fx.target(&insert.0[0]);
        let remove_at = fx.target(&remove.0[0]);
        let (ins, del) = if round % 2 == 0 {
            let ins = c.submit_to_raw(insert_at.0, insert_at.1, insert);
            let del = c.submit_to_raw(remove_at.0, remove_at.1, remove);
            tokio::join!(ins, del)
        } else {
            let del = c.submit_to_raw(remove_at.0, remove_at.1, remove);
            let ins = c.submit_to_raw(insert_at.0, insert_at.1, insert);
            let (del, ins) = tokio::join!(del, ins);
            (ins, del)
        };
        let (ins, del) = (ins.unwrap(), del.unwrap());
        if ins.tid.epoch() == del.tid.epoch() && ins.tid < del.tid {
            insert_first_rounds += 1;
        }
        let after = rows(&rt, &fx).await;
        assert!(
            orphans(&after).is_empty(),
            "round {round}: orphans {:?} (insert {:?}, delete {:?})",
            orphans(&after),
            ins.result,
            del.result
        );
        // The outcome of a serial order: a committed delete took the parent and every child
        // with it (cascade) or found none (restrict); otherwise a committed insert is there.
        let child_kept = has(&after, t_child, 1000 + round);
        let parent_kept = has(&after, t_parent, parent);
        if del.committed() {
            assert!(!parent_kept && !child_kept, "round {round}");
        } else {
            assert!(parent_kept, "round {round}");
            assert_eq!(child_kept, ins.committed(), "round {round}");
        }
        if t_parent == T::Customers {
            assert!(
                !(ins.committed() && del.committed()),
                "round {round}: restrict let both commit"
            );
        }
        assert!(
            ins.committed() || del.committed(),
            "round {round}: both aborted"
        );
    }
    assert!(
        insert_first_rounds > 0,
        "no round ran the child insert at the lower TID of the delete's epoch"
    );
    rt.shutdown().await;
}
