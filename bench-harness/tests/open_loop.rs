//! Open loop (`--rate`): the harness submits at the requested rate whether or not earlier
//! operations completed, so the committed count follows the rate, not the system's speed.

use bench_harness::cli::Cli;
use clap::Parser;

fn run(args: &[&str]) -> bench_harness::report::Summary {
    let out = tempfile::tempdir().unwrap();
    let mut argv = vec!["bench-harness"];
    argv.extend_from_slice(args);
    let out_path = out.path().to_str().unwrap().to_string();
    argv.extend_from_slice(&["--quiet", "--out", &out_path]);
    bench_harness::run(Cli::parse_from(argv)).expect("the run completes")
}

#[test]
fn open_loop_commits_at_the_requested_rate() {
    // Goal: at 2,000 ops/s for 2 s (far below what vmsdb sustains) the run completes about
    // 4,000 operations — a closed loop with as many clients would complete many times more — and
    // passes its checks. Ops of the last millisecond may fall past the deadline, hence the
    // tolerance. 1,024 slots cover half a second of latency at this rate, so even a machine
    // loaded by parallel builds (epochs of 100 ms and more) has a free slot at every arrival.
    let s = run(&[
        "transfer",
        "--duration",
        "2s",
        "--accounts",
        "10000",
        "--storage",
        "memory",
        "--clients",
        "1024",
        "--rate",
        "2000",
    ]);
    assert!(s.passed, "{}", s.table());
    let vmsdb = &s.systems["vmsdb"];
    let done = vmsdb.committed + vmsdb.aborted;
    assert!(
        (3_800..=4_100).contains(&done),
        "open loop at 2000/s for 2 s completed {done} operations: {}",
        s.table()
    );
    assert_eq!(vmsdb.late_arrivals, 0, "1024 slots are plenty at 2000/s");
}

#[test]
fn arrivals_beyond_the_slots_are_counted_late() {
    // Goal: with one slot and a rate no system can serve one at a time (each operation waits
    // for an epoch), most arrivals find the slot busy and are reported, not silently dropped.
    let s = run(&[
        "transfer",
        "--duration",
        "1s",
        "--accounts",
        "1000",
        "--storage",
        "memory",
        "--clients",
        "1",
        "--worker-threads",
        "1",
        "--rate",
        "100000",
    ]);
    let vmsdb = &s.systems["vmsdb"];
    assert!(s.passed, "{}", s.table());
    assert!(
        vmsdb.late_arrivals > 10_000,
        "late {} with {} completed",
        vmsdb.late_arrivals,
        vmsdb.committed + vmsdb.aborted
    );
    assert!(vmsdb.committed + vmsdb.aborted + vmsdb.late_arrivals >= 90_000);
}

#[test]
fn rate_is_validated() {
    // Goal: a zero rate is refused at parse time, naming the flag.
    let err = Cli::try_parse_from(["bench-harness", "transfer", "--rate", "0"]).unwrap_err();
    assert!(err.to_string().contains("--rate"), "{err}");
}
