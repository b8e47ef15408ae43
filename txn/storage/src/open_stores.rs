//! One open engine per data directory and process, shared by every handle opened on it.
//!
//! The embedded engines lock their files: opening a directory a second time in the same
//! process fails, and `open` keeps it so (two runtimes on one directory by mistake must not
//! both write). Yet two handles on one store are what a lease hand-over looks like (see
//! [`crate::Storage::acquire_lease`]: an old and a new writer, each fenced by its own term), so
//! `open_another` hands out a new handle on the engine already open. Each handle keeps its own
//! lease term; the engine closes when the last handle is dropped.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use crate::StorageError;

type Registry = BTreeMap<(&'static str, PathBuf), Weak<dyn Any + Send + Sync>>;

/// The engines open in this process, by backend and canonical data directory.
static OPEN: Mutex<Registry> = Mutex::new(BTreeMap::new());

/// Whether a caller wants a new engine or a handle on the open one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Share {
    /// Open the engine; refuse if this process has it open already.
    OpenNew,
    /// Join the engine this process has open; refuse if there is none.
    JoinOpen,
}

/// The engine for `dir` and `backend`: with [`Share::OpenNew`] the one `open` opens (refused if
/// one that `still_valid` accepts — its files were not replaced meanwhile — is open already),
/// remembered for later joiners; with [`Share::JoinOpen`] the one open. `dir` must exist.
/// Opens are serialised, so one directory is never opened twice.
pub(crate) fn shared<T: Any + Send + Sync>(
    backend: &'static str,
    dir: &Path,
    share: Share,
    still_valid: impl Fn(&T) -> bool,
    open: impl FnOnce() -> Result<T, StorageError>,
) -> Result<Arc<T>, StorageError> {
    let canonical = dir
        .canonicalize()
        .map_err(|err| StorageError::io(backend, "resolve data directory", err))?;
    // A panic while opening cannot leave the map half-updated, so a poisoned lock is usable.
    let mut open_stores = OPEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    open_stores.retain(|_, engine| engine.strong_count() > 0);
    let key = (backend, canonical);
    let already_open = open_stores
        .get(&key)
        .and_then(Weak::upgrade)
        .and_then(|engine| engine.downcast::<T>().ok())
        .filter(|engine| still_valid(engine));
    let refused = |detail: &str| StorageError::Io {
        backend,
        operation: "open",
        detail: format!("{}: {detail}", key.1.display()),
    };
    match (share, already_open) {
        (Share::JoinOpen, Some(engine)) => return Ok(engine),
        (Share::JoinOpen, None) => {
            return Err(refused(
                "no store is open there in this process, so there is nothing to join; open it",
            ));
        }
        (Share::OpenNew, Some(_)) => {
            return Err(refused(
                "the store is already open in this process (a second writer on it by mistake?); \
                 `open_another` gives another handle on it, fenced by its own lease",
            ));
        }
        (Share::OpenNew, None) => {}
    }
    let engine = Arc::new(open()?);
    let erased: Arc<dyn Any + Send + Sync> = engine.clone();
    open_stores.insert(key, Arc::downgrade(&erased));
    Ok(engine)
}
