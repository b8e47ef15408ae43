//! What the marketplace's reads cost must follow the open backlog, never the run's history: a
//! seller dashboard reads a seller's in-progress entries only (its delivered entries, which
//! every delivery adds and nothing removes, move out of the ordered table it reads a range of,
//! into a hash table of their own, so that ordered table holds the backlog alone), and a
//! delivery's queue holds only packages not yet delivered (the range it takes the head of does
//! not grow with what was delivered). Counted in rows on the serial executor, round after round of
//! checkouts and deliveries, so a change that makes either grow with the history fails here
//! rather than only as a slower run (`docs/benchmarks.md`, "The marketplace over a long run").

use services::marketplace::{
    CartAddItem, EntryKey, MarketApp, MarketConfig, Marketplace, SellerId,
};
use txn::SerialExecutor;

/// Checkouts per round; each queues one package of every seller.
const BACKLOG: usize = 5;
/// Rounds of checkouts followed by as many deliveries.
const ROUNDS: usize = 6;

/// 8 sellers of 10 products, 50 customers, 2 partitions per service, every payment approved,
/// one delivery lane (so each delivery takes the oldest package of every seller it names).
fn loaded() -> (Marketplace, SerialExecutor<MarketApp>) {
    let config = MarketConfig {
        n_customers: 50,
        n_sellers: 8,
        products_per_seller: 10,
        initial_stock: 1_000_000_000,
        n_partitions: 2,
        payment_failure_pct: 0,
        seed: 5,
        delivery_lanes: 1,
    };
    let m = Marketplace::new(config).unwrap();
    let exec = m.loaded_serial(1);
    (m, exec)
}

/// Rows of `seller_id`'s entries in every seller partition: `(in progress, delivered)` in the
/// ordered `order_entries`, and delivered in `delivered_entries`.
fn entries_of(
    m: &Marketplace,
    exec: &SerialExecutor<MarketApp>,
    seller_id: SellerId,
) -> (usize, usize, usize) {
    let t = m.tables;
    let parts = exec.query(&[*m.services.seller], move |view| {
        let in_range = |delivered| {
            view.range(
                t.order_entries,
                EntryKey::bound(seller_id, delivered, false)
                    ..=EntryKey::bound(seller_id, delivered, true),
            )
            .count()
        };
        let delivered = view
            .iter(t.delivered_entries)
            .filter(|(k, _)| k.seller_id == seller_id && k.delivered)
            .count();
        (in_range(false), in_range(true), delivered)
    });
    parts
        .into_iter()
        .fold((0, 0, 0), |(a, b, c), (x, y, z)| (a + x, b + y, c + z))
}

/// Rows of the delivery queue, every shipment partition.
fn queued(m: &Marketplace, exec: &SerialExecutor<MarketApp>) -> usize {
    let t = m.tables;
    exec.query(&[*m.services.shipment], move |view| {
        view.len(t.open_deliveries)
    })
    .into_iter()
    .sum()
}

#[test]
fn dashboards_and_deliveries_read_the_backlog_not_the_history() {
    // Goal: however many orders were delivered before, a dashboard returns (and reads) only the
    // open entries of its seller and the delivery queue holds only the open packages, while
    // the delivered entries keep growing.
    let (m, mut exec) = loaded();
    let sellers: Vec<SellerId> = (0..m.config.n_sellers).collect();
    let mut clock = 10u64;
    for round in 0..ROUNDS {
        for i in 0..BACKLOG {
            clock += 1;
            let customer_id = ((round * BACKLOG + i) % 50) as u32;
            let items = sellers
                .iter()
                .map(|s| CartAddItem {
                    seller_id: *s,
                    product_id: s * 10 + (i % 10) as u32,
                    quantity: 1,
                    voucher: false,
                })
                .collect();
            let outcome = exec.run_request(m.checkout(customer_id, items), clock);
            assert!(outcome.is_ok(), "{outcome:?}");
        }
        clock += 1;
        assert_eq!(queued(&m, &exec), BACKLOG * sellers.len(), "round {round}");
        for s in &sellers {
            let d = m.dashboard_serial(&exec, *s);
            assert!(d.agrees(), "round {round}, seller {s}: {d:?}");
            // What the dashboard read: the open entries, not the delivered history.
            assert_eq!(d.entries.len(), BACKLOG, "round {round}, seller {s}");
            // The ordered table holds the backlog alone; the history is hashed.
            assert_eq!(entries_of(&m, &exec, *s), (BACKLOG, 0, round * BACKLOG));
        }
        for _ in 0..BACKLOG {
            clock += 1;
            let outcome = exec.run_request(m.update_delivery(sellers.clone()), clock);
            assert!(outcome.is_ok(), "{outcome:?}");
        }
        // Everything delivered: the queue a delivery reads is empty again, and a dashboard
        // reads nothing, while the history holds every delivered entry.
        assert_eq!(queued(&m, &exec), 0, "round {round}");
        for s in &sellers {
            let d = m.dashboard_serial(&exec, *s);
            assert!(d.entries.is_empty() && d.agrees(), "round {round}: {d:?}");
            assert_eq!(entries_of(&m, &exec, *s), (0, 0, (round + 1) * BACKLOG));
        }
    }
}
