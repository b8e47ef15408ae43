//! `bench-harness explain <workload>`: the workload application's coordination report as a
//! Markdown table, so which declared delta commits without coordination, by escrow, or only as
//! a read-modify-write can be read without running anything.

use clap::{Args, ValueEnum};
use services::ledger::{Ledger, LedgerConfig};
use services::marketplace::{MarketConfig, Marketplace};
use services::ycsb::{Ycsb, YcsbConfig};
use txn::{App, AppDef, CoordinationEntry};

/// Options of `explain`.
#[derive(Args, Debug, Clone)]
pub struct ExplainArgs {
    /// The workload whose application is explained.
    #[arg(value_enum)]
    pub workload: ExplainedWorkload,
}

/// The workloads `explain` knows, by their subcommand names.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExplainedWorkload {
    Transfer,
    Ycsb,
    Marketplace,
}

/// The Markdown coordination report of `workload`'s application (built with its default
/// configuration: the report depends on the declarations only, not on sizes).
pub fn markdown(workload: ExplainedWorkload) -> Result<String, txn::TxnError> {
    Ok(match workload {
        ExplainedWorkload::Transfer => table_of(Ledger::new(LedgerConfig::default())?.app()),
        ExplainedWorkload::Ycsb => table_of(Ycsb::new(YcsbConfig::default())?.app()),
        ExplainedWorkload::Marketplace => {
            table_of(Marketplace::new(MarketConfig::default())?.app())
        }
    })
}

/// `app`'s coordination report: a header and one row per (field, declared use, invariant).
pub fn table_of<A: App>(app: &AppDef<A>) -> String {
    let entries: Vec<CoordinationEntry> = app.coordination_report();
    let mut out = String::from(
        "| service.table.field | operation | invariant | verdict | why |\n\
         |---|---|---|---|---|\n",
    );
    for entry in &entries {
        out.push_str(&format!("{entry}\n"));
    }
    if entries.is_empty() {
        out.push_str("\nNo merge-able deltas declared: every update is a read-modify-write.\n");
    }
    out
}
