//! The private PostgreSQL server of the postgres baseline. The launcher itself lives in
//! `txn-storage` (`txn_storage::postgres_instance`, feature `postgres`), shared with the
//! PostgreSQL storage tests and measurements, so there is one launcher; this module re-exports
//! it and turns its errors into the harness's.

use crate::HarnessError;

pub use txn_storage::postgres_instance::{
    INSTALL_HINT, InstanceError, PORT, PgBinaries, PgInstance, SHARED_BUFFERS, VERSIONED_ROOT,
    WATCHDOG, find_binaries_in,
};

/// Finds the server binaries on `PATH` or under [`VERSIONED_ROOT`].
pub fn find_binaries() -> Result<PgBinaries, HarnessError> {
    Ok(txn_storage::postgres_instance::find_binaries()?)
}

impl From<InstanceError> for HarnessError {
    fn from(err: InstanceError) -> Self {
        match err {
            // Missing binaries are a setup problem the message explains, as for any argument.
            InstanceError::BinariesMissing(detail) => {
                HarnessError::InvalidArgs(format!("the postgres baseline cannot run: {detail}"))
            }
            InstanceError::Failed(_) => HarnessError::Storage(err.to_string()),
        }
    }
}
