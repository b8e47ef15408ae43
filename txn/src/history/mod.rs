//! Provenance and time travel by deterministic replay: who wrote each version of a row and
//! who read it ([`History::row_history`]), the state as of a past epoch
//! ([`History::query_as_of`]), and what one transaction did step by step
//! ([`History::replay_tid`]).
//!
//! Everything here replays the retained log (`RuntimeConfig::history_retention`) from epoch 1,
//! or from the history base of a bounded retention (the state before the retained window), on
//! a private replica of the partitions, through the same `run_epoch` as recovery, with a
//! trace installed on the replica only (`trace.rs`): the live runtime is never slowed down.
//! Open a store with no runtime running on it. See `docs/provenance.md`.

mod assemble;
mod audit;
mod replica;

use crate::app::{App, AppDef, Key, Row, ServiceRef, Table};
use crate::error::TxnError;
use crate::ids::{RequestId, Tid};
use crate::query::ReadView;
use crate::storage::{EmbeddedStorage, Storage};
use crate::trace::{SubjectFilter, TraceFilter, TraceSink};
use serde_json::Value as Json;
use std::path::Path;
use std::sync::Arc;

pub use audit::AuditEntry;

pub use assemble::{
    Access, Change, ReplayOutcome, RowHistory, StepReplay, TxnRef, TxnReplay, Version,
};

/// Why a history question could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The epoch asked for is older than the retained history: `first_logged_epoch` is the
    /// oldest retained epoch (the first whose transactions can be replayed; the state as of the
    /// epoch before it is the oldest `query_as_of` rebuilds). The log below it was truncated by
    /// a checkpoint (no retention), by a bounded retention's window, or by an erasure.
    #[error(
        "history is not retained before epoch {first_logged_epoch}: the oldest retained epoch is \
         {first_logged_epoch} (the log below it was truncated; RuntimeConfig::history_retention \
         says how much to keep)"
    )]
    NotRetained { first_logged_epoch: u64 },
    /// An epoch after the last logged one.
    #[error("epoch {epoch} is outside the retained history (epochs 0 to {last_epoch})")]
    EpochOutside { epoch: u64, last_epoch: u64 },
    /// No table of that name.
    #[error("no table {name:?} (name it as TABLE or SERVICE.TABLE; tables: {known})")]
    UnknownTable { name: String, known: String },
    /// A table name that several services use.
    #[error("table name {name:?} is ambiguous: name it as SERVICE.TABLE ({candidates})")]
    AmbiguousTable { name: String, candidates: String },
    /// No logged request has that id.
    #[error("no request with id {client}:{seq} in the retained log", client = id.client, seq = id.seq)]
    UnknownRequest { id: RequestId },
    /// A key that does not encode as JSON.
    #[error("the key does not encode as JSON: {0}")]
    KeyEncoding(String),
    /// Opening or reading the store, or replaying, failed.
    #[error(transparent)]
    Txn(#[from] TxnError),
}

/// A store's retained history, read by replay. Open it while no runtime runs on the store.
pub struct History<A: App> {
    app: Arc<AppDef<A>>,
    storage: Arc<dyn Storage>,
    /// The history base of a bounded retention (`RuntimeConfig::history_base`), if any.
    base: Option<Arc<dyn Storage>>,
}

impl<A: App> History<A> {
    /// The history of `storage`, which must have been written by `app` (its fingerprint is
    /// checked as `Runtime::start` does).
    pub fn open(app: Arc<AppDef<A>>, storage: Arc<dyn Storage>) -> Result<Self, HistoryError> {
        let fingerprint = crate::fingerprint::Fingerprint::of(&app);
        crate::fingerprint::check_store(&fingerprint, storage.as_ref())?;
        Ok(History {
            app,
            storage,
            base: None,
        })
    }

    /// [`History::open`] of a store kept with a bounded retention, whose history base is
    /// `base` (the store given as `RuntimeConfig::history_base`).
    pub fn open_with_base(
        app: Arc<AppDef<A>>,
        storage: Arc<dyn Storage>,
        base: Arc<dyn Storage>,
    ) -> Result<Self, HistoryError> {
        let mut history = Self::open(app, storage)?;
        history.base = Some(base);
        Ok(history)
    }

    /// The history of the embedded store in `dir` (as written by `Runtime::open` or
    /// `RuntimeConfig::durable`), with its history base if it has one
    /// (`RuntimeConfig::durable_with_history`).
    pub fn open_dir(app: Arc<AppDef<A>>, dir: impl AsRef<Path>) -> Result<Self, HistoryError> {
        let open = |path: &Path| {
            EmbeddedStorage::open(path)
                .map_err(|e| TxnError::Storage(format!("opening {}: {e}", path.display())))
        };
        let storage = open(dir.as_ref())?;
        let base_dir = dir.as_ref().join(crate::runtime::HISTORY_BASE_DIR);
        match base_dir.is_dir() {
            true => Self::open_with_base(app, Arc::new(storage), Arc::new(open(&base_dir)?)),
            false => Self::open(app, Arc::new(storage)),
        }
    }

    /// Where replay starts: the history base, if any.
    fn start(&self) -> replica::Start<'_> {
        replica::Start {
            base: self.base.as_ref(),
        }
    }

    /// The oldest retained epoch: the first whose transactions can be replayed (1 when the
    /// whole log is kept; the state as of the epoch before it is the oldest `query_as_of`
    /// rebuilds). Reads only the history base, not the log.
    pub fn first_retained_epoch(&self) -> Result<u64, HistoryError> {
        Ok(self.start().epoch()? + 1)
    }

    /// The application whose history this is.
    pub fn app(&self) -> &Arc<AppDef<A>> {
        &self.app
    }

    /// The last logged epoch (0 if none).
    pub fn last_epoch(&self) -> Result<u64, HistoryError> {
        let last = self
            .storage
            .last_epoch()
            .map_err(|e| TxnError::Storage(format!("reading the log: {e}")))?;
        Ok(last.unwrap_or(0))
    }

    /// Every committed change of row `key` of `table`, in serial order, each with the
    /// committed transactions that read that version.
    pub async fn row_history<K: Key, V: Row>(
        &self,
        table: Table<K, V>,
        key: &K,
    ) -> Result<RowHistory, HistoryError> {
        let key =
            serde_json::to_value(key).map_err(|e| HistoryError::KeyEncoding(e.to_string()))?;
        self.row_history_raw((table.service, table.idx), key).await
    }

    /// [`History::row_history`] by table name (`TABLE` or `SERVICE.TABLE`) and the key as
    /// JSON (as `serde_json` encodes the key type: a number, a string, an array for a tuple).
    pub async fn row_history_json(
        &self,
        table: &str,
        key: Json,
    ) -> Result<RowHistory, HistoryError> {
        let table = self.table_named(table)?;
        self.row_history_raw(table, key).await
    }

    async fn row_history_raw(
        &self,
        (service, table): (u32, u32),
        key: Json,
    ) -> Result<RowHistory, HistoryError> {
        let filter = TraceFilter::Row {
            service,
            table,
            key: key.clone(),
        };
        let sink = TraceSink::new(filter);
        let replica = replica::replica(&self.app, Some(&sink));
        let mut rows = assemble::RowAssembler::new(&self.app, (service, table), key);
        let last = replica::replay(
            &self.app,
            &self.storage,
            &self.start(),
            &replica,
            Some(&sink),
            u64::MAX,
            |r| rows.epoch(r),
        )
        .await?;
        Ok(rows.finish(last))
    }

    /// Runs `f` on every partition of `services`, like `Client::query`, against the state as of
    /// the end of `epoch` (0: before the first epoch). An epoch after the last logged one is
    /// refused with [`HistoryError::EpochOutside`], a truncated log with
    /// [`HistoryError::NotRetained`].
    pub async fn query_as_of<R>(
        &self,
        epoch: u64,
        services: &[ServiceRef],
        f: impl Fn(&ReadView<'_>) -> R,
    ) -> Result<Vec<R>, HistoryError> {
        let last_epoch = self.last_epoch()?;
        if epoch > last_epoch {
            return Err(HistoryError::EpochOutside { epoch, last_epoch });
        }
        let replica = replica::replica(&self.app, None);
        let start = self.start();
        let replayed = replica::replay(
            &self.app,
            &self.storage,
            &start,
            &replica,
            None,
            epoch,
            |_| {},
        )
        .await?;
        if epoch == 0 && self.base.is_none() {
            // Nothing replayed: the log must still start at epoch 1 for epoch 0 to be history.
            self.check_log_start().await?;
        }
        debug_assert_eq!(replayed, epoch);
        let mut out = Vec::new();
        for s in services {
            for p in 0..s.n_partitions {
                let read = |part: &_| f(&ReadView::new(part, &self.app));
                let result = replica.inspect(s.gp(p), read).ok_or_else(|| {
                    TxnError::Actor(format!("replica partition {} is not home", s.gp(p)))
                })?;
                out.push(result);
            }
        }
        Ok(out)
    }

    /// Fails with [`HistoryError::NotRetained`] if the log does not start at epoch 1.
    async fn check_log_start(&self) -> Result<(), HistoryError> {
        let replica = replica::replica(&self.app, None);
        replica::replay(
            &self.app,
            &self.storage,
            &self.start(),
            &replica,
            None,
            1,
            |_| {},
        )
        .await?;
        Ok(())
    }

    /// What transaction `tid` did, step by step, exactly as it ran (its first pass, or the
    /// serial pass if it ran there), and how it ended.
    pub async fn replay_tid(&self, tid: Tid) -> Result<TxnReplay, HistoryError> {
        let last_epoch = self.last_epoch()?;
        let epoch = tid.epoch();
        if epoch == 0 || epoch > last_epoch {
            return Err(HistoryError::EpochOutside { epoch, last_epoch });
        }
        let first_logged_epoch = self.first_retained_epoch()?;
        if epoch < first_logged_epoch {
            return Err(HistoryError::NotRetained { first_logged_epoch });
        }
        let sink = TraceSink::new(TraceFilter::Txn {
            epoch,
            seq: tid.seq(),
        });
        let replica = replica::replica(&self.app, Some(&sink));
        let mut found = None;
        replica::replay(
            &self.app,
            &self.storage,
            &self.start(),
            &replica,
            Some(&sink),
            epoch,
            |r| {
                if r.env.epoch == epoch {
                    found = Some(assemble::txn_replay(&self.app, tid, r));
                }
            },
        )
        .await?;
        found
            .flatten()
            .ok_or(HistoryError::EpochOutside { epoch, last_epoch })
    }

    /// Every read of `subject`'s personal data over the retained log: each read by a handler
    /// step of a row whose subject is `subject` in a table with personal fields, committed or
    /// not, in execution order (`docs/governance.md`). A read the purpose check refused never
    /// happened and is not listed (its transaction aborted before reading).
    pub async fn audit(&self, subject: &str) -> Result<Vec<AuditEntry>, HistoryError> {
        let app = self.app.clone();
        let filter = SubjectFilter {
            subject: subject.to_string(),
            subject_of: Arc::new(move |(service, table), key, row| {
                (app.governance.rule(service, table)?.governance.subject_of)(key, row)
            }),
        };
        let sink = TraceSink::new(TraceFilter::Subject(filter));
        let replica = replica::replica(&self.app, Some(&sink));
        let mut entries = Vec::new();
        replica::replay(
            &self.app,
            &self.storage,
            &self.start(),
            &replica,
            Some(&sink),
            u64::MAX,
            |r| audit::epoch(&self.app, r, &mut entries),
        )
        .await?;
        Ok(entries)
    }

    /// The TID the request with id `id` last ran under (its final run, after any conflict
    /// retries), found by reading the log.
    pub async fn tid_of_request(&self, id: RequestId) -> Result<Tid, HistoryError> {
        let mut records = crate::runtime::stream_log::<A>(self.storage.clone(), 0);
        let mut found = None;
        while let Some(record) = records.recv().await {
            let record = record?;
            for (seq, request) in record.requests.iter().enumerate() {
                if request.id == Some(id) {
                    found = Some(Tid::new(record.epoch, seq as u32));
                }
            }
        }
        found.ok_or(HistoryError::UnknownRequest { id })
    }

    /// The (service, table) indexes of `name`: `TABLE` or `SERVICE.TABLE`.
    fn table_named(&self, name: &str) -> Result<(u32, u32), HistoryError> {
        let (service, table) = match name.split_once('.') {
            Some((s, t)) => (Some(s), t),
            None => (None, name),
        };
        let mut found = Vec::new();
        let mut known = Vec::new();
        for (si, s) in self.app.services.iter().enumerate() {
            for (ti, t) in s.tables.iter().enumerate() {
                known.push(format!("{}.{}", s.name, t.name));
                if t.name == table && service.is_none_or(|wanted| wanted == s.name) {
                    found.push((si as u32, ti as u32, format!("{}.{}", s.name, t.name)));
                }
            }
        }
        match found.as_slice() {
            [(s, t, _)] => Ok((*s, *t)),
            [] => Err(HistoryError::UnknownTable {
                name: name.to_string(),
                known: known.join(", "),
            }),
            many => Err(HistoryError::AmbiguousTable {
                name: name.to_string(),
                candidates: many
                    .iter()
                    .map(|c| c.2.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}
