//! `transfer --nodes 3` and `marketplace --nodes 3` end to end: three `vmsdb node` processes
//! and a private PostgreSQL server started by the harness, the sequencer SIGKILLed one second
//! into the run and started again; `summary.json` must record the three nodes, non-zero
//! throughput on them, the link bytes, the failover time, and a passed audit with every
//! criterion at 0; and `transfer` with `--spread-partitions`: the summary records the
//! placement, every node hosts partitions, and the audit (a named query answered across the
//! nodes) passes.
//!
//! The test builds the `vmsdb` executable into the same target directory first (cargo cannot
//! hand another package's binary to this test). Without the PostgreSQL server binaries it FAILS
//! in CI (`CI` set) and elsewhere prints a loud skip line and returns.

use bench_harness::cli::Cli;
use clap::Parser;
use std::path::PathBuf;
use std::process::Command;

use crate::common::postgres_available;

/// Builds `vmsdb` with this test's profile into this test's target directory and returns it.
fn build_vmsdb() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    // target/<profile>/deps/nodes-<hash> → target/<profile>/vmsdb
    let profile_dir = exe
        .ancestors()
        .nth(2)
        .expect("target/<profile>")
        .to_path_buf();
    let mut cargo = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    cargo
        .args(["build", "--quiet", "-p", "vmsdb", "--bin", "vmsdb"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.ends_with("release") {
        cargo.arg("--release");
    }
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        cargo.env("CARGO_TARGET_DIR", profile_dir.parent().expect("target"));
    }
    let status = cargo.status().expect("run cargo build -p vmsdb");
    assert!(status.success(), "cargo build -p vmsdb --bin vmsdb failed");
    let vmsdb = profile_dir.join("vmsdb");
    assert!(vmsdb.is_file(), "{} was not built", vmsdb.display());
    vmsdb
}

/// Runs `workload` (its name and arguments) on three nodes with `extra` arguments and the
/// in-process vmsdb beside them; the summary table and the written `summary.json`, as text and
/// parsed.
fn on_three_nodes(workload: &[&str], extra: &[&str]) -> (String, String, serde_json::Value) {
    let vmsdb = build_vmsdb();
    let out = tempfile::tempdir().unwrap();
    let out_path = out.path().to_str().unwrap().to_string();
    let mut argv = vec!["bench-harness"];
    argv.extend_from_slice(workload);
    argv.extend_from_slice(&["--storage", "memory", "--nodes", "3"]);
    argv.extend_from_slice(&["--vmsdb-bin", vmsdb.to_str().unwrap()]);
    argv.extend_from_slice(&["--quiet", "--out", &out_path]);
    argv.extend_from_slice(extra);
    let summary = bench_harness::run(Cli::parse_from(argv)).expect("the run completes");
    let written = std::fs::read_to_string(out.path().join("summary.json")).unwrap();
    let json = serde_json::from_str(&written).unwrap();
    (summary.table(), written, json)
}

/// Runs `workload` on three nodes, the sequencer SIGKILLed one second in; checks what every
/// such run must show and returns `summary.json` and the summary table (`None`: skipped
/// without PostgreSQL).
fn run_with_the_sequencer_killed(
    test: &str,
    workload: &[&str],
) -> Option<(serde_json::Value, String)> {
    if !postgres_available(test, "the nodes' store") {
        return None;
    }
    let (table, written, json) = on_three_nodes(workload, &["--kill-node-at", "1s"]);
    assert_eq!(json["cluster"]["nodes"], 3, "{written}");
    assert_eq!(json["run"]["nodes"], 3, "{written}");
    assert_eq!(json["cluster"]["placement"], "active-standby", "{written}");
    let nodes = &json["systems"]["vmsdb-3-nodes"];
    assert!(nodes["throughput_tps"].as_f64().unwrap() > 0.0, "{table}");
    assert!(json["systems"]["vmsdb"]["throughput_tps"].as_f64().unwrap() > 0.0);
    let violations = nodes["violations"].as_object().expect("violations");
    assert!(!violations.is_empty(), "no criterion was checked: {table}");
    assert!(violations.values().all(|v| v == 0), "{table}");
    assert_eq!(nodes["errors"], 0, "{table}");
    assert_eq!(json["passed"], true, "{table}");
    let cluster = &json["cluster"];
    assert!(
        cluster["network_bytes_per_txn"].as_f64().unwrap() > 0.0,
        "{table}"
    );
    let kill = &cluster["kill"];
    assert_eq!(kill["was_sequencer"], true, "{table}");
    assert!(
        kill["failover_s"].as_f64().is_some(),
        "no commit after the kill: {table}"
    );
    assert!(
        kill["rejoined_s"].as_f64().is_some(),
        "the killed node never rejoined: {table}"
    );
    Some((json, table))
}

#[test]
fn transfer_on_three_nodes_survives_killing_the_sequencer() {
    let workload = [
        "transfer",
        "--duration",
        "4s",
        "--accounts",
        "1000",
        "--clients",
        "32",
        "--partitions",
        "4",
    ];
    run_with_the_sequencer_killed(
        "transfer_on_three_nodes_survives_killing_the_sequencer",
        &workload,
    );
}

#[test]
fn marketplace_on_three_nodes_survives_killing_the_sequencer() {
    // Goal: `marketplace --nodes 3` drives the marketplace through every node, survives the
    // sequencer's SIGKILL (its dashboards asked again of another node), reports its figures
    // next to the in-process run's, and audits all eight criteria of the marketplace through
    // the served `audit` query, at 0.
    let workload = [
        "marketplace",
        "--duration",
        "6s",
        "--clients",
        "16",
        "--partitions",
        "2",
    ];
    let test = "marketplace_on_three_nodes_survives_killing_the_sequencer";
    let Some((json, table)) = run_with_the_sequencer_killed(test, &workload) else {
        return;
    };
    for system in ["vmsdb", "vmsdb-3-nodes"] {
        let checked = json["systems"][system]["violations"].as_object().unwrap();
        assert_eq!(checked.len(), 8, "every criterion was checked: {table}");
    }
    let audit = json["cluster"]["audit"].as_str().unwrap_or_default();
    assert!(audit.contains("the marketplace's audit query"), "{audit}");
}

#[test]
fn transfer_on_three_nodes_with_the_partitions_spread() {
    let test = "transfer_on_three_nodes_with_the_partitions_spread";
    if !postgres_available(test, "the nodes' store") {
        return;
    }
    let workload = ["transfer", "--accounts", "1000", "--duration", "3s"];
    let (table, written, json) = on_three_nodes(
        &workload,
        &[
            "--clients",
            "16",
            "--partitions",
            "8",
            "--spread-partitions",
        ],
    );
    let cluster = &json["cluster"];
    assert_eq!(cluster["placement"], "spread", "{written}");
    // The ledger with 8 partitions per service: 16 partitions, some on every node.
    let per_node = cluster["partitions_per_node"].as_object().expect("counts");
    assert_eq!(per_node.len(), 3, "{written}");
    assert!(per_node.values().all(|c| c.as_u64() > Some(0)), "{written}");
    let total: u64 = per_node.values().filter_map(|c| c.as_u64()).sum();
    assert_eq!(total, 16, "{written}");
    let nodes = &json["systems"]["vmsdb-3-nodes"];
    assert!(nodes["throughput_tps"].as_f64().unwrap() > 0.0, "{table}");
    assert_eq!(nodes["errors"], 0, "{table}");
    // Every epoch's phases travel to the nodes hosting partitions, as link bytes.
    assert!(
        cluster["network_bytes_per_txn"].as_f64().unwrap() > 0.0,
        "{table}"
    );
    // The audit is a named query answered by every node's partitions: it runs and passes.
    let violations = nodes["violations"].as_object().expect("violations");
    assert!(!violations.is_empty(), "no criterion was checked: {table}");
    assert!(violations.values().all(|v| v == 0), "{table}");
}
