//! `bench-harness explain`: the coordination report of a workload's application as Markdown.

use bench_harness::explain::{ExplainedWorkload, markdown};

#[test]
fn explain_marketplace_lists_the_escrowed_stock() {
    // Goal: the marketplace's report is a Markdown table with the stock's free units escrowed
    // against their lower bound and nothing left as a read-modify-write.
    let table = markdown(ExplainedWorkload::Marketplace).unwrap();
    assert!(table.starts_with("| service.table.field |"), "{table}");
    assert!(
        table.contains(
            "| stock.stock_levels.qty_free | bounded decrements | qty_free >= 0 | escrow |"
        ),
        "{table}"
    );
    assert!(!table.contains("| coordinated |"), "{table}");
}
