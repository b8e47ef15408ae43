//! `vmsdb audit` (every read of one subject's personal data, by replay of the retained log) and
//! `vmsdb forget` (erase one subject's personal data from a data directory): the governance
//! half of `txn` (`docs/governance.md`) from the command line, on a directory no server runs on.

use crate::apps::{AppChoice, AppOptions, LedgerServed, MarketServed, ServedApp, YcsbServed};
use crate::history_cmd::{HistoryCommandError, StoreArgs};
use std::fmt::Write as _;
use txn::erasure::{ForgetReport, forget_dir};
use txn::history::{AuditEntry, History};

/// The options of `vmsdb audit`.
#[derive(Clone, Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Whose data: the subject as its rows name it (e.g. the customer id, `7`).
    #[arg(long)]
    pub subject: String,
}

/// The options of `vmsdb forget`.
#[derive(Clone, Debug, clap::Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Whose personal data to erase: the subject as its rows name it.
    #[arg(long)]
    pub subject: String,
}

/// Runs `vmsdb audit` and returns what to print.
pub async fn audit(args: AuditArgs) -> Result<String, HistoryCommandError> {
    let trail = match args.store.app {
        AppChoice::Ledger => audit_of::<LedgerServed>(&args).await?,
        AppChoice::Ycsb => audit_of::<YcsbServed>(&args).await?,
        AppChoice::Marketplace => audit_of::<MarketServed>(&args).await?,
    };
    Ok(if args.store.json {
        crate::history_cmd::to_json(&trail)
    } else {
        audit_table(&args.subject, &trail)
    })
}

/// Runs `vmsdb forget` and returns what to print.
pub async fn forget(args: ForgetArgs) -> Result<String, HistoryCommandError> {
    let report = match args.store.app {
        AppChoice::Ledger => forget_in::<LedgerServed>(&args).await?,
        AppChoice::Ycsb => forget_in::<YcsbServed>(&args).await?,
        AppChoice::Marketplace => forget_in::<MarketServed>(&args).await?,
    };
    Ok(if args.store.json {
        crate::history_cmd::to_json(&report)
    } else {
        format!(
            "forgot subject {}: {} row(s) erased; the state is now checkpoint {} (the log and \
             history before it are gone)\n",
            report.subject, report.rows_erased, report.checkpoint_epoch
        )
    })
}

async fn audit_of<S: ServedApp>(args: &AuditArgs) -> Result<Vec<AuditEntry>, HistoryCommandError> {
    let history: History<S::App> = crate::history_cmd::open::<S>(&args.store)?;
    Ok(history.audit(&args.subject).await?)
}

async fn forget_in<S: ServedApp>(args: &ForgetArgs) -> Result<ForgetReport, HistoryCommandError> {
    let options = AppOptions {
        partitions: args.store.partitions,
        ycsb_keys: 0,
    };
    let app = S::build(options).map_err(HistoryCommandError::Build)?;
    forget_dir(app.app_def().clone(), &args.store.data_dir, &args.subject)
        .await
        .map_err(HistoryCommandError::Forget)
}

/// One line per read: when, which transaction and handler, for which purposes, what.
fn audit_table(subject: &str, trail: &[AuditEntry]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "subject {subject}: {} read(s) of personal data\n",
        trail.len()
    );
    let _ = writeln!(
        out,
        "{:<10} {:<24} {:<12} {:<20} {:<20} {:<24} {:<9} FIELDS",
        "TID", "REQUEST", "SERVICE", "HANDLER", "PURPOSES", "ROW", "COMMITTED"
    );
    for e in trail {
        let request = e
            .request_id
            .map_or_else(|| "-".to_string(), |id| format!("{}:{}", id.client, id.seq));
        let _ = writeln!(
            out,
            "{:<10} {:<24} {:<12} {:<20} {:<20} {:<24} {:<9} {}",
            e.tid.to_string(),
            request,
            e.service,
            e.handler,
            if e.purposes.is_empty() {
                "-".to_string()
            } else {
                e.purposes.join(",")
            },
            format!("{}[{}]", e.table, e.key),
            if e.committed { "yes" } else { "no" },
            e.fields.join(",")
        );
    }
    out
}
