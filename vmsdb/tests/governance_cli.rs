//! `vmsdb audit` and `vmsdb forget` on a marketplace data directory written with history
//! retained: the audit lists the payment step that read the customer's card digits; forget
//! leaves the customer's name in no file, and the store then recovers with everyone else's.

use services::load::submit_all;
use services::marketplace::{CartAddItem, MarketConfig, Marketplace};

use crate::common::vmsdb;
use txn::{Retention, Runtime, RuntimeConfig};

/// Customer 7 of 9, whose generated name `customer-7` is no prefix of another's.
const SUBJECT: u32 = 7;

fn marketplace() -> Marketplace {
    Marketplace::new(MarketConfig {
        n_customers: 9,
        n_sellers: 2,
        products_per_seller: 4,
        initial_stock: 50,
        n_partitions: 2,
        payment_failure_pct: 0,
        seed: 3,
        delivery_lanes: 1,
    })
    .expect("marketplace builds")
}

/// Loads the marketplace and checks out one item for customer `SUBJECT` and one for 8.
async fn write_store(dir: &std::path::Path) {
    let m = marketplace();
    let config = RuntimeConfig {
        history_retention: Some(Retention::Everything),
        checkpoint_every_epochs: 2,
        ..RuntimeConfig::durable(dir).expect("store opens")
    };
    let rt = Runtime::start(m.app().clone(), config)
        .await
        .expect("starts");
    let load = m.load_requests();
    let n = load.len();
    submit_all(&rt.client(), n, 16, move |i| load[i].clone())
        .await
        .expect("loads");
    for customer in [SUBJECT, 8] {
        let item = CartAddItem {
            seller_id: 0,
            product_id: 1,
            quantity: 1,
            voucher: false,
        };
        let out = rt
            .client()
            .submit_request(m.checkout(customer, vec![item]))
            .await
            .expect("checkout");
        assert!(out.committed(), "{:?}", out.result);
    }
    rt.shutdown().await;
}

/// Whether any file of `dir` contains `needle`.
fn any_file_contains(dir: &std::path::Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        bytes.windows(needle.len()).any(|w| w == needle)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_names_the_reads_and_forget_erases_the_subject() {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path()).await;
    let data_dir = dir.path().to_str().unwrap();
    let subject = SUBJECT.to_string();
    let store = [
        "--app",
        "marketplace",
        "--data-dir",
        data_dir,
        "--partitions",
        "2",
    ];

    let mut audit = vec!["audit", "--subject", &subject];
    audit.extend(store);
    let (ok, out, err) = vmsdb(&audit);
    assert!(ok, "{err}");
    assert!(out.contains("1 read(s) of personal data"), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("CountPayment"))
        .expect(&out);
    for part in [
        "customer",
        "payment",
        "customer.customers[7]",
        "yes",
        "name,card_last4",
    ] {
        assert!(line.contains(part), "{part} missing from {line}");
    }

    let name = format!("customer-{SUBJECT}");
    assert!(any_file_contains(dir.path(), name.as_bytes()));
    let mut forget = vec!["forget", "--subject", &subject];
    forget.extend(store);
    let (ok, out, err) = vmsdb(&forget);
    assert!(ok, "{err}");
    // The customer row and the card of the checkout's payment line.
    assert!(out.contains("2 row(s) erased"), "{out}");
    assert!(!any_file_contains(dir.path(), name.as_bytes()));
    assert!(any_file_contains(dir.path(), b"customer-8"));

    // The log before the erasure is gone, so the audit says history is not retained.
    let (ok, _, err) = vmsdb(&audit);
    assert!(!ok);
    assert!(err.contains("not retained"), "{err}");
    let rt = Runtime::open(marketplace().app().clone(), dir.path())
        .await
        .expect("recovers after forget");
    rt.shutdown().await;
}
