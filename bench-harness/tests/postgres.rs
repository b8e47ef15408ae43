//! The postgres baseline end to end: each workload runs for about a second on vmsdb and on a
//! private PostgreSQL server the harness starts itself, and the postgres run commits work and
//! passes every consistency criterion. The harness installs nothing: without the server
//! binaries these tests FAIL in CI (`CI` set, as `.ci/run` does after installing `postgresql`)
//! and elsewhere print a loud skip line and return.

use bench_harness::cli::Cli;
use bench_harness::metrics::AbortCategory;
use clap::Parser;

use crate::common::postgres_available;

fn run(args: &[&str]) -> bench_harness::report::Summary {
    let out = tempfile::tempdir().unwrap();
    let out_path = out.path().to_str().unwrap().to_string();
    let mut argv = vec!["bench-harness"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&[
        "--duration",
        "1s",
        "--clients",
        "64",
        "--pg-connections",
        "8",
        "--storage",
        "memory",
        "--compare",
        "postgres",
        "--quiet",
        "--out",
        &out_path,
    ]);
    bench_harness::run(Cli::parse_from(argv)).expect("the run completes")
}

fn assert_postgres_healthy(summary: &bench_harness::report::Summary) {
    let pg = &summary.systems["postgres"];
    assert!(
        pg.committed > 0,
        "postgres committed nothing: {}",
        summary.table()
    );
    assert_eq!(pg.errors, 0, "{}", summary.table());
    assert!(!pg.violations.is_empty(), "no criterion was checked");
    assert!(
        pg.violations.values().all(|v| *v == 0),
        "postgres violations: {:?}\n{}",
        pg.violations,
        summary.table()
    );
    assert!(!pg.anomalies_expected);
    assert!(
        pg.storage.contains("SERIALIZABLE")
            && pg.storage.contains("fsync on")
            && pg.storage.contains("synchronous_commit on"),
        "{}",
        pg.storage
    );
    // The same criteria as vmsdb's, by name.
    let vmsdb = &summary.systems["vmsdb"];
    assert_eq!(
        pg.violations.keys().collect::<Vec<_>>(),
        vmsdb.violations.keys().collect::<Vec<_>>()
    );
    assert!(summary.passed, "{}", summary.table());
}

#[test]
fn transfer_on_postgres_commits_and_passes_its_checks() {
    // Goal: transfers (with deposits and lookups) run on PostgreSQL at SERIALIZABLE and leave
    // the totals, signs and row counts intact.
    if !postgres_available(
        "transfer_on_postgres_commits_and_passes_its_checks",
        "the postgres baseline",
    ) {
        return;
    }
    let summary = run(&[
        "transfer",
        "--accounts",
        "10000",
        "--deposit-pct",
        "10",
        "--lookup-pct",
        "5",
    ]);
    assert_postgres_healthy(&summary);
    let pg = &summary.systems["postgres"];
    assert!(
        pg.per_type.contains_key("deposit") && pg.per_type.contains_key("lookup"),
        "{:?}",
        pg.per_type.keys()
    );
}

#[test]
fn transfer_business_aborts_on_postgres_have_the_vmsdb_reasons() {
    // Goal: with balances too small for most transfers, postgres aborts them with the same
    // reason categories as vmsdb (insufficient balance / asset value), and stays consistent.
    if !postgres_available(
        "transfer_business_aborts_on_postgres_have_the_vmsdb_reasons",
        "the postgres baseline",
    ) {
        return;
    }
    let summary = run(&[
        "transfer",
        "--accounts",
        "1000",
        "--initial-balance",
        "5",
        "--max-amount",
        "20",
    ]);
    assert_postgres_healthy(&summary);
    let categories = |system: &str| -> Vec<AbortCategory> {
        summary.systems[system].per_type["transfer"]
            .aborts_by_reason
            .iter()
            .map(|a| a.category.clone())
            .collect()
    };
    let (pg, vmsdb) = (categories("postgres"), categories("vmsdb"));
    // The ledger's handlers abort with a `LedgerError`, whose kind names the rule.
    let business = AbortCategory {
        service: Some("accounts".into()),
        kind: services::ledger::kinds::INSUFFICIENT_BALANCE.into(),
    };
    assert!(pg.contains(&business), "postgres aborts: {pg:?}");
    for category in &pg {
        assert!(
            vmsdb.contains(category),
            "postgres abort category {category:?} never seen on vmsdb: {vmsdb:?}"
        );
    }
}

#[test]
fn ycsb_on_postgres_commits_and_passes_its_checks() {
    // Goal: YCSB-T read-modify-writes on PostgreSQL keep sum = k × committed.
    if !postgres_available(
        "ycsb_on_postgres_commits_and_passes_its_checks",
        "the postgres baseline",
    ) {
        return;
    }
    let summary = run(&["ycsb", "--keys", "10000", "--zipf", "0.9"]);
    assert_postgres_healthy(&summary);
}

#[test]
fn marketplace_on_postgres_commits_and_passes_its_checks() {
    // Goal: every marketplace transaction type commits on PostgreSQL and the seven criteria
    // hold on the state read back.
    if !postgres_available(
        "marketplace_on_postgres_commits_and_passes_its_checks",
        "the postgres baseline",
    ) {
        return;
    }
    let summary = run(&[
        "marketplace",
        "--scale",
        "small",
        "--mix",
        "checkout=40,dashboard=15,price=15,product=15,delivery=15",
    ]);
    assert_postgres_healthy(&summary);
    let pg = &summary.systems["postgres"];
    for ty in [
        "checkout",
        "dashboard",
        "price_update",
        "update_product",
        "update_delivery",
    ] {
        assert!(
            pg.per_type.get(ty).is_some_and(|t| t.committed > 0),
            "postgres committed no {ty}: {}",
            summary.table()
        );
    }
}
