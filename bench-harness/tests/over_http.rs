//! `--over-http`: the workloads driven through `vmsdb serve`'s HTTP API appear as their own
//! system, `vmsdb-http`, next to the in-process vmsdb in the summary table, `summary.json` and
//! `report.html`, commit work with no errors and pass the same consistency checks.

use bench_harness::cli::Cli;
use clap::Parser;

fn run_over_http(workload: &str, extra: &[&str]) {
    let out = tempfile::tempdir().unwrap();
    let out_path = out.path().to_str().unwrap().to_string();
    let mut argv = vec![
        "bench-harness",
        workload,
        "--over-http",
        "--duration",
        "400ms",
        "--clients",
        "32",
        "--quiet",
        "--out",
        &out_path,
    ];
    argv.extend_from_slice(extra);
    let summary = bench_harness::run(Cli::parse_from(argv)).expect("the run completes");
    assert_eq!(
        summary.order,
        ["vmsdb", "vmsdb-http"],
        "{}",
        summary.table()
    );
    let http = &summary.systems["vmsdb-http"];
    assert!(http.committed > 0, "{}", summary.table());
    assert_eq!(http.errors, 0, "{}", summary.table());
    assert!(!http.violations.is_empty(), "no criterion was checked");
    assert!(
        http.violations.values().all(|v| *v == 0),
        "{:?}",
        http.violations
    );
    assert!(summary.passed, "{}", summary.table());
    assert!(summary.table().contains("vmsdb-http"));
    let json = std::fs::read_to_string(out.path().join("summary.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(json["systems"]["vmsdb-http"]["throughput_tps"].as_f64() > Some(0.0));
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(html.contains("vmsdb-http"));
}

#[test]
fn marketplace_over_http_is_reported_beside_vmsdb_and_passes_its_checks() {
    // Goal: every marketplace request type encodes for the generic API (batched), the
    // dashboard goes through the named query, and the audit finds the state consistent.
    run_over_http("marketplace", &["--mix", "checkout-heavy"]);
}

#[test]
fn transfer_over_http_passes_its_checks() {
    // Goal: a second application (the ledger) runs over HTTP too, with balance lookups.
    run_over_http("transfer", &["--accounts", "2000", "--lookup-pct", "10"]);
}
