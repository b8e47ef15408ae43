//! Erasure of personal data (see `governance`): `forget_dir` removes one subject's personal data from a closed store, so that no
//! file of the data directory holds those bytes any more, and recovery starts from the result.
//!
//! The store is recovered (checkpoint plus log tail), the subject's rows get their personal
//! fields erased, and the whole state is written as a new checkpoint at a new, empty epoch; the
//! log is truncated below it; then both redb files are rewritten from their live entries
//! (`EmbeddedStorage::rewrite_files`), because pages redb freed can still hold old bytes.

use crate::app::{App, AppDef};
use crate::epoch::run_phase;
use crate::error::TxnError;
use crate::ids::GlobalPartition;
use crate::partition::Job;
use crate::row_key::split_row_key;
use crate::runtime::{EpochRecordRef, RuntimeConfig};
use crate::storage::{CheckpointRow, EmbeddedStorage, Storage};
use crate::transport::PartitionActors;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub use crate::governance::ForgetReport;

/// Why erasure failed: storage, recovery, or a row that does not decode as its table's type.
fn storage_error(doing: &str) -> impl Fn(crate::storage::StorageError) -> TxnError + '_ {
    move |e| TxnError::Storage(format!("{doing}: {e}"))
}

/// Removes the personal data of `subject` from the embedded store in `dir`, on which no
/// runtime may be running: afterwards its personal fields hold their types' default values in
/// the state, and no file of `dir` holds the old bytes (state, checkpoints, log). Recovery
/// then starts from the new checkpoint. The log below it is gone, so retained history
/// (`History`) starts after it (`docs/governance.md`).
pub async fn forget_dir<A: App>(
    app: Arc<AppDef<A>>,
    dir: impl AsRef<Path>,
    subject: &str,
) -> Result<ForgetReport, TxnError> {
    let dir = dir.as_ref();
    let storage: Arc<dyn Storage> =
        Arc::new(EmbeddedStorage::open(dir).map_err(storage_error("opening the store"))?);
    let fingerprint = crate::fingerprint::Fingerprint::of(&app);
    crate::fingerprint::check_store(&fingerprint, storage.as_ref())?;
    let (rows, last_epoch, last_timestamp_ms) = recovered_rows(&app, &storage).await?;
    let (changed, rows_erased) = erase_rows(&app, rows, subject)?;
    let epoch = last_epoch + 1;
    let storage_for_write = storage.clone();
    tokio::task::spawn_blocking(move || {
        write_forgotten_state::<A>(
            storage_for_write.as_ref(),
            epoch,
            last_timestamp_ms,
            &changed,
        )
    })
    .await
    .map_err(|e| TxnError::Storage(format!("the erasure stopped: {e}")))??;
    drop(storage);
    EmbeddedStorage::rewrite_files(dir).map_err(storage_error("rewriting the store's files"))?;
    forget_history_base(dir)?;
    Ok(ForgetReport {
        subject: subject.to_string(),
        rows_erased,
        checkpoint_epoch: epoch,
    })
}

/// Every encoded row of the recovered state by checkpoint key, with the rows that differ from
/// the stored checkpoint marked (`true`), plus the last epoch and its timestamp.
type Recovered = (BTreeMap<Vec<u8>, (Option<Vec<u8>>, bool)>, u64, u64);

/// Recovers the store (its checkpoint, then its log tail on private partitions) and returns
/// its whole state as encoded checkpoint rows.
async fn recovered_rows<A: App>(
    app: &Arc<AppDef<A>>,
    storage: &Arc<dyn Storage>,
) -> Result<Recovered, TxnError> {
    let actors = PartitionActors::start(app.clone(), true)?;
    let config = RuntimeConfig::with_storage(storage.clone());
    let recovered = crate::runtime::recover(app, &actors, &config).await;
    let all: Vec<GlobalPartition> = (0..app.n_global).collect();
    let drained = match recovered {
        Ok(_) => Some(run_phase(&actors, &all, |_, reply| Job::Checkpoint { reply }).await),
        Err(_) => None,
    };
    actors.stop().await;
    let (report, mut dedup) = recovered?;
    let drained = drained.expect("drained after a successful recovery")?;
    let mut rows = BTreeMap::new();
    let read = storage.clone();
    let stored = tokio::task::spawn_blocking(move || {
        let mut rows = Vec::new();
        read.read_latest_checkpoint(&mut |key, value| {
            rows.push((key.to_vec(), value.to_vec()));
            Ok(())
        })
        .map(|_| rows)
    })
    .await
    .map_err(|e| TxnError::Storage(format!("reading the checkpoint stopped: {e}")))?
    .map_err(storage_error("reading the checkpoint"))?;
    for (key, value) in stored {
        rows.insert(key, (Some(value), false));
    }
    let mut changed: Vec<CheckpointRow> = Vec::new();
    for deferred in drained.into_iter().flatten() {
        deferred(&mut changed);
    }
    changed.extend(dedup.drain_checkpoint_rows());
    for (key, value) in changed {
        rows.insert(key, (value, true));
    }
    Ok((rows, report.last_epoch, report.last_timestamp_ms))
}

/// Erases `subject`'s personal fields in `rows`; returns the rows to write (every changed one)
/// and how many rows were erased.
fn erase_rows<A: App>(
    app: &AppDef<A>,
    rows: BTreeMap<Vec<u8>, (Option<Vec<u8>>, bool)>,
    subject: &str,
) -> Result<(Vec<CheckpointRow>, usize), TxnError> {
    let mut out = Vec::new();
    let mut erased = 0;
    for (key, (value, mut changed)) in rows {
        let mut value = value;
        if let (Some(row), Some((gp, table, row_key))) = (&value, split_row_key(&key))
            && (gp as usize) < app.gp_index.len()
        {
            let (service, _) = app.locate(gp);
            if let Some(rule) = app.governance.rule(service, u32::from(table)) {
                let erase = &rule.governance.erase_encoded;
                if let Some(new) = erase(row_key, row, subject).map_err(|e| {
                    TxnError::Recovery(format!("a row of table #{table} does not decode: {e}"))
                })? {
                    value = Some(new);
                    changed = true;
                    erased += 1;
                }
            }
        }
        if changed {
            out.push((key, value));
        }
    }
    Ok((out, erased))
}

/// Appends the empty epoch `epoch`, writes `rows` as its checkpoint, completes it and
/// truncates the log below it.
fn write_forgotten_state<A: App>(
    storage: &dyn Storage,
    epoch: u64,
    timestamp_ms: u64,
    rows: &[CheckpointRow],
) -> Result<(), TxnError> {
    let record = EpochRecordRef::<A::Event> {
        epoch,
        timestamp_ms,
        requests: &[],
        fallback: crate::Fallback::Serial,
        serial: &[],
        erase: &[],
    };
    let bytes = rmp_serde::to_vec(&record)
        .map_err(|e| TxnError::Storage(format!("encoding the empty epoch {epoch}: {e}")))?;
    storage
        .append_epoch(epoch, &bytes)
        .map_err(storage_error("appending the erasure's epoch"))?;
    for chunk in rows.chunks(crate::limits::FORGET_ROWS_PER_WRITE_MAX) {
        storage
            .write_checkpoint_rows(epoch, chunk)
            .map_err(storage_error("writing the erased state"))?;
    }
    storage
        .complete_checkpoint(epoch)
        .map_err(storage_error("completing the erased state's checkpoint"))?;
    storage
        .truncate_log_below(epoch + 1)
        .map_err(storage_error("truncating the log"))?;
    Ok(())
}

/// Deletes the history base of a bounded retention (`RuntimeConfig::durable_with_history`): it
/// holds past states, the subject's personal data among them. The log below the erasure is
/// gone, so history starts at the erasure; a runtime started with bounded retention rebuilds
/// the base from the erased checkpoint.
fn forget_history_base(dir: &Path) -> Result<(), TxnError> {
    let base = dir.join(crate::runtime::HISTORY_BASE_DIR);
    match std::fs::remove_dir_all(&base) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(TxnError::Storage(format!(
            "deleting the history base {}: {e}",
            base.display()
        ))),
    }
}
