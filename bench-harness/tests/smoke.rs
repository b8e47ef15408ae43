//! End-to-end runs of the harness on small data: every workload on vmsdb and the serial
//! baseline commits work, passes its consistency checks and writes summary.json and
//! report.html; the binary rejects bad flags with exit code 2.

use bench_harness::cli::Cli;
use clap::Parser;
use std::process::Command;

fn run(args: &[&str]) -> (bench_harness::report::Summary, serde_json::Value) {
    let out = tempfile::tempdir().unwrap();
    let mut argv = vec!["bench-harness"];
    argv.extend_from_slice(args);
    let out_path = out.path().to_str().unwrap().to_string();
    argv.extend_from_slice(&["--quiet", "--out", &out_path]);
    let summary = bench_harness::run(Cli::parse_from(argv)).expect("the run completes");
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.path().join("summary.json")).expect("summary.json written"),
    )
    .unwrap();
    let html =
        std::fs::read_to_string(out.path().join("report.html")).expect("report.html written");
    assert!(html.contains("<svg"), "report.html has no plot");
    assert!(
        html.contains(&format!("vmsdb bench report: {}", summary.workload)),
        "report.html lacks its title"
    );
    (summary, json)
}

/// A 1 s transfer run on 500 accounts in 3 partitions with 10 % deposits, against the serial
/// baseline, with `extra` flags.
fn run_small_transfer(extra: &[&str]) -> (bench_harness::report::Summary, serde_json::Value) {
    let mut args = vec![
        "transfer",
        "--duration",
        "1s",
        "--accounts",
        "500",
        "--partitions",
        "3",
        "--deposit-pct",
        "10",
        "--compare",
        "serial",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

fn assert_healthy(summary: &bench_harness::report::Summary, json: &serde_json::Value) {
    assert!(summary.passed, "{}", summary.table());
    for name in ["vmsdb", "serial"] {
        let s = &summary.systems[name];
        assert!(
            s.committed > 0,
            "{name} committed nothing: {}",
            summary.table()
        );
        assert!(!s.violations.is_empty(), "{name}: no criterion was checked");
        assert!(
            s.violations.values().all(|v| *v == 0),
            "{name}: {:?}",
            s.violations
        );
        assert_eq!(s.errors, 0);
        let j = &json["systems"][name];
        for field in [
            "committed",
            "aborted",
            "throughput_tps",
            "p50_ms",
            "p99_ms",
            "violations",
            "ratio_to",
        ] {
            assert!(
                !j[field].is_null(),
                "summary.json lacks systems.{name}.{field}"
            );
        }
        assert!(j["ratio_to"]["serial"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn transfer_smoke_run_commits_and_passes_its_checks() {
    // Goal: a 1 s transfer run with deposits and lookups in the mix, on small contended data,
    // ends with commits, 0 violations and a complete summary for vmsdb and serial.
    let (summary, json) = run_small_transfer(&[
        "--clients",
        "64",
        "--zipf",
        "0.9",
        "--initial-balance",
        "50",
        "--max-amount",
        "20",
        "--lookup-pct",
        "5",
        "--load-clients",
        "64",
    ]);
    assert_healthy(&summary, &json);
    let vmsdb = &summary.systems["vmsdb"];
    assert!(
        vmsdb.per_type.contains_key("deposit") && vmsdb.per_type.contains_key("lookup"),
        "{:?}",
        vmsdb.per_type.keys()
    );
    assert!(vmsdb.runtime_stats.as_ref().unwrap().epochs > 0);
}

#[test]
fn grouped_clients_with_lookups_commit_and_pass_the_checks() {
    // Goal: the grouped closed loop (`--submit-batch`), each group one long-lived loop with
    // reused buffers, records every client's transaction and lookup and keeps the checks
    // passing; 60 clients in groups of 8 leave one smaller group.
    let (summary, json) = run_small_transfer(&[
        "--clients",
        "60",
        "--submit-batch",
        "8",
        "--lookup-pct",
        "20",
    ]);
    assert_healthy(&summary, &json);
    let vmsdb = &summary.systems["vmsdb"];
    for kind in ["transfer", "deposit", "lookup"] {
        assert!(
            vmsdb.per_type.get(kind).is_some_and(|t| t.committed > 0),
            "{kind}: {:?}",
            vmsdb.per_type.keys()
        );
    }
}

#[test]
fn ycsb_smoke_run_commits_and_passes_its_checks() {
    // Goal: a short skewed YCSB-T run keeps sum = k × committed on vmsdb and serial.
    let (summary, json) = run(&[
        "ycsb",
        "--duration",
        "500ms",
        "--keys",
        "2000",
        "-k",
        "4",
        "--zipf",
        "0.99",
        "--clients",
        "64",
        "--partitions",
        "4",
        "--load-batch",
        "100",
        "--compare",
        "serial",
    ]);
    assert_healthy(&summary, &json);
}

#[test]
fn binary_rejects_bad_flags_with_exit_code_2() {
    // Goal: bad values fail before anything runs, with a message naming the flag.
    let bin = env!("CARGO_BIN_EXE_bench-harness");
    let out = Command::new(bin)
        .args(["ycsb", "--zipf", "1.5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--zipf") && stderr.contains("[0, 1)"),
        "{stderr}"
    );
    let out = Command::new(bin)
        .args([
            "transfer",
            "--deposit-pct",
            "80",
            "--lookup-pct",
            "30",
            "--duration",
            "1s",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exceed 100"));
    let help = Command::new(bin)
        .args(["transfer", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    for flag in [
        "--duration",
        "--clients",
        "--accounts",
        "--zipf",
        "--partitions",
        "--epoch-us",
        "--compare",
        "--out",
        "--storage",
    ] {
        assert!(
            String::from_utf8_lossy(&help.stdout).contains(flag),
            "--help lacks {flag}"
        );
    }
}
