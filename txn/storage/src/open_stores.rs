//! One open engine per data directory and process, shared by every handle opened on it.
//!
//! The embedded engines lock their files: opening a directory a second time in the same
//! process fails. Yet two handles on one store are what a lease hand-over looks like (see
//! [`crate::Storage::acquire_lease`]: an old and a new writer, each fenced by its own term), so
//! opening a directory that is already open hands out a new handle on the same engine instead.
//! Each handle keeps its own lease term; the engine closes when the last handle is dropped.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use crate::StorageError;

type Registry = BTreeMap<(&'static str, PathBuf), Weak<dyn Any + Send + Sync>>;

/// The engines open in this process, by backend and canonical data directory.
static OPEN: Mutex<Registry> = Mutex::new(BTreeMap::new());

/// The engine open on `dir` for `backend` if there is one that `still_valid` accepts (its
/// files were not replaced meanwhile), else the one `open` opens, remembered for the next
/// caller. `dir` must exist. Opens are serialised, so one directory is never opened twice.
pub(crate) fn shared<T: Any + Send + Sync>(
    backend: &'static str,
    dir: &Path,
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
    if let Some(engine) = open_stores.get(&key).and_then(Weak::upgrade)
        && let Ok(engine) = engine.downcast::<T>()
        && still_valid(&engine)
    {
        return Ok(engine);
    }
    let engine = Arc::new(open()?);
    let erased: Arc<dyn Any + Send + Sync> = engine.clone();
    open_stores.insert(key, Arc::downgrade(&erased));
    Ok(engine)
}
