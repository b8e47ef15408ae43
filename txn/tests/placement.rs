//! Declared placement: a table's rows can be placed by a field of the key, so related rows live
//! in one partition, and foreign keys follow the parent's placement.

use serde::{Deserialize, Serialize};
use txn::{AbortReason, App, AppBuilder, Runtime, RuntimeConfig};

struct Stock;

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Ev {
    /// Adds every product of a seller in one step (they share a partition).
    AddSellerProducts { seller: u64, products: Vec<u64> },
    /// Records a sale referring to a stock item (foreign key to a placed table).
    Sale {
        sale: u64,
        seller: u64,
        product: u64,
    },
}

impl App for Stock {
    type Event = Ev;
    type Output = ();
}

// Goal: rows placed by seller_id can all be written from the seller's partition; a sale's foreign
// key finds its stock item in the partition placement says; a wrong item aborts clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_placed_by_a_key_field_live_together() {
    let mut b = AppBuilder::<Stock>::new();
    let stock_svc = b.service("stock", 4);
    let sales_svc = b.service("sales", 3);
    let items = b.table::<(u64, u64), u32>(stock_svc, "stock_items");
    b.place_by(items, |k: &(u64, u64)| k.0);
    let sales = b.table::<u64, (u64, u64)>(sales_svc, "sales");
    b.foreign_key(
        sales,
        "sales.item -> stock_items",
        items,
        |s: &(u64, u64)| Some(*s),
    );
    b.handler(stock_svc, move |ctx, ev| {
        let Ev::AddSellerProducts { seller, products } = ev else {
            return Err(ctx.abort("unexpected event"));
        };
        for p in products {
            ctx.put(items, (*seller, *p), 10)?;
        }
        Ok(())
    });
    b.handler(sales_svc, move |ctx, ev| {
        let Ev::Sale {
            sale,
            seller,
            product,
        } = ev
        else {
            return Err(ctx.abort("unexpected event"));
        };
        ctx.put(sales, *sale, (*seller, *product))
    });
    let app = b.build().unwrap();
    let rt = Runtime::start(app, RuntimeConfig::in_memory())
        .await
        .unwrap();
    let c = rt.client();
    for seller in 0..6u64 {
        let ev = Ev::AddSellerProducts {
            seller,
            products: (0..8).collect(),
        };
        let out = c.submit_raw(stock_svc, &seller, ev).await.unwrap();
        assert!(out.committed(), "seller {seller}: {:?}", out.result);
    }
    // Routing by the whole key instead of the seller reaches the wrong partition for most keys.
    let wrong =
        (0..6u64).find(|s| stock_svc.partition_of(&(*s, 100u64)) != stock_svc.partition_of(s));
    let s = wrong.expect("some (seller, product) hashes elsewhere than its seller");
    let ev = Ev::AddSellerProducts {
        seller: s,
        products: vec![100],
    };
    let out = c.submit_raw(stock_svc, &(s, 100u64), ev).await.unwrap();
    assert!(
        matches!(out.result, Err(AbortReason::WrongPartition { .. })),
        "{:?}",
        out.result
    );

    let ok = c
        .submit_raw(
            sales_svc,
            &1u64,
            Ev::Sale {
                sale: 1,
                seller: 3,
                product: 5,
            },
        )
        .await
        .unwrap();
    assert!(ok.committed(), "{:?}", ok.result);
    let bad = c
        .submit_raw(
            sales_svc,
            &2u64,
            Ev::Sale {
                sale: 2,
                seller: 3,
                product: 99,
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(bad.result, Err(AbortReason::Constraint { .. })),
        "{:?}",
        bad.result
    );
    let per_partition = c.query(&[stock_svc], move |v| v.len(items)).await.unwrap();
    assert_eq!(per_partition.iter().sum::<usize>(), 48);
    assert!(
        per_partition.iter().all(|n| n % 8 == 0),
        "a seller's 8 items share a partition: {per_partition:?}"
    );
    rt.shutdown().await;
}

// Goal: placing a table after a foreign key refers to it is a start-up error.
#[test]
fn placement_after_a_foreign_key_is_refused() {
    let mut b = AppBuilder::<Stock>::new();
    let s = b.service("s", 2);
    let items = b.table::<(u64, u64), u32>(s, "items");
    let sales = b.table::<u64, (u64, u64)>(s, "sales");
    b.foreign_key(sales, "fk", items, |v: &(u64, u64)| Some(*v));
    b.place_by(items, |k: &(u64, u64)| k.0);
    b.handler(s, |_, _| Ok(()));
    let err = b.build().err().expect("refused").to_string();
    assert!(err.contains("declare place_by first"), "{err}");
}
