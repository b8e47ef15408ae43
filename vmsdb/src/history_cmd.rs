//! `vmsdb why` (every committed change of a row and who read each version) and `vmsdb replay`
//! (what one transaction read, wrote and emitted, step by step, and how it ended): provenance
//! read offline from a data directory whose history was retained (`txn::history`), printed as
//! readable tables or, with `--json`, as JSON.

use crate::apps::{AppChoice, AppOptions, LedgerServed, MarketServed, ServedApp, YcsbServed};
use std::fmt::Write as _;
use std::path::PathBuf;
use txn::history::{
    Access, Change, History, HistoryError, ReplayOutcome, RowHistory, TxnRef, TxnReplay,
};
use txn::{RequestId, Tid, TxnError};

/// Where the history is and which application wrote it.
#[derive(Clone, Debug, clap::Args)]
pub struct StoreArgs {
    /// The application that wrote the data directory.
    #[arg(long, value_enum)]
    pub app: AppChoice,
    /// The data directory (no server may be running on it).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Partitions of each service, as the directory was served with [default: the
    /// application's own].
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// The options of `vmsdb why`.
#[derive(Clone, Debug, clap::Args)]
pub struct WhyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The table: TABLE, or SERVICE.TABLE if several services have one of that name.
    #[arg(long)]
    pub table: String,
    /// The row's key as JSON: `7`, `"sku-1"`, `[3, 12]` for a tuple key.
    #[arg(long)]
    pub key: String,
}

/// The options of `vmsdb replay`.
#[derive(Clone, Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The transaction: `T<epoch>.<seq>` as outcomes print it, `<epoch>.<seq>`, or the TID's
    /// number.
    #[arg(
        long,
        required_unless_present = "request_id",
        conflicts_with = "request_id"
    )]
    pub tid: Option<String>,
    /// The request's id as `<client>:<seq>` (its last run is replayed).
    #[arg(long)]
    pub request_id: Option<String>,
}

/// Why a history command failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryCommandError {
    #[error("building the application: {0}")]
    Build(TxnError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("--key {key:?} is not JSON: {message}")]
    BadKey { key: String, message: String },
    #[error("--tid {0:?} is not a TID (T<epoch>.<seq>, <epoch>.<seq> or a number)")]
    BadTid(String),
    #[error("--request-id {0:?} is not <client>:<seq>")]
    BadRequestId(String),
    #[error("forgetting the subject: {0}")]
    Forget(TxnError),
}

/// Runs `vmsdb why` and returns what to print.
pub async fn why(args: WhyArgs) -> Result<String, HistoryCommandError> {
    let key: serde_json::Value =
        serde_json::from_str(&args.key).map_err(|e| HistoryCommandError::BadKey {
            key: args.key.clone(),
            message: e.to_string(),
        })?;
    let json = args.store.json;
    let row = match args.store.app {
        AppChoice::Ledger => row_of::<LedgerServed>(&args, key).await?,
        AppChoice::Ycsb => row_of::<YcsbServed>(&args, key).await?,
        AppChoice::Marketplace => row_of::<MarketServed>(&args, key).await?,
    };
    Ok(if json { to_json(&row) } else { row_table(&row) })
}

/// Runs `vmsdb replay` and returns what to print.
pub async fn replay(args: ReplayArgs) -> Result<String, HistoryCommandError> {
    let json = args.store.json;
    let replay = match args.store.app {
        AppChoice::Ledger => replay_of::<LedgerServed>(&args).await?,
        AppChoice::Ycsb => replay_of::<YcsbServed>(&args).await?,
        AppChoice::Marketplace => replay_of::<MarketServed>(&args).await?,
    };
    Ok(if json {
        to_json(&replay)
    } else {
        replay_table(&replay)
    })
}

/// The retained history of `store`, as application `S` wrote it.
pub(crate) fn open<S: ServedApp>(
    store: &StoreArgs,
) -> Result<History<S::App>, HistoryCommandError> {
    let options = AppOptions {
        partitions: store.partitions,
        ycsb_keys: 0,
    };
    let app = S::build(options).map_err(HistoryCommandError::Build)?;
    Ok(History::open_dir(app.app_def().clone(), &store.data_dir)?)
}

async fn row_of<S: ServedApp>(
    args: &WhyArgs,
    key: serde_json::Value,
) -> Result<RowHistory, HistoryCommandError> {
    let history = open::<S>(&args.store)?;
    Ok(history.row_history_json(&args.table, key).await?)
}

async fn replay_of<S: ServedApp>(args: &ReplayArgs) -> Result<TxnReplay, HistoryCommandError> {
    let history = open::<S>(&args.store)?;
    let tid = match (&args.tid, &args.request_id) {
        (Some(tid), _) => parse_tid(tid)?,
        (None, Some(id)) => history.tid_of_request(parse_request_id(id)?).await?,
        (None, None) => unreachable!("clap requires --tid or --request-id"),
    };
    Ok(history.replay_tid(tid).await?)
}

/// Parses `T3.1`, `3.1` or a TID's number.
fn parse_tid(text: &str) -> Result<Tid, HistoryCommandError> {
    let bad = || HistoryCommandError::BadTid(text.to_string());
    let trimmed = text.trim_start_matches('T');
    match trimmed.split_once('.') {
        Some((epoch, seq)) => {
            let epoch = epoch.parse().map_err(|_| bad())?;
            let seq = seq.parse().map_err(|_| bad())?;
            Ok(Tid::new(epoch, seq))
        }
        None => trimmed.parse().map(Tid).map_err(|_| bad()),
    }
}

fn parse_request_id(text: &str) -> Result<RequestId, HistoryCommandError> {
    let bad = || HistoryCommandError::BadRequestId(text.to_string());
    let (client, seq) = text.split_once(':').ok_or_else(bad)?;
    Ok(RequestId {
        client: client.parse().map_err(|_| bad())?,
        seq: seq.parse().map_err(|_| bad())?,
    })
}

/// `value` as pretty JSON.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("history answers encode as JSON")
}

fn request_text(id: Option<RequestId>) -> String {
    id.map_or_else(|| "-".to_string(), |id| format!("{}:{}", id.client, id.seq))
}

fn txn_line(t: &TxnRef) -> String {
    format!(
        "{:<10} {:>5} {:>4} {:<24} {:<12} {:<22} {:>14}",
        t.tid.to_string(),
        t.epoch,
        t.pass,
        request_text(t.request_id),
        t.service,
        t.event_kind,
        t.logged_ms
    )
}

const TXN_HEADER: &str = "TID        EPOCH PASS REQUEST                  SERVICE      EVENT                   LOGGED (ms)";

/// The row's versions as a table, each followed by the transactions that read it.
fn row_table(row: &RowHistory) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}.{} key {}: {} committed change(s), history through epoch {}",
        row.service,
        row.table,
        row.key,
        row.versions.len(),
        row.last_epoch
    );
    let _ = writeln!(out, "\n{TXN_HEADER}  CHANGE");
    let readers = |out: &mut String, readers: &[TxnRef]| {
        for r in readers {
            let _ = writeln!(out, "  read by {}", txn_line(r));
        }
    };
    if !row.read_before_first_write.is_empty() {
        let _ = writeln!(out, "(absent before its first retained write)");
        readers(&mut out, &row.read_before_first_write);
    }
    for v in &row.versions {
        let change = match &v.change {
            Change::Put { value } => format!("put {value}"),
            Change::Delete => "delete".to_string(),
            Change::Delta { field, delta } => format!("{field} {delta:+}"),
        };
        let _ = writeln!(out, "{}  {change}", txn_line(&v.writer));
        readers(&mut out, &v.readers);
    }
    out
}

/// A replayed transaction: its outcome, then each step and what it did.
fn replay_table(r: &TxnReplay) -> String {
    let mut out = String::new();
    let outcome = match &r.outcome {
        ReplayOutcome::Committed { pass, output } => {
            let output = output
                .as_ref()
                .map_or("none".to_string(), |o| o.to_string());
            format!("committed in pass {pass}, output {output}")
        }
        ReplayOutcome::Aborted { pass, reason } => {
            format!("aborted in pass {pass} ({}): {reason}", reason.category())
        }
        ReplayOutcome::Retried => "lost a conflict; retried in a later epoch".to_string(),
    };
    let _ = writeln!(
        out,
        "{} request {} {} {} logged {} ms: {outcome}",
        r.tid,
        request_text(r.request_id),
        r.service,
        r.event_kind,
        r.logged_ms
    );
    let _ = writeln!(out, "event {}", r.event);
    let _ = writeln!(
        out,
        "\nWAVE POS SERVICE      PART EVENT                   WHAT"
    );
    for s in &r.steps {
        let head = format!(
            "{:>4} {:>3} {:<12} {:>4} {:<22}",
            s.wave, s.pos, s.service, s.partition, s.event_kind
        );
        for a in &s.accesses {
            let _ = writeln!(out, "{head}  {}", access_text(a));
        }
        if let Some(o) = &s.output {
            let _ = writeln!(out, "{head}  output {o}");
        }
        if let Some(reason) = &s.aborted {
            let _ = writeln!(out, "{head}  ABORT {reason}");
        }
    }
    out
}

fn access_text(a: &Access) -> String {
    let opt = |v: &Option<serde_json::Value>| v.as_ref().map_or("absent".into(), |v| v.to_string());
    match a {
        Access::Read { table, key, value } => format!("read {table}[{key}] = {}", opt(value)),
        Access::Write {
            table,
            key,
            value: Some(v),
        } => format!("put {table}[{key}] = {v}"),
        Access::Write {
            table,
            key,
            value: None,
        } => format!("delete {table}[{key}]"),
        Access::Delta {
            table,
            key,
            field,
            delta,
        } => {
            format!("add {table}[{key}].{field} {delta:+}")
        }
        Access::Scan { table, keys } => format!("scan {table}: {} row(s)", keys.len()),
        Access::Emit {
            service,
            partition,
            kind,
            ..
        } => {
            format!("emit {kind} to {service}/{partition}")
        }
    }
}

/// Prints a command's answer (exit 0) or its error (exit 1).
pub fn print(result: Result<String, HistoryCommandError>) -> std::process::ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vmsdb: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
