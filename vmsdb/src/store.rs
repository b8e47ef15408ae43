//! Where `vmsdb serve` keeps its epoch log and checkpoints: the embedded store in a data
//! directory (the default), or a shared PostgreSQL database (`--store postgres://...`) that a
//! standby process can take over; and the store lease settings the runtime gets.

use crate::config::Settings;
use std::sync::Arc;
use txn::storage::{EmbeddedStorage, PostgresStorage, Storage};
use txn::{LeaseConfig, TxnError};

/// Whether `url` names a PostgreSQL store.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `url` for a log line: database, hosts, port and user, never the password.
pub fn describe_postgres(url: &str) -> String {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
        return "postgres (an unparsable URL)".to_string();
    };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    format!(
        "postgres database {} on {} port {} as {}",
        config.get_dbname().unwrap_or("(default)"),
        hosts.join(","),
        config.get_ports().first().copied().unwrap_or(5432),
        config.get_user().unwrap_or("(default)"),
    )
}

/// Opens the store `settings` name. Blocking: call it off the async workers.
pub fn open_storage(settings: &Settings) -> Result<Arc<dyn Storage>, TxnError> {
    let description = settings.store_description();
    let opened: Result<Arc<dyn Storage>, _> = match &settings.store_url {
        Some(url) => PostgresStorage::open(url).map(|s| Arc::new(s) as Arc<dyn Storage>),
        None => EmbeddedStorage::open(&settings.data_dir).map(|s| Arc::new(s) as Arc<dyn Storage>),
    };
    opened.map_err(|e| TxnError::Storage(format!("opening the store ({description}): {e}")))
}

/// The runtime's lease settings: its defaults, with what `settings` overrides.
pub fn lease_config(settings: &Settings) -> LeaseConfig {
    let mut lease = LeaseConfig::default();
    if let Some(ttl) = settings.lease_ttl {
        lease.renew_every = ttl / txn::limits::LEASE_RENEWALS_PER_TTL;
        lease.ttl = ttl;
    }
    if let Some(holder) = &settings.lease_holder {
        lease.holder.clone_from(holder);
    }
    lease.wait_for_lease = settings.wait_for_lease;
    lease
}
