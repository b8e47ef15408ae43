//! The `bench-harness` command: see `bench-harness --help` and the crate docs.

use clap::Parser;
use std::process::ExitCode;

/// The `vmsdb` binary's allocator (the `count-allocs` feature installs a counting one over it).
#[cfg(not(feature = "count-allocs"))]
#[global_allocator]
static GLOBAL: vmsdb::alloc::Allocator = vmsdb::alloc::Allocator;

fn main() -> ExitCode {
    let cli = bench_harness::cli::Cli::parse();
    if let bench_harness::cli::WorkloadCmd::Durability(cmd) = &cli.workload {
        return bench_harness::crash::run(cmd);
    }
    if let bench_harness::cli::WorkloadCmd::Explain(args) = &cli.workload {
        return match bench_harness::explain::markdown(args.workload) {
            Ok(table) => {
                print!("{table}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        };
    }
    match bench_harness::run(cli) {
        Ok(summary) if summary.passed => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e @ bench_harness::HarnessError::InvalidArgs(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
